//! DKIM (RFC 6376; Ed25519 per RFC 8463) for each sending domain: algorithms, selectors, keys
//! imported or made elsewhere, the DNS TXT record to publish, and the headers a signature covers.
//! Generating a key (the OS's randomness) and signing (mail-auth reads the clock for `t=`) are in
//! mailroom-connect's `dkim`, since this crate does no I/O.

use crate::ValidationError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use std::fmt;
use std::str::FromStr;

/// The headers signed, when present (RFC 6376 §5.4.1's list, plus the MIME headers and RFC 8058's
/// List-Unsubscribe-Post, which must be signed for one-click unsubscribe to be honoured).
/// `From` is listed twice ("oversigned") so that a From header added in transit breaks the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Resent-Date",
    "Resent-From",
    "Resent-To",
    "Resent-Cc",
];

/// A key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    /// RSA-SHA256 with a 2048-bit key (generated), or the imported key's size (at least 2048 bits).
    Rsa,
    /// Ed25519-SHA256 (RFC 8463). Not every receiver verifies it yet: publish an RSA key beside it.
    Ed25519,
}

impl DkimAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa-sha256",
            DkimAlgorithm::Ed25519 => "ed25519-sha256",
        }
    }

    /// The `k=` tag of the DNS record.
    fn key_type(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

impl fmt::Display for DkimAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DkimAlgorithm {
    type Err = ValidationError;
    fn from_str(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "rsa-sha256" | "rsa" => Ok(DkimAlgorithm::Rsa),
            "ed25519-sha256" | "ed25519" => Ok(DkimAlgorithm::Ed25519),
            other => Err(ValidationError::new(
                "algorithm",
                format!("{other:?} is not a DKIM algorithm (rsa-sha256, ed25519-sha256)"),
            )),
        }
    }
}

/// A selector: one DNS label (letters, digits, hyphens), as RFC 6376 §3.1 allows in practice.
pub fn parse_selector(raw: &str) -> Result<String, ValidationError> {
    let ok = !raw.is_empty()
        && raw.len() <= 63
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !raw.starts_with('-')
        && !raw.ends_with('-');
    if ok {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(ValidationError::new(
            "selector",
            format!("{raw:?} is not a selector: one DNS label of letters, digits, '-' or '_'"),
        ))
    }
}

/// A sending domain: DNS labels of letters, digits and hyphens, lower-cased.
pub fn parse_domain(raw: &str) -> Result<String, ValidationError> {
    let domain = raw.trim_end_matches('.').to_ascii_lowercase();
    let ok = domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(domain)
    } else {
        Err(ValidationError::new(
            "domain",
            format!("{raw:?} is not a domain name"),
        ))
    }
}

/// A private key (DER: PKCS#1 for RSA, PKCS#8 for Ed25519) and its public half as published (`p=`).
#[derive(Clone)]
pub struct KeyMaterial {
    pub algorithm: DkimAlgorithm,
    pub private_der: Vec<u8>,
    /// Base64: SubjectPublicKeyInfo for RSA, the raw 32-byte key for Ed25519.
    pub public_key: String,
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({}, p={})", self.algorithm, self.public_key)
    }
}

/// A key that cannot be used, as a validation error of the `private_key` field.
pub fn key_error(reason: impl fmt::Display) -> ValidationError {
    ValidationError::new("private_key", reason.to_string())
}

impl KeyMaterial {
    /// An existing key in PEM: `RSA PRIVATE KEY` (PKCS#1) or `PRIVATE KEY` (PKCS#8, RSA or Ed25519).
    pub fn import_pem(pem: &str) -> Result<Self, ValidationError> {
        let pem = pem.trim();
        if pem.contains("BEGIN RSA PRIVATE KEY") {
            let key = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
                .map_err(|e| key_error(format!("not a PKCS#1 RSA key: {e}")))?;
            return Self::from_rsa(&key);
        }
        if pem.contains("BEGIN PRIVATE KEY") {
            if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
                return Self::from_rsa(&key);
            }
            let der = pem_body(pem).ok_or_else(|| key_error("the PEM block cannot be read"))?;
            return Self::from_ed25519_pkcs8(der);
        }
        Err(key_error(
            "expected a PEM private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY)",
        ))
    }

    /// An RSA key (at least 2048 bits).
    pub fn from_rsa(key: &rsa::RsaPrivateKey) -> Result<Self, ValidationError> {
        use rsa::traits::PublicKeyParts;
        let bits = key.size() * 8;
        // RFC 8301 allows 1024 bits and recommends 2048; the signing library (ring) refuses less.
        if bits < 2048 {
            return Err(key_error(format!(
                "a {bits}-bit RSA key is too small: use at least 2048 bits (RFC 8301 recommends 2048)"
            )));
        }
        let private_der = key.to_pkcs1_der().map_err(key_error)?.as_bytes().to_vec();
        let public = key.to_public_key().to_public_key_der().map_err(key_error)?;
        let material = Self {
            algorithm: DkimAlgorithm::Rsa,
            private_der,
            public_key: BASE64.encode(public.as_bytes()),
        };
        // The signing library must accept it too.
        RsaKey::<Sha256>::from_key_der(rustls_pki_types::PrivateKeyDer::Pkcs1(
            material.private_der.clone().into(),
        ))
        .map_err(key_error)?;
        Ok(material)
    }

    /// An Ed25519 key in PKCS#8 DER.
    pub fn from_ed25519_pkcs8(der: Vec<u8>) -> Result<Self, ValidationError> {
        let key = Ed25519Key::from_pkcs8_maybe_unchecked_der(&der)
            .map_err(|e| key_error(format!("not an RSA or Ed25519 key: {e}")))?;
        Ok(Self {
            algorithm: DkimAlgorithm::Ed25519,
            public_key: BASE64.encode(key.public_key()),
            private_der: der,
        })
    }

    /// The TXT record's value, published at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        dns_record(self.algorithm, &self.public_key)
    }
}

/// The TXT record's value for a public key.
pub fn dns_record(algorithm: DkimAlgorithm, public_key: &str) -> String {
    format!("v=DKIM1; k={}; p={public_key}", algorithm.key_type())
}

/// Where the TXT record is published.
pub fn dns_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

fn pem_body(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::trim)
        .collect();
    BASE64.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_imported_rsa_pem_gives_the_public_key_of_the_key_it_came_from() {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let imported = KeyMaterial::import_pem(&pem).unwrap();
        let direct = KeyMaterial::from_rsa(&key).unwrap();
        assert_eq!(imported.public_key, direct.public_key);
        assert_eq!(imported.algorithm, DkimAlgorithm::Rsa);
        assert!(
            imported
                .dns_record()
                .starts_with("v=DKIM1; k=rsa; p=MIIBIjAN")
        );
    }

    #[test]
    fn an_rsa_key_under_2048_bits_is_refused() {
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let error = KeyMaterial::import_pem(&pem).unwrap_err();
        assert!(error.reason.contains("1024-bit"), "{error:?}");
    }

    #[test]
    fn a_pem_that_is_not_a_private_key_is_refused() {
        let error =
            KeyMaterial::import_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----")
                .unwrap_err();
        assert_eq!(error.field, "private_key");
        let error =
            KeyMaterial::import_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .unwrap_err();
        assert_eq!(error.field, "private_key");
    }

    #[test]
    fn selectors_and_domains_are_single_dns_names() {
        assert_eq!(parse_selector("S2026-A").unwrap(), "s2026-a");
        assert!(parse_selector("a.b").is_err());
        assert!(parse_selector("").is_err());
        assert_eq!(parse_domain("Example.COM.").unwrap(), "example.com");
        assert!(parse_domain("localhost").is_err());
        assert!(parse_domain("bad domain.com").is_err());
    }
}
