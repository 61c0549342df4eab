//! API tokens, stored only as SHA-256 hashes. Every token belongs to a user.

use crate::db::{StoreRow, on_db};
use crate::users::User;
use crate::{Store, StoreError, StoreResult, now_ms};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A token as listed: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub name: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// The hash under which a token is stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn token_from_row(row: &impl StoreRow) -> ApiToken {
    ApiToken {
        id: row.get::<String, _>("id").parse().unwrap_or_default(),
        user_id: row
            .get::<Option<String>, _>("user_id")
            .and_then(|u| u.parse().ok()),
        name: row.get("name"),
        created_at_ms: row.get("created_at"),
        expires_at_ms: row.get("expires_at"),
        revoked_at_ms: row.get("revoked_at"),
    }
}

impl Store {
    /// Creates a token and returns its secret, which is not kept anywhere.
    pub async fn create_token(
        &self,
        user_id: Option<Uuid>,
        name: &str,
        expires_at_ms: Option<i64>,
    ) -> StoreResult<(ApiToken, String)> {
        on_db!(self, |writer, reader| {
            let mut random = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut random);
            let secret = format!("mr_{}", hex::encode(random));
            let token = ApiToken {
                id: Uuid::new_v4(),
                user_id,
                name: name.to_owned(),
                created_at_ms: now_ms(),
                expires_at_ms,
                revoked_at_ms: None,
            };
            sqlx::query("INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(token.id.to_string())
                .bind(user_id.map(|u| u.to_string()))
                .bind(&token.name)
                .bind(hash_token(&secret))
                .bind(token.created_at_ms)
                .bind(token.expires_at_ms)
                .execute(writer)
                .await?;
            self.tokens_changed().await;
            Ok((token, secret))
        })
    }

    /// The token a presented secret belongs to and its user, if the token is neither revoked nor
    /// expired and the user is enabled.
    pub async fn authenticate_token(&self, secret: &str) -> StoreResult<Option<(ApiToken, User)>> {
        on_db!(self, |writer, reader| {
            let hash = hash_token(secret);
            let now = now_ms();
            if let Some((token, user)) = self.caches.token(&hash) {
                let valid = token.expires_at_ms.is_none_or(|at| at > now) && user.enabled;
                return Ok(valid.then_some((token, user)));
            }
            let row = sqlx::query(
                "SELECT id, user_id, name, created_at, expires_at, revoked_at FROM api_tokens
                 WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(&hash)
            .bind(now)
            .fetch_optional(reader)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let token = token_from_row(&row);
            let Some(user_id) = token.user_id else {
                return Ok(None);
            };
            let user = self.user_with_team_grants(user_id).await?;
            self.caches
                .remember_token(hash, (token.clone(), user.clone()));
            Ok(user.enabled.then_some((token, user)))
        })
    }

    /// A user's tokens, without secrets, newest first.
    pub async fn tokens(&self, user_id: Uuid) -> StoreResult<Vec<ApiToken>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT id, user_id, name, created_at, expires_at, revoked_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC",
            )
            .bind(user_id.to_string())
            .fetch_all(reader)
            .await?;
            Ok(rows.iter().map(token_from_row).collect())
        })
    }

    /// Revokes a token of a user; it stops working at once on this node.
    pub async fn revoke_token(&self, user_id: Uuid, token_id: Uuid) -> StoreResult<ApiToken> {
        on_db!(self, |writer, reader| {
            let result = sqlx::query("UPDATE api_tokens SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
                .bind(token_id.to_string())
                .bind(user_id.to_string())
                .bind(now_ms())
                .execute(writer)
                .await?;
            self.tokens_changed().await;
            let row = sqlx::query("SELECT id, user_id, name, created_at, expires_at, revoked_at FROM api_tokens WHERE id = $1 AND user_id = $2")
                .bind(token_id.to_string())
                .bind(user_id.to_string())
                .fetch_optional(writer)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("token {token_id} of user {user_id}")))?;
            let token = token_from_row(&row);
            if result.rows_affected() == 0 && token.revoked_at_ms.is_none() {
                return Err(StoreError::Conflict(format!(
                    "token {token_id} could not be revoked"
                )));
            }
            Ok(token)
        })
    }

    /// Whether any token exists (false on a fresh install).
    pub async fn has_tokens(&self) -> StoreResult<bool> {
        on_db!(self, |writer, reader| {
            Ok(sqlx::query("SELECT 1 FROM api_tokens LIMIT 1")
                .fetch_optional(reader)
                .await?
                .is_some())
        })
    }
}
