//! Moving from one machine to several: `mailroom store copy` takes a SQLite store holding every
//! kind of row into an empty PostgreSQL database, and a server on it carries on — sends the mail
//! still queued and shows the sent archive and its attempts unchanged.

mod common;

use common::{FAST_ENGINE, binary, id_of};
use mailroom_testkit::{MailroomServer, SmtpSink, TestDatabase, wait_until};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

async fn put(server: &MailroomServer, path: &str, body: Value) -> Value {
    let (status, answer) = server
        .call(reqwest::Method::PUT, path, Some(&body), &[])
        .await
        .unwrap();
    assert!(
        matches!(status, 200 | 201 | 204),
        "{path}: {status} {answer}"
    );
    answer
}

fn copy(from: &str, to: &str, blobs: &std::path::Path) -> std::process::Output {
    Command::new(binary())
        .args(["store", "copy", "--from", from, "--to", to, "--blobs"])
        .arg(blobs)
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_sqlite_store_copied_to_postgresql_carries_on_there_unchanged() {
    let database = TestDatabase::create().await.unwrap();
    let sink = SmtpSink::start(&[]).unwrap();
    let mut server = MailroomServer::start_on(binary(), FAST_ENGINE, false)
        .await
        .unwrap();

    // Every kind of row: accounts (one with a sealed password), a user with a token and a view
    // policy, routing, a template with two versions, sending and customer profiles, an upload,
    // messages sent (one with the upload), cancelled and still queued, related records, attempts,
    // and the audit entries all of this wrote.
    let account = server
        .add_default_smtp_account("main", sink.port, json!({}))
        .await
        .unwrap();
    let (status, secretive) = server
        .post(
            "/v1/accounts",
            &json!({"connector": "smtp", "name": "secretive", "email_address": "s@example.com",
                "host": "127.0.0.1", "port": 1, "security": "none", "username": "u", "password": "pa55-w0rd-kept-sealed"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{secretive}");
    let (status, clerk) = server
        .post(
            "/v1/users",
            &json!({"name": "clerk", "licence": "full", "permission_sets": ["email-send", "read customer"]}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{clerk}");
    let clerk_id = id_of(&clerk);
    put(
        &server,
        &format!("/v1/view-policies/{clerk_id}"),
        json!({"policy": "own"}),
    )
    .await;
    let (_, clerk_token) = server
        .post(
            &format!("/v1/users/{clerk_id}/tokens"),
            &json!({"name": "clerk"}),
        )
        .await
        .unwrap();
    let clerk_token = clerk_token["token"].as_str().unwrap().to_owned();
    put(
        &server,
        "/v1/scenarios/sales-invoice",
        json!({"account_id": account["id"]}),
    )
    .await;
    for version in ["first", "second"] {
        put(
            &server,
            "/v1/templates/reminder",
            json!({"document_type": "reminder", "subject": format!("Reminder ({version})"), "html": "<p>{{ customer.name }}</p>"}),
        )
        .await;
    }
    put(
        &server,
        "/v1/sending-profiles/careful",
        json!({"email": "after-confirmation", "attachment": "pdf", "is_default": false}),
    )
    .await;
    put(
        &server,
        "/v1/customers/C7/sending-profile",
        json!({"profile": "careful"}),
    )
    .await;
    let upload = reqwest::Client::new()
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(&server.token)
        .header("content-type", "application/pdf")
        .header(
            "content-disposition",
            "attachment; filename=\"invoice.pdf\"",
        )
        .body(b"%PDF-1.4 the invoice".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201);
    let upload: Value = upload.json().await.unwrap();
    let mut kept = Vec::new();
    for n in 0..3 {
        let mut body = json!({"to": [format!("c{n}@example.com")], "subject": format!("Invoice {n}"), "text": "t",
            "scenario": "sales-invoice",
            "related_records": [{"type": "customer", "id": "C7", "relation": "related"},
                                {"type": "sales-invoice", "id": format!("I{n}"), "relation": "primary"}]});
        if n == 0 {
            body["attachments"] = json!([{"id": upload["id"]}]);
        }
        let accepted = server.send(&body).await.unwrap();
        kept.push(id_of(&accepted));
    }
    for id in &kept {
        server
            .wait_for_status(id, "sent", Duration::from_secs(10))
            .await
            .unwrap();
    }
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let cancelled = server
        .send(
            &json!({"to": ["x@example.com"], "subject": "Never mind", "text": "t",
            "send_at": later.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await
        .unwrap();
    let (status, _) = server
        .post(
            &format!("/v1/messages/{}/cancel", id_of(&cancelled)),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    kept.push(id_of(&cancelled));
    // Due a few seconds from now: still queued when the server stops.
    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(4);
    let queued = server
        .send(
            &json!({"to": ["late@example.com"], "subject": "Queued across the move", "text": "t",
            "send_at": soon.format(&time::format_description::well_known::Rfc3339).unwrap()}),
        )
        .await
        .unwrap();
    let queued_id = id_of(&queued);

    let mut before = Vec::new();
    for id in &kept {
        before.push(server.message(id).await.unwrap());
    }
    let (_, sent_before) = server.get("/v1/sent?limit=50").await.unwrap();
    let (_, audit_before) = server.get("/v1/audit?limit=500").await.unwrap();
    server.terminate().unwrap();
    assert!(
        server.message(&queued_id).await.is_err(),
        "the server is stopped"
    );

    let sqlite_url = format!(
        "sqlite://{}",
        server.data_dir().join("mailroom.db").display()
    );
    let copied = copy(&sqlite_url, &database.url, &server.data_dir().join("blobs"));
    let printed = String::from_utf8_lossy(&copied.stdout).to_string();
    assert!(
        copied.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&copied.stderr)
    );
    assert!(printed.contains("copied messages: 5 rows"), "{printed}");
    assert!(printed.contains("copied 1 files"), "{printed}");
    // A second copy into the same database is refused: it is no longer empty.
    let again = copy(&sqlite_url, &database.url, &server.data_dir().join("blobs"));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // The same server (its data folder keeps the secret key) now on PostgreSQL, files included.
    let config = server.data_dir().join("mailroom.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!(
            "database_url = {:?}\nblob_store = \"database\"\n{toml}",
            database.url
        ),
    )
    .unwrap();
    std::fs::remove_dir_all(server.data_dir().join("blobs")).unwrap();
    server.restart().await.unwrap();
    let (_, nodes) = server.get("/v1/nodes").await.unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes:#}");

    server
        .wait_for_status(&queued_id, "sent", Duration::from_secs(20))
        .await
        .unwrap();
    for (id, earlier) in kept.iter().zip(&before) {
        assert_eq!(&server.message(id).await.unwrap(), earlier, "message {id}");
    }
    let (_, sent_after) = server.get("/v1/sent?limit=50").await.unwrap();
    assert_eq!(sent_after["total"], 4);
    assert_eq!(
        sent_after["items"].as_array().unwrap()[1..],
        sent_before["items"].as_array().unwrap()[..],
        "the archive is unchanged below the newly sent message"
    );
    let (_, audit_after) = server.get("/v1/audit?limit=500").await.unwrap();
    assert_eq!(audit_after, audit_before);
    // The clerk's token works and their view policy holds; the upload is served from the database.
    let clerk_view = reqwest::Client::new()
        .get(format!("{}/v1/sent", server.base_url))
        .bearer_auth(&clerk_token)
        .send()
        .await
        .unwrap();
    assert_eq!(clerk_view.status(), 200);
    let clerk_view: Value = clerk_view.json().await.unwrap();
    assert_eq!(clerk_view["total"], 0, "the clerk sent nothing");
    let file = reqwest::Client::new()
        .get(format!(
            "{}/v1/attachments/{}",
            server.base_url,
            upload["id"].as_str().unwrap()
        ))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.bytes().await.unwrap().as_ref(),
        b"%PDF-1.4 the invoice"
    );
    wait_until(Duration::from_secs(5), "delivered", || async {
        Ok(sink.messages()?.len() == 4)
    })
    .await
    .unwrap();
}
