//! The HTTP client that delivers webhooks: 10 s per request, no redirects followed, TLS with the
//! public roots (and the configured extra ones), and — unless the administrator allows private
//! targets — no connection to loopback, private, link-local or other internal addresses, checked on
//! the addresses actually connected to (a name is resolved here, so a DNS answer cannot smuggle an
//! internal address past the check).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use mailroom_core::webhook::is_private_target;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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

/// Resolves names, keeping only the addresses webhooks may reach.
#[derive(Clone)]
struct Guarded {
    allow_private: bool,
}

impl tower_service::Service<Name> for Guarded {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_private_target(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(std::io::Error::other(format!(
                    "{host} resolves only to private or local addresses, which webhooks may not reach (allow_private_targets)"
                )));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// Delivers webhook requests.
#[derive(Clone)]
pub struct WebhookClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<Guarded>>, Full<Bytes>>,
    allow_private: bool,
}

impl WebhookClient {
    /// `extra_roots`: PEM files' contents trusted besides the public roots.
    pub fn new(allow_private: bool, extra_roots: &[Vec<u8>]) -> Result<Self, String> {
        let mut roots = tokio_rustls::rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        for pem in extra_roots {
            for certificate in CertificateDer::pem_slice_iter(pem).flatten() {
                let _ = roots.add(certificate);
            }
        }
        let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new_with_resolver(Guarded { allow_private });
        http.enforce_http(false);
        http.set_connect_timeout(Some(RECEIVER_TIMEOUT));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            client,
            allow_private,
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
        let refused = |error: String| ReceiverAnswer {
            status: None,
            latency: started.elapsed(),
            response: None,
            error: Some(error),
        };
        let uri: hyper::Uri = match url.parse() {
            Ok(uri) => uri,
            Err(error) => return refused(format!("the URL is not valid: {error}")),
        };
        // An address written in the URL is not resolved, so it is checked here.
        if let Some(host) = uri.host() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>()
                && !self.allow_private
                && is_private_target(ip)
            {
                return refused(format!(
                    "{ip} is a private or local address, which webhooks may not reach (allow_private_targets)"
                ));
            }
        }
        let mut request = hyper::Request::post(uri)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("mailroom-webhooks/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(request) => request,
            Err(error) => return refused(format!("the request cannot be made: {error}")),
        };
        let exchange = async {
            let response = self.client.request(request).await?;
            let status = response.status().as_u16();
            let text = Limited::new(response.into_body(), RESPONSE_READ)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, text))
        };
        match tokio::time::timeout(RECEIVER_TIMEOUT, exchange).await {
            Err(_) => refused(format!("no answer within {} s", RECEIVER_TIMEOUT.as_secs())),
            Ok(Err(error)) => {
                let mut why = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    why.push_str(": ");
                    why.push_str(&cause.to_string());
                    source = cause.source();
                }
                refused(why)
            }
            Ok(Ok((status, text))) => {
                let mut snippet: String = text.chars().take(RESPONSE_SNIPPET).collect();
                if snippet.len() < text.len() {
                    snippet.push('…');
                }
                ReceiverAnswer {
                    status: Some(status),
                    latency: started.elapsed(),
                    response: (!snippet.is_empty()).then_some(snippet),
                    error: None,
                }
            }
        }
    }
}
