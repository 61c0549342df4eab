//! Figures for the dashboard: the outbox by state, outcomes per hour, failures by account.

use crate::db::on_db;
use crate::{Store, StoreResult};

/// One hour of finished attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HourOutcomes {
    /// The hour's first millisecond (UTC).
    pub hour_start_ms: i64,
    pub sent: i64,
    /// Permanent failures.
    pub failed: i64,
    /// Transient failures (the message was deferred, to be tried again).
    pub deferred: i64,
}

/// The outbox by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxCounts {
    pub draft: i64,
    /// Waiting for their first try (or a manual retry).
    pub queued: i64,
    /// Waiting to be tried again after a transient failure.
    pub deferred: i64,
    pub sending: i64,
    pub failed: i64,
}

/// Failed messages of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFailures {
    pub account_id: String,
    pub account_name: String,
    pub failed: i64,
}

const HOUR_MS: i64 = 3_600_000;

impl Store {
    /// Attempts finished in each of the `hours` hours up to the current one, oldest first (hours
    /// without attempts included, as zeros). Read from the attempts' start-time index.
    pub async fn hourly_outcomes(&self, now_ms: i64, hours: u32) -> StoreResult<Vec<HourOutcomes>> {
        let current = now_ms.div_euclid(HOUR_MS);
        let first = current - i64::from(hours.max(1)) + 1;
        let rows: Vec<(i64, String, i64)> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT finished_at / 3600000 AS hour, outcome, COUNT(*) AS n FROM attempts
                 WHERE started_at >= $1 AND finished_at >= $1 AND outcome <> 'interrupted'
                 GROUP BY finished_at / 3600000, outcome",
            )
            .bind(first * HOUR_MS)
            .fetch_all(reader)
            .await?
        });
        let mut hours: Vec<HourOutcomes> = (first..=current)
            .map(|h| HourOutcomes {
                hour_start_ms: h * HOUR_MS,
                ..Default::default()
            })
            .collect();
        for (hour, outcome, n) in rows {
            let Some(slot) = usize::try_from(hour - first)
                .ok()
                .and_then(|i| hours.get_mut(i))
            else {
                continue;
            };
            match outcome.as_str() {
                "sent" => slot.sent += n,
                "permanent" => slot.failed += n,
                "transient" => slot.deferred += n,
                _ => {}
            }
        }
        Ok(hours)
    }

    /// The outbox by state; queued messages already tried (since their last manual retry) count as
    /// deferred.
    pub async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        // `tried` as 0/1 reads the same on both backends.
        let rows: Vec<(String, i64, i64)> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT status, CAST(CASE WHEN attempt_count > retry_base THEN 1 ELSE 0 END AS BIGINT) AS tried, COUNT(*) AS n
                 FROM messages WHERE status IN ('draft', 'queued', 'sending', 'failed')
                 GROUP BY status, CASE WHEN attempt_count > retry_base THEN 1 ELSE 0 END",
            )
            .fetch_all(reader)
            .await?
        });
        let mut counts = OutboxCounts::default();
        for (status, tried, n) in rows {
            let tried = tried == 1;
            match status.as_str() {
                "draft" => counts.draft += n,
                "queued" if tried => counts.deferred += n,
                "queued" => counts.queued += n,
                "sending" => counts.sending += n,
                "failed" => counts.failed += n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Failed messages per account, most first.
    pub async fn failures_by_account(&self) -> StoreResult<Vec<AccountFailures>> {
        let rows: Vec<(String, String, i64)> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT m.account_id, a.name, COUNT(*) AS n FROM messages m JOIN accounts a ON a.id = m.account_id
                 WHERE m.status = 'failed' GROUP BY m.account_id, a.name ORDER BY n DESC, a.name",
            )
            .fetch_all(reader)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(account_id, account_name, failed)| AccountFailures {
                account_id,
                account_name,
                failed,
            })
            .collect())
    }
}
