//! The SMTP connector, on lettre's SMTP client connection.
//!
//! mailroom keeps its own small pool of open connections instead of lettre's pooled transport, so that
//! each stage is visible: connection and authentication outcomes become metrics and log events, and an
//! authentication rejection is reported as such (permanent) rather than as a generic send error.
//!
//! When the server offers PIPELINING (RFC 2920), a transaction costs two writes instead of five: MAIL,
//! every RCPT and DATA go out as one group, then the dot-stuffed content with its terminating dot as one
//! write. lettre sends each command and waits for its reply, and it writes the final dot separately;
//! mailroom still uses lettre's connection, command and reply parsing, and only groups the writes.
//!
//! Transactions are also chained: the account's concurrency limit caps open connections, and a
//! transaction that finds every connection busy waits behind one. The transaction in progress writes
//! its content and the waiting one's MAIL, RCPT and DATA together (RFC 2920 lets the content open a
//! group and DATA close it), then hands the connection over; under load each message costs one write
//! and one read.

use crate::implicit_tls::SecuredStream;
use crate::{Connector, Delivered, OutgoingMessage, SendError};
use async_trait::async_trait;
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use mailroom_core::account::Security;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

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
    /// Connections open at most, kept open for reuse (the account's concurrency limit).
    pub max_connections: usize,
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

/// An open, authenticated connection and what its server offers beyond what lettre records.
struct Session {
    connection: AsyncSmtpConnection,
    pipelining: bool,
    _open: OpenSlot,
}

/// The connections of one account: idle ones, how many are open or opening, and the transactions
/// waiting for one. Never drop a `Session` or an `OpenSlot` while holding its lock.
#[derive(Default)]
struct Pool {
    idle: Vec<IdleConnection>,
    open: usize,
    waiting: VecDeque<Waiter>,
}

/// A transaction waiting for a connection.
struct Waiter {
    /// Its MAIL, RCPT and DATA, when it may ride behind another transaction's content (plain ASCII,
    /// content small enough for one write).
    group: Option<String>,
    handoff: oneshot::Sender<Handoff>,
}

/// What a waiting transaction is given.
enum Handoff {
    /// A connection to start on.
    Fresh(Session),
    /// A connection on which its MAIL, RCPT and DATA are already written; their replies come next.
    Chained(Session),
    /// Room to open a connection of its own.
    Connect(OpenSlot),
}

/// One open (or opening) connection counted in the pool. Dropping it — the connection closed, or
/// never opened — passes the room to the first transaction still waiting.
///
/// It refers to its pool weakly: idle sessions, which the pool owns, hold their slots, and a strong
/// reference would keep a dropped connector's pool — and its idle connections — alive for ever.
struct OpenSlot {
    pool: Weak<Mutex<Pool>>,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        // The pool is gone with its connector: nobody waits for the room.
        let Some(pool_handle) = self.pool.upgrade() else {
            return;
        };
        let waiter = {
            let mut pool = pool_handle.lock().expect("pool lock");
            pool.open -= 1;
            let waiter = pool.waiting.pop_front();
            if waiter.is_some() {
                pool.open += 1;
            }
            waiter
        };
        if let Some(waiter) = waiter {
            // If it stopped waiting, the slot comes back and is dropped here, outside the lock, and
            // passes on to the next one.
            let _ = waiter.handoff.send(Handoff::Connect(OpenSlot {
                pool: self.pool.clone(),
            }));
        }
    }
}

struct IdleConnection {
    session: Session,
    idle_since: Instant,
}

/// Messages up to this size are sent with their terminating dot in one write; larger ones go through
/// lettre's streaming-free path, which avoids a second full copy of a large message.
const ONE_WRITE_LIMIT: usize = 4 * 1024 * 1024;

/// Text written to the connection exactly as it is (lettre's `command` writes any `Display`).
struct Raw<'a>(&'a str);

impl std::fmt::Display for Raw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The DATA content as it goes on the wire: a "." that starts a line is doubled (RFC 5321 4.5.2) and
/// the content ends with CRLF "." CRLF.
pub fn dot_stuffed(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 512 + 5);
    let mut rest = content;
    loop {
        if rest.first() == Some(&b'.') {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(end) => {
                out.extend_from_slice(&rest[..=end]);
                rest = &rest[end + 1..];
            }
            None => {
                out.extend_from_slice(rest);
                break;
            }
        }
    }
    if !content.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

pub struct SmtpConnector {
    settings: SmtpSettings,
    hello_name: ClientId,
    pool: Arc<Mutex<Pool>>,
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
            pool: Arc::default(),
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

    async fn connect(&self, open: OpenSlot) -> Result<Session, SendError> {
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
        // lettre does not record PIPELINING among the server's extensions; ask once per connection.
        let pipelining = match connection.command(Ehlo::new(self.hello_name.clone())).await {
            Ok(reply) => reply
                .message()
                .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING")),
            Err(error) => return Err(classify(&error, "EHLO")),
        };
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
        Ok(Session {
            connection,
            pipelining,
            _open: open,
        })
    }

    async fn open_and_secure(&self) -> Result<AsyncSmtpConnection, SendError> {
        match self.settings.security {
            Security::Tls => {
                let tls = self.tls_parameters()?;
                let socket = self.connect_tcp().await?;
                let peer = socket.peer_addr().map_err(|e| {
                    SendError::transient(None, format!("configuring the connection: {e}"))
                })?;
                let secured = tokio::time::timeout(
                    self.settings.timeout,
                    SecuredStream::handshake(socket, peer, tls),
                )
                .await
                .map_err(|_| SendError::transient(None, "the TLS handshake timed out"))?
                .map_err(|e| classify(&e, "connecting with TLS"))?;
                self.greet(Box::new(secured)).await
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

    /// Opens a TCP connection and reads the greeting.
    async fn connect_plain(&self) -> Result<AsyncSmtpConnection, SendError> {
        let socket = self.connect_tcp().await?;
        self.greet(Box::new(socket)).await
    }

    /// Reads the server's greeting on an open (and, for implicit TLS, secured) stream.
    async fn greet(
        &self,
        stream: Box<dyn lettre::transport::smtp::client::AsyncTokioStream>,
    ) -> Result<AsyncSmtpConnection, SendError> {
        tokio::time::timeout(
            self.settings.timeout,
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello_name),
        )
        .await
        .map_err(|_| SendError::transient(None, "waiting for the server greeting timed out"))?
        .map_err(|e| classify(&e, "greeting"))
    }

    /// Opens a TCP connection with Nagle's algorithm off. Without TCP_NODELAY the last segment of each
    /// message waits for the server's delayed ACK (about 40 ms per message).
    async fn connect_tcp(&self) -> Result<tokio::net::TcpStream, SendError> {
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
        Ok(stream)
    }

    /// A connection for one transaction: an idle one, a new one while the account has room, or else a
    /// place in line — behind a transaction in progress (`true`: this one's `group` is then already
    /// written) or for the next connection to come free.
    async fn checkout(&self, group: Option<&str>) -> Result<(Session, bool), SendError> {
        enum Next {
            Idle(Box<IdleConnection>),
            Open(OpenSlot),
            Wait(oneshot::Receiver<Handoff>),
        }
        loop {
            let next = {
                let mut pool = self.pool.lock().expect("pool lock");
                if let Some(idle) = pool.idle.pop() {
                    Next::Idle(Box::new(idle))
                } else if pool.open < self.settings.max_connections.max(1) {
                    pool.open += 1;
                    Next::Open(OpenSlot {
                        pool: Arc::downgrade(&self.pool),
                    })
                } else {
                    let (handoff, receiver) = oneshot::channel();
                    pool.waiting.push_back(Waiter {
                        group: group.map(str::to_owned),
                        handoff,
                    });
                    Next::Wait(receiver)
                }
            };
            match next {
                Next::Idle(idle) => {
                    let IdleConnection {
                        mut session,
                        idle_since,
                    } = *idle;
                    if !session.connection.has_broken()
                        && (idle_since.elapsed() < CHECK_IDLE_AFTER
                            || session.connection.test_connected().await)
                    {
                        return Ok((session, false));
                    }
                }
                Next::Open(slot) => return Ok((self.connect(slot).await?, false)),
                Next::Wait(receiver) => match receiver.await {
                    Ok(Handoff::Fresh(session)) => return Ok((session, false)),
                    Ok(Handoff::Chained(session)) => return Ok((session, true)),
                    Ok(Handoff::Connect(slot)) => return Ok((self.connect(slot).await?, false)),
                    // The transaction this one rode behind failed before handing over: nothing of
                    // this one was accepted, so it starts again.
                    Err(_) => {}
                },
            }
        }
    }

    /// Returns a connection after a successful transaction: to the first transaction waiting, or to
    /// the idle list.
    fn checkin(&self, session: Session) {
        if session.connection.has_broken() {
            return;
        }
        let mut session = session;
        loop {
            let waiter = {
                // One critical section, so that a transaction starting to wait now is not missed.
                let mut pool = self.pool.lock().expect("pool lock");
                match pool.waiting.pop_front() {
                    Some(waiter) => waiter,
                    None => {
                        pool.idle.push(IdleConnection {
                            session,
                            idle_since: Instant::now(),
                        });
                        return;
                    }
                }
            };
            match waiter.handoff.send(Handoff::Fresh(session)) {
                Ok(()) => return,
                Err(Handoff::Fresh(returned)) => session = returned,
                Err(_) => unreachable!("the handoff sent was Fresh"),
            }
        }
    }

    /// Counts a connection opened outside the limit (testing the account's settings).
    fn extra_slot(&self) -> OpenSlot {
        self.pool.lock().expect("pool lock").open += 1;
        OpenSlot {
            pool: Arc::downgrade(&self.pool),
        }
    }

    /// The first transaction still waiting, if it can ride behind this one's content. Only the
    /// first: taking a later one could leave one that cannot be chained (non-ASCII, very large)
    /// waiting for as long as chainable mail keeps coming.
    fn take_chainable(&self) -> Option<(String, oneshot::Sender<Handoff>)> {
        let mut pool = self.pool.lock().expect("pool lock");
        while pool
            .waiting
            .front()
            .is_some_and(|waiter| waiter.handoff.is_closed())
        {
            pool.waiting.pop_front();
        }
        pool.waiting.front()?.group.as_ref()?;
        let waiter = pool.waiting.pop_front()?;
        Some((waiter.group?, waiter.handoff))
    }

    /// MAIL (with the parameters non-ASCII addresses or content need), every RCPT and DATA.
    fn group_for(
        connection: &AsyncSmtpConnection,
        envelope: &Envelope,
        content: &str,
    ) -> Result<String, SendError> {
        let mut parameters = Vec::new();
        if !envelope_is_ascii(envelope) {
            if !connection
                .server_info()
                .supports_feature(Extension::SmtpUtfEight)
            {
                return Err(SendError::permanent(
                    None,
                    "the envelope has non-ASCII addresses but the server does not offer SMTPUTF8",
                ));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !content.is_ascii() {
            if !connection
                .server_info()
                .supports_feature(Extension::EightBitMime)
            {
                return Err(SendError::permanent(
                    None,
                    "the message has 8-bit content but the server does not offer 8BITMIME",
                ));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        Ok(group_with(envelope, parameters))
    }

    /// Reads the replies to a group — MAIL, each RCPT, DATA — in order. `written` is the result of
    /// the write that carried the group (it read the MAIL reply), or `None` when another transaction
    /// wrote it. A network failure ends the transaction at once; a refusal is remembered and the
    /// remaining replies are still read, so that the connection stays in step.
    async fn group_replies(
        connection: &mut AsyncSmtpConnection,
        recipients: usize,
        mut written: Option<Result<Response, lettre::transport::smtp::Error>>,
    ) -> Result<(), SendError> {
        let mut first_error = None;
        for reply in 0..recipients + 2 {
            let result = match written.take() {
                Some(result) => result,
                None => connection.read_response().await,
            };
            match result {
                Ok(_) => {}
                Err(error) if !error.is_response() => return Err(classify(&error, "sending")),
                Err(error) => {
                    let stage = match reply {
                        0 => "MAIL FROM",
                        n if n <= recipients => "RCPT TO",
                        _ => "DATA",
                    };
                    first_error.get_or_insert_with(|| classify(&error, stage));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Writes the dot-stuffed content and reads its reply. When a transaction waits for a connection
    /// and may ride behind this one, its group goes out in the same write, and it is returned so that
    /// the connection can be handed to it.
    async fn send_content(
        &self,
        session: &mut Session,
        content: &str,
    ) -> (
        Result<Response, SendError>,
        Option<oneshot::Sender<Handoff>>,
    ) {
        let next = session.pipelining.then(|| self.take_chainable()).flatten();
        let result = match &next {
            Some((group, _)) => {
                metrics::counter!("mailroom_smtp_chained_transactions_total", "account" => self.settings.account_label.clone())
                    .increment(1);
                let mut both = String::with_capacity(content.len() + group.len());
                both.push_str(content);
                both.push_str(group);
                session.connection.command(Raw(&both)).await
            }
            None => session.connection.command(Raw(content)).await,
        };
        (
            result.map_err(|e| classify(&e, "sending")),
            next.map(|(_, handoff)| handoff),
        )
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
        let stuffed = (message.bytes.len() <= ONE_WRITE_LIMIT)
            .then(|| String::from_utf8(dot_stuffed(&message.bytes)).ok())
            .flatten();
        // Plain ASCII needs no MAIL parameters, so the group can be written on any connection.
        let chainable = stuffed
            .as_deref()
            .filter(|content| content.is_ascii() && envelope_is_ascii(&envelope))
            .map(|_| group_with(&envelope, Vec::new()));
        let (mut session, chained) = self.checkout(chainable.as_deref()).await?;
        let recipients = envelope.to().len();
        let (result, next) = match (&stuffed, chained) {
            (Some(content), true) => {
                match Self::group_replies(&mut session.connection, recipients, None).await {
                    Ok(()) => self.send_content(&mut session, content).await,
                    Err(error) => (Err(error), None),
                }
            }
            (Some(content), false) if session.pipelining => {
                let accepted = match Self::group_for(&session.connection, &envelope, content) {
                    Ok(group) => {
                        let written = session.connection.command(Raw(&group)).await;
                        Self::group_replies(&mut session.connection, recipients, Some(written))
                            .await
                    }
                    Err(error) => Err(error),
                };
                match accepted {
                    Ok(()) => self.send_content(&mut session, content).await,
                    Err(error) => (Err(error), None),
                }
            }
            _ => (
                session
                    .connection
                    .send(&envelope, &message.bytes)
                    .await
                    .map_err(|e| classify(&e, "sending")),
                None,
            ),
        };
        match result {
            Ok(response) => {
                let delivered = Delivered {
                    reply_code: Some(u16::from(response.code())),
                    reply_text: reply_text(&response),
                };
                match next {
                    Some(handoff) => {
                        if let Err(Handoff::Chained(mut session)) =
                            handoff.send(Handoff::Chained(session))
                        {
                            // It stopped waiting after its group went out: the connection is in
                            // the middle of its transaction. Closing it delivers nothing of it.
                            session.connection.abort().await;
                        }
                    }
                    None => self.checkin(session),
                }
                Ok(delivered)
            }
            Err(error) => {
                // A failed transaction leaves the connection in an unknown state: close it. A
                // transaction chained behind this one learns that it must start again.
                session.connection.abort().await;
                drop(next);
                Err(error)
            }
        }
    }
}

fn envelope_is_ascii(envelope: &Envelope) -> bool {
    envelope
        .from()
        .into_iter()
        .chain(envelope.to())
        .all(|address| AsRef::<str>::as_ref(address).is_ascii())
}

/// MAIL with `parameters`, every RCPT and DATA, as one group of commands.
fn group_with(envelope: &Envelope, parameters: Vec<MailParameter>) -> String {
    let mut group = String::with_capacity(128);
    let _ = write!(group, "{}", Mail::new(envelope.from().cloned(), parameters));
    for recipient in envelope.to() {
        let _ = write!(group, "{}", Rcpt::new(recipient.clone(), vec![]));
    }
    group.push_str("DATA\r\n");
    group
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
        let Session { mut connection, .. } =
            tokio::time::timeout(self.settings.timeout * 2, self.connect(self.extra_slot()))
                .await
                .map_err(|_| SendError::transient(None, "connecting timed out"))??;
        // lettre sees an implicit-TLS connection's secured stream as its plain transport.
        let encrypted = connection.is_encrypted() || self.settings.security == Security::Tls;
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

#[cfg(test)]
mod tests {
    use super::*;
    use mailroom_core::address::EmailAddress;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[test]
    fn dot_stuffing_doubles_a_leading_dot_and_ends_with_a_lone_dot() {
        assert_eq!(
            dot_stuffed(b".first\r\nmiddle.\r\n.\r\n..two\r\n"),
            b"..first\r\nmiddle.\r\n..\r\n...two\r\n.\r\n"
        );
        assert_eq!(dot_stuffed(b"no line end"), b"no line end\r\n.\r\n");
    }

    /// Reads from `socket` until `buffer` ends with `end`.
    async fn read_until(socket: &mut tokio::net::TcpStream, buffer: &mut Vec<u8>, end: &[u8]) {
        while !buffer.ends_with(end) {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the client closed the connection early");
            buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// A server that offers PIPELINING answers MAIL, RCPT and DATA only once all three have arrived: a
    /// client that waited for each reply would stall here until the test's timeout.
    #[tokio::test]
    async fn with_pipelining_mail_rcpt_and_data_go_out_together_and_the_content_in_one_piece() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            greet(&mut socket).await;
            one_transaction(&mut socket, b"250 2.0.0 Ok: queued as 4711\r\n").await
        });
        let connector = one_connection(port);
        let message = to_buyer(b"Subject: dots\r\n\r\n.\r\n.leading\r\nend\r\n");
        let delivered = tokio::time::timeout(Duration::from_secs(10), connector.send(&message))
            .await
            .expect("the client waited for a reply the server only sends after DATA")
            .unwrap();
        assert_eq!(delivered.reply_code, Some(250));
        assert!(delivered.reply_text.contains("queued as 4711"));
        let (group, content) = server.await.unwrap();
        assert_eq!(
            group,
            "MAIL FROM:<sales@example.com>\r\nRCPT TO:<buyer@example.com>\r\nDATA\r\n"
        );
        assert_eq!(
            content,
            "Subject: dots\r\n\r\n..\r\n..leading\r\nend\r\n.\r\n"
        );
    }

    /// With one connection allowed and a second transaction waiting, the first writes its content and
    /// the second's MAIL, RCPT and DATA together, and the second carries on on the same connection.
    /// The server answers the first content only once the second's DATA has arrived: a client that
    /// waited for that answer first would stall until the test's timeout.
    #[tokio::test]
    async fn a_waiting_transaction_rides_behind_the_content_of_the_one_in_progress() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (first_group_arrived, group_seen) = tokio::sync::oneshot::channel();
        let (go_on, go) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut socket, content_and_next) =
                first_content_and_next_group(&listener, first_group_arrived, go).await;
            socket
                .write_all(b"250 queued as 1\r\n250 Ok\r\n250 Ok\r\n354 go ahead\r\n")
                .await
                .unwrap();
            let mut second_content = Vec::new();
            read_until(&mut socket, &mut second_content, b"\r\n.\r\n").await;
            socket.write_all(b"250 queued as 2\r\n").await.unwrap();
            String::from_utf8(content_and_next).unwrap()
        });
        let (connector, first, second) =
            send_two_with_the_second_waiting(port, group_seen, go_on).await;
        let limit = Duration::from_secs(10);
        let first = tokio::time::timeout(limit, first)
            .await
            .expect("the first content waited for its reply before the second group went out")
            .unwrap()
            .unwrap();
        let second = tokio::time::timeout(limit, second)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(first.reply_text.contains("queued as 1"), "{first:?}");
        assert!(second.reply_text.contains("queued as 2"), "{second:?}");
        assert_eq!(
            server.await.unwrap(),
            "Subject: 1\r\n\r\nbody 1\r\n.\r\nMAIL FROM:<sales@example.com>\r\nRCPT TO:<buyer2@example.com>\r\nDATA\r\n"
        );
        assert_eq!(connector.pool.lock().unwrap().open, 1);
    }

    #[tokio::test]
    async fn a_dropped_connector_closes_its_idle_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sent, after_send) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            greet(&mut socket).await;
            one_transaction(&mut socket, b"250 2.0.0 Ok\r\n").await;
            // The connection now waits idle in the pool; once the connector is gone the client
            // end must close (or say QUIT), not stay open until this server times it out.
            after_send.await.unwrap();
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut rest))
                .await
                .expect("the idle connection stayed open after its connector was dropped")
                .unwrap();
        });
        let connector = one_connection(port);
        connector
            .send(&to_buyer(b"Subject: idle\r\n\r\nbody\r\n"))
            .await
            .unwrap();
        assert_eq!(connector.pool.lock().unwrap().idle.len(), 1);
        drop(connector);
        sent.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn the_socket_under_every_connection_has_nagles_algorithm_off() {
        // Plain, STARTTLS and implicit TLS connections all start from `connect_tcp`; that implicit
        // TLS still delivers through it is proven against Postfix (tests/smtp_auth.rs).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connector = one_connection(listener.local_addr().unwrap().port());
        let socket = connector.connect_tcp().await.unwrap();
        assert!(socket.nodelay().unwrap());
    }

    /// A connector to the scripted server on `port`, allowed one connection.
    fn one_connection(port: u16) -> SmtpConnector {
        SmtpConnector::new(SmtpSettings {
            account_label: "test".into(),
            host: "127.0.0.1".into(),
            port,
            security: Security::None,
            username: None,
            password: None,
            max_connections: 1,
            timeout: Duration::from_secs(5),
            extra_root_certificates: Vec::new(),
        })
    }

    type Sending = tokio::task::JoinHandle<Result<Delivered, SendError>>;

    /// Starts sending message 1 over one connection; once the server has its MAIL/RCPT/DATA
    /// (`group_seen`), starts message 2, and once that one waits for the connection lets the server go
    /// on.
    async fn send_two_with_the_second_waiting(
        port: u16,
        group_seen: tokio::sync::oneshot::Receiver<()>,
        go_on: tokio::sync::oneshot::Sender<()>,
    ) -> (Arc<SmtpConnector>, Sending, Sending) {
        let connector = Arc::new(one_connection(port));
        let message = |n: u32| OutgoingMessage {
            envelope_from: EmailAddress::parse("sales@example.com").unwrap(),
            recipients: vec![EmailAddress::parse(&format!("buyer{n}@example.com")).unwrap()],
            bytes: Arc::new(format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes()),
            message_id: format!("<{n}@example.com>"),
        };
        let first = tokio::spawn({
            let connector = connector.clone();
            async move { connector.send(&message(1)).await }
        });
        group_seen.await.unwrap();
        let second = tokio::spawn({
            let connector = connector.clone();
            async move { connector.send(&message(2)).await }
        });
        while connector.pool.lock().unwrap().waiting.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        go_on.send(()).unwrap();
        (connector, first, second)
    }

    /// The server side of the first transaction up to its content: it signals once the first group
    /// has arrived, answers it when told to go on, and returns what came with the content — up to
    /// the next group's DATA.
    async fn first_content_and_next_group(
        listener: &TcpListener,
        group_arrived: tokio::sync::oneshot::Sender<()>,
        go: tokio::sync::oneshot::Receiver<()>,
    ) -> (tokio::net::TcpStream, Vec<u8>) {
        let (mut socket, _) = listener.accept().await.unwrap();
        greet(&mut socket).await;
        let mut group = Vec::new();
        read_until(&mut socket, &mut group, b"DATA\r\n").await;
        group_arrived.send(()).unwrap();
        go.await.unwrap();
        socket
            .write_all(b"250 Ok\r\n250 Ok\r\n354 go ahead\r\n")
            .await
            .unwrap();
        let mut content_and_next = Vec::new();
        read_until(&mut socket, &mut content_and_next, b"DATA\r\n").await;
        (socket, content_and_next)
    }

    /// Plays the server's side of one pipelined transaction: accepts MAIL, RCPT and DATA once all
    /// have arrived, reads the content and answers it with `reply`. Returns the group and the content.
    async fn one_transaction(socket: &mut tokio::net::TcpStream, reply: &[u8]) -> (String, String) {
        let mut group = Vec::new();
        read_until(socket, &mut group, b"DATA\r\n").await;
        socket
            .write_all(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
            .await
            .unwrap();
        let mut content = Vec::new();
        read_until(socket, &mut content, b"\r\n.\r\n").await;
        socket.write_all(reply).await.unwrap();
        (
            String::from_utf8(group).unwrap(),
            String::from_utf8(content).unwrap(),
        )
    }

    /// A message from sales@ to buyer@example.com with these bytes.
    fn to_buyer(bytes: &[u8]) -> OutgoingMessage {
        OutgoingMessage {
            envelope_from: EmailAddress::parse("sales@example.com").unwrap(),
            recipients: vec![EmailAddress::parse("buyer@example.com").unwrap()],
            bytes: Arc::new(bytes.to_vec()),
            message_id: "<1@example.com>".into(),
        }
    }

    /// Greets and answers both EHLOs of a new connection (lettre's, then the connector's own).
    async fn greet(socket: &mut tokio::net::TcpStream) {
        socket.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
        for _ in 0..2 {
            let mut hello = Vec::new();
            read_until(socket, &mut hello, b"\r\n").await;
            assert!(hello.starts_with(b"EHLO "));
            socket
                .write_all(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                .await
                .unwrap();
        }
    }

    /// When the transaction in front is refused, the one chained behind it was not accepted either:
    /// it starts again on a new connection and is delivered.
    #[tokio::test]
    async fn a_transaction_chained_behind_a_refused_one_starts_again_on_a_new_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (first_group_arrived, group_seen) = tokio::sync::oneshot::channel();
        let (go_on, go) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut socket, content_and_next) =
                first_content_and_next_group(&listener, first_group_arrived, go).await;
            assert!(
                content_and_next.ends_with(b"\r\n.\r\nMAIL FROM:<sales@example.com>\r\nRCPT TO:<buyer2@example.com>\r\nDATA\r\n"),
                "the second transaction was not chained behind the first"
            );
            socket
                .write_all(b"554 5.7.1 content refused\r\n")
                .await
                .unwrap();
            drop(socket);
            let (mut socket, _) = listener.accept().await.unwrap();
            greet(&mut socket).await;
            one_transaction(&mut socket, b"250 queued as 2\r\n").await
        });
        let (connector, first, second) =
            send_two_with_the_second_waiting(port, group_seen, go_on).await;
        let limit = Duration::from_secs(10);
        let refused = tokio::time::timeout(limit, first)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (refused.kind, refused.reply_code),
            (crate::FailureKind::Permanent, Some(554))
        );
        let delivered = tokio::time::timeout(limit, second)
            .await
            .expect("the chained transaction never started again")
            .unwrap()
            .unwrap();
        assert!(
            delivered.reply_text.contains("queued as 2"),
            "{delivered:?}"
        );
        let (group, content) = server.await.unwrap();
        assert_eq!(
            group,
            "MAIL FROM:<sales@example.com>\r\nRCPT TO:<buyer2@example.com>\r\nDATA\r\n"
        );
        assert_eq!(content, "Subject: 2\r\n\r\nbody 2\r\n.\r\n");
        assert_eq!(connector.pool.lock().unwrap().open, 1);
    }
}
