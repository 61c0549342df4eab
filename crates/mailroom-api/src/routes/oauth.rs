//! Users connect their own mailboxes (MISSION C1): `GET /v1/oauth/connect` starts an
//! authorization-code flow with PKCE (RFC 6749 §4.1, RFC 7636) for the caller's mailbox (or, for an
//! admin, a queue's); the browser goes through `/oauth/start/{state}` (which ties the flow to it
//! with a cookie) to the provider, and back to `/oauth/callback`, which stores the refresh token
//! sealed and bound to its registration, and tests and enables the mailbox.

use crate::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use crate::routes::html::{self, escape};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mailroom_connect::oauth::TokenClient;
use mailroom_core::access::PermissionSet;
use mailroom_core::mailbox::{AuthType, MailboxKind};
use mailroom_core::oauth::{OAuthProvider, entra_advice, form_encode, pkce_challenge};
use mailroom_store::{MailboxRecord, OAuthState, OAuthTarget};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

/// How long an authorization request may take.
const STATE_TTL_MS: i64 = 10 * 60 * 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(connect))
}

/// The routes the browser reaches without a bearer token.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(callback))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        html::page(
            title,
            &format!("{body}<p><a href=\"/console/mailboxes\">Back to mailroom</a></p>"),
        ),
    )
        .into_response()
}

fn cookie_name(state: &str) -> String {
    format!("mailroom_oauth_{}", &state[..state.len().min(16)])
}

/// Where the browser reaches mailroom: `public_url`, else the Host the request came to.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.settings.public_url {
        return public.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    format!("{}://{host}", if https { "https" } else { "http" })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ConnectQuery {
    /// The app registration; default the one the mailbox's server profile names.
    pub registration: Option<Uuid>,
    /// `mailbox` (SMTP and IMAP with XOAUTH2).
    pub purpose: Option<String>,
    /// Another mailbox than one's own (a queue's): needs the email-setup permission set.
    pub mailbox: Option<Uuid>,
    /// An account instead (SMTP with XOAUTH2, or Microsoft 365 with delegated permission): needs
    /// email-setup. The person who signs in is the identity the account sends as (or a delegate of
    /// its mailbox).
    pub account: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectView {
    /// Open this in the browser of the person who signs in.
    pub authorization_url: String,
    /// The mailbox connected (or, for an account, the account).
    pub mailbox_id: Uuid,
    pub registration_id: Uuid,
    pub expires_at: String,
}

/// Start connecting a mailbox with OAuth 2.0: the answer names the URL to open in a browser
/// (a browser asking for HTML is sent there at once). The person signs in at the provider; the
/// callback stores the refresh token and tests and enables the mailbox.
#[utoipa::path(get, path = "/v1/oauth/connect", tag = "oauth", params(ConnectQuery),
    responses((status = 200, body = ConnectView), (status = 303, description = "a browser is sent to the sign-in"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn connect(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ConnectQuery>,
) -> ApiResult<Response> {
    if let Some(purpose) = query.purpose.as_deref()
        && purpose != "mailbox"
    {
        return Err(ApiError::invalid(
            "purpose",
            format!("{purpose:?}: connecting is available for mailboxes (purpose=mailbox)"),
        ));
    }
    if let Some(account) = query.account {
        return connect_account(&state, &principal, &headers, account).await;
    }
    let mailbox: MailboxRecord = match query.mailbox {
        Some(id) => {
            let mailbox = state.store.mailbox(id).await?;
            let setup = principal.user.grants.allows(&PermissionSet::EmailSetup);
            if mailbox.user_id != Some(principal.user.id) && !setup {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "mailbox_not_yours",
                    "connecting another user's or a queue's mailbox needs the email-setup permission set",
                ));
            }
            mailbox
        }
        None => state
            .store
            .mailbox_of_user(principal.user.id)
            .await?
            .ok_or_else(|| {
                ApiError::not_found("you have no mailbox yet; an admin gives you one")
            })?,
    };
    let profile = match mailbox.profile_id {
        Some(id) => state.store.server_profile(id).await?,
        None => {
            return Err(ApiError::invalid(
                "mailbox",
                "the mailbox has no server profile; an admin assigns one whose sign-in is oauth2",
            ));
        }
    };
    if profile.auth_type != AuthType::Oauth2 {
        return Err(ApiError::invalid(
            "mailbox",
            format!(
                "the mailbox's server profile {} signs in with passwords, not OAuth",
                profile.name
            ),
        ));
    }
    let registration_id = match (query.registration, profile.endpoints.app_registration_id) {
        (Some(asked), Some(named)) if asked != named => {
            return Err(ApiError::invalid(
                "registration",
                "the mailbox's server profile names another app registration",
            ));
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            return Err(ApiError::invalid(
                "registration",
                "name the app registration to connect with",
            ));
        }
    };
    let registration = state.store.app_registration(registration_id).await?;
    let oauth_state = OAuthState {
        id: random_token(),
        user_id: principal.user.id,
        registration_id,
        target: OAuthTarget::Mailbox,
        mailbox_id: mailbox.id,
        verifier: random_token(),
        binding: random_token(),
        expires_at_ms: mailroom_store::now_ms() + STATE_TTL_MS,
    };
    state.store.create_oauth_state(&oauth_state).await?;
    audit(
        &state,
        &principal,
        "mailbox.connect_started",
        "mailbox",
        &mailbox.id.to_string(),
        None,
        Some(&serde_json::json!({"registration_id": registration_id, "registration": registration.settings.name})),
    )
    .await?;
    answer_start(&state, &headers, &oauth_state)
}

/// The link to the browser's first stop: as JSON, or a redirect for a browser asking for HTML.
fn answer_start(
    state: &AppState,
    headers: &HeaderMap,
    oauth_state: &OAuthState,
) -> ApiResult<Response> {
    let url = format!(
        "{}/oauth/start/{}",
        base_url(state, headers),
        oauth_state.id
    );
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response());
    }
    Ok(axum::Json(ConnectView {
        authorization_url: url,
        mailbox_id: oauth_state.mailbox_id,
        registration_id: oauth_state.registration_id,
        expires_at: crate::dto::rfc3339(oauth_state.expires_at_ms),
    })
    .into_response())
}

/// Starts connecting an account: an SMTP account that signs in with XOAUTH2, or a Microsoft 365
/// account with delegated permission.
async fn connect_account(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    id: Uuid,
) -> ApiResult<Response> {
    if !principal.user.grants.allows(&PermissionSet::EmailSetup) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_missing",
            "connecting an account needs the email-setup permission set",
        ));
    }
    let account = state.store.account(id).await?;
    let registration_id = account.options.app_registration_id.ok_or_else(|| {
        ApiError::invalid(
            "account",
            "the account names no app registration: give it app_registration_id first",
        )
    })?;
    let oauth_state = OAuthState {
        id: random_token(),
        user_id: principal.user.id,
        registration_id,
        target: OAuthTarget::Account,
        mailbox_id: account.id,
        verifier: random_token(),
        binding: random_token(),
        expires_at_ms: mailroom_store::now_ms() + STATE_TTL_MS,
    };
    state.store.create_oauth_state(&oauth_state).await?;
    audit(
        state,
        principal,
        "account.connect_started",
        "account",
        &account.id.to_string(),
        None,
        Some(&serde_json::json!({"registration_id": registration_id})),
    )
    .await?;
    answer_start(state, headers, &oauth_state)
}

/// The browser's first stop: ties the flow to this browser (a cookie the callback checks) and
/// sends it on to the provider's sign-in.
#[utoipa::path(get, path = "/oauth/start/{state}", tag = "oauth", params(("state" = String, Path)),
    security(()),
    responses((status = 303, description = "to the provider's sign-in"), (status = 400, description = "an HTML page: the link expired")))]
async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let expired = || {
        page(
            StatusCode::BAD_REQUEST,
            "This sign-in link has expired",
            "<p>Links to connect a mailbox work once and for ten minutes. Start again from mailroom.</p>",
        )
    };
    let Ok(Some(flow)) = state.store.peek_oauth_state(&id).await else {
        return expired();
    };
    let Ok(registration) = state.store.app_registration(flow.registration_id).await else {
        return expired();
    };
    let endpoints = match state.engine.oauth().endpoints(&registration).await {
        Ok(endpoints) => endpoints,
        Err(why) => {
            return page(
                StatusCode::BAD_GATEWAY,
                "The sign-in service cannot be reached",
                &format!("<p>{}</p>", escape(&why)),
            );
        }
    };
    let Some(authorize) = endpoints.authorization else {
        return page(
            StatusCode::BAD_GATEWAY,
            "The sign-in service names no authorization endpoint",
            "<p>Check the app registration.</p>",
        );
    };
    let mailbox = match flow.target {
        OAuthTarget::Mailbox => state.store.mailbox(flow.mailbox_id).await.ok(),
        OAuthTarget::Account => None,
    };
    let account = match flow.target {
        OAuthTarget::Account => state.store.account(flow.mailbox_id).await.ok(),
        OAuthTarget::Mailbox => None,
    };
    let kind = match mailbox.as_ref().and_then(|m| m.profile_id) {
        Some(profile) => state
            .store
            .server_profile(profile)
            .await
            .map(|p| p.kind)
            .unwrap_or(mailroom_core::mailbox::ProfileKind::ImapSmtp),
        None => mailroom_core::mailbox::ProfileKind::ImapSmtp,
    };
    // The sign-in must say who signed in (the ID token's email): `openid email` ride along with the
    // scopes of the mailbox's use.
    let mut scopes = match &account {
        Some(account)
            if account.connector == mailroom_core::account::ConnectorKind::Microsoft365 =>
        {
            registration.settings.scopes.graph.clone()
        }
        Some(_) => registration.settings.scopes.mail.clone(),
        None => mailroom_engine::oauth::mailbox_scopes(&registration, kind).to_vec(),
    };
    for needed in ["openid", "email"] {
        if !scopes.iter().any(|s| s == needed) {
            scopes.push(needed.to_owned());
        }
    }
    let scopes = scopes.join(" ");
    let settings = &registration.settings;
    let mut url = format!(
        "{authorize}{}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&code_challenge={}&code_challenge_method=S256&prompt=consent",
        if authorize.contains('?') { '&' } else { '?' },
        form_encode(&settings.client_id),
        form_encode(&settings.redirect_uri),
        form_encode(&scopes),
        form_encode(&flow.id),
        pkce_challenge(&flow.verifier),
    );
    let hint = match (&mailbox, &account) {
        (Some(mailbox), _) if mailbox.kind == MailboxKind::User => {
            Some(mailbox.email_address.to_string())
        }
        // An SMTP account signs in as itself; a Microsoft 365 account with delegated permission
        // is connected by a delegate of its mailbox, who signs in as themselves.
        (_, Some(account))
            if account.connector != mailroom_core::account::ConnectorKind::Microsoft365 =>
        {
            Some(
                account
                    .username
                    .clone()
                    .unwrap_or_else(|| account.email_address.to_string()),
            )
        }
        _ => None,
    };
    if let Some(hint) = hint {
        url.push_str(&format!("&login_hint={}", form_encode(&hint)));
    }
    let secure = base_url(&state, &headers).starts_with("https://");
    let cookie = format!(
        "{}={}; Path=/oauth; HttpOnly; SameSite=Lax; Max-Age=600{}",
        cookie_name(&flow.id),
        flow.binding,
        if secure { "; Secure" } else { "" }
    );
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, url), (header::SET_COOKIE, cookie)],
    )
        .into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The claims of an ID token received straight from the token endpoint over the connection
/// mailroom opened: OpenID Connect Core §3.1.3.7 lets the client rely on that connection instead of
/// the signature.
fn id_token_identity(id_token: Option<&str>) -> Option<String> {
    let payload = id_token?.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?)
            .ok()?;
    ["email", "preferred_username", "upn", "sub"]
        .iter()
        .find_map(|claim| claims[*claim].as_str().map(str::to_owned))
}

/// Where the provider sends the browser back: the code is exchanged (with the PKCE verifier),
/// the refresh token stored sealed, and the mailbox tested and enabled. Answers an HTML page.
#[utoipa::path(get, path = "/oauth/callback", tag = "oauth", params(CallbackQuery),
    security(()),
    responses((status = 200, description = "an HTML page: the mailbox is connected (and the test's outcome)"),
        (status = 400, description = "an HTML page: expired, refused or another browser")))]
async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Response {
    let Some(id) = query.state.as_deref() else {
        return page(
            StatusCode::BAD_REQUEST,
            "Nothing to connect",
            "<p>The provider's answer names no request.</p>",
        );
    };
    let flow = match state.store.take_oauth_state(id).await {
        Ok(Some(flow)) => flow,
        _ => {
            return page(
                StatusCode::BAD_REQUEST,
                "This sign-in has expired or was used already",
                "<p>Start connecting the mailbox again from mailroom.</p>",
            );
        }
    };
    let cookie = format!("{}={}", cookie_name(&flow.id), flow.binding);
    let same_browser = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .any(|c| c.trim() == cookie);
    if !same_browser {
        return page(
            StatusCode::BAD_REQUEST,
            "This sign-in was started in another browser",
            "<p>For your safety the mailbox is connected only in the browser that opened the link from mailroom. Start again there.</p>",
        );
    }
    if let Some(error) = query.error.as_deref() {
        let description = query.error_description.clone().unwrap_or_default();
        let advice = mailroom_core::oauth::aadsts_code(&description)
            .and_then(entra_advice)
            .map(|a| format!("<p>{}</p>", escape(a)))
            .unwrap_or_default();
        return page(
            StatusCode::BAD_REQUEST,
            "The mailbox was not connected",
            &format!(
                "<p>The sign-in service answered <code>{}</code>: {}</p>{advice}",
                escape(error),
                escape(&description)
            ),
        );
    }
    let Some(code) = query.code.as_deref() else {
        return page(
            StatusCode::BAD_REQUEST,
            "The mailbox was not connected",
            "<p>The provider sent no code.</p>",
        );
    };
    if flow.target == OAuthTarget::Account {
        return match finish_account(&state, &flow, code).await {
            Ok((name, tested)) => page(
                StatusCode::OK,
                &format!("Account {name} connected"),
                &format!("<p>{}</p>", escape(&tested)),
            ),
            Err(why) => page(
                StatusCode::BAD_REQUEST,
                "The account was not connected",
                &format!("<p>{}</p>", escape(&why)),
            ),
        };
    }
    match finish(&state, &flow, code).await {
        Ok(mailbox) => {
            let outcome = if mailbox.enabled {
                "<p>It was tested and is enabled: mailroom sends and synchronizes mail with it now.</p>".to_owned()
            } else {
                format!(
                    "<p>Its test did not pass: {}</p>",
                    escape(
                        mailbox
                            .last_error
                            .as_deref()
                            .unwrap_or("see the mailbox in mailroom")
                    )
                )
            };
            page(
                StatusCode::OK,
                &format!("Mailbox {} connected", mailbox.email_address),
                &outcome,
            )
        }
        Err(why) => page(
            StatusCode::BAD_REQUEST,
            "The mailbox was not connected",
            &format!("<p>{}</p>", escape(&why)),
        ),
    }
}

/// Exchanges the code and connects the mailbox; the error is what the person should read.
/// Exchanges the code (with the flow's PKCE verifier) at the registration's token endpoint.
async fn exchange(
    state: &AppState,
    flow: &OAuthState,
    code: &str,
) -> Result<
    (
        mailroom_store::AppRegistration,
        mailroom_connect::oauth::TokenGrant,
    ),
    String,
> {
    let registration = state
        .store
        .app_registration(flow.registration_id)
        .await
        .map_err(|e| format!("the app registration is gone: {e}"))?;
    let oauth = state.engine.oauth();
    let endpoints = oauth.endpoints(&registration).await?;
    let token_endpoint = endpoints
        .token
        .clone()
        .ok_or("the provider names no token endpoint")?;
    let secret = state
        .store
        .app_registration_secret(registration.id)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let settings = &registration.settings;
    let grant = oauth
        .client()?
        .exchange_code(
            &TokenClient {
                token_endpoint: &token_endpoint,
                client_id: &settings.client_id,
                client_secret: &secret,
                auth: mailroom_engine::oauth::client_auth(
                    &registration,
                    endpoints.discovery.as_ref(),
                ),
            },
            code,
            &settings.redirect_uri,
            &flow.verifier,
        )
        .await
        .map_err(|error| {
            let advice = error
                .codes
                .iter()
                .find_map(|c| entra_advice(*c))
                .map(|a| format!(" {a}"))
                .unwrap_or_default();
            format!("the sign-in service refused the code: {error}.{advice}")
        })?;
    if grant.refresh_token.is_none() {
        return Err("the sign-in service issued no refresh token: the registration's scopes need offline_access".into());
    }
    Ok((registration, grant))
}

/// Connects an account and tests it; (its name, the test's outcome in words).
async fn finish_account(
    state: &AppState,
    flow: &OAuthState,
    code: &str,
) -> Result<(String, String), String> {
    let (registration, grant) = exchange(state, flow, code).await?;
    let account = state
        .store
        .account(flow.mailbox_id)
        .await
        .map_err(|e| e.to_string())?;
    let identity = id_token_identity(grant.id_token.as_deref())
        .or_else(|| account.username.clone())
        .unwrap_or_else(|| account.email_address.to_string());
    let refresh = grant.refresh_token.clone().unwrap_or_default();
    let connected = state
        .store
        .connect_account_oauth(account.id, registration.id, &identity, &refresh)
        .await
        .map_err(|e| e.to_string())?;
    state
        .engine
        .oauth()
        .remember_mailbox_token(account.id, &grant.access_token, grant.expires_in)
        .await;
    state.engine.accounts_changed();
    tracing::info!(event = "account_connected", account = %account.id, registration = %registration.id, user = %flow.user_id, "an account was connected with OAuth 2.0");
    let tested = match state.engine.test_account(&connected).await {
        Ok(text) => format!("It signs in as {identity}; its test passed: {text}"),
        Err(error) => format!(
            "It signs in as {identity}, but its test failed: {}",
            error.message
        ),
    };
    Ok((connected.name, tested))
}

async fn finish(state: &AppState, flow: &OAuthState, code: &str) -> Result<MailboxRecord, String> {
    let (registration, grant) = exchange(state, flow, code).await?;
    let oauth = state.engine.oauth();
    let settings = &registration.settings;
    let refresh = grant.refresh_token.clone().unwrap_or_default();
    let mailbox = state
        .store
        .mailbox(flow.mailbox_id)
        .await
        .map_err(|e| e.to_string())?;
    let identity = id_token_identity(grant.id_token.as_deref());
    // A user's own mailbox is connected only by signing in as that mailbox: a link passed to
    // someone else cannot connect their mailbox to this user.
    if mailbox.kind == MailboxKind::User
        && !identity
            .as_deref()
            .is_some_and(|i| i.eq_ignore_ascii_case(mailbox.email_address.as_str()))
    {
        return Err(format!(
            "you signed in as {}, but this mailbox is {}: sign in with that mailbox's account",
            identity
                .as_deref()
                .unwrap_or("an account without an email address"),
            mailbox.email_address
        ));
    }
    // XOAUTH2 logs in as the mailbox: Exchange takes the shared mailbox's address with a delegate's
    // token; other providers know only the account that signed in.
    let username = match (mailbox.kind, settings.provider) {
        (MailboxKind::Queue, OAuthProvider::MicrosoftEntra) => mailbox.email_address.to_string(),
        _ => identity.unwrap_or_else(|| mailbox.email_address.to_string()),
    };
    state
        .store
        .connect_mailbox_oauth(mailbox.id, registration.id, &username, &refresh)
        .await
        .map_err(|e| e.to_string())?;
    oauth
        .remember_mailbox_token(mailbox.id, &grant.access_token, grant.expires_in)
        .await;
    tracing::info!(event = "mailbox_connected", mailbox = %mailbox.id, registration = %registration.id, user = %flow.user_id, "a mailbox was connected with OAuth 2.0");
    // As when users test their own mailbox: its address is approved on the way when they may.
    let approve = match (
        state.store.user(flow.user_id).await,
        state.store.email_settings().await,
    ) {
        (Ok(user), Ok(settings)) if mailbox.user_id == Some(user.id) => {
            let me = user.id.to_string();
            mailroom_core::mailbox::may_approve(
                &mailroom_core::mailbox::Approver {
                    user_id: &me,
                    contact_email: user.contact_email.as_ref(),
                    grants: &user.grants,
                },
                &mailroom_core::mailbox::ApprovalTarget {
                    kind: mailbox.kind,
                    user_id: Some(&me),
                    email_address: &mailbox.email_address,
                },
                &settings,
            )
            .is_ok()
        }
        _ => false,
    };
    state
        .engine
        .mailboxes()
        .test_mailbox(mailbox.id, approve)
        .await
        .map_err(|e| format!("the mailbox was connected, but its test could not run: {e}"))
}
