//! Turns a validated message into RFC 5322 bytes with mail-builder.
//!
//! Composition is deterministic: the Message-ID and Date are fixed when the message is accepted, so
//! every attempt (and a re-send after a crash) produces the same message, recognisable by its Message-ID.
//! Bcc recipients are never written into the headers; they only appear in the SMTP envelope.

use crate::address::Mailbox;
use crate::message::MessageContent;
use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address;
use mail_builder::headers::message_id::MessageId;
use mail_builder::mime::{BodyPart, MimePart};

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

fn address_list(mailboxes: &[Mailbox]) -> Address<'_> {
    Address::new_list(
        mailboxes
            .iter()
            .map(|m| Address::new_address(m.name.as_deref(), m.address.as_str()))
            .collect(),
    )
}

/// The MIME tree of a message with images shown in its HTML: the text/HTML alternative and the images
/// as one `multipart/related`, inside `multipart/mixed` when there are also ordinary attachments.
fn body_with_inline_parts<'a>(
    content: &'a MessageContent,
    attachments: &'a [AttachmentPart<'a>],
) -> MimePart<'a> {
    let text = content
        .text
        .as_deref()
        .map(|t| MimePart::new("text/plain", BodyPart::Text(t.into())));
    let html = content
        .html
        .as_deref()
        .map(|h| MimePart::new("text/html", BodyPart::Text(h.into())));
    let readable = match (text, html) {
        (Some(text), Some(html)) => MimePart::new("multipart/alternative", vec![text, html]),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => MimePart::new("text/plain", BodyPart::Text("".into())),
    };
    let mut related = vec![readable];
    let mut mixed = Vec::new();
    for attachment in attachments {
        let part = MimePart::new(
            attachment.content_type,
            BodyPart::Binary(attachment.bytes.into()),
        );
        match attachment.content_id {
            Some(content_id) => related.push(part.inline().cid(content_id)),
            None => mixed.push(part.attachment(attachment.filename)),
        }
    }
    let related = MimePart::new("multipart/related", related);
    if mixed.is_empty() {
        related
    } else {
        mixed.insert(0, related);
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
    let mut builder = MessageBuilder::new()
        .from(Address::new_address(
            from.name.as_deref(),
            from.address.as_str(),
        ))
        .subject(content.subject.as_str())
        .message_id(MessageId::new(bare_id))
        .date(message.date_unix_seconds);
    if !content.to.is_empty() {
        builder = builder.to(address_list(&content.to));
    }
    if !content.cc.is_empty() {
        builder = builder.cc(address_list(&content.cc));
    }
    if let Some(sender) = &content.sender {
        builder = builder.sender(Address::new_address(
            sender.name.as_deref(),
            sender.address.as_str(),
        ));
    }
    if !content.reply_to.is_empty() {
        builder = builder.reply_to(address_list(&content.reply_to));
    }
    for header in &content.headers {
        builder = builder.header(
            header.name.as_str(),
            mail_builder::headers::text::Text::new(header.value.as_str()),
        );
    }
    if message.attachments.iter().any(|a| a.content_id.is_some()) {
        builder = builder.body(body_with_inline_parts(content, message.attachments));
    } else {
        if let Some(text) = &content.text {
            builder = builder.text_body(text.as_str());
        }
        if let Some(html) = &content.html {
            builder = builder.html_body(html.as_str());
        }
        for attachment in message.attachments {
            builder = builder.attachment(
                attachment.content_type,
                attachment.filename,
                attachment.bytes,
            );
        }
    }
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
