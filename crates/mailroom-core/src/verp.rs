//! VERP return paths: `bounces+<token>@<bounce domain>`, where the token names the message and is
//! signed, so a bounce that quotes nothing of the message still leads back to it, and a forged one
//! leads nowhere.
//!
//! Token: the message id (32 lowercase hex digits) and the first 5 bytes of an HMAC-SHA256 of it
//! under the installation's key (10 hex digits). Lowercase hex survives servers that fold the case of
//! local parts; the whole local part is 50 characters (RFC 5321 allows 64).

use uuid::Uuid;

/// The local part before the token.
pub const LOCAL_PREFIX: &str = "bounces+";

const TAG_BYTES: usize = 5;

/// The token for a message; `tag` is the installation's keyed MAC.
pub fn token(message_id: Uuid, tag: impl Fn(&[u8]) -> [u8; 32]) -> String {
    let id = message_id.simple().to_string();
    let mac = tag(id.as_bytes());
    format!("{id}{}", hex::encode(&mac[..TAG_BYTES]))
}

/// The return path for a message.
pub fn return_path(message_id: Uuid, domain: &str, tag: impl Fn(&[u8]) -> [u8; 32]) -> String {
    format!("{LOCAL_PREFIX}{}@{domain}", token(message_id, tag))
}

/// The message a token names, when its MAC is right.
pub fn verify(token: &str, tag: impl Fn(&[u8]) -> [u8; 32]) -> Option<Uuid> {
    let token = token.to_ascii_lowercase();
    if token.len() != 32 + 2 * TAG_BYTES || !token.is_ascii() {
        return None;
    }
    let (id, mac) = token.split_at(32);
    let expected = tag(id.as_bytes());
    let given = hex::decode(mac).ok()?;
    // Compare all bytes whatever the first difference (no early exit to time).
    let same = given
        .iter()
        .zip(&expected[..TAG_BYTES])
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0;
    same.then(|| Uuid::parse_str(id).ok()).flatten()
}

/// Tokens of VERP addresses among the header lines where a delivered bounce shows its envelope
/// recipient (`To`, `Delivered-To`, `X-Original-To`, `Envelope-To`, `X-Envelope-To`, `Return-Path`
/// of a forwarded copy). Only the message's own header block is read.
pub fn tokens_in(raw: &[u8]) -> Vec<String> {
    const FIELDS: &[&str] = &[
        "to",
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-to",
    ];
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut tokens = Vec::new();
    let mut current: Option<String> = None;
    let mut fields = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(value) = &mut current {
                value.push_str(line);
            }
            continue;
        }
        if let Some(value) = current.take() {
            fields.push(value);
        }
        if let Some((name, value)) = line.split_once(':')
            && FIELDS.contains(&name.trim().to_ascii_lowercase().as_str())
        {
            current = Some(value.to_owned());
        }
    }
    fields.extend(current);
    for value in fields {
        let lower = value.to_ascii_lowercase();
        let mut rest = lower.as_str();
        while let Some(at) = rest.find(LOCAL_PREFIX) {
            let after = &rest[at + LOCAL_PREFIX.len()..];
            let token: String = after
                .chars()
                .take_while(|c| c.is_ascii_hexdigit())
                .collect();
            if after[token.len()..].starts_with('@') && !tokens.contains(&token) {
                tokens.push(token.clone());
            }
            rest = &after[token.len()..];
        }
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    fn tag(data: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"test key").unwrap();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    #[test]
    fn a_return_path_leads_back_to_its_message_and_fits_a_local_part() {
        let id = Uuid::new_v4();
        let path = return_path(id, "bounces.cronus.example", tag);
        let local = path.split('@').next().unwrap();
        assert!(local.len() <= 64, "{local}");
        let raw = format!(
            "Return-Path: <>\r\nDelivered-To: {}\r\nTo: Billing <{path}>\r\nSubject: Undelivered\r\n\r\nTo: bounces+00@x.example\r\n",
            path.to_uppercase()
        );
        let tokens = tokens_in(raw.as_bytes());
        assert_eq!(tokens.len(), 1, "one token, in two headers; not the body's");
        assert_eq!(verify(&tokens[0], tag), Some(id));
    }

    #[test]
    fn a_forged_or_damaged_token_leads_nowhere() {
        let id = Uuid::new_v4();
        let good = token(id, tag);
        let mut forged = good.clone();
        let last = if forged.ends_with('0') { "1" } else { "0" };
        forged.replace_range(forged.len() - 1.., last);
        assert_eq!(verify(&forged, tag), None);
        assert_eq!(verify(&good[..20], tag), None);
        assert_eq!(
            verify(&format!("{}{}", Uuid::new_v4().simple(), &good[32..]), tag),
            None
        );
    }
}
