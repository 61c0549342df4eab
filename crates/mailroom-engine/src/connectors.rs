//! Builds the connector for an account, and caches it until the account changes.

use mailroom_connect::{Connector, PickupConnector, SmtpConnector, SmtpSettings};
use mailroom_core::account::ConnectorKind;
use mailroom_store::{Account, Store, StoreResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Settings shared by every connector of this process.
#[derive(Debug, Clone)]
pub struct ConnectorDefaults {
    /// This machine's name: the EHLO name of accounts that set none.
    pub hostname: String,
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// Every pickup folder lies under this root.
    pub pickup_root: std::path::PathBuf,
}

/// A connector for `account`; reads (decrypts) its password from the store.
pub async fn build_connector(
    store: &Store,
    account: &Account,
    defaults: &ConnectorDefaults,
) -> StoreResult<Arc<dyn Connector>> {
    Ok(match account.connector {
        ConnectorKind::Pickup => Arc::new(PickupConnector::new(
            account
                .pickup_dir
                .clone()
                .map_or_else(|| defaults.pickup_root.clone(), Into::into),
            defaults.pickup_root.clone(),
        )),
        ConnectorKind::Smtp => Arc::new(SmtpConnector::new(SmtpSettings {
            account_label: account.id.to_string(),
            host: account.host.clone().unwrap_or_else(|| "localhost".into()),
            port: account.port.unwrap_or(25),
            security: account.security,
            username: account.username.clone(),
            password: store.account_password(account.id).await?,
            max_connections: account.limits.concurrency_limit as usize,
            timeouts: account.options.timeouts,
            ehlo_name: account
                .options
                .ehlo_name
                .clone()
                .unwrap_or_else(|| defaults.hostname.clone()),
            extra_root_certificates: defaults.extra_root_certificates.clone(),
        })),
    })
}

/// A connector and the account version (`updated_at`) it was built from.
type VersionedConnector = (i64, Arc<dyn Connector>);

/// Connectors by account, rebuilt when an account's settings change.
#[derive(Default)]
pub(crate) struct ConnectorCache {
    entries: Mutex<HashMap<Uuid, VersionedConnector>>,
}

impl ConnectorCache {
    pub(crate) async fn get(
        &self,
        store: &Store,
        account: &Account,
        defaults: &ConnectorDefaults,
    ) -> StoreResult<Arc<dyn Connector>> {
        if let Some((version, connector)) =
            self.entries.lock().expect("cache lock").get(&account.id)
            && *version == account.updated_at_ms
        {
            return Ok(connector.clone());
        }
        let built = build_connector(store, account, defaults).await?;
        // Sends that arrive together for a new account all build one; only the first to get here
        // is kept, so that the account has one pool of connections, within its limit. The others
        // have opened nothing yet.
        let mut entries = self.entries.lock().expect("cache lock");
        match entries.get(&account.id) {
            Some((version, existing)) if *version == account.updated_at_ms => Ok(existing.clone()),
            _ => {
                entries.insert(account.id, (account.updated_at_ms, built.clone()));
                Ok(built)
            }
        }
    }

    pub(crate) fn retain(&self, live: &[Uuid]) {
        self.entries
            .lock()
            .expect("cache lock")
            .retain(|id, _| live.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_core::account::{AccountLimits, Security, SenderType};
    use mailroom_core::address::EmailAddress;
    use mailroom_store::{AccountInput, SecretBox};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sends_that_arrive_together_for_an_account_share_one_connector() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            &format!("sqlite://{}", dir.path().join("store.db").display()),
            SecretBox::from_key(&[3u8; 32]).unwrap(),
        )
        .await
        .unwrap();
        let account = store
            .create_account(
                &AccountInput {
                    connector: ConnectorKind::Smtp,
                    name: "shared".into(),
                    email_address: EmailAddress::parse("shared@example.com").unwrap(),
                    sender_name: None,
                    sender_type: SenderType::SpecificUser,
                    host: Some("127.0.0.1".into()),
                    port: Some(25),
                    security: Security::None,
                    username: Some("user".into()),
                    pickup_dir: None,
                    limits: AccountLimits::new(0, 2, 3).unwrap(),
                    substitute_mode: None,
                    substitute_address: None,
                    substitute_name: None,
                    options: Default::default(),
                },
                Some("secret"),
            )
            .await
            .unwrap();
        let cache = Arc::new(ConnectorCache::default());
        let defaults = ConnectorDefaults {
            hostname: "client.example.com".into(),
            extra_root_certificates: Vec::new(),
            pickup_root: std::env::temp_dir(),
        };
        let mut asking = Vec::new();
        for _ in 0..32 {
            let (cache, store, account, defaults) = (
                cache.clone(),
                store.clone(),
                account.clone(),
                defaults.clone(),
            );
            asking.push(tokio::spawn(async move {
                cache.get(&store, &account, &defaults).await.unwrap()
            }));
        }
        let mut connectors = Vec::new();
        for task in asking {
            connectors.push(task.await.unwrap());
        }
        assert!(
            connectors.iter().all(|c| Arc::ptr_eq(c, &connectors[0])),
            "every send must use the account's one connector and its one pool"
        );
    }
}
