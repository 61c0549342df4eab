//! Mailboxes connected with OAuth 2.0 (MISSION C1): authorization requests under way (single use,
//! ten minutes), and each mailbox's refresh token, sealed with the mailbox and registration ids so
//! that it opens only for the registration that issued it.

use crate::db::{WritePool, on_db};
use crate::{MailboxRecord, Store, StoreError, StoreResult, now_ms};
use uuid::Uuid;

/// What an authorization request connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OAuthTarget {
    Mailbox,
    Account,
}

impl OAuthTarget {
    fn as_str(self) -> &'static str {
        match self {
            OAuthTarget::Mailbox => "mailbox",
            OAuthTarget::Account => "account",
        }
    }
}

/// An authorization request under way.
#[derive(Clone)]
pub struct OAuthState {
    pub id: String,
    pub user_id: Uuid,
    pub registration_id: Uuid,
    pub target: OAuthTarget,
    /// The mailbox's id, or the account's.
    pub mailbox_id: Uuid,
    /// The PKCE verifier (RFC 7636).
    pub verifier: String,
    /// What ties the callback to the browser that started: the value of a cookie set at the start.
    pub binding: String,
    pub expires_at_ms: i64,
}

impl std::fmt::Debug for OAuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthState")
            .field("user_id", &self.user_id)
            .field("registration_id", &self.registration_id)
            .field("mailbox_id", &self.mailbox_id)
            .finish_non_exhaustive()
    }
}

/// An authorization request as stored.
type StateRow = (String, String, String, String, i64, String);

/// The record id a mailbox's refresh token is sealed with: both ids, so that it opens only for
/// the mailbox and the registration it was issued for.
fn token_binding(mailbox: Uuid, registration: Uuid) -> String {
    format!("{mailbox}/oauth/{registration}")
}

impl Store {
    /// Remembers an authorization request (and forgets expired ones).
    pub async fn create_oauth_state(&self, state: &OAuthState) -> StoreResult<()> {
        let secret =
            serde_json::json!({"verifier": state.verifier, "binding": state.binding}).to_string();
        let sealed = self.secrets.seal(&state.id, &secret);
        let now = now_ms();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO oauth_states (id, user_id, registration_id, mailbox_id, secret_sealed, created_at, expires_at, target)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&state.id)
            .bind(state.user_id.to_string())
            .bind(state.registration_id.to_string())
            .bind(state.mailbox_id.to_string())
            .bind(&sealed)
            .bind(now)
            .bind(state.expires_at_ms)
            .bind(state.target.as_str())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// An authorization request under way, without using it up (the browser's first stop).
    pub async fn peek_oauth_state(&self, id: &str) -> StoreResult<Option<OAuthState>> {
        let row: Option<StateRow> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT user_id, registration_id, mailbox_id, secret_sealed, expires_at, target FROM oauth_states WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(reader)
            .await?
        });
        self.state_from_row(id, row)
    }

    /// Takes an authorization request: it can be used once, and not after it expired.
    pub async fn take_oauth_state(&self, id: &str) -> StoreResult<Option<OAuthState>> {
        let row: Option<StateRow> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "DELETE FROM oauth_states WHERE id = $1
                 RETURNING user_id, registration_id, mailbox_id, secret_sealed, expires_at, target",
            )
            .bind(id)
            .fetch_optional(writer)
            .await?
        });
        self.state_from_row(id, row)
    }

    fn state_from_row(&self, id: &str, row: Option<StateRow>) -> StoreResult<Option<OAuthState>> {
        let Some((user, registration, mailbox, sealed, expires_at, target)) = row else {
            return Ok(None);
        };
        if expires_at < now_ms() {
            return Ok(None);
        }
        let corrupt = || StoreError::Conflict("stored authorization request is damaged".into());
        let secret: serde_json::Value =
            serde_json::from_str(&self.secrets.open(id, &sealed)?).map_err(|_| corrupt())?;
        Ok(Some(OAuthState {
            id: id.to_owned(),
            user_id: user.parse().map_err(|_| corrupt())?,
            registration_id: registration.parse().map_err(|_| corrupt())?,
            mailbox_id: mailbox.parse().map_err(|_| corrupt())?,
            target: if target == "account" {
                OAuthTarget::Account
            } else {
                OAuthTarget::Mailbox
            },
            verifier: secret["verifier"].as_str().ok_or_else(corrupt)?.to_owned(),
            binding: secret["binding"].as_str().ok_or_else(corrupt)?.to_owned(),
            expires_at_ms: expires_at,
        }))
    }

    /// Connects a mailbox with OAuth: its login name, the registration and the refresh token
    /// (sealed); a password it had is removed, and it must be tested again.
    pub async fn connect_mailbox_oauth(
        &self,
        mailbox: Uuid,
        registration: Uuid,
        username: &str,
        refresh_token: &str,
    ) -> StoreResult<MailboxRecord> {
        let sealed = self
            .secrets
            .seal(&token_binding(mailbox, registration), refresh_token);
        let changed = on_db!(self, |writer, reader| {
            sqlx::query(
                "UPDATE mailboxes SET username = $2, password_encrypted = NULL, oauth_registration_id = $3,
                   refresh_token_sealed = $4, enabled = FALSE, incoming_status = 'not-run', outgoing_status = 'not-run',
                   act_status = 'not-run', test_tries = 0, next_test_at = NULL, last_error = NULL, updated_at = $5
                 WHERE id = $1",
            )
            .bind(mailbox.to_string())
            .bind(username)
            .bind(registration.to_string())
            .bind(&sealed)
            .bind(now_ms())
            .execute(writer)
            .await?
            .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound(format!("mailbox {mailbox}")));
        }
        self.mailbox(mailbox).await
    }

    /// A connected mailbox's registration and refresh token, for its token requests only.
    pub async fn mailbox_refresh_token(
        &self,
        mailbox: Uuid,
    ) -> StoreResult<Option<(Uuid, String)>> {
        let row: Option<(Option<String>, Option<String>)> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT oauth_registration_id, refresh_token_sealed FROM mailboxes WHERE id = $1",
            )
            .bind(mailbox.to_string())
            .fetch_optional(reader)
            .await?
        });
        let (registration, sealed) =
            row.ok_or_else(|| StoreError::NotFound(format!("mailbox {mailbox}")))?;
        let (Some(registration), Some(sealed)) = (registration, sealed) else {
            return Ok(None);
        };
        let registration: Uuid = registration
            .parse()
            .map_err(|_| StoreError::Conflict("stored registration id is not a UUID".into()))?;
        let token = self
            .secrets
            .open(&token_binding(mailbox, registration), &sealed)?;
        Ok(Some((registration, token)))
    }

    /// Keeps the refresh token a provider rotated (RFC 6749 §6: the old one may stop working).
    pub async fn replace_mailbox_refresh_token(
        &self,
        mailbox: Uuid,
        registration: Uuid,
        refresh_token: &str,
    ) -> StoreResult<()> {
        let sealed = self
            .secrets
            .seal(&token_binding(mailbox, registration), refresh_token);
        on_db!(self, |writer, reader| {
            sqlx::query(
                "UPDATE mailboxes SET refresh_token_sealed = $3 WHERE id = $1 AND oauth_registration_id = $2",
            )
            .bind(mailbox.to_string())
            .bind(registration.to_string())
            .bind(&sealed)
            .execute(writer)
            .await?;
        });
        Ok(())
    }
}

/// The record id an account's refresh token is sealed with.
fn account_binding(account: Uuid, registration: Uuid) -> String {
    format!("account/{account}/oauth/{registration}")
}

impl Store {
    /// Connects an account with OAuth: its login name and the refresh token of the registration
    /// it names (sealed); a password it had is removed.
    pub async fn connect_account_oauth(
        &self,
        account: Uuid,
        registration: Uuid,
        username: &str,
        refresh_token: &str,
    ) -> StoreResult<crate::Account> {
        let sealed = self
            .secrets
            .seal(&account_binding(account, registration), refresh_token);
        let changed = on_db!(self, |writer, reader| {
            sqlx::query(
                "UPDATE accounts SET username = $2, password_encrypted = NULL, refresh_token_sealed = $3, updated_at = $4
                 WHERE id = $1 AND deleted_at IS NULL",
            )
            .bind(account.to_string())
            .bind(username)
            .bind(&sealed)
            .bind(now_ms())
            .execute(writer)
            .await?
            .rows_affected()
        });
        if changed == 0 {
            return Err(StoreError::NotFound(format!("account {account}")));
        }
        self.routing_changed().await;
        self.account(account).await
    }

    /// A connected account's registration and refresh token, for its token requests only. A token
    /// given for another registration than the account names now does not open.
    pub async fn account_refresh_token(
        &self,
        account: Uuid,
    ) -> StoreResult<Option<(Uuid, String)>> {
        let stored = self.account(account).await?;
        let Some(registration) = stored.options.app_registration_id else {
            return Ok(None);
        };
        let sealed: Option<Option<String>> = on_db!(self, |writer, reader| {
            sqlx::query_scalar("SELECT refresh_token_sealed FROM accounts WHERE id = $1")
                .bind(account.to_string())
                .fetch_optional(reader)
                .await?
        });
        match sealed.flatten() {
            None => Ok(None),
            Some(sealed) => match self
                .secrets
                .open(&account_binding(account, registration), &sealed)
            {
                Ok(token) => Ok(Some((registration, token))),
                // Sealed for the registration the account named before: connect again.
                Err(_) => Ok(None),
            },
        }
    }

    /// Keeps the refresh token a provider rotated.
    pub async fn replace_account_refresh_token(
        &self,
        account: Uuid,
        registration: Uuid,
        refresh_token: &str,
    ) -> StoreResult<()> {
        let sealed = self
            .secrets
            .seal(&account_binding(account, registration), refresh_token);
        on_db!(self, |writer, reader| {
            sqlx::query("UPDATE accounts SET refresh_token_sealed = $2 WHERE id = $1")
                .bind(account.to_string())
                .bind(&sealed)
                .execute(writer)
                .await?;
        });
        Ok(())
    }
}
