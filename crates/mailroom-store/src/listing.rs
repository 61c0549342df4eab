//! Listings of the outbox, the sent archive and a record's messages that cost the same however large
//! the archive grows: each page is a few index seeks, never a scan, and totals are counted only up
//! to [`EXACT_TOTAL_UP_TO`].
//!
//! A listing is the union of *branches*, each an index range read newest first from the cursor and
//! cut at the page size:
//! - a record's messages are read from the record (`related_records (record_type, record_id,
//!   message_id)`), the view policy checked on each of them (a record has few messages);
//! - otherwise one branch per status asked for, and for a user whose view policy restricts what
//!   they see, per status: their own messages (`messages (created_by, status, id)`) and one branch
//!   per set of related record types the policy lets them read (`messages (record_types, status,
//!   id)`; the sets in use are listed in `record_type_sets`, and are few). Filters by account,
//!   scenario or date narrow each branch; an account or scenario filter alone seeks its own index.
//!
//! On PostgreSQL those listing indexes leave out mail in flight (`queued`, `sending`), whose rows
//! change two or three times in seconds: its own two indexes serve a viewer's own and type-set
//! branches, and `messages_status` / `messages_due` an administrator's (migration 0027).

use crate::db::on_db;
use crate::messages::{MESSAGE_COLUMNS, MESSAGES_WITH_CONTENT, message_from_row, push_visibility};
use crate::{MessageFilter, MessagePage, Store, StoreResult};
use mailroom_core::access::ViewPolicy;
use mailroom_core::message::MessageStatus;
use sqlx::{Database, Encode, QueryBuilder, Type};

/// Totals are exact up to this many messages; beyond, the total says "more than this"
/// (`total_is_estimate`).
pub const EXACT_TOTAL_UP_TO: i64 = 1000;

/// A subject search looks at this many messages per page at most (newest first from the cursor,
/// after every other filter): a page costs the same however large the archive, and paging goes on
/// further back.
pub const SUBJECT_SEARCH_WINDOW: i64 = 3_000;

/// More type sets than this and the policy is checked per message instead (still correct, slower).
const MOST_TYPE_SETS: usize = 64;

/// Which messages one branch reads, beyond the listing's own filters.
#[derive(Debug, Clone)]
enum Branch {
    /// Every message (an administrator, or internal use).
    All,
    /// The viewer's own messages.
    Own(String),
    /// Messages whose related record types are exactly this set (the viewer's own among them:
    /// the union drops what two branches both find).
    TypeSet { types: String },
    /// Every message, the view policy checked on each (many type sets).
    Checked,
}

/// The type sets a policy shows: with `All related records`, every related type must be readable;
/// with `Any related record`, one is enough. Messages without related records are never shown by
/// these two policies unless they are the viewer's own.
fn visible_sets(policy: ViewPolicy, readable: Option<&[String]>, sets: &[String]) -> Vec<String> {
    sets.iter()
        .filter(|set| !set.is_empty())
        .filter(|set| {
            let types = set.split(',');
            match (policy, readable) {
                (ViewPolicy::All, _) => true,
                (ViewPolicy::Own, _) => false,
                (_, None) => true,
                (ViewPolicy::AllRelatedRecords, Some(readable)) => {
                    types.into_iter().all(|t| readable.iter().any(|r| r == t))
                }
                (ViewPolicy::AnyRelatedRecord, Some(readable)) => {
                    types.into_iter().any(|t| readable.iter().any(|r| r == t))
                }
            }
        })
        .cloned()
        .collect()
}

/// A UUID (version 7 layout) that sorts before every message id minted at or after `ms`: message
/// ids are UUIDv7, so a time range is also an id range, which the indexes can seek.
fn id_floor(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    format!(
        "{:08x}-{:04x}-0000-0000-000000000000",
        (ms >> 16) & 0xffff_ffff,
        ms & 0xffff
    )
}

/// How far a message's id may lie from its `created_at` (both are taken as the API accepts it).
const ID_CLOCK_SLACK_MS: i64 = 60_000;

/// The listing's own filters, on `m` (one status per branch).
fn push_filters<DB: Database>(
    query: &mut QueryBuilder<DB>,
    filter: &MessageFilter,
    status: Option<MessageStatus>,
    cursor: bool,
) where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    if let Some(status) = status {
        // A literal (one of the fixed status names), not a parameter: on PostgreSQL the listing
        // indexes leave mail in flight out, and only a literal lets every plan prove which one applies.
        query
            .push(" AND m.status = '")
            .push(status.as_str())
            .push("'");
    }
    if let Some(account_id) = filter.account_id {
        query
            .push(" AND m.account_id = ")
            .push_bind(account_id.to_string());
    }
    if let Some(scenario) = &filter.scenario {
        query.push(" AND m.scenario = ").push_bind(scenario.clone());
    }
    if let Some(from) = filter.created_from_ms {
        query.push(" AND m.created_at >= ").push_bind(from);
        query
            .push(" AND m.id >= ")
            .push_bind(id_floor(from - ID_CLOCK_SLACK_MS));
    }
    if let Some(until) = filter.created_until_ms {
        query.push(" AND m.created_at < ").push_bind(until);
        query
            .push(" AND m.id < ")
            .push_bind(id_floor(until + ID_CLOCK_SLACK_MS));
    }
    if cursor && let Some(before) = filter.before_id {
        query.push(" AND m.id < ").push_bind(before.to_string());
    }
}

/// One branch's ids, newest first (from the cursor for a page: `cursor`), cut at `limit`. Counting
/// orders too: the order and the limit tell the planner to walk the branch's index — unordered, a
/// planner expecting many matches may scan the table for a combination that has none.
fn push_branch<DB: Database>(
    query: &mut QueryBuilder<DB>,
    filter: &MessageFilter,
    branch: &Branch,
    status: Option<MessageStatus>,
    limit: i64,
    cursor: bool,
) where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    query.push("SELECT id FROM (");
    let recipient_on_m = |query: &mut QueryBuilder<DB>, address: &String| {
        query
            .push(" AND EXISTS (SELECT 1 FROM message_recipients mr WHERE mr.message_id = m.id AND mr.address = ")
            .push_bind(address.clone())
            .push(")");
    };
    let from_recipient = filter.related_to.is_none() && filter.recipient.is_some();
    if let (true, Some(address)) = (from_recipient, &filter.recipient) {
        // From the recipient: their messages, newest first.
        query.push(
            "SELECT mr.message_id AS id FROM message_recipients mr JOIN messages m ON m.id = mr.message_id
             WHERE mr.address = ",
        );
        query.push_bind(address.clone());
        if cursor && let Some(before) = filter.before_id {
            query
                .push(" AND mr.message_id < ")
                .push_bind(before.to_string());
        }
    } else if let Some((record_type, record_id)) = &filter.related_to {
        // From the record: its messages, newest first.
        query.push(
            "SELECT rr.message_id AS id FROM related_records rr JOIN messages m ON m.id = rr.message_id
             WHERE rr.record_type = ",
        );
        query
            .push_bind(record_type.clone())
            .push(" AND rr.record_id = ")
            .push_bind(record_id.clone());
        if cursor && let Some(before) = filter.before_id {
            query
                .push(" AND rr.message_id < ")
                .push_bind(before.to_string());
        }
    } else {
        query.push("SELECT m.id AS id FROM messages m WHERE 1 = 1");
    }
    match branch {
        Branch::All => {}
        Branch::Own(viewer) => {
            query.push(" AND m.created_by = ").push_bind(viewer.clone());
        }
        Branch::TypeSet { types } => {
            query
                .push(" AND m.record_types = ")
                .push_bind(types.clone());
        }
        Branch::Checked => {
            if let Some(visibility) = &filter.visibility {
                push_visibility(query, visibility);
            }
        }
    }
    if !from_recipient && let Some(address) = &filter.recipient {
        recipient_on_m(query, address);
    }
    push_filters(query, filter, status, cursor);
    if from_recipient {
        query.push(" ORDER BY mr.message_id DESC");
    } else if filter.related_to.is_some() {
        query.push(" ORDER BY rr.message_id DESC");
    } else {
        query.push(" ORDER BY m.id DESC");
    }
    query.push(" LIMIT ").push_bind(limit);
    query.push(") b");
}

/// All branches of a query: the union of their ids.
fn push_union<DB: Database>(
    query: &mut QueryBuilder<DB>,
    filter: &MessageFilter,
    branches: &[(Branch, Option<MessageStatus>)],
    limit: i64,
    cursor: bool,
) where
    for<'t> String: Encode<'t, DB> + Type<DB>,
    for<'t> &'t str: Encode<'t, DB> + Type<DB>,
    for<'t> i64: Encode<'t, DB> + Type<DB>,
{
    for (n, (branch, status)) in branches.iter().enumerate() {
        // UNION, not UNION ALL: a message of the viewer's own may also be in a type set's
        // range. The page stays right: the newest n of the union are among the newest n of each
        // branch.
        if n > 0 {
            query.push(" UNION ");
        }
        query.push("SELECT id FROM (");
        push_branch(query, filter, branch, *status, limit, cursor);
        query.push(") u");
        query.push(n.to_string());
    }
}

impl Store {
    /// A page of messages, newest first, and how many match over all pages (exact up to
    /// [`EXACT_TOTAL_UP_TO`]).
    pub async fn list_messages(&self, filter: &MessageFilter) -> StoreResult<MessagePage> {
        let limit = i64::from(filter.limit.clamp(1, 500));
        let statuses: Vec<Option<MessageStatus>> = if filter.statuses.is_empty() {
            vec![None]
        } else {
            filter.statuses.iter().map(|s| Some(*s)).collect()
        };
        let mut kinds = Vec::new();
        match &filter.visibility {
            None => kinds.push(Branch::All),
            Some(visibility) if visibility.policy == ViewPolicy::All => kinds.push(Branch::All),
            // A record has few messages: the policy is checked on each.
            Some(_) if filter.related_to.is_some() => kinds.push(Branch::Checked),
            Some(visibility) => {
                kinds.push(Branch::Own(visibility.viewer.clone()));
                if visibility.policy != ViewPolicy::Own {
                    let sets = self.record_type_sets().await?;
                    let visible = visible_sets(
                        visibility.policy,
                        visibility.readable_types.as_deref(),
                        &sets,
                    );
                    if visible.len() > MOST_TYPE_SETS {
                        kinds = vec![Branch::Checked];
                    } else {
                        kinds.extend(visible.into_iter().map(|types| Branch::TypeSet { types }));
                    }
                }
            }
        }
        let branches: Vec<(Branch, Option<MessageStatus>)> = kinds
            .iter()
            .flat_map(|kind| statuses.iter().map(move |status| (kind.clone(), *status)))
            .collect();
        if let Some(subject) = &filter.subject_contains {
            return self
                .search_subjects(filter, &branches, subject, limit)
                .await;
        }
        on_db!(self, |writer, reader| {
            let mut page = QueryBuilder::new("SELECT id FROM (");
            push_union(&mut page, filter, &branches, limit + 1, true);
            page.push(") p ORDER BY id DESC LIMIT ")
                .push_bind(limit + 1);
            // Not prepared: each listing is planned with its own values (a plan cached for one
            // account or viewer, generic in them, can walk the wrong index for another).
            let mut ids: Vec<String> = page
                .build_query_scalar()
                .persistent(false)
                .fetch_all(reader)
                .await?;
            let has_more = ids.len() as i64 > limit;
            ids.truncate(limit as usize);

            let mut count = QueryBuilder::new("SELECT COUNT(*) FROM (SELECT id FROM (");
            push_union(&mut count, filter, &branches, EXACT_TOTAL_UP_TO + 1, false);
            count
                .push(") c LIMIT ")
                .push_bind(EXACT_TOTAL_UP_TO + 1)
                .push(") n");
            let counted: i64 = count
                .build_query_scalar()
                .persistent(false)
                .fetch_one(reader)
                .await?;

            let items = self.messages_by_ids(&ids).await?;
            let next_cursor = if has_more {
                items.last().map(|m| m.id)
            } else {
                None
            };
            Ok(MessagePage {
                items,
                total: counted.min(EXACT_TOTAL_UP_TO),
                total_is_estimate: counted > EXACT_TOTAL_UP_TO,
                has_more,
                next_cursor,
            })
        })
    }

    /// A page of a subject search: the matches among the newest [`SUBJECT_SEARCH_WINDOW`] messages
    /// the other filters select (from the cursor). When that window ends before the page is full,
    /// `has_more` and the cursor lead on to the next window; the total then counts this window only
    /// and is marked an estimate.
    async fn search_subjects(
        &self,
        filter: &MessageFilter,
        branches: &[(Branch, Option<MessageStatus>)],
        subject: &str,
        limit: i64,
    ) -> StoreResult<MessagePage> {
        let pattern = format!(
            "%{}%",
            subject
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let size = filter
            .subject_window
            .unwrap_or(SUBJECT_SEARCH_WINDOW)
            .max(1);
        on_db!(self, |writer, reader| {
            // The window: the newest messages of the union of the branches.
            let window = |query: &mut QueryBuilder<_>| {
                query.push("SELECT id FROM (");
                push_union(query, filter, branches, size, true);
                query.push(") w0 ORDER BY id DESC LIMIT ").push_bind(size);
            };
            let mut edge = QueryBuilder::new("SELECT COUNT(*), MIN(id) FROM (");
            window(&mut edge);
            edge.push(") e");
            let (in_window, oldest): (i64, Option<String>) = edge
                .build_query_as()
                .persistent(false)
                .fetch_one(reader)
                .await?;
            let cut = in_window >= size;
            let mut matches = QueryBuilder::new("SELECT w.id FROM (");
            window(&mut matches);
            matches
                .push(") w JOIN messages m ON m.id = w.id WHERE lower(m.subject) LIKE ")
                .push_bind(pattern)
                .push(" ESCAPE '\\' ORDER BY w.id DESC LIMIT ")
                .push_bind(EXACT_TOTAL_UP_TO + 1);
            let mut ids: Vec<String> = matches
                .build_query_scalar()
                .persistent(false)
                .fetch_all(reader)
                .await?;
            let counted = ids.len() as i64;
            let full = counted > limit;
            ids.truncate(limit as usize);
            let items = self.messages_by_ids(&ids).await?;
            let next_cursor = if full {
                items.last().map(|m| m.id)
            } else if cut {
                oldest.and_then(|id| id.parse().ok())
            } else {
                None
            };
            Ok(MessagePage {
                items,
                total: counted.min(EXACT_TOTAL_UP_TO),
                total_is_estimate: cut || counted > EXACT_TOTAL_UP_TO,
                has_more: next_cursor.is_some(),
                next_cursor,
            })
        })
    }

    /// Messages by id, newest first.
    async fn messages_by_ids(&self, ids: &[String]) -> StoreResult<Vec<crate::StoredMessage>> {
        let mut items = Vec::with_capacity(ids.len());
        if ids.is_empty() {
            return Ok(items);
        }
        on_db!(self, |writer, reader| {
            let mut rows = QueryBuilder::new(format!(
                "SELECT {MESSAGE_COLUMNS} FROM {MESSAGES_WITH_CONTENT} WHERE m.id IN ("
            ));
            let mut list = rows.separated(", ");
            for id in ids {
                list.push_bind(id.clone());
            }
            rows.push(") ORDER BY m.id DESC");
            for row in rows.build().fetch_all(reader).await? {
                items.push(message_from_row(&row)?);
            }
        });
        Ok(items)
    }

    /// The sets of related record types messages have (see `record_type_sets`).
    async fn record_type_sets(&self) -> StoreResult<Vec<String>> {
        on_db!(self, |writer, reader| {
            Ok(sqlx::query_scalar("SELECT types FROM record_type_sets")
                .fetch_all(reader)
                .await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_floor_sorts_before_every_uuid7_of_its_millisecond_and_after_every_earlier_one() {
        let at = 1_780_000_000_123_i64;
        let floor = id_floor(at);
        let same = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            (at / 1000) as u64,
            ((at % 1000) * 1_000_000) as u32,
        ))
        .to_string();
        let earlier = uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
            uuid::NoContext,
            ((at - 1) / 1000) as u64,
            (((at - 1) % 1000) * 1_000_000) as u32,
        ))
        .to_string();
        assert!(floor.as_str() <= same.as_str(), "{floor} > {same}");
        assert!(earlier.as_str() < floor.as_str(), "{earlier} >= {floor}");
    }

    #[test]
    fn a_policy_shows_the_type_sets_it_can_read() {
        let sets: Vec<String> = ["customer", "customer,sales-invoice", "vendor", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let readable = vec!["customer".to_string(), "sales-invoice".to_string()];
        assert_eq!(
            visible_sets(ViewPolicy::AllRelatedRecords, Some(&readable), &sets),
            ["customer", "customer,sales-invoice"]
        );
        assert_eq!(
            visible_sets(
                ViewPolicy::AnyRelatedRecord,
                Some(&["sales-invoice".into()]),
                &sets
            ),
            ["customer,sales-invoice"]
        );
        assert!(visible_sets(ViewPolicy::AllRelatedRecords, Some(&[]), &sets).is_empty());
        assert_eq!(
            visible_sets(ViewPolicy::AnyRelatedRecord, None, &sets).len(),
            3
        );
    }
}
