//! The suppression list: addresses mail is no longer sent to (MISSION E deliverability).

use crate::db::on_db;
use crate::{Store, StoreError, StoreResult, now_ms};
use std::time::{Duration, Instant};

/// One suppressed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// Lower-cased.
    pub address: String,
    /// `hard-bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
    pub detail: Option<String>,
    pub message_id: Option<String>,
    pub created_by: Option<String>,
    pub created_at_ms: i64,
}

/// How long "the list is empty" is believed without looking again (sends skip the lookup then).
const EMPTY_FOR: Duration = Duration::from_secs(1);

type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
);

fn from_row((address, reason, detail, message_id, created_by, created_at): Row) -> Suppression {
    Suppression {
        address,
        reason,
        detail,
        message_id,
        created_by,
        created_at_ms: created_at,
    }
}

impl Store {
    /// Suppresses an address (lower-cased); an address already suppressed keeps its first reason.
    /// `true` when it was newly suppressed.
    pub async fn suppress(
        &self,
        address: &str,
        reason: &str,
        detail: Option<&str>,
        message_id: Option<&str>,
        created_by: Option<&str>,
    ) -> StoreResult<bool> {
        let inserted = on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO suppressions (address, reason, detail, message_id, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (address) DO NOTHING",
            )
            .bind(address.to_ascii_lowercase())
            .bind(reason)
            .bind(detail)
            .bind(message_id)
            .bind(created_by)
            .bind(now_ms())
            .execute(writer)
            .await?
            .rows_affected()
        });
        *self
            .caches
            .suppressions_empty
            .lock()
            .expect("suppression lock") = None;
        Ok(inserted > 0)
    }

    pub async fn unsuppress(&self, address: &str) -> StoreResult<()> {
        let deleted = on_db!(self, |writer, reader| {
            sqlx::query("DELETE FROM suppressions WHERE address = $1")
                .bind(address.to_ascii_lowercase())
                .execute(writer)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("suppression of {address}")));
        }
        Ok(())
    }

    /// Suppressions, newest first, `limit` from before the cursor `(created_at, address)`.
    pub async fn suppressions(
        &self,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<Suppression>> {
        let (at, address) = before.unwrap_or((i64::MAX, String::new()));
        let rows: Vec<Row> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT address, reason, detail, message_id, created_by, created_at FROM suppressions
                 WHERE (created_at, address) < ($1, $2) OR $1 = 9223372036854775807
                 ORDER BY created_at DESC, address DESC LIMIT $3",
            )
            .bind(at)
            .bind(address)
            .bind(limit)
            .fetch_all(reader)
            .await?
        });
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Which of `addresses` (lower-cased) are suppressed. Free while the list is empty.
    pub async fn suppressed_among(&self, addresses: &[String]) -> StoreResult<Vec<Suppression>> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let known_empty = self
            .caches
            .suppressions_empty
            .lock()
            .expect("suppression lock")
            .is_some_and(|at| at.elapsed() < EMPTY_FOR);
        if known_empty {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = on_db!(self, |writer, reader| {
            let any: Option<String> =
                sqlx::query_scalar("SELECT address FROM suppressions LIMIT 1")
                    .fetch_optional(reader)
                    .await?;
            if any.is_none() {
                *self
                    .caches
                    .suppressions_empty
                    .lock()
                    .expect("suppression lock") = Some(Instant::now());
                return Ok(Vec::new());
            }
            let mut query = sqlx::QueryBuilder::new(
                "SELECT address, reason, detail, message_id, created_by, created_at FROM suppressions WHERE address IN (",
            );
            let mut list = query.separated(", ");
            for address in addresses {
                list.push_bind(address.to_ascii_lowercase());
            }
            query.push(") ORDER BY address");
            query.build_query_as().fetch_all(reader).await?
        });
        Ok(rows.into_iter().map(from_row).collect())
    }
}
