//! Users, their view policies, and the audit log of configuration changes.

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::access::{FALLBACK_VIEW_POLICY, Grants, Licence, PermissionSet, ViewPolicy};
use mailroom_core::address::EmailAddress;
use uuid::Uuid;

/// The view-policy row that applies to everyone without a row of their own.
const DEFAULT_POLICY_ROW: &str = "*";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub contact_email: Option<EmailAddress>,
    pub licence: Licence,
    pub enabled: bool,
    pub grants: Grants,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A validated user definition, for creating a user or replacing its settings.
#[derive(Debug, Clone)]
pub struct UserInput {
    pub name: String,
    pub contact_email: Option<EmailAddress>,
    pub licence: Licence,
    pub enabled: bool,
    pub grants: Grants,
}

/// One entry of the audit log.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

fn user_from_row(row: &impl StoreRow) -> StoreResult<User> {
    let sets: Vec<String> =
        serde_json::from_str(&row.get::<String, _>("permission_sets")).unwrap_or_default();
    let grants = Grants::new(
        sets.iter()
            .map(|s| s.parse::<PermissionSet>())
            .collect::<Result<_, _>>()?,
    );
    Ok(User {
        id: row
            .get::<String, _>("id")
            .parse()
            .map_err(|_| StoreError::Conflict("stored user id is not a UUID".into()))?,
        name: row.get("name"),
        contact_email: row
            .get::<Option<String>, _>("contact_email")
            .map(|e| EmailAddress::parse(&e))
            .transpose()?,
        licence: row.get::<String, _>("licence").parse()?,
        enabled: row.get("enabled"),
        grants,
        created_at_ms: row.get("created_at"),
        updated_at_ms: row.get("updated_at"),
    })
}

pub(crate) fn sets_json(grants: &Grants) -> String {
    serde_json::to_string(
        &grants
            .sets()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    )
    .expect("strings serialize")
}

/// The user a fresh install (or an offline recovery with no user to recover) creates.
fn bootstrap_admin() -> UserInput {
    UserInput {
        name: "admin".into(),
        contact_email: None,
        licence: Licence::Full,
        enabled: true,
        grants: Grants::new(vec![PermissionSet::EmailAdmin]),
    }
}

/// Enabled users that hold `email-admin`, counted inside a write transaction.
/// (A macro, so that it compiles for either backend's transaction.)
macro_rules! enabled_admins {
    ($tx:expr) => {{
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE enabled");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut *$tx)
            .await?;
        let mut admins = 0usize;
        for row in &rows {
            if user_from_row(row)?
                .grants
                .allows(&PermissionSet::EmailAdmin)
            {
                admins += 1;
            }
        }
        admins
    }};
}

const USER_COLUMNS: &str =
    "id, name, contact_email, licence, enabled, permission_sets, created_at, updated_at";

impl Store {
    pub async fn create_user(&self, input: &UserInput) -> StoreResult<User> {
        on_db!(self, |writer, reader| {
            let id = Uuid::new_v4();
            let now = now_ms();
            sqlx::query(
                "INSERT INTO users (id, name, contact_email, licence, enabled, permission_sets, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
            )
            .bind(id.to_string())
            .bind(&input.name)
            .bind(input.contact_email.as_ref().map(ToString::to_string))
            .bind(input.licence.as_str())
            .bind(input.enabled)
            .bind(sets_json(&input.grants))
            .bind(now)
            .execute(writer)
            .await?;
            self.user(id).await
        })
    }

    /// Replaces a user's settings; their tokens see the change at once on this node.
    ///
    /// Refused with `last_admin` when it would leave no enabled user holding `email-admin`: nobody
    /// could then manage users again (short of `mailroom admin recover` on the server's machine).
    pub async fn update_user(&self, id: Uuid, input: &UserInput) -> StoreResult<User> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let result = sqlx::query(
                "UPDATE users SET name = $2, contact_email = $3, licence = $4, enabled = $5, permission_sets = $6, updated_at = $7
                 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(&input.name)
            .bind(input.contact_email.as_ref().map(ToString::to_string))
            .bind(input.licence.as_str())
            .bind(input.enabled)
            .bind(sets_json(&input.grants))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("user {id}")));
            }
            // Inside the write transaction, so that two changes at once cannot each leave the other
            // admin as the last one and then both go through.
            let remaining = enabled_admins!(tx);
            if remaining == 0 {
                return Err(StoreError::Refused {
                    code: "last_admin",
                    message: "this is the last enabled user holding email-admin: enable or grant another admin first"
                        .into(),
                });
            }
            tx.commit().await?;
            self.tokens_changed().await;
            self.user(id).await
        })
    }

    /// Offline recovery for the machine's owner: re-enables the bootstrap `admin` user and grants it
    /// `email-admin` (or, without one, the oldest user holding the set; or creates `admin`), and gives
    /// it a new token. Returns the user and the token's secret.
    pub async fn recover_admin(&self) -> StoreResult<(User, String)> {
        let users = self.users().await?;
        // The bootstrap user first (the machine's owner), then the oldest holder of email-admin.
        let chosen = users
            .iter()
            .filter(|u| u.name == "admin")
            .min_by_key(|u| u.created_at_ms)
            .or_else(|| {
                users
                    .iter()
                    .filter(|u| u.grants.allows(&PermissionSet::EmailAdmin))
                    .min_by_key(|u| u.created_at_ms)
            })
            .cloned();
        let admin = match chosen {
            Some(user) => {
                let mut sets = user.grants.sets().to_vec();
                if !sets.contains(&PermissionSet::EmailAdmin) {
                    sets.push(PermissionSet::EmailAdmin);
                }
                self.update_user(
                    user.id,
                    &UserInput {
                        name: user.name.clone(),
                        contact_email: user.contact_email.clone(),
                        licence: user.licence,
                        enabled: true,
                        grants: Grants::new(sets),
                    },
                )
                .await?
            }
            None => self.create_user(&bootstrap_admin()).await?,
        };
        let (_, secret) = self.create_token(Some(admin.id), "recovery", None).await?;
        self.append_audit(
            "recovery",
            "admin.recovered",
            "user",
            &admin.id.to_string(),
            None,
            None,
        )
        .await?;
        Ok((admin, secret))
    }

    pub async fn user(&self, id: Uuid) -> StoreResult<User> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?;
            row.map(|r| user_from_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("user {id}")))
        })
    }

    pub async fn users(&self) -> StoreResult<Vec<User>> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(reader)
                .await?;
            rows.iter().map(user_from_row).collect()
        })
    }

    /// Makes sure an administrator user exists and owns every token that has no user (tokens made
    /// before users existed, such as the bootstrap admin token). Returns that user.
    pub async fn ensure_admin_user(&self) -> StoreResult<User> {
        on_db!(self, |writer, reader| {
            let orphans: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE user_id IS NULL")
                    .fetch_one(writer)
                    .await?;
            let existing = self
                .users()
                .await?
                .into_iter()
                .find(|u| u.grants.allows(&PermissionSet::EmailAdmin) && u.enabled);
            let admin = match existing {
                Some(admin) => admin,
                None => self.create_user(&bootstrap_admin()).await?,
            };
            if orphans > 0 {
                sqlx::query("UPDATE api_tokens SET user_id = $1 WHERE user_id IS NULL")
                    .bind(admin.id.to_string())
                    .execute(writer)
                    .await?;
                self.tokens_changed().await;
            }
            Ok(admin)
        })
    }

    /// The view policy of a user: their own row, else the default row, else all-related-records.
    pub async fn view_policy(&self, user_id: Uuid) -> StoreResult<ViewPolicy> {
        on_db!(self, |writer, reader| {
            let policy: Option<String> =
                sqlx::query_scalar("SELECT policy FROM view_policies WHERE user_id IN ($1, '*') ORDER BY user_id = '*' LIMIT 1")
                    .bind(user_id.to_string())
                    .fetch_optional(reader)
                    .await?;
            Ok(policy
                .map(|p| p.parse())
                .transpose()?
                .unwrap_or(FALLBACK_VIEW_POLICY))
        })
    }

    /// Sets the view policy of one user, or with `None` the default for everyone. Returns the previous one.
    pub async fn set_view_policy(
        &self,
        user_id: Option<Uuid>,
        policy: ViewPolicy,
    ) -> StoreResult<Option<ViewPolicy>> {
        on_db!(self, |writer, reader| {
            let key = match user_id {
                Some(id) => {
                    self.user(id).await?;
                    id.to_string()
                }
                None => DEFAULT_POLICY_ROW.to_owned(),
            };
            let previous: Option<String> =
                sqlx::query_scalar("SELECT policy FROM view_policies WHERE user_id = $1")
                    .bind(&key)
                    .fetch_optional(writer)
                    .await?;
            sqlx::query("INSERT INTO view_policies (user_id, policy) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET policy = excluded.policy")
                .bind(&key)
                .bind(policy.as_str())
                .execute(writer)
                .await?;
            Ok(previous.map(|p| p.parse()).transpose()?)
        })
    }

    /// Appends to the audit log. `before` and `after` must hold no secrets.
    pub async fn append_audit(
        &self,
        actor_id: &str,
        action: &str,
        target_type: &str,
        target_id: &str,
        before: Option<&serde_json::Value>,
        after: Option<&serde_json::Value>,
    ) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO audit_log (at, actor_id, action, target_type, target_id, before_json, after_json) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(now_ms())
            .bind(actor_id)
            .bind(action)
            .bind(target_type)
            .bind(target_id)
            .bind(before.map(ToString::to_string))
            .bind(after.map(ToString::to_string))
            .execute(writer)
            .await?;
            Ok(())
        })
    }

    /// Audit entries, newest first, older than `before_id` when given.
    pub async fn audit_entries(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AuditEntry>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT id, at, actor_id, action, target_type, target_id, before_json, after_json FROM audit_log
                 WHERE id < $1 ORDER BY id DESC LIMIT $2",
            )
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit.clamp(1, 500)))
            .fetch_all(reader)
            .await?;
            Ok(rows
                .iter()
                .map(|row| AuditEntry {
                    id: row.get("id"),
                    at_ms: row.get("at"),
                    actor_id: row.get("actor_id"),
                    action: row.get("action"),
                    target_type: row.get("target_type"),
                    target_id: row.get("target_id"),
                    before: row
                        .get::<Option<String>, _>("before_json")
                        .and_then(|j| serde_json::from_str(&j).ok()),
                    after: row
                        .get::<Option<String>, _>("after_json")
                        .and_then(|j| serde_json::from_str(&j).ok()),
                })
                .collect())
        })
    }
}
