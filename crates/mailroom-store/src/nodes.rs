//! The nodes sharing the store: each heartbeats; a node silent for longer than the node timeout is
//! declared dead by exactly one other node, which recovers its leases at once (with an
//! `interrupted` attempt each) instead of waiting for them to expire.

use crate::db::{StoreRow, on_db};
use crate::{RecoveredLease, Store, StoreResult};

/// A node as the others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: String,
    pub host: String,
    pub started_at_ms: i64,
    pub last_heartbeat_ms: i64,
    /// When another node declared it dead (it has not heartbeat since).
    pub declared_dead_at_ms: Option<i64>,
    /// When it stopped cleanly.
    pub stopped_at_ms: Option<i64>,
    /// Messages it holds a lease on (claimed or being sent).
    pub in_flight: i64,
}

impl Store {
    /// Records that node `id` on `host` started now (a restarted node keeps its id).
    pub async fn register_node(&self, id: &str, host: &str, now: i64) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO nodes (id, host, started_at, last_heartbeat, declared_dead_at, stopped_at) VALUES ($1, $2, $3, $3, NULL, NULL)
                 ON CONFLICT (id) DO UPDATE SET host = excluded.host, started_at = excluded.started_at,
                   last_heartbeat = excluded.last_heartbeat, declared_dead_at = NULL, stopped_at = NULL",
            )
            .bind(id)
            .bind(host)
            .bind(now)
            .execute(writer)
            .await?;
        });
        Ok(())
    }

    /// The node is alive at `now`.
    pub async fn heartbeat(&self, id: &str, now: i64) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query(
                "UPDATE nodes SET last_heartbeat = $2, declared_dead_at = NULL, stopped_at = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(writer)
            .await?;
        });
        Ok(())
    }

    /// The node stopped cleanly (its leases were released or finished).
    pub async fn node_stopped(&self, id: &str, now: i64) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query("UPDATE nodes SET stopped_at = $2 WHERE id = $1")
                .bind(id)
                .bind(now)
                .execute(writer)
                .await?;
        });
        Ok(())
    }

    /// The ids of the nodes alive (heartbeat within `timeout_ms`, neither stopped nor declared
    /// dead), in order: a node's position in it is its rank when a limit is shared out.
    pub async fn live_nodes(&self, now: i64, timeout_ms: i64) -> StoreResult<Vec<String>> {
        on_db!(self, |writer, reader| {
            Ok(sqlx::query_scalar(
                "SELECT id FROM nodes
                 WHERE stopped_at IS NULL AND declared_dead_at IS NULL AND last_heartbeat > $1
                 ORDER BY id",
            )
            .bind(now - timeout_ms)
            .fetch_all(reader)
            .await?)
        })
    }

    /// Every node known, live or not, with the messages each holds.
    pub async fn nodes(&self) -> StoreResult<Vec<NodeInfo>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT n.id, n.host, n.started_at, n.last_heartbeat, n.declared_dead_at, n.stopped_at,
                   (SELECT COUNT(*) FROM messages m WHERE m.status = 'sending' AND m.lease_owner = n.id) AS in_flight
                 FROM nodes n ORDER BY n.id",
            )
            .fetch_all(reader)
            .await?;
            Ok(rows
                .iter()
                .map(|row| NodeInfo {
                    id: row.get("id"),
                    host: row.get("host"),
                    started_at_ms: row.get("started_at"),
                    last_heartbeat_ms: row.get("last_heartbeat"),
                    declared_dead_at_ms: row.get("declared_dead_at"),
                    stopped_at_ms: row.get("stopped_at"),
                    in_flight: row.get("in_flight"),
                })
                .collect())
        })
    }

    /// Declares dead every other node silent since before `now - timeout_ms` and recovers the
    /// leases it held. Several nodes may call this at the same moment: the update that declares a
    /// node dead succeeds for exactly one of them, and only that one recovers its leases.
    pub async fn recover_dead_nodes(
        &self,
        me: &str,
        now: i64,
        timeout_ms: i64,
    ) -> StoreResult<Vec<(String, Vec<RecoveredLease>)>> {
        let dead: Vec<String> = on_db!(self, |writer, reader| {
            sqlx::query_scalar(
                "UPDATE nodes SET declared_dead_at = $2
                 WHERE id <> $1 AND declared_dead_at IS NULL AND stopped_at IS NULL AND last_heartbeat < $3
                 RETURNING id",
            )
            .bind(me)
            .bind(now)
            .bind(now - timeout_ms)
            .fetch_all(writer)
            .await?
        });
        let mut recovered = Vec::with_capacity(dead.len());
        for node in dead {
            let leases = self.recover_leases_held_by(&node, now).await?;
            recovered.push((node, leases));
        }
        Ok(recovered)
    }
}
