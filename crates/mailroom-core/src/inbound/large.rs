//! Large received messages read with bounded memory: the raw message is read from a file once to
//! build a *skeleton* in which every long run of base64 lines (an attachment's body, in practice)
//! is replaced by a short marker. The skeleton is parsed like any message; an attachment whose
//! content comes out as exactly one marker is then decoded straight from the file into the blob
//! store. When a marker ends up anywhere else (in a text body, inside an attached message, in a
//! part that was not base64), the caller reads the message whole instead: the result is always
//! what [`parse_inbound`] gives for the whole message.

use super::{ParsedInbound, parse_inbound};
use base64::Engine;
use std::io::{self, BufRead, Read, Write};
use std::ops::Range;

/// Runs of base64 lines shorter than this stay in the skeleton.
pub const DEFAULT_MIN_RUN: u64 = 256 * 1024;

/// The skeleton of a message: its bytes with long base64 runs replaced, and where each run is in
/// the raw message.
#[derive(Debug)]
pub struct Skeleton {
    pub bytes: Vec<u8>,
    runs: Vec<Range<u64>>,
}

/// The decoded content of the marker of run `index`: 27 bytes, so that its base64 form has no
/// padding and decodes to exactly these bytes in a binary part. The 0xFF bytes are not UTF-8: a
/// part the parser reads as text (whose bytes the whole message would give as UTF-8) never
/// matches.
fn marker(index: usize) -> Vec<u8> {
    let mut bytes = vec![0xFF];
    bytes.extend_from_slice(format!("mailroom-run-{index:012}").as_bytes());
    bytes.push(0xFF);
    bytes
}

fn encoded_marker(index: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(marker(index))
}

/// What every marker contains, decoded and encoded: found anywhere but as a whole attachment, the
/// skeleton cannot stand for the message.
const MARKER_TEXT: &str = "mailroom-run-";

fn encoded_marker_prefix() -> String {
    // The first 12 bytes (0xFF, "mailroom-ru") are the same for every marker: 16 base64 characters.
    encoded_marker(0)[..16].to_owned()
}

fn is_base64_line(line: &[u8]) -> bool {
    !line.is_empty()
        && line
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
}

fn split_ending(line: &[u8]) -> (&[u8], &[u8]) {
    let content = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    (content, &line[content.len()..])
}

/// Reads a raw message, keeping it whole except for runs of base64 lines of at least `min_run`
/// bytes. Memory: the skeleton, plus one run's first `min_run` bytes.
pub fn skeleton(mut reader: impl BufRead, min_run: u64) -> io::Result<Skeleton> {
    let mut bytes = Vec::new();
    let mut runs = Vec::new();
    // The run being read: where it starts, where its last line's content ends, the lines so far
    // (until it is known to be long), that last line's ending.
    let mut run: Option<(u64, u64)> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut long = false;
    let mut ending: Vec<u8> = Vec::new();
    let mut offset = 0u64;
    let mut line = Vec::new();
    let finish_run = |bytes: &mut Vec<u8>,
                      runs: &mut Vec<Range<u64>>,
                      run: (u64, u64),
                      pending: &mut Vec<u8>,
                      long: bool,
                      ending: &[u8]| {
        if long {
            bytes.extend_from_slice(encoded_marker(runs.len()).as_bytes());
            bytes.extend_from_slice(ending);
            runs.push(run.0..run.1);
        } else {
            bytes.append(pending);
        }
        pending.clear();
    };
    loop {
        line.clear();
        let read = reader.read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let (content, line_ending) = split_ending(&line);
        if is_base64_line(content) {
            let start = run.map_or(offset, |(start, _)| start);
            let end = offset + content.len() as u64;
            run = Some((start, end));
            ending = line_ending.to_vec();
            if !long {
                pending.extend_from_slice(&line);
                if end - start >= min_run {
                    long = true;
                    pending.clear();
                }
            }
        } else {
            if let Some(current) = run.take() {
                finish_run(&mut bytes, &mut runs, current, &mut pending, long, &ending);
                long = false;
            }
            bytes.extend_from_slice(&line);
        }
        offset += read as u64;
    }
    if let Some(current) = run {
        finish_run(&mut bytes, &mut runs, current, &mut pending, long, &ending);
    }
    Ok(Skeleton { bytes, runs })
}

/// A message read from its skeleton.
#[derive(Debug)]
pub enum LargeParse {
    /// Parsed; for each attachment (in order), the raw range to base64-decode as its content when
    /// it is one of the runs (its `bytes` are then empty).
    Parsed {
        parsed: Box<ParsedInbound>,
        runs: Vec<Option<Range<u64>>>,
    },
    /// A marker ended up where the skeleton cannot stand for the message: parse it whole.
    Whole,
}

/// Parses a skeleton (see the module's documentation).
pub fn parse_skeleton(skeleton: &Skeleton) -> LargeParse {
    let mut parsed = parse_inbound(&skeleton.bytes);
    if skeleton.runs.is_empty() {
        return LargeParse::Parsed {
            runs: vec![None; parsed.attachments.len()],
            parsed: Box::new(parsed),
        };
    }
    if parsed.unparsed {
        return LargeParse::Whole;
    }
    let prefix = encoded_marker_prefix();
    let mentions_marker = |bytes: &[u8]| {
        memchr::memmem::find(bytes, MARKER_TEXT.as_bytes()).is_some()
            || memchr::memmem::find(bytes, prefix.as_bytes()).is_some()
    };
    let markers: Vec<Vec<u8>> = (0..skeleton.runs.len()).map(marker).collect();
    let mut used = vec![false; skeleton.runs.len()];
    let mut runs = Vec::with_capacity(parsed.attachments.len());
    for part in &mut parsed.attachments {
        // An attached message's parts are found by parsing its content: it cannot be a run.
        let attached_message = part
            .content_type
            .to_ascii_lowercase()
            .starts_with("message/");
        if let Some(index) = markers.iter().position(|m| *m == part.bytes)
            && !used[index]
            && !attached_message
        {
            used[index] = true;
            part.bytes = Vec::new();
            runs.push(Some(skeleton.runs[index].clone()));
        } else if mentions_marker(&part.bytes) {
            return LargeParse::Whole;
        } else {
            runs.push(None);
        }
    }
    let elsewhere = [&parsed.text, &parsed.html]
        .into_iter()
        .flatten()
        .any(|text| mentions_marker(text.as_bytes()))
        || parsed
            .headers
            .iter()
            .any(|(_, value)| mentions_marker(value.as_bytes()));
    if elsewhere || used.iter().any(|u| !u) {
        return LargeParse::Whole;
    }
    LargeParse::Parsed {
        parsed: Box::new(parsed),
        runs,
    }
}

/// Decodes base64 text as the message parser does (white space skipped, `=` ends a group, an
/// incomplete group at the end is dropped),
/// streaming from `reader` to `out`; returns the number of bytes written.
pub fn decode_base64(mut reader: impl Read, mut out: impl Write) -> io::Result<u64> {
    let mut input = vec![0u8; 64 * 1024];
    let mut output = Vec::with_capacity(48 * 1024 + 3);
    let (mut chunk, mut count, mut written) = (0u32, 0u8, 0u64);
    loop {
        let read = reader.read(&mut input)?;
        if read == 0 {
            break;
        }
        for &ch in &input[..read] {
            let value = match ch {
                b'A'..=b'Z' => ch - b'A',
                b'a'..=b'z' => ch - b'a' + 26,
                b'0'..=b'9' => ch - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' => {
                    flush(chunk, count, &mut output);
                    count = 0;
                    continue;
                }
                _ => continue,
            };
            chunk = (chunk << 6) | u32::from(value);
            count = (count + 1) & 3;
            if count == 0 {
                output.extend_from_slice(&chunk.to_be_bytes()[1..]);
            }
        }
        out.write_all(&output)?;
        written += output.len() as u64;
        output.clear();
    }
    // A group left incomplete at the end is dropped, as the message parser drops it.
    Ok(written)
}

fn flush(chunk: u32, count: u8, output: &mut Vec<u8>) {
    match count {
        1 => output.push((chunk << 2) as u8),
        2 => output.push((chunk >> 4) as u8),
        3 => output.extend_from_slice(&[(chunk >> 10) as u8, (chunk >> 2) as u8]),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_with_attachment(body_lines: usize) -> (Vec<u8>, Vec<u8>) {
        let content: Vec<u8> = (0..body_lines * 57).map(|i| (i * 7 % 251) as u8).collect();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&content);
        let mut lines = String::new();
        for chunk in encoded.as_bytes().chunks(76) {
            lines.push_str(std::str::from_utf8(chunk).unwrap());
            lines.push_str("\r\n");
        }
        let raw = format!(
            "From: a@example.com\r\nSubject: big\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHello\r\n--b\r\n\
             Content-Type: application/octet-stream; name=\"x.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{lines}--b--\r\n"
        );
        (raw.into_bytes(), content)
    }

    #[test]
    fn a_long_attachment_is_left_out_of_the_skeleton_and_decoded_from_the_raw_message() {
        let (raw, content) = message_with_attachment(10_000);
        let skeleton = skeleton(&raw[..], 64 * 1024).unwrap();
        assert!(skeleton.bytes.len() < 1000, "{}", skeleton.bytes.len());
        let LargeParse::Parsed { parsed, runs } = parse_skeleton(&skeleton) else {
            panic!("the skeleton stands for the message");
        };
        let whole = parse_inbound(&raw);
        assert_eq!(parsed.text, whole.text);
        assert_eq!(parsed.attachments.len(), 1);
        let range = runs[0].clone().expect("the attachment is a run");
        let mut decoded = Vec::new();
        decode_base64(&raw[range.start as usize..range.end as usize], &mut decoded).unwrap();
        assert_eq!(decoded, content);
        assert_eq!(decoded, whole.attachments[0].bytes);
    }

    #[test]
    fn a_short_attachment_stays_in_the_skeleton() {
        let (raw, _) = message_with_attachment(10);
        let skeleton = skeleton(&raw[..], 64 * 1024).unwrap();
        assert_eq!(skeleton.bytes, raw);
    }

    #[test]
    fn base64_text_in_a_text_body_makes_the_caller_read_the_message_whole() {
        let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\n";
        let raw = format!("Subject: x\n\n{}", line.repeat(100));
        let skeleton = skeleton(raw.as_bytes(), 1024).unwrap();
        assert!(matches!(parse_skeleton(&skeleton), LargeParse::Whole));
    }

    #[test]
    fn streamed_decoding_gives_what_the_message_parser_gives() {
        for text in [
            "QUJD",
            "QUJ",
            "QU=JD",
            "Q=UJD",
            "QUJDRA==",
            " Q U\r\nJ D=\r\nRE",
            "",
        ] {
            let raw = format!(
                "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=a\r\n\r\n{text}"
            );
            let whole = parse_inbound(raw.as_bytes());
            let mut decoded = Vec::new();
            decode_base64(text.as_bytes(), &mut decoded).unwrap();
            assert_eq!(decoded, whole.attachments[0].bytes, "{text:?}");
        }
    }
}
