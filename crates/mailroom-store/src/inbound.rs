//! Inbound mail (MISSION B6, A12, C2): the synchronization state of each folder, every received
//! message (stored before its UID counts as done), its correlation to a conversation and the
//! records it concerns, and a `message.received` event in the same transaction.

use crate::db::{StoreRow, WritePool, on_db};
use crate::messages::{Visibility, parse_uuid, push_visibility_on};
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::inbound::{CorrelationKeys, CorrelationMethod, InboundAddress, ParsedInbound};
use mailroom_core::mailbox::MailboxFilter;
use mailroom_core::message::RelatedRecord;
use sqlx::QueryBuilder;
use uuid::Uuid;

/// How far a folder has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderState {
    pub folder: String,
    pub uidvalidity: u32,
    /// Every UID below this is handled (new mail).
    pub uidnext: u32,
    pub highestmodseq: Option<u64>,
    /// The initial sync still has to read the UIDs below this (newest first); 0 when done.
    pub initial_below: u32,
    /// Times the server changed the folder's UIDVALIDITY, and when it last did.
    pub validity_changes: u32,
    pub validity_changed_at_ms: Option<i64>,
    pub synced_at_ms: Option<i64>,
}

/// An attachment part already written to the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    pub path: String,
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
}

/// A received message to store, its raw bytes and parts already in the blob store.
#[derive(Debug, Clone)]
pub struct NewInbound<'a> {
    pub mailbox_id: Uuid,
    pub owner_user_id: Option<Uuid>,
    pub folder: &'a str,
    pub uidvalidity: u32,
    pub uid: u32,
    pub size: u64,
    pub flags: Vec<String>,
    pub received_at_ms: i64,
    pub raw_sha256: String,
    pub parsed: &'a ParsedInbound,
    pub parts: Vec<StoredPart>,
    pub keys: CorrelationKeys,
    pub filter: MailboxFilter,
}

/// What storing a received message did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    Stored(Uuid),
    /// This UID of this folder was stored before (a repeat after a crash).
    AlreadyStored(Uuid),
    /// The mailbox's filter does not keep it.
    Filtered,
}

/// A stored received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub id: Uuid,
    pub mailbox_id: Uuid,
    pub owner_user_id: Option<Uuid>,
    pub folder: String,
    pub uid: u32,
    pub message_id_header: Option<String>,
    pub subject: String,
    pub from: Option<InboundAddress>,
    pub to: Vec<InboundAddress>,
    pub cc: Vec<InboundAddress>,
    pub reply_to: Vec<InboundAddress>,
    pub references: Vec<String>,
    pub sent_at_ms: Option<i64>,
    pub received_at_ms: i64,
    pub size: u64,
    pub flags: Vec<String>,
    pub seen: bool,
    pub raw_sha256: String,
    pub unparsed: bool,
    pub correlation_method: Option<CorrelationMethod>,
    pub conversation_id: Uuid,
    pub created_at_ms: i64,
}

/// A received message with its contents.
#[derive(Debug, Clone)]
pub struct InboundDetail {
    pub message: InboundMessage,
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<StoredPart>,
    pub related_records: Vec<RelatedRecord>,
}

/// Which received messages a listing wants.
#[derive(Debug, Clone, Default)]
pub struct InboundFilter {
    pub visibility: Option<Visibility>,
    pub mailbox_id: Option<Uuid>,
    pub folder: Option<String>,
    /// Sender address contains this (case-insensitive).
    pub from: Option<String>,
    /// A recipient address contains this (case-insensitive).
    pub to: Option<String>,
    pub received_from_ms: Option<i64>,
    pub received_until_ms: Option<i64>,
    pub unread: Option<bool>,
    pub correlated: Option<bool>,
    /// Only messages related to this record: (type, id).
    pub related_to: Option<(String, String)>,
    pub conversation_id: Option<Uuid>,
    /// Only this message.
    pub only_id: Option<Uuid>,
    /// Paging cursor: the (received_at, id) of the last item of the previous page.
    pub after: Option<(i64, Uuid)>,
    pub limit: u32,
}

const INBOUND_COLUMNS: &str = "i.id, i.mailbox_id, i.owner_user_id, i.folder, i.uid, i.message_id_header, i.subject, i.from_json, i.to_json, i.cc_json, i.reply_to_json, i.references_json, i.sent_at, i.received_at, i.size, i.flags_json, i.seen, i.raw_sha256, i.unparsed, i.correlation_method, i.conversation_id, i.created_at";

const INBOUND_RELEVANT: &str =
    "SELECT 1 FROM inbound_related_records r WHERE r.inbound_id = i.id AND r.record_type <> 'user'";

fn json<T: serde::de::DeserializeOwned + Default>(raw: Option<String>) -> T {
    raw.and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn inbound_from_row(row: &impl StoreRow) -> StoreResult<InboundMessage> {
    Ok(InboundMessage {
        id: parse_uuid(&row.get::<String, _>("id"))?,
        mailbox_id: parse_uuid(&row.get::<String, _>("mailbox_id"))?,
        owner_user_id: row
            .get::<Option<String>, _>("owner_user_id")
            .map(|id| parse_uuid(&id))
            .transpose()?,
        folder: row.get("folder"),
        uid: row.get::<i64, _>("uid") as u32,
        message_id_header: row.get("message_id_header"),
        subject: row.get("subject"),
        from: json::<Option<InboundAddress>>(row.get("from_json")),
        to: json(Some(row.get("to_json"))),
        cc: json(Some(row.get("cc_json"))),
        reply_to: json(Some(row.get("reply_to_json"))),
        references: json(Some(row.get("references_json"))),
        sent_at_ms: row.get("sent_at"),
        received_at_ms: row.get("received_at"),
        size: row.get::<i64, _>("size") as u64,
        flags: json(Some(row.get("flags_json"))),
        seen: row.get("seen"),
        raw_sha256: row.get("raw_sha256"),
        unparsed: row.get("unparsed"),
        correlation_method: row
            .get::<Option<String>, _>("correlation_method")
            .map(|m| m.parse())
            .transpose()?,
        conversation_id: parse_uuid(&row.get::<String, _>("conversation_id"))?,
        created_at_ms: row.get("created_at"),
    })
}

fn folder_from_row(row: &impl StoreRow) -> FolderState {
    FolderState {
        folder: row.get("folder"),
        uidvalidity: row.get::<i64, _>("uidvalidity") as u32,
        uidnext: row.get::<i64, _>("uidnext") as u32,
        highestmodseq: row.get::<Option<i64>, _>("highestmodseq").map(|v| v as u64),
        initial_below: row.get::<i64, _>("initial_below") as u32,
        validity_changes: row.get::<i64, _>("validity_changes") as u32,
        validity_changed_at_ms: row.get("validity_changed_at"),
        synced_at_ms: row.get("synced_at"),
    }
}

/// The records of the message (outbound or inbound: ids are unique across both) a received message
/// was correlated to.
const RECORDS_OF: &str = "SELECT record_type, record_id FROM related_records WHERE message_id = $1
     UNION SELECT record_type, record_id FROM inbound_related_records WHERE inbound_id = $1";

/// A [`Found`] conversation with the records of `$message`, read in transaction `$tx`.
macro_rules! inherit {
    ($tx:ident, $message:expr, $conversation:expr, $method:expr) => {{
        let records: Vec<(String, String)> = sqlx::query_as(RECORDS_OF)
            .bind($message)
            .fetch_all(&mut *$tx)
            .await?;
        Found {
            conversation: $conversation,
            method: $method,
            records,
        }
    }};
}

/// A conversation found for a received message: its id, how, and the records it concerns.
struct Found {
    conversation: String,
    method: CorrelationMethod,
    records: Vec<(String, String)>,
}

impl Store {
    /// The synchronization state of each folder of a mailbox.
    pub async fn folder_states(&self, mailbox_id: Uuid) -> StoreResult<Vec<FolderState>> {
        on_db!(self, |writer, reader| {
            let rows =
                sqlx::query("SELECT * FROM mailbox_folders WHERE mailbox_id = $1 ORDER BY folder")
                    .bind(mailbox_id.to_string())
                    .fetch_all(reader)
                    .await?;
            Ok(rows.iter().map(folder_from_row).collect())
        })
    }

    /// Records how far a folder has been read (after the messages up to there are stored).
    pub async fn save_folder_state(
        &self,
        mailbox_id: Uuid,
        state: &FolderState,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO mailbox_folders (mailbox_id, folder, uidvalidity, uidnext, highestmodseq, initial_below, validity_changes, validity_changed_at, synced_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (mailbox_id, folder) DO UPDATE SET uidvalidity = excluded.uidvalidity, uidnext = excluded.uidnext,
                   highestmodseq = excluded.highestmodseq, initial_below = excluded.initial_below,
                   validity_changes = excluded.validity_changes, validity_changed_at = excluded.validity_changed_at,
                   synced_at = excluded.synced_at",
            )
            .bind(mailbox_id.to_string())
            .bind(&state.folder)
            .bind(i64::from(state.uidvalidity))
            .bind(i64::from(state.uidnext))
            .bind(state.highestmodseq.map(|v| v as i64))
            .bind(i64::from(state.initial_below))
            .bind(i64::from(state.validity_changes))
            .bind(state.validity_changed_at_ms)
            .bind(state.synced_at_ms)
            .execute(writer)
            .await?;
            Ok(())
        })
    }

    /// The messages of a folder stored under an earlier UIDVALIDITY, as (id, Message-ID, size,
    /// SHA-256 of the raw message):
    /// what a re-index after a UIDVALIDITY change matches the server's messages against.
    pub async fn inbound_under_other_validity(
        &self,
        mailbox_id: Uuid,
        folder: &str,
        uidvalidity: u32,
    ) -> StoreResult<Vec<(Uuid, Option<String>, u64, String)>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT id, message_id_header, size, raw_sha256 FROM inbound_messages WHERE mailbox_id = $1 AND folder = $2 AND uidvalidity <> $3",
            )
            .bind(mailbox_id.to_string())
            .bind(folder)
            .bind(i64::from(uidvalidity))
            .fetch_all(reader)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok((
                        parse_uuid(&row.get::<String, _>("id"))?,
                        row.get::<Option<String>, _>("message_id_header"),
                        row.get::<i64, _>("size") as u64,
                        row.get::<String, _>("raw_sha256"),
                    ))
                })
                .collect()
        })
    }

    /// Moves stored messages to their UIDs under a new UIDVALIDITY (a re-index found them again).
    pub async fn move_inbound_uids(
        &self,
        uidvalidity: u32,
        moves: &[(Uuid, u32)],
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            for (id, uid) in moves {
                sqlx::query("UPDATE inbound_messages SET uidvalidity = $2, uid = $3 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(i64::from(uidvalidity))
                    .bind(i64::from(*uid))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Brings stored messages' flags to what the server reports now (CONDSTORE changes since the
    /// folder's HIGHESTMODSEQ); UIDs not stored are ignored. Returns how many messages changed.
    pub async fn update_inbound_flags(
        &self,
        mailbox_id: Uuid,
        folder: &str,
        uidvalidity: u32,
        changes: &[(u32, Vec<String>)],
    ) -> StoreResult<u64> {
        if changes.is_empty() {
            return Ok(0);
        }
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let mut changed = 0;
            for (uid, flags) in changes {
                let flags_json = to_json(flags);
                changed += sqlx::query(
                    "UPDATE inbound_messages SET flags_json = $5, seen = $6 \
                     WHERE mailbox_id = $1 AND folder = $2 AND uidvalidity = $3 AND uid = $4 AND flags_json <> $5",
                )
                .bind(mailbox_id.to_string())
                .bind(folder)
                .bind(i64::from(uidvalidity))
                .bind(i64::from(*uid))
                .bind(&flags_json)
                .bind(flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// Whether this UID of this folder is stored already.
    pub async fn inbound_stored_uids(
        &self,
        mailbox_id: Uuid,
        folder: &str,
        uidvalidity: u32,
        uids: &[u32],
    ) -> StoreResult<Vec<u32>> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        on_db!(self, |writer, reader| {
            let mut query =
                QueryBuilder::new("SELECT uid FROM inbound_messages WHERE mailbox_id = ");
            query
                .push_bind(mailbox_id.to_string())
                .push(" AND folder = ")
                .push_bind(folder.to_owned())
                .push(" AND uidvalidity = ")
                .push_bind(i64::from(uidvalidity))
                .push(" AND uid IN (");
            let mut list = query.separated(", ");
            for uid in uids {
                list.push_bind(i64::from(*uid));
            }
            query.push(")");
            let found: Vec<i64> = query.build_query_scalar().fetch_all(reader).await?;
            Ok(found.into_iter().map(|uid| uid as u32).collect())
        })
    }

    /// Stores a received message, correlated to its conversation, with its `message.received`
    /// event, in one transaction. A UID stored before is not stored again.
    pub async fn insert_inbound(&self, new: NewInbound<'_>) -> StoreResult<InboundOutcome> {
        Ok(self
            .insert_inbound_batch(std::slice::from_ref(&new))
            .await?
            .remove(0))
    }

    /// Stores received messages in one transaction (each as [`Store::insert_inbound`] would):
    /// a batch read from a folder is durable at once, or not at all.
    pub async fn insert_inbound_batch(
        &self,
        news: &[NewInbound<'_>],
    ) -> StoreResult<Vec<InboundOutcome>> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let mut outcomes = Vec::with_capacity(news.len());
            for new in news {
                let parsed = new.parsed;
                let outcome = 'one: {
                    let existing: Option<String> = sqlx::query_scalar(
                        "SELECT id FROM inbound_messages WHERE mailbox_id = $1 AND folder = $2 AND uidvalidity = $3 AND uid = $4",
                    )
                    .bind(new.mailbox_id.to_string())
                    .bind(new.folder)
                    .bind(i64::from(new.uidvalidity))
                    .bind(i64::from(new.uid))
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(id) = existing {
                        break 'one InboundOutcome::AlreadyStored(parse_uuid(&id)?);
                    }
                    // The same message stored under the folder's earlier UIDVALIDITY (matched by
                    // Message-ID and size, or by content without a Message-ID) moves to its new UID.
                    // (Two statements, so that each reads through its own index.)
                    let earlier: Option<String> = match &parsed.message_id {
                        Some(message_id) => {
                            sqlx::query_scalar(
                                "SELECT id FROM inbound_messages WHERE message_id_header = $5 AND mailbox_id = $1 AND folder = $2
                                   AND uidvalidity <> $3 AND size = $4 ORDER BY id LIMIT 1",
                            )
                            .bind(new.mailbox_id.to_string())
                            .bind(new.folder)
                            .bind(i64::from(new.uidvalidity))
                            .bind(new.size as i64)
                            .bind(message_id)
                            .fetch_optional(&mut *tx)
                            .await?
                        }
                        None => {
                            sqlx::query_scalar(
                                "SELECT id FROM inbound_messages WHERE raw_sha256 = $5 AND mailbox_id = $1 AND folder = $2
                                   AND uidvalidity <> $3 AND size = $4 AND message_id_header IS NULL ORDER BY id LIMIT 1",
                            )
                            .bind(new.mailbox_id.to_string())
                            .bind(new.folder)
                            .bind(i64::from(new.uidvalidity))
                            .bind(new.size as i64)
                            .bind(&new.raw_sha256)
                            .fetch_optional(&mut *tx)
                            .await?
                        }
                    };
                    if let Some(id) = earlier {
                        sqlx::query(
                            "UPDATE inbound_messages SET uidvalidity = $2, uid = $3 WHERE id = $1",
                        )
                        .bind(&id)
                        .bind(i64::from(new.uidvalidity))
                        .bind(i64::from(new.uid))
                        .execute(&mut *tx)
                        .await?;
                        break 'one InboundOutcome::AlreadyStored(parse_uuid(&id)?);
                    }
                    // The correlation pipeline: the first method that finds a conversation wins.
                    let mut found: Option<Found> = None;
                    for reference in &new.keys.referenced_ids {
                        let outbound = sqlx::query(
                            "SELECT COALESCE(conversation_id, id) AS conversation, id FROM messages WHERE message_id_header = $1 OR message_id_header = $2",
                        )
                        // Outbound Message-IDs are stored with their angle brackets.
                        .bind(format!("<{reference}>"))
                        .bind(reference)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(row) = outbound {
                            found = Some(inherit!(
                                tx,
                                row.get::<String, _>("id"),
                                row.get("conversation"),
                                CorrelationMethod::InReplyTo
                            ));
                            break;
                        }
                        let inbound = sqlx::query(
                            "SELECT conversation_id, id FROM inbound_messages WHERE message_id_header = $1 ORDER BY id LIMIT 1",
                        )
                        .bind(reference)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(row) = inbound {
                            found = Some(inherit!(
                                tx,
                                row.get::<String, _>("id"),
                                row.get("conversation_id"),
                                CorrelationMethod::InReplyTo
                            ));
                            break;
                        }
                    }
                    // 2 and 3: a tracking token in the subject, then in a plus-address.
                    let tokens = new
                        .keys
                        .subject_token
                        .iter()
                        .map(|t| (t, CorrelationMethod::SubjectToken))
                        .chain(
                            new.keys
                                .address_tokens
                                .iter()
                                .map(|t| (t, CorrelationMethod::AddressToken)),
                        );
                    for (token, method) in tokens {
                        if found.is_some() {
                            break;
                        }
                        let conversation: Option<String> = sqlx::query_scalar(
                            "SELECT conversation_id FROM conversation_tokens WHERE token = $1",
                        )
                        .bind(token)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(conversation) = conversation {
                            found = Some(inherit!(tx, &conversation, conversation, method));
                        }
                    }
                    if found.is_none()
                        && let Some(index) = &new.keys.thread_index
                    {
                        let earlier = sqlx::query(
                            "SELECT conversation_id, id FROM inbound_messages WHERE thread_index = $1 ORDER BY id LIMIT 1",
                        )
                        .bind(index)
                        .fetch_optional(&mut *tx)
                        .await?;
                        if let Some(row) = earlier {
                            found = Some(inherit!(
                                tx,
                                row.get::<String, _>("id"),
                                row.get("conversation_id"),
                                CorrelationMethod::ThreadIndex
                            ));
                        }
                    }
                    // 5: smart matching, the same normalised subject and participants within N days,
                    // among stored and sent mail alike: the most recent wins.
                    if found.is_none()
                        && let Some(smart) = &new.keys.smart
                    {
                        let since = new.received_at_ms - i64::from(smart.within_days) * 86_400_000;
                        let received = sqlx::query(
                            "SELECT conversation_id, id, received_at FROM inbound_messages WHERE normalized_subject = $1 AND participants = $2 AND received_at >= $3
                             ORDER BY received_at DESC LIMIT 1",
                        )
                        .bind(&smart.subject)
                        .bind(smart.participants.join(" "))
                        .bind(since)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|row| {
                            (
                                row.get::<i64, _>("received_at"),
                                row.get::<String, _>("id"),
                                row.get::<String, _>("conversation_id"),
                            )
                        });
                        let sent = sqlx::query(
                            "SELECT COALESCE(conversation_id, id) AS conversation, id, created_at FROM messages WHERE smart_key = $1 AND created_at >= $2
                             ORDER BY created_at DESC LIMIT 1",
                        )
                        .bind(smart.digest())
                        .bind(since)
                        .fetch_optional(&mut *tx)
                        .await?
                        .map(|row| {
                            (
                                row.get::<i64, _>("created_at"),
                                row.get::<String, _>("id"),
                                row.get::<String, _>("conversation"),
                            )
                        });
                        if let Some((_, id, conversation)) = received.into_iter().chain(sent).max()
                        {
                            found = Some(inherit!(
                                tx,
                                id,
                                conversation,
                                CorrelationMethod::SmartMatch
                            ));
                        }
                    }
                    // Known contacts among the participants, and the records they belong to (A12).
                    let participants: Vec<String> = parsed
                        .from
                        .iter()
                        .chain(&parsed.to)
                        .chain(&parsed.cc)
                        .map(|a| a.address.to_ascii_lowercase())
                        .collect();
                    let mut contact_records: Vec<(String, String)> = Vec::new();
                    let mut known_contact = false;
                    if !participants.is_empty() {
                        let mut query = QueryBuilder::new(
                            "SELECT a.contact_id, r.record_type, r.record_id FROM contact_addresses a LEFT JOIN contact_records r ON r.contact_id = a.contact_id WHERE a.address IN (",
                        );
                        let mut list = query.separated(", ");
                        for address in &participants {
                            list.push_bind(address.clone());
                        }
                        query.push(")");
                        let rows = query.build().fetch_all(&mut *tx).await?;
                        known_contact = !rows.is_empty();
                        for row in &rows {
                            if let (Some(record_type), Some(record_id)) = (
                                row.get::<Option<String>, _>("record_type"),
                                row.get::<Option<String>, _>("record_id"),
                            ) {
                                contact_records.push((record_type, record_id));
                            }
                        }
                    }
                    let keep = match new.filter {
                        MailboxFilter::All => true,
                        MailboxFilter::ResponsesToTracked => found.is_some(),
                        MailboxFilter::KnownContacts => known_contact,
                        MailboxFilter::None => false,
                    };
                    if !keep {
                        break 'one InboundOutcome::Filtered;
                    }
                    let id = Uuid::now_v7();
                    let now = now_ms();
                    let (conversation, method, mut records) = match found {
                        Some(found) => (found.conversation, Some(found.method), found.records),
                        None => (id.to_string(), None, Vec::new()),
                    };
                    records.extend(contact_records);
                    records.sort();
                    records.dedup();
                    sqlx::query(
                        "INSERT INTO inbound_messages (id, mailbox_id, owner_user_id, folder, uidvalidity, uid, message_id_header, subject, from_address, from_json,
                           to_json, cc_json, reply_to_json, references_json, sent_at, received_at, size, flags_json, seen, raw_sha256, unparsed, thread_index,
                           correlation_method, conversation_id, created_at, normalized_subject, participants)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)",
                    )
                    .bind(id.to_string())
                    .bind(new.mailbox_id.to_string())
                    .bind(new.owner_user_id.map(|u| u.to_string()))
                    .bind(new.folder)
                    .bind(i64::from(new.uidvalidity))
                    .bind(i64::from(new.uid))
                    .bind(&parsed.message_id)
                    .bind(&parsed.subject)
                    .bind(parsed.from.as_ref().map(|a| a.address.to_ascii_lowercase()))
                    .bind(parsed.from.as_ref().map(to_json))
                    .bind(to_json(&parsed.to))
                    .bind(to_json(&parsed.cc))
                    .bind(to_json(&parsed.reply_to))
                    .bind(to_json(&parsed.references))
                    .bind(parsed.date_ms)
                    .bind(new.received_at_ms)
                    .bind(new.size as i64)
                    .bind(to_json(&new.flags))
                    .bind(new.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")))
                    .bind(&new.raw_sha256)
                    .bind(parsed.unparsed)
                    .bind(&parsed.thread_index)
                    .bind(method.map(|m| m.as_str()))
                    .bind(&conversation)
                    .bind(now)
                    .bind((!parsed.subject.trim().is_empty()).then(|| mailroom_core::inbound::normalize_subject(&parsed.subject)))
                    .bind({
                        let mut sorted = participants.clone();
                        sorted.sort();
                        sorted.dedup();
                        sorted.join(" ")
                    })
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query(
                        "INSERT INTO inbound_contents (inbound_id, headers_json, text_body, html_body) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(id.to_string())
                    .bind(to_json(&parsed.headers))
                    .bind(&parsed.text)
                    .bind(&parsed.html)
                    .execute(&mut *tx)
                    .await?;
                    for part in &new.parts {
                        sqlx::query(
                            "INSERT INTO inbound_attachments (inbound_id, part_path, name, content_type, size, sha256) VALUES ($1, $2, $3, $4, $5, $6)",
                        )
                        .bind(id.to_string())
                        .bind(&part.path)
                        .bind(&part.name)
                        .bind(&part.content_type)
                        .bind(part.size as i64)
                        .bind(&part.sha256)
                        .execute(&mut *tx)
                        .await?;
                    }
                    for (record_type, record_id) in &records {
                        sqlx::query(
                            "INSERT INTO inbound_related_records (inbound_id, record_type, record_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                        )
                        .bind(id.to_string())
                        .bind(record_type)
                        .bind(record_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    sqlx::query(
                        "INSERT INTO events (kind, subject_id, payload_json, created_at) VALUES ('message.received', $1, $2, $3)",
                    )
                    .bind(id.to_string())
                    .bind(
                        serde_json::json!({
                            "id": id,
                            "mailbox_id": new.mailbox_id,
                            "folder": new.folder,
                            "message_id": parsed.message_id,
                            "subject": parsed.subject,
                            "from": parsed.from,
                            "conversation_id": conversation,
                            "correlation_method": method.map(|m| m.as_str()),
                        })
                        .to_string(),
                    )
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    InboundOutcome::Stored(id)
                };
                outcomes.push(outcome);
            }
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    /// A received message with its contents, if `visibility` lets its viewer see it.
    pub async fn inbound_detail(
        &self,
        id: Uuid,
        visibility: Option<&Visibility>,
    ) -> StoreResult<InboundDetail> {
        let page = self
            .inbound_page(&InboundFilter {
                visibility: visibility.cloned(),
                only_id: Some(id),
                limit: 1,
                ..Default::default()
            })
            .await?;
        let message = page
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::NotFound(format!("inbound message {id}")))?;
        on_db!(self, |writer, reader| {
            let content = sqlx::query(
                "SELECT headers_json, text_body, html_body FROM inbound_contents WHERE inbound_id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(reader)
            .await?;
            let parts = sqlx::query(
                "SELECT part_path, name, content_type, size, sha256 FROM inbound_attachments WHERE inbound_id = $1",
            )
            .bind(id.to_string())
            .fetch_all(reader)
            .await?;
            let records: Vec<(String, String)> = sqlx::query_as(
                "SELECT record_type, record_id FROM inbound_related_records WHERE inbound_id = $1 ORDER BY record_type, record_id",
            )
            .bind(id.to_string())
            .fetch_all(reader)
            .await?;
            let mut attachments: Vec<StoredPart> = parts
                .iter()
                .map(|row| StoredPart {
                    path: row.get("part_path"),
                    name: row.get("name"),
                    content_type: row.get("content_type"),
                    size: row.get::<i64, _>("size") as u64,
                    sha256: row.get("sha256"),
                })
                .collect();
            // Part order: 1, 2, 2.1, 2.2, 10 — numerically, level by level.
            attachments.sort_by_key(|part| {
                part.path
                    .split('.')
                    .map(|n| n.parse::<u32>().unwrap_or(u32::MAX))
                    .collect::<Vec<_>>()
            });
            Ok(InboundDetail {
                message,
                headers: json(content.as_ref().map(|c| c.get::<String, _>("headers_json"))),
                text: content.as_ref().and_then(|c| c.get("text_body")),
                html: content.as_ref().and_then(|c| c.get("html_body")),
                attachments,
                related_records: records
                    .into_iter()
                    .map(|(record_type, record_id)| RelatedRecord {
                        record_type,
                        record_id,
                        relation: mailroom_core::message::Relation::Related,
                    })
                    .collect(),
            })
        })
    }

    /// Received messages matching `filter`, newest first, with the view policy applied inside the
    /// query.
    pub async fn inbound_page(&self, filter: &InboundFilter) -> StoreResult<Vec<InboundMessage>> {
        on_db!(self, |writer, reader| {
            let mut query = QueryBuilder::new(format!(
                "SELECT {INBOUND_COLUMNS} FROM inbound_messages i WHERE 1 = 1"
            ));
            if let Some(id) = filter.only_id {
                query.push(" AND i.id = ").push_bind(id.to_string());
            }
            if let Some(mailbox) = filter.mailbox_id {
                query
                    .push(" AND i.mailbox_id = ")
                    .push_bind(mailbox.to_string());
            }
            if let Some(folder) = &filter.folder {
                query.push(" AND i.folder = ").push_bind(folder.clone());
            }
            if let Some(from) = &filter.from {
                query
                    .push(" AND i.from_address LIKE ")
                    .push_bind(format!("%{}%", from.to_ascii_lowercase()));
            }
            if let Some(to) = &filter.to {
                query
                    .push(" AND LOWER(i.to_json || i.cc_json) LIKE ")
                    .push_bind(format!("%{}%", to.to_ascii_lowercase()));
            }
            if let Some(from) = filter.received_from_ms {
                query.push(" AND i.received_at >= ").push_bind(from);
            }
            if let Some(until) = filter.received_until_ms {
                query.push(" AND i.received_at < ").push_bind(until);
            }
            if let Some(unread) = filter.unread {
                query.push(" AND i.seen = ").push_bind(!unread);
            }
            if let Some(correlated) = filter.correlated {
                query.push(if correlated {
                    " AND i.correlation_method IS NOT NULL"
                } else {
                    " AND i.correlation_method IS NULL"
                });
            }
            if let Some(conversation) = filter.conversation_id {
                query
                    .push(" AND i.conversation_id = ")
                    .push_bind(conversation.to_string());
            }
            if let Some((record_type, record_id)) = &filter.related_to {
                query
                    .push(" AND EXISTS (SELECT 1 FROM inbound_related_records x WHERE x.inbound_id = i.id AND x.record_type = ")
                    .push_bind(record_type.clone())
                    .push(" AND x.record_id = ")
                    .push_bind(record_id.clone())
                    .push(")");
            }
            if let Some(visibility) = &filter.visibility {
                push_visibility_on(&mut query, visibility, "i.owner_user_id", INBOUND_RELEVANT);
            }
            if let Some((received_at, id)) = filter.after {
                query
                    .push(" AND (i.received_at < ")
                    .push_bind(received_at)
                    .push(" OR (i.received_at = ")
                    .push_bind(received_at)
                    .push(" AND i.id < ")
                    .push_bind(id.to_string())
                    .push("))");
            }
            query
                .push(" ORDER BY i.received_at DESC, i.id DESC LIMIT ")
                .push_bind(i64::from(filter.limit.clamp(1, 1000)));
            let rows = query.build().fetch_all(reader).await?;
            rows.iter().map(inbound_from_row).collect()
        })
    }

    /// Sets the records a received message concerns by hand (set regarding); an empty list
    /// untracks it. Unknown id: not found.
    pub async fn set_inbound_related_records(
        &self,
        id: Uuid,
        records: &[RelatedRecord],
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let known: Option<String> =
                sqlx::query_scalar("SELECT id FROM inbound_messages WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if known.is_none() {
                return Err(StoreError::NotFound(format!("inbound message {id}")));
            }
            sqlx::query("DELETE FROM inbound_related_records WHERE inbound_id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            for record in records {
                sqlx::query(
                    "INSERT INTO inbound_related_records (inbound_id, record_type, record_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(id.to_string())
                .bind(&record.record_type)
                .bind(&record.record_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The outbound messages of a conversation (the one that started it and those sent into it).
    pub async fn conversation_outbound_ids(&self, conversation: Uuid) -> StoreResult<Vec<Uuid>> {
        on_db!(self, |writer, reader| {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM messages WHERE id = $1 OR conversation_id = $1 ORDER BY id",
            )
            .bind(conversation.to_string())
            .fetch_all(reader)
            .await?;
            ids.iter().map(|id| parse_uuid(id)).collect()
        })
    }
}

/// JSON text of a value (every value stored here serializes).
fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

impl Store {
    /// Mailboxes whose incoming mail is synchronized now: enabled, incoming by server-side sync,
    /// tested, approved where the organisation requires it, and with a filter that keeps mail.
    pub async fn mailboxes_to_sync(&self) -> StoreResult<Vec<crate::MailboxRecord>> {
        let settings = self.email_settings().await?;
        let candidates: Vec<crate::MailboxRecord> = on_db!(self, |writer, reader| {
            let sql = format!(
                "SELECT {} FROM mailboxes WHERE enabled = TRUE AND incoming = 'server-side-sync' AND filter <> 'none' ORDER BY id",
                crate::mailboxes::MAILBOX_COLUMNS
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(reader)
                .await?;
            rows.iter()
                .map(crate::mailboxes::mailbox_from_row)
                .collect::<StoreResult<_>>()?
        });
        let ready = candidates
            .into_iter()
            .filter(|mailbox| {
                mailroom_core::mailbox::ready_for(
                    Some(&mailbox.readiness()),
                    mailroom_core::mailbox::Direction::Incoming,
                    &settings,
                )
                .is_ok()
            })
            .collect();
        Ok(ready)
    }

    /// Takes or renews `node`'s hold on synchronizing a mailbox until `until`; `false` while
    /// another node holds it.
    pub async fn hold_mailbox_sync(
        &self,
        mailbox_id: Uuid,
        node: &str,
        now: i64,
        until: i64,
    ) -> StoreResult<bool> {
        on_db!(self, |writer, reader| {
            let held: Option<String> = sqlx::query_scalar(
                "INSERT INTO mailbox_sync_holds (mailbox_id, owner, held_until) VALUES ($1, $2, $3)
                 ON CONFLICT (mailbox_id) DO UPDATE SET owner = excluded.owner, held_until = excluded.held_until
                 WHERE mailbox_sync_holds.owner = excluded.owner OR mailbox_sync_holds.held_until < $4
                 RETURNING owner",
            )
            .bind(mailbox_id.to_string())
            .bind(node)
            .bind(until)
            .bind(now)
            .fetch_optional(writer)
            .await?;
            Ok(held.is_some())
        })
    }

    /// Renews every hold `node` has until `until`; returns the mailboxes it still holds (a hold
    /// that expired and was taken by another node is not among them).
    pub async fn renew_mailbox_sync_holds(&self, node: &str, until: i64) -> StoreResult<Vec<Uuid>> {
        on_db!(self, |writer, reader| {
            let ids: Vec<String> = sqlx::query_scalar(
                "UPDATE mailbox_sync_holds SET held_until = $2 WHERE owner = $1 RETURNING mailbox_id",
            )
            .bind(node)
            .bind(until)
            .fetch_all(writer)
            .await?;
            ids.iter().map(|id| parse_uuid(id)).collect()
        })
    }

    /// Gives up `node`'s hold on a mailbox (it stopped synchronizing it).
    pub async fn release_mailbox_sync(&self, mailbox_id: Uuid, node: &str) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query("DELETE FROM mailbox_sync_holds WHERE mailbox_id = $1 AND owner = $2")
                .bind(mailbox_id.to_string())
                .bind(node)
                .execute(writer)
                .await?;
            Ok(())
        })
    }
}

impl Store {
    /// Puts an outbound message into a conversation (a reply or forward sent from mailroom).
    pub async fn set_message_conversation(
        &self,
        message_id: Uuid,
        conversation: Uuid,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query("UPDATE messages SET conversation_id = $2 WHERE id = $1")
                .bind(message_id.to_string())
                .bind(conversation.to_string())
                .execute(writer)
                .await?;
            Ok(())
        })
    }
}

/// A contact the business application knows: its addresses and the records it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub id: String,
    pub name: Option<String>,
    /// Lower-cased.
    pub addresses: Vec<String>,
    pub records: Vec<(String, String)>,
    pub updated_at_ms: i64,
}

impl Store {
    /// The tracking token of a conversation, made on first use (`[MR-TOKEN]`, `sales+TOKEN@`).
    pub async fn conversation_token(&self, conversation: Uuid) -> StoreResult<String> {
        on_db!(self, |writer, reader| {
            for _ in 0..16 {
                let existing: Option<String> = sqlx::query_scalar(
                    "SELECT token FROM conversation_tokens WHERE conversation_id = $1",
                )
                .bind(conversation.to_string())
                .fetch_optional(reader)
                .await?;
                if let Some(token) = existing {
                    return Ok(token);
                }
                let token = mailroom_core::inbound::tracking_token(rand::random::<u64>());
                sqlx::query(
                    "INSERT INTO conversation_tokens (token, conversation_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(&token)
                .bind(conversation.to_string())
                .bind(now_ms())
                .execute(writer)
                .await?;
            }
            Err(StoreError::Conflict(
                "no free tracking token was found; try again".into(),
            ))
        })
    }

    /// Creates or replaces a contact (its addresses and records as given).
    pub async fn put_contact(&self, contact: &Contact) -> StoreResult<Contact> {
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            sqlx::query(
                "INSERT INTO contacts (id, name, created_at, updated_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
            )
            .bind(&contact.id)
            .bind(&contact.name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for statement in [
                "DELETE FROM contact_addresses WHERE contact_id = $1",
                "DELETE FROM contact_records WHERE contact_id = $1",
            ] {
                sqlx::query(statement)
                    .bind(&contact.id)
                    .execute(&mut *tx)
                    .await?;
            }
            for address in &contact.addresses {
                sqlx::query(
                    "INSERT INTO contact_addresses (contact_id, address) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(&contact.id)
                .bind(address.to_ascii_lowercase())
                .execute(&mut *tx)
                .await?;
            }
            for (record_type, record_id) in &contact.records {
                sqlx::query(
                    "INSERT INTO contact_records (contact_id, record_type, record_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                )
                .bind(&contact.id)
                .bind(record_type)
                .bind(record_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        self.contact(&contact.id).await
    }

    pub async fn contact(&self, id: &str) -> StoreResult<Contact> {
        on_db!(self, |writer, reader| {
            let row = sqlx::query("SELECT id, name, updated_at FROM contacts WHERE id = $1")
                .bind(id)
                .fetch_optional(reader)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("contact {id}")))?;
            let addresses: Vec<String> = sqlx::query_scalar(
                "SELECT address FROM contact_addresses WHERE contact_id = $1 ORDER BY address",
            )
            .bind(id)
            .fetch_all(reader)
            .await?;
            let records: Vec<(String, String)> = sqlx::query_as(
                "SELECT record_type, record_id FROM contact_records WHERE contact_id = $1 ORDER BY record_type, record_id",
            )
            .bind(id)
            .fetch_all(reader)
            .await?;
            Ok(Contact {
                id: row.get("id"),
                name: row.get("name"),
                addresses,
                records,
                updated_at_ms: row.get("updated_at"),
            })
        })
    }

    pub async fn delete_contact(&self, id: &str) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            for statement in [
                "DELETE FROM contact_addresses WHERE contact_id = $1",
                "DELETE FROM contact_records WHERE contact_id = $1",
            ] {
                sqlx::query(statement).bind(id).execute(&mut *tx).await?;
            }
            let deleted = sqlx::query("DELETE FROM contacts WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound(format!("contact {id}")));
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

impl Store {
    /// The organisation's correlation settings (defaults until set).
    pub async fn correlation_settings(
        &self,
    ) -> StoreResult<mailroom_core::inbound::CorrelationSettings> {
        on_db!(self, |writer, reader| {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT value_json FROM settings WHERE name = 'correlation'")
                    .fetch_optional(reader)
                    .await?;
            Ok(stored
                .and_then(|raw| serde_json::from_str(&raw).ok())
                .unwrap_or_default())
        })
    }

    /// Replaces the correlation settings.
    pub async fn set_correlation_settings(
        &self,
        settings: &mailroom_core::inbound::CorrelationSettings,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO settings (name, value_json, updated_at) VALUES ('correlation', $1, $2)
                 ON CONFLICT (name) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at",
            )
            .bind(to_json(settings))
            .bind(now_ms())
            .execute(writer)
            .await?;
            Ok(())
        })
    }
}

impl Store {
    /// Messages stored per folder of a mailbox.
    pub async fn inbound_counts(&self, mailbox_id: Uuid) -> StoreResult<Vec<(String, i64)>> {
        on_db!(self, |writer, reader| {
            Ok(sqlx::query_as(
                "SELECT folder, COUNT(*) FROM inbound_messages WHERE mailbox_id = $1 GROUP BY folder ORDER BY folder",
            )
            .bind(mailbox_id.to_string())
            .fetch_all(reader)
            .await?)
        })
    }
}
