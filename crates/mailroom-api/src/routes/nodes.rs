//! `/v1/nodes`: the mailroom processes sharing this store.

use crate::AppState;
use crate::error::ApiResult;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_nodes))
}

/// A node: one `mailroom serve` process on the shared store.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    /// Kept in the node's data folder: a restarted process has the same id.
    pub id: String,
    pub host: String,
    /// When this node's current process started (RFC 3339).
    pub started_at: String,
    pub last_heartbeat_at: String,
    /// `alive`; `stopped` after a clean stop; `dead` once another node declared it dead (it had
    /// not heartbeat for `node_timeout`) and recovered its leases.
    pub state: String,
    pub declared_dead_at: Option<String>,
    /// Messages it holds a lease on (claimed or being sent).
    pub messages_in_flight: i64,
}

/// List the nodes sharing this store, live or dead.
#[utoipa::path(get, path = "/v1/nodes", tag = "system", responses((status = 200, body = Vec<NodeView>)))]
async fn list_nodes(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<NodeView>>> {
    let nodes = state.store.nodes().await?;
    Ok(axum::Json(
        nodes
            .into_iter()
            .map(|node| NodeView {
                id: node.id,
                host: node.host,
                started_at: crate::dto::rfc3339(node.started_at_ms),
                last_heartbeat_at: crate::dto::rfc3339(node.last_heartbeat_ms),
                state: if node.stopped_at_ms.is_some() {
                    "stopped".into()
                } else if node.declared_dead_at_ms.is_some() {
                    "dead".into()
                } else {
                    "alive".into()
                },
                declared_dead_at: node.declared_dead_at_ms.map(crate::dto::rfc3339),
                messages_in_flight: node.in_flight,
            })
            .collect(),
    ))
}
