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
