//! Shutdown and the CLI: SIGTERM lets in-flight sends finish and releases the rest untouched; the CLI
//! drives a running server the way the API does.

mod common;

use common::{binary, id_of, start_server};
use mailroom_testkit::{MailroomServer, SmtpSink, wait_until};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

#[tokio::test]
async fn sigterm_lets_in_flight_sends_finish_and_releases_messages_not_yet_started() {
    // The sink waits two seconds before answering DATA, so sends are visibly in flight.
    let sink = SmtpSink::start(&["-w", "2"]).unwrap();
    let mut server = start_server().await;
    server
        .add_default_smtp_account("slow", sink.port, json!({"concurrency_limit": 2}))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(id_of(
            &server
                .send(&json!({"to": ["a@example.com"], "subject": format!("m{n}"), "text": "t"}))
                .await
                .unwrap(),
        ));
    }
    wait_until(Duration::from_secs(10), "sends in flight", || async {
        // Claimed messages show as `sending`.
        Ok(server.get("/v1/outbox?status=sending").await?.1["total"]
            .as_i64()
            .unwrap_or(0)
            >= 2)
    })
    .await
    .unwrap();
    // By now four attempts have started: one on each of the account's two connections, and one
    // waiting behind each, to be chained onto it. The other two messages wait for a turn.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.terminate().unwrap();
    assert!(status.success(), "mailroom exited with {status} on SIGTERM");
    assert!(server.log().contains("mailroom stopped"));
    assert_eq!(
        sink.messages().unwrap().len(),
        4,
        "exactly the four attempts in flight completed before exit"
    );

    server.restart().await.unwrap();
    for id in &ids {
        let message = server
            .wait_for_status(id, "sent", Duration::from_secs(30))
            .await
            .unwrap();
        let attempts = message["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "a graceful stop must not cost an attempt: {message:#}"
        );
        assert_eq!(attempts[0]["outcome"], "sent");
    }
    assert_eq!(
        sink.messages().unwrap().len(),
        6,
        "every message arrived exactly once"
    );
}

fn cli(server: &MailroomServer, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary())
        .args(args)
        .env("MAILROOM_SERVER", &server.base_url)
        .env("MAILROOM_TOKEN", &server.token)
        .output()
        .expect("running the CLI");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_adds_accounts_routes_scenarios_sends_and_lists_mail() {
    let server = start_server().await;
    // Pickup folders lie under the pickup root, `<data-dir>/pickup` by default.
    let pickup = server
        .data_dir()
        .canonicalize()
        .unwrap()
        .join("pickup/quotes");
    let dir = pickup.display().to_string();
    let (ok, out, err) = cli(
        &server,
        &[
            "account",
            "add",
            "pickup",
            "--name",
            "Quotes",
            "--email",
            "quotes@example.com",
            "--dir",
            &dir,
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let account: Value = serde_json::from_str(&out).unwrap();
    let account_id = id_of(&account);

    let (ok, out, _) = cli(&server, &["account", "list"]);
    assert!(ok);
    assert!(
        out.lines().next().unwrap().starts_with("ID"),
        "a human table with a header: {out}"
    );
    assert!(out.contains("quotes@example.com"));

    let (ok, out, err) = cli(&server, &["account", "test", &account_id]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("writable"));

    let (ok, _, err) = cli(&server, &["scenario", "assign", "sales-quote", &account_id]);
    assert!(ok, "{err}");
    let (ok, out, _) = cli(&server, &["scenario", "list", "--output", "json"]);
    assert!(ok);
    let scenarios: Value = serde_json::from_str(&out).unwrap();
    let quote = scenarios
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "sales-quote")
        .unwrap();
    assert_eq!(quote["account_id"], account_id.as_str());

    let (ok, out, err) = cli(
        &server,
        &[
            "send",
            "--to",
            "customer@example.com",
            "--subject",
            "Your quote SQ-1",
            "--text",
            "Attached.",
            "--scenario",
            "sales-quote",
            "--related",
            "sales-quote:SQ-1:primary",
            "--related",
            "customer:C100",
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let accepted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(accepted["account_id"], account_id.as_str());
    let message = server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        message["related_records"][0],
        json!({"type": "sales-quote", "id": "SQ-1", "relation": "primary"})
    );
    assert_eq!(std::fs::read_dir(&pickup).unwrap().count(), 1);

    let (ok, out, _) = cli(&server, &["sent", "list", "--output", "json"]);
    assert!(ok);
    let sent: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sent["total"], 1);
    let (ok, out, _) = cli(&server, &["message", "show", &id_of(&accepted)]);
    assert!(ok);
    assert!(out.contains("attempts") && out.contains("sent"), "{out}");

    let (ok, _, err) = cli(
        &server,
        &[
            "send",
            "--to",
            "not an address",
            "--subject",
            "s",
            "--text",
            "t",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("422") && err.contains("to[0]"),
        "a precise error: {err}"
    );
    let (ok, out, _) = cli(&server, &["outbox", "list"]);
    assert!(ok);
    assert!(out.contains("0 of 0 shown"), "{out}");
}

#[tokio::test]
async fn the_cli_reads_the_admin_token_from_the_data_directory() {
    let server = start_server().await;
    let output = Command::new(binary())
        .args(["account", "list", "--output", "json"])
        .env("MAILROOM_SERVER", &server.base_url)
        .env_remove("MAILROOM_TOKEN")
        .env("MAILROOM_DATA_DIR", server.data_dir())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let accounts: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 1);
}

fn setup_with_answers(
    server: &MailroomServer,
    args: &[&str],
    answers: &str,
) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(binary())
        .arg("setup")
        .args(args)
        .env("MAILROOM_SERVER", &server.base_url)
        .env("MAILROOM_TOKEN", &server.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_guided_setup_asks_for_the_account_and_its_limit_tests_it_and_makes_it_the_default() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    // name, address, sender name, host, security, port, username (empty: none), messages per
    // minute, an address for a test message
    let answers = format!(
        "Sales\nsales@example.com\nCronus Sales\n127.0.0.1\nnone\n{}\n\n45\ntest@example.com\n",
        sink.port
    );
    let (ok, out, err) = setup_with_answers(&server, &[], &answers);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("Messages per minute"),
        "the limit is asked for: {err}"
    );
    assert!(
        err.contains("Sender name"),
        "the sender name is asked for: {err}"
    );
    assert!(out.contains("is now the default account"), "{out}");
    assert!(out.contains("Test message queued"), "{out}");
    let (_, accounts) = server.get("/v1/accounts").await.unwrap();
    let sales = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Sales")
        .expect("the account exists");
    assert_eq!(sales["is_default"], true);
    assert_eq!(sales["rate_limit_per_minute"], 45);
    assert_eq!(sales["sender_name"], "Cronus Sales");
    assert!(
        out.contains(sales["id"].as_str().unwrap()),
        "the id is printed: {out}"
    );
    // smtp-sink writes its dump file while the message arrives: wait for a complete one.
    wait_until(Duration::from_secs(10), "the test message", || async {
        Ok(sink
            .messages()?
            .first()
            .is_some_and(|m| !m.rcpt_to.is_empty() && m.message_id.is_some()))
    })
    .await
    .unwrap();
    assert_eq!(
        sink.messages().unwrap()[0].rcpt_to,
        vec!["test@example.com".to_string()]
    );
    let accepted = server
        .send(&json!({"to": ["c@example.com"], "subject": "after setup", "text": "t"}))
        .await
        .unwrap();
    assert_eq!(accepted["account_id"], sales["id"]);
    server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(sink.messages().unwrap().len(), 2);
}

#[tokio::test]
async fn the_guided_setup_keeps_nothing_when_the_connection_test_fails() {
    let server = start_server().await;
    let closed_port = mailroom_testkit::free_port().to_string();
    let (ok, _, err) = setup_with_answers(
        &server,
        &[
            "--non-interactive",
            "--name",
            "Broken",
            "--email",
            "b@example.com",
            "--host",
            "127.0.0.1",
            "--port",
            &closed_port,
            "--security",
            "none",
            "--username",
            "",
            "--rate-limit",
            "30",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("connection test failed"), "{err}");
    let (_, accounts) = server.get("/v1/accounts").await.unwrap();
    let accounts = accounts.as_array().unwrap();
    assert_eq!(
        accounts.len(),
        1,
        "only the original pickup account remains: {accounts:?}"
    );
    assert_eq!(accounts[0]["connector"], "pickup");
    assert_eq!(accounts[0]["is_default"], true);
}

#[tokio::test]
async fn the_cli_manages_users_and_their_tokens() {
    let server = start_server().await;
    let (ok, out, err) = cli(
        &server,
        &[
            "user",
            "add",
            "--name",
            "Clerk",
            "--email",
            "clerk@example.com",
            "--permission",
            "email-send",
            "--permission",
            "read customer",
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let user: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        user["permission_sets"],
        json!(["email-send", "read customer"])
    );
    let user_id = id_of(&user);
    let (ok, out, _) = cli(&server, &["user", "list"]);
    assert!(
        ok && out.contains("Clerk") && out.contains("admin"),
        "{out}"
    );
    let (ok, out, err) = cli(
        &server,
        &[
            "user", "token", &user_id, "--name", "erp", "--output", "json",
        ],
    );
    assert!(ok, "{err}");
    let token: Value = serde_json::from_str(&out).unwrap();
    let secret = token["token"].as_str().unwrap().to_owned();
    let as_clerk = Command::new(binary())
        .args(["outbox", "list", "--output", "json"])
        .env("MAILROOM_SERVER", &server.base_url)
        .env("MAILROOM_TOKEN", &secret)
        .output()
        .unwrap();
    assert!(
        as_clerk.status.success(),
        "{}",
        String::from_utf8_lossy(&as_clerk.stderr)
    );
    let (ok, out, _) = cli(&server, &["user", "show", &user_id]);
    assert!(ok && out.contains("clerk@example.com"), "{out}");
    let (ok, _, err) = cli(&server, &["user", "disable", &user_id]);
    assert!(ok, "{err}");
    let refused = Command::new(binary())
        .args(["outbox", "list"])
        .env("MAILROOM_SERVER", &server.base_url)
        .env("MAILROOM_TOKEN", &secret)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let (ok, _, err) = cli(
        &server,
        &[
            "user",
            "add",
            "--name",
            "Bad",
            "--permission",
            "superpowers",
        ],
    );
    assert!(!ok && err.contains("permission_sets[0]"), "{err}");
}

#[tokio::test]
async fn the_cli_finds_the_server_from_its_listen_address_when_no_server_is_given() {
    let server = start_server().await;
    let bare = |envs: &[(&str, String)]| {
        let mut command = Command::new(binary());
        command
            .args(["account", "list", "--output", "json"])
            .env_remove("MAILROOM_SERVER")
            .env_remove("MAILROOM_LISTEN")
            .env_remove("MAILROOM_CONFIG")
            .env("MAILROOM_TOKEN", &server.token)
            .env("MAILROOM_DATA_DIR", server.data_dir());
        for (name, value) in envs {
            command.env(name, value);
        }
        command.output().unwrap()
    };
    let listen = format!("127.0.0.1:{}", server.port);
    let from_environment = bare(&[("MAILROOM_LISTEN", listen.clone())]);
    assert!(
        from_environment.status.success(),
        "{}",
        String::from_utf8_lossy(&from_environment.stderr)
    );
    // The config file serve reads (the test kit's has no listen key; a copy with one).
    let config = server.data_dir().join("cli.toml");
    std::fs::write(&config, format!("listen = \"0.0.0.0:{}\"\n", server.port)).unwrap();
    let from_config = bare(&[("MAILROOM_CONFIG", config.display().to_string())]);
    assert!(
        from_config.status.success(),
        "{}",
        String::from_utf8_lossy(&from_config.stderr)
    );
}

#[tokio::test]
async fn cli_errors_are_json_under_output_json() {
    let server = start_server().await;
    let (ok, out, err) = cli(
        &server,
        &[
            "account",
            "show",
            "00000000-0000-0000-0000-000000000000",
            "--output",
            "json",
        ],
    );
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    let error: Value = serde_json::from_str(err.trim()).expect("a JSON error");
    assert_eq!(error["code"], "not_found", "{err}");
    let unreachable = Command::new(binary())
        .args([
            "account",
            "list",
            "--output",
            "json",
            "--server",
            "http://127.0.0.1:1",
        ])
        .env("MAILROOM_TOKEN", "x")
        .output()
        .unwrap();
    let error: Value =
        serde_json::from_str(String::from_utf8_lossy(&unreachable.stderr).trim()).unwrap();
    assert_eq!(error["code"], "cli_error");
    assert!(error["message"].as_str().unwrap().contains("cannot reach"));
}

#[tokio::test]
async fn the_cli_edits_accounts_previews_templates_uploads_files_sends_documents_and_confirms_drafts()
 {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    let account = server
        .add_default_smtp_account(
            "docs",
            sink.port,
            json!({"username": "docs", "password": "s3cret"}),
        )
        .await
        .unwrap();
    let id = id_of(&account);

    let (ok, out, err) = cli(
        &server,
        &[
            "account",
            "edit",
            &id,
            "--rate-limit",
            "12",
            "--retry-after-unknown",
            "false",
            "--ehlo-name",
            "mx.example.com",
            "--allowed-sender-domain",
            "cronus.example",
            "--timeout-greeting",
            "20",
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let edited: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(edited["rate_limit_per_minute"], 12);
    assert_eq!(edited["retry_after_unknown"], false);
    assert_eq!(edited["ehlo_name"], "mx.example.com");
    assert_eq!(edited["allowed_sender_domains"], json!(["cronus.example"]));
    assert_eq!(edited["timeouts"]["greeting_s"], 20);
    assert_eq!(
        edited["timeouts"]["end_of_data_s"], 600,
        "the others keep theirs"
    );
    let (ok, _, err) = cli(
        &server,
        &["account", "edit", &id, "--port", "2525", "--output", "json"],
    );
    assert!(!ok);
    assert_eq!(
        serde_json::from_str::<Value>(err.trim()).unwrap()["code"],
        "password_required"
    );

    let (ok, out, _) = cli(&server, &["template", "list"]);
    assert!(ok && out.contains("sales-invoice"), "{out}");
    let (ok, out, err) = cli(&server, &["template", "preview", "sales-invoice"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("Subject: "), "{out}");
    assert!(out.contains("ATHENS Desk"), "the text part: {out}");
    assert!(!out.contains("<td"), "not HTML: {out}");
    let (ok, out, _) = cli(&server, &["template", "show", "sales-invoice"]);
    assert!(ok && out.contains("document_type"), "{out}");

    let pdf = server.data_dir().join("invoice.pdf");
    std::fs::write(&pdf, b"%PDF-1.7 cli").unwrap();
    let (ok, out, err) = cli(
        &server,
        &[
            "attachment",
            "upload",
            pdf.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let attachment: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(attachment["content_type"], "application/pdf");

    server
        .call(
            reqwest::Method::PUT,
            "/v1/sending-profiles/confirm-first",
            Some(&json!({"email": "after-confirmation", "attachment": "pdf"})),
            &[],
        )
        .await
        .unwrap();
    server
        .call(
            reqwest::Method::PUT,
            "/v1/customers/C1/sending-profile",
            Some(&json!({"profile": "confirm-first"})),
            &[],
        )
        .await
        .unwrap();
    let request = server.data_dir().join("invoice.json");
    std::fs::write(
        &request,
        json!({
            "document_type": "sales-invoice", "number": "103001",
            "customer": {"id": "C1", "name": "Adatum Corporation", "email": "ap@adatum.example"},
            "data": {"company": {"name": "Cronus"}, "document": {"due_date": "2026-12-22", "currency": "EUR",
                     "total": 10.0, "payment_link": "https://pay.example.com/1",
                     "lines": [{"description": "Desk", "quantity": 1, "unit_price": 10.0, "amount": 10.0}]}},
            "attachments": [{"id": attachment["id"]}]
        })
        .to_string(),
    )
    .unwrap();
    let (ok, out, err) = cli(
        &server,
        &[
            "document",
            "send",
            "--file",
            request.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let draft: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(draft["status"], "draft", "{draft}");
    let draft_id = draft["message"]["id"]
        .as_str()
        .or(draft["id"].as_str())
        .unwrap()
        .to_owned();

    let (ok, out, _) = cli(&server, &["message", "show", &draft_id]);
    assert!(ok);
    assert!(out.contains("\ntext\n"), "the text part is shown: {out}");
    assert!(!out.contains("<html"), "not the HTML: {out}");

    let (ok, _, err) = cli(&server, &["message", "confirm", &draft_id]);
    assert!(ok, "{err}");
    server
        .wait_for_status(&draft_id, "sent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(sink.messages().unwrap().len(), 1);
}

#[tokio::test]
async fn retention_deletes_the_content_of_sent_mail_and_keeps_its_envelope_and_attempts() {
    let sink = SmtpSink::start(&[]).unwrap();
    // Zero days: content goes as soon as a pass finds the message sent (passes every 100 ms).
    let server = MailroomServer::start(
        common::binary(),
        &format!(
            "sent_retention_days = 0\n{}retention_interval_ms = 100\n",
            common::FAST_ENGINE
        ),
    )
    .await
    .unwrap();
    server
        .add_default_smtp_account("kept", sink.port, json!({}))
        .await
        .unwrap();
    let accepted = server
        .send(&json!({"to": ["jane@example.com"], "subject": "Invoice 7", "text": "the body"}))
        .await
        .unwrap();
    let id = accepted["id"].as_str().unwrap().to_owned();
    server
        .wait_for_status(&id, "sent", Duration::from_secs(10))
        .await
        .unwrap();
    wait_until(Duration::from_secs(10), "the content deleted", || async {
        Ok(server
            .message(&id)
            .await?
            .get("content_deleted_at")
            .is_some())
    })
    .await
    .unwrap();
    let message = server.message(&id).await.unwrap();
    assert!(message["text"].is_null(), "{message:#}");
    assert_eq!(message["subject"], "Invoice 7");
    assert_eq!(message["to"], json!(["jane@example.com"]));
    assert_eq!(message["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(
        sink.messages().unwrap().len(),
        1,
        "it was delivered whole first"
    );
}
