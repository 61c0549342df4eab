//! Bearer-token authentication for every `/v1` route.

use crate::AppState;
use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Who is calling: the token presented.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub token_name: String,
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let Some(presented) = presented else {
        return unauthorized("send an API token as 'Authorization: Bearer <token>'");
    };
    match state.store.authenticate_token(&presented).await {
        Ok(Some(token)) => {
            request.extensions_mut().insert(Principal {
                token_id: token.id.to_string(),
                token_name: token.name,
            });
            next.run(request).await
        }
        Ok(None) => unauthorized("the API token is unknown, revoked or expired"),
        Err(error) => ApiError::from(error).into_response(),
    }
}
