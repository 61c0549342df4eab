//! The HTTP client that delivers webhooks: 10 s per request, no redirects followed, TLS with the
//! public roots (and the configured extra ones), and — unless the administrator allows private
//! targets — no connection to loopback, private, link-local or other internal addresses, checked on
//! the addresses actually connected to (see [`crate::http`]).

use crate::http::HttpClient;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// How long a receiver has to answer.
pub const RECEIVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an answer is kept in the delivery log.
const RESPONSE_SNIPPET: usize = 512;
/// How much of an answer is read at all.
const RESPONSE_READ: usize = 64 * 1024;

/// What a receiver made of one delivery.
#[derive(Debug, Clone)]
pub struct ReceiverAnswer {
    pub status: Option<u16>,
    pub latency: Duration,
    pub response: Option<String>,
    pub error: Option<String>,
}

/// Delivers webhook requests.
#[derive(Clone)]
pub struct WebhookClient {
    http: HttpClient,
}

impl WebhookClient {
    /// `extra_roots`: PEM files' contents trusted besides the public roots.
    pub fn new(allow_private: bool, extra_roots: &[Vec<u8>]) -> Result<Self, String> {
        Ok(Self {
            http: HttpClient::new(allow_private, extra_roots, RECEIVER_TIMEOUT)?,
        })
    }

    /// POSTs `body` (JSON) with `headers` to `url`; never fails: what happened is in the answer.
    pub async fn deliver(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> ReceiverAnswer {
        let started = Instant::now();
        let mut all = vec![("content-type", "application/json".to_owned())];
        all.extend(headers.iter().map(|(n, v)| (*n, v.clone())));
        let answer = self
            .http
            .send(
                hyper::Method::POST,
                url,
                &all,
                Bytes::from(body),
                RECEIVER_TIMEOUT,
                RESPONSE_READ,
            )
            .await;
        match answer {
            Err(error) => ReceiverAnswer {
                status: None,
                latency: started.elapsed(),
                response: None,
                error: Some(error),
            },
            Ok(answer) => {
                let text = answer.text();
                let mut snippet: String = text.chars().take(RESPONSE_SNIPPET).collect();
                if snippet.len() < text.len() {
                    snippet.push('…');
                }
                ReceiverAnswer {
                    status: Some(answer.status),
                    latency: started.elapsed(),
                    response: (!snippet.is_empty()).then_some(snippet),
                    error: None,
                }
            }
        }
    }
}
