//! The API's one error type: an HTTP status, a stable machine code and a human message.
//! Internal causes are logged, never sent to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailroom_core::ValidationError;
use mailroom_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

/// Every error `code` the API answers with: its HTTP status and what it means. Published in the
/// OpenAPI document's description (and so at `/docs`); a test keeps it complete.
pub const ERROR_CODES: &[(&str, u16, &str)] = &[
    (
        "invalid_json",
        400,
        "The body is not valid JSON (or is empty).",
    ),
    (
        "invalid_idempotency_key",
        400,
        "Idempotency-Key must be 1-255 visible ASCII characters.",
    ),
    (
        "invalid_multipart",
        400,
        "A multipart upload could not be read.",
    ),
    (
        "unauthorized",
        401,
        "No token, or an unknown, revoked or expired one, or its user is disabled.",
    ),
    (
        "permission_missing",
        403,
        "The user lacks the permission set the route needs (named in the message).",
    ),
    (
        "licence_not_permitted",
        403,
        "Only users with a full licence may send.",
    ),
    (
        "not_found",
        404,
        "No such object or route, or one the caller may not see.",
    ),
    (
        "method_not_allowed",
        405,
        "The path exists without this method; the Allow header lists the ones it has.",
    ),
    (
        "conflict",
        409,
        "The change conflicts with the current state (named in the message).",
    ),
    (
        "no_default_account",
        409,
        "The scenario has no account and there is no default account; assign one.",
    ),
    (
        "idempotency_key_reused",
        422,
        "The Idempotency-Key was used before with a different request.",
    ),
    (
        "profile_name_taken",
        409,
        "A server profile with this name exists already.",
    ),
    (
        "profile_in_use",
        409,
        "The server profile is used by mailboxes (named in the message); move them first.",
    ),
    (
        "team_name_taken",
        409,
        "A team with this name exists already.",
    ),
    (
        "queue_name_taken",
        409,
        "A queue with this name exists already.",
    ),
    (
        "mailbox_not_yours",
        403,
        "Reading or changing another user's or a queue's mailbox needs email-setup.",
    ),
    (
        "mailbox_field_needs_setup",
        403,
        "On one's own mailbox only the credentials and the filter may be changed without email-setup.",
    ),
    (
        "mailbox_approve_permission_missing",
        403,
        "Approving email addresses for users or queues needs the mailbox-approve permission.",
    ),
    (
        "mailbox_approver_role_missing",
        403,
        "Approving another's or a queue's address needs mailbox-approve and email-admin or the delegated mailbox approver role.",
    ),
    (
        "self_approval_needs_permission",
        403,
        "The organisation requires mailbox-approve to approve one's own address.",
    ),
    (
        "delegated_approver_grant_denied",
        403,
        "Only an email administrator can assign the delegated mailbox approver role.",
    ),
    (
        "admin_grant_denied",
        403,
        "Only an email administrator can grant email-admin.",
    ),
    (
        "delegated_approver_not_for_teams",
        422,
        "The delegated mailbox approver role cannot be assigned to a team.",
    ),
    (
        "mailbox_missing",
        409,
        "The sending user has no mailbox (current-user accounts send from the user's own mailbox).",
    ),
    (
        "mailbox_not_approved",
        409,
        "The mailbox's address is not approved.",
    ),
    (
        "mailbox_not_tested",
        409,
        "The mailbox has not passed test & enable for this direction, or is disabled.",
    ),
    (
        "mailbox_direction_off",
        409,
        "The mailbox has this direction (incoming or outgoing email) turned off.",
    ),
    (
        "last_admin",
        409,
        "The change would leave no enabled user holding email-admin.",
    ),
    (
        "payload_too_large",
        413,
        "The body, a message's bodies or its attachments exceed the configured limit.",
    ),
    (
        "unsupported_media_type",
        415,
        "The body is not declared as JSON (Content-Type: application/json).",
    ),
    (
        "invalid_request",
        422,
        "A field is invalid (named in `field`), or the body has the wrong shape.",
    ),
    (
        "invalid_query",
        422,
        "A query parameter has the wrong type or is unknown.",
    ),
    (
        "password_required",
        422,
        "Changing an account's host, port, security or username needs its password again.",
    ),
    (
        "template_too_expensive",
        422,
        "Rendering the template went over a limit (fuel, output size or time), named in the message.",
    ),
    (
        "profile_no_email",
        409,
        "The customer's sending profile does not send this document by email.",
    ),
    (
        "attachment_unreadable",
        422,
        "An attachment's file could not be read.",
    ),
    (
        "upload_interrupted",
        400,
        "The upload ended before its body was complete.",
    ),
    (
        "mail_client_app_not_authorised",
        403,
        "The user may not use the mail-client app; the message says so in the app's words, `missing` lists what the user lacks.",
    ),
    (
        "user_not_eligible",
        422,
        "The mail-client app cannot be deployed to a user who lacks one of its prerequisites (named in the message).",
    ),
    (
        "message_not_synchronized",
        409,
        "The message open in the mail client has not been synchronised into the user's mailbox yet; try again after the next synchronisation.",
    ),
    (
        "app_registration_name_taken",
        409,
        "Another app registration has that name.",
    ),
    (
        "app_registration_in_use",
        409,
        "Accounts send with the app registration (named in the message); remove or move them first.",
    ),
    (
        "client_secret_required",
        422,
        "The provider, client, tenant, authority or endpoints of a registration with a stored secret changed without the secret: the stored one stays with what it was given for.",
    ),
    (
        "dkim_selector_taken",
        409,
        "The domain already has a DKIM key under that selector; a rotation uses a new selector.",
    ),
    (
        "dkim_key_active",
        409,
        "The key signs its domain's mail and the domain has other keys: activate another first.",
    ),
    (
        "unsubscribe_needs_public_url",
        422,
        "A one-click unsubscribe link was asked for, but public_url (where recipients reach mailroom) is not configured.",
    ),
    (
        "unsubscribe_token_invalid",
        404,
        "The unsubscribe link was changed or was made by another installation.",
    ),
    (
        "recipient_suppressed",
        422,
        "A recipient is on the suppression list (a hard bounce, a complaint, an unsubscribe, or by hand); the message names each and why. Nothing was sent.",
    ),
    (
        "webhook_target_private",
        422,
        "A webhook URL names or resolves only to a loopback, private or link-local address, and the server does not allow those.",
    ),
    (
        "internal",
        500,
        "An unexpected error; the server log has the cause.",
    ),
    (
        "shutting_down",
        503,
        "mailroom is stopping; try again shortly.",
    ),
    (
        "storage_full",
        507,
        "The disk under the data folder is full; nothing was stored. Retry after Retry-After.",
    ),
];

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_request`, `not_found`, `conflict`.
    pub code: String,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// The offending request field, when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
                field: None,
            },
            retry_after: None,
        }
    }

    /// The disk under the data folder is full: nothing was stored; the client may try again later.
    pub fn storage_full() -> Self {
        let mut error = Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "the disk under mailroom's data folder is full, so nothing was stored; try again once space is freed",
        );
        error.retry_after = Some(30);
        error
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message);
        error.body.field = Some(field.into());
        error
    }

    /// Names the request field to blame.
    pub fn at(mut self, field: &str) -> Self {
        self.body.field = Some(field.into());
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

impl From<ValidationError> for ApiError {
    fn from(error: ValidationError) -> Self {
        let message = error.to_string();
        Self::invalid(&error.field, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => Self::not_found(format!("{what} not found")),
            StoreError::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::Refused { code, message } => Self::new(StatusCode::CONFLICT, code, message),
            StoreError::Invalid(error) => error.into(),
            StoreError::Full(_) => Self::storage_full(),
            StoreError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "mailroom is shutting down; try again shortly",
            ),
            other => Self::internal(other),
        }
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        json_error(rejection.status(), rejection.body_text())
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        json_error(rejection.status(), rejection.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        // A query string is always well-formed text; a value of the wrong type or an unknown
        // parameter is invalid input, like a JSON body of the wrong shape.
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            rejection.body_text(),
        )
    }
}

/// The largest page a list route returns.
pub const MAX_PAGE_SIZE: i64 = 500;

/// A page size from the query string: absent means `default`; outside 1–500 is refused.
pub fn page_limit(raw: Option<i64>, default: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(limit) if (1..=MAX_PAGE_SIZE).contains(&limit) => Ok(limit as u32),
        Some(limit) => Err(ApiError::invalid(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE_SIZE}, not {limit}"),
        )),
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", rejection.body_text())
    }
}

fn json_error(status: StatusCode, text: String) -> ApiError {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            status,
            "payload_too_large",
            format!("the request body is larger than the configured limit: {text}"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            status,
            "unsupported_media_type",
            "send JSON with Content-Type: application/json",
        ),
        _ => ApiError::new(status, "invalid_json", text),
    }
}

/// A JSON body extractor whose rejections are [`ApiError`]s: `415` without a JSON content type,
/// `400 invalid_json` for malformed JSON, `422 invalid_request` for well-formed JSON of the wrong shape.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let json = declares_json(request.headers());
        let body = axum::body::Bytes::from_request(request, state).await?;
        parse_json(json, &body).map(ApiJson)
    }
}

/// Whether a request declares a JSON body (`application/json` or any `+json` type).
fn declares_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}

/// Parses a request body that must be a JSON object into `T`, with the same errors on every route.
pub fn parse_json_body<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    parse_json(declares_json(headers), body)
}

fn parse_json<T: serde::de::DeserializeOwned>(
    declared_json: bool,
    body: &[u8],
) -> Result<T, ApiError> {
    if !declared_json {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            String::new(),
        ));
    }
    // serde accepts a JSON array for a struct (its fields in order); every body of this API is an
    // object, so anything else is the wrong shape rather than a request to guess at.
    let first = body.iter().find(|byte| !byte.is_ascii_whitespace());
    match first {
        None => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the request body is empty; send a JSON object",
            ));
        }
        Some(b'{') => {}
        Some(_) => {
            // Tell malformed JSON (400) from well-formed JSON that is not an object (422).
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Err(error) => {
                        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", error.to_string())
                    }
                    Ok(_) => ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_request",
                        "the request body must be a JSON object",
                    ),
                },
            );
        }
    }
    serde_json::from_slice(body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("the request body has the wrong shape: {error}"),
        ),
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid JSON: {error}"),
        ),
    })
}

/// A query-string extractor whose rejections are [`ApiError`]s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A path extractor whose rejections are [`ApiError`]s.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::ERROR_CODES;

    fn status_named(constant: &str) -> Option<u16> {
        Some(match constant {
            "BAD_REQUEST" => 400,
            "UNAUTHORIZED" => 401,
            "FORBIDDEN" => 403,
            "NOT_FOUND" => 404,
            "METHOD_NOT_ALLOWED" => 405,
            "CONFLICT" => 409,
            "PAYLOAD_TOO_LARGE" => 413,
            "UNSUPPORTED_MEDIA_TYPE" => 415,
            "UNPROCESSABLE_ENTITY" => 422,
            "INTERNAL_SERVER_ERROR" => 500,
            "SERVICE_UNAVAILABLE" => 503,
            "INSUFFICIENT_STORAGE" => 507,
            _ => return None,
        })
    }

    /// Every code the API's source answers with (`ApiError::new(status, "code", …)`, and the store's
    /// refusals) is in the catalogue, with the status it is sent with.
    #[test]
    fn every_error_code_the_api_answers_with_is_in_the_catalogue() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = vec![
            root.join("src/error.rs"),
            root.join("src/auth.rs"),
            root.join("src/lib.rs"),
        ];
        for entry in std::fs::read_dir(root.join("src/routes")).unwrap() {
            sources.push(entry.unwrap().path());
        }
        sources.push(root.join("../mailroom-store/src/users.rs"));
        let mut found = 0;
        for path in sources {
            let text = std::fs::read_to_string(&path).unwrap();
            let compact: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for marker in [
                "ApiError::new( StatusCode::",
                "ApiError::new(StatusCode::",
                "code: \"",
            ] {
                for (index, _) in compact.match_indices(marker) {
                    let rest = &compact[index + marker.len()..];
                    let Some(open) = rest.find('"') else { continue };
                    let Some(close) = rest[open + 1..].find('"') else {
                        continue;
                    };
                    let code = &rest[open + 1..open + 1 + close];
                    if code.is_empty() || !code.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    {
                        continue;
                    }
                    found += 1;
                    let listed = ERROR_CODES.iter().find(|(known, _, _)| *known == code);
                    let Some((_, listed_status, _)) = listed else {
                        panic!("{code} (in {}) is not in ERROR_CODES", path.display());
                    };
                    // With the status written beside it, the catalogue must give the same one.
                    let constant = rest[..open].trim_end_matches([',', ' ']);
                    if let Some(status) = status_named(constant) {
                        assert_eq!(
                            status, *listed_status,
                            "{code} is sent as {constant} but catalogued as {listed_status}"
                        );
                    }
                }
            }
        }
        assert!(found > 15, "only {found} codes found in the sources");
    }
}
