//! Accounts and the default-account rule: the first account becomes the default, and deleting the
//! default hands the role to the one remaining account, if exactly one remains.

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::account::{
    AccountLimits, ConnectorKind, Security, SenderType, SmtpOptions, SubstituteMode,
};
use mailroom_core::address::EmailAddress;
use mailroom_core::scenario::DEFAULT_SCENARIO;
use uuid::Uuid;

/// An account as stored. The password is never part of it; `has_password` says whether one is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: Uuid,
    pub connector: ConnectorKind,
    pub name: String,
    pub email_address: EmailAddress,
    pub sender_name: Option<String>,
    pub sender_type: SenderType,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Security,
    pub username: Option<String>,
    pub has_password: bool,
    /// Connected with OAuth 2.0: it holds a refresh token (never returned).
    pub oauth_connected: bool,
    pub pickup_dir: Option<String>,
    pub limits: AccountLimits,
    /// Sender substitution (at most one account has it).
    pub substitute_mode: Option<SubstituteMode>,
    /// The Send As / Send On Behalf address.
    pub substitute_address: Option<EmailAddress>,
    /// The name shown with the substitute address.
    pub substitute_name: Option<String>,
    /// Timeouts per stage, the EHLO name, and whether mail with an unknown outcome is sent again.
    pub options: SmtpOptions,
    pub is_default: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Account {
    /// The substitute address with its name, as it is shown in From.
    pub fn substitute_mailbox(&self) -> Option<mailroom_core::address::Mailbox> {
        self.substitute_address
            .clone()
            .map(|address| mailroom_core::address::Mailbox {
                name: self.substitute_name.clone(),
                address,
            })
    }
}

/// A validated account definition, for creating an account or replacing its settings.
#[derive(Debug, Clone)]
pub struct AccountInput {
    pub connector: ConnectorKind,
    pub name: String,
    pub email_address: EmailAddress,
    pub sender_name: Option<String>,
    pub sender_type: SenderType,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Security,
    pub username: Option<String>,
    pub pickup_dir: Option<String>,
    pub limits: AccountLimits,
    pub substitute_mode: Option<SubstituteMode>,
    pub substitute_address: Option<EmailAddress>,
    pub substitute_name: Option<String>,
    pub options: SmtpOptions,
}

/// What to do with an account's stored password.
#[derive(Debug, Clone)]
pub enum PasswordChange {
    Keep,
    Set(String),
    Clear,
}

const ACCOUNT_COLUMNS: &str = "a.id, a.connector, a.name, a.email_address, a.sender_name, a.sender_type, a.host, a.port,
    a.security, a.username, a.password_encrypted IS NOT NULL AS has_password, a.refresh_token_sealed IS NOT NULL AS oauth_connected, a.pickup_dir, a.rate_limit_per_minute,
    a.concurrency_limit, a.max_attempts, a.created_at, a.updated_at, a.substitute_mode, a.substitute_address, a.substitute_name, a.options,
    EXISTS (SELECT 1 FROM scenarios s WHERE s.name = 'default' AND s.account_id = a.id) AS is_default";

fn account_from_row(row: &impl StoreRow) -> StoreResult<Account> {
    let corrupt =
        |what: &str| StoreError::Conflict(format!("stored account has an invalid {what}"));
    Ok(Account {
        id: row
            .get::<String, _>("id")
            .parse()
            .map_err(|_| corrupt("id"))?,
        connector: row.get::<String, _>("connector").parse()?,
        name: row.get("name"),
        email_address: EmailAddress::parse(&row.get::<String, _>("email_address"))?,
        sender_name: row.get("sender_name"),
        sender_type: row.get::<String, _>("sender_type").parse()?,
        host: row.get("host"),
        port: row.get::<Option<i64>, _>("port").map(|p| p as u16),
        security: row.get::<String, _>("security").parse()?,
        username: row.get("username"),
        has_password: row.get("has_password"),
        oauth_connected: row.get("oauth_connected"),
        pickup_dir: row.get("pickup_dir"),
        limits: AccountLimits::new(
            row.get("rate_limit_per_minute"),
            row.get("concurrency_limit"),
            row.get("max_attempts"),
        )?,
        substitute_mode: row
            .get::<Option<String>, _>("substitute_mode")
            .map(|m| m.parse())
            .transpose()?,
        substitute_address: row
            .get::<Option<String>, _>("substitute_address")
            .map(|a| EmailAddress::parse(&a))
            .transpose()?,
        substitute_name: row.get("substitute_name"),
        options: serde_json::from_str(&row.get::<String, _>("options"))
            .map_err(|_| corrupt("options"))?,
        is_default: row.get("is_default"),
        created_at_ms: row.get("created_at"),
        updated_at_ms: row.get("updated_at"),
    })
}

/// Refuses a second account with sender substitution.
/// Refuses a second account that substitutes senders, inside the write transaction `$tx` (a
/// macro, so that it compiles for either backend's transaction).
macro_rules! check_single_substitute {
    ($tx:expr, $input:expr, $except:expr) => {
        if $input.substitute_mode.is_some() {
            let except: Option<Uuid> = $except;
            let other: Option<String> = sqlx::query_scalar(
                "SELECT name FROM accounts WHERE substitute_mode IS NOT NULL AND deleted_at IS NULL AND id <> $1 LIMIT 1",
            )
            .bind(except.map(|id| id.to_string()).unwrap_or_default())
            .fetch_optional(&mut *$tx)
            .await?;
            if let Some(name) = other {
                return Err(StoreError::Conflict(format!(
                    "only one account may substitute senders, and {name:?} already does; turn it off there first"
                )));
            }
        }
    };
}

impl Store {
    /// Creates an account; the first account of an installation becomes the default account.
    pub async fn create_account(
        &self,
        input: &AccountInput,
        password: Option<&str>,
    ) -> StoreResult<Account> {
        on_db!(self, |writer, reader| {
            let id = Uuid::new_v4();
            let now = now_ms();
            let sealed = password.map(|p| self.secrets.seal(&id.to_string(), p));
            let mut tx = writer.begin_write().await?;
            check_single_substitute!(tx, input, None);
            sqlx::query(
                "INSERT INTO accounts (id, connector, name, email_address, sender_name, sender_type, host, port, security,
                   username, password_encrypted, pickup_dir, rate_limit_per_minute, concurrency_limit, max_attempts,
                   created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)",
            )
            .bind(id.to_string())
            .bind(input.connector.as_str())
            .bind(&input.name)
            .bind(input.email_address.as_str())
            .bind(&input.sender_name)
            .bind(input.sender_type.as_str())
            .bind(&input.host)
            .bind(input.port.map(i64::from))
            .bind(input.security.as_str())
            .bind(&input.username)
            .bind(&sealed)
            .bind(&input.pickup_dir)
            .bind(i64::from(input.limits.rate_limit_per_minute))
            .bind(i64::from(input.limits.concurrency_limit))
            .bind(i64::from(input.limits.max_attempts))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE accounts SET substitute_mode = $2, substitute_address = $3, options = $4, substitute_name = $5 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(input.substitute_mode.map(|m| m.as_str()))
            .bind(input.substitute_address.as_ref().map(ToString::to_string))
            .bind(serde_json::to_string(&input.options).expect("options serialize"))
            .bind(&input.substitute_name)
            .execute(&mut *tx)
            .await?;
            // A default account is required as soon as any account exists.
            sqlx::query(
                "UPDATE scenarios SET account_id = $1 WHERE name = $2 AND account_id IS NULL",
            )
            .bind(id.to_string())
            .bind(DEFAULT_SCENARIO)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.routing_changed().await;
            self.account(id).await
        })
    }

    /// Replaces an account's settings.
    pub async fn update_account(
        &self,
        id: Uuid,
        input: &AccountInput,
        password: PasswordChange,
    ) -> StoreResult<Account> {
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            check_single_substitute!(tx, input, Some(id));
            let result = sqlx::query(
                "UPDATE accounts SET name = $2, email_address = $3, sender_name = $4, sender_type = $5, host = $6, port = $7,
                   security = $8, username = $9, pickup_dir = $10, rate_limit_per_minute = $11, concurrency_limit = $12,
                   max_attempts = $13, updated_at = $14
                 WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(id.to_string())
            .bind(&input.name)
            .bind(input.email_address.as_str())
            .bind(&input.sender_name)
            .bind(input.sender_type.as_str())
            .bind(&input.host)
            .bind(input.port.map(i64::from))
            .bind(input.security.as_str())
            .bind(&input.username)
            .bind(&input.pickup_dir)
            .bind(i64::from(input.limits.rate_limit_per_minute))
            .bind(i64::from(input.limits.concurrency_limit))
            .bind(i64::from(input.limits.max_attempts))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("account {id}")));
            }
            sqlx::query(
                "UPDATE accounts SET substitute_mode = $2, substitute_address = $3, options = $4, substitute_name = $5 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(input.substitute_mode.map(|m| m.as_str()))
            .bind(input.substitute_address.as_ref().map(ToString::to_string))
            .bind(serde_json::to_string(&input.options).expect("options serialize"))
            .bind(&input.substitute_name)
            .execute(&mut *tx)
            .await?;
            let sealed = match password {
                PasswordChange::Keep => None,
                PasswordChange::Set(p) => Some(Some(self.secrets.seal(&id.to_string(), &p))),
                PasswordChange::Clear => Some(None),
            };
            if let Some(sealed) = sealed {
                sqlx::query("UPDATE accounts SET password_encrypted = $2 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.routing_changed().await;
            self.account(id).await
        })
    }

    pub async fn account(&self, id: Uuid) -> StoreResult<Account> {
        on_db!(self, |writer, reader| {
            let sql = format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.id = $1 AND a.deleted_at IS NULL"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?;
            row.map(|r| account_from_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("account {id}")))
        })
    }

    pub async fn accounts(&self) -> StoreResult<Vec<Account>> {
        on_db!(self, |writer, reader| {
            let sql = format!(
                "SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.deleted_at IS NULL ORDER BY a.created_at, a.id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(reader)
                .await?;
            rows.iter().map(account_from_row).collect()
        })
    }

    /// The decrypted password of an account, for its connector only. Never logged, never returned by the API.
    pub async fn account_password(&self, id: Uuid) -> StoreResult<Option<String>> {
        on_db!(self, |writer, reader| {
            let sealed: Option<String> = sqlx::query_scalar(
                "SELECT password_encrypted FROM accounts WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(id.to_string())
            .fetch_optional(reader)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("account {id}")))?;
            sealed
                .map(|s| self.secrets.open(&id.to_string(), &s))
                .transpose()
                .map_err(Into::into)
        })
    }

    /// Deletes an account. Refused while messages are waiting in its outbox (they would be lost).
    /// When the default account is deleted and exactly one account remains, that one becomes the default.
    pub async fn delete_account(&self, id: Uuid) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE account_id = $1 AND status IN ('queued', 'sending')")
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await?;
            if pending > 0 {
                return Err(StoreError::Conflict(format!(
                    "account {id} still has {pending} message(s) waiting to be sent; cancel them or let them finish before deleting the account"
                )));
            }
            // The row stays (soft delete) so that finished messages keep their account in the history.
            let result = sqlx::query("UPDATE accounts SET deleted_at = $2, password_encrypted = NULL WHERE id = $1 AND deleted_at IS NULL")
                .bind(id.to_string())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("account {id}")));
            }
            sqlx::query("UPDATE scenarios SET account_id = NULL WHERE account_id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            let remaining: Vec<String> =
                sqlx::query_scalar("SELECT id FROM accounts WHERE deleted_at IS NULL")
                    .fetch_all(&mut *tx)
                    .await?;
            if remaining.len() == 1 {
                sqlx::query(
                    "UPDATE scenarios SET account_id = $1 WHERE name = $2 AND account_id IS NULL",
                )
                .bind(&remaining[0])
                .bind(DEFAULT_SCENARIO)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            self.routing_changed().await;
            Ok(())
        })
    }
}
