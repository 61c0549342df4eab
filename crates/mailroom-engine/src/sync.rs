//! Mailbox sync (MISSION B6): reads each enabled, approved mailbox's folders over IMAP and stores
//! every message it finds, without ever changing the mailbox.
//!
//! - One task per mailbox, held by one node at a time (`mailbox_sync_holds`; another node takes a
//!   mailbox over once the hold of a node that died expires). Each task holds one of its profile's
//!   `max_connections` places while connected, so one slow or broken mailbox delays no other.
//! - Per folder: UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and how far the initial sync has come
//!   (newest first, from the profile's `process_from`). New mail is read in UID order and the
//!   folder's UIDNEXT is recorded only after every message below it is stored; the initial sync
//!   records its low-water mark after each batch. When HIGHESTMODSEQ moved (CONDSTORE), the flags
//!   changed since are brought over to the stored messages. A crash repeats at most a batch, and a UID
//!   stored before is never stored twice.
//! - A UIDVALIDITY change re-indexes the folder: stored messages are matched to the server's by
//!   Message-ID and size (by content for messages without a Message-ID) and keep their record;
//!   only the rest are read again. A server that changes it on almost every session trips a breaker.
//! - IDLE on INBOX when the server offers it and the profile wants it; other folders are polled at
//!   the profile's interval.
//! - Messages are read in batches (at most 8 MiB and 200 messages) through a pipeline: while one
//!   batch is stored in one transaction, the next is parsed and its blobs written (one file-system
//!   sync per batch), and the one after is fetched. A message larger than a batch is read alone, a
//!   piece at a time (partial `BODY.PEEK[]<offset.length>`) into the blob store, and its long
//!   base64 attachments decoded from there into blobs: memory stays bounded whatever its size.
//! - A transient failure is tried again with backoff; a permanent one (credentials refused)
//!   disables the mailbox and alerts its owners, as its test would.

use crate::connectors::ConnectorDefaults;
use crate::mailboxes::MailboxWorker;
use mailroom_connect::{FailureKind, FetchedMail, ImapSettings, ImapSource, SendError};
use mailroom_core::inbound::{CorrelationSettings, correlation_keys, parse_inbound};
use mailroom_core::mailbox::TestStatus;
use mailroom_store::{
    BlobStore, FolderState, HashedBytes, MailboxRecord, MailboxTestRecord, NewInbound, Store,
    StoredPart, now_ms,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Timing and batch sizes of mailbox sync. Tests shorten them through configuration.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How often the node looks for mailboxes to start or stop synchronizing (and renews its holds).
    pub rescan: Duration,
    /// How long a node's hold on a mailbox lasts without renewal.
    pub hold: Duration,
    /// Longest wait in IDLE before it is issued again (RFC 2177: less than 29 minutes).
    pub idle_wait: Duration,
    /// When set, folders are polled at least this often, whatever the profile says.
    pub poll_at_least: Option<Duration>,
    /// The first delay after a transient failure; doubled per failure, at most five minutes.
    pub retry_initial: Duration,
    /// Bytes of messages fetched in one batch (a larger message is fetched alone).
    pub batch_bytes: u64,
    /// Messages fetched in one batch at most.
    pub batch_messages: usize,
    /// One IMAP command, from sending it to its answer.
    pub timeout: Duration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            rescan: Duration::from_secs(2),
            hold: Duration::from_secs(30),
            idle_wait: Duration::from_secs(25 * 60),
            poll_at_least: None,
            retry_initial: Duration::from_secs(10),
            batch_bytes: 8 * 1024 * 1024,
            batch_messages: 200,
            timeout: Duration::from_secs(60),
        }
    }
}

/// UIDVALIDITY changes within a day after which a folder is no longer re-indexed until the day
/// has passed (a server that changes it every session would otherwise be read again and again).
const VALIDITY_BREAKER: u32 = 3;
const DAY_MS: i64 = 86_400_000;

/// Why a round of sync ended.
enum Stop {
    /// The mailbox is no longer to be synchronized (or the node is stopping).
    Done,
    /// Everything is read; the connection was closed and the mailbox is read again after this.
    Poll(Duration),
    Failed(SendError),
}

impl From<SendError> for Stop {
    fn from(error: SendError) -> Self {
        Stop::Failed(error)
    }
}

impl From<mailroom_store::StoreError> for Stop {
    fn from(error: mailroom_store::StoreError) -> Self {
        Stop::Failed(SendError::transient(None, format!("the store: {error}")))
    }
}

/// Synchronizes the mailboxes this node holds.
pub struct SyncWorker {
    store: Store,
    blobs: BlobStore,
    defaults: ConnectorDefaults,
    config: SyncConfig,
    node_id: String,
    /// Shares each profile's connection places with mailbox tests.
    mailboxes: Arc<MailboxWorker>,
    running: Mutex<HashMap<Uuid, CancellationToken>>,
    /// One message larger than a batch is read at a time on this node.
    large_messages: tokio::sync::Semaphore,
}

impl SyncWorker {
    /// What a stored message asks of mailroom besides being kept: a report on mail we sent (bounces
    /// and complaints recorded, addresses suppressed, their events written — whether or not the
    /// mailbox's filter kept the report) or an unsubscribe request. Nothing for a message seen before.
    async fn act_on_stored(
        &self,
        mailbox: &MailboxRecord,
        prepared: &Prepared,
        outcome: &mailroom_store::InboundOutcome,
    ) {
        let inbound_id = match outcome {
            mailroom_store::InboundOutcome::Stored(id) => Some(*id),
            mailroom_store::InboundOutcome::Filtered => None,
            mailroom_store::InboundOutcome::AlreadyStored(_) => return,
        };
        if let Some(token) = &prepared.unsubscribe_token {
            self.unsubscribe_by_mail(token).await;
        }
        let Some(report) = &prepared.report else {
            return;
        };
        let verp = self.store.verp_message(&prepared.verp_tokens);
        match self.store.record_report(inbound_id, report, verp).await {
            Ok(recorded) => {
                for line in recorded {
                    tracing::info!(event = "report_recorded", message_uuid = %line.message_id,
                        recipient = %line.recipient, kind = %line.kind, status = %line.status,
                        hard = line.hard, "a report on sent mail was recorded");
                }
            }
            Err(error) => {
                tracing::warn!(%error, mailbox = %mailbox.id, "recording a bounce or complaint failed");
            }
        }
    }

    /// Acts on an unsubscribe request that arrived by mail (the mailto of `List-Unsubscribe`): a
    /// token this installation made takes its addresses off its list; any other is ignored.
    async fn unsubscribe_by_mail(&self, token: &str) {
        let Some(opened) = self.store.open_unsubscribe_token(token) else {
            return;
        };
        match self.store.unsubscribe(&opened, "mailto").await {
            Ok(newly) => {
                tracing::info!(event = "unsubscribed", message_uuid = %opened.message_id,
                    list = %opened.list, newly = newly.len(), "unsubscribe request by mail");
            }
            Err(error) => tracing::warn!(%error, "recording an unsubscribe request failed"),
        }
    }

    pub fn new(
        store: Store,
        blobs: BlobStore,
        defaults: ConnectorDefaults,
        config: SyncConfig,
        node_id: String,
        mailboxes: Arc<MailboxWorker>,
    ) -> Self {
        Self {
            store,
            blobs,
            defaults,
            config,
            node_id,
            mailboxes,
            running: Mutex::new(HashMap::new()),
            large_messages: tokio::sync::Semaphore::new(1),
        }
    }

    /// Starts and stops mailbox tasks as mailboxes become ready or not, until `stopping`.
    pub async fn run(self: Arc<Self>, stopping: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            if let Err(error) = self.rescan(&stopping, &mut tasks).await {
                tracing::warn!(%error, "looking for mailboxes to synchronize failed; trying again");
            }
            while let Some(ended) = tasks.try_join_next() {
                if let Err(error) = ended {
                    tracing::error!(%error, "a mailbox sync task ended abnormally");
                }
            }
            tokio::select! {
                _ = stopping.cancelled() => break,
                _ = tokio::time::sleep(self.config.rescan) => {}
            }
        }
        for token in self.running.lock().expect("running lock").values() {
            token.cancel();
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn rescan(
        self: &Arc<Self>,
        stopping: &CancellationToken,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> mailroom_store::StoreResult<()> {
        let ready = self.store.mailboxes_to_sync().await?;
        let wanted: HashSet<Uuid> = ready.iter().map(|m| m.id).collect();
        let now = now_ms();
        let until = now + self.config.hold.as_millis() as i64;
        // Stop what is no longer wanted, or no longer this node's.
        let running: Vec<Uuid> = self
            .running
            .lock()
            .expect("running lock")
            .keys()
            .copied()
            .collect();
        // One statement renews every hold of this node, however many mailboxes it syncs.
        let held: HashSet<Uuid> = self
            .store
            .renew_mailbox_sync_holds(&self.node_id, until)
            .await?
            .into_iter()
            .collect();
        for id in running {
            let keep = wanted.contains(&id) && held.contains(&id);
            if !keep && let Some(token) = self.running.lock().expect("running lock").remove(&id) {
                token.cancel();
            }
        }
        for mailbox in ready {
            if self
                .running
                .lock()
                .expect("running lock")
                .contains_key(&mailbox.id)
            {
                continue;
            }
            if !self
                .store
                .hold_mailbox_sync(mailbox.id, &self.node_id, now, until)
                .await?
            {
                continue;
            }
            let token = stopping.child_token();
            self.running
                .lock()
                .expect("running lock")
                .insert(mailbox.id, token.clone());
            let worker = self.clone();
            tasks.spawn(async move {
                worker.sync_mailbox(mailbox.id, token).await;
            });
        }
        Ok(())
    }

    /// Synchronizes one mailbox until it is cancelled or fails for good.
    async fn sync_mailbox(self: Arc<Self>, id: Uuid, cancel: CancellationToken) {
        tracing::info!(event = "mailbox_sync_started", mailbox = %id, node = %self.node_id, "synchronizing a mailbox");
        let mut failures = 0u32;
        loop {
            let round = tokio::select! {
                _ = cancel.cancelled() => break,
                round = self.round(id, &cancel, &mut failures) => round,
            };
            match round {
                Stop::Done => break,
                Stop::Poll(wait) => {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Stop::Failed(error) if error.kind == FailureKind::Permanent => {
                    tracing::warn!(event = "mailbox_sync_failed", mailbox = %id, error = %error.message, "disabling the mailbox");
                    if let Err(store_error) = self.disable(id, &error.message).await {
                        tracing::warn!(%store_error, mailbox = %id, "disabling a mailbox failed");
                    }
                    break;
                }
                Stop::Failed(error) => {
                    failures += 1;
                    let delay = self
                        .config
                        .retry_initial
                        .saturating_mul(1 << failures.saturating_sub(1).min(10))
                        .min(Duration::from_secs(300));
                    tracing::warn!(event = "mailbox_sync_retry", mailbox = %id, error = %error.message, retry_in_ms = delay.as_millis() as u64, "mailbox sync failed; trying again");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.running.lock().expect("running lock").remove(&id);
        let _ = self.store.release_mailbox_sync(id, &self.node_id).await;
        tracing::info!(event = "mailbox_sync_stopped", mailbox = %id, "stopped synchronizing a mailbox");
    }

    /// A permanent failure disables the mailbox and alerts, as a failed test does.
    async fn disable(&self, id: Uuid, reason: &str) -> mailroom_store::StoreResult<()> {
        let mailbox = self.store.mailbox(id).await?;
        let reason = format!("incoming: {reason}");
        self.store
            .record_mailbox_test(
                id,
                &MailboxTestRecord {
                    incoming_status: TestStatus::Failure,
                    outgoing_status: mailbox.outgoing_status,
                    act_status: mailbox.act_status,
                    enabled: false,
                    last_error: Some(reason.clone()),
                    test_tries: 0,
                    next_test_at_ms: None,
                    approve: false,
                    disabled_because: Some(reason),
                },
            )
            .await?;
        Ok(())
    }

    /// One connection's worth of sync: connect, then read every folder and wait for more, until
    /// something fails or the mailbox is no longer to be synchronized.
    async fn round(&self, id: Uuid, cancel: &CancellationToken, failures: &mut u32) -> Stop {
        let mailbox = match self.store.mailbox(id).await {
            Ok(mailbox) => mailbox,
            Err(mailroom_store::StoreError::NotFound(_)) => return Stop::Done,
            Err(error) => return error.into(),
        };
        let Some(profile_id) = mailbox.profile_id else {
            return Stop::Done;
        };
        let profile = match self.store.server_profile(profile_id).await {
            Ok(profile) => profile,
            Err(error) => return error.into(),
        };
        if profile.kind == mailroom_core::mailbox::ProfileKind::ExchangeOnline {
            return self.graph_round(&mailbox, &profile, cancel).await;
        }
        let login = match self.mailboxes.oauth.mailbox_login(&mailbox, &profile).await {
            Ok(login) => login,
            Err(error) => return Stop::Failed(error),
        };
        let places = self
            .mailboxes
            .profile_places(profile.id, profile.processing.max_connections);
        let _place = tokio::select! {
            _ = cancel.cancelled() => return Stop::Done,
            place = places.acquire() => place,
        };
        let settings = ImapSettings {
            host: profile.incoming.host.clone(),
            port: profile.incoming.port,
            security: profile.incoming.security,
            username: login.username,
            password: login.secret,
            oauth2: login.oauth2,
            timeout: self.config.timeout,
            extra_root_certificates: self.defaults.extra_root_certificates.clone(),
        };
        let mut source = match ImapSource::open(&settings).await {
            Ok(source) => source,
            // An access token the server refused (revoked, or expired early): a new one, and
            // once more — a refused token is not a reason to disable the mailbox.
            Err(error)
                if login.oauth2
                    && error.kind == FailureKind::Permanent
                    && error.message.contains("AUTHENTICATE") =>
            {
                let token = match self.mailboxes.oauth.mailbox_access_token(id, true).await {
                    Ok(token) => token,
                    Err(error) => return Stop::Failed(error),
                };
                match ImapSource::open(&ImapSettings {
                    password: token,
                    ..settings.clone()
                })
                .await
                {
                    Ok(source) => source,
                    Err(error) => return error.into(),
                }
            }
            Err(error) => return error.into(),
        };
        let folders = match self
            .resolve_folders(&mut source, &profile.processing.folders)
            .await
        {
            Ok(folders) => folders,
            Err(error) => return error.into(),
        };
        let poll = {
            let profile_poll = Duration::from_secs(u64::from(profile.processing.poll_interval_s));
            match self.config.poll_at_least {
                Some(at_least) => profile_poll.min(at_least),
                None => profile_poll,
            }
        };
        let idle_folder = folders
            .iter()
            .find(|f| f.eq_ignore_ascii_case("INBOX"))
            .cloned()
            .filter(|_| profile.processing.use_idle && source.offers_idle());
        loop {
            // Read every round: a change of the organisation's settings applies to the next mail.
            let correlation = match self.store.correlation_settings().await {
                Ok(settings) => settings,
                Err(error) => return error.into(),
            };
            for folder in &folders {
                if cancel.is_cancelled() {
                    return Stop::Done;
                }
                if let Err(stop) = self
                    .sync_folder(
                        &mut source,
                        &mailbox,
                        folder,
                        &profile.processing.process_from,
                        &correlation,
                    )
                    .await
                {
                    return stop;
                }
            }
            *failures = 0;
            // Waiting in IDLE keeps the connection (and its place) only while the profile has
            // room; otherwise the place is given back and the mailbox is polled. (Listening starts
            // before the check, so a wait that begins in between is not missed.)
            let contended = places.contended.notified();
            match &idle_folder {
                Some(folder) if places.uncontended() => {
                    let status = match source.examine(folder).await {
                        Ok(status) => status,
                        Err(error) => return error.into(),
                    };
                    // Mail that arrived since the folder was read is read before waiting.
                    let read_up_to = match self.store.folder_states(mailbox.id).await {
                        Ok(states) => states
                            .into_iter()
                            .find(|s| &s.folder == folder)
                            .map(|s| s.uidnext),
                        Err(error) => return error.into(),
                    };
                    if read_up_to.is_none_or(|uidnext| status.uidnext > uidnext) {
                        continue;
                    }
                    let wait = poll.min(self.config.idle_wait);
                    tokio::select! {
                        _ = cancel.cancelled() => return Stop::Done,
                        // (The connection closes as the IDLE in flight is dropped.)
                        _ = contended => return Stop::Poll(poll),
                        idled = source.idle(wait) => match idled {
                            Ok((back, _changed)) => source = back,
                            Err(error) => return error.into(),
                        },
                    }
                }
                _ => {
                    source.logout().await;
                    return Stop::Poll(poll);
                }
            }
        }
    }

    /// One round of an Exchange Online mailbox over Microsoft Graph (MISSION B6): each folder's
    /// delta query from where the last one ended — every page of it, the MIME of each new message
    /// read with `$value` and stored exactly as IMAP mail is (so correlation, reports and filters
    /// work alike) — then the new delta link kept. A sync state the service has forgotten starts
    /// again from scratch; messages stored before keep their numbers and are not stored twice.
    async fn graph_round(
        &self,
        mailbox: &MailboxRecord,
        profile: &mailroom_store::ServerProfile,
        cancel: &CancellationToken,
    ) -> Stop {
        use mailroom_connect::DeltaError;
        use mailroom_store::GRAPH_UIDVALIDITY;
        let client = match self
            .mailboxes
            .oauth
            .graph_for_mailbox(profile, mailbox)
            .await
        {
            Ok(client) => client,
            Err(error) => return Stop::Failed(error),
        };
        let correlation = match self.store.correlation_settings().await {
            Ok(settings) => settings,
            Err(error) => return error.into(),
        };
        let folders: Vec<String> = if profile.processing.folders.is_empty() {
            vec!["Inbox".to_owned()]
        } else {
            profile.processing.folders.clone()
        };
        for folder in &folders {
            let mut link = match self.store.graph_delta_link(mailbox.id, folder).await {
                Ok(link) => link,
                Err(error) => return error.into(),
            };
            let mut started_over = false;
            loop {
                if cancel.is_cancelled() {
                    return Stop::Done;
                }
                let page = match client
                    .delta_page(
                        folder,
                        link.as_deref(),
                        self.config.batch_messages.max(1) as u32,
                    )
                    .await
                {
                    Ok(page) => page,
                    Err(DeltaError::Resync) if !started_over => {
                        tracing::info!(mailbox = %mailbox.id, folder, "Microsoft Graph forgot the sync state; synchronizing the folder from scratch");
                        started_over = true;
                        if let Err(error) = self
                            .store
                            .save_graph_delta_link(mailbox.id, folder, None)
                            .await
                        {
                            return error.into();
                        }
                        link = None;
                        continue;
                    }
                    Err(DeltaError::Resync) => {
                        return Stop::Failed(SendError::transient(
                            Some(410),
                            "Microsoft Graph forgot the sync state again right after a fresh start",
                        ));
                    }
                    Err(DeltaError::Failed(error)) => return Stop::Failed(error),
                };
                let present: Vec<_> = page.items.iter().filter(|i| !i.removed).collect();
                if !present.is_empty() {
                    let ids: Vec<String> = present.iter().map(|i| i.id.clone()).collect();
                    let uids = match self.store.graph_uids(mailbox.id, folder, &ids).await {
                        Ok(uids) => uids,
                        Err(error) => return error.into(),
                    };
                    let stored = match self
                        .store
                        .inbound_stored_uids(mailbox.id, folder, GRAPH_UIDVALIDITY, &uids)
                        .await
                    {
                        Ok(stored) => stored,
                        Err(error) => return error.into(),
                    };
                    let mut wanted = Vec::new();
                    let mut fetched = Vec::new();
                    for (item, uid) in present.iter().zip(&uids) {
                        if stored.contains(uid) {
                            continue;
                        }
                        let raw = match client.mime(&item.id).await {
                            Ok(raw) => raw,
                            Err(error) => return Stop::Failed(error),
                        };
                        let received = item.received.as_deref().and_then(|r| {
                            time::OffsetDateTime::parse(
                                r,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .ok()
                            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                        });
                        wanted.push(*uid);
                        fetched.push(FetchedMail {
                            uid: *uid,
                            flags: if item.is_read {
                                vec!["\\Seen".to_owned()]
                            } else {
                                Vec::new()
                            },
                            internal_date_ms: received,
                            size: u32::try_from(raw.len()).unwrap_or(u32::MAX),
                            raw,
                        });
                    }
                    let ready = match self.prepare_fetched(Some((wanted, fetched))).await {
                        Ok(ready) => ready,
                        Err(stop) => return stop,
                    };
                    if let Err(stop) = self
                        .store_ready(
                            mailbox,
                            folder,
                            GRAPH_UIDVALIDITY,
                            ready,
                            &correlation,
                            None,
                        )
                        .await
                    {
                        return stop;
                    }
                }
                if let Some(next) = page.next_link {
                    link = Some(next);
                    continue;
                }
                if let Some(delta) = page.delta_link.as_deref()
                    && let Err(error) = self
                        .store
                        .save_graph_delta_link(mailbox.id, folder, Some(delta))
                        .await
                {
                    return error.into();
                }
                break;
            }
        }
        let poll = Duration::from_secs(u64::from(profile.processing.poll_interval_s));
        Stop::Poll(match self.config.poll_at_least {
            Some(at_least) => poll.min(at_least),
            None => poll,
        })
    }

    /// The server's names of the profile's folders: as configured, and `Sent` as the folder the
    /// server marks `\Sent` (RFC 6154) when no folder has that very name.
    async fn resolve_folders(
        &self,
        source: &mut ImapSource,
        wanted: &[String],
    ) -> Result<Vec<String>, SendError> {
        let listed = source.folders().await?;
        let mut folders = Vec::new();
        for name in wanted {
            let exact = listed.iter().find(|f| {
                f.selectable
                    && (f.name == *name
                        || (name.eq_ignore_ascii_case("INBOX")
                            && f.name.eq_ignore_ascii_case("INBOX")))
            });
            let special = || {
                name.eq_ignore_ascii_case("sent")
                    .then(|| listed.iter().find(|f| f.sent && f.selectable))
                    .flatten()
            };
            match exact.or_else(special) {
                Some(folder) if !folders.contains(&folder.name) => {
                    folders.push(folder.name.clone())
                }
                Some(_) => {}
                None => {
                    tracing::warn!(folder = %name, "the mailbox has no such folder; it is skipped")
                }
            }
        }
        Ok(folders)
    }

    /// Reads what is new in one folder: re-index after a UIDVALIDITY change, new mail, then the
    /// initial sync's next batches.
    async fn sync_folder(
        &self,
        source: &mut ImapSource,
        mailbox: &MailboxRecord,
        folder: &str,
        process_from: &Option<String>,
        correlation: &CorrelationSettings,
    ) -> Result<(), Stop> {
        let status = source.examine(folder).await?;
        let stored = self
            .store
            .folder_states(mailbox.id)
            .await?
            .into_iter()
            .find(|s| s.folder == folder);
        let now = now_ms();
        let mut state = match stored {
            None => {
                let state = FolderState {
                    folder: folder.to_owned(),
                    uidvalidity: status.uidvalidity,
                    uidnext: status.uidnext,
                    highestmodseq: status.highestmodseq,
                    initial_below: status.uidnext.max(1),
                    validity_changes: 0,
                    validity_changed_at_ms: None,
                    synced_at_ms: None,
                };
                self.store.save_folder_state(mailbox.id, &state).await?;
                state
            }
            Some(state) if state.uidvalidity != status.uidvalidity => {
                let recent = state
                    .validity_changed_at_ms
                    .is_some_and(|at| now - at < DAY_MS);
                if recent && state.validity_changes >= VALIDITY_BREAKER {
                    tracing::warn!(event = "uidvalidity_breaker", mailbox = %mailbox.id, folder, changes = state.validity_changes, "the server keeps changing this folder's UIDVALIDITY; it is not read again until a day has passed");
                    return Ok(());
                }
                self.reindex(source, mailbox, folder, &state, status.uidvalidity)
                    .await?;
                let state = FolderState {
                    folder: folder.to_owned(),
                    uidvalidity: status.uidvalidity,
                    uidnext: status.uidnext,
                    highestmodseq: status.highestmodseq,
                    initial_below: status.uidnext.max(1),
                    validity_changes: if recent {
                        state.validity_changes + 1
                    } else {
                        1
                    },
                    validity_changed_at_ms: Some(now),
                    synced_at_ms: state.synced_at_ms,
                };
                self.store.save_folder_state(mailbox.id, &state).await?;
                state
            }
            Some(state) => state,
        };
        // New mail, oldest first; UIDNEXT moves once all of it is stored.
        if status.uidnext == 0 || status.uidnext > state.uidnext {
            let uids = source.uids(state.uidnext, 0, None).await?;
            self.store_uids(
                source,
                mailbox,
                folder,
                state.uidvalidity,
                &uids,
                correlation,
                None,
            )
            .await?;
            state.uidnext = uids
                .iter()
                .max()
                .map(|uid| uid + 1)
                .unwrap_or(state.uidnext)
                .max(status.uidnext);
        }
        // The initial sync, newest first, in batches; the low-water mark moves after each.
        if state.initial_below > 1 {
            let mut uids = source
                .uids(1, state.initial_below, process_from.as_deref())
                .await?;
            uids.reverse();
            let uidvalidity = state.uidvalidity;
            self.store_uids(
                source,
                mailbox,
                folder,
                uidvalidity,
                &uids,
                correlation,
                Some(&mut state),
            )
            .await?;
            state.initial_below = 0;
        }
        // Flags changed on the server since the last look (read, answered, flagged in another
        // client): CONDSTORE names them.
        if let (Some(known), Some(now)) = (state.highestmodseq, status.highestmodseq)
            && now > known
        {
            let changes = source.changed_flags(known).await?;
            let changed = self
                .store
                .update_inbound_flags(mailbox.id, folder, state.uidvalidity, &changes)
                .await?;
            if changed > 0 {
                tracing::info!(event = "flags_synchronized", mailbox = %mailbox.id, folder, changed, "flags changed on the server were brought over");
            }
        }
        state.highestmodseq = status.highestmodseq;
        state.synced_at_ms = Some(now_ms());
        self.store.save_folder_state(mailbox.id, &state).await?;
        Ok(())
    }

    /// Matches the messages stored under the folder's old UIDVALIDITY to the server's messages
    /// (by Message-ID and size; without a Message-ID, by content) and moves them to their new UIDs.
    async fn reindex(
        &self,
        source: &mut ImapSource,
        mailbox: &MailboxRecord,
        folder: &str,
        state: &FolderState,
        uidvalidity: u32,
    ) -> Result<(), Stop> {
        let stored = self
            .store
            .inbound_under_other_validity(mailbox.id, folder, uidvalidity)
            .await?;
        let mut by_identity: HashMap<(String, u64), Vec<Uuid>> = HashMap::new();
        let mut by_size: HashMap<u64, Vec<(Uuid, String)>> = HashMap::new();
        for (id, message_id, size, raw_sha256) in stored {
            match message_id {
                Some(message_id) => by_identity.entry((message_id, size)).or_default().push(id),
                None => by_size.entry(size).or_default().push((id, raw_sha256)),
            }
        }
        let uids = source.uids(1, 0, None).await?;
        let mut moves = Vec::new();
        for chunk in uids.chunks(500) {
            for (uid, message_id, size) in source.identities(chunk).await? {
                let size = u64::from(size);
                match message_id {
                    Some(message_id) => {
                        if let Some(ids) = by_identity.get_mut(&(message_id, size))
                            && let Some(id) = ids.pop()
                        {
                            moves.push((id, uid));
                        }
                    }
                    None => {
                        if let Some(candidates) = by_size.get_mut(&size)
                            && !candidates.is_empty()
                        {
                            let fetched = source.fetch(&[uid]).await?;
                            if let Some(mail) = fetched.first() {
                                let sha = sha256_hex(&mail.raw);
                                if let Some(at) = candidates.iter().position(|(_, s)| *s == sha) {
                                    moves.push((candidates.remove(at).0, uid));
                                }
                            }
                        }
                    }
                }
            }
        }
        tracing::info!(event = "folder_reindexed", mailbox = %mailbox.id, folder, old_uidvalidity = state.uidvalidity, uidvalidity, matched = moves.len(), "the folder's UIDVALIDITY changed; stored messages were matched to their new UIDs");
        self.store.move_inbound_uids(uidvalidity, &moves).await?;
        Ok(())
    }

    /// Fetches and stores the messages with these UIDs that are not stored yet, in this order, in
    /// batches of bounded size, as a pipeline: while batch n is stored (one transaction), batch
    /// n+1 is parsed and its blobs written, and batch n+2 is fetched. Batches are stored in order,
    /// each after its blobs are durable. With `low_water` (the initial sync, newest first), the
    /// folder's low-water mark moves after each stored batch.
    #[allow(clippy::too_many_arguments)]
    async fn store_uids(
        &self,
        source: &mut ImapSource,
        mailbox: &MailboxRecord,
        folder: &str,
        uidvalidity: u32,
        uids: &[u32],
        correlation: &CorrelationSettings,
        mut low_water: Option<&mut FolderState>,
    ) -> Result<(), Stop> {
        let mut fetched: Option<Fetched> = None;
        let mut ready: Option<Ready> = None;
        macro_rules! stored {
            ($ready:expr, $low_water:expr) => {
                self.store_ready(
                    mailbox,
                    folder,
                    uidvalidity,
                    $ready,
                    correlation,
                    $low_water,
                )
            };
        }
        // Empties the pipeline: what is fetched is prepared while what is ready is stored, then
        // stored in turn.
        macro_rules! drain {
            () => {{
                let (next, done) = tokio::join!(
                    self.prepare_fetched(fetched.take()),
                    stored!(ready.take(), low_water.as_deref_mut())
                );
                done?;
                stored!(next?, low_water.as_deref_mut()).await?;
            }};
        }
        for chunk in uids.chunks(self.config.batch_messages.max(1)) {
            for (batch, bytes) in self
                .batches(source, mailbox, folder, uidvalidity, chunk)
                .await?
            {
                if bytes > self.config.batch_bytes {
                    // Read alone, a piece at a time, after what is in the pipeline.
                    drain!();
                    self.keep_large(source, mailbox, folder, uidvalidity, batch[0], correlation)
                        .await?;
                    self.moved(mailbox, &batch, low_water.as_deref_mut())
                        .await?;
                    continue;
                }
                let (mails, next, done) = tokio::join!(
                    source.fetch(&batch),
                    self.prepare_fetched(fetched.take()),
                    stored!(ready.take(), low_water.as_deref_mut())
                );
                done?;
                ready = next?;
                fetched = Some((batch, mails?));
            }
        }
        drain!();
        Ok(())
    }

    /// After a batch of the initial sync is stored: its low-water mark moves below it.
    async fn moved(
        &self,
        mailbox: &MailboxRecord,
        batch: &[u32],
        low_water: Option<&mut FolderState>,
    ) -> Result<(), Stop> {
        if let Some(state) = low_water {
            state.initial_below = batch.iter().copied().min().unwrap_or(1);
            self.store.save_folder_state(mailbox.id, state).await?;
        }
        Ok(())
    }

    /// The UIDs of `uids` not stored yet, in batches of at most `batch_bytes` and
    /// `batch_messages` (a larger message is a batch of its own), with their sizes.
    async fn batches(
        &self,
        source: &mut ImapSource,
        mailbox: &MailboxRecord,
        folder: &str,
        uidvalidity: u32,
        uids: &[u32],
    ) -> Result<Vec<(Vec<u32>, u64)>, Stop> {
        let stored: HashSet<u32> = self
            .store
            .inbound_stored_uids(mailbox.id, folder, uidvalidity, uids)
            .await?
            .into_iter()
            .collect();
        let missing: Vec<u32> = uids
            .iter()
            .copied()
            .filter(|u| !stored.contains(u))
            .collect();
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let sizes: HashMap<u32, u32> = source.sizes(&missing).await?.into_iter().collect();
        let mut batches = Vec::new();
        let mut batch: Vec<u32> = Vec::new();
        let mut batch_bytes = 0u64;
        for uid in missing {
            let Some(size) = sizes.get(&uid).copied() else {
                continue; // expunged meanwhile
            };
            if !batch.is_empty()
                && (batch_bytes + u64::from(size) > self.config.batch_bytes
                    || batch.len() >= self.config.batch_messages)
            {
                batches.push((std::mem::take(&mut batch), batch_bytes));
                batch_bytes = 0;
            }
            batch.push(uid);
            batch_bytes += u64::from(size);
        }
        if !batch.is_empty() {
            batches.push((batch, batch_bytes));
        }
        Ok(batches)
    }

    /// Parses a fetched batch and writes its blobs: messages are parsed and hashed side by side,
    /// their blobs written together (synced once for the batch).
    async fn prepare_fetched(&self, fetched: Option<Fetched>) -> Result<Option<Ready>, Stop> {
        let Some((uids, fetched)) = fetched else {
            return Ok(None);
        };
        let wanted: HashSet<u32> = uids.iter().copied().collect();
        let mut preparing = tokio::task::JoinSet::new();
        let mut prepared = Vec::with_capacity(uids.len());
        let mut blobs = Vec::new();
        let mut take = |done: Result<Result<(Prepared, Vec<HashedBytes>), Stop>, _>| {
            let (one, its_blobs) = done
                .map_err(|e: tokio::task::JoinError| SendError::transient(None, e.to_string()))??;
            prepared.push(one);
            blobs.extend(its_blobs);
            Ok::<_, Stop>(())
        };
        for mail in fetched.into_iter().filter(|m| wanted.contains(&m.uid)) {
            preparing.spawn(prepare(mail));
            if preparing.len() >= PREPARE_AT_ONCE
                && let Some(done) = preparing.join_next().await
            {
                take(done)?;
            }
        }
        while let Some(done) = preparing.join_next().await {
            take(done)?;
        }
        self.blobs.write_batch(blobs).await.map_err(blob_error)?;
        // In UID order, so that a reply later in the batch finds what it answers.
        prepared.sort_by_key(|p| p.uid);
        Ok(Some((uids, prepared)))
    }

    /// Stores a batch whose blobs are written, in one transaction; then moves the low-water mark.
    async fn store_ready(
        &self,
        mailbox: &MailboxRecord,
        folder: &str,
        uidvalidity: u32,
        ready: Option<Ready>,
        correlation: &CorrelationSettings,
        low_water: Option<&mut FolderState>,
    ) -> Result<(), Stop> {
        let Some((uids, prepared)) = ready else {
            return Ok(());
        };
        let news: Vec<NewInbound<'_>> = prepared
            .iter()
            .map(|p| p.new_inbound(mailbox, folder, uidvalidity, correlation))
            .collect();
        match self.store.insert_inbound_batch(&news).await {
            Ok(outcomes) => {
                for (prepared, outcome) in prepared.iter().zip(&outcomes) {
                    self.act_on_stored(mailbox, prepared, outcome).await;
                }
            }
            // The database refused something read from one of them: each on its own, so that
            // one message's contents cannot keep the others out.
            Err(mailroom_store::StoreError::Database(error))
                if error.as_database_error().is_some() =>
            {
                tracing::warn!(%error, mailbox = %mailbox.id, folder, "storing a batch failed; storing its messages one by one");
                for (new, prepared) in news.into_iter().zip(prepared.iter()) {
                    let outcome = keep_one(&self.store, new, mailbox.id).await?;
                    self.act_on_stored(mailbox, prepared, &outcome).await;
                }
            }
            Err(error) => return Err(error.into()),
        }
        self.moved(mailbox, &uids, low_water).await
    }

    /// Reads a message larger than a batch a piece at a time into the blob store, then parses it
    /// from there: its long base64 parts are decoded from the file straight into blobs, so that
    /// memory stays bounded whatever its size (unless its structure defeats that, see
    /// `mailroom_core::inbound::large`). One such message at a time on this node.
    async fn keep_large(
        &self,
        source: &mut ImapSource,
        mailbox: &MailboxRecord,
        folder: &str,
        uidvalidity: u32,
        uid: u32,
        correlation: &CorrelationSettings,
    ) -> Result<(), Stop> {
        let _one = self
            .large_messages
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let Some(meta) = source.fetch_meta(uid).await? else {
            return Ok(()); // expunged meanwhile
        };
        let mut raw = self.blobs.writer().map_err(blob_io)?;
        let mut offset = 0u64;
        loop {
            let Some(piece) = source.fetch_range(uid, offset, LARGE_PIECE).await? else {
                return Ok(());
            };
            let last = piece.len() < LARGE_PIECE as usize;
            offset += piece.len() as u64;
            raw = blocking(move || {
                std::io::Write::write_all(&mut raw, &piece)?;
                Ok(raw)
            })
            .await?;
            if last {
                break;
            }
        }
        let path = raw.path().to_owned();
        let blobs = self.blobs.clone();
        let (mut parsed, mut decoded) = blocking(move || read_large(&path, &blobs)).await?;
        let mut parts = Vec::with_capacity(parsed.attachments.len());
        let mut in_memory = Vec::new();
        for part in &mut parsed.attachments {
            let (sha256, size) = match decoded.remove(&part.path) {
                Some(writer) => writer.keep().await.map_err(blob_error)?,
                None => {
                    let blob =
                        HashedBytes::new(bytes::Bytes::from(std::mem::take(&mut part.bytes)));
                    let kept = (blob.sha256().to_owned(), blob.size());
                    in_memory.push(blob);
                    kept
                }
            };
            parts.push(StoredPart {
                path: part.path.clone(),
                name: part.name.clone(),
                content_type: part.content_type.clone(),
                size,
                sha256,
            });
        }
        self.blobs
            .write_batch(in_memory)
            .await
            .map_err(blob_error)?;
        let (raw_sha256, raw_size) = raw.keep().await.map_err(blob_error)?;
        let prepared = Prepared {
            uid,
            flags: meta.flags,
            received_at_ms: meta.internal_date_ms.unwrap_or_else(now_ms),
            size: if meta.size > 0 {
                u64::from(meta.size)
            } else {
                raw_size
            },
            raw_sha256,
            parsed,
            parts,
            // Reports are small: one this large is not read as one.
            report: None,
            verp_tokens: Vec::new(),
            unsubscribe_token: None,
        };
        keep_one(
            &self.store,
            prepared.new_inbound(mailbox, folder, uidvalidity, correlation),
            mailbox.id,
        )
        .await
        .map(|_| ())
    }
}

/// A batch's UIDs and what the server sent for them.
type Fetched = (Vec<u32>, Vec<FetchedMail>);

/// A batch's UIDs and its messages parsed, their blobs written.
type Ready = (Vec<u32>, Vec<Prepared>);

/// Pieces in which a message larger than a batch is read.
const LARGE_PIECE: u32 = 4 * 1024 * 1024;

fn blob_error(error: mailroom_store::BlobError) -> Stop {
    Stop::Failed(SendError::transient(
        None,
        format!("the blob store: {error}"),
    ))
}

fn blob_io(error: std::io::Error) -> Stop {
    blob_error(mailroom_store::BlobError::Io(error))
}

/// Runs blocking file work on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, Stop> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Stop::Failed(SendError::transient(None, e.to_string())))?
        .map_err(blob_io)
}

/// Parses a large message from the file it was read into: from its skeleton, each long base64
/// attachment decoded into a blob writer (by part path); or whole, when the skeleton cannot stand
/// for it.
fn read_large(
    path: &std::path::Path,
    blobs: &BlobStore,
) -> std::io::Result<(
    mailroom_core::inbound::ParsedInbound,
    HashMap<String, mailroom_store::BlobWriter>,
)> {
    use mailroom_core::inbound::large::{
        DEFAULT_MIN_RUN, LargeParse, decode_base64, parse_skeleton, skeleton,
    };
    use std::io::{BufReader, Read, Seek};
    let skeleton = skeleton(BufReader::new(std::fs::File::open(path)?), DEFAULT_MIN_RUN)?;
    match parse_skeleton(&skeleton) {
        LargeParse::Whole => {
            tracing::info!(
                path = %path.display(),
                "a large message's structure needs it read whole"
            );
            Ok((parse_inbound(&std::fs::read(path)?), HashMap::new()))
        }
        LargeParse::Parsed { parsed, runs } => {
            let mut decoded = HashMap::new();
            for (part, run) in parsed.attachments.iter().zip(runs) {
                let Some(run) = run else { continue };
                let mut file = std::fs::File::open(path)?;
                file.seek(std::io::SeekFrom::Start(run.start))?;
                let mut writer = blobs.writer()?;
                decode_base64(
                    BufReader::with_capacity(256 * 1024, file.take(run.end - run.start)),
                    &mut writer,
                )?;
                decoded.insert(part.path.clone(), writer);
            }
            Ok((*parsed, decoded))
        }
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Messages parsed and written to the blob store at once, per batch.
const PREPARE_AT_ONCE: usize = 8;

/// A fetched message parsed, its raw bytes and attachment parts in the blob store.
struct Prepared {
    uid: u32,
    flags: Vec<String>,
    received_at_ms: i64,
    size: u64,
    raw_sha256: String,
    parsed: mailroom_core::inbound::ParsedInbound,
    parts: Vec<StoredPart>,
    /// What the message reports, when it is a delivery status notification, a free-text bounce or
    /// a feedback report.
    report: Option<mailroom_core::inbound::report::Report>,
    /// The VERP tokens of a report's envelope headers (empty for other mail).
    verp_tokens: Vec<String>,
    /// The token of an unsubscribe request sent to a `List-Unsubscribe` mailto address (its subject
    /// is `unsubscribe <token>`).
    unsubscribe_token: Option<String>,
}

/// Whether a message may be a report: its bytes name the report's part type (a cheap look before
/// parsing it as one).
fn may_be_report(raw: &[u8]) -> bool {
    let head = &raw[..raw.len().min(256 * 1024)];
    [b"delivery-status".as_slice(), b"feedback-report".as_slice()]
        .iter()
        .any(|needle| {
            head.windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle))
        })
}

impl Prepared {
    fn new_inbound<'a>(
        &'a self,
        mailbox: &MailboxRecord,
        folder: &'a str,
        uidvalidity: u32,
        correlation: &CorrelationSettings,
    ) -> NewInbound<'a> {
        NewInbound {
            mailbox_id: mailbox.id,
            owner_user_id: mailbox.user_id,
            folder,
            uidvalidity,
            uid: self.uid,
            size: self.size,
            flags: self.flags.clone(),
            received_at_ms: self.received_at_ms,
            raw_sha256: self.raw_sha256.clone(),
            parsed: &self.parsed,
            parts: self.parts.clone(),
            keys: correlation_keys(&self.parsed, correlation),
            filter: mailbox.filter,
        }
    }
}

/// Parses a fetched message and hashes its raw bytes and every attachment part (on a blocking
/// thread); the blobs are returned for the batch to write together.
async fn prepare(mail: FetchedMail) -> Result<(Prepared, Vec<HashedBytes>), Stop> {
    tokio::task::spawn_blocking(move || {
        let raw = HashedBytes::new(bytes::Bytes::from(mail.raw));
        let mut parsed = parse_inbound(raw.bytes());
        let report = may_be_report(raw.bytes())
            .then(|| mailroom_core::inbound::report::parse_report(raw.bytes()))
            .flatten()
            .or_else(|| {
                let from = parsed.from.as_ref()?;
                mailroom_core::inbound::report::looks_like_mail_system(
                    &from.address,
                    from.name.as_deref().unwrap_or_default(),
                )
                .then(|| mailroom_core::inbound::report::parse_plain_bounce(raw.bytes()))
                .flatten()
            });
        let unsubscribe_token = parsed
            .subject
            .trim()
            .get(..12)
            .filter(|prefix| prefix.eq_ignore_ascii_case("unsubscribe "))
            .map(|_| parsed.subject.trim()[12..].trim().to_owned())
            .filter(|token| !token.is_empty() && !token.contains(' '));
        let verp_tokens = if report.is_some() {
            mailroom_core::verp::tokens_in(raw.bytes())
        } else {
            Vec::new()
        };
        let mut blobs = Vec::with_capacity(1 + parsed.attachments.len());
        let mut parts = Vec::with_capacity(parsed.attachments.len());
        for part in &mut parsed.attachments {
            let blob = HashedBytes::new(bytes::Bytes::from(std::mem::take(&mut part.bytes)));
            parts.push(StoredPart {
                path: part.path.clone(),
                name: part.name.clone(),
                content_type: part.content_type.clone(),
                size: blob.size(),
                sha256: blob.sha256().to_owned(),
            });
            blobs.push(blob);
        }
        let prepared = Prepared {
            uid: mail.uid,
            flags: mail.flags,
            received_at_ms: mail.internal_date_ms.unwrap_or_else(now_ms),
            size: if mail.size > 0 {
                u64::from(mail.size)
            } else {
                raw.size()
            },
            raw_sha256: raw.sha256().to_owned(),
            parsed,
            parts,
            report,
            verp_tokens,
            unsubscribe_token,
        };
        blobs.push(raw);
        (prepared, blobs)
    })
    .await
    .map_err(|e| {
        Stop::Failed(SendError::transient(
            None,
            format!("parsing a message: {e}"),
        ))
    })
}

/// Stores one message; when the database refuses what was read from it (a value it cannot
/// hold), the message is kept raw and flagged rather than blocking its mailbox or being dropped.
async fn keep_one(
    store: &Store,
    new: NewInbound<'_>,
    mailbox_id: Uuid,
) -> Result<mailroom_store::InboundOutcome, Stop> {
    match store.insert_inbound(new.clone()).await {
        Ok(outcome) => Ok(outcome),
        Err(mailroom_store::StoreError::Database(error)) if error.as_database_error().is_some() => {
            tracing::warn!(%error, mailbox = %mailbox_id, folder = new.folder, uid = new.uid, "storing a message's parsed contents failed; keeping it raw");
            let unparsed = mailroom_core::inbound::ParsedInbound {
                unparsed: true,
                ..Default::default()
            };
            Ok(store
                .insert_inbound(NewInbound {
                    parsed: &unparsed,
                    keys: Default::default(),
                    ..new
                })
                .await?)
        }
        Err(error) => Err(error.into()),
    }
}
