//! The app inside the user's mail client (MISSION D1–D3): the deployment mode, what was recorded per
//! user, and the lookups its pane makes.

use crate::db::{WritePool, on_db};
use crate::{MailboxRecord, Store, StoreError, StoreResult, User, now_ms};
use mailroom_core::access::{Grants, PermissionSet};
use mailroom_core::mail_client_app::{Deployed, DeploymentMode};
use std::collections::HashMap;
use uuid::Uuid;

const SETTINGS_NAME: &str = "mail_client_app";

/// `(record_type, record_id)` rows.
type RecordRows = Vec<(String, String)>;
/// `(user_id, state, updated_at)` rows.
type RecordedRows = Vec<(String, String, i64)>;

/// One user as the app's deployment sees them.
#[derive(Debug, Clone)]
pub struct AppUser {
    /// With the permission sets their teams give them.
    pub user: User,
    /// Their own mailbox, if any.
    pub mailbox: Option<MailboxRecord>,
    pub recorded: Option<Deployed>,
    pub recorded_at_ms: Option<i64>,
}

/// A business record found for a participant of a message, and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRecord {
    pub address: String,
    pub record_type: String,
    pub record_id: String,
    /// `contact` (a contact with that address belongs to it) or `mail` (earlier mail from that
    /// address in the mailbox concerns it).
    pub source: &'static str,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSettings {
    deployment: DeploymentMode,
}

impl Store {
    pub async fn mail_client_app_mode(&self) -> StoreResult<DeploymentMode> {
        on_db!(self, |writer, reader| {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT value_json FROM settings WHERE name = $1")
                    .bind(SETTINGS_NAME)
                    .fetch_optional(reader)
                    .await?;
            Ok(stored
                .and_then(|raw| serde_json::from_str::<StoredSettings>(&raw).ok())
                .map(|s| s.deployment)
                .unwrap_or_default())
        })
    }

    pub async fn set_mail_client_app_mode(&self, mode: DeploymentMode) -> StoreResult<()> {
        let json = serde_json::to_string(&StoredSettings { deployment: mode })
            .map_err(|e| StoreError::Conflict(format!("settings do not serialise: {e}")))?;
        on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO settings (name, value_json, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at",
            )
            .bind(SETTINGS_NAME)
            .bind(json)
            .bind(now_ms())
            .execute(writer)
            .await?;
            Ok(())
        })
    }

    /// This organisation's add-in id, made on first use (the `Id` of its Office add-in manifest).
    pub async fn mail_client_app_id(&self) -> StoreResult<Uuid> {
        let fresh = serde_json::to_string(&Uuid::new_v4().to_string())
            .map_err(|e| StoreError::Conflict(format!("an id does not serialise: {e}")))?;
        let stored: String = on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO settings (name, value_json, updated_at) VALUES ('mail_client_app_id', $1, $2)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(fresh)
            .bind(now_ms())
            .execute(writer)
            .await?;
            sqlx::query_scalar("SELECT value_json FROM settings WHERE name = 'mail_client_app_id'")
                .fetch_one(writer)
                .await?
        });
        serde_json::from_str::<String>(&stored)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                StoreError::Conflict(format!("stored add-in id {stored:?} is not a UUID"))
            })
    }

    /// Every user with their team grants, own mailbox and what was recorded about the app, by name.
    pub async fn mail_client_app_users(&self) -> StoreResult<Vec<AppUser>> {
        let users = self.users().await?;
        let (team_sets, recorded): (RecordRows, RecordedRows) = on_db!(self, |writer, reader| {
            let team_sets = sqlx::query_as(
                    "SELECT m.user_id, t.permission_sets FROM teams t JOIN team_members m ON m.team_id = t.id",
                )
                .fetch_all(reader)
                .await?;
            let recorded =
                sqlx::query_as("SELECT user_id, state, updated_at FROM mail_client_app_users")
                    .fetch_all(reader)
                    .await?;
            (team_sets, recorded)
        });
        let mut mailboxes: HashMap<Uuid, MailboxRecord> = self
            .mailboxes(None, None)
            .await?
            .into_iter()
            .filter_map(|m| m.user_id.map(|u| (u, m)))
            .collect();
        let mut extra: HashMap<String, Vec<PermissionSet>> = HashMap::new();
        for (user, raw) in team_sets {
            let sets: Vec<String> = serde_json::from_str(&raw).unwrap_or_default();
            for set in sets {
                extra
                    .entry(user.clone())
                    .or_default()
                    .push(set.parse::<PermissionSet>()?);
            }
        }
        let recorded: HashMap<String, (Deployed, i64)> = recorded
            .into_iter()
            .filter_map(|(user, state, at)| Deployed::parse(&state).map(|d| (user, (d, at))))
            .collect();
        let mut answer: Vec<AppUser> = users
            .into_iter()
            .map(|mut user| {
                let key = user.id.to_string();
                if let Some(sets) = extra.remove(&key) {
                    let mut all = user.grants.sets().to_vec();
                    all.extend(sets);
                    user.grants = Grants::new(all);
                }
                let mailbox = mailboxes.remove(&user.id);
                let recorded = recorded.get(&key).copied();
                AppUser {
                    user,
                    mailbox,
                    recorded: recorded.map(|r| r.0),
                    recorded_at_ms: recorded.map(|r| r.1),
                }
            })
            .collect();
        answer.sort_by(|a, b| a.user.name.cmp(&b.user.name));
        Ok(answer)
    }

    /// One user as the app's deployment sees them.
    pub async fn mail_client_app_user(&self, user_id: Uuid) -> StoreResult<AppUser> {
        let user = self.user_with_team_grants(user_id).await?;
        let mailbox = self.mailbox_of_user(user_id).await?;
        let recorded: Option<(String, i64)> = on_db!(self, |writer, reader| {
            sqlx::query_as("SELECT state, updated_at FROM mail_client_app_users WHERE user_id = $1")
                .bind(user_id.to_string())
                .fetch_optional(reader)
                .await?
        });
        let recorded = recorded.and_then(|(s, at)| Deployed::parse(&s).map(|d| (d, at)));
        Ok(AppUser {
            user,
            mailbox,
            recorded: recorded.map(|r| r.0),
            recorded_at_ms: recorded.map(|r| r.1),
        })
    }

    /// Records the app as deployed to (`Requested`) or opened by (`Opened`) each user. Deploying
    /// again never takes back an `Opened`. Unknown users are refused, and nothing is recorded then.
    pub async fn record_mail_client_app(
        &self,
        users: &[Uuid],
        deployed: Deployed,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            for user in users {
                let known: Option<String> =
                    sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                        .bind(user.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                if known.is_none() {
                    return Err(StoreError::NotFound(format!("user {user}")));
                }
                let sql = match deployed {
                    Deployed::Requested => {
                        "INSERT INTO mail_client_app_users (user_id, state, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id) DO NOTHING"
                    }
                    Deployed::Opened => {
                        "INSERT INTO mail_client_app_users (user_id, state, updated_at) VALUES ($1, $2, $3)
                         ON CONFLICT (user_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at
                         WHERE mail_client_app_users.state <> excluded.state"
                    }
                };
                sqlx::query(sql)
                    .bind(user.to_string())
                    .bind(deployed.as_str())
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The stored message with this Message-ID (without angle brackets) in a mailbox, newest first.
    pub async fn inbound_by_message_id(
        &self,
        mailbox_id: Uuid,
        message_id: &str,
    ) -> StoreResult<Option<Uuid>> {
        let found: Option<String> = on_db!(self, |writer, reader| {
            sqlx::query_scalar(
                "SELECT id FROM inbound_messages WHERE message_id_header = $1 AND mailbox_id = $2
                 ORDER BY received_at DESC, id LIMIT 1",
            )
            .bind(message_id)
            .bind(mailbox_id.to_string())
            .fetch_optional(reader)
            .await?
        });
        found
            .map(|id| {
                id.parse()
                    .map_err(|_| StoreError::Conflict(format!("stored id {id:?} is not a UUID")))
            })
            .transpose()
    }

    /// The records of each address (lower-cased): those of contacts with that address, then those
    /// of the latest mail from that address in `mailbox_id` (at most 50 messages per address looked
    /// at), without repeats, at most `limit` in all.
    pub async fn records_of_addresses(
        &self,
        mailbox_id: Uuid,
        addresses: &[String],
        limit: usize,
    ) -> StoreResult<Vec<ParticipantRecord>> {
        let mut found: Vec<ParticipantRecord> = Vec::new();
        for address in addresses {
            let address = address.to_ascii_lowercase();
            let (contact, mail): (RecordRows, RecordRows) = on_db!(self, |writer, reader| {
                let contact = sqlx::query_as(
                    "SELECT r.record_type, r.record_id FROM contact_addresses a
                         JOIN contact_records r ON r.contact_id = a.contact_id
                         WHERE a.address = $1 ORDER BY r.record_type, r.record_id",
                )
                .bind(&address)
                .fetch_all(reader)
                .await?;
                let mail = sqlx::query_as(
                        "SELECT r.record_type, r.record_id FROM
                           (SELECT id, received_at FROM inbound_messages WHERE from_address = $1 AND mailbox_id = $2
                            ORDER BY received_at DESC LIMIT 50) m
                         JOIN inbound_related_records r ON r.inbound_id = m.id
                         ORDER BY m.received_at DESC, r.record_type, r.record_id",
                    )
                    .bind(&address)
                    .bind(mailbox_id.to_string())
                    .fetch_all(reader)
                    .await?;
                (contact, mail)
            });
            let tagged = contact
                .into_iter()
                .map(|r| (r, "contact"))
                .chain(mail.into_iter().map(|r| (r, "mail")));
            for ((record_type, record_id), source) in tagged {
                if found.len() >= limit {
                    return Ok(found);
                }
                if !found.iter().any(|f| {
                    f.address == address && f.record_type == record_type && f.record_id == record_id
                }) {
                    found.push(ParticipantRecord {
                        address: address.clone(),
                        record_type,
                        record_id,
                        source,
                    });
                }
            }
        }
        Ok(found)
    }
}
