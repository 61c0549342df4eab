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

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
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
        .assign_scenario(&name, body.account_id, description.as_deref())
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
