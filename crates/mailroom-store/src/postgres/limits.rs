//! Account limits that hold for every node together, with the database as the source of truth.
//!
//! Rate: an attempt may start only at a time when the account's sliding window ending there holds
//! no more starts than the limit. The start is found and recorded in one statement under a
//! per-account advisory lock — now if the window has room, else the earliest time it will — so two
//! nodes can never both take the last place, waiting attempts sleep until their reserved time
//! instead of polling, and the attempt's `started_at` is the recorded time: the attempts table
//! itself then shows that no window holds more than the limit. Accounts never wait for each
//! other's locks.

use crate::StoreResult;
use sqlx::postgres::PgPool;
use uuid::Uuid;

/// Reserves the earliest start, now or later, at which the account's window holds room for one
/// more attempt; returns that time (ms since the epoch, the database's clock). The caller starts
/// the attempt then, and records it as started then.
pub(crate) async fn take_start_slot(
    pool: &PgPool,
    account_id: Uuid,
    node_id: &str,
    limit: u32,
    window_ms: i64,
) -> StoreResult<i64> {
    // One round trip: the function (migration 0004) takes the lock, finds the place and records it.
    Ok(
        sqlx::query_scalar("SELECT mailroom_take_start($1, $2, $3, $4)")
            .bind(account_id.to_string())
            .bind(node_id)
            .bind(i64::from(limit))
            .bind(window_ms)
            .fetch_one(pool)
            .await?,
    )
}

/// Takes a free place for one open connection of the account (`limit` places in all) for
/// `node_id` until `lease_until`; `None` when every place is held, or when the node already holds
/// its fair share — the limit divided among the live nodes, rounded up. Without that share, the
/// first node to open connections kept every place while it had mail of its own, and the mail the
/// other nodes had accepted (which only they may send) waited until it had none.
pub(crate) async fn take_session_slot(
    db: &super::PgDb,
    account_id: Uuid,
    node_id: &str,
    limit: u32,
    now: i64,
    lease_until: i64,
    node_timeout_ms: i64,
) -> StoreResult<Option<i64>> {
    let account = account_id.to_string();
    // The account's places exist once it first sends (and more when its limit was raised). Made
    // once per process and limit, not on every try: a node waiting for a place tries every 50 ms.
    let pool = &db.pool;
    let made = db
        .session_places
        .lock()
        .expect("places lock")
        .get(&account_id)
        .is_some_and(|&made| made >= limit);
    if !made {
        sqlx::query(
            "INSERT INTO session_slots (account_id, slot) SELECT $1, g FROM generate_series(0, $2 - 1) AS g
             ON CONFLICT DO NOTHING",
        )
        .bind(&account)
        .bind(i64::from(limit))
        .execute(pool)
        .await?;
        let mut places = db.session_places.lock().expect("places lock");
        let known = places.entry(account_id).or_default();
        *known = (*known).max(limit);
    }
    let slot: Option<i64> = sqlx::query_scalar(
        "UPDATE session_slots SET node_id = $3, lease_until = $5
         WHERE account_id = $1 AND slot = (
           SELECT slot FROM session_slots
           WHERE account_id = $1 AND slot < $2 AND (node_id IS NULL OR lease_until < $4)
           ORDER BY slot LIMIT 1 FOR UPDATE SKIP LOCKED)
           AND (SELECT COUNT(*) FROM session_slots
                WHERE account_id = $1 AND node_id = $3 AND lease_until >= $4)
             < ($2 + (SELECT GREATEST(COUNT(*), 1) FROM nodes
                      WHERE stopped_at IS NULL AND declared_dead_at IS NULL AND last_heartbeat > $4 - $6) - 1)
               / (SELECT GREATEST(COUNT(*), 1) FROM nodes
                  WHERE stopped_at IS NULL AND declared_dead_at IS NULL AND last_heartbeat > $4 - $6)
         RETURNING slot",
    )
    .bind(&account)
    .bind(i64::from(limit))
    .bind(node_id)
    .bind(now)
    .bind(lease_until)
    .bind(node_timeout_ms)
    .fetch_optional(pool)
    .await?;
    Ok(slot)
}

/// Gives a place back (only if `node_id` still holds it).
pub(crate) async fn release_session_slot(
    pool: &PgPool,
    account_id: Uuid,
    slot: i64,
    node_id: &str,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE session_slots SET node_id = NULL, lease_until = NULL
         WHERE account_id = $1 AND slot = $2 AND node_id = $3",
    )
    .bind(account_id.to_string())
    .bind(slot)
    .bind(node_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Extends the leases of every place `node_id` holds.
pub(crate) async fn renew_session_slots(
    pool: &PgPool,
    node_id: &str,
    lease_until: i64,
) -> StoreResult<()> {
    sqlx::query("UPDATE session_slots SET lease_until = $2 WHERE node_id = $1")
        .bind(node_id)
        .bind(lease_until)
        .execute(pool)
        .await?;
    Ok(())
}

/// Frees every place `node_id` holds: called as the node starts, since what its previous process
/// held went with it (and would otherwise be renewed, under the same id, for ever).
pub(crate) async fn release_session_slots_of(pool: &PgPool, node_id: &str) -> StoreResult<()> {
    sqlx::query("UPDATE session_slots SET node_id = NULL, lease_until = NULL WHERE node_id = $1")
        .bind(node_id)
        .execute(pool)
        .await?;
    Ok(())
}
