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
use tokio::signal::unix::{SignalKind, signal};

fn install_metrics() -> Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ],
        )?
        .install_recorder()
        .context("installing the metrics recorder")
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
        let pickup_dir = config.data_dir.join("pickup");
        let account = store
            .create_account(
                &AccountInput {
                    connector: ConnectorKind::Pickup,
                    name: "Pickup folder".into(),
                    email_address: EmailAddress::parse("mailroom@localhost")?,
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

pub async fn run(config: Config) -> Result<()> {
    let metrics = install_metrics()?;
    let store = Store::open(&config.database_url, secrets(&config)?)
        .await
        .context("opening the store")?;
    bootstrap(&store, &config).await?;
    let engine = Engine::new(
        store.clone(),
        EngineConfig {
            node_id: format!("node-{}", uuid::Uuid::new_v4()),
            poll_interval: config.poll_interval,
            lease_duration: config.lease_duration,
            rate_window: config.rate_window,
            retry: RetryPolicy {
                base_ms: config.retry_base.as_millis() as u64,
                cap_ms: config.retry_cap.as_millis() as u64,
            },
            prefetch_per_slot: config.prefetch_per_slot,
            in_flow_delay: config.in_flow_delay,
            blobs: BlobStore::new(config.data_dir.join("blobs")),
            encode_budget_bytes: config.encode_budget_bytes,
            attachment_retention: config.attachment_retention,
            connectors: ConnectorDefaults {
                smtp_timeout: config.smtp_timeout,
                extra_root_certificates: config.extra_root_certificates.clone(),
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
        default_pickup_dir: config.data_dir.join("pickup").display().to_string(),
        max_attachment_bytes: config.max_attachment_bytes,
    };
    let blobs = BlobStore::new(config.data_dir.join("blobs"));
    let router = mailroom_api::router(store.clone(), engine.clone(), settings, metrics, blobs);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
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
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;
    engine.shutdown();
    if tokio::time::timeout(config.shutdown_grace, engine_done)
        .await
        .is_err()
    {
        tracing::warn!(
            event = "shutdown_timeout",
            "sends still in flight after the grace period; their leases will expire and they will be retried"
        );
    }
    delivery.shutdown_background();
    tracing::info!(event = "stopped", "mailroom stopped");
    Ok(())
}
