//! The SMTP connector, on lettre's SMTP client connection.
//!
//! mailroom keeps its own small pool of open connections instead of lettre's pooled transport, so that
//! each stage is visible: connection and authentication outcomes become metrics and log events, and an
//! authentication rejection is reported as such (permanent) rather than as a generic send error.
//!
//! Every stage has its own timeout (connect, greeting, each command, the reply to the final "."; see
//! `SmtpTimeouts`), the same for a connection test and a send, and every failure names its stage:
//! `connecting`, `greeting`, `EHLO`, `STARTTLS`, `AUTH`, `MAIL FROM`, `RCPT TO <address>`, `DATA`,
//! `end of data`. A connection lost or timed out after the final "." leaves the outcome unknown:
//! the server may have accepted the message (`FailureKind::Unknown`).
//!
//! When the server offers PIPELINING (RFC 2920), a transaction costs two writes instead of five: MAIL,
//! every RCPT and DATA go out as one group, then the dot-stuffed content with its terminating dot as one
//! write. lettre sends each command and waits for its reply, and it writes the final dot separately;
//! mailroom still uses lettre's connection, command and reply parsing, and only groups the writes.
//!
//! Transactions are not chained across the final ".": writing the next message's MAIL, RCPT and DATA
//! behind it let servers that flush their replies per batch hold the "250" of the message in front
//! until the next DATA was answered, which widened the window in which a crash re-sends a message the
//! server already had (see README, "Benchmarks → Chaining transactions").

use crate::implicit_tls::SecuredStream;
use crate::{Connector, Delivered, OutgoingMessage, SendError};
use async_trait::async_trait;
use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Ehlo, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;
use mailroom_core::account::{Security, SmtpTimeouts};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
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
    /// The password, or with `oauth2` the OAuth 2.0 access token.
    pub password: Option<String>,
    /// Authenticate with SASL XOAUTH2 (the password is an access token) instead of PLAIN/LOGIN.
    pub oauth2: bool,
    /// Connections open at most, kept open for reuse (the account's concurrency limit).
    pub max_connections: usize,
    /// How long to wait at each stage.
    pub timeouts: SmtpTimeouts,
    /// The name given in EHLO.
    pub ehlo_name: String,
    /// Extra trusted root certificates (PEM), e.g. a company CA.
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// Places for open connections shared with other nodes (the account's concurrency limit for
    /// all of them together); `None` when this process is the only one sending.
    pub gate: Option<Arc<dyn SessionGate>>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("gate", &self.gate.is_some())
            .finish()
    }
}

/// A place for one open connection among every node sharing an account; held while the connection
/// is open, given back when it is dropped.
pub type SessionPermit = Box<dyn std::any::Any + Send + Sync>;

/// Limits the connections of an account open on every node together.
#[async_trait::async_trait]
pub trait SessionGate: Send + Sync {
    /// Waits for a place for one more open connection.
    async fn acquire(&self) -> Result<SessionPermit, SendError>;
    /// How long a connection may stay idle before it is closed, giving its place to another node.
    fn idle_close(&self) -> Duration;
    /// How many connections this node should open at most (its share of the places): beyond it,
    /// transactions wait for one of this node's connections instead of for a place.
    fn share(&self) -> usize;
}

/// An open, authenticated connection and what its server offers beyond what lettre records.
struct Session {
    connection: AsyncSmtpConnection,
    pipelining: bool,
    _open: OpenSlot,
    /// Dropped after the connection (fields drop in order).
    _place: Option<SessionPermit>,
}

/// The connections of one account: idle ones, how many are open or opening, and the transactions
/// waiting for one. Never drop a `Session` or an `OpenSlot` while holding its lock.
#[derive(Default)]
struct Pool {
    idle: Vec<IdleConnection>,
    open: usize,
    waiting: VecDeque<oneshot::Sender<Handoff>>,
    /// The most connections this node may have open, as last read ([`SmtpConnector::most_open`];
    /// 0 until then). Above it — this node's share of the account's places shrank because another
    /// node started — a connection coming free is closed rather than reused or replaced, so that
    /// its place goes to the node that needs it.
    most: usize,
}

impl Pool {
    /// More open than this node's share: a connection coming free is closed.
    fn above_share(&self) -> bool {
        self.most > 0 && self.open > self.most
    }

    /// Below this node's share (or no share known): room for one more connection.
    fn below_share(&self) -> bool {
        self.most == 0 || self.open < self.most
    }
}

/// What a waiting transaction is given.
enum Handoff {
    /// A connection to start on.
    Fresh(Box<Session>),
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
            // Still at or above this node's share: the waiting transactions get the connections
            // checked in, not room for another.
            if !pool.below_share() {
                return;
            }
            let waiter = pool.waiting.pop_front();
            if waiter.is_some() {
                pool.open += 1;
            }
            waiter
        };
        if let Some(waiter) = waiter {
            // If it stopped waiting, the slot comes back and is dropped here, outside the lock, and
            // passes on to the next one.
            let _ = waiter.send(Handoff::Connect(OpenSlot {
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
/// lettre's content writer, which avoids a second full copy of a large message.
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

/// Closes connections idle for longer than `after` (with QUIT), until the pool is gone: with the
/// places shared among nodes, an idle connection must not keep its place from a node with mail.
async fn close_idle_connections(pool: Weak<Mutex<Pool>>, after: Duration) {
    let period = (after / 2).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(period).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let stale: Vec<IdleConnection> = {
            let mut pool = pool.lock().expect("pool lock");
            let (stale, fresh) = std::mem::take(&mut pool.idle)
                .into_iter()
                .partition(|idle| idle.idle_since.elapsed() >= after);
            pool.idle = fresh;
            stale
        };
        drop(pool);
        for mut idle in stale {
            let _ =
                tokio::time::timeout(Duration::from_secs(2), idle.session.connection.quit()).await;
        }
    }
}

/// A reused connection idle longer than this is checked with NOOP before use.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

fn reply_text(response: &lettre::transport::smtp::response::Response) -> String {
    response.message().collect::<Vec<_>>().join(" ")
}

/// Classifies a lettre error at `stage`: 4xx replies, timeouts and network trouble are transient; 5xx
/// replies and client-side refusals (nothing a retry can change) are permanent.
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

/// Classifies the outcome of the final ".": a reply with a code is what the server decided; anything
/// else (the connection lost, a garbled reply, no reply in time) leaves the outcome unknown, since
/// the server may have received the whole message and accepted it.
fn classify_end_of_data(error: &lettre::transport::smtp::Error) -> SendError {
    if error.status().is_some() {
        return classify(error, "end of data");
    }
    SendError::unknown(format!(
        "end of data: the connection failed after the whole message was sent ({error}); the server may have accepted it"
    ))
}

/// Waits at most `seconds` for `step`, naming `stage` on a timeout.
async fn within<T>(
    seconds: u32,
    stage: &str,
    step: impl Future<Output = Result<T, SendError>>,
) -> Result<T, SendError> {
    tokio::time::timeout(Duration::from_secs(u64::from(seconds)), step)
        .await
        .unwrap_or_else(|_| {
            Err(SendError::transient(
                None,
                format!("{stage}: no answer within {seconds} s"),
            ))
        })
}

/// Whether a TLS failure looks like a server that does not speak TLS at all on this port.
fn looks_like_plain_text_port(error: &lettre::transport::smtp::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(current) = source {
        let text = current.to_string().to_ascii_lowercase();
        if text.contains("corrupt message") || text.contains("invalidcontenttype") {
            return true;
        }
        source = current.source();
    }
    false
}

fn count(name: &'static str, account: &str, result: &'static str) {
    metrics::counter!(name, "account" => account.to_owned(), "result" => result).increment(1);
}

impl SmtpConnector {
    pub fn new(settings: SmtpSettings) -> Self {
        let hello_name = ClientId::Domain(settings.ehlo_name.clone());
        let pool: Arc<Mutex<Pool>> = Arc::default();
        if let Some(gate) = &settings.gate
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(close_idle_connections(
                Arc::downgrade(&pool),
                gate.idle_close(),
            ));
        }
        Self {
            settings,
            hello_name,
            pool,
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
        let place = match &self.settings.gate {
            Some(gate) => Some(gate.acquire().await?),
            None => None,
        };
        let result = self.open_and_secure().await;
        match &result {
            Ok(_) => count("mailroom_smtp_connections_total", account, "succeeded"),
            Err(error) => {
                count("mailroom_smtp_connections_total", account, "failed");
                tracing::warn!(event = "smtp_connection_failed", account = %account, host = %self.settings.host, port = self.settings.port, error = %error, "SMTP connection failed");
            }
        }
        let mut connection = result?;
        let command_s = self.settings.timeouts.command_s;
        // lettre does not record PIPELINING among the server's extensions; ask once per connection.
        let pipelining = within(command_s, "EHLO", async {
            connection
                .command(Ehlo::new(self.hello_name.clone()))
                .await
                .map_err(|error| classify(&error, "EHLO"))
        })
        .await?
        .message()
        .any(|line| line.trim().eq_ignore_ascii_case("PIPELINING"));
        if let (Some(username), Some(password)) = (&self.settings.username, &self.settings.password)
        {
            let credentials = Credentials::new(username.clone(), password.clone());
            let authenticated = within(command_s, "AUTH", async {
                connection
                    .auth(
                        if self.settings.oauth2 {
                            &[Mechanism::Xoauth2]
                        } else {
                            &[Mechanism::Plain, Mechanism::Login]
                        },
                        &credentials,
                    )
                    .await
                    .map_err(|error| {
                        let mut failure = classify(&error, "AUTH: authentication rejected");
                        if failure.reply_code.is_none_or(|c| c == 535 || c >= 500) {
                            failure.kind = crate::FailureKind::Permanent;
                        }
                        failure
                    })
            })
            .await;
            match authenticated {
                Ok(_) => count("mailroom_smtp_authentications_total", account, "succeeded"),
                Err(failure) => {
                    count("mailroom_smtp_authentications_total", account, "failed");
                    tracing::warn!(event = "smtp_authentication_failed", account = %account, username = %username, error = %failure, "SMTP authentication failed");
                    self.close(&mut connection).await;
                    return Err(failure);
                }
            }
        }
        Ok(Session {
            connection,
            pipelining,
            _open: open,
            _place: place,
        })
    }

    async fn open_and_secure(&self) -> Result<AsyncSmtpConnection, SendError> {
        let timeouts = self.settings.timeouts;
        match self.settings.security {
            Security::Tls => {
                let tls = self.tls_parameters()?;
                let socket = self.connect_tcp().await?;
                let peer = socket.peer_addr().map_err(|e| {
                    SendError::transient(None, format!("connecting: configuring the socket: {e}"))
                })?;
                let secured = within(timeouts.connect_s, "connecting: TLS handshake", async {
                    SecuredStream::handshake(socket, peer, tls)
                        .await
                        .map_err(|e| {
                            if looks_like_plain_text_port(&e) {
                                SendError::permanent(
                                    None,
                                    format!(
                                        "connecting: the server at {}:{} does not speak TLS on connect; it is probably a \
                                         plain or STARTTLS port: choose security \"starttls\" (usually port 587) or \
                                         \"none\", or the implicit-TLS port (usually 465)",
                                        self.settings.host, self.settings.port
                                    ),
                                )
                            } else {
                                classify(&e, "connecting: TLS handshake")
                            }
                        })
                })
                .await?;
                self.greet(Box::new(secured)).await
            }
            Security::Starttls => {
                let mut connection = self.connect_plain().await?;
                if !connection.can_starttls() {
                    self.close(&mut connection).await;
                    return Err(SendError::permanent(
                        None,
                        "STARTTLS: the server does not offer STARTTLS; choose security \"none\" or \"tls\"",
                    ));
                }
                let tls = self.tls_parameters()?;
                within(timeouts.command_s, "STARTTLS", async {
                    connection
                        .starttls(tls, &self.hello_name)
                        .await
                        .map_err(|e| classify(&e, "STARTTLS"))
                })
                .await?;
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
        let seconds = self.settings.timeouts.greeting_s;
        let greeted = tokio::time::timeout(
            Duration::from_secs(u64::from(seconds)),
            AsyncSmtpConnection::connect_with_transport(stream, &self.hello_name),
        )
        .await;
        match greeted {
            Ok(connected) => connected.map_err(|e| classify(&e, "greeting")),
            Err(_) => {
                // A server waiting for a TLS ClientHello says nothing: the usual cause of a silent
                // server is an implicit-TLS port reached without TLS.
                let hint = if self.settings.security != Security::Tls {
                    " (if this is an implicit-TLS port such as 465, choose security \"tls\")"
                } else {
                    ""
                };
                Err(SendError::transient(
                    None,
                    format!("greeting: no greeting within {seconds} s{hint}"),
                ))
            }
        }
    }

    /// Opens a TCP connection with Nagle's algorithm off. Without TCP_NODELAY the last segment of each
    /// message waits for the server's delayed ACK (about 40 ms per message).
    async fn connect_tcp(&self) -> Result<tokio::net::TcpStream, SendError> {
        let address = (self.settings.host.as_str(), self.settings.port);
        let stream = within(self.settings.timeouts.connect_s, "connecting", async {
            tokio::net::TcpStream::connect(address).await.map_err(|e| {
                SendError::transient(
                    None,
                    format!(
                        "connecting to {}:{}: {e}",
                        self.settings.host, self.settings.port
                    ),
                )
            })
        })
        .await?;
        stream.set_nodelay(true).map_err(|e| {
            SendError::transient(None, format!("connecting: configuring the socket: {e}"))
        })?;
        Ok(stream)
    }

    /// Connections this node may have open: the account's limit, or this node's share of it when
    /// the places are shared with other nodes.
    fn most_open(&self) -> usize {
        let most = self.settings.max_connections.max(1);
        match &self.settings.gate {
            Some(gate) => most.min(gate.share()).max(1),
            None => most,
        }
    }

    /// [`Pool::most`]: `most` when the places are shared with other nodes (a share can shrink); 0
    /// otherwise (the limit is fixed, and a connection testing the account's settings may be
    /// open beside it).
    fn shared_most(&self, most: usize) -> usize {
        if self.settings.gate.is_some() {
            most
        } else {
            0
        }
    }

    /// A connection for one transaction: an idle one, a new one while the account has room, or else a
    /// place in line for the next connection to come free.
    async fn checkout(&self) -> Result<Session, SendError> {
        enum Next {
            Idle(Box<IdleConnection>),
            Open(OpenSlot),
            Wait(oneshot::Receiver<Handoff>),
        }
        loop {
            let most = self.most_open();
            let next = {
                let mut pool = self.pool.lock().expect("pool lock");
                pool.most = self.shared_most(most);
                if let Some(idle) = pool.idle.pop() {
                    Next::Idle(Box::new(idle))
                } else if pool.open < most {
                    pool.open += 1;
                    Next::Open(OpenSlot {
                        pool: Arc::downgrade(&self.pool),
                    })
                } else {
                    let (handoff, receiver) = oneshot::channel();
                    pool.waiting.push_back(handoff);
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
                        return Ok(session);
                    }
                }
                Next::Open(slot) => return self.connect(slot).await,
                Next::Wait(receiver) => match receiver.await {
                    Ok(Handoff::Fresh(session)) => return Ok(*session),
                    Ok(Handoff::Connect(slot)) => return self.connect(slot).await,
                    Err(_) => {}
                },
            }
        }
    }

    /// Returns a connection after a successful transaction: to the first transaction waiting, or to
    /// the idle list — or closes it (QUIT) while this node has more open than its share.
    fn checkin(&self, session: Session) {
        if session.connection.has_broken() {
            return;
        }
        let most = self.shared_most(self.most_open());
        let mut session = session;
        loop {
            let waiter = {
                // One critical section, so that a transaction starting to wait now is not missed.
                let mut pool = self.pool.lock().expect("pool lock");
                pool.most = most;
                if pool.above_share() {
                    drop(pool);
                    // Its place is given back once QUIT is answered (or after 2 s).
                    tokio::spawn(async move {
                        let mut session = session;
                        let quit = session.connection.quit();
                        let _ = tokio::time::timeout(Duration::from_secs(2), quit).await;
                    });
                    return;
                }
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
            match waiter.send(Handoff::Fresh(Box::new(session))) {
                Ok(()) => return,
                Err(Handoff::Fresh(returned)) => session = *returned,
                Err(_) => unreachable!("the handoff sent was Fresh"),
            }
        }
    }

    /// Closes a connection after a failure: QUIT (lettre's `abort`), but waiting no longer than a
    /// command's timeout for a server that does not answer it.
    async fn close(&self, connection: &mut AsyncSmtpConnection) {
        let limit = Duration::from_secs(u64::from(self.settings.timeouts.command_s));
        let _ = tokio::time::timeout(limit.min(Duration::from_secs(5)), connection.abort()).await;
    }

    /// Counts a connection opened outside the limit (testing the account's settings).
    fn extra_slot(&self) -> OpenSlot {
        self.pool.lock().expect("pool lock").open += 1;
        OpenSlot {
            pool: Arc::downgrade(&self.pool),
        }
    }

    /// The MAIL parameters that non-ASCII addresses or content need, or a permanent failure when the
    /// server lacks the extension.
    fn mail_parameters(
        connection: &AsyncSmtpConnection,
        envelope: &Envelope,
        content_is_ascii: bool,
    ) -> Result<Vec<MailParameter>, SendError> {
        let mut parameters = Vec::new();
        if !envelope_is_ascii(envelope) {
            if !connection
                .server_info()
                .supports_feature(Extension::SmtpUtfEight)
            {
                return Err(SendError::permanent(
                    None,
                    "MAIL FROM: the envelope has non-ASCII addresses but the server does not offer SMTPUTF8",
                ));
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        if !content_is_ascii {
            if !connection
                .server_info()
                .supports_feature(Extension::EightBitMime)
            {
                return Err(SendError::permanent(
                    None,
                    "MAIL FROM: the message has 8-bit content but the server does not offer 8BITMIME",
                ));
            }
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        Ok(parameters)
    }

    /// The stage of the `index`-th reply to a MAIL, RCPT…, DATA group.
    fn stage_of(index: usize, envelope: &Envelope) -> String {
        let recipients = envelope.to();
        match index {
            0 => "MAIL FROM".to_owned(),
            n if n <= recipients.len() => format!("RCPT TO <{}>", recipients[n - 1]),
            _ => "DATA".to_owned(),
        }
    }

    /// MAIL, every RCPT and DATA: as one write when the server offers PIPELINING (then every reply is
    /// read, so that the connection stays in step, and the first refusal is returned), else one by
    /// one.
    async fn envelope_and_data(
        &self,
        session: &mut Session,
        envelope: &Envelope,
        parameters: Vec<MailParameter>,
    ) -> Result<(), SendError> {
        let command_s = self.settings.timeouts.command_s;
        let connection = &mut session.connection;
        if session.pipelining {
            let group = group_with(envelope, parameters);
            let replies = envelope.to().len() + 2;
            let mut first_error = None;
            for index in 0..replies {
                let stage = Self::stage_of(index, envelope);
                let reply = async {
                    if index == 0 {
                        connection.command(Raw(&group)).await
                    } else {
                        connection.read_response().await
                    }
                };
                match tokio::time::timeout(Duration::from_secs(u64::from(command_s)), reply).await {
                    Err(_) => {
                        return Err(SendError::transient(
                            None,
                            format!("{stage}: no answer within {command_s} s"),
                        ));
                    }
                    Ok(Ok(_)) => {}
                    // The connection failed or the reply was garbled: no more replies will come.
                    Ok(Err(error)) if error.status().is_none() => {
                        return Err(classify(&error, &stage));
                    }
                    Ok(Err(error)) => {
                        first_error.get_or_insert_with(|| classify(&error, &stage));
                    }
                }
            }
            return first_error.map_or(Ok(()), Err);
        }
        let mail = Mail::new(envelope.from().cloned(), parameters);
        within(command_s, "MAIL FROM", async {
            connection
                .command(mail)
                .await
                .map_err(|e| classify(&e, "MAIL FROM"))
        })
        .await?;
        for (index, recipient) in envelope.to().iter().enumerate() {
            let stage = Self::stage_of(index + 1, envelope);
            within(command_s, &stage, async {
                connection
                    .command(Rcpt::new(recipient.clone(), vec![]))
                    .await
                    .map_err(|e| classify(&e, &stage))
            })
            .await?;
        }
        within(command_s, "DATA", async {
            connection
                .command(Data)
                .await
                .map_err(|e| classify(&e, "DATA"))
        })
        .await?;
        Ok(())
    }

    /// Writes the content with its final "." and reads the reply, within `end_of_data_s`. A failure
    /// without a reply code leaves the outcome unknown.
    async fn content(
        &self,
        session: &mut Session,
        stuffed: Option<&str>,
        bytes: &[u8],
    ) -> Result<Response, SendError> {
        let seconds = self.settings.timeouts.end_of_data_s;
        let sending = async {
            match stuffed {
                Some(content) => session.connection.command(Raw(content)).await,
                None => session.connection.message(bytes).await,
            }
        };
        match tokio::time::timeout(Duration::from_secs(u64::from(seconds)), sending).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(classify_end_of_data(&error)),
            Err(_) => Err(SendError::unknown(format!(
                "end of data: no answer within {seconds} s after the whole message was sent; the server may have accepted it"
            ))),
        }
    }

    async fn send_once(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        let from = Address::from_str(message.envelope_from.as_str()).map_err(|e| {
            SendError::permanent(
                None,
                format!("MAIL FROM: invalid sender {}: {e}", message.envelope_from),
            )
        })?;
        let recipients = message
            .recipients
            .iter()
            .map(|r| {
                Address::from_str(r.as_str()).map_err(|e| {
                    SendError::permanent(None, format!("RCPT TO <{r}>: invalid recipient: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(Some(from), recipients)
            .map_err(|e| SendError::permanent(None, format!("MAIL FROM: invalid envelope: {e}")))?;
        let stuffed = (message.bytes.len() <= ONE_WRITE_LIMIT)
            .then(|| String::from_utf8(dot_stuffed(&message.bytes)).ok())
            .flatten();
        let mut session = self.checkout().await?;
        let result = async {
            let parameters =
                Self::mail_parameters(&session.connection, &envelope, message.bytes.is_ascii())?;
            self.envelope_and_data(&mut session, &envelope, parameters)
                .await?;
            self.content(&mut session, stuffed.as_deref(), &message.bytes)
                .await
        }
        .await;
        match result {
            Ok(response) => {
                self.checkin(session);
                Ok(Delivered {
                    reply_code: Some(u16::from(response.code())),
                    reply_text: reply_text(&response),
                })
            }
            Err(error) => {
                // A failed transaction leaves the connection in an unknown state: close it.
                self.close(&mut session.connection).await;
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

    /// Each stage has its own timeout, so a send needs no overall one.
    async fn send(&self, message: &OutgoingMessage) -> Result<Delivered, SendError> {
        self.send_once(message).await
    }

    /// The same stages and timeouts as a send, up to authentication.
    async fn test_connection(&self) -> Result<String, SendError> {
        let Session { mut connection, .. } = self.connect(self.extra_slot()).await?;
        // lettre sees an implicit-TLS connection's secured stream as its plain transport.
        let encrypted = connection.is_encrypted() || self.settings.security == Security::Tls;
        let _ = tokio::time::timeout(
            Duration::from_secs(u64::from(self.settings.timeouts.command_s)),
            connection.quit(),
        )
        .await;
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

    /// This node's share of places shared with other nodes: `share` (the test changes it); a place
    /// is always free.
    struct SharedPlaces {
        share: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl SessionGate for SharedPlaces {
        async fn acquire(&self) -> Result<SessionPermit, SendError> {
            Ok(Box::new(()))
        }
        fn idle_close(&self) -> Duration {
            Duration::from_secs(60)
        }
        fn share(&self) -> usize {
            self.share.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// Serves every connection to `listener`: each transaction is accepted, QUIT is answered and
    /// counted in `quits`.
    async fn accept_everything(listener: TcpListener, quits: Arc<std::sync::atomic::AtomicUsize>) {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let quits = quits.clone();
            tokio::spawn(async move {
                greet(&mut socket).await;
                let mut commands = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let n = socket.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    commands.extend_from_slice(&chunk[..n]);
                    if commands.ends_with(b"QUIT\r\n") {
                        quits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        socket.write_all(b"221 2.0.0 Bye\r\n").await.unwrap();
                        return;
                    }
                    if commands.ends_with(b"DATA\r\n") {
                        socket
                            .write_all(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go ahead\r\n")
                            .await
                            .unwrap();
                        let mut content = Vec::new();
                        read_until(&mut socket, &mut content, b"\r\n.\r\n").await;
                        socket.write_all(b"250 2.0.0 Ok\r\n").await.unwrap();
                        commands.clear();
                    }
                }
            });
        }
    }

    #[tokio::test]
    async fn when_its_share_of_the_places_shrinks_a_node_closes_the_connections_above_it_as_they_come_free()
     {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let quits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(accept_everything(listener, quits.clone()));
        let places = Arc::new(SharedPlaces { share: 2.into() });
        let mut connector = one_connection(port);
        connector.settings.max_connections = 4;
        connector.settings.gate = Some(places.clone());
        let message = to_buyer(b"Subject: shares\r\n\r\nbody\r\n");
        let open = |connector: &SmtpConnector| {
            let pool = connector.pool.lock().unwrap();
            (pool.open, pool.idle.len())
        };
        // Two transactions at once open this node's two connections; both then wait idle.
        let (first, second) = tokio::join!(connector.send(&message), connector.send(&message));
        first.unwrap();
        second.unwrap();
        assert_eq!(open(&connector), (2, 2));
        // Another node started: this one's share is now one place.
        places.share.store(1, std::sync::atomic::Ordering::SeqCst);
        connector.send(&message).await.unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while open(&connector).0 > 1 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            open(&connector),
            (1, 1),
            "the connection that came free above the share was closed, the other one kept"
        );
        assert_eq!(quits.load(std::sync::atomic::Ordering::SeqCst), 1);
        // At its share, a connection coming free is kept for the next transaction.
        connector.send(&message).await.unwrap();
        assert_eq!(open(&connector), (1, 1));
        assert_eq!(quits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A connector to the scripted server on `port`, allowed one connection.
    fn one_connection(port: u16) -> SmtpConnector {
        SmtpConnector::new(SmtpSettings {
            gate: None,
            account_label: "test".into(),
            host: "127.0.0.1".into(),
            port,
            security: Security::None,
            username: None,
            password: None,
            oauth2: false,
            max_connections: 1,
            timeouts: SmtpTimeouts {
                connect_s: 5,
                greeting_s: 5,
                command_s: 5,
                end_of_data_s: 5,
            },
            ehlo_name: "client.example.com".into(),
            extra_root_certificates: Vec::new(),
        })
    }

    /// The same with shorter timeouts and another security mode.
    fn quick_connection(port: u16, seconds: u32, security: Security) -> SmtpConnector {
        let mut connector = one_connection(port);
        connector.settings.timeouts = SmtpTimeouts {
            connect_s: seconds,
            greeting_s: seconds,
            command_s: seconds,
            end_of_data_s: seconds,
        };
        connector.settings.security = security;
        connector
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
            sender_user: None,
        }
    }

    /// Greets and answers both EHLOs of a new connection (lettre's, then the connector's own).
    async fn greet(socket: &mut tokio::net::TcpStream) {
        socket.write_all(b"220 scripted ESMTP\r\n").await.unwrap();
        for _ in 0..2 {
            let mut hello = Vec::new();
            read_until(socket, &mut hello, b"\r\n").await;
            // The account's EHLO name (one_connection sets it), not the machine's.
            assert_eq!(hello, b"EHLO client.example.com\r\n");
            socket
                .write_all(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
                .await
                .unwrap();
        }
    }

    /// Reads a greeting, both EHLOs and one transaction up to its final "."; then `after_dot` plays
    /// the server's part.
    async fn up_to_the_final_dot(socket: &mut tokio::net::TcpStream) {
        greet(socket).await;
        let mut group = Vec::new();
        read_until(socket, &mut group, b"DATA\r\n").await;
        socket
            .write_all(b"250 Ok\r\n250 Ok\r\n354 go ahead\r\n")
            .await
            .unwrap();
        let mut content = Vec::new();
        read_until(socket, &mut content, b"\r\n.\r\n").await;
    }

    #[tokio::test]
    async fn a_connection_lost_after_the_final_dot_leaves_the_outcome_unknown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            up_to_the_final_dot(&mut socket).await;
            drop(socket);
        });
        let error = one_connection(port)
            .send(&to_buyer(b"Subject: lost\r\n\r\nbody\r\n"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, crate::FailureKind::Unknown, "{error}");
        assert!(error.message.starts_with("end of data"), "{error}");
        assert!(error.message.contains("may have accepted"), "{error}");
    }

    #[tokio::test]
    async fn no_answer_to_the_final_dot_within_its_timeout_leaves_the_outcome_unknown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            up_to_the_final_dot(&mut socket).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
        let error = quick_connection(port, 1, Security::None)
            .send(&to_buyer(b"Subject: slow\r\n\r\nbody\r\n"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, crate::FailureKind::Unknown, "{error}");
        assert!(error.message.contains("no answer within 1 s"), "{error}");
        server.abort();
    }

    #[tokio::test]
    async fn a_refused_recipient_names_its_stage_and_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            greet(&mut socket).await;
            let mut group = Vec::new();
            read_until(&mut socket, &mut group, b"DATA\r\n").await;
            socket
                .write_all(b"250 Ok\r\n550 5.1.1 no such user\r\n554 no valid recipients\r\n")
                .await
                .unwrap();
            let mut quit = Vec::new();
            read_until(&mut socket, &mut quit, b"\r\n").await;
            let _ = socket.write_all(b"221 Bye\r\n").await;
        });
        let error = one_connection(port)
            .send(&to_buyer(b"Subject: x\r\n\r\nbody\r\n"))
            .await
            .unwrap_err();
        assert_eq!(error.kind, crate::FailureKind::Permanent);
        assert_eq!(error.reply_code, Some(550));
        assert!(
            error.message.starts_with("RCPT TO <buyer@example.com>: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_at_the_greeting_in_a_test_and_in_a_send_alike() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut sockets = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                sockets.push(socket);
            }
        });
        let connector = quick_connection(port, 1, Security::None);
        let started = Instant::now();
        let tested = connector.test_connection().await.unwrap_err();
        let sent = connector
            .send(&to_buyer(b"Subject: x\r\n\r\nbody\r\n"))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(4));
        for error in [&tested, &sent] {
            assert_eq!(error.kind, crate::FailureKind::Transient);
            assert!(
                error
                    .message
                    .starts_with("greeting: no greeting within 1 s"),
                "{error}"
            );
            assert!(error.message.contains("choose security \"tls\""), "{error}");
        }
        server.abort();
    }

    #[tokio::test]
    async fn tls_against_a_plain_port_is_a_permanent_failure_that_says_what_to_change() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let _ = socket.write_all(b"220 plain ESMTP\r\n").await;
                let mut hello = [0u8; 512];
                let _ = socket.read(&mut hello).await;
                let _ = socket.write_all(b"500 5.5.2 Error: bad syntax\r\n").await;
            }
        });
        let connector = quick_connection(port, 5, Security::Tls);
        for error in [
            connector.test_connection().await.unwrap_err(),
            connector
                .send(&to_buyer(b"Subject: x\r\n\r\nbody\r\n"))
                .await
                .unwrap_err(),
        ] {
            assert_eq!(error.kind, crate::FailureKind::Permanent, "{error}");
            assert!(error.message.contains("does not speak TLS"), "{error}");
            assert!(error.message.contains("starttls"), "{error}");
        }
        server.abort();
    }

    /// Nothing rides behind a final ".": with a second message waiting for the only connection, the
    /// server sees the first message end and nothing else until it has answered it, so the outcome of
    /// the first is known (and recorded) as soon as the server has it.
    #[tokio::test]
    async fn nothing_is_written_behind_a_final_dot_until_the_server_has_answered_it() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            up_to_the_final_dot(&mut socket).await;
            let mut more = [0u8; 64];
            let early =
                tokio::time::timeout(Duration::from_millis(300), socket.read(&mut more)).await;
            assert!(
                early.is_err(),
                "bytes arrived behind the final dot before its answer"
            );
            socket.write_all(b"250 queued as 1\r\n").await.unwrap();
            one_transaction(&mut socket, b"250 queued as 2\r\n").await;
        });
        let connector = Arc::new(one_connection(port));
        let message = |n: u32| OutgoingMessage {
            envelope_from: EmailAddress::parse("sales@example.com").unwrap(),
            recipients: vec![EmailAddress::parse("buyer@example.com").unwrap()],
            bytes: Arc::new(format!("Subject: {n}\r\n\r\nbody {n}\r\n").into_bytes()),
            message_id: format!("<{n}@example.com>"),
            sender_user: None,
        };
        let first = tokio::spawn({
            let connector = connector.clone();
            async move { connector.send(&message(1)).await }
        });
        let second = tokio::spawn({
            let connector = connector.clone();
            async move { connector.send(&message(2)).await }
        });
        let first = first.await.unwrap().unwrap();
        let second = second.await.unwrap().unwrap();
        assert!(first.reply_text.contains("queued as 1"));
        assert!(second.reply_text.contains("queued as 2"));
        server.await.unwrap();
        assert_eq!(connector.pool.lock().unwrap().open, 1);
    }
}
