//! Unauthenticated operational routes: health, Prometheus metrics, the OpenAPI document and its docs page.

use crate::AppState;
use crate::dto::Health;
use crate::error::ApiResult;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use mailroom_core::message::MessageStatus;
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
    for status in mailroom_core::message::MessageStatus::ALL
        .iter()
        .filter(|s| !matches!(s, MessageStatus::Sent | MessageStatus::Cancelled))
    {
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

/// The interactive reference: Redoc (vendored, embedded in the binary) rendering `/openapi.json`.
/// Every operation with its parameters, schemas and answers, the security scheme, and the catalogue
/// of error codes in the document's description. Nothing is loaded from elsewhere.
pub fn docs_page(_openapi: &OpenApi) -> String {
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mailroom API</title>\
     <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
     <style>body{margin:0}</style></head><body>\
     <redoc spec-url=\"/openapi.json\" hide-download-button=\"false\" expand-responses=\"200,201,202\" \
     path-in-middle-panel=\"true\"></redoc>\
     <noscript>The interactive reference needs JavaScript; the document itself is at \
     <a href=\"/openapi.json\">/openapi.json</a>.</noscript>\
     <script src=\"/docs/redoc.standalone.js\"></script></body></html>"
        .to_owned()
}

/// Redoc's bundle, vendored (see `crates/mailroom-api/assets/README.md`).
pub async fn redoc_script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/redoc.standalone.js"),
    )
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
