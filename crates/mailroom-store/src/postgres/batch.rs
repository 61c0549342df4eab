//! Group inserts on PostgreSQL: new mail waiting at one moment is stored in one statement (the
//! rows travel as arrays; each table is a data-modifying CTE), so that a message costs a share of a
//! commit and of one round trip instead of a commit and ten round trips of its own. Several such
//! statements run at once, so PostgreSQL's own group commit still applies.
//!
//! A message with attachments, or a batch that fails (a key committed meanwhile by another node,
//! say), is stored on its own by [`super::hot::insert`], which handles every case one by one.

use crate::StoreResult;
use crate::messages::{
    InsertOutcome, NewMessage, headers_to_json, mailboxes_to_json, parse_uuid, record_types_key,
    related_to_json,
};
use sqlx::Row;
use sqlx::postgres::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most messages in one transaction.
const BATCH: usize = 256;
/// Transactions in flight at once: one being stored while the next gathers what arrives meanwhile.
/// Each node has its own groups, so several nodes on one database multiply the transactions in
/// flight and divide the groups: with 4 per node, three nodes stored 4.7 messages per group and
/// delivered 0.47× of one node; with 2, 0.58× (and one node a little more too); with 1, 0.65× — but a
/// slow group (a lock wait, a large message) would then hold up every insert of its node.
const IN_FLIGHT: usize = 2;
/// While another group is being stored (the node is busy), a group smaller than this waits up to
/// [`GATHER_FOR`] for more before it starts: a group's statements cost nearly as much for 4 messages
/// as for 40, and with several nodes each node's groups were a third of one node's (measured with
/// three nodes and 4 in flight: 4.7 messages per group against 13). A message arriving at a quiet
/// moment does not wait.
const GATHER_BELOW: usize = 64;
const GATHER_FOR: std::time::Duration = std::time::Duration::from_millis(5);

type Request = (Box<NewMessage>, oneshot::Sender<StoreResult<InsertOutcome>>);

/// Takes inserts and stores them in groups.
#[derive(Clone)]
pub(crate) struct Batcher {
    requests: mpsc::Sender<Request>,
}

impl Batcher {
    pub(crate) fn start(pool: PgPool) -> Self {
        let (requests, mut receiver) = mpsc::channel::<Request>(4096);
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            while let Some(first) = receiver.recv().await {
                // Wait for a free slot first: what arrives meanwhile joins this group.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                if batch.len() < GATHER_BELOW && slots.available_permits() < IN_FLIGHT - 1 {
                    let until = tokio::time::Instant::now() + GATHER_FOR;
                    while batch.len() < BATCH {
                        match tokio::time::timeout_at(until, receiver.recv()).await {
                            Ok(Some(request)) => batch.push(request),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
                let pool = pool.clone();
                tokio::spawn(async move {
                    store_batch(&pool, batch).await;
                    drop(slot);
                });
            }
        });
        Self { requests }
    }

    pub(crate) async fn insert(&self, message: NewMessage) -> StoreResult<InsertOutcome> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((Box::new(message), reply))
            .await
            .map_err(|_| crate::StoreError::Closed)?;
        answer.await.map_err(|_| crate::StoreError::Closed)?
    }
}

async fn store_batch(pool: &PgPool, batch: Vec<Request>) {
    // Each (author, key) at most once per group; attachments are checked one by one.
    let mut seen = HashSet::new();
    let (grouped, alone): (Vec<Request>, Vec<Request>) = batch.into_iter().partition(|(m, _)| {
        m.attachments.is_empty()
            && m.idempotency_key
                .as_ref()
                .is_none_or(|key| seen.insert((m.created_by.clone(), key.clone())))
    });
    for (message, reply) in alone {
        let _ = reply.send(super::hot::insert(pool, &message).await);
    }
    if grouped.is_empty() {
        return;
    }
    let messages: Vec<&NewMessage> = grouped.iter().map(|(m, _)| m.as_ref()).collect();
    match insert_group(pool, &messages).await {
        Ok(outcomes) => {
            for ((_, reply), outcome) in grouped.into_iter().zip(outcomes) {
                let _ = reply.send(outcome);
            }
        }
        Err(error) => {
            if !error.is_full() {
                tracing::debug!(%error, size = grouped.len(), "a group insert failed; storing one by one");
            }
            for (message, reply) in grouped {
                let _ = reply.send(super::hot::insert(pool, &message).await);
            }
        }
    }
}

/// Stores the messages in one statement (its own transaction); answers for each in order. An
/// error for the whole group means nothing of it was stored; a message of an account that does not
/// exist is refused alone (`NotFound`), the others stored.
///
/// Whether a message that asked to be stored claimed may skip the queue is decided in the same
/// statement, per account (see `OVERTAKE_ALLOWANCE_MS`), and so is the `NOTIFY` that wakes idle
/// dispatchers when some of the group's mail joins the queue (delivered at the commit): storing a
/// group costs one round trip, two when some of its requests carry an idempotency key.
async fn insert_group(
    pool: &PgPool,
    messages: &[&NewMessage],
) -> StoreResult<Vec<StoreResult<InsertOutcome>>> {
    // Requests seen before: a replay, or a key reused for another request. A key committed by
    // another request after this read makes the statement fail on the unique index, and the
    // group's messages are then stored one by one.
    let keyed: Vec<(&str, &str)> = messages
        .iter()
        .filter_map(|m| Some((m.created_by.as_str(), m.idempotency_key.as_deref()?)))
        .collect();
    let mut earlier: HashMap<(String, String), (String, Option<String>)> = HashMap::new();
    if !keyed.is_empty() {
        let rows = sqlx::query(
            "SELECT m.created_by, m.idempotency_key, m.id, m.request_hash FROM messages m
             JOIN UNNEST($1::text[], $2::text[]) AS k(created_by, idempotency_key)
               ON m.created_by = k.created_by AND m.idempotency_key = k.idempotency_key",
        )
        .bind(keyed.iter().map(|(a, _)| *a).collect::<Vec<_>>())
        .bind(keyed.iter().map(|(_, k)| *k).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        for row in rows {
            earlier.insert(
                (row.get("created_by"), row.get("idempotency_key")),
                (row.get("id"), row.get("request_hash")),
            );
        }
    }

    let mut outcomes: Vec<Option<InsertOutcome>> = Vec::with_capacity(messages.len());
    let mut rows = Rows::default();
    for message in messages {
        if let Some(key) = &message.idempotency_key
            && let Some((id, hash)) = earlier.get(&(message.created_by.clone(), key.clone()))
        {
            let id = parse_uuid(id)?;
            outcomes.push(Some(
                if hash.as_deref() == message.request_hash.as_deref() {
                    InsertOutcome::Replayed(id)
                } else {
                    InsertOutcome::KeyReused(id)
                },
            ));
            continue;
        }
        let due_now = message
            .send_at_ms
            .is_none_or(|at| at <= message.created_at_ms);
        let claim = message.claim.as_ref().filter(|_| !message.draft && due_now);
        rows.push(message, claim);
        outcomes.push(None);
    }
    if rows.ids.is_empty() {
        return Ok(outcomes.into_iter().flatten().map(Ok).collect());
    }
    let newest = messages.iter().map(|m| m.created_at_ms).max().unwrap_or(0);
    let stored = rows.insert(pool, super::overtake_cutoff(newest)).await?;
    let status: HashMap<String, String> = stored.into_iter().collect();
    Ok(messages
        .iter()
        .zip(outcomes)
        .map(|(message, outcome)| {
            if let Some(outcome) = outcome {
                return Ok(outcome);
            }
            match status.get(&message.id.to_string()).map(String::as_str) {
                Some("sending") => Ok(InsertOutcome::Claimed(message.id)),
                Some(_) => Ok(InsertOutcome::Created(message.id)),
                // The statement stores only the messages of accounts that exist; nothing else of
                // this one was written.
                None => Err(crate::StoreError::NotFound(format!(
                    "account {}",
                    message.account_id
                ))),
            }
        })
        .collect())
}

/// The group's rows, column by column.
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    drafts: Vec<bool>,
    scenarios: Vec<String>,
    accounts: Vec<String>,
    message_ids: Vec<String>,
    subjects: Vec<String>,
    authors: Vec<String>,
    keys: Vec<Option<String>>,
    hashes: Vec<Option<String>>,
    created: Vec<i64>,
    send_at: Vec<Option<i64>>,
    next_attempt: Vec<i64>,
    template_ids: Vec<Option<String>>,
    template_versions: Vec<Option<i64>>,
    lease_owners: Vec<Option<String>>,
    lease_until: Vec<Option<i64>>,
    record_types: Vec<String>,
    smart_keys: Vec<Option<String>>,
    to: Vec<String>,
    cc: Vec<String>,
    bcc: Vec<String>,
    reply_to: Vec<String>,
    headers: Vec<String>,
    texts: Vec<Option<String>>,
    htmls: Vec<Option<String>>,
    related: Vec<String>,
    froms: Vec<Option<String>>,
    senders: Vec<Option<String>>,
    related_ids: Vec<String>,
    related_types: Vec<String>,
    related_record_ids: Vec<String>,
    related_relations: Vec<&'static str>,
    recipient_ids: Vec<String>,
    recipient_addresses: Vec<String>,
}

impl Rows {
    /// `claim`: the lease the message asks to be stored under, if it may skip the queue at all
    /// (due now, not a draft); the statement grants it unless older mail of its account waits.
    fn push(&mut self, message: &NewMessage, claim: Option<&crate::messages::InsertClaim>) {
        let id = message.id.to_string();
        let now = message.created_at_ms;
        let content = &message.content;
        let single = |m: &Option<mailroom_core::address::Mailbox>| {
            m.as_ref()
                .map(|m| mailboxes_to_json(std::slice::from_ref(m)))
        };
        // Each address once per message (the keys are deduplicated), and the message is new: its
        // rows cannot conflict, so they are inserted without the cost of a speculative insert.
        for address in crate::messages::recipient_keys(content) {
            self.recipient_ids.push(id.clone());
            self.recipient_addresses.push(address);
        }
        for record in &message.related_records {
            self.related_ids.push(id.clone());
            self.related_types.push(record.record_type.clone());
            self.related_record_ids.push(record.record_id.clone());
            self.related_relations.push(record.relation.as_str());
        }
        self.ids.push(id);
        self.drafts.push(message.draft);
        self.scenarios.push(message.scenario.as_str().to_owned());
        self.accounts.push(message.account_id.to_string());
        self.message_ids.push(message.message_id_header.clone());
        self.subjects.push(content.subject.as_str().to_owned());
        self.authors.push(message.created_by.clone());
        self.keys.push(message.idempotency_key.clone());
        self.hashes.push(message.request_hash.clone());
        self.created.push(now);
        self.send_at.push(message.send_at_ms);
        self.next_attempt
            .push(message.send_at_ms.unwrap_or(now).max(now));
        self.template_ids
            .push(message.template.as_ref().map(|(id, _)| id.clone()));
        self.template_versions
            .push(message.template.as_ref().map(|(_, v)| *v));
        self.lease_owners.push(claim.map(|c| c.owner.clone()));
        self.lease_until.push(claim.map(|c| c.lease_until));
        self.record_types
            .push(record_types_key(&message.related_records));
        self.smart_keys.push(message.smart_key.clone());
        self.to.push(mailboxes_to_json(&content.to));
        self.cc.push(mailboxes_to_json(&content.cc));
        self.bcc.push(mailboxes_to_json(&content.bcc));
        self.reply_to.push(mailboxes_to_json(&content.reply_to));
        self.headers.push(headers_to_json(&content.headers));
        self.texts.push(content.text.clone());
        self.htmls.push(content.html.clone());
        self.related.push(related_to_json(&message.related_records));
        self.froms.push(single(&content.from));
        self.senders.push(single(&content.sender));
    }

    /// Stores the rows in one statement; returns each message's id and the status it was stored
    /// with. A message asking for a lease is stored `sending` under it unless mail of its account
    /// has been due since `cutoff` or longer (one index probe per account, stopping at the first
    /// such message, not a walk over a long queue).
    async fn insert(&self, pool: &PgPool, cutoff: i64) -> StoreResult<Vec<(String, String)>> {
        let sets: Vec<&String> = self
            .record_types
            .iter()
            .filter(|t| !t.is_empty())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let rows = sqlx::query(
            "WITH r AS MATERIALIZED (
               SELECT * FROM UNNEST($1::text[], $2::bool[], $3::text[], $4::text[], $5::text[], $6::text[],
                 $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bigint[], $13::text[],
                 $14::bigint[], $15::text[], $16::bigint[], $17::text[], $18::text[])
               AS r(id, draft, scenario, account_id, message_id_header, subject, created_by, idempotency_key,
                 request_hash, created_at, send_at, next_attempt_at, template_id, template_version,
                 lease_owner, lease_until, record_types, smart_key)),
             known AS MATERIALIZED (
               SELECT id FROM accounts WHERE id IN (SELECT account_id FROM r)),
             waiting AS MATERIALIZED (
               SELECT a.id FROM (SELECT DISTINCT account_id AS id FROM r WHERE lease_owner IS NOT NULL) a
               WHERE EXISTS (SELECT 1 FROM messages
                             WHERE account_id = a.id AND status = 'queued' AND next_attempt_at <= $19)),
             s AS MATERIALIZED (
               SELECT r.*, r.lease_owner IS NOT NULL AND r.account_id NOT IN (SELECT id FROM waiting) AS claimed
               FROM r),
             m AS (
               INSERT INTO messages (id, status, scenario, account_id, message_id_header, subject, created_by,
                 idempotency_key, request_hash, created_at, updated_at, send_at, next_attempt_at, template_id,
                 template_version, attempt_count, lease_owner, lease_until, record_types, smart_key)
               SELECT id, CASE WHEN draft THEN 'draft' WHEN claimed THEN 'sending' ELSE 'queued' END, scenario,
                 account_id, message_id_header, subject, created_by, idempotency_key, request_hash, created_at,
                 created_at, send_at, next_attempt_at, template_id, template_version,
                 CASE WHEN claimed THEN 1 ELSE 0 END, CASE WHEN claimed THEN lease_owner END,
                 CASE WHEN claimed THEN lease_until END, record_types, smart_key
               FROM s WHERE account_id IN (SELECT id FROM known)
               RETURNING id, status, next_attempt_at, created_at),
             c AS (
               INSERT INTO message_contents (message_id, to_json, cc_json, bcc_json, reply_to_json, headers_json,
                 text_body, html_body, related_json, from_json, sender_json)
               SELECT * FROM UNNEST($1::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
                 $25::text[], $26::text[], $27::text[], $28::text[], $29::text[])
                 AS c(message_id, to_list, cc, bcc, reply_to, headers, text_body, html_body, related, from_json, sender)
               WHERE message_id IN (SELECT id FROM m)),
             rc AS (
               INSERT INTO message_recipients (address, message_id)
               SELECT * FROM UNNEST($30::text[], $31::text[]) AS rc(address, message_id)
               WHERE message_id IN (SELECT id FROM m)),
             rr AS (
               INSERT INTO related_records (message_id, record_type, record_id, relation)
               SELECT * FROM UNNEST($32::text[], $33::text[], $34::text[], $35::text[])
                 AS rr(message_id, record_type, record_id, relation)
               WHERE message_id IN (SELECT id FROM m) ON CONFLICT DO NOTHING),
             t AS (
               INSERT INTO record_type_sets (types) SELECT * FROM UNNEST($36::text[]) ON CONFLICT DO NOTHING),
             woken AS (
               SELECT pg_notify($37, '') FROM (
                 SELECT 1 FROM m WHERE status = 'queued' AND next_attempt_at <= created_at LIMIT 1) q)
             SELECT id, status, (SELECT count(*) FROM woken) AS woken FROM m",
        )
        .bind(&self.ids)
        .bind(&self.drafts)
        .bind(&self.scenarios)
        .bind(&self.accounts)
        .bind(&self.message_ids)
        .bind(&self.subjects)
        .bind(&self.authors)
        .bind(&self.keys)
        .bind(&self.hashes)
        .bind(&self.created)
        .bind(&self.send_at)
        .bind(&self.next_attempt)
        .bind(&self.template_ids)
        .bind(&self.template_versions)
        .bind(&self.lease_owners)
        .bind(&self.lease_until)
        .bind(&self.record_types)
        .bind(&self.smart_keys)
        .bind(cutoff)
        .bind(&self.to)
        .bind(&self.cc)
        .bind(&self.bcc)
        .bind(&self.reply_to)
        .bind(&self.headers)
        .bind(&self.texts)
        .bind(&self.htmls)
        .bind(&self.related)
        .bind(&self.froms)
        .bind(&self.senders)
        .bind(&self.recipient_addresses)
        .bind(&self.recipient_ids)
        .bind(&self.related_ids)
        .bind(&self.related_types)
        .bind(&self.related_record_ids)
        .bind(&self.related_relations)
        .bind(sets)
        .bind(super::QUEUED_CHANNEL)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get("id"), row.get("status")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use crate::messages::{InsertOutcome, NewMessage};
    use crate::{AccountInput, SecretBox, Store};
    use mailroom_core::account::{AccountLimits, ConnectorKind, Security, SenderType};
    use mailroom_core::address::EmailAddress;
    use mailroom_core::message::{MessageContent, RawContent};
    use mailroom_core::scenario::ScenarioName;
    use uuid::Uuid;

    fn message(account_id: Uuid, to: &[&str], cc: &[&str]) -> NewMessage {
        let list = |l: &[&str]| l.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let id = Uuid::now_v7();
        NewMessage {
            id,
            scenario: ScenarioName::default_scenario(),
            account_id,
            message_id_header: format!("<{}@example.com>", id.simple()),
            content: std::sync::Arc::new(
                MessageContent::parse(
                    RawContent {
                        to: &list(to),
                        cc: &list(cc),
                        bcc: &[],
                        reply_to: &[],
                        headers: &[],
                        subject: "twice",
                        text: Some("body"),
                        html: None,
                    },
                    1 << 20,
                )
                .unwrap(),
            ),
            related_records: Vec::new(),
            attachments: Vec::new(),
            template: None,
            smart_key: None,
            draft: false,
            send_at_ms: None,
            created_by: "tester".into(),
            idempotency_key: None,
            request_hash: None,
            created_at_ms: crate::now_ms(),
            claim: None,
        }
    }

    /// The group statement inserts recipient keys without `ON CONFLICT`: it relies on each
    /// message naming an address once among its keys. Were that not so, the statement would fail
    /// and the group would quietly be stored one by one — so this calls the group insert itself.
    #[tokio::test]
    async fn a_group_stores_a_message_naming_one_address_in_several_fields_and_cases_and_refuses_one_of_an_unknown_account_alone()
     {
        let database = mailroom_testkit::TestDatabase::create().await.unwrap();
        let store = Store::open(&database.url, SecretBox::from_key(&[3u8; 32]).unwrap())
            .await
            .unwrap();
        let account = store
            .create_account(
                &AccountInput {
                    connector: ConnectorKind::Smtp,
                    name: "group".into(),
                    email_address: EmailAddress::parse("group@example.com").unwrap(),
                    sender_name: None,
                    sender_type: SenderType::SpecificUser,
                    host: Some("127.0.0.1".into()),
                    port: Some(25),
                    security: Security::None,
                    username: None,
                    pickup_dir: None,
                    limits: AccountLimits::new(0, 3, 3).unwrap(),
                    substitute_mode: None,
                    substitute_address: None,
                    substitute_name: None,
                    options: Default::default(),
                },
                None,
            )
            .await
            .unwrap();
        let pool = sqlx::postgres::PgPool::connect(&database.url)
            .await
            .unwrap();
        let twice = message(
            account.id,
            &["Ann@Customer.example", "bob@customer.example"],
            &["ann@customer.example"],
        );
        let other = message(account.id, &["ann@customer.example"], &[]);
        // A message of an account that does not exist is refused alone, and nothing of it stays.
        let lost = message(Uuid::now_v7(), &["carol@customer.example"], &[]);
        let mut outcomes = super::insert_group(&pool, &[&twice, &lost, &other])
            .await
            .unwrap();
        assert!(matches!(
            outcomes.remove(1),
            Err(crate::StoreError::NotFound(_))
        ));
        let outcomes: Vec<InsertOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            outcomes,
            vec![
                InsertOutcome::Created(twice.id),
                InsertOutcome::Created(other.id)
            ]
        );
        let keys: Vec<(String, String)> = sqlx::query_as(
            "SELECT message_id, address FROM message_recipients ORDER BY message_id, address",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(
            keys,
            vec![
                (twice.id.to_string(), "ann@customer.example".into()),
                (twice.id.to_string(), "bob@customer.example".into()),
                (other.id.to_string(), "ann@customer.example".into()),
            ]
        );
        let contents: i64 = sqlx::query_scalar("SELECT count(*) FROM message_contents")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(contents, 2);
    }
}
