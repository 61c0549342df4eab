//! `mailroom-bench inbound`: APPENDs a mix of messages (70 % 4 KiB, 25 % 60 KiB with an
//! attachment, 5 % 1 MiB) to a private Dovecot mailbox, measures the raw ceiling (a plain IMAP
//! client fetching every message with `BODY.PEEK[]` and throwing it away), then times mailroom's
//! initial sync of the same mailbox (bodies, attachments and records stored) and the delay from
//! APPEND to stored for new mail arriving over IDLE, with the server's peak memory. Every
//! attachment's content is distinct. Last, one message with a large attachment (100 MiB by
//! default) is synchronized from another mailbox by a fresh server, to show memory stays bounded.

use anyhow::{Context, Result, bail};
use futures_util::TryStreamExt;
use mailroom_testkit::{ImapClient, MailroomServer, PostfixWithSasl, SmtpSink};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// One message of the mix: `n` decides its kind.
fn message(n: usize) -> Vec<u8> {
    let kind = n % 20;
    let head = format!(
        "From: Customer {n} <customer{n}@example.com>\r\nTo: user0@corp.test\r\nSubject: Bench message {n}\r\n\
         Message-ID: <bench{n}@example.com>\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    );
    let filler = |bytes: usize| -> String {
        let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
        line.repeat(bytes / line.len() + 1)[..bytes].to_owned()
    };
    // Every attachment's content is its own (its first line is the message's number), so that
    // none is stored once for many messages.
    let base64_lines = |bytes: usize| -> String {
        let line =
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n";
        format!("{n:076}\r\n{}", line.repeat(bytes / line.len()))
    };
    match kind {
        // 5 %: 1 MiB, mostly one attachment.
        0 => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{}\r\n--b\r\n\
             Content-Type: application/octet-stream; name=\"big{n}.bin\"\r\nContent-Disposition: attachment; filename=\"big{n}.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
            filler(2048),
            base64_lines(1024 * 1024 - 4096)
        ),
        // 25 %: 60 KiB with an attachment.
        1..=5 => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n{}\r\n--b\r\n\
             Content-Type: application/pdf; name=\"doc{n}.pdf\"\r\nContent-Disposition: attachment; filename=\"doc{n}.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
            filler(4096),
            base64_lines(56 * 1024)
        ),
        // 70 %: 4 KiB of text.
        _ => format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{}", filler(4096)),
    }
    .into_bytes()
}

/// The raw ceiling: one plain session fetching every message whole, nothing kept.
async fn raw_fetch(port: u16) -> Result<(f64, u64)> {
    let socket = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let mut client = async_imap::Client::new(socket);
    client.read_response().await?.context("no greeting")?;
    let mut session = client
        .login("user0@corp.test", "pw0")
        .await
        .map_err(|(e, _)| anyhow::anyhow!("login: {e}"))?;
    let mailbox = session.examine("INBOX").await?;
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut count = 0usize;
    let total = mailbox.exists as usize;
    let mut from = 1usize;
    while from <= total {
        let to = (from + 199).min(total);
        let fetched: Vec<_> = session
            .fetch(format!("{from}:{to}"), "(UID BODY.PEEK[])")
            .await?
            .try_collect()
            .await?;
        for f in &fetched {
            bytes += f.body().map_or(0, |b| b.len() as u64);
            count += 1;
        }
        from = to + 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = session.logout().await;
    Ok((count as f64 / seconds, bytes))
}

async fn call(
    server: &MailroomServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let (status, value) = server.call(method, path, body.as_ref(), &[]).await?;
    if !(200..300).contains(&status) {
        bail!("{path}: {status} {value}");
    }
    Ok(value)
}

async fn stored(server: &MailroomServer, mailbox: &str) -> Result<(i64, bool)> {
    let sync = call(
        server,
        reqwest::Method::GET,
        &format!("/v1/mailboxes/{mailbox}/sync"),
        None,
    )
    .await?;
    let inbox = sync["folders"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["folder"] == "INBOX").cloned());
    Ok(match inbox {
        Some(f) => (
            f["messages"].as_i64().unwrap_or(0),
            f["initial_sync_done"] == true,
        ),
        None => (0, false),
    })
}

/// Starts a server whose only mailbox is `user{n}@corp.test`'s on Dovecot, synchronizing INBOX;
/// returns it, the mailbox id, and when its test (which starts the sync) was requested.
async fn server_syncing(
    binary: &Path,
    postfix: &PostfixWithSasl,
    n: usize,
) -> Result<(MailroomServer, String, Instant)> {
    let port = postfix.imap_port.context("IMAP")?;
    let server = MailroomServer::start(binary, "[engine]\nsync_rescan_ms = 100\n").await?;
    call(
        &server,
        reqwest::Method::POST,
        "/v1/server-profiles",
        Some(json!({"name": "bench", "kind": "imap-smtp",
            "incoming": {"host": "127.0.0.1", "port": port, "security": "none"},
            "outgoing": {"host": "127.0.0.1", "port": postfix.port, "security": "none"},
            "is_default_for_new_mailboxes": true,
            "processing": {"max_connections": 4, "folders": ["INBOX"], "use_idle": true}})),
    )
    .await?;
    // Outgoing off: only the incoming side is tested and synchronized.
    call(
        &server,
        reqwest::Method::PUT,
        "/v1/settings/email",
        Some(json!({"outgoing": "none"})),
    )
    .await?;
    let user = call(
        &server,
        reqwest::Method::POST,
        "/v1/users",
        Some(
            json!({"name": format!("user{n}"), "contact_email": format!("user{n}@corp.test"),
            "licence": "full", "permission_sets": ["email-send"]}),
        ),
    )
    .await?;
    let mailboxes = call(&server, reqwest::Method::GET, "/v1/mailboxes", None).await?;
    let mailbox = mailboxes
        .as_array()
        .and_then(|all| all.iter().find(|m| m["user_id"] == user["id"]))
        .and_then(|m| m["id"].as_str())
        .context("the user's mailbox")?
        .to_owned();
    call(
        &server,
        reqwest::Method::PATCH,
        &format!("/v1/mailboxes/{mailbox}"),
        Some(json!({"username": format!("user{n}@corp.test"), "password": format!("pw{n}"), "filter": "all"})),
    )
    .await?;
    call(
        &server,
        reqwest::Method::POST,
        &format!("/v1/mailboxes/{mailbox}/approve"),
        None,
    )
    .await?;
    let started = Instant::now();
    call(
        &server,
        reqwest::Method::POST,
        &format!("/v1/mailboxes/{mailbox}/test"),
        None,
    )
    .await?;
    Ok((server, mailbox, started))
}

pub async fn inbound(
    binary: &Path,
    messages: usize,
    idle_samples: usize,
    large_mib: usize,
) -> Result<()> {
    let sink = SmtpSink::start_without_dumps(&[])?;
    let postfix = PostfixWithSasl::start_with_users(
        &[
            ("user0@corp.test".into(), "pw0".into()),
            ("user1@corp.test".into(), "pw1".into()),
        ],
        sink.port,
    )?;
    let port = postfix.imap_port.context("IMAP")?;
    let mut imap = ImapClient::login(port, "user0@corp.test", "pw0").await?;
    let appending = Instant::now();
    let mut total_bytes = 0u64;
    for n in 0..messages {
        let raw = message(n);
        total_bytes += raw.len() as u64;
        imap.append("INBOX", &raw, None, None).await?;
    }
    println!(
        "appended {messages} messages ({:.0} MB) to Dovecot in {:.1} s",
        total_bytes as f64 / 1e6,
        appending.elapsed().as_secs_f64()
    );
    let (raw_per_second, raw_bytes) = raw_fetch(port).await?;
    println!(
        "raw ceiling (one IMAP session, BODY.PEEK[], nothing kept): {raw_per_second:.0} messages/s"
    );

    let (server, mailbox, started) = server_syncing(binary, &postfix, 0).await?;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let (count, done) = stored(&server, &mailbox).await?;
        if count as usize >= messages && done {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "only {count} of {messages} stored after 30 minutes\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let per_second = messages as f64 / seconds;
    println!(
        "initial sync: {messages} messages in {seconds:.1} s (from the test request to the last one stored)"
    );
    println!("  messages/s            {per_second:.0}");
    println!(
        "  MB/s                  {:.1}",
        raw_bytes as f64 / 1e6 / seconds
    );
    println!("  ÷ raw ceiling         {:.2}", per_second / raw_per_second);

    // New mail over IDLE: APPEND one at a time, time until it is stored.
    let mut latencies = Vec::with_capacity(idle_samples);
    for n in 0..idle_samples {
        let before = stored(&server, &mailbox).await?.0;
        let appended = Instant::now();
        imap.append("INBOX", &message(messages + 1 + n * 20 + 7), None, None)
            .await?;
        loop {
            if stored(&server, &mailbox).await?.0 > before {
                break;
            }
            if appended.elapsed() > Duration::from_secs(60) {
                bail!("new mail was not stored within a minute");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        latencies.push(appended.elapsed());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    println!(
        "IDLE: new mail stored p50 {:.0} ms, p95 {:.0} ms ({idle_samples} samples)",
        crate::percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        crate::percentile(&latencies, 0.95).as_secs_f64() * 1000.0
    );
    println!(
        "peak server RSS         {:.0} MiB",
        server.peak_rss_mib().unwrap_or(f64::NAN)
    );
    imap.logout().await;
    drop(server);
    if large_mib > 0 {
        large_message(binary, &postfix, large_mib).await?;
    }
    Ok(())
}

/// One message carrying a `mib` MiB attachment, alone in another mailbox, synchronized by a
/// fresh server: how long it takes and how much the server's peak memory grows.
async fn large_message(binary: &Path, postfix: &PostfixWithSasl, mib: usize) -> Result<()> {
    use base64::Engine;
    let port = postfix.imap_port.context("IMAP")?;
    let content: Vec<u8> = (0..(mib * 1024 * 1024) as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&content);
    let mut raw = b"From: Supplier <supplier@example.com>\r\nTo: user1@corp.test\r\nSubject: drawings\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
        Content-Type: text/plain\r\n\r\nAttached.\r\n--b\r\nContent-Type: application/octet-stream\r\n\
        Content-Disposition: attachment; filename=\"drawings.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    for line in encoded.as_bytes().chunks(76) {
        raw.extend_from_slice(line);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"--b--\r\n");
    drop((content, encoded));
    let mut imap = ImapClient::login(port, "user1@corp.test", "pw1").await?;
    imap.append("INBOX", &raw, None, None).await?;
    imap.logout().await;
    let (server, mailbox, started) = server_syncing(binary, postfix, 1).await?;
    let before = server.peak_rss_mib().unwrap_or(f64::NAN);
    let deadline = Instant::now() + Duration::from_secs(600);
    while stored(&server, &mailbox).await? != (1, true) {
        if Instant::now() > deadline {
            bail!(
                "the large message was not stored within 10 minutes\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "large message: {:.0} MB ({mib} MiB attachment) stored in {:.1} s; peak server RSS {before:.0} MiB before, {:.0} MiB after",
        raw.len() as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        server.peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
