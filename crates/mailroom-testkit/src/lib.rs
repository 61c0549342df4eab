//! Real peers for mailroom's tests, all on loopback and all stopped when dropped:
//! a private Postfix `smtp-sink`, a full private Postfix instance, the real `mailroom` binary, and
//! private PostgreSQL databases, a real OpenID Connect provider, and a fake of Microsoft's identity
//! platform and Graph (the one service that cannot run here) that follows their documented contract.

mod imap;
mod mailroom;
mod microsoft;
mod oidc;
mod postfix;
mod postgres;
mod proxy;
mod sink;

pub use imap::{ImapClient, inbound_corpus};
pub use mailroom::{MailroomServer, wait_until};
pub use microsoft::{FakeClient, FakeMailbox, GraphRequest, MicrosoftFake, SentMail};
pub use oidc::OidcProvider;
pub use postfix::PostfixWithSasl;
pub use postgres::{TestDatabase, servers_use_postgres};
pub use proxy::CountingProxy;
pub use sink::{DumpedMessage, SmtpSink};

use std::net::TcpListener;
use std::time::{Duration, Instant};

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not
/// handed out before: the kernel may give the same ephemeral port to two binds in a row
/// once the first is closed, and a server started with two "free" ports that are the
/// same one fails (Dovecot: "duplicate listener").
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("binding a free port")
            .local_addr()
            .expect("local address")
            .port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// Waits until something accepts connections on the port.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

/// Whether the Postfix test tools are installed (`.ci/run` installs them).
pub fn postfix_available() -> bool {
    std::path::Path::new("/usr/sbin/smtp-sink").exists()
}
