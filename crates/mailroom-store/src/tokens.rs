//! API tokens, stored only as SHA-256 hashes.

use crate::{Store, StoreResult, now_ms};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

/// A token as listed: never the secret itself.
#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: Uuid,
    pub name: String,
    pub created_at_ms: i64,
    pub expires_at_ms: Option<i64>,
}

/// The hash under which a token is stored and looked up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Store {
    /// Creates a token and returns its secret, which is not kept anywhere.
    pub async fn create_token(
        &self,
        name: &str,
        expires_at_ms: Option<i64>,
    ) -> StoreResult<(ApiToken, String)> {
        let mut random = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let secret = format!("mr_{}", hex::encode(random));
        let token = ApiToken {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            created_at_ms: now_ms(),
            expires_at_ms,
        };
        sqlx::query("INSERT INTO api_tokens (id, name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(token.id.to_string())
            .bind(&token.name)
            .bind(hash_token(&secret))
            .bind(token.created_at_ms)
            .bind(token.expires_at_ms)
            .execute(&self.writer)
            .await?;
        self.caches.forget_tokens();
        Ok((token, secret))
    }

    /// The token a presented secret belongs to, if it exists, is not revoked and has not expired.
    pub async fn authenticate_token(&self, secret: &str) -> StoreResult<Option<ApiToken>> {
        let hash = hash_token(secret);
        if let Some(token) = self.caches.token(&hash) {
            return Ok(token
                .expires_at_ms
                .is_none_or(|at| at > now_ms())
                .then_some(token));
        }
        let row = sqlx::query(
            "SELECT id, name, created_at, expires_at FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)",
        )
        .bind(&hash)
        .bind(now_ms())
        .fetch_optional(&self.reader)
        .await?;
        let token = row.map(|row| ApiToken {
            id: row.get::<String, _>("id").parse().unwrap_or_default(),
            name: row.get("name"),
            created_at_ms: row.get("created_at"),
            expires_at_ms: row.get("expires_at"),
        });
        if let Some(token) = &token {
            self.caches.remember_token(hash, token.clone());
        }
        Ok(token)
    }

    /// Whether any token exists (false on a fresh install).
    pub async fn has_tokens(&self) -> StoreResult<bool> {
        Ok(sqlx::query("SELECT 1 FROM api_tokens LIMIT 1")
            .fetch_optional(&self.reader)
            .await?
            .is_some())
    }
}
