//! `/v1/scenarios`: which account each business scenario sends through.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::{AssignScenario, ScenarioView};
use crate::error::{ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use mailroom_core::account::parse_display_text;
use mailroom_core::scenario::ScenarioName;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ScenarioAttachmentView {
    #[serde(flatten)]
    pub attachment: crate::routes::attachments::AttachmentView,
    /// `default` (added to every message unless the sender removes it) or `optional` (added when picked).
    pub mode: String,
}

#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioAttachmentMode {
    /// `default` or `optional`.
    pub mode: String,
}

fn attachable_scenario(name: &str) -> ApiResult<ScenarioName> {
    let name = ScenarioName::parse(name)?;
    if name.is_default() {
        return Err(crate::error::ApiError::invalid(
            "scenario",
            "the default scenario has no default attachments; assign them to a business scenario",
        ));
    }
    Ok(name)
}

/// Files that go with this scenario's messages.
#[utoipa::path(get, path = "/v1/scenarios/{name}/attachments", tag = "scenarios", params(("name" = String, Path)),
    responses((status = 200, body = Vec<ScenarioAttachmentView>), (status = 404, body = ErrorBody)))]
async fn list_scenario_attachments(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<Vec<ScenarioAttachmentView>>> {
    let name = ScenarioName::parse(&name)?;
    state.store.scenario(&name).await?;
    let files = state.store.scenario_attachments(name.as_str()).await?;
    Ok(axum::Json(
        files
            .iter()
            .map(|f| ScenarioAttachmentView {
                attachment: (&f.attachment).into(),
                mode: if f.is_default {
                    "default".into()
                } else {
                    "optional".into()
                },
            })
            .collect(),
    ))
}

/// Add an uploaded file to a scenario as `default` or `optional`.
#[utoipa::path(put, path = "/v1/scenarios/{name}/attachments/{attachment_id}", tag = "scenarios",
    params(("name" = String, Path), ("attachment_id" = uuid::Uuid, Path)), request_body = ScenarioAttachmentMode,
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_scenario_attachment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((name, attachment_id)): ApiPath<(String, uuid::Uuid)>,
    ApiJson(body): ApiJson<ScenarioAttachmentMode>,
) -> ApiResult<axum::http::StatusCode> {
    let name = attachable_scenario(&name)?;
    state.store.scenario(&name).await?;
    let is_default = match body.mode.as_str() {
        "default" => true,
        "optional" => false,
        other => {
            return Err(crate::error::ApiError::invalid(
                "mode",
                format!("{other:?} is not one of: default, optional"),
            ));
        }
    };
    state
        .store
        .set_scenario_attachment(name.as_str(), attachment_id, is_default)
        .await?;
    let after = serde_json::json!({"attachment_id": attachment_id, "mode": body.mode});
    audit(
        &state,
        &principal,
        "scenario.attachment_set",
        "scenario",
        name.as_str(),
        None,
        Some(&after),
    )
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Remove a file from a scenario.
#[utoipa::path(delete, path = "/v1/scenarios/{name}/attachments/{attachment_id}", tag = "scenarios",
    params(("name" = String, Path), ("attachment_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_scenario_attachment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((name, attachment_id)): ApiPath<(String, uuid::Uuid)>,
) -> ApiResult<axum::http::StatusCode> {
    let name = ScenarioName::parse(&name)?;
    state
        .store
        .remove_scenario_attachment(name.as_str(), attachment_id)
        .await?;
    let before = serde_json::json!({"attachment_id": attachment_id});
    audit(
        &state,
        &principal,
        "scenario.attachment_removed",
        "scenario",
        name.as_str(),
        Some(&before),
        None,
    )
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_scenario_attachments))
        .routes(routes!(set_scenario_attachment, remove_scenario_attachment))
        .routes(routes!(list_scenarios))
        .routes(routes!(assign_scenario, unassign_scenario))
}

/// List scenarios (built-in and custom) with their accounts.
#[utoipa::path(get, path = "/v1/scenarios", tag = "scenarios", responses((status = 200, body = Vec<ScenarioView>)))]
async fn list_scenarios(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<ScenarioView>>> {
    Ok(axum::Json(
        state
            .store
            .scenarios()
            .await?
            .into_iter()
            .map(ScenarioView::from)
            .collect(),
    ))
}

/// Assign a scenario to an account, creating it if it is a new custom scenario.
/// Assigning the `default` scenario chooses the default account.
#[utoipa::path(put, path = "/v1/scenarios/{name}", tag = "scenarios", params(("name" = String, Path)), request_body = AssignScenario,
    responses((status = 200, body = ScenarioView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn assign_scenario(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<AssignScenario>,
) -> ApiResult<axum::Json<ScenarioView>> {
    let name = ScenarioName::parse(&name)?;
    let description = body
        .description
        .as_deref()
        .map(|d| parse_display_text("description", d))
        .transpose()?;
    let before: Option<ScenarioView> = state.store.scenario(&name).await.ok().map(Into::into);
    let row = state
        .store
        .assign_scenario(
            &name,
            body.account_id,
            description.as_deref(),
            body.unsubscribe,
        )
        .await?;
    tracing::info!(event = "scenario_assigned", scenario = %name, account = ?body.account_id, "scenario assigned");
    let after = ScenarioView::from(row);
    audit(
        &state,
        &principal,
        "scenario.assigned",
        "scenario",
        name.as_str(),
        before.as_ref(),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Remove a scenario's account so that it uses the default account.
#[utoipa::path(delete, path = "/v1/scenarios/{name}", tag = "scenarios", params(("name" = String, Path)),
    responses((status = 200, body = ScenarioView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn unassign_scenario(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<axum::Json<ScenarioView>> {
    let name = ScenarioName::parse(&name)?;
    let before: Option<ScenarioView> = state.store.scenario(&name).await.ok().map(Into::into);
    let row = state.store.unassign_scenario(&name).await?;
    tracing::info!(event = "scenario_unassigned", scenario = %name, "scenario unassigned");
    let after = ScenarioView::from(row);
    audit(
        &state,
        &principal,
        "scenario.unassigned",
        "scenario",
        name.as_str(),
        before.as_ref(),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}
