//! Configuration of `mailroom serve`: flags override environment variables, which override the TOML
//! config file, which overrides the embedded defaults.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_DATA_DIR: &str = "./mailroom-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8025";

/// The TOML config file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    /// Most connections this node holds to PostgreSQL (default 24, at least 3), plus one that
    /// listens for other nodes' notifications. The nodes on one database together need fewer than
    /// its `max_connections`.
    pub database_connections: Option<u32>,
    /// Largest text + HTML body of one message, in bytes.
    pub max_body_bytes: Option<usize>,
    /// The content of sent mail older than this many days is deleted (envelope and attempts stay);
    /// unset: kept for ever.
    pub sent_retention_days: Option<u32>,
    /// Events, their webhook deliveries and the delivery log are deleted after this many days
    /// (default 30; deliveries are retried for 3 days at most).
    pub event_retention_days: Option<u32>,
    /// Where uploaded files are kept: "filesystem" (`<data-dir>/blobs`, the default) or "database"
    /// (PostgreSQL only: every node reaches them).
    pub blob_store: Option<String>,
    /// Largest total size of the attachments of one message, in bytes (default 100 MiB).
    pub max_attachment_bytes: Option<u64>,
    /// `text` (default) or `json` log lines.
    pub log_format: Option<String>,
    /// Every pickup folder lies under this folder (default `<data-dir>/pickup`).
    pub pickup_root: Option<PathBuf>,
    /// This machine's fully qualified name (default: the system's host name).
    pub hostname: Option<String>,
    /// The address users reach mailroom at, e.g. `https://mail.example.com` (what the mail-client
    /// app's manifest points at; default: the scheme and host of the request for the manifest).
    pub public_url: Option<String>,
    #[serde(default)]
    pub engine: EngineFileConfig,
    #[serde(default)]
    pub webhooks: WebhooksFileConfig,
    /// PEM files of extra root certificates trusted for SMTP TLS.
    #[serde(default)]
    pub extra_root_certificates: Vec<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksFileConfig {
    /// Let webhooks reach loopback, private and link-local addresses (default false: a receiver URL
    /// must not reach mailroom's own network). Environment: `MAILROOM_WEBHOOKS_ALLOW_PRIVATE`.
    pub allow_private_targets: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFileConfig {
    pub poll_interval_ms: Option<u64>,
    pub lease_ms: Option<u64>,
    /// The window over which `rate_limit_per_minute` applies (60000 in production; shorter in tests).
    pub rate_window_ms: Option<u64>,
    pub retry_base_ms: Option<u64>,
    pub retry_cap_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    /// A node silent for this long is declared dead by another and its leases recovered (default 10000).
    pub node_timeout_ms: Option<u64>,
    pub prefetch_per_slot: Option<u32>,
    /// How long new mail may wait for room in its account's lane before it is queued (default 100).
    pub in_flow_delay_ms: Option<u64>,
    /// Bytes of attachment-bearing messages read and encoded at once (default 256 MiB).
    pub encode_budget_bytes: Option<u64>,
    /// Uploads no message refers to are deleted after this long (default one day).
    pub attachment_retention_ms: Option<u64>,
    /// How often retention passes over the sent archive (default one hour).
    pub retention_interval_ms: Option<u64>,
    /// The delay before a transiently failed mailbox test is tried again, doubled per try (default 60000).
    pub mailbox_test_retry_ms: Option<u64>,
    /// How long one direction of a mailbox test may take (default 30000).
    pub mailbox_test_timeout_ms: Option<u64>,
    /// How long a background job stays one node's without a renewal (default 30000).
    pub job_lease_ms: Option<u64>,
    /// How often a node looks for mailboxes to start or stop synchronizing (default 2000).
    pub sync_rescan_ms: Option<u64>,
    /// How long a node's hold on a mailbox's sync lasts unrenewed; another node takes the mailbox
    /// over afterwards (default 30000).
    pub sync_hold_ms: Option<u64>,
    /// Folders are polled at least this often, whatever their profile says (default: as the
    /// profile says).
    pub sync_poll_ms: Option<u64>,
    /// The first delay after a transient sync failure, doubled per failure up to 5 minutes
    /// (default 10000).
    pub sync_retry_ms: Option<u64>,
    /// Messages read per batch (IMAP) or per page (Microsoft Graph delta) (default 200).
    pub sync_batch_messages: Option<usize>,
}

/// Values given on the command line or in the environment (clap reads both).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where the database, keys, admin token and pickup folder live.
    #[arg(long, env = "MAILROOM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8025 (port 0 picks a free port).
    #[arg(long, env = "MAILROOM_LISTEN")]
    pub listen: Option<String>,
    /// Database URL; default sqlite://<data-dir>/mailroom.db.
    #[arg(long, env = "MAILROOM_DATABASE_URL")]
    pub database_url: Option<String>,
    /// TOML config file; default <data-dir>/mailroom.toml when it exists.
    #[arg(long, env = "MAILROOM_CONFIG")]
    pub config: Option<PathBuf>,
    /// `text` or `json` log lines on stderr.
    #[arg(long, env = "MAILROOM_LOG_FORMAT")]
    pub log_format: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// `host:port`; the host may be a name (`localhost:8025`), resolved when the server binds.
    pub listen: String,
    pub database_url: String,
    pub database_connections: u32,
    pub max_body_bytes: usize,
    pub sent_retention: Option<Duration>,
    pub event_retention: Duration,
    /// Whether uploaded files are kept in the database rather than under the data folder.
    pub blobs_in_database: bool,
    pub retention_interval: Duration,
    pub max_attachment_bytes: u64,
    pub log_format: String,
    pub pickup_root: PathBuf,
    pub poll_interval: Duration,
    pub lease_duration: Duration,
    pub rate_window: Duration,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// This machine's name: the default EHLO name and the domain of the default account's address.
    pub hostname: String,
    pub public_url: Option<String>,
    pub shutdown_grace: Duration,
    pub node_timeout: Duration,
    pub prefetch_per_slot: u32,
    pub in_flow_delay: Duration,
    pub encode_budget_bytes: u64,
    pub attachment_retention: Duration,
    pub extra_root_certificates: Vec<Vec<u8>>,
    pub mailbox_tests: mailroom_engine::MailboxTestConfig,
    pub sync: mailroom_engine::SyncConfig,
    pub webhooks: mailroom_engine::WebhookConfig,
}

impl Config {
    pub fn resolve(args: &ServeArgs) -> Result<Self> {
        let provisional_data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        let config_path = args.config.clone().or_else(|| {
            let candidate = provisional_data_dir.join("mailroom.toml");
            candidate.exists().then_some(candidate)
        });
        let file = match &config_path {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("resolving {}", data_dir.display()))?;
        let listen_text = args
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = parse_listen(&listen_text)?;
        let database_url = args
            .database_url
            .clone()
            .or(file.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("mailroom.db").display()));
        if !database_url.starts_with("sqlite:")
            && !mailroom_store::postgres::is_postgres_url(&database_url)
        {
            anyhow::bail!(
                "database URL {database_url:?} is not supported: use sqlite://PATH or postgres://USER@HOST:PORT/DATABASE"
            );
        }
        let on_postgres = mailroom_store::postgres::is_postgres_url(&database_url);
        let extra_root_certificates = file
            .extra_root_certificates
            .iter()
            .map(|path| {
                std::fs::read(path)
                    .with_context(|| format!("reading root certificate {}", path.display()))
            })
            .collect::<Result<_>>()?;
        let engine = file.engine;
        let webhooks = file.webhooks;
        let ms = |value: Option<u64>, default: u64| Duration::from_millis(value.unwrap_or(default));
        let pickup_root = file
            .pickup_root
            .map(|root| data_dir.join(root))
            .unwrap_or_else(|| data_dir.join("pickup"));
        std::fs::create_dir_all(&pickup_root)
            .with_context(|| format!("creating the pickup root {}", pickup_root.display()))?;
        let pickup_root = pickup_root
            .canonicalize()
            .with_context(|| format!("resolving {}", pickup_root.display()))?;
        Ok(Self {
            pickup_root,
            data_dir,
            listen,
            database_url,
            database_connections: match file.database_connections {
                None => mailroom_store::DEFAULT_DATABASE_CONNECTIONS,
                Some(n) if (3..=10_000).contains(&n) => n,
                Some(n) => anyhow::bail!("database_connections is between 3 and 10000, not {n}"),
            },
            max_body_bytes: file.max_body_bytes.unwrap_or(10 * 1024 * 1024),
            sent_retention: file
                .sent_retention_days
                .map(|days| Duration::from_secs(u64::from(days) * 86_400)),
            retention_interval: ms(engine.retention_interval_ms, 3_600_000),
            event_retention: Duration::from_secs(
                u64::from(file.event_retention_days.unwrap_or(30).max(4)) * 86_400,
            ),
            blobs_in_database: match file.blob_store.as_deref() {
                None | Some("filesystem") => false,
                Some("database") if on_postgres => true,
                Some("database") => anyhow::bail!(
                    "blob_store = \"database\" needs PostgreSQL (database_url = \"postgres://…\"); on SQLite files are kept under the data folder"
                ),
                Some(other) => {
                    anyhow::bail!("blob_store is \"filesystem\" or \"database\", not {other:?}")
                }
            },
            max_attachment_bytes: file.max_attachment_bytes.unwrap_or(100 * 1024 * 1024),
            log_format: args
                .log_format
                .clone()
                .or(file.log_format)
                .unwrap_or_else(|| "text".into()),
            poll_interval: ms(engine.poll_interval_ms, 250),
            lease_duration: ms(engine.lease_ms, 60_000),
            rate_window: ms(engine.rate_window_ms, 60_000),
            retry_base: ms(engine.retry_base_ms, 30_000),
            retry_cap: ms(engine.retry_cap_ms, 3_600_000),
            hostname: match file.hostname {
                Some(name) => mailroom_core::account::parse_ehlo_name(&name)
                    .map_err(|e| anyhow::anyhow!("hostname in the config file: {}", e.reason))?,
                None => machine_hostname(),
            },
            public_url: match file.public_url {
                Some(url) => Some(parse_public_url(&url)?),
                None => None,
            },
            shutdown_grace: ms(engine.shutdown_grace_ms, 30_000),
            node_timeout: ms(engine.node_timeout_ms, 10_000),
            prefetch_per_slot: engine.prefetch_per_slot.unwrap_or(32),
            in_flow_delay: ms(engine.in_flow_delay_ms, 100),
            encode_budget_bytes: engine.encode_budget_bytes.unwrap_or(256 * 1024 * 1024),
            attachment_retention: ms(engine.attachment_retention_ms, 24 * 3600 * 1000),
            extra_root_certificates,
            mailbox_tests: mailroom_engine::MailboxTestConfig {
                retry_initial: ms(engine.mailbox_test_retry_ms, 60_000),
                timeout: ms(engine.mailbox_test_timeout_ms, 30_000),
                job_lease: ms(engine.job_lease_ms, 30_000),
                ..Default::default()
            },
            sync: mailroom_engine::SyncConfig {
                rescan: ms(engine.sync_rescan_ms, 2_000),
                hold: ms(engine.sync_hold_ms, 30_000),
                poll_at_least: engine.sync_poll_ms.map(Duration::from_millis),
                retry_initial: ms(engine.sync_retry_ms, 10_000),
                batch_messages: engine.sync_batch_messages.unwrap_or(200).clamp(1, 10_000),
                ..Default::default()
            },
            webhooks: mailroom_engine::WebhookConfig {
                allow_private_targets: match std::env::var("MAILROOM_WEBHOOKS_ALLOW_PRIVATE") {
                    Ok(value) => matches!(value.trim(), "true" | "1" | "yes"),
                    Err(_) => webhooks.allow_private_targets.unwrap_or(false),
                },
                ..Default::default()
            },
        })
    }
}

/// `http(s)://host[:port][/path]`, kept without its trailing slash.
fn parse_public_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim().trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "public_url in the config file must start with https:// or http://, not {raw:?}"
            )
        })?;
    if rest.is_empty()
        || rest.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || c == '"'
                || c == '<'
                || c == '>'
                || c == '?'
                || c == '#'
        })
    {
        anyhow::bail!("public_url in the config file is not a plain URL: {raw:?}");
    }
    Ok(trimmed.to_owned())
}

/// The system's host name as lettre finds it, when it is a usable EHLO name; else `localhost`.
fn machine_hostname() -> String {
    match lettre::transport::smtp::extension::ClientId::default() {
        lettre::transport::smtp::extension::ClientId::Domain(name)
            if mailroom_core::account::parse_ehlo_name(&name).is_ok() =>
        {
            name
        }
        _ => "localhost".into(),
    }
}

/// A listen address: `host:port` or `[v6]:port`, where host may be a name.
fn parse_listen(text: &str) -> Result<String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let valid = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
            && port.parse::<u16>().is_ok()
    });
    anyhow::ensure!(
        valid,
        "listen address {text:?} is not host:port (e.g. 127.0.0.1:8025 or localhost:8025)"
    );
    Ok(text.to_owned())
}

fn load_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("the config file {} is invalid", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mailroom.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nmax_body_bytes = 1234\n[engine]\nrate_window_ms = 500\n",
        )
        .unwrap();
        let args = ServeArgs {
            data_dir: Some(dir.path().into()),
            config: Some(file.clone()),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(config.max_body_bytes, 1234);
        assert_eq!(config.rate_window, Duration::from_millis(500));
        assert_eq!(config.lease_duration, Duration::from_secs(60));
        let args = ServeArgs {
            listen: Some("127.0.0.1:9001".into()),
            ..args
        };
        assert_eq!(Config::resolve(&args).unwrap().listen, "127.0.0.1:9001");
        let args = ServeArgs {
            listen: Some("localhost:9002".into()),
            ..args
        };
        assert_eq!(Config::resolve(&args).unwrap().listen, "localhost:9002");
        let args = ServeArgs {
            listen: Some("localhost".into()),
            ..args
        };
        assert!(Config::resolve(&args).is_err());
    }

    #[test]
    fn the_connections_to_the_database_default_to_24_and_fewer_than_three_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mailroom.toml");
        let resolve = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::resolve(&ServeArgs {
                data_dir: Some(dir.path().into()),
                config: Some(file.clone()),
                ..Default::default()
            })
        };
        assert_eq!(resolve("").unwrap().database_connections, 24);
        assert_eq!(
            resolve("database_connections = 5\n")
                .unwrap()
                .database_connections,
            5
        );
        let refused = resolve("database_connections = 2\n").unwrap_err();
        assert!(
            refused.to_string().contains("database_connections"),
            "{refused:#}"
        );
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mailroom.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        let args = ServeArgs {
            data_dir: Some(dir.path().into()),
            config: Some(file),
            ..Default::default()
        };
        assert!(
            Config::resolve(&args)
                .unwrap_err()
                .chain()
                .any(|e| e.to_string().contains("listne"))
        );
    }
}
