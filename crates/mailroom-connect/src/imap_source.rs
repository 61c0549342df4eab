//! IMAP as an inbound source: reading a mailbox's folders without ever changing them. Folders are
//! opened with EXAMINE (read-only: no `\Seen` is set by anything mailroom does), bodies are read
//! with `BODY.PEEK[]`, and nothing is stored, moved, expunged or deleted. New mail is waited for
//! with IDLE where the server offers it.

use crate::SendError;
use crate::imap::{ImapSettings, failure, greeted, secure};
use async_imap::Session;
use async_imap::extensions::idle::IdleResponse;
use async_imap::types::NameAttribute;
use futures_util::TryStreamExt;
use mailroom_core::account::Security;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The connection under a session: plain, or secured by TLS (implicit or after STARTTLS).
#[derive(Debug)]
pub enum ImapStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for ImapStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A folder as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    pub name: String,
    /// Marked `\Sent` (RFC 6154 SPECIAL-USE).
    pub sent: bool,
    pub selectable: bool,
}

/// What EXAMINE says of a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FolderStatus {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub highestmodseq: Option<u64>,
    pub exists: u32,
}

/// One message as fetched.
#[derive(Debug, Clone)]
pub struct FetchedMail {
    pub uid: u32,
    pub flags: Vec<String>,
    pub internal_date_ms: Option<i64>,
    pub size: u32,
    pub raw: Vec<u8>,
}

/// A logged-in IMAP session used for reading only.
pub struct ImapSource {
    session: Session<ImapStream>,
    idle: bool,
    condstore: bool,
    timeout: Duration,
}

/// Runs `future` within `timeout`; a server that does not answer in time is a transient failure.
async fn within<T>(
    timeout: Duration,
    stage: &str,
    future: impl std::future::Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    match tokio::time::timeout(timeout, future).await {
        Ok(result) => result,
        Err(_) => Err(SendError::transient(
            None,
            format!("{stage}: no answer within {timeout:?}"),
        )),
    }
}

/// Compresses UIDs into an IMAP sequence set: `1:3,7,9:12`.
pub fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// A date as IMAP SEARCH wants it (`1-Feb-2026`) from `YYYY-MM-DD`.
pub fn imap_date(date: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut fields = date.split('-');
    let (year, month, day) = (fields.next()?, fields.next()?, fields.next()?);
    let month: usize = month.parse().ok()?;
    let day: u32 = day.parse().ok()?;
    Some(format!(
        "{day}-{}-{year}",
        MONTHS.get(month.checked_sub(1)?)?
    ))
}

impl ImapSource {
    /// Connects, secures the connection as configured and logs in.
    pub async fn open(settings: &ImapSettings) -> Result<Self, SendError> {
        within(settings.timeout, "connecting", Self::connect(settings)).await
    }

    async fn connect(settings: &ImapSettings) -> Result<Self, SendError> {
        let address = format!("{}:{}", settings.host, settings.port);
        let socket = TcpStream::connect(&address)
            .await
            .map_err(|e| SendError::transient(None, format!("connecting to {address}: {e}")))?;
        let _ = socket.set_nodelay(true);
        let stream = match settings.security {
            Security::Tls => ImapStream::Tls(Box::new(secure(socket, settings).await?)),
            Security::Starttls => {
                let mut client = async_imap::Client::new(socket);
                greeted(&mut client).await?;
                client
                    .run_command_and_check_ok("STARTTLS", None)
                    .await
                    .map_err(|e| {
                        SendError::permanent(None, format!("the server refused STARTTLS: {e}"))
                    })?;
                ImapStream::Tls(Box::new(secure(client.into_inner(), settings).await?))
            }
            Security::None => ImapStream::Plain(socket),
        };
        let mut client = async_imap::Client::new(stream);
        if settings.security != Security::Starttls {
            greeted(&mut client).await?;
        }
        let mut session = crate::imap::log_in(client, settings).await?;
        let capabilities = session
            .capabilities()
            .await
            .map_err(|e| failure("CAPABILITY", e))?;
        let idle = capabilities.has_str("IDLE");
        let condstore = capabilities.has_str("CONDSTORE") || capabilities.has_str("QRESYNC");
        if condstore {
            // Makes EXAMINE report HIGHESTMODSEQ (RFC 7162 section 3.1).
            session
                .run_command_and_check_ok("ENABLE CONDSTORE")
                .await
                .map_err(|e| failure("ENABLE CONDSTORE", e))?;
        }
        Ok(Self {
            session,
            idle,
            condstore,
            timeout: settings.timeout,
        })
    }

    /// Whether the server offers IDLE.
    pub fn offers_idle(&self) -> bool {
        self.idle
    }

    /// Whether the server keeps modification sequences (CONDSTORE).
    pub fn offers_condstore(&self) -> bool {
        self.condstore
    }

    /// Every folder of the mailbox.
    pub async fn folders(&mut self) -> Result<Vec<FolderInfo>, SendError> {
        let timeout = self.timeout;
        within(timeout, "LIST", async {
            let names: Vec<_> = self
                .session
                .list(Some(""), Some("*"))
                .await
                .map_err(|e| failure("LIST", e))?
                .try_collect()
                .await
                .map_err(|e| failure("LIST", e))?;
            Ok(names
                .iter()
                .map(|name| FolderInfo {
                    name: name.name().to_owned(),
                    sent: name.attributes().contains(&NameAttribute::Sent),
                    selectable: !name.attributes().contains(&NameAttribute::NoSelect),
                })
                .collect())
        })
        .await
    }

    /// Opens a folder read-only (EXAMINE): reading never changes a flag.
    pub async fn examine(&mut self, folder: &str) -> Result<FolderStatus, SendError> {
        let timeout = self.timeout;
        let stage = format!("EXAMINE {folder}");
        within(timeout, &stage.clone(), async {
            let mailbox = self
                .session
                .examine(folder)
                .await
                .map_err(|e| failure(&stage, e))?;
            Ok(FolderStatus {
                uidvalidity: mailbox.uid_validity.unwrap_or(0),
                uidnext: mailbox.uid_next.unwrap_or(0),
                highestmodseq: mailbox.highest_modseq,
                exists: mailbox.exists,
            })
        })
        .await
    }

    /// The UIDs in `from..below` (`below` = 0: no upper bound) of the examined folder, received on
    /// or after `since` (`YYYY-MM-DD`) when given, ascending.
    pub async fn uids(
        &mut self,
        from: u32,
        below: u32,
        since: Option<&str>,
    ) -> Result<Vec<u32>, SendError> {
        let from = from.max(1);
        if below != 0 && below <= from {
            return Ok(Vec::new());
        }
        let range = if below == 0 {
            format!("{from}:*")
        } else {
            format!("{from}:{}", below - 1)
        };
        let mut query = format!("UID {range}");
        if let Some(date) = since.and_then(imap_date) {
            query.push_str(&format!(" SINCE {date}"));
        }
        let timeout = self.timeout;
        let mut uids: Vec<u32> = within(timeout, "UID SEARCH", async {
            Ok(self
                .session
                .uid_search(&query)
                .await
                .map_err(|e| failure("UID SEARCH", e))?
                .into_iter()
                .collect())
        })
        .await?;
        // `N:*` names the last message even when its UID is below N (RFC 3501 section 6.4.8).
        uids.retain(|uid| *uid >= from && (below == 0 || *uid < below));
        uids.sort_unstable();
        Ok(uids)
    }

    /// One `UID FETCH`, its answers collected, within `timeout`.
    async fn uid_fetch(
        &mut self,
        timeout: Duration,
        stage: &str,
        set: impl AsRef<str>,
        query: impl AsRef<str>,
    ) -> Result<Vec<async_imap::types::Fetch>, SendError> {
        within(timeout, stage, async {
            self.session
                .uid_fetch(set, query)
                .await
                .map_err(|e| failure("UID FETCH", e))?
                .try_collect()
                .await
                .map_err(|e| failure("UID FETCH", e))
        })
        .await
    }

    /// The sizes of messages, to read them in batches of bounded memory.
    pub async fn sizes(&mut self, uids: &[u32]) -> Result<Vec<(u32, u32)>, SendError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        let timeout = self.timeout;
        let fetched = self
            .uid_fetch(timeout, "UID FETCH RFC822.SIZE", &set, "(UID RFC822.SIZE)")
            .await?;
        Ok(fetched
            .iter()
            .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
            .collect())
    }

    /// Message-ID and size of messages: what a re-index after a UIDVALIDITY change matches by.
    pub async fn identities(
        &mut self,
        uids: &[u32],
    ) -> Result<Vec<(u32, Option<String>, u32)>, SendError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        let timeout = self.timeout;
        let fetched = self
            .uid_fetch(
                timeout,
                "UID FETCH HEADER.FIELDS",
                &set,
                "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            )
            .await?;
        Ok(fetched
            .iter()
            .filter_map(|f| {
                let header = f.header().or_else(|| f.body()).unwrap_or_default();
                let message_id = mailroom_core::inbound::parse_inbound(header).message_id;
                Some((f.uid?, message_id, f.size.unwrap_or(0)))
            })
            .collect())
    }

    /// Reads whole messages with `BODY.PEEK[]` (which sets no flag), with their flags, sizes and
    /// internal dates.
    pub async fn fetch(&mut self, uids: &[u32]) -> Result<Vec<FetchedMail>, SendError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let set = uid_set(uids);
        // Whole messages may be large: the time allowed grows with the batch.
        let timeout = self.timeout * (1 + uids.len() as u32 / 16);
        let fetched = self
            .uid_fetch(
                timeout,
                "UID FETCH BODY.PEEK[]",
                &set,
                "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])",
            )
            .await?;
        Ok(fetched
            .into_iter()
            .filter_map(|f| {
                Some(FetchedMail {
                    uid: f.uid?,
                    flags: flags_of(&f),
                    internal_date_ms: f.internal_date().map(|d| d.timestamp_millis()),
                    size: f.size.unwrap_or(0),
                    raw: f.body()?.to_vec(),
                })
            })
            .collect())
    }

    /// The flags of every message of the examined folder whose flags changed since `modseq`
    /// (`UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE modseq)`, RFC 7162 3.1.4). Only when the server
    /// offers CONDSTORE; otherwise nothing.
    pub async fn changed_flags(
        &mut self,
        modseq: u64,
    ) -> Result<Vec<(u32, Vec<String>)>, SendError> {
        if !self.condstore {
            return Ok(Vec::new());
        }
        let timeout = self.timeout;
        let fetched = self
            .uid_fetch(
                timeout,
                "UID FETCH CHANGEDSINCE",
                "1:*",
                format!("(UID FLAGS) (CHANGEDSINCE {modseq})"),
            )
            .await?;
        Ok(fetched
            .iter()
            .filter_map(|f| Some((f.uid?, flags_of(f))))
            .collect())
    }

    /// A message's flags, INTERNALDATE and size, without its bytes (`raw` is empty); `None` when
    /// it is gone.
    pub async fn fetch_meta(&mut self, uid: u32) -> Result<Option<FetchedMail>, SendError> {
        let timeout = self.timeout;
        let fetched = self
            .uid_fetch(
                timeout,
                "UID FETCH FLAGS",
                uid.to_string(),
                "(UID FLAGS INTERNALDATE RFC822.SIZE)",
            )
            .await?;
        Ok(fetched
            .iter()
            .find(|f| f.uid == Some(uid))
            .map(|f| FetchedMail {
                uid,
                flags: flags_of(f),
                internal_date_ms: f.internal_date().map(|d| d.timestamp_millis()),
                size: f.size.unwrap_or(0),
                raw: Vec::new(),
            }))
    }

    /// Up to `length` bytes of a message from `offset` (a partial `BODY.PEEK[]<offset.length>`,
    /// RFC 3501 6.4.5): how a large message is read a piece at a time. Empty past the end;
    /// `None` when the message is gone.
    pub async fn fetch_range(
        &mut self,
        uid: u32,
        offset: u64,
        length: u32,
    ) -> Result<Option<Vec<u8>>, SendError> {
        let timeout = self.timeout * (1 + length / (4 * 1024 * 1024));
        let fetched = self
            .uid_fetch(
                timeout,
                "UID FETCH BODY.PEEK[]<partial>",
                uid.to_string(),
                format!("(UID BODY.PEEK[]<{offset}.{length}>)"),
            )
            .await?;
        Ok(fetched
            .iter()
            .find(|f| f.uid == Some(uid))
            .map(|f| f.body().map(<[u8]>::to_vec).unwrap_or_default()))
    }

    /// Waits in IDLE on the examined folder until the server reports a change or `wait` passes;
    /// `true` when something changed. The session comes back ready for commands.
    pub async fn idle(self, wait: Duration) -> Result<(Self, bool), SendError> {
        let Self {
            session,
            idle,
            condstore,
            timeout,
        } = self;
        // News the server sent before or while IDLE started goes to the unsolicited channel, not
        // to the IDLE wait: what came before is dropped (the folder was just read), what comes
        // during the start ends the wait at once.
        let unsolicited = session.unsolicited_responses.clone();
        while unsolicited.try_recv().is_ok() {}
        let mut handle = session.idle();
        within(timeout, "IDLE", async {
            handle.init().await.map_err(|e| failure("IDLE", e))
        })
        .await?;
        let mut changed = false;
        while let Ok(response) = unsolicited.try_recv() {
            changed |= matches!(
                response,
                async_imap::types::UnsolicitedResponse::Exists(_)
                    | async_imap::types::UnsolicitedResponse::Recent(_)
            );
        }
        if !changed {
            let (waiting, _stop) = handle.wait_with_timeout(wait);
            changed = match waiting.await {
                Ok(IdleResponse::NewData(_)) => true,
                Ok(IdleResponse::Timeout | IdleResponse::ManualInterrupt) => false,
                Err(e) => return Err(failure("IDLE", e)),
            };
        }
        let session = within(timeout, "DONE", async {
            handle.done().await.map_err(|e| failure("IDLE DONE", e))
        })
        .await?;
        Ok((
            Self {
                session,
                idle,
                condstore,
                timeout,
            },
            changed,
        ))
    }

    /// Logs out (errors are ignored: the connection is closed either way).
    pub async fn logout(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.session.logout()).await;
    }
}

/// A message's flags as text, without `\Recent` (which belongs to one session, not to the message).
fn flags_of(fetch: &async_imap::types::Fetch) -> Vec<String> {
    fetch
        .flags()
        .filter(|flag| !matches!(flag, async_imap::types::Flag::Recent))
        .map(|flag| flag_text(&flag))
        .collect()
}

fn flag_text(flag: &async_imap::types::Flag<'_>) -> String {
    use async_imap::types::Flag;
    match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(text) => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_sets_are_compressed_into_ranges() {
        assert_eq!(uid_set(&[9, 1, 2, 3, 7, 10, 11, 12, 3]), "1:3,7,9:12");
        assert_eq!(uid_set(&[5]), "5");
    }

    #[test]
    fn search_dates_are_written_as_imap_wants_them() {
        assert_eq!(imap_date("2026-02-01").as_deref(), Some("1-Feb-2026"));
        assert_eq!(imap_date("2026-13-01"), None);
    }
}
