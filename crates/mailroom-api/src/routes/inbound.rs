//! Received mail: a mailbox's messages, one message with its bodies, attachment parts and raw
//! bytes, the records it concerns (set by hand), and conversations (outbound and inbound in time
//! order). View policies apply exactly as to outbound mail, inside the store's queries.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::{parse_rfc3339, rfc3339};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody, page_limit};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailroom_core::inbound::InboundAddress;
use mailroom_core::message::{RelatedRecord, Relation};
use mailroom_store::{InboundFilter, InboundMessage, StoreError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_mailbox_messages))
        .routes(routes!(get_inbound))
        .routes(routes!(download_raw))
        .routes(routes!(download_part))
        .routes(routes!(set_related_records, untrack))
        .routes(routes!(get_conversation))
        .routes(routes!(reply))
        .routes(routes!(reply_all))
        .routes(routes!(forward))
        .routes(routes!(get_correlation_settings, put_correlation_settings))
        .routes(routes!(mailbox_sync_status))
        .routes(routes!(get_contact, put_contact, delete_contact))
}

/// A sender or recipient as written in the message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddressView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: String,
}

impl From<&InboundAddress> for AddressView {
    fn from(a: &InboundAddress) -> Self {
        Self {
            name: a.name.clone(),
            address: a.address.clone(),
        }
    }
}

/// A received message in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InboundSummary {
    pub id: Uuid,
    pub mailbox_id: Uuid,
    pub folder: String,
    pub uid: u32,
    /// The Message-ID header, without angle brackets.
    pub message_id: Option<String>,
    pub subject: String,
    pub from: Option<AddressView>,
    pub to: Vec<AddressView>,
    pub cc: Vec<AddressView>,
    /// The `Date` header.
    pub sent_at: Option<String>,
    /// When the server received it (IMAP internal date).
    pub received_at: String,
    pub size: u64,
    /// IMAP flags as they were when mailroom read the message.
    pub flags: Vec<String>,
    pub unread: bool,
    /// The parser could not read this message: only its raw bytes are meaningful.
    pub unparsed: bool,
    /// How it was linked to its conversation: in-reply-to, subject-token, address-token,
    /// thread-index or smart-match; absent when it starts a conversation of its own.
    pub correlation_method: Option<String>,
    pub conversation_id: Uuid,
}

impl From<&InboundMessage> for InboundSummary {
    fn from(m: &InboundMessage) -> Self {
        Self {
            id: m.id,
            mailbox_id: m.mailbox_id,
            folder: m.folder.clone(),
            uid: m.uid,
            message_id: m.message_id_header.clone(),
            subject: m.subject.clone(),
            from: m.from.as_ref().map(AddressView::from),
            to: m.to.iter().map(AddressView::from).collect(),
            cc: m.cc.iter().map(AddressView::from).collect(),
            sent_at: m.sent_at_ms.map(rfc3339),
            received_at: rfc3339(m.received_at_ms),
            size: m.size,
            flags: m.flags.clone(),
            unread: !m.seen,
            unparsed: m.unparsed,
            correlation_method: m.correlation_method.map(|c| c.to_string()),
            conversation_id: m.conversation_id,
        }
    }
}

/// An attachment part of a received message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartView {
    /// The MIME part path as IMAP numbers it: `2`, `2.1` for a part inside an attached message.
    pub part: String,
    pub name: Option<String>,
    pub content_type: String,
    pub size: u64,
    /// Where to download it.
    pub download: String,
}

/// A record a message concerns.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecordRef {
    #[serde(rename = "type")]
    pub record_type: String,
    pub id: String,
}

/// A received message with everything mailroom kept of it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboundView {
    #[serde(flatten)]
    pub summary: InboundSummary,
    pub reply_to: Vec<AddressView>,
    /// Message-IDs this message answers (`In-Reply-To`, then `References` newest first).
    pub references: Vec<String>,
    /// Every header field as (name, value), in order.
    pub headers: Vec<(String, String)>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<PartView>,
    pub related_records: Vec<RecordRef>,
    /// Where to download the message as received.
    pub raw: String,
}

/// A page of received messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundList {
    pub items: Vec<InboundSummary>,
    pub has_more: bool,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct InboundQuery {
    /// Only this folder (e.g. `INBOX`).
    pub folder: Option<String>,
    /// The sender's address contains this.
    pub from: Option<String>,
    /// A recipient's address contains this.
    pub to: Option<String>,
    /// Received at or after (RFC 3339).
    pub received_from: Option<String>,
    /// Received before (RFC 3339).
    pub received_until: Option<String>,
    /// `true`: only mail not read when mailroom read it; `false`: only mail read.
    pub unread: Option<bool>,
    /// `true`: only mail linked to a conversation mailroom knows; `false`: only the rest.
    pub correlated: Option<bool>,
    /// 1-500, default 50.
    pub limit: Option<i64>,
    /// From `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn parse_cursor(raw: &str) -> ApiResult<(i64, Uuid)> {
    raw.split_once('_')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.parse().ok()?)))
        .ok_or_else(|| ApiError::invalid("cursor", "cursor is not one this API gave out"))
}

/// The received messages of a mailbox, newest first, as the caller may see them.
#[utoipa::path(get, path = "/v1/mailboxes/{id}/messages", tag = "inbound",
    params(("id" = Uuid, Path), InboundQuery),
    responses((status = 200, body = InboundList), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_mailbox_messages(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<InboundQuery>,
) -> ApiResult<axum::Json<InboundList>> {
    state.store.mailbox(id).await?;
    let limit = page_limit(query.limit, 50)?;
    let filter = InboundFilter {
        visibility: Some(principal.visibility(&state).await?),
        mailbox_id: Some(id),
        folder: query.folder.clone(),
        from: query.from.clone(),
        to: query.to.clone(),
        received_from_ms: query
            .received_from
            .as_deref()
            .map(|raw| parse_rfc3339("received_from", raw))
            .transpose()?,
        received_until_ms: query
            .received_until
            .as_deref()
            .map(|raw| parse_rfc3339("received_until", raw))
            .transpose()?,
        unread: query.unread,
        correlated: query.correlated,
        after: query.cursor.as_deref().map(parse_cursor).transpose()?,
        limit: limit + 1,
        ..Default::default()
    };
    let mut items = state.store.inbound_page(&filter).await?;
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| {
            items
                .last()
                .map(|m| format!("{}_{}", m.received_at_ms, m.id))
        })
        .flatten();
    Ok(axum::Json(InboundList {
        items: items.iter().map(InboundSummary::from).collect(),
        has_more,
        next_cursor,
    }))
}

async fn visible_detail(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> ApiResult<mailroom_store::InboundDetail> {
    let visibility = principal.visibility(state).await?;
    match state.store.inbound_detail(id, Some(&visibility)).await {
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found(format!(
            "inbound message {id} not found"
        ))),
        other => Ok(other?),
    }
}

/// A received message: headers, bodies, attachment parts, correlation and related records.
#[utoipa::path(get, path = "/v1/inbound/{id}", tag = "inbound", params(("id" = Uuid, Path)),
    responses((status = 200, body = InboundView), (status = 404, body = ErrorBody)))]
async fn get_inbound(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<InboundView>> {
    let detail = visible_detail(&state, &principal, id).await?;
    Ok(axum::Json(InboundView {
        summary: InboundSummary::from(&detail.message),
        reply_to: detail
            .message
            .reply_to
            .iter()
            .map(AddressView::from)
            .collect(),
        references: detail.message.references.clone(),
        headers: detail.headers,
        text: detail.text,
        html: detail.html,
        attachments: detail
            .attachments
            .iter()
            .map(|p| PartView {
                part: p.path.clone(),
                name: p.name.clone(),
                content_type: p.content_type.clone(),
                size: p.size,
                download: format!("/v1/inbound/{id}/parts/{}", p.path),
            })
            .collect(),
        related_records: detail
            .related_records
            .iter()
            .map(|r| RecordRef {
                record_type: r.record_type.clone(),
                id: r.record_id.clone(),
            })
            .collect(),
        raw: format!("/v1/inbound/{id}/raw"),
    }))
}

async fn blob_response(
    state: &AppState,
    sha256: &str,
    content_type: &str,
    filename: &str,
    size: u64,
) -> ApiResult<Response> {
    let stream = state.blobs.open(sha256).await.map_err(|e| {
        ApiError::new(
            StatusCode::GONE,
            "attachment_unreadable",
            format!("the stored bytes cannot be read: {e}"),
        )
    })?;
    let safe_name: String = filename
        .chars()
        .map(|c| {
            if c.is_control() || c == '"' || c == '\\' {
                '_'
            } else {
                c
            }
        })
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{safe_name}\""),
            ),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The message exactly as received (`message/rfc822`).
#[utoipa::path(get, path = "/v1/inbound/{id}/raw", tag = "inbound", params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "message/rfc822"), (status = 404, body = ErrorBody)))]
async fn download_raw(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let detail = visible_detail(&state, &principal, id).await?;
    let message = &detail.message;
    blob_response(
        &state,
        &message.raw_sha256,
        "message/rfc822",
        &format!("{id}.eml"),
        message.size,
    )
    .await
}

/// One attachment part, by its part path (`2`, `2.1`).
#[utoipa::path(get, path = "/v1/inbound/{id}/parts/{part}", tag = "inbound",
    params(("id" = Uuid, Path), ("part" = String, Path, description = "the part path, e.g. 2.1")),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
async fn download_part(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((id, part)): ApiPath<(Uuid, String)>,
) -> ApiResult<Response> {
    let detail = visible_detail(&state, &principal, id).await?;
    let Some(found) = detail.attachments.iter().find(|p| p.path == part) else {
        return Err(ApiError::not_found(format!(
            "inbound message {id} has no attachment part {part}"
        )));
    };
    let name = found.name.clone().unwrap_or_else(|| format!("part-{part}"));
    blob_response(
        &state,
        &found.sha256,
        &found.content_type,
        &name,
        found.size,
    )
    .await
}

/// The records a received message concerns, set by hand ("set regarding").
#[derive(Debug, Deserialize, ToSchema)]
pub struct RelatedRecordsBody {
    pub related_records: Vec<RecordRef>,
}

/// Set the records a received message concerns (replacing those found by correlation).
#[utoipa::path(put, path = "/v1/inbound/{id}/related-records", tag = "inbound", params(("id" = Uuid, Path)),
    request_body = RelatedRecordsBody,
    responses((status = 200, body = InboundView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn set_related_records(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RelatedRecordsBody>,
) -> ApiResult<axum::Json<InboundView>> {
    visible_detail(&state, &principal, id).await?;
    if body.related_records.len() > 100 {
        return Err(ApiError::invalid(
            "related_records",
            "at most 100 related records",
        ));
    }
    let records = body
        .related_records
        .iter()
        .map(|r| RelatedRecord::new(&r.record_type, &r.id, Relation::Related))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::from(e.at("related_records")))?;
    state
        .store
        .set_inbound_related_records(id, &records)
        .await?;
    get_inbound(State(state), Extension(principal), ApiPath(id)).await
}

/// Untrack a received message: it no longer concerns any record.
#[utoipa::path(delete, path = "/v1/inbound/{id}/related-records", tag = "inbound", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn untrack(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    visible_detail(&state, &principal, id).await?;
    state.store.set_inbound_related_records(id, &[]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One message of a conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationItem {
    /// `outbound` (sent by mailroom) or `inbound` (received).
    pub direction: String,
    pub id: Uuid,
    pub subject: String,
    pub from: Option<String>,
    pub to: Vec<String>,
    /// When it was sent (outbound: accepted, or sent when it was) or received.
    pub at: String,
    /// Outbound: its status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_method: Option<String>,
}

/// A conversation: the mail sent and received in it that the caller may see, in time order.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationView {
    pub id: Uuid,
    pub items: Vec<ConversationItem>,
}

/// A conversation, outbound and inbound messages in time order.
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "inbound", params(("id" = Uuid, Path)),
    responses((status = 200, body = ConversationView), (status = 404, body = ErrorBody)))]
async fn get_conversation(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<ConversationView>> {
    let visibility = principal.visibility(&state).await?;
    let mut items: Vec<(i64, ConversationItem)> = Vec::new();
    for message_id in state.store.conversation_outbound_ids(id).await? {
        let message = match state.store.visible_message(message_id, &visibility).await {
            Ok(message) => message,
            Err(StoreError::NotFound(_)) => continue,
            Err(error) => return Err(error.into()),
        };
        let at = message.sent_at_ms.unwrap_or(message.created_at_ms);
        items.push((
            at,
            ConversationItem {
                direction: "outbound".into(),
                id: message.id,
                subject: message.subject.clone(),
                from: None,
                to: message.to.clone(),
                at: rfc3339(at),
                status: Some(message.status.to_string()),
                correlation_method: None,
            },
        ));
    }
    let inbound = state
        .store
        .inbound_page(&InboundFilter {
            visibility: Some(visibility),
            conversation_id: Some(id),
            limit: 1000,
            ..Default::default()
        })
        .await?;
    for message in &inbound {
        items.push((
            message.received_at_ms,
            ConversationItem {
                direction: "inbound".into(),
                id: message.id,
                subject: message.subject.clone(),
                from: message.from.as_ref().map(|a| a.address.clone()),
                to: message.to.iter().map(|a| a.address.clone()).collect(),
                at: rfc3339(message.received_at_ms),
                status: None,
                correlation_method: message.correlation_method.map(|c| c.to_string()),
            },
        ));
    }
    if items.is_empty() {
        return Err(ApiError::not_found(format!("conversation {id} not found")));
    }
    // IMAP internal dates have a resolution of one second: within a second, messages are in the
    // order mailroom stored or accepted them (their ids are time-ordered UUIDv7).
    items.sort_by_key(|(at, item)| (at.div_euclid(1000), item.id));
    Ok(axum::Json(ConversationView {
        id,
        items: items.into_iter().map(|(_, item)| item).collect(),
    }))
}

/// The received mail about a record, newest first, for record timelines.
pub async fn record_inbound(
    state: &AppState,
    visibility: mailroom_store::Visibility,
    record_type: &str,
    record_id: &str,
    limit: u32,
) -> ApiResult<Vec<InboundSummary>> {
    Ok(state
        .store
        .inbound_page(&InboundFilter {
            visibility: Some(visibility),
            related_to: Some((record_type.to_owned(), record_id.to_owned())),
            limit,
            ..Default::default()
        })
        .await?
        .iter()
        .map(InboundSummary::from)
        .collect())
}

/// A reply or forward written in the application.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// The new text, above the quoted original.
    pub text: Option<String>,
    /// The new HTML, above the quoted original.
    pub html: Option<String>,
    /// Forward: the recipients (required). Reply: more recipients besides the sender answered.
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// The account to send through. Default: the caller's own mailbox (through an account of the
    /// `current-user` connector) when the message was received in it.
    pub account_id: Option<Uuid>,
    /// Uploaded files to attach besides (forward) the original's attachments.
    #[serde(default)]
    pub attachments: Vec<crate::dto::AttachmentRef>,
}

/// The answer to a reply or forward: the message accepted, in the conversation it joined.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyAccepted {
    #[serde(flatten)]
    pub message: crate::dto::AcceptedMessage,
    pub conversation_id: Uuid,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Reply,
    ReplyAll,
    Forward,
}

/// `Re: subject` / `Fwd: subject`, without stacking prefixes.
fn answer_subject(subject: &str, answer: Answer) -> String {
    let subject = subject.trim();
    let lower = subject.to_ascii_lowercase();
    match answer {
        Answer::Forward if lower.starts_with("fwd:") || lower.starts_with("fw:") => subject.into(),
        Answer::Forward => format!("Fwd: {subject}"),
        _ if lower.starts_with("re:") => subject.into(),
        _ => format!("Re: {subject}"),
    }
}

fn quote_text(original: &mailroom_store::InboundDetail) -> String {
    let m = &original.message;
    let who = m
        .from
        .as_ref()
        .map(|a| match &a.name {
            Some(name) => format!("{name} <{}>", a.address),
            None => a.address.clone(),
        })
        .unwrap_or_else(|| "the sender".into());
    let when = m.sent_at_ms.unwrap_or(m.received_at_ms);
    let quoted: String = original
        .text
        .as_deref()
        .unwrap_or_default()
        .lines()
        .map(|line| format!("> {line}\n"))
        .collect();
    format!("On {}, {who} wrote:\n{quoted}", rfc3339(when))
}

async fn answer(
    state: AppState,
    principal: Principal,
    id: Uuid,
    body: ReplyBody,
    answer: Answer,
) -> ApiResult<(StatusCode, axum::Json<ReplyAccepted>)> {
    let original = visible_detail(&state, &principal, id).await?;
    let m = &original.message;
    let mailbox = state.store.mailbox(m.mailbox_id).await?;
    let own = |address: &str| address.eq_ignore_ascii_case(mailbox.email_address.as_str());
    // Recipients: the sender answered (its Reply-To if it has one), everyone else on reply-all.
    let (mut to, mut cc): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
    if answer != Answer::Forward {
        let sender: Vec<String> = if m.reply_to.is_empty() {
            m.from.iter().map(|a| a.address.clone()).collect()
        } else {
            m.reply_to.iter().map(|a| a.address.clone()).collect()
        };
        to.extend(sender);
        if answer == Answer::ReplyAll {
            to.extend(m.to.iter().map(|a| a.address.clone()).filter(|a| !own(a)));
            cc.extend(m.cc.iter().map(|a| a.address.clone()).filter(|a| !own(a)));
        }
    }
    to.extend(body.to.iter().cloned());
    cc.extend(body.cc.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    to.retain(|a| seen.insert(a.to_ascii_lowercase()));
    cc.retain(|a| seen.insert(a.to_ascii_lowercase()));
    if to.is_empty() {
        return Err(ApiError::invalid(
            "to",
            match answer {
                Answer::Forward => "a forward needs at least one recipient in `to`",
                _ => "the message has no sender to answer: give the recipients in `to`",
            },
        ));
    }
    // The account: as given, or the caller's own mailbox when the message came into it.
    let account_id = match body.account_id {
        Some(account) => account,
        None => {
            let current_user = state
                .store
                .accounts()
                .await?
                .into_iter()
                .find(|a| a.connector == mailroom_core::account::ConnectorKind::CurrentUser);
            match current_user {
                Some(account) if mailbox.user_id == Some(principal.user.id) => account.id,
                _ => {
                    return Err(ApiError::invalid(
                        "account_id",
                        "give the account to send through: only mail received in your own mailbox is answered from it by default (through an account of the current-user connector)",
                    ));
                }
            }
        }
    };
    // The original, quoted below the new text.
    let quoted = quote_text(&original);
    let text = Some(format!(
        "{}\n\n{quoted}",
        body.text.as_deref().unwrap_or_default()
    ));
    let html = body.html.as_ref().map(|html| {
        let original_html = original.html.clone().unwrap_or_else(|| {
            format!(
                "<pre>{}</pre>",
                crate::routes::html::escape(original.text.as_deref().unwrap_or_default())
            )
        });
        format!("{html}\n<blockquote type=\"cite\">{original_html}</blockquote>")
    });
    // A forward carries the original's attachments (top-level parts: a part inside an attached
    // message travels inside it).
    let mut attachments = body.attachments;
    if answer == Answer::Forward {
        for part in original
            .attachments
            .iter()
            .filter(|p| !p.path.contains('.'))
        {
            let name = part
                .name
                .clone()
                .unwrap_or_else(|| format!("part-{}", part.path));
            let attachment = state
                .store
                .create_attachment(
                    &part.sha256,
                    part.size,
                    &name,
                    &part.content_type,
                    &principal.author_id(),
                )
                .await?;
            attachments.push(crate::dto::AttachmentRef {
                id: attachment.id,
                content_id: None,
            });
        }
    }
    let related_records = original
        .related_records
        .iter()
        .map(|r| crate::dto::RelatedRecordView {
            record_type: r.record_type.clone(),
            id: r.record_id.clone(),
            relation: None,
        })
        .collect();
    let request = crate::dto::SendMessage {
        to,
        cc,
        subject: Some(answer_subject(&m.subject, answer)),
        text,
        html,
        account_id: Some(account_id),
        related_records,
        attachments,
        ..Default::default()
    };
    let thread = m.message_id_header.as_ref().map(|message_id| {
        let mut references: Vec<String> = m
            .references
            .iter()
            .rev()
            .map(|r| format!("<{r}>"))
            .collect();
        references.push(format!("<{message_id}>"));
        crate::routes::messages::Threading {
            conversation: m.conversation_id,
            in_reply_to: format!("<{message_id}>"),
            references: references.join(" "),
        }
    });
    let (accepted, _) = crate::routes::messages::accept_in_thread(
        &state,
        &principal,
        &request,
        None,
        None,
        false,
        thread.as_ref(),
    )
    .await?;
    state
        .store
        .set_message_conversation(accepted.id, m.conversation_id)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(ReplyAccepted {
            message: accepted,
            conversation_id: m.conversation_id,
        }),
    ))
}

/// Reply to the sender: `Re:` subject, `In-Reply-To`/`References`, the original quoted; the reply
/// joins the conversation and concerns the same records.
#[utoipa::path(post, path = "/v1/inbound/{id}/reply", tag = "inbound", params(("id" = Uuid, Path)), request_body = ReplyBody,
    responses((status = 202, body = ReplyAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn reply(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReplyBody>,
) -> ApiResult<(StatusCode, axum::Json<ReplyAccepted>)> {
    answer(state, principal, id, body, Answer::Reply).await
}

/// Reply to the sender and every other recipient (except the mailbox itself).
#[utoipa::path(post, path = "/v1/inbound/{id}/reply-all", tag = "inbound", params(("id" = Uuid, Path)), request_body = ReplyBody,
    responses((status = 202, body = ReplyAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn reply_all(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReplyBody>,
) -> ApiResult<(StatusCode, axum::Json<ReplyAccepted>)> {
    answer(state, principal, id, body, Answer::ReplyAll).await
}

/// Forward to `to`: `Fwd:` subject, the original quoted and its attachments attached.
#[utoipa::path(post, path = "/v1/inbound/{id}/forward", tag = "inbound", params(("id" = Uuid, Path)), request_body = ReplyBody,
    responses((status = 202, body = ReplyAccepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn forward(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<ReplyBody>,
) -> ApiResult<(StatusCode, axum::Json<ReplyAccepted>)> {
    answer(state, principal, id, body, Answer::Forward).await
}

/// How received mail is linked to conversations. In-Reply-To/References and Outlook's
/// Thread-Index always are; the others are turned on here.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CorrelationSettingsView {
    /// Add `[PREFIX-TOKEN]` to outbound subjects and match it in replies.
    pub subject_token: bool,
    /// 1-10 letters or digits, e.g. `MR`.
    pub subject_token_prefix: String,
    /// Send with a `Reply-To` of `address+TOKEN@domain` and match it in replies (the mail server
    /// must deliver sub-addresses to the mailbox).
    pub plus_addressing: bool,
    /// Same normalised subject and participants within this many days (0: off).
    pub smart_match_days: u32,
}

/// The correlation settings.
#[utoipa::path(get, path = "/v1/settings/correlation", tag = "inbound", responses((status = 200, body = CorrelationSettingsView)))]
async fn get_correlation_settings(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<CorrelationSettingsView>> {
    let s = state.store.correlation_settings().await?;
    Ok(axum::Json(CorrelationSettingsView {
        subject_token: s.subject_token,
        subject_token_prefix: s.subject_token_prefix,
        plus_addressing: s.plus_addressing,
        smart_match_days: s.smart_match_days,
    }))
}

/// Replace the correlation settings.
#[utoipa::path(put, path = "/v1/settings/correlation", tag = "inbound", request_body = CorrelationSettingsView,
    responses((status = 200, body = CorrelationSettingsView), (status = 422, body = ErrorBody)))]
async fn put_correlation_settings(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CorrelationSettingsView>,
) -> ApiResult<axum::Json<CorrelationSettingsView>> {
    let settings = mailroom_core::inbound::CorrelationSettings {
        subject_token: body.subject_token,
        subject_token_prefix: body.subject_token_prefix,
        plus_addressing: body.plus_addressing,
        smart_match_days: body.smart_match_days,
    }
    .validate()?;
    state.store.set_correlation_settings(&settings).await?;
    state.correlation_changed();
    get_correlation_settings(State(state)).await
}

/// A contact the business application knows (MISSION A12).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ContactView {
    /// The application's id of the contact.
    #[serde(default)]
    pub id: String,
    pub name: Option<String>,
    /// Its email addresses (at most 50).
    pub addresses: Vec<String>,
    /// The records it belongs to (a customer, a vendor…); mail exchanged with it is linked to them.
    #[serde(default)]
    pub related_records: Vec<RecordRef>,
}

fn contact_view(c: mailroom_store::Contact) -> ContactView {
    ContactView {
        id: c.id,
        name: c.name,
        addresses: c.addresses,
        related_records: c
            .records
            .into_iter()
            .map(|(record_type, id)| RecordRef { record_type, id })
            .collect(),
    }
}

fn contact_id(raw: &str) -> ApiResult<String> {
    if raw.is_empty() || raw.len() > 200 || raw.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "id",
            "a contact id is 1-200 characters without control characters",
        ));
    }
    Ok(raw.to_owned())
}

/// A contact.
#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "inbound", params(("id" = String, Path)),
    responses((status = 200, body = ContactView), (status = 404, body = ErrorBody)))]
async fn get_contact(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<ContactView>> {
    Ok(axum::Json(contact_view(
        state.store.contact(&contact_id(&id)?).await?,
    )))
}

/// Create or replace a contact: its addresses and the records it belongs to. Received mail from
/// or to these addresses is kept by the `known-contacts` filter and linked to these records.
#[utoipa::path(put, path = "/v1/contacts/{id}", tag = "inbound", params(("id" = String, Path)), request_body = ContactView,
    responses((status = 200, body = ContactView), (status = 422, body = ErrorBody)))]
async fn put_contact(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ContactView>,
) -> ApiResult<axum::Json<ContactView>> {
    let id = contact_id(&id)?;
    if body.addresses.len() > 50 || body.related_records.len() > 100 {
        return Err(ApiError::invalid(
            "addresses",
            "at most 50 addresses and 100 related records",
        ));
    }
    let addresses = body
        .addresses
        .iter()
        .map(|raw| {
            mailroom_core::address::EmailAddress::parse(raw)
                .map(|a| a.as_str().to_ascii_lowercase())
                .map_err(|e| ApiError::from(e.at("addresses")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let records = body
        .related_records
        .iter()
        .map(|r| {
            RelatedRecord::new(&r.record_type, &r.id, Relation::Related)
                .map(|r| (r.record_type, r.record_id))
                .map_err(|e| ApiError::from(e.at("related_records")))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    let stored = state
        .store
        .put_contact(&mailroom_store::Contact {
            id,
            name: body.name.clone(),
            addresses,
            records,
            updated_at_ms: 0,
        })
        .await?;
    Ok(axum::Json(contact_view(stored)))
}

/// Delete a contact.
#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "inbound", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn delete_contact(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_contact(&contact_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// How far one folder of a mailbox has been read.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FolderSyncView {
    pub folder: String,
    pub uidvalidity: u32,
    /// Every UID below this has been read.
    pub uidnext: u32,
    pub highestmodseq: Option<u64>,
    /// Whether the initial sync (newest first, from the profile's `process_from`) is complete.
    pub initial_sync_done: bool,
    /// Times the server changed the folder's UIDVALIDITY (each one re-indexed the folder).
    pub uidvalidity_changes: u32,
    pub synced_at: Option<String>,
    /// Messages stored from this folder.
    pub messages: i64,
}

/// A mailbox's sync: per folder, how far it has been read and how many messages are stored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MailboxSyncView {
    pub mailbox_id: Uuid,
    pub folders: Vec<FolderSyncView>,
}

/// How far each folder of a mailbox has been synchronized.
#[utoipa::path(get, path = "/v1/mailboxes/{id}/sync", tag = "inbound", params(("id" = Uuid, Path)),
    responses((status = 200, body = MailboxSyncView), (status = 404, body = ErrorBody)))]
async fn mailbox_sync_status(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MailboxSyncView>> {
    state.store.mailbox(id).await?;
    let counts: std::collections::HashMap<String, i64> =
        state.store.inbound_counts(id).await?.into_iter().collect();
    let folders = state
        .store
        .folder_states(id)
        .await?
        .into_iter()
        .map(|f| FolderSyncView {
            messages: counts.get(&f.folder).copied().unwrap_or(0),
            folder: f.folder,
            uidvalidity: f.uidvalidity,
            uidnext: f.uidnext,
            highestmodseq: f.highestmodseq,
            initial_sync_done: f.initial_below <= 1,
            uidvalidity_changes: f.validity_changes,
            synced_at: f.synced_at_ms.map(rfc3339),
        })
        .collect();
    Ok(axum::Json(MailboxSyncView {
        mailbox_id: id,
        folders,
    }))
}
