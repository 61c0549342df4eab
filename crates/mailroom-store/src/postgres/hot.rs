//! The hot write path on PostgreSQL: storing new mail, claiming due mail, recording outcomes.
//!
//! Each call is its own short transaction on the node's pool; concurrent commits share WAL
//! flushes on the server (group commit). Claims take rows with `FOR UPDATE SKIP LOCKED`, so
//! nodes claiming at the same moment take different messages and never wait for each other. An
//! outcome moves its message only under the lease that made the attempt: the lease owner (the
//! node id) and the attempt number together are the fencing token, so a node whose lease was
//! recovered by another can never record over the new owner's attempt.

use crate::messages::{
    ClaimArgs, ClaimRow, InsertClaim, InsertOutcome, NewMessage, headers_to_json,
    mailboxes_to_json, record_types_key, related_to_json,
};
use crate::{AttemptRecord, Outcome, StoreError, StoreResult};
use sqlx::postgres::{PgPool, Postgres};
use sqlx::{Row, Transaction};

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

pub(crate) async fn insert(pool: &PgPool, message: &NewMessage) -> StoreResult<InsertOutcome> {
    loop {
        if let Some(outcome) = earlier_request(pool, message).await? {
            return Ok(outcome);
        }
        let mut tx = pool.begin().await?;
        match insert_in(&mut tx, message).await {
            Ok(outcome) => {
                tx.commit().await?;
                return Ok(outcome);
            }
            // The same idempotency key committed by a concurrent request: answer as a replay.
            Err(StoreError::Database(error))
                if message.idempotency_key.is_some()
                    && error
                        .as_database_error()
                        .and_then(|e| e.code())
                        .is_some_and(|c| c == UNIQUE_VIOLATION) =>
            {
                tx.rollback().await?;
                continue;
            }
            Err(error) => return Err(error),
        }
    }
}

async fn earlier_request(
    pool: &PgPool,
    message: &NewMessage,
) -> StoreResult<Option<InsertOutcome>> {
    let Some(key) = &message.idempotency_key else {
        return Ok(None);
    };
    let row = sqlx::query(
        "SELECT id, request_hash FROM messages WHERE created_by = $1 AND idempotency_key = $2",
    )
    .bind(&message.created_by)
    .bind(key)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        let id = crate::messages::parse_uuid(&row.get::<String, _>("id"))?;
        let hash: Option<String> = row.get("request_hash");
        Ok(if hash.as_deref() == message.request_hash.as_deref() {
            InsertOutcome::Replayed(id)
        } else {
            InsertOutcome::KeyReused(id)
        })
    })
    .transpose()
}

async fn insert_in(
    tx: &mut Transaction<'static, Postgres>,
    message: &NewMessage,
) -> StoreResult<InsertOutcome> {
    let now = message.created_at_ms;
    let due_now = message.send_at_ms.is_none_or(|at| at <= now);
    // New mail does not overtake waiting mail: it is stored claimed only when nothing of its
    // account has been due for longer than the overtake allowance (a draft waits for
    // confirmation); see `OVERTAKE_ALLOWANCE_MS`.
    let claim: Option<&InsertClaim> = match &message.claim {
        Some(claim) if !message.draft && due_now => {
            let waiting: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM messages WHERE account_id = $1 AND status = 'queued' AND next_attempt_at <= $2)",
            )
            .bind(message.account_id.to_string())
            .bind(super::overtake_cutoff(now))
            .fetch_one(&mut **tx)
            .await?;
            (!waiting).then_some(claim)
        }
        _ => None,
    };
    let status = match (claim, message.draft) {
        (_, true) => "draft",
        (Some(_), false) => "sending",
        (None, false) => "queued",
    };
    let id = message.id.to_string();
    let record_types = record_types_key(&message.related_records);
    // Only for an account that exists (accounts are never removed, only marked deleted, so
    // nothing needs locking: migration 0029 dropped the foreign key that did).
    let stored = sqlx::query(
        "INSERT INTO messages (id, status, scenario, account_id, message_id_header, subject, created_by,
           idempotency_key, request_hash, created_at, updated_at, send_at, next_attempt_at, template_id,
           template_version, attempt_count, lease_owner, lease_until, record_types, smart_key)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19
         WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $4)",
    )
    .bind(&id)
    .bind(status)
    .bind(message.scenario.as_str())
    .bind(message.account_id.to_string())
    .bind(&message.message_id_header)
    .bind(message.content.subject.as_str())
    .bind(&message.created_by)
    .bind(&message.idempotency_key)
    .bind(&message.request_hash)
    .bind(now)
    .bind(message.send_at_ms)
    .bind(message.send_at_ms.unwrap_or(now).max(now))
    .bind(message.template.as_ref().map(|(id, _)| id))
    .bind(message.template.as_ref().map(|(_, version)| *version))
    .bind(i64::from(claim.is_some()))
    .bind(claim.map(|c| &c.owner))
    .bind(claim.map(|c| c.lease_until))
    .bind(&record_types)
    .bind(&message.smart_key)
    .execute(&mut **tx)
    .await?;
    if stored.rows_affected() == 0 {
        return Err(StoreError::NotFound(format!(
            "account {}",
            message.account_id
        )));
    }
    if !record_types.is_empty() {
        sqlx::query("INSERT INTO record_type_sets (types) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&record_types)
            .execute(&mut **tx)
            .await?;
    }
    let content = &message.content;
    let single = |m: &Option<_>| {
        m.as_ref()
            .map(|m| mailboxes_to_json(std::slice::from_ref(m)))
    };
    sqlx::query(
        "INSERT INTO message_contents (message_id, to_json, cc_json, bcc_json, reply_to_json, headers_json,
           text_body, html_body, related_json, from_json, sender_json)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(mailboxes_to_json(&content.to))
    .bind(mailboxes_to_json(&content.cc))
    .bind(mailboxes_to_json(&content.bcc))
    .bind(mailboxes_to_json(&content.reply_to))
    .bind(headers_to_json(&content.headers))
    .bind(&content.text)
    .bind(&content.html)
    .bind(related_to_json(&message.related_records))
    .bind(single(&content.from))
    .bind(single(&content.sender))
    .execute(&mut **tx)
    .await?;
    for (position, (attachment_id, content_id)) in message.attachments.iter().enumerate() {
        // The API checked the upload, but it may have been collected since: refuse the message
        // rather than fail on the reference.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM attachments WHERE id = $1)")
                .bind(attachment_id.to_string())
                .fetch_one(&mut **tx)
                .await?;
        if !exists {
            return Err(StoreError::Invalid(mailroom_core::ValidationError::new(
                "attachments",
                format!("unknown attachment {attachment_id}"),
            )));
        }
        sqlx::query(
            "INSERT INTO message_attachments (message_id, position, attachment_id, content_id)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(position as i64)
        .bind(attachment_id.to_string())
        .bind(content_id)
        .execute(&mut **tx)
        .await?;
    }
    let recipients = crate::messages::recipient_keys(content);
    sqlx::query(
        "INSERT INTO message_recipients (address, message_id)
         SELECT address, $2 FROM UNNEST($1::text[]) AS r(address) ON CONFLICT DO NOTHING",
    )
    .bind(&recipients)
    .bind(&id)
    .execute(&mut **tx)
    .await?;
    for record in &message.related_records {
        sqlx::query(
            "INSERT INTO related_records (message_id, record_type, record_id, relation)
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(&id)
        .bind(&record.record_type)
        .bind(&record.record_id)
        .bind(record.relation.as_str())
        .execute(&mut **tx)
        .await?;
    }
    if status == "queued" && due_now {
        // Delivered to every listening node at commit: idle dispatchers claim it at once.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(super::QUEUED_CHANNEL)
            .execute(&mut **tx)
            .await?;
    }
    Ok(if claim.is_some() {
        InsertOutcome::Claimed(message.id)
    } else {
        InsertOutcome::Created(message.id)
    })
}

/// Claims up to `limit` due messages of one account under a lease, oldest due first; rows another
/// node is claiming at this moment are skipped, not waited for.
///
/// The rows are picked and locked in a materialized CTE, then updated by primary key. Written as
/// `UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)`, PostgreSQL re-ran the whole locking
/// subquery (its sort of every queued message of the account included) in EvalPlanQual for rows
/// that changed under it: with a few thousand messages queued and outcomes committing meanwhile,
/// one claim ran for over a minute, holding the locks that every outcome batch and lease renewal
/// then waited for — delivery stopped on every node. The update finds the picked rows by primary
/// key whatever the statistics say: once analyzed, the planner preferred hashing the whole
/// `messages` table (the archive too) for each claim.
///
/// A transaction of its own on the node's main pool, not one statement on the `keyed` pool as the
/// outcome batches are. Measured both ways (release builds run in turn with the previous code,
/// three runs each): with the one-round-trip claim, 14–24 % of the mail skipped the queue with
/// three nodes and three nodes delivered 0.41× of one node; with this one, 39–58 % and 0.52×
/// (measured while a dispatcher still claimed after every finished send): quicker claims fill the
/// lanes with queued mail, new mail then finds no room and is queued in turn.
pub(crate) async fn claim(pool: &PgPool, claim: &ClaimArgs) -> StoreResult<Vec<ClaimRow>> {
    let mut tx = pool.begin().await?;
    sqlx::query(super::BY_KEY_ONLY_IN_TRANSACTION)
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "WITH picked AS MATERIALIZED (
           SELECT id FROM messages
           WHERE status = 'queued' AND account_id = $1 AND next_attempt_at <= $4
           ORDER BY next_attempt_at, id LIMIT $5 FOR UPDATE SKIP LOCKED)
         UPDATE messages m SET status = 'sending', lease_owner = $2, lease_until = $3,
           attempt_count = m.attempt_count + 1, updated_at = $4
         FROM picked WHERE m.id = picked.id
         RETURNING m.id, m.message_id_header, m.created_at, m.attempt_count, m.retry_base, m.next_attempt_at",
    )
    .bind(claim.account_id.to_string())
    .bind(&claim.owner)
    .bind(claim.lease_until)
    .bind(claim.now)
    .bind(i64::from(claim.limit))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut claimed: Vec<(i64, ClaimRow)> = rows
        .iter()
        .map(|row| {
            (
                row.get("next_attempt_at"),
                ClaimRow {
                    id: row.get("id"),
                    message_id_header: row.get("message_id_header"),
                    created_at: row.get("created_at"),
                    attempt_count: row.get("attempt_count"),
                    retry_base: row.get("retry_base"),
                },
            )
        })
        .collect();
    // RETURNING keeps no order: oldest due first, as the SQLite writer answers.
    claimed.sort_by(|a, b| (a.0, &a.1.id).cmp(&(b.0, &b.1.id)));
    Ok(claimed.into_iter().map(|(_, row)| row).collect())
}

/// Writes attempt rows and moves each message to its next state, in one statement whatever the
/// batch's size (the rows travel as arrays; a statement is its own transaction, one round trip) —
/// only under the lease (owner and attempt number) that made the attempt. `keyed`: a connection of
/// [`super::PgDb::keyed`], so each message is found by primary key (the update, and the attempts'
/// foreign key checks) whatever the statistics say.
pub(crate) async fn record_outcomes(keyed: &PgPool, records: &[AttemptRecord]) -> StoreResult<()> {
    // Rows are locked in primary-key order, as a lease renewal (which walks `messages_status`)
    // locks them: the two never wait for each other in a circle (a deadlock PostgreSQL resolved
    // by aborting the batch, seen under load).
    let mut sorted: Vec<&AttemptRecord> = records.iter().collect();
    sorted.sort_by_key(|r| r.message_id);
    let records = sorted;
    let ids: Vec<String> = records.iter().map(|r| r.message_id.to_string()).collect();
    let numbers: Vec<i64> = records.iter().map(|r| i64::from(r.number)).collect();
    let started: Vec<i64> = records.iter().map(|r| r.started_at_ms).collect();
    let finished: Vec<i64> = records.iter().map(|r| r.finished_at_ms).collect();
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    let codes: Vec<Option<i64>> = records
        .iter()
        .map(|r| r.reply_code.map(i64::from))
        .collect();
    let texts: Vec<&str> = records.iter().map(|r| r.reply_text.as_str()).collect();
    let owners: Vec<&str> = records.iter().map(|r| r.lease_owner.as_str()).collect();
    let mut statuses = Vec::with_capacity(records.len());
    let mut next_attempts = Vec::with_capacity(records.len());
    let mut sent_ats = Vec::with_capacity(records.len());
    let mut errors = Vec::with_capacity(records.len());
    for record in &records {
        let (status, next_attempt_at, sent_at, last_error) = match record.next {
            Outcome::Sent => ("sent", None, Some(record.finished_at_ms), None),
            Outcome::RetryAt(at) => ("queued", Some(at), None, Some(record.reply_text.as_str())),
            Outcome::Failed => ("failed", None, None, Some(record.reply_text.as_str())),
        };
        statuses.push(status);
        next_attempts.push(next_attempt_at);
        sent_ats.push(sent_at);
        errors.push(last_error);
    }
    let (kinds, payloads): (Vec<&str>, Vec<String>) = records
        .iter()
        .map(|r| crate::webhooks::outcome_event(r))
        .unzip();
    // The events of the changes, in their transaction: only for the messages that moved (an
    // outcome from a lost lease moves nothing and says nothing), taken from what the update
    // returns, in the batch's order. The lease owner and attempt number are the fencing token; a
    // lease exists only while the message is being sent (a constraint, migration 0026). With no
    // webhook endpoint enabled there is nobody to fan an event out to: it is written fanned out
    // (an endpoint gets the events of the outcomes recorded after it was enabled), which spares
    // every message an update of its event.
    sqlx::query(
        "WITH attempt AS (
           INSERT INTO attempts (message_id, number, started_at, finished_at, outcome, reply_code, reply_text)
           SELECT * FROM UNNEST($1::text[], $8::bigint[], $11::bigint[], $7::bigint[], $12::text[], $13::bigint[],
                                $14::text[])
           ON CONFLICT (message_id, number) DO UPDATE SET finished_at = excluded.finished_at,
             outcome = excluded.outcome, reply_code = excluded.reply_code, reply_text = excluded.reply_text),
         moved AS (
           UPDATE messages m SET status = u.status, next_attempt_at = COALESCE(u.next_attempt_at, m.next_attempt_at),
             sent_at = u.sent_at, last_error = u.last_error, lease_owner = NULL, lease_until = NULL,
             updated_at = u.finished_at
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[],
                       $8::bigint[], $9::text[], $10::text[]) WITH ORDINALITY
             AS u(id, owner, status, next_attempt_at, sent_at, last_error, finished_at, number, kind, payload, n)
           WHERE m.id = u.id AND m.lease_owner = u.owner AND m.attempt_count = u.number
           RETURNING m.id, u.kind, u.payload, u.finished_at, u.n)
         INSERT INTO events (kind, subject_id, payload_json, created_at, fanned_out)
         SELECT kind, id, payload, finished_at,
           NOT EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled = TRUE)
         FROM moved ORDER BY n",
    )
    .bind(&ids)
    .bind(&owners)
    .bind(&statuses)
    .bind(&next_attempts)
    .bind(&sent_ats)
    .bind(&errors)
    .bind(&finished)
    .bind(&numbers)
    .bind(&kinds)
    .bind(&payloads)
    .bind(&started)
    .bind(&outcomes)
    .bind(&codes)
    .bind(&texts)
    .execute(keyed)
    .await?;
    Ok(())
}
