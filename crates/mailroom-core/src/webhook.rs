//! Webhooks (MISSION E): the events an application can subscribe to, where they may be delivered,
//! how a delivery is signed (the Standard Webhooks specification, so receivers can use its libraries:
//! https://www.standardwebhooks.com/), and when a failed delivery is tried again.

use crate::ValidationError;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

macro_rules! event_types {
    ($($variant:ident => $name:literal: $doc:literal),* $(,)?) => {
        /// What happened, as a webhook's `type`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventType { $(#[doc = $doc] $variant),* }

        impl EventType {
            pub const ALL: &'static [EventType] = &[$(EventType::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name),* }
            }

            /// What the event means, for people (the API's documentation).
            pub fn meaning(self) -> &'static str {
                match self { $(EventType::$variant => $doc),* }
            }
        }

        impl FromStr for EventType {
            type Err = ValidationError;
            fn from_str(raw: &str) -> Result<Self, ValidationError> {
                match raw {
                    $($name => Ok(EventType::$variant),)*
                    other => Err(ValidationError::new(
                        "events",
                        format!("{other:?} is not an event type ({})", [$($name),*].join(", ")),
                    )),
                }
            }
        }
    };
}

event_types! {
    MessageSent => "message.sent": "A message was accepted by the receiving server.",
    MessageFailed => "message.failed": "A message failed for good (a permanent refusal, or its attempts used up).",
    MessageDeferred => "message.deferred": "An attempt failed transiently; the message will be tried again.",
    MessageBounced => "message.bounced": "A delivery status notification reported a recipient's mailbox refused the message.",
    MessageComplained => "message.complained": "A recipient reported the message as abuse (an ARF feedback report).",
    MessageUnsubscribed => "message.unsubscribed": "A recipient left the message's list through its one-click unsubscribe link or mailto address.",
    MessageReceived => "message.received": "A message was received into a synchronised mailbox.",
    MailboxDisabled => "mailbox.disabled": "A mailbox was disabled because its test failed for good.",
    MailboxTestCompleted => "mailbox.test_completed": "A mailbox's test & enable finished.",
    JobCompleted => "job.completed": "A background job finished.",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an address is one a webhook must not reach unless the administrator allows private
/// targets: loopback, private, link-local, carrier-grade NAT, unique local, unspecified, multicast,
/// broadcast and documentation ranges (SSRF: a receiver URL must not reach mailroom's own network).
pub fn is_private_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_target(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
        }
    }
}

/// A receiver's URL: `http` or `https`, a host, at most 2,000 characters, no credentials in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    url: String,
    host: String,
    port: u16,
}

impl WebhookUrl {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let invalid = |why: &str| ValidationError::new("url", format!("{raw:?} {why}"));
        let raw = raw.trim();
        if raw.len() > 2000 || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("is not a plain URL of at most 2,000 characters"));
        }
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| invalid("is not an http or https URL"))?;
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(invalid("is not an http or https URL")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(invalid(
                "carries credentials; put them in the receiver's check of the signature instead",
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port))
                if !host.ends_with(']') || authority.starts_with('[') && !port.contains(']') =>
            {
                let port: u16 = port
                    .parse()
                    .map_err(|_| invalid("has a port that is not a number"))?;
                (host, port)
            }
            _ => (authority, default_port),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() || port == 0 {
            return Err(invalid("names no host"));
        }
        Ok(Self {
            url: raw.to_owned(),
            host,
            port,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A signing secret, as Standard Webhooks writes it: `whsec_` and the base64 of 24–64 random bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Vec<u8>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

impl SigningSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let bytes = text
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|b| (24..=64).contains(&b.len()))
            .ok_or_else(|| {
                ValidationError::new(
                    "secret",
                    "a signing secret is whsec_ and the base64 of 24 to 64 bytes",
                )
            })?;
        Ok(Self(bytes))
    }

    pub fn expose(&self) -> String {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode(&self.0)
        )
    }

    /// `v1,<base64 of HMAC-SHA256 of "id.timestamp.body">`.
    pub fn sign(&self, id: &str, timestamp_s: i64, body: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_s.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

/// How long an event is tried for at most (MISSION E: up to three days).
pub const GIVE_UP_AFTER_MS: i64 = 3 * 24 * 3_600_000;
/// An endpoint whose deliveries have failed for this long without one success is disabled.
pub const DISABLE_AFTER_MS: i64 = 24 * 3_600_000;

/// The wait before attempt `attempt + 1` after `attempt` failed: 5 s, 30 s, 2 min, 10 min, 30 min,
/// 1 h, 2 h, 4 h, then every 8 h (until [`GIVE_UP_AFTER_MS`] has passed since the event).
pub fn retry_delay_ms(attempt: u32) -> i64 {
    const STEPS: [i64; 8] = [
        5_000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000, 7_200_000, 14_400_000,
    ];
    let index = attempt.saturating_sub(1) as usize;
    STEPS.get(index).copied().unwrap_or(28_800_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_one_the_standard_webhooks_specification_gives_for_its_example() {
        // The example of the Standard Webhooks reference libraries (standard-webhooks, tests):
        // secret MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, msg_p5jXN8AQM9LWM0D4loKWxJek, 1614265330,
        // {"test": 2432232314}.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(secret.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
    }

    #[test]
    fn private_and_local_targets_are_told_apart_from_public_ones() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private_target(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private_target(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn a_receiver_url_is_http_or_https_with_a_host_and_no_credentials() {
        let url = WebhookUrl::parse("https://hooks.example.com/mailroom?x=1").unwrap();
        assert_eq!((url.host(), url.port()), ("hooks.example.com", 443));
        assert_eq!(
            WebhookUrl::parse("http://127.0.0.1:8080/in")
                .unwrap()
                .port(),
            8080
        );
        assert_eq!(
            WebhookUrl::parse("http://[::1]:9000/").unwrap().host(),
            "::1"
        );
        for bad in [
            "ftp://x",
            "https://user:pw@host/",
            "https:///path",
            "not a url",
            "http://host:99999/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_types_round_trip_and_retries_back_off_to_every_eight_hours() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), *t);
        }
        assert!("message.opened".parse::<EventType>().is_err());
        assert_eq!(retry_delay_ms(1), 5_000);
        assert_eq!(retry_delay_ms(9), 28_800_000);
        assert_eq!(retry_delay_ms(40), 28_800_000);
    }
}
