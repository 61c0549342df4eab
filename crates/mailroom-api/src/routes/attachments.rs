//! `/v1/attachments`: upload a file (streamed to the blob store, never held whole in memory) and
//! download it again, as the caller's view policy allows.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiPath, ApiResult, ErrorBody};
use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use mailroom_store::{Attachment, BlobError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_attachment))
        .routes(routes!(download_attachment))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttachmentView {
    pub id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub created_at: String,
}

impl From<&Attachment> for AttachmentView {
    fn from(a: &Attachment) -> Self {
        Self {
            id: a.id,
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
            created_at: rfc3339(a.created_at_ms),
        }
    }
}

/// A file name safe to put in a MIME header and on any disk: no path separators, no control characters.
pub fn parse_filename(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    let valid = !name.is_empty()
        && name.chars().count() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control);
    if valid {
        Ok(name.to_owned())
    } else {
        Err(ApiError::invalid(
            "filename",
            format!(
                "{raw:?} is not an acceptable file name (1-255 characters, no path separators or control characters)"
            ),
        ))
    }
}

fn filename_from(headers: &HeaderMap) -> Result<String, ApiError> {
    let disposition = headers
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "filename",
                "send the file name as Content-Disposition: attachment; filename=\"invoice.pdf\"",
            )
        })?;
    let raw = disposition
        .split(';')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("filename="))
        .map(|v| v.trim_matches('"'))
        .ok_or_else(|| {
            ApiError::invalid("filename", "Content-Disposition has no filename parameter")
        })?;
    parse_filename(raw)
}

async fn store_stream<S>(state: &AppState, stream: S, limit: u64) -> Result<(String, u64), ApiError>
where
    S: futures_core::Stream<Item = Result<bytes::Bytes, String>> + Unpin,
{
    state
        .blobs
        .write_stream(stream, limit)
        .await
        .map_err(|error| match error {
            BlobError::TooLarge { limit } => too_large(limit),
            BlobError::Interrupted(reason) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "upload_interrupted",
                format!("the upload did not complete: {reason}"),
            ),
            BlobError::Io(e) if mailroom_store::storage::io_is_full(&e) => {
                mailroom_store::storage::note_storage_full(&e.to_string());
                ApiError::storage_full()
            }
            BlobError::Io(e) => ApiError::internal(e),
        })
}

fn content_type_from(headers: &HeaderMap) -> Result<String, ApiError> {
    content_type_of(
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/octet-stream"),
    )
}

fn content_type_of(raw: &str) -> Result<String, ApiError> {
    let essence = raw
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&-^_.+".contains(c))
    };
    match essence.split_once('/') {
        // A multipart needs boundaries that an uploaded file does not have: it is kept, and sent,
        // as opaque bytes.
        Some(("multipart", subtype)) if token(subtype) => Ok("application/octet-stream".into()),
        Some((kind, subtype)) if token(kind) && token(subtype) => Ok(essence),
        _ => Err(ApiError::invalid(
            "content_type",
            format!("{raw:?} is not a media type such as application/pdf"),
        )),
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!(
            "the file is larger than the attachment limit of {limit} bytes (max_attachment_bytes)"
        ),
    )
}

/// Upload a file as the raw request body, named by `Content-Disposition: attachment; filename="…"`.
/// Reference it from a message as `"attachments": [{"id": …}]`.
#[utoipa::path(post, path = "/v1/attachments", tag = "attachments",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = AttachmentView), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload_attachment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<AttachmentView>)> {
    let limit = state.settings.max_attachment_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit + 64 * 1024) {
        return Err(too_large(limit));
    }
    let request_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let ((sha256, size), filename, content_type) = if request_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        // The first part that carries a file name is the file; it is streamed like a raw upload.
        let boundary = multer::parse_boundary(&request_type).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_multipart",
                format!("the multipart body has no valid boundary: {e}"),
            )
        })?;
        let mut multipart = multer::Multipart::new(body.into_data_stream(), boundary);
        loop {
            let field = multipart
                .next_field()
                .await
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_multipart",
                        format!("the multipart body is malformed: {e}"),
                    )
                })?
                .ok_or_else(|| {
                    ApiError::invalid(
                        "filename",
                        "the multipart body has no part with a file name",
                    )
                })?;
            let Some(raw_name) = field.file_name().map(str::to_owned) else {
                continue;
            };
            let filename = parse_filename(&raw_name)?;
            let content_type = content_type_of(
                field
                    .content_type()
                    .map(|m| m.essence_str())
                    .unwrap_or("application/octet-stream"),
            )?;
            let stream = futures_util::stream::unfold(field, |mut field| async move {
                match field.chunk().await {
                    Ok(Some(bytes)) => Some((Ok(bytes), field)),
                    Ok(None) => None,
                    Err(error) => Some((Err(error.to_string()), field)),
                }
            });
            break (
                store_stream(&state, Box::pin(stream), limit).await?,
                filename,
                content_type,
            );
        }
    } else {
        let filename = filename_from(&headers)?;
        let content_type = content_type_from(&headers)?;
        let stream = body.into_data_stream().map_err(|e| e.to_string());
        (
            store_stream(&state, Box::pin(stream), limit).await?,
            filename,
            content_type,
        )
    };
    let attachment = state
        .store
        .create_attachment(
            &sha256,
            size,
            &filename,
            &content_type,
            &principal.author_id(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(AttachmentView::from(&attachment)),
    ))
}

/// Download a file: allowed to its uploader and to whoever may see a message it is attached to.
#[utoipa::path(get, path = "/v1/attachments/{id}", tag = "attachments", params(("id" = Uuid, Path)),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
async fn download_attachment(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Response> {
    let visibility = principal.visibility(&state).await?;
    if !state.store.attachment_visible(id, &visibility).await? {
        return Err(ApiError::not_found(format!("attachment {id} not found")));
    }
    let attachment = state.store.attachment(id).await?;
    let stream = state.blobs.open(&attachment.sha256).await.map_err(|e| {
        ApiError::new(
            StatusCode::GONE,
            "attachment_unreadable",
            format!("the file of attachment {id} cannot be read: {e}"),
        )
    })?;
    let body = Body::from_stream(stream);
    Ok((
        [
            (header::CONTENT_TYPE, attachment.content_type.clone()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{}\"",
                    attachment.filename.replace('"', "'")
                ),
            ),
            (header::CONTENT_LENGTH, attachment.size.to_string()),
        ],
        body,
    )
        .into_response())
}
