//! Users and the audit log, as the API lists them for the signed-in user.

use crate::{Shared, signed_in};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

/// A page that shows one API list: `path` into `template`, or that the user may not see it.
async fn listing(
    state: Shared,
    headers: HeaderMap,
    path: &str,
    template: &str,
    title: &str,
) -> Response {
    let State(console) = state;
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, path).await;
    console.render(
        template,
        json!({"title": title, "user": current.user.name, "csrf": current.csrf(),
               "allowed": status == StatusCode::OK, "items": answer}),
    )
}

pub(crate) async fn users(state: Shared, headers: HeaderMap) -> Response {
    listing(state, headers, "/v1/users", "users.html", "Users").await
}

pub(crate) async fn audit(state: Shared, headers: HeaderMap) -> Response {
    listing(
        state,
        headers,
        "/v1/audit?limit=100",
        "audit.html",
        "Audit log",
    )
    .await
}
