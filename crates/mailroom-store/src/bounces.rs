//! Bounces and complaints: what a received report says about a message we sent, recorded per
//! recipient with its event, and the address suppressed after a hard bounce or a complaint — in one
//! transaction.

use crate::db::{WritePool, on_db};
use crate::{Store, StoreResult, now_ms};
use mailroom_core::inbound::report::Report;
use uuid::Uuid;

/// One recipient's bounce or complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceRecord {
    pub message_id: Uuid,
    pub recipient: String,
    /// `bounce` or `complaint`.
    pub kind: String,
    /// `failed` or `delayed` (bounces); the feedback type (complaints).
    pub action: String,
    pub status: String,
    pub diagnostic: Option<String>,
    /// A permanent failure or a complaint: the address is suppressed.
    pub hard: bool,
    pub created_at_ms: i64,
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    bool,
    i64,
);

impl Store {
    /// The VERP return path of a message (see [`mailroom_core::verp`]).
    pub fn verp_return_path(&self, message_id: Uuid, domain: &str) -> String {
        mailroom_core::verp::return_path(message_id, domain, |data| self.secrets.tag(data))
    }

    /// The message a received report's VERP tokens name (see [`mailroom_core::verp::tokens_in`]),
    /// when one of them was signed by this installation.
    pub fn verp_message(&self, tokens: &[String]) -> Option<Uuid> {
        tokens
            .iter()
            .find_map(|token| mailroom_core::verp::verify(token, |data| self.secrets.tag(data)))
    }

    /// Records what `report` says about the message it names — by the VERP token it was delivered
    /// to (`verp_message`), else by the original Message-ID — when we sent it; reports on mail we
    /// did not send change nothing. Returns what was newly recorded (a report seen twice records
    /// nothing the second time).
    pub async fn record_report(
        &self,
        inbound_id: Option<Uuid>,
        report: &Report,
        verp_message: Option<Uuid>,
    ) -> StoreResult<Vec<BounceRecord>> {
        let (original, lines): (Option<&String>, Vec<BounceRecord>) = match report {
            Report::Delivery {
                original_message_id,
                recipients,
            } => (
                original_message_id.as_ref(),
                recipients
                    .iter()
                    .filter(|r| r.is_bounce())
                    .map(|r| BounceRecord {
                        message_id: Uuid::nil(),
                        recipient: r.recipient.clone(),
                        kind: "bounce".into(),
                        action: r.action.clone(),
                        status: r.status.clone(),
                        diagnostic: r.diagnostic.clone(),
                        hard: r.is_hard_bounce(),
                        created_at_ms: 0,
                    })
                    .collect(),
            ),
            Report::Feedback {
                feedback_type,
                original_message_id,
                recipients,
            } => (
                original_message_id.as_ref(),
                recipients
                    .iter()
                    .map(|r| BounceRecord {
                        message_id: Uuid::nil(),
                        recipient: r.clone(),
                        kind: "complaint".into(),
                        action: feedback_type.clone(),
                        status: String::new(),
                        diagnostic: None,
                        hard: true,
                        created_at_ms: 0,
                    })
                    .collect(),
            ),
        };
        if original.is_none() && verp_message.is_none() {
            return Ok(Vec::new());
        }
        let original = original.cloned().unwrap_or_default();
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let found: Option<String> = match verp_message {
                Some(id) => sqlx::query_scalar("SELECT id FROM messages WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?,
                None => sqlx::query_scalar(
                    "SELECT id FROM messages WHERE message_id_header = $1 OR message_id_header = $2",
                )
                .bind(format!("<{original}>"))
                .bind(&original)
                .fetch_optional(&mut *tx)
                .await?,
            };
            let Some(message) = found else {
                return Ok(Vec::new());
            };
            let message_id: Uuid = message.parse().map_err(|_| {
                crate::StoreError::Conflict(format!("stored id {message:?} is not a UUID"))
            })?;
            let mut recorded = Vec::new();
            for mut line in lines {
                let inserted = sqlx::query(
                    "INSERT INTO message_bounces (message_id, recipient, kind, action, status, diagnostic, hard, inbound_id, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                )
                .bind(&message)
                .bind(&line.recipient)
                .bind(&line.kind)
                .bind(&line.action)
                .bind(&line.status)
                .bind(&line.diagnostic)
                .bind(line.hard)
                .bind(inbound_id.map(|i| i.to_string()))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    continue;
                }
                let kind = if line.kind == "complaint" {
                    "message.complained"
                } else {
                    "message.bounced"
                };
                sqlx::query(
                    "INSERT INTO events (kind, subject_id, payload_json, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(kind)
                .bind(&message)
                .bind(
                    serde_json::json!({"message_id": message, "recipient": line.recipient, "action": line.action,
                        "status": line.status, "diagnostic": line.diagnostic, "hard": line.hard,
                        "report_id": inbound_id})
                    .to_string(),
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if line.hard {
                    let (reason, detail) = if line.kind == "complaint" {
                        ("complaint", format!("{} report", line.action))
                    } else {
                        (
                            "hard-bounce",
                            match &line.diagnostic {
                                Some(words) => format!("{} {words}", line.status),
                                None => line.status.clone(),
                            },
                        )
                    };
                    sqlx::query(
                        "INSERT INTO suppressions (address, reason, detail, message_id, created_by, created_at)
                         VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (address) DO NOTHING",
                    )
                    .bind(&line.recipient)
                    .bind(reason)
                    .bind(detail.chars().take(500).collect::<String>())
                    .bind(&message)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                line.message_id = message_id;
                line.created_at_ms = now;
                recorded.push(line);
            }
            tx.commit().await?;
            *self
                .caches
                .suppressions_empty
                .lock()
                .expect("suppression lock") = None;
            Ok(recorded)
        })
    }

    /// What reports said about a message, oldest first.
    pub async fn message_bounces(&self, message_id: Uuid) -> StoreResult<Vec<BounceRecord>> {
        let rows: Vec<Row> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT message_id, recipient, kind, action, status, diagnostic, hard, created_at
                 FROM message_bounces WHERE message_id = $1 ORDER BY created_at, recipient",
            )
            .bind(message_id.to_string())
            .fetch_all(reader)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(_, recipient, kind, action, status, diagnostic, hard, at)| BounceRecord {
                    message_id,
                    recipient,
                    kind,
                    action,
                    status,
                    diagnostic,
                    hard,
                    created_at_ms: at,
                },
            )
            .collect())
    }
}
