//! Email addresses and mailboxes (`Name <local@domain>`), validated once at the edge.
//!
//! mailroom accepts the dot-atom form of RFC 5321/5322 addresses with ASCII characters. Quoted local
//! parts, comments and internationalised addresses are refused with a clear reason rather than being
//! passed on to a server that may mangle them.

use crate::ValidationError;
use std::fmt;

const MAX_LOCAL_LEN: usize = 64;
const MAX_ADDRESS_LEN: usize = 254;
const MAX_DISPLAY_NAME_LEN: usize = 200;

/// A syntactically valid `local@domain` address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses an address, explaining what is wrong when it is refused.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let field = "address";
        if raw.is_empty() {
            return Err(ValidationError::new(field, "the address is empty"));
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                field,
                format!("{raw:?} contains a control character (CR, LF, tab…)"),
            ));
        }
        if !raw.is_ascii() {
            return Err(ValidationError::new(
                field,
                format!(
                    "{raw:?} contains non-ASCII characters; internationalised addresses are not supported"
                ),
            ));
        }
        if raw.len() > MAX_ADDRESS_LEN {
            return Err(ValidationError::new(
                field,
                format!("{raw:?} is longer than {MAX_ADDRESS_LEN} characters"),
            ));
        }
        let Some((local, domain)) = raw.rsplit_once('@') else {
            return Err(ValidationError::new(field, format!("{raw:?} has no '@'")));
        };
        if local.is_empty() || local.len() > MAX_LOCAL_LEN {
            return Err(ValidationError::new(
                field,
                format!(
                    "{raw:?} has a local part that is empty or longer than {MAX_LOCAL_LEN} characters"
                ),
            ));
        }
        let local_ok = local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext));
        if !local_ok {
            return Err(ValidationError::new(
                field,
                format!(
                    "{raw:?} has an invalid local part (allowed: letters, digits, !#$%&'*+-/=?^_`{{|}}~ and single dots)"
                ),
            ));
        }
        if !is_valid_domain(domain) {
            return Err(ValidationError::new(
                field,
                format!("{raw:?} has an invalid domain"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

fn is_valid_domain(domain: &str) -> bool {
    if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        return literal.parse::<std::net::IpAddr>().is_ok();
    }
    !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A display name as written: a quoted string (`"John \"JD\" Doe"`) loses its quotes and its
/// backslash escapes; anything else is taken as it is.
fn unquote(name: &str) -> String {
    let Some(inner) = name
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return name.to_owned();
    };
    let mut unquoted = String::with_capacity(inner.len());
    let mut characters = inner.chars();
    while let Some(c) = characters.next() {
        match c {
            '\\' => unquoted.extend(characters.next()),
            other => unquoted.push(other),
        }
    }
    unquoted
}

/// A display name as an RFC 5322 quoted string (backslashes and quotes escaped), which
/// [`Mailbox::parse`] reads back to the same name.
pub fn quoted_name(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An address with an optional display name, as written in From/To/Cc headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

impl Mailbox {
    /// Parses `local@domain` or `Display Name <local@domain>` (the name may be in double quotes).
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        if trimmed.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                "address",
                format!("{raw:?} contains a control character (CR, LF, tab…)"),
            ));
        }
        match (trimmed.rfind('<'), trimmed.ends_with('>')) {
            (Some(open), true) => {
                let address = EmailAddress::parse(&trimmed[open + 1..trimmed.len() - 1])?;
                let name = unquote(trimmed[..open].trim());
                Ok(Self {
                    name: Self::parse_name(name.trim())?,
                    address,
                })
            }
            (None, false) => Ok(Self {
                name: None,
                address: EmailAddress::parse(trimmed)?,
            }),
            _ => Err(ValidationError::new(
                "address",
                format!("{raw:?} has unbalanced angle brackets"),
            )),
        }
    }

    /// A mailbox from already separated parts (e.g. an account's sender name and address).
    pub fn new(name: Option<&str>, address: EmailAddress) -> Result<Self, ValidationError> {
        Ok(Self {
            name: Self::parse_name(name.unwrap_or_default())?,
            address,
        })
    }

    fn parse_name(name: &str) -> Result<Option<String>, ValidationError> {
        if name.chars().any(|c| c.is_control()) {
            return Err(ValidationError::new(
                "name",
                "a display name may not contain control characters (CR, LF, tab…)",
            ));
        }
        if name.chars().count() > MAX_DISPLAY_NAME_LEN {
            return Err(ValidationError::new(
                "name",
                format!("a display name may not be longer than {MAX_DISPLAY_NAME_LEN} characters"),
            ));
        }
        Ok((!name.is_empty()).then(|| name.to_owned()))
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{} <{}>", quoted_name(name), self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mailbox_written_out_reads_back_with_the_same_name() {
        for name in ["John \"JD\" Doe", "Back\\slash", "Müller, Jörg", "O'Brien"] {
            let mailbox =
                Mailbox::new(Some(name), EmailAddress::parse("a@example.com").unwrap()).unwrap();
            let again = Mailbox::parse(&mailbox.to_string()).unwrap();
            assert_eq!(again.name.as_deref(), Some(name), "{mailbox}");
        }
    }

    #[test]
    fn ordinary_addresses_are_accepted() {
        for ok in [
            "a@example.com",
            "first.last+tag@sub.example.co.uk",
            "x@[127.0.0.1]",
            "o'brien@example.ie",
        ] {
            assert!(EmailAddress::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        for bad in [
            "",
            "no-at-sign",
            "@example.com",
            "a@",
            "a..b@example.com",
            "a@-x.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@example.com\r\nBcc: x@y.z",
            "jörg@example.com",
        ] {
            let err = EmailAddress::parse(bad).expect_err(bad);
            assert!(!err.reason.is_empty());
        }
    }

    #[test]
    fn a_mailbox_may_carry_a_display_name() {
        let mailbox = Mailbox::parse("\"Sales Team\" <sales@example.com>").unwrap();
        assert_eq!(mailbox.name.as_deref(), Some("Sales Team"));
        assert_eq!(mailbox.address.as_str(), "sales@example.com");
        assert_eq!(Mailbox::parse("plain@example.com").unwrap().name, None);
        assert!(Mailbox::parse("Name <a@example.com").is_err());
        assert!(Mailbox::parse("Evil\r\nBcc: x@y.z <a@example.com>").is_err());
    }
}
