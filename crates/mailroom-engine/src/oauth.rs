//! OAuth on behalf of the engine and the API: checking an app registration against its provider,
//! and (for the connectors) the tokens they present.

use mailroom_connect::oauth::{ClientAuth, Discovery, OAuthClient, TokenClient, TokenError};
use mailroom_core::oauth::{OAuthProvider, entra_advice};
use mailroom_store::{AppRegistration, Store, StoreResult};
use uuid::Uuid;

/// One check of a registration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// `discovery`, `endpoints` or `client_credentials`.
    pub check: &'static str,
    /// `passed`, `failed` or `skipped`.
    pub result: &'static str,
    pub detail: String,
    /// The provider's error (`invalid_client`…), when it refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Microsoft's AADSTS codes, when it gave any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<u32>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
    /// Where a tenant admin grants consent, when consent is what is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_consent_url: Option<String>,
}

impl Check {
    fn passed(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            check,
            result: "passed",
            detail: detail.into(),
            error: None,
            error_codes: Vec::new(),
            advice: None,
            admin_consent_url: None,
        }
    }

    fn failed(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            result: "failed",
            ..Self::passed(check, detail)
        }
    }

    fn skipped(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            result: "skipped",
            ..Self::passed(check, detail)
        }
    }
}

/// What verifying a registration found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verification {
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<Check>,
}

/// The endpoints of a registration, overrides and fixed ones first, discovery for the rest.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    pub authorization: Option<String>,
    pub token: Option<String>,
    pub discovery: Option<Discovery>,
}

/// A registration's endpoints: overrides and fixed ones first, its discovery document for the rest.
async fn resolve_endpoints(
    client: &OAuthClient,
    registration: &AppRegistration,
) -> Result<Endpoints, String> {
    let (authorization, token) = registration.settings.known_endpoints();
    if authorization.is_some() && token.is_some() {
        return Ok(Endpoints {
            authorization,
            token,
            discovery: None,
        });
    }
    let discovery = client
        .discover(&registration.settings.discovery_document_url())
        .await?;
    Ok(Endpoints {
        authorization: authorization.or_else(|| discovery.authorization_endpoint.clone()),
        token: token.or_else(|| discovery.token_endpoint.clone()),
        discovery: Some(discovery),
    })
}

/// OAuth for the engine: one HTTP client, the registrations in the store.
pub struct OAuthService {
    store: Store,
    client: Result<OAuthClient, String>,
    /// Each connected mailbox's access token.
    mailbox_tokens: std::sync::Mutex<std::collections::HashMap<Uuid, TokenSlot>>,
    /// Each registration's app-only tokens.
    app_tokens: std::sync::Mutex<std::collections::HashMap<Uuid, Arc<AppTokens>>>,
}

impl OAuthService {
    pub fn new(store: Store, extra_roots: &[Vec<u8>]) -> Self {
        Self {
            store,
            client: OAuthClient::new(extra_roots),
            mailbox_tokens: std::sync::Mutex::default(),
            app_tokens: std::sync::Mutex::default(),
        }
    }

    pub fn client(&self) -> Result<&OAuthClient, String> {
        self.client
            .as_ref()
            .map_err(|e| format!("the HTTPS client cannot start: {e}"))
    }

    /// A registration's endpoints (reading its discovery document when an endpoint is not known
    /// otherwise), or why they cannot be known.
    pub async fn endpoints(&self, registration: &AppRegistration) -> Result<Endpoints, String> {
        resolve_endpoints(self.client()?, registration).await
    }

    /// Checks a registration against its provider: its discovery document, its endpoints, and —
    /// where the provider allows it — a client-credentials token, whose refusal is translated
    /// into what to do.
    pub async fn verify(&self, id: Uuid) -> StoreResult<Verification> {
        let registration = self.store.app_registration(id).await?;
        let secret = self.store.app_registration_secret(id).await?;
        let settings = &registration.settings;
        let mut checks = Vec::new();
        let client = match self.client() {
            Ok(client) => client,
            Err(why) => {
                checks.push(Check::failed("discovery", why));
                return Ok(Verification { ok: false, checks });
            }
        };
        let discovery_url = settings.discovery_document_url();
        let discovery = match client.discover(&discovery_url).await {
            Ok(discovery) => {
                checks.push(Check::passed(
                    "discovery",
                    format!("{discovery_url} names the issuer {}", discovery.issuer),
                ));
                Some(discovery)
            }
            Err(why) => {
                let mut check = Check::failed("discovery", why);
                if settings.provider == OAuthProvider::MicrosoftEntra {
                    check.advice = Some(
                        "Check the tenant (the Directory ID or a verified domain) and the authority of the cloud the tenant is in."
                            .into(),
                    );
                }
                checks.push(check);
                None
            }
        };
        let (authorization, token) = settings.known_endpoints();
        let authorization = authorization.or_else(|| {
            discovery
                .as_ref()
                .and_then(|d| d.authorization_endpoint.clone())
        });
        let token = token.or_else(|| discovery.as_ref().and_then(|d| d.token_endpoint.clone()));
        match (&authorization, &token) {
            (Some(a), Some(t)) => checks.push(Check::passed(
                "endpoints",
                format!("authorization at {a}, tokens at {t}"),
            )),
            _ => checks.push(Check::failed(
                "endpoints",
                "the authorization or token endpoint is not known: give them, or a discovery URL that names them",
            )),
        }
        let grants_app_tokens = settings.provider == OAuthProvider::MicrosoftEntra
            || discovery.as_ref().is_some_and(|d| {
                d.grant_types_supported
                    .iter()
                    .any(|g| g == "client_credentials")
            });
        match (token, secret) {
            _ if !grants_app_tokens => checks.push(Check::skipped(
                "client_credentials",
                "the provider does not offer the client-credentials grant; the secret is checked when a user connects",
            )),
            (None, _) => checks.push(Check::skipped(
                "client_credentials",
                "no token endpoint to ask",
            )),
            (Some(_), None) => checks.push(Check::failed(
                "client_credentials",
                "no client secret is stored: give the secret's value",
            )),
            (Some(endpoint), Some(secret)) => {
                let auth = client_auth(&registration, discovery.as_ref());
                let answer = client
                    .client_credentials(
                        &TokenClient {
                            token_endpoint: &endpoint,
                            client_id: &settings.client_id,
                            client_secret: &secret,
                            auth,
                        },
                        &settings.scopes.app,
                    )
                    .await;
                checks.push(match answer {
                    Ok(grant) => Check::passed(
                        "client_credentials",
                        format!(
                            "the provider issued an app-only token{}",
                            grant
                                .expires_in
                                .map(|s| format!(" valid for {s} s"))
                                .unwrap_or_default()
                        ),
                    ),
                    Err(error) => self.explain(&registration, error),
                });
            }
        }
        Ok(Verification {
            ok: checks.iter().all(|c| c.result != "failed"),
            checks,
        })
    }

    fn explain(&self, registration: &AppRegistration, error: TokenError) -> Check {
        let mut check = Check::failed(
            "client_credentials",
            format!(
                "the token endpoint refused{}: {}",
                error.status.map(|s| format!(" ({s})")).unwrap_or_default(),
                error.description
            ),
        );
        check.advice = error
            .codes
            .iter()
            .find_map(|code| entra_advice(*code))
            .map(str::to_owned)
            .or_else(|| match error.error.as_str() {
                "invalid_client" => Some(
                    "The provider does not accept this client ID and secret: check both.".into(),
                ),
                "unauthorized_client" => Some(
                    "The client may not use the client-credentials grant at this provider.".into(),
                ),
                "unreachable" => Some(
                    "mailroom cannot reach the token endpoint: check the URL and the network."
                        .into(),
                ),
                _ => None,
            });
        if error.codes.contains(&65001) {
            check.admin_consent_url = registration.settings.admin_consent_url();
        }
        check.error = Some(error.error);
        check.error_codes = error.codes;
        check
    }
}

/// App-only tokens of a registration (client credentials), kept until shortly before they expire.
pub struct AppTokens {
    store: Store,
    client: OAuthClient,
    registration_id: Uuid,
    cached: tokio::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl AppTokens {
    pub fn new(store: Store, client: OAuthClient, registration_id: Uuid) -> Self {
        Self {
            store,
            client,
            registration_id,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

/// How long a token is used: until 5 minutes before it expires, and at most half its life.
fn usable_for(expires_in: Option<u64>) -> std::time::Duration {
    let life = expires_in.unwrap_or(3600);
    std::time::Duration::from_secs(life.saturating_sub(300).max(life / 2))
}

#[async_trait::async_trait]
impl mailroom_connect::AccessTokens for AppTokens {
    async fn access_token(&self, renew: bool) -> Result<String, mailroom_connect::SendError> {
        use mailroom_connect::SendError;
        // One request for a token at a time: sends that find it expired together wait for it.
        let mut cached = self.cached.lock().await;
        if !renew
            && let Some((token, until)) = cached.as_ref()
            && std::time::Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let store_error = |e: mailroom_store::StoreError| match e {
            mailroom_store::StoreError::NotFound(_) => SendError::permanent(
                None,
                format!(
                    "the account's app registration {} no longer exists",
                    self.registration_id
                ),
            ),
            other => SendError::transient(None, format!("reading the app registration: {other}")),
        };
        let registration = self
            .store
            .app_registration(self.registration_id)
            .await
            .map_err(store_error)?;
        let settings = &registration.settings;
        let secret = self
            .store
            .app_registration_secret(self.registration_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                SendError::permanent(
                    None,
                    format!(
                        "the app registration {} has no client secret: app-only tokens need one",
                        settings.name
                    ),
                )
            })?;
        let endpoints = resolve_endpoints(&self.client, &registration)
            .await
            .map_err(|why| SendError::transient(None, why))?;
        let endpoint = endpoints
            .token
            .clone()
            .ok_or_else(|| SendError::permanent(None, "the provider names no token endpoint"))?;
        let auth = client_auth(&registration, endpoints.discovery.as_ref());
        let grant = self
            .client
            .client_credentials(
                &TokenClient {
                    token_endpoint: &endpoint,
                    client_id: &settings.client_id,
                    client_secret: &secret,
                    auth,
                },
                &settings.scopes.app,
            )
            .await
            .map_err(|error| {
                let advice = error
                    .codes
                    .iter()
                    .find_map(|c| entra_advice(*c))
                    .map(|a| format!(" — {a}"))
                    .unwrap_or_default();
                let text = format!(
                    "the app registration {} got no token: {error}{advice}",
                    settings.name
                );
                if error.is_permanent() {
                    SendError::permanent(error.status, text)
                } else {
                    SendError::transient(error.status, text)
                }
            })?;
        let until = std::time::Instant::now() + usable_for(grant.expires_in);
        *cached = Some((grant.access_token.clone(), until));
        Ok(grant.access_token)
    }
}

/// How a mailbox logs in to its servers: its password, or (connected with OAuth 2.0) an access
/// token presented with SASL XOAUTH2.
#[derive(Clone)]
pub struct MailboxLogin {
    pub username: String,
    pub secret: String,
    pub oauth2: bool,
}

/// A mailbox's access token, and until when it is used.
type TokenSlot = Arc<tokio::sync::Mutex<Option<(String, std::time::Instant)>>>;

use mailroom_connect::SendError;
use mailroom_core::mailbox::AuthType;
use mailroom_store::{MailboxRecord, MailboxTestRecord, ServerProfile};
use std::sync::Arc;

impl OAuthService {
    /// How `mailbox` logs in to `profile`'s servers.
    pub async fn mailbox_login(
        &self,
        mailbox: &MailboxRecord,
        profile: &ServerProfile,
    ) -> Result<MailboxLogin, SendError> {
        let store_error = |e: mailroom_store::StoreError| {
            SendError::transient(None, format!("reading the mailbox: {e}"))
        };
        if profile.auth_type == AuthType::Password {
            let password = self
                .store
                .mailbox_password(mailbox.id)
                .await
                .map_err(store_error)?;
            return match (mailbox.username.clone(), password) {
                (Some(username), Some(password)) => Ok(MailboxLogin {
                    username,
                    secret: password,
                    oauth2: false,
                }),
                _ => Err(SendError::permanent(
                    None,
                    "the mailbox has no username and password: set them, then test again",
                )),
            };
        }
        let Some(registration) = mailbox.oauth_registration_id else {
            return Err(SendError::permanent(
                None,
                "the mailbox is not connected yet: its user signs in once (GET /v1/oauth/connect, or Connect in the console)",
            ));
        };
        if profile.endpoints.app_registration_id != Some(registration) {
            return Err(SendError::permanent(
                None,
                "the mailbox was connected with another app registration than its server profile names: connect it again",
            ));
        }
        let token = self.mailbox_access_token(mailbox.id, false).await?;
        Ok(MailboxLogin {
            username: mailbox
                .username
                .clone()
                .unwrap_or_else(|| mailbox.email_address.to_string()),
            secret: token,
            oauth2: true,
        })
    }

    fn token_slot(&self, mailbox: Uuid) -> TokenSlot {
        self.mailbox_tokens
            .lock()
            .expect("token lock")
            .entry(mailbox)
            .or_default()
            .clone()
    }

    /// Keeps the access token a code exchange brought, so that the first test needs no refresh.
    pub async fn remember_mailbox_token(
        &self,
        mailbox: Uuid,
        token: &str,
        expires_in: Option<u64>,
    ) {
        let slot = self.token_slot(mailbox);
        *slot.lock().await = Some((
            token.to_owned(),
            std::time::Instant::now() + usable_for(expires_in),
        ));
    }

    /// A connected mailbox's access token, refreshed before it expires (at half its life at the
    /// latest). Refreshes of one mailbox happen one at a time: a provider that rotates refresh
    /// tokens may revoke them all when an old one is used twice. A refresh the provider refuses for
    /// good (`invalid_grant`: consent revoked, password changed, token expired) disables the
    /// mailbox, with an alert to its owners carrying the link to connect it again.
    pub async fn mailbox_access_token(
        &self,
        mailbox: Uuid,
        renew: bool,
    ) -> Result<String, SendError> {
        self.access_token(SignedIn::Mailbox(mailbox), renew).await
    }

    /// A connected account's access token (SMTP with XOAUTH2, Microsoft 365 delegated), kept and
    /// refreshed as a mailbox's is; a refusal for good fails its mail with the link to connect it
    /// again.
    pub async fn account_access_token(
        &self,
        account: Uuid,
        renew: bool,
    ) -> Result<String, SendError> {
        self.access_token(SignedIn::Account(account), renew).await
    }

    async fn access_token(&self, who: SignedIn, renew: bool) -> Result<String, SendError> {
        let slot = self.token_slot(who.id());
        let mut cached = slot.lock().await;
        if !renew
            && let Some((token, until)) = cached.as_ref()
            && std::time::Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let store_error = |e: mailroom_store::StoreError| {
            SendError::transient(None, format!("reading the {} sign-in: {e}", who.noun()))
        };
        let stored = match who {
            SignedIn::Mailbox(id) => self.store.mailbox_refresh_token(id).await,
            SignedIn::Account(id) => self.store.account_refresh_token(id).await,
        };
        let (registration_id, refresh_token) = stored.map_err(store_error)?.ok_or_else(|| {
            SendError::permanent(
                None,
                format!(
                    "the {} is not connected: sign in once ({})",
                    who.noun(),
                    who.reconnect_link(None)
                ),
            )
        })?;
        let registration = self
            .store
            .app_registration(registration_id)
            .await
            .map_err(store_error)?;
        let secret = self
            .store
            .app_registration_secret(registration_id)
            .await
            .map_err(store_error)?
            .unwrap_or_default();
        let endpoints = self
            .endpoints(&registration)
            .await
            .map_err(|why| SendError::transient(None, why))?;
        let endpoint = endpoints
            .token
            .ok_or_else(|| SendError::permanent(None, "the provider names no token endpoint"))?;
        let client = self
            .client()
            .map_err(|why| SendError::transient(None, why))?;
        let scopes = self.scopes_of(who, &registration).await;
        let grant = client
            .refresh(
                &TokenClient {
                    token_endpoint: &endpoint,
                    client_id: &registration.settings.client_id,
                    client_secret: &secret,
                    auth: client_auth(&registration, endpoints.discovery.as_ref()),
                },
                &refresh_token,
                &scopes,
            )
            .await;
        let grant = match grant {
            Ok(grant) => grant,
            Err(error) if error.is_permanent() => {
                *cached = None;
                let reason = match who {
                    SignedIn::Mailbox(mailbox) => {
                        self.disable_mailbox(mailbox, &registration, &error).await
                    }
                    SignedIn::Account(_) => format!(
                        "the sign-in is no longer accepted by {} ({}: {}); connect the account again: {}",
                        registration.settings.name,
                        error.error,
                        error.description,
                        who.reconnect_link(Some(registration.id))
                    ),
                };
                return Err(SendError::permanent(error.status, reason));
            }
            Err(error) => {
                return Err(SendError::transient(
                    error.status,
                    format!("refreshing the {} access token: {error}", who.noun()),
                ));
            }
        };
        if let Some(rotated) = grant.refresh_token.as_deref()
            && rotated != refresh_token
        {
            match who {
                SignedIn::Mailbox(id) => {
                    self.store
                        .replace_mailbox_refresh_token(id, registration_id, rotated)
                        .await
                }
                SignedIn::Account(id) => {
                    self.store
                        .replace_account_refresh_token(id, registration_id, rotated)
                        .await
                }
            }
            .map_err(store_error)?;
        }
        *cached = Some((
            grant.access_token.clone(),
            std::time::Instant::now() + usable_for(grant.expires_in),
        ));
        Ok(grant.access_token)
    }

    /// The scopes a sign-in's refresh asks for again: those of its use.
    async fn scopes_of(&self, who: SignedIn, registration: &AppRegistration) -> Vec<String> {
        use mailroom_core::mailbox::ProfileKind;
        match who {
            SignedIn::Mailbox(mailbox) => {
                let kind = match self.store.mailbox(mailbox).await.map(|m| m.profile_id) {
                    Ok(Some(profile)) => self
                        .store
                        .server_profile(profile)
                        .await
                        .map(|p| p.kind)
                        .unwrap_or(ProfileKind::ImapSmtp),
                    _ => ProfileKind::ImapSmtp,
                };
                mailbox_scopes(registration, kind).to_vec()
            }
            SignedIn::Account(account) => {
                let graph = self.store.account(account).await.is_ok_and(|a| {
                    a.connector == mailroom_core::account::ConnectorKind::Microsoft365
                });
                if graph {
                    registration.settings.scopes.graph.clone()
                } else {
                    registration.settings.scopes.mail.clone()
                }
            }
        }
    }

    /// Disables a mailbox whose sign-in the provider no longer accepts; returns why, in words.
    async fn disable_mailbox(
        &self,
        mailbox: Uuid,
        registration: &AppRegistration,
        error: &TokenError,
    ) -> String {
        let reconnect = SignedIn::Mailbox(mailbox).reconnect_link(Some(registration.id));
        let reason = format!(
            "the sign-in is no longer accepted by {} ({}: {}); connect the mailbox again: {reconnect}",
            registration.settings.name, error.error, error.description
        );
        let enabled = self.store.mailbox(mailbox).await.is_ok_and(|m| m.enabled);
        let record = MailboxTestRecord {
            incoming_status: mailroom_core::mailbox::TestStatus::Failure,
            outgoing_status: mailroom_core::mailbox::TestStatus::Failure,
            act_status: mailroom_core::mailbox::TestStatus::NotRun,
            enabled: false,
            last_error: Some(reason.clone()),
            test_tries: 0,
            next_test_at_ms: None,
            approve: false,
            disabled_because: enabled.then(|| reason.clone()),
        };
        if let Err(store_error) = self.store.record_mailbox_test(mailbox, &record).await {
            tracing::error!(%store_error, %mailbox, "a mailbox whose sign-in was refused could not be disabled");
        }
        tracing::warn!(event = "mailbox_sign_in_refused", %mailbox, error = %error.error, "a mailbox's refresh token was refused; the mailbox is disabled");
        reason
    }
}

/// Microsoft documents client_secret_post; other providers say in discovery what they take.
pub fn client_auth(registration: &AppRegistration, discovery: Option<&Discovery>) -> ClientAuth {
    match registration.settings.provider {
        OAuthProvider::MicrosoftEntra => ClientAuth::Post,
        OAuthProvider::Oidc => ClientAuth::for_provider(discovery),
    }
}

impl OAuthService {
    /// The app-only tokens of a registration, shared by everything that uses it on this node.
    pub fn app_tokens(&self, registration: Uuid) -> Result<Arc<AppTokens>, String> {
        let mut tokens = self.app_tokens.lock().expect("app token lock");
        if let Some(existing) = tokens.get(&registration) {
            return Ok(existing.clone());
        }
        let made = Arc::new(AppTokens::new(
            self.store.clone(),
            self.client()?.clone(),
            registration,
        ));
        tokens.insert(registration, made.clone());
        Ok(made)
    }

    /// A Graph client for an Exchange Online mailbox of `profile`: with the mailbox's own delegated
    /// token when a user connected it, else with the profile registration's app-only token
    /// (application permissions Mail.Read / Mail.Send).
    pub async fn graph_for_mailbox(
        self: &Arc<Self>,
        profile: &ServerProfile,
        mailbox: &MailboxRecord,
    ) -> Result<mailroom_connect::GraphConnector, SendError> {
        let registration = mailbox
            .oauth_registration_id
            .or(profile.endpoints.app_registration_id)
            .ok_or_else(|| {
                SendError::permanent(
                    None,
                    "the exchange-online profile names no app registration (sign-in oauth2 with app_registration_id)",
                )
            })?;
        let stored = self
            .store
            .app_registration(registration)
            .await
            .map_err(|e| SendError::permanent(None, format!("the app registration: {e}")))?;
        let tokens: Arc<dyn mailroom_connect::AccessTokens> =
            if mailbox.oauth_registration_id.is_some() {
                Arc::new(DelegatedTokens {
                    oauth: self.clone(),
                    mailbox: mailbox.id,
                })
            } else {
                self.app_tokens(registration)
                    .map_err(|why| SendError::transient(None, why))?
            };
        let client = self
            .client()
            .map_err(|why| SendError::transient(None, why))?;
        Ok(mailroom_connect::GraphConnector::new(
            mailroom_connect::GraphSettings {
                base_url: stored.settings.graph_base_url.clone(),
                mailbox: mailbox.email_address.to_string(),
            },
            client.http().clone(),
            tokens,
        ))
    }
}

/// A connected account's tokens (Microsoft 365 delegated), as a Graph client presents them.
pub struct AccountTokens {
    oauth: Arc<OAuthService>,
    account: Uuid,
}

impl AccountTokens {
    pub fn new(oauth: Arc<OAuthService>, account: Uuid) -> Self {
        Self { oauth, account }
    }
}

#[async_trait::async_trait]
impl mailroom_connect::AccessTokens for AccountTokens {
    async fn access_token(&self, renew: bool) -> Result<String, SendError> {
        self.oauth.account_access_token(self.account, renew).await
    }
}

/// A connected mailbox's delegated tokens, as a Graph client presents them.
struct DelegatedTokens {
    oauth: Arc<OAuthService>,
    mailbox: Uuid,
}

#[async_trait::async_trait]
impl mailroom_connect::AccessTokens for DelegatedTokens {
    async fn access_token(&self, renew: bool) -> Result<String, SendError> {
        self.oauth.mailbox_access_token(self.mailbox, renew).await
    }
}

/// The scopes a mailbox's sign-in asks for: delegated Graph for Exchange Online mailboxes (synced
/// and sent over Graph), SMTP and IMAP (XOAUTH2) for the others.
pub fn mailbox_scopes(
    registration: &AppRegistration,
    profile_kind: mailroom_core::mailbox::ProfileKind,
) -> &[String] {
    match profile_kind {
        mailroom_core::mailbox::ProfileKind::ExchangeOnline => &registration.settings.scopes.graph,
        mailroom_core::mailbox::ProfileKind::ImapSmtp => &registration.settings.scopes.mail,
    }
}

/// Whose sign-in a token is for.
#[derive(Debug, Clone, Copy)]
enum SignedIn {
    Mailbox(Uuid),
    Account(Uuid),
}

impl SignedIn {
    fn id(self) -> Uuid {
        match self {
            SignedIn::Mailbox(id) | SignedIn::Account(id) => id,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            SignedIn::Mailbox(_) => "mailbox's",
            SignedIn::Account(_) => "account's",
        }
    }

    /// Where it is connected (again).
    fn reconnect_link(self, registration: Option<Uuid>) -> String {
        let registration = registration
            .map(|r| format!("registration={r}&"))
            .unwrap_or_default();
        match self {
            SignedIn::Mailbox(id) => {
                format!("/v1/oauth/connect?{registration}purpose=mailbox&mailbox={id}")
            }
            SignedIn::Account(id) => format!("/v1/oauth/connect?{registration}account={id}"),
        }
    }
}
