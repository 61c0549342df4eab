//! `/v1/teams` (permission sets granted to every member) and `/v1/queues` (shared inboxes, each
//! with a mailbox).

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::routes::users::{audit, parse_grants};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::access::Grants;
use mailroom_core::account::parse_display_text;
use mailroom_core::address::EmailAddress;
use mailroom_core::mailbox::{may_grant, newly_granted};
use mailroom_store::{Queue, Team};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_teams, create_team))
        .routes(routes!(update_team))
        .routes(routes!(list_queues, create_queue))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TeamView {
    pub id: Uuid,
    pub name: String,
    pub permission_sets: Vec<String>,
    pub members: Vec<Uuid>,
    pub created_at: String,
}

impl From<&Team> for TeamView {
    fn from(t: &Team) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            permission_sets: t.grants.sets().iter().map(ToString::to_string).collect(),
            members: t.members.clone(),
            created_at: rfc3339(t.created_at_ms),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeam {
    pub name: String,
    #[serde(default)]
    pub members: Vec<Uuid>,
    /// Granted to every member, e.g. `["mailbox-approve"]`.
    #[serde(default)]
    pub permission_sets: Vec<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeam {
    pub members: Option<Vec<Uuid>>,
    pub permission_sets: Option<Vec<String>>,
}

/// Refuses grants the principal may not make to a team.
fn check_team_grants(principal: &Principal, previous: &Grants, next: &Grants) -> ApiResult<()> {
    may_grant(&principal.user.grants, &newly_granted(previous, next), true).map_err(|refusal| {
        let status = if refusal.is_forbidden() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::new(status, refusal.code(), refusal.message()).at("permission_sets")
    })
}

/// List teams.
#[utoipa::path(get, path = "/v1/teams", tag = "users", responses((status = 200, body = Vec<TeamView>)))]
async fn list_teams(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<TeamView>>> {
    Ok(axum::Json(
        state
            .store
            .teams()
            .await?
            .iter()
            .map(TeamView::from)
            .collect(),
    ))
}

/// Create a team; its permission sets apply to its members. The delegated mailbox approver role
/// is never granted to a team (`422 delegated_approver_not_for_teams`).
#[utoipa::path(post, path = "/v1/teams", tag = "users", request_body = CreateTeam,
    responses((status = 201, body = TeamView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "`delegated_approver_not_for_teams`, or an invalid field")))]
async fn create_team(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateTeam>,
) -> ApiResult<(StatusCode, axum::Json<TeamView>)> {
    let name = parse_display_text("name", &body.name)?;
    let grants = parse_grants(&body.permission_sets)?;
    check_team_grants(&principal, &Grants::default(), &grants)?;
    let team = state
        .store
        .create_team(&name, &grants, &body.members)
        .await?;
    let view = TeamView::from(&team);
    audit(
        &state,
        &principal,
        "team.created",
        "team",
        &team.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Change a team's members or permission sets.
#[utoipa::path(patch, path = "/v1/teams/{id}", tag = "users", params(("id" = Uuid, Path)), request_body = UpdateTeam,
    responses((status = 200, body = TeamView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_team(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateTeam>,
) -> ApiResult<axum::Json<TeamView>> {
    let current = state.store.team(id).await?;
    let grants = match &body.permission_sets {
        Some(sets) => parse_grants(sets)?,
        None => current.grants.clone(),
    };
    check_team_grants(&principal, &current.grants, &grants)?;
    let members = body.members.unwrap_or_else(|| current.members.clone());
    let updated = state.store.update_team(id, &grants, &members).await?;
    let (before, after) = (TeamView::from(&current), TeamView::from(&updated));
    audit(
        &state,
        &principal,
        "team.updated",
        "team",
        &id.to_string(),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueView {
    pub id: Uuid,
    pub name: String,
    pub email_address: String,
    pub members: Vec<Uuid>,
    pub mailbox_id: Option<Uuid>,
    pub created_at: String,
}

impl From<&Queue> for QueueView {
    fn from(q: &Queue) -> Self {
        Self {
            id: q.id,
            name: q.name.clone(),
            email_address: q.email_address.to_string(),
            members: q.members.clone(),
            mailbox_id: q.mailbox_id,
            created_at: rfc3339(q.created_at_ms),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateQueue {
    pub name: String,
    /// The shared inbox's address, e.g. `support@example.com`.
    pub email_address: String,
    #[serde(default)]
    pub members: Vec<Uuid>,
}

/// List queues.
#[utoipa::path(get, path = "/v1/queues", tag = "mailboxes", responses((status = 200, body = Vec<QueueView>)))]
async fn list_queues(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<QueueView>>> {
    Ok(axum::Json(
        state
            .store
            .queues()
            .await?
            .iter()
            .map(QueueView::from)
            .collect(),
    ))
}

/// Create a queue (a shared inbox) and its mailbox, with the organisation's defaults.
#[utoipa::path(post, path = "/v1/queues", tag = "mailboxes", request_body = CreateQueue,
    responses((status = 201, body = QueueView), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`queue_name_taken`"), (status = 422, body = ErrorBody)))]
async fn create_queue(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateQueue>,
) -> ApiResult<(StatusCode, axum::Json<QueueView>)> {
    let name = parse_display_text("name", &body.name)?;
    let address =
        EmailAddress::parse(body.email_address.trim()).map_err(|e| e.at("email_address"))?;
    let queue = state
        .store
        .create_queue(&name, &address, &body.members)
        .await?;
    let view = QueueView::from(&queue);
    audit(
        &state,
        &principal,
        "queue.created",
        "queue",
        &queue.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}
