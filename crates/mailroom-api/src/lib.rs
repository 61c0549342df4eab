//! The HTTP API of mailroom: the only crate that knows HTTP and JSON.
//!
//! Every `/v1` route requires a bearer token. Errors are JSON with a stable machine code. The OpenAPI
//! document is generated from the handlers' annotations, so it cannot drift from the routes.

mod auth;
pub mod dto;
mod error;
mod routes;

pub use auth::{Principal, ROUTE_PERMISSIONS, SIGNED_IN};
pub use error::{ApiError, ERROR_CODES, ErrorBody};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use mailroom_engine::Engine;
use mailroom_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, SecurityRequirement};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Settings of the API that come from configuration.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest text + HTML body of one message.
    pub max_body_bytes: usize,
    /// Every pickup folder lies under this root; it is also the folder of pickup accounts that name none.
    pub pickup_root: std::path::PathBuf,
    /// Largest total size of the attachments of one message (and so of one upload).
    pub max_attachment_bytes: u64,
    /// The address users reach mailroom at (`https://mail.example.com`), when configured.
    pub public_url: Option<String>,
    /// Whether webhooks may target loopback, private and link-local addresses.
    pub webhooks_allow_private: bool,
}

/// What every handler can reach. Cloning it (axum does, for every request and middleware) is one
/// reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub engine: Engine,
    pub settings: ApiSettings,
    pub metrics: PrometheusHandle,
    pub blobs: mailroom_store::BlobStore,
    openapi_json: Arc<String>,
    docs_html: Arc<String>,
    /// The correlation settings as last read, and when (read again after a few seconds, so that
    /// other nodes' changes are seen soon without a read per message).
    correlation: std::sync::Mutex<
        Option<(
            std::time::Instant,
            mailroom_core::inbound::CorrelationSettings,
        )>,
    >,
    /// Attempts per hour for the dashboard: counting a busy day's attempts takes longer than a page
    /// may, so they are counted at most every [`routes::stats::HOURLY_FRESH`] and, once counted,
    /// served while a recount runs in the background.
    pub(crate) hourly: std::sync::Mutex<HourlyCache>,
}

/// Attempts per hour as last counted: (when, for how many hours, the hours, a refresh running).
pub(crate) type HourlyCache = (
    Option<std::time::Instant>,
    u32,
    Vec<mailroom_store::HourOutcomes>,
    bool,
);

impl Shared {
    /// The organisation's correlation settings (cached for a few seconds).
    pub(crate) async fn correlation_settings(
        &self,
    ) -> Result<mailroom_core::inbound::CorrelationSettings, mailroom_store::StoreError> {
        if let Some((at, settings)) = &*self.correlation.lock().expect("correlation lock")
            && at.elapsed() < std::time::Duration::from_secs(5)
        {
            return Ok(settings.clone());
        }
        let settings = self.store.correlation_settings().await?;
        *self.correlation.lock().expect("correlation lock") =
            Some((std::time::Instant::now(), settings.clone()));
        Ok(settings)
    }

    /// Forgets the cached correlation settings (they were just changed on this node).
    pub(crate) fn correlation_changed(&self) {
        *self.correlation.lock().expect("correlation lock") = None;
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The routes of every authenticated group, with their OpenAPI description.
fn v1_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::accounts::router())
        .merge(routes::scenarios::router())
        .merge(routes::messages::router())
        .merge(routes::users::router())
        .merge(routes::attachments::router())
        .merge(routes::templates::router())
        .merge(routes::documents::router())
        .merge(routes::nodes::router())
        .merge(routes::mailboxes::router())
        .merge(routes::teams::router())
        .merge(routes::inbound::router())
        .merge(routes::addin::router())
        .merge(routes::stats::router())
        .merge(routes::webhooks::router())
        .merge(routes::suppressions::router())
        .merge(routes::dkim::router())
        .merge(routes::unsubscribes::router())
        .merge(routes::app_registrations::router())
        .merge(routes::oauth::router())
}

/// The OpenAPI document of the whole API.
pub fn openapi() -> OpenApi {
    let (_, mut api) = OpenApiRouter::<AppState>::new()
        .merge(v1_routes())
        .merge(routes::unsubscribes::public_router())
        .merge(routes::oauth::public_router())
        .routes(routes!(routes::system::healthz))
        .split_for_parts();
    let mut description = String::from(
        "A self-hosted email hub for business applications.\n\n\
         ## Authentication\n\nEvery `/v1` route needs `Authorization: Bearer <token>`; tokens belong to \
         users and are created at `POST /v1/users/{id}/tokens`. Each route needs a permission set \
         (`email-admin`, `email-setup`, `email-send`).\n\n\
         ## Errors\n\nErrors are JSON: `{\"code\", \"message\", \"field\"}` with a stable `code`:\n\n\
         | code | status | meaning |\n|---|---|---|\n",
    );
    for (code, status, meaning) in ERROR_CODES {
        description.push_str(&format!("| `{code}` | {status} | {meaning} |\n"));
    }
    api.info = InfoBuilder::new()
        .title("mailroom")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(description))
        .build();
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    api.security = Some(vec![SecurityRequirement::new(
        "bearer",
        Vec::<String>::new(),
    )]);
    document_common_errors(&mut api);
    let unattached = add_examples(&mut api);
    debug_assert!(
        unattached.is_empty(),
        "examples without a place: {unattached:?}"
    );
    // The data each built-in document type's template expects, so that clients can validate and
    // generate it.
    let components = api.components.get_or_insert_with(Default::default);
    // What a webhook receiver is sent, per event type.
    for event in mailroom_core::webhook::EventType::ALL {
        let data = routes::webhooks::event_data(*event);
        let properties: serde_json::Map<String, serde_json::Value> = data
            .iter()
            .map(|(key, kind, meaning)| {
                (
                    (*key).to_owned(),
                    serde_json::json!({"type": kind, "description": meaning}),
                )
            })
            .collect();
        let schema = serde_json::json!({
            "type": "object",
            "description": format!("The body of a `{event}` delivery (signed per the Standard Webhooks specification: \
                headers webhook-id, webhook-timestamp, webhook-signature). {}", event.meaning()),
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"type": "string", "enum": [event.as_str()]},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": {"type": "object", "properties": properties},
            },
        });
        if let Ok(schema) = serde_json::from_value::<utoipa::openapi::schema::Schema>(schema) {
            components.schemas.insert(
                format!("WebhookEvent.{event}"),
                utoipa::openapi::RefOr::T(schema),
            );
        }
    }
    for template in mailroom_core::template::builtin::built_in() {
        if let Some(schema) = mailroom_core::template::schema::data_schema(template.document_type)
            && let Ok(schema) = serde_json::from_value::<utoipa::openapi::schema::Schema>(schema)
        {
            components.schemas.insert(
                format!("DocumentData.{}", template.document_type),
                utoipa::openapi::RefOr::T(schema),
            );
        }
    }
    api
}

/// A request and an answer for the routes a business application calls most, shown in `/docs`
/// beside the samples generated from the schemas.
/// Returns the examples that found no place in the document (a test keeps it empty).
fn add_examples(api: &mut OpenApi) -> Vec<String> {
    let mut unattached = Vec::new();
    use serde_json::json;
    use utoipa::openapi::RefOr;
    let message_answer = json!({"id": "01936f4e-7c1a-7b3e-9d2a-5f0c8e1b2a34", "status": "queued",
        "message_id": "<01936f4e7c1a7b3e9d2a5f0c8e1b2a34@example.com>",
        "account_id": "5b2f0c1e-8d4a-4f3b-9e6d-2a1c7b8e9f01", "scenario": "sales-invoice"});
    let examples: Vec<(
        &str,
        &str,
        Option<serde_json::Value>,
        &str,
        serde_json::Value,
    )> = vec![
        (
            "post",
            "/v1/messages",
            Some(
                json!({"to": ["Jane Doe <jane@example.com>"], "subject": "Invoice 103001",
                     "text": "Please find your invoice attached.", "scenario": "sales-invoice",
                     "related_records": [{"type": "sales-invoice", "id": "103001", "relation": "primary"}],
                     "attachments": [{"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}]}),
            ),
            "202",
            message_answer.clone(),
        ),
        (
            "post",
            "/v1/documents/send",
            Some(json!({"document_type": "sales-invoice", "number": "103001",
                     "customer": {"id": "C10000", "name": "Adatum Corporation", "email": "ap@adatum.example"},
                     "contact": {"id": "CT-7", "name": "Robert Townes", "email": "robert@adatum.example"},
                     "data": {"company": {"name": "Cronus Trading Ltd."},
                              "document": {"due_date": "2026-12-22", "currency": "EUR", "total": 2070.0,
                                           "lines": [{"description": "ATHENS Desk", "quantity": 2, "unit_price": 649.4, "amount": 1298.8}]}},
                     "attachments": [{"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}]})),
            "202",
            {
                let mut answer = message_answer.clone();
                answer["profile"] = json!("default");
                answer
            },
        ),
        (
            "post",
            "/v1/accounts",
            Some(
                json!({"connector": "smtp", "name": "Sales", "email_address": "sales@example.com",
                     "sender_name": "Cronus Sales", "host": "smtp.example.com", "port": 587, "security": "starttls",
                     "username": "sales@example.com", "password": "…", "rate_limit_per_minute": 30}),
            ),
            "201",
            json!({"id": "5b2f0c1e-8d4a-4f3b-9e6d-2a1c7b8e9f01", "connector": "smtp", "name": "Sales",
                       "email_address": "sales@example.com", "host": "smtp.example.com", "port": 587,
                       "security": "starttls", "username": "sales@example.com", "has_password": true,
                       "rate_limit_per_minute": 30, "concurrency_limit": 3, "max_attempts": 10, "is_default": false}),
        ),
        (
            "post",
            "/v1/accounts/{id}/test",
            None,
            "200",
            json!({"ok": false, "detail": "AUTH: authentication rejected: permanent error (535): 5.7.8 Error: authentication failed",
                       "failure": "permanent", "reply_code": 535}),
        ),
        (
            "get",
            "/v1/messages/{id}",
            None,
            "200",
            json!({"id": "01936f4e-7c1a-7b3e-9d2a-5f0c8e1b2a34", "status": "sent", "subject": "Invoice 103001",
                       "to": ["Jane Doe <jane@example.com>"], "attempt_count": 2, "possibly_delivered": false,
                       "attempts": [
                           {"number": 1, "outcome": "transient", "reply_code": 451, "reply_text": "RCPT TO <jane@example.com>: 4.7.1 Try again later"},
                           {"number": 2, "outcome": "sent", "reply_code": 250, "reply_text": "2.0.0 Ok: queued as 4Fq9"}]}),
        ),
        (
            "get",
            "/v1/sent",
            None,
            "200",
            json!({"items": [{"id": "01936f4e-7c1a-7b3e-9d2a-5f0c8e1b2a34", "status": "sent", "subject": "Invoice 103001",
                       "to": ["Jane Doe <jane@example.com>"], "attempt_count": 1}],
                   "total": 1000, "total_is_estimate": true, "has_more": true,
                   "next_cursor": "01936f4e-7c1a-7b3e-9d2a-5f0c8e1b2a34"}),
        ),
        (
            "get",
            "/v1/nodes",
            None,
            "200",
            json!([{"id": "node-5b2f0c1e-8d4a-4f3b-9e6d-2a1c7b8e9f01", "host": "mail-1.example.com",
                    "started_at": "2026-11-27T08:00:00Z", "last_heartbeat_at": "2026-11-27T09:14:03.200Z",
                    "state": "alive", "declared_dead_at": null, "messages_in_flight": 12},
                   {"id": "node-0d3c9a7e-61f2-4b8e-a1d5-7c2e9f4b3a60", "host": "mail-2.example.com",
                    "started_at": "2026-11-27T08:00:04Z", "last_heartbeat_at": "2026-11-27T09:02:41.900Z",
                    "state": "dead", "declared_dead_at": "2026-11-27T09:02:52.000Z", "messages_in_flight": 0}]),
        ),
        (
            "post",
            "/v1/templates/{id}/preview",
            Some(json!({"data": {"document": {"number": "103001"}}})),
            "422",
            json!({"code": "invalid_request", "field": "data.document.lines",
                       "message": "document.lines is missing: the html template needs it (line 11)"}),
        ),
        (
            "get",
            "/v1/inbound/{id}",
            None,
            "200",
            json!({"id": "01937a0b-2c4d-7e8f-9a0b-1c2d3e4f5a6b", "mailbox_id": "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b",
                   "folder": "INBOX", "uid": 4812, "message_id": "CAF2x9@mail.adatum.example",
                   "subject": "AW: Invoice 103001 [MR-7K3QXAB]",
                   "from": {"name": "Robert Townes", "address": "robert@adatum.example"},
                   "to": [{"address": "billing@cronus.example"}], "cc": [],
                   "sent_at": "2026-11-27T09:12:44Z", "received_at": "2026-11-27T09:12:46Z", "size": 48211,
                   "flags": ["\\Seen"], "unread": false, "unparsed": false,
                   "correlation_method": "subject-token", "conversation_id": "01936f4e-7c1a-7b3e-9d2a-5f0c8e1b2a34",
                   "reply_to": [], "references": [],
                   "headers": [["From", "Robert Townes <robert@adatum.example>"], ["Subject", "AW: Invoice 103001 [MR-7K3QXAB]"]],
                   "text": "Paid today, remittance advice attached.", "html": null,
                   "attachments": [{"part": "2", "name": "remittance.pdf", "content_type": "application/pdf", "size": 40113,
                                    "download": "/v1/inbound/01937a0b-2c4d-7e8f-9a0b-1c2d3e4f5a6b/parts/2"}],
                   "related_records": [{"type": "sales-invoice", "id": "103001"}, {"type": "customer", "id": "C10000"}],
                   "raw": "/v1/inbound/01937a0b-2c4d-7e8f-9a0b-1c2d3e4f5a6b/raw"}),
        ),
        (
            "post",
            "/v1/inbound/{id}/reply",
            Some(json!({"text": "Thank you, we have received the payment."})),
            "202",
            json!({"id": "01937a0c-0d1e-7f2a-8b3c-4d5e6f7a8b9c", "status": "queued",
                   "message_id": "<01937a0c0d1e7f2a8b3c4d5e6f7a8b9c@cronus.example>",
                   "account_id": "5b2f0c1e-8d4a-4f3b-9e6d-2a1c7b8e9f01", "scenario": "default",
                   "conversation_id": "01936f4e-7c1a-7b3e-9d2a-5f0c8e1b2a34"}),
        ),
        (
            "put",
            "/v1/contacts/{id}",
            Some(
                json!({"name": "Robert Townes", "addresses": ["robert@adatum.example"],
                        "related_records": [{"type": "customer", "id": "C10000"}]}),
            ),
            "200",
            json!({"id": "CT-7", "name": "Robert Townes", "addresses": ["robert@adatum.example"],
                   "related_records": [{"type": "customer", "id": "C10000"}]}),
        ),
        (
            "put",
            "/v1/settings/correlation",
            Some(
                json!({"subject_token": true, "subject_token_prefix": "MR", "plus_addressing": false,
                        "smart_match_days": 14}),
            ),
            "200",
            json!({"subject_token": true, "subject_token_prefix": "MR", "plus_addressing": false,
                   "smart_match_days": 14}),
        ),
        (
            "post",
            "/v1/webhooks",
            Some(json!({"url": "https://erp.example.com/mailroom/events",
                        "events": ["message.sent", "message.failed"], "ordered": false})),
            "201",
            json!({"id": "01937b10-2a3b-7c4d-8e5f-6a7b8c9d0e1f", "url": "https://erp.example.com/mailroom/events",
                   "events": ["message.failed", "message.sent"], "enabled": true, "ordered": false,
                   "created_at": "2026-11-28T09:00:00Z", "updated_at": "2026-11-28T09:00:00Z",
                   "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
        ),
        (
            "post",
            "/v1/webhooks/{id}/rotate-secret",
            Some(json!({"overlap_hours": 24})),
            "200",
            json!({"id": "01937b10-2a3b-7c4d-8e5f-6a7b8c9d0e1f", "url": "https://erp.example.com/mailroom/events",
                   "events": ["message.failed", "message.sent"], "enabled": true, "ordered": false,
                   "previous_secret_until": "2026-11-29T09:00:00Z",
                   "created_at": "2026-11-28T09:00:00Z", "updated_at": "2026-11-28T10:00:00Z",
                   "secret": "whsec_QqlLTwZ3rV9Z0x1lK8Xo5c2Ha9sdF0Ty"}),
        ),
        (
            "post",
            "/v1/app-registrations",
            Some(json!({"name": "Contoso", "provider": "microsoft-entra",
                        "client_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "client_secret": "Qx8~…the secret's Value…",
                        "tenant": "contoso.onmicrosoft.com", "redirect_uri": "https://mail.contoso.com/oauth/callback"})),
            "201",
            json!({"id": "01937b10-2a3b-7c4d-8e5f-6a7b8c9d0e21", "name": "Contoso", "provider": "microsoft-entra",
                   "client_id": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "client_secret": null, "has_client_secret": true,
                   "tenant": "contoso.onmicrosoft.com", "redirect_uri": "https://mail.contoso.com/oauth/callback",
                   "authority": "https://login.microsoftonline.com", "graph_base_url": "https://graph.microsoft.com/v1.0",
                   "scopes": {"graph": ["User.Read", "Mail.ReadWrite", "Mail.Send", "Mail.Send.Shared", "offline_access"],
                              "mail": ["openid", "offline_access", "email", "https://outlook.office.com/SMTP.Send", "https://outlook.office.com/IMAP.AccessAsUser.All"],
                              "app": ["https://graph.microsoft.com/.default"]},
                   "admin_consent_url": "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/adminconsent?client_id=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0&scope=https%3A%2F%2Fgraph.microsoft.com%2F.default&redirect_uri=https%3A%2F%2Fmail.contoso.com%2Fv1%2Foauth%2Fcallback",
                   "created_at": "2026-11-28T09:00:00Z", "updated_at": "2026-11-28T09:00:00Z"}),
        ),
        (
            "get",
            "/v1/oauth/connect",
            None,
            "200",
            json!({"authorization_url": "https://mail.contoso.com/oauth/start/q8Zk3v0tY1mW7n2bR5cX9eL4hJ6aP0sD",
                   "mailbox_id": "01937b10-2a3b-7c4d-8e5f-6a7b8c9d0e22",
                   "registration_id": "01937b10-2a3b-7c4d-8e5f-6a7b8c9d0e21",
                   "expires_at": "2026-11-28T09:10:00Z"}),
        ),
        (
            "post",
            "/v1/app-registrations/{id}/verify",
            None,
            "200",
            json!({"ok": false, "checks": [
                {"check": "discovery", "result": "passed", "detail": "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration names the issuer https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"},
                {"check": "endpoints", "result": "passed", "detail": "authorization at https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize, tokens at https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"},
                {"check": "client_credentials", "result": "failed", "detail": "the token endpoint refused (401): AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                 "error": "invalid_client", "error_codes": [7000215],
                 "advice": "The client secret is wrong. Give the secret's Value, not its Secret ID (both are shown on the app's \"Certificates & secrets\" page)."}]}),
        ),
        (
            "post",
            "/v1/dkim/keys",
            Some(
                json!({"domain": "cronus.example", "selector": "mr2026", "algorithm": "ed25519-sha256"}),
            ),
            "201",
            json!({"id": "01937b10-2a3b-7c4d-8e5f-6a7b8c9d0e20", "domain": "cronus.example", "selector": "mr2026",
                   "algorithm": "ed25519-sha256", "active": true,
                   "dns": {"name": "mr2026._domainkey.cronus.example", "type": "TXT",
                           "value": "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
                   "created_at": "2026-11-28T09:00:00Z", "activated_at": "2026-11-28T09:00:00Z"}),
        ),
        (
            "put",
            "/v1/suppressions/{address}",
            Some(json!({"detail": "asked not to be mailed"})),
            "200",
            json!({"address": "ann@customer.example", "reason": "manual", "detail": "asked not to be mailed",
                   "created_at": "2026-11-28T09:00:00Z"}),
        ),
        (
            "post",
            "/v1/addin/lookup",
            Some(
                json!({"message_id": "<CAF7x9q@mail.adatum.example>", "from": "Robert Townes <robert@adatum.example>",
                        "to": ["alice@cronus.example"], "cc": []}),
            ),
            "200",
            json!({"records": [{"address": "robert@adatum.example", "type": "customer", "id": "C10000", "source": "contact"},
                               {"address": "robert@adatum.example", "type": "sales-invoice", "id": "103001", "source": "mail"}],
                   "synchronized": true, "inbound_id": "01937a0b-2c4d-7e8f-9a0b-1c2d3e4f5a6b",
                   "regarding": [{"type": "customer", "id": "C10000"}]}),
        ),
        (
            "put",
            "/v1/addin/regarding",
            Some(
                json!({"message_id": "<CAF7x9q@mail.adatum.example>", "record": {"type": "sales-invoice", "id": "103001"}}),
            ),
            "200",
            json!({"records": [{"address": "robert@adatum.example", "type": "customer", "id": "C10000", "source": "contact"}],
                   "synchronized": true, "inbound_id": "01937a0b-2c4d-7e8f-9a0b-1c2d3e4f5a6b",
                   "regarding": [{"type": "sales-invoice", "id": "103001"}]}),
        ),
        (
            "post",
            "/v1/addin/deploy",
            Some(json!({"users": ["01936f40-1a2b-7c3d-8e4f-5a6b7c8d9e0f"]})),
            "200",
            json!({"deployment": "manual", "users": [{"user_id": "01936f40-1a2b-7c3d-8e4f-5a6b7c8d9e0f", "name": "alice",
                   "status": "pending", "eligible": true, "missing": [], "mailbox_address": "alice@cronus.example",
                   "status_since": "2026-11-28T09:00:00Z"}]}),
        ),
        (
            "put",
            "/v1/addin/settings",
            Some(json!({"deployment": "automatic"})),
            "200",
            json!({"deployment": "automatic"}),
        ),
        (
            "get",
            "/v1/stats",
            None,
            "200",
            json!({"outbox": {"draft": 0, "queued": 12, "deferred": 3, "sending": 16, "failed": 2},
                   "per_hour": [{"hour": "2026-11-28T08:00:00Z", "sent": 1840, "deferred": 4, "failed": 1},
                                {"hour": "2026-11-28T09:00:00Z", "sent": 2310, "deferred": 0, "failed": 1}],
                   "failures_by_account": [{"account_id": "5b2f0c1e-8d4a-4f3b-9e6d-2a1c7b8e9f01",
                                            "account_name": "Billing", "failed": 2}]}),
        ),
    ];
    for (method, path, request, status, answer) in examples {
        let operation = api.paths.paths.get_mut(path).and_then(|item| match method {
            "get" => item.get.as_mut(),
            "put" => item.put.as_mut(),
            _ => item.post.as_mut(),
        });
        let Some(operation) = operation else {
            unattached.push(format!("{method} {path}"));
            continue;
        };
        let mut attached = false;
        if let Some(request) = request {
            if let Some(RefOr::T(body)) = operation.request_body.as_mut()
                && let Some(RefOr::T(content)) = body.content.get_mut("application/json")
            {
                content.example = Some(request);
            } else {
                unattached.push(format!("{method} {path} request"));
            }
        }
        if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(status)
            && let Some(RefOr::T(content)) = response.content.get_mut("application/json")
        {
            content.example = Some(answer);
            attached = true;
        }
        if !attached {
            unattached.push(format!("{method} {path} {status}"));
        }
    }
    unattached
}

/// Adds the error answers that whole classes of routes share to every operation of the class, so
/// that the document lists every status a route can return: authentication and permission on `/v1`,
/// body parsing where there is a body, unknown ids where the path has one, query validation where
/// there is a query, and the server-side conditions every route can meet.
fn document_common_errors(api: &mut OpenApi) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let error = |description: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build(),
        )
    };
    for (path, item) in api.paths.paths.iter_mut() {
        let v1 = path.starts_with("/v1/");
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            let parameters = operation.parameters.as_deref().unwrap_or_default();
            let has_path_parameter = parameters
                .iter()
                .any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path)));
            let has_query = parameters
                .iter()
                .any(|p| matches!(p, RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Query)));
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description));
            };
            if v1 {
                add(
                    "401",
                    "`unauthorized`: no token, or an unknown, revoked or expired one",
                );
                add("403", "`permission_missing` or `licence_not_permitted`");
            }
            if operation.request_body.is_some() {
                add("400", "`invalid_json`: the body is not valid JSON");
                add(
                    "413",
                    "`payload_too_large`: the body is larger than the configured limit",
                );
                add(
                    "415",
                    "`unsupported_media_type`: the body is not declared as JSON",
                );
                add(
                    "422",
                    "`invalid_request`: a field is invalid, or the body has the wrong shape",
                );
            }
            if has_path_parameter {
                add(
                    "404",
                    "`not_found`: no such object, or one the caller may not see",
                );
            }
            if has_query {
                add(
                    "422",
                    "`invalid_query` or `invalid_request`: a query parameter is invalid",
                );
            }
            add(
                "500",
                "`internal`: an unexpected error; the server log has the cause",
            );
            add(
                "503",
                "`shutting_down`, `storage_full` or `database_unavailable`: try again after `Retry-After`",
            );
        }
    }
}

/// Builds the router: `/v1/*` behind bearer auth, plus `/healthz`, `/metrics`, `/openapi.json`, `/docs`.
pub fn router(
    store: Store,
    engine: Engine,
    settings: ApiSettings,
    metrics: PrometheusHandle,
    blobs: mailroom_store::BlobStore,
) -> Router {
    let api = openapi();
    let openapi_json = Arc::new(
        api.to_pretty_json()
            .expect("the OpenAPI document serializes"),
    );
    let docs_html = Arc::new(routes::system::docs_page(&api));
    // Room for JSON escaping around the largest allowed body.
    let request_limit = settings
        .max_body_bytes
        .saturating_mul(2)
        .saturating_add(1 << 20);
    let state = AppState(Arc::new(Shared {
        store,
        engine,
        settings,
        metrics,
        blobs,
        openapi_json,
        docs_html,
        correlation: Default::default(),
        hourly: Default::default(),
    }));
    let (v1, _) = v1_routes().split_for_parts();
    // Authentication wraps everything; the permission check runs after routing, when the matched
    // route is known.
    let v1 = v1
        .route_layer(axum::middleware::from_fn(auth::require_permission))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let (public, _) = routes::unsubscribes::public_router()
        .merge(routes::oauth::public_router())
        .split_for_parts();
    Router::new()
        .merge(v1)
        .merge(public)
        .route("/healthz", get(routes::system::healthz))
        .route("/metrics", get(routes::system::metrics))
        .route("/openapi.json", get(routes::system::openapi_json))
        .route("/docs", get(routes::system::docs))
        .route(
            "/docs/redoc.standalone.js",
            get(routes::system::redoc_script),
        )
        .fallback(|| async { ApiError::not_found("no such route; see /docs") })
        // The router adds the `Allow` header to this answer.
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!(
                    "{method} is not allowed here; the Allow header lists the methods that are"
                ),
            )
        })
        .layer(DefaultBodyLimit::max(request_limit))
        // Failed requests are not logged here: an internal error is logged where it happens, and
        // expected refusals (a full disk, shutting down) would otherwise be logged per request.
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(()))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_webhook_event_type_has_its_payload_schema_in_the_document() {
        let api = openapi();
        let schemas = &api.components.as_ref().unwrap().schemas;
        for event in mailroom_core::webhook::EventType::ALL {
            let name = format!("WebhookEvent.{event}");
            let schema =
                serde_json::to_value(schemas.get(&name).unwrap_or_else(|| panic!("{name}")))
                    .unwrap();
            assert_eq!(schema["properties"]["type"]["enum"][0], event.as_str());
            assert!(
                schema["properties"]["data"]["properties"]
                    .as_object()
                    .is_some_and(|p| !p.is_empty()),
                "{name}: {schema}"
            );
        }
        let bounced = serde_json::to_value(&schemas["WebhookEvent.message.bounced"]).unwrap();
        assert_eq!(
            bounced["properties"]["data"]["properties"]["hard"]["type"],
            "boolean"
        );
    }

    #[test]
    fn every_example_finds_its_operation_request_and_answer_in_the_document() {
        let mut api = openapi();
        assert_eq!(add_examples(&mut api), Vec::<String>::new());
    }

    #[test]
    fn every_v1_operation_has_exactly_one_entry_in_the_permission_table() {
        let api = openapi();
        let mut operations = Vec::new();
        for (path, item) in &api.paths.paths {
            if !path.starts_with("/v1/") {
                continue;
            }
            let methods = [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
            ];
            for (method, operation) in methods {
                if operation.is_some() {
                    operations.push((method, path.clone()));
                }
            }
        }
        for (method, path) in &operations {
            let entries = ROUTE_PERMISSIONS
                .iter()
                .filter(|(m, p, _)| m == method && p == path)
                .count();
            assert_eq!(
                entries, 1,
                "{method} {path} needs exactly one entry in ROUTE_PERMISSIONS"
            );
        }
        for (method, path, permission) in ROUTE_PERMISSIONS {
            assert!(
                operations.iter().any(|(m, p)| m == method && p == path),
                "{method} {path} is in the table but not a route"
            );
            assert!(
                *permission == SIGNED_IN
                    || permission
                        .parse::<mailroom_core::access::PermissionSet>()
                        .is_ok()
            );
        }
    }
}
