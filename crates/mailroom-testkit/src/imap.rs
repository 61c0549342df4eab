//! A plain IMAP client for tests: puts messages into a private Dovecot mailbox (APPEND), reads
//! their flags back, and recreates folders (which gives them a new UIDVALIDITY).

use anyhow::{Context, Result, anyhow};
use futures_util::TryStreamExt;
use std::path::PathBuf;
use tokio::net::TcpStream;

pub struct ImapClient {
    session: async_imap::Session<TcpStream>,
}

impl ImapClient {
    /// Logs in to the IMAP server on 127.0.0.1:`port` (no TLS).
    pub async fn login(port: u16, username: &str, password: &str) -> Result<Self> {
        let socket = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut client = async_imap::Client::new(socket);
        client
            .read_response()
            .await?
            .context("the server closed before greeting")?;
        let session = client
            .login(username, password)
            .await
            .map_err(|(e, _)| anyhow!("login: {e}"))?;
        Ok(Self { session })
    }

    /// Appends one message to `folder`, with `flags` (e.g. `\Seen`) and an internal date
    /// (`01-Jan-2026 10:00:00 +0000`) when given.
    pub async fn append(
        &mut self,
        folder: &str,
        raw: &[u8],
        flags: Option<&str>,
        internal_date: Option<&str>,
    ) -> Result<()> {
        self.session
            .append(folder, flags, internal_date, raw)
            .await
            .map_err(|e| anyhow!("APPEND to {folder}: {e}"))
    }

    /// Creates a folder.
    pub async fn create(&mut self, folder: &str) -> Result<()> {
        self.session
            .create(folder)
            .await
            .map_err(|e| anyhow!("CREATE {folder}: {e}"))
    }

    /// Deletes a folder and everything in it.
    pub async fn delete(&mut self, folder: &str) -> Result<()> {
        self.session
            .delete(folder)
            .await
            .map_err(|e| anyhow!("DELETE {folder}: {e}"))
    }

    /// The UIDVALIDITY of a folder.
    pub async fn uidvalidity(&mut self, folder: &str) -> Result<u32> {
        let mailbox = self.session.examine(folder).await?;
        mailbox.uid_validity.context("no UIDVALIDITY")
    }

    /// Adds flags to a message, as another mail client reading or flagging it would
    /// (`UID STORE uid +FLAGS (…)`).
    pub async fn add_flags(&mut self, folder: &str, uid: u32, flags: &str) -> Result<()> {
        self.session.select(folder).await?;
        let _: Vec<_> = self
            .session
            .uid_store(uid.to_string(), format!("+FLAGS ({flags})"))
            .await?
            .try_collect()
            .await?;
        Ok(())
    }

    /// Every message's UID and stored flags in `folder` (read-only).
    pub async fn flags(&mut self, folder: &str) -> Result<Vec<(u32, Vec<String>)>> {
        let mailbox = self.session.examine(folder).await?;
        if mailbox.exists == 0 {
            return Ok(Vec::new());
        }
        let fetched: Vec<_> = self
            .session
            .fetch("1:*", "(UID FLAGS)")
            .await?
            .try_collect()
            .await?;
        Ok(fetched
            .iter()
            .map(|f| {
                (
                    f.uid.unwrap_or(0),
                    // `\Recent` belongs to whichever session saw the message first: not a change.
                    f.flags()
                        .map(|flag| format!("{flag:?}"))
                        .filter(|flag| flag != "Recent")
                        .collect(),
                )
            })
            .collect())
    }

    /// Every message's UID and bytes in `folder`, as the server serves them (read-only).
    pub async fn bodies(&mut self, folder: &str) -> Result<Vec<(u32, Vec<u8>)>> {
        let mailbox = self.session.examine(folder).await?;
        if mailbox.exists == 0 {
            return Ok(Vec::new());
        }
        let fetched: Vec<_> = self
            .session
            .fetch("1:*", "(UID BODY.PEEK[])")
            .await?
            .try_collect()
            .await?;
        Ok(fetched
            .iter()
            .map(|f| (f.uid.unwrap_or(0), f.body().unwrap_or_default().to_vec()))
            .collect())
    }

    pub async fn logout(mut self) {
        let _ = self.session.logout().await;
    }
}

/// The inbound corpus shipped with the test kit: 376 real-world and malformed messages and their
/// `MANIFEST.tsv`.
pub fn inbound_corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus/inbound")
}
