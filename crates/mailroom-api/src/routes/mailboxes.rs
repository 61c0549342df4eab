//! `/v1/server-profiles`, `/v1/settings/email`, `/v1/mailboxes`, `/v1/jobs` and `/v1/alerts`:
//! describing the mail servers, the organisation's defaults, every user's and queue's mailbox, its
//! approval, and test & enable as a background job (MISSION B1–B5).

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::ValidationError;
use mailroom_core::access::PermissionSet;
use mailroom_core::account::{Security, parse_display_text};
use mailroom_core::address::EmailAddress;
use mailroom_core::mailbox::{
    Approval, ApprovalTarget, Approver, AuthType, CloudEndpoints, Direction, EmailSettings,
    MailboxFilter, ProcessingOptions, ProfileKind, ServerEndpoint, SyncMethod, may_approve,
    ready_for,
};
use mailroom_store::{Job, MailboxChange, MailboxRecord, ServerProfile, ServerProfileInput};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_profiles, create_profile))
        .routes(routes!(get_profile, update_profile, delete_profile))
        .routes(routes!(test_profile_mailboxes))
        .routes(routes!(get_email_settings, put_email_settings))
        .routes(routes!(list_mailboxes, bulk_update_mailboxes))
        .routes(routes!(apply_defaults))
        .routes(routes!(get_mailbox, update_mailbox))
        .routes(routes!(approve_mailbox))
        .routes(routes!(reject_mailbox))
        .routes(routes!(test_mailbox))
        .routes(routes!(get_job))
        .routes(routes!(list_alerts))
        .routes(routes!(dismiss_alert))
}

// ----- server profiles -----

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    pub host: String,
    pub port: Option<u16>,
    /// `none`, `starttls` or `tls` (default).
    pub security: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloudEndpointsBody {
    pub graph_base_url: String,
    pub authority: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProfile {
    pub name: String,
    /// `imap-smtp` or `exchange-online`.
    pub kind: String,
    pub incoming: Option<EndpointBody>,
    pub outgoing: Option<EndpointBody>,
    /// Microsoft 365 endpoints (overridable for sovereign clouds).
    pub endpoints: Option<CloudEndpointsBody>,
    /// `password` (default) or `oauth2`.
    pub auth_type: Option<String>,
    /// `oauth2` profiles: the app registration users connect their mailboxes with
    /// (`GET /v1/oauth/connect`).
    pub app_registration_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    #[serde(default)]
    pub is_default_for_new_mailboxes: bool,
    /// `{poll_interval_s, max_connections, process_from, folders, use_idle}`.
    #[schema(value_type = Option<Object>)]
    pub processing: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfile {
    pub name: Option<String>,
    pub incoming: Option<EndpointBody>,
    pub outgoing: Option<EndpointBody>,
    pub endpoints: Option<CloudEndpointsBody>,
    pub auth_type: Option<String>,
    pub app_registration_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    pub is_default_for_new_mailboxes: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub processing: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub host: String,
    pub port: u16,
    pub security: String,
}

impl From<&ServerEndpoint> for EndpointView {
    fn from(e: &ServerEndpoint) -> Self {
        Self {
            host: e.host.clone(),
            port: e.port,
            security: e.security.to_string(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProfileView {
    pub id: Uuid,
    pub name: String,
    pub kind: String,
    pub incoming: EndpointView,
    pub outgoing: EndpointView,
    pub endpoints: CloudEndpointsBody,
    pub auth_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_registration_id: Option<Uuid>,
    pub owner_user_id: Option<Uuid>,
    pub is_default_for_new_mailboxes: bool,
    #[schema(value_type = Object)]
    pub processing: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&ServerProfile> for ProfileView {
    fn from(p: &ServerProfile) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            kind: p.kind.to_string(),
            incoming: (&p.incoming).into(),
            outgoing: (&p.outgoing).into(),
            endpoints: CloudEndpointsBody {
                graph_base_url: p.endpoints.graph_base_url.clone(),
                authority: p.endpoints.authority.clone(),
            },
            auth_type: p.auth_type.to_string(),
            app_registration_id: p.endpoints.app_registration_id,
            owner_user_id: p.owner_user_id,
            is_default_for_new_mailboxes: p.is_default,
            processing: serde_json::to_value(&p.processing).expect("options serialize"),
            created_at: rfc3339(p.created_at_ms),
            updated_at: rfc3339(p.updated_at_ms),
        }
    }
}

fn endpoint(
    field: &str,
    body: &EndpointBody,
    default_port: fn(Security) -> u16,
) -> Result<ServerEndpoint, ValidationError> {
    ServerEndpoint::parse(
        field,
        &body.host,
        body.port,
        body.security.as_deref(),
        default_port,
    )
}

fn processing(raw: Option<serde_json::Value>) -> Result<ProcessingOptions, ValidationError> {
    match raw {
        None => Ok(ProcessingOptions::default()),
        Some(value) => serde_json::from_value::<ProcessingOptions>(value)
            .map_err(|e| ValidationError::new("processing", e.to_string()))?
            .validate(),
    }
}

/// Microsoft 365's IMAP and SMTP servers, for Exchange Online profiles that name none.
fn exchange_default(incoming: bool) -> EndpointBody {
    EndpointBody {
        host: if incoming {
            "outlook.office365.com"
        } else {
            "smtp.office365.com"
        }
        .into(),
        port: Some(if incoming { 993 } else { 587 }),
        security: Some(if incoming { "tls" } else { "starttls" }.into()),
    }
}

async fn check_owner(state: &AppState, owner: Option<Uuid>) -> ApiResult<()> {
    if let Some(owner) = owner {
        state
            .store
            .user(owner)
            .await
            .map_err(|_| ApiError::invalid("owner_user_id", format!("unknown user {owner}")))?;
    }
    Ok(())
}

/// List server profiles.
#[utoipa::path(get, path = "/v1/server-profiles", tag = "mailboxes", responses((status = 200, body = Vec<ProfileView>)))]
async fn list_profiles(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<ProfileView>>> {
    Ok(axum::Json(
        state
            .store
            .server_profiles()
            .await?
            .iter()
            .map(ProfileView::from)
            .collect(),
    ))
}

/// Describe a mail service once: its incoming (IMAP) and outgoing (SMTP) servers, how mailboxes
/// sign in, and how they are processed.
#[utoipa::path(post, path = "/v1/server-profiles", tag = "mailboxes", request_body = CreateProfile,
    responses((status = 201, body = ProfileView), (status = 409, body = ErrorBody, description = "`profile_name_taken`"),
        (status = 422, body = ErrorBody)))]
async fn create_profile(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateProfile>,
) -> ApiResult<(StatusCode, axum::Json<ProfileView>)> {
    let kind: ProfileKind = body
        .kind
        .parse()
        .map_err(|e: ValidationError| e.at("kind"))?;
    let (incoming, outgoing) = match kind {
        ProfileKind::ImapSmtp => (
            body.incoming.ok_or_else(|| {
                ApiError::invalid(
                    "incoming",
                    "an imap-smtp profile needs its incoming (IMAP) server",
                )
            })?,
            body.outgoing.ok_or_else(|| {
                ApiError::invalid(
                    "outgoing",
                    "an imap-smtp profile needs its outgoing (SMTP) server",
                )
            })?,
        ),
        ProfileKind::ExchangeOnline => (
            body.incoming.unwrap_or_else(|| exchange_default(true)),
            body.outgoing.unwrap_or_else(|| exchange_default(false)),
        ),
    };
    check_owner(&state, body.owner_user_id).await?;
    let input = ServerProfileInput {
        name: parse_display_text("name", &body.name)?,
        kind,
        incoming: endpoint("incoming", &incoming, ServerEndpoint::imap_port)?,
        outgoing: endpoint("outgoing", &outgoing, ServerEndpoint::submission_port)?,
        endpoints: match body.endpoints {
            Some(e) => CloudEndpoints {
                graph_base_url: e.graph_base_url,
                authority: e.authority,
                app_registration_id: body.app_registration_id,
            }
            .validate()?,
            None => CloudEndpoints {
                app_registration_id: body.app_registration_id,
                ..CloudEndpoints::default()
            },
        },
        auth_type: body
            .auth_type
            .as_deref()
            .map(str::parse::<AuthType>)
            .transpose()
            .map_err(|e| e.at("auth_type"))?
            .unwrap_or(AuthType::Password),
        owner_user_id: body.owner_user_id,
        is_default: body.is_default_for_new_mailboxes,
        processing: processing(body.processing)?,
    };
    check_oauth_profile(&state, &input).await?;
    let profile = state.store.create_server_profile(&input).await?;
    let view = ProfileView::from(&profile);
    audit(
        &state,
        &principal,
        "server_profile.created",
        "server_profile",
        &profile.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Show a server profile.
#[utoipa::path(get, path = "/v1/server-profiles/{id}", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody)))]
async fn get_profile(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<ProfileView>> {
    Ok(axum::Json(ProfileView::from(
        &state.store.server_profile(id).await?,
    )))
}

/// An `oauth2` profile names an existing app registration; others name none.
async fn check_oauth_profile(state: &AppState, input: &ServerProfileInput) -> ApiResult<()> {
    match (input.auth_type, input.endpoints.app_registration_id) {
        (AuthType::Oauth2, None) => Err(ApiError::invalid(
            "app_registration_id",
            "an oauth2 profile needs the app registration its users connect their mailboxes with",
        )),
        (AuthType::Password, Some(_)) => Err(ApiError::invalid(
            "app_registration_id",
            "only oauth2 profiles take an app registration",
        )),
        (_, Some(id)) => match state.store.app_registration(id).await {
            Ok(_) => Ok(()),
            Err(mailroom_store::StoreError::NotFound(_)) => Err(ApiError::invalid(
                "app_registration_id",
                format!("there is no app registration {id}"),
            )),
            Err(other) => Err(other.into()),
        },
        _ => Ok(()),
    }
}

/// Change a server profile. Changing its servers clears the passwords of its mailboxes (they were
/// given for the old servers) and disables them until they are tested again.
#[utoipa::path(patch, path = "/v1/server-profiles/{id}", tag = "mailboxes", params(("id" = Uuid, Path)), request_body = UpdateProfile,
    responses((status = 200, body = ProfileView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_profile(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateProfile>,
) -> ApiResult<axum::Json<ProfileView>> {
    let current = state.store.server_profile(id).await?;
    if body.owner_user_id.is_some() {
        check_owner(&state, body.owner_user_id).await?;
    }
    let input = ServerProfileInput {
        name: match &body.name {
            Some(name) => parse_display_text("name", name)?,
            None => current.name.clone(),
        },
        kind: current.kind,
        incoming: match &body.incoming {
            Some(e) => endpoint("incoming", e, ServerEndpoint::imap_port)?,
            None => current.incoming.clone(),
        },
        outgoing: match &body.outgoing {
            Some(e) => endpoint("outgoing", e, ServerEndpoint::submission_port)?,
            None => current.outgoing.clone(),
        },
        endpoints: match body.endpoints {
            Some(e) => CloudEndpoints {
                graph_base_url: e.graph_base_url,
                authority: e.authority,
                app_registration_id: body
                    .app_registration_id
                    .or(current.endpoints.app_registration_id),
            }
            .validate()?,
            None => CloudEndpoints {
                app_registration_id: body
                    .app_registration_id
                    .or(current.endpoints.app_registration_id),
                ..current.endpoints.clone()
            },
        },
        auth_type: match body.auth_type.as_deref() {
            Some(raw) => raw
                .parse()
                .map_err(|e: ValidationError| e.at("auth_type"))?,
            None => current.auth_type,
        },
        owner_user_id: body.owner_user_id.or(current.owner_user_id),
        is_default: body
            .is_default_for_new_mailboxes
            .unwrap_or(current.is_default),
        processing: match body.processing {
            Some(raw) => processing(Some(raw))?,
            None => current.processing.clone(),
        },
    };
    check_oauth_profile(&state, &input).await?;
    let updated = state.store.update_server_profile(id, &input).await?;
    let (before, after) = (ProfileView::from(&current), ProfileView::from(&updated));
    audit(
        &state,
        &principal,
        "server_profile.updated",
        "server_profile",
        &id.to_string(),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Delete a server profile no mailbox uses.
#[utoipa::path(delete, path = "/v1/server-profiles/{id}", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "`profile_in_use`: names the mailboxes that use it")))]
async fn delete_profile(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let current = state.store.server_profile(id).await?;
    state.store.delete_server_profile(id).await?;
    let before = ProfileView::from(&current);
    audit(
        &state,
        &principal,
        "server_profile.deleted",
        "server_profile",
        &id.to_string(),
        Some(&before),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Test & enable every mailbox of this profile, as a background job.
#[utoipa::path(post, path = "/v1/server-profiles/{id}/test-mailboxes", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody)))]
async fn test_profile_mailboxes(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<JobView>)> {
    state.store.server_profile(id).await?;
    let ids: Vec<Uuid> = state
        .store
        .mailboxes(Some(id), None)
        .await?
        .iter()
        .map(|m| m.id)
        .collect();
    let job = start_test_job(
        &state,
        &principal,
        &ids,
        None,
        serde_json::json!({"profile_id": id}),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)))
}

// ----- organisation settings -----

#[derive(Debug, Serialize, ToSchema)]
pub struct EmailSettingsView {
    pub default_profile_id: Option<String>,
    /// `server-side-sync` or `none`.
    pub incoming: String,
    pub outgoing: String,
    /// Appointments, contacts and tasks.
    pub act: String,
    pub process_only_approved_users: bool,
    pub process_only_approved_queues: bool,
    pub require_privilege_to_self_approve: bool,
}

impl From<&EmailSettings> for EmailSettingsView {
    fn from(s: &EmailSettings) -> Self {
        Self {
            default_profile_id: s.default_profile_id.clone(),
            incoming: s.incoming.to_string(),
            outgoing: s.outgoing.to_string(),
            act: s.act.to_string(),
            process_only_approved_users: s.process_only_approved_users,
            process_only_approved_queues: s.process_only_approved_queues,
            require_privilege_to_self_approve: s.require_privilege_to_self_approve,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutEmailSettings {
    /// A profile id, or `null` for none.
    #[serde(default, deserialize_with = "crate::routes::users::double_option")]
    #[schema(value_type = Option<String>)]
    pub default_profile_id: Option<Option<Uuid>>,
    pub incoming: Option<String>,
    pub outgoing: Option<String>,
    pub act: Option<String>,
    pub process_only_approved_users: Option<bool>,
    pub process_only_approved_queues: Option<bool>,
    pub require_privilege_to_self_approve: Option<bool>,
}

/// The organisation's email settings.
#[utoipa::path(get, path = "/v1/settings/email", tag = "mailboxes", responses((status = 200, body = EmailSettingsView)))]
async fn get_email_settings(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<EmailSettingsView>> {
    Ok(axum::Json((&state.store.email_settings().await?).into()))
}

fn sync_method(
    field: &str,
    raw: Option<&str>,
    current: SyncMethod,
) -> Result<SyncMethod, ValidationError> {
    raw.map(|r| r.parse::<SyncMethod>().map_err(|e| e.at(field)))
        .transpose()
        .map(|m| m.unwrap_or(current))
}

/// Change the organisation's email settings; fields left out keep their value.
#[utoipa::path(put, path = "/v1/settings/email", tag = "mailboxes", request_body = PutEmailSettings,
    responses((status = 200, body = EmailSettingsView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn put_email_settings(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<PutEmailSettings>,
) -> ApiResult<axum::Json<EmailSettingsView>> {
    let current = state.store.email_settings().await?;
    let next = EmailSettings {
        default_profile_id: match body.default_profile_id {
            Some(id) => id.map(|i| i.to_string()),
            None => current.default_profile_id.clone(),
        },
        incoming: sync_method("incoming", body.incoming.as_deref(), current.incoming)?,
        outgoing: sync_method("outgoing", body.outgoing.as_deref(), current.outgoing)?,
        act: sync_method("act", body.act.as_deref(), current.act)?,
        process_only_approved_users: body
            .process_only_approved_users
            .unwrap_or(current.process_only_approved_users),
        process_only_approved_queues: body
            .process_only_approved_queues
            .unwrap_or(current.process_only_approved_queues),
        require_privilege_to_self_approve: body
            .require_privilege_to_self_approve
            .unwrap_or(current.require_privilege_to_self_approve),
    };
    let saved = state.store.set_email_settings(&next).await?;
    let (before, after) = (
        EmailSettingsView::from(&current),
        EmailSettingsView::from(&saved),
    );
    audit(
        &state,
        &principal,
        "settings.email.updated",
        "settings",
        "email",
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

// ----- mailboxes -----

#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialsView {
    pub username: Option<String>,
    /// Whether a password is stored (it is never returned).
    pub has_password: bool,
    /// Connected with OAuth 2.0: the app registration whose refresh token it holds (never the token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth_registration_id: Option<Uuid>,
}

/// Whether a direction of the mailbox is processed now, and if not, why.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessView {
    pub ready: bool,
    pub code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MailboxView {
    pub id: Uuid,
    /// `user` or `queue`.
    pub kind: String,
    pub user_id: Option<Uuid>,
    pub queue_id: Option<Uuid>,
    pub email_address: String,
    pub profile_id: Option<Uuid>,
    pub incoming: String,
    pub outgoing: String,
    pub act: String,
    pub credentials: CredentialsView,
    /// `empty`, `pending`, `approved` or `rejected`.
    pub approval: String,
    /// `not-run`, `success` or `failure`.
    pub incoming_status: String,
    pub outgoing_status: String,
    pub act_status: String,
    pub enabled: bool,
    pub last_test_at: Option<String>,
    pub last_error: Option<String>,
    /// `all`, `responses-to-tracked`, `known-contacts` or `none`.
    pub filter: String,
    /// When a transiently failed test is tried again.
    pub next_test_at: Option<String>,
    pub test_tries: u32,
    /// Whether incoming mail is synchronized now, and why not.
    pub incoming_readiness: ReadinessView,
    /// Whether mail is sent from this mailbox now, and why not.
    pub outgoing_readiness: ReadinessView,
}

fn mailbox_view(m: &MailboxRecord, settings: &EmailSettings) -> MailboxView {
    let readiness =
        |direction: Direction| match ready_for(Some(&m.readiness()), direction, settings) {
            Ok(()) => ReadinessView {
                ready: true,
                code: None,
                message: None,
            },
            Err(step) => ReadinessView {
                ready: false,
                code: Some(step.code().into()),
                message: Some(step.message(direction.as_str())),
            },
        };
    MailboxView {
        id: m.id,
        kind: m.kind.to_string(),
        user_id: m.user_id,
        queue_id: m.queue_id,
        email_address: m.email_address.to_string(),
        profile_id: m.profile_id,
        incoming: m.incoming.to_string(),
        outgoing: m.outgoing.to_string(),
        act: m.act.to_string(),
        credentials: CredentialsView {
            username: m.username.clone(),
            has_password: m.has_password,
            oauth_registration_id: m.oauth_registration_id,
        },
        approval: m.approval.to_string(),
        incoming_status: m.incoming_status.to_string(),
        outgoing_status: m.outgoing_status.to_string(),
        act_status: m.act_status.to_string(),
        enabled: m.enabled,
        last_test_at: m.last_test_at_ms.map(rfc3339),
        last_error: m.last_error.clone(),
        filter: m.filter.to_string(),
        next_test_at: m.next_test_at_ms.map(rfc3339),
        test_tries: m.test_tries,
        incoming_readiness: readiness(Direction::Incoming),
        outgoing_readiness: readiness(Direction::Outgoing),
    }
}

fn is_setup(principal: &Principal) -> bool {
    principal.user.grants.allows(&PermissionSet::EmailSetup)
}

/// A user reads and edits their own mailbox; anyone else's needs `email-setup`.
fn check_access(principal: &Principal, mailbox: &MailboxRecord) -> ApiResult<()> {
    if is_setup(principal) || mailbox.user_id == Some(principal.user.id) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mailbox_not_yours",
            "this is not your mailbox: reading or changing another user's or a queue's mailbox needs the email-setup permission set",
        ))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct MailboxQuery {
    /// Only the mailboxes of this profile.
    pub profile_id: Option<Uuid>,
}

/// List mailboxes: every mailbox for `email-setup`, otherwise one's own.
#[utoipa::path(get, path = "/v1/mailboxes", tag = "mailboxes", params(MailboxQuery), responses((status = 200, body = Vec<MailboxView>)))]
async fn list_mailboxes(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<MailboxQuery>,
) -> ApiResult<axum::Json<Vec<MailboxView>>> {
    let own = (!is_setup(&principal)).then_some(principal.user.id);
    let settings = state.store.email_settings().await?;
    Ok(axum::Json(
        state
            .store
            .mailboxes(query.profile_id, own)
            .await?
            .iter()
            .map(|m| mailbox_view(m, &settings))
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxSet {
    pub email_address: Option<String>,
    /// A profile id, or `null` for none.
    #[serde(default, deserialize_with = "crate::routes::users::double_option")]
    #[schema(value_type = Option<String>)]
    pub profile_id: Option<Option<Uuid>>,
    /// `server-side-sync` or `none`.
    pub incoming: Option<String>,
    pub outgoing: Option<String>,
    pub act: Option<String>,
    /// `all`, `responses-to-tracked`, `known-contacts` or `none`.
    pub filter: Option<String>,
    /// The sign-in name; `null` removes the credentials.
    #[serde(default, deserialize_with = "crate::routes::users::double_option")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
    /// Write-only; stored encrypted, never returned.
    #[serde(default, deserialize_with = "crate::routes::users::double_option")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Option<String>>,
}

impl MailboxSet {
    /// The fields a mailbox's own user may change without `email-setup`.
    fn only_own_fields(&self) -> bool {
        self.email_address.is_none()
            && self.profile_id.is_none()
            && self.incoming.is_none()
            && self.outgoing.is_none()
            && self.act.is_none()
    }

    fn parse(self) -> ApiResult<MailboxChange> {
        let method = |field: &str, raw: Option<String>| {
            raw.map(|r| r.parse::<SyncMethod>().map_err(|e| e.at(field)))
                .transpose()
        };
        if let Some(Some(password)) = &self.password
            && (password.is_empty()
                || password.len() > 1024
                || password.contains(['\r', '\n', '\0']))
        {
            return Err(ApiError::invalid(
                "password",
                "must be 1-1024 bytes without CR, LF or NUL",
            ));
        }
        let username = match self.username {
            Some(Some(u)) => {
                let u = u.trim().to_owned();
                if u.is_empty() || u.len() > 320 || u.chars().any(char::is_control) {
                    return Err(ApiError::invalid(
                        "username",
                        "must be 1-320 characters without control characters",
                    ));
                }
                Some(Some(u))
            }
            other => other,
        };
        Ok(MailboxChange {
            email_address: self
                .email_address
                .map(|a| EmailAddress::parse(a.trim()).map_err(|e| e.at("email_address")))
                .transpose()?,
            profile_id: self.profile_id,
            incoming: method("incoming", self.incoming)?,
            outgoing: method("outgoing", self.outgoing)?,
            act: method("act", self.act)?,
            filter: self
                .filter
                .map(|f| f.parse::<MailboxFilter>().map_err(|e| e.at("filter")))
                .transpose()?,
            username,
            password: self.password,
        })
    }
}

/// Show a mailbox (one's own, or any with `email-setup`).
#[utoipa::path(get, path = "/v1/mailboxes/{id}", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = MailboxView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_mailbox(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MailboxView>> {
    let mailbox = state.store.mailbox(id).await?;
    check_access(&principal, &mailbox)?;
    let settings = state.store.email_settings().await?;
    Ok(axum::Json(mailbox_view(&mailbox, &settings)))
}

/// Change a mailbox. Its own user may set the credentials and the filter; everything else needs
/// `email-setup`. A new profile, address or username clears the stored password.
#[utoipa::path(patch, path = "/v1/mailboxes/{id}", tag = "mailboxes", params(("id" = Uuid, Path)), request_body = MailboxSet,
    responses((status = 200, body = MailboxView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_mailbox(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<MailboxSet>,
) -> ApiResult<axum::Json<MailboxView>> {
    let current = state.store.mailbox(id).await?;
    check_access(&principal, &current)?;
    if !is_setup(&principal) && !body.only_own_fields() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mailbox_field_needs_setup",
            "on your own mailbox you may change the username, password and filter; the address, profile and delivery methods need the email-setup permission set",
        ));
    }
    let change = body.parse()?;
    let settings = state.store.email_settings().await?;
    let updated = state
        .store
        .update_mailboxes(&[id], &change)
        .await?
        .remove(0);
    let (before, after) = (
        mailbox_view(&current, &settings),
        mailbox_view(&updated, &settings),
    );
    audit(
        &state,
        &principal,
        "mailbox.updated",
        "mailbox",
        &id.to_string(),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkMailboxUpdate {
    pub ids: Vec<Uuid>,
    pub set: MailboxSet,
}

fn check_ids(ids: &[Uuid]) -> ApiResult<()> {
    if ids.is_empty() || ids.len() > 10_000 {
        return Err(ApiError::invalid(
            "ids",
            "name between 1 and 10000 mailboxes",
        ));
    }
    Ok(())
}

/// Change several mailboxes at once (profile, delivery methods, filter): all of them or none.
#[utoipa::path(patch, path = "/v1/mailboxes", tag = "mailboxes", request_body = BulkMailboxUpdate,
    responses((status = 200, body = Vec<MailboxView>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn bulk_update_mailboxes(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<BulkMailboxUpdate>,
) -> ApiResult<axum::Json<Vec<MailboxView>>> {
    check_ids(&body.ids)?;
    if body.set.password.is_some()
        || body.set.username.is_some()
        || body.set.email_address.is_some()
    {
        return Err(ApiError::invalid(
            "set",
            "credentials and addresses belong to one mailbox each: change them on the mailbox (PATCH /v1/mailboxes/{id})",
        ));
    }
    let change = body.set.parse()?;
    let updated = state.store.update_mailboxes(&body.ids, &change).await?;
    let settings = state.store.email_settings().await?;
    let views: Vec<MailboxView> = updated.iter().map(|m| mailbox_view(m, &settings)).collect();
    audit(
        &state,
        &principal,
        "mailbox.bulk_updated",
        "mailbox",
        &format!("{} mailboxes", views.len()),
        None,
        Some(&views),
    )
    .await?;
    Ok(axum::Json(views))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailboxIds {
    pub ids: Vec<Uuid>,
}

/// Give mailboxes the organisation's default profile and delivery methods, then test & enable them
/// as a background job.
#[utoipa::path(post, path = "/v1/mailboxes/apply-defaults", tag = "mailboxes", request_body = MailboxIds,
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn apply_defaults(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<MailboxIds>,
) -> ApiResult<(StatusCode, axum::Json<JobView>)> {
    check_ids(&body.ids)?;
    let settings = state.store.email_settings().await?;
    let profile = settings
        .default_profile_id
        .as_deref()
        .map(|p| p.parse::<Uuid>())
        .transpose()
        .map_err(|_| ApiError::internal("the default profile id is not a UUID"))?;
    let change = MailboxChange {
        profile_id: Some(profile),
        incoming: Some(settings.incoming),
        outgoing: Some(settings.outgoing),
        act: Some(settings.act),
        ..MailboxChange::default()
    };
    state.store.update_mailboxes(&body.ids, &change).await?;
    let job = start_test_job(
        &state,
        &principal,
        &body.ids,
        None,
        serde_json::json!({"applied_defaults": true}),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)))
}

async fn judge_approval(
    state: &AppState,
    principal: &Principal,
    mailbox: &MailboxRecord,
) -> ApiResult<()> {
    let settings = state.store.email_settings().await?;
    let me = principal.user.id.to_string();
    let owner = mailbox.user_id.map(|u| u.to_string());
    may_approve(
        &Approver {
            user_id: &me,
            contact_email: principal.user.contact_email.as_ref(),
            grants: &principal.user.grants,
        },
        &ApprovalTarget {
            kind: mailbox.kind,
            user_id: owner.as_deref(),
            email_address: &mailbox.email_address,
        },
        &settings,
    )
    .map_err(|refusal| ApiError::new(StatusCode::FORBIDDEN, refusal.code(), refusal.message()))
}

async fn set_approval(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
    approval: Approval,
) -> ApiResult<axum::Json<MailboxView>> {
    let mailbox = state.store.mailbox(id).await?;
    judge_approval(state, principal, &mailbox).await?;
    let updated = state.store.set_mailbox_approval(id, approval).await?;
    let settings = state.store.email_settings().await?;
    let (before, after) = (
        mailbox_view(&mailbox, &settings),
        mailbox_view(&updated, &settings),
    );
    let action = if approval == Approval::Approved {
        "mailbox.approved"
    } else {
        "mailbox.rejected"
    };
    audit(
        state,
        principal,
        action,
        "mailbox",
        &id.to_string(),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Approve the mailbox's email address. Another's (or a queue's) needs `mailbox-approve` and either
/// `email-admin` or the `delegated-mailbox-approver` role; one's own needs nothing unless the
/// organisation requires the permission.
#[utoipa::path(post, path = "/v1/mailboxes/{id}/approve", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = MailboxView), (status = 404, body = ErrorBody),
        (status = 403, body = ErrorBody, description = "`mailbox_approve_permission_missing`, `mailbox_approver_role_missing` or `self_approval_needs_permission`")))]
async fn approve_mailbox(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MailboxView>> {
    set_approval(&state, &principal, id, Approval::Approved).await
}

/// Reject the mailbox's email address (the same rules as approving).
#[utoipa::path(post, path = "/v1/mailboxes/{id}/reject", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = MailboxView), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn reject_mailbox(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MailboxView>> {
    set_approval(&state, &principal, id, Approval::Rejected).await
}

/// Test & enable the mailbox as a background job: incoming (connect, TLS, log in, SELECT INBOX)
/// and outgoing (connect, TLS, EHLO, AUTH; nothing is sent). A user testing their own mailbox
/// approves its address on the way, when they may.
#[utoipa::path(post, path = "/v1/mailboxes/{id}/test", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 202, body = JobView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn test_mailbox(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<(StatusCode, axum::Json<JobView>)> {
    let mailbox = state.store.mailbox(id).await?;
    check_access(&principal, &mailbox)?;
    let own = mailbox.user_id == Some(principal.user.id);
    let approve = (own
        && mailbox.approval != Approval::Approved
        && judge_approval(&state, &principal, &mailbox).await.is_ok())
    .then_some(id);
    let job = start_test_job(
        &state,
        &principal,
        &[id],
        approve,
        serde_json::json!({"mailbox_id": id}),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, axum::Json(job)))
}

// ----- jobs -----

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub kind: String,
    /// `queued`, `running` or `done`.
    pub state: String,
    pub total: u32,
    pub done: u32,
    pub succeeded: u32,
    pub failed: u32,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl From<&Job> for JobView {
    fn from(j: &Job) -> Self {
        Self {
            id: j.id,
            kind: j.kind.clone(),
            state: j.state.clone(),
            total: j.total,
            done: j.done,
            succeeded: j.succeeded,
            failed: j.failed,
            created_at: rfc3339(j.created_at_ms),
            finished_at: j.finished_at_ms.map(rfc3339),
        }
    }
}

async fn start_test_job(
    state: &AppState,
    principal: &Principal,
    ids: &[Uuid],
    approve_mailbox: Option<Uuid>,
    mut params: serde_json::Value,
) -> ApiResult<JobView> {
    if let Some(id) = approve_mailbox {
        params["approve_mailbox"] = serde_json::Value::String(id.to_string());
    }
    let job = state
        .store
        .create_job(
            mailroom_engine::TEST_MAILBOXES_JOB,
            &principal.author_id(),
            &params,
            ids,
        )
        .await?;
    state.engine.mailboxes().job_created();
    Ok(JobView::from(&job))
}

/// A background job's progress (one's own, or any with `email-setup`).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody)))]
async fn get_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<JobView>> {
    let job = state.store.job(id).await?;
    if job.created_by != principal.author_id() && !is_setup(&principal) {
        return Err(ApiError::not_found(format!("job {id} not found")));
    }
    Ok(axum::Json(JobView::from(&job)))
}

// ----- alerts -----

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub id: Uuid,
    pub kind: String,
    pub mailbox_id: Option<Uuid>,
    pub message: String,
    pub created_at: String,
    pub dismissed_at: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AlertQuery {
    /// Include dismissed alerts.
    #[serde(default)]
    pub include_dismissed: bool,
}

/// The signed-in user's alerts, newest first.
#[utoipa::path(get, path = "/v1/alerts", tag = "mailboxes", params(AlertQuery), responses((status = 200, body = Vec<AlertView>)))]
async fn list_alerts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<AlertQuery>,
) -> ApiResult<axum::Json<Vec<AlertView>>> {
    Ok(axum::Json(
        state
            .store
            .alerts(principal.user.id, query.include_dismissed)
            .await?
            .into_iter()
            .map(|a| AlertView {
                id: a.id,
                kind: a.kind,
                mailbox_id: a.mailbox_id,
                message: a.message,
                created_at: rfc3339(a.created_at_ms),
                dismissed_at: a.dismissed_at_ms.map(rfc3339),
            })
            .collect(),
    ))
}

/// Dismiss one of the signed-in user's alerts.
#[utoipa::path(post, path = "/v1/alerts/{id}/dismiss", tag = "mailboxes", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn dismiss_alert(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.store.dismiss_alert(principal.user.id, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
