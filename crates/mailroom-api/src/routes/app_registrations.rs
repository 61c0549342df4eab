//! `/v1/app-registrations`: OAuth applications (MISSION A14) — Microsoft Entra ID or any OpenID
//! Connect provider — that mailboxes and Microsoft 365 accounts authenticate with. The client
//! secret is write-only: sealed at rest, never returned, and bound to the provider and client it was
//! given for (changing them needs the secret again).

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::oauth::{AppRegistrationDraft, AppRegistrationSettings, ScopeSets};
use mailroom_store::{AppRegistration, SecretChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_app_registrations, create_app_registration))
        .routes(routes!(
            get_app_registration,
            update_app_registration,
            delete_app_registration
        ))
        .routes(routes!(verify_app_registration))
}

/// The scopes asked for, per use.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopesView {
    /// Delegated Microsoft Graph access (the current-user connector, shared mailboxes over Graph).
    pub graph: Vec<String>,
    /// Delegated SMTP and IMAP access (XOAUTH2).
    pub mail: Vec<String>,
    /// App-only access (client credentials).
    pub app: Vec<String>,
}

impl From<&ScopeSets> for ScopesView {
    fn from(s: &ScopeSets) -> Self {
        Self {
            graph: s.graph.clone(),
            mail: s.mail.clone(),
            app: s.app.clone(),
        }
    }
}

impl From<ScopesView> for ScopeSets {
    fn from(s: ScopesView) -> Self {
        Self {
            graph: s.graph,
            mail: s.mail,
            app: s.app,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppRegistrationView {
    pub id: Uuid,
    pub name: String,
    /// `microsoft-entra` or `oidc`.
    pub provider: String,
    pub client_id: String,
    /// Always null: the secret is write-only. `has_client_secret` says whether one is stored.
    pub client_secret: Option<String>,
    pub has_client_secret: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub redirect_uri: String,
    pub authority: String,
    pub graph_base_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discovery_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    pub scopes: ScopesView,
    /// Where a tenant admin grants the application's permissions (Microsoft Entra only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_consent_url: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&AppRegistration> for AppRegistrationView {
    fn from(r: &AppRegistration) -> Self {
        let s = &r.settings;
        Self {
            id: r.id,
            name: s.name.clone(),
            provider: s.provider.as_str().to_owned(),
            client_id: s.client_id.clone(),
            client_secret: None,
            has_client_secret: r.has_client_secret,
            tenant: s.tenant.clone(),
            redirect_uri: s.redirect_uri.clone(),
            authority: s.authority.clone(),
            graph_base_url: s.graph_base_url.clone(),
            discovery_url: s.discovery_url.clone(),
            authorization_endpoint: s.authorization_endpoint.clone(),
            token_endpoint: s.token_endpoint.clone(),
            scopes: ScopesView::from(&s.scopes),
            admin_consent_url: s.admin_consent_url(),
            created_at: rfc3339(r.created_at_ms),
            updated_at: rfc3339(r.updated_at_ms),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AppRegistrationList {
    pub items: Vec<AppRegistrationView>,
}

/// Every app registration, by name.
#[utoipa::path(get, path = "/v1/app-registrations", tag = "oauth",
    responses((status = 200, body = AppRegistrationList)))]
async fn list_app_registrations(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<AppRegistrationList>> {
    let registrations = state.store.app_registrations().await?;
    Ok(axum::Json(AppRegistrationList {
        items: registrations
            .iter()
            .map(AppRegistrationView::from)
            .collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAppRegistration {
    pub name: String,
    /// `microsoft-entra` or `oidc`.
    pub provider: String,
    /// The application (client) ID.
    pub client_id: String,
    /// The secret's value (for Microsoft Entra: the Value column, not the Secret ID). Write-only.
    pub client_secret: Option<String>,
    /// Microsoft Entra: the Directory (tenant) ID or a verified domain.
    pub tenant: Option<String>,
    /// Where the provider sends users back after they consent; register it with the provider exactly.
    pub redirect_uri: String,
    /// Default `https://login.microsoftonline.com` (sovereign clouds have their own).
    pub authority: Option<String>,
    /// Default `https://graph.microsoft.com/v1.0`.
    pub graph_base_url: Option<String>,
    /// An OpenID Connect provider's `…/.well-known/openid-configuration` (required for `oidc`).
    pub discovery_url: Option<String>,
    /// Overrides the authorization endpoint found by discovery.
    pub authorization_endpoint: Option<String>,
    /// Overrides the token endpoint found by discovery.
    pub token_endpoint: Option<String>,
    /// Default: the provider's scope sets.
    pub scopes: Option<ScopesView>,
}

fn parse_secret(raw: Option<String>) -> ApiResult<Option<String>> {
    match raw {
        None => Ok(None),
        Some(secret)
            if secret.is_empty() || secret.len() > 1024 || secret.chars().any(char::is_control) =>
        {
            Err(ApiError::invalid(
                "client_secret",
                "must be the secret's value: 1 to 1024 characters, no control characters",
            ))
        }
        Some(secret) => Ok(Some(secret)),
    }
}

/// Register an OAuth application. Then `POST …/verify` checks it against the provider.
#[utoipa::path(post, path = "/v1/app-registrations", tag = "oauth", request_body = CreateAppRegistration,
    responses((status = 201, body = AppRegistrationView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_app_registration(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateAppRegistration>,
) -> ApiResult<(StatusCode, axum::Json<AppRegistrationView>)> {
    let secret = parse_secret(body.client_secret)?;
    let settings = AppRegistrationSettings::parse(AppRegistrationDraft {
        name: body.name,
        provider: body.provider,
        client_id: body.client_id,
        tenant: body.tenant,
        redirect_uri: body.redirect_uri,
        authority: body.authority,
        graph_base_url: body.graph_base_url,
        discovery_url: body.discovery_url,
        authorization_endpoint: body.authorization_endpoint,
        token_endpoint: body.token_endpoint,
        scopes: body.scopes.map(Into::into),
    })?;
    let registration = state
        .store
        .add_app_registration(&settings, secret.as_deref())
        .await?;
    let view = AppRegistrationView::from(&registration);
    audit(
        &state,
        &principal,
        "app_registration.created",
        "app_registration",
        &registration.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// One app registration.
#[utoipa::path(get, path = "/v1/app-registrations/{id}", tag = "oauth", params(("id" = Uuid, Path)),
    responses((status = 200, body = AppRegistrationView), (status = 404, body = ErrorBody)))]
async fn get_app_registration(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<AppRegistrationView>> {
    Ok(axum::Json(AppRegistrationView::from(
        &state.store.app_registration(id).await?,
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAppRegistration {
    pub name: Option<String>,
    pub client_id: Option<String>,
    /// A new secret value. Required when the provider, client, tenant, authority or endpoints change.
    pub client_secret: Option<String>,
    pub tenant: Option<String>,
    pub redirect_uri: Option<String>,
    pub authority: Option<String>,
    pub graph_base_url: Option<String>,
    pub discovery_url: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub scopes: Option<ScopesView>,
}

/// Change a registration; fields left out keep their value.
#[utoipa::path(patch, path = "/v1/app-registrations/{id}", tag = "oauth", params(("id" = Uuid, Path)),
    request_body = UpdateAppRegistration,
    responses((status = 200, body = AppRegistrationView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_app_registration(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateAppRegistration>,
) -> ApiResult<axum::Json<AppRegistrationView>> {
    let stored = state.store.app_registration(id).await?;
    let secret = parse_secret(body.client_secret)?;
    let current = &stored.settings;
    let settings = AppRegistrationSettings::parse(AppRegistrationDraft {
        name: body.name.unwrap_or_else(|| current.name.clone()),
        provider: current.provider.as_str().to_owned(),
        client_id: body.client_id.unwrap_or_else(|| current.client_id.clone()),
        tenant: body.tenant.or_else(|| current.tenant.clone()),
        redirect_uri: body
            .redirect_uri
            .unwrap_or_else(|| current.redirect_uri.clone()),
        authority: body.authority.or_else(|| Some(current.authority.clone())),
        graph_base_url: body
            .graph_base_url
            .or_else(|| Some(current.graph_base_url.clone())),
        discovery_url: body.discovery_url.or_else(|| current.discovery_url.clone()),
        authorization_endpoint: body
            .authorization_endpoint
            .or_else(|| current.authorization_endpoint.clone()),
        token_endpoint: body
            .token_endpoint
            .or_else(|| current.token_endpoint.clone()),
        scopes: Some(
            body.scopes
                .map_or_else(|| current.scopes.clone(), Into::into),
        ),
    })?;
    if stored.has_client_secret && secret.is_none() {
        let before = current.secret_binding();
        let changed: Vec<&str> = settings
            .secret_binding()
            .iter()
            .zip(&before)
            .filter(|(next, was)| next.1 != was.1)
            .map(|(next, _)| next.0)
            .collect();
        if !changed.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "client_secret_required",
                format!(
                    "changing {} needs the client secret again: the stored one stays with the provider and client it was given for",
                    changed.join(", ")
                ),
            )
            .at("client_secret"));
        }
    }
    let registration = state
        .store
        .update_app_registration(
            id,
            &settings,
            secret.map_or(SecretChange::Keep, SecretChange::Set),
        )
        .await?;
    let view = AppRegistrationView::from(&registration);
    audit(
        &state,
        &principal,
        "app_registration.updated",
        "app_registration",
        &id.to_string(),
        Some(&AppRegistrationView::from(&stored)),
        Some(&view),
    )
    .await?;
    Ok(axum::Json(view))
}

/// Delete a registration.
#[utoipa::path(delete, path = "/v1/app-registrations/{id}", tag = "oauth", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_app_registration(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let stored = state.store.app_registration(id).await?;
    state.store.delete_app_registration(id).await?;
    audit(
        &state,
        &principal,
        "app_registration.deleted",
        "app_registration",
        &id.to_string(),
        Some(&AppRegistrationView::from(&stored)),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One check of a registration.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationCheck {
    /// `discovery`, `endpoints` or `client_credentials`.
    pub check: String,
    /// `passed`, `failed` or `skipped`.
    pub result: String,
    pub detail: String,
    /// The provider's OAuth error (`invalid_client`, `unauthorized_client`…).
    pub error: Option<String>,
    /// Microsoft's AADSTS codes.
    pub error_codes: Option<Vec<u32>>,
    /// What to do about it.
    pub advice: Option<String>,
    /// Where a tenant admin grants consent, when that is what is missing.
    pub admin_consent_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationView {
    /// No check failed.
    pub ok: bool,
    pub checks: Vec<VerificationCheck>,
}

/// Check a registration against its provider: the discovery document, the endpoints, and a
/// client-credentials token where the provider offers that grant. A refusal comes with advice
/// (for Microsoft Entra by its AADSTS code: wrong or expired secret, missing consent, unknown
/// application, redirect URI mismatch).
#[utoipa::path(post, path = "/v1/app-registrations/{id}/verify", tag = "oauth", params(("id" = Uuid, Path)),
    responses((status = 200, body = VerificationView), (status = 404, body = ErrorBody)))]
async fn verify_app_registration(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<VerificationView>> {
    let verification = state.engine.oauth().verify(id).await?;
    let view = VerificationView {
        ok: verification.ok,
        checks: verification
            .checks
            .into_iter()
            .map(|c| VerificationCheck {
                check: c.check.to_owned(),
                result: c.result.to_owned(),
                detail: c.detail,
                error: c.error,
                error_codes: (!c.error_codes.is_empty()).then_some(c.error_codes),
                advice: c.advice,
                admin_consent_url: c.admin_consent_url,
            })
            .collect(),
    };
    audit(
        &state,
        &principal,
        if view.ok {
            "app_registration.verified"
        } else {
            "app_registration.verify_failed"
        },
        "app_registration",
        &id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok(axum::Json(view))
}
