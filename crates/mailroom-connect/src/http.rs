//! The one HTTPS client stack of mailroom (hyper + rustls with ring, the public roots and the
//! configured extra ones), shared by webhook delivery, OAuth token requests and Microsoft Graph.
//! Names are resolved here, so that a policy on the addresses actually connected to (webhooks may
//! not reach private addresses) cannot be bypassed by a DNS answer.

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
use std::time::Duration;

/// Resolves names, keeping only the addresses the client may reach.
#[derive(Clone)]
pub(crate) struct Guarded {
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
                    "{host} resolves only to private or local addresses, which may not be reached (allow_private_targets)"
                )));
            }
            Ok(allowed.into_iter())
        })
    }
}

/// An answer: status, headers and (up to the read limit) body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP(S) client with one address policy.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector<Guarded>>, Full<Bytes>>,
    allow_private: bool,
}

impl HttpClient {
    /// `extra_roots`: PEM files' contents trusted besides the public roots. `allow_private`: whether
    /// loopback, private and link-local addresses may be reached.
    pub fn new(
        allow_private: bool,
        extra_roots: &[Vec<u8>],
        connect_timeout: Duration,
    ) -> Result<Self, String> {
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
        http.set_connect_timeout(Some(connect_timeout));
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

    /// Sends one request and reads the answer's body if it is at most `read_limit` bytes (a longer
    /// one is dropped, its status kept), all within `timeout`.
    /// The error is one line saying what went wrong (with its causes), never a panic.
    pub async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        timeout: Duration,
        read_limit: usize,
    ) -> Result<HttpAnswer, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("the URL is not valid: {e}"))?;
        // An address written in the URL is not resolved, so it is checked here.
        if let Some(host) = uri.host() {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = bare.parse::<IpAddr>()
                && !self.allow_private
                && is_private_target(ip)
            {
                return Err(format!(
                    "{ip} is a private or local address, which may not be reached (allow_private_targets)"
                ));
            }
        }
        let mut request = hyper::Request::builder().method(method).uri(uri).header(
            "user-agent",
            concat!("mailroom/", env!("CARGO_PKG_VERSION")),
        );
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| format!("the request cannot be made: {e}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(chain)?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = Limited::new(response.into_body(), read_limit)
                .collect()
                .await
                .map(|b| b.to_bytes())
                // An answer longer than the limit (or cut off) keeps its status; its body is dropped.
                .unwrap_or_default();
            Ok::<_, String>(HttpAnswer {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
            Ok(answer) => answer,
        }
    }
}

/// An error with its chain of causes, on one line.
fn chain(error: impl std::error::Error) -> String {
    let mut why = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        why.push_str(": ");
        why.push_str(&cause.to_string());
        source = cause.source();
    }
    why
}
