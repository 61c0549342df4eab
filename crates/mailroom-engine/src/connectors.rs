//! Builds the connector for an account, and caches it until the account changes.

use mailroom_connect::{Connector, PickupConnector, SmtpConnector, SmtpSettings};
use mailroom_core::account::ConnectorKind;
use mailroom_store::{Account, Store, StoreResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Settings shared by every connector of this process.
#[derive(Debug, Clone)]
pub struct ConnectorDefaults {
    pub smtp_timeout: Duration,
    pub extra_root_certificates: Vec<Vec<u8>>,
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
                .unwrap_or_else(|| "pickup".into()),
        )),
        ConnectorKind::Smtp => Arc::new(SmtpConnector::new(SmtpSettings {
            account_label: account.id.to_string(),
            host: account.host.clone().unwrap_or_else(|| "localhost".into()),
            port: account.port.unwrap_or(25),
            security: account.security,
            username: account.username.clone(),
            password: store.account_password(account.id).await?,
            max_connections: account.limits.concurrency_limit as usize,
            timeout: defaults.smtp_timeout,
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
        let connector = build_connector(store, account, defaults).await?;
        self.entries
            .lock()
            .expect("cache lock")
            .insert(account.id, (account.updated_at_ms, connector.clone()));
        Ok(connector)
    }

    pub(crate) fn retain(&self, live: &[Uuid]) {
        self.entries
            .lock()
            .expect("cache lock")
            .retain(|id, _| live.contains(id));
    }
}
