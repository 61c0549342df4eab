//! Microsoft Graph's view of a composed message (pure): which recipients the headers hide (the Bcc
//! a Graph send must be told about), and the JSON draft of a message too large for one `sendMail`
//! request, with its attachments apart.
//!
//! Sources: learn.microsoft.com "user: sendMail" (MIME in base64 as `text/plain`, recipients taken
//! from the MIME headers), "message resource type" (the JSON fields), "Attach large files to Outlook
//! messages or events" (attachments of 3 MB and more through an upload session).

use crate::address::EmailAddress;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_parser::{Address, HeaderName, HeaderValue, MessageParser, MimeHeaders};
use serde_json::{Value, json};

/// The largest request body Graph takes (`sendMail`, a POST of an attachment, one upload PUT).
pub const REQUEST_LIMIT: usize = 4 * 1024 * 1024;
/// The largest MIME message sent in one `sendMail`: its base64 must fit the request limit.
pub const MIME_SEND_LIMIT: usize = REQUEST_LIMIT / 4 * 3;
/// Attachments of this size and more go through an upload session; smaller ones in one POST.
pub const UPLOAD_SESSION_FROM: usize = 3 * 1024 * 1024;
/// The largest attachment Graph takes through an upload session.
pub const ATTACHMENT_LIMIT: usize = 150 * 1024 * 1024;

/// The addresses of a header, lower-cased.
fn addresses(header: Option<&Address<'_>>) -> Vec<(Option<String>, String)> {
    header
        .map(|a| {
            a.iter()
                .filter_map(|addr| {
                    addr.address()
                        .map(|x| (addr.name().map(str::to_owned), x.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The envelope recipients that appear in neither To nor Cc: Graph sends to the recipients the
/// message names, so these must be given to it as Bcc.
pub fn hidden_recipients(raw: &[u8], envelope: &[EmailAddress]) -> Vec<EmailAddress> {
    let Some(headers) = MessageParser::default().parse_headers(raw) else {
        return envelope.to_vec();
    };
    let named: Vec<String> = addresses(headers.to())
        .into_iter()
        .chain(addresses(headers.cc()))
        .map(|(_, a)| a.to_ascii_lowercase())
        .collect();
    envelope
        .iter()
        .filter(|r| !named.contains(&r.as_str().to_ascii_lowercase()))
        .cloned()
        .collect()
}

/// The message with a `Bcc:` header naming `bcc` (Exchange removes it from what recipients get).
pub fn with_bcc_header(raw: &[u8], bcc: &[EmailAddress]) -> Vec<u8> {
    if bcc.is_empty() {
        return raw.to_vec();
    }
    let list = bcc
        .iter()
        .map(EmailAddress::as_str)
        .collect::<Vec<_>>()
        .join(",\r\n ");
    let mut out = Vec::with_capacity(raw.len() + list.len() + 8);
    out.extend_from_slice(b"Bcc: ");
    out.extend_from_slice(list.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(raw);
    out
}

/// One attachment of a draft.
#[derive(Debug, Clone)]
pub struct DraftAttachment {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub content_id: Option<String>,
    pub inline: bool,
}

impl DraftAttachment {
    /// The `fileAttachment` JSON of a POST to a message's attachments (under 3 MB).
    pub fn file_attachment(&self) -> Value {
        let mut value = json!({
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": self.name,
            "contentType": self.content_type,
            "contentBytes": BASE64.encode(&self.bytes),
            "isInline": self.inline,
        });
        if let Some(id) = &self.content_id {
            value["contentId"] = json!(id);
        }
        value
    }

    /// The `AttachmentItem` of an upload session.
    pub fn upload_item(&self) -> Value {
        let mut value = json!({
            "AttachmentItem": {
                "attachmentType": "file",
                "name": self.name,
                "size": self.bytes.len(),
                "contentType": self.content_type,
                "isInline": self.inline,
            }
        });
        if let Some(id) = &self.content_id {
            value["AttachmentItem"]["contentId"] = json!(id);
        }
        value
    }
}

/// A message as a Graph draft: the JSON message and its attachments.
#[derive(Debug, Clone)]
pub struct GraphDraft {
    pub message: Value,
    pub attachments: Vec<DraftAttachment>,
}

fn recipients(list: &[(Option<String>, String)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(name, address)| {
                let mut email = json!({"address": address});
                if let Some(name) = name {
                    email["name"] = json!(name);
                }
                json!({"emailAddress": email})
            })
            .collect(),
    )
}

/// Turns a composed message into a Graph draft. The Message-ID is kept (`internetMessageId`), so
/// a message sent again after a crash is recognisable; `X-` headers go along
/// (`internetMessageHeaders` takes only those).
pub fn draft_from_mime(raw: &[u8], envelope: &[EmailAddress]) -> Result<GraphDraft, String> {
    let parsed = MessageParser::default()
        .parse(raw)
        .ok_or("the composed message cannot be read back")?;
    let to = addresses(parsed.to());
    let cc = addresses(parsed.cc());
    let bcc: Vec<(Option<String>, String)> = hidden_recipients(raw, envelope)
        .into_iter()
        .map(|a| (None, a.as_str().to_owned()))
        .collect();
    let (content_type, content) = match parsed.body_html(0) {
        Some(html) => ("html", html.into_owned()),
        None => (
            "text",
            parsed
                .body_text(0)
                .map(|t| t.into_owned())
                .unwrap_or_default(),
        ),
    };
    let mut message = json!({
        "subject": parsed.subject().unwrap_or_default(),
        "body": {"contentType": content_type, "content": content},
        "toRecipients": recipients(&to),
        "ccRecipients": recipients(&cc),
        "bccRecipients": recipients(&bcc),
    });
    if let Some(from) = addresses(parsed.from()).first() {
        message["from"] = recipients(std::slice::from_ref(from))[0].clone();
    }
    let reply_to = addresses(parsed.reply_to());
    if !reply_to.is_empty() {
        message["replyTo"] = recipients(&reply_to);
    }
    if let Some(id) = parsed.message_id() {
        message["internetMessageId"] = json!(format!("<{id}>"));
    }
    let custom: Vec<Value> = parsed
        .headers()
        .iter()
        .filter_map(|h| match (&h.name, &h.value) {
            (HeaderName::Other(name), HeaderValue::Text(value))
                if name.to_ascii_lowercase().starts_with("x-") =>
            {
                Some(json!({"name": name, "value": value}))
            }
            _ => None,
        })
        .collect();
    if !custom.is_empty() {
        message["internetMessageHeaders"] = Value::Array(custom);
    }
    let attachments = parsed
        .attachments()
        .map(|part| DraftAttachment {
            name: part
                .attachment_name()
                .map(str::to_owned)
                .unwrap_or_else(|| "attachment".into()),
            content_type: part
                .content_type()
                .map(|ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub),
                    None => ct.ctype().to_owned(),
                })
                .unwrap_or_else(|| "application/octet-stream".into()),
            bytes: part.contents().to_vec(),
            content_id: part.content_id().map(str::to_owned),
            inline: part
                .content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline")),
        })
        .collect();
    Ok(GraphDraft {
        message,
        attachments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(raw: &str) -> EmailAddress {
        EmailAddress::parse(raw).unwrap()
    }

    const MESSAGE: &[u8] = b"From: Cronus Billing <billing@cronus.example>\r\nTo: Ann <ann@customer.example>\r\nCc: bob@customer.example\r\nSubject: Invoice 103001\r\nMessage-ID: <abc@cronus.example>\r\nX-Mailroom-Message: 42\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Please find the invoice attached.</p>\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";

    #[test]
    fn only_recipients_the_headers_do_not_name_are_hidden() {
        let envelope = [
            address("ann@customer.example"),
            address("BOB@customer.example"),
            address("audit@cronus.example"),
        ];
        assert_eq!(
            hidden_recipients(MESSAGE, &envelope),
            [address("audit@cronus.example")]
        );
        let with = with_bcc_header(MESSAGE, &hidden_recipients(MESSAGE, &envelope));
        assert!(with.starts_with(b"Bcc: audit@cronus.example\r\nFrom:"));
        assert_eq!(with_bcc_header(MESSAGE, &[]), MESSAGE);
    }

    #[test]
    fn a_draft_keeps_recipients_body_message_id_custom_headers_and_attachments() {
        let envelope = [
            address("ann@customer.example"),
            address("bob@customer.example"),
            address("audit@cronus.example"),
        ];
        let draft = draft_from_mime(MESSAGE, &envelope).unwrap();
        let m = &draft.message;
        assert_eq!(m["subject"], "Invoice 103001");
        assert_eq!(m["body"]["contentType"], "html");
        assert!(
            m["body"]["content"]
                .as_str()
                .unwrap()
                .contains("invoice attached")
        );
        assert_eq!(
            m["toRecipients"][0]["emailAddress"],
            json!({"address": "ann@customer.example", "name": "Ann"})
        );
        assert_eq!(
            m["ccRecipients"][0]["emailAddress"]["address"],
            "bob@customer.example"
        );
        assert_eq!(
            m["bccRecipients"][0]["emailAddress"]["address"],
            "audit@cronus.example"
        );
        assert_eq!(
            m["from"]["emailAddress"]["address"],
            "billing@cronus.example"
        );
        assert_eq!(m["internetMessageId"], "<abc@cronus.example>");
        assert_eq!(
            m["internetMessageHeaders"],
            json!([{"name": "X-Mailroom-Message", "value": "42"}])
        );
        assert_eq!(draft.attachments.len(), 1);
        let pdf = &draft.attachments[0];
        assert_eq!(
            (
                pdf.name.as_str(),
                pdf.content_type.as_str(),
                pdf.bytes.as_slice()
            ),
            ("invoice.pdf", "application/pdf", b"%PDF-1.4\n".as_slice())
        );
        assert_eq!(pdf.file_attachment()["contentBytes"], "JVBERi0xLjQK");
        assert_eq!(pdf.upload_item()["AttachmentItem"]["size"], 9);
    }
}
