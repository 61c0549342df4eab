//! The store's only writer of messages: it folds every insert, claim and batch of attempt outcomes
//! waiting at one moment into one transaction — one commit, one fsync — and answers each caller only
//! after that commit, so an accepted message is durable and a claim is visible before any SMTP
//! transaction starts.
//!
//! The whole transaction — BEGIN, every statement, COMMIT — goes to SQLite's worker thread as one
//! multi-statement query: each separate statement would be a round trip between threads, and on a
//! busy machine each round trip waits for the scheduler. (Binding the rows as one JSON array per
//! table, so that the text stays the same and SQLite compiles it once, was measured: SQLite's JSON
//! functions cost twice what parsing the placeholders does.)

use crate::messages::{
    AttachedFile, InsertOutcome, NewMessage, headers_to_json, mailboxes_to_json, parse_uuid,
    related_to_json,
};
use crate::{AttemptRecord, Outcome, StoreError, StoreResult};
use mailroom_core::message::RelatedRecord;
use sqlx::sqlite::{Sqlite, SqlitePool};
use sqlx::{QueryBuilder, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

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

#[derive(Debug, Clone)]
pub(crate) struct ClaimArgs {
    pub(crate) account_id: Uuid,
    pub(crate) owner: String,
    pub(crate) now: i64,
    pub(crate) lease_until: i64,
    pub(crate) limit: u32,
}

/// A claimed row, before its content is read.
pub(crate) struct ClaimRow {
    pub(crate) id: String,
    pub(crate) message_id_header: String,
    pub(crate) created_at: i64,
    pub(crate) attempt_count: i64,
    pub(crate) retry_base: i64,
}

/// Most requests folded into one transaction.
const WRITE_BATCH: usize = 1024;

/// The writer: takes every write waiting (inserts, claims, outcome batches) and performs them in one
/// transaction — one commit, one fsync — then answers each. Callers are answered only after the commit,
/// so an accepted message is durable and a claim is visible before any SMTP transaction starts.
pub(crate) async fn run_writer(pool: SqlitePool, mut requests: mpsc::Receiver<WriteRequest>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    while let Some(first) = requests.recv().await {
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let clock = std::time::Instant::now();
        let size = batch.len();
        match write_together(&pool, &batch).await {
            Ok(results) => {
                for (request, result) in batch.drain(..).zip(results) {
                    reply(request, Ok(result));
                }
            }
            Err(error) => {
                // One bad request must not fail the others: perform each on its own.
                tracing::warn!(%error, size, "a grouped write failed; writing requests one by one");
                for request in batch.drain(..) {
                    let result = write_together(&pool, std::slice::from_ref(&request))
                        .await
                        .map(|mut r| r.remove(0));
                    reply(request, result);
                }
            }
        }
        metrics::histogram!("mailroom_store_operation_seconds", "operation" => "write_transaction")
            .record(clock.elapsed().as_secs_f64());
        metrics::histogram!("mailroom_store_batch_size", "operation" => "write_transaction")
            .record(size as f64);
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
/// claims (which may take messages inserted in the same transaction).
///
/// The whole transaction — BEGIN, every statement, COMMIT — goes to SQLite's worker thread as one
/// multi-statement query: each separate statement would be a round trip between threads, and on a busy
/// machine each round trip waits for the scheduler. Only claims return rows: one each, naming the
/// request it answers and carrying the claimed messages as JSON.
async fn write_together(
    pool: &SqlitePool,
    requests: &[WriteRequest],
) -> StoreResult<Vec<WriteResult>> {
    let mut connection = pool.acquire().await?;
    let records: Vec<&AttemptRecord> = requests
        .iter()
        .filter_map(|r| {
            if let WriteRequest::Outcomes { records, .. } = r {
                Some(records.iter())
            } else {
                None
            }
        })
        .flatten()
        .collect();
    let messages: Vec<&NewMessage> = requests
        .iter()
        .filter_map(|r| {
            if let WriteRequest::Insert { message, .. } = r {
                Some(message.as_ref())
            } else {
                None
            }
        })
        .collect();
    // Idempotency keys are looked up before the transaction: only this writer inserts messages, so
    // nothing can add a key between the lookup and the insert.
    let (insert_outcomes, to_insert) = resolve_idempotency_keys(&mut connection, &messages).await?;

    let mut sql = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE;\n");
    push_outcome_statements(&mut sql, &records);
    push_insert_statements(&mut sql, &to_insert);
    for (position, request) in requests.iter().enumerate() {
        if let WriteRequest::Claim { claim, .. } = request {
            push_claim_statement(&mut sql, claim, position);
        }
    }
    sql.push("COMMIT;");

    let mut claimed: std::collections::HashMap<usize, Vec<ClaimRow>> =
        std::collections::HashMap::new();
    let outcome: StoreResult<()> = async {
        // Only claim statements return rows: one per claim, naming the request it answers.
        let mut rows = sql.build().persistent(false).fetch(&mut *connection);
        while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows).await? {
            let position: i64 = row.try_get("request")?;
            let json: String = row.try_get("claimed")?;
            let rows: Vec<(String, String, i64, i64, i64)> = serde_json::from_str(&json)
                .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
            claimed.insert(
                position as usize,
                rows.into_iter()
                    .map(
                        |(id, message_id_header, created_at, attempt_count, retry_base)| ClaimRow {
                            id,
                            message_id_header,
                            created_at,
                            attempt_count,
                            retry_base,
                        },
                    )
                    .collect(),
            );
        }
        Ok(())
    }
    .await;
    if let Err(error) = outcome {
        // A failed statement stops the group inside its transaction: undo it. (Harmless if the
        // failure came before BEGIN or after COMMIT.)
        let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
        return Err(error);
    }
    let mut inserted = insert_outcomes.into_iter();
    Ok(requests
        .iter()
        .enumerate()
        .map(|(position, request)| match request {
            WriteRequest::Insert { .. } => {
                WriteResult::Inserted(inserted.next().expect("one outcome per insert"))
            }
            WriteRequest::Claim { .. } => {
                WriteResult::Claimed(claimed.remove(&position).unwrap_or_default())
            }
            WriteRequest::Outcomes { .. } => WriteResult::Recorded,
        })
        .collect())
}

/// Rows bound per multi-row INSERT, well under SQLite's limit of 32766 bound values.
const ROWS_PER_STATEMENT: usize = 256;

/// Looks up the idempotency keys of new messages: which are replays or reuses of an earlier request,
/// and which are to be inserted.
async fn resolve_idempotency_keys<'m>(
    connection: &mut sqlx::pool::PoolConnection<Sqlite>,
    messages: &[&'m NewMessage],
) -> StoreResult<(Vec<InsertOutcome>, Vec<&'m NewMessage>)> {
    let mut outcomes = Vec::with_capacity(messages.len());
    let mut to_insert: Vec<&NewMessage> = Vec::with_capacity(messages.len());
    // Idempotency keys seen earlier in this same batch: (created_by, key) → (id, request hash).
    let mut keys_in_batch: std::collections::HashMap<(&str, &str), (Uuid, Option<&str>)> =
        std::collections::HashMap::new();
    for message in messages.iter().copied() {
        if let Some(key) = &message.idempotency_key {
            let earlier = match keys_in_batch.get(&(message.created_by.as_str(), key.as_str())) {
                Some((id, hash)) => Some((*id, hash.map(str::to_owned))),
                None => sqlx::query("SELECT id, request_hash FROM messages WHERE created_by = $1 AND idempotency_key = $2")
                    .bind(&message.created_by)
                    .bind(key)
                    .fetch_optional(&mut **connection)
                    .await?
                    .map(|row| Ok::<_, StoreError>((parse_uuid(&row.get::<String, _>("id"))?, row.get::<Option<String>, _>("request_hash"))))
                    .transpose()?,
            };
            if let Some((id, hash)) = earlier {
                let same = hash.as_deref() == message.request_hash.as_deref();
                outcomes.push(if same {
                    InsertOutcome::Replayed(id)
                } else {
                    InsertOutcome::KeyReused(id)
                });
                continue;
            }
            keys_in_batch.insert(
                (message.created_by.as_str(), key.as_str()),
                (message.id, message.request_hash.as_deref()),
            );
        }
        to_insert.push(message);
        outcomes.push(InsertOutcome::Created(message.id));
    }
    Ok((outcomes, to_insert))
}

/// Appends the statements inserting `to_insert` to `sql`.
fn push_insert_statements(sql: &mut QueryBuilder<Sqlite>, to_insert: &[&NewMessage]) {
    for chunk in to_insert.chunks(ROWS_PER_STATEMENT) {
        sql.push(
            "INSERT INTO messages (id, status, scenario, account_id, message_id_header, subject, created_by, idempotency_key,
               request_hash, created_at, updated_at, send_at, next_attempt_at, template_id, template_version,
               attempt_count, lease_owner, lease_until) ",
        );
        sql.push_values(chunk, |mut row, message| {
            let now = message.created_at_ms;
            // A draft waits for confirmation: it is never claimed as it is stored.
            let claim = message.claim.as_ref().filter(|_| !message.draft);
            let status = match (claim, message.draft) {
                (_, true) => "draft",
                (Some(_), false) => "sending",
                (None, false) => "queued",
            };
            row.push_bind(message.id.to_string())
                .push_bind(status)
                .push_bind(message.scenario.as_str().to_owned())
                .push_bind(message.account_id.to_string())
                .push_bind(message.message_id_header.clone())
                .push_bind(message.content.subject.as_str().to_owned())
                .push_bind(message.created_by.clone())
                .push_bind(message.idempotency_key.clone())
                .push_bind(message.request_hash.clone())
                .push_bind(now)
                .push_bind(now)
                .push_bind(message.send_at_ms)
                .push_bind(message.send_at_ms.unwrap_or(now).max(now))
                .push_bind(message.template.as_ref().map(|(id, _)| id.clone()))
                .push_bind(message.template.as_ref().map(|(_, version)| *version))
                .push_bind(i64::from(claim.is_some()))
                .push_bind(claim.map(|c| c.owner.clone()))
                .push_bind(claim.map(|c| c.lease_until));
        });
        sql.push(";\n");
        sql.push(
            "INSERT INTO message_contents (message_id, to_json, cc_json, bcc_json, reply_to_json, headers_json, text_body, html_body, related_json, from_json, sender_json) ",
        );
        sql.push_values(chunk, |mut row, message| {
            let content = &message.content;
            row.push_bind(message.id.to_string())
                .push_bind(mailboxes_to_json(&content.to))
                .push_bind(mailboxes_to_json(&content.cc))
                .push_bind(mailboxes_to_json(&content.bcc))
                .push_bind(mailboxes_to_json(&content.reply_to))
                .push_bind(headers_to_json(&content.headers))
                .push_bind(content.text.clone())
                .push_bind(content.html.clone())
                .push_bind(related_to_json(&message.related_records))
                .push_bind(
                    content
                        .from
                        .as_ref()
                        .map(|m| mailboxes_to_json(std::slice::from_ref(m))),
                )
                .push_bind(
                    content
                        .sender
                        .as_ref()
                        .map(|m| mailboxes_to_json(std::slice::from_ref(m))),
                );
        });
        sql.push(";\n");
    }
    let attached: Vec<(&NewMessage, usize, &AttachedFile)> = to_insert
        .iter()
        .flat_map(|m| {
            m.attachments
                .iter()
                .enumerate()
                .map(move |(position, id)| (*m, position, id))
        })
        .collect();
    for chunk in attached.chunks(ROWS_PER_STATEMENT) {
        sql.push(
            "INSERT INTO message_attachments (message_id, position, attachment_id, content_id) ",
        );
        sql.push_values(
            chunk,
            |mut row, (message, position, (attachment_id, content_id))| {
                row.push_bind(message.id.to_string())
                    .push_bind(*position as i64)
                    .push_bind(attachment_id.to_string())
                    .push_bind(content_id.clone());
            },
        );
        sql.push(";\n");
    }
    let related: Vec<(&NewMessage, &RelatedRecord)> = to_insert
        .iter()
        .flat_map(|m| m.related_records.iter().map(move |r| (*m, r)))
        .collect();
    for chunk in related.chunks(ROWS_PER_STATEMENT) {
        sql.push("INSERT INTO related_records (message_id, record_type, record_id, relation) ");
        sql.push_values(chunk, |mut row, (message, record)| {
            row.push_bind(message.id.to_string())
                .push_bind(record.record_type.clone())
                .push_bind(record.record_id.clone())
                .push_bind(record.relation.as_str());
        });
        sql.push(" ON CONFLICT DO NOTHING");
        sql.push(";\n");
    }
}
/// Writes attempt rows and moves each message to its next state (two statements per 256 records).
/// Appends the statements recording attempt outcomes to `sql`.
fn push_outcome_statements(sql: &mut QueryBuilder<Sqlite>, records: &[&AttemptRecord]) {
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        sql.push(
            "INSERT INTO attempts (message_id, number, started_at, finished_at, outcome, reply_code, reply_text) ",
        );
        sql.push_values(chunk, |mut row, record| {
            row.push_bind(record.message_id.to_string())
                .push_bind(i64::from(record.number))
                .push_bind(record.started_at_ms)
                .push_bind(record.finished_at_ms)
                .push_bind(record.outcome.as_str())
                .push_bind(record.reply_code.map(i64::from))
                .push_bind(record.reply_text.clone());
        });
        sql.push(
            " ON CONFLICT (message_id, number) DO UPDATE SET finished_at = excluded.finished_at, outcome = excluded.outcome,
               reply_code = excluded.reply_code, reply_text = excluded.reply_text",
        );
        sql.push(";\n");

        // SQLite names the columns of a VALUES list column1, column2, …
        sql.push(
            "UPDATE messages SET status = v.column3, next_attempt_at = COALESCE(v.column4, messages.next_attempt_at),
               sent_at = v.column5, last_error = v.column6, lease_owner = NULL, lease_until = NULL, updated_at = v.column7
             FROM (",
        );
        sql.push_values(chunk, |mut row, record| {
            let (status, next_attempt_at, sent_at, last_error) = match record.next {
                Outcome::Sent => ("sent", None, Some(record.finished_at_ms), None),
                Outcome::RetryAt(at) => ("queued", Some(at), None, Some(record.reply_text.clone())),
                Outcome::Failed => ("failed", None, None, Some(record.reply_text.clone())),
            };
            row.push_bind(record.message_id.to_string())
                .push_bind(record.lease_owner.clone())
                .push_bind(status)
                .push_bind(next_attempt_at)
                .push_bind(sent_at)
                .push_bind(last_error)
                .push_bind(record.finished_at_ms)
                .push_bind(i64::from(record.number));
        });
        sql.push(
            ") AS v WHERE messages.id = v.column1 AND messages.lease_owner = v.column2 AND messages.status = 'sending'
               AND messages.attempt_count = v.column8",
        );
        sql.push(";\n");
    }
}

/// Appends the statements claiming up to `limit` due messages of one account under a lease: a SELECT
/// that returns the chosen rows as one JSON row (one row to pass between threads instead of one per
/// message), then an UPDATE of the same rows. Both pick by the same ordered subquery inside one write
/// transaction of the only writer, so they see the same rows.
fn push_claim_statement(sql: &mut QueryBuilder<Sqlite>, claim: &ClaimArgs, request: usize) {
    fn push_due(sql: &mut QueryBuilder<Sqlite>, claim: &ClaimArgs, columns: &str) {
        sql.push(format!(
            "SELECT {columns} FROM messages WHERE status = 'queued' AND account_id = "
        ))
        .push_bind(claim.account_id.to_string())
        .push(" AND next_attempt_at <= ")
        .push_bind(claim.now)
        .push(" ORDER BY next_attempt_at, id LIMIT ")
        .push_bind(i64::from(claim.limit));
    }
    sql.push("SELECT ")
        .push(request)
        .push(" AS request, json_group_array(json_array(id, message_id_header, created_at, attempt_count + 1, retry_base)) AS claimed FROM (");
    push_due(
        sql,
        claim,
        "id, message_id_header, created_at, attempt_count, retry_base",
    );
    sql.push(");\nUPDATE messages SET status = 'sending', lease_owner = ")
        .push_bind(claim.owner.clone())
        .push(", lease_until = ")
        .push_bind(claim.lease_until)
        .push(", attempt_count = attempt_count + 1, updated_at = ")
        .push_bind(claim.now)
        .push(" WHERE id IN (");
    push_due(sql, claim, "id");
    sql.push(");\n");
}
