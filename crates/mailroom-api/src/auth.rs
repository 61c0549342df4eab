//! Bearer-token authentication for every `/v1` route, and the permission each route needs.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use mailroom_core::access::PermissionSet;
use mailroom_store::{User, Visibility};

/// Who is calling: the user behind the presented token.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub user: User,
}

impl Principal {
    /// The id written as the author of what this principal creates.
    pub fn author_id(&self) -> String {
        self.user.id.to_string()
    }

    /// What this principal may see of the mail, under their view policy.
    pub async fn visibility(&self, state: &AppState) -> Result<Visibility, ApiError> {
        // email-admin grants everything, including seeing all mail.
        let policy = if self.user.grants.allows(&PermissionSet::EmailAdmin) {
            mailroom_core::access::ViewPolicy::All
        } else {
            state.store.view_policy(self.user.id).await?
        };
        Ok(Visibility {
            viewer: self.author_id(),
            policy,
            readable_types: self.user.grants.readable_types(),
        })
    }
}

/// In the permission table: any user with a valid token; the handler decides the rest (a user's
/// own mailbox, jobs and alerts).
pub const SIGNED_IN: &str = "signed-in";

/// The permission set each route needs. Every `/v1` route must be listed: a route without an entry is
/// refused (and the test suite, which walks the OpenAPI document, fails).
pub const ROUTE_PERMISSIONS: &[(&str, &str, &str)] = &[
    ("GET", "/v1/accounts", "email-setup"),
    ("GET", "/v1/nodes", "email-admin"),
    ("POST", "/v1/accounts", "email-setup"),
    ("GET", "/v1/accounts/{id}", "email-setup"),
    ("PATCH", "/v1/accounts/{id}", "email-setup"),
    ("DELETE", "/v1/accounts/{id}", "email-setup"),
    ("POST", "/v1/accounts/{id}/test", "email-setup"),
    ("GET", "/v1/scenarios", "email-send"),
    ("PUT", "/v1/scenarios/{name}", "email-setup"),
    ("DELETE", "/v1/scenarios/{name}", "email-setup"),
    ("GET", "/v1/scenarios/{name}/attachments", "email-send"),
    (
        "PUT",
        "/v1/scenarios/{name}/attachments/{attachment_id}",
        "email-setup",
    ),
    (
        "DELETE",
        "/v1/scenarios/{name}/attachments/{attachment_id}",
        "email-setup",
    ),
    ("POST", "/v1/messages", "email-send"),
    ("GET", "/v1/messages/{id}", "email-send"),
    ("POST", "/v1/messages/{id}/retry", "email-send"),
    ("POST", "/v1/messages/{id}/cancel", "email-send"),
    ("POST", "/v1/messages/{id}/confirm", "email-send"),
    ("POST", "/v1/documents/send", "email-send"),
    ("GET", "/v1/sending-profiles", "email-send"),
    ("PUT", "/v1/sending-profiles/{name}", "email-setup"),
    ("PUT", "/v1/customers/{id}/sending-profile", "email-setup"),
    ("GET", "/v1/outbox", "email-send"),
    ("GET", "/v1/sent", "email-send"),
    ("GET", "/v1/records/{type}/{id}/messages", "email-send"),
    ("GET", "/v1/mailboxes/{id}/messages", "email-send"),
    ("GET", "/v1/mailboxes/{id}/sync", "email-setup"),
    ("GET", "/v1/inbound/{id}", "email-send"),
    ("GET", "/v1/inbound/{id}/raw", "email-send"),
    ("GET", "/v1/inbound/{id}/parts/{part}", "email-send"),
    ("PUT", "/v1/inbound/{id}/related-records", "email-send"),
    ("DELETE", "/v1/inbound/{id}/related-records", "email-send"),
    ("GET", "/v1/conversations/{id}", "email-send"),
    ("POST", "/v1/inbound/{id}/reply", "email-send"),
    ("POST", "/v1/inbound/{id}/reply-all", "email-send"),
    ("POST", "/v1/inbound/{id}/forward", "email-send"),
    ("GET", "/v1/settings/correlation", "email-setup"),
    ("PUT", "/v1/settings/correlation", "email-setup"),
    ("GET", "/v1/contacts/{id}", "email-send"),
    ("PUT", "/v1/contacts/{id}", "email-send"),
    ("DELETE", "/v1/contacts/{id}", "email-send"),
    ("GET", "/v1/users", "user-admin"),
    ("POST", "/v1/users", "user-admin"),
    ("GET", "/v1/users/{id}", "user-admin"),
    ("PATCH", "/v1/users/{id}", "user-admin"),
    ("GET", "/v1/teams", "user-admin"),
    ("POST", "/v1/teams", "user-admin"),
    ("PATCH", "/v1/teams/{id}", "user-admin"),
    ("GET", "/v1/server-profiles", "email-setup"),
    ("POST", "/v1/server-profiles", "email-setup"),
    ("GET", "/v1/server-profiles/{id}", "email-setup"),
    ("PATCH", "/v1/server-profiles/{id}", "email-setup"),
    ("DELETE", "/v1/server-profiles/{id}", "email-setup"),
    (
        "POST",
        "/v1/server-profiles/{id}/test-mailboxes",
        "email-setup",
    ),
    ("GET", "/v1/settings/email", "email-setup"),
    ("PUT", "/v1/settings/email", "email-setup"),
    ("GET", "/v1/queues", "email-setup"),
    ("POST", "/v1/queues", "email-setup"),
    // A user's own mailbox, jobs and alerts: the handlers check ownership (or email-setup).
    ("GET", "/v1/mailboxes", SIGNED_IN),
    ("PATCH", "/v1/mailboxes", "email-setup"),
    ("POST", "/v1/mailboxes/apply-defaults", "email-setup"),
    ("GET", "/v1/mailboxes/{id}", SIGNED_IN),
    ("PATCH", "/v1/mailboxes/{id}", SIGNED_IN),
    // Approval has its own rules (MISSION B4), applied by the handler.
    ("POST", "/v1/mailboxes/{id}/approve", SIGNED_IN),
    ("POST", "/v1/mailboxes/{id}/reject", SIGNED_IN),
    ("POST", "/v1/mailboxes/{id}/test", SIGNED_IN),
    ("GET", "/v1/jobs/{id}", SIGNED_IN),
    ("GET", "/v1/alerts", SIGNED_IN),
    ("POST", "/v1/alerts/{id}/dismiss", SIGNED_IN),
    ("GET", "/v1/users/{id}/tokens", "email-admin"),
    ("POST", "/v1/users/{id}/tokens", "email-admin"),
    ("DELETE", "/v1/users/{id}/tokens/{token_id}", "email-admin"),
    ("GET", "/v1/view-policies", "email-setup"),
    ("PUT", "/v1/view-policies/{user}", "email-setup"),
    ("GET", "/v1/audit", "email-admin"),
    ("POST", "/v1/attachments", "email-send"),
    ("GET", "/v1/templates", "email-send"),
    ("GET", "/v1/templates/{id}", "email-send"),
    ("PUT", "/v1/templates/{id}", "email-setup"),
    ("POST", "/v1/templates/{id}/preview", "email-send"),
    ("GET", "/v1/attachments/{id}", "email-send"),
    ("GET", "/v1/stats", "email-setup"),
    // Users connect their own mailbox; another's needs email-setup (checked by the handler).
    ("GET", "/v1/oauth/connect", SIGNED_IN),
    ("GET", "/v1/app-registrations", "email-setup"),
    ("POST", "/v1/app-registrations", "email-setup"),
    ("GET", "/v1/app-registrations/{id}", "email-setup"),
    ("PATCH", "/v1/app-registrations/{id}", "email-setup"),
    ("DELETE", "/v1/app-registrations/{id}", "email-setup"),
    ("POST", "/v1/app-registrations/{id}/verify", "email-setup"),
    ("GET", "/v1/dkim/keys", "email-setup"),
    ("POST", "/v1/dkim/keys", "email-setup"),
    ("GET", "/v1/dkim/keys/{id}", "email-setup"),
    ("DELETE", "/v1/dkim/keys/{id}", "email-setup"),
    ("POST", "/v1/dkim/keys/{id}/activate", "email-setup"),
    ("GET", "/v1/unsubscribes", "email-setup"),
    ("DELETE", "/v1/unsubscribes/{list}/{address}", "email-setup"),
    ("GET", "/v1/suppressions", "email-setup"),
    ("PUT", "/v1/suppressions/{address}", "email-setup"),
    ("DELETE", "/v1/suppressions/{address}", "email-setup"),
    ("GET", "/v1/webhooks", "email-admin"),
    ("POST", "/v1/webhooks", "email-admin"),
    ("GET", "/v1/webhooks/{id}", "email-admin"),
    ("PATCH", "/v1/webhooks/{id}", "email-admin"),
    ("DELETE", "/v1/webhooks/{id}", "email-admin"),
    ("POST", "/v1/webhooks/{id}/rotate-secret", "email-admin"),
    ("GET", "/v1/webhooks/{id}/deliveries", "email-admin"),
    (
        "POST",
        "/v1/webhooks/{id}/events/{event_id}/replay",
        "email-admin",
    ),
    ("GET", "/v1/webhooks/event-types", SIGNED_IN),
    ("GET", "/v1/addin/manifest.xml", SIGNED_IN),
    ("GET", "/v1/addin/me", SIGNED_IN),
    ("POST", "/v1/addin/me", SIGNED_IN),
    ("GET", "/v1/addin/users", "email-setup"),
    ("GET", "/v1/addin/settings", "email-setup"),
    ("PUT", "/v1/addin/settings", "email-setup"),
    ("POST", "/v1/addin/deploy", "email-setup"),
    // The pane's calls: the handlers refuse users who are not eligible with the app's own words.
    ("POST", "/v1/addin/lookup", SIGNED_IN),
    ("PUT", "/v1/addin/regarding", SIGNED_IN),
    ("DELETE", "/v1/addin/regarding", SIGNED_IN),
];

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Logs a refused token with the peer's address, at most once every ten seconds, counting the ones
/// not logged in between (a client guessing tokens must not flood the log).
fn log_failed_authentication(peer: Option<&str>, path: &str) {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    static LOGGED_AT_MS: AtomicI64 = AtomicI64::new(0);
    static NOT_LOGGED: AtomicU64 = AtomicU64::new(0);
    let now = mailroom_store::now_ms();
    let last = LOGGED_AT_MS.load(Ordering::Acquire);
    if now - last >= 10_000
        && LOGGED_AT_MS
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    {
        let also = NOT_LOGGED.swap(0, Ordering::AcqRel);
        tracing::warn!(
            event = "api_authentication_failed",
            peer = peer.unwrap_or("unknown"),
            path,
            refused_since_last_line = also,
            "a request presented an unknown, revoked or expired token"
        );
    } else {
        NOT_LOGGED.fetch_add(1, Ordering::AcqRel);
    }
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let Some(presented) = presented else {
        return unauthorized("send an API token as 'Authorization: Bearer <token>'");
    };
    match state.store.authenticate_token(&presented).await {
        Ok(Some((token, user))) => {
            request.extensions_mut().insert(Principal {
                token_id: token.id.to_string(),
                user,
            });
            next.run(request).await
        }
        Ok(None) => {
            let peer = request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.to_string());
            log_failed_authentication(peer.as_deref(), request.uri().path());
            unauthorized("the API token is unknown, revoked or expired, or its user is disabled")
        }
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Refuses the request unless the principal holds the permission set the matched route needs.
pub async fn require_permission(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let Some(path) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return ApiError::internal("a route without a matched path reached the permission check")
            .into_response();
    };
    // HEAD is answered by the GET handler (without the body), so it needs what GET needs.
    let looked_up = if method == "HEAD" { "GET" } else { &method };
    let Some((_, _, needed)) = ROUTE_PERMISSIONS
        .iter()
        .find(|(m, p, _)| *m == looked_up && *p == path)
    else {
        if ROUTE_PERMISSIONS.iter().any(|(_, p, _)| *p == path) {
            // The path exists but not with this method: the router answers 405 with `Allow`.
            // (The table lists exactly the routes; a test walks the OpenAPI document to keep it so.)
            return next.run(request).await;
        }
        return ApiError::internal(format!(
            "{method} {path} has no entry in the permission table"
        ))
        .into_response();
    };
    let Some(principal) = request.extensions().get::<Principal>() else {
        return unauthorized("send an API token as 'Authorization: Bearer <token>'");
    };
    if *needed == SIGNED_IN {
        return next.run(request).await;
    }
    let needed: PermissionSet = needed
        .parse()
        .expect("the permission table names valid permission sets");
    if !principal.user.grants.allows(&needed) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_missing",
            format!(
                "{method} {path} needs the {needed} permission set, which user {:?} does not hold",
                principal.user.name
            ),
        )
        .into_response();
    }
    next.run(request).await
}
