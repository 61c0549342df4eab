//! Secrets at rest: XChaCha20-Poly1305 with a random nonce per value and the owning record's id as
//! associated data, so a ciphertext copied onto another record does not decrypt.
//!
//! Stored form: `v1:<key-id>:<base64(nonce || ciphertext)>`. The key id (first 8 hex digits of the
//! SHA-256 of the key) leaves room for key rotation: a value names the key that sealed it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key is invalid: {0}")]
    InvalidKey(String),
    #[error("a stored secret could not be decrypted (wrong key, or the value was tampered with)")]
    Undecryptable,
    #[error("could not read or write the secret key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
}

/// Seals and opens secrets with the installation's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    key_id: String,
    /// Derived from the key: signs tokens mailroom hands out (VERP return paths, unsubscribe links).
    tag_key: [u8; 32],
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBox(key {})", self.key_id)
    }
}

impl SecretBox {
    /// A box from 32 raw key bytes.
    pub fn from_key(key: &[u8]) -> Result<Self, SecretError> {
        if key.len() != 32 {
            return Err(SecretError::InvalidKey(format!(
                "expected 32 bytes, got {}",
                key.len()
            )));
        }
        let key_id = hex::encode(&Sha256::digest(key)[..4]);
        let mut derive = Sha256::new();
        derive.update(b"mailroom token tags\0");
        derive.update(key);
        Ok(Self {
            cipher: XChaCha20Poly1305::new(key.into()),
            key_id,
            tag_key: derive.finalize().into(),
        })
    }

    /// A box from a key written as 64 hex digits or as base64 of 32 bytes (as in `MAILROOM_SECRET_KEY`).
    pub fn from_encoded_key(encoded: &str) -> Result<Self, SecretError> {
        let encoded = encoded.trim();
        let bytes = hex::decode(encoded)
            .ok()
            .filter(|b| b.len() == 32)
            .or_else(|| BASE64.decode(encoded).ok())
            .ok_or_else(|| {
                SecretError::InvalidKey("expected 64 hex digits or base64 of 32 bytes".into())
            })?;
        Self::from_key(&bytes)
    }

    /// Loads the key file, creating it (mode 0600, 32 random bytes as hex) when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        let io_error = |source| SecretError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(encoded) => Self::from_encoded_key(&encoded),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                crate::write_private_file(path, hex::encode(key).as_bytes()).map_err(io_error)?;
                Self::from_key(&key)
            }
            Err(error) => Err(io_error(error)),
        }
    }

    /// An HMAC-SHA256 of `data` under a key derived from the installation's key: the signature of a
    /// token that must lead back only to what mailroom issued it for.
    pub fn tag(&self, data: &[u8]) -> [u8; 32] {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.tag_key)
            .expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// Nonce and ciphertext of `plaintext`, authenticated with `aad`.
    fn encrypt(&self, aad: &str, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    /// The plaintext of [`SecretBox::encrypt`]'s bytes, when they are whole and were made for `aad`.
    fn decrypt(&self, aad: &str, bytes: &[u8]) -> Option<String> {
        if bytes.len() < 24 + 16 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let plaintext = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(plaintext).ok()
    }

    /// A token for a link: `plaintext` encrypted and authenticated for `purpose` (URL-safe base64
    /// of nonce and ciphertext). It reveals nothing of what it carries, and a changed one does not open.
    pub fn seal_token(&self, purpose: &str, plaintext: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        URL_SAFE_NO_PAD.encode(self.encrypt(purpose, plaintext))
    }

    /// What a [`SecretBox::seal_token`] token carries, when it was made for `purpose` by this key.
    pub fn open_token(&self, purpose: &str, token: &str) -> Option<String> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        self.decrypt(purpose, &URL_SAFE_NO_PAD.decode(token.trim()).ok()?)
    }

    /// Encrypts `plaintext`, bound to `record_id`.
    pub fn seal(&self, record_id: &str, plaintext: &str) -> String {
        format!(
            "v1:{}:{}",
            self.key_id,
            BASE64.encode(self.encrypt(record_id, plaintext))
        )
    }

    /// Decrypts a value sealed for `record_id`.
    pub fn open(&self, record_id: &str, sealed: &str) -> Result<String, SecretError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some("v1"), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(SecretError::Undecryptable);
        };
        if key_id != self.key_id {
            return Err(SecretError::Undecryptable);
        }
        let bytes = BASE64
            .decode(body)
            .map_err(|_| SecretError::Undecryptable)?;
        self.decrypt(record_id, &bytes)
            .ok_or(SecretError::Undecryptable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_for_its_own_record() {
        let secrets = SecretBox::from_key(&[7u8; 32]).unwrap();
        let sealed = secrets.seal("account-1", "hunter2");
        assert!(!sealed.contains("hunter2"));
        assert_eq!(secrets.open("account-1", &sealed).unwrap(), "hunter2");
        assert!(secrets.open("account-2", &sealed).is_err());
    }

    #[test]
    fn a_secret_sealed_with_another_key_does_not_open() {
        let sealed = SecretBox::from_key(&[1u8; 32]).unwrap().seal("a", "x");
        assert!(
            SecretBox::from_key(&[2u8; 32])
                .unwrap()
                .open("a", &sealed)
                .is_err()
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let second = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(second.open("r", &first.seal("r", "s")).unwrap(), "s");
    }
}
