//! Turns a validated message into RFC 5322 bytes with mail-builder.
//!
//! Composition is deterministic: the Message-ID and Date are fixed when the message is accepted, so
//! every attempt (and a re-send after a crash) produces the same message, recognisable by its Message-ID.
//! Bcc recipients are never written into the headers; they only appear in the SMTP envelope.

use crate::address::Mailbox;
use crate::message::MessageContent;
use base64::Engine as _;
use mail_builder::MessageBuilder;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::{BodyPart, MimePart};
use std::borrow::Cow;

/// A file attached to a message.
pub struct AttachmentPart<'a> {
    pub filename: &'a str,
    pub content_type: &'a str,
    pub bytes: &'a [u8],
    /// Set for an image shown inside the HTML body as `cid:<content_id>`.
    pub content_id: Option<&'a str>,
}

/// Everything needed to write one message.
pub struct Composition<'a> {
    pub from: &'a Mailbox,
    pub content: &'a MessageContent,
    /// The Message-ID with its angle brackets, as stored.
    pub message_id: &'a str,
    pub date_unix_seconds: i64,
    pub attachments: &'a [AttachmentPart<'a>],
}

/// Text with every line break as CRLF: a bare CR or a bare LF becomes CRLF (SMTP carries only CRLF;
/// Postfix turned a bare CR into a space).
pub fn crlf(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    // Runs between line breaks are copied whole (CR and LF never occur inside a UTF-8 sequence);
    // text that already ends every line with CRLF is not copied at all.
    let mut out: Option<String> = None;
    let mut copied = 0;
    for at in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        let bare = if bytes[at] == b'\r' {
            bytes.get(at + 1) != Some(&b'\n')
        } else {
            at == 0 || bytes[at - 1] != b'\r'
        };
        if bare {
            let out =
                out.get_or_insert_with(|| String::with_capacity(text.len() + text.len() / 32 + 2));
            out.push_str(&text[copied..at]);
            out.push_str("\r\n");
            copied = at + 1;
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut out) => {
            out.push_str(&text[copied..]);
            Cow::Owned(out)
        }
    }
}

/// Whether header text must be RFC 2047-encoded to read back as written: non-ASCII, or ASCII that a
/// reader would take for an encoded word.
fn needs_encoding(text: &str) -> bool {
    !text.is_ascii() || text.contains("=?")
}

/// `text` as UTF-8 B-encoded words of at most 75 characters each, separated by spaces (where the
/// header may be folded).
fn encoded_words(text: &str) -> String {
    // 52 base64 characters plus "=?utf-8?B?" and "?=": a folded line stays within 78 characters.
    const MAX_INPUT: usize = 39;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > MAX_INPUT {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() || words.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|word| {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(word)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A display name as an RFC 5322 phrase: plain words as they are, anything with specials as one
/// quoted string (quotes and backslashes escaped once), and text that needs it as encoded words.
fn phrase(name: &str) -> String {
    if needs_encoding(name) {
        return encoded_words(name);
    }
    let atoms_only = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || "!#$%&'*+-/=?^_`{|}~".contains(c));
    if atoms_only && !name.starts_with(' ') && !name.ends_with(' ') && !name.contains("  ") {
        return name.to_owned();
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

fn mailbox_text(mailbox: &Mailbox) -> String {
    match &mailbox.name {
        Some(name) => format!("{} <{}>", phrase(name), mailbox.address),
        None => format!("<{}>", mailbox.address),
    }
}

fn mailbox_list(mailboxes: &[Mailbox]) -> String {
    mailboxes
        .iter()
        .map(mailbox_text)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Content-ID with an `@` (RFC 2392 makes it an addr-spec): `logo` becomes `logo@<domain>`.
fn full_content_id(content_id: &str, domain: &str) -> String {
    if content_id.contains('@') {
        content_id.to_owned()
    } else {
        format!("{content_id}@{domain}")
    }
}

/// Base64 in lines of 76 characters, each ended by CRLF.
fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for line in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A message attached as `message/rfc822`: it must be 7bit or 8bit (RFC 2045 §6.4), so it is sent with
/// CRLF line ends as it is; one that cannot be (NUL, lines over 998 octets) is not a valid message and
/// goes as `application/octet-stream`, byte for byte, instead.
fn message_attachment(bytes: &[u8]) -> Option<(Vec<u8>, &'static str)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let normalized = crlf(text).into_owned().into_bytes();
    let valid = !normalized.contains(&0)
        && normalized
            .split(|&b| b == b'\n')
            .all(|line| line.len() <= 999);
    valid.then(|| {
        let encoding = if normalized.is_ascii() {
            "7bit"
        } else {
            "8bit"
        };
        (normalized, encoding)
    })
}

/// One attachment as a MIME part, with a transfer encoding that carries its bytes intact: text types
/// in base64 (a `7bit` text part would lose bare CRs, NULs and long lines on the way), messages as
/// themselves, multiparts (which would need boundaries) as opaque bytes.
fn attachment_part<'a>(attachment: &'a AttachmentPart<'a>) -> MimePart<'a> {
    let declared = attachment.content_type.to_ascii_lowercase();
    if declared == "message/rfc822"
        && let Some((bytes, encoding)) = message_attachment(attachment.bytes)
    {
        return MimePart::new("message/rfc822", BodyPart::Binary(bytes.into()))
            .transfer_encoding(encoding);
    }
    let content_type = if declared.starts_with("multipart/") || declared == "message/rfc822" {
        "application/octet-stream"
    } else {
        attachment.content_type
    };
    if declared.starts_with("text/") {
        return MimePart::new(
            content_type,
            BodyPart::Binary(base64_lines(attachment.bytes).into()),
        )
        .transfer_encoding("base64");
    }
    MimePart::new(content_type, BodyPart::Binary(attachment.bytes.into()))
}

/// The MIME tree: the text/HTML alternative; with images shown in the HTML, those and the readable
/// part as one `multipart/related`; inside `multipart/mixed` when there are ordinary attachments.
fn body<'a>(
    text: Option<Cow<'a, str>>,
    html: Option<Cow<'a, str>>,
    attachments: &'a [AttachmentPart<'a>],
    domain: &str,
) -> MimePart<'a> {
    let text = text.map(|t| MimePart::new("text/plain", BodyPart::Text(t)));
    let html = html.map(|h| MimePart::new("text/html", BodyPart::Text(h)));
    let readable = match (text, html) {
        (Some(text), Some(html)) => MimePart::new("multipart/alternative", vec![text, html]),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => MimePart::new("text/plain", BodyPart::Text("".into())),
    };
    let readable_type = match &readable.contents {
        BodyPart::Multipart(_) => "multipart/alternative",
        _ => "text/html",
    };
    let mut related = Vec::new();
    let mut mixed = Vec::new();
    for attachment in attachments {
        let part = attachment_part(attachment);
        match attachment.content_id {
            Some(content_id) => {
                related.push(part.inline().cid(full_content_id(content_id, domain)))
            }
            None => mixed.push(part.attachment(attachment.filename)),
        }
    }
    let main = if related.is_empty() {
        readable
    } else {
        related.insert(0, readable);
        // RFC 2387: `type` names the root part's type.
        MimePart::new(
            ContentType::new("multipart/related").attribute("type", readable_type),
            related,
        )
    };
    if mixed.is_empty() {
        main
    } else {
        mixed.insert(0, main);
        MimePart::new("multipart/mixed", mixed)
    }
}

/// Writes the message; the result uses CRLF line endings throughout.
pub fn compose(message: &Composition<'_>) -> Vec<u8> {
    let content = message.content;
    let bare_id = message
        .message_id
        .trim_start_matches('<')
        .trim_end_matches('>');
    // The message's own visible sender (current user, Send As, workflow user) wins over the account's.
    let from = content.from.as_ref().unwrap_or(message.from);
    let domain = from.address.domain().to_owned();
    let subject = content.subject.as_str();
    let mut builder = MessageBuilder::new()
        .header("From", Raw::new(mailbox_text(from)))
        .header(
            "Subject",
            Raw::new(if needs_encoding(subject) {
                encoded_words(subject)
            } else {
                subject.to_owned()
            }),
        )
        .message_id(MessageId::new(bare_id))
        .date(message.date_unix_seconds);
    builder = if content.to.is_empty() {
        // Only Cc or Bcc recipients: an empty group, as RFC 5322 §3.6.3 suggests, not a missing To.
        builder.header("To", Raw::new("undisclosed-recipients:;"))
    } else {
        builder.header("To", Raw::new(mailbox_list(&content.to)))
    };
    if !content.cc.is_empty() {
        builder = builder.header("Cc", Raw::new(mailbox_list(&content.cc)));
    }
    if let Some(sender) = &content.sender {
        builder = builder.header("Sender", Raw::new(mailbox_text(sender)));
    }
    if !content.reply_to.is_empty() {
        builder = builder.header("Reply-To", Raw::new(mailbox_list(&content.reply_to)));
    }
    for header in &content.headers {
        let value = header.value.as_str();
        let written = if !header.is_structured() && needs_encoding(value) {
            encoded_words(value)
        } else {
            value.to_owned()
        };
        builder = builder.header(header.name.as_str(), Raw::new(written));
    }
    // Inline images are referred to as cid:<id> in the HTML; the Content-ID gains a domain, and so
    // must the references.
    let mut html = content.html.as_deref().map(crlf);
    for attachment in message.attachments {
        if let (Some(id), Some(body)) = (attachment.content_id, html.as_mut())
            && !id.contains('@')
        {
            let full = full_content_id(id, &domain);
            let mut rewritten = body.to_string();
            for end in ['"', '\'', ')', ' ', '>'] {
                rewritten =
                    rewritten.replace(&format!("cid:{id}{end}"), &format!("cid:{full}{end}"));
            }
            *body = Cow::Owned(rewritten);
        }
    }
    builder = builder.body(body(
        content.text.as_deref().map(crlf),
        html,
        message.attachments,
        &domain,
    ));
    let attachment_bytes: usize = message
        .attachments
        .iter()
        .map(|a| a.bytes.len() * 4 / 3 + 256)
        .sum();
    let mut bytes = Vec::with_capacity(
        attachment_bytes
            + 1024
            + content.text.as_ref().map_or(0, String::len)
            + content.html.as_ref().map_or(0, String::len),
    );
    builder
        .write_to(&mut bytes)
        .expect("writing into a Vec cannot fail");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::RawContent;

    #[test]
    fn every_bare_cr_and_bare_lf_becomes_crlf_and_text_already_in_crlf_is_not_copied() {
        for (text, expected) in [
            ("", ""),
            ("a\nb", "a\r\nb"),
            ("a\rb", "a\r\nb"),
            ("\r\r\n", "\r\n\r\n"),
            ("\n\n", "\r\n\r\n"),
            ("\r\n\n", "\r\n\r\n"),
            ("ü\nö\r", "ü\r\nö\r\n"),
        ] {
            assert_eq!(crlf(text), expected, "{text:?}");
        }
        assert!(matches!(crlf("one\r\ntwo\r\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn line_ends_are_made_crlf_exactly_as_a_character_by_character_rewrite_would() {
        fn by_character(text: &str) -> String {
            let mut out = String::new();
            let mut characters = text.chars().peekable();
            while let Some(c) = characters.next() {
                match c {
                    '\r' => {
                        if characters.peek() == Some(&'\n') {
                            characters.next();
                        }
                        out.push_str("\r\n");
                    }
                    '\n' => out.push_str("\r\n"),
                    other => out.push(other),
                }
            }
            out
        }
        // Every string of up to six characters over an alphabet with both line-break characters
        // and a character of several bytes.
        let alphabet = ['a', '\r', '\n', 'ü'];
        let mut texts = vec![String::new()];
        for _ in 0..6 {
            let longer: Vec<String> = texts
                .iter()
                .filter(|t| t.chars().count() == texts.last().map_or(0, |l| l.chars().count()))
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        assert_eq!(texts.len(), (0..=6).map(|n| 4usize.pow(n)).sum::<usize>());
        for text in &texts {
            assert_eq!(crlf(text), by_character(text), "{text:?}");
        }
    }

    fn content(text: Option<&str>, html: Option<&str>) -> MessageContent {
        let to = vec!["Jörg Müller <joerg@example.com>".to_string()];
        let cc = vec!["cc@example.com".to_string()];
        let bcc = vec!["hidden@example.com".to_string()];
        let reply_to = vec!["Buchhaltung <accounts@example.com>".to_string()];
        let headers = vec![(
            "X-Order-Ref".to_string(),
            "Auftrag 4711 – Müller".to_string(),
        )];
        MessageContent::parse(
            RawContent {
                to: &to,
                cc: &cc,
                bcc: &bcc,
                reply_to: &reply_to,
                headers: &headers,
                subject: "Rechnung 103001 – fällig",
                text,
                html,
            },
            1 << 20,
        )
        .unwrap()
    }

    #[test]
    fn a_composed_message_parses_back_to_the_same_content() {
        let from = Mailbox::parse("Sales <sales@example.com>").unwrap();
        let content = content(Some("Hello\nthere"), Some("<p>Hello</p>"));
        let bytes = compose(&Composition {
            from: &from,
            content: &content,
            message_id: "<abc@example.com>",
            date_unix_seconds: 1_700_000_000,
            attachments: &[],
        });
        let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(parsed.message_id(), Some("abc@example.com"));
        assert_eq!(parsed.subject(), Some("Rechnung 103001 – fällig"));
        assert_eq!(
            parsed.from().unwrap().first().unwrap().address(),
            Some("sales@example.com")
        );
        let to = parsed.to().unwrap().first().unwrap();
        assert_eq!(to.name(), Some("Jörg Müller"));
        assert_eq!(
            parsed.body_text(0).unwrap().replace("\r\n", "\n"),
            "Hello\nthere"
        );
        assert_eq!(parsed.body_html(0).unwrap(), "<p>Hello</p>");
        assert_eq!(parsed.date().unwrap().to_timestamp(), 1_700_000_000);
        assert_eq!(
            parsed.reply_to().unwrap().first().unwrap().address(),
            Some("accounts@example.com")
        );
        let raw = String::from_utf8_lossy(&bytes);
        assert!(
            raw.contains("X-Order-Ref: =?utf-8?"),
            "non-ASCII custom headers are RFC 2047 encoded: {raw}"
        );
        let decoding = mail_parser::MessageParser::default()
            .header_text(mail_parser::HeaderName::Other("X-Order-Ref".into()));
        let decoded = decoding.parse(&bytes).unwrap();
        assert_eq!(
            decoded.header("X-Order-Ref").and_then(|h| h.as_text()),
            Some("Auftrag 4711 – Müller")
        );
    }

    #[test]
    fn bcc_recipients_never_appear_in_the_headers() {
        let from = Mailbox::parse("sales@example.com").unwrap();
        let content = content(Some("x"), None);
        let bytes = compose(&Composition {
            from: &from,
            content: &content,
            message_id: "<a@b.c>",
            date_unix_seconds: 0,
            attachments: &[],
        });
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("hidden@example.com"));
        assert!(!text.to_ascii_lowercase().contains("\nbcc:"));
    }

    /// The bytes with every MIME boundary replaced by a fixed marker.
    fn without_boundaries(bytes: &[u8]) -> String {
        let mut text = String::from_utf8(bytes.to_vec()).unwrap();
        while let Some(start) = text.find("boundary=\"") {
            let value_start = start + "boundary=\"".len();
            let value_end = value_start + text[value_start..].find('"').unwrap();
            let boundary = text[value_start..value_end].to_owned();
            text = text
                .replace(&boundary, "B")
                .replacen("boundary=\"B\"", "boundary-fixed", 1);
        }
        text
    }

    #[test]
    fn composing_twice_gives_the_same_message_apart_from_mime_boundaries() {
        let from = Mailbox::parse("sales@example.com").unwrap();
        let content = content(Some("x"), Some("<b>x</b>"));
        let composition = Composition {
            from: &from,
            content: &content,
            message_id: "<a@b.c>",
            date_unix_seconds: 5,
            attachments: &[],
        };
        let first = without_boundaries(&compose(&composition));
        let second = without_boundaries(&compose(&composition));
        assert!(first.contains("boundary-fixed"), "{first}");
        assert_eq!(first, second);
    }
}
