//! The JSON shapes of the API. Requests refuse unknown fields so that a typo is an error, not a
//! silently ignored setting. Times are RFC 3339 strings in UTC.

use mailroom_store::{Account, ScenarioRow, StoredAttempt, StoredMessage};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub fn parse_rfc3339(field: &str, raw: &str) -> Result<i64, crate::error::ApiError> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            crate::error::ApiError::invalid(
                field,
                format!("{field}: {raw:?} is not an RFC 3339 time such as 2026-11-22T09:30:00Z"),
            )
        })
}

/// Distinguishes a field that is absent (keep) from one that is `null` (clear).
fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An account to create. Fields not given take defaults: security `starttls`, port by security
/// (25, 587 or 465), sender type `specific-user`, no rate limit, 3 concurrent connections, 10 attempts.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// `smtp` or `pickup`.
    pub connector: String,
    pub name: String,
    pub email_address: String,
    /// Display name in From; defaults to the account name.
    pub sender_name: Option<String>,
    pub sender_type: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `none`, `starttls` or `tls`.
    pub security: Option<String>,
    pub username: Option<String>,
    /// Write-only; stored encrypted and never returned.
    pub password: Option<String>,
    /// Pickup accounts: the folder `.eml` files are written to.
    pub pickup_dir: Option<String>,
    pub rate_limit_per_minute: Option<i64>,
    pub concurrency_limit: Option<i64>,
    pub max_attempts: Option<i64>,
    /// `send-as` or `send-on-behalf`; only one account may substitute senders.
    pub substitute_mode: Option<String>,
    /// The Send As / Send On Behalf address, optionally with the name to show:
    /// `Cronus Sales <sales@cronus.example>`.
    pub substitute_address: Option<String>,
    /// SMTP timeouts per stage, in seconds; the ones not given keep their defaults.
    pub timeouts: Option<TimeoutsBody>,
    /// Whether a message whose outcome is unknown (connection lost after the final ".") is sent
    /// again; default true.
    pub retry_after_unknown: Option<bool>,
    /// The EHLO name; default the server's `hostname`.
    pub ehlo_name: Option<String>,
    /// Domains besides the account's own that an approval-workflow sender may be in.
    pub allowed_sender_domains: Option<Vec<String>>,
    /// The VERP bounce domain: each message's return path becomes `bounces+<token>@<domain>`, so its
    /// bounces are matched to it. Mail to that domain must reach a mailbox mailroom synchronises.
    pub bounce_domain: Option<String>,
    /// `microsoft365` accounts: the app registration whose tokens they present.
    pub app_registration_id: Option<Uuid>,
    /// `microsoft365` accounts: `application` (default: an app-only token, Mail.Send application
    /// permission) or `delegated` (a signed-in user's token).
    pub permission: Option<String>,
}

/// SMTP timeouts in seconds (1 to 3600). Defaults: connect 30, greeting 60, each command 60, the
/// reply to the final "." 600 (RFC 5321 §4.5.3.2).
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsBody {
    pub connect_s: Option<u32>,
    pub greeting_s: Option<u32>,
    pub command_s: Option<u32>,
    pub end_of_data_s: Option<u32>,
}

impl TimeoutsBody {
    /// These values over `base`.
    pub fn over(
        &self,
        base: mailroom_core::account::SmtpTimeouts,
    ) -> mailroom_core::account::SmtpTimeouts {
        mailroom_core::account::SmtpTimeouts {
            connect_s: self.connect_s.unwrap_or(base.connect_s),
            greeting_s: self.greeting_s.unwrap_or(base.greeting_s),
            command_s: self.command_s.unwrap_or(base.command_s),
            end_of_data_s: self.end_of_data_s.unwrap_or(base.end_of_data_s),
        }
    }
}

/// Changes to an account; absent fields stay as they are, `null` clears optional ones.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccount {
    pub name: Option<String>,
    pub email_address: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub sender_name: Option<Option<String>>,
    pub sender_type: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub username: Option<Option<String>>,
    /// Write-only; `null` removes the stored password.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub password: Option<Option<String>>,
    pub pickup_dir: Option<String>,
    pub rate_limit_per_minute: Option<i64>,
    pub concurrency_limit: Option<i64>,
    pub max_attempts: Option<i64>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub substitute_mode: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub substitute_address: Option<Option<String>>,
    pub timeouts: Option<TimeoutsBody>,
    pub retry_after_unknown: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub ehlo_name: Option<Option<String>>,
    pub allowed_sender_domains: Option<Vec<String>>,
    /// `null` turns VERP off.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub bounce_domain: Option<Option<String>>,
    pub app_registration_id: Option<Uuid>,
    pub permission: Option<String>,
}

/// An account as the API shows it. The password is never included.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub id: Uuid,
    pub connector: String,
    pub name: String,
    pub email_address: String,
    pub sender_name: Option<String>,
    pub sender_type: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: String,
    pub username: Option<String>,
    /// Whether a password is stored (it is never shown).
    pub has_password: bool,
    /// Connected with OAuth 2.0 (`GET /v1/oauth/connect?account=`): it holds a refresh token.
    #[serde(default)]
    pub oauth_connected: bool,
    pub pickup_dir: Option<String>,
    pub rate_limit_per_minute: u32,
    pub concurrency_limit: u32,
    pub max_attempts: u32,
    pub substitute_mode: Option<String>,
    pub substitute_address: Option<String>,
    /// SMTP timeouts per stage, in seconds.
    #[schema(value_type = Object)]
    pub timeouts: mailroom_core::account::SmtpTimeouts,
    pub retry_after_unknown: bool,
    pub ehlo_name: Option<String>,
    pub allowed_sender_domains: Vec<String>,
    /// The VERP bounce domain, when set.
    pub bounce_domain: Option<String>,
    /// `microsoft365` accounts: their app registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_registration_id: Option<Uuid>,
    /// `microsoft365` accounts: `application` or `delegated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// The default account sends every scenario that has no account of its own.
    pub is_default: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Account> for AccountView {
    fn from(a: &Account) -> Self {
        Self {
            id: a.id,
            connector: a.connector.to_string(),
            name: a.name.clone(),
            email_address: a.email_address.to_string(),
            sender_name: a.sender_name.clone(),
            sender_type: a.sender_type.to_string(),
            host: a.host.clone(),
            port: a.port,
            security: a.security.to_string(),
            username: a.username.clone(),
            has_password: a.has_password,
            oauth_connected: a.oauth_connected,
            pickup_dir: a.pickup_dir.clone(),
            rate_limit_per_minute: a.limits.rate_limit_per_minute,
            concurrency_limit: a.limits.concurrency_limit,
            max_attempts: a.limits.max_attempts,
            substitute_mode: a.substitute_mode.map(|m| m.to_string()),
            substitute_address: a.substitute_mailbox().map(|m| m.to_string()),
            timeouts: a.options.timeouts,
            retry_after_unknown: a.options.retry_after_unknown,
            ehlo_name: a.options.ehlo_name.clone(),
            allowed_sender_domains: a.options.allowed_sender_domains.clone(),
            bounce_domain: a.options.bounce_domain.clone(),
            app_registration_id: a.options.app_registration_id,
            permission: a.options.permission.map(|p| p.as_str().to_owned()),
            is_default: a.is_default,
            created_at: rfc3339(a.created_at_ms),
            updated_at: rfc3339(a.updated_at_ms),
        }
    }
}

/// The result of testing an account's connection. A failed test is still a successful request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConnectionTest {
    pub ok: bool,
    pub detail: String,
    /// `transient` or `permanent`, when the test failed.
    pub failure: Option<String>,
    pub reply_code: Option<u16>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScenarioView {
    pub name: String,
    pub description: String,
    pub built_in: bool,
    /// The account assigned to this scenario, if any.
    pub account_id: Option<Uuid>,
    /// The account this scenario's mail goes through now (its own, else the default account).
    pub effective_account_id: Option<Uuid>,
    /// Whether its mail carries a one-click unsubscribe link (RFC 8058).
    pub unsubscribe: bool,
}

impl From<ScenarioRow> for ScenarioView {
    fn from(s: ScenarioRow) -> Self {
        Self {
            name: s.name,
            description: s.description,
            built_in: s.built_in,
            account_id: s.account_id,
            effective_account_id: s.effective_account_id,
            unsubscribe: s.unsubscribe,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignScenario {
    /// The account to send this scenario through; `null` registers a custom scenario without one.
    pub account_id: Option<Uuid>,
    /// For custom scenarios: what the scenario is for.
    pub description: Option<String>,
    /// Give this scenario's mail a one-click unsubscribe link (RFC 8058): for mail people may opt
    /// out of (newsletters, reminders), not for invoices. Absent: unchanged.
    pub unsubscribe: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct RelatedRecordView {
    /// The record type, e.g. `sales-invoice`, `customer`.
    #[serde(rename = "type")]
    pub record_type: String,
    pub id: String,
    /// `primary` (the document the message is about) or `related` (default).
    #[serde(default)]
    pub relation: Option<String>,
}

/// A message to send.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    /// Recipients as `address` or `Name <address>`.
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    #[serde(default)]
    pub bcc: Vec<String>,
    /// Where replies should go, when not to the sender.
    #[serde(default)]
    pub reply_to: Vec<String>,
    /// Custom headers such as `{"X-Order-Ref": "4711"}`. Headers mailroom owns (Message-ID, From, Date…)
    /// cannot be set.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Required unless the message is rendered from a `template`.
    pub subject: Option<String>,
    /// Plain text; derived from `html` when only HTML is given.
    pub text: Option<String>,
    pub html: Option<String>,
    /// The business scenario; decides the account when `account_id` is not given. Default `default`.
    pub scenario: Option<String>,
    pub account_id: Option<Uuid>,
    #[serde(default)]
    pub related_records: Vec<RelatedRecordView>,
    /// The approval-workflow user to show as the sender, on an account that substitutes senders.
    pub workflow_sender: Option<String>,
    /// Render subject and bodies from a stored template with this document data.
    pub template: Option<TemplateRef>,
    /// Uploaded files (`POST /v1/attachments`) to attach, in order. The scenario's default attachments
    /// are added after them; its optional ones may be listed here.
    #[serde(default)]
    pub attachments: Vec<AttachmentRef>,
    /// Default attachments of the scenario to leave off this message.
    #[serde(default)]
    pub exclude_attachments: Vec<AttachmentRef>,
    /// Send no earlier than this time (RFC 3339).
    pub send_at: Option<String>,
    /// Give the message a one-click unsubscribe link (RFC 8058) for its list — its scenario — naming
    /// its To recipients; default: the scenario's `unsubscribe` setting. Needs `public_url`.
    pub unsubscribe: Option<bool>,
}

/// A template to render a message from.
#[derive(Debug, Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    pub id: String,
    /// A specific version; the latest when absent.
    pub version: Option<i64>,
    /// The document data the template renders (customer, lines, totals, due date…).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A reference to an uploaded attachment.
#[derive(Debug, Serialize, Deserialize, ToSchema, Clone)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRef {
    pub id: Uuid,
    /// Show the file inside the HTML body, where it is referenced as `cid:<content_id>` (e.g. a logo).
    pub content_id: Option<String>,
}

/// The answer to an accepted message: it is stored durably.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AcceptedMessage {
    pub id: Uuid,
    /// `queued`; `sending` when it went straight to a send task (its account had room and nothing
    /// older was waiting); `draft` for a draft.
    pub status: String,
    /// The Message-ID header mailroom generated.
    pub message_id: String,
    pub account_id: Uuid,
    pub scenario: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub number: u32,
    pub started_at: String,
    pub finished_at: String,
    /// `sent`, `transient`, `permanent`, `interrupted` (mailroom stopped during the attempt) or
    /// `unknown` (the connection was lost after the whole message was sent: the server may have
    /// accepted it).
    pub outcome: String,
    pub reply_code: Option<u16>,
    pub reply_text: String,
}

impl From<&StoredAttempt> for AttemptView {
    fn from(a: &StoredAttempt) -> Self {
        Self {
            number: a.number,
            started_at: rfc3339(a.started_at_ms),
            finished_at: rfc3339(a.finished_at_ms),
            outcome: a.outcome.to_string(),
            reply_code: a.reply_code,
            reply_text: a.reply_text.clone(),
        }
    }
}

/// A message in the outbox or the sent archive. Lists leave out bodies and attempts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageView {
    pub id: Uuid,
    /// `queued`, `sending`, `sent`, `failed` or `cancelled`.
    pub status: String,
    pub scenario: String,
    pub account_id: Uuid,
    pub message_id: String,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub reply_to: Vec<String>,
    pub headers: std::collections::BTreeMap<String, String>,
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    pub related_records: Vec<RelatedRecordView>,
    /// The template and version the message was rendered from.
    pub template: Option<TemplateUsed>,
    pub send_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub next_attempt_at: Option<String>,
    pub sent_at: Option<String>,
    pub attempt_count: u32,
    pub last_error: Option<String>,
    /// When the content (bodies and attachments) of this sent message was deleted by retention
    /// (`sent_retention_days`); its envelope and attempts stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_deleted_at: Option<String>,
    /// The conversation it belongs to: `GET /v1/conversations/{id}` (its own id when it started one).
    pub conversation_id: Uuid,
    /// In the single-message view: whether an attempt of a message not (yet) sent had an unknown
    /// outcome (the connection was lost after the whole message was handed over), so the recipient
    /// may already have it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub possibly_delivered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<Vec<AttemptView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Vec<crate::routes::attachments::AttachmentView>>,
    /// In the single-message view: what delivery status notifications and feedback reports said
    /// about it, per recipient.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounces: Option<Vec<BounceView>>,
}

/// A recipient's bounce or complaint, from a report received into a synchronised mailbox.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BounceView {
    pub recipient: String,
    /// `bounce` or `complaint`.
    pub kind: String,
    /// `failed` or `delayed` (bounces); the feedback type, e.g. `abuse` (complaints).
    pub action: String,
    /// The enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// The receiving server's own words.
    pub diagnostic: Option<String>,
    /// A permanent failure or a complaint: the address is now suppressed.
    pub hard: bool,
    pub at: String,
}

impl MessageView {
    pub fn full(m: &StoredMessage) -> Self {
        let mut view = Self::summary(m);
        view.text = m.text.clone();
        view.html = m.html.clone();
        view.attempts = Some(m.attempts.iter().map(AttemptView::from).collect());
        view.possibly_delivered = Some(
            m.status != mailroom_core::message::MessageStatus::Sent
                && m.attempts.iter().any(|a| {
                    matches!(
                        a.outcome,
                        mailroom_core::message::AttemptOutcome::Unknown
                            | mailroom_core::message::AttemptOutcome::Interrupted
                    )
                }),
        );
        view
    }

    pub fn summary(m: &StoredMessage) -> Self {
        Self {
            conversation_id: m.conversation_id,
            id: m.id,
            status: m.status.to_string(),
            scenario: m.scenario.clone(),
            account_id: m.account_id,
            message_id: m.message_id_header.clone(),
            to: m.to.clone(),
            cc: m.cc.clone(),
            bcc: m.bcc.clone(),
            reply_to: m.reply_to.clone(),
            headers: m.headers.iter().cloned().collect(),
            subject: m.subject.clone(),
            text: None,
            html: None,
            related_records: m
                .related_records
                .iter()
                .map(|r| RelatedRecordView {
                    record_type: r.record_type.clone(),
                    id: r.record_id.clone(),
                    relation: Some(r.relation.to_string()),
                })
                .collect(),
            template: m.template.as_ref().map(|(id, version)| TemplateUsed {
                id: id.clone(),
                version: *version,
            }),
            send_at: m.send_at_ms.map(rfc3339),
            created_at: rfc3339(m.created_at_ms),
            updated_at: rfc3339(m.updated_at_ms),
            next_attempt_at: (m.status == mailroom_core::message::MessageStatus::Queued)
                .then(|| rfc3339(m.next_attempt_at_ms)),
            sent_at: m.sent_at_ms.map(rfc3339),
            attempt_count: m.attempt_count,
            last_error: m.last_error.clone(),
            content_deleted_at: m.content_deleted_at_ms.map(rfc3339),
            possibly_delivered: None,
            attempts: None,
            attachments: None,
            bounces: None,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateUsed {
    pub id: String,
    pub version: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    pub items: Vec<MessageView>,
    /// Messages matching the filter over all pages: exact up to 1,000. Beyond, counting would cost
    /// time proportional to the archive on every request: the total is then 1,000 and
    /// `total_is_estimate` is true (more match).
    pub total: i64,
    /// Whether `total` is only a lower bound.
    pub total_is_estimate: bool,
    /// Whether another page follows (then `next_cursor` is set).
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
    /// Record timelines only: the received mail about the record (newest first, up to `limit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Vec<crate::routes::inbound::InboundSummary>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Outbox only: comma-separated statuses (default `draft,queued,sending,failed`).
    pub status: Option<String>,
    pub account_id: Option<Uuid>,
    pub scenario: Option<String>,
    /// Created at or after this time (RFC 3339).
    pub from: Option<String>,
    /// Created before this time (RFC 3339).
    pub to: Option<String>,
    /// Only messages to this address (To, Cc or Bcc).
    pub recipient: Option<String>,
    /// Only messages whose subject contains this (case-insensitive). Each page looks at the newest
    /// 3,000 messages the other filters select; when that is not enough, `has_more` and the cursor
    /// lead further back (and `total` counts what was looked at, as an estimate).
    pub subject: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    pub status: String,
    pub version: String,
    /// Why the service is degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
