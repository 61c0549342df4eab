//! DKIM key generation and signing: what needs the OS's randomness and the clock (mail-auth writes
//! the signature's `t=` from it). The keys, their checks and the DNS record are mailroom-core's
//! [`mailroom_core::dkim`].

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mailroom_core::ValidationError;
use mailroom_core::dkim::{DkimAlgorithm, KeyMaterial, SIGNED_HEADERS, key_error};
use std::fmt;

/// A new key: RSA-2048 or Ed25519.
pub fn generate(algorithm: DkimAlgorithm) -> Result<KeyMaterial, ValidationError> {
    match algorithm {
        DkimAlgorithm::Rsa => {
            let key =
                rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(key_error)?;
            KeyMaterial::from_rsa(&key)
        }
        DkimAlgorithm::Ed25519 => {
            KeyMaterial::from_ed25519_pkcs8(Ed25519Key::generate_pkcs8().map_err(key_error)?)
        }
    }
}

enum SignerKey {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

fn finish<K: mail_auth::common::crypto::SigningKey>(
    key: K,
    domain: &str,
    selector: &str,
) -> DkimSigner<K, Done> {
    DkimSigner::from_key(key)
        .domain(domain)
        .selector(selector)
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// Signs messages for one domain with one key (relaxed/relaxed canonicalisation).
pub struct Signer {
    domain: String,
    selector: String,
    key: SignerKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, {})", self.domain, self.selector)
    }
}

impl Signer {
    pub fn new(domain: &str, selector: &str, key: &KeyMaterial) -> Result<Self, ValidationError> {
        let key = match key.algorithm {
            DkimAlgorithm::Rsa => SignerKey::Rsa(finish(
                RsaKey::<Sha256>::from_key_der(rustls_pki_types::PrivateKeyDer::Pkcs1(
                    key.private_der.clone().into(),
                ))
                .map_err(key_error)?,
                domain,
                selector,
            )),
            DkimAlgorithm::Ed25519 => SignerKey::Ed25519(finish(
                Ed25519Key::from_pkcs8_maybe_unchecked_der(&key.private_der).map_err(key_error)?,
                domain,
                selector,
            )),
        };
        Ok(Self {
            domain: domain.to_owned(),
            selector: selector.to_owned(),
            key,
        })
    }

    /// The message with a `DKIM-Signature` header in front.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let signature = match &self.key {
            SignerKey::Rsa(signer) => signer.sign(message),
            SignerKey::Ed25519(signer) => signer.sign(message),
        }
        .map_err(|e| format!("DKIM signing failed: {e}"))?;
        let header = signature.to_header();
        let mut signed = Vec::with_capacity(header.len() + message.len());
        signed.extend_from_slice(header.as_bytes());
        signed.extend_from_slice(message);
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    const MESSAGE: &[u8] = b"From: Sales <sales@example.com>\r\nTo: ann@example.org\r\nSubject: Invoice 103001\r\nDate: Sat, 28 Nov 2026 08:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHello Ann,\r\n";

    #[test]
    fn a_generated_ed25519_key_signs_with_its_domain_selector_and_algorithm() {
        let key = generate(DkimAlgorithm::Ed25519).unwrap();
        let signer = Signer::new("example.com", "s2026", &key).unwrap();
        let signed = String::from_utf8(signer.sign(MESSAGE).unwrap()).unwrap();
        assert!(signed.starts_with("DKIM-Signature: "));
        for tag in [
            "a=ed25519-sha256",
            "d=example.com",
            "s=s2026",
            "c=relaxed/relaxed",
        ] {
            assert!(signed.contains(tag), "{tag} missing in {signed}");
        }
        assert!(signed.ends_with("Hello Ann,\r\n"));
        let public = base64::engine::general_purpose::STANDARD
            .decode(&key.public_key)
            .unwrap();
        assert_eq!(public.len(), 32);
    }

    #[test]
    fn a_generated_rsa_key_is_2048_bits_and_signs_rsa_sha256() {
        let key = generate(DkimAlgorithm::Rsa).unwrap();
        assert!(key.dns_record().starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"));
        let signed = Signer::new("example.com", "s1", &key)
            .unwrap()
            .sign(MESSAGE)
            .unwrap();
        assert!(String::from_utf8_lossy(&signed).contains("a=rsa-sha256"));
    }
}
