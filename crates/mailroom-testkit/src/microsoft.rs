//! A fake of Microsoft's identity platform and of Microsoft Graph for the parts of
//! mailroom that talk to Microsoft 365, which cannot run here. Every behaviour it has is one the
//! Microsoft documentation describes; the source is written next to each rule. It serves on a
//! loopback port: the authority is `http://127.0.0.1:<port>`.

// Handlers answer refusals early with a whole `Response`; boxing them buys nothing in a test fake.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest request Graph takes (learn.microsoft.com "user: sendMail": "the total size of the
/// request … 4 MB"; "Attach large files to Outlook messages or events": ranges of up to 4 MB).
pub const GRAPH_REQUEST_LIMIT: usize = 4 * 1024 * 1024;
/// Attachments from this size go through an upload session, and only those ("attachment:
/// createUploadSession": "between 3 MB and 150 MB").
const UPLOAD_SESSION_MIN: usize = 3 * 1024 * 1024;
const UPLOAD_SESSION_MAX: usize = 150 * 1024 * 1024;

/// A mailbox of the fake tenant.
#[derive(Debug, Clone)]
pub struct FakeMailbox {
    pub address: String,
    /// False for a mailbox Graph cannot use (on-premises, inactive): MailboxNotEnabledForRESTAPI.
    pub rest_enabled: bool,
    /// Addresses besides its own that it may send as.
    pub send_as: Vec<String>,
    /// Exchange Online's message size limit (35 MB by default: "attachment: createUploadSession").
    pub max_message_bytes: usize,
    /// Users with Full Access and Send As on it (a shared mailbox's delegates).
    pub delegates: Vec<String>,
}

impl FakeMailbox {
    pub fn new(address: &str) -> Self {
        Self {
            address: address.to_ascii_lowercase(),
            rest_enabled: true,
            send_as: Vec::new(),
            max_message_bytes: 35 * 1024 * 1024,
            delegates: Vec::new(),
        }
    }
}

/// A message the fake sent.
#[derive(Debug, Clone)]
pub struct SentMail {
    pub mailbox: String,
    /// `sendMail` with MIME: the decoded MIME.
    pub mime: Option<Vec<u8>>,
    /// A sent draft: its JSON.
    pub message: Option<Value>,
    /// A sent draft's attachments: name and bytes.
    pub attachments: Vec<(String, Vec<u8>)>,
}

/// One Graph request as the fake saw it.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The Retry-After it answered, when it throttled.
    pub retry_after: Option<Duration>,
    pub authorization: bool,
    /// The signed-in user of a delegated token (`None` for app-only tokens).
    pub user: Option<String>,
}

/// A message in a fake mailbox's folder, for delta queries.
struct StoredMail {
    id: String,
    /// The order changes happened in: a delta token is the last one a client saw.
    change: u64,
    removed: bool,
    mime: Vec<u8>,
    is_read: bool,
}

/// An authorization code waiting for its exchange.
struct PendingCode {
    client: String,
    user: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
}

struct Draft {
    mailbox: String,
    message: Value,
    attachments: Vec<(String, Vec<u8>)>,
}

struct UploadSession {
    draft: String,
    name: String,
    size: usize,
    received: Vec<u8>,
    expires: Instant,
}

/// An application registered in the fake tenant.
#[derive(Debug, Clone)]
pub struct FakeClient {
    pub client_id: String,
    /// The secret's value.
    pub secret: String,
    /// The secret's expiry has passed.
    pub secret_expired: bool,
    /// A tenant admin granted the application's permissions.
    pub consented: bool,
}

impl FakeClient {
    pub fn new(client_id: &str, secret: &str) -> Self {
        Self {
            client_id: client_id.into(),
            secret: secret.into(),
            secret_expired: false,
            consented: true,
        }
    }
}

#[derive(Default)]
struct Fake {
    tenant: String,
    tenant_id: String,
    clients: HashMap<String, FakeClient>,
    /// Issued access tokens: token → client id, the user of a delegated token, and expiry.
    tokens: HashMap<String, (String, Option<String>, Instant)>,
    /// Authorization codes: code → what was asked (single use).
    codes: HashMap<String, PendingCode>,
    /// Refresh tokens: token → client id and user (a used one is replaced: Entra rotates them).
    refresh_tokens: HashMap<String, (String, String)>,
    token_requests: usize,
    /// How long issued access tokens live.
    token_ttl: Duration,
    mailboxes: HashMap<String, FakeMailbox>,
    /// Application access policies: the only mailboxes an app may use.
    app_policies: HashMap<String, Vec<String>>,
    /// Requests allowed per window, per app and mailbox (Outlook service limits: 10,000 per 10
    /// minutes; tests set fewer).
    budget: Option<(usize, Duration)>,
    /// How long each Graph request takes (so that concurrency can be observed).
    latency: Duration,
    recent: HashMap<String, VecDeque<Instant>>,
    in_flight: HashMap<String, usize>,
    sent: Vec<SentMail>,
    drafts: HashMap<String, Draft>,
    sessions: HashMap<String, UploadSession>,
    requests: Vec<GraphRequest>,
    port: u16,
    /// Mail in each mailbox's folders: (mailbox, folder lower-case) → messages.
    folders: HashMap<(String, String), Vec<StoredMail>>,
    changes: u64,
    /// Who is signed in at the identity platform in the test's browser (when no login_hint names
    /// the user).
    signed_in: Option<String>,
    /// Delta and skip tokens issued before this generation are no longer known (410).
    token_generation: u64,
}

type Shared = Arc<Mutex<Fake>>;

/// The running fake; stops when dropped.
pub struct MicrosoftFake {
    pub port: u16,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl MicrosoftFake {
    /// Serves one tenant (known by its domain `tenant` and a GUID) with these applications.
    pub async fn start(tenant: &str, clients: Vec<FakeClient>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let state: Shared = Arc::new(Mutex::new(Fake {
            port,
            token_ttl: Duration::from_secs(3599),
            tenant: tenant.to_ascii_lowercase(),
            tenant_id: uuid::Uuid::new_v4().to_string(),
            clients: clients
                .into_iter()
                .map(|c| (c.client_id.clone(), c))
                .collect(),
            ..Fake::default()
        }));
        let app = Router::new()
            .route(
                "/{tenant}/v2.0/.well-known/openid-configuration",
                get(discovery),
            )
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
            .route("/v1.0/users/{user}", get(graph_user))
            .route("/v1.0/users/{user}/sendMail", post(graph_send_mail))
            .route("/v1.0/users/{user}/messages", post(graph_create_draft))
            .route(
                "/v1.0/users/{user}/messages/{id}",
                axum::routing::delete(graph_delete_draft),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/attachments",
                post(graph_add_attachment),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/attachments/createUploadSession",
                post(graph_create_upload_session),
            )
            .route(
                "/v1.0/users/{user}/messages/{id}/send",
                post(graph_send_draft),
            )
            .route("/upload/{session}", put(graph_upload))
            .route(
                "/v1.0/users/{user}/mailFolders/{folder}/messages/delta",
                get(graph_delta),
            )
            .route("/v1.0/users/{user}/messages/{id}/$value", get(graph_mime))
            // The fake checks the 4 MB limit itself, to answer as Graph does.
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { port, state, task })
    }

    /// `http://127.0.0.1:<port>`, in place of `https://login.microsoftonline.com`.
    pub fn authority(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>/v1.0`, in place of `https://graph.microsoft.com/v1.0`.
    pub fn graph_base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1.0", self.port)
    }

    /// Adds (or replaces) a mailbox.
    pub fn add_mailbox(&self, mailbox: FakeMailbox) {
        let mut fake = self.state.lock().unwrap();
        fake.mailboxes.insert(mailbox.address.clone(), mailbox);
    }

    /// Restricts an app to these mailboxes (an application access policy).
    pub fn restrict_app(&self, client_id: &str, mailboxes: &[&str]) {
        self.state.lock().unwrap().app_policies.insert(
            client_id.to_owned(),
            mailboxes.iter().map(|m| m.to_ascii_lowercase()).collect(),
        );
    }

    /// Throttles each app and mailbox to `requests` per `window`.
    pub fn set_budget(&self, requests: usize, window: Duration) {
        self.state.lock().unwrap().budget = Some((requests, window));
    }

    /// Makes every Graph request take this long.
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// How long the access tokens issued from now on live.
    pub fn set_token_ttl(&self, ttl: Duration) {
        self.state.lock().unwrap().token_ttl = ttl;
    }

    /// Expires every access token issued so far.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for (_, _, expiry) in self.state.lock().unwrap().tokens.values_mut() {
            *expiry = now;
        }
    }

    pub fn sent(&self) -> Vec<SentMail> {
        self.state.lock().unwrap().sent.clone()
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Delivers a message into a mailbox's folder (as mail arriving); returns its Graph id.
    pub fn deliver(&self, mailbox: &str, folder: &str, mime: &[u8]) -> String {
        let mut fake = self.state.lock().unwrap();
        fake.changes += 1;
        let change = fake.changes;
        let id = format!("AAMkAGI{}=", uuid::Uuid::new_v4().simple());
        fake.folders
            .entry((mailbox.to_ascii_lowercase(), folder.to_ascii_lowercase()))
            .or_default()
            .push(StoredMail {
                id: id.clone(),
                change,
                removed: false,
                mime: mime.to_vec(),
                is_read: false,
            });
        id
    }

    /// The user signed in at the identity platform in the browser (a sign-in without login_hint
    /// is theirs).
    pub fn sign_in_as(&self, user: &str) {
        self.state.lock().unwrap().signed_in = Some(user.to_ascii_lowercase());
    }

    /// Revokes every refresh token of `user` (as when they or an admin revoke the app's consent,
    /// or the user's password is reset).
    pub fn revoke_user(&self, user: &str) {
        let user = user.to_ascii_lowercase();
        self.state
            .lock()
            .unwrap()
            .refresh_tokens
            .retain(|_, (_, owner)| *owner != user);
    }

    /// Forgets every delta and skip token issued so far: their next use answers 410 Gone.
    pub fn expire_delta_tokens(&self) {
        let mut fake = self.state.lock().unwrap();
        fake.token_generation = fake.changes + 1_000_000;
    }

    /// Drafts not sent (nor deleted).
    pub fn drafts_left(&self) -> usize {
        self.state.lock().unwrap().drafts.len()
    }

    /// How many requests reached the token endpoint.
    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }

    /// Changes an application (expire its secret, withdraw consent…).
    pub fn update_client(&self, client_id: &str, change: impl FnOnce(&mut FakeClient)) {
        if let Some(client) = self.state.lock().unwrap().clients.get_mut(client_id) {
            change(client);
        }
    }
}

impl Drop for MicrosoftFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The error body of the identity platform's token endpoint: `error`, `error_description` (which
/// begins with the AADSTS code), `error_codes`, `timestamp`, `trace_id`, `correlation_id`,
/// `error_uri` (learn.microsoft.com, "Microsoft identity platform and the OAuth 2.0 client
/// credentials flow", section "Error response"; "Microsoft Entra authentication and authorization
/// error codes").
fn aad_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let timestamp = "2026-11-28 10:00:00Z";
    (
        status,
        axum::Json(json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}"),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })),
    )
        .into_response()
}

/// Whether the path's tenant is this one: its domain, its GUID, or `organizations`/`common`
/// (learn.microsoft.com, "Microsoft identity platform and OpenID Connect protocol": the `{tenant}`
/// path value). An unknown tenant is AADSTS90002.
fn known_tenant(fake: &Fake, tenant: &str) -> bool {
    let tenant = tenant.to_ascii_lowercase();
    tenant == fake.tenant
        || tenant == fake.tenant_id
        || tenant == "organizations"
        || tenant == "common"
}

fn unknown_tenant(tenant: &str) -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
        ),
    )
}

/// The OpenID Connect metadata document (learn.microsoft.com, "OpenID Connect on the Microsoft
/// identity platform", "Find your app's OpenID configuration document URI").
async fn discovery(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Response {
    let fake = state.lock().unwrap();
    if !known_tenant(&fake, &tenant) {
        return unknown_tenant(&tenant);
    }
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let base = format!("http://{host}/{tenant}");
    axum::Json(json!({
        "issuer": format!("http://{host}/{}/v2.0", fake.tenant_id),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
    }))
    .into_response()
}

/// The token endpoint.
async fn token(
    State(state): State<Shared>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap();
    fake.token_requests += 1;
    if !known_tenant(&fake, &tenant) {
        return unknown_tenant(&tenant);
    }
    // The secret goes in the body (`client_secret`) or in HTTP Basic (the client credentials flow
    // article: "The application secret … can also be sent in the Authorization header").
    let basic = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (decode_form(id), decode_form(secret)))
        });
    let client_id = basic
        .as_ref()
        .map(|(id, _)| id.clone())
        .or_else(|| form.get("client_id").cloned())
        .unwrap_or_default();
    let secret = basic
        .map(|(_, secret)| secret)
        .or_else(|| form.get("client_secret").cloned());
    let Some(client) = fake.clients.get(&client_id).cloned() else {
        // AADSTS700016 UnauthorizedClient_DoesNotMatchRequest (error codes reference).
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    };
    // Client authentication failures answer 401 invalid_client (RFC 6749 §5.2); AADSTS7000218 is a
    // missing secret, 7000215 a wrong one, 7000222 an expired one (error codes reference).
    match secret {
        None => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            );
        }
        Some(given) if given != client.secret => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            );
        }
        Some(_) if client.secret_expired => {
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000222,
                &format!(
                    "The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to create new keys for your app."
                ),
            );
        }
        Some(_) => {}
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            // The scope of the client credentials flow is the resource followed by `/.default`
            // (the client credentials flow article, "First case: Access token request with a
            // shared secret"); AADSTS1002012 otherwise.
            let scope = form.get("scope").cloned().unwrap_or_default();
            if !scope.ends_with("/.default") || scope.contains(' ') {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    1002012,
                    &format!(
                        "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                    ),
                );
            }
            // A token for a resource nobody consented to is AADSTS65001 ("Troubleshoot consent
            // issues in Microsoft Entra ID").
            if !client.consented {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    65001,
                    &format!(
                        "The user or administrator has not consented to use the application with ID '{client_id}'. Send an interactive authorization request for this user and resource."
                    ),
                );
            }
            let access_token = format!("fake-app-{}", uuid::Uuid::new_v4().simple());
            let ttl = fake.token_ttl;
            fake.tokens.insert(
                access_token.clone(),
                (client_id, None, Instant::now() + ttl),
            );
            // The successful response: token_type, expires_in, ext_expires_in, access_token.
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
                "ext_expires_in": ttl.as_secs(),
                "access_token": access_token,
            }))
            .into_response()
        }
        Some("authorization_code") => {
            // The code is single use and bound to its client, redirect URI and PKCE challenge
            // ("Microsoft identity platform and OAuth 2.0 authorization code flow": "Request an
            // access token with a client_secret"; AADSTS70008 an expired or used code, AADSTS501481
            // a code_verifier that does not match).
            let code = form.get("code").cloned().unwrap_or_default();
            let Some(pending) = fake.codes.remove(&code) else {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    70008,
                    "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource.",
                );
            };
            if pending.client != client_id
                || form.get("redirect_uri") != Some(&pending.redirect_uri)
            {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    50011,
                    "The redirect URI specified in the request does not match the redirect URIs configured for the application.",
                );
            }
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
            if challenge != pending.challenge {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
                );
            }
            delegated_tokens(&mut fake, &client_id, &pending.user, &pending.scope)
        }
        Some("refresh_token") => {
            // A refresh token is replaced by the one in the answer; a revoked one is
            // AADSTS50173 ("The provided grant has expired due to it being revoked").
            let token = form.get("refresh_token").cloned().unwrap_or_default();
            match fake.refresh_tokens.remove(&token) {
                Some((client, user)) if client == client_id => {
                    let scope = form.get("scope").cloned().unwrap_or_default();
                    delegated_tokens(&mut fake, &client_id, &user, &scope)
                }
                _ => aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    50173,
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password.",
                ),
            }
        }
        other => aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            &format!(
                "The app requested an unsupported grant type '{}'.",
                other.unwrap_or_default()
            ),
        ),
    }
}

fn decode_form(raw: &str) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Graph's error envelope ("Microsoft Graph error responses and resource types").
fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": "2026-11-28T10:00:00",
                "request-id": uuid::Uuid::new_v4(),
                "client-request-id": uuid::Uuid::new_v4(),
            }
        }})),
    )
        .into_response()
}

/// What every Graph request goes through: the token, the mailbox, the app's access policy, the
/// request size limit and throttling. `Ok` carries the mailbox key; the request is counted in flight
/// until [`leave`], which records its final status.
fn admit(
    state: &Shared,
    method: &Method,
    path: String,
    headers: &HeaderMap,
    user: &str,
    body_len: usize,
) -> Result<Admitted, Response> {
    let mut fake = state.lock().unwrap();
    let at = Instant::now();
    let record = |fake: &mut Fake, status: StatusCode, retry_after: Option<Duration>| {
        fake.requests.push(GraphRequest {
            at,
            method: method.to_string(),
            path: path.clone(),
            status: status.as_u16(),
            retry_after,
            authorization: true,
            user: None,
        });
    };
    // A missing, unknown or expired token is 401 InvalidAuthenticationToken ("Microsoft Graph error
    // responses": 401 Unauthorized; the message is the token validation's).
    let token = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    let client = match fake.tokens.get(&token).cloned() {
        None => {
            record(&mut fake, StatusCode::UNAUTHORIZED, None);
            return Err(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                if token.is_empty() {
                    "Access token is empty."
                } else {
                    "IDX14100: JWT is not well formed."
                },
            ));
        }
        Some((_, _, expiry)) if Instant::now() >= expiry => {
            record(&mut fake, StatusCode::UNAUTHORIZED, None);
            return Err(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            ));
        }
        Some((client, delegated, _)) => (client, delegated),
    };
    let (client, delegated) = client;
    let key = user.to_ascii_lowercase();
    let delegated_user = delegated.clone();
    // A delegated token acts as its user: their own mailbox only here ("Microsoft Graph
    // permissions reference": Mail.Send / Mail.ReadWrite are the signed-in user's mail; other
    // mailboxes need .Shared permissions and Exchange rights this fake does not grant).
    let delegate_of = |fake: &Fake| {
        fake.mailboxes
            .get(&key)
            .is_some_and(|m| delegated.as_ref().is_some_and(|u| m.delegates.contains(u)))
    };
    if let Some(owner) = &delegated
        && *owner != key
        && !delegate_of(&fake)
    {
        record(&mut fake, StatusCode::FORBIDDEN, None);
        return Err(graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
        ));
    }
    let Some(mailbox) = fake.mailboxes.get(&key).cloned() else {
        record(&mut fake, StatusCode::NOT_FOUND, None);
        return Err(graph_error(
            StatusCode::NOT_FOUND,
            "ErrorInvalidUser",
            &format!("The requested user '{user}' is invalid."),
        ));
    };
    // An application access policy keeps an app-only token out of other mailboxes ("Limiting
    // application permissions to specific Exchange Online mailboxes": 403 ErrorAccessDenied).
    if let Some(allowed) = fake.app_policies.get(&client)
        && !allowed.contains(&key)
    {
        record(&mut fake, StatusCode::FORBIDDEN, None);
        return Err(graph_error(
            StatusCode::FORBIDDEN,
            "ErrorAccessDenied",
            "Access to OData is disabled: [RAOP] : Blocked by tenant configured AppOnly AccessPolicy settings.",
        ));
    }
    if !mailbox.rest_enabled {
        record(&mut fake, StatusCode::NOT_FOUND, None);
        return Err(graph_error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ));
    }
    if body_len > GRAPH_REQUEST_LIMIT {
        record(&mut fake, StatusCode::PAYLOAD_TOO_LARGE, None);
        return Err(graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestBodyTooLarge",
            "The maximum request length supported is 4MB.",
        ));
    }
    // Throttling ("Microsoft Graph throttling guidance"; "service-specific throttling limits",
    // Outlook: per app and mailbox, 4 concurrent requests and a request budget per window):
    // 429 with Retry-After in seconds.
    let throttle_key = format!("{client}/{key}");
    if fake.in_flight.get(&throttle_key).copied().unwrap_or(0) >= 4 {
        let wait = Duration::from_secs(1);
        record(&mut fake, StatusCode::TOO_MANY_REQUESTS, Some(wait));
        return Err(throttled(
            wait,
            "Application is over its MailboxConcurrency limit.",
        ));
    }
    if let Some((budget, window)) = fake.budget {
        let recent = fake.recent.entry(throttle_key.clone()).or_default();
        while recent
            .front()
            .is_some_and(|t| at.duration_since(*t) >= window)
        {
            recent.pop_front();
        }
        if recent.len() >= budget {
            let free_at = *recent.front().unwrap() + window;
            let wait = Duration::from_secs(
                free_at.duration_since(at).as_secs_f64().ceil().max(1.0) as u64,
            );
            record(&mut fake, StatusCode::TOO_MANY_REQUESTS, Some(wait));
            return Err(throttled(wait, "Application is over its request limit."));
        }
        recent.push_back(at);
    }
    *fake.in_flight.entry(throttle_key.clone()).or_default() += 1;
    record(&mut fake, StatusCode::OK, None);
    if let Some(last) = fake.requests.last_mut() {
        last.user = delegated_user;
    }
    Ok(Admitted {
        key: throttle_key,
        request: fake.requests.len() - 1,
    })
}

/// A request let through: its app/mailbox key and its entry in the request log.
struct Admitted {
    key: String,
    request: usize,
}

fn throttled(wait: Duration, message: &str) -> Response {
    let mut response = graph_error(
        StatusCode::TOO_MANY_REQUESTS,
        "ApplicationThrottled",
        message,
    );
    response
        .headers_mut()
        .insert("retry-after", wait.as_secs().to_string().parse().unwrap());
    response
}

/// The request is no longer in flight; its status is the final one.
async fn leave(state: &Shared, admitted: Admitted, response: Response) -> Response {
    let latency = state.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut fake = state.lock().unwrap();
    if let Some(n) = fake.in_flight.get_mut(&admitted.key) {
        *n = n.saturating_sub(1);
    }
    fake.requests[admitted.request].status = response.status().as_u16();
    response
}

fn mailbox_of(key: &str) -> String {
    key.split_once('/')
        .map(|(_, m)| m.to_owned())
        .unwrap_or_default()
}

/// The From address of a MIME message, lower-cased.
fn mime_from(mime: &[u8]) -> Option<String> {
    let headers = mail_parser::MessageParser::default().parse_headers(mime)?;
    headers
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .map(|a| a.to_ascii_lowercase())
}

/// Sending as an address that is neither the mailbox's nor one it has Send As on is 403
/// ErrorSendAsDenied ("user: sendMail"; the Exchange error ErrorSendAsDenied).
fn may_send_as(mailbox: &FakeMailbox, from: Option<&str>) -> Result<(), Response> {
    match from {
        Some(from)
            if from != mailbox.address
                && !mailbox.send_as.iter().any(|a| a.eq_ignore_ascii_case(from)) =>
        {
            Err(graph_error(
                StatusCode::FORBIDDEN,
                "ErrorSendAsDenied",
                "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.",
            ))
        }
        _ => Ok(()),
    }
}

/// ErrorMessageSizeExceeded: the Exchange error of a message over the mailbox's limit (its HTTP
/// status is not documented; the fake answers 413 and mailroom reads the code, not the status).
fn too_big(size: usize, limit: usize) -> Option<Response> {
    (size > limit).then(|| {
        graph_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ErrorMessageSizeExceeded",
            &format!("The message exceeds the maximum supported size of {limit} bytes."),
        )
    })
}

async fn graph_user(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(user): Path<String>,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}"),
        &headers,
        &user,
        0,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let key = admitted.key.clone();
    let mailbox = mailbox_of(&key);
    let response = axum::Json(
        json!({"id": uuid::Uuid::new_v4(), "mail": mailbox, "userPrincipalName": mailbox}),
    )
    .into_response();
    leave(&state, admitted, response).await
}

/// `POST /users/{id}/sendMail` with MIME: `Content-Type: text/plain`, the message in base64; 202
/// Accepted with no body ("user: sendMail", "Example 4: Send a new message using MIME format").
async fn graph_send_mail(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/sendMail"),
        &headers,
        &user,
        body.len(),
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let key = admitted.key.clone();
    let response = (|| {
        let mailbox = state.lock().unwrap().mailboxes[&mailbox_of(&key)].clone();
        let is_mime = headers
            .get("content-type")
            .and_then(|h| h.to_str().ok())
            .is_some_and(|c| c.starts_with("text/plain"));
        if !is_mime {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRequest",
                "This fake takes sendMail in MIME format (Content-Type: text/plain) only.",
            );
        }
        let cleaned: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(cleaned) else {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            );
        };
        if let Err(refused) = may_send_as(&mailbox, mime_from(&mime).as_deref()) {
            return refused;
        }
        if let Some(refused) = too_big(mime.len(), mailbox.max_message_bytes) {
            return refused;
        }
        state.lock().unwrap().sent.push(SentMail {
            mailbox: mailbox.address.clone(),
            mime: Some(mime),
            message: None,
            attachments: Vec::new(),
        });
        StatusCode::ACCEPTED.into_response()
    })();
    leave(&state, admitted, response).await
}

/// `POST /users/{id}/messages`: a draft; 201 Created with the message ("user: create message").
async fn graph_create_draft(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path(user): Path<String>,
    body: Bytes,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/messages"),
        &headers,
        &user,
        body.len(),
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let key = admitted.key.clone();
    let response = match serde_json::from_slice::<Value>(&body) {
        Err(_) => graph_error(
            StatusCode::BAD_REQUEST,
            "RequestBodyRead",
            "The request body is not a JSON message.",
        ),
        Ok(mut message) => {
            let id = format!("AAMk{}=", uuid::Uuid::new_v4().simple());
            message["id"] = json!(id);
            message["isDraft"] = json!(true);
            state.lock().unwrap().drafts.insert(
                id.clone(),
                Draft {
                    mailbox: mailbox_of(&key),
                    message: message.clone(),
                    attachments: Vec::new(),
                },
            );
            (StatusCode::CREATED, axum::Json(message)).into_response()
        }
    };
    leave(&state, admitted, response).await
}

fn no_draft() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

async fn graph_delete_draft(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/messages/{id}"),
        &headers,
        &user,
        0,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let removed = state.lock().unwrap().drafts.remove(&id).is_some();
    let response = if removed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        no_draft()
    };
    leave(&state, admitted, response).await
}

/// `POST /users/{id}/messages/{id}/attachments`: a fileAttachment under 3 MB ("message: add
/// attachment"; "Attach large files…": under 3 MB, one POST).
async fn graph_add_attachment(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/messages/{id}/attachments"),
        &headers,
        &user,
        body.len(),
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let response = (|| {
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(bytes) = value["contentBytes"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        else {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidRequest",
                "A fileAttachment needs contentBytes in base64.",
            );
        };
        let mut fake = state.lock().unwrap();
        let Some(draft) = fake.drafts.get_mut(&id) else {
            return no_draft();
        };
        draft.attachments.push((
            value["name"].as_str().unwrap_or("attachment").to_owned(),
            bytes,
        ));
        (
            StatusCode::CREATED,
            axum::Json(json!({"id": format!("AAMkATT{}", draft.attachments.len())})),
        )
            .into_response()
    })();
    leave(&state, admitted, response).await
}

/// `POST …/attachments/createUploadSession`: for files of 3 MB to 150 MB; 201 with `uploadUrl`,
/// `expirationDateTime` and `nextExpectedRanges: ["0-"]` ("attachment: createUploadSession").
/// Smaller sizes are refused with ErrorAttachmentSizeShouldNotBeLessThanMinimumSize.
async fn graph_create_upload_session(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/messages/{id}/attachments/createUploadSession"),
        &headers,
        &user,
        body.len(),
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let response = (|| {
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let item = &value["AttachmentItem"];
        let size = item["size"].as_u64().unwrap_or(0) as usize;
        if size < UPLOAD_SESSION_MIN {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                "Attachment size must be greater than the minimum size.",
            );
        }
        if size > UPLOAD_SESSION_MAX {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorAttachmentSizeExceeded",
                "The attachment is larger than 150 MB.",
            );
        }
        let mut fake = state.lock().unwrap();
        if !fake.drafts.contains_key(&id) {
            return no_draft();
        }
        let session = uuid::Uuid::new_v4().simple().to_string();
        let port = fake.port;
        fake.sessions.insert(
            session.clone(),
            UploadSession {
                draft: id.clone(),
                name: item["name"].as_str().unwrap_or("attachment").to_owned(),
                size,
                received: Vec::with_capacity(size),
                expires: Instant::now() + Duration::from_secs(15 * 60),
            },
        );
        (StatusCode::CREATED, axum::Json(json!({
            "uploadUrl": format!("http://127.0.0.1:{port}/upload/{session}?authtoken=fake{session}"),
            "expirationDateTime": "2026-11-28T10:15:00Z",
            "nextExpectedRanges": ["0-"],
        }))).into_response()
    })();
    leave(&state, admitted, response).await
}

/// `PUT <uploadUrl>`: a range of at most 4 MB, in order, with `Content-Range: bytes s-e/total`
/// and no Authorization header (the URL is pre-authenticated); 200 with `nextExpectedRanges`,
/// and for the last range 201 Created with a `Location` ("Attach large files to Outlook messages
/// or events", steps 2 and 3).
async fn graph_upload(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(session): Path<String>,
    body: Bytes,
) -> Response {
    let mut fake = state.lock().unwrap();
    let authorization = headers.contains_key("authorization");
    fake.requests.push(GraphRequest {
        at: Instant::now(),
        method: "PUT".into(),
        path: format!("/upload/{session}"),
        status: 0,
        retry_after: None,
        authorization,
        user: None,
    });
    let response = (|| {
        if authorization {
            return graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Do not send an Authorization header to a pre-authenticated upload URL.",
            );
        }
        if body.len() > GRAPH_REQUEST_LIMIT {
            return graph_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestBodyTooLarge",
                "A range may be at most 4 MB.",
            );
        }
        let Some(upload) = fake.sessions.get_mut(&session) else {
            return graph_error(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The upload session does not exist.",
            );
        };
        if Instant::now() > upload.expires {
            return graph_error(
                StatusCode::NOT_FOUND,
                "ErrorItemNotFound",
                "The upload session has expired.",
            );
        }
        let range = headers
            .get("content-range")
            .and_then(|h| h.to_str().ok())
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| {
                let (span, total) = r.split_once('/')?;
                let (start, end) = span.split_once('-')?;
                Some((
                    start.parse::<usize>().ok()?,
                    end.parse::<usize>().ok()?,
                    total.parse::<usize>().ok()?,
                ))
            });
        let next = upload.received.len();
        match range {
            Some((start, end, total))
                if start == next
                    && end + 1 - start == body.len()
                    && total == upload.size
                    && end < total => {}
            _ => {
                // Bytes must come in order ("You must upload bytes in a file in order").
                return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"code": "InvalidRange", "message": "The Content-Range does not continue the upload."}, "nextExpectedRanges": [format!("{next}-")]}))).into_response();
            }
        }
        upload.received.extend_from_slice(&body);
        if upload.received.len() < upload.size {
            let next = upload.received.len();
            return axum::Json(json!({"expirationDateTime": "2026-11-28T10:15:00Z", "nextExpectedRanges": [format!("{next}")]})).into_response();
        }
        let upload = fake.sessions.remove(&session).unwrap();
        let Some(draft) = fake.drafts.get_mut(&upload.draft) else {
            return no_draft();
        };
        draft.attachments.push((upload.name, upload.received));
        let location = format!(
            "https://outlook.office.com/api/v2.0/Users('fake')/Messages('{}')/Attachments('AAMkATT{}')",
            upload.draft,
            draft.attachments.len()
        );
        (StatusCode::CREATED, [("location", location)]).into_response()
    })();
    if let Some(last) = fake.requests.last_mut() {
        last.status = response.status().as_u16();
    }
    response
}

/// `POST /users/{id}/messages/{id}/send`: 202 Accepted ("message: send").
async fn graph_send_draft(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/messages/{id}/send"),
        &headers,
        &user,
        0,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let key = admitted.key.clone();
    let response = (|| {
        let mut fake = state.lock().unwrap();
        let mailbox = fake.mailboxes[&mailbox_of(&key)].clone();
        let Some(draft) = fake.drafts.get(&id) else {
            return no_draft();
        };
        let from = draft.message["from"]["emailAddress"]["address"]
            .as_str()
            .map(str::to_ascii_lowercase);
        if let Err(refused) = may_send_as(&mailbox, from.as_deref()) {
            return refused;
        }
        let size: usize = draft
            .attachments
            .iter()
            .map(|(_, b)| b.len())
            .sum::<usize>()
            + draft.message.to_string().len();
        if let Some(refused) = too_big(size, mailbox.max_message_bytes) {
            return refused;
        }
        let draft = fake.drafts.remove(&id).unwrap();
        fake.sent.push(SentMail {
            mailbox: draft.mailbox,
            mime: None,
            message: Some(draft.message),
            attachments: draft.attachments,
        });
        StatusCode::ACCEPTED.into_response()
    })();
    leave(&state, admitted, response).await
}

/// `GET /users/{id}/mailFolders/{folder}/messages/delta` ("message: delta"; "Get incremental
/// changes to messages in a folder"): pages of at most `Prefer: odata.maxpagesize` messages, each
/// but the last with an `@odata.nextLink` (a `$skiptoken`), the last with an `@odata.deltaLink` (a
/// `$deltatoken`) that returns only later changes; deleted messages come as `@removed`. A token the
/// service no longer knows answers 410 Gone with `syncStateNotFound`: the client starts over.
/// Tokens here are "<generation>.<last change>.<offset>".
async fn graph_delta(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((user, folder)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/mailFolders/{folder}/messages/delta"),
        &headers,
        &user,
        0,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let response = (|| {
        let fake = state.lock().unwrap();
        let page_size = headers
            .get("prefer")
            .and_then(|h| h.to_str().ok())
            .and_then(|p| {
                p.split(',')
                    .find_map(|x| x.trim().strip_prefix("odata.maxpagesize="))
            })
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(10)
            .clamp(1, 1000);
        let query = query.unwrap_or_default();
        let token = query.split('&').find_map(|kv| {
            kv.strip_prefix("$deltatoken=")
                .or_else(|| kv.strip_prefix("$skiptoken="))
                .or_else(|| kv.strip_prefix("%24deltatoken="))
                .or_else(|| kv.strip_prefix("%24skiptoken="))
        });
        let (since, offset) = match token {
            None => (0, 0),
            Some(token) => {
                let parts: Vec<u64> = token.split('.').filter_map(|p| p.parse().ok()).collect();
                if parts.len() != 3 || parts[0] < fake.token_generation {
                    return graph_error(
                        StatusCode::GONE,
                        "syncStateNotFound",
                        "The sync state generation is not found.",
                    );
                }
                (parts[1], parts[2] as usize)
            }
        };
        let generation = fake.token_generation.max(1);
        let key = (user.to_ascii_lowercase(), folder.to_ascii_lowercase());
        let changed: Vec<&StoredMail> = fake
            .folders
            .get(&key)
            .map(|mails| {
                mails
                    .iter()
                    .filter(|m| m.change > since && (since > 0 || !m.removed))
                    .collect()
            })
            .unwrap_or_default();
        let page: Vec<Value> = changed
            .iter()
            .skip(offset)
            .take(page_size)
            .map(|m| {
                if m.removed {
                    json!({"id": m.id, "@removed": {"reason": "deleted"}})
                } else {
                    json!({"id": m.id, "isRead": m.is_read, "receivedDateTime": "2026-11-28T10:00:00Z"})
                }
            })
            .collect();
        let base = format!(
            "http://127.0.0.1:{}/v1.0/users/{user}/mailFolders/{folder}/messages/delta",
            fake.port
        );
        let mut body = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(message)", "value": page});
        if offset + page_size < changed.len() {
            body["@odata.nextLink"] = json!(format!(
                "{base}?$skiptoken={generation}.{since}.{}",
                offset + page_size
            ));
        } else {
            let last = fake.changes;
            body["@odata.deltaLink"] = json!(format!("{base}?$deltatoken={generation}.{last}.0"));
        }
        axum::Json(body).into_response()
    })();
    leave(&state, admitted, response).await
}

/// `GET /users/{id}/messages/{id}/$value`: the message's MIME ("Get MIME content of a message").
async fn graph_mime(
    State(state): State<Shared>,
    method: Method,
    headers: HeaderMap,
    Path((user, id)): Path<(String, String)>,
) -> Response {
    let admitted = match admit(
        &state,
        &method,
        format!("/users/{user}/messages/{id}/$value"),
        &headers,
        &user,
        0,
    ) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    let response = {
        let fake = state.lock().unwrap();
        let key = user.to_ascii_lowercase();
        let found = fake
            .folders
            .iter()
            .filter(|((mailbox, _), _)| *mailbox == key)
            .flat_map(|(_, mails)| mails.iter())
            .find(|m| m.id == id && !m.removed);
        match found {
            Some(mail) => ([("content-type", "text/plain")], mail.mime.clone()).into_response(),
            None => no_draft(),
        }
    };
    leave(&state, admitted, response).await
}

/// The answer to a delegated grant: an access token for the user, a new refresh token when the
/// scope has `offline_access`, and an ID token naming the user (its signature is not what a
/// client that got it straight from the token endpoint checks; the fake's is empty).
fn delegated_tokens(fake: &mut Fake, client: &str, user: &str, scope: &str) -> Response {
    let access = format!("fake-user-{}", uuid::Uuid::new_v4().simple());
    let ttl = fake.token_ttl;
    fake.tokens.insert(
        access.clone(),
        (
            client.to_owned(),
            Some(user.to_owned()),
            Instant::now() + ttl,
        ),
    );
    let mut body = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": ttl.as_secs(),
        "ext_expires_in": ttl.as_secs(),
        "access_token": access,
    });
    if scope.split(' ').any(|s| s == "offline_access") {
        let refresh = format!("fake-refresh-{}", uuid::Uuid::new_v4().simple());
        fake.refresh_tokens
            .insert(refresh.clone(), (client.to_owned(), user.to_owned()));
        body["refresh_token"] = json!(refresh);
    }
    if scope.split(' ').any(|s| s == "openid") {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        body["id_token"] = json!(format!(
            "{}.{}.",
            b64(json!({"typ": "JWT", "alg": "none"})),
            b64(
                json!({"aud": client, "tid": fake.tenant_id, "preferred_username": user, "email": user, "oid": uuid::Uuid::new_v4()})
            )
        ));
    }
    axum::Json(body).into_response()
}

/// `GET /{tenant}/oauth2/v2.0/authorize` ("Microsoft identity platform and OAuth 2.0 authorization
/// code flow", "Request an authorization code"). The fake has no sign-in page: the user named by
/// `login_hint` (a mailbox of the tenant) signs in and, when the application has consent, is sent
/// back to `redirect_uri` with `code` and `state`; without consent the answer is
/// `error=consent_required` with AADSTS65001. PKCE with S256 is required here.
async fn authorize(
    State(state): State<Shared>,
    Path(tenant): Path<String>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> Response {
    let mut fake = state.lock().unwrap();
    if !known_tenant(&fake, &tenant) {
        return unknown_tenant(&tenant);
    }
    let client_id = query.get("client_id").cloned().unwrap_or_default();
    let Some(client) = fake.clients.get(&client_id).cloned() else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
            ),
        );
    };
    let redirect = query.get("redirect_uri").cloned().unwrap_or_default();
    let state_param = query.get("state").cloned().unwrap_or_default();
    let user = query
        .get("login_hint")
        .map(|u| u.to_ascii_lowercase())
        .or_else(|| fake.signed_in.clone())
        .unwrap_or_default();
    let back = |params: &[(&str, &str)]| {
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect();
        let separator = if redirect.contains('?') { '&' } else { '?' };
        (
            StatusCode::FOUND,
            [(
                "location",
                format!("{redirect}{separator}{}", query.join("&")),
            )],
        )
            .into_response()
    };
    if !fake.mailboxes.contains_key(&user) {
        return back(&[
            ("error", "login_required"),
            (
                "error_description",
                "AADSTS50058: A silent sign-in request was sent but no user is signed in.",
            ),
            ("state", &state_param),
        ]);
    }
    if !client.consented {
        return back(&[
            ("error", "consent_required"),
            (
                "error_description",
                &format!(
                    "AADSTS65001: The user or administrator has not consented to use the application with ID '{client_id}'."
                ),
            ),
            ("state", &state_param),
        ]);
    }
    let challenge = query.get("code_challenge").cloned().unwrap_or_default();
    if query.get("code_challenge_method").map(String::as_str) != Some("S256")
        || challenge.is_empty()
    {
        return back(&[
            ("error", "invalid_request"),
            (
                "error_description",
                "AADSTS9002325: Proof Key for Code Exchange is required for cross-origin authorization code redemption.",
            ),
            ("state", &state_param),
        ]);
    }
    let code = format!("fake-code-{}", uuid::Uuid::new_v4().simple());
    fake.codes.insert(
        code.clone(),
        PendingCode {
            client: client_id,
            user,
            redirect_uri: redirect.clone(),
            challenge,
            scope: query.get("scope").cloned().unwrap_or_default(),
        },
    );
    back(&[
        ("code", &code),
        ("state", &state_param),
        ("session_state", "fake-session"),
    ])
}

fn form_encode(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}
