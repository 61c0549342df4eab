//! `POST /v1/documents/send` — "send sales invoice 103001 to its customer" in one call — and the
//! document sending profiles that decide how each customer gets documents.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::{AcceptedMessage, AttachmentRef, RelatedRecordView, SendMessage, TemplateRef};
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::message::{AttachmentPolicy, EmailPolicy};
use mailroom_core::scenario::ScenarioName;
use mailroom_store::SendingProfile;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send_document))
        .routes(routes!(list_profiles))
        .routes(routes!(set_profile))
        .routes(routes!(set_customer_profile))
}

/// A business party: the customer, a contact or the salesperson.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Party {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendDocument {
    /// E.g. `sales-invoice`; a template must exist for it.
    pub document_type: String,
    pub number: String,
    pub customer: Party,
    pub contact: Option<Party>,
    pub salesperson: Option<Party>,
    /// Recipients; default the contact's, else the customer's address.
    #[serde(default)]
    pub to: Vec<String>,
    #[serde(default)]
    pub cc: Vec<String>,
    /// The document's data for the template (lines, totals, due date, payment link…).
    #[serde(default)]
    pub data: serde_json::Value,
    /// The template; default the one named like the document type.
    pub template: Option<String>,
    /// The scenario; default the one named like the document type, if there is one.
    pub scenario: Option<String>,
    /// The PDF the business application produced (uploaded first).
    #[serde(default)]
    pub attachments: Vec<AttachmentRef>,
    /// The electronic document file, for customers whose profile asks for it.
    pub electronic_document: Option<AttachmentRef>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DocumentSent {
    /// `queued`, or `draft` when the customer's profile sends only after confirmation.
    #[serde(flatten)]
    pub message: AcceptedMessage,
    pub profile: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProfileView {
    pub name: String,
    /// `without-asking`, `after-confirmation` or `none`.
    pub email: String,
    /// `pdf`, `none` or `electronic-document`.
    pub attachment: String,
    pub is_default: bool,
}

impl From<&SendingProfile> for ProfileView {
    fn from(p: &SendingProfile) -> Self {
        Self {
            name: p.name.clone(),
            email: p.email.to_string(),
            attachment: p.attachment.to_string(),
            is_default: p.is_default,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveProfile {
    pub email: String,
    pub attachment: String,
    #[serde(default)]
    pub is_default: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerProfile {
    pub profile: String,
}

fn recipient(party: &Party) -> Option<String> {
    party.email.as_ref().map(|email| match &party.name {
        // A quoted string, so that the name reads back exactly as given (quotes included).
        Some(name) => format!("{} <{email}>", mailroom_core::address::quoted_name(name)),
        None => email.clone(),
    })
}

/// Send a business document to its customer: resolves the customer's sending profile, the scenario,
/// the account, the template and the default attachments, and queues the message (or keeps it as a
/// draft to confirm). The document is the message's primary related record.
#[utoipa::path(post, path = "/v1/documents/send", tag = "documents", request_body = SendDocument,
    responses((status = 202, body = DocumentSent), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn send_document(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(document): ApiJson<SendDocument>,
) -> ApiResult<(StatusCode, axum::Json<DocumentSent>)> {
    principal
        .user
        .licence
        .may_send()
        .map_err(|reason| ApiError::new(StatusCode::FORBIDDEN, "licence_not_permitted", reason))?;
    let scenario = match &document.scenario {
        Some(name) => name.clone(),
        None => match ScenarioName::parse(&document.document_type) {
            Ok(name) if state.store.scenario(&name).await.is_ok() => name.to_string(),
            _ => "default".into(),
        },
    };
    let template_id = match &document.template {
        Some(id) => match state.store.template(id, None).await {
            Ok(record) => record.id,
            Err(_) => {
                return Err(ApiError::invalid(
                    "template",
                    format!("unknown template {id:?}"),
                ));
            }
        },
        None => match state
            .store
            .template_for(&document.document_type, &scenario)
            .await
        {
            Ok(record) => record.id,
            Err(_) => {
                return Err(ApiError::invalid(
                    "document_type",
                    format!(
                        "unknown document type {:?}: no template renders it",
                        document.document_type
                    ),
                ));
            }
        },
    };
    let profile = state
        .store
        .profile_for_customer(&document.customer.id)
        .await?;
    if profile.email == EmailPolicy::NoEmail {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "profile_no_email",
            format!(
                "customer {} uses the sending profile {:?}, which sends no email; nothing was queued",
                document.customer.id, profile.name
            ),
        ));
    }
    let attachments = match profile.attachment {
        AttachmentPolicy::Pdf if document.attachments.is_empty() => {
            return Err(ApiError::invalid(
                "attachments",
                format!(
                    "the customer's profile {:?} sends the document as PDF; upload it and pass it in attachments",
                    profile.name
                ),
            ));
        }
        AttachmentPolicy::Pdf => document.attachments.clone(),
        AttachmentPolicy::NoAttachment => Vec::new(),
        AttachmentPolicy::ElectronicDocument => match &document.electronic_document {
            Some(file) => vec![file.clone()],
            None => {
                return Err(ApiError::invalid(
                    "electronic_document",
                    format!(
                        "the customer's profile {:?} sends an electronic document; pass it in electronic_document",
                        profile.name
                    ),
                ));
            }
        },
    };
    let to = if document.to.is_empty() {
        let address = document
            .contact
            .as_ref()
            .and_then(recipient)
            .or_else(|| recipient(&document.customer));
        vec![address.ok_or_else(|| {
            ApiError::invalid(
                "to",
                "neither the contact nor the customer has an email address; give one or pass to",
            )
        })?]
    } else {
        document.to.clone()
    };
    let mut data = match document.data.clone() {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        _ => {
            return Err(ApiError::invalid(
                "data",
                "the document data must be a JSON object",
            ));
        }
    };
    data.entry("customer")
        .or_insert_with(|| serde_json::to_value(&document.customer).expect("parties serialize"));
    for (key, party) in [
        ("contact", &document.contact),
        ("salesperson", &document.salesperson),
    ] {
        if let Some(party) = party {
            data.entry(key)
                .or_insert_with(|| serde_json::to_value(party).expect("parties serialize"));
        }
    }
    // The files that go with the document, so that the text can name them. (An unknown id is
    // refused later, where the message's attachments are checked.)
    if !data.contains_key("attachments") {
        let mut named = Vec::new();
        for reference in &attachments {
            if let Ok(attachment) = state.store.attachment(reference.id).await {
                named.push(serde_json::json!({"filename": attachment.filename}));
            }
        }
        data.insert("attachments".into(), serde_json::Value::Array(named));
    }
    let entry = data
        .entry("document")
        .or_insert_with(|| serde_json::json!({}));
    if let serde_json::Value::Object(fields) = entry {
        fields
            .entry("number")
            .or_insert_with(|| document.number.clone().into());
        fields
            .entry("type")
            .or_insert_with(|| document.document_type.clone().into());
    }
    let mut related = vec![
        RelatedRecordView {
            record_type: document.document_type.clone(),
            id: document.number.clone(),
            relation: Some("primary".into()),
        },
        RelatedRecordView {
            record_type: "customer".into(),
            id: document.customer.id.clone(),
            relation: Some("related".into()),
        },
    ];
    if let Some(contact) = &document.contact {
        related.push(RelatedRecordView {
            record_type: "contact".into(),
            id: contact.id.clone(),
            relation: Some("related".into()),
        });
    }
    if let Some(salesperson) = &document.salesperson {
        related.push(RelatedRecordView {
            record_type: "salesperson".into(),
            id: salesperson.id.clone(),
            relation: Some("related".into()),
        });
    }
    let request = SendMessage {
        to,
        cc: document.cc.clone(),
        bcc: Vec::new(),
        reply_to: Vec::new(),
        headers: Default::default(),
        subject: None,
        text: None,
        html: None,
        scenario: Some(scenario),
        account_id: None,
        unsubscribe: None,
        related_records: related,
        template: Some(TemplateRef {
            id: template_id,
            version: None,
            data: serde_json::Value::Object(data),
        }),
        attachments,
        exclude_attachments: Vec::new(),
        workflow_sender: None,
        send_at: None,
    };
    let hash = hex::encode(Sha256::digest(
        format!("{}/{}", document.document_type, document.number).as_bytes(),
    ));
    let draft = profile.email == EmailPolicy::AfterConfirmation;
    let (accepted, _) =
        crate::routes::messages::accept(&state, &principal, &request, None, Some(hash), draft)
            .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DocumentSent {
            message: accepted,
            profile: profile.name,
        }),
    ))
}

/// The document sending profiles.
#[utoipa::path(get, path = "/v1/sending-profiles", tag = "documents", responses((status = 200, body = Vec<ProfileView>)))]
async fn list_profiles(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<ProfileView>>> {
    Ok(axum::Json(
        state
            .store
            .sending_profiles()
            .await?
            .iter()
            .map(ProfileView::from)
            .collect(),
    ))
}

/// Create or change a sending profile; `is_default` makes it the profile of customers without one.
#[utoipa::path(put, path = "/v1/sending-profiles/{name}", tag = "documents", params(("name" = String, Path)), request_body = SaveProfile,
    responses((status = 200, body = ProfileView), (status = 422, body = ErrorBody)))]
async fn set_profile(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SaveProfile>,
) -> ApiResult<axum::Json<ProfileView>> {
    let name = ScenarioName::parse(&name)
        .map_err(|e| ApiError::invalid("name", e.reason))?
        .to_string();
    let email: EmailPolicy = body
        .email
        .parse()
        .map_err(|e: mailroom_core::ValidationError| e.at("email"))?;
    let attachment: AttachmentPolicy = body
        .attachment
        .parse()
        .map_err(|e: mailroom_core::ValidationError| e.at("attachment"))?;
    let profile = state
        .store
        .set_sending_profile(&name, email, attachment, body.is_default)
        .await?;
    let view = ProfileView::from(&profile);
    crate::routes::users::audit(
        &state,
        &principal,
        "sending_profile.saved",
        "sending_profile",
        &name,
        None,
        Some(&view),
    )
    .await?;
    Ok(axum::Json(view))
}

/// Choose the sending profile of a customer.
#[utoipa::path(put, path = "/v1/customers/{id}/sending-profile", tag = "documents", params(("id" = String, Path)), request_body = CustomerProfile,
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn set_customer_profile(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(customer_id): ApiPath<String>,
    ApiJson(body): ApiJson<CustomerProfile>,
) -> ApiResult<StatusCode> {
    state
        .store
        .set_customer_profile(&customer_id, &body.profile)
        .await?;
    let after = serde_json::json!({"customer": customer_id, "profile": body.profile});
    crate::routes::users::audit(
        &state,
        &principal,
        "customer_profile.set",
        "customer",
        &customer_id,
        None,
        Some(&after),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contacts_name_reaches_the_message_unchanged_quotes_and_backslashes_included() {
        for name in [
            "Robert Townes",
            "John \"JD\" Doe",
            "Back\\slash",
            "Müller, Jörg",
            "O'Brien (Purchasing)",
        ] {
            let party = Party {
                id: "C1".into(),
                name: Some(name.into()),
                email: Some("contact@example.com".into()),
            };
            let mailbox =
                mailroom_core::address::Mailbox::parse(&recipient(&party).unwrap()).unwrap();
            assert_eq!(mailbox.name.as_deref(), Some(name));
        }
    }
}
