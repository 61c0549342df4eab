//! Background jobs (test & enable one mailbox, or every mailbox of a profile; apply defaults):
//! a job and its items are stored together, each item's outcome with the job's counters in one
//! transaction, so a job survives a restart and resumes with the items it had not finished.
//! Also the alerts users see (`GET /v1/alerts`).

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    /// `queued`, `running` or `done`.
    pub state: String,
    pub total: u32,
    pub done: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub params: serde_json::Value,
    pub created_by: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub id: Uuid,
    pub user_id: Uuid,
    pub mailbox_id: Option<Uuid>,
    pub kind: String,
    pub message: String,
    pub created_at_ms: i64,
    pub dismissed_at_ms: Option<i64>,
}

const JOB_COLUMNS: &str = "id, kind, state, total, done, succeeded, failed, params_json, created_by, created_at, updated_at, finished_at";

fn job_from_row(row: &impl StoreRow) -> StoreResult<Job> {
    let count = |name: &str| row.get::<i64, _>(name).max(0) as u32;
    Ok(Job {
        id: row
            .get::<String, _>("id")
            .parse()
            .map_err(|_| StoreError::Conflict("stored job id is not a UUID".into()))?,
        kind: row.get("kind"),
        state: row.get("state"),
        total: count("total"),
        done: count("done"),
        succeeded: count("succeeded"),
        failed: count("failed"),
        params: serde_json::from_str(&row.get::<String, _>("params_json"))
            .unwrap_or(serde_json::Value::Null),
        created_by: row.get("created_by"),
        created_at_ms: row.get("created_at"),
        updated_at_ms: row.get("updated_at"),
        finished_at_ms: row.get("finished_at"),
    })
}

impl Store {
    /// Stores a job over `mailboxes`, queued for the job runner.
    pub async fn create_job(
        &self,
        kind: &str,
        created_by: &str,
        params: &serde_json::Value,
        mailboxes: &[Uuid],
    ) -> StoreResult<Job> {
        let id = Uuid::now_v7();
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            let empty = mailboxes.is_empty();
            sqlx::query(
                "INSERT INTO jobs (id, kind, state, total, params_json, created_by, created_at, updated_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
            )
            .bind(id.to_string())
            .bind(kind)
            .bind(if empty { "done" } else { "queued" })
            .bind(mailboxes.len() as i64)
            .bind(params.to_string())
            .bind(created_by)
            .bind(now)
            .bind(empty.then_some(now))
            .execute(&mut *tx)
            .await?;
            for chunk in mailboxes.chunks(200) {
                let mut sql =
                    String::from("INSERT INTO job_items (job_id, mailbox_id, state) VALUES ");
                for index in 0..chunk.len() {
                    if index > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("($1, ${}, 'pending')", index + 2));
                }
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.to_string());
                for mailbox in chunk {
                    query = query.bind(mailbox.to_string());
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        self.job(id).await
    }

    pub async fn job(&self, id: Uuid) -> StoreResult<Job> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?;
            row.map(|r| job_from_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("job {id}")))
        })
    }

    /// Takes the oldest unfinished job nobody holds (or whose holder's lease ran out: a node that
    /// stopped or died mid-job) and holds it for `node` until `lease_until`.
    pub async fn take_job(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
    ) -> StoreResult<Option<Job>> {
        on_db!(self, |writer, reader| {
            let sql = format!(
                "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $3, updated_at = $2
                 WHERE id = (SELECT id FROM jobs WHERE state <> 'done' AND (lease_until IS NULL OR lease_until < $2)
                             ORDER BY created_at LIMIT 1)
                   AND state <> 'done' AND (lease_until IS NULL OR lease_until < $2)
                 RETURNING {JOB_COLUMNS}"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(node)
                .bind(now)
                .bind(lease_until)
                .fetch_optional(writer)
                .await?;
            row.map(|r| job_from_row(&r)).transpose()
        })
    }

    /// Extends `node`'s hold on a job; false when the job is no longer its own.
    pub async fn renew_job(&self, id: Uuid, node: &str, lease_until: i64) -> StoreResult<bool> {
        on_db!(self, |writer, reader| {
            let result = sqlx::query(
                "UPDATE jobs SET lease_until = $3 WHERE id = $1 AND lease_owner = $2 AND state <> 'done'",
            )
            .bind(id.to_string())
            .bind(node)
            .bind(lease_until)
            .execute(writer)
            .await?;
            Ok(result.rows_affected() == 1)
        })
    }

    /// Gives a job back (a node stopping): another node or the next start takes it up.
    pub async fn release_job(&self, id: Uuid, node: &str) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query("UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2")
                .bind(id.to_string())
                .bind(node)
                .execute(writer)
                .await?;
            Ok(())
        })
    }

    /// The mailboxes of a job not yet done.
    pub async fn pending_job_items(&self, id: Uuid) -> StoreResult<Vec<Uuid>> {
        on_db!(self, |writer, reader| {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT mailbox_id FROM job_items WHERE job_id = $1 AND state = 'pending' ORDER BY mailbox_id",
            )
            .bind(id.to_string())
            .fetch_all(reader)
            .await?;
            ids.iter()
                .map(|i| {
                    i.parse()
                        .map_err(|_| StoreError::Conflict("stored mailbox id is not a UUID".into()))
                })
                .collect()
        })
    }

    /// Records one item's outcome and counts it, once: an item already done is not counted again.
    /// The job is done when its last item is.
    pub async fn finish_job_item(
        &self,
        id: Uuid,
        mailbox: Uuid,
        succeeded: bool,
        detail: &str,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            let changed = sqlx::query(
                "UPDATE job_items SET state = $3, detail = $4 WHERE job_id = $1 AND mailbox_id = $2 AND state = 'pending'",
            )
            .bind(id.to_string())
            .bind(mailbox.to_string())
            .bind(if succeeded { "succeeded" } else { "failed" })
            .bind(detail)
            .execute(&mut *tx)
            .await?;
            if changed.rows_affected() == 1 {
                let (state, kind, total, succeeded_n, failed_n): (String, String, i64, i64, i64) = sqlx::query_as(
                    "UPDATE jobs SET done = done + 1, succeeded = succeeded + $2, failed = failed + $3, updated_at = $4,
                       state = CASE WHEN done + 1 >= total THEN 'done' ELSE state END,
                       finished_at = CASE WHEN done + 1 >= total THEN $4 ELSE finished_at END
                     WHERE id = $1 RETURNING state, kind, total, succeeded, failed",
                )
                .bind(id.to_string())
                .bind(i64::from(succeeded))
                .bind(i64::from(!succeeded))
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                if state == "done" {
                    sqlx::query(
                        "INSERT INTO events (kind, subject_id, payload_json, created_at) VALUES ('job.completed', $1, $2, $3)",
                    )
                    .bind(id.to_string())
                    .bind(
                        serde_json::json!({"job_id": id, "kind": kind, "total": total,
                                           "succeeded": succeeded_n, "failed": failed_n})
                        .to_string(),
                    )
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// A user's alerts, newest first; dismissed ones only when asked.
    pub async fn alerts(&self, user: Uuid, include_dismissed: bool) -> StoreResult<Vec<Alert>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT id, user_id, mailbox_id, kind, message, created_at, dismissed_at FROM alerts
                 WHERE user_id = $1 AND ($2 OR dismissed_at IS NULL) ORDER BY created_at DESC, id DESC LIMIT 500",
            )
            .bind(user.to_string())
            .bind(include_dismissed)
            .fetch_all(reader)
            .await?;
            rows.iter()
                .map(|row| {
                    let parse = |raw: String| {
                        raw.parse::<Uuid>().map_err(|_| {
                            StoreError::Conflict("stored alert id is not a UUID".into())
                        })
                    };
                    Ok(Alert {
                        id: parse(row.get("id"))?,
                        user_id: parse(row.get("user_id"))?,
                        mailbox_id: row
                            .get::<Option<String>, _>("mailbox_id")
                            .map(parse)
                            .transpose()?,
                        kind: row.get("kind"),
                        message: row.get("message"),
                        created_at_ms: row.get("created_at"),
                        dismissed_at_ms: row.get("dismissed_at"),
                    })
                })
                .collect()
        })
    }

    /// Dismisses one of `user`'s alerts.
    pub async fn dismiss_alert(&self, user: Uuid, id: Uuid) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let result = sqlx::query(
                "UPDATE alerts SET dismissed_at = $3 WHERE id = $1 AND user_id = $2 AND dismissed_at IS NULL",
            )
            .bind(id.to_string())
            .bind(user.to_string())
            .bind(now_ms())
            .execute(writer)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("alert {id}")));
            }
            Ok(())
        })
    }
}
