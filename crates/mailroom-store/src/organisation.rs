//! Teams (permission sets granted to their members) and queues (shared inboxes with a mailbox).

use crate::db::{StoreRow, WritePool, on_db};
use crate::mailboxes::insert_mailbox;
use crate::users::sets_json;
use crate::{Store, StoreError, StoreResult, User, now_ms};
use mailroom_core::access::{Grants, PermissionSet};
use mailroom_core::address::EmailAddress;
use mailroom_core::mailbox::MailboxKind;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: Uuid,
    pub name: String,
    pub grants: Grants,
    pub members: Vec<Uuid>,
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub id: Uuid,
    pub name: String,
    pub email_address: EmailAddress,
    pub members: Vec<Uuid>,
    pub mailbox_id: Option<Uuid>,
    pub created_at_ms: i64,
}

fn parse_sets(raw: &str) -> StoreResult<Grants> {
    let sets: Vec<String> = serde_json::from_str(raw).unwrap_or_default();
    Ok(Grants::new(
        sets.iter()
            .map(|s| s.parse::<PermissionSet>())
            .collect::<Result<_, _>>()?,
    ))
}

fn uuid(raw: &str) -> StoreResult<Uuid> {
    raw.parse()
        .map_err(|_| StoreError::Conflict(format!("stored id {raw:?} is not a UUID")))
}

/// Refuses member lists that name unknown users.
macro_rules! check_members {
    ($tx:expr, $members:expr) => {{
        for member in $members {
            let known: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(member.to_string())
                .fetch_optional(&mut *$tx)
                .await?;
            if known.is_none() {
                return Err(StoreError::NotFound(format!("user {member}")));
            }
        }
    }};
}

impl Store {
    pub async fn create_team(
        &self,
        name: &str,
        grants: &Grants,
        members: &[Uuid],
    ) -> StoreResult<Team> {
        let id = Uuid::new_v4();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            check_members!(tx, members);
            let inserted = sqlx::query(
                "INSERT INTO teams (id, name, permission_sets, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(name)
            .bind(sets_json(grants))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::Refused {
                    code: "team_name_taken",
                    message: format!("a team named {name:?} exists already"),
                });
            }
            for member in members {
                sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id.to_string())
                    .bind(member.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        self.tokens_changed().await;
        self.team(id).await
    }

    /// Replaces a team's permission sets and members; its members' tokens see the change at once.
    pub async fn update_team(
        &self,
        id: Uuid,
        grants: &Grants,
        members: &[Uuid],
    ) -> StoreResult<Team> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            check_members!(tx, members);
            let updated =
                sqlx::query("UPDATE teams SET permission_sets = $2, updated_at = $3 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(sets_json(grants))
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("team {id}")));
            }
            sqlx::query("DELETE FROM team_members WHERE team_id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            for member in members {
                sqlx::query("INSERT INTO team_members (team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id.to_string())
                    .bind(member.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        self.tokens_changed().await;
        self.team(id).await
    }

    pub async fn team(&self, id: Uuid) -> StoreResult<Team> {
        self.teams()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("team {id}")))
    }

    pub async fn teams(&self) -> StoreResult<Vec<Team>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT id, name, permission_sets, created_at FROM teams ORDER BY name",
            )
            .fetch_all(reader)
            .await?;
            let members = sqlx::query("SELECT team_id, user_id FROM team_members ORDER BY user_id")
                .fetch_all(reader)
                .await?;
            rows.iter()
                .map(|row| {
                    let id: String = row.get("id");
                    Ok(Team {
                        id: uuid(&id)?,
                        name: row.get("name"),
                        grants: parse_sets(&row.get::<String, _>("permission_sets"))?,
                        members: members
                            .iter()
                            .filter(|m| m.get::<String, _>("team_id") == id)
                            .map(|m| uuid(&m.get::<String, _>("user_id")))
                            .collect::<StoreResult<_>>()?,
                        created_at_ms: row.get("created_at"),
                    })
                })
                .collect()
        })
    }

    /// A user with the permission sets of their teams added to their own: what they may do.
    pub async fn user_with_team_grants(&self, user_id: Uuid) -> StoreResult<User> {
        let mut user = self.user(user_id).await?;
        let team_sets: Vec<String> = on_db!(self, |writer, reader| {
            sqlx::query_scalar(
                "SELECT t.permission_sets FROM teams t JOIN team_members m ON m.team_id = t.id WHERE m.user_id = $1",
            )
            .bind(user_id.to_string())
            .fetch_all(reader)
            .await?
        });
        if !team_sets.is_empty() {
            let mut sets = user.grants.sets().to_vec();
            for raw in &team_sets {
                sets.extend(parse_sets(raw)?.sets().iter().cloned());
            }
            user.grants = Grants::new(sets);
        }
        Ok(user)
    }

    /// Creates a queue and its mailbox (with the organisation's defaults), in one transaction.
    pub async fn create_queue(
        &self,
        name: &str,
        address: &EmailAddress,
        members: &[Uuid],
    ) -> StoreResult<Queue> {
        let id = Uuid::new_v4();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            check_members!(tx, members);
            let inserted = sqlx::query(
                "INSERT INTO queues (id, name, email_address, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(name)
            .bind(address.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::Refused {
                    code: "queue_name_taken",
                    message: format!("a queue named {name:?} exists already"),
                });
            }
            for member in members {
                sqlx::query("INSERT INTO queue_members (queue_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id.to_string())
                    .bind(member.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            insert_mailbox!(
                tx,
                self,
                MailboxKind::Queue,
                None::<Uuid>,
                Some(id),
                address
            );
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        self.queue(id).await
    }

    pub async fn queue(&self, id: Uuid) -> StoreResult<Queue> {
        self.queues()
            .await?
            .into_iter()
            .find(|q| q.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("queue {id}")))
    }

    pub async fn queues(&self) -> StoreResult<Vec<Queue>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT q.id, q.name, q.email_address, q.created_at, m.id AS mailbox_id FROM queues q
                 LEFT JOIN mailboxes m ON m.queue_id = q.id ORDER BY q.name",
            )
            .fetch_all(reader)
            .await?;
            let members =
                sqlx::query("SELECT queue_id, user_id FROM queue_members ORDER BY user_id")
                    .fetch_all(reader)
                    .await?;
            rows.iter()
                .map(|row| {
                    let id: String = row.get("id");
                    Ok(Queue {
                        id: uuid(&id)?,
                        name: row.get("name"),
                        email_address: EmailAddress::parse(&row.get::<String, _>("email_address"))?,
                        members: members
                            .iter()
                            .filter(|m| m.get::<String, _>("queue_id") == id)
                            .map(|m| uuid(&m.get::<String, _>("user_id")))
                            .collect::<StoreResult<_>>()?,
                        mailbox_id: row
                            .get::<Option<String>, _>("mailbox_id")
                            .map(|m| uuid(&m))
                            .transpose()?,
                        created_at_ms: row.get("created_at"),
                    })
                })
                .collect()
        })
    }
}
