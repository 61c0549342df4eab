//! Templates and their versions. Saving never changes a version; it adds the next one.

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::template::TemplateSource;
use mailroom_core::template::builtin::built_in;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRecord {
    pub id: String,
    pub version: i64,
    pub document_type: String,
    pub scenario: Option<String>,
    pub source: TemplateSource,
    pub built_in: bool,
    pub created_by: String,
    pub created_at_ms: i64,
}

fn from_row(row: &impl StoreRow) -> TemplateRecord {
    TemplateRecord {
        id: row.get("id"),
        version: row.get("version"),
        document_type: row.get("document_type"),
        scenario: row.get("scenario"),
        source: TemplateSource {
            subject: row.get("subject"),
            html: row.get("html"),
            text: row.get("text"),
        },
        built_in: row.get("built_in"),
        created_by: row.get("created_by"),
        created_at_ms: row.get("created_at"),
    }
}

const COLUMNS: &str =
    "id, version, document_type, scenario, subject, html, text, built_in, created_by, created_at";

impl Store {
    pub(crate) async fn seed_built_in_templates(&self) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            for template in built_in() {
                sqlx::query(
                    "INSERT INTO templates (id, version, document_type, scenario, subject, html, text, built_in, created_by, created_at)
                     SELECT $1, 1, $2, NULL, $3, $4, $5, TRUE, 'mailroom', $6 WHERE NOT EXISTS (SELECT 1 FROM templates WHERE id = $1)",
                )
                .bind(template.id)
                .bind(template.document_type)
                .bind(&template.source.subject)
                .bind(&template.source.html)
                .bind(&template.source.text)
                .bind(now_ms())
                .execute(writer)
                .await?;
            }
            Ok(())
        })
    }

    /// The latest version of every template.
    pub async fn templates(&self) -> StoreResult<Vec<TemplateRecord>> {
        on_db!(self, |writer, reader| {
            let sql = format!(
                "SELECT {COLUMNS} FROM templates t WHERE version = (SELECT MAX(version) FROM templates u WHERE u.id = t.id) ORDER BY id"
            );
            Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(reader)
                .await?
                .iter()
                .map(from_row)
                .collect())
        })
    }

    /// One version of a template (the latest when `version` is `None`).
    pub async fn template(&self, id: &str, version: Option<i64>) -> StoreResult<TemplateRecord> {
        on_db!(self, |writer, reader| {
            let sql = format!(
                "SELECT {COLUMNS} FROM templates WHERE id = $1 AND ($2 IS NULL OR version = $2) ORDER BY version DESC LIMIT 1"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(version)
                .fetch_optional(reader)
                .await?;
            row.map(|r| from_row(&r)).ok_or_else(|| match version {
                Some(v) => StoreError::NotFound(format!("version {v} of template {id:?}")),
                None => StoreError::NotFound(format!("template {id:?}")),
            })
        })
    }

    /// Every version number of a template with when and by whom it was made, newest first.
    pub async fn template_versions(&self, id: &str) -> StoreResult<Vec<(i64, i64, String)>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query("SELECT version, created_at, created_by FROM templates WHERE id = $1 ORDER BY version DESC")
                .bind(id)
                .fetch_all(reader)
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get("version"), r.get("created_at"), r.get("created_by")))
                .collect())
        })
    }

    /// Saves a new version of a template (version 1 for a new one).
    pub async fn save_template(
        &self,
        id: &str,
        document_type: &str,
        scenario: Option<&str>,
        source: &TemplateSource,
        created_by: &str,
    ) -> StoreResult<TemplateRecord> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let next: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM templates WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO templates (id, version, document_type, scenario, subject, html, text, built_in, created_by, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, FALSE, $8, $9)",
            )
            .bind(id)
            .bind(next)
            .bind(document_type)
            .bind(scenario)
            .bind(&source.subject)
            .bind(&source.html)
            .bind(&source.text)
            .bind(created_by)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.template(id, Some(next)).await
        })
    }
}

impl Store {
    /// The template for a document type sent in a scenario: one made for that type and scenario, else
    /// the template named like the document type.
    pub async fn template_for(
        &self,
        document_type: &str,
        scenario: &str,
    ) -> StoreResult<TemplateRecord> {
        on_db!(self, |writer, reader| {
            let specific: Option<String> = sqlx::query_scalar(
                "SELECT id FROM templates WHERE document_type = $1 AND scenario = $2 ORDER BY created_at DESC, version DESC LIMIT 1",
            )
            .bind(document_type)
            .bind(scenario)
            .fetch_optional(reader)
            .await?;
            self.template(specific.as_deref().unwrap_or(document_type), None)
                .await
        })
    }
}
