//! A fake of Microsoft's identity platform (and, as it grows, Microsoft Graph) for the parts of
//! mailroom that talk to Microsoft 365, which cannot run here. Every behaviour it has is one the
//! Microsoft documentation describes; the source is written next to each rule. It serves on a
//! loopback port: the authority is `http://127.0.0.1:<port>`.

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
    /// Issued access tokens: token → client id.
    tokens: HashMap<String, String>,
    token_requests: usize,
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
        let state: Shared = Arc::new(Mutex::new(Fake {
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
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { port, state, task })
    }

    /// `http://127.0.0.1:<port>`, in place of `https://login.microsoftonline.com`.
    pub fn authority(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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
            fake.tokens.insert(access_token.clone(), client_id);
            // The successful response: token_type, expires_in, ext_expires_in, access_token.
            axum::Json(json!({
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": access_token,
            }))
            .into_response()
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
