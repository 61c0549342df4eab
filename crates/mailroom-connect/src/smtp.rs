//! The SMTP connector, on lettre's SMTP client connection.
//!
//! mailroom keeps its own small pool of open connections instead of lettre's pooled transport, so that
//! each stage is visible: connection and authentication outcomes become metrics and log events, and an
//! authentication rejection is reported as such (permanent) rather than as a generic send error.

use crate::{Connector, Delivered, OutgoingMessage, SendError};
use async_trait::async_trait;
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use mailroom_core::account::Security;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How to reach and log in to an SMTP server.
#[derive(Clone)]
pub struct SmtpSettings {
    /// Names the account in metrics and logs.
    pub account_label: String,
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Connections kept open for reuse (the account's concurrency limit).
    pub max_idle_connections: usize,
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM), e.g. a company CA.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

struct IdleConnection {
    connection: AsyncSmtpConnection,
    idle_since: Instant,
}

pub struct SmtpConnector {
    settings: SmtpSettings,
    hello_name: ClientId,
    idle: Mutex<Vec<IdleConnection>>,
}

/// A reused connection idle longer than this is checked with NOOP before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

fn reply_text(response: &lettre::transport::smtp::response::Response) -> String {
    response.message().collect::<Vec<_>>().join(" ")
}

/// Classifies a lettre error: 4xx replies, timeouts and network trouble are transient; 5xx replies and
/// client-side refusals (nothing a retry can change) are permanent.
fn classify(error: &lettre::transport::smtp::Error, stage: &str) -> SendError {
    let code = error.status().map(u16::from);
    let text = format!("{stage}: {error}");
    match code {
        Some(code) if code >= 500 => SendError::permanent(Some(code), text),
        Some(code) => SendError::transient(Some(code), text),
        None if error.is_permanent() || error.is_client() => SendError::permanent(None, text),
        None => SendError::transient(None, text),
    }
}

fn count(name: &'static str, account: &str, result: &'static str) {
    metrics::counter!(name, "account" => account.to_owned(), "result" => result).increment(1);
}

impl SmtpConnector {
    pub fn new(settings: SmtpSettings) -> Self {
        Self {
            settings,
            hello_name: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn tls_parameters(&self) -> Result<TlsParameters, SendError> {
        let mut builder = TlsParameters::builder(self.settings.host.clone());
        for pem in &self.settings.extra_root_certificates {
            let certificate = Certificate::from_pem(pem).map_err(|e| {
                SendError::permanent(None, format!("invalid root certificate: {e}"))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        builder
            .build_rustls()
            .map_err(|e| SendError::permanent(None, format!("TLS setup failed: {e}")))
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let account = &self.settings.account_label;
        let result = self.open_and_secure().await;
        match &result {
            Ok(_) => count("mailroom_smtp_connections_total", account, "succeeded"),
            Err(error) => {
                count("mailroom_smtp_connections_total", account, "failed");
                tracing::warn!(event = "smtp_connection_failed", account = %account, host = %self.settings.host, port = self.settings.port, error = %error, "SMTP connection failed");
            }
        }
        let mut connection = result?;
        if let (Some(username), Some(password)) = (&self.settings.username, &self.settings.password)
        {
            let credentials = Credentials::new(username.clone(), password.clone());
            match connection
                .auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
            {
                Ok(_) => count("mailroom_smtp_authentications_total", account, "succeeded"),
                Err(error) => {
                    count("mailroom_smtp_authentications_total", account, "failed");
                    tracing::warn!(event = "smtp_authentication_failed", account = %account, username = %username, error = %error, "SMTP authentication failed");
                    connection.abort().await;
                    let mut failure = classify(&error, "authentication rejected");
                    if failure.reply_code.is_none_or(|c| c == 535 || c >= 500) {
                        failure.kind = crate::FailureKind::Permanent;
                    }
                    return Err(failure);
                }
            }
        }
        Ok(connection)
    }

    async fn open_and_secure(&self) -> Result<AsyncSmtpConnection, SendError> {
        let server = (self.settings.host.as_str(), self.settings.port);
        let timeout = Some(self.settings.timeout);
        match self.settings.security {
            Security::Tls => {
                let tls = self.tls_parameters()?;
                AsyncSmtpConnection::connect_tokio1(
                    server,
                    timeout,
                    &self.hello_name,
                    Some(tls),
                    None,
                )
                .await
                .map_err(|e| classify(&e, "connecting with TLS"))
            }
            Security::Starttls => {
                let mut connection = self.connect_plain().await?;
                if !connection.can_starttls() {
                    connection.abort().await;
                    return Err(SendError::permanent(
                        None,
                        "the server does not offer STARTTLS; choose security \"none\" or \"tls\"",
                    ));
                }
                connection
                    .starttls(self.tls_parameters()?, &self.hello_name)
                    .await
                    .map_err(|e| classify(&e, "STARTTLS"))?;
                Ok(connection)
            }
            Security::None => self.connect_plain().await,
        }
    }

    /// Opens a TCP connection with Nagle's algorithm off and reads the greeting. Without TCP_NODELAY the
    /// final "." of each message waits for the server's delayed ACK (about 40 ms per message).
    async fn connect_plain(&self) -> Result<AsyncSmtpConnection, SendError> {
        let address = (self.settings.host.as_str(), self.settings.port);
        let stream = tokio::time::timeout(
            self.settings.timeout,
            tokio::net::TcpStream::connect(address),
        )
        .await
        .map_err(|_| {
            SendError::transient(
                None,
                format!(
                    "connecting: timed out after {} s",
                    self.settings.timeout.as_secs()
                ),
            )
        })?
        .map_err(|e| {
            SendError::transient(
                None,
                format!(
                    "connecting to {}:{}: {e}",
                    self.settings.host, self.settings.port
                ),
            )
        })?;
        stream
            .set_nodelay(true)
            .map_err(|e| SendError::transient(None, format!("configuring the connection: {e}")))?;
        tokio::time::timeout(
            self.settings.timeout,
            AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello_name),
        )
        .await
        .map_err(|_| SendError::transient(None, "waiting for the server greeting timed out"))?
        .map_err(|e| classify(&e, "greeting"))
    }

    async fn checkout(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let candidate = self.idle.lock().expect("pool lock").pop();
            let Some(IdleConnection {
                mut connection,
                idle_since,
            }) = candidate
            else {
                return self.connect().await;
            };
            if connection.has_broken() {
                continue;
            }
            if idle_since.elapsed() < CHECK_IDLE_AFTER || connection.test_connected().await {
                return Ok(connection);
            }
        }
    }

    fn checkin(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.settings.max_idle_connections.max(1) {
            idle.push(IdleConnection {
                connection,
                idle_since: Instant::now(),
            });
        }
    }

    async fn send_once(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let from = Address::from_str(message.envelope_from.as_str()).map_err(|e| {
            SendError::permanent(
                None,
                format!("invalid sender {}: {e}", message.envelope_from),
            )
        })?;
        let recipients = message
            .recipients
            .iter()
            .map(|r| {
                Address::from_str(r.as_str())
                    .map_err(|e| SendError::permanent(None, format!("invalid recipient {r}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(Some(from), recipients)
            .map_err(|e| SendError::permanent(None, format!("invalid envelope: {e}")))?;
        let mut connection = self.checkout().await?;
        match connection.send(&envelope, &message.bytes).await {
            Ok(response) => {
                let delivered = Delivered {
                    reply_code: Some(u16::from(response.code())),
                    reply_text: reply_text(&response),
                };
                self.checkin(connection);
                Ok(delivered)
            }
            Err(error) => Err(classify(&error, "sending")),
        }
    }
}

#[async_trait]
impl Connector for SmtpConnector {
    fn describe(&self) -> String {
        format!(
            "SMTP {}:{} ({})",
            self.settings.host, self.settings.port, self.settings.security
        )
    }

    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        // Large messages get more time: a minute plus one second per 100 KiB.
        let budget =
            self.settings.timeout + Duration::from_secs(60 + message.bytes.len() as u64 / 102_400);
        match tokio::time::timeout(budget, self.send_once(message)).await {
            Ok(result) => result,
            Err(_) => Err(SendError::transient(
                None,
                format!(
                    "the SMTP transaction timed out after {} s",
                    budget.as_secs()
                ),
            )),
        }
    }

    async fn test_connection(&self) -> Result<String, SendError> {
        let mut connection = tokio::time::timeout(self.settings.timeout * 2, self.connect())
            .await
            .map_err(|_| SendError::transient(None, "connecting timed out"))??;
        let encrypted = connection.is_encrypted();
        let _ = connection.quit().await;
        Ok(format!(
            "connected to {}:{}{}{}",
            self.settings.host,
            self.settings.port,
            if encrypted { " with TLS" } else { "" },
            if self.settings.username.is_some() {
                ", authentication accepted"
            } else {
                ""
            }
        ))
    }
}
