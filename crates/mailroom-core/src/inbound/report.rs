//! Reports that arrive as mail: delivery status notifications (RFC 3464, `multipart/report;
//! report-type=delivery-status`) and abuse feedback reports (ARF, RFC 5965,
//! `report-type=feedback-report`) — what happened to which recipient of which message we sent.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// One recipient's line of a delivery status notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    /// `Final-Recipient` (else `Original-Recipient`), the address only, lower-cased.
    pub recipient: String,
    /// `failed`, `delayed`, `delivered`, `relayed` or `expanded` (RFC 3464 §2.3.3).
    pub action: String,
    /// The enhanced status code, e.g. `5.1.1` (RFC 3463).
    pub status: String,
    /// `Diagnostic-Code`: the remote server's own words, when given.
    pub diagnostic: Option<String>,
}

impl RecipientStatus {
    /// A permanent failure (`failed` with a 5.x.x status): the address should not be mailed again.
    pub fn is_hard_bounce(&self) -> bool {
        self.action.eq_ignore_ascii_case("failed") && self.status.starts_with('5')
    }

    /// A bounce at all: failed, or delayed (a transient problem reported before giving up).
    pub fn is_bounce(&self) -> bool {
        self.action.eq_ignore_ascii_case("failed") || self.action.eq_ignore_ascii_case("delayed")
    }
}

/// What a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status notification.
    Delivery {
        /// The Message-ID of the message it reports on (without angle brackets), from the returned
        /// message or headers.
        original_message_id: Option<String>,
        recipients: Vec<RecipientStatus>,
    },
    /// An abuse (or other) feedback report.
    Feedback {
        /// `Feedback-Type`, e.g. `abuse`.
        feedback_type: String,
        original_message_id: Option<String>,
        /// `Original-Rcpt-To`, else the To of the returned message, lower-cased.
        recipients: Vec<String>,
    },
}

/// The header-like blocks of a `message/delivery-status` or `message/feedback-report` body, each a
/// list of (lower-cased name, value) with folded lines joined.
fn field_blocks(body: &str) -> Vec<Vec<(String, String)>> {
    let mut blocks: Vec<Vec<(String, String)>> = vec![Vec::new()];
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            if blocks.last().is_some_and(|b| !b.is_empty()) {
                blocks.push(Vec::new());
            }
            continue;
        }
        let current = blocks.last_mut().expect("there is always a block");
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':') {
            current.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    blocks.retain(|b| !b.is_empty());
    blocks
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// `rfc822; ann@example.com` → `ann@example.com` (lower-cased, without angle brackets).
fn address_of(value: &str) -> String {
    let address = value.split_once(';').map_or(value, |(_, a)| a);
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_ascii_lowercase()
}

fn bare_id(id: &str) -> String {
    id.trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

/// The Message-ID in a block of headers (`text/rfc822-headers`).
fn message_id_in_headers(text: &str) -> Option<String> {
    MessageParser::default()
        .parse_headers(text.as_bytes())
        .and_then(|m| m.message_id().map(bare_id))
}

/// The original message's Message-ID and To, from the report's returned message or headers.
fn original(message: &Message<'_>) -> (Option<String>, Vec<String>) {
    for part in &message.parts {
        match &part.body {
            PartType::Message(inner) => {
                let to = inner
                    .to()
                    .map(|a| {
                        a.iter()
                            .filter_map(|addr| addr.address().map(|x| x.to_ascii_lowercase()))
                            .collect()
                    })
                    .unwrap_or_default();
                return (inner.message_id().map(bare_id), to);
            }
            PartType::Text(text)
                if part.content_type().is_some_and(|ct| {
                    ct.ctype().eq_ignore_ascii_case("text")
                        && ct
                            .subtype()
                            .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
                }) =>
            {
                let parsed = MessageParser::default().parse_headers(text.as_bytes());
                let to = parsed
                    .as_ref()
                    .and_then(|m| m.to())
                    .map(|a| {
                        a.iter()
                            .filter_map(|addr| addr.address().map(|x| x.to_ascii_lowercase()))
                            .collect()
                    })
                    .unwrap_or_default();
                return (message_id_in_headers(text), to);
            }
            _ => {}
        }
    }
    (None, Vec::new())
}

/// The body of the first part whose type is `message/<subtype>`.
fn report_part(message: &Message<'_>, subtype: &str) -> Option<String> {
    message.parts.iter().find_map(|part| {
        let ct = part.content_type()?;
        if !(ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case(subtype)))
        {
            return None;
        }
        match &part.body {
            PartType::Text(text) => Some(text.to_string()),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
            _ => None,
        }
    })
}

/// What a received message reports, when it is a delivery status notification or a feedback
/// report; `None` for any other message.
pub fn parse_report(raw: &[u8]) -> Option<Report> {
    let message = MessageParser::default().parse(raw)?;
    if let Some(body) = report_part(&message, "delivery-status") {
        let blocks = field_blocks(&body);
        let recipients: Vec<RecipientStatus> = blocks
            .iter()
            .filter_map(|block| {
                let recipient = field(block, "final-recipient")
                    .or_else(|| field(block, "original-recipient"))?;
                Some(RecipientStatus {
                    recipient: address_of(recipient),
                    action: field(block, "action")
                        .unwrap_or_default()
                        .trim()
                        .to_ascii_lowercase(),
                    status: field(block, "status")
                        .unwrap_or_default()
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    diagnostic: field(block, "diagnostic-code").map(|d| {
                        d.split_once(';')
                            .map_or(d, |(_, words)| words)
                            .trim()
                            .to_owned()
                    }),
                })
            })
            .collect();
        if recipients.is_empty() {
            return None;
        }
        let (original_message_id, _) = original(&message);
        return Some(Report::Delivery {
            original_message_id,
            recipients,
        });
    }
    if let Some(body) = report_part(&message, "feedback-report") {
        let blocks = field_blocks(&body);
        let fields: Vec<(String, String)> = blocks.into_iter().flatten().collect();
        let (original_message_id, to) = original(&message);
        let mut recipients: Vec<String> = fields
            .iter()
            .filter(|(n, _)| n == "original-rcpt-to")
            .map(|(_, v)| address_of(v))
            .collect();
        if recipients.is_empty() {
            recipients = to;
        }
        return Some(Report::Feedback {
            feedback_type: field(&fields, "feedback-type")
                .unwrap_or("abuse")
                .to_ascii_lowercase(),
            original_message_id,
            recipients,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DSN: &str = "From: MAILER-DAEMON@mx.example\r\nTo: bounces@corp.example\r\nSubject: Undelivered Mail\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n\
--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n\
Final-Recipient: rfc822; Nobody@Customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <nobody@customer.example>: Recipient address\r\n rejected: User unknown\r\n\r\n\
Final-Recipient: rfc822;later@customer.example\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\n\
--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <abc.123@corp.example>\r\nSubject: Invoice\r\n\r\n--b--\r\n";

    #[test]
    fn a_delivery_status_notification_names_each_recipient_its_status_and_the_original_message() {
        let Some(Report::Delivery {
            original_message_id,
            recipients,
        }) = parse_report(DSN.as_bytes())
        else {
            panic!("a DSN");
        };
        assert_eq!(original_message_id.as_deref(), Some("abc.123@corp.example"));
        assert_eq!(recipients.len(), 2);
        assert_eq!(recipients[0].recipient, "nobody@customer.example");
        assert_eq!(
            (recipients[0].action.as_str(), recipients[0].status.as_str()),
            ("failed", "5.1.1")
        );
        assert_eq!(
            recipients[0].diagnostic.as_deref(),
            Some("550 5.1.1 <nobody@customer.example>: Recipient address rejected: User unknown")
        );
        assert!(recipients[0].is_hard_bounce());
        assert!(!recipients[1].is_hard_bounce() && recipients[1].is_bounce());
    }

    #[test]
    fn ordinary_mail_is_no_report() {
        assert_eq!(
            parse_report(b"From: a@b.example\r\nSubject: hi\r\n\r\nhello\r\n"),
            None
        );
    }
}

/// Whether a sender looks like a mail system reporting a failure (`MAILER-DAEMON`, `postmaster`,
/// "Mail Delivery Subsystem"): the cheap first test of [`parse_plain_bounce`].
pub fn looks_like_mail_system(from_address: &str, from_name: &str) -> bool {
    let local = from_address
        .split('@')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name = from_name.to_ascii_lowercase();
    matches!(
        local.as_str(),
        "mailer-daemon" | "postmaster" | "mail-daemon" | "mailerdaemon"
    ) || name.contains("mail delivery")
        || name.contains("mailer-daemon")
}

/// Subjects mail systems give the failures they report.
const BOUNCE_SUBJECTS: &[&str] = &[
    "undeliver",
    "undelivered",
    "delivery status notification",
    "returned mail",
    "failure notice",
    "mail delivery failed",
    "delivery failure",
    "non-delivery",
    "nondeliverable",
    "delivery has failed",
    "could not be delivered",
    "delivery delayed",
    "warning: message",
];

/// Lines after which a bounce quotes the returned message.
const ORIGINAL_MARKERS: &[&str] = &[
    "original message",
    "copy of the message",
    "copy of your message",
    "message headers follow",
    "returned message",
    "undelivered message headers",
];

fn enhanced_status(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    for (start, &b) in bytes.iter().enumerate() {
        if !matches!(b, b'2' | b'4' | b'5')
            || bytes.get(start + 1) != Some(&b'.')
            || (start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'.'))
        {
            continue;
        }
        let rest = &text[start + 2..];
        let first: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after_first = &rest[first.len()..];
        if first.is_empty() || first.len() > 3 || !after_first.starts_with('.') {
            continue;
        }
        let second: String = after_first[1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let tail = after_first[1 + second.len()..].chars().next();
        if !second.is_empty()
            && second.len() <= 3
            && !tail.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
        {
            return Some(format!("{}.{first}.{second}", b as char));
        }
    }
    None
}

/// A three-digit SMTP reply code (4xx or 5xx) standing on its own.
fn reply_code(text: &str) -> Option<char> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .find(|word| {
            word.len() == 3
                && word.starts_with(['4', '5'])
                && word.chars().all(|c| c.is_ascii_digit())
        })
        .and_then(|word| word.chars().next())
}

/// Addresses in a text: words with one `@` and a dot after it, without surrounding punctuation.
fn addresses_in(text: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for word in text.split(|c: char| {
        c.is_whitespace() || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '[' | ']')
    }) {
        let word = word
            .trim_matches(|c: char| matches!(c, '.' | ':' | '\''))
            .to_ascii_lowercase();
        let Some((local, domain)) = word.split_once('@') else {
            continue;
        };
        let ok = !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@')
            && domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && !local.starts_with("mailto:");
        if ok && !found.contains(&word) {
            found.push(word);
        }
    }
    found
}

/// A bounce that is not a `multipart/report`: the free-text notices of qmail, Exim, Gmail and many
/// others. Taken as one only when the sender is a mail system ([`looks_like_mail_system`]) and the
/// subject says so or the failed recipients are named in `X-Failed-Recipients`. The recipients are
/// those named in that header, else the addresses the text names before it quotes the returned
/// message; the status is the text's enhanced status code, else derived from its SMTP reply code or
/// its words (permanent unless it says delayed or temporary).
pub fn parse_plain_bounce(raw: &[u8]) -> Option<Report> {
    let message = MessageParser::default().parse(raw)?;
    let from = message.from()?.first()?;
    let from_address = from.address().unwrap_or_default().to_ascii_lowercase();
    if !looks_like_mail_system(&from_address, from.name().unwrap_or_default()) {
        return None;
    }
    let failed_header: Vec<String> = message
        .header_values("X-Failed-Recipients")
        .filter_map(|value| value.as_text())
        .flat_map(addresses_in)
        .collect();
    let subject = message.subject().unwrap_or_default().to_ascii_lowercase();
    if failed_header.is_empty() && !BOUNCE_SUBJECTS.iter().any(|s| subject.contains(s)) {
        return None;
    }
    let body = message.body_text(0).unwrap_or_default().into_owned();
    let lower = body.to_ascii_lowercase();
    let cut = ORIGINAL_MARKERS
        .iter()
        .filter_map(|marker| lower.find(marker))
        .min()
        .map(|at| lower[..at].rfind('\n').map_or(at, |line| line + 1))
        .unwrap_or(body.len());
    let (notice, quoted) = body.split_at(cut);
    let report_to: Vec<String> = message
        .to()
        .map(|to| {
            to.iter()
                .filter_map(|a| a.address().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    let recipients = if failed_header.is_empty() {
        addresses_in(notice)
            .into_iter()
            .filter(|a| *a != from_address && !report_to.contains(a))
            .collect()
    } else {
        failed_header
    };
    if recipients.is_empty() {
        return None;
    }
    let notice_lower = notice.to_ascii_lowercase();
    let status = enhanced_status(notice)
        .or_else(|| reply_code(notice).map(|class| format!("{class}.0.0")))
        .unwrap_or_else(|| {
            let transient = [
                "delay",
                "temporar",
                "will retry",
                "still trying",
                "will be retried",
            ]
            .iter()
            .any(|w| notice_lower.contains(w) || subject.contains(w));
            if transient { "4.0.0" } else { "5.0.0" }.to_owned()
        });
    let action = if status.starts_with('5') {
        "failed"
    } else {
        "delayed"
    };
    // The remote server's words (a line with a status or reply code), else the notice's own.
    let diagnostic = notice
        .lines()
        .map(str::trim)
        .find(|line| enhanced_status(line).is_some() || reply_code(line).is_some())
        .or_else(|| {
            notice.lines().map(str::trim).find(|line| {
                let l = line.to_ascii_lowercase();
                l.contains("error") || l.contains("failure") || l.contains("failed")
            })
        })
        .map(|line| line.chars().take(500).collect::<String>());
    let original_message_id = quoted.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("message-id")
            .then(|| bare_id(value))
            .filter(|id| !id.is_empty())
    });
    Some(Report::Delivery {
        original_message_id,
        recipients: recipients
            .into_iter()
            .map(|recipient| RecipientStatus {
                recipient,
                action: action.to_owned(),
                status: status.clone(),
                diagnostic: diagnostic.clone(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod plain_bounce_tests {
    use super::*;

    fn corpus(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../mailroom-testkit/corpus/inbound")
                .join(name),
        )
        .unwrap()
    }

    fn lines(report: Option<Report>) -> Vec<(String, String, String)> {
        match report {
            Some(Report::Delivery { recipients, .. }) => recipients
                .into_iter()
                .map(|r| (r.recipient, r.action, r.status))
                .collect(),
            other => panic!("not a delivery report: {other:?}"),
        }
    }

    #[test]
    fn a_gmail_notice_names_its_failed_recipient_as_a_permanent_failure() {
        let report = parse_plain_bounce(&corpus("flanker__bounce.gmail-no-dns.eml"));
        assert_eq!(
            lines(report),
            [("user@example.comm".into(), "failed".into(), "5.0.0".into())]
        );
    }

    #[test]
    fn a_postmaster_notice_without_headers_names_the_address_in_its_text() {
        let report = parse_plain_bounce(&corpus("flanker__bounce.broken-mime.eml"));
        assert_eq!(
            lines(report),
            [("info@example.net".into(), "failed".into(), "5.0.0".into())]
        );
    }

    #[test]
    fn a_qmail_notice_gives_the_remote_servers_status_and_the_quoted_message_id() {
        let raw = b"From: MAILER-DAEMON@mx.example.net\r\nTo: bounces+abc@cronus.example\r\nSubject: failure notice\r\n\r\n\
Hi. This is the qmail-send program at mx.example.net.\r\nI'm afraid I wasn't able to deliver your message to the following addresses.\r\n\
This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n<nobody@customer.example>:\r\n\
192.0.2.7 does not like recipient.\r\nRemote host said: 550 5.1.1 <nobody@customer.example>: Recipient address rejected\r\n\
Giving up on 192.0.2.7.\r\n\r\n--- Below this line is a copy of the message.\r\n\r\nMessage-ID: <42@cronus.example>\r\nSubject: Invoice\r\n";
        let report = parse_plain_bounce(raw).unwrap();
        let Report::Delivery {
            original_message_id,
            recipients,
        } = report
        else {
            panic!()
        };
        assert_eq!(original_message_id.as_deref(), Some("42@cronus.example"));
        assert_eq!(recipients.len(), 1);
        assert_eq!(recipients[0].recipient, "nobody@customer.example");
        assert_eq!(recipients[0].status, "5.1.1");
        assert!(recipients[0].is_hard_bounce());
        assert!(
            recipients[0]
                .diagnostic
                .as_deref()
                .unwrap()
                .contains("550 5.1.1")
        );
    }

    #[test]
    fn a_person_writing_about_an_undeliverable_parcel_is_not_a_bounce() {
        let raw = b"From: Ann <ann@customer.example>\r\nTo: billing@cronus.example\r\nSubject: Undeliverable parcel\r\n\r\nThe parcel for bob@customer.example came back.\r\n";
        assert_eq!(parse_plain_bounce(raw), None);
    }
}
