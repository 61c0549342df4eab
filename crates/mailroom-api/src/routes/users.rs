//! `/v1/users`, their tokens, `/v1/view-policies` and `/v1/audit`: who may do what, and who did what.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::{parse_rfc3339, rfc3339};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, page_limit};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::ValidationError;
use mailroom_core::access::{Grants, Licence, PermissionSet, ViewPolicy};
use mailroom_core::account::parse_display_text;
use mailroom_core::address::EmailAddress;
use mailroom_store::{ApiToken, User, UserInput};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user))
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
        .routes(routes!(list_view_policies))
        .routes(routes!(set_view_policy))
        .routes(routes!(list_audit))
}

pub(crate) fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    /// The user's own address, used when they send as "current user".
    pub contact_email: Option<String>,
    /// `full`, `limited`, `guest`, `delegated-admin` or `external-accountant`.
    pub licence: String,
    /// E.g. `["email-send", "read customer"]`.
    #[serde(default)]
    pub permission_sets: Vec<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub name: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub contact_email: Option<Option<String>>,
    pub licence: Option<String>,
    pub permission_sets: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub name: String,
    pub contact_email: Option<String>,
    pub licence: String,
    pub permission_sets: Vec<String>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self {
            id: u.id,
            name: u.name.clone(),
            contact_email: u.contact_email.as_ref().map(ToString::to_string),
            licence: u.licence.to_string(),
            permission_sets: u.grants.sets().iter().map(ToString::to_string).collect(),
            enabled: u.enabled,
            created_at: rfc3339(u.created_at_ms),
            updated_at: rfc3339(u.updated_at_ms),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// When the token stops working (RFC 3339); never when absent.
    pub expires_at: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// Only in the answer to creating the token: the secret, shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> Self {
        Self {
            id: t.id,
            name: t.name.clone(),
            created_at: rfc3339(t.created_at_ms),
            expires_at: t.expires_at_ms.map(rfc3339),
            revoked_at: t.revoked_at_ms.map(rfc3339),
            token: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ViewPolicyBody {
    /// `own`, `all`, `all-related-records` or `any-related-record`.
    pub policy: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ViewPolicyView {
    /// A user id, or `default` for the row that applies to everyone without one.
    pub user: String,
    pub policy: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    /// The user who made the change.
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only entries older than this id (paging).
    pub before: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    pub limit: Option<i64>,
}

pub(crate) fn parse_grants(sets: &[String]) -> Result<Grants, ValidationError> {
    sets.iter()
        .enumerate()
        .map(|(index, set)| {
            set.parse::<PermissionSet>()
                .map_err(|e| e.at(format!("permission_sets[{index}]")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Grants::new)
}

fn parse_email(raw: Option<&str>) -> Result<Option<EmailAddress>, ValidationError> {
    raw.filter(|e| !e.is_empty())
        .map(|e| EmailAddress::parse(e.trim()).map_err(|err| err.at("contact_email")))
        .transpose()
}

/// Refuses permission sets the principal may not grant (only an email administrator grants
/// `email-admin` and `delegated-mailbox-approver`).
fn check_user_grants(principal: &Principal, previous: &Grants, next: &Grants) -> ApiResult<()> {
    mailroom_core::mailbox::may_grant(
        &principal.user.grants,
        &mailroom_core::mailbox::newly_granted(previous, next),
        false,
    )
    .map_err(|refusal| {
        // Every refusal to a user is 403 (see `GrantRefusal::is_forbidden`); its codes are in
        // ERROR_CODES.
        let forbidden = StatusCode::FORBIDDEN;
        ApiError::new(forbidden, refusal.code(), refusal.message()).at("permission_sets")
    })
}

/// Records a change in the audit log; a failure to record is an error of the request.
pub(crate) async fn audit<T: Serialize>(
    state: &AppState,
    principal: &Principal,
    action: &str,
    target_type: &str,
    target_id: &str,
    before: Option<&T>,
    after: Option<&T>,
) -> ApiResult<()> {
    let to_json = |v: Option<&T>| v.map(|v| serde_json::to_value(v).expect("views serialize"));
    state
        .store
        .append_audit(
            &principal.author_id(),
            action,
            target_type,
            target_id,
            to_json(before).as_ref(),
            to_json(after).as_ref(),
        )
        .await?;
    Ok(())
}

/// List users.
#[utoipa::path(get, path = "/v1/users", tag = "users", responses((status = 200, body = Vec<UserView>)))]
async fn list_users(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<UserView>>> {
    Ok(axum::Json(
        state
            .store
            .users()
            .await?
            .iter()
            .map(UserView::from)
            .collect(),
    ))
}

/// Add a user.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUser,
    responses((status = 201, body = UserView), (status = 422, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, axum::Json<UserView>)> {
    let input = UserInput {
        name: parse_display_text("name", &body.name)?,
        contact_email: parse_email(body.contact_email.as_deref())?,
        licence: body
            .licence
            .parse::<Licence>()
            .map_err(|e| e.at("licence"))?,
        enabled: body.enabled.unwrap_or(true),
        grants: parse_grants(&body.permission_sets)?,
    };
    check_user_grants(&principal, &Grants::default(), &input.grants)?;
    let user = state.store.create_user(&input).await?;
    // Every new user gets a mailbox with the organisation's defaults (MISSION B2, B3).
    if let Some(address) = &user.contact_email {
        state.store.ensure_user_mailbox(user.id, address).await?;
    }
    let view = UserView::from(&user);
    audit(
        &state,
        &principal,
        "user.created",
        "user",
        &user.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Show a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody)))]
async fn get_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<UserView>> {
    Ok(axum::Json(UserView::from(&state.store.user(id).await?)))
}

/// Change a user: name, contact email, licence, permission sets, enabled.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)), request_body = UpdateUser,
    responses((status = 200, body = UserView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`last_admin`: the change would leave no enabled user holding email-admin")))]
async fn update_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateUser>,
) -> ApiResult<axum::Json<UserView>> {
    let current = state.store.user(id).await?;
    let input = UserInput {
        name: match body.name {
            Some(name) => parse_display_text("name", &name)?,
            None => current.name.clone(),
        },
        contact_email: match body.contact_email {
            Some(email) => parse_email(email.as_deref())?,
            None => current.contact_email.clone(),
        },
        licence: match body.licence {
            Some(licence) => licence.parse::<Licence>().map_err(|e| e.at("licence"))?,
            None => current.licence,
        },
        enabled: body.enabled.unwrap_or(current.enabled),
        grants: match body.permission_sets {
            Some(sets) => parse_grants(&sets)?,
            None => current.grants.clone(),
        },
    };
    check_user_grants(&principal, &current.grants, &input.grants)?;
    let updated = state.store.update_user(id, &input).await?;
    if let Some(address) = &updated.contact_email {
        state.store.ensure_user_mailbox(id, address).await?;
    }
    let (before, after) = (UserView::from(&current), UserView::from(&updated));
    audit(
        &state,
        &principal,
        "user.updated",
        "user",
        &id.to_string(),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// List a user's tokens (never their secrets).
#[utoipa::path(get, path = "/v1/users/{id}/tokens", tag = "users", params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<TokenView>), (status = 404, body = ErrorBody)))]
async fn list_tokens(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<Vec<TokenView>>> {
    state.store.user(id).await?;
    Ok(axum::Json(
        state
            .store
            .tokens(id)
            .await?
            .iter()
            .map(TokenView::from)
            .collect(),
    ))
}

/// Create a token for a user. The secret is in this answer only; mailroom keeps just its hash.
#[utoipa::path(post, path = "/v1/users/{id}/tokens", tag = "users", params(("id" = Uuid, Path)), request_body = CreateToken,
    responses((status = 201, body = TokenView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateToken>,
) -> ApiResult<(StatusCode, axum::Json<TokenView>)> {
    state.store.user(id).await?;
    let name = parse_display_text("name", &body.name)?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|raw| parse_rfc3339("expires_at", raw))
        .transpose()?;
    if let Some(expires_at) = expires_at
        && expires_at <= mailroom_store::now_ms()
    {
        return Err(ApiError::invalid(
            "expires_at",
            "is in the past: a token must expire in the future",
        ));
    }
    let (token, secret) = state
        .store
        .create_token(Some(id), &name, expires_at)
        .await?;
    let listed = TokenView::from(&token);
    audit(
        &state,
        &principal,
        "token.created",
        "user",
        &id.to_string(),
        None,
        Some(&listed),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(TokenView {
            token: Some(secret),
            ..listed
        }),
    ))
}

/// Revoke a token; it stops working at once.
#[utoipa::path(delete, path = "/v1/users/{id}/tokens/{token_id}", tag = "users", params(("id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses((status = 200, body = TokenView), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((id, token_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<axum::Json<TokenView>> {
    let token = state.store.revoke_token(id, token_id).await?;
    let view = TokenView::from(&token);
    audit(
        &state,
        &principal,
        "token.revoked",
        "user",
        &id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok(axum::Json(view))
}

/// The view policies set: per user, and the `default` row.
#[utoipa::path(get, path = "/v1/view-policies", tag = "users", responses((status = 200, body = Vec<ViewPolicyView>)))]
async fn list_view_policies(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<Vec<ViewPolicyView>>> {
    let mut views = Vec::new();
    for user in state.store.users().await? {
        views.push(ViewPolicyView {
            user: user.id.to_string(),
            policy: state.store.view_policy(user.id).await?.to_string(),
        });
    }
    Ok(axum::Json(views))
}

/// Set the view policy of a user, or with `default` the policy of everyone without one.
#[utoipa::path(put, path = "/v1/view-policies/{user}", tag = "users", params(("user" = String, Path, description = "a user id or `default`")),
    request_body = ViewPolicyBody,
    responses((status = 200, body = ViewPolicyView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_view_policy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(user): ApiPath<String>,
    ApiJson(body): ApiJson<ViewPolicyBody>,
) -> ApiResult<axum::Json<ViewPolicyView>> {
    let policy: ViewPolicy = body
        .policy
        .parse()
        .map_err(|e: ValidationError| e.at("policy"))?;
    let target = match user.as_str() {
        "default" => None,
        other => Some(other.parse::<Uuid>().map_err(|_| {
            ApiError::not_found(format!(
                "user {other:?} not found; use a user id or `default`"
            ))
        })?),
    };
    let previous = state.store.set_view_policy(target, policy).await?;
    let before = previous.map(|p| ViewPolicyView {
        user: user.clone(),
        policy: p.to_string(),
    });
    let after = ViewPolicyView {
        user: user.clone(),
        policy: policy.to_string(),
    };
    audit(
        &state,
        &principal,
        "view_policy.set",
        "view_policy",
        &user,
        before.as_ref(),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Who changed accounts, scenarios, limits, policies, users and tokens, and when; newest first.
#[utoipa::path(get, path = "/v1/audit", tag = "users", params(AuditQuery), responses((status = 200, body = Vec<AuditView>)))]
async fn list_audit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<axum::Json<Vec<AuditView>>> {
    let entries = state
        .store
        .audit_entries(query.before, page_limit(query.limit, 100)?)
        .await?;
    Ok(axum::Json(
        entries
            .into_iter()
            .map(|e| AuditView {
                id: e.id,
                at: rfc3339(e.at_ms),
                actor_id: e.actor_id,
                action: e.action,
                target_type: e.target_type,
                target_id: e.target_id,
                before: e.before,
                after: e.after,
            })
            .collect(),
    ))
}
