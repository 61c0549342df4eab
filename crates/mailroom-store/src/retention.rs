//! Retention of the sent archive: the content of sent mail older than `sent_retention_days` —
//! bodies and attachment references (the files are collected once nothing refers to them) — is
//! deleted in small batches, each its own short transaction, so that it never holds up sending.
//! The envelope (addresses, subject, related records) and every attempt stay.

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreResult, now_ms};
use sqlx::QueryBuilder;

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionBatch {
    /// Messages whose content was deleted.
    pub deleted: usize,
    /// The last message id looked at: the next batch starts after it (`None`: the end was reached).
    pub last_seen: Option<String>,
    /// Every message looked at was sent after the cutoff: those after it (newer ids) mostly were
    /// too, and a pass may stop here.
    pub newer_only: bool,
}

impl Store {
    /// Deletes the content of up to `batch` messages sent before `cutoff_ms`, looking at sent
    /// messages oldest first after `after` (a message id; `None` from the start).
    pub async fn delete_sent_content(
        &self,
        cutoff_ms: i64,
        after: Option<&str>,
        batch: i64,
    ) -> StoreResult<RetentionBatch> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT id, sent_at, content_deleted_at FROM messages
                 WHERE status = 'sent' AND id > $1 ORDER BY id LIMIT $2",
            )
            .bind(after.unwrap_or(""))
            .bind(batch)
            .fetch_all(reader)
            .await?;
            let last_seen = (rows.len() as i64 == batch)
                .then(|| rows.last().map(|row| row.get::<String, _>("id")))
                .flatten();
            let newer_only = !rows.is_empty()
                && rows.iter().all(|row| {
                    row.get::<Option<i64>, _>("sent_at")
                        .is_some_and(|at| at >= cutoff_ms)
                });
            let due: Vec<String> = rows
                .iter()
                .filter(|row| {
                    row.get::<Option<i64>, _>("content_deleted_at").is_none()
                        && row
                            .get::<Option<i64>, _>("sent_at")
                            .is_some_and(|at| at < cutoff_ms)
                })
                .map(|row| row.get::<String, _>("id"))
                .collect();
            if due.is_empty() {
                return Ok(RetentionBatch {
                    deleted: 0,
                    last_seen,
                    newer_only,
                });
            }
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            for statement in [
                "UPDATE message_contents SET text_body = NULL, html_body = NULL WHERE message_id IN (",
                "DELETE FROM message_attachments WHERE message_id IN (",
            ] {
                let mut query = QueryBuilder::new(statement);
                let mut ids = query.separated(", ");
                for id in &due {
                    ids.push_bind(id.clone());
                }
                query.push(")");
                query.build().execute(&mut *tx).await?;
            }
            let mut mark = QueryBuilder::new("UPDATE messages SET content_deleted_at = ");
            mark.push_bind(now)
                .push(" WHERE status = 'sent' AND id IN (");
            let mut ids = mark.separated(", ");
            for id in &due {
                ids.push_bind(id.clone());
            }
            mark.push(")");
            mark.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(RetentionBatch {
                deleted: due.len(),
                last_seen,
                newer_only,
            })
        })
    }
}

impl Store {
    /// Deletes up to `batch` events older than `cutoff_ms` that every endpoint has finished with
    /// (fanned out, no delivery pending), with their deliveries and the delivery log, oldest first,
    /// in one short transaction. Returns how many events went.
    pub async fn delete_old_events(&self, cutoff_ms: i64, batch: i64) -> StoreResult<usize> {
        on_db!(self, |writer, reader| {
            let ids: Vec<i64> = sqlx::query_scalar(
                "SELECT e.id FROM events e
                 WHERE e.created_at < $1 AND e.fanned_out = TRUE
                   AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.state = 'pending')
                 ORDER BY e.id LIMIT $2",
            )
            .bind(cutoff_ms)
            .bind(batch)
            .fetch_all(reader)
            .await?;
            if ids.is_empty() {
                return Ok(0);
            }
            let mut tx = writer.begin_write().await?;
            for table in ["webhook_attempts", "webhook_deliveries", "events"] {
                let column = if table == "events" { "id" } else { "event_id" };
                let mut query =
                    QueryBuilder::new(format!("DELETE FROM {table} WHERE {column} IN ("));
                let mut list = query.separated(", ");
                for id in &ids {
                    list.push_bind(*id);
                }
                query.push(")");
                // A delivery that became pending meanwhile (a replay) keeps its event.
                if table == "events" {
                    query.push(
                        " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = events.id)",
                    );
                } else {
                    query.push(
                        " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.event_id = ",
                    );
                    query.push(table);
                    query.push(".event_id AND p.state = 'pending')");
                }
                query.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(ids.len())
        })
    }
}
