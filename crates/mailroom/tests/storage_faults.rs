//! Storage faults, for real: the data folder on a small tmpfs that is filled up and freed again.
//! Mounting needs root, which CI has; elsewhere the test says it was skipped.

mod common;

use common::{FAST_ENGINE, binary, id_of};
use mailroom_testkit::{MailroomServer, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A tmpfs mounted for the test and unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs failed");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros into `filler` until the disk is full.
    fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn big_message(n: usize) -> Value {
    json!({"to": ["a@example.com"], "subject": format!("big {n}"), "text": "x".repeat(30_000)})
}

#[tokio::test]
async fn a_full_disk_is_refused_with_507_seen_by_healthz_and_every_write_works_again_once_space_is_freed()
 {
    let Some(disk) = SmallDisk::mount("8m") else {
        eprintln!("skipped: mounting a tmpfs needs root (CI runs as root)");
        return;
    };
    let mut server = MailroomServer::start_in(binary(), FAST_ENGINE, disk.path())
        .await
        .unwrap();
    let filler = disk.fill();

    let client = reqwest::Client::new();
    let mut refused = None;
    for n in 0..400 {
        let response = client
            .post(format!("{}/v1/messages", server.base_url))
            .bearer_auth(&server.token)
            .json(&big_message(n))
            .send()
            .await
            .unwrap();
        if response.status() != 202 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("a full disk refuses new mail");
    let status = refused.status();
    let retry_after = refused.headers().get("retry-after").cloned();
    let body: Value = refused.json().await.unwrap();
    assert_eq!(status, 507, "{body}\n{}", server.log());
    assert_eq!(retry_after.unwrap(), "30");
    assert_eq!(body["code"], "storage_full", "{body}");

    // Administrative writes meet the full disk too (each is refused or, when it fits, done).
    for n in 0..20 {
        let (status, body) = server
            .call(
                Method::PUT,
                &format!("/v1/scenarios/while-full-{n}"),
                Some(&json!({"account_id": null})),
                &[],
            )
            .await
            .unwrap();
        assert!(status == 200 || status == 507, "{status} {body}");
        let (status, body) = server
            .post(
                "/v1/users",
                &json!({"name": format!("while full {n} {}", "x".repeat(150)), "licence": "full", "permission_sets": ["email-send"]}),
            )
            .await
            .unwrap();
        assert!(status == 201 || status == 507, "{status} {body}");
    }

    let health = client
        .get(format!("{}/healthz", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "degraded");
    assert!(
        health["reason"].as_str().unwrap().contains("storage full"),
        "{health}"
    );

    // The engine keeps trying its writes several times a second; the log says it once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = server.log();
    assert_eq!(
        log.matches("event=\"storage_full\"").count(),
        1,
        "logged once a minute:\n{log}"
    );

    std::fs::remove_file(&filler).unwrap();

    // Every write path works again, without a restart.
    let accepted = server.send(&big_message(1000)).await.unwrap();
    let (status, body) = server
        .call(
            Method::PUT,
            "/v1/scenarios/after-the-disk-filled",
            Some(&json!({"account_id": null})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, account) = server
        .post(
            "/v1/accounts",
            &json!({"connector": "pickup", "name": "Second", "email_address": "second@example.com", "pickup_dir": "second"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{account}");
    let (status, body) = server
        .call(
            Method::PATCH,
            &format!("/v1/accounts/{}", id_of(&account)),
            Some(&json!({"rate_limit_per_minute": 10})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, user) = server
        .post(
            "/v1/users",
            &json!({"name": "after", "licence": "full", "permission_sets": ["email-send"]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{user}");
    let (status, token) = server
        .post(
            &format!("/v1/users/{}/tokens", id_of(&user)),
            &json!({"name": "t"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{token}");
    let upload = client
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(&server.token)
        .header("content-type", "application/pdf")
        .header("content-disposition", "attachment; filename=\"a.pdf\"")
        .body(b"%PDF-1.4 after".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(30))
        .await
        .unwrap();
    wait_until(Duration::from_secs(20), "healthz ok", || async {
        Ok(reqwest::get(format!("{}/healthz", server.base_url))
            .await?
            .status()
            == 200)
    })
    .await
    .unwrap();
    // Everything that was refused while full can be sent now too, and nothing half-written is left.
    server.terminate().unwrap();
    let database = server.data_dir().join("mailroom.db");
    let check = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('PRAGMA integrity_check').fetchone()[0])",
        ])
        .arg(&database)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&check.stdout).trim(), "ok");
    let log = server.log();
    assert!(!log.contains("non-zero transaction depth"), "{log}");
    assert!(!log.contains("store_writer_died"), "{log}");
}
