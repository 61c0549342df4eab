//! `/v1/addin`: the app inside the user's mail client (MISSION D1–D3) — who may use it, its
//! deployment, the pane's lookups and tracking, and the Office add-in manifest that points a mail
//! client at the pane.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::routes::inbound::RecordRef;
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailroom_core::mail_client_app::{
    Deployed, DeploymentMode, DeploymentStatus, NOT_AUTHORISED, deployment_status, ineligible,
};
use mailroom_core::message::{RelatedRecord, Relation};
use mailroom_store::AppUser;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(manifest))
        .routes(routes!(get_me, add_me))
        .routes(routes!(list_users))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(deploy))
        .routes(routes!(lookup))
        .routes(routes!(set_regarding, untrack))
}

/// A prerequisite of the app the user lacks.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MissingView {
    /// `role_missing`, `mailbox_missing`, `incoming_not_server_side_sync`, `mailbox_not_approved`
    /// or `mailbox_not_tested`.
    pub code: String,
    /// What an administrator does about it.
    pub message: String,
}

/// One user and the app.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppUserView {
    pub user_id: Uuid,
    pub name: String,
    /// `not-eligible`, `eligible` (not deployed to them yet), `pending` (deployed; their mail client
    /// has not opened it yet) or `added` (their mail client opened it).
    pub status: String,
    pub eligible: bool,
    pub missing: Vec<MissingView>,
    /// The mailbox the app tracks mail in, when the user has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mailbox_address: Option<String>,
    /// When it was deployed to them or when their mail client opened it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_since: Option<String>,
}

fn view(user: &AppUser, mode: DeploymentMode) -> AppUserView {
    let missing = ineligible(
        &user.user.grants,
        user.mailbox.as_ref().map(|m| m.readiness()).as_ref(),
    );
    let eligible = missing.is_empty() && user.user.enabled;
    let status = deployment_status(eligible, mode, user.recorded);
    AppUserView {
        user_id: user.user.id,
        name: user.user.name.clone(),
        status: status.as_str().into(),
        eligible,
        missing: missing
            .iter()
            .map(|m| MissingView {
                code: m.code().into(),
                message: m.message().into(),
            })
            .collect(),
        mailbox_address: user.mailbox.as_ref().map(|m| m.email_address.to_string()),
        status_since: match status {
            DeploymentStatus::Pending | DeploymentStatus::Added => user.recorded_at_ms.map(rfc3339),
            _ => None,
        },
    }
}

/// The signed-in user as the app sees them, refused with the app's words unless eligible.
async fn eligible_caller(state: &AppState, principal: &Principal) -> ApiResult<AppUser> {
    let user = state.store.mail_client_app_user(principal.user.id).await?;
    let mode = state.store.mail_client_app_mode().await?;
    let seen = view(&user, mode);
    if !seen.eligible {
        let lacking: Vec<&str> = seen.missing.iter().map(|m| m.code.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mail_client_app_not_authorised",
            format!("{NOT_AUTHORISED} (missing: {})", lacking.join(", ")),
        ));
    }
    Ok(user)
}

/// The signed-in user and the app: status, and what they lack to use it.
#[utoipa::path(get, path = "/v1/addin/me", tag = "mail-client-app",
    responses((status = 200, body = AppUserView)))]
async fn get_me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<axum::Json<AppUserView>> {
    let user = state.store.mail_client_app_user(principal.user.id).await?;
    let mode = state.store.mail_client_app_mode().await?;
    Ok(axum::Json(view(&user, mode)))
}

/// Add the app for oneself (MISSION D2: users may add it themselves); refused unless eligible.
#[utoipa::path(post, path = "/v1/addin/me", tag = "mail-client-app",
    responses((status = 200, body = AppUserView), (status = 403, body = ErrorBody)))]
async fn add_me(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<axum::Json<AppUserView>> {
    eligible_caller(&state, &principal).await?;
    state
        .store
        .record_mail_client_app(&[principal.user.id], Deployed::Requested)
        .await?;
    get_me(State(state), Extension(principal)).await
}

/// Every user and the app, with the deployment mode.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppUsers {
    /// `automatic` or `manual`.
    pub deployment: String,
    pub users: Vec<AppUserView>,
}

/// Every user's deployment status and what they lack, by name.
#[utoipa::path(get, path = "/v1/addin/users", tag = "mail-client-app",
    responses((status = 200, body = AppUsers)))]
async fn list_users(State(state): State<AppState>) -> ApiResult<axum::Json<AppUsers>> {
    let mode = state.store.mail_client_app_mode().await?;
    let users = state.store.mail_client_app_users().await?;
    Ok(axum::Json(AppUsers {
        deployment: mode.to_string(),
        users: users.iter().map(|u| view(u, mode)).collect(),
    }))
}

/// How the app reaches eligible users.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    /// `automatic` (every eligible user gets it) or `manual` (only those it is deployed to, and
    /// those who add it themselves).
    pub deployment: String,
}

#[utoipa::path(get, path = "/v1/addin/settings", tag = "mail-client-app",
    responses((status = 200, body = AppSettings)))]
async fn get_settings(State(state): State<AppState>) -> ApiResult<axum::Json<AppSettings>> {
    Ok(axum::Json(AppSettings {
        deployment: state.store.mail_client_app_mode().await?.to_string(),
    }))
}

/// Set the deployment mode.
#[utoipa::path(put, path = "/v1/addin/settings", tag = "mail-client-app", request_body = AppSettings,
    responses((status = 200, body = AppSettings), (status = 422, body = ErrorBody)))]
async fn put_settings(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<AppSettings>,
) -> ApiResult<axum::Json<AppSettings>> {
    let mode: DeploymentMode = body.deployment.parse()?;
    let before = get_settings(State(state.clone())).await?.0;
    state.store.set_mail_client_app_mode(mode).await?;
    let after = AppSettings {
        deployment: mode.to_string(),
    };
    audit(
        &state,
        &principal,
        "mail_client_app.settings",
        "settings",
        "mail_client_app",
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Whom to deploy the app to: every eligible user now, or the users named.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    #[serde(default)]
    pub all_eligible: bool,
    #[serde(default)]
    pub users: Vec<Uuid>,
}

/// Deploy the app to every eligible user now, or to selected users (each of whom must be
/// eligible: otherwise nothing is deployed and `user_not_eligible` names who lacks what).
#[utoipa::path(post, path = "/v1/addin/deploy", tag = "mail-client-app", request_body = DeployRequest,
    responses((status = 200, body = AppUsers), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn deploy(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<DeployRequest>,
) -> ApiResult<axum::Json<AppUsers>> {
    if body.all_eligible != body.users.is_empty() {
        return Err(ApiError::invalid(
            "users",
            "give either \"all_eligible\": true or the list of users, not both or neither",
        ));
    }
    let mode = state.store.mail_client_app_mode().await?;
    let users = state.store.mail_client_app_users().await?;
    let views: Vec<AppUserView> = users.iter().map(|u| view(u, mode)).collect();
    let targets: Vec<Uuid> = if body.all_eligible {
        views
            .iter()
            .filter(|v| v.eligible)
            .map(|v| v.user_id)
            .collect()
    } else {
        let mut targets = Vec::new();
        for id in &body.users {
            let Some(seen) = views.iter().find(|v| v.user_id == *id) else {
                return Err(ApiError::not_found(format!("user {id} not found")).at("users"));
            };
            if !seen.eligible {
                let lacking: Vec<&str> = seen.missing.iter().map(|m| m.code.as_str()).collect();
                let lacking = if lacking.is_empty() {
                    "the user is disabled".to_owned()
                } else {
                    lacking.join(", ")
                };
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "user_not_eligible",
                    format!(
                        "{} is not eligible for the mail-client app: {lacking}",
                        seen.name
                    ),
                )
                .at("users"));
            }
            targets.push(*id);
        }
        targets
    };
    state
        .store
        .record_mail_client_app(&targets, Deployed::Requested)
        .await?;
    audit(
        &state,
        &principal,
        "mail_client_app.deploy",
        "users",
        &targets.len().to_string(),
        None::<&Vec<Uuid>>,
        Some(&targets),
    )
    .await?;
    list_users(State(state)).await
}

/// The message open in the mail client, as the pane reads it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenMessage {
    /// Its `Message-ID`, with or without angle brackets.
    pub message_id: Option<String>,
    /// `ann@example.com` or `Ann <ann@example.com>`, as are `to` and `cc`.
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
}

/// A record of one of the message's participants.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantRecordView {
    pub address: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub id: String,
    /// `contact` (the contact with this address belongs to it) or `mail` (earlier mail from this
    /// address concerns it).
    pub source: String,
}

/// What the pane shows.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaneView {
    /// The business records of the sender and recipients.
    pub records: Vec<ParticipantRecordView>,
    /// Whether the message has been synchronised into the user's mailbox (tracking needs it).
    pub synchronized: bool,
    /// The stored message, when synchronised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound_id: Option<Uuid>,
    /// What the message is tracked to (empty: not tracked).
    pub regarding: Vec<RecordRef>,
}

fn bare_message_id(raw: &str) -> ApiResult<String> {
    let bare = raw.trim().trim_start_matches('<').trim_end_matches('>');
    if bare.is_empty()
        || bare.len() > 998
        || bare
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
    {
        return Err(ApiError::invalid(
            "message_id",
            "a Message-ID is one token like <abc@host.example>",
        ));
    }
    Ok(bare.to_owned())
}

/// The pane's answer for the message; the caller is known to be eligible.
async fn pane(state: &AppState, user: &AppUser, open: &OpenMessage) -> ApiResult<PaneView> {
    let Some(mailbox) = &user.mailbox else {
        return Err(ApiError::internal("an eligible user without a mailbox"));
    };
    let own = mailbox.email_address.as_str().to_ascii_lowercase();
    let mut addresses: Vec<String> = Vec::new();
    for raw in open.from.iter().chain(&open.to).chain(&open.cc) {
        let address = mailroom_core::address::Mailbox::parse(raw)
            .map_err(|e| ApiError::from(e.at("participants")))?
            .address
            .as_str()
            .to_ascii_lowercase();
        if address != own && !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    if addresses.len() > 100 {
        return Err(ApiError::invalid(
            "to",
            "at most 100 participants are looked up",
        ));
    }
    let records = state
        .store
        .records_of_addresses(mailbox.id, &addresses, 50)
        .await?;
    let inbound_id = match &open.message_id {
        Some(raw) => {
            state
                .store
                .inbound_by_message_id(mailbox.id, &bare_message_id(raw)?)
                .await?
        }
        None => None,
    };
    let regarding = match inbound_id {
        Some(id) => state
            .store
            .inbound_detail(id, None)
            .await?
            .related_records
            .iter()
            .map(|r| RecordRef {
                record_type: r.record_type.clone(),
                id: r.record_id.clone(),
            })
            .collect(),
        None => Vec::new(),
    };
    Ok(PaneView {
        records: records
            .into_iter()
            .map(|r| ParticipantRecordView {
                address: r.address,
                record_type: r.record_type,
                id: r.record_id,
                source: r.source.into(),
            })
            .collect(),
        synchronized: inbound_id.is_some(),
        inbound_id,
        regarding,
    })
}

/// What the pane shows for the open message: the records of its sender and recipients, and what
/// it is tracked to. The first call from a user's mail client marks the app added for them.
#[utoipa::path(post, path = "/v1/addin/lookup", tag = "mail-client-app", request_body = OpenMessage,
    responses((status = 200, body = PaneView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn lookup(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(open): ApiJson<OpenMessage>,
) -> ApiResult<axum::Json<PaneView>> {
    let user = eligible_caller(&state, &principal).await?;
    if user.recorded != Some(Deployed::Opened) {
        state
            .store
            .record_mail_client_app(&[user.user.id], Deployed::Opened)
            .await?;
    }
    Ok(axum::Json(pane(&state, &user, &open).await?))
}

/// Track the open message to a record, or change what it is tracked to.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRegarding {
    pub message_id: String,
    pub record: RecordRef,
}

async fn stored_message(state: &AppState, user: &AppUser, raw: &str) -> ApiResult<Uuid> {
    let Some(mailbox) = &user.mailbox else {
        return Err(ApiError::internal("an eligible user without a mailbox"));
    };
    state
        .store
        .inbound_by_message_id(mailbox.id, &bare_message_id(raw)?)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "message_not_synchronized",
                format!(
                    "the message has not been synchronised into {} yet; try again after the next synchronisation",
                    mailbox.email_address
                ),
            )
        })
}

/// Track the message open in the mail client to one record (set regarding), replacing what it was
/// tracked to (change regarding). The message then appears on the record's timeline.
#[utoipa::path(put, path = "/v1/addin/regarding", tag = "mail-client-app", request_body = SetRegarding,
    responses((status = 200, body = PaneView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_regarding(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<SetRegarding>,
) -> ApiResult<axum::Json<PaneView>> {
    let user = eligible_caller(&state, &principal).await?;
    let record = RelatedRecord::new(&body.record.record_type, &body.record.id, Relation::Related)
        .map_err(|e| ApiError::from(e.at("record")))?;
    let id = stored_message(&state, &user, &body.message_id).await?;
    state
        .store
        .set_inbound_related_records(id, std::slice::from_ref(&record))
        .await?;
    tracing::info!(event = "mail_client_app_tracked", inbound_id = %id, record_type = %record.record_type, "message tracked from the mail client");
    let open = OpenMessage {
        message_id: Some(body.message_id),
        from: None,
        to: Vec::new(),
        cc: Vec::new(),
    };
    Ok(axum::Json(pane(&state, &user, &open).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct UntrackQuery {
    /// The open message's `Message-ID`.
    pub message_id: String,
}

/// Untrack the message open in the mail client: it no longer concerns any record.
#[utoipa::path(delete, path = "/v1/addin/regarding", tag = "mail-client-app", params(UntrackQuery),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn untrack(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<UntrackQuery>,
) -> ApiResult<StatusCode> {
    let user = eligible_caller(&state, &principal).await?;
    let id = stored_message(&state, &user, &query.message_id).await?;
    state.store.set_inbound_related_records(id, &[]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where users reach mailroom: the configured public URL, else the scheme and host of the request.
fn public_base(state: &AppState, headers: &HeaderMap) -> ApiResult<String> {
    if let Some(url) = &state.settings.public_url {
        return Ok(url.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "Host",
                "the request has no usable Host header; set public_url in the configuration",
            )
        })?;
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    Ok(format!("{scheme}://{host}"))
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An Office add-in manifest (mail app, read form) pointing the mail client at `/pane`. Its `Id`
/// is this organisation's own: a mail client that tracks with two organisations holds two add-ins,
/// and a mailbox synchronises with one organisation only (MISSION B7). Upload it in the Microsoft 365
/// admin centre (Integrated apps → upload custom apps) to deploy it, or add it as a custom add-in.
/// Mail clients load add-ins over https only: set `public_url`.
#[utoipa::path(get, path = "/v1/addin/manifest.xml", tag = "mail-client-app",
    responses((status = 200, content_type = "application/xml", body = String)))]
async fn manifest(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let base = xml_escape(&public_base(&state, &headers)?);
    let id = state.store.mail_client_app_id().await?;
    let xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<OfficeApp xmlns="http://schemas.microsoft.com/office/appforoffice/1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="MailApp">
  <Id>{id}</Id>
  <Version>1.0.0.0</Version>
  <ProviderName>mailroom</ProviderName>
  <DefaultLocale>en-US</DefaultLocale>
  <DisplayName DefaultValue="mailroom"/>
  <Description DefaultValue="See the business records of a message's sender and recipients, and track the message to a record."/>
  <IconUrl DefaultValue="{base}/console/static/icon-64.png"/>
  <HighResolutionIconUrl DefaultValue="{base}/console/static/icon-128.png"/>
  <SupportUrl DefaultValue="{base}/console"/>
  <AppDomains>
    <AppDomain>{base}</AppDomain>
  </AppDomains>
  <Hosts>
    <Host Name="Mailbox"/>
  </Hosts>
  <Requirements>
    <Sets>
      <Set Name="Mailbox" MinVersion="1.1"/>
    </Sets>
  </Requirements>
  <FormSettings>
    <Form xsi:type="ItemRead">
      <DesktopSettings>
        <SourceLocation DefaultValue="{base}/pane?host=office"/>
        <RequestedHeight>360</RequestedHeight>
      </DesktopSettings>
    </Form>
  </FormSettings>
  <Permissions>ReadItem</Permissions>
  <Rule xsi:type="RuleCollection" Mode="Or">
    <Rule xsi:type="ItemIs" ItemType="Message" FormType="Read"/>
  </Rule>
  <DisableEntityHighlighting>true</DisableEntityHighlighting>
</OfficeApp>
"#
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/xml; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mailroom-manifest.xml\"",
            ),
        ],
        xml,
    )
        .into_response())
}
