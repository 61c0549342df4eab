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
    /// Every pickup folder lies under this root (`pickup_root`); checked again before each write,
    /// because a symbolic link inside the root can be changed after the account was saved.
    root: PathBuf,
}

/// Why a pickup folder is refused: it does not lie under the pickup root.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OutsideRoot(pub String);

/// Checks that `directory` lies under `root` once every symbolic link is resolved: lexically (an
/// absolute path without `.` or `..` that starts with the root) and on disk (the deepest existing
/// ancestor of `directory`, canonicalized, is inside the canonicalized root). The root is created if
/// it is missing.
pub fn check_inside_root(directory: &Path, root: &Path) -> Result<(), OutsideRoot> {
    use std::path::Component;
    let outside = || {
        OutsideRoot(format!(
            "{} is not under the pickup root {} (pickup_root in the config file)",
            directory.display(),
            root.display()
        ))
    };
    let lexically_plain = directory.is_absolute()
        && directory
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !lexically_plain || !directory.starts_with(root) {
        return Err(outside());
    }
    std::fs::create_dir_all(root).map_err(|e| {
        OutsideRoot(format!(
            "the pickup root {} cannot be created: {e}",
            root.display()
        ))
    })?;
    let canonical_root = root.canonicalize().map_err(|e| {
        OutsideRoot(format!(
            "the pickup root {} cannot be read: {e}",
            root.display()
        ))
    })?;
    let mut existing = directory;
    while std::fs::symlink_metadata(existing).is_err() {
        existing = existing.parent().ok_or_else(outside)?;
    }
    let resolved = existing.canonicalize().map_err(|_| outside())?;
    if resolved.starts_with(&canonical_root) {
        Ok(())
    } else {
        Err(outside())
    }
}

impl PickupConnector {
    pub fn new(directory: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
            root: root.into(),
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

enum WriteError {
    Outside(OutsideRoot),
    Io(std::io::Error),
}

impl From<OutsideRoot> for WriteError {
    fn from(outside: OutsideRoot) -> Self {
        WriteError::Outside(outside)
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
        let root = self.root.clone();
        let name = Self::file_name(&message.message_id);
        let bytes = message.bytes.clone();
        let written = tokio::task::spawn_blocking(move || {
            check_inside_root(&directory, &root)?;
            write_atomically(&directory, &name, &[envelope.as_bytes(), &bytes])
                .map_err(WriteError::Io)
        })
        .await
        .map_err(|e| SendError::transient(None, format!("pickup writer stopped: {e}")))?;
        match written.map_err(|e| match e {
            WriteError::Outside(outside) => SendError::permanent(None, outside.0),
            WriteError::Io(e) => SendError::transient(
                None,
                format!(
                    "could not write to the pickup folder {}: {e}",
                    self.directory.display()
                ),
            ),
        }) {
            Ok(path) => Ok(Delivered {
                reply_code: None,
                reply_text: format!("written to {}", path.display()),
            }),
            Err(error) => Err(error),
        }
    }

    async fn test_connection(&self) -> Result<String, SendError> {
        let directory = self.directory.clone();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || check_inside_root(&directory, &root))
            .await
            .map_err(|e| SendError::transient(None, e.to_string()))?
            .map_err(|outside| SendError::permanent(None, outside.0))?;
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
        let connector = PickupConnector::new(dir.path().join("pickup"), dir.path());
        let message = OutgoingMessage {
            envelope_from: EmailAddress::parse("sales@example.com").unwrap(),
            recipients: vec![
                EmailAddress::parse("a@example.com").unwrap(),
                EmailAddress::parse("hidden@example.com").unwrap(),
            ],
            bytes: Arc::new(b"Subject: hi\r\n\r\nbody\r\n".to_vec()),
            message_id: "<abc@example.com>".into(),
            sender_user: None,
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
        let error = PickupConnector::new(&file, dir.path())
            .test_connection()
            .await
            .unwrap_err();
        assert!(error.message.contains("not writable"), "{error}");
    }

    #[tokio::test]
    async fn a_folder_that_a_symbolic_link_moved_out_of_the_root_fails_the_message_for_good() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("drop")).unwrap();
        let connector = PickupConnector::new(root.path().join("drop"), root.path());
        let message = OutgoingMessage {
            envelope_from: EmailAddress::parse("sales@example.com").unwrap(),
            recipients: vec![EmailAddress::parse("a@example.com").unwrap()],
            bytes: Arc::new(b"Subject: hi\r\n\r\nbody\r\n".to_vec()),
            message_id: "<abc@example.com>".into(),
            sender_user: None,
        };
        let error = connector.send(&message).await.unwrap_err();
        assert_eq!(error.kind, crate::FailureKind::Permanent);
        assert!(
            error.message.contains("not under the pickup root"),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_plain_paths_under_the_root_are_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(check_inside_root(&r.join("a/b"), r).is_ok());
        assert!(check_inside_root(r, r).is_ok());
        assert!(check_inside_root(&r.join("a/../../etc"), r).is_err());
        assert!(check_inside_root(Path::new("/etc/cron.d"), r).is_err());
        assert!(check_inside_root(Path::new("relative"), r).is_err());
        let sibling = format!("{}-other", r.display());
        assert!(check_inside_root(Path::new(&sibling), r).is_err());
    }
}
