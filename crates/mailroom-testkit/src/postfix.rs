//! A full private Postfix instance (own config, queue and port) that requires SMTP AUTH, checked by a
//! private Dovecot auth service, and relays what it accepts to a sink. Stopped when dropped.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub struct PostfixWithSasl {
    /// Plain SMTP that offers STARTTLS.
    pub port: u16,
    /// SMTP over implicit TLS ("SMTPS").
    pub tls_port: u16,
    /// Dovecot's IMAP port, when mail is delivered into mailboxes.
    pub imap_port: Option<u16>,
    dir: tempfile::TempDir,
}

/// Where Postfix sends what it accepts.
enum Delivery<'a> {
    /// Relay everything to an SMTP sink on this port.
    Relay(u16),
    /// Deliver mail for the domain of this address into a Dovecot mailbox (LMTP), readable over IMAP
    /// with this password.
    Mailbox { address: &'a str, password: &'a str },
    /// Relay everything to an SMTP sink on this port, and serve IMAP for every user.
    RelayWithImap(u16),
    /// Deliver mail for `domain` into the Dovecot mailboxes of the users (an unknown user is refused
    /// by Dovecot's LMTP, and Postfix returns a delivery status notification to the sender), after
    /// rewriting `aliases` (address → user); relay mail for other domains to the sink on `relay`.
    LocalDomain {
        domain: &'a str,
        aliases: &'a [(String, String)],
        relay: u16,
    },
}

const MASTER_CF_SERVICES: &str = "cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
lmtp unix - - n - - lmtp
relay unix - - n - - smtp
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
showq unix n - n - - showq
tlsmgr unix - - n 1000? 1 tlsmgr
";

/// Makes a private CA and a certificate for 127.0.0.1 / localhost signed by it, with openssl.
fn make_certificates(dir: &Path) -> Result<()> {
    let run = |args: &[&str]| -> Result<()> {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl")?;
        if !output.status.success() {
            bail!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=mailroom test CA",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}

impl PostfixWithSasl {
    /// Starts Dovecot (auth only) with one user and Postfix relaying to `relay_port` on 127.0.0.1.
    pub fn start(username: &str, password: &str, relay_port: u16) -> Result<Self> {
        Self::start_with(username, password, Delivery::Relay(relay_port))
    }

    /// Starts Postfix (SMTP AUTH for `username`) delivering mail for `mailbox`'s domain into a Dovecot
    /// mailbox, which `fetch_first_message` reads over IMAP.
    pub fn start_with_mailbox(
        username: &str,
        password: &str,
        mailbox: &str,
        mailbox_password: &str,
    ) -> Result<Self> {
        Self::start_with(
            username,
            password,
            Delivery::Mailbox {
                address: mailbox,
                password: mailbox_password,
            },
        )
    }

    /// Starts Dovecot (IMAP and SASL) and Postfix (submission with SASL, relaying to `relay_port`)
    /// for all of `users` (name, password): every one can log in over IMAP and over SMTP AUTH.
    pub fn start_with_users(users: &[(String, String)], relay_port: u16) -> Result<Self> {
        let (first, rest) = users.split_first().context("at least one user")?;
        Self::start_with_all(
            &first.0,
            &first.1,
            rest,
            Delivery::RelayWithImap(relay_port),
        )
    }

    /// Starts Dovecot (IMAP, LMTP, SASL) and Postfix for all of `users` (name, password), delivering
    /// mail for `domain` into their mailboxes — refusing unknown users there, so that Postfix
    /// bounces the message to its return path as a real MTA does — with `aliases` applied (address →
    /// user; `+detail` extensions are kept); other domains are relayed to `relay_port`.
    pub fn start_with_local_domain(
        users: &[(String, String)],
        domain: &str,
        aliases: &[(String, String)],
        relay_port: u16,
    ) -> Result<Self> {
        let (first, rest) = users.split_first().context("at least one user")?;
        Self::start_with_all(
            &first.0,
            &first.1,
            rest,
            Delivery::LocalDomain {
                domain,
                aliases,
                relay: relay_port,
            },
        )
    }

    /// Like [`Self::start_with_users`], and Dovecot (IMAP, and SMTP AUTH through Postfix) also takes
    /// OAuth 2.0 access tokens (XOAUTH2, OAUTHBEARER), checked at the provider's introspection
    /// endpoint: `introspection_url` carries Dovecot's own client credentials
    /// (`http://client:secret@host:port/token/introspection`); a token's `username` claim must be
    /// the login name.
    pub fn start_with_oauth2(
        users: &[(String, String)],
        introspection_url: &str,
        relay_port: u16,
    ) -> Result<Self> {
        let (first, rest) = users.split_first().context("at least one user")?;
        Self::start_with_options(
            &first.0,
            &first.1,
            rest,
            Delivery::RelayWithImap(relay_port),
            Some(introspection_url),
        )
    }

    fn start_with(username: &str, password: &str, delivery: Delivery<'_>) -> Result<Self> {
        Self::start_with_all(username, password, &[], delivery)
    }

    fn start_with_all(
        username: &str,
        password: &str,
        more_users: &[(String, String)],
        delivery: Delivery<'_>,
    ) -> Result<Self> {
        Self::start_with_options(username, password, more_users, delivery, None)
    }

    fn start_with_options(
        username: &str,
        password: &str,
        more_users: &[(String, String)],
        delivery: Delivery<'_>,
        oauth2_introspection: Option<&str>,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().to_path_buf();
        let root = root.as_path();
        let auth_port = crate::free_port();
        let port = crate::free_port();
        let tls_port = crate::free_port();
        for sub in [
            "dovecot/run",
            "dovecot/state",
            "postfix/queue",
            "postfix/data",
            "tls",
        ] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        // Postfix's smtpd runs as `postfix` and must reach its certificate and key.
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        make_certificates(&root.join("tls"))?;
        for file in ["server.key", "server.pem", "ca.pem"] {
            std::fs::set_permissions(
                root.join("tls").join(file),
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
        }
        let mut users = format!("{username}:{{PLAIN}}{password}::::::\n");
        if let Delivery::Mailbox { address, password } = &delivery {
            users.push_str(&format!("{address}:{{PLAIN}}{password}::::::\n"));
        }
        for (name, password) in more_users {
            users.push_str(&format!("{name}:{{PLAIN}}{password}::::::\n"));
        }
        std::fs::write(root.join("dovecot/users"), users)?;
        let imap_port = crate::free_port();
        let lmtp_port = crate::free_port();
        let mailbox_mode = matches!(
            delivery,
            Delivery::Mailbox { .. } | Delivery::RelayWithImap(_) | Delivery::LocalDomain { .. }
        );
        let lmtp_wanted = matches!(
            delivery,
            Delivery::Mailbox { .. } | Delivery::LocalDomain { .. }
        );
        // Only the users listed have mailboxes when unknown users must be refused.
        let userdb = if matches!(delivery, Delivery::LocalDomain { .. }) {
            format!(
                "userdb {{\n  driver = passwd-file\n  args = username_format=%u {r}/dovecot/users\n  default_fields = uid=nobody gid=nogroup home={r}/mail/%u\n}}\n",
                r = root.display()
            )
        } else {
            format!(
                "userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={r}/mail/%u allow_all_users=yes\n}}\n",
                r = root.display()
            )
        };
        std::fs::create_dir_all(root.join("mail"))?;
        std::fs::set_permissions(
            root.join("mail"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )?;
        let mailbox_services = if mailbox_mode {
            format!(
                "protocols = imap lmtp\nmail_location = maildir:{r}/mail/%u\n\
                 namespace inbox {{\n  inbox = yes\n  mailbox Sent {{\n    special_use = \\Sent\n    auto = subscribe\n  }}\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {imap_port}\n  }}\n}}\n\
                 service lmtp {{\n  inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {lmtp_port}\n  }}\n}}\n",
                r = root.display()
            )
        } else {
            "protocols =\n".to_owned()
        };
        // Dovecot's oauth2 passdb (doc.dovecot.org, "OAuth2"): tokens are introspected by POST.
        let (mechanisms, oauth2_passdb) = match oauth2_introspection {
            Some(url) => {
                std::fs::write(
                    root.join("dovecot/oauth2.conf.ext"),
                    format!(
                        "introspection_mode = post\nintrospection_url = {url}\nusername_attribute = username\n\
                         active_attribute = active\nactive_value = true\nforce_introspection = yes\n"
                    ),
                )?;
                (
                    "plain login xoauth2 oauthbearer",
                    format!(
                        "passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {r}/dovecot/oauth2.conf.ext\n}}\n",
                        r = root.display()
                    ),
                )
            }
            None => ("plain login", String::new()),
        };
        std::fs::write(
            root.join("dovecot/dovecot.conf"),
            format!(
                "base_dir = {r}/dovecot/run\nstate_dir = {r}/dovecot/state\nlog_path = {r}/dovecot/dovecot.log\n{mailbox_services}ssl = no\n\
                 disable_plaintext_auth = no\nauth_mechanisms = {mechanisms}\n{oauth2_passdb}\
                 passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {r}/dovecot/users\n}}\n\
                 {userdb}recipient_delimiter = +\n\
                 service auth {{\n  inet_listener {{\n    address = 127.0.0.1\n    port = {auth_port}\n  }}\n}}\n",
                r = root.display()
            ),
        )?;
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(root.join("dovecot/dovecot.conf"))
            .status()
            .context("starting dovecot")?;
        if !status.success() {
            bail!(
                "dovecot did not start: {}",
                std::fs::read_to_string(root.join("dovecot/dovecot.log")).unwrap_or_default()
            );
        }
        crate::wait_for_port(auth_port, Duration::from_secs(10))?;
        let delivery_config = match &delivery {
            Delivery::Relay(port) | Delivery::RelayWithImap(port) => {
                format!("relayhost = [127.0.0.1]:{port}\n")
            }
            Delivery::Mailbox { address, .. } => {
                let domain = address
                    .rsplit_once('@')
                    .map(|(_, d)| d)
                    .unwrap_or("example.com");
                format!(
                    "relayhost =\nvirtual_mailbox_domains = {domain}\nvirtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}\n"
                )
            }
            Delivery::LocalDomain {
                domain,
                aliases,
                relay,
            } => {
                let aliases: Vec<String> = aliases
                    .iter()
                    .map(|(from, to)| format!("{from}={to}"))
                    .collect();
                format!(
                    "relayhost = [127.0.0.1]:{relay}\nvirtual_mailbox_domains = {domain}\nvirtual_transport = lmtp:inet:127.0.0.1:{lmtp_port}\n\
                     recipient_delimiter = +\nvirtual_alias_maps = inline:{{ {} }}\n",
                    aliases.join(", ")
                )
            }
        };
        std::fs::write(
            root.join("postfix/main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {r}/postfix/queue\ndata_directory = {r}/postfix/data\nmail_owner = postfix\n\
                 inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmyhostname = mx.mailroom.test\nmydestination =\n\
                 mynetworks = 127.0.0.0/8\nalias_maps =\nalias_database =\n{delivery_config}\
                 smtpd_relay_restrictions = permit_sasl_authenticated, reject\n\
                 smtpd_recipient_restrictions = permit_sasl_authenticated, reject\n\
                 smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{auth_port}\n\
                 smtp_tls_security_level = none\nsmtpd_tls_security_level = may\nsmtputf8_enable = no\n\
                 smtpd_tls_loglevel = 1\nsmtpd_tls_cert_file = {r}/tls/server.pem\nsmtpd_tls_key_file = {r}/tls/server.key\n\
                 maillog_file = {r}/postfix/postfix.log\nmaillog_file_prefixes = {r}\n",
                r = root.display()
            ),
        )?;
        std::fs::write(
            root.join("postfix/master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\n127.0.0.1:{tls_port} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n{MASTER_CF_SERVICES}"
            ),
        )?;
        Command::new("chown")
            .arg("postfix")
            .arg(root.join("postfix/data"))
            .status()?;
        if mailbox_mode {
            crate::wait_for_port(imap_port, Duration::from_secs(10))?;
            if lmtp_wanted {
                crate::wait_for_port(lmtp_port, Duration::from_secs(10))?;
            }
        }
        let instance = Self {
            port,
            tls_port,
            imap_port: mailbox_mode.then_some(imap_port),
            dir,
        };
        let output = Command::new("postfix")
            .arg("-c")
            .arg(root.join("postfix"))
            .arg("start")
            .output()
            .context("starting postfix")?;
        if !output.status.success() {
            bail!("postfix did not start: {}", instance.log());
        }
        crate::wait_for_port(port, Duration::from_secs(15))?;
        crate::wait_for_port(tls_port, Duration::from_secs(15))?;
        Ok(instance)
    }

    /// Logs in over IMAP and fetches the first message of INBOX, waiting up to `timeout` for one.
    pub async fn fetch_first_message(
        &self,
        user: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let port = self
            .imap_port
            .context("this Postfix delivers no mailboxes")?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(message) = imap_fetch_first(port, user, password).await? {
                return Ok(message);
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "no message arrived in the mailbox within {timeout:?}; postfix log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The PEM file of the private CA that signed the server's certificate.
    pub fn ca_certificate(&self) -> std::path::PathBuf {
        self.root().join("tls/ca.pem")
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Dovecot's log, to explain a failure.
    pub fn dovecot_log(&self) -> String {
        std::fs::read_to_string(self.root().join("dovecot/dovecot.log")).unwrap_or_default()
    }

    /// Postfix's log, to explain a failure.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root().join("postfix/postfix.log")).unwrap_or_default()
    }
}

impl Drop for PostfixWithSasl {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(self.root().join("postfix"))
            .arg("stop")
            .output();
        if let Ok(pid) = std::fs::read_to_string(self.root().join("dovecot/run/master.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        // Give both a moment to exit before their folders are removed.
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A minimal IMAP client for tests: LOGIN, SELECT INBOX, FETCH 1 BODY[] (a literal), LOGOUT.
async fn imap_fetch_first(port: u16, user: &str, password: &str) -> Result<Option<Vec<u8>>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut buffer = Vec::new();
    async fn read_until(
        stream: &mut tokio::net::TcpStream,
        buffer: &mut Vec<u8>,
        tag: &str,
    ) -> Result<String> {
        let mut chunk = [0u8; 65536];
        loop {
            let text = String::from_utf8_lossy(buffer).into_owned();
            // The command is answered once its tagged status line is complete.
            let tagged_line = text
                .find(&format!("\r\n{tag} "))
                .map(|i| i + 2)
                .or_else(|| text.starts_with(&format!("{tag} ")).then_some(0));
            if tagged_line.is_some_and(|start| text[start..].contains("\r\n")) {
                return Ok(text);
            }
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                bail!("the IMAP server closed the connection: {text}");
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
    }
    // Greeting.
    let mut chunk = [0u8; 4096];
    let read = stream.read(&mut chunk).await?;
    if !String::from_utf8_lossy(&chunk[..read]).starts_with("* OK") {
        bail!("unexpected IMAP greeting");
    }
    stream
        .write_all(format!("a1 LOGIN \"{user}\" \"{password}\"\r\n").as_bytes())
        .await?;
    let reply = read_until(&mut stream, &mut buffer, "a1").await?;
    if !reply.contains("a1 OK") {
        bail!("IMAP login failed: {reply}");
    }
    buffer.clear();
    stream.write_all(b"a2 SELECT INBOX\r\n").await?;
    let reply = read_until(&mut stream, &mut buffer, "a2").await?;
    if reply.contains("* 0 EXISTS") {
        return Ok(None);
    }
    buffer.clear();
    stream.write_all(b"a3 FETCH 1 BODY[]\r\n").await?;
    read_until(&mut stream, &mut buffer, "a3").await?;
    let open = buffer
        .windows(1)
        .position(|w| w == b"{")
        .context("no literal in the FETCH answer")?;
    let close = open
        + buffer[open..]
            .iter()
            .position(|b| *b == b'}')
            .context("unterminated literal")?;
    let length: usize = std::str::from_utf8(&buffer[open + 1..close])?.parse()?;
    let start = close + 3;
    let message = buffer
        .get(start..start + length)
        .context("the literal is shorter than announced")?
        .to_vec();
    let _ = stream.write_all(b"a4 LOGOUT\r\n").await;
    Ok(Some(message))
}
