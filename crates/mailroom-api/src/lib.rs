//! The HTTP API of mailroom: the only crate that knows HTTP and JSON.
//!
//! Every `/v1` route requires a bearer token. Errors are JSON with a stable machine code. The OpenAPI
//! document is generated from the handlers' annotations, so it cannot drift from the routes.

mod auth;
pub mod dto;
mod error;
mod routes;

pub use auth::{Principal, ROUTE_PERMISSIONS};
pub use error::{ApiError, ErrorBody};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use mailroom_engine::Engine;
use mailroom_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, SecurityRequirement};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Settings of the API that come from configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest text + HTML body of one message.
    pub max_body_bytes: usize,
    /// Folder used by pickup accounts that name none.
    pub default_pickup_dir: String,
    /// Largest total size of the attachments of one message (and so of one upload).
    pub max_attachment_bytes: u64,
}

/// What every handler can reach. Cloning it (axum does, for every request and middleware) is one
/// reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub engine: Engine,
    pub settings: ApiSettings,
    pub metrics: PrometheusHandle,
    pub blobs: mailroom_store::BlobStore,
    openapi_json: Arc<String>,
    docs_html: Arc<String>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The routes of every authenticated group, with their OpenAPI description.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::accounts::router())
        .merge(routes::scenarios::router())
        .merge(routes::messages::router())
        .merge(routes::users::router())
        .merge(routes::attachments::router())
        .merge(routes::templates::router())
        .merge(routes::documents::router())
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> OpenApi {
    let (_, mut api) = OpenApiRouter::<AppState>::new()
        .merge(v1_routes())
        .routes(routes!(routes::system::healthz))
        .split_for_parts();
    api.info = InfoBuilder::new()
        .title("mailroom")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some("A self-hosted email hub for business applications."))
        .build();
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    api.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    api
}

/// Builds the router: `/v1/*` behind bearer auth, plus `/healthz`, `/metrics`, `/openapi.json`, `/docs`.
pub fn router(
    store: Store,
    engine: Engine,
    settings: ApiSettings,
    metrics: PrometheusHandle,
    blobs: mailroom_store::BlobStore,
) -> Router {
    let api = openapi();
    let openapi_json = Arc::new(
        api.to_pretty_json()
            .expect("the OpenAPI document serializes"),
    );
    let docs_html = Arc::new(routes::system::docs_page(&api));
    // Room for JSON escaping around the largest allowed body.
    let request_limit = settings
        .max_body_bytes
        .saturating_mul(2)
        .saturating_add(1 << 20);
    let state = AppState(Arc::new(Shared {
        store,
        engine,
        settings,
        metrics,
        blobs,
        openapi_json,
        docs_html,
    }));
    let (v1, _) = v1_routes().split_for_parts();
    // Authentication wraps everything; the permission check runs after routing, when the matched
    // route is known.
    let v1 = v1
        .route_layer(axum::middleware::from_fn(auth::require_permission))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(routes::system::healthz))
        .route("/metrics", get(routes::system::metrics))
        .route("/openapi.json", get(routes::system::openapi_json))
        .route("/docs", get(routes::system::docs))
        .fallback(|| async { ApiError::not_found("no such route; see /docs") })
        .layer(DefaultBodyLimit::max(request_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_operation_has_exactly_one_entry_in_the_permission_table() {
        let api = openapi();
        let mut operations = Vec::new();
        for (path, item) in &api.paths.paths {
            if !path.starts_with("/v1/") {
                continue;
            }
            let methods = [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ];
            for (method, operation) in methods {
                if operation.is_some() {
                    operations.push((method, path.clone()));
                }
            }
        }
        for (method, path) in &operations {
            let entries = ROUTE_PERMISSIONS
                .iter()
                .filter(|(m, p, _)| m == method && p == path)
                .count();
            assert_eq!(
                entries, 1,
                "{method} {path} needs exactly one entry in ROUTE_PERMISSIONS"
            );
        }
        for (method, path, permission) in ROUTE_PERMISSIONS {
            assert!(
                operations.iter().any(|(m, p)| m == method && p == path),
                "{method} {path} is in the table but not a route"
            );
            assert!(
                permission
                    .parse::<mailroom_core::access::PermissionSet>()
                    .is_ok()
            );
        }
    }
}
