//! The `serve` process itself: how it starts, what it refuses, and what it does first.

mod common;

use common::{FAST_ENGINE, binary, id_of};
use mailroom_testkit::{MailroomServer, SmtpSink, wait_until};
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `mailroom serve` to its end (it is expected to refuse to start) and returns (success,
/// stdout, stderr).
fn serve_expecting_exit(data_dir: &std::path::Path, listen: &str) -> (bool, String, String) {
    let mut child = Command::new(binary())
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .env_remove("MAILROOM_SECRET_KEY")
        .env_remove("MAILROOM_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mailroom serve did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn serve_on_a_port_that_is_taken_exits_with_one_line_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let data_dir = tempfile::tempdir().unwrap();
    let (success, stdout, stderr) = serve_expecting_exit(data_dir.path(), &address);
    assert!(!success);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(&address), "{stderr}");
    assert!(lines[0].contains("in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stdout.contains("token"),
        "no admin token is created by a server that cannot start: {stdout}"
    );
}

#[tokio::test]
async fn serve_listens_on_a_host_name() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = mailroom_testkit::free_port();
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            &format!("localhost:{port}"),
            "--data-dir",
        ])
        .arg(data_dir.path())
        .env_remove("MAILROOM_SECRET_KEY")
        .env_remove("MAILROOM_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy = wait_until(Duration::from_secs(20), "healthz answers", || async {
        Ok(reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    healthy.unwrap();
}

#[tokio::test]
async fn a_second_serve_on_the_same_data_folder_is_refused() {
    let server = common::start_server().await;
    let other_port = mailroom_testkit::free_port();
    let (success, _, stderr) =
        serve_expecting_exit(server.data_dir(), &format!("127.0.0.1:{other_port}"));
    assert!(!success);
    assert!(
        stderr.contains("another mailroom is already serving the data folder"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&server.pid().unwrap().to_string()),
        "names the process: {stderr}"
    );
    // The first one is unharmed.
    let (status, _) = server.get("/v1/accounts").await.unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn mail_being_sent_when_the_server_was_killed_is_queued_again_at_once_on_restart() {
    // The server holds the message at DATA for 30 s; the lease is a minute long.
    let sink = SmtpSink::start(&["-w", "30"]).unwrap();
    let config = FAST_ENGINE.replace("lease_ms = 3000", "lease_ms = 60000");
    let mut server = MailroomServer::start(binary(), &config).await.unwrap();
    server
        .add_default_smtp_account("slow", sink.port, json!({}))
        .await
        .unwrap();
    let accepted = server
        .send(&json!({"to": ["a@example.com"], "subject": "held", "text": "t"}))
        .await
        .unwrap();
    let id = id_of(&accepted);
    server
        .wait_for_status(&id, "sending", Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    server.restart().await.unwrap();
    let restarted = Instant::now();
    wait_until(Duration::from_secs(5), "an interrupted attempt", || async {
        let message = server.message(&id).await?;
        Ok(message["attempts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["outcome"] == "interrupted")))
    })
    .await
    .unwrap();
    assert!(restarted.elapsed() < Duration::from_secs(5));
    assert!(server.log().contains("leases_recovered_at_start"));
}

#[tokio::test]
async fn a_log_that_cannot_be_written_does_not_stop_the_server() {
    // /dev/full refuses every write with ENOSPC, like a log file on a full disk.
    let data_dir = tempfile::tempdir().unwrap();
    std::fs::write(data_dir.path().join("mailroom.toml"), FAST_ENGINE).unwrap();
    let port = mailroom_testkit::free_port();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir.path())
        .env_remove("MAILROOM_SECRET_KEY")
        .env_remove("MAILROOM_DATABASE_URL")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let started = wait_until(Duration::from_secs(20), "healthz answers", || async {
        Ok(reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await;
    let outcome = async {
        started?;
        let token = std::fs::read_to_string(data_dir.path().join("admin-token"))?;
        let client = reqwest::Client::new();
        let accepted: serde_json::Value = client
            .post(format!("{base}/v1/messages"))
            .bearer_auth(token.trim())
            .json(&json!({"to": ["a@example.com"], "subject": "s", "text": "t"}))
            .send()
            .await?
            .json()
            .await?;
        let id = id_of(&accepted);
        wait_until(Duration::from_secs(20), "the message is sent", || async {
            let message: serde_json::Value = client
                .get(format!("{base}/v1/messages/{id}"))
                .bearer_auth(token.trim())
                .send()
                .await?
                .json()
                .await?;
            Ok(message["status"] == "sent")
        })
        .await
    }
    .await;
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    outcome.unwrap();
    assert!(still_running, "the server exited");
}

#[tokio::test]
async fn every_log_line_and_metric_names_the_node() {
    let server = common::start_server().await;
    let node = std::fs::read_to_string(server.data_dir().join("node-id"))
        .unwrap()
        .trim()
        .to_owned();
    let (status, nodes) = server.get("/v1/nodes").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(nodes[0]["id"], node.as_str());
    assert_eq!(nodes[0]["state"], "alive");
    // The CLI lists them too.
    let listed = Command::new(binary())
        .args([
            "node",
            "list",
            "--output",
            "json",
            "--server",
            &server.base_url,
        ])
        .env("MAILROOM_TOKEN", &server.token)
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], node.as_str());
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line.starts_with(&format!("node={node} ")),
            "a log line without its node: {line}"
        );
    }
    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(!series.is_empty());
    for line in series {
        assert!(
            line.contains(&format!("node=\"{node}\"")),
            "a metric without its node: {line}"
        );
    }
}
