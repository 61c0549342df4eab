//! Webhook delivery: latency from a message's outcome to the receiver (p50/p99) while mail is sent
//! at a steady rate, then not one event lost when the receiver is down for a while and mailroom is
//! SIGKILLed in the middle of it (counted by message id; a duplicate must carry the same
//! `webhook-id` as the first copy).

use anyhow::{Context, Result, bail};
use mailroom_testkit::{MailroomServer, SmtpSink};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One delivery the receiver got.
#[derive(Clone)]
struct Got {
    webhook_id: String,
    message_id: String,
    /// The event's own time (its `timestamp`), Unix ms.
    event_at_ms: i64,
    received_at_ms: i64,
}

type Log = Arc<Mutex<Vec<Got>>>;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// An HTTP receiver on its own thread and runtime (so the load generator does not delay it),
/// answering 200 to everything until stopped.
struct Receiver {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, log: Log) -> Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .with_context(|| format!("binding the receiver to port {port}"))?;
        listener.set_nonblocking(true)?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(
                        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                            let log = log.clone();
                            async move {
                                let received_at_ms = now_ms();
                                let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                                let event_at_ms = body["timestamp"]
                                    .as_str()
                                    .and_then(|t| {
                                        time::OffsetDateTime::parse(
                                            t,
                                            &time::format_description::well_known::Rfc3339,
                                        )
                                        .ok()
                                    })
                                    .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
                                    .unwrap_or_default();
                                log.lock().expect("log").push(Got {
                                    webhook_id: headers
                                        .get("webhook-id")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or_default()
                                        .to_owned(),
                                    message_id: body["data"]["message_id"]
                                        .as_str()
                                        .unwrap_or_default()
                                        .to_owned(),
                                    event_at_ms,
                                    received_at_ms,
                                });
                                "thanks"
                            }
                        },
                    ),
                );
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Stops listening: connections are refused from now on.
    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `count` messages at `rate` per second (each one at its due time, from many tasks), and
/// returns the ids answered 202.
async fn send_at_rate(server: &MailroomServer, count: usize, rate: f64) -> Result<Vec<String>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{}/v1/messages", server.base_url);
    let token = server.token.clone();
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for n in 0..count {
        let due = start + Duration::from_secs_f64(n as f64 / rate);
        let client = client.clone();
        let url = url.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let answer = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"to": ["ann@customer.example"], "subject": format!("Invoice {n}"), "text": "Please find your invoice."}))
                .send()
                .await
                .ok()?;
            if answer.status() != 202 {
                return None;
            }
            let body: Value = answer.json().await.ok()?;
            body["id"].as_str().map(str::to_owned)
        }));
    }
    let mut ids = Vec::with_capacity(count);
    for task in tasks {
        if let Some(id) = task.await? {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Waits until every id has been delivered (or `timeout`), polling the log.
async fn wait_for_all(log: &Log, ids: &[String], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let missing = {
            let got = log.lock().expect("log");
            let delivered: std::collections::HashSet<&str> =
                got.iter().map(|g| g.message_id.as_str()).collect();
            ids.iter()
                .filter(|id| !delivered.contains(id.as_str()))
                .count()
        };
        if missing == 0 || Instant::now() > deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn webhooks(binary: &Path, rate: f64, seconds: u64, outage_seconds: u64) -> Result<()> {
    let sink = SmtpSink::start_without_dumps(&[])?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server =
        MailroomServer::start(binary, "[webhooks]\nallow_private_targets = true\n").await?;
    server
        .add_default_smtp_account(
            "bench",
            sink.port,
            json!({"rate_limit_per_minute": 0, "concurrency_limit": 16}),
        )
        .await?;
    let (status, hook) = server
        .post(
            "/v1/webhooks",
            &json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["message.sent"]}),
        )
        .await?;
    if status != 201 {
        bail!("creating the webhook answered {status}: {hook}");
    }

    // 1. Latency while the receiver is up.
    let log: Log = Arc::default();
    let receiver = Receiver::start(port, log.clone())?;
    let count = (rate * seconds as f64) as usize;
    println!("sending {count} messages at {rate:.0}/s with a receiver up");
    let clock = Instant::now();
    let ids = send_at_rate(&server, count, rate).await?;
    let sent_in = clock.elapsed();
    let missing = wait_for_all(&log, &ids, Duration::from_secs(120)).await;
    let mut latencies: Vec<i64> = log
        .lock()
        .expect("log")
        .iter()
        .map(|g| g.received_at_ms - g.event_at_ms)
        .collect();
    latencies.sort_unstable();
    println!(
        "  accepted {} of {count} in {:.1} s ({:.0}/s); {} events delivered, {missing} missing",
        ids.len(),
        sent_in.as_secs_f64(),
        ids.len() as f64 / sent_in.as_secs_f64(),
        latencies.len()
    );
    println!(
        "  latency from the outcome to the receiver: p50 {} ms, p99 {} ms, max {} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    receiver.stop();

    // 2. The receiver down for a while; mailroom SIGKILLed half way; then the receiver back.
    let outage_log: Log = Arc::default();
    let outage_rate = (rate / 10.0).max(10.0);
    let half = (outage_rate * outage_seconds as f64 / 2.0) as usize;
    println!(
        "receiver down for {outage_seconds} s: {} messages at {outage_rate:.0}/s, mailroom SIGKILLed half way",
        2 * half
    );
    let outage = Instant::now();
    let mut all = send_at_rate(&server, half, outage_rate).await?;
    server.restart().await?;
    all.extend(send_at_rate(&server, half, outage_rate).await?);
    if let Some(left) = Duration::from_secs(outage_seconds).checked_sub(outage.elapsed()) {
        tokio::time::sleep(left).await;
    }
    let back = Instant::now();
    let receiver = Receiver::start(port, outage_log.clone())?;
    // The receiver's first success brings the waiting deliveries forward; new mail makes one.
    all.extend(send_at_rate(&server, 1, 1.0).await?);
    let missing = wait_for_all(&outage_log, &all, Duration::from_secs(1_800)).await;
    let caught_up = back.elapsed();
    let got = outage_log.lock().expect("log").clone();
    let mut first_id: HashMap<&str, &str> = HashMap::new();
    let mut other_ids = 0;
    for g in &got {
        let first = first_id.entry(&g.message_id).or_insert(&g.webhook_id);
        if *first != g.webhook_id {
            other_ids += 1;
        }
    }
    println!(
        "  {} events expected; {missing} lost; {} deliveries, {} of them repeats with the same webhook-id, {other_ids} with another",
        all.len(),
        got.len(),
        got.len() - first_id.len() - other_ids
    );
    println!(
        "  every event delivered {:.1} s after the receiver came back",
        caught_up.as_secs_f64()
    );
    receiver.stop();
    if missing > 0 || other_ids > 0 {
        bail!("events were lost or duplicated under another webhook-id");
    }
    Ok(())
}
