//! Incoming mail (MISSION B6, A12, C2): reading a received message into what mailroom keeps of it
//! (headers, UTF-8 bodies, every attachment part with its IMAP part path) and the correlation
//! rules that link it to a conversation. Pure: bytes in, values out.

pub mod large;
pub mod report;

use crate::account::string_enum;
use crate::error::ValidationError;
use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders, PartType};
use std::fmt;
use std::str::FromStr;

/// A mailbox of a header (From, To, Cc, Reply-To), as written by the sender.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InboundAddress {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    pub address: String,
}

/// An attachment part of a received message: a non-multipart part whose disposition is
/// `attachment` or that has a file name, wherever it is (parts inside attached messages included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPart {
    /// The IMAP part path: `2`, `2.1` for the first part inside an attached message at `2`.
    pub path: String,
    pub name: Option<String>,
    pub content_type: String,
    /// The part's content, transfer-decoded (an attached message: its raw bytes).
    pub bytes: Vec<u8>,
}

/// What mailroom keeps of a received message besides its raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedInbound {
    pub message_id: Option<String>,
    /// `In-Reply-To` then `References` (newest first): the Message-IDs this message answers.
    pub references: Vec<String>,
    pub subject: String,
    pub from: Option<InboundAddress>,
    pub to: Vec<InboundAddress>,
    pub cc: Vec<InboundAddress>,
    pub reply_to: Vec<InboundAddress>,
    /// The `Date` header, in milliseconds since the epoch.
    pub date_ms: Option<i64>,
    /// The first 22 bytes of Outlook's `Thread-Index` (the conversation), base64 as sent.
    pub thread_index: Option<String>,
    /// The top-level header fields as (name, value), values unfolded and decoded where possible.
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<InboundPart>,
    /// The parser could not make sense of the message: only the raw bytes are meaningful.
    pub unparsed: bool,
}

/// Nesting deeper than this is not walked (the raw message keeps every byte).
const MAX_DEPTH: usize = 64;

/// Reads a received message. Never fails: a message the parser cannot read comes back `unparsed`,
/// and the caller keeps its raw bytes.
pub fn parse_inbound(raw: &[u8]) -> ParsedInbound {
    let input = skip_leading_blank_lines(raw);
    let repaired = close_unterminated_attached_headers(input);
    let Some(message) = MessageParser::default().parse(repaired.as_deref().unwrap_or(input)) else {
        return ParsedInbound {
            unparsed: true,
            ..Default::default()
        };
    };
    let mut parsed = ParsedInbound {
        message_id: message.message_id().map(str::to_owned),
        subject: message.subject().unwrap_or_default().to_owned(),
        from: message.from().and_then(|a| addresses(a).into_iter().next()),
        to: message.to().map(addresses).unwrap_or_default(),
        cc: message.cc().map(addresses).unwrap_or_default(),
        reply_to: message.reply_to().map(addresses).unwrap_or_default(),
        date_ms: message.date().map(|d| d.to_timestamp() * 1000),
        thread_index: message
            .header_raw("Thread-Index")
            .and_then(|value| thread_index(value.trim())),
        text: message.body_text(0).map(|t| t.into_owned()),
        html: message
            .html_body
            .first()
            .and_then(|id| message.part(*id))
            .filter(|part| part.is_text_html())
            .and_then(|part| part.text_contents())
            .map(str::to_owned),
        ..Default::default()
    };
    parsed.references = text_list(message.in_reply_to());
    for reference in text_list(message.references()).into_iter().rev() {
        if !parsed.references.contains(&reference) {
            parsed.references.push(reference);
        }
    }
    parsed.headers = message
        .headers()
        .iter()
        .map(|header| (header.name().to_owned(), header_text(header.value())))
        .collect();
    collect_parts(&message, "", 0, &mut parsed.attachments);
    parsed.without_nul_characters()
}

impl ParsedInbound {
    /// Text with NUL characters (which some mail carries, and databases refuse in text) replaced
    /// by U+FFFD; attachment bytes are left as they are.
    fn without_nul_characters(mut self) -> Self {
        fn clean(text: &mut String) {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{FFFD}");
            }
        }
        let clean_address = |a: &mut InboundAddress| {
            clean(&mut a.address);
            if let Some(name) = &mut a.name {
                clean(name);
            }
        };
        for text in [&mut self.subject]
            .into_iter()
            .chain(self.message_id.as_mut())
            .chain(self.thread_index.as_mut())
            .chain(self.text.as_mut())
            .chain(self.html.as_mut())
            .chain(self.references.iter_mut())
        {
            clean(text);
        }
        for (name, value) in &mut self.headers {
            clean(name);
            clean(value);
        }
        self.from.iter_mut().for_each(clean_address);
        self.to.iter_mut().for_each(clean_address);
        self.cc.iter_mut().for_each(clean_address);
        self.reply_to.iter_mut().for_each(clean_address);
        for part in &mut self.attachments {
            if let Some(name) = &mut part.name {
                clean(name);
            }
            clean(&mut part.content_type);
        }
        self
    }
}

/// Lines of only white space before the first header (seen in the wild, e.g. a line of spaces
/// written by a broken relay) would end the header block at once: they are skipped, as Python's
/// `email` package does. The raw message keeps them.
fn skip_leading_blank_lines(raw: &[u8]) -> &[u8] {
    let mut rest = raw;
    loop {
        let line_end = rest.iter().position(|&b| b == b'\n');
        match line_end {
            Some(end) if rest[..end].iter().all(|b| b.is_ascii_whitespace()) => {
                rest = &rest[end + 1..];
            }
            _ => return if rest.is_empty() { raw } else { rest },
        }
    }
}

/// An attached message (`message/rfc822`) whose header block runs straight into the enclosing
/// multipart's next boundary, with no blank line (seen in the wild), makes the parser read the
/// following parts as more headers of the attached message, and lose them. For parsing only, a
/// blank line is put before such a boundary; the raw message is kept as received. `None`: nothing
/// to repair.
fn close_unterminated_attached_headers(raw: &[u8]) -> Option<Vec<u8>> {
    // Most messages attach no message: look before copying anything.
    let finder = |needle: &[u8]| memchr::memmem::find(raw, needle).is_some();
    if !(finder(b"rfc822") || finder(b"RFC822") || finder(b"Rfc822")) {
        return None;
    }
    let lower = raw.to_ascii_lowercase();
    #[derive(PartialEq)]
    enum State {
        Body,
        PartHeaders { attached: bool },
        AttachedHeaders,
    }
    let mut state = State::Body;
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut repaired = false;
    let mut start = 0;
    while start < raw.len() {
        let end = raw[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| start + i + 1);
        let line = &raw[start..end];
        let trimmed = line.trim_ascii_end();
        let is_boundary = trimmed.starts_with(b"--") && trimmed.len() > 2;
        let is_blank = trimmed.is_empty();
        match state {
            State::AttachedHeaders if is_boundary => {
                out.extend_from_slice(if line.ends_with(b"\r\n") {
                    b"\r\n"
                } else {
                    b"\n"
                });
                repaired = true;
                state = State::PartHeaders { attached: false };
            }
            State::AttachedHeaders if is_blank => state = State::Body,
            State::PartHeaders { attached } if is_blank => {
                state = if attached {
                    State::AttachedHeaders
                } else {
                    State::Body
                };
            }
            State::PartHeaders { .. }
                if lower[start..end].starts_with(b"content-type")
                    && memchr_find(&lower[start..end], b"message/rfc822").is_some() =>
            {
                state = State::PartHeaders { attached: true };
            }
            State::PartHeaders { .. } => {}
            _ if is_boundary => state = State::PartHeaders { attached: false },
            _ => {}
        }
        out.extend_from_slice(line);
        start = end;
    }
    repaired.then_some(out)
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

fn text_list(value: &HeaderValue<'_>) -> Vec<String> {
    match value {
        HeaderValue::Text(text) => vec![text.to_string()],
        HeaderValue::TextList(list) => list.iter().map(|t| t.to_string()).collect(),
        _ => Vec::new(),
    }
}

fn header_text(value: &HeaderValue<'_>) -> String {
    match value {
        HeaderValue::Text(text) => text.to_string(),
        HeaderValue::TextList(list) => list.join(", "),
        HeaderValue::Address(address) => addresses(address)
            .iter()
            .map(|a| match &a.name {
                Some(name) => format!("{name} <{}>", a.address),
                None => a.address.clone(),
            })
            .collect::<Vec<_>>()
            .join(", "),
        HeaderValue::DateTime(date) => date.to_rfc822(),
        HeaderValue::ContentType(ct) => match ct.subtype() {
            Some(sub) => format!("{}/{sub}", ct.ctype()),
            None => ct.ctype().to_owned(),
        },
        HeaderValue::Received(_) | HeaderValue::Empty => String::new(),
    }
}

fn addresses(address: &Address<'_>) -> Vec<InboundAddress> {
    address
        .iter()
        .filter_map(|addr| {
            Some(InboundAddress {
                name: addr.name().map(str::to_owned).filter(|n| !n.is_empty()),
                address: addr.address()?.to_owned(),
            })
        })
        .collect()
}

/// The conversation part of an Outlook `Thread-Index`: its first 22 decoded bytes, re-encoded.
fn thread_index(value: &str) -> Option<String> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let bytes = engine.decode(value.as_bytes()).ok()?;
    (bytes.len() >= 22).then(|| engine.encode(&bytes[..22]))
}

/// Walks a message's parts as IMAP numbers them and keeps its attachment parts.
fn collect_parts(message: &Message<'_>, prefix: &str, depth: usize, out: &mut Vec<InboundPart>) {
    if depth > MAX_DEPTH || message.parts.is_empty() {
        return;
    }
    let join = |n: usize| {
        if prefix.is_empty() {
            n.to_string()
        } else {
            format!("{prefix}.{n}")
        }
    };
    match &message.parts[0].body {
        PartType::Multipart(children) => {
            walk_children(message, children, &join, depth, out);
        }
        _ => visit(message, 0, join(1), depth, out),
    }
}

fn walk_children(
    message: &Message<'_>,
    children: &[u32],
    join: &dyn Fn(usize) -> String,
    depth: usize,
    out: &mut Vec<InboundPart>,
) {
    for (index, child) in children.iter().enumerate() {
        visit(message, *child as usize, join(index + 1), depth + 1, out);
    }
}

fn visit(message: &Message<'_>, id: usize, path: String, depth: usize, out: &mut Vec<InboundPart>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Some(part) = message.parts.get(id) else {
        return;
    };
    if let PartType::Multipart(children) = &part.body {
        let join = |n: usize| format!("{path}.{n}");
        walk_children(message, children, &join, depth, out);
        return;
    }
    let name = part
        .attachment_name()
        .map(str::to_owned)
        .filter(|n| !n.is_empty());
    let is_attachment = part
        .content_disposition()
        .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
    if is_attachment || name.is_some() {
        let content_type = match part.content_type() {
            Some(ct) => match ct.subtype() {
                Some(sub) => format!("{}/{sub}", ct.ctype()).to_ascii_lowercase(),
                None => ct.ctype().to_ascii_lowercase(),
            },
            None if matches!(part.body, PartType::Message(_)) => "message/rfc822".into(),
            None => "text/plain".into(),
        };
        let bytes = match &part.body {
            PartType::Message(inner) => inner.raw_message.to_vec(),
            PartType::Text(text) | PartType::Html(text) => text.as_bytes().to_vec(),
            PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.to_vec(),
            PartType::Multipart(_) => Vec::new(),
        };
        out.push(InboundPart {
            path: path.clone(),
            name,
            content_type,
            bytes,
        });
    }
    if let PartType::Message(inner) = &part.body {
        collect_parts(inner, &path, depth + 1, out);
    }
}

string_enum!(
    /// How a received message was linked to its conversation (the first method that matched).
    CorrelationMethod {
        InReplyTo => "in-reply-to",
        SubjectToken => "subject-token",
        AddressToken => "address-token",
        ThreadIndex => "thread-index",
        SmartMatch => "smart-match"
    }
);

/// The organisation's correlation settings (methods 1 and 4 are always on).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CorrelationSettings {
    /// Adds `[PREFIX-TOKEN]` to outbound subjects and matches it in replies.
    pub subject_token: bool,
    /// The prefix of the subject token, e.g. `MR` for `[MR-7K3QX]`.
    pub subject_token_prefix: String,
    /// Matches `local+TOKEN@domain` reply addresses.
    pub plus_addressing: bool,
    /// Same normalised subject and same participants within this many days (0: off).
    pub smart_match_days: u32,
}

impl Default for CorrelationSettings {
    fn default() -> Self {
        Self {
            subject_token: false,
            subject_token_prefix: "MR".into(),
            plus_addressing: false,
            smart_match_days: 0,
        }
    }
}

impl CorrelationSettings {
    pub fn validate(self) -> Result<Self, ValidationError> {
        let prefix = &self.subject_token_prefix;
        if prefix.is_empty()
            || prefix.len() > 10
            || !prefix.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(ValidationError::new(
                "subject_token_prefix",
                "must be 1 to 10 letters or digits",
            ));
        }
        if self.smart_match_days > 365 {
            return Err(ValidationError::new(
                "smart_match_days",
                "must be between 0 (off) and 365",
            ));
        }
        Ok(self)
    }
}

/// The alphabet of tracking tokens: Crockford's base 32 (no I, L, O, U).
const TOKEN_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// A tracking token for a conversation: 7 characters of Crockford base 32 of the 35 low bits
/// of `seed` (the caller passes random or id bits).
pub fn tracking_token(seed: u64) -> String {
    (0..7)
        .rev()
        .map(|i| TOKEN_ALPHABET[((seed >> (i * 5)) & 31) as usize] as char)
        .collect()
}

fn is_token(text: &str) -> bool {
    text.len() == 7 && text.bytes().all(|b| TOKEN_ALPHABET.contains(&b))
}

/// The subject with the tracking token appended: `Invoice 103001 [MR-7K3QXAB]`.
pub fn subject_with_token(subject: &str, prefix: &str, token: &str) -> String {
    if subject_token(subject, prefix).is_some() {
        return subject.to_owned();
    }
    format!("{subject} [{prefix}-{token}]")
}

/// The tracking token a subject carries (`[PREFIX-TOKEN]`, case-insensitive), if any.
pub fn subject_token(subject: &str, prefix: &str) -> Option<String> {
    let upper = subject.to_ascii_uppercase();
    let marker = format!("[{}-", prefix.to_ascii_uppercase());
    let mut rest = upper.as_str();
    while let Some(at) = rest.find(&marker) {
        let after = &rest[at + marker.len()..];
        if let Some(end) = after.find(']')
            && is_token(&after[..end])
        {
            return Some(after[..end].to_owned());
        }
        rest = after;
    }
    None
}

/// The token of a plus-address (`sales+7K3QXAB@example.com`), if any.
pub fn address_token(address: &str) -> Option<String> {
    let (local, _) = address.rsplit_once('@')?;
    let (_, tag) = local.rsplit_once('+')?;
    let tag = tag.to_ascii_uppercase();
    is_token(&tag).then_some(tag)
}

/// `local+TOKEN@domain` for a reply address carrying a conversation's token.
pub fn plus_address(address: &str, token: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}+{token}@{domain}"),
        None => address.to_owned(),
    }
}

/// The subject without reply and forward prefixes (`Re:`, `Fwd:`, `AW:`, `SV:`, `[External]`…),
/// tracking tokens and extra spaces, lower-cased: what smart matching compares.
pub fn normalize_subject(subject: &str) -> String {
    const PREFIXES: &[&str] = &[
        "re", "fw", "fwd", "aw", "wg", "sv", "vs", "antw", "tr", "rv", "ref", "odp",
    ];
    let mut text = subject.trim().to_lowercase();
    loop {
        let before = text.clone();
        if let Some(colon) = text.find(':') {
            let head = text[..colon].trim();
            let bare = head.split('[').next().unwrap_or(head).trim();
            if PREFIXES.contains(&bare) {
                text = text[colon + 1..].trim_start().to_owned();
            }
        }
        if text.starts_with('[')
            && let Some(end) = text.find(']')
        {
            text = text[end + 1..].trim_start().to_owned();
        }
        if text == before {
            break;
        }
    }
    // Tracking tokens anywhere in the subject.
    while let Some(start) = text.find('[') {
        match text[start..].find(']') {
            Some(len) if text[start + 1..start + len].contains('-') => {
                text.replace_range(start..start + len + 1, "");
            }
            _ => break,
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The keys each correlation method looks a received message up by, in order of precedence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationKeys {
    /// Method 1: Message-IDs named by `In-Reply-To`, then `References` newest first.
    pub referenced_ids: Vec<String>,
    /// Method 2: the subject's tracking token (when turned on).
    pub subject_token: Option<String>,
    /// Method 3: tokens of plus-addresses among the recipients (when turned on).
    pub address_tokens: Vec<String>,
    /// Method 4: Outlook's conversation (first 22 bytes of `Thread-Index`).
    pub thread_index: Option<String>,
    /// Method 5: normalised subject and participants (when turned on).
    pub smart: Option<SmartKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmartKey {
    pub subject: String,
    /// Lower-cased addresses of sender and recipients, sorted.
    pub participants: Vec<String>,
    pub within_days: u32,
}

impl SmartKey {
    /// What outbound mail is looked up by: see [`outbound_smart_key`].
    pub fn digest(&self) -> String {
        smart_digest(&self.subject, &self.participants)
    }
}

fn smart_digest(normalized_subject: &str, participants: &[String]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(normalized_subject.as_bytes());
    hasher.update(b"\n");
    hasher.update(participants.join(" ").as_bytes());
    hex::encode(&hasher.finalize()[..16])
}

/// The key smart matching finds an outbound message by: a digest of its normalised subject and
/// its participants (sender and visible recipients, lower-cased, sorted) — the same digest a
/// reply with the same subject between the same people gives. `None` without a subject.
pub fn outbound_smart_key<'a>(
    subject: &str,
    participants: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let subject = normalize_subject(subject);
    if subject.is_empty() {
        return None;
    }
    let mut participants: Vec<String> = participants
        .into_iter()
        .map(str::to_ascii_lowercase)
        .collect();
    participants.sort();
    participants.dedup();
    Some(smart_digest(&subject, &participants))
}

/// What each correlation method looks for in `message`, under `settings`.
pub fn correlation_keys(
    message: &ParsedInbound,
    settings: &CorrelationSettings,
) -> CorrelationKeys {
    let recipients = message.to.iter().chain(&message.cc);
    CorrelationKeys {
        referenced_ids: message.references.clone(),
        subject_token: settings
            .subject_token
            .then(|| subject_token(&message.subject, &settings.subject_token_prefix))
            .flatten(),
        address_tokens: if settings.plus_addressing {
            recipients
                .clone()
                .filter_map(|a| address_token(&a.address))
                .collect()
        } else {
            Vec::new()
        },
        thread_index: message.thread_index.clone(),
        smart: (settings.smart_match_days > 0 && !message.subject.trim().is_empty()).then(|| {
            let mut participants: Vec<String> = message
                .from
                .iter()
                .chain(recipients)
                .map(|a| a.address.to_ascii_lowercase())
                .collect();
            participants.sort();
            participants.dedup();
            SmartKey {
                subject: normalize_subject(&message.subject),
                participants,
                within_days: settings.smart_match_days,
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_message_is_read_into_headers_and_bodies() {
        let raw = b"From: Ann <ann@example.com>\r\nTo: sales@example.org\r\nSubject: Re: Invoice\r\nMessage-ID: <a1@example.com>\r\nIn-Reply-To: <o1@mailroom>\r\nReferences: <o0@mailroom> <o1@mailroom>\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\n\r\nThanks!\r\n";
        let parsed = parse_inbound(raw);
        assert_eq!(parsed.message_id.as_deref(), Some("a1@example.com"));
        assert_eq!(parsed.subject, "Re: Invoice");
        assert_eq!(parsed.from.unwrap().address, "ann@example.com");
        assert_eq!(parsed.references, vec!["o1@mailroom", "o0@mailroom"]);
        assert_eq!(parsed.text.as_deref().map(str::trim), Some("Thanks!"));
        assert!(parsed.attachments.is_empty());
        assert!(!parsed.unparsed);
    }

    #[test]
    fn parts_inside_an_attached_message_are_numbered_as_imap_numbers_them() {
        let raw = b"Subject: fwd\r\nContent-Type: multipart/mixed; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--a\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"inner.eml\"\r\n\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf; name=\"x.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n--a--\r\n";
        let parsed = parse_inbound(raw);
        let paths: Vec<_> = parsed
            .attachments
            .iter()
            .map(|p| (p.path.as_str(), p.name.as_deref().unwrap_or("")))
            .collect();
        assert_eq!(paths, vec![("2", "inner.eml"), ("2.2", "x.pdf")]);
        assert_eq!(parsed.attachments[1].bytes, b"%PDF-");
        assert_eq!(parsed.attachments[0].content_type, "message/rfc822");
    }

    #[test]
    fn a_single_part_attachment_is_part_one() {
        let raw = b"Subject: x\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n\r\nabc";
        let parsed = parse_inbound(raw);
        assert_eq!(parsed.attachments.len(), 1);
        assert_eq!(parsed.attachments[0].path, "1");
    }

    #[test]
    fn nul_characters_never_reach_the_text_kept() {
        let parsed = parse_inbound(b"Subject: a\0b\r\nFrom: x@example.com\r\n\r\nbody\0here\r\n");
        assert!(!parsed.subject.contains('\0') && !parsed.text.unwrap().contains('\0'));
    }

    #[test]
    fn a_message_the_parser_cannot_read_is_marked_unparsed() {
        assert!(parse_inbound(b"").unparsed);
    }

    #[test]
    fn subject_tokens_are_found_whatever_their_case_and_position() {
        let token = tracking_token(0x7_1234_5678);
        assert_eq!(token.len(), 7);
        let subject = subject_with_token("Invoice 103001", "MR", &token);
        assert_eq!(subject_token(&subject, "MR"), Some(token.clone()));
        assert_eq!(
            subject_token(&format!("RE: {}", subject.to_lowercase()), "mr"),
            Some(token.clone())
        );
        assert_eq!(subject_token("Invoice [MR-SHORT]", "MR"), None);
        assert_eq!(subject_with_token(&subject, "MR", "0000000"), subject);
    }

    #[test]
    fn plus_address_tokens_round_trip() {
        let token = tracking_token(42);
        let address = plus_address("sales@example.com", &token);
        assert_eq!(address_token(&address), Some(token));
        assert_eq!(address_token("sales+news@example.com"), None);
        assert_eq!(address_token("sales@example.com"), None);
    }

    #[test]
    fn subjects_are_normalised_without_reply_prefixes_and_tokens() {
        assert_eq!(
            normalize_subject("RE: Fwd: AW:  Invoice   103001"),
            "invoice 103001"
        );
        assert_eq!(
            normalize_subject("Re[2]: Invoice 103001 [MR-0000001]"),
            "invoice 103001"
        );
        assert_eq!(normalize_subject("Regarding: plans"), "regarding: plans");
    }

    #[test]
    fn correlation_keys_follow_the_settings() {
        let message = ParsedInbound {
            subject: "Re: Offer [MR-ABCDEFG]".into(),
            references: vec!["x@y".into()],
            to: vec![InboundAddress {
                name: None,
                address: "sales+ABCDEFG@example.com".into(),
            }],
            ..Default::default()
        };
        let off = correlation_keys(&message, &CorrelationSettings::default());
        assert_eq!(off.referenced_ids, vec!["x@y"]);
        assert_eq!(off.subject_token, None);
        assert!(off.address_tokens.is_empty());
        assert!(off.smart.is_none());
        let on = correlation_keys(
            &message,
            &CorrelationSettings {
                subject_token: true,
                plus_addressing: true,
                smart_match_days: 7,
                ..Default::default()
            },
        );
        assert_eq!(on.subject_token.as_deref(), Some("ABCDEFG"));
        assert_eq!(on.address_tokens, vec!["ABCDEFG"]);
        assert_eq!(on.smart.unwrap().subject, "offer");
    }
}
