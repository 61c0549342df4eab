//! DKIM keys per sending domain (MISSION E deliverability): private keys sealed at rest, one active
//! key per domain, and the signers the engine uses, read at most once a second.

use crate::db::{WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use mailroom_core::dkim::{DkimAlgorithm, KeyMaterial};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// A key as listed: never its private half.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimKey {
    pub id: Uuid,
    pub domain: String,
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// Base64, as published in the TXT record's `p=` tag.
    pub public_key: String,
    pub active: bool,
    pub created_by: Option<String>,
    pub created_at_ms: i64,
    pub activated_at_ms: Option<i64>,
}

impl DkimKey {
    /// Where the TXT record is published.
    pub fn dns_name(&self) -> String {
        mailroom_core::dkim::dns_name(&self.selector, &self.domain)
    }

    /// The TXT record's value.
    pub fn dns_record(&self) -> String {
        mailroom_core::dkim::dns_record(self.algorithm, &self.public_key)
    }
}

/// A domain's active key, as signing needs it.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub id: Uuid,
    pub domain: String,
    pub selector: String,
    pub material: KeyMaterial,
}

/// The active key of each domain.
pub type DkimSigners = HashMap<String, Arc<SigningKey>>;

type Row = (
    String,
    String,
    String,
    String,
    String,
    bool,
    Option<String>,
    i64,
    Option<i64>,
);

fn from_row(row: Row) -> StoreResult<DkimKey> {
    let (id, domain, selector, algorithm, public_key, active, created_by, created_at, activated) =
        row;
    Ok(DkimKey {
        id: Uuid::parse_str(&id)
            .map_err(|_| StoreError::Conflict("stored DKIM key id is not a UUID".into()))?,
        domain,
        selector,
        algorithm: algorithm.parse()?,
        public_key,
        active,
        created_by,
        created_at_ms: created_at,
        activated_at_ms: activated,
    })
}

impl Store {
    /// Stores a key for `domain` under `selector`. The domain's first key becomes its active key;
    /// a later one waits for [`Store::activate_dkim_key`] (publish its DNS record first).
    pub async fn add_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        key: &KeyMaterial,
        created_by: Option<&str>,
    ) -> StoreResult<DkimKey> {
        let id = Uuid::new_v4();
        let sealed = self
            .secrets
            .seal(&id.to_string(), &BASE64.encode(&key.private_der));
        let now = now_ms();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM dkim_keys WHERE domain = $1 AND selector = $2")
                    .bind(domain)
                    .bind(selector)
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_some() {
                return Err(StoreError::Refused {
                    code: "dkim_selector_taken",
                    message: format!(
                        "{domain} already has a key with selector {selector:?}; choose another selector (a rotation publishes the new key beside the old one)"
                    ),
                });
            }
            let others: Option<String> =
                sqlx::query_scalar("SELECT id FROM dkim_keys WHERE domain = $1 LIMIT 1")
                    .bind(domain)
                    .fetch_optional(&mut *tx)
                    .await?;
            let active = others.is_none();
            sqlx::query(
                "INSERT INTO dkim_keys (id, domain, selector, algorithm, private_key_sealed, public_key, active, created_by, created_at, activated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id.to_string())
            .bind(domain)
            .bind(selector)
            .bind(key.algorithm.as_str())
            .bind(&sealed)
            .bind(&key.public_key)
            .bind(active)
            .bind(created_by)
            .bind(now)
            .bind(active.then_some(now))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        self.forget_dkim_signers();
        self.dkim_key(id).await
    }

    pub async fn dkim_key(&self, id: Uuid) -> StoreResult<DkimKey> {
        let row: Option<Row> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT id, domain, selector, algorithm, public_key, active, created_by, created_at, activated_at
                 FROM dkim_keys WHERE id = $1",
            )
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?
        });
        from_row(row.ok_or_else(|| StoreError::NotFound(format!("DKIM key {id}")))?)
    }

    /// Every key, by domain, the active key first, then newest first.
    pub async fn dkim_keys(&self, domain: Option<&str>) -> StoreResult<Vec<DkimKey>> {
        let rows: Vec<Row> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT id, domain, selector, algorithm, public_key, active, created_by, created_at, activated_at
                 FROM dkim_keys WHERE $1 IS NULL OR domain = $1
                 ORDER BY domain, active DESC, created_at DESC, selector",
            )
            .bind(domain)
            .fetch_all(reader)
            .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Makes a key its domain's signing key (a rotation); the previous one stays listed.
    pub async fn activate_dkim_key(&self, id: Uuid) -> StoreResult<DkimKey> {
        let key = self.dkim_key(id).await?;
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            sqlx::query("UPDATE dkim_keys SET active = FALSE WHERE domain = $1 AND id <> $2")
                .bind(&key.domain)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE dkim_keys SET active = TRUE, activated_at = $2 WHERE id = $1 AND active = FALSE",
            )
            .bind(id.to_string())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        self.forget_dkim_signers();
        self.dkim_key(id).await
    }

    /// Deletes a key. The active key of a domain that has others cannot be deleted (activate
    /// another first); a domain's only key can, and its mail is then sent unsigned.
    pub async fn delete_dkim_key(&self, id: Uuid) -> StoreResult<()> {
        let key = self.dkim_key(id).await?;
        if key.active {
            let others = self.dkim_keys(Some(&key.domain)).await?.len() > 1;
            if others {
                return Err(StoreError::Refused {
                    code: "dkim_key_active",
                    message: format!(
                        "{} is the signing key of {}; activate another key of the domain first",
                        key.selector, key.domain
                    ),
                });
            }
        }
        on_db!(self, |writer, reader| {
            sqlx::query("DELETE FROM dkim_keys WHERE id = $1")
                .bind(id.to_string())
                .execute(writer)
                .await?;
        });
        self.forget_dkim_signers();
        Ok(())
    }

    fn forget_dkim_signers(&self) {
        *self.caches.dkim_signers.lock().expect("dkim lock") = None;
    }

    /// The active key of `domain` (lower-case), if it has one. Keys are read at most once a second
    /// (a change on another node is used within a second), so a send costs a map lookup.
    pub async fn dkim_signing_key(&self, domain: &str) -> StoreResult<Option<Arc<SigningKey>>> {
        let cached = self
            .caches
            .dkim_signers
            .lock()
            .expect("dkim lock")
            .as_ref()
            .filter(|(_, at)| at.elapsed() < crate::cache::TTL)
            .map(|(signers, _)| signers.get(domain).cloned());
        if let Some(signer) = cached {
            return Ok(signer);
        }
        let rows: Vec<(String, String, String, String, String)> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT id, domain, selector, algorithm, private_key_sealed FROM dkim_keys WHERE active = TRUE",
            )
            .fetch_all(reader)
            .await?
        });
        let mut signers = DkimSigners::new();
        for (id, key_domain, selector, algorithm, sealed) in rows {
            let private = self.secrets.open(&id, &sealed)?;
            let material = KeyMaterial {
                algorithm: algorithm.parse()?,
                private_der: BASE64
                    .decode(private)
                    .map_err(|_| StoreError::Conflict(format!("DKIM key {id} is damaged")))?,
                public_key: String::new(),
            };
            let id = Uuid::parse_str(&id)
                .map_err(|_| StoreError::Conflict("stored DKIM key id is not a UUID".into()))?;
            signers.insert(
                key_domain.clone(),
                Arc::new(SigningKey {
                    id,
                    domain: key_domain,
                    selector,
                    material,
                }),
            );
        }
        let signer = signers.get(domain).cloned();
        *self.caches.dkim_signers.lock().expect("dkim lock") = Some((signers, Instant::now()));
        Ok(signer)
    }
}
