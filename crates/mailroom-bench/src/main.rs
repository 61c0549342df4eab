//! mailroom benchmarks against real peers. `cargo run --release -p mailroom-bench -- outbound`
//! starts a Postfix `smtp-sink`, measures the machine's raw SMTP ceiling with `smtp-source` against it,
//! then pushes messages through mailroom's HTTP API to an unlimited SMTP account on the same sink and
//! reports throughput, accept latency, peak server memory and the ratio to the raw ceiling.

mod archive;
mod inbound;
mod webhooks;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use mailroom_testkit::{MailroomServer, SmtpSink};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Outbound throughput: HTTP API → outbox → SMTP.
    Outbound {
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Message body size in bytes.
        #[arg(long, default_value_t = 2048)]
        size: usize,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 128)]
        clients: usize,
        /// SMTP sessions in parallel, for both smtp-source and the mailroom account.
        #[arg(long, default_value_t = 16)]
        sessions: usize,
        /// `postgres`: one run measures SQLite with one node and PostgreSQL with 1 to `--nodes`
        /// nodes, each against the same raw ceiling.
        #[arg(long, default_value = "sqlite")]
        database: String,
        /// The most nodes on PostgreSQL (with `--database postgres`).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Connections each node holds to PostgreSQL (`database_connections`; the default is the
        /// server's).
        #[arg(long, default_value_t = mailroom_store::DEFAULT_DATABASE_CONNECTIONS)]
        database_connections: u32,
    },
    /// Listing speed over a large archive: p50/p95 of each listing route, first page and 100 pages
    /// deep, for an administrator and for users under each view policy.
    Archive {
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        /// `sqlite` or `postgres` (a new database on the server at 127.0.0.1:5432).
        #[arg(long, default_value = "sqlite")]
        database: String,
    },
    /// Template rendering throughput of the built-in invoice template, on one thread.
    Templates {
        #[arg(long, default_value_t = 200_000)]
        renders: usize,
    },
    /// Inbound sync: initial sync of a Dovecot mailbox (70 % 4 KiB, 25 % 60 KiB with an
    /// attachment, 5 % 1 MiB) against a plain IMAP fetch of the same mailbox, then IDLE latency.
    Inbound {
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// New messages appended one at a time to time IDLE delivery.
        #[arg(long, default_value_t = 20)]
        idle_samples: usize,
        /// Then one message with an attachment of this many MiB, synchronized by a fresh server
        /// (0: skipped).
        #[arg(long, default_value_t = 100)]
        large_mib: usize,
    },
    /// Webhook delivery: latency (p50/p99) from a message's outcome to the receiver at a steady
    /// send rate, then events lost when the receiver is down and mailroom is SIGKILLed meanwhile.
    Webhooks {
        /// Messages sent per second while measuring latency.
        #[arg(long, default_value_t = 1_000.0)]
        rate: f64,
        /// For this many seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// How long the receiver is down (mail keeps coming at a tenth of the rate).
        #[arg(long, default_value_t = 300)]
        outage_seconds: u64,
    },
    /// Memory with large attachments: peak server RSS sending 1 and N messages that each carry a file.
    Attachments {
        /// Attachment size in MiB.
        #[arg(long, default_value_t = 100)]
        size_mib: u64,
        /// How many such messages at once in the second run.
        #[arg(long, default_value_t = 4)]
        concurrent: usize,
    },
}

/// The `mailroom` binary next to this benchmark's own binary (same target folder and profile).
fn mailroom_binary() -> Result<PathBuf> {
    let here = std::env::current_exe()?;
    let binary = here.parent().context("no parent folder")?.join("mailroom");
    if let Ok(cargo) = std::env::var("CARGO") {
        let profile = if here.to_string_lossy().contains("/release/") {
            vec!["--release"]
        } else {
            vec![]
        };
        let status = Command::new(cargo)
            .args(["build", "-p", "mailroom"])
            .args(profile)
            .status()?;
        if !status.success() {
            bail!("building mailroom failed");
        }
    }
    if !binary.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p mailroom`",
            binary.display()
        );
    }
    Ok(binary)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

// One thread for the load generator: on a small machine every core it does not use is left to the
// server and the sink, as with Postfix's single-threaded smtp-source.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    match Args::parse().bench {
        Bench::Outbound {
            messages,
            size,
            clients,
            sessions,
            database,
            nodes,
            database_connections,
        } => match database.as_str() {
            "sqlite" => outbound(messages, size, clients, sessions).await,
            "postgres" => {
                let config = format!("database_connections = {database_connections}\n");
                outbound_nodes(messages, size, clients, sessions, nodes, &config).await
            }
            other => bail!("--database is sqlite or postgres, not {other:?}"),
        },
        Bench::Templates { renders } => templates(renders),
        Bench::Inbound {
            messages,
            idle_samples,
            large_mib,
        } => inbound::inbound(&mailroom_binary()?, messages, idle_samples, large_mib).await,
        Bench::Archive { messages, database } => {
            let postgres = match database.as_str() {
                "sqlite" => false,
                "postgres" => true,
                other => bail!("--database is sqlite or postgres, not {other:?}"),
            };
            archive::archive(&mailroom_binary()?, messages, postgres).await
        }
        Bench::Webhooks {
            rate,
            seconds,
            outage_seconds,
        } => webhooks::webhooks(&mailroom_binary()?, rate, seconds, outage_seconds).await,
        Bench::Attachments {
            size_mib,
            concurrent,
        } => {
            let binary = mailroom_binary()?;
            for count in [1, concurrent] {
                large_attachments(&binary, size_mib, count).await?;
            }
            Ok(())
        }
    }
}

async fn outbound(messages: usize, size: usize, clients: usize, sessions: usize) -> Result<()> {
    let binary = mailroom_binary()?;
    let sink = SmtpSink::start_without_dumps(&[])?;
    println!("smtp-sink on 127.0.0.1:{}", sink.port);

    // The raw ceiling: Postfix's own load generator against the same sink, measured before and
    // again after mailroom's run; the ratio uses their mean, so that a noisy moment on a shared
    // machine weighs less.
    let raw_before = raw_ceiling(sink.port, messages, size, sessions)?;
    println!("raw ceiling (smtp-source, {sessions} sessions): {raw_before:.0} messages/s");

    let server = MailroomServer::start(&binary, "").await?;
    server
        .add_default_smtp_account(
            "bench",
            sink.port,
            json!({"rate_limit_per_minute": 0, "concurrency_limit": sessions}),
        )
        .await?;
    let servers = [server];
    let Load {
        latencies,
        straight_to_sending,
        accept_seconds,
        deliver_seconds,
    } = drive(&servers, messages, size, clients).await?;
    let [server] = servers;
    let raw_after = raw_ceiling(sink.port, messages, size, sessions)?;
    println!("raw ceiling again after mailroom's run: {raw_after:.0} messages/s");
    let raw_per_second = (raw_before + raw_after) / 2.0;
    let delivered_per_second = messages as f64 / deliver_seconds;
    let rss = server.peak_rss_mib().unwrap_or(f64::NAN);
    println!(
        "mailroom: {messages} messages of {size} bytes, {clients} HTTP clients, {sessions} SMTP sessions"
    );
    println!(
        "  accepted/s            {:.0}",
        messages as f64 / accept_seconds
    );
    println!("  delivered/s           {delivered_per_second:.0}");
    println!(
        "  skipped the queue     {:.0} %",
        straight_to_sending as f64 * 100.0 / messages as f64
    );
    println!(
        "  accept latency p50    {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0
    );
    println!(
        "  accept latency p99    {:.2} ms",
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    println!("  peak server RSS       {rss:.0} MiB");
    println!(
        "  delivered/s ÷ raw     {:.2} (mean raw ceiling {raw_per_second:.0}/s)",
        delivered_per_second / raw_per_second
    );
    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await?
        .text()
        .await?;
    let metric = |name: &str| metric_sum(&metrics, name);
    let transactions = metric("mailroom_send_duration_seconds_count");
    if transactions > 0.0 {
        println!(
            "  mean SMTP transaction {:.2} ms",
            metric("mailroom_send_duration_seconds_sum") / transactions * 1000.0
        );
    }
    // At most the account's connection limit (`--sessions`) unless a connection broke.
    println!(
        "  SMTP connections      {:.0}",
        metric("mailroom_smtp_connections_total")
    );
    for operation in [
        "write_transaction",
        "claim",
        "record_outcomes",
        "restart_log",
    ] {
        let label = format!("operation=\"{operation}\"");
        let metric = |name: &str| labelled_sum(&metrics, name, &label);
        let count = metric("mailroom_store_operation_seconds_count");
        if count > 0.0 {
            // Claims that found nothing record no batch size.
            let batches = metric("mailroom_store_batch_size_count");
            let batch = if batches > 0.0 {
                format!(
                    ", mean batch {:.1}",
                    metric("mailroom_store_batch_size_sum") / batches
                )
            } else {
                String::new()
            };
            println!(
                "  store {operation:<17} {count:.0} calls, mean {:.2} ms{batch}",
                metric("mailroom_store_operation_seconds_sum") / count * 1000.0,
            );
        }
    }
    Ok(())
}

/// The sum of the samples in Prometheus text `metrics` whose line starts with `prefix` (a metric
/// name, with or without labels).
fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    labelled_sum(metrics, prefix, "")
}

/// [`metric_sum`] of the samples of `name` that carry `label` (e.g. `operation="claim"`) among
/// their labels, wherever it stands (every sample also carries the node's label).
fn labelled_sum(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            label.is_empty()
                || l.split_once('{')
                    .and_then(|(_, labels)| labels.split_once('}'))
                    .is_some_and(|(labels, _)| labels.split(',').any(|p| p == label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One store and node count to measure.
struct Setup {
    label: String,
    postgres: bool,
    nodes: usize,
}

/// `outbound --database postgres --nodes N`: the raw ceiling, then SQLite with one node and
/// PostgreSQL with 1..=N nodes (on one database, one account whose concurrency limit holds for all
/// nodes together), each pushed by the same clients spread over the nodes; delivered/s of each as
/// a fraction of the raw ceiling (the mean of a measure before and after).
async fn outbound_nodes(
    messages: usize,
    size: usize,
    clients: usize,
    sessions: usize,
    max_nodes: usize,
    config: &str,
) -> Result<()> {
    let binary = mailroom_binary()?;
    let sink = SmtpSink::start_without_dumps(&[])?;
    let raw_before = raw_ceiling(sink.port, messages, size, sessions)?;
    println!("raw ceiling (smtp-source, {sessions} sessions): {raw_before:.0} messages/s");
    let mut setups = vec![Setup {
        label: "SQLite, 1 node".into(),
        postgres: false,
        nodes: 1,
    }];
    for nodes in 1..=max_nodes.max(1) {
        setups.push(Setup {
            label: format!(
                "PostgreSQL, {nodes} node{}",
                if nodes > 1 { "s" } else { "" }
            ),
            postgres: true,
            nodes,
        });
    }
    let mut results = Vec::new();
    for setup in &setups {
        let servers = if setup.postgres {
            MailroomServer::start_cluster(&binary, config, setup.nodes).await?
        } else {
            vec![MailroomServer::start_on(&binary, "", false).await?]
        };
        servers[0]
            .add_default_smtp_account(
                "bench",
                sink.port,
                json!({"rate_limit_per_minute": 0, "concurrency_limit": sessions}),
            )
            .await?;
        let cpu_before = CpuUse::read();
        let load = drive(&servers, messages, size, clients).await?;
        let cpu = cpu_before.and_then(|before| Some(CpuUse::read()?.since(&before)));
        let per_second = messages as f64 / load.deliver_seconds;
        let (p50, p99) = (
            percentile(&load.latencies, 0.50),
            percentile(&load.latencies, 0.99),
        );
        println!(
            "{}: {per_second:.0} delivered/s (accept latency p50 {:.2} ms, p99 {:.2} ms; {:.0}% skipped the queue)",
            setup.label,
            p50.as_secs_f64() * 1000.0,
            p99.as_secs_f64() * 1000.0,
            load.straight_to_sending as f64 * 100.0 / messages as f64
        );
        if let Some(cpu) = cpu {
            println!("  {}", cpu.per_message(messages, load.deliver_seconds));
        }
        // Why mail that could not skip the queue was queued, summed over the nodes; and what
        // each node sent (an uneven share shows as one node sending long after the others).
        let mut reasons: std::collections::BTreeMap<String, f64> = Default::default();
        for (n, server) in servers.iter().enumerate() {
            let metrics = reqwest::get(format!("{}/metrics", server.base_url))
                .await?
                .text()
                .await?;
            for line in metrics
                .lines()
                .filter(|l| l.starts_with("mailroom_new_mail_queued_total{"))
            {
                let reason = line
                    .split("reason=\"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("?")
                    .to_owned();
                *reasons.entry(reason).or_default() += metric_sum(line, "");
            }
            if servers.len() > 1 {
                let sends = metric_sum(&metrics, "mailroom_send_duration_seconds_count");
                let outcomes = "operation=\"record_outcomes\"";
                let batches = labelled_sum(&metrics, "mailroom_store_batch_size_count", outcomes);
                println!(
                    "  node {}: {sends:.0} sends (mean {:.2} ms), {:.0} SMTP connections, {batches:.0} outcome batches (mean {:.1})",
                    n + 1,
                    metric_sum(&metrics, "mailroom_send_duration_seconds_sum") / sends * 1000.0,
                    metric_sum(&metrics, "mailroom_smtp_connections_total"),
                    labelled_sum(&metrics, "mailroom_store_batch_size_sum", outcomes) / batches,
                );
            }
        }
        if !reasons.is_empty() {
            let list: Vec<String> = reasons.iter().map(|(r, c)| format!("{r} {c:.0}")).collect();
            println!("  queued because: {}", list.join(", "));
        }
        results.push(per_second);
        drop(servers);
    }
    let raw_after = raw_ceiling(sink.port, messages, size, sessions)?;
    let raw = (raw_before + raw_after) / 2.0;
    println!("raw ceiling again: {raw_after:.0} messages/s (mean {raw:.0})");
    println!("| store | delivered/s | ÷ raw ceiling | ÷ PostgreSQL 1 node |");
    println!("|---|---|---|---|");
    let pg_one = results.get(1).copied().unwrap_or(f64::NAN);
    for (setup, per_second) in setups.iter().zip(&results) {
        println!(
            "| {} | {per_second:.0} | {:.2} | {} |",
            setup.label,
            per_second / raw,
            if setup.postgres {
                format!("{:.2}", per_second / pg_one)
            } else {
                "—".into()
            }
        );
    }
    Ok(())
}

/// CPU time used on this machine, in clock ticks: by each kind of process that takes part in a run
/// (read from `/proc/<pid>/stat`, whole processes with all their threads) and by the whole machine
/// (`/proc/stat`). Every process of a run shares the same cores, so CPU per delivered message, by
/// process, is what a throughput figure is made of. `None` where `/proc` cannot be read.
#[derive(Default)]
struct CpuUse {
    /// PostgreSQL's processes, mailroom's, smtp-sink's, and the bench's own (its HTTP clients).
    by_kind: [u64; 4],
    busy: u64,
    all: u64,
}

impl CpuUse {
    const KINDS: [&str; 4] = ["PostgreSQL", "mailroom", "smtp-sink", "bench client"];

    fn read() -> Option<Self> {
        let mut cpu = CpuUse::default();
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        // cpu  user nice system idle iowait irq softirq steal ...
        let ticks: Vec<u64> = machine
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        cpu.all = ticks.iter().take(8).sum();
        cpu.busy = cpu.all - ticks.get(3)? - ticks.get(4)?;
        let own = std::process::id().to_string();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue; // gone meanwhile
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let kind = match &stat[open + 1..close] {
                _ if pid == own => 3,
                "postgres" => 0,
                "mailroom" => 1,
                "smtp-sink" => 2,
                _ => continue,
            };
            // After the command: state, then fields 4 onwards; utime and stime are fields 14 and 15.
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let used =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            cpu.by_kind[kind] += used;
        }
        Some(cpu)
    }

    /// What was used since `before` (a process that ended meanwhile is not counted).
    fn since(&self, before: &Self) -> Self {
        let mut by_kind = [0; 4];
        for (kind, used) in by_kind.iter_mut().enumerate() {
            *used = self.by_kind[kind].saturating_sub(before.by_kind[kind]);
        }
        Self {
            by_kind,
            busy: self.busy.saturating_sub(before.busy),
            all: self.all.saturating_sub(before.all),
        }
    }

    /// e.g. `CPU per message: PostgreSQL 96 µs, mailroom 100 µs, …; cores 89 % busy`.
    fn per_message(&self, messages: usize, seconds: f64) -> String {
        // Clock ticks are 1/100 s on Linux (`USER_HZ`, fixed by the kernel's ABI).
        let micros = |ticks: u64| ticks as f64 * 10_000.0 / messages as f64;
        let parts: Vec<String> = Self::KINDS
            .iter()
            .zip(self.by_kind)
            .map(|(kind, ticks)| format!("{kind} {:.0} µs", micros(ticks)))
            .collect();
        format!(
            "CPU per message: {}; the machine {:.0} µs; cores {:.0} % busy over {seconds:.1} s",
            parts.join(", "),
            micros(self.busy),
            self.busy as f64 * 100.0 / self.all.max(1) as f64,
        )
    }
}

/// What pushing a batch through the servers measured.
struct Load {
    /// Accept latency of every request, sorted.
    latencies: Vec<Duration>,
    /// Answers that said `sending`: the message skipped the queue.
    straight_to_sending: usize,
    /// From the first request to the last answer.
    accept_seconds: f64,
    /// From the first request until the outbox was empty.
    deliver_seconds: f64,
}

/// Pushes `messages` through the servers and waits until every one was delivered (none failed).
///
/// Like wrk: each client owns a keep-alive connection (clients spread over the servers) and writes
/// the same prebuilt HTTP/1.1 request on it, reading only the status line, Content-Length and body
/// of each answer. The generator shares the cores with the servers and the sink, so it must cost
/// little (it runs on one thread, as smtp-source does).
async fn drive(
    servers: &[MailroomServer],
    messages: usize,
    size: usize,
    clients: usize,
) -> Result<Load> {
    const SENDING: &[u8] = br#""status":"sending""#;
    let body = "x"
        .repeat(size.saturating_sub(80))
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    // Serialized once: the load generator should spend its CPU on HTTP, not on JSON.
    let request = serde_json::to_vec(
        &json!({"to": ["sink@example.com"], "subject": "benchmark message", "text": body}),
    )?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for client in 0..clients {
        let server = &servers[client % servers.len()];
        let address = server
            .base_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let mut head = format!(
            "POST /v1/messages HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            server.token,
            request.len()
        )
        .into_bytes();
        head.extend_from_slice(&request);
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut connection = HttpConnection::open(&address).await?;
            let mut latencies = Vec::new();
            let mut straight = 0usize;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < messages {
                let sent = Instant::now();
                let (status, answer) = connection.exchange(&head).await?;
                if status != 202 {
                    bail!(
                        "the API answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
                latencies.push(sent.elapsed());
                if answer
                    .windows(SENDING.len())
                    .any(|window| window == SENDING)
                {
                    straight += 1;
                }
            }
            Ok::<_, anyhow::Error>((latencies, straight))
        }));
    }
    let mut latencies = Vec::with_capacity(messages);
    let mut straight_to_sending = 0;
    for worker in workers {
        let (worker_latencies, straight) = worker.await??;
        latencies.extend(worker_latencies);
        straight_to_sending += straight;
    }
    let accept_seconds = started.elapsed().as_secs_f64();
    // Waiting for the outbox to empty: counting what is still queued or being sent stays cheap,
    // while counting the sent archive grows with every message. The count still costs the
    // servers some work, so it is asked for less often while much is left (at most ten thousand
    // messages a second are delivered: a thousand left take at least a tenth of a second).
    loop {
        let (_, pending) = servers[0]
            .get("/v1/outbox?status=queued,sending&limit=1")
            .await?;
        let left = pending["total"].as_u64();
        if left == Some(0) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("not every message was delivered within 10 minutes");
        }
        let pause = left.map_or(50, |left| (left / 10).clamp(50, 500));
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    let deliver_seconds = started.elapsed().as_secs_f64();
    // Nothing waits and nothing failed: every message was sent (the sent archive's own total is
    // exact only up to a thousand).
    let (_, failed) = servers[0].get("/v1/outbox?status=failed&limit=1").await?;
    if failed["total"].as_u64() != Some(0) {
        bail!("{} of {messages} messages failed", failed["total"]);
    }
    latencies.sort();
    Ok(Load {
        latencies,
        straight_to_sending,
        accept_seconds,
        deliver_seconds,
    })
}

/// Messages per second Postfix's `smtp-source` delivers to the sink on `port`.
fn raw_ceiling(port: u16, messages: usize, size: usize, sessions: usize) -> Result<f64> {
    let started = Instant::now();
    let status = Command::new("/usr/sbin/smtp-source")
        .args([
            "-d",
            "-l",
            &size.to_string(),
            "-m",
            &messages.to_string(),
            "-s",
            &sessions.to_string(),
            "-f",
            "bench@example.com",
            "-t",
            "sink@example.com",
        ])
        .arg(format!("127.0.0.1:{port}"))
        .status()
        .context("running smtp-source")?;
    if !status.success() {
        bail!("smtp-source failed");
    }
    Ok(messages as f64 / started.elapsed().as_secs_f64())
}

/// Sends `count` messages at once, each with the same `size_mib` attachment, and reports the server's peak RSS.
async fn large_attachments(binary: &std::path::Path, size_mib: u64, count: usize) -> Result<()> {
    let sink = SmtpSink::start_without_dumps(&[])?;
    let limit = (size_mib + 1) * 1024 * 1024;
    let server =
        MailroomServer::start(binary, &format!("max_attachment_bytes = {limit}\n")).await?;
    server
        .add_default_smtp_account("large", sink.port, json!({"concurrency_limit": count}))
        .await?;
    let baseline = server.peak_rss_mib().unwrap_or(f64::NAN);
    // Upload in 1 MiB chunks so the benchmark client does not hold the file either.
    let chunk = Arc::new(vec![0x5au8; 1024 * 1024]);
    let chunks = (0..size_mib).map(move |_| Ok::<_, std::io::Error>(chunk.as_ref().clone()));
    let response = reqwest::Client::new()
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(&server.token)
        .header("content-type", "application/octet-stream")
        .header("content-disposition", "attachment; filename=\"large.bin\"")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await?;
    if response.status() != 201 {
        bail!(
            "upload answered {}: {}",
            response.status(),
            response.text().await?
        );
    }
    let attachment: serde_json::Value = response.json().await?;
    let after_upload = server.peak_rss_mib().unwrap_or(f64::NAN);
    let started = Instant::now();
    let mut ids = Vec::new();
    for n in 0..count {
        let accepted = server
            .send(&json!({"to": ["sink@example.com"], "subject": format!("large {n}"), "text": "see attachment", "attachments": [{"id": attachment["id"]}]}))
            .await?;
        ids.push(accepted["id"].as_str().unwrap_or_default().to_owned());
    }
    for id in &ids {
        server
            .wait_for_status(id, "sent", Duration::from_secs(600))
            .await?;
    }
    let rss = server.peak_rss_mib().unwrap_or(f64::NAN);
    println!(
        "{count} message(s) with a {size_mib} MiB attachment: sent in {:.1} s; peak server RSS {rss:.0} MiB \
         (idle {baseline:.0} MiB, after the streamed upload {after_upload:.0} MiB)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Renders the built-in invoice template with its sample data `renders` times on this one thread.
fn templates(renders: usize) -> Result<()> {
    use mailroom_core::template::{CompiledTemplate, builtin};
    let invoice = builtin::built_in()
        .into_iter()
        .find(|t| t.id == "sales-invoice")
        .context("no invoice template")?;
    let compiled =
        CompiledTemplate::compile(&invoice.source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let data = builtin::sample_data("sales-invoice");
    let mut bytes = 0usize;
    let started = Instant::now();
    for _ in 0..renders {
        let rendered = compiled.render(&data).map_err(|e| anyhow::anyhow!("{e}"))?;
        bytes += rendered.html.len() + rendered.text.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "invoice template: {renders} renders in {seconds:.2} s on one thread = {:.0} renders/s ({} bytes each)",
        renders as f64 / seconds,
        bytes / renders
    );
    Ok(())
}

/// One keep-alive HTTP/1.1 connection of the load generator.
struct HttpConnection {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl HttpConnection {
    async fn open(address: &str) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// Writes one request and reads its answer: the status code and the body.
    async fn exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>)> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let (head_end, status, length) = loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buffer[..end])?;
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse::<u16>().ok())
                    .with_context(|| format!("no status in {head:?}"))?;
                let length = head
                    .lines()
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, value)| value.trim().parse::<usize>().ok())
                    .with_context(|| format!("no Content-Length in {head:?}"))?;
                break (end + 4, status, length);
            }
            self.read_more().await?;
        };
        while self.buffer.len() < head_end + length {
            self.read_more().await?;
        }
        Ok((status, self.buffer[head_end..head_end + length].to_vec()))
    }

    async fn read_more(&mut self) -> Result<()> {
        use tokio::io::AsyncReadExt;
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            bail!("the server closed the connection");
        }
        Ok(())
    }
}
