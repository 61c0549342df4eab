//! `/v1/templates`: versioned email templates per document type, and previews with sample or given data.

use crate::AppState;
use crate::auth::Principal;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiJson, ApiPath, ApiResult, ErrorBody};
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use mailroom_core::template::builtin::sample_data;
use mailroom_core::template::{CompiledTemplate, TemplateError, TemplateSource};
use mailroom_store::TemplateRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates))
        .routes(routes!(get_template, save_template))
        .routes(routes!(preview_template))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateView {
    pub id: String,
    pub version: i64,
    pub document_type: String,
    pub scenario: Option<String>,
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
    pub built_in: bool,
    pub created_at: String,
    /// The JSON Schema of the data a built-in document type's template expects (also in the OpenAPI
    /// document as `DocumentData.<type>`); absent for other document types.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data_schema: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<TemplateVersionView>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TemplateVersionView {
    pub version: i64,
    pub created_at: String,
    pub created_by: String,
}

impl From<&TemplateRecord> for TemplateView {
    fn from(t: &TemplateRecord) -> Self {
        Self {
            id: t.id.clone(),
            version: t.version,
            document_type: t.document_type.clone(),
            scenario: t.scenario.clone(),
            subject: t.source.subject.clone(),
            html: t.source.html.clone(),
            text: t.source.text.clone(),
            built_in: t.built_in,
            created_at: rfc3339(t.created_at_ms),
            data_schema: None,
            versions: None,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveTemplate {
    /// The document type this template renders, e.g. `sales-invoice`.
    pub document_type: String,
    pub scenario: Option<String>,
    pub subject: String,
    pub html: String,
    /// Plain-text body; derived from the rendered HTML when absent.
    pub text: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// The document data; sample data for the template's document type when absent.
    pub data: Option<serde_json::Value>,
    /// A version to preview; the latest when absent.
    pub version: Option<i64>,
    /// An edit not saved yet, rendered instead of the stored version (the console's live preview):
    /// nothing is stored.
    pub source: Option<PreviewSource>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewSource {
    pub subject: String,
    pub html: String,
    pub text: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PreviewView {
    pub id: String,
    pub version: i64,
    pub subject: String,
    pub html: String,
    pub text: String,
    /// The data the preview was rendered with (the sample data when none was given).
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

/// A template error as a 422 naming the part, the line and the reason.
pub fn template_error(error: TemplateError) -> ApiError {
    match error.limit {
        Some(limit) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_too_expensive",
            format!("{error} (limit: {limit})"),
        )
        .at(error.part),
        None => ApiError::invalid(error.part, error.to_string()),
    }
}

/// The longest a render may take, whatever its fuel: the answer does not wait longer.
const RENDER_WALL_CLOCK: std::time::Duration = std::time::Duration::from_secs(2);

/// Compiles and renders a template on a blocking thread, off the request workers, within its fuel
/// and output limits and [`RENDER_WALL_CLOCK`]. (A render that overruns the clock finishes on its
/// thread within its fuel; the client is answered at once.)
pub async fn render_bounded(
    source: TemplateSource,
    document_type: &str,
    data: serde_json::Value,
) -> ApiResult<mailroom_core::template::Rendered> {
    use mailroom_core::template::schema::{data_schema, shortfalls};
    let schema = data_schema(document_type);
    let rendering = tokio::task::spawn_blocking(move || {
        match CompiledTemplate::compile(&source).and_then(|t| t.render(&data)) {
            Ok(rendered) => Ok(rendered),
            // A render that failed on missing data: name the missing path, when the document
            // type's schema knows it and the failing part of the template uses that name (a
            // custom template need not use everything the built-in one does).
            Err(error) if error.limit.is_none() && error.reason.contains("undefined") => {
                let part_source = match error.part {
                    "subject" => source.subject.as_str(),
                    "text" => source.text.as_deref().unwrap_or_default(),
                    _ => source.html.as_str(),
                };
                let line = error
                    .line
                    .and_then(|n| part_source.lines().nth(n.saturating_sub(1)))
                    .unwrap_or(part_source);
                let shortfall = schema.as_ref().and_then(|schema| {
                    shortfalls(schema, &data).into_iter().find(|(path, _)| {
                        let name = path.rsplit(['.', ']']).next().unwrap_or(path);
                        !name.is_empty() && line.contains(name)
                    })
                });
                Err((error, shortfall))
            }
            Err(error) => Err((error, None)),
        }
    });
    match tokio::time::timeout(RENDER_WALL_CLOCK, rendering).await {
        Ok(Ok(Ok(rendered))) => Ok(rendered),
        Ok(Ok(Err((error, Some((path, what)))))) => Err(ApiError::invalid(
            &format!("data.{path}"),
            format!(
                "{path} {what}: the {} template needs it{}",
                error.part,
                error
                    .line
                    .map(|l| format!(" (line {l})"))
                    .unwrap_or_default()
            ),
        )),
        Ok(Ok(Err((error, None)))) => Err(template_error(error)),
        Ok(Err(join_error)) => Err(ApiError::internal(join_error)),
        Err(_) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "template_too_expensive",
            format!(
                "rendering took longer than {} s (limit: wall_clock)",
                RENDER_WALL_CLOCK.as_secs()
            ),
        )
        .at("html")),
    }
}

fn parse_slug(field: &str, raw: &str) -> Result<String, ApiError> {
    let valid = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{raw:?} must be 1-64 lowercase letters, digits or hyphens"),
        ))
    }
}

/// Renders a stored template version with data, as a message body.
pub async fn render(
    state: &AppState,
    id: &str,
    version: Option<i64>,
    data: &serde_json::Value,
) -> ApiResult<(TemplateRecord, mailroom_core::template::Rendered)> {
    let record = state
        .store
        .template(id, version)
        .await
        .map_err(|e| match e {
            mailroom_store::StoreError::NotFound(what) => {
                ApiError::invalid("template.id", format!("{what} not found"))
            }
            other => other.into(),
        })?;
    let rendered =
        render_bounded(record.source.clone(), &record.document_type, data.clone()).await?;
    Ok((record, rendered))
}

/// List templates (the latest version of each).
#[utoipa::path(get, path = "/v1/templates", tag = "templates", responses((status = 200, body = Vec<TemplateView>)))]
async fn list_templates(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<TemplateView>>> {
    Ok(axum::Json(
        state
            .store
            .templates()
            .await?
            .iter()
            .map(TemplateView::from)
            .collect(),
    ))
}

/// Show the latest version of a template and the list of its versions.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 200, body = TemplateView), (status = 404, body = ErrorBody)))]
async fn get_template(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::Json<TemplateView>> {
    let record = state.store.template(&id, None).await?;
    let mut view = TemplateView::from(&record);
    view.data_schema = mailroom_core::template::schema::data_schema(&record.document_type);
    view.versions = Some(
        state
            .store
            .template_versions(&id)
            .await?
            .into_iter()
            .map(|(version, at, by)| TemplateVersionView {
                version,
                created_at: rfc3339(at),
                created_by: by,
            })
            .collect(),
    );
    Ok(axum::Json(view))
}

/// Save a new version of a template (creating it when new). Syntax errors are refused with their line.
#[utoipa::path(put, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)), request_body = SaveTemplate,
    responses((status = 200, body = TemplateView), (status = 422, body = ErrorBody)))]
async fn save_template(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SaveTemplate>,
) -> ApiResult<axum::Json<TemplateView>> {
    let id = parse_slug("id", &id)?;
    let document_type = parse_slug("document_type", &body.document_type)?;
    let scenario = body
        .scenario
        .as_deref()
        .map(|s| parse_slug("scenario", s))
        .transpose()?;
    let source = TemplateSource {
        subject: body.subject,
        html: body.html,
        text: body.text.filter(|t| !t.is_empty()),
    };
    CompiledTemplate::compile(&source).map_err(template_error)?;
    let before = state
        .store
        .template(&id, None)
        .await
        .ok()
        .map(|t| TemplateView::from(&t));
    let record = state
        .store
        .save_template(
            &id,
            &document_type,
            scenario.as_deref(),
            &source,
            &principal.author_id(),
        )
        .await?;
    let after = TemplateView::from(&record);
    crate::routes::users::audit(
        &state,
        &principal,
        "template.saved",
        "template",
        &id,
        before.as_ref(),
        Some(&after),
    )
    .await?;
    Ok(axum::Json(after))
}

/// Render a template with the given data, or with sample data for its document type.
#[utoipa::path(post, path = "/v1/templates/{id}/preview", tag = "templates", params(("id" = String, Path)), request_body = PreviewRequest,
    responses((status = 200, body = PreviewView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn preview_template(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PreviewRequest>,
) -> ApiResult<axum::Json<PreviewView>> {
    let record = state.store.template(&id, body.version).await?;
    let data = body
        .data
        .unwrap_or_else(|| sample_data(&record.document_type));
    let source = match body.source {
        Some(edit) => TemplateSource {
            subject: edit.subject,
            html: edit.html,
            text: edit.text.filter(|t| !t.is_empty()),
        },
        None => record.source.clone(),
    };
    let rendered = render_bounded(source, &record.document_type, data.clone()).await?;
    Ok(axum::Json(PreviewView {
        id: record.id,
        version: record.version,
        subject: rendered.subject.as_str().to_owned(),
        html: rendered.html,
        text: rendered.text,
        data,
    }))
}
