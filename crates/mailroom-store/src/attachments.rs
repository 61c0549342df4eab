//! Attachment metadata. The bytes are in the blob store (a folder of files named by SHA-256); the
//! database holds only what the file is called, its type and size, and which messages use it.

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub id: Uuid,
    pub sha256: String,
    pub size: u64,
    pub filename: String,
    pub content_type: String,
    pub created_by: String,
    pub created_at_ms: i64,
    /// Set when the attachment is shown inline in a message's HTML (only in a message's list).
    pub content_id: Option<String>,
}

fn attachment_from_row(row: &impl StoreRow) -> StoreResult<Attachment> {
    Ok(Attachment {
        id: row
            .get::<String, _>("id")
            .parse()
            .map_err(|_| StoreError::Conflict("stored attachment id is not a UUID".into()))?,
        sha256: row.get("sha256"),
        size: row.get::<i64, _>("size") as u64,
        filename: row.get("filename"),
        content_type: row.get("content_type"),
        created_by: row.get("created_by"),
        created_at_ms: row.get("created_at"),
        content_id: row.try_get("content_id").ok().flatten(),
    })
}

const COLUMNS: &str =
    "a.id, a.sha256, a.size, a.filename, a.content_type, a.created_by, a.created_at";

impl Store {
    /// Records an uploaded file whose bytes are already in the blob store.
    pub async fn create_attachment(
        &self,
        sha256: &str,
        size: u64,
        filename: &str,
        content_type: &str,
        created_by: &str,
    ) -> StoreResult<Attachment> {
        on_db!(self, |writer, reader| {
            let attachment = Attachment {
                id: Uuid::now_v7(),
                sha256: sha256.to_owned(),
                size,
                filename: filename.to_owned(),
                content_type: content_type.to_owned(),
                created_by: created_by.to_owned(),
                created_at_ms: now_ms(),
                content_id: None,
            };
            sqlx::query("INSERT INTO attachments (id, sha256, size, filename, content_type, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                .bind(attachment.id.to_string())
                .bind(&attachment.sha256)
                .bind(attachment.size as i64)
                .bind(&attachment.filename)
                .bind(&attachment.content_type)
                .bind(&attachment.created_by)
                .bind(attachment.created_at_ms)
                .execute(writer)
                .await?;
            Ok(attachment)
        })
    }

    pub async fn attachment(&self, id: Uuid) -> StoreResult<Attachment> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {COLUMNS} FROM attachments a WHERE a.id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?;
            row.map(|r| attachment_from_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("attachment {id}")))
        })
    }

    /// The attachments of messages, in their order, by message id.
    pub async fn attachments_of(
        &self,
        message_ids: &[Uuid],
    ) -> StoreResult<Vec<(Uuid, Attachment)>> {
        on_db!(self, |writer, reader| {
            if message_ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut query = sqlx::QueryBuilder::new(format!(
                "SELECT ma.message_id, ma.content_id, {COLUMNS} FROM message_attachments ma JOIN attachments a ON a.id = ma.attachment_id WHERE ma.message_id IN ("
            ));
            let mut ids = query.separated(", ");
            for id in message_ids {
                ids.push_bind(id.to_string());
            }
            query.push(") ORDER BY ma.message_id, ma.position");
            let rows = query.build().fetch_all(reader).await?;
            rows.iter()
                .map(|row| {
                    let message_id = row
                        .get::<String, _>("message_id")
                        .parse()
                        .map_err(|_| StoreError::Conflict("bad message id".into()))?;
                    Ok((message_id, attachment_from_row(row)?))
                })
                .collect()
        })
    }

    /// Whether `viewer` may download the attachment: they uploaded it, or it is attached to a message they
    /// may see under `visibility`.
    pub async fn attachment_visible(
        &self,
        id: Uuid,
        visibility: &crate::Visibility,
    ) -> StoreResult<bool> {
        on_db!(self, |writer, reader| {
            let attachment = self.attachment(id).await?;
            if attachment.created_by == visibility.viewer {
                return Ok(true);
            }
            let users: Vec<String> = sqlx::query_scalar(
                "SELECT message_id FROM message_attachments WHERE attachment_id = $1",
            )
            .bind(id.to_string())
            .fetch_all(reader)
            .await?;
            for message_id in users {
                let Ok(message_id) = message_id.parse() else {
                    continue;
                };
                if self.visible_message(message_id, visibility).await.is_ok() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

impl Store {
    /// Deletes attachments no message refers to that are older than `cutoff_ms`, and returns the blobs
    /// (SHA-256) no attachment refers to any more, for the caller to remove from disk.
    pub async fn collect_unreferenced_attachments(
        &self,
        cutoff_ms: i64,
    ) -> StoreResult<Vec<String>> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let candidates: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT a.sha256 FROM attachments a
                 WHERE a.created_at < $1 AND NOT EXISTS (SELECT 1 FROM message_attachments ma WHERE ma.attachment_id = a.id)
                   AND NOT EXISTS (SELECT 1 FROM scenario_attachments sa WHERE sa.attachment_id = a.id)",
            )
            .bind(cutoff_ms)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM attachments WHERE created_at < $1
                 AND NOT EXISTS (SELECT 1 FROM message_attachments ma WHERE ma.attachment_id = attachments.id)
                 AND NOT EXISTS (SELECT 1 FROM scenario_attachments sa WHERE sa.attachment_id = attachments.id)",
            )
            .bind(cutoff_ms)
            .execute(&mut *tx)
            .await?;
            let mut orphaned = Vec::new();
            for sha256 in candidates {
                let still_used: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM attachments WHERE sha256 = $1
                 UNION ALL SELECT CAST(1 AS BIGINT) FROM inbound_attachments WHERE sha256 = $1
                 UNION ALL SELECT CAST(1 AS BIGINT) FROM inbound_messages WHERE raw_sha256 = $1
                 LIMIT 1",
                )
                .bind(&sha256)
                .fetch_optional(&mut *tx)
                .await?;
                if still_used.is_none() {
                    orphaned.push(sha256);
                }
            }
            tx.commit().await?;
            Ok(orphaned)
        })
    }

    /// Whether any attachment refers to this blob.
    pub async fn blob_in_use(&self, sha256: &str) -> StoreResult<bool> {
        on_db!(self, |writer, reader| {
            let used: Option<i64> = sqlx::query_scalar(
                "SELECT CAST(1 AS BIGINT) FROM attachments WHERE sha256 = $1
                 UNION ALL SELECT CAST(1 AS BIGINT) FROM inbound_attachments WHERE sha256 = $1
                 UNION ALL SELECT CAST(1 AS BIGINT) FROM inbound_messages WHERE raw_sha256 = $1
                 LIMIT 1",
            )
            .bind(sha256)
            .fetch_optional(writer)
            .await?;
            Ok(used.is_some())
        })
    }
}

/// A file that goes with a scenario's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioAttachment {
    pub attachment: Attachment,
    /// `true`: added to every message unless the sender removes it; `false`: offered, added when picked.
    pub is_default: bool,
}

impl Store {
    pub async fn scenario_attachments(
        &self,
        scenario: &str,
    ) -> StoreResult<Vec<ScenarioAttachment>> {
        on_db!(self, |writer, reader| {
            let sql = format!(
                "SELECT sa.mode, {COLUMNS} FROM scenario_attachments sa JOIN attachments a ON a.id = sa.attachment_id
                 WHERE sa.scenario = $1 ORDER BY sa.created_at, a.id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(scenario)
                .fetch_all(reader)
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(ScenarioAttachment {
                        attachment: attachment_from_row(row)?,
                        is_default: row.get::<String, _>("mode") == "default",
                    })
                })
                .collect()
        })
    }

    /// Adds (or re-marks) a file for a scenario.
    pub async fn set_scenario_attachment(
        &self,
        scenario: &str,
        attachment_id: Uuid,
        is_default: bool,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            self.attachment(attachment_id).await?;
            sqlx::query(
                "INSERT INTO scenario_attachments (scenario, attachment_id, mode, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (scenario, attachment_id) DO UPDATE SET mode = excluded.mode",
            )
            .bind(scenario)
            .bind(attachment_id.to_string())
            .bind(if is_default { "default" } else { "optional" })
            .bind(now_ms())
            .execute(writer)
            .await?;
            Ok(())
        })
    }

    pub async fn remove_scenario_attachment(
        &self,
        scenario: &str,
        attachment_id: Uuid,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let result = sqlx::query(
                "DELETE FROM scenario_attachments WHERE scenario = $1 AND attachment_id = $2",
            )
            .bind(scenario)
            .bind(attachment_id.to_string())
            .execute(writer)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!(
                    "attachment {attachment_id} of scenario {scenario:?}"
                )));
            }
            Ok(())
        })
    }
}
