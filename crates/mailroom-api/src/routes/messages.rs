//! `/v1/messages`, `/v1/outbox`, `/v1/sent`: accept mail durably, show it with every attempt, retry
//! and cancel it.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::{
    AcceptedMessage, ListQuery, MessageList, MessageView, SendMessage, parse_rfc3339,
};
use crate::error::{
    ApiError, ApiPath, ApiQuery, ApiResult, ErrorBody, page_limit, parse_json_body,
};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mailroom_core::account::{SenderType, SubstituteMode};
use mailroom_core::address::Mailbox;
use mailroom_core::message::{
    MessageContent, MessageStatus, RawContent, RelatedRecord, Relation, message_id_for,
};
use mailroom_core::scenario::ScenarioName;
use mailroom_engine::Reservation;
use mailroom_store::{
    ClaimedMessage, InsertOutcome, MessageFilter, NewMessage, StoreError, Visibility, now_ms,
};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_message))
        .routes(routes!(get_message))
        .routes(routes!(retry_message))
        .routes(routes!(cancel_message))
        .routes(routes!(confirm_message))
        .routes(routes!(list_outbox))
        .routes(routes!(list_sent))
        .routes(routes!(list_record_messages))
}

fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic()));
    key.map(|k| Some(k.to_owned())).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 visible ASCII characters",
        )
    })
}

fn validate(
    body: &SendMessage,
    body_parts: &BodyParts,
    max_body_bytes: usize,
) -> ApiResult<(
    MessageContent,
    ScenarioName,
    Vec<RelatedRecord>,
    Option<i64>,
)> {
    let body_bytes =
        body.text.as_ref().map_or(0, String::len) + body.html.as_ref().map_or(0, String::len);
    if body_bytes > max_body_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the message body is {body_bytes} bytes; the limit is {max_body_bytes} bytes (max_body_bytes)"
            ),
        ));
    }
    let headers: Vec<(String, String)> = body
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let content = MessageContent::parse(
        RawContent {
            to: &body.to,
            cc: &body.cc,
            bcc: &body.bcc,
            reply_to: &body.reply_to,
            headers: &headers,
            subject: &body_parts.subject,
            text: body_parts.text.as_deref(),
            html: body_parts.html.as_deref(),
        },
        max_body_bytes,
    )?;
    let scenario = ScenarioName::parse(body.scenario.as_deref().unwrap_or("default"))?;
    let related = body
        .related_records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let relation = match record.relation.as_deref() {
                None => Ok(Relation::Related),
                Some(raw) => raw.parse::<Relation>(),
            }
            .map_err(|e| e.at(format!("related_records[{index}].relation")))?;
            RelatedRecord::new(&record.record_type, &record.id, relation).map_err(|e| {
                let field = format!("related_records[{index}].{}", e.field);
                e.at(field)
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let send_at = body
        .send_at
        .as_deref()
        .map(|raw| parse_rfc3339("send_at", raw))
        .transpose()?;
    Ok((content, scenario, related, send_at))
}

/// The sender of a message from a current-user account: the user's own mailbox, which must be
/// ready to send (approved, tested, outgoing on); otherwise `409` naming the missing step.
async fn own_mailbox_sender(state: &AppState, principal: &Principal) -> ApiResult<Mailbox> {
    use mailroom_core::mailbox::{Direction, ready_for};
    let mailbox = state.store.mailbox_of_user(principal.user.id).await?;
    let settings = state.store.email_settings().await?;
    ready_for(
        mailbox.as_ref().map(|m| m.readiness()).as_ref(),
        Direction::Outgoing,
        &settings,
    )
    .map_err(|step| {
        ApiError::new(
            StatusCode::CONFLICT,
            step.code(),
            format!(
                "this account sends from your own mailbox, which cannot send yet: {}",
                step.message("outgoing")
            ),
        )
    })?;
    let mailbox = mailbox.expect("a ready mailbox exists");
    Mailbox::new(Some(&principal.user.name), mailbox.email_address.clone())
        .or_else(|_| Mailbox::new(None, mailbox.email_address))
        .map_err(ApiError::from)
}

/// Who the message shows as its sender (MISSION A4), fixed when the message is accepted:
/// an account of sender type "current user" sends as the signed-in user's contact email; an account that
/// substitutes senders shows, in this order, the approval-workflow user, its substitute address, its own
/// address — in From for Send As, and with the account in Sender for Send On Behalf.
fn visible_sender(
    account: &mailroom_store::Account,
    principal: &Principal,
    workflow_sender: Option<&str>,
) -> ApiResult<(Option<Mailbox>, Option<Mailbox>)> {
    let workflow = workflow_sender
        .map(|raw| Mailbox::parse(raw).map_err(|e| ApiError::invalid("workflow_sender", e.reason)))
        .transpose()?;
    if account.sender_type == SenderType::CurrentUser {
        let user = &principal.user;
        let address = user.contact_email.clone().ok_or_else(|| {
            ApiError::invalid(
                "sender",
                format!("account {:?} sends as the current user, and user {:?} has no contact email; set one on the user", account.name, user.name),
            )
        })?;
        return Ok((
            Some(Mailbox::new(Some(&user.name), address).map_err(ApiError::from)?),
            None,
        ));
    }
    let Some(mode) = account.substitute_mode else {
        if workflow.is_some() {
            return Err(ApiError::invalid(
                "workflow_sender",
                format!("account {:?} does not substitute senders", account.name),
            ));
        }
        return Ok((None, None));
    };
    let account_mailbox = Mailbox::new(
        Some(account.sender_name.as_deref().unwrap_or(&account.name)),
        account.email_address.clone(),
    )
    .or_else(|_| Mailbox::new(None, account.email_address.clone()))
    .map_err(ApiError::from)?;
    if let Some(workflow) = &workflow {
        let domain = workflow.address.domain();
        if !account
            .options
            .may_send_for(account.email_address.domain(), domain)
        {
            return Err(ApiError::invalid(
                "workflow_sender",
                format!(
                    "{} is outside the domains account {:?} sends for ({}); receivers checking DMARC would reject \
                     mail from it sent through this account's server. Add {domain} to the account's \
                     allowed_sender_domains once its DMARC/SPF policy allows this server",
                    workflow.address,
                    account.name,
                    std::iter::once(account.email_address.domain().to_owned())
                        .chain(account.options.allowed_sender_domains.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    let visible = match (workflow, &account.substitute_address) {
        (Some(workflow), _) => workflow,
        // The substitute's own name when the account has one. Send On Behalf names two parties:
        // the account's own name belongs in Sender, never beside the substitute's address in From.
        (None, Some(address)) => {
            let name = match (&account.substitute_name, mode) {
                (Some(name), _) => Some(name.as_str()),
                (None, SubstituteMode::SendOnBehalf) => None,
                (None, SubstituteMode::SendAs) => account.sender_name.as_deref(),
            };
            Mailbox::new(name, address.clone()).map_err(ApiError::from)?
        }
        (None, None) => return Ok((None, None)),
    };
    Ok(match mode {
        SubstituteMode::SendAs => (Some(visible), None),
        SubstituteMode::SendOnBehalf => (Some(visible), Some(account_mailbox)),
    })
}

/// Subject and bodies: the caller's own, or rendered from a template.
struct BodyParts {
    subject: String,
    text: Option<String>,
    html: Option<String>,
    template: Option<(String, i64)>,
}

async fn body_parts(state: &AppState, request: &SendMessage) -> ApiResult<BodyParts> {
    match &request.template {
        Some(template) => {
            if request.subject.is_some() || request.text.is_some() || request.html.is_some() {
                return Err(ApiError::invalid(
                    "template",
                    "a templated message takes its subject and body from the template; leave subject, text and html out",
                ));
            }
            let (record, rendered) = crate::routes::templates::render(
                state,
                &template.id,
                template.version,
                &template.data,
            )
            .await?;
            Ok(BodyParts {
                subject: rendered.subject.as_str().to_owned(),
                text: Some(rendered.text),
                html: Some(rendered.html),
                template: Some((record.id, record.version)),
            })
        }
        None => Ok(BodyParts {
            subject: request.subject.clone().ok_or_else(|| {
                ApiError::invalid("subject", "a message needs a subject (or a template)")
            })?,
            text: request.text.clone(),
            html: request.html.clone(),
            template: None,
        }),
    }
}

/// The attachments a message refers to, checked: each exists and is the sender's to use, and together
/// they fit the limit. An unknown or foreign id is refused the same way, so ids cannot be probed.
async fn check_attachments(
    state: &AppState,
    principal: &Principal,
    request: &SendMessage,
    scenario: &ScenarioName,
    html: Option<&str>,
) -> ApiResult<Vec<(Uuid, Option<String>)>> {
    if request.attachments.is_empty()
        && request.exclude_attachments.is_empty()
        && scenario.is_default()
    {
        // The common case: nothing attached and no scenario files to add.
        return Ok(Vec::new());
    }
    let visibility = principal.visibility(state).await?;
    // The default scenario never gets default attachments.
    let scenario_files = if scenario.is_default() {
        Vec::new()
    } else {
        state.store.scenario_attachments(scenario.as_str()).await?
    };
    let mut total = 0u64;
    let mut ids: Vec<(Uuid, Option<String>)> =
        Vec::with_capacity(request.attachments.len() + scenario_files.len());
    for (index, reference) in request.attachments.iter().enumerate() {
        let unknown = || {
            ApiError::invalid(
                &format!("attachments[{index}].id"),
                format!("unknown attachment {}", reference.id),
            )
        };
        let attachment = state
            .store
            .attachment(reference.id)
            .await
            .map_err(|_| unknown())?;
        let offered = scenario_files
            .iter()
            .any(|f| f.attachment.id == reference.id);
        if !offered
            && !state
                .store
                .attachment_visible(reference.id, &visibility)
                .await?
        {
            return Err(unknown());
        }
        let content_id = match &reference.content_id {
            None => None,
            Some(cid) => {
                let field = format!("attachments[{index}].content_id");
                let valid = !cid.is_empty()
                    && cid.len() <= 100
                    && cid
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
                if !valid {
                    return Err(ApiError::invalid(
                        &field,
                        "a content id is 1-100 letters, digits, '.', '_', '@' or '-'",
                    ));
                }
                if !html.is_some_and(|h| h.contains(&format!("cid:{cid}"))) {
                    return Err(ApiError::invalid(
                        &field,
                        format!(
                            "the HTML body does not show cid:{cid}; an inline image must be referenced"
                        ),
                    ));
                }
                if ids
                    .iter()
                    .any(|(_, other)| other.as_deref() == Some(cid.as_str()))
                {
                    return Err(ApiError::invalid(
                        &field,
                        format!("content id {cid} is used twice"),
                    ));
                }
                Some(cid.clone())
            }
        };
        if !ids.iter().any(|(id, _)| *id == attachment.id) {
            total += attachment.size;
            ids.push((attachment.id, content_id));
        }
    }
    for (index, excluded) in request.exclude_attachments.iter().enumerate() {
        if !scenario_files
            .iter()
            .any(|f| f.is_default && f.attachment.id == excluded.id)
        {
            return Err(ApiError::invalid(
                &format!("exclude_attachments[{index}].id"),
                format!(
                    "{} is not a default attachment of scenario {scenario}",
                    excluded.id
                ),
            ));
        }
    }
    for file in scenario_files.iter().filter(|f| f.is_default) {
        let excluded = request
            .exclude_attachments
            .iter()
            .any(|e| e.id == file.attachment.id);
        if !excluded && !ids.iter().any(|(id, _)| *id == file.attachment.id) {
            total += file.attachment.size;
            ids.push((file.attachment.id, None));
        }
    }
    let limit = state.settings.max_attachment_bytes;
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the attachments total {total} bytes; the limit per message is {limit} bytes (max_attachment_bytes)"
            ),
        ));
    }
    Ok(ids)
}

/// Refuses a message to an address on the suppression list, naming each such recipient and why.
async fn refuse_suppressed(
    state: &AppState,
    content: &mailroom_core::message::MessageContent,
) -> ApiResult<()> {
    let fields = [
        ("to", &content.to),
        ("cc", &content.cc),
        ("bcc", &content.bcc),
    ];
    let addresses: Vec<String> = fields
        .iter()
        .flat_map(|(_, list)| list.iter())
        .map(|m| m.address.as_str().to_ascii_lowercase())
        .collect();
    let suppressed = state.store.suppressed_among(&addresses).await?;
    if suppressed.is_empty() {
        return Ok(());
    }
    let field = fields
        .iter()
        .find(|(_, list)| {
            list.iter().any(|m| {
                suppressed
                    .iter()
                    .any(|s| s.address == m.address.as_str().to_ascii_lowercase())
            })
        })
        .map_or("to", |(name, _)| *name);
    let said: Vec<String> = suppressed
        .iter()
        .map(|s| match &s.detail {
            Some(detail) => format!("{} ({}: {detail})", s.address, s.reason),
            None => format!("{} ({})", s.address, s.reason),
        })
        .collect();
    Err(ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "recipient_suppressed",
        format!(
            "not sent: mail to {} is suppressed; remove the suppression (DELETE /v1/suppressions/{{address}}) to mail it again",
            said.join(", ")
        ),
    )
    .at(field))
}

/// One-click unsubscribe (RFC 8058), when the message or its scenario asks for it: refuses To
/// recipients who left the list (the scenario), and adds `List-Unsubscribe` (the https link, and a
/// mailto address when the account has a bounce domain) and `List-Unsubscribe-Post`.
async fn add_unsubscribe(
    state: &AppState,
    request: &SendMessage,
    scenario: &mailroom_core::scenario::ScenarioName,
    account: &mailroom_store::Account,
    id: Uuid,
    content: &mut mailroom_core::message::MessageContent,
) -> ApiResult<()> {
    let wanted = match request.unsubscribe {
        Some(wanted) => wanted,
        None => state.store.scenario_unsubscribe(scenario).await?,
    };
    if !wanted {
        return Ok(());
    }
    let Some(public_url) = &state.settings.public_url else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsubscribe_needs_public_url",
            "a one-click unsubscribe link needs the address recipients reach mailroom at: set public_url in the configuration",
        )
        .at("unsubscribe"));
    };
    let addresses: Vec<String> = content
        .to
        .iter()
        .map(|m| m.address.as_str().to_ascii_lowercase())
        .collect();
    if addresses.is_empty() {
        return Err(ApiError::invalid(
            "unsubscribe",
            "an unsubscribe link names the message's To recipients, and it has none",
        ));
    }
    let gone = state
        .store
        .unsubscribed_among(scenario.as_str(), &addresses)
        .await?;
    if !gone.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "recipient_suppressed",
            format!(
                "not sent: {} left the list {scenario} (unsubscribed); DELETE /v1/unsubscribes/{scenario}/{{address}} puts an address back",
                gone.join(", ")
            ),
        )
        .at("to"));
    }
    let token = state
        .store
        .unsubscribe_token(&mailroom_store::UnsubscribeToken {
            message_id: id,
            list: scenario.as_str().to_owned(),
            addresses,
        });
    let mut value = format!("<{}/u/{token}>", public_url.trim_end_matches('/'));
    if let Some(domain) = &account.options.bounce_domain {
        value.push_str(&format!(
            ", <mailto:{}unsubscribe@{domain}?subject=unsubscribe%20{token}>",
            mailroom_core::verp::LOCAL_PREFIX
        ));
    }
    content
        .headers
        .retain(|h| !h.name.to_ascii_lowercase().starts_with("list-unsubscribe"));
    for (name, value) in [
        ("List-Unsubscribe", value.as_str()),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ] {
        content.headers.push(mailroom_core::header::CustomHeader {
            name: name.into(),
            value: mailroom_core::header::HeaderText::parse(name, value)?,
        });
    }
    Ok(())
}

/// Validates a message, routes it to its account and stores it durably; shared by `POST /v1/messages`
/// and `POST /v1/documents/send`. Returns the answer and whether it replays an earlier request.
pub(crate) async fn accept(
    state: &AppState,
    principal: &Principal,
    request: &SendMessage,
    key: Option<String>,
    request_hash: Option<String>,
    draft: bool,
) -> ApiResult<(AcceptedMessage, bool)> {
    accept_in_thread(state, principal, request, key, request_hash, draft, None).await
}

/// The threading headers of a reply or forward (which callers may not set themselves), and the
/// conversation it joins.
pub(crate) struct Threading {
    pub conversation: Uuid,
    /// `<id>` of the message answered.
    pub in_reply_to: String,
    /// `<id> <id> …`: the answered message's references, then its own id.
    pub references: String,
}

/// [`accept`], for a message that answers another: its `In-Reply-To` and `References` are set.
pub(crate) async fn accept_in_thread(
    state: &AppState,
    principal: &Principal,
    request: &SendMessage,
    key: Option<String>,
    request_hash: Option<String>,
    draft: bool,
    thread: Option<&Threading>,
) -> ApiResult<(AcceptedMessage, bool)> {
    let state = state.clone();
    let parts = body_parts(&state, request).await?;
    let (mut content, scenario, related_records, send_at_ms) =
        validate(request, &parts, state.settings.max_body_bytes)?;
    refuse_suppressed(&state, &content).await?;
    if let Some(thread) = thread {
        for (name, value) in [
            ("In-Reply-To", &thread.in_reply_to),
            ("References", &thread.references),
        ] {
            content.headers.push(mailroom_core::header::CustomHeader {
                name: name.into(),
                value: mailroom_core::header::HeaderText::parse(name, value)?,
            });
        }
    }
    let account = state
        .store
        .resolve_account(&scenario, request.account_id)
        .await
        .map_err(|error| match error {
            StoreError::NotFound(what) if request.account_id.is_some() => ApiError::invalid(
                "account_id",
                format!("unknown account: {what} does not exist"),
            ),
            StoreError::NotFound(what) => ApiError::invalid(
                "scenario",
                format!("unknown scenario: {what} does not exist"),
            ),
            StoreError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "no_default_account", message)
            }
            other => other.into(),
        })?;
    let attachments = check_attachments(
        &state,
        principal,
        request,
        &scenario,
        content.html.as_deref(),
    )
    .await?;
    (content.from, content.sender) =
        visible_sender(&account, principal, request.workflow_sender.as_deref())?;
    if account.connector == mailroom_core::account::ConnectorKind::CurrentUser {
        content.from = Some(own_mailbox_sender(&state, principal).await?);
        content.sender = None;
    }
    let id = Uuid::now_v7();
    // Tracking: the conversation's token in the subject and in a plus-addressed Reply-To.
    let correlation = state.correlation_settings().await?;
    if correlation.subject_token || correlation.plus_addressing {
        let conversation = thread.map_or(id, |t| t.conversation);
        let token = state.store.conversation_token(conversation).await?;
        if correlation.subject_token {
            content.subject = mailroom_core::header::HeaderText::parse(
                "subject",
                &mailroom_core::inbound::subject_with_token(
                    content.subject.as_str(),
                    &correlation.subject_token_prefix,
                    &token,
                ),
            )?;
        }
        if correlation.plus_addressing && content.reply_to.is_empty() {
            let own = content
                .from
                .as_ref()
                .map_or(&account.email_address, |from| &from.address);
            let plus = mailroom_core::address::EmailAddress::parse(
                &mailroom_core::inbound::plus_address(own.as_str(), &token),
            )?;
            content.reply_to = vec![Mailbox::new(None, plus)?];
        }
    }
    add_unsubscribe(&state, request, &scenario, &account, id, &mut content).await?;
    let now = now_ms();
    // Mail due at once goes straight to a send task when its account has room and nothing older
    // is waiting. Messages with attachments take the queue: their files are read by the claim.
    let reservation = if !draft && attachments.is_empty() && send_at_ms.is_none_or(|at| at <= now) {
        state.engine.reserve(account.id).await
    } else {
        None
    };
    let message = NewMessage {
        attachments,
        template: parts.template.clone(),
        smart_key: (correlation.smart_match_days > 0)
            .then(|| {
                // Without a From of its own, the message goes out from the account's address.
                let from = content
                    .from
                    .as_ref()
                    .map_or(&account.email_address, |m| &m.address);
                mailroom_core::inbound::outbound_smart_key(
                    content.subject.as_str(),
                    std::iter::once(from)
                        .chain(content.to.iter().chain(&content.cc).map(|m| &m.address))
                        .map(|address| address.as_str()),
                )
            })
            .flatten(),
        id,
        scenario: scenario.clone(),
        account_id: account.id,
        message_id_header: message_id_for(&id.simple().to_string(), account.email_address.domain()),
        content: std::sync::Arc::new(content),
        related_records,
        send_at_ms,
        created_by: principal.author_id(),
        idempotency_key: key,
        draft,
        request_hash,
        created_at_ms: now,
        claim: reservation.as_ref().map(Reservation::claim),
    };
    let message_id_header = message.message_id_header.clone();
    let claimed = reservation.as_ref().map(|_| ClaimedMessage {
        id,
        account_id: account.id,
        message_id_header: message.message_id_header.clone(),
        content: Ok(message.content.clone()),
        created_at_ms: now,
        attempt_number: 1,
        attempts_used: 1,
        attachments: Vec::new(),
    });
    let (id, replayed, stored_claimed) = match state.store.insert_message(message).await? {
        InsertOutcome::Claimed(id) => (id, false, true),
        InsertOutcome::Created(id) => (id, false, false),
        InsertOutcome::Replayed(id) => (id, true, false),
        InsertOutcome::KeyReused(_) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request; use a new key for a new message",
            ));
        }
    };
    let accepted = if replayed {
        let existing = state.store.message(id).await?;
        AcceptedMessage {
            id,
            status: existing.status.to_string(),
            message_id: existing.message_id_header,
            account_id: existing.account_id,
            scenario: existing.scenario,
        }
    } else {
        let status = match (reservation, claimed) {
            (Some(reservation), Some(claimed)) if stored_claimed => {
                reservation.start(claimed);
                MessageStatus::Sending
            }
            _ if draft => MessageStatus::Draft,
            // Stored queued. A reservation the store did not honour means older mail of the
            // account waits (this also wakes the dispatcher); without one, the message had no place
            // or was never meant to skip the queue (attachments, a later send time).
            (Some(reservation), _) => {
                reservation.stored_behind_older_mail();
                MessageStatus::Queued
            }
            (None, _) => {
                state.engine.new_mail_queued();
                MessageStatus::Queued
            }
        };
        tracing::debug!(event = "email_queued", message_uuid = %id, account = %account.id, account_name = %account.name, scenario = %scenario, %status, "email accepted");
        AcceptedMessage {
            id,
            status: status.to_string(),
            message_id: message_id_header,
            account_id: account.id,
            scenario: scenario.to_string(),
        }
    };
    Ok((accepted, replayed))
}

/// Queue a message. Answers 202 once the message is stored durably.
///
/// With an `Idempotency-Key` header, repeating the same request returns the first message instead of
/// queuing another; reusing the key for a different request is refused.
///
/// While the account's lane is full, or older mail of the account waits in the queue, the answer may
/// wait up to the server's `in_flow_delay_ms` (100 ms by default) for room before the message is
/// queued.
#[utoipa::path(post, path = "/v1/messages", tag = "messages", request_body = SendMessage,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries of this request safe")),
    responses((status = 202, body = AcceptedMessage), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn send_message(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let body = body?;
    principal
        .user
        .licence
        .may_send()
        .map_err(|reason| ApiError::new(StatusCode::FORBIDDEN, "licence_not_permitted", reason))?;
    let request: SendMessage = parse_json_body(&headers, &body)?;
    let key = idempotency_key(&headers)?;
    // Only a request with a key can be repeated: its hash tells a replay from a reused key.
    let request_hash = key.as_ref().map(|_| hex::encode(Sha256::digest(&body)));
    let (accepted, replayed) =
        accept(&state, &principal, &request, key, request_hash, false).await?;
    let mut response = (StatusCode::ACCEPTED, axum::Json(accepted)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Show a message with every attempt (time, server reply, transient or permanent).
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages", params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody)))]
async fn get_message(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MessageView>> {
    let visibility = principal.visibility(&state).await?;
    let mut view = MessageView::full(&state.store.visible_message(id, &visibility).await?);
    let attachments = state.store.attachments_of(&[id]).await?;
    view.attachments = Some(
        attachments
            .iter()
            .map(|(_, a)| crate::routes::attachments::AttachmentView::from(a))
            .collect(),
    );
    view.bounces = Some(
        state
            .store
            .message_bounces(id)
            .await?
            .into_iter()
            .map(|b| crate::dto::BounceView {
                recipient: b.recipient,
                kind: b.kind,
                action: b.action,
                status: b.status,
                diagnostic: b.diagnostic,
                hard: b.hard,
                at: crate::dto::rfc3339(b.created_at_ms),
            })
            .collect(),
    );
    Ok(axum::Json(view))
}

/// Try a failed, cancelled or waiting message again now, with a fresh attempt budget.
#[utoipa::path(post, path = "/v1/messages/{id}/retry", tag = "messages", params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn retry_message(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MessageView>> {
    // A message the caller may not see is "not found", whatever its state.
    state
        .store
        .visible_message(id, &principal.visibility(&state).await?)
        .await?;
    let message = state.store.retry_message(id).await?;
    tracing::info!(event = "email_retry_requested", message_uuid = %id, "retry requested");
    state.engine.wake();
    Ok(axum::Json(MessageView::full(&message)))
}

/// Cancel a waiting or failed message. A message being sent right now cannot be cancelled.
#[utoipa::path(post, path = "/v1/messages/{id}/cancel", tag = "messages", params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_message(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MessageView>> {
    state
        .store
        .visible_message(id, &principal.visibility(&state).await?)
        .await?;
    let message = state.store.cancel_message(id).await?;
    tracing::info!(event = "email_cancelled", message_uuid = %id, "message cancelled");
    Ok(axum::Json(MessageView::full(&message)))
}

/// Confirm a draft (a document whose customer's profile sends only after confirmation): it is queued.
#[utoipa::path(post, path = "/v1/messages/{id}/confirm", tag = "messages", params(("id" = Uuid, Path)),
    responses((status = 200, body = MessageView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn confirm_message(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<MessageView>> {
    state
        .store
        .visible_message(id, &principal.visibility(&state).await?)
        .await?;
    let message = state.store.confirm_message(id).await?;
    tracing::info!(event = "email_confirmed", message_uuid = %id, "draft confirmed");
    state.engine.wake();
    Ok(axum::Json(MessageView::full(&message)))
}

fn filter_from(
    query: &ListQuery,
    statuses: Vec<MessageStatus>,
    visibility: Visibility,
) -> ApiResult<MessageFilter> {
    let scenario = query
        .scenario
        .as_deref()
        .map(ScenarioName::parse)
        .transpose()?
        .map(|s| s.to_string());
    Ok(MessageFilter {
        related_to: None,
        visibility: Some(visibility),
        statuses,
        account_id: query.account_id,
        scenario,
        created_from_ms: query
            .from
            .as_deref()
            .map(|raw| parse_rfc3339("from", raw))
            .transpose()?,
        created_until_ms: query
            .to
            .as_deref()
            .map(|raw| parse_rfc3339("to", raw))
            .transpose()?,
        recipient: query
            .recipient
            .as_deref()
            .map(|raw| {
                mailroom_core::address::EmailAddress::parse(raw.trim())
                    .map(|a| a.as_str().to_ascii_lowercase())
                    .map_err(|e| ApiError::from(e.at("recipient")))
            })
            .transpose()?,
        subject_contains: match query.subject.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) if text.chars().count() > 200 || text.chars().any(char::is_control) => {
                return Err(ApiError::invalid(
                    "subject",
                    "search for at most 200 characters, without control characters",
                ));
            }
            Some(text) => Some(text.to_owned()),
        },
        subject_window: None,
        before_id: query.cursor,
        limit: page_limit(query.limit, 50)?,
    })
}

async fn list(state: &AppState, filter: MessageFilter) -> ApiResult<axum::Json<MessageList>> {
    let page = state.store.list_messages(&filter).await?;
    Ok(axum::Json(MessageList {
        items: page.items.iter().map(MessageView::summary).collect(),
        total: page.total,
        total_is_estimate: page.total_is_estimate,
        has_more: page.has_more,
        next_cursor: page.next_cursor,
        inbound: None,
    }))
}

/// The outbox: messages not (yet) sent. Newest first.
#[utoipa::path(get, path = "/v1/outbox", tag = "messages", params(ListQuery),
    responses((status = 200, body = MessageList), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_outbox(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<axum::Json<MessageList>> {
    let statuses = match query.status.as_deref() {
        None | Some("") => vec![
            MessageStatus::Draft,
            MessageStatus::Queued,
            MessageStatus::Sending,
            MessageStatus::Failed,
        ],
        Some(raw) => raw
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<MessageStatus>()
                    .map_err(|e| ApiError::from(e.at("status")))
            })
            .collect::<ApiResult<_>>()?,
    };
    list(
        &state,
        filter_from(&query, statuses, principal.visibility(&state).await?)?,
    )
    .await
}

/// The sent archive. Newest first.
#[utoipa::path(get, path = "/v1/sent", tag = "messages", params(ListQuery),
    responses((status = 200, body = MessageList), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn list_sent(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<axum::Json<MessageList>> {
    if query.status.is_some() {
        return Err(ApiError::invalid(
            "status",
            "the sent archive holds only sent messages; use /v1/outbox to filter by status",
        ));
    }
    list(
        &state,
        filter_from(
            &query,
            vec![MessageStatus::Sent],
            principal.visibility(&state).await?,
        )?,
    )
    .await
}

/// The mail about a business record (queued, sent, failed…), newest first, as the caller may see it.
#[utoipa::path(get, path = "/v1/records/{type}/{id}/messages", tag = "messages",
    params(("type" = String, Path, description = "record type, e.g. sales-invoice"), ("id" = String, Path), ListQuery),
    responses((status = 200, body = MessageList), (status = 422, body = ErrorBody)))]
async fn list_record_messages(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((record_type, record_id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<axum::Json<MessageList>> {
    let record = RelatedRecord::new(&record_type, &record_id, Relation::Related)?;
    let statuses = match query.status.as_deref() {
        None | Some("") => Vec::new(),
        Some(raw) => raw
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<MessageStatus>()
                    .map_err(|e| ApiError::from(e.at("status")))
            })
            .collect::<ApiResult<_>>()?,
    };
    let visibility = principal.visibility(&state).await?;
    let mut filter = filter_from(&query, statuses, visibility.clone())?;
    filter.related_to = Some((record.record_type.clone(), record.record_id.clone()));
    let limit = filter.limit;
    let mut answer = list(&state, filter).await?;
    answer.inbound = Some(
        crate::routes::inbound::record_inbound(
            &state,
            visibility,
            &record.record_type,
            &record.record_id,
            limit,
        )
        .await?,
    );
    Ok(answer)
}
