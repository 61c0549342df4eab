//! The composition root of `mailroom serve`: configuration → store → engine → router, run together
//! until a shutdown signal.

use crate::config::Config;
use anyhow::{Context, Result};
use mailroom_api::ApiSettings;
use mailroom_core::account::{
    AccountLimits, ConnectorKind, DEFAULT_CONCURRENCY_LIMIT, DEFAULT_MAX_ATTEMPTS, Security,
    SenderType,
};
use mailroom_core::address::EmailAddress;
use mailroom_core::retry::RetryPolicy;
use mailroom_engine::{ConnectorDefaults, Engine, EngineConfig};
use mailroom_store::{AccountInput, BlobStore, SecretBox, Store, write_private_file};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::io::Write;
use std::path::Path;
use tokio::signal::unix::{SignalKind, signal};

fn install_metrics(node: &str) -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        // Several nodes may share one database: every series names its node.
        .add_global_label("node", node)
        .set_buckets_for_metric(
            Matcher::Suffix("seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ],
        )?
        .install_recorder()
        .context("installing the metrics recorder")
        .inspect(|_| describe_metrics())
}

/// The `# HELP` line of every metric mailroom records.
fn describe_metrics() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "mailroom_messages_sent_total",
        "Messages the provider accepted, by account and connector."
    );
    describe_counter!(
        "mailroom_messages_failed_total",
        "Messages that failed for good (permanent failure, attempts exhausted), by account and connector."
    );
    describe_counter!(
        "mailroom_send_retries_total",
        "Attempts that failed transiently (or with an unknown outcome) and will be retried, by account and connector."
    );
    describe_counter!(
        "mailroom_new_mail_queued_total",
        "New mail due now that was stored queued instead of being sent at once, by reason: full (every place of its account's lane stayed taken for in_flow_delay), behind (older mail of the account waits in the queue), store_behind (the store found older mail queued by another writer or node), unavailable (stopping, unknown account, rate window full)."
    );
    describe_counter!(
        "mailroom_smtp_connections_total",
        "SMTP connections opened, by account and result (succeeded, failed)."
    );
    describe_counter!(
        "mailroom_smtp_authentications_total",
        "SMTP authentications, by account and result (succeeded, failed)."
    );
    describe_gauge!(
        "mailroom_outbox_messages",
        "Messages in the outbox by status (draft, queued, sending, failed), read from the store at each scrape; sent mail is counted by mailroom_messages_sent_total."
    );
    describe_histogram!(
        "mailroom_send_duration_seconds",
        Unit::Seconds,
        "How long one attempt took, by connector."
    );
    describe_histogram!(
        "mailroom_delivery_latency_seconds",
        Unit::Seconds,
        "From acceptance (202) to the provider's acceptance, by connector."
    );
    describe_histogram!(
        "mailroom_store_operation_seconds",
        Unit::Seconds,
        "Duration of the store's grouped writes and log restarts, by operation."
    );
    describe_histogram!(
        "mailroom_store_batch_size",
        "Requests folded into one grouped write, by operation."
    );
}

/// The store the config names, with its secret key and connection cap.
async fn open_store(config: &Config) -> Result<Store> {
    Store::open_with(
        &config.database_url,
        secrets(config)?,
        config.database_connections,
    )
    .await
    .context("opening the store")
}

fn secrets(config: &Config) -> Result<SecretBox> {
    match std::env::var("MAILROOM_SECRET_KEY") {
        Ok(key) => SecretBox::from_encoded_key(&key).context("MAILROOM_SECRET_KEY"),
        Err(_) => SecretBox::load_or_create(&config.data_dir.join("secret.key"))
            .context("loading the secret key"),
    }
}

/// On a fresh install: an admin token (written to `<data-dir>/admin-token` and printed once) and a
/// pickup-folder account as the default account.
async fn bootstrap(store: &Store, config: &Config) -> Result<()> {
    // Installations from before users existed get an admin user owning their tokens.
    let fresh_install = !store.has_tokens().await?;
    let admin = store.ensure_admin_user().await?;
    if !fresh_install {
        return Ok(());
    }
    let (_, token) = store.create_token(Some(admin.id), "admin", None).await?;
    let token_path = config.data_dir.join("admin-token");
    write_private_file(&token_path, format!("{token}\n").as_bytes())
        .context("writing the admin token")?;
    println!(
        "Created the admin API token (shown once; also stored in {} with mode 0600):",
        token_path.display()
    );
    println!("  {token}");
    if store.accounts().await?.is_empty() {
        let pickup_dir = config.pickup_root.clone();
        let account = store
            .create_account(
                &AccountInput {
                    connector: ConnectorKind::Pickup,
                    name: "Pickup folder".into(),
                    // The machine's name, so that Message-IDs carry it rather than `localhost`.
                    email_address: EmailAddress::parse(&format!("mailroom@{}", config.hostname))
                        .or_else(|_| EmailAddress::parse("mailroom@localhost"))?,
                    sender_name: Some("mailroom".into()),
                    sender_type: SenderType::SpecificUser,
                    host: None,
                    port: None,
                    security: Security::None,
                    username: None,
                    pickup_dir: Some(pickup_dir.display().to_string()),
                    limits: AccountLimits::new(
                        0,
                        i64::from(DEFAULT_CONCURRENCY_LIMIT),
                        i64::from(DEFAULT_MAX_ATTEMPTS),
                    )?,
                    substitute_mode: None,
                    substitute_address: None,
                    substitute_name: None,
                    options: Default::default(),
                },
                None,
            )
            .await?;
        println!(
            "Created the default account {} (pickup folder {}).",
            account.id,
            pickup_dir.display()
        );
    }
    Ok(())
}

/// The data folder's lock: held for the life of the process, so a second `serve` on the same folder
/// is refused instead of sharing its database, keys and pickup folder. The operating system releases
/// it when the process ends, however it ends.
struct DataFolderLock {
    _file: std::fs::File,
}

impl DataFolderLock {
    fn acquire(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("mailroom.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                anyhow::bail!(
                    "another mailroom is already serving the data folder {}{}; stop it first, or give this one its own --data-dir",
                    data_dir.display(),
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" (process {holder})")
                    }
                );
            }
            Err(std::fs::TryLockError::Error(error)) => {
                return Err(error).with_context(|| format!("locking {}", path.display()));
            }
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

/// This data folder's node id, kept in `<data-dir>/node-id` so that a restarted process knows which
/// leases its previous life held.
pub(crate) fn node_id(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_owned()),
        _ => {
            let id = format!("node-{}", uuid::Uuid::new_v4());
            std::fs::write(&path, format!("{id}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(id)
        }
    }
}

/// `mailroom admin recover`: with the server stopped (the data folder's lock says so), makes sure an
/// enabled `email-admin` user exists and gives it a new token, printed and written to `admin-token`.
pub async fn recover_admin(config: Config) -> Result<()> {
    let _lock = DataFolderLock::acquire(&config.data_dir)?;
    let store = open_store(&config).await?;
    let (admin, token) = store
        .recover_admin()
        .await
        .context("recovering the admin user")?;
    let token_path = config.data_dir.join("admin-token");
    write_private_file(&token_path, format!("{token}\n").as_bytes())
        .context("writing the admin token")?;
    println!(
        "User {:?} ({}) is enabled and holds email-admin. Its new token (also in {}, mode 0600):",
        admin.name,
        admin.id,
        token_path.display()
    );
    println!("  {token}");
    Ok(())
}

pub async fn run(config: Config) -> Result<()> {
    let _lock = DataFolderLock::acquire(&config.data_dir)?;
    // Bind before anything else happens (a token printed, a runtime started), so that a taken port
    // ends the process with one line naming the address.
    let listener = tokio::net::TcpListener::bind(config.listen.as_str())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let metrics = install_metrics(&node_id(&config.data_dir)?)?;
    let store = open_store(&config).await?;
    bootstrap(&store, &config).await?;
    let node_id = node_id(&config.data_dir)?;
    let recovered = store
        .recover_leases_held_by(&node_id, mailroom_store::now_ms())
        .await
        .context("recovering the leases of the previous process")?;
    if !recovered.is_empty() {
        tracing::warn!(
            event = "leases_recovered_at_start",
            count = recovered.len(),
            "messages that were being sent when mailroom last stopped are queued again (each has an interrupted attempt)"
        );
    }
    let blobs = if config.blobs_in_database {
        BlobStore::in_database(&store).context("blob_store = \"database\" needs PostgreSQL")?
    } else {
        BlobStore::new(config.data_dir.join("blobs"))
    };
    let engine = Engine::new(
        store.clone(),
        EngineConfig {
            node_id: node_id.clone(),
            poll_interval: config.poll_interval,
            lease_duration: config.lease_duration,
            rate_window: config.rate_window,
            retry: RetryPolicy {
                base_ms: config.retry_base.as_millis() as u64,
                cap_ms: config.retry_cap.as_millis() as u64,
            },
            prefetch_per_slot: config.prefetch_per_slot,
            in_flow_delay: config.in_flow_delay,
            blobs: blobs.clone(),
            encode_budget_bytes: config.encode_budget_bytes,
            attachment_retention: config.attachment_retention,
            host: config.hostname.clone(),
            node_timeout: config.node_timeout,
            sent_retention: config.sent_retention,
            retention_interval: config.retention_interval,
            event_retention: config.event_retention,
            mailbox_tests: config.mailbox_tests.clone(),
            sync: config.sync.clone(),
            webhooks: config.webhooks.clone(),
            connectors: ConnectorDefaults {
                hostname: config.hostname.clone(),
                extra_root_certificates: config.extra_root_certificates.clone(),
                pickup_root: config.pickup_root.clone(),
                node_id: node_id.clone(),
                node_timeout: config.node_timeout,
                live_nodes: Default::default(),
            },
        },
    );
    // Delivery gets a runtime (and threads) of its own: on the API's runtime each SMTP reply would
    // wait behind every HTTP request queued at that moment, and delivery fell behind acceptance.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let delivery = tokio::runtime::Builder::new_multi_thread()
        .worker_threads((threads / 2).max(1))
        .thread_name("mailroom-delivery")
        .enable_all()
        .build()
        .context("starting the delivery runtime")?;
    let engine_done = {
        let _delivery = delivery.enter();
        engine.start()
    };
    let settings = ApiSettings {
        max_body_bytes: config.max_body_bytes,
        pickup_root: config.pickup_root.clone(),
        max_attachment_bytes: config.max_attachment_bytes,
        public_url: config.public_url.clone(),
        webhooks_allow_private: config.webhooks.allow_private_targets,
    };
    let api = mailroom_api::router(store.clone(), engine.clone(), settings, metrics, blobs);
    // The console's pages call the API in process, as the signed-in user.
    let router = api
        .clone()
        .merge(mailroom_console::router(api, store.clone()));
    let address = listener.local_addr()?;
    println!("mailroom listening on http://{address}");
    tracing::info!(event = "started", %address, data_dir = %config.data_dir.display(), "mailroom started");

    let shutdown = async {
        let mut terminate =
            signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!(
            event = "stopping",
            "shutdown requested: finishing in-flight sends"
        );
    };
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
    .context("serving HTTP");
    engine.shutdown();
    if tokio::time::timeout(config.shutdown_grace, engine_done)
        .await
        .is_err()
    {
        tracing::warn!(
            event = "shutdown_timeout",
            "sends still in flight after the grace period; their leases will expire and they will be retried"
        );
    } else if let Err(error) = store.node_stopped(&node_id, mailroom_store::now_ms()).await {
        tracing::warn!(%error, "recording this node's clean stop failed");
    }
    delivery.shutdown_background();
    served?;
    tracing::info!(event = "stopped", "mailroom stopped");
    Ok(())
}

/// `mailroom store copy`: with every server on both stores stopped, copies the source into the
/// empty target and checks each table's count and checksum.
pub async fn copy_store(args: crate::cli::StoreCopyArgs) -> Result<()> {
    // Secrets are copied sealed: no key is needed to copy (the target's servers need the source's).
    let key = SecretBox::from_key(&rand_key()).context("a throwaway key")?;
    let mut locks = Vec::new();
    for url in [&args.from, &args.to] {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let folder = Path::new(path).parent().unwrap_or(Path::new("."));
            if folder.join("mailroom.lock").exists() {
                locks.push(DataFolderLock::acquire(folder).with_context(|| {
                    format!("{url} belongs to a running server: stop it before copying")
                })?);
            }
        }
    }
    let from = Store::open(&args.from, key.clone())
        .await
        .with_context(|| format!("opening {}", args.from))?;
    let to = Store::open(&args.to, key)
        .await
        .with_context(|| format!("opening {}", args.to))?;
    let now = mailroom_store::now_ms();
    for store in [&from, &to] {
        if let Some(node) = store.nodes().await?.into_iter().find(|n| {
            n.declared_dead_at_ms.is_none()
                && n.stopped_at_ms.is_none()
                && now - n.last_heartbeat_ms < 30_000
        }) {
            anyhow::bail!(
                "node {} on {} was alive {} s ago: stop every server on both stores before copying",
                node.id,
                node.host,
                (now - node.last_heartbeat_ms) / 1000
            );
        }
    }
    let report = from
        .copy_into(&to, |table, rows| println!("copied {table}: {rows} rows"))
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    if let Some(folder) = &args.blobs {
        let blobs = BlobStore::in_database(&to).context(
            "--blobs copies files into a PostgreSQL target; on SQLite keep the blobs folder",
        )?;
        let mut copied = 0;
        for entry in walk_files(folder)? {
            let file = tokio::fs::File::open(&entry).await?;
            let stream = tokio_util::io::ReaderStream::new(file);
            let (sha256, _) = blobs
                .write_stream(stream, u64::MAX)
                .await
                .with_context(|| format!("copying {}", entry.display()))?;
            let expected = entry
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if sha256 != expected {
                anyhow::bail!(
                    "{} does not hold the content its name says (SHA-256 {sha256})",
                    entry.display()
                );
            }
            copied += 1;
        }
        println!("copied {copied} files into the database blob store");
    }
    println!("checked: every table has the same rows and checksum in both stores");
    for table in report {
        println!(
            "  {:<22} {:>10} rows  {}",
            table.table, table.rows, table.checksum
        );
    }
    drop(locks);
    Ok(())
}

/// The files of a blob folder (`<two hex digits>/<sha256>`), skipping temporary ones.
fn walk_files(folder: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for shard in
        std::fs::read_dir(folder).with_context(|| format!("reading {}", folder.display()))?
    {
        let shard = shard?.path();
        if !shard.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(&shard)? {
            let file = file?.path();
            if file.is_file()
                && !file
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                files.push(file);
            }
        }
    }
    Ok(files)
}

/// A random key (two random UUIDs' bytes), never stored: a copy moves secrets still sealed.
fn rand_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    key
}
