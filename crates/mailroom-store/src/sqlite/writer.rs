//! The store's only writer of messages: it folds every insert, claim and batch of attempt outcomes
//! waiting at one moment into one transaction — one commit, one fsync — and answers each caller only
//! after that commit, so an accepted message is durable and a claim is visible before any SMTP
//! transaction starts.
//!
//! The writer owns its own SQLite connection (rusqlite) on its own thread and runs each grouped
//! transaction there with statements it keeps prepared: no SQL is parsed per transaction, and no
//! statement crosses to another thread. (Two earlier designs were measured: one multi-statement sqlx
//! query per transaction spent about a sixth of its time parsing placeholders and crossed to sqlx's
//! worker thread and back; binding the rows as one JSON array per table so that the text stayed the
//! same cost twice as much in SQLite's JSON functions.)

use crate::messages::{
    ClaimArgs, ClaimRow, InsertClaim, InsertOutcome, NewMessage, headers_to_json,
    mailboxes_to_json, parse_uuid, record_types_key, related_to_json,
};
use crate::{AttemptRecord, Outcome, StoreError, StoreResult};
use rusqlite::OptionalExtension;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Opens the writer's connection to the database the migrations have prepared.
pub(crate) fn open(path: &std::path::Path) -> StoreResult<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.busy_timeout(std::time::Duration::from_secs(30))?;
    // Durable at commit (WAL, fsync at every commit); checkpoints are the background task's job.
    // When the writer restarts the log, it also cuts the file back to 64 MiB if a burst grew it.
    connection.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY; PRAGMA wal_autocheckpoint = 0;
         PRAGMA journal_size_limit = 67108864;",
    )?;
    connection.set_prepared_statement_cache_capacity(32);
    Ok(connection)
}

/// A write waiting for the writer.
pub(crate) enum WriteRequest {
    Insert {
        message: Box<NewMessage>,
        reply: oneshot::Sender<StoreResult<InsertOutcome>>,
    },
    Claim {
        claim: ClaimArgs,
        reply: oneshot::Sender<StoreResult<Vec<ClaimRow>>>,
    },
    Outcomes {
        records: Vec<AttemptRecord>,
        reply: oneshot::Sender<StoreResult<()>>,
    },
}

/// Most requests folded into one transaction.
const WRITE_BATCH: usize = 1024;

/// What the writer keeps between transactions.
pub(crate) struct WriterState {
    /// Raised by the background checkpointer after it has copied the log into the database.
    log_copied: Arc<AtomicBool>,
    /// Advanced by the store after mail was queued outside this writer.
    queued_elsewhere: Arc<AtomicU64>,
    seen_queued_elsewhere: u64,
    /// Which accounts have nothing waiting (see [`Waiting`]).
    drained: Waiting,
}

/// What the writer knows of each account's queue. An account is drained when its last claim found
/// fewer messages than it asked for — and was made at or after the moment the newest mail the writer
/// stored `queued` for it became due, so a claim whose clock ran a little behind the API's does not
/// count — and no mail of the account has been stored `queued` since. Only new mail of a drained
/// account may be stored already claimed. The writer performs every insert and claim one after the
/// other, so this is exact for the mail it writes; mail queued elsewhere clears it all.
#[derive(Clone, Default)]
struct Waiting {
    drained: HashSet<Uuid>,
    /// When the newest mail stored `queued` for each account became due, until a claim covers it.
    newest_due_at: HashMap<Uuid, i64>,
}

impl Waiting {
    fn is_drained(&self, account_id: &Uuid) -> bool {
        self.drained.contains(account_id)
    }

    /// Mail of the account was stored `queued`, due at `due_at`.
    fn queued(&mut self, account_id: Uuid, due_at: i64) {
        self.drained.remove(&account_id);
        let newest = self.newest_due_at.entry(account_id).or_insert(due_at);
        *newest = (*newest).max(due_at);
    }

    /// A claim made at `now` for the account took all it asked for (`full`) or fewer.
    fn claimed(&mut self, account_id: Uuid, now: i64, full: bool) {
        let covers_newest = self
            .newest_due_at
            .get(&account_id)
            .is_none_or(|due_at| *due_at <= now);
        if !full && covers_newest {
            self.drained.insert(account_id);
            self.newest_due_at.remove(&account_id);
        } else {
            self.drained.remove(&account_id);
        }
    }

    fn forget(&mut self) {
        self.drained.clear();
    }
}

impl WriterState {
    pub(crate) fn new(log_copied: Arc<AtomicBool>, queued_elsewhere: Arc<AtomicU64>) -> Self {
        Self {
            log_copied,
            queued_elsewhere,
            seen_queued_elsewhere: 0,
            drained: Waiting::default(),
        }
    }
}

/// How long the writer waits for readers to leave the log when it restarts it; a reader still
/// there after that only postpones the restart.
const RESTART_PATIENCE: std::time::Duration = std::time::Duration::from_millis(20);

/// The writer: takes every write waiting (inserts, claims, outcome batches) and performs them in one
/// transaction — one commit, one fsync — then answers each. Callers are answered only after the commit,
/// so an accepted message is durable and a claim is visible before any SMTP transaction starts.
///
/// When the background checkpointer has copied the log into the database (`log_copied`), the writer
/// copies the few frames committed since and restarts the log from its beginning, between two
/// transactions. Under a steady load the checkpointer never catches up with the writer on its own,
/// so without this the log file would only grow: every commit would extend the file (block
/// allocation and an inode update in each fsync), readers would search an ever longer log, and the
/// disk would fill.
pub(crate) async fn run_writer(
    mut connection: rusqlite::Connection,
    mut requests: mpsc::Receiver<WriteRequest>,
    mut state: WriterState,
) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = requests.recv().await {
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        // Another transaction waits for the write lock: let it in first (up to 30 ms; the wait ends
        // as soon as it has the lock).
        let mut patience = 0;
        while crate::db::SQLX_WRITERS_WAITING.load(Ordering::Acquire) > 0 && patience < 30 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            patience += 1;
        }
        let clock = std::time::Instant::now();
        let size = batch.len();
        let queued_elsewhere = state.queued_elsewhere.load(Ordering::Acquire);
        if queued_elsewhere != state.seen_queued_elsewhere {
            state.seen_queued_elsewhere = queued_elsewhere;
            state.drained.forget();
        }
        match write_together(&mut connection, &batch, &mut state.drained) {
            Ok(results) => {
                for (request, result) in batch.drain(..).zip(results) {
                    reply(request, Ok(result));
                }
            }
            Err(error) => {
                // One bad request must not fail the others: perform each on its own. (A full disk
                // is logged by the storage alarm, once a minute.)
                if !error.is_full() {
                    tracing::warn!(%error, size, "a grouped write failed; writing requests one by one");
                }
                for request in batch.drain(..) {
                    let result = write_together(
                        &mut connection,
                        std::slice::from_ref(&request),
                        &mut state.drained,
                    )
                    .map(|mut r| r.remove(0));
                    reply(request, result);
                }
            }
        }
        metrics::histogram!("mailroom_store_operation_seconds", "operation" => "write_transaction")
            .record(clock.elapsed().as_secs_f64());
        metrics::histogram!("mailroom_store_batch_size", "operation" => "write_transaction")
            .record(size as f64);
        if state.log_copied.swap(false, Ordering::AcqRel) {
            restart_log(&connection);
        }
    }
}

/// Copies what is left of the log into the database and restarts the log (a `RESTART` checkpoint),
/// waiting at most [`RESTART_PATIENCE`] for readers; the next commit then writes from the start of
/// the file.
fn restart_log(connection: &rusqlite::Connection) {
    let clock = std::time::Instant::now();
    let result = connection.busy_timeout(RESTART_PATIENCE).and_then(|()| {
        connection.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| {
            row.get::<_, i64>(0)
        })
    });
    if let Err(error) = connection.busy_timeout(std::time::Duration::from_secs(30)) {
        tracing::warn!(%error, "the writer's busy timeout could not be restored");
    }
    match result {
        Ok(busy) => {
            metrics::histogram!("mailroom_store_operation_seconds", "operation" => "restart_log")
                .record(clock.elapsed().as_secs_f64());
            if busy != 0 {
                tracing::debug!("the write-ahead log is still in use; restarting it later");
            }
        }
        Err(error) if crate::storage::rusqlite_is_full(&error) => {
            crate::storage::note_storage_full(&error.to_string());
        }
        Err(error) => tracing::warn!(%error, "restarting the write-ahead log failed"),
    }
}

/// The result of one request inside a grouped write.
enum WriteResult {
    Inserted(InsertOutcome),
    Claimed(Vec<ClaimRow>),
    Recorded,
}

fn reply(request: WriteRequest, result: StoreResult<WriteResult>) {
    match (request, result) {
        (WriteRequest::Insert { reply, .. }, Ok(WriteResult::Inserted(outcome))) => {
            drop(reply.send(Ok(outcome)))
        }
        (WriteRequest::Claim { reply, .. }, Ok(WriteResult::Claimed(rows))) => {
            drop(reply.send(Ok(rows)))
        }
        (WriteRequest::Outcomes { reply, .. }, Ok(WriteResult::Recorded)) => {
            drop(reply.send(Ok(())))
        }
        (WriteRequest::Insert { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (WriteRequest::Claim { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (WriteRequest::Outcomes { reply, .. }, Err(e)) => drop(reply.send(Err(e))),
        (_, Ok(_)) => unreachable!("each request kind gets its own kind of result"),
    }
}

/// Performs the requests in one transaction: outcomes first (they free capacity), then inserts, then
/// claims (which may take messages inserted in the same transaction). Any failure rolls the whole
/// transaction back, and `drained` (see [`WriterState`]) changes only when the transaction commits.
fn write_together(
    connection: &mut rusqlite::Connection,
    requests: &[WriteRequest],
    drained: &mut Waiting,
) -> StoreResult<Vec<WriteResult>> {
    let mut drained_after = drained.clone();
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for request in requests {
        if let WriteRequest::Outcomes { records, .. } = request {
            record_outcomes(&transaction, records)?;
        }
    }
    let mut results = Vec::with_capacity(requests.len());
    // Idempotency keys seen earlier in this same transaction: (created_by, key) → (id, request hash).
    let mut keys: std::collections::HashMap<(&str, &str), (Uuid, Option<&str>)> =
        std::collections::HashMap::new();
    for request in requests {
        if let WriteRequest::Insert { message, .. } = request {
            let outcome = match earlier_request(&transaction, &keys, message)? {
                Some(outcome) => outcome,
                None => {
                    // A draft waits for confirmation; new mail never overtakes waiting mail.
                    let claim = message.claim.as_ref().filter(|_| {
                        !message.draft && drained_after.is_drained(&message.account_id)
                    });
                    let due_now = message
                        .send_at_ms
                        .is_none_or(|at| at <= message.created_at_ms);
                    if claim.is_none() && !message.draft && due_now {
                        drained_after.queued(message.account_id, message.created_at_ms);
                    }
                    insert(&transaction, message, claim)?;
                    if let Some(key) = &message.idempotency_key {
                        keys.insert(
                            (message.created_by.as_str(), key.as_str()),
                            (message.id, message.request_hash.as_deref()),
                        );
                    }
                    if claim.is_some() {
                        InsertOutcome::Claimed(message.id)
                    } else {
                        InsertOutcome::Created(message.id)
                    }
                }
            };
            results.push(Some(WriteResult::Inserted(outcome)));
        } else {
            results.push(None);
        }
    }
    for (result, request) in results.iter_mut().zip(requests) {
        match request {
            WriteRequest::Claim { claim, .. } => {
                let rows = claim_due(&transaction, claim)?;
                drained_after.claimed(
                    claim.account_id,
                    claim.now,
                    rows.len() >= claim.limit as usize,
                );
                *result = Some(WriteResult::Claimed(rows));
            }
            WriteRequest::Outcomes { .. } => *result = Some(WriteResult::Recorded),
            WriteRequest::Insert { .. } => {}
        }
    }
    transaction.commit()?;
    *drained = drained_after;
    Ok(results
        .into_iter()
        .map(|r| r.expect("every request has a result"))
        .collect())
}

/// An earlier message with the same idempotency key from the same caller, in the store or earlier
/// in this transaction: a replay of the same request, or a key reused for a different one.
fn earlier_request(
    transaction: &rusqlite::Transaction<'_>,
    keys: &std::collections::HashMap<(&str, &str), (Uuid, Option<&str>)>,
    message: &NewMessage,
) -> StoreResult<Option<InsertOutcome>> {
    let Some(key) = &message.idempotency_key else {
        return Ok(None);
    };
    let earlier = match keys.get(&(message.created_by.as_str(), key.as_str())) {
        Some((id, hash)) => Some((*id, hash.map(str::to_owned))),
        None => {
            let mut select = transaction.prepare_cached(
                "SELECT id, request_hash FROM messages WHERE created_by = ?1 AND idempotency_key = ?2",
            )?;
            let row = select
                .query_row(rusqlite::params![message.created_by, key], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
                })
                .optional()?;
            row.map(|(id, hash)| Ok::<_, StoreError>((parse_uuid(&id)?, hash)))
                .transpose()?
        }
    };
    Ok(earlier.map(|(id, hash)| {
        if hash.as_deref() == message.request_hash.as_deref() {
            InsertOutcome::Replayed(id)
        } else {
            InsertOutcome::KeyReused(id)
        }
    }))
}

/// Stores one new message — claimed under `claim` when given, which is never for a draft — with its
/// content, its attachments and its related records.
fn insert(
    transaction: &rusqlite::Transaction<'_>,
    message: &NewMessage,
    claim: Option<&InsertClaim>,
) -> StoreResult<()> {
    let now = message.created_at_ms;
    let status = match (claim, message.draft) {
        (_, true) => "draft",
        (Some(_), false) => "sending",
        (None, false) => "queued",
    };
    let id = message.id.to_string();
    let record_types = record_types_key(&message.related_records);
    transaction
        .prepare_cached(
            "INSERT INTO messages (id, status, scenario, account_id, message_id_header, subject, created_by,
               idempotency_key, request_hash, created_at, updated_at, send_at, next_attempt_at, template_id,
               template_version, attempt_count, lease_owner, lease_until, record_types, smart_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
        )?
        .execute(rusqlite::params![
            id,
            status,
            message.scenario.as_str(),
            message.account_id.to_string(),
            message.message_id_header,
            message.content.subject.as_str(),
            message.created_by,
            message.idempotency_key,
            message.request_hash,
            now,
            message.send_at_ms,
            message.send_at_ms.unwrap_or(now).max(now),
            message.template.as_ref().map(|(id, _)| id),
            message.template.as_ref().map(|(_, version)| version),
            i64::from(claim.is_some()),
            claim.map(|c| &c.owner),
            claim.map(|c| c.lease_until),
            record_types,
            message.smart_key,
        ])?;
    if !record_types.is_empty() {
        transaction
            .prepare_cached(
                "INSERT INTO record_type_sets (types) VALUES (?1) ON CONFLICT DO NOTHING",
            )?
            .execute([&record_types])?;
    }
    let content = &message.content;
    let single = |m: &Option<_>| {
        m.as_ref()
            .map(|m| mailboxes_to_json(std::slice::from_ref(m)))
    };
    transaction
        .prepare_cached(
            "INSERT INTO message_contents (message_id, to_json, cc_json, bcc_json, reply_to_json, headers_json,
               text_body, html_body, related_json, from_json, sender_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?
        .execute(rusqlite::params![
            id,
            mailboxes_to_json(&content.to),
            mailboxes_to_json(&content.cc),
            mailboxes_to_json(&content.bcc),
            mailboxes_to_json(&content.reply_to),
            headers_to_json(&content.headers),
            content.text,
            content.html,
            related_to_json(&message.related_records),
            single(&content.from),
            single(&content.sender),
        ])?;
    for (position, (attachment_id, content_id)) in message.attachments.iter().enumerate() {
        // The API checked the upload, but it may have been collected since (an upload no message
        // refers to is deleted after a day): refuse the message rather than fail on the reference.
        let exists = transaction
            .prepare_cached("SELECT 1 FROM attachments WHERE id = ?1")?
            .exists([attachment_id.to_string()])?;
        if !exists {
            return Err(StoreError::Invalid(mailroom_core::ValidationError::new(
                "attachments",
                format!("unknown attachment {attachment_id}"),
            )));
        }
        transaction
            .prepare_cached(
                "INSERT INTO message_attachments (message_id, position, attachment_id, content_id)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(rusqlite::params![
                id,
                position as i64,
                attachment_id.to_string(),
                content_id
            ])?;
    }
    for address in crate::messages::recipient_keys(content) {
        transaction
            .prepare_cached(
                "INSERT INTO message_recipients (address, message_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            )?
            .execute(rusqlite::params![address, id])?;
    }
    for record in &message.related_records {
        transaction
            .prepare_cached(
                "INSERT INTO related_records (message_id, record_type, record_id, relation)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )?
            .execute(rusqlite::params![
                id,
                record.record_type,
                record.record_id,
                record.relation.as_str()
            ])?;
    }
    Ok(())
}

/// Writes attempt rows and moves each message to its next state — only under the lease that made
/// the attempt (an outcome from a lost lease is on record but moves nothing).
fn record_outcomes(
    transaction: &rusqlite::Transaction<'_>,
    records: &[AttemptRecord],
) -> StoreResult<()> {
    let mut attempt = transaction.prepare_cached(
        "INSERT INTO attempts (message_id, number, started_at, finished_at, outcome, reply_code, reply_text)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (message_id, number) DO UPDATE SET finished_at = excluded.finished_at,
           outcome = excluded.outcome, reply_code = excluded.reply_code, reply_text = excluded.reply_text",
    )?;
    // Written fanned out when no webhook endpoint is enabled (nobody to fan it out to; an
    // endpoint gets the events of the outcomes recorded after it was enabled).
    let mut event = transaction.prepare_cached(
        "INSERT INTO events (kind, subject_id, payload_json, created_at, fanned_out)
         VALUES (?1, ?2, ?3, ?4, NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled = TRUE))",
    )?;
    let mut next_state = transaction.prepare_cached(
        "UPDATE messages SET status = ?3, next_attempt_at = COALESCE(?4, next_attempt_at), sent_at = ?5,
           last_error = ?6, lease_owner = NULL, lease_until = NULL, updated_at = ?7
         WHERE id = ?1 AND lease_owner = ?2 AND status = 'sending' AND attempt_count = ?8",
    )?;
    for record in records {
        let id = record.message_id.to_string();
        attempt.execute(rusqlite::params![
            id,
            record.number,
            record.started_at_ms,
            record.finished_at_ms,
            record.outcome.as_str(),
            record.reply_code,
            record.reply_text,
        ])?;
        let (status, next_attempt_at, sent_at, last_error) = match record.next {
            Outcome::Sent => ("sent", None, Some(record.finished_at_ms), None),
            Outcome::RetryAt(at) => ("queued", Some(at), None, Some(&record.reply_text)),
            Outcome::Failed => ("failed", None, None, Some(&record.reply_text)),
        };
        let moved = next_state.execute(rusqlite::params![
            id,
            record.lease_owner,
            status,
            next_attempt_at,
            sent_at,
            last_error,
            record.finished_at_ms,
            record.number,
        ])?;
        // The event of the change, in its transaction (an outcome from a lost lease moves nothing
        // and says nothing).
        if moved > 0 {
            let (kind, payload) = crate::webhooks::outcome_event(record);
            event.execute(rusqlite::params![kind, id, payload, record.finished_at_ms])?;
        }
    }
    Ok(())
}

/// Claims up to `limit` due messages of one account under a lease, oldest due first.
fn claim_due(
    transaction: &rusqlite::Transaction<'_>,
    claim: &ClaimArgs,
) -> StoreResult<Vec<ClaimRow>> {
    let mut due = transaction.prepare_cached(
        "SELECT id, message_id_header, created_at, attempt_count, retry_base FROM messages
         WHERE status = 'queued' AND account_id = ?1 AND next_attempt_at <= ?2
         ORDER BY next_attempt_at, id LIMIT ?3",
    )?;
    let rows = due
        .query_map(
            rusqlite::params![claim.account_id.to_string(), claim.now, claim.limit],
            |row| {
                Ok(ClaimRow {
                    id: row.get(0)?,
                    message_id_header: row.get(1)?,
                    created_at: row.get(2)?,
                    attempt_count: row.get::<_, i64>(3)? + 1,
                    retry_base: row.get(4)?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    let mut take = transaction.prepare_cached(
        "UPDATE messages SET status = 'sending', lease_owner = ?2, lease_until = ?3,
           attempt_count = attempt_count + 1, updated_at = ?4
         WHERE id = ?1",
    )?;
    for row in &rows {
        take.execute(rusqlite::params![
            row.id,
            claim.owner,
            claim.lease_until,
            claim.now
        ])?;
    }
    Ok(rows)
}
