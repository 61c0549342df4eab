//! Account limits that hold for every node together, with the database as the source of truth.
//!
//! Rate: an attempt may start only while the account's sliding window — ending now by the
//! database's clock — holds fewer starts than the limit. The check and the record of the start
//! happen in one transaction under a per-account advisory lock, so two nodes can never both take
//! the last place, and the attempt's `started_at` is the recorded time: the attempts table itself
//! then shows that no window holds more than the limit. Accounts never wait for each other's locks.

use crate::StoreResult;
use sqlx::postgres::PgPool;
use uuid::Uuid;

/// The answer to a request for an attempt start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartSlot {
    /// The attempt may start; this is its start time (ms since the epoch).
    Granted(i64),
    /// The window is full; ask again after this many milliseconds.
    Wait(i64),
}

pub(crate) async fn take_start_slot(
    pool: &PgPool,
    account_id: Uuid,
    node_id: &str,
    limit: u32,
    window_ms: i64,
) -> StoreResult<StartSlot> {
    let account = account_id.to_string();
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("mailroom-rate:{account}"))
        .execute(&mut *tx)
        .await?;
    let now: i64 =
        sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(&mut *tx)
            .await?;
    sqlx::query("DELETE FROM attempt_starts WHERE account_id = $1 AND started_at <= $2")
        .bind(&account)
        .bind(now - window_ms)
        .execute(&mut *tx)
        .await?;
    let (count, oldest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), MIN(started_at) FROM attempt_starts WHERE account_id = $1",
    )
    .bind(&account)
    .fetch_one(&mut *tx)
    .await?;
    let answer = if count < i64::from(limit) {
        sqlx::query("INSERT INTO attempt_starts (account_id, started_at, node_id) VALUES ($1, $2, $3)")
            .bind(&account)
            .bind(now)
            .bind(node_id)
            .execute(&mut *tx)
            .await?;
        StartSlot::Granted(now)
    } else {
        StartSlot::Wait((oldest.unwrap_or(now) + window_ms - now).max(1))
    };
    tx.commit().await?;
    Ok(answer)
}
