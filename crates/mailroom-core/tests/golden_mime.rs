//! The golden MIME suite: every case of tricky input is composed, then parsed back by two independent
//! parsers — mail-parser and Python's `email` package (policy `default`) — and what they read must be
//! exactly what the caller gave: subject, names, addresses, bodies and each attachment's SHA-256.

use mail_parser::MimeHeaders;
use mailroom_core::address::Mailbox;
use mailroom_core::compose::{AttachmentPart, Composition, compose};
use mailroom_core::message::{MessageContent, RawContent};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::process::{Command, Stdio};

/// What a parser read from the bytes.
#[derive(Debug, PartialEq)]
struct Reading {
    subject: String,
    from: Vec<(String, String)>,
    to: Vec<(String, String)>,
    text: String,
    html: Option<String>,
    /// (filename, SHA-256 of the decoded bytes)
    attachments: Vec<(String, String)>,
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const PYTHON_READER: &str = r#"
import sys, json, email, hashlib
from email import policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
def people(header):
    value = msg[header]
    if value is None:
        return []
    return [[a.display_name, a.addr_spec] for a in value.addresses]
text = msg.get_body(preferencelist=('plain',))
html = msg.get_body(preferencelist=('html',))
attachments = []
for part in msg.iter_attachments():
    if part.get_content_type() == 'message/rfc822':
        payload = part.get_payload(0).as_bytes(policy=policy.SMTP)
    else:
        payload = part.get_payload(decode=True)
    attachments.append([part.get_filename(), hashlib.sha256(payload).hexdigest(), part.get_content_type()])
defects = [str(d) for p in msg.walk() for d in p.defects]
print(json.dumps({
    "subject": str(msg["subject"]),
    "from": people("from"),
    "to": people("to"),
    "text": text.get_content() if text is not None else "",
    "html": html.get_content() if html is not None else None,
    "attachments": attachments,
    "defects": defects,
    "raw_to": str(msg["to"]),
}))
"#;

fn read_with_python(bytes: &[u8]) -> (Reading, Value) {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_READER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "python could not read the message: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let value: Value = serde_json::from_slice(&output.stdout).unwrap();
    let pairs = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap_or_default().to_owned(),
                    p[1].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    let reading = Reading {
        subject: value["subject"].as_str().unwrap().to_owned(),
        from: pairs(&value["from"]),
        to: pairs(&value["to"]),
        text: value["text"].as_str().unwrap().replace("\r\n", "\n"),
        html: value["html"].as_str().map(|h| h.replace("\r\n", "\n")),
        attachments: value["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a[0].as_str().unwrap_or_default().to_owned(),
                    a[1].as_str().unwrap().to_owned(),
                )
            })
            .collect(),
    };
    (reading, value)
}

fn read_with_mail_parser(bytes: &[u8]) -> Reading {
    let message = mail_parser::MessageParser::default().parse(bytes).unwrap();
    let people = |list: Option<&mail_parser::Address>| {
        list.map(|l| {
            l.iter()
                .map(|a| {
                    (
                        a.name().unwrap_or_default().to_owned(),
                        a.address().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let attachments = message
        .attachments()
        .map(|part| {
            let bytes = match &part.body {
                mail_parser::PartType::Message(inner) => inner.raw_message().to_vec(),
                _ => part.contents().to_vec(),
            };
            (
                part.attachment_name().unwrap_or_default().to_owned(),
                sha256(&bytes),
            )
        })
        .collect();
    Reading {
        subject: message.subject().unwrap_or_default().to_owned(),
        from: people(message.from()),
        to: people(message.to()),
        text: message
            .body_text(0)
            .map(|t| t.replace("\r\n", "\n"))
            .unwrap_or_default(),
        // mail-parser makes HTML out of a text-only message; only a real text/html part counts.
        html: message
            .parts
            .iter()
            .find(|part| {
                part.content_type()
                    .is_some_and(|t| t.ctype() == "text" && t.subtype() == Some("html"))
                    && part
                        .content_disposition()
                        .is_none_or(|d| !d.is_attachment())
            })
            .and_then(|part| part.text_contents())
            .map(|h| h.replace("\r\n", "\n")),
        attachments,
    }
}

struct Case<'a> {
    name: &'a str,
    from: &'a str,
    to: &'a [&'a str],
    subject: &'a str,
    text: Option<&'a str>,
    html: Option<&'a str>,
    headers: &'a [(&'a str, &'a str)],
    attachments: &'a [AttachmentPart<'a>],
}

fn compose_case(case: &Case<'_>) -> Vec<u8> {
    let to: Vec<String> = case.to.iter().map(|s| s.to_string()).collect();
    let headers: Vec<(String, String)> = case
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let content = MessageContent::parse(
        RawContent {
            to: &to,
            cc: &[],
            bcc: &[],
            reply_to: &[],
            headers: &headers,
            subject: case.subject,
            text: case.text,
            html: case.html,
        },
        1 << 24,
    )
    .unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let from = Mailbox::parse(case.from).unwrap();
    compose(&Composition {
        from: &from,
        content: &content,
        message_id: "<golden@example.com>",
        date_unix_seconds: 1_700_000_000,
        attachments: case.attachments,
    })
}

/// Composes the case and checks that both parsers read what was given.
fn assert_reads_back(case: &Case<'_>, expected: Reading) -> Vec<u8> {
    let bytes = compose_case(case);
    let shown = String::from_utf8_lossy(&bytes).into_owned();
    let parsed = read_with_mail_parser(&bytes);
    assert_eq!(parsed, expected, "{}: mail-parser read\n{shown}", case.name);
    let (python, raw) = read_with_python(&bytes);
    assert_eq!(
        python, expected,
        "{}: Python's email read\n{shown}",
        case.name
    );
    assert_eq!(
        raw["defects"],
        serde_json::json!([]),
        "{}: {shown}",
        case.name
    );
    for line in shown.split("\r\n") {
        assert!(line.len() <= 998, "{}: a line over 998 octets", case.name);
    }
    assert!(
        !bytes
            .windows(2)
            .enumerate()
            .any(|(i, w)| (w[0] == b'\r' && w[1] != b'\n')
                || (w[1] == b'\n' && w[0] != b'\r' && i + 1 < bytes.len())),
        "{}: bare CR or LF on the wire\n{shown}",
        case.name
    );
    bytes
}

fn person(name: &str, address: &str) -> (String, String) {
    (name.to_owned(), address.to_owned())
}

fn reading(
    subject: &str,
    from: (String, String),
    to: Vec<(String, String)>,
    text: &str,
) -> Reading {
    Reading {
        subject: subject.to_owned(),
        from: vec![from],
        to,
        text: text.to_owned(),
        html: None,
        attachments: Vec::new(),
    }
}

#[test]
fn bare_cr_and_bare_lf_in_bodies_arrive_as_line_breaks() {
    let case = Case {
        name: "bare line ends",
        from: "sales@example.com",
        to: &["buyer@example.com"],
        subject: "Line ends",
        text: Some("one\rtwo\nthree\r\nfour"),
        html: Some("<p>a</p>\r<p>b</p>\n"),
        headers: &[],
        attachments: &[],
    };
    let mut expected = reading(
        "Line ends",
        person("", "sales@example.com"),
        vec![person("", "buyer@example.com")],
        "one\ntwo\nthree\nfour",
    );
    expected.html = Some("<p>a</p>\n<p>b</p>\n".into());
    assert_reads_back(&case, expected);
}

#[test]
fn text_attachments_arrive_byte_identical_whatever_they_contain() {
    let long_line = "x".repeat(5000);
    let contents: Vec<(&str, Vec<u8>)> = vec![
        ("cr.txt", b"a\rb\rc".to_vec()),
        ("nul.txt", b"a\0b".to_vec()),
        ("long.txt", long_line.as_bytes().to_vec()),
        ("lf.csv", b"a;b\nc;d\n".to_vec()),
        ("trailing.txt", b"ends with spaces   \r\n\r\n".to_vec()),
    ];
    let parts: Vec<AttachmentPart> = contents
        .iter()
        .map(|(name, bytes)| AttachmentPart {
            filename: name,
            content_type: if name.ends_with(".csv") {
                "text/csv"
            } else {
                "text/plain"
            },
            bytes,
            content_id: None,
        })
        .collect();
    let case = Case {
        name: "text attachments",
        from: "sales@example.com",
        to: &["buyer@example.com"],
        subject: "Files",
        text: Some("see attached"),
        html: None,
        headers: &[],
        attachments: &parts,
    };
    let mut expected = reading(
        "Files",
        person("", "sales@example.com"),
        vec![person("", "buyer@example.com")],
        "see attached",
    );
    expected.attachments = contents
        .iter()
        .map(|(name, bytes)| (name.to_string(), sha256(bytes)))
        .collect();
    let bytes = assert_reads_back(&case, expected);
    let shown = String::from_utf8_lossy(&bytes);
    assert!(!shown.contains("Content-Transfer-Encoding: 7bit\r\nContent-Disposition: attachment"));
}

#[test]
fn a_message_attachment_is_sent_as_7bit_never_base64() {
    let inner = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: inner\r\n\r\nhello\r\n";
    let parts = [AttachmentPart {
        filename: "forwarded.eml",
        content_type: "message/rfc822",
        bytes: inner,
        content_id: None,
    }];
    let case = Case {
        name: "message/rfc822",
        from: "sales@example.com",
        to: &["buyer@example.com"],
        subject: "Forward",
        text: Some("forwarded"),
        html: None,
        headers: &[],
        attachments: &parts,
    };
    let bytes = compose_case(&case);
    let shown = String::from_utf8_lossy(&bytes);
    let part = &shown[shown
        .find("Content-Type: message/rfc822")
        .expect("kept as a message")..];
    let part_headers = &part[..part.find("\r\n\r\n").unwrap()];
    assert!(
        !part_headers.to_ascii_lowercase().contains("base64"),
        "{shown}"
    );
    assert!(shown.contains("Subject: inner"), "readable inside: {shown}");
    let parsed = mail_parser::MessageParser::default().parse(&bytes).unwrap();
    let attached = parsed.attachment(0).unwrap();
    assert!(
        matches!(attached.body, mail_parser::PartType::Message(_)),
        "{shown}"
    );
    let (_, python) = read_with_python(&bytes);
    assert_eq!(python["attachments"][0][2], "message/rfc822");
    assert_eq!(python["defects"], serde_json::json!([]));
}

#[test]
fn structured_headers_are_folded_never_encoded() {
    let unsubscribe = "<mailto:unsubscribe+0123456789abcdef@lists.example.com?subject=unsubscribe>, <https://lists.example.com/unsubscribe/0123456789abcdef0123456789abcdef>";
    let case = Case {
        name: "list headers",
        from: "sales@example.com",
        to: &["buyer@example.com"],
        subject: "News",
        text: Some("hi"),
        html: None,
        headers: &[
            ("List-Unsubscribe", unsubscribe),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("List-Id", "Monthly news <news.lists.example.com>"),
            ("X-Campaign", "Winter =?utf-8?B?c2FsZQ==?= literal"),
        ],
        attachments: &[],
    };
    let bytes = compose_case(&case);
    let shown = String::from_utf8_lossy(&bytes).into_owned();
    let unfolded = shown.replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = |name: &str| -> String {
        let start = unfolded
            .find(&format!("\r\n{name}: "))
            .unwrap_or_else(|| panic!("{name} in {shown}"));
        let rest = &unfolded[start + name.len() + 4..];
        rest[..rest.find("\r\n").unwrap()].to_owned()
    };
    assert!(!header("List-Unsubscribe").contains("=?"), "{shown}");
    assert_eq!(
        header("List-Unsubscribe").replace(", ", ","),
        unsubscribe.replace(", ", ",")
    );
    assert_eq!(
        header("List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert_eq!(header("List-Id"), "Monthly news <news.lists.example.com>");
    for line in shown.split("\r\n") {
        assert!(line.len() <= 998);
    }
    // Unstructured text that looks like an encoded word reads back literally.
    let parsed = mail_parser::MessageParser::default()
        .header_text(mail_parser::HeaderName::Other("X-Campaign".into()))
        .parse(&bytes)
        .unwrap();
    assert_eq!(
        parsed.header("X-Campaign").and_then(|h| h.as_text()),
        Some("Winter =?utf-8?B?c2FsZQ==?= literal")
    );
}

#[test]
fn display_names_read_back_exactly_as_given() {
    let case = Case {
        name: "display names",
        from: r#""John \"JD\" Doe" <john@example.com>"#,
        to: &[
            r#""Back\\slash" <b@example.com>"#,
            "=?utf-8?B?SGk=?= <literal@example.com>",
            "\"Müller, Jörg\" <joerg@example.com>",
        ],
        subject: "=?utf-8?B?SGk=?= is not encoded here",
        text: Some("hi"),
        html: None,
        headers: &[],
        attachments: &[],
    };
    assert_reads_back(
        &case,
        reading(
            "=?utf-8?B?SGk=?= is not encoded here",
            person("John \"JD\" Doe", "john@example.com"),
            vec![
                person("Back\\slash", "b@example.com"),
                person("=?utf-8?B?SGk=?=", "literal@example.com"),
                person("Müller, Jörg", "joerg@example.com"),
            ],
            "hi",
        ),
    );
}

#[test]
fn mail_with_only_cc_or_bcc_says_undisclosed_recipients_in_to() {
    let cc = vec!["cc@example.com".to_string()];
    let content = MessageContent::parse(
        RawContent {
            to: &[],
            cc: &cc,
            bcc: &[],
            reply_to: &[],
            headers: &[],
            subject: "s",
            text: Some("t"),
            html: None,
        },
        1 << 20,
    )
    .unwrap();
    let from = Mailbox::parse("sales@example.com").unwrap();
    let bytes = compose(&Composition {
        from: &from,
        content: &content,
        message_id: "<a@example.com>",
        date_unix_seconds: 0,
        attachments: &[],
    });
    let shown = String::from_utf8_lossy(&bytes);
    assert!(
        shown.contains("\r\nTo: undisclosed-recipients:;\r\n"),
        "{shown}"
    );
    let (python, raw) = read_with_python(&bytes);
    assert!(python.to.is_empty());
    assert_eq!(raw["raw_to"], "undisclosed-recipients:;");
    assert_eq!(raw["defects"], serde_json::json!([]));
}

#[test]
fn an_inline_image_gets_a_full_content_id_that_the_html_refers_to_and_related_names_its_root() {
    let png = [0x89u8, b'P', b'N', b'G', 0, 1, 2, 3];
    let parts = [
        AttachmentPart {
            filename: "logo.png",
            content_type: "image/png",
            bytes: &png,
            content_id: Some("logo"),
        },
        AttachmentPart {
            filename: "invoice.pdf",
            content_type: "application/pdf",
            bytes: b"%PDF-1.4 fake",
            content_id: None,
        },
    ];
    let case = Case {
        name: "inline image",
        from: "Sales <sales@example.com>",
        to: &["buyer@example.com"],
        subject: "Invoice",
        text: Some("Invoice attached"),
        html: Some("<p><img src=\"cid:logo\"> Invoice attached</p>"),
        headers: &[],
        attachments: &parts,
    };
    let bytes = compose_case(&case);
    let shown = String::from_utf8_lossy(&bytes).into_owned();
    let unfolded = shown.replace("\r\n ", " ");
    assert!(
        unfolded.contains("Content-ID: <logo@example.com>"),
        "{shown}"
    );
    assert!(shown.contains("cid:logo@example.com"), "{shown}");
    assert!(
        unfolded.contains("multipart/related; type=\"multipart/alternative\""),
        "{shown}"
    );
    let (python, raw) = read_with_python(&bytes);
    assert_eq!(raw["defects"], serde_json::json!([]));
    assert!(python.html.unwrap().contains("cid:logo@example.com"));
    assert_eq!(
        python.attachments,
        vec![("invoice.pdf".to_string(), sha256(b"%PDF-1.4 fake"))]
    );
}
