//! The real `mailroom` binary, started on a private data folder and a free loopback port.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::postgres::{TestDatabase, servers_use_postgres};

pub struct MailroomServer {
    binary: PathBuf,
    data_dir: tempfile::TempDir,
    /// The PostgreSQL database the server runs on, if not its SQLite file; shared by the nodes of
    /// a cluster, and dropped with the last of them.
    database: Option<Arc<TestDatabase>>,
    /// Given to the process as `MAILROOM_SECRET_KEY` (the nodes of a cluster share one key).
    secret_key: Option<String>,
    /// The server's stdout and stderr, apart from its data folder (which a test may fill up).
    log_dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    pub base_url: String,
    pub token: String,
    http: reqwest::Client,
}

/// Connections to PostgreSQL a test server holds at most, unless its config says otherwise.
pub const TEST_DATABASE_CONNECTIONS: u32 = 12;

impl MailroomServer {
    /// Starts `binary serve` with `config_toml` as its config file (listen address and data folder are
    /// set by the kit) — on a PostgreSQL database of its own when `MAILROOM_TEST_STORE=postgres`,
    /// otherwise on SQLite in its data folder.
    pub async fn start(binary: &Path, config_toml: &str) -> Result<Self> {
        let database = Self::database_for_the_run().await?;
        Self::start_with_data_dir(binary, config_toml, tempfile::tempdir()?, database, None).await
    }

    /// Starts the server on a new PostgreSQL database of its own (`true`) or on SQLite in its data
    /// folder, whatever `MAILROOM_TEST_STORE` says.
    pub async fn start_on(binary: &Path, config_toml: &str, postgres: bool) -> Result<Self> {
        let database = if postgres {
            Some(Arc::new(TestDatabase::create().await?))
        } else {
            None
        };
        Self::start_with_data_dir(binary, config_toml, tempfile::tempdir()?, database, None).await
    }

    /// Starts the server with its data folder inside `parent` (e.g. a small file system). The
    /// database stays SQLite in that folder.
    pub async fn start_in(binary: &Path, config_toml: &str, parent: &Path) -> Result<Self> {
        Self::start_with_data_dir(
            binary,
            config_toml,
            tempfile::tempdir_in(parent)?,
            None,
            None,
        )
        .await
    }

    /// Starts `nodes` servers sharing one new PostgreSQL database and one secret key, each with
    /// its own data folder, port and node id. The first creates the admin token; the others use it.
    pub async fn start_cluster(
        binary: &Path,
        config_toml: &str,
        nodes: usize,
    ) -> Result<Vec<Self>> {
        let database = Arc::new(TestDatabase::create().await?);
        let key = random_key_hex();
        let mut servers: Vec<Self> = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            let token = servers.first().map(|first| first.token.clone());
            let mut server = Self::start_with_data_dir(
                binary,
                config_toml,
                tempfile::tempdir()?,
                Some(database.clone()),
                Some((key.clone(), token)),
            )
            .await?;
            if let Some(first) = servers.first() {
                server.token = first.token.clone();
            }
            servers.push(server);
        }
        Ok(servers)
    }

    async fn database_for_the_run() -> Result<Option<Arc<TestDatabase>>> {
        Ok(if servers_use_postgres() {
            Some(Arc::new(TestDatabase::create().await?))
        } else {
            None
        })
    }

    /// Everything the server's database holds, as bytes to search (e.g. for a secret that must
    /// not be stored in clear): the SQLite file and its log, or every row of every PostgreSQL table
    /// as text.
    pub async fn stored_bytes(&self) -> Result<Vec<Vec<u8>>> {
        match &self.database {
            None => {
                let file = self.data_dir.path().join("mailroom.db");
                Ok(vec![
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
                    std::fs::read(file.with_extension("db-wal")).unwrap_or_default(),
                ])
            }
            Some(database) => {
                use sqlx::Connection;
                let mut connection = sqlx::PgConnection::connect(&database.url).await?;
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_all(&mut connection)
                .await?;
                let mut rows = Vec::new();
                for table in tables {
                    let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT t::text FROM \"{table}\" t"
                    )))
                    .fetch_all(&mut connection)
                    .await?;
                    rows.extend(texts.into_iter().map(String::into_bytes));
                }
                Ok(rows)
            }
        }
    }

    /// The database URL the server runs on.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(database) => database.url.clone(),
            None => format!(
                "sqlite://{}",
                self.data_dir.path().join("mailroom.db").display()
            ),
        }
    }

    async fn start_with_data_dir(
        binary: &Path,
        config_toml: &str,
        data_dir: tempfile::TempDir,
        database: Option<Arc<TestDatabase>>,
        cluster: Option<(String, Option<String>)>,
    ) -> Result<Self> {
        let port = crate::free_port();
        // In the config file rather than a flag, so that CLI commands given the data folder
        // (`mailroom admin recover`, `mailroom send`) find the same database.
        let config_toml = match &database {
            // Fewer connections than a server takes by default: the test passes run side by side
            // against one PostgreSQL server and its `max_connections` (100 by default).
            Some(database) if !config_toml.contains("database_connections") => format!(
                "database_url = {:?}\ndatabase_connections = {TEST_DATABASE_CONNECTIONS}\n{config_toml}",
                database.url
            ),
            Some(database) => format!("database_url = {:?}\n{config_toml}", database.url),
            None => config_toml.to_owned(),
        };
        std::fs::write(data_dir.path().join("mailroom.toml"), config_toml)?;
        let joins_a_cluster = cluster.as_ref().is_some_and(|(_, token)| token.is_some());
        let mut server = Self {
            binary: binary.to_path_buf(),
            data_dir,
            database,
            secret_key: cluster.map(|(key, _)| key),
            log_dir: tempfile::tempdir()?,
            child: None,
            port,
            base_url: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            http: reqwest::Client::new(),
        };
        server.spawn().await?;
        if !joins_a_cluster {
            server.token = std::fs::read_to_string(server.data_dir.path().join("admin-token"))?
                .trim()
                .to_owned();
        }
        Ok(server)
    }

    /// The server process id, e.g. to read its peak memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server process's peak resident memory (`VmHWM`), MiB; `None` once it has stopped.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    async fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.path().join("server.log"))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.path().join("stdout.log"))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .env_remove("MAILROOM_SECRET_KEY")
            .env_remove("MAILROOM_DATABASE_URL");
        if let Some(key) = &self.secret_key {
            command.env("MAILROOM_SECRET_KEY", key);
        }
        let child = command
            .env("RUST_LOG", "info,sqlx=warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log)
            .spawn()
            .context("starting mailroom")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = self
                .http
                .get(format!("{}/healthz", self.base_url))
                .send()
                .await
                && response.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "mailroom exited during start-up ({status}); log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "mailroom did not become healthy in 30 s; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the process to exit by itself.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        Ok(child.wait()?)
    }

    /// Starts the server again on the same data folder and port.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn().await
    }

    /// The server's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("server.log")).unwrap_or_default()
    }

    /// What the server printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// One API call with the admin token; returns the status code and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read_answer(request).await
    }

    /// One API call with another user's token.
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        read_answer(request).await
    }

    /// A GET whose answer is bytes (a download), with the admin token.
    pub async fn raw_get(&self, path: &str) -> Result<(u16, Vec<u8>)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.call(reqwest::Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        self.call(reqwest::Method::POST, path, Some(body), &[])
            .await
    }

    /// Creates an SMTP account on 127.0.0.1:`port` with no TLS; `extra` fields override the defaults.
    pub async fn add_smtp_account(&self, name: &str, port: u16, extra: Value) -> Result<Value> {
        let mut body = serde_json::json!({
            "connector": "smtp", "name": name, "email_address": format!("{name}@example.com"),
            "host": "127.0.0.1", "port": port, "security": "none"
        });
        if let (Value::Object(target), Value::Object(source)) = (&mut body, extra) {
            target.extend(source);
        }
        let (status, account) = self.post("/v1/accounts", &body).await?;
        if status != 201 {
            bail!("creating account {name} answered {status}: {account}");
        }
        Ok(account)
    }

    /// Creates an SMTP account (as [`Self::add_smtp_account`]) and makes it the default account.
    pub async fn add_default_smtp_account(
        &self,
        name: &str,
        port: u16,
        extra: Value,
    ) -> Result<Value> {
        let account = self.add_smtp_account(name, port, extra).await?;
        let body = serde_json::json!({"account_id": account["id"]});
        let (status, answer) = self
            .call(
                reqwest::Method::PUT,
                "/v1/scenarios/default",
                Some(&body),
                &[],
            )
            .await?;
        if status != 200 {
            bail!("making {name} the default account answered {status}: {answer}");
        }
        self.get(&format!(
            "/v1/accounts/{}",
            account["id"].as_str().unwrap_or_default()
        ))
        .await
        .map(|(_, account)| account)
    }

    /// Queues a message and returns the API's answer; fails unless it was accepted (202).
    pub async fn send(&self, body: &Value) -> Result<Value> {
        let (status, answer) = self.post("/v1/messages", body).await?;
        if status != 202 {
            bail!("sending answered {status}: {answer}");
        }
        Ok(answer)
    }

    pub async fn message(&self, id: &str) -> Result<Value> {
        let (status, message) = self.get(&format!("/v1/messages/{id}")).await?;
        if status != 200 {
            bail!("reading message {id} answered {status}: {message}");
        }
        Ok(message)
    }

    /// Waits until the message has `status`; returns it.
    pub async fn wait_for_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.message(id).await?;
            if message["status"] == status {
                return Ok(message);
            }
            if Instant::now() > deadline {
                bail!(
                    "message {id} is still {} after {timeout:?}, not {status}: {message:#}",
                    message["status"]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MailroomServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `condition` until it returns true, or fails after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A random 32-byte key in hex, from the operating system (no dependency for one key).
fn random_key_hex() -> String {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("reading /dev/urandom");
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Sends a request; the status code and the JSON body (Null when empty, a string when not JSON).
async fn read_answer(request: reqwest::RequestBuilder) -> Result<(u16, Value)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((
        status,
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        },
    ))
}
