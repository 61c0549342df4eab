//! The pickup-folder connector: writes each message as an `.eml` file, atomically (temporary file,
//! fsync, rename), so a reader of the folder never sees half a message.
//!
//! Files start with `X-Sender` and `X-Receiver` lines (the pickup-directory convention of Exchange and
//! IIS) so that the envelope, including Bcc recipients, is not lost; the rest is the RFC 5322 message.
//! The file name is derived from the Message-ID, so a re-sent message replaces its earlier copy.

use crate::{Connector, Delivered, OutgoingMessage, SendError};
use async_trait::async_trait;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct PickupConnector {
    directory: PathBuf,
}

impl PickupConnector {
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
        }
    }

    fn file_name(message_id: &str) -> String {
        let bare: String = message_id
            .trim_matches(['<', '>'])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "@.-_".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!("{bare}.eml")
    }
}

fn write_atomically(directory: &Path, name: &str, parts: &[&[u8]]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(directory)?;
    let temporary = directory.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let target = directory.join(name);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        std::fs::rename(&temporary, &target)?;
        std::fs::File::open(directory)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map(|()| target)
}

#[async_trait]
impl Connector for PickupConnector {
    fn describe(&self) -> String {
        format!("pickup folder {}", self.directory.display())
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let mut envelope = format!("X-Sender: {}\r\n", message.envelope_from);
        for recipient in &message.recipients {
            envelope.push_str(&format!("X-Receiver: {recipient}\r\n"));
        }
        let directory = self.directory.clone();
        let name = Self::file_name(&message.message_id);
        let bytes = message.bytes.clone();
        let written = tokio::task::spawn_blocking(move || {
            write_atomically(&directory, &name, &[envelope.as_bytes(), &bytes])
        })
        .await
        .map_err(|e| SendError::transient(None, format!("pickup writer stopped: {e}")))?;
        match written {
            Ok(path) => Ok(Delivered {
                reply_code: None,
                reply_text: format!("written to {}", path.display()),
            }),
            Err(e) => Err(SendError::transient(
                None,
                format!(
                    "could not write to the pickup folder {}: {e}",
                    self.directory.display()
                ),
            )),
        }
    }

    async fn test_connection(&self) -> Result<String, SendError> {
        let directory = self.directory.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&directory)?;
            let probe = write_atomically(&directory, ".mailroom-probe", &[b"probe"])?;
            std::fs::remove_file(probe)
        })
        .await
        .map_err(|e| SendError::transient(None, e.to_string()))?
        .map_err(|e| {
            SendError::permanent(
                None,
                format!(
                    "the pickup folder {} is not writable: {e}",
                    self.directory.display()
                ),
            )
        })?;
        Ok(format!(
            "the pickup folder {} is writable",
            self.directory.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_core::address::EmailAddress;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_message_lands_as_one_complete_eml_file_named_after_its_message_id() {
        let dir = tempfile::tempdir().unwrap();
        let connector = PickupConnector::new(dir.path().join("pickup"));
        let message = OutgoingMessage {
            envelope_from: EmailAddress::parse("sales@example.com").unwrap(),
            recipients: vec![
                EmailAddress::parse("a@example.com").unwrap(),
                EmailAddress::parse("hidden@example.com").unwrap(),
            ],
            bytes: Arc::new(b"Subject: hi\r\n\r\nbody\r\n".to_vec()),
            message_id: "<abc@example.com>".into(),
        };
        connector.send(&message).await.unwrap();
        connector.send(&message).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path().join("pickup"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, vec![std::ffi::OsString::from("abc@example.com.eml")]);
        let written =
            std::fs::read_to_string(dir.path().join("pickup/abc@example.com.eml")).unwrap();
        assert_eq!(
            written,
            "X-Sender: sales@example.com\r\nX-Receiver: a@example.com\r\nX-Receiver: hidden@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
        );
    }

    #[tokio::test]
    async fn an_unwritable_folder_fails_the_connection_test() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-directory");
        std::fs::write(&file, b"x").unwrap();
        let error = PickupConnector::new(&file)
            .test_connection()
            .await
            .unwrap_err();
        assert!(error.message.contains("not writable"), "{error}");
    }
}
