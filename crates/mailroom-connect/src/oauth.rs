//! OAuth 2.0 token requests, in the one place every connector uses (SMTP and IMAP with XOAUTH2,
//! Microsoft Graph): discovery (OpenID Connect Discovery 1.0), the client-credentials grant
//! (RFC 6749 §4.4), the authorization-code grant with PKCE (RFC 6749 §4.1, RFC 7636) and refresh
//! (RFC 6749 §6).
//!
//! Written on the shared [`HttpClient`] rather than the `oauth2` crate: a provider's error body is
//! what the administrator needs (Microsoft's `error_codes`, the `AADSTS…` description), and the
//! crate's standard error type drops everything but `error` and `error_description`.

use crate::http::HttpClient;
use bytes::Bytes;
use mailroom_core::oauth::{aadsts_code, form_body};
use std::time::Duration;

/// How long an identity provider has to answer.
pub const PROVIDER_TIMEOUT: Duration = Duration::from_secs(20);
const READ_LIMIT: usize = 256 * 1024;

/// What a provider's discovery document says (the fields mailroom uses).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    #[serde(default)]
    pub grant_types_supported: Vec<String>,
    #[serde(default)]
    pub token_endpoint_auth_methods_supported: Vec<String>,
}

/// A token endpoint's success answer (RFC 6749 §5.1).
#[derive(Clone, serde::Deserialize)]
pub struct TokenGrant {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub id_token: Option<String>,
}

impl std::fmt::Debug for TokenGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never in a log line.
        f.debug_struct("TokenGrant")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("scope", &self.scope)
            .finish()
    }
}

/// A refused or failed token request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {description}")]
pub struct TokenError {
    /// The HTTP status, when the provider answered.
    pub status: Option<u16>,
    /// The OAuth error code (`invalid_client`, `invalid_grant`…), or `unreachable` / `bad_answer`.
    pub error: String,
    pub description: String,
    /// Microsoft's `AADSTS` codes (`error_codes`, else the one the description begins with).
    pub codes: Vec<u32>,
}

impl TokenError {
    /// Whether trying again later cannot help without someone acting: the grant or the client is
    /// refused (RFC 6749 §5.2), as opposed to a network failure or a provider's 5xx.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self.error.as_str(),
            "invalid_grant"
                | "invalid_client"
                | "unauthorized_client"
                | "unsupported_grant_type"
                | "invalid_scope"
                | "invalid_request"
                | "consent_required"
                | "interaction_required"
        )
    }

    fn local(error: &str, description: impl Into<String>) -> Self {
        Self {
            status: None,
            error: error.to_owned(),
            description: description.into(),
            codes: Vec::new(),
        }
    }
}

/// How the client proves who it is at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (Microsoft's documented way).
    Post,
    /// HTTP Basic with the form-encoded id and secret.
    Basic,
}

impl ClientAuth {
    /// Basic unless the provider lists only `client_secret_post` — Basic is the one RFC 6749 says
    /// every provider must support, and the discovery default (OpenID Connect Discovery §3).
    pub fn for_provider(discovery: Option<&Discovery>) -> Self {
        match discovery {
            Some(d)
                if d.token_endpoint_auth_methods_supported
                    .iter()
                    .any(|m| m == "client_secret_post")
                    && !d
                        .token_endpoint_auth_methods_supported
                        .iter()
                        .any(|m| m == "client_secret_basic") =>
            {
                ClientAuth::Post
            }
            _ => ClientAuth::Basic,
        }
    }
}

/// The client of one registration at its token endpoint.
#[derive(Clone)]
pub struct TokenClient<'a> {
    pub token_endpoint: &'a str,
    pub client_id: &'a str,
    pub client_secret: &'a str,
    pub auth: ClientAuth,
}

/// Token requests over the shared HTTP client.
#[derive(Clone)]
pub struct OAuthClient {
    http: HttpClient,
}

impl OAuthClient {
    /// Identity providers are often on the company's own network, so private addresses are allowed.
    pub fn new(extra_roots: &[Vec<u8>]) -> Result<Self, String> {
        Ok(Self {
            http: HttpClient::new(true, extra_roots, PROVIDER_TIMEOUT)?,
        })
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Reads a provider's discovery document.
    pub async fn discover(&self, url: &str) -> Result<Discovery, String> {
        let answer = self
            .http
            .send(
                hyper::Method::GET,
                url,
                &[("accept", "application/json".into())],
                Bytes::new(),
                PROVIDER_TIMEOUT,
                READ_LIMIT,
            )
            .await?;
        if answer.status != 200 {
            return Err(format!(
                "{url} answered {} {}",
                answer.status,
                answer.text().chars().take(300).collect::<String>()
            ));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| format!("{url} is not an OpenID Connect discovery document: {e}"))
    }

    /// App-only token (RFC 6749 §4.4).
    pub async fn client_credentials(
        &self,
        client: &TokenClient<'_>,
        scopes: &[String],
    ) -> Result<TokenGrant, TokenError> {
        let scope = scopes.join(" ");
        let mut fields = vec![("grant_type", "client_credentials")];
        if !scope.is_empty() {
            fields.push(("scope", scope.as_str()));
        }
        self.token(client, &fields).await
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3) with its PKCE verifier (RFC 7636 §4.5).
    pub async fn exchange_code(
        &self,
        client: &TokenClient<'_>,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Result<TokenGrant, TokenError> {
        self.token(
            client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier),
            ],
        )
        .await
    }

    /// A fresh access token from a refresh token (RFC 6749 §6). Providers may rotate the refresh
    /// token: keep the one in the answer when there is one.
    pub async fn refresh(
        &self,
        client: &TokenClient<'_>,
        refresh_token: &str,
        scopes: &[String],
    ) -> Result<TokenGrant, TokenError> {
        let scope = scopes.join(" ");
        let mut fields = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        if !scope.is_empty() {
            fields.push(("scope", scope.as_str()));
        }
        self.token(client, &fields).await
    }

    async fn token(
        &self,
        client: &TokenClient<'_>,
        fields: &[(&str, &str)],
    ) -> Result<TokenGrant, TokenError> {
        let mut fields = fields.to_vec();
        let mut headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
        ];
        match client.auth {
            ClientAuth::Post => {
                fields.push(("client_id", client.client_id));
                fields.push(("client_secret", client.client_secret));
            }
            ClientAuth::Basic => {
                use base64::Engine as _;
                let pair = format!(
                    "{}:{}",
                    mailroom_core::oauth::form_encode(client.client_id),
                    mailroom_core::oauth::form_encode(client.client_secret)
                );
                headers.push((
                    "authorization",
                    format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(pair)
                    ),
                ));
                fields.push(("client_id", client.client_id));
            }
        }
        let answer = self
            .http
            .send(
                hyper::Method::POST,
                client.token_endpoint,
                &headers,
                Bytes::from(form_body(&fields)),
                PROVIDER_TIMEOUT,
                READ_LIMIT,
            )
            .await
            .map_err(|why| TokenError::local("unreachable", why))?;
        if answer.status == 200 {
            return serde_json::from_slice::<TokenGrant>(&answer.body).map_err(|e| {
                TokenError::local(
                    "bad_answer",
                    format!("the token endpoint's answer is not a token: {e}"),
                )
            });
        }
        #[derive(serde::Deserialize)]
        struct ErrorBody {
            error: Option<String>,
            error_description: Option<String>,
            #[serde(default)]
            error_codes: Vec<u32>,
        }
        let body: ErrorBody = serde_json::from_slice(&answer.body).unwrap_or(ErrorBody {
            error: None,
            error_description: None,
            error_codes: Vec::new(),
        });
        let description = body
            .error_description
            .unwrap_or_else(|| answer.text().chars().take(300).collect());
        let mut codes = body.error_codes;
        if codes.is_empty()
            && let Some(code) = aadsts_code(&description)
        {
            codes.push(code);
        }
        Err(TokenError {
            status: Some(answer.status),
            error: body
                .error
                .unwrap_or_else(|| format!("http_{}", answer.status)),
            description,
            codes,
        })
    }
}
