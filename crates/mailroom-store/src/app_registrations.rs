//! OAuth app registrations (MISSION A14): the provider, the client and its scopes, with the client
//! secret sealed at rest (bound to the row id) and never listed.

use crate::db::{StoreRow, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::oauth::{AppRegistrationSettings, ScopeSets};
use uuid::Uuid;

/// A registration as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRegistration {
    pub id: Uuid,
    pub settings: AppRegistrationSettings,
    pub has_client_secret: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What to do with a registration's stored client secret.
#[derive(Debug, Clone)]
pub enum SecretChange {
    Keep,
    Set(String),
}

const COLUMNS: &str = "id, name, provider, client_id, client_secret_sealed IS NOT NULL AS has_client_secret, tenant,
    redirect_uri, authority, graph_base_url, discovery_url, authorization_endpoint, token_endpoint, scopes,
    created_at, updated_at";

fn from_row(row: &impl StoreRow) -> StoreResult<AppRegistration> {
    let corrupt =
        |what: &str| StoreError::Conflict(format!("stored app registration has an invalid {what}"));
    let scopes: ScopeSets =
        serde_json::from_str(&row.get::<String, _>("scopes")).map_err(|_| corrupt("scopes"))?;
    Ok(AppRegistration {
        id: row
            .get::<String, _>("id")
            .parse()
            .map_err(|_| corrupt("id"))?,
        settings: AppRegistrationSettings {
            name: row.get("name"),
            provider: row.get::<String, _>("provider").parse()?,
            client_id: row.get("client_id"),
            tenant: row.get("tenant"),
            redirect_uri: row.get("redirect_uri"),
            authority: row.get("authority"),
            graph_base_url: row.get("graph_base_url"),
            discovery_url: row.get("discovery_url"),
            authorization_endpoint: row.get("authorization_endpoint"),
            token_endpoint: row.get("token_endpoint"),
            scopes,
        },
        has_client_secret: row.get("has_client_secret"),
        created_at_ms: row.get("created_at"),
        updated_at_ms: row.get("updated_at"),
    })
}

fn name_taken(name: &str) -> StoreError {
    StoreError::Refused {
        code: "app_registration_name_taken",
        message: format!("an app registration named {name:?} exists already"),
    }
}

impl Store {
    pub async fn add_app_registration(
        &self,
        settings: &AppRegistrationSettings,
        client_secret: Option<&str>,
    ) -> StoreResult<AppRegistration> {
        let id = Uuid::new_v4();
        let sealed = client_secret.map(|s| self.secrets.seal(&id.to_string(), s));
        let scopes = serde_json::to_string(&settings.scopes).expect("scopes serialize");
        let now = now_ms();
        let s = settings;
        let inserted = on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO app_registrations (id, name, provider, client_id, client_secret_sealed, tenant, redirect_uri,
                    authority, graph_base_url, discovery_url, authorization_endpoint, token_endpoint, scopes, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(&s.name)
            .bind(s.provider.as_str())
            .bind(&s.client_id)
            .bind(&sealed)
            .bind(&s.tenant)
            .bind(&s.redirect_uri)
            .bind(&s.authority)
            .bind(&s.graph_base_url)
            .bind(&s.discovery_url)
            .bind(&s.authorization_endpoint)
            .bind(&s.token_endpoint)
            .bind(&scopes)
            .bind(now)
            .execute(writer)
            .await?
            .rows_affected()
        });
        if inserted == 0 {
            return Err(name_taken(&s.name));
        }
        self.app_registration(id).await
    }

    pub async fn app_registration(&self, id: Uuid) -> StoreResult<AppRegistration> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM app_registrations WHERE id = $1"
        ));
        on_db!(self, |writer, reader| {
            let row = sqlx::query(sql)
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("app registration {id}")))?;
            from_row(&row)
        })
    }

    pub async fn app_registrations(&self) -> StoreResult<Vec<AppRegistration>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM app_registrations ORDER BY name"
        ));
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(sql).fetch_all(reader).await?;
            rows.iter().map(from_row).collect()
        })
    }

    /// Replaces a registration's settings, and its secret when one is given.
    pub async fn update_app_registration(
        &self,
        id: Uuid,
        settings: &AppRegistrationSettings,
        secret: SecretChange,
    ) -> StoreResult<AppRegistration> {
        let sealed = match &secret {
            SecretChange::Keep => None,
            SecretChange::Set(s) => Some(self.secrets.seal(&id.to_string(), s)),
        };
        let scopes = serde_json::to_string(&settings.scopes).expect("scopes serialize");
        let s = settings;
        let result: Result<u64, sqlx::Error> = on_db!(self, |writer, reader| {
            sqlx::query(
                "UPDATE app_registrations SET name = $2, provider = $3, client_id = $4,
                    client_secret_sealed = COALESCE($5, client_secret_sealed), tenant = $6, redirect_uri = $7,
                    authority = $8, graph_base_url = $9, discovery_url = $10, authorization_endpoint = $11,
                    token_endpoint = $12, scopes = $13, updated_at = $14
                 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(&s.name)
            .bind(s.provider.as_str())
            .bind(&s.client_id)
            .bind(&sealed)
            .bind(&s.tenant)
            .bind(&s.redirect_uri)
            .bind(&s.authority)
            .bind(&s.graph_base_url)
            .bind(&s.discovery_url)
            .bind(&s.authorization_endpoint)
            .bind(&s.token_endpoint)
            .bind(&scopes)
            .bind(now_ms())
            .execute(writer)
            .await
            .map(|r| r.rows_affected())
        });
        match result {
            Ok(0) => Err(StoreError::NotFound(format!("app registration {id}"))),
            Ok(_) => self.app_registration(id).await,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(name_taken(&s.name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a registration no account uses (`app_registration_in_use` otherwise).
    pub async fn delete_app_registration(&self, id: Uuid) -> StoreResult<()> {
        // The account's options name the registration: `"app_registration_id":"<id>"`.
        let pattern = format!("%\"app_registration_id\":\"{id}\"%");
        let users: Vec<String> = on_db!(self, |writer, reader| {
            sqlx::query_scalar(
                "SELECT name FROM accounts WHERE deleted_at IS NULL AND options LIKE $1 ORDER BY name",
            )
            .bind(&pattern)
            .fetch_all(reader)
            .await?
        });
        if !users.is_empty() {
            return Err(StoreError::Refused {
                code: "app_registration_in_use",
                message: format!(
                    "accounts send with this registration: {}; remove them or move them to another registration first",
                    users.join(", ")
                ),
            });
        }
        let deleted = on_db!(self, |writer, reader| {
            sqlx::query("DELETE FROM app_registrations WHERE id = $1")
                .bind(id.to_string())
                .execute(writer)
                .await?
                .rows_affected()
        });
        if deleted == 0 {
            return Err(StoreError::NotFound(format!("app registration {id}")));
        }
        Ok(())
    }

    /// The registration's client secret, for a token request to the endpoint it was given for.
    pub async fn app_registration_secret(&self, id: Uuid) -> StoreResult<Option<String>> {
        let sealed: Option<Option<String>> = on_db!(self, |writer, reader| {
            sqlx::query_scalar("SELECT client_secret_sealed FROM app_registrations WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?
        });
        let sealed =
            sealed.ok_or_else(|| StoreError::NotFound(format!("app registration {id}")))?;
        sealed
            .map(|s| self.secrets.open(&id.to_string(), &s).map_err(Into::into))
            .transpose()
    }
}
