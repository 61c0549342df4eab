//! The outbox and the sent archive: durable messages, leases for claiming them, and every attempt.
//!
//! Life of a message: inserted `queued` (group-committed before the API answers) → claimed with a
//! lease and marked `sending` before any SMTP transaction starts (or inserted `sending` under a lease
//! already, when the engine has room to send it at once) → `sent`, back to `queued` with a
//! later `next_attempt_at`, or `failed`. A lease that expires (the process died mid-send) is recovered
//! by recording an `interrupted` attempt, so a possible duplicate delivery is visible in the history.

use crate::db::{Db, StoreRow, WritePool, on_db};
use crate::sqlite::writer::WriteRequest;
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::ValidationError;
use mailroom_core::access::ViewPolicy;
use mailroom_core::address::{EmailAddress, Mailbox};
use mailroom_core::header::{CustomHeader, HeaderText};
use mailroom_core::message::{
    AttemptOutcome, MessageContent, MessageStatus, RelatedRecord, Relation,
};
use mailroom_core::scenario::ScenarioName;
use serde::{Deserialize, Serialize};
use sqlx::{Database, Encode, QueryBuilder, Type};
use uuid::Uuid;

/// An attachment of a message: the upload and, for an inline image, its Content-ID.
pub type AttachedFile = (Uuid, Option<String>);

/// A validated message ready to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: Uuid,
    pub scenario: ScenarioName,
    pub account_id: Uuid,
    /// With angle brackets, e.g. `<0190…@example.com>`.
    pub message_id_header: String,
    /// Shared with the send task when the message is sent at once, instead of copied.
    pub content: std::sync::Arc<MessageContent>,
    pub related_records: Vec<RelatedRecord>,
    /// Uploaded attachments, in order, each with the Content-ID it has when shown inline in the HTML.
    pub attachments: Vec<AttachedFile>,
    /// The template (id and version) the content was rendered from.
    pub template: Option<(String, i64)>,
    /// What smart matching finds this message by, when the organisation has it on
    /// (`mailroom_core::inbound::outbound_smart_key`).
    pub smart_key: Option<String>,
    /// Kept as a draft until a user confirms it.
    pub draft: bool,
    pub send_at_ms: Option<i64>,
    /// Who asked for the message (token id); idempotency keys are scoped to it.
    pub created_by: String,
    pub idempotency_key: Option<String>,
    /// A hash of the request, so that a reused idempotency key with a different request is refused.
    pub request_hash: Option<String>,
    /// When the message was accepted (Unix ms); also the `Date` of the email.
    pub created_at_ms: i64,
    /// Asks to store the message already claimed for its first attempt, under this lease, instead
    /// of `queued`: the engine has room to send it at once, so it skips a claim transaction and a
    /// content read. The store grants it ([`InsertOutcome::Claimed`]) only when nothing of the
    /// account is known to be waiting, so that new mail does not overtake queued mail (see
    /// [`Store::claim_due`]; on PostgreSQL, mail queued less than a moment ago does not count, see
    /// `postgres::OVERTAKE_ALLOWANCE_MS`); otherwise the message is stored `queued`
    /// ([`InsertOutcome::Created`]).
    pub claim: Option<InsertClaim>,
}

/// The lease a message is stored under when it is claimed as it is inserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertClaim {
    pub owner: String,
    pub lease_until: i64,
}

/// What storing a message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertOutcome {
    /// Stored `queued` (or as a draft).
    Created(Uuid),
    /// Stored `sending` under the lease the message asked for: its first attempt may start.
    Claimed(Uuid),
    /// The idempotency key was seen before with the same request: this is the earlier message.
    Replayed(Uuid),
    /// The idempotency key was seen before with a different request.
    KeyReused(Uuid),
}

/// A message as stored, for display.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub id: Uuid,
    pub status: MessageStatus,
    pub scenario: String,
    pub account_id: Uuid,
    pub message_id_header: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Vec<String>,
    /// Custom headers as (name, value).
    pub headers: Vec<(String, String)>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub related_records: Vec<RelatedRecord>,
    pub template: Option<(String, i64)>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub send_at_ms: Option<i64>,
    pub next_attempt_at_ms: i64,
    pub sent_at_ms: Option<i64>,
    pub attempt_count: u32,
    pub last_error: Option<String>,
    /// When retention deleted the content (bodies and attachments) of this sent message.
    pub content_deleted_at_ms: Option<i64>,
    /// The conversation the message belongs to (its own id when it started one).
    pub conversation_id: Uuid,
    pub attempts: Vec<StoredAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAttempt {
    pub number: u32,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub outcome: AttemptOutcome,
    pub reply_code: Option<u16>,
    pub reply_text: String,
}

/// Whose eyes a query is for: the view policy is applied inside the query, so paging and totals
/// never reveal what the viewer may not see.
#[derive(Debug, Clone)]
pub struct Visibility {
    pub viewer: String,
    pub policy: ViewPolicy,
    /// Record types the viewer may read; `None` means every type.
    pub readable_types: Option<Vec<String>>,
}

pub(crate) fn push_visibility<DB: Database>(query: &mut QueryBuilder<DB>, visibility: &Visibility)
where
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    // Relations to users are ignored by every policy.
    const RELEVANT: &str =
        "SELECT 1 FROM related_records r WHERE r.message_id = m.id AND r.record_type <> 'user'";
    push_visibility_on(query, visibility, "m.created_by", RELEVANT);
}

/// The view policy as a condition on rows whose owner is `owner_column` and whose related
/// records `relevant` selects (`r.record_type` among them): outbound mail (its author) and inbound
/// mail (the user whose mailbox received it) follow the same rule.
pub(crate) fn push_visibility_on<DB: Database>(
    query: &mut QueryBuilder<DB>,
    visibility: &Visibility,
    owner_column: &str,
    relevant: &str,
) where
    for<'t> String: Encode<'t, DB> + Type<DB>,
{
    #[allow(non_snake_case)]
    let RELEVANT = relevant;
    let readable_filter = |query: &mut QueryBuilder<DB>, types: &[String], negate: bool| {
        query.push(if negate {
            " AND r.record_type NOT IN ("
        } else {
            " AND r.record_type IN ("
        });
        let mut list = query.separated(", ");
        for record_type in types {
            list.push_bind(record_type.clone());
        }
        query.push(")");
    };
    match visibility.policy {
        ViewPolicy::All => {}
        ViewPolicy::Own => {
            query
                .push(format!(" AND {owner_column} = "))
                .push_bind(visibility.viewer.clone());
        }
        ViewPolicy::AllRelatedRecords => {
            query
                .push(format!(" AND ({owner_column} = "))
                .push_bind(visibility.viewer.clone());
            query.push(format!(" OR (EXISTS ({RELEVANT})"));
            match &visibility.readable_types {
                None => {}
                Some(types) if types.is_empty() => {
                    query.push(format!(" AND NOT EXISTS ({RELEVANT})"));
                }
                Some(types) => {
                    query.push(format!(" AND NOT EXISTS ({RELEVANT}"));
                    readable_filter(query, types, true);
                    query.push(")");
                }
            }
            query.push("))");
        }
        ViewPolicy::AnyRelatedRecord => {
            query
                .push(format!(" AND ({owner_column} = "))
                .push_bind(visibility.viewer.clone());
            match &visibility.readable_types {
                None => {
                    query.push(format!(" OR EXISTS ({RELEVANT})"));
                }
                Some(types) if types.is_empty() => {}
                Some(types) => {
                    query.push(format!(" OR EXISTS ({RELEVANT}"));
                    readable_filter(query, types, false);
                    query.push(")");
                }
            }
            query.push(")");
        }
    }
}

/// Which messages a listing wants.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// Only what this viewer may see; `None` for internal use (no restriction).
    pub visibility: Option<Visibility>,
    /// Only messages related to this record: (type, id).
    pub related_to: Option<(String, String)>,
    pub statuses: Vec<MessageStatus>,
    pub account_id: Option<Uuid>,
    pub scenario: Option<String>,
    pub created_from_ms: Option<i64>,
    pub created_until_ms: Option<i64>,
    /// Only messages to this address (To, Cc or Bcc; lower-cased), read from `message_recipients`.
    pub recipient: Option<String>,
    /// Only messages whose subject contains this (case-insensitive). Looked for among at most
    /// [`crate::SUBJECT_SEARCH_WINDOW`] messages per page (newest first from the cursor); a page that
    /// reached the end of its window says so with `has_more` and a cursor.
    pub subject_contains: Option<String>,
    /// How many messages a subject search looks at per page; `None`: [`crate::SUBJECT_SEARCH_WINDOW`].
    pub subject_window: Option<i64>,
    /// Paging cursor: only messages older than this id.
    pub before_id: Option<Uuid>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct MessagePage {
    pub items: Vec<StoredMessage>,
    /// Messages matching the filter over all pages — exact up to
    /// [`crate::EXACT_TOTAL_UP_TO`]; beyond, that number, and `total_is_estimate` is set.
    pub total: i64,
    /// The total is a lower bound: more messages match than were counted.
    pub total_is_estimate: bool,
    /// Another page follows.
    pub has_more: bool,
    pub next_cursor: Option<Uuid>,
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

/// A message claimed for one attempt.
#[derive(Debug, Clone)]
pub struct ClaimedMessage {
    pub id: Uuid,
    pub account_id: Uuid,
    pub message_id_header: String,
    /// The content, or why the stored content can no longer be read (a permanent failure).
    pub content: Result<std::sync::Arc<MessageContent>, String>,
    pub created_at_ms: i64,
    /// The number of this attempt (1-based, over the message's whole life).
    pub attempt_number: u32,
    /// Attempts used since the last manual retry, this one included.
    pub attempts_used: u32,
    /// The message's attachments, in order; their bytes are in the blob store.
    pub attachments: Vec<crate::Attachment>,
}

/// What happens to a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    RetryAt(i64),
    Failed,
}

/// The record of one finished attempt, and the message's next state.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub message_id: Uuid,
    pub lease_owner: String,
    pub number: u32,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub outcome: AttemptOutcome,
    pub reply_code: Option<u16>,
    pub reply_text: String,
    pub next: Outcome,
}

/// A message whose lease expired and that was put back (or failed, when out of attempts).
#[derive(Debug, Clone)]
pub struct RecoveredLease {
    pub message_id: Uuid,
    pub account_id: Uuid,
    pub new_status: MessageStatus,
}

#[derive(Serialize, Deserialize)]
struct StoredMailbox {
    name: Option<String>,
    address: String,
}

#[derive(Serialize, Deserialize)]
struct StoredRelated {
    #[serde(rename = "type")]
    record_type: String,
    id: String,
    relation: String,
}

/// Every recipient address of a message (To, Cc and Bcc), lower-cased, each once: the keys of
/// `message_recipients`, which the recipient filter of listings reads.
pub(crate) fn recipient_keys(content: &mailroom_core::message::MessageContent) -> Vec<String> {
    let mut keys: Vec<String> = content
        .to
        .iter()
        .chain(&content.cc)
        .chain(&content.bcc)
        .map(|m| m.address.as_str().to_ascii_lowercase())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

pub(crate) fn mailboxes_to_json(list: &[Mailbox]) -> String {
    let stored: Vec<_> = list
        .iter()
        .map(|m| StoredMailbox {
            name: m.name.clone(),
            address: m.address.to_string(),
        })
        .collect();
    serde_json::to_string(&stored).expect("mailboxes serialize")
}

fn mailboxes_from_json(json: &str) -> Result<Vec<Mailbox>, ValidationError> {
    let stored: Vec<StoredMailbox> = serde_json::from_str(json).map_err(|e| {
        ValidationError::new(
            "recipients",
            format!("stored recipients are unreadable: {e}"),
        )
    })?;
    stored
        .into_iter()
        .map(|m| Mailbox::new(m.name.as_deref(), EmailAddress::parse(&m.address)?))
        .collect()
}

pub(crate) fn headers_to_json(headers: &[CustomHeader]) -> String {
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect();
    serde_json::to_string(&pairs).expect("headers serialize")
}

fn headers_from_json(json: &str) -> Vec<(String, String)> {
    serde_json::from_str(json).unwrap_or_default()
}

/// The record types of a message that view policies look at — sorted, distinct, comma-separated,
/// relations to users left out — kept on the message so that a policy becomes a few index ranges.
pub(crate) fn record_types_key(list: &[RelatedRecord]) -> String {
    let types: std::collections::BTreeSet<&str> = list
        .iter()
        .map(|r| r.record_type.as_str())
        .filter(|t| *t != "user")
        .collect();
    types.into_iter().collect::<Vec<_>>().join(",")
}

pub(crate) fn related_to_json(list: &[RelatedRecord]) -> String {
    let stored: Vec<_> = list
        .iter()
        .map(|r| StoredRelated {
            record_type: r.record_type.clone(),
            id: r.record_id.clone(),
            relation: r.relation.to_string(),
        })
        .collect();
    serde_json::to_string(&stored).expect("related records serialize")
}

fn related_from_json(json: &str) -> Vec<RelatedRecord> {
    serde_json::from_str::<Vec<StoredRelated>>(json)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            RelatedRecord::new(
                &r.record_type,
                &r.id,
                r.relation.parse().unwrap_or(Relation::Related),
            )
            .ok()
        })
        .collect()
}

fn content_from_row(row: &impl StoreRow) -> Result<MessageContent, ValidationError> {
    Ok(MessageContent {
        to: mailboxes_from_json(&row.get::<String, _>("to_json"))?,
        cc: mailboxes_from_json(&row.get::<String, _>("cc_json"))?,
        bcc: mailboxes_from_json(&row.get::<String, _>("bcc_json"))?,
        reply_to: mailboxes_from_json(&row.get::<String, _>("reply_to_json"))?,
        headers: headers_from_json(&row.get::<String, _>("headers_json"))
            .iter()
            .map(|(name, value)| CustomHeader::stored(name, value))
            .collect::<Result<_, _>>()?,
        subject: HeaderText::parse("subject", &row.get::<String, _>("subject"))?,
        text: row.get("text_body"),
        html: row.get("html_body"),
        from: optional_mailbox(row.get("from_json"))?,
        sender: optional_mailbox(row.get("sender_json"))?,
    })
}

fn optional_mailbox(json: Option<String>) -> Result<Option<Mailbox>, ValidationError> {
    Ok(json
        .map(|j| mailboxes_from_json(&j))
        .transpose()?
        .and_then(|list| list.into_iter().next()))
}

fn display_list(json: &str) -> Vec<String> {
    mailboxes_from_json(json)
        .map(|list| list.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

pub(crate) fn parse_uuid(raw: &str) -> StoreResult<Uuid> {
    raw.parse()
        .map_err(|_| StoreError::Conflict(format!("stored id {raw:?} is not a UUID")))
}

pub(crate) fn message_from_row(row: &impl StoreRow) -> StoreResult<StoredMessage> {
    Ok(StoredMessage {
        id: parse_uuid(&row.get::<String, _>("id"))?,
        status: row.get::<String, _>("status").parse()?,
        scenario: row.get("scenario"),
        account_id: parse_uuid(&row.get::<String, _>("account_id"))?,
        message_id_header: row.get("message_id_header"),
        to: display_list(&row.get::<String, _>("to_json")),
        cc: display_list(&row.get::<String, _>("cc_json")),
        bcc: display_list(&row.get::<String, _>("bcc_json")),
        reply_to: display_list(&row.get::<String, _>("reply_to_json")),
        headers: headers_from_json(&row.get::<String, _>("headers_json")),
        subject: row.get("subject"),
        text: row.get("text_body"),
        html: row.get("html_body"),
        related_records: related_from_json(&row.get::<String, _>("related_json")),
        template: row
            .get::<Option<String>, _>("template_id")
            .zip(row.get::<Option<i64>, _>("template_version")),
        created_at_ms: row.get("created_at"),
        updated_at_ms: row.get("updated_at"),
        send_at_ms: row.get("send_at"),
        next_attempt_at_ms: row.get("next_attempt_at"),
        sent_at_ms: row.get("sent_at"),
        attempt_count: row.get::<i64, _>("attempt_count") as u32,
        last_error: row.get("last_error"),
        content_deleted_at_ms: row.get("content_deleted_at"),
        conversation_id: parse_uuid(&row.get::<String, _>("conversation"))?,
        attempts: Vec::new(),
    })
}

pub(crate) const MESSAGE_COLUMNS: &str = "m.id, m.status, m.scenario, m.account_id, m.message_id_header, c.to_json, c.cc_json, c.bcc_json, c.reply_to_json, c.headers_json,
    m.subject, c.text_body, c.html_body, c.related_json, m.created_at, m.updated_at, m.send_at, m.next_attempt_at, m.sent_at,
    m.attempt_count, m.last_error, m.template_id, m.template_version, m.content_deleted_at,
    COALESCE(m.conversation_id, m.id) AS conversation";

/// Messages with their content.
pub(crate) const MESSAGES_WITH_CONTENT: &str =
    "messages m JOIN message_contents c ON c.message_id = m.id";

impl Store {
    /// Stores a new message durably; returns once the transaction holding it has committed.
    pub async fn insert_message(&self, message: NewMessage) -> StoreResult<InsertOutcome> {
        match &*self.db {
            Db::Sqlite(db) => {
                db.write(|reply| WriteRequest::Insert {
                    message: Box::new(message),
                    reply,
                })
                .await
            }
            Db::Postgres(db) => db.inserts.insert(message).await,
        }
    }

    /// One message with all its attempts.
    pub async fn message(&self, id: Uuid) -> StoreResult<StoredMessage> {
        on_db!(self, |writer, reader| {
            let sql =
                format!("SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_WITH_CONTENT} WHERE m.id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("message {id}")))?;
            let mut message = message_from_row(&row)?;
            let attempts = sqlx::query(
                "SELECT number, started_at, finished_at, outcome, reply_code, reply_text FROM attempts WHERE message_id = $1 ORDER BY number",
            )
            .bind(id.to_string())
            .fetch_all(reader)
            .await?;
            message.attempts = attempts
                .iter()
                .map(|row| {
                    Ok(StoredAttempt {
                        number: row.get::<i64, _>("number") as u32,
                        started_at_ms: row.get("started_at"),
                        finished_at_ms: row.get("finished_at"),
                        outcome: row.get::<String, _>("outcome").parse()?,
                        reply_code: row.get::<Option<i64>, _>("reply_code").map(|c| c as u16),
                        reply_text: row.get("reply_text"),
                    })
                })
                .collect::<StoreResult<_>>()?;
            Ok(message)
        })
    }

    /// One message with its attempts, if `visibility` allows the viewer to see it; otherwise "not found",
    /// so that the existence of a message the viewer may not see is not revealed.
    pub async fn visible_message(
        &self,
        id: Uuid,
        visibility: &Visibility,
    ) -> StoreResult<StoredMessage> {
        on_db!(self, |writer, reader| {
            let mut query = QueryBuilder::new("SELECT 1 FROM messages m WHERE m.id = ");
            query.push_bind(id.to_string());
            push_visibility(&mut query, visibility);
            if query.build().fetch_optional(reader).await?.is_none() {
                return Err(StoreError::NotFound(format!("message {id}")));
            }
            self.message(id).await
        })
    }

    /// Claims up to `limit` due messages of an account for one attempt each, under a lease.
    ///
    /// A claim that finds fewer than `limit` tells the store that nothing of the account is left
    /// waiting: from then on, new mail that asks to be claimed as it is stored
    /// ([`NewMessage::claim`]) is, until mail of the account is stored `queued` again or mail is
    /// queued outside the store writer (a release, a recovered lease, a retry, a confirmed draft).
    pub async fn claim_due(
        &self,
        account_id: Uuid,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedMessage>> {
        let claim = ClaimArgs {
            account_id,
            owner: owner.to_owned(),
            now,
            lease_until,
            limit,
        };
        let rows = match &*self.db {
            Db::Sqlite(db) => {
                db.write(|reply| WriteRequest::Claim { claim, reply })
                    .await?
            }
            Db::Postgres(db) => crate::postgres::hot::claim(&db.pool, &claim).await?,
        };
        on_db!(self, |writer, reader, keyed| {
            if rows.is_empty() {
                return Ok(Vec::new());
            }
            // The content is immutable and committed: read it without holding the writer.
            let mut contents = QueryBuilder::new(
                "SELECT c.message_id, c.to_json, c.cc_json, c.bcc_json, c.reply_to_json, c.headers_json, c.text_body, c.html_body, c.from_json, c.sender_json, m.subject
                 FROM message_contents c JOIN messages m ON m.id = c.message_id WHERE c.message_id IN (",
            );
            let mut ids = contents.separated(", ");
            for row in &rows {
                ids.push_bind(row.id.clone());
            }
            contents.push(")");
            // By primary key on PostgreSQL whatever the statistics say (see `BY_KEY_ONLY`).
            let content_rows = contents.build().fetch_all(keyed).await?;
            let mut content_by_id: std::collections::HashMap<
                String,
                Result<MessageContent, String>,
            > = content_rows
                .iter()
                .map(|row| {
                    (
                        row.get::<String, _>("message_id"),
                        content_from_row(row).map_err(|e| e.to_string()),
                    )
                })
                .collect();
            let mut claimed = rows
                .into_iter()
                .map(|row| {
                    let attempt_count = row.attempt_count as u32;
                    Ok(ClaimedMessage {
                        id: parse_uuid(&row.id)?,
                        account_id,
                        content: content_by_id
                            .remove(&row.id)
                            .unwrap_or_else(|| Err("the message content is missing".into()))
                            .map(std::sync::Arc::new),
                        message_id_header: row.message_id_header,
                        created_at_ms: row.created_at,
                        attempt_number: attempt_count,
                        attempts_used: attempt_count.saturating_sub(row.retry_base as u32),
                        attachments: Vec::new(),
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            claimed.sort_by_key(|m| m.id);
            let ids: Vec<Uuid> = claimed.iter().map(|m| m.id).collect();
            for (message_id, attachment) in self.attachments_of(&ids).await? {
                if let Some(message) = claimed.iter_mut().find(|m| m.id == message_id) {
                    message.attachments.push(attachment);
                }
            }
            Ok(claimed)
        })
    }

    /// Extends the leases of every message this process is sending.
    pub async fn renew_leases(&self, owner: &str, lease_until: i64) -> StoreResult<u64> {
        on_db!(self, |writer, reader| {
            let result = sqlx::query(
                "UPDATE messages SET lease_until = $2 WHERE lease_owner = $1 AND status = 'sending'",
            )
            .bind(owner)
            .bind(lease_until)
            .execute(writer)
            .await?;
            Ok(result.rows_affected())
        })
    }

    /// Puts claimed messages whose attempt never started back in the queue, as if never claimed.
    pub async fn release(&self, owner: &str, ids: &[Uuid]) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            for id in ids {
                sqlx::query(
                    "UPDATE messages SET status = 'queued', lease_owner = NULL, lease_until = NULL, attempt_count = attempt_count - 1
                     WHERE id = $1 AND lease_owner = $2 AND status = 'sending'",
                )
                .bind(id.to_string())
                .bind(owner)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            self.mail_queued_elsewhere().await;
            Ok(())
        })
    }

    /// Records finished attempts and moves each message to its next state, in one transaction
    /// (two statements per batch, whatever its size).
    pub async fn record_outcomes(&self, records: &[AttemptRecord]) -> StoreResult<()> {
        match &*self.db {
            Db::Sqlite(db) => {
                db.write(|reply| WriteRequest::Outcomes {
                    records: records.to_vec(),
                    reply,
                })
                .await
            }
            Db::Postgres(db) => crate::postgres::hot::record_outcomes(&db.keyed, records).await,
        }
    }

    /// Finds messages whose lease expired mid-send, records the interrupted attempt and queues them
    /// again (or fails them when their attempts are used up). The leases of `live_node` — the
    /// calling node, which renews its own and may still be sending under one whose renewal came
    /// late — are left alone: a node never takes a lease from itself while it runs.
    pub async fn recover_expired_leases(
        &self,
        live_node: &str,
        now: i64,
    ) -> StoreResult<Vec<RecoveredLease>> {
        self.recover_leases(now, None, Some(live_node)).await
    }

    /// Recovers at once every lease held by `node_id`, expired or not: called when a node starts, so
    /// that what its previous process was sending when it stopped does not wait out the lease.
    /// Only a node that knows it is the only process with this id (the data folder's lock) may call it.
    pub async fn recover_leases_held_by(
        &self,
        node_id: &str,
        now: i64,
    ) -> StoreResult<Vec<RecoveredLease>> {
        let recovered = self.recover_leases(now, Some(node_id), None).await?;
        // Its connections went with it: their places in the account limits shared by the nodes
        // are free at once (rather than renewed for ever by a restarted process with the same id).
        if let Db::Postgres(db) = &*self.db {
            crate::postgres::limits::release_session_slots_of(&db.pool, node_id).await?;
        }
        Ok(recovered)
    }

    /// Recovers the expired leases of every node but `spared`, and every lease of `held_by`.
    async fn recover_leases(
        &self,
        now: i64,
        held_by: Option<&str>,
        spared: Option<&str>,
    ) -> StoreResult<Vec<RecoveredLease>> {
        const REPLY_TEXT: &str = "the attempt was interrupted (mailroom stopped or lost its lease while sending); the message may \
                                  have been delivered by it, and a re-send carries the same Message-ID";
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            // Set-based, whatever the number of leases (a dead node may have held hundreds): the
            // messages move first (keeping `updated_at`, the claim's time, for the attempt's start),
            // then their interrupted attempts are written in chunks.
            let rows = sqlx::query(
                "UPDATE messages SET
                   status = CASE WHEN attempt_count - retry_base >=
                       (SELECT a.max_attempts FROM accounts a WHERE a.id = messages.account_id)
                     THEN 'failed' ELSE 'queued' END,
                   next_attempt_at = $1, lease_owner = NULL, lease_until = NULL, last_error = $3
                 WHERE status = 'sending'
                   AND ((lease_until <= $1 AND (lease_owner IS NULL OR lease_owner <> COALESCE($4, '')))
                        OR lease_owner = $2)
                 RETURNING id, account_id, status, attempt_count, updated_at",
            )
            .bind(now)
            .bind(held_by)
            .bind(REPLY_TEXT)
            .bind(spared)
            .fetch_all(&mut *tx)
            .await?;
            let mut recovered = Vec::with_capacity(rows.len());
            for chunk in rows.chunks(200) {
                let mut attempts = QueryBuilder::new(
                    "INSERT INTO attempts (message_id, number, started_at, finished_at, outcome, reply_code, reply_text) ",
                );
                attempts.push_values(chunk, |mut values, row| {
                    values
                        .push_bind(row.get::<String, _>("id"))
                        .push_bind(row.get::<i64, _>("attempt_count"))
                        .push_bind(row.get::<i64, _>("updated_at"))
                        .push_bind(now)
                        .push_bind("interrupted")
                        .push_bind(None::<i64>)
                        .push_bind(REPLY_TEXT);
                });
                attempts.push(" ON CONFLICT (message_id, number) DO NOTHING");
                attempts.build().execute(&mut *tx).await?;
                let mut touched = QueryBuilder::new("UPDATE messages SET updated_at = ");
                touched.push_bind(now).push(" WHERE id IN (");
                let mut ids = touched.separated(", ");
                for row in chunk {
                    ids.push_bind(row.get::<String, _>("id"));
                }
                touched.push(")");
                touched.build().execute(&mut *tx).await?;
                // The events of the interruption: queued again (deferred), or failed when its
                // attempts are used up.
                let mut events = QueryBuilder::new(
                    "INSERT INTO events (kind, subject_id, payload_json, created_at) ",
                );
                events.push_values(chunk, |mut values, row| {
                    let id = row.get::<String, _>("id");
                    let failed = row.get::<String, _>("status") == "failed";
                    values
                        .push_bind(if failed { "message.failed" } else { "message.deferred" })
                        .push_bind(id.clone())
                        .push_bind(
                            serde_json::json!({"message_id": id, "attempt": row.get::<i64, _>("attempt_count"),
                                "outcome": "interrupted", "reply_code": null, "reply_text": REPLY_TEXT})
                            .to_string(),
                        )
                        .push_bind(now);
                });
                events.build().execute(&mut *tx).await?;
                for row in chunk {
                    recovered.push(RecoveredLease {
                        message_id: parse_uuid(&row.get::<String, _>("id"))?,
                        account_id: parse_uuid(&row.get::<String, _>("account_id"))?,
                        new_status: row.get::<String, _>("status").parse()?,
                    });
                }
            }
            tx.commit().await?;
            if !recovered.is_empty() {
                self.mail_queued_elsewhere().await;
            }
            Ok(recovered)
        })
    }

    /// Queues a failed, cancelled or waiting message for an attempt now, with a fresh attempt budget.
    pub async fn retry_message(&self, id: Uuid) -> StoreResult<StoredMessage> {
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let result = sqlx::query(
                "UPDATE messages SET status = 'queued', next_attempt_at = $2, retry_base = attempt_count, updated_at = $2
                 WHERE id = $1 AND status IN ('failed', 'cancelled', 'queued')",
            )
            .bind(id.to_string())
            .bind(now)
            .execute(writer)
            .await?;
            self.mail_queued_elsewhere().await;
            self.after_transition(id, result.rows_affected(), "retried")
                .await
        })
    }

    /// Releases a draft for sending.
    pub async fn confirm_message(&self, id: Uuid) -> StoreResult<StoredMessage> {
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let result = sqlx::query(
                "UPDATE messages SET status = 'queued', next_attempt_at = CASE WHEN send_at > $2 THEN send_at ELSE $2 END, updated_at = $2 WHERE id = $1 AND status = 'draft'",
            )
            .bind(id.to_string())
            .bind(now)
            .execute(writer)
            .await?;
            self.mail_queued_elsewhere().await;
            self.after_transition(id, result.rows_affected(), "confirmed")
                .await
        })
    }

    /// Cancels a message that is waiting or has failed. A message being sent right now cannot be cancelled.
    pub async fn cancel_message(&self, id: Uuid) -> StoreResult<StoredMessage> {
        on_db!(self, |writer, reader| {
            let result = sqlx::query("UPDATE messages SET status = 'cancelled', updated_at = $2 WHERE id = $1 AND status IN ('draft', 'queued', 'failed')")
                .bind(id.to_string())
                .bind(now_ms())
                .execute(writer)
                .await?;
            self.after_transition(id, result.rows_affected(), "cancelled")
                .await
        })
    }

    async fn after_transition(
        &self,
        id: Uuid,
        changed: u64,
        verb: &str,
    ) -> StoreResult<StoredMessage> {
        let message = self.message(id).await?;
        if changed == 0 {
            return Err(StoreError::Conflict(format!(
                "message {id} is {} and cannot be {verb}",
                message.status
            )));
        }
        Ok(message)
    }

    /// Start times of attempts on an account since `since` (including claims in flight), to rebuild a
    /// rate window after a restart.
    pub async fn attempt_starts_since(
        &self,
        account_id: Uuid,
        since: i64,
    ) -> StoreResult<Vec<i64>> {
        on_db!(self, |writer, reader| {
            let starts = sqlx::query_scalar(
                "SELECT a.started_at FROM attempts a JOIN messages m ON m.id = a.message_id
                 WHERE m.account_id = $1 AND a.started_at >= $2 AND a.outcome <> 'interrupted'
                 UNION ALL
                 SELECT updated_at FROM messages WHERE account_id = $1 AND status = 'sending' AND updated_at >= $2
                 ORDER BY 1",
            )
            .bind(account_id.to_string())
            .bind(since)
            .fetch_all(reader)
            .await?;
            Ok(starts)
        })
    }

    /// Number of messages in the outbox per status (draft, queued, sending, failed).
    pub async fn status_counts(&self) -> StoreResult<Vec<(MessageStatus, i64)>> {
        on_db!(self, |writer, reader| {
            // The outbox only: sent and cancelled mail grows with the archive, and counting it at
            // every scrape would cost time proportional to the archive.
            let rows = sqlx::query(
                "SELECT status, COUNT(*) AS n FROM messages
                 WHERE status IN ('draft', 'queued', 'sending', 'failed') GROUP BY status",
            )
            .fetch_all(reader)
            .await?;
            rows.iter()
                .map(|row| Ok((row.get::<String, _>("status").parse()?, row.get("n"))))
                .collect()
        })
    }
}

impl Store {
    /// Who asked for a message (the user id written as its author).
    pub async fn message_author(&self, id: Uuid) -> StoreResult<String> {
        on_db!(self, |writer, reader| {
            sqlx::query_scalar::<_, String>("SELECT created_by FROM messages WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("message {id}")))
        })
    }
}
