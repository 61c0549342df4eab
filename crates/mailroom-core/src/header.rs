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
