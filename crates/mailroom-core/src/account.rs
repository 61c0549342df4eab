//! Accounts: which connector sends the mail, and the limits that apply to it.

use crate::ValidationError;
use std::fmt;
use std::str::FromStr;

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(raw: &str) -> Result<Self, ValidationError> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    other => Err(ValidationError::new(
                        stringify!($name),
                        format!("{other:?} is not one of: {}", [$($text),+].join(", ")),
                    )),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = <String as serde::Deserialize>::deserialize(deserializer)?;
                raw.parse().map_err(|e: ValidationError| serde::de::Error::custom(e.reason))
            }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// The kind of provider an account sends through.
    ConnectorKind { Smtp => "smtp", Pickup => "pickup", CurrentUser => "current-user", Microsoft365 => "microsoft365" }
);

string_enum!(
    /// How a `microsoft365` account holds its right to the mailbox: an app-only token of the app
    /// registration (application permission `Mail.Send`, which an admin may narrow with an
    /// application access policy), or a signed-in user's delegated token.
    GraphPermission { Application => "application", Delegated => "delegated" }
);

/// Exchange Online's sending limits, the defaults of `microsoft365` accounts: 30 messages a minute
/// (learn.microsoft.com, "Exchange Online limits", message rate limit) and 4 concurrent requests
/// per app and mailbox (learn.microsoft.com, "Microsoft Graph service-specific throttling limits",
/// Outlook service).
pub const MICROSOFT365_RATE_LIMIT: u32 = 30;
pub const MICROSOFT365_CONCURRENCY: u32 = 4;

impl ConnectorKind {
    /// Attempts that may be under way at once per connection the account's concurrency limit allows.
    /// An SMTP connection carries two: one finishing its content while the next one's MAIL, RCPT and
    /// DATA ride in the same write (RFC 2920).
    pub fn attempts_per_connection(self) -> u32 {
        match self {
            ConnectorKind::Smtp => 2,
            ConnectorKind::Pickup | ConnectorKind::CurrentUser | ConnectorKind::Microsoft365 => 1,
        }
    }
}

string_enum!(
    /// How an SMTP connection is secured.
    Security { None => "none", Starttls => "starttls", Tls => "tls" }
);

string_enum!(
    /// Whose address appears as the sender. "specific-user" sends as the account's own name and address.
    SenderType { SpecificUser => "specific-user", CurrentUser => "current-user" }
);

string_enum!(
    /// How an account substitutes the visible sender: Send As replaces From; Send On Behalf shows the
    /// substitute in From and the account in Sender.
    SubstituteMode { SendAs => "send-as", SendOnBehalf => "send-on-behalf" }
);

/// Default number of attempts before a message with transient failures is given up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// Default number of simultaneous transactions per account.
pub const DEFAULT_CONCURRENCY_LIMIT: u32 = 3;

/// Limits of one account, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountLimits {
    /// Messages per sliding minute; 0 means unlimited.
    pub rate_limit_per_minute: u32,
    pub concurrency_limit: u32,
    pub max_attempts: u32,
}

impl AccountLimits {
    pub fn new(
        rate_limit_per_minute: i64,
        concurrency_limit: i64,
        max_attempts: i64,
    ) -> Result<Self, ValidationError> {
        let rate = u32::try_from(rate_limit_per_minute)
            .ok()
            .filter(|r| *r <= 1_000_000)
            .ok_or_else(|| {
                ValidationError::new(
                    "rate_limit_per_minute",
                    "must be between 0 (unlimited) and 1000000",
                )
            })?;
        let concurrency = u32::try_from(concurrency_limit)
            .ok()
            .filter(|c| (1..=256).contains(c))
            .ok_or_else(|| {
                ValidationError::new("concurrency_limit", "must be between 1 and 256")
            })?;
        let attempts = u32::try_from(max_attempts)
            .ok()
            .filter(|a| (1..=100).contains(a))
            .ok_or_else(|| ValidationError::new("max_attempts", "must be between 1 and 100"))?;
        Ok(Self {
            rate_limit_per_minute: rate,
            concurrency_limit: concurrency,
            max_attempts: attempts,
        })
    }
}

/// Where a stored secret is presented: the server and the identity it was given for. A password (and,
/// later, any token) stays bound to its endpoint: whoever moves an account to another endpoint must
/// give the secret again, or the stored one could be sent to a server of their choosing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialEndpoint<'a> {
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub security: Security,
    pub username: Option<&'a str>,
}

impl CredentialEndpoint<'_> {
    /// The fields that differ between `self` (where the secret was given) and `next`, by API name.
    pub fn changes_to(&self, next: &CredentialEndpoint<'_>) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if !self
            .host
            .unwrap_or_default()
            .eq_ignore_ascii_case(next.host.unwrap_or_default())
        {
            changed.push("host");
        }
        if self.port != next.port {
            changed.push("port");
        }
        if self.security != next.security {
            changed.push("security");
        }
        if self.username != next.username {
            changed.push("username");
        }
        changed
    }
}

/// How long an SMTP client waits at each stage, in seconds. RFC 5321 §4.5.3.2 gives a client five
/// minutes for the greeting and for each command and ten for the reply to the final ".". An API
/// cannot hold a connection test for five minutes, so mailroom waits less before the content is
/// sent; it keeps the RFC's ten minutes after the final ".", because giving up there leaves the
/// outcome unknown (the server may be scanning the message, and may accept it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpTimeouts {
    /// Opening the TCP connection (and the TLS handshake of implicit TLS).
    pub connect_s: u32,
    /// The server's 220 greeting.
    pub greeting_s: u32,
    /// The reply to each command: EHLO, STARTTLS, AUTH, MAIL FROM, RCPT TO, DATA.
    pub command_s: u32,
    /// The reply to the final "." that ends the content.
    pub end_of_data_s: u32,
}

impl Default for SmtpTimeouts {
    fn default() -> Self {
        Self {
            connect_s: 30,
            greeting_s: 60,
            command_s: 60,
            end_of_data_s: 600,
        }
    }
}

/// Options of an SMTP account beyond its server and limits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpOptions {
    pub timeouts: SmtpTimeouts,
    /// Whether a message whose attempt had an unknown outcome (the connection was lost or timed out
    /// after the final ".") is sent again. MTAs do (a duplicate is better than a loss); an account
    /// that must never duplicate turns it off and the message fails, marked as possibly delivered.
    pub retry_after_unknown: bool,
    /// The name mailroom gives in EHLO; default the server's `hostname` setting.
    pub ehlo_name: Option<String>,
    /// Domains besides the account's own that may appear in From (an approval-workflow sender):
    /// domains whose DMARC policy lets this account's server send for them.
    pub allowed_sender_domains: Vec<String>,
    /// The domain of the VERP return path. When set, each message's envelope sender (where bounces
    /// go) is `bounces+<token>@<bounce_domain>`, so a bounce names the message it is about even when
    /// it quotes nothing of it. Mail to that domain must reach a mailbox mailroom synchronises.
    pub bounce_domain: Option<String>,
    /// `microsoft365` accounts: the app registration whose tokens they present.
    pub app_registration_id: Option<uuid::Uuid>,
    /// `microsoft365` accounts: application or delegated permission.
    pub permission: Option<GraphPermission>,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        Self {
            timeouts: SmtpTimeouts::default(),
            retry_after_unknown: true,
            ehlo_name: None,
            allowed_sender_domains: Vec::new(),
            bounce_domain: None,
            app_registration_id: None,
            permission: None,
        }
    }
}

impl SmtpOptions {
    /// Checks the ranges: every timeout 1 s to 1 hour; an EHLO name that is a domain or an address
    /// literal.
    pub fn validate(self) -> Result<Self, ValidationError> {
        let timeouts = [
            ("timeouts.connect_s", self.timeouts.connect_s),
            ("timeouts.greeting_s", self.timeouts.greeting_s),
            ("timeouts.command_s", self.timeouts.command_s),
            ("timeouts.end_of_data_s", self.timeouts.end_of_data_s),
        ];
        for (field, seconds) in timeouts {
            if !(1..=3600).contains(&seconds) {
                return Err(ValidationError::new(
                    field,
                    "must be between 1 and 3600 seconds",
                ));
            }
        }
        if let Some(name) = &self.ehlo_name {
            parse_ehlo_name(name)?;
        }
        let mut options = self;
        if let Some(domain) = &mut options.bounce_domain {
            *domain = crate::dkim::parse_domain(domain.trim())
                .map_err(|e| e.at("options.bounce_domain"))?;
        }
        for (index, domain) in options.allowed_sender_domains.iter_mut().enumerate() {
            *domain = domain.trim().to_ascii_lowercase();
            parse_ehlo_name(domain).map_err(|_| {
                ValidationError::new(
                    format!("allowed_sender_domains[{index}]"),
                    format!("{domain:?} is not a domain name"),
                )
            })?;
        }
        Ok(options)
    }
}

impl SmtpOptions {
    /// Whether a From address in `domain` is the account's own domain or one it may send for.
    pub fn may_send_for(&self, own_domain: &str, domain: &str) -> bool {
        domain.eq_ignore_ascii_case(own_domain)
            || self
                .allowed_sender_domains
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(domain))
    }
}

/// The name given in EHLO: a fully qualified domain name, or an address literal like `[192.0.2.1]`.
pub fn parse_ehlo_name(raw: &str) -> Result<String, ValidationError> {
    let literal = raw.starts_with('[') && raw.ends_with(']');
    let domain = raw.len() <= 253
        && raw.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if literal && raw[1..raw.len() - 1].parse::<std::net::IpAddr>().is_ok() || domain {
        Ok(raw.to_owned())
    } else {
        Err(ValidationError::new(
            "ehlo_name",
            format!("{raw:?} is neither a domain name nor an address literal like [192.0.2.1]"),
        ))
    }
}

/// A host name or IP address to connect to.
pub fn parse_host(raw: &str) -> Result<String, ValidationError> {
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c));
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(ValidationError::new(
            "host",
            format!("{raw:?} is not a valid host name or IP address"),
        ))
    }
}

/// A name shown to people (account names, sender names): one line, not empty, bounded.
pub fn parse_display_text(field: &str, raw: &str) -> Result<String, ValidationError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(ValidationError::new(field, "may not be empty"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "may not contain control characters (CR, LF, tab…)",
        ));
    }
    if trimmed.chars().count() > 200 {
        return Err(ValidationError::new(
            field,
            "may not be longer than 200 characters",
        ));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connector_kinds_round_trip_through_their_names() {
        for kind in ConnectorKind::ALL {
            assert_eq!(kind.as_str().parse::<ConnectorKind>().unwrap(), *kind);
        }
        assert!("exchange".parse::<ConnectorKind>().is_err());
        assert_eq!(
            "microsoft365".parse::<ConnectorKind>().unwrap(),
            ConnectorKind::Microsoft365
        );
    }

    #[test]
    fn limits_outside_their_range_are_refused() {
        assert!(AccountLimits::new(0, 3, 10).is_ok());
        assert!(AccountLimits::new(-1, 3, 10).is_err());
        assert!(AccountLimits::new(30, 0, 10).is_err());
        assert!(AccountLimits::new(30, 3, 0).is_err());
    }

    #[test]
    fn a_secret_must_be_given_again_when_its_server_or_identity_changes() {
        let given = CredentialEndpoint {
            host: Some("smtp.example.com"),
            port: Some(587),
            security: Security::Starttls,
            username: Some("sales"),
        };
        assert!(given.changes_to(&given.clone()).is_empty());
        let same_host_other_case = CredentialEndpoint {
            host: Some("SMTP.example.com"),
            ..given.clone()
        };
        assert!(given.changes_to(&same_host_other_case).is_empty());
        let moved = CredentialEndpoint {
            host: Some("evil.example.net"),
            port: Some(2525),
            ..given.clone()
        };
        assert_eq!(given.changes_to(&moved), vec!["host", "port"]);
        let downgraded = CredentialEndpoint {
            security: Security::None,
            username: Some("other"),
            ..given.clone()
        };
        assert_eq!(given.changes_to(&downgraded), vec!["security", "username"]);
    }
}
