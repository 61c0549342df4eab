//! Shared set-up of the integration tests: the real binary with short engine timings.
#![allow(dead_code)]

pub mod mail_service;

use mailroom_testkit::MailroomServer;
use std::path::Path;

/// Engine timings shortened so that retries, leases and rate windows play out in seconds.
pub const FAST_ENGINE: &str = "[engine]
poll_interval_ms = 50
lease_ms = 3000
rate_window_ms = 1000
retry_base_ms = 200
retry_cap_ms = 800
shutdown_grace_ms = 10000
";

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mailroom"))
}

pub async fn start_server() -> MailroomServer {
    MailroomServer::start(binary(), FAST_ENGINE)
        .await
        .expect("mailroom starts")
}

pub async fn start_server_with(extra_toml: &str) -> MailroomServer {
    MailroomServer::start(binary(), &format!("{extra_toml}\n{FAST_ENGINE}"))
        .await
        .expect("mailroom starts")
}

pub fn id_of(value: &serde_json::Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// Starts the server with extra keys in its `[engine]` table.
pub async fn start_server_with_engine(extra_engine_keys: &str) -> MailroomServer {
    MailroomServer::start(binary(), &format!("{FAST_ENGINE}{extra_engine_keys}\n"))
        .await
        .expect("mailroom starts")
}

/// An OpenAPI path template with every parameter filled in, for tests that walk all routes.
pub fn concrete_path(template: &str) -> String {
    template
        .replace("{id}", "00000000-0000-0000-0000-000000000000")
        .replace("{token_id}", "00000000-0000-0000-0000-000000000000")
        .replace("{attachment_id}", "00000000-0000-0000-0000-000000000000")
        .replace("{name}", "default")
        .replace("{user}", "default")
        .replace("{type}", "customer")
        .replace("{part}", "1")
}

/// An API call with the admin token that must succeed (2xx); its JSON answer.
pub async fn ok(
    server: &MailroomServer,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let (status, value) = server
        .call(method.clone(), path, body.as_ref(), &[])
        .await
        .unwrap();
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {value}\n{}",
        server.log()
    );
    value
}

/// Signs in to the console with `token`; the session cookie (`name=value`).
pub async fn console_session(server: &MailroomServer, token: &str) -> String {
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/console/sign-in", server.base_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303, "signing in to the console");
    let cookie = answer.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

/// A console page's HTML, which must answer 200.
pub async fn console_page(server: &MailroomServer, path: &str, cookie: &str) -> String {
    let answer = reqwest::Client::new()
        .get(format!("{}{path}", server.base_url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = answer.status();
    let html = answer.text().await.unwrap();
    assert_eq!(status, 200, "{path}: {html}");
    html
}

/// The browser scripts' folder, with its npm packages installed (`.ci/run` installs them).
pub fn browser_scripts() -> std::path::PathBuf {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !folder.join("node_modules/playwright-core").exists() {
        let installed = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&folder)
            .status()
            .expect("npm runs");
        assert!(installed.success(), "npm ci in {}", folder.display());
    }
    folder
}

/// Runs one of the browser scripts; its JSON report (failing the test when it failed).
pub async fn run_browser_script(script: &str, args: &[&str]) -> serde_json::Value {
    let scripts = browser_scripts();
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(scripts.join(script))
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .await
        .expect("node runs");
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_else(|_| {
        panic!(
            "no report: {}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        )
    });
    assert!(
        run.status.success() && report["failures"].as_array().is_some_and(Vec::is_empty),
        "{report:#}"
    );
    report
}

/// Percent-encodes a form or query value (everything but unreserved characters).
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Uploads a file as `token`; the status and the JSON answer (null when it has none).
pub async fn upload(
    server: &MailroomServer,
    token: &str,
    filename: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(token)
        .header("content-type", content_type)
        .header(
            "content-disposition",
            format!("attachment; filename=\"{filename}\""),
        )
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}
