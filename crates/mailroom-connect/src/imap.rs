//! IMAP: testing a mailbox's incoming side (connect, TLS or STARTTLS, LOGIN, SELECT INBOX) with
//! async-imap. Every failure says whether trying again may help: network trouble, timeouts and
//! `[UNAVAILABLE]` may pass later; rejected credentials and missing mailboxes will not.

use crate::SendError;
use async_imap::Client;
use mailroom_core::account::Security;
use mailroom_core::mailbox::refusal_is_transient;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How to reach and log in to an IMAP server.
#[derive(Clone)]
pub struct ImapSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: String,
    /// The password, or with `oauth2` the OAuth 2.0 access token.
    pub password: String,
    /// Log in with SASL XOAUTH2 (the password is an access token) instead of LOGIN.
    pub oauth2: bool,
    /// The whole test, from connecting to logging out.
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM), e.g. a company CA.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ImapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A TLS client configuration trusting the public roots and `extra` (PEM files' contents).
fn tls_connector(extra: &[Vec<u8>]) -> tokio_rustls::TlsConnector {
    let mut roots = tokio_rustls::rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for pem in extra {
        for certificate in CertificateDer::pem_slice_iter(pem).flatten() {
            let _ = roots.add(certificate);
        }
    }
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports the default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub(crate) async fn secure<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    settings: &ImapSettings,
) -> Result<tokio_rustls::client::TlsStream<S>, SendError> {
    let name = ServerName::try_from(settings.host.clone()).map_err(|_| {
        SendError::permanent(
            None,
            format!("{:?} is not a valid TLS server name", settings.host),
        )
    })?;
    tls_connector(&settings.extra_root_certificates)
        .connect(name, stream)
        .await
        .map_err(|e| {
            // A certificate the client does not trust will not be trusted on the next try either.
            let text = e.to_string();
            if text.contains("certificate") {
                SendError::permanent(
                    None,
                    format!(
                        "TLS handshake with {}:{} failed: {text}",
                        settings.host, settings.port
                    ),
                )
            } else {
                SendError::transient(
                    None,
                    format!(
                        "TLS handshake with {}:{} failed: {text}",
                        settings.host, settings.port
                    ),
                )
            }
        })
}

/// Maps an IMAP client error to a test failure, transient or permanent, at `stage`.
pub(crate) fn failure(stage: &str, error: async_imap::error::Error) -> SendError {
    let text = format!("{stage}: {error}");
    match error {
        async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)
            if !refusal_is_transient(None, &text) =>
        {
            SendError::permanent(None, text)
        }
        _ => SendError::transient(None, text),
    }
}

/// Reads the greeting; a server that greets with BYE is busy or down (transient).
pub(crate) async fn greeted<T>(client: &mut Client<T>) -> Result<(), SendError>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match client.read_response().await {
        Ok(Some(response)) => {
            let text = format!("{:?}", response.parsed());
            if text.contains("Bye") {
                Err(SendError::transient(
                    None,
                    format!("the server said goodbye at once: {text}"),
                ))
            } else {
                Ok(())
            }
        }
        Ok(None) => Err(SendError::transient(
            None,
            "the server closed the connection before greeting",
        )),
        Err(e) => Err(SendError::transient(
            None,
            format!("reading the greeting: {e}"),
        )),
    }
}

/// SASL XOAUTH2 (Google's and Microsoft's IMAP/SMTP OAuth 2.0 mechanism): `user=<name>^Aauth=Bearer
/// <token>^A^A`. After a refusal the server sends an error challenge; the empty answer ends the
/// exchange, and the server's NO follows.
struct XOAuth2<'a> {
    user: &'a str,
    token: &'a str,
    sent: bool,
}

impl async_imap::Authenticator for XOAuth2<'_> {
    type Response = String;

    fn process(&mut self, _challenge: &[u8]) -> String {
        if std::mem::replace(&mut self.sent, true) {
            String::new()
        } else {
            format!("user={}\x01auth=Bearer {}\x01\x01", self.user, self.token)
        }
    }
}

/// Logs in with the password (LOGIN) or the access token (AUTHENTICATE XOAUTH2).
pub(crate) async fn log_in<T>(
    client: Client<T>,
    settings: &ImapSettings,
) -> Result<async_imap::Session<T>, SendError>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    if settings.oauth2 {
        client
            .authenticate(
                "XOAUTH2",
                XOAuth2 {
                    user: &settings.username,
                    token: &settings.password,
                    sent: false,
                },
            )
            .await
            .map_err(|(e, _)| failure("AUTHENTICATE XOAUTH2", e))
    } else {
        client
            .login(&settings.username, &settings.password)
            .await
            .map_err(|(e, _)| failure("login", e))
    }
}

/// Logs in and selects INBOX on an open (and, as configured, secured) connection.
async fn log_in_and_select<T>(client: Client<T>, settings: &ImapSettings) -> Result<u32, SendError>
where
    T: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    let mut session = log_in(client, settings).await?;
    let inbox = session
        .select("INBOX")
        .await
        .map_err(|e| failure("SELECT INBOX", e))?;
    let _ = session.logout().await;
    Ok(inbox.exists)
}

async fn run(settings: &ImapSettings) -> Result<String, SendError> {
    let address = format!("{}:{}", settings.host, settings.port);
    let socket = TcpStream::connect(&address)
        .await
        .map_err(|e| SendError::transient(None, format!("connecting to {address}: {e}")))?;
    let _ = socket.set_nodelay(true);
    let messages = match settings.security {
        Security::Tls => {
            let mut client = Client::new(secure(socket, settings).await?);
            greeted(&mut client).await?;
            log_in_and_select(client, settings).await?
        }
        Security::Starttls => {
            let mut client = Client::new(socket);
            greeted(&mut client).await?;
            client
                .run_command_and_check_ok("STARTTLS", None)
                .await
                .map_err(|e| {
                    SendError::permanent(None, format!("the server refused STARTTLS: {e}"))
                })?;
            let client = Client::new(secure(client.into_inner(), settings).await?);
            log_in_and_select(client, settings).await?
        }
        Security::None => {
            let mut client = Client::new(socket);
            greeted(&mut client).await?;
            log_in_and_select(client, settings).await?
        }
    };
    Ok(format!(
        "connected to {address}{}, logged in as {}, INBOX holds {messages} message(s)",
        if settings.security == Security::None {
            ""
        } else {
            " with TLS"
        },
        settings.username
    ))
}

/// Connects, secures the connection as configured, logs in and selects INBOX; nothing is changed.
pub async fn test_imap(settings: &ImapSettings) -> Result<String, SendError> {
    match tokio::time::timeout(settings.timeout, run(settings)).await {
        Ok(result) => result,
        Err(_) => Err(SendError::transient(
            None,
            format!(
                "no answer from {}:{} within {:?}",
                settings.host, settings.port, settings.timeout
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FailureKind;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A scripted IMAP server: greets, then answers each tagged command with `answer(command)`.
    async fn scripted(answer: fn(&str) -> String) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let (read, mut write) = socket.into_split();
            write
                .write_all(b"* OK scripted IMAP ready\r\n")
                .await
                .unwrap();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let (tag, command) = line.split_once(' ').unwrap_or((&line, ""));
                let reply = answer(command).replace("{tag}", tag);
                if write.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        port
    }

    fn settings(port: u16) -> ImapSettings {
        ImapSettings {
            host: "127.0.0.1".into(),
            port,
            security: Security::None,
            username: "someone".into(),
            password: "secret".into(),
            oauth2: false,
            timeout: Duration::from_secs(5),
            extra_root_certificates: Vec::new(),
        }
    }

    #[tokio::test]
    async fn an_unavailable_server_is_a_transient_failure() {
        let port = scripted(|command| {
            if command.starts_with("LOGIN") {
                "{tag} NO [UNAVAILABLE] Authentication backend is down\r\n".into()
            } else {
                "{tag} OK done\r\n".into()
            }
        })
        .await;
        let error = test_imap(&settings(port)).await.unwrap_err();
        assert_eq!(error.kind, FailureKind::Transient, "{error:?}");
        assert!(error.message.contains("UNAVAILABLE"), "{}", error.message);
    }

    #[tokio::test]
    async fn a_rejected_login_is_a_permanent_failure() {
        let port = scripted(|command| {
            if command.starts_with("LOGIN") {
                "{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".into()
            } else {
                "{tag} OK done\r\n".into()
            }
        })
        .await;
        let error = test_imap(&settings(port)).await.unwrap_err();
        assert_eq!(error.kind, FailureKind::Permanent, "{error:?}");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_transient_failure() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = test_imap(&settings(port)).await.unwrap_err();
        assert_eq!(error.kind, FailureKind::Transient);
        assert!(error.message.contains("connecting to"), "{}", error.message);
    }
}
