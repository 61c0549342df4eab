//! Unauthenticated operational routes: health, Prometheus metrics, the OpenAPI document and its docs page.

use crate::AppState;
use crate::dto::Health;
use crate::error::ApiResult;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use utoipa::openapi::OpenApi;

/// Liveness and database reachability.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()), responses((status = 200, body = Health), (status = 503, body = Health, description = "`degraded`, with the reason (a full disk, the database unavailable)")))]
pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    // A write that failed for lack of space in the last ten seconds means degraded, whatever a
    // probe finds: a failed write frees what it had taken, so a small probe may fit while mail
    // does not. After that, a probe decides whether there is room again.
    if let Some((reason, recent)) = mailroom_store::storage::storage_full(10_000) {
        if !recent && state.blobs.has_room().await {
            mailroom_store::storage::clear_storage_full();
        } else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(Health {
                    status: "degraded".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    reason: Some(format!(
                        "storage full: new mail and changes are refused until space is freed ({reason})"
                    )),
                }),
            );
        }
    }
    match state.store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(Health {
                status: "ok".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                reason: None,
            }),
        ),
        Err(error) => {
            tracing::error!(%error, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(Health {
                    status: "degraded".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    reason: Some("the database is unavailable; see the server log".into()),
                }),
            )
        }
    }
}

/// Prometheus metrics; outbox depth per status is read from the store at each scrape.
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let counts = state.store.status_counts().await?;
    for status in mailroom_core::message::MessageStatus::ALL {
        let count = counts
            .iter()
            .find(|(s, _)| s == status)
            .map_or(0, |(_, n)| *n);
        metrics::gauge!("mailroom_outbox_messages", "status" => status.as_str()).set(count as f64);
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

/// A readable page generated from the OpenAPI document: every operation with its summary.
pub fn docs_page(openapi: &OpenApi) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>mailroom API</title><style>\
         body{font-family:system-ui,sans-serif;max-width:960px;margin:2rem auto;padding:0 1rem;color:#222}\
         code{background:#f3f3f3;padding:.1rem .3rem;border-radius:3px}.op{border-top:1px solid #ddd;padding:.6rem 0}\
         .m{display:inline-block;width:4.5rem;font-weight:bold;text-transform:uppercase}</style></head><body>\
         <h1>mailroom API</h1><p>Send <code>Authorization: Bearer &lt;token&gt;</code> on every <code>/v1</code> route. \
         Errors are JSON: <code>{\"code\", \"message\", \"field\"}</code>. The machine-readable document is \
         <a href=\"/openapi.json\">/openapi.json</a>.</p>",
    );
    for (path, item) in &openapi.paths.paths {
        let operations = [
            ("get", &item.get),
            ("post", &item.post),
            ("put", &item.put),
            ("patch", &item.patch),
            ("delete", &item.delete),
        ];
        for (method, operation) in operations {
            if let Some(operation) = operation {
                let summary = operation.summary.clone().unwrap_or_default();
                let description = operation.description.clone().unwrap_or_default();
                html.push_str(&format!(
                    "<div class=\"op\"><span class=\"m\">{method}</span><code>{}</code><div>{}</div><div><small>{}</small></div></div>",
                    escape(path),
                    escape(&summary),
                    escape(&description)
                ));
            }
        }
    }
    html.push_str("</body></html>");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub async fn docs(State(state): State<AppState>) -> Html<String> {
    Html(state.docs_html.as_ref().clone())
}

pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json.as_ref().clone(),
    )
}
