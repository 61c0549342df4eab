//! Builds the connector for an account, and caches it until the account changes.

use mailroom_connect::{
    Connector, PickupConnector, SendError, SessionGate, SessionPermit, SmtpConnector, SmtpSettings,
};
use mailroom_core::account::ConnectorKind;
use mailroom_store::now_ms;
use mailroom_store::{Account, Store, StoreResult};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Settings shared by every connector of this process.
#[derive(Debug, Clone)]
pub struct ConnectorDefaults {
    /// This machine's name: the EHLO name of accounts that set none.
    pub hostname: String,
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// Every pickup folder lies under this root.
    pub pickup_root: std::path::PathBuf,
    /// This node, for the places it takes in limits shared with other nodes.
    pub node_id: String,
    /// How long a place this node holds stays its own without a heartbeat.
    pub node_timeout: Duration,
    /// The live nodes, shared by the connection places of every account (clones share it).
    pub live_nodes: Arc<LiveNodes>,
}

/// The live nodes as last read, for every account's connection places on this node: read once a
/// second for the whole node, whatever its number of accounts, from the first time a gate needs it.
#[derive(Debug, Default)]
pub struct LiveNodes {
    /// Sorted node ids; `None` until the first read.
    ids: std::sync::RwLock<Option<Vec<String>>>,
    reading: std::sync::atomic::AtomicBool,
}

impl LiveNodes {
    /// Starts reading the live nodes, once a second for as long as this node lives, unless a read
    /// is already running.
    fn keep_reading(self: &Arc<Self>, store: &Store, node_timeout: Duration) {
        // Without a runtime (never the case in a server) nothing reads, and the share stays one.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.reading.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let (weak, store) = (Arc::downgrade(self), store.clone());
        runtime.spawn(async move {
            while let Some(live) = weak.upgrade() {
                if let Ok(ids) = store
                    .live_nodes(now_ms(), node_timeout.as_millis() as i64)
                    .await
                {
                    *live.ids.write().expect("live nodes lock") = Some(ids);
                }
                drop(live);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// The concurrency limit of an account for every node together: each open connection holds one
/// of the account's places in the store.
struct StoreSessionGate {
    store: Store,
    account_id: Uuid,
    limit: u32,
    node_id: String,
    node_timeout: Duration,
    live: Arc<LiveNodes>,
}

/// This node's share of an account's `limit` connection places among the `live` nodes (sorted
/// ids): the shares add up to the limit exactly — the first `limit % n` nodes have one more — so
/// that no node waits for a place its share promised while another holds it. A node not yet seen
/// alive counts as the last one. At least one place, even when there are more nodes than places
/// (the nodes then take turns).
pub(crate) fn place_share(limit: usize, live: &[String], node_id: &str) -> usize {
    let (nodes, rank) = match live.iter().position(|id| id == node_id) {
        Some(rank) => (live.len(), rank),
        None => (live.len() + 1, live.len()),
    };
    (limit / nodes + usize::from(rank < limit % nodes)).max(1)
}

/// A place held in the store; given back when dropped (the connection closed).
struct HeldPlace {
    store: Store,
    account_id: Uuid,
    slot: i64,
    node_id: String,
}

impl Drop for HeldPlace {
    fn drop(&mut self) {
        let (store, account_id, slot, node_id) = (
            self.store.clone(),
            self.account_id,
            self.slot,
            std::mem::take(&mut self.node_id),
        );
        // Without a runtime (the process is ending) the place's lease runs out instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.release_session_slot(account_id, slot, &node_id).await {
                    tracing::warn!(%error, account = %account_id, "giving back a connection place failed; its lease will run out");
                }
            });
        }
    }
}

#[async_trait::async_trait]
impl SessionGate for StoreSessionGate {
    async fn acquire(&self) -> Result<SessionPermit, SendError> {
        loop {
            let lease_until = now_ms() + self.node_timeout.as_millis() as i64;
            match self
                .store
                .take_session_slot(
                    self.account_id,
                    &self.node_id,
                    self.limit,
                    lease_until,
                    self.node_timeout.as_millis() as i64,
                )
                .await
            {
                Ok(Some(slot)) => {
                    return Ok(Box::new(HeldPlace {
                        store: self.store.clone(),
                        account_id: self.account_id,
                        slot,
                        node_id: self.node_id.clone(),
                    }));
                }
                // Every place is held by a connection somewhere: one comes free when it closes
                // (idle connections close soon, a dead node's places when their lease runs out).
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(error) => {
                    return Err(SendError::transient(
                        None,
                        format!("taking a connection place in the shared store: {error}"),
                    ));
                }
            }
        }
    }

    fn idle_close(&self) -> Duration {
        Duration::from_millis(500)
    }

    /// The limit divided among the live nodes as last read — one place until the first read: a
    /// node that assumed the whole limit until then opened connections on every place before the
    /// other nodes had any, and kept them while it stayed busy (seen in the 3-node benchmark: the
    /// first node opened 16 connections, its share was 6, the others waited for places).
    fn share(&self) -> usize {
        match self.live.ids.read().expect("live nodes lock").as_deref() {
            Some(live) => place_share(self.limit as usize, live, &self.node_id),
            None => 1,
        }
    }
}

/// A connector for `account`; reads (decrypts) its password from the store.
pub async fn build_connector(
    store: &Store,
    account: &Account,
    defaults: &ConnectorDefaults,
    oauth: &Arc<crate::oauth::OAuthService>,
) -> StoreResult<Arc<dyn Connector>> {
    Ok(match account.connector {
        ConnectorKind::Pickup => Arc::new(PickupConnector::new(
            account
                .pickup_dir
                .clone()
                .map_or_else(|| defaults.pickup_root.clone(), Into::into),
            defaults.pickup_root.clone(),
        )),
        ConnectorKind::CurrentUser => Arc::new(CurrentUserConnector {
            store: store.clone(),
            oauth: oauth.clone(),
            defaults: defaults.clone(),
            account_label: account.id.to_string(),
            timeouts: account.options.timeouts,
            by_mailbox: Mutex::new(HashMap::new()),
        }),
        ConnectorKind::Microsoft365 => {
            let misconfigured = |why: &str| {
                mailroom_store::StoreError::Conflict(format!("account {}: {why}", account.name))
            };
            let registration_id = account
                .options
                .app_registration_id
                .ok_or_else(|| misconfigured("a microsoft365 account needs an app registration"))?;
            let registration = store.app_registration(registration_id).await?;
            let delegated = account.options.permission
                == Some(mailroom_core::account::GraphPermission::Delegated);
            let tokens: Arc<dyn mailroom_connect::AccessTokens> = if delegated {
                // The token of the person who connected the account (a delegate of the mailbox).
                Arc::new(crate::oauth::AccountTokens::new(oauth.clone(), account.id))
            } else {
                oauth
                    .app_tokens(registration_id)
                    .map_err(|e| misconfigured(&e))?
            };
            let client = oauth.client().map_err(|e| misconfigured(&e))?;
            Arc::new(mailroom_connect::GraphConnector::new(
                mailroom_connect::GraphSettings {
                    base_url: registration.settings.graph_base_url.clone(),
                    mailbox: account.email_address.to_string(),
                },
                client.http().clone(),
                tokens,
            ))
        }
        ConnectorKind::Smtp if account.options.app_registration_id.is_some() => {
            Arc::new(OAuthSmtpConnector {
                store: store.clone(),
                oauth: oauth.clone(),
                account: account.clone(),
                defaults: defaults.clone(),
                built: Mutex::new(None),
            })
        }
        ConnectorKind::Smtp => Arc::new(SmtpConnector::new(smtp_settings(
            store,
            account,
            defaults,
            store.account_password(account.id).await?,
            false,
        ))),
    })
}

/// The SMTP settings of an account, with `password` (or, with `oauth2`, an access token).
fn smtp_settings(
    store: &Store,
    account: &Account,
    defaults: &ConnectorDefaults,
    password: Option<String>,
    oauth2: bool,
) -> SmtpSettings {
    SmtpSettings {
        account_label: account.id.to_string(),
        host: account.host.clone().unwrap_or_else(|| "localhost".into()),
        port: account.port.unwrap_or(25),
        security: account.security,
        username: account.username.clone(),
        password,
        oauth2,
        max_connections: account.limits.concurrency_limit as usize,
        timeouts: account.options.timeouts,
        ehlo_name: account
            .options
            .ehlo_name
            .clone()
            .unwrap_or_else(|| defaults.hostname.clone()),
        extra_root_certificates: defaults.extra_root_certificates.clone(),
        gate: store.is_shared().then(|| {
            defaults
                .live_nodes
                .keep_reading(store, defaults.node_timeout);
            Arc::new(StoreSessionGate {
                store: store.clone(),
                account_id: account.id,
                limit: account.limits.concurrency_limit.max(1),
                node_id: defaults.node_id.clone(),
                node_timeout: defaults.node_timeout,
                live: defaults.live_nodes.clone(),
            }) as Arc<dyn SessionGate>
        }),
    }
}

/// An SMTP account that authenticates with SASL XOAUTH2: the access token comes from the
/// account's refresh token, and lettre's transport (whose credentials are fixed) is rebuilt when
/// the token changes. A refused login renews the token and tries once more.
struct OAuthSmtpConnector {
    store: Store,
    oauth: Arc<crate::oauth::OAuthService>,
    account: Account,
    defaults: ConnectorDefaults,
    built: Mutex<Option<(String, Arc<dyn Connector>)>>,
}

impl OAuthSmtpConnector {
    async fn connector(&self, renew: bool) -> Result<Arc<dyn Connector>, SendError> {
        let token = self
            .oauth
            .account_access_token(self.account.id, renew)
            .await?;
        let mut built = self.built.lock().expect("connector lock");
        if let Some((used, connector)) = built.as_ref()
            && *used == token
        {
            return Ok(connector.clone());
        }
        let connector: Arc<dyn Connector> = Arc::new(SmtpConnector::new(smtp_settings(
            &self.store,
            &self.account,
            &self.defaults,
            Some(token.clone()),
            true,
        )));
        *built = Some((token, connector.clone()));
        Ok(connector)
    }
}

/// Whether a failure is the server refusing the login (so a new token may help).
fn login_refused(error: &SendError) -> bool {
    error.kind == mailroom_connect::FailureKind::Permanent && error.message.contains("AUTH")
}

#[async_trait::async_trait]
impl Connector for OAuthSmtpConnector {
    fn describe(&self) -> String {
        format!(
            "SMTP {}:{} with XOAUTH2",
            self.account.host.as_deref().unwrap_or("localhost"),
            self.account.port.unwrap_or(25)
        )
    }

    async fn send(
        &self,
        message: &mailroom_connect::OutgoingMessage,
    ) -> Result<mailroom_connect::Delivered, SendError> {
        match self.connector(false).await?.send(message).await {
            Err(error) if login_refused(&error) => self.connector(true).await?.send(message).await,
            outcome => outcome,
        }
    }

    async fn test_connection(&self) -> Result<String, SendError> {
        match self.connector(false).await?.test_connection().await {
            Err(error) if login_refused(&error) => {
                self.connector(true).await?.test_connection().await
            }
            outcome => outcome,
        }
    }
}

/// Sends each message through the sending user's own mailbox (MISSION A1 "current user"): its
/// profile's outgoing server, its credentials, its address as the envelope sender. A mailbox that
/// is not approved, tested and switched on for outgoing mail is never connected to.
struct CurrentUserConnector {
    store: Store,
    oauth: Arc<crate::oauth::OAuthService>,
    defaults: ConnectorDefaults,
    account_label: String,
    timeouts: mailroom_core::account::SmtpTimeouts,
    /// One SMTP connector (and pool) per mailbox, with the mailbox version and login it was built
    /// from.
    by_mailbox: Mutex<HashMap<Uuid, BuiltForMailbox>>,
}

impl CurrentUserConnector {
    async fn connector_for(
        &self,
        user: &str,
    ) -> Result<
        (
            Arc<dyn Connector>,
            mailroom_core::address::EmailAddress,
            Option<Uuid>,
        ),
        SendError,
    > {
        use mailroom_core::mailbox::{Direction, ready_for};
        let store_error = |e: mailroom_store::StoreError| {
            SendError::transient(None, format!("reading the sender's mailbox: {e}"))
        };
        let user_id: Uuid = user.parse().map_err(|_| {
            SendError::permanent(
                None,
                "the message was not sent by a user, so it has no mailbox to go out from",
            )
        })?;
        let mailbox = self
            .store
            .mailbox_of_user(user_id)
            .await
            .map_err(store_error)?;
        let settings = self.store.email_settings().await.map_err(store_error)?;
        ready_for(
            mailbox.as_ref().map(|m| m.readiness()).as_ref(),
            Direction::Outgoing,
            &settings,
        )
        .map_err(|step| {
            SendError::permanent(
                None,
                format!("{}: {}", step.code(), step.message("outgoing")),
            )
        })?;
        let mailbox = mailbox.expect("a ready mailbox exists");
        // The connector built for this version of the mailbox serves while the mailbox is
        // unchanged — with XOAUTH2, while its access token is too (lettre's credentials are fixed
        // per transport, so a refreshed token makes a new one). The profile and the password are
        // read only to build.
        let cached = self
            .by_mailbox
            .lock()
            .expect("cache lock")
            .get(&mailbox.id)
            .filter(|built| built.version == mailbox.updated_at_ms)
            .map(|built| (built.token.clone(), built.connector.clone()));
        match cached {
            Some((None, connector)) => return Ok((connector, mailbox.email_address, None)),
            Some((Some(used), connector)) => {
                let token = self.oauth.mailbox_access_token(mailbox.id, false).await?;
                if token == used {
                    return Ok((connector, mailbox.email_address, Some(mailbox.id)));
                }
            }
            None => {}
        }
        let profile_id = mailbox.profile_id.ok_or_else(|| {
            SendError::permanent(None, "the sender's mailbox has no server profile")
        })?;
        let profile = self
            .store
            .server_profile(profile_id)
            .await
            .map_err(store_error)?;
        let (connector, token): (Arc<dyn Connector>, Option<String>) =
            if profile.kind == mailroom_core::mailbox::ProfileKind::ExchangeOnline {
                // An Exchange Online mailbox sends through Microsoft Graph, which keeps its tokens.
                (
                    Arc::new(self.oauth.graph_for_mailbox(&profile, &mailbox).await?),
                    None,
                )
            } else {
                let login = self.oauth.mailbox_login(&mailbox, &profile).await?;
                let token = login.oauth2.then(|| login.secret.clone());
                let connector = Arc::new(SmtpConnector::new(SmtpSettings {
                    account_label: self.account_label.clone(),
                    host: profile.outgoing.host.clone(),
                    port: profile.outgoing.port,
                    security: profile.outgoing.security,
                    username: Some(login.username),
                    password: Some(login.secret),
                    oauth2: login.oauth2,
                    max_connections: 1,
                    timeouts: self.timeouts,
                    ehlo_name: self.defaults.hostname.clone(),
                    extra_root_certificates: self.defaults.extra_root_certificates.clone(),
                    gate: None,
                }));
                (connector, token)
            };
        let oauth_mailbox = token.is_some().then_some(mailbox.id);
        self.by_mailbox.lock().expect("cache lock").insert(
            mailbox.id,
            BuiltForMailbox {
                version: mailbox.updated_at_ms,
                token,
                connector: connector.clone(),
            },
        );
        Ok((connector, mailbox.email_address, oauth_mailbox))
    }
}

#[async_trait::async_trait]
impl Connector for CurrentUserConnector {
    fn describe(&self) -> String {
        "each sending user's own mailbox".into()
    }

    async fn send(
        &self,
        message: &mailroom_connect::OutgoingMessage,
    ) -> Result<mailroom_connect::Delivered, SendError> {
        let user = message
            .sender_user
            .as_deref()
            .ok_or_else(|| SendError::permanent(None, "the message names no sending user"))?;
        let (connector, address, oauth_mailbox) = self.connector_for(user).await?;
        let mut own = message.clone();
        own.envelope_from = address;
        match connector.send(&own).await {
            // An access token the server no longer takes (revoked, or expired early): a new one,
            // and the message tried once more with it.
            Err(error) if oauth_mailbox.is_some() && login_refused(&error) => {
                let mailbox = oauth_mailbox.expect("checked");
                self.oauth.mailbox_access_token(mailbox, true).await?;
                let (connector, _, _) = self.connector_for(user).await?;
                connector.send(&own).await
            }
            outcome => outcome,
        }
    }

    /// There is no one server to test: each user's mailbox is tested by its own test & enable.
    async fn test_connection(&self) -> Result<String, SendError> {
        Ok("this account sends through each sending user's own mailbox; test the mailboxes (POST /v1/mailboxes/{id}/test)".into())
    }
}

/// A mailbox's connector, the mailbox version it was built from and, with XOAUTH2, the access token
/// it presents.
struct BuiltForMailbox {
    version: i64,
    token: Option<String>,
    connector: Arc<dyn Connector>,
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
        oauth: &Arc<crate::oauth::OAuthService>,
    ) -> StoreResult<Arc<dyn Connector>> {
        if let Some((version, connector)) =
            self.entries.lock().expect("cache lock").get(&account.id)
            && *version == account.updated_at_ms
        {
            return Ok(connector.clone());
        }
        let built = build_connector(store, account, defaults, oauth).await?;
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

    #[test]
    fn the_shares_of_connection_places_add_up_to_the_limit_whatever_the_number_of_nodes() {
        for nodes in 1..=7usize {
            let live: Vec<String> = (0..nodes).map(|n| format!("node-{n}")).collect();
            for limit in nodes..=20 {
                let shares: Vec<usize> = live
                    .iter()
                    .map(|id| place_share(limit, &live, id))
                    .collect();
                assert_eq!(
                    shares.iter().sum::<usize>(),
                    limit,
                    "{limit} places, {nodes} nodes"
                );
                assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
            }
        }
        let live = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        assert_eq!(place_share(16, &live, "a"), 6);
        assert_eq!(place_share(16, &live, "c"), 5);
        // Not yet seen alive: the last of four.
        assert_eq!(place_share(16, &live, "d"), 4);
        // More nodes than places: each still has one, and they take turns.
        assert_eq!(place_share(2, &live, "c"), 1);
    }

    /// A new SQLite store in `dir`.
    async fn sqlite_store(dir: &std::path::Path) -> Store {
        Store::open(
            &format!("sqlite://{}", dir.join("store.db").display()),
            SecretBox::from_key(&[3u8; 32]).unwrap(),
        )
        .await
        .unwrap()
    }

    // One thread: the share's first read runs only when the test lets it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_node_takes_one_place_until_it_has_read_its_share_and_follows_the_live_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
        for id in ["node-a", "node-b", "node-c"] {
            store.register_node(id, "host", now_ms()).await.unwrap();
        }
        let live = Arc::new(LiveNodes::default());
        live.keep_reading(&store, Duration::from_secs(10));
        let gate = Arc::new(StoreSessionGate {
            store: store.clone(),
            account_id: Uuid::now_v7(),
            limit: 6,
            node_id: "node-b".into(),
            node_timeout: Duration::from_secs(10),
            live,
        });
        // Before it knows how many nodes share the six places, one.
        assert_eq!(gate.share(), 1);
        let share_becomes = |expected: usize| {
            let gate = gate.clone();
            async move {
                let until = std::time::Instant::now() + Duration::from_secs(3);
                while gate.share() != expected && std::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                gate.share()
            }
        };
        assert_eq!(
            share_becomes(2).await,
            2,
            "three live nodes: two places each"
        );
        // A node stops: the other two share its places within the next read (every second).
        store.node_stopped("node-c", now_ms()).await.unwrap();
        assert_eq!(
            share_becomes(3).await,
            3,
            "two live nodes: three places each"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sends_that_arrive_together_for_an_account_share_one_connector() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(dir.path()).await;
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
            node_id: "node-test".into(),
            node_timeout: std::time::Duration::from_secs(10),
            live_nodes: Default::default(),
        };
        let oauth = Arc::new(crate::oauth::OAuthService::new(store.clone(), &[]));
        let mut asking = Vec::new();
        for _ in 0..32 {
            let (cache, store, account, defaults, oauth) = (
                cache.clone(),
                store.clone(),
                account.clone(),
                defaults.clone(),
                oauth.clone(),
            );
            asking.push(tokio::spawn(async move {
                cache
                    .get(&store, &account, &defaults, &oauth)
                    .await
                    .unwrap()
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
