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

impl CustomHeader {
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
        Ok(Self {
            name: name.to_owned(),
            value: HeaderText::parse(&field, value)?,
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
