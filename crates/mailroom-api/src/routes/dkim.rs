//! `/v1/dkim/keys`: DKIM keys per sending domain. mailroom signs each message with the active key of
//! its From domain (relaxed/relaxed). A key is generated (RSA-2048 or Ed25519) or imported (PEM);
//! its private half is sealed at rest and never returned. Rotation: add a key under a new selector,
//! publish its TXT record, activate it, and delete the old key once mail signed with it has arrived.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, ErrorBody};
use crate::routes::users::audit;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::dkim::{DkimAlgorithm, KeyMaterial, parse_domain, parse_selector};
use mailroom_store::DkimKey;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dkim_keys, create_dkim_key))
        .routes(routes!(get_dkim_key, delete_dkim_key))
        .routes(routes!(activate_dkim_key))
}

/// The DNS record that publishes a key.
#[derive(Debug, Serialize, ToSchema)]
pub struct DnsRecordView {
    /// `<selector>._domainkey.<domain>`
    pub name: String,
    /// Always `TXT`.
    #[serde(rename = "type")]
    pub record_type: String,
    /// `v=DKIM1; k=rsa; p=…` — publish it as one string (DNS tools split it into 255-byte pieces).
    pub value: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DkimKeyView {
    pub id: Uuid,
    pub domain: String,
    pub selector: String,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: String,
    /// Whether mail from the domain is signed with this key.
    pub active: bool,
    pub dns: DnsRecordView,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activated_at: Option<String>,
}

impl From<&DkimKey> for DkimKeyView {
    fn from(key: &DkimKey) -> Self {
        Self {
            id: key.id,
            domain: key.domain.clone(),
            selector: key.selector.clone(),
            algorithm: key.algorithm.as_str().to_owned(),
            active: key.active,
            dns: DnsRecordView {
                name: key.dns_name(),
                record_type: "TXT".into(),
                value: key.dns_record(),
            },
            created_at: rfc3339(key.created_at_ms),
            activated_at: key.activated_at_ms.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DkimKeyList {
    pub items: Vec<DkimKeyView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct DkimKeyQuery {
    /// Only this domain's keys.
    pub domain: Option<String>,
}

/// Every DKIM key, by domain, each domain's active key first.
#[utoipa::path(get, path = "/v1/dkim/keys", tag = "deliverability", params(DkimKeyQuery),
    responses((status = 200, body = DkimKeyList), (status = 422, body = ErrorBody)))]
async fn list_dkim_keys(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DkimKeyQuery>,
) -> ApiResult<axum::Json<DkimKeyList>> {
    let domain = query.domain.as_deref().map(parse_domain).transpose()?;
    let keys = state.store.dkim_keys(domain.as_deref()).await?;
    Ok(axum::Json(DkimKeyList {
        items: keys.iter().map(DkimKeyView::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDkimKey {
    /// The sending domain: mail whose From address is at this domain is signed.
    pub domain: String,
    /// The DNS selector; default `mr` followed by today's date (`mr20261128`).
    pub selector: Option<String>,
    /// `rsa-sha256` (default; a 2048-bit key) or `ed25519-sha256`. Ignored when importing.
    pub algorithm: Option<String>,
    /// Import this key (PEM, PKCS#1 or PKCS#8) instead of generating one.
    pub private_key_pem: Option<String>,
}

/// Generate or import a key. A domain's first key signs at once; a later key waits for
/// `POST /v1/dkim/keys/{id}/activate` (publish its DNS record first).
#[utoipa::path(post, path = "/v1/dkim/keys", tag = "deliverability", request_body = CreateDkimKey,
    responses((status = 201, body = DkimKeyView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_dkim_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson<CreateDkimKey>,
) -> ApiResult<(StatusCode, axum::Json<DkimKeyView>)> {
    let domain = parse_domain(&body.domain)?;
    let selector = match body.selector.as_deref() {
        Some(raw) => parse_selector(raw)?,
        None => {
            let today = time::OffsetDateTime::now_utc().date();
            format!(
                "mr{:04}{:02}{:02}",
                today.year(),
                u8::from(today.month()),
                today.day()
            )
        }
    };
    let material = match body.private_key_pem.as_deref() {
        Some(pem) => {
            if pem.len() > 16 * 1024 {
                return Err(ApiError::invalid("private_key_pem", "at most 16 KiB"));
            }
            KeyMaterial::import_pem(pem)?
        }
        None => {
            let algorithm: DkimAlgorithm =
                body.algorithm.as_deref().unwrap_or("rsa-sha256").parse()?;
            // RSA key generation takes a moment of CPU: off the request threads.
            tokio::task::spawn_blocking(move || mailroom_connect::dkim::generate(algorithm))
                .await
                .map_err(|e| ApiError::internal(format!("key generation stopped: {e}")))??
        }
    };
    let key = state
        .store
        .add_dkim_key(&domain, &selector, &material, Some(&principal.author_id()))
        .await?;
    let view = DkimKeyView::from(&key);
    audit(
        &state,
        &principal,
        "dkim_key.created",
        "dkim_key",
        &key.id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// One key, with the DNS record to publish.
#[utoipa::path(get, path = "/v1/dkim/keys/{id}", tag = "deliverability", params(("id" = Uuid, Path)),
    responses((status = 200, body = DkimKeyView), (status = 404, body = ErrorBody)))]
async fn get_dkim_key(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<DkimKeyView>> {
    Ok(axum::Json(DkimKeyView::from(
        &state.store.dkim_key(id).await?,
    )))
}

/// Sign the domain's mail with this key from now on (a rotation). The previous key stays listed;
/// keep its DNS record until mail signed with it has been delivered.
#[utoipa::path(post, path = "/v1/dkim/keys/{id}/activate", tag = "deliverability", params(("id" = Uuid, Path)),
    responses((status = 200, body = DkimKeyView), (status = 404, body = ErrorBody)))]
async fn activate_dkim_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<axum::Json<DkimKeyView>> {
    let key = state.store.activate_dkim_key(id).await?;
    let view = DkimKeyView::from(&key);
    audit(
        &state,
        &principal,
        "dkim_key.activated",
        "dkim_key",
        &id.to_string(),
        None,
        Some(&view),
    )
    .await?;
    Ok(axum::Json(view))
}

/// Delete a key (not the active key of a domain that has others: `409 dkim_key_active`).
#[utoipa::path(delete, path = "/v1/dkim/keys/{id}", tag = "deliverability", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_dkim_key(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    state.store.delete_dkim_key(id).await?;
    audit(
        &state,
        &principal,
        "dkim_key.deleted",
        "dkim_key",
        &id.to_string(),
        None::<&String>,
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
