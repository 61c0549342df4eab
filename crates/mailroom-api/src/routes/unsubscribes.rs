//! One-click unsubscribe (RFC 8058). `/u/{token}` is public — the link in a message's
//! `List-Unsubscribe` header: `POST` (what mail providers send, with `List-Unsubscribe=One-Click`)
//! takes the message's To recipients off its list (its scenario) at once; `GET` (a person who
//! clicked the link) only shows a page with a button that posts, because link scanners fetch links.
//! `/v1/unsubscribes` lists who left which list and puts an address back.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody, page_limit};
use crate::routes::html::{escape, page};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Html;
use mailroom_store::Unsubscribe;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_unsubscribes))
        .routes(routes!(resubscribe))
}

/// The public routes (no token): the unsubscribe link.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(unsubscribe_page, unsubscribe_one_click))
}

fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unsubscribe_token_invalid",
        "this unsubscribe link is not valid (it was changed, or it belongs to another installation)",
    )
}

/// The page a person sees on clicking the link: it asks before unsubscribing.
#[utoipa::path(get, path = "/u/{token}", tag = "deliverability", params(("token" = String, Path)),
    security(()),
    responses((status = 200, description = "A page with a button that unsubscribes", content_type = "text/html"),
        (status = 404, body = ErrorBody)))]
async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Html<String>> {
    let opened = state
        .store
        .open_unsubscribe_token(&token)
        .ok_or_else(invalid_token)?;
    Ok(page(
        "Unsubscribe",
        &format!(
            "<p>Stop receiving <strong>{list}</strong> mail at {addresses}?</p>\
             <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <button type=\"submit\">Unsubscribe</button></form>",
            list = escape(&opened.list),
            addresses = escape(&opened.addresses.join(", ")),
        ),
    ))
}

/// One-click unsubscribe (RFC 8058): takes the link's addresses off its list and fires
/// `message.unsubscribed`. A repeat changes nothing and answers the same.
#[utoipa::path(post, path = "/u/{token}", tag = "deliverability", params(("token" = String, Path)),
    security(()),
    request_body(content = String, description = "`List-Unsubscribe=One-Click` (form-encoded or multipart)", content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "Unsubscribed", content_type = "text/html"),
        (status = 404, body = ErrorBody)))]
async fn unsubscribe_one_click(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Html<String>> {
    let opened = state
        .store
        .open_unsubscribe_token(&token)
        .ok_or_else(invalid_token)?;
    let newly = state.store.unsubscribe(&opened, "one-click").await?;
    tracing::info!(event = "unsubscribed", message_uuid = %opened.message_id, list = %opened.list,
        newly = newly.len(), "one-click unsubscribe");
    Ok(page(
        "Unsubscribed",
        &format!(
            "<p>{addresses} will receive no more <strong>{list}</strong> mail.</p>",
            list = escape(&opened.list),
            addresses = escape(&opened.addresses.join(", ")),
        ),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnsubscribeView {
    pub address: String,
    /// The list (scenario) the address left.
    pub list: String,
    /// `one-click`, `mailto` or `manual`.
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    pub created_at: String,
}

impl From<&Unsubscribe> for UnsubscribeView {
    fn from(u: &Unsubscribe) -> Self {
        Self {
            address: u.address.clone(),
            list: u.list.clone(),
            method: u.method.clone(),
            message_id: u.message_id.clone(),
            created_at: rfc3339(u.created_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UnsubscribeList {
    pub items: Vec<UnsubscribeView>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UnsubscribeQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Addresses that left a list, newest first.
#[utoipa::path(get, path = "/v1/unsubscribes", tag = "deliverability", params(UnsubscribeQuery),
    responses((status = 200, body = UnsubscribeList), (status = 422, body = ErrorBody)))]
async fn list_unsubscribes(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<UnsubscribeQuery>,
) -> ApiResult<axum::Json<UnsubscribeList>> {
    let limit = i64::from(page_limit(query.limit, 50)?);
    let before =
        match query.cursor.as_deref() {
            None => None,
            Some(raw) => {
                let mut parts = raw.splitn(3, ' ');
                let parsed = (|| {
                    let at = parts.next()?.parse::<i64>().ok()?;
                    Some((at, parts.next()?.to_owned(), parts.next()?.to_owned()))
                })();
                Some(parsed.ok_or_else(|| {
                    ApiError::invalid("cursor", "not a cursor from an earlier page")
                })?)
            }
        };
    let items = state.store.unsubscribes(before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    let items: Vec<&Unsubscribe> = items.iter().take(limit as usize).collect();
    Ok(axum::Json(UnsubscribeList {
        next_cursor: more
            .then(|| {
                items
                    .last()
                    .map(|u| format!("{} {} {}", u.created_at_ms, u.address, u.list))
            })
            .flatten(),
        items: items.into_iter().map(UnsubscribeView::from).collect(),
    }))
}

/// Put an address back on a list.
#[utoipa::path(delete, path = "/v1/unsubscribes/{list}/{address}", tag = "deliverability",
    params(("list" = String, Path), ("address" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn resubscribe(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((list, address)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.store.resubscribe(&address, &list).await?;
    audit(
        &state,
        &principal,
        "unsubscribe.removed",
        "unsubscribe",
        &format!("{list}/{address}"),
        None::<&String>,
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
