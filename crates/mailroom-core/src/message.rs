//! Messages as mailroom keeps them: validated content, status, attempts and related records.

use crate::ValidationError;
use crate::account::string_enum;
use crate::address::Mailbox;
use crate::header::{CustomHeader, HeaderText};
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// Where a message is in its life: `queued → sending → sent | failed`, or `cancelled`.
    MessageStatus { Draft => "draft", Queued => "queued", Sending => "sending", Sent => "sent", Failed => "failed", Cancelled => "cancelled" }
);

impl MessageStatus {
    /// Statuses of messages still in the outbox (not yet finished).
    pub fn is_pending(self) -> bool {
        matches!(self, MessageStatus::Queued | MessageStatus::Sending)
    }
}

string_enum!(
    /// How one delivery attempt ended.
    AttemptOutcome {
        Sent => "sent",
        Transient => "transient",
        Permanent => "permanent",
        Interrupted => "interrupted",
        Unknown => "unknown",
    }
);

string_enum!(
    /// Whether a document is emailed to a customer without asking, after a user confirms, or not at all.
    EmailPolicy { WithoutAsking => "without-asking", AfterConfirmation => "after-confirmation", NoEmail => "none" }
);

string_enum!(
    /// What a document email carries: the PDF the business application produced, nothing, or an
    /// electronic document file.
    AttachmentPolicy { Pdf => "pdf", NoAttachment => "none", ElectronicDocument => "electronic-document" }
);

string_enum!(
    /// How a business record relates to a message: the document it is about, or another entity.
    Relation { Primary => "primary", Related => "related" }
);

/// Most recipients one message may have over To, Cc and Bcc.
pub const MAX_RECIPIENTS: usize = 500;

/// A business record a message concerns, e.g. `{sales-invoice, 103001, primary}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelatedRecord {
    pub record_type: String,
    pub record_id: String,
    pub relation: Relation,
}

impl RelatedRecord {
    pub fn new(
        record_type: &str,
        record_id: &str,
        relation: Relation,
    ) -> Result<Self, ValidationError> {
        let type_ok = !record_type.is_empty()
            && record_type.len() <= 64
            && record_type
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !type_ok {
            return Err(ValidationError::new(
                "type",
                format!(
                    "{record_type:?} is not a valid record type (1-64 lowercase letters, digits, '-' or '_')"
                ),
            ));
        }
        if record_id.is_empty() || record_id.len() > 200 || record_id.chars().any(char::is_control)
        {
            return Err(ValidationError::new(
                "id",
                "a record id must be 1-200 characters without control characters",
            ));
        }
        Ok(Self {
            record_type: record_type.to_owned(),
            record_id: record_id.to_owned(),
            relation,
        })
    }
}

/// The caller's part of a message, validated: recipients, subject and bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageContent {
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub bcc: Vec<Mailbox>,
    pub reply_to: Vec<Mailbox>,
    pub headers: Vec<CustomHeader>,
    pub subject: HeaderText,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The visible sender when it is not the account itself (current user, Send As, workflow user).
    pub from: Option<Mailbox>,
    /// The `Sender` header, for Send On Behalf.
    pub sender: Option<Mailbox>,
}

/// Raw recipient lists and bodies, as they arrive from a caller.
pub struct RawContent<'a> {
    pub to: &'a [String],
    pub cc: &'a [String],
    pub bcc: &'a [String],
    pub reply_to: &'a [String],
    /// Custom headers as (name, value) pairs.
    pub headers: &'a [(String, String)],
    pub subject: &'a str,
    pub text: Option<&'a str>,
    pub html: Option<&'a str>,
}

/// The byte offset of the first C0 control character (or DEL) other than tab, CR, LF and form feed:
/// NUL and the like cannot travel in a text part and are refused rather than dropped.
fn first_forbidden_control(body: &str) -> Option<usize> {
    body.bytes()
        .position(|b| (b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n' | 0x0c)) || b == 0x7f)
}

impl MessageContent {
    /// Validates a caller's message; `max_body_bytes` bounds text and HTML bodies together.
    pub fn parse(raw: RawContent<'_>, max_body_bytes: usize) -> Result<Self, ValidationError> {
        let parse_list = |field: &str, list: &[String]| -> Result<Vec<Mailbox>, ValidationError> {
            list.iter()
                .enumerate()
                .map(|(index, entry)| {
                    Mailbox::parse(entry)
                        .map_err(|e| ValidationError::new(format!("{field}[{index}]"), e.reason))
                })
                .collect()
        };
        let to = parse_list("to", raw.to)?;
        let cc = parse_list("cc", raw.cc)?;
        let bcc = parse_list("bcc", raw.bcc)?;
        let recipient_count = to.len() + cc.len() + bcc.len();
        if recipient_count == 0 {
            return Err(ValidationError::new(
                "to",
                "a message needs at least one recipient in to, cc or bcc",
            ));
        }
        if recipient_count > MAX_RECIPIENTS {
            return Err(ValidationError::new(
                "to",
                format!(
                    "a message may have at most {MAX_RECIPIENTS} recipients; it has {recipient_count}"
                ),
            ));
        }
        let reply_to = parse_list("reply_to", raw.reply_to)?;
        let headers = raw
            .headers
            .iter()
            .map(|(name, value)| CustomHeader::parse(name, value))
            .collect::<Result<Vec<_>, _>>()?;
        let subject = HeaderText::parse("subject", raw.subject)?;
        let html = raw.html.filter(|h| !h.is_empty()).map(str::to_owned);
        // An HTML message without the caller's own text gets a plain-text alternative derived from it.
        let own_text = raw.text.filter(|t| !t.is_empty()).map(str::to_owned);
        if own_text.is_none() && html.is_none() {
            return Err(ValidationError::new(
                "text",
                "a message needs a text or an html body",
            ));
        }
        for (field, body) in [("text", &own_text), ("html", &html)] {
            if let Some(position) = body.as_deref().and_then(first_forbidden_control) {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "contains a control character (U+{:04X}) at byte {position}; only tab, line breaks and form feed may appear in a body",
                        body.as_deref().unwrap_or_default()[position..]
                            .chars()
                            .next()
                            .map_or(0, u32::from)
                    ),
                ));
            }
        }
        let body_bytes =
            own_text.as_ref().map_or(0, String::len) + html.as_ref().map_or(0, String::len);
        if body_bytes > max_body_bytes {
            return Err(ValidationError::new(
                "body",
                format!("the body is {body_bytes} bytes; the limit is {max_body_bytes} bytes"),
            ));
        }
        let text = own_text.or_else(|| html.as_deref().map(html_to_text));
        Ok(Self {
            to,
            cc,
            bcc,
            reply_to,
            headers,
            subject,
            text,
            html,
            from: None,
            sender: None,
        })
    }

    /// Every envelope recipient: To, Cc and Bcc, without duplicates, in order.
    pub fn envelope_recipients(&self) -> Vec<&crate::address::EmailAddress> {
        let mut seen = std::collections::HashSet::new();
        self.to
            .iter()
            .chain(&self.cc)
            .chain(&self.bcc)
            .map(|m| &m.address)
            .filter(|a| seen.insert(a.as_str().to_ascii_lowercase()))
            .collect()
    }
}

/// The plain-text rendering of an HTML body, wrapped at 78 columns, links kept as footnotes.
pub fn html_to_text(html: &str) -> String {
    html2text::from_read(html.as_bytes(), 78).unwrap_or_else(|_| String::new())
}

/// Renders a message identifier as `<unique@domain>`; mailroom generates every Message-ID itself.
pub fn message_id_for(unique: &str, sender_domain: &str) -> String {
    format!("<{unique}@{sender_domain}>")
}

impl fmt::Display for RelatedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} ({})",
            self.record_type, self.record_id, self.relation
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nul_and_other_control_characters_in_a_body_are_refused_naming_the_body() {
        for (text, html, field) in [
            (Some("a\0b"), None, "text"),
            (Some("ok"), Some("<p>\u{1b}[31m</p>"), "html"),
            (Some("bell\u{7}"), None, "text"),
        ] {
            let error = MessageContent::parse(
                RawContent {
                    to: &["a@example.com".to_string()],
                    cc: &[],
                    bcc: &[],
                    reply_to: &[],
                    headers: &[],
                    subject: "s",
                    text,
                    html,
                },
                1 << 20,
            )
            .unwrap_err();
            assert_eq!(error.field, field);
        }
        let fine = MessageContent::parse(
            RawContent {
                to: &["a@example.com".to_string()],
                cc: &[],
                bcc: &[],
                reply_to: &[],
                headers: &[],
                subject: "s",
                text: Some("tab\there\r\nform\u{c}feed\rbare"),
                html: None,
            },
            1 << 20,
        );
        assert!(fine.is_ok());
    }

    #[test]
    fn a_message_without_recipients_is_refused() {
        let none = strings(&[]);
        let err = MessageContent::parse(
            RawContent {
                to: &none,
                cc: &none,
                bcc: &none,
                reply_to: &[],
                headers: &[],
                subject: "s",
                text: Some("t"),
                html: None,
            },
            100,
        )
        .unwrap_err();
        assert_eq!(err.field, "to");
    }

    #[test]
    fn an_invalid_recipient_is_named_by_its_position() {
        let to = strings(&["ok@example.com", "broken"]);
        let none = strings(&[]);
        let err = MessageContent::parse(
            RawContent {
                to: &to,
                cc: &none,
                bcc: &none,
                reply_to: &[],
                headers: &[],
                subject: "s",
                text: Some("t"),
                html: None,
            },
            100,
        )
        .unwrap_err();
        assert_eq!(err.field, "to[1]");
    }

    #[test]
    fn a_body_over_the_limit_is_refused_with_the_limit_named() {
        let to = strings(&["ok@example.com"]);
        let none = strings(&[]);
        let body = "x".repeat(101);
        let err = MessageContent::parse(
            RawContent {
                to: &to,
                cc: &none,
                bcc: &none,
                reply_to: &[],
                headers: &[],
                subject: "s",
                text: Some(&body),
                html: None,
            },
            100,
        )
        .unwrap_err();
        assert!(err.reason.contains("100 bytes"), "{err}");
    }

    #[test]
    fn an_html_message_gets_a_plain_text_alternative_unless_the_caller_gives_one() {
        let to = strings(&["ok@example.com"]);
        let html = "<h1>Invoice 103001</h1><p>Total: <b>1,250.00 EUR</b></p><p><a href=\"https://pay.example.com/103001\">Pay now</a></p>";
        let derived = MessageContent::parse(
            RawContent {
                to: &to,
                cc: &[],
                bcc: &[],
                reply_to: &[],
                headers: &[],
                subject: "s",
                text: None,
                html: Some(html),
            },
            10_000,
        )
        .unwrap();
        let text = derived.text.unwrap();
        assert!(
            text.contains("Invoice 103001")
                && text.contains("1,250.00 EUR")
                && text.contains("https://pay.example.com/103001"),
            "{text}"
        );
        assert!(!text.contains('<'), "{text}");
        let own = MessageContent::parse(
            RawContent {
                to: &to,
                cc: &[],
                bcc: &[],
                reply_to: &[],
                headers: &[],
                subject: "s",
                text: Some("mine"),
                html: Some(html),
            },
            10_000,
        )
        .unwrap();
        assert_eq!(own.text.as_deref(), Some("mine"));
    }

    #[test]
    fn envelope_recipients_include_bcc_once() {
        let to = strings(&["a@example.com"]);
        let cc = strings(&["A@example.com", "b@example.com"]);
        let bcc = strings(&["c@example.com"]);
        let content = MessageContent::parse(
            RawContent {
                to: &to,
                cc: &cc,
                bcc: &bcc,
                reply_to: &[],
                headers: &[],
                subject: "s",
                text: Some("t"),
                html: None,
            },
            100,
        )
        .unwrap();
        let recipients: Vec<_> = content
            .envelope_recipients()
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(
            recipients,
            ["a@example.com", "b@example.com", "c@example.com"]
        );
    }
}
