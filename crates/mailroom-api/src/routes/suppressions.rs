//! `/v1/suppressions`: addresses mail is no longer sent to — after a hard bounce, a complaint, an
//! unsubscribe, or by an administrator's choice. A message to one of them is refused
//! (`422 recipient_suppressed`, naming each such recipient and why).

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, page_limit};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::address::EmailAddress;
use mailroom_store::Suppression;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_suppressions))
        .routes(routes!(put_suppression, delete_suppression))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionView {
    pub address: String,
    /// `hard-bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The message whose bounce or complaint suppressed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub created_at: String,
}

impl From<&Suppression> for SuppressionView {
    fn from(s: &Suppression) -> Self {
        Self {
            address: s.address.clone(),
            reason: s.reason.clone(),
            detail: s.detail.clone(),
            message_id: s.message_id.clone(),
            created_at: rfc3339(s.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuppressionList {
    pub items: Vec<SuppressionView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct SuppressionQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn address(raw: &str) -> ApiResult<String> {
    Ok(EmailAddress::parse(raw.trim())
        .map_err(|e| ApiError::from(e.at("address")))?
        .as_str()
        .to_ascii_lowercase())
}

/// Suppressed addresses, newest first.
#[utoipa::path(get, path = "/v1/suppressions", tag = "deliverability", params(SuppressionQuery),
    responses((status = 200, body = SuppressionList), (status = 422, body = ErrorBody)))]
async fn list_suppressions(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<SuppressionQuery>,
) -> ApiResult<axum::Json<SuppressionList>> {
    let limit = i64::from(page_limit(query.limit, 50)?);
    let before = match query.cursor.as_deref() {
        None => None,
        Some(raw) => {
            let (at, address) = raw
                .split_once('.')
                .and_then(|(at, address)| at.parse::<i64>().ok().map(|at| (at, address.to_owned())))
                .ok_or_else(|| ApiError::invalid("cursor", "not a cursor from an earlier page"))?;
            Some((at, address))
        }
    };
    let items = state.store.suppressions(before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    let items: Vec<&Suppression> = items.iter().take(limit as usize).collect();
    Ok(axum::Json(SuppressionList {
        next_cursor: more
            .then(|| {
                items
                    .last()
                    .map(|s| format!("{}.{}", s.created_at_ms, s.address))
            })
            .flatten(),
        items: items.into_iter().map(SuppressionView::from).collect(),
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSuppression {
    /// Why, for people (the reason is `manual`).
    pub detail: Option<String>,
}

/// Suppress an address by hand.
#[utoipa::path(put, path = "/v1/suppressions/{address}", tag = "deliverability", params(("address" = String, Path)),
    request_body = PutSuppression,
    responses((status = 200, body = SuppressionView), (status = 422, body = ErrorBody)))]
async fn put_suppression(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(raw): ApiPath<String>,
    ApiJson(body): ApiJson<PutSuppression>,
) -> ApiResult<axum::Json<SuppressionView>> {
    let address = address(&raw)?;
    let detail = body
        .detail
        .as_deref()
        .map(str::trim)
        .filter(|d| !d.is_empty());
    if detail.is_some_and(|d| d.chars().count() > 500) {
        return Err(ApiError::invalid("detail", "at most 500 characters"));
    }
    state
        .store
        .suppress(
            &address,
            "manual",
            detail,
            None,
            Some(&principal.author_id()),
        )
        .await?;
    let found = state
        .store
        .suppressed_among(std::slice::from_ref(&address))
        .await?;
    let view = found
        .first()
        .map(SuppressionView::from)
        .ok_or_else(|| ApiError::internal("a suppression just written is not there"))?;
    audit(
        &state,
        &principal,
        "suppression.added",
        "suppression",
        &address,
        None,
        Some(&view),
    )
    .await?;
    Ok(axum::Json(view))
}

/// Mail an address again.
#[utoipa::path(delete, path = "/v1/suppressions/{address}", tag = "deliverability", params(("address" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn delete_suppression(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(raw): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let address = address(&raw)?;
    state.store.unsuppress(&address).await?;
    audit(
        &state,
        &principal,
        "suppression.removed",
        "suppression",
        &address,
        None::<&String>,
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
