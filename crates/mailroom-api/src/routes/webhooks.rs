//! `/v1/webhooks`: receivers of events, their signing secrets (shown once), delivery logs and
//! replays. Deliveries are made by every node's webhook worker (`mailroom-engine`).

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, page_limit};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::webhook::{EventType, SigningSecret, WebhookUrl, is_private_target};
use mailroom_store::{WebhookChange, WebhookEndpoint};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(replay))
        .routes(routes!(event_types))
}

/// A receiver of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    /// Deliver one event at a time, in the order they happened.
    pub ordered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Since when every delivery has failed (an endpoint failing for a day is disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<String>,
    /// During a secret rotation: until when the previous secret still signs beside the new one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Only in the answer to creating the endpoint or rotating its secret: the signing secret
    /// (`whsec_…`), shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&WebhookEndpoint> for WebhookView {
    fn from(w: &WebhookEndpoint) -> Self {
        Self {
            id: w.id,
            url: w.url.clone(),
            events: w.events.iter().map(|e| e.as_str().to_owned()).collect(),
            enabled: w.enabled,
            ordered: w.ordered,
            disabled_reason: w.disabled_reason.clone(),
            failing_since: w.failing_since_ms.map(rfc3339),
            previous_secret_until: w
                .previous_until_ms
                .filter(|until| *until > mailroom_store::now_ms())
                .map(rfc3339),
            created_at: rfc3339(w.created_at_ms),
            updated_at: rfc3339(w.updated_at_ms),
            secret: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// `https://…` (or `http://`); private and loopback addresses only when the server allows them.
    pub url: String,
    /// The event types to deliver, e.g. `["message.sent", "message.failed"]`.
    pub events: Vec<String>,
    #[serde(default)]
    pub ordered: bool,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    /// Enabling a disabled endpoint delivers the events that waited.
    pub enabled: Option<bool>,
    pub ordered: Option<bool>,
}

fn event_list(raw: &[String]) -> ApiResult<Vec<EventType>> {
    if raw.is_empty() {
        return Err(ApiError::invalid("events", "name at least one event type"));
    }
    raw.iter()
        .map(|e| e.parse::<EventType>().map_err(ApiError::from))
        .collect()
}

/// A receiver URL, refused when it names (or resolves only to) a private or local address and the
/// server does not allow those.
async fn receiver_url(state: &AppState, raw: &str) -> ApiResult<String> {
    let url = WebhookUrl::parse(raw)?;
    if state.settings.webhooks_allow_private {
        return Ok(url.as_str().to_owned());
    }
    let private = |why: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook_target_private",
            format!("{why}; webhooks may not reach loopback, private or link-local addresses unless the server allows them ([webhooks] allow_private_targets)"),
        )
        .at("url")
    };
    if let Ok(ip) = url.host().parse::<std::net::IpAddr>() {
        if is_private_target(ip) {
            return Err(private(format!("{ip} is a private or local address")));
        }
    } else if url.host() == "localhost" || url.host().ends_with(".localhost") {
        return Err(private(format!("{} is this machine", url.host())));
    } else if let Ok(found) = tokio::net::lookup_host((url.host(), url.port())).await {
        let found: Vec<_> = found.collect();
        if !found.is_empty() && found.iter().all(|a| is_private_target(a.ip())) {
            return Err(private(format!(
                "{} resolves only to private or local addresses",
                url.host()
            )));
        }
    }
    Ok(url.as_str().to_owned())
}

fn new_secret() -> SigningSecret {
    SigningSecret::from_bytes(
        uuid::Uuid::new_v4()
            .as_bytes()
            .iter()
            .chain(uuid::Uuid::new_v4().as_bytes())
            .copied()
            .collect(),
    )
}

/// Every webhook endpoint.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", responses((status = 200, body = Vec<WebhookView>)))]
async fn list_webhooks(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<WebhookView>>> {
    Ok(axum::Json(
        state
            .store
            .webhooks()
            .await?
            .iter()
            .map(WebhookView::from)
            .collect(),
    ))
}

/// Add a receiver. Its signing secret is in this answer only. Deliveries carry `webhook-id`
/// (`evt_<n>`, the same on every retry), `webhook-timestamp` and `webhook-signature` (`v1,<base64 of
/// HMAC-SHA256 of "id.timestamp.body">`, as the Standard Webhooks specification says), and the body
/// `{"type", "timestamp", "data"}`; a 2xx answer within 10 s is a delivery, anything else is tried
/// again with backoff for up to three days (redirects are not followed).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = CreateWebhook,
    responses((status = 201, body = WebhookView), (status = 422, body = ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<(StatusCode, axum::Json<WebhookView>)> {
    let url = receiver_url(&state, &body.url).await?;
    let events = event_list(&body.events)?;
    let secret = new_secret();
    let endpoint = state
        .store
        .create_webhook(&url, &events, body.ordered, &secret, &principal.author_id())
        .await?;
    let mut view = WebhookView::from(&endpoint);
    audit(
        &state,
        &principal,
        "webhook.created",
        "webhook",
        &endpoint.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    view.secret = Some(secret.expose());
    Ok((StatusCode::CREATED, axum::Json(view)))
}

#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<WebhookView>> {
    Ok(axum::Json(WebhookView::from(
        &state.store.webhook(id).await?,
    )))
}

/// Change a receiver's URL, events, order, or enable / disable it.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)), request_body = UpdateWebhook,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_webhook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<axum::Json<WebhookView>> {
    let before = WebhookView::from(&state.store.webhook(id).await?);
    let change = WebhookChange {
        url: match &body.url {
            Some(raw) => Some(receiver_url(&state, raw).await?),
            None => None,
        },
        events: body.events.as_deref().map(event_list).transpose()?,
        enabled: body.enabled,
        ordered: body.ordered,
    };
    let after = WebhookView::from(&state.store.update_webhook(id, &change).await?);
    audit(
        &state,
        &principal,
        "webhook.updated",
        "webhook",
        &id.to_string(),
        Some(&before),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    let before = WebhookView::from(&state.store.webhook(id).await?);
    state.store.delete_webhook(id).await?;
    audit(
        &state,
        &principal,
        "webhook.deleted",
        "webhook",
        &id.to_string(),
        Some(&before),
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the previous secret keeps signing beside the new one (0–168 hours, default 24):
    /// receivers accept either while they switch.
    pub overlap_hours: Option<u32>,
}

/// A new signing secret, in this answer only; the previous one signs beside it for the overlap.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = Uuid, Path)), request_body = RotateSecret,
    responses((status = 200, body = WebhookView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_secret(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> ApiResult<axum::Json<WebhookView>> {
    let hours = body.overlap_hours.unwrap_or(24);
    if hours > 168 {
        return Err(ApiError::invalid("overlap_hours", "at most 168 hours"));
    }
    let secret = new_secret();
    let endpoint = state
        .store
        .rotate_webhook_secret(id, &secret, i64::from(hours) * 3_600_000)
        .await?;
    let mut view = WebhookView::from(&endpoint);
    audit(
        &state,
        &principal,
        "webhook.secret_rotated",
        "webhook",
        &id.to_string(),
        None::<&WebhookView>,
        Some(&view),
    )
    .await?;
    view.secret = Some(secret.expose());
    Ok(axum::Json(view))
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` the receiver saw.
    pub webhook_id: String,
    pub event_id: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub attempt: u32,
    pub at: String,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// The first 512 characters of the answer.
    pub response: Option<String>,
    /// Why there was no answer.
    pub error: Option<String>,
    /// The delivery's state now: `pending`, `delivered` or `given-up`.
    pub state: String,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DeliveryQuery {
    /// 1–500, default 50.
    pub limit: Option<i64>,
}

/// The endpoint's delivery log, newest attempt first.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = Uuid, Path), DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryView>), (status = 404, body = ErrorBody)))]
async fn deliveries(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> ApiResult<axum::Json<Vec<DeliveryView>>> {
    state.store.webhook(id).await?;
    let limit = page_limit(query.limit, 50)?;
    Ok(axum::Json(
        state
            .store
            .webhook_log(id, i64::from(limit))
            .await?
            .into_iter()
            .map(|l| DeliveryView {
                webhook_id: format!("evt_{}", l.event_id),
                event_id: l.event_id,
                event_type: l.kind,
                attempt: l.number,
                at: rfc3339(l.attempt.at_ms),
                status: l.attempt.status,
                latency_ms: l.attempt.latency_ms,
                response: l.attempt.response,
                error: l.attempt.error,
                state: l.state,
            })
            .collect(),
    ))
}

/// Deliver an event to this endpoint again, now (with the same `webhook-id`).
#[utoipa::path(post, path = "/v1/webhooks/{id}/events/{event_id}/replay", tag = "webhooks",
    params(("id" = Uuid, Path), ("event_id" = i64, Path)),
    responses((status = 202), (status = 404, body = ErrorBody)))]
async fn replay(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((id, event_id)): ApiPath<(Uuid, i64)>,
) -> ApiResult<StatusCode> {
    state.store.replay_event(id, event_id).await?;
    audit(
        &state,
        &principal,
        "webhook.replayed",
        "webhook",
        &format!("{id}/{event_id}"),
        None::<&String>,
        None,
    )
    .await?;
    Ok(StatusCode::ACCEPTED)
}

/// An event type and what it means.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventTypeView {
    #[serde(rename = "type")]
    pub event_type: String,
    pub meaning: String,
    /// The keys of its `data`.
    pub data: Vec<String>,
}

/// The event types a webhook can subscribe to, with the keys of each one's `data`.
#[utoipa::path(get, path = "/v1/webhooks/event-types", tag = "webhooks", responses((status = 200, body = Vec<EventTypeView>)))]
async fn event_types() -> axum::Json<Vec<EventTypeView>> {
    axum::Json(
        EventType::ALL
            .iter()
            .map(|t| EventTypeView {
                event_type: t.as_str().into(),
                meaning: t.meaning().into(),
                data: event_data(*t)
                    .iter()
                    .map(|(key, _, _)| (*key).to_owned())
                    .collect(),
            })
            .collect(),
    )
}

/// The keys of each event type's `data`: (key, JSON type, meaning). The OpenAPI document describes
/// each event's payload from this table (`WebhookEvent.<type>` schemas).
pub fn event_data(t: EventType) -> &'static [(&'static str, &'static str, &'static str)] {
    const ATTEMPT: &[(&str, &str, &str)] = &[
        ("message_id", "string", "The message's id in mailroom."),
        ("attempt", "integer", "The attempt's number (1-based)."),
        (
            "outcome",
            "string",
            "sent, deferred, failed or interrupted.",
        ),
        (
            "reply_code",
            "integer",
            "The server's SMTP reply code, when it answered.",
        ),
        ("reply_text", "string", "The server's words."),
        (
            "next_attempt_at_ms",
            "integer",
            "message.deferred: when it is tried again (Unix ms).",
        ),
    ];
    const REPORT: &[(&str, &str, &str)] = &[
        ("message_id", "string", "The message's id in mailroom."),
        ("recipient", "string", "The recipient the report is about."),
        (
            "action",
            "string",
            "failed or delayed (bounces); the feedback type, e.g. abuse (complaints).",
        ),
        (
            "status",
            "string",
            "The enhanced status code, e.g. 5.1.1 (bounces).",
        ),
        (
            "diagnostic",
            "string",
            "The remote server's words, when given.",
        ),
        (
            "hard",
            "boolean",
            "A permanent failure or a complaint: the address is suppressed.",
        ),
        (
            "report_id",
            "string",
            "The received report's id (GET /v1/inbound/{id}).",
        ),
    ];
    match t {
        EventType::MessageSent | EventType::MessageFailed | EventType::MessageDeferred => ATTEMPT,
        EventType::MessageBounced | EventType::MessageComplained => REPORT,
        EventType::MessageUnsubscribed => &[
            (
                "message_id",
                "string",
                "The message whose link or address was used.",
            ),
            ("address", "string", "The address that left the list."),
            ("list", "string", "The list: the message's scenario."),
            ("method", "string", "one-click or mailto."),
        ],
        EventType::MessageReceived => &[
            ("id", "string", "The received message's id."),
            ("mailbox_id", "string", "The mailbox it arrived in."),
            ("folder", "string", "Its folder."),
            ("message_id", "string", "Its Message-ID header."),
            ("subject", "string", "Its subject."),
            ("from", "string", "Its sender's address."),
            ("conversation_id", "string", "The conversation it joined."),
            (
                "correlation_method",
                "string",
                "How it was linked to a conversation.",
            ),
        ],
        EventType::MailboxDisabled => &[
            ("mailbox_id", "string", "The mailbox."),
            ("email_address", "string", "Its address."),
            ("reason", "string", "Why it was disabled."),
        ],
        EventType::MailboxTestCompleted => &[
            ("mailbox_id", "string", "The mailbox."),
            ("email_address", "string", "Its address."),
            ("incoming_status", "string", "success, failure or not-run."),
            ("outgoing_status", "string", "success, failure or not-run."),
            ("enabled", "boolean", "Whether the mailbox is enabled now."),
            ("error", "string", "What failed, when something did."),
        ],
        EventType::JobCompleted => &[
            ("job_id", "string", "The job."),
            ("kind", "string", "Its kind."),
            ("total", "integer", "Items it had."),
            ("succeeded", "integer", "Items that succeeded."),
            ("failed", "integer", "Items that failed."),
        ],
    }
}
