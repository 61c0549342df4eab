//! The Microsoft Graph connector (`microsoft365` accounts): sends through a Microsoft 365 mailbox
//! with `sendMail`, or — for messages whose MIME would not fit one 4 MB request — as a draft whose
//! attachments are added one by one (an upload session for those of 3 MB and more) and then sent.
//!
//! Sources: learn.microsoft.com "user: sendMail", "Attach large files to Outlook messages or
//! events", "attachment: createUploadSession", "message: send", "Microsoft Graph error responses
//! and resource types", "Microsoft Graph throttling guidance".

use crate::http::{HttpAnswer, HttpClient};
use crate::{Connector, Delivered, FailureKind, OutgoingMessage, SendError};
use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use mailroom_core::graph::{
    ATTACHMENT_LIMIT, DraftAttachment, MIME_SEND_LIMIT, REQUEST_LIMIT, UPLOAD_SESSION_FROM,
    draft_from_mime, hidden_recipients, with_bcc_header,
};
use serde_json::Value;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long Graph has to answer one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Throttled requests are waited for and repeated within one attempt this many times, when Graph
/// asks for at most [`LONGEST_WAIT`]; beyond that the attempt fails and is retried later.
const THROTTLE_REPEATS: u32 = 5;
const LONGEST_WAIT: Duration = Duration::from_secs(60);
/// The wait when a 429 or 503 comes without `Retry-After`.
const DEFAULT_WAIT: Duration = Duration::from_secs(10);

/// The access tokens a connector presents.
#[async_trait]
pub trait AccessTokens: Send + Sync + 'static {
    /// A token valid now; `renew` asks for a new one (the last was refused).
    async fn access_token(&self, renew: bool) -> Result<String, SendError>;
}

/// Where a `microsoft365` account sends.
#[derive(Debug, Clone)]
pub struct GraphSettings {
    /// e.g. `https://graph.microsoft.com/v1.0`
    pub base_url: String,
    /// The mailbox: its address (user principal name) or object id.
    pub mailbox: String,
}

/// Sends through Microsoft Graph.
pub struct GraphConnector {
    settings: GraphSettings,
    http: HttpClient,
    tokens: Arc<dyn AccessTokens>,
    /// No request before this instant: the last throttled answer said so, for every send of the
    /// mailbox (Graph's limits are per app and mailbox).
    not_before: Mutex<Option<Instant>>,
}

/// A Graph error: `{"error": {"code", "message", "innerError"}}`.
fn graph_error(answer: &HttpAnswer) -> (String, String) {
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let code = value["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let message = value["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| answer.text().chars().take(300).collect());
    (code, message)
}

/// `Retry-After` in seconds (Graph sends seconds, not dates).
fn retry_after(answer: &HttpAnswer) -> Duration {
    answer
        .header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(DEFAULT_WAIT, Duration::from_secs)
}

impl GraphConnector {
    pub fn new(settings: GraphSettings, http: HttpClient, tokens: Arc<dyn AccessTokens>) -> Self {
        Self {
            settings,
            http,
            tokens,
            not_before: Mutex::new(None),
        }
    }

    fn user_url(&self, rest: &str) -> String {
        format!(
            "{}/users/{}{rest}",
            self.settings.base_url,
            mailroom_core::oauth::form_encode(&self.settings.mailbox).replace('+', "%20")
        )
    }

    /// What a refusal means for the mailbox and this message.
    fn refusal(&self, answer: &HttpAnswer) -> SendError {
        let (code, message) = graph_error(answer);
        let mailbox = &self.settings.mailbox;
        let status = Some(answer.status);
        match code.as_str() {
            "ErrorSendAsDenied" => SendError::permanent(
                status,
                format!(
                    "ErrorSendAsDenied: this identity has no Send As right on the From address of the message in {mailbox} ({message})"
                ),
            ),
            "ErrorAccessDenied" | "AccessDenied" | "Authorization_RequestDenied" => {
                SendError::permanent(
                    status,
                    format!(
                        "{code}: Microsoft 365 refuses access to {mailbox} — an application access policy excludes the mailbox, or the app lacks the Mail.Send permission of this kind (application vs delegated) ({message})"
                    ),
                )
            }
            "MailboxNotEnabledForRESTAPI" => SendError::permanent(
                status,
                format!(
                    "MailboxNotEnabledForRESTAPI: {mailbox} is not an Exchange Online mailbox Graph can use (on-premises, inactive or unlicensed) ({message})"
                ),
            ),
            "ErrorMessageSizeExceeded" | "RequestBodyTooLarge" => SendError::permanent(
                status,
                format!(
                    "{code}: the message is larger than {mailbox} accepts (Exchange Online's default limit is 35 MB, including attachments) ({message})"
                ),
            ),
            "ErrorInvalidUser" | "ResourceNotFound" | "Request_ResourceNotFound" => {
                SendError::permanent(
                    status,
                    format!("{code}: Microsoft 365 knows no mailbox {mailbox} ({message})"),
                )
            }
            _ if answer.status >= 500 => {
                SendError::transient(status, format!("Microsoft Graph failed: {code} {message}"))
            }
            _ => SendError::permanent(status, format!("Microsoft Graph refused: {code} {message}")),
        }
    }

    async fn wait_turn(&self) {
        let until = *self.not_before.lock().expect("throttle lock");
        if let Some(until) = until {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// One Graph request with the mailbox's token: a refused token is renewed once, a throttled
    /// request is repeated after `Retry-After` (and no other request of the mailbox goes before).
    /// `last` marks the request that sends: losing its answer leaves the outcome unknown.
    async fn call(
        &self,
        method: hyper::Method,
        url: &str,
        content_type: &str,
        body: Bytes,
        last: bool,
    ) -> Result<HttpAnswer, SendError> {
        self.call_with(method, url, content_type, body, last, &[])
            .await
    }

    /// [`Self::call`] with more request headers.
    async fn call_with(
        &self,
        method: hyper::Method,
        url: &str,
        content_type: &str,
        body: Bytes,
        last: bool,
        extra: &[(&str, String)],
    ) -> Result<HttpAnswer, SendError> {
        let mut renewed = false;
        let mut throttled = 0;
        loop {
            self.wait_turn().await;
            let token = self.tokens.access_token(renewed).await?;
            let mut headers = vec![
                ("authorization", format!("Bearer {token}")),
                ("content-type", content_type.to_owned()),
                ("accept", "application/json".to_owned()),
            ];
            headers.extend(extra.iter().map(|(n, v)| (*n, v.clone())));
            let answer = self
                .http
                .send(
                    method.clone(),
                    url,
                    &headers,
                    body.clone(),
                    REQUEST_TIMEOUT,
                    // A whole message's MIME comes back here (Exchange Online's limit is 150 MB).
                    160 * 1024 * 1024,
                )
                .await
                .map_err(|why| {
                    if last && (why.contains("no answer within") || why.contains("closed")) {
                        SendError::unknown(format!("Microsoft Graph did not answer: {why}"))
                    } else {
                        SendError::transient(
                            None,
                            format!("Microsoft Graph cannot be reached: {why}"),
                        )
                    }
                })?;
            match answer.status {
                200..=299 => return Ok(answer),
                // An expired or revoked access token: a new one, once.
                401 if !renewed => renewed = true,
                429 | 503 => {
                    let wait = retry_after(&answer);
                    let until = Instant::now() + wait;
                    {
                        let mut not_before = self.not_before.lock().expect("throttle lock");
                        if not_before.is_none_or(|t| t < until) {
                            *not_before = Some(until);
                        }
                    }
                    let (code, message) = graph_error(&answer);
                    tracing::info!(mailbox = %self.settings.mailbox, status = answer.status, %code, wait_s = wait.as_secs(), "Microsoft Graph throttles; waiting as it asks");
                    throttled += 1;
                    if throttled > THROTTLE_REPEATS || wait > LONGEST_WAIT {
                        return Err(SendError::transient(
                            Some(answer.status),
                            format!(
                                "Microsoft Graph throttles ({code}: {message}); retry after {} s",
                                wait.as_secs()
                            ),
                        )
                        .retry_after(wait));
                    }
                }
                401 => {
                    let (code, message) = graph_error(&answer);
                    return Err(SendError::transient(
                        Some(401),
                        format!(
                            "{code}: Microsoft Graph refused a freshly issued token ({message})"
                        ),
                    ));
                }
                _ => return Err(self.refusal(&answer)),
            }
        }
    }

    async fn call_json(
        &self,
        method: hyper::Method,
        url: &str,
        body: &Value,
        last: bool,
    ) -> Result<HttpAnswer, SendError> {
        let bytes = Bytes::from(serde_json::to_vec(body).expect("JSON serializes"));
        self.call(method, url, "application/json", bytes, last)
            .await
    }

    /// The small path: the MIME itself, in base64, in one `sendMail`.
    async fn send_mime(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let hidden = hidden_recipients(&message.bytes, &message.recipients);
        let mime = with_bcc_header(&message.bytes, &hidden);
        let body = base64::engine::general_purpose::STANDARD.encode(&mime);
        let answer = self
            .call(
                hyper::Method::POST,
                &self.user_url("/sendMail"),
                "text/plain",
                Bytes::from(body),
                true,
            )
            .await?;
        Ok(Delivered {
            reply_code: Some(answer.status),
            reply_text: format!("accepted by Microsoft Graph for {}", self.settings.mailbox),
        })
    }

    /// The large path: a draft, its attachments, then `send`. A draft left by a failure is deleted.
    async fn send_draft(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let draft = draft_from_mime(&message.bytes, &message.recipients)
            .map_err(|why| SendError::permanent(None, why))?;
        if let Some(big) = draft
            .attachments
            .iter()
            .find(|a| a.bytes.len() > ATTACHMENT_LIMIT)
        {
            return Err(SendError::permanent(
                None,
                format!(
                    "{} is {} bytes; Microsoft Graph takes attachments of at most 150 MB",
                    big.name,
                    big.bytes.len()
                ),
            ));
        }
        let created = self
            .call_json(
                hyper::Method::POST,
                &self.user_url("/messages"),
                &draft.message,
                false,
            )
            .await?;
        let id = serde_json::from_slice::<Value>(&created.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                SendError::transient(
                    Some(created.status),
                    "Microsoft Graph created a draft without an id",
                )
            })?;
        let message_url = self.user_url(&format!(
            "/messages/{}",
            mailroom_core::oauth::form_encode(&id)
        ));
        let result = async {
            for attachment in &draft.attachments {
                self.attach(&message_url, attachment).await?;
            }
            self.call(
                hyper::Method::POST,
                &format!("{message_url}/send"),
                "application/json",
                Bytes::new(),
                true,
            )
            .await
        }
        .await;
        match result {
            Ok(answer) => Ok(Delivered {
                reply_code: Some(answer.status),
                reply_text: format!(
                    "accepted by Microsoft Graph for {} ({} attachments uploaded)",
                    self.settings.mailbox,
                    draft.attachments.len()
                ),
            }),
            Err(error) => {
                if error.kind != FailureKind::Unknown {
                    // Best effort: a draft left behind is harmless, but clutters the mailbox.
                    let _ = self
                        .call(
                            hyper::Method::DELETE,
                            &message_url,
                            "application/json",
                            Bytes::new(),
                            false,
                        )
                        .await;
                }
                Err(error)
            }
        }
    }

    async fn attach(
        &self,
        message_url: &str,
        attachment: &DraftAttachment,
    ) -> Result<(), SendError> {
        if attachment.bytes.len() < UPLOAD_SESSION_FROM {
            self.call_json(
                hyper::Method::POST,
                &format!("{message_url}/attachments"),
                &attachment.file_attachment(),
                false,
            )
            .await?;
            return Ok(());
        }
        let session = self
            .call_json(
                hyper::Method::POST,
                &format!("{message_url}/attachments/createUploadSession"),
                &attachment.upload_item(),
                false,
            )
            .await?;
        let upload_url = serde_json::from_slice::<Value>(&session.body)
            .ok()
            .and_then(|v| v["uploadUrl"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                SendError::transient(
                    Some(session.status),
                    "Microsoft Graph opened an upload session without an uploadUrl",
                )
            })?;
        let total = attachment.bytes.len();
        let mut start = 0;
        while start < total {
            let end = (start + REQUEST_LIMIT).min(total);
            // The upload URL is pre-authenticated: no Authorization header.
            let answer = self
                .http
                .send(
                    hyper::Method::PUT,
                    &upload_url,
                    &[
                        ("content-type", "application/octet-stream".to_owned()),
                        (
                            "content-range",
                            format!("bytes {start}-{}/{total}", end - 1),
                        ),
                    ],
                    Bytes::copy_from_slice(&attachment.bytes[start..end]),
                    REQUEST_TIMEOUT,
                    64 * 1024,
                )
                .await
                .map_err(|why| {
                    SendError::transient(
                        None,
                        format!("uploading {} failed: {why}", attachment.name),
                    )
                })?;
            match answer.status {
                200 | 201 => {}
                429 | 503 => {
                    let wait = retry_after(&answer);
                    tokio::time::sleep(wait.min(LONGEST_WAIT)).await;
                    continue;
                }
                _ => return Err(self.refusal(&answer)),
            }
            // Where the service wants the next bytes (nextExpectedRanges), else the next range.
            let expected = serde_json::from_slice::<Value>(&answer.body)
                .ok()
                .and_then(|v| v["nextExpectedRanges"][0].as_str().map(str::to_owned))
                .and_then(|r| r.split('-').next().and_then(|s| s.parse::<usize>().ok()));
            start = if answer.status == 201 {
                total
            } else {
                expected.unwrap_or(end)
            };
        }
        Ok(())
    }
}

#[async_trait]
impl Connector for GraphConnector {
    fn describe(&self) -> String {
        format!("Microsoft Graph, mailbox {}", self.settings.mailbox)
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        if message.bytes.len() <= MIME_SEND_LIMIT {
            self.send_mime(message).await
        } else {
            self.send_draft(message).await
        }
    }

    async fn test_connection(&self) -> Result<String, SendError> {
        let answer = self
            .call(
                hyper::Method::GET,
                &self.user_url("?$select=mail,userPrincipalName"),
                "application/json",
                Bytes::new(),
                false,
            )
            .await?;
        let user: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        Ok(format!(
            "Microsoft Graph issued a token and knows the mailbox {}",
            user["mail"]
                .as_str()
                .or(user["userPrincipalName"].as_str())
                .unwrap_or(&self.settings.mailbox)
        ))
    }
}

/// One message in a delta page.
#[derive(Debug, Clone)]
pub struct DeltaItem {
    pub id: String,
    /// Deleted (or moved out of the folder) since the last sync.
    pub removed: bool,
    pub is_read: bool,
    /// `receivedDateTime`, RFC 3339.
    pub received: Option<String>,
}

/// A page of a delta query: its messages, and either where the next page is or where the next
/// sync starts (the whole links are kept: they carry the service's state).
#[derive(Debug, Clone, Default)]
pub struct DeltaPage {
    pub items: Vec<DeltaItem>,
    pub next_link: Option<String>,
    pub delta_link: Option<String>,
}

/// Why a delta query stopped.
#[derive(Debug, Clone)]
pub enum DeltaError {
    /// The service no longer knows the sync state (`410 Gone`, `syncStateNotFound` or
    /// `resyncRequired`): start again from an empty state.
    Resync,
    Failed(SendError),
}

impl GraphConnector {
    /// One page of `GET /users/{id}/mailFolders/{folder}/messages/delta` — the first (no link), or
    /// the one `link` (a nextLink or the last deltaLink) names — at most `page_size` messages
    /// (`Prefer: odata.maxpagesize`; "Get incremental changes to messages in a folder").
    pub async fn delta_page(
        &self,
        folder: &str,
        link: Option<&str>,
        page_size: u32,
    ) -> Result<DeltaPage, DeltaError> {
        let url = match link {
            Some(link) => link.to_owned(),
            None => self.user_url(&format!(
                "/mailFolders/{}/messages/delta?$select=isRead,receivedDateTime",
                mailroom_core::oauth::form_encode(folder)
            )),
        };
        let answer = self
            .call_with(
                hyper::Method::GET,
                &url,
                "application/json",
                Bytes::new(),
                false,
                &[("prefer", format!("odata.maxpagesize={page_size}"))],
            )
            .await
            .map_err(|error| {
                if error.reply_code == Some(410)
                    || error.message.contains("syncStateNotFound")
                    || error.message.contains("resyncRequired")
                {
                    DeltaError::Resync
                } else {
                    DeltaError::Failed(error)
                }
            })?;
        let value: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            DeltaError::Failed(SendError::transient(
                Some(answer.status),
                format!("a delta page that is not JSON: {e}"),
            ))
        })?;
        let items = value["value"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| {
                        Some(DeltaItem {
                            id: item["id"].as_str()?.to_owned(),
                            removed: item.get("@removed").is_some(),
                            is_read: item["isRead"].as_bool().unwrap_or(false),
                            received: item["receivedDateTime"].as_str().map(str::to_owned),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(DeltaPage {
            items,
            next_link: value["@odata.nextLink"].as_str().map(str::to_owned),
            delta_link: value["@odata.deltaLink"].as_str().map(str::to_owned),
        })
    }

    /// A message's MIME (`GET /users/{id}/messages/{id}/$value`).
    pub async fn mime(&self, id: &str) -> Result<Vec<u8>, SendError> {
        let url = self.user_url(&format!(
            "/messages/{}/$value",
            mailroom_core::oauth::form_encode(id)
        ));
        let answer = self
            .call_with(
                hyper::Method::GET,
                &url,
                "application/json",
                Bytes::new(),
                false,
                &[],
            )
            .await?;
        Ok(answer.body.to_vec())
    }
}
