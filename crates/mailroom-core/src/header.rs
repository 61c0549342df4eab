//! Header values that are safe to write: no CR/LF (header injection), no other control characters.

use crate::ValidationError;

/// Longest subject mailroom accepts, in characters. Longer lines are folded when written.
pub const MAX_SUBJECT_CHARS: usize = 998;

/// A single-line header value that can be written without allowing header injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderText(String);

impl HeaderText {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        if raw.contains(['\r', '\n']) {
            return Err(ValidationError::new(
                field,
                "header values may not contain CR or LF (header injection)",
            ));
        }
        if raw.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ValidationError::new(
                field,
                "header values may not contain control characters",
            ));
        }
        if raw.chars().count() > MAX_SUBJECT_CHARS {
            return Err(ValidationError::new(
                field,
                format!("longer than {MAX_SUBJECT_CHARS} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_returns_and_line_feeds_are_refused_as_header_injection() {
        assert!(HeaderText::parse("subject", "Invoice\r\nBcc: victim@example.com").is_err());
        assert!(HeaderText::parse("subject", "Invoice\nX: y").is_err());
        assert!(HeaderText::parse("subject", "Invoice 103001 — März").is_ok());
    }
}

/// Headers mailroom writes itself or derives from other fields; a caller may not set them.
pub const RESERVED_HEADERS: &[&str] = &[
    "message-id",
    "date",
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "content-id",
    "received",
    "return-path",
    "dkim-signature",
    "in-reply-to",
    "references",
    "x-sender",
    "x-receiver",
];

/// A header the caller adds, e.g. `X-Order-Ref: 4711`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomHeader {
    pub name: String,
    pub value: HeaderText,
}

/// Headers mailroom writes itself on replies and forwards sent from the application; a stored
/// message may carry them, a caller may not set them.
pub const THREADING_HEADERS: &[&str] = &["in-reply-to", "references"];

impl CustomHeader {
    /// A header read back from the store: a caller's custom header, or the threading headers
    /// mailroom set on a reply.
    pub fn stored(name: &str, value: &str) -> Result<Self, ValidationError> {
        if THREADING_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Ok(Self {
                name: name.to_owned(),
                value: HeaderText::parse(&format!("headers.{name}"), value)?,
            });
        }
        Self::parse(name, value)
    }

    pub fn parse(name: &str, value: &str) -> Result<Self, ValidationError> {
        let field = format!("headers.{name}");
        let valid_name = !name.is_empty()
            && name.len() <= 76
            && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
        if !valid_name {
            return Err(ValidationError::new(
                field,
                "a header name is 1-76 visible ASCII characters without ':' or spaces",
            ));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ValidationError::new(
                field,
                format!(
                    "{name} is set by mailroom (or by its own field) and cannot be given as a custom header"
                ),
            ));
        }
        let header = Self {
            name: name.to_owned(),
            value: HeaderText::parse(&field, value)?,
        };
        if header.is_structured() {
            if !value.is_ascii() {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "{name} holds addresses or <URL>s, which must be ASCII (encode a URL's non-ASCII characters as %XX)"
                    ),
                ));
            }
            if value.split_whitespace().any(|word| word.len() > 900) {
                return Err(ValidationError::new(
                    field,
                    "a single address or <URL> longer than 900 characters cannot be written in a header",
                ));
            }
        }
        Ok(header)
    }

    /// Whether the value is structured (addresses, `<URL>`s, message ids, list ids) rather than
    /// text. Structured values are folded but never RFC 2047-encoded: receivers read them literally
    /// (an encoded `List-Unsubscribe` is unusable).
    pub fn is_structured(&self) -> bool {
        const STRUCTURED: &[&str] = &[
            "list-unsubscribe",
            "list-unsubscribe-post",
            "list-id",
            "list-help",
            "list-subscribe",
            "list-post",
            "list-owner",
            "list-archive",
            "in-reply-to",
            "references",
            "auto-submitted",
            "precedence",
            "feedback-id",
        ];
        let name = self.name.to_ascii_lowercase();
        if STRUCTURED.contains(&name.as_str()) {
            return true;
        }
        // A list of <…> items, such as <mailto:…>, <https://…> or <id@host>.
        let value = self.value.as_str().trim();
        !value.is_empty()
            && value.split(',').all(|item| {
                let item = item.trim();
                item.starts_with('<') && item.ends_with('>') && item.len() > 2
            })
    }
}

#[cfg(test)]
mod custom_header_tests {
    use super::*;

    #[test]
    fn custom_headers_may_not_override_what_mailroom_owns_or_inject_lines() {
        assert!(CustomHeader::parse("X-Order-Ref", "4711").is_ok());
        assert!(CustomHeader::parse("List-Unsubscribe", "<mailto:u@example.com>").is_ok());
        for reserved in ["Message-ID", "message-id", "From", "BCC", "Content-Type"] {
            assert!(
                CustomHeader::parse(reserved, "x")
                    .unwrap_err()
                    .reason
                    .contains("set by mailroom"),
                "{reserved}"
            );
        }
        assert!(CustomHeader::parse("X Bad", "x").is_err());
        assert!(CustomHeader::parse("X-Ok", "a\r\nBcc: evil@example.com").is_err());
    }
}
