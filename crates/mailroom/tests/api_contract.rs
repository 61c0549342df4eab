//! The HTTP API's contract: authentication, bad input refused precisely with nothing stored,
//! idempotency, secrets never returned, the default-account rules and the OpenAPI document.

mod common;

use common::{id_of, start_server, start_server_with};
use reqwest::Method;
use serde_json::{Value, json};

async fn outbox_total(server: &mailroom_testkit::MailroomServer) -> i64 {
    let (_, outbox) = server
        .get("/v1/outbox?status=queued,sending,sent,failed,cancelled")
        .await
        .unwrap();
    outbox["total"].as_i64().unwrap()
}

#[tokio::test]
async fn every_v1_route_refuses_a_request_without_a_valid_token() {
    let server = start_server().await;
    let client = reqwest::Client::new();
    let openapi: Value = client
        .get(format!("{}/openapi.json", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = openapi["paths"].as_object().unwrap();
    let mut checked = 0;
    for (path, item) in paths {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = common::concrete_path(path);
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for token in [None, Some("mr_not-a-real-token")] {
                let mut request =
                    client.request(method.clone(), format!("{}{concrete}", server.base_url));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                assert_eq!(
                    response.status(),
                    401,
                    "{method} {path} with token {token:?}"
                );
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "unauthorized");
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 12,
        "only {checked} operations found in the OpenAPI document"
    );
}

#[tokio::test]
async fn bad_messages_are_refused_with_a_precise_error_and_nothing_is_stored() {
    let server = start_server_with("max_body_bytes = 1000").await;
    let before = outbox_total(&server).await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"to": ["not-an-address"], "subject": "s", "text": "t"}),
            422,
            "to[0]",
        ),
        (
            json!({"to": ["ok@example.com", "a@b@c"], "subject": "s", "text": "t"}),
            422,
            "to[1]",
        ),
        (
            json!({"to": ["ok@example.com"], "cc": ["x y@example.com"], "subject": "s", "text": "t"}),
            422,
            "cc[0]",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "Invoice\r\nBcc: victim@example.com", "text": "t"}),
            422,
            "subject",
        ),
        (
            json!({"to": ["Evil\r\nBcc: x@example.com <ok@example.com>"], "subject": "s", "text": "t"}),
            422,
            "to[0]",
        ),
        (json!({"to": [], "subject": "s", "text": "t"}), 422, "to"),
        (
            json!({"to": ["ok@example.com"], "subject": "s"}),
            422,
            "text",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "scenario": "no-such-scenario"}),
            422,
            "scenario",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "scenario": "Not Valid"}),
            422,
            "scenario",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "account_id": "00000000-0000-0000-0000-000000000000"}),
            422,
            "account_id",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "x".repeat(1001)}),
            413,
            "",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "send_at": "tomorrow"}),
            422,
            "send_at",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "related_records": [{"type": "Sales Invoice", "id": "1"}]}),
            422,
            "related_records[0].type",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "bodyy": "typo"}),
            422,
            "",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "a\u{0}b"}),
            422,
            "text",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "html": "<p>\u{7}</p>"}),
            422,
            "html",
        ),
        (
            json!({"to": ["ok@example.com"], "subject": "s", "text": "t", "headers": {"List-Unsubscribe": "<https://example.com/ü>"}}),
            422,
            "headers.List-Unsubscribe",
        ),
    ];
    for (body, status, field) in cases {
        let (got, error) = server.post("/v1/messages", &body).await.unwrap();
        assert_eq!(got, status, "{body} → {error}");
        assert!(
            error["code"].is_string() && error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        if !field.is_empty() {
            assert_eq!(error["field"], field, "{body} → {error}");
        }
    }
    let (status, error) = server
        .call(
            Method::POST,
            "/v1/messages",
            None,
            &[("content-type", "application/json")],
        )
        .await
        .unwrap();
    assert!(
        status == 400 || status == 422,
        "an empty body answered {status}: {error}"
    );
    assert_eq!(
        outbox_total(&server).await,
        before,
        "a refused message was stored"
    );
}

#[tokio::test]
async fn an_idempotency_key_makes_a_repeated_request_return_the_first_message() {
    let server = start_server().await;
    let body = json!({"to": ["a@example.com"], "subject": "once", "text": "t"});
    let key = [("idempotency-key", "order-42-confirmation")];
    let (first_status, first) = server
        .call(Method::POST, "/v1/messages", Some(&body), &key)
        .await
        .unwrap();
    let (second_status, second) = server
        .call(Method::POST, "/v1/messages", Some(&body), &key)
        .await
        .unwrap();
    assert_eq!((first_status, second_status), (202, 202));
    assert_eq!(first["id"], second["id"]);
    assert_eq!(first["message_id"], second["message_id"]);
    let other = json!({"to": ["a@example.com"], "subject": "different", "text": "t"});
    let (status, error) = server
        .call(Method::POST, "/v1/messages", Some(&other), &key)
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(error["code"], "idempotency_key_reused");
    let (_, sent_or_queued) = server
        .get("/v1/outbox?status=queued,sending,sent")
        .await
        .unwrap();
    assert_eq!(sent_or_queued["total"], 1);
}

#[tokio::test]
async fn an_account_password_is_stored_encrypted_and_never_returned() {
    let server = start_server().await;
    let password = "correct-horse-battery-staple";
    let account = server
        .add_smtp_account(
            "secret",
            2525,
            json!({"username": "mailer", "password": password}),
        )
        .await
        .unwrap();
    assert_eq!(account["has_password"], true);
    assert!(!account.to_string().contains(password));
    let (_, listed) = server.get("/v1/accounts").await.unwrap();
    assert!(!listed.to_string().contains(password));
    let (_, shown) = server
        .get(&format!("/v1/accounts/{}", id_of(&account)))
        .await
        .unwrap();
    assert!(shown.get("password").is_none());
    let stored = server.stored_bytes().await.unwrap();
    let needle = password.as_bytes();
    for bytes in &stored {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the password is stored in plain text"
        );
    }
    assert!(!server.log().contains(password), "the password was logged");
    // Username without password (or the reverse) is refused.
    let (status, error) = server.post("/v1/accounts", &json!({"connector": "smtp", "name": "half", "email_address": "h@example.com", "host": "h", "username": "u"})).await.unwrap();
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "password");
}

#[tokio::test]
async fn a_fresh_install_has_a_pickup_default_account_and_a_private_admin_token() {
    use std::os::unix::fs::PermissionsExt;
    let server = start_server().await;
    let mode = std::fs::metadata(server.data_dir().join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        server.stdout().contains(&server.token),
        "the admin token is printed once on first start"
    );
    let (_, accounts) = server.get("/v1/accounts").await.unwrap();
    let accounts = accounts.as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["connector"], "pickup");
    assert_eq!(accounts[0]["is_default"], true);
    let accepted = server
        .send(&json!({"to": ["a@example.com"], "subject": "hello", "text": "from a fresh install"}))
        .await
        .unwrap();
    server
        .wait_for_status(
            &id_of(&accepted),
            "sent",
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let pickup = server.data_dir().join("pickup");
    let files: Vec<_> = std::fs::read_dir(&pickup)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    let written = std::fs::read(&files[0]).unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&written)
        .unwrap();
    assert_eq!(parsed.subject(), Some("hello"));
    assert_eq!(
        format!("<{}>", parsed.message_id().unwrap()),
        accepted["message_id"].as_str().unwrap()
    );
}

#[tokio::test]
async fn deleting_the_default_account_hands_the_role_to_the_only_remaining_account() {
    let server = start_server().await;
    let (_, accounts) = server.get("/v1/accounts").await.unwrap();
    let pickup_id = id_of(&accounts[0]);
    let second = server
        .add_smtp_account("second", 2525, json!({}))
        .await
        .unwrap();
    assert_eq!(second["is_default"], false);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{pickup_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (_, second) = server
        .get(&format!("/v1/accounts/{}", id_of(&second)))
        .await
        .unwrap();
    assert_eq!(second["is_default"], true);
}

#[tokio::test]
async fn without_a_default_account_unassigned_scenarios_fail_clearly_until_an_admin_picks_one() {
    let server = start_server().await;
    let (_, accounts) = server.get("/v1/accounts").await.unwrap();
    let pickup_id = id_of(&accounts[0]);
    let a = server.add_smtp_account("a", 2525, json!({})).await.unwrap();
    let b = server.add_smtp_account("b", 2526, json!({})).await.unwrap();
    server
        .call(
            Method::PUT,
            "/v1/scenarios/sales-order",
            Some(&json!({"account_id": a["id"]})),
            &[],
        )
        .await
        .unwrap();
    server
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{pickup_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    // Two accounts remain: none is chosen silently.
    let (status, error) = server
        .post(
            "/v1/messages",
            &json!({"to": ["x@example.com"], "subject": "s", "text": "t"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["code"], "no_default_account");
    // A scenario with its own account still sends.
    let (status, _) = server.post("/v1/messages", &json!({"to": ["x@example.com"], "subject": "s", "text": "t", "scenario": "sales-order"})).await.unwrap();
    assert_eq!(status, 202);
    // Unassigning what is already unassigned is a harmless no-op.
    let (status, scenario) = server
        .call(Method::DELETE, "/v1/scenarios/default", None, &[])
        .await
        .unwrap();
    assert_eq!((status, &scenario["account_id"]), (200, &Value::Null));
    server
        .call(
            Method::PUT,
            "/v1/scenarios/default",
            Some(&json!({"account_id": b["id"]})),
            &[],
        )
        .await
        .unwrap();
    let (status, accepted) = server
        .post(
            "/v1/messages",
            &json!({"to": ["x@example.com"], "subject": "s", "text": "t"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 202);
    assert_eq!(accepted["account_id"], b["id"]);
    // The default account cannot be unassigned while accounts exist.
    let (status, error) = server
        .call(Method::DELETE, "/v1/scenarios/default", None, &[])
        .await
        .unwrap();
    assert_eq!(status, 409, "{error}");
}

#[tokio::test]
async fn an_account_with_waiting_mail_cannot_be_deleted() {
    let server = start_server().await;
    let account = server
        .add_smtp_account("busy", 9, json!({"max_attempts": 5}))
        .await
        .unwrap();
    let later = "2099-01-01T00:00:00Z";
    server.send(&json!({"to": ["x@example.com"], "subject": "s", "text": "t", "account_id": account["id"], "send_at": later})).await.unwrap();
    let (status, error) = server
        .call(
            Method::DELETE,
            &format!("/v1/accounts/{}", id_of(&account)),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 409);
    assert!(
        error["message"].as_str().unwrap().contains("waiting"),
        "{error}"
    );
}

#[tokio::test]
async fn a_scheduled_message_can_be_cancelled_and_listed_with_filters_and_paging() {
    let server = start_server().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let accepted = server
            .send(&json!({"to": ["x@example.com"], "subject": format!("later {n}"), "text": "t", "scenario": "reminder", "send_at": "2099-01-01T00:00:00Z"}))
            .await
            .unwrap();
        ids.push(id_of(&accepted));
    }
    let (_, page) = server
        .get("/v1/outbox?limit=2&scenario=reminder")
        .await
        .unwrap();
    assert_eq!(page["total"], 5);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["id"], ids[4].as_str(), "newest first");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = server
        .get(&format!(
            "/v1/outbox?limit=2&scenario=reminder&cursor={cursor}"
        ))
        .await
        .unwrap();
    assert_eq!(next["items"][0]["id"], ids[2].as_str());
    let (_, none) = server
        .get("/v1/outbox?scenario=sales-invoice")
        .await
        .unwrap();
    assert_eq!(none["total"], 0);

    let (status, cancelled) = server
        .post(&format!("/v1/messages/{}/cancel", ids[0]), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(cancelled["status"], "cancelled");
    let (status, error) = server
        .post(&format!("/v1/messages/{}/cancel", ids[0]), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{error}");
    let (_, cancelled_list) = server.get("/v1/outbox?status=cancelled").await.unwrap();
    assert_eq!(cancelled_list["total"], 1);
    let (status, _) = server.get("/v1/outbox?status=bogus").await.unwrap();
    assert_eq!(status, 422);
    let (status, _) = server
        .get("/v1/messages/00000000-0000-0000-0000-000000000000")
        .await
        .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_openapi_document_health_docs_and_metrics_are_served() {
    let server = start_server().await;
    let client = reqwest::Client::new();
    let openapi: Value = client
        .get(format!("{}/openapi.json", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/messages",
        "/v1/messages/{id}",
        "/v1/outbox",
        "/v1/sent",
        "/v1/accounts",
        "/v1/accounts/{id}/test",
        "/v1/scenarios/{name}",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let docs = client
        .get(format!("{}/docs", server.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let openapi: Value = client
        .get(format!("{}/openapi.json", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, method, status) in [
        ("/v1/messages", "post", "202"),
        ("/v1/documents/send", "post", "202"),
        ("/v1/accounts", "post", "201"),
        ("/v1/messages/{id}", "get", "200"),
    ] {
        let operation = &openapi["paths"][path][method];
        assert!(
            operation["responses"][status]["content"]["application/json"]["example"].is_object(),
            "{method} {path} has an example answer"
        );
        if method == "post" {
            assert!(
                operation["requestBody"]["content"]["application/json"]["example"].is_object(),
                "{method} {path} has an example request"
            );
        }
    }
    assert!(docs.contains("/docs/redoc.standalone.js"), "{docs}");
    assert!(
        !docs.contains("https://"),
        "nothing is loaded from elsewhere: {docs}"
    );
    // In a real browser the reference renders every route and the catalogue of error codes.
    let dir = tempfile::tempdir().unwrap();
    let rendered = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--virtual-time-budget=15000",
            &format!("--user-data-dir={}", dir.path().display()),
            "--dump-dom",
        ])
        .arg(format!("{}/docs", server.base_url))
        .output()
        .expect("chromium runs (.ci/run installs it)");
    let dom = String::from_utf8_lossy(&rendered.stdout);
    for expected in [
        "/v1/messages/{id}/retry",
        "storage_full",
        "password_required",
        "Authorization",
    ] {
        assert!(
            dom.contains(expected),
            "{expected} is not on the rendered /docs page"
        );
    }
    let health: Value = client
        .get(format!("{}/healthz", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let accepted = server
        .send(&json!({"to": ["a@example.com"], "subject": "m", "text": "t"}))
        .await
        .unwrap();
    server
        .wait_for_status(
            &id_of(&accepted),
            "sent",
            std::time::Duration::from_secs(10),
        )
        .await
        .unwrap();
    let metrics = client
        .get(format!("{}/metrics", server.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mailroom_messages_sent_total{") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mailroom_outbox_messages{")
                && l.contains("status=\"queued\"")
                && l.ends_with(" 0")),
        "{metrics}"
    );
    assert!(
        metrics.contains("mailroom_send_duration_seconds_bucket"),
        "{metrics}"
    );
}

async fn openapi_document(server: &mailroom_testkit::MailroomServer) -> Value {
    reqwest::get(format!("{}/openapi.json", server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Whether the OpenAPI document lists `status` among the answers of `method path`.
fn documents_status(openapi: &Value, path: &str, method: &str, status: u16) -> bool {
    openapi["paths"][path][method]["responses"]
        .get(status.to_string())
        .is_some()
}

#[tokio::test]
async fn every_path_answers_an_undeclared_method_with_405_and_the_methods_it_allows() {
    let server = start_server().await;
    let openapi = openapi_document(&server).await;
    let client = reqwest::Client::new();
    let mut checked = 0;
    for (path, item) in openapi["paths"].as_object().unwrap() {
        let declared: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        let mut allowed = declared.clone();
        if declared.iter().any(|m| m == "GET") {
            allowed.push("HEAD".into());
        }
        allowed.sort();
        let url = format!("{}{}", server.base_url, common::concrete_path(path));
        for method in ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] {
            if allowed.iter().any(|m| m == method) {
                continue;
            }
            let response = client
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .bearer_auth(&server.token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 405, "{method} {path}");
            let mut allow: Vec<String> = response.headers()["allow"]
                .to_str()
                .unwrap()
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            allow.sort();
            assert_eq!(allow, allowed, "Allow of {path}");
            if method != "HEAD" {
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "method_not_allowed", "{method} {path}");
            }
            checked += 1;
        }
        if declared.iter().any(|m| m == "GET") {
            let get = client
                .get(&url)
                .bearer_auth(&server.token)
                .send()
                .await
                .unwrap();
            let head = client
                .head(&url)
                .bearer_auth(&server.token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.status(),
                get.status(),
                "HEAD {path} answers as GET does"
            );
        }
    }
    assert!(checked > 50, "only {checked} undeclared methods tried");
    assert!(
        !server.log().contains("ERROR"),
        "no error is logged for a wrong method:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn every_json_body_is_refused_alike_when_it_is_not_json_malformed_or_the_wrong_shape() {
    let server = start_server().await;
    let openapi = openapi_document(&server).await;
    let client = reqwest::Client::new();
    let mut checked = 0;
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["requestBody"]["content"]
                .get("application/json")
                .is_none()
            {
                continue;
            }
            let url = format!("{}{}", server.base_url, common::concrete_path(path));
            let cases: [(&str, &str, u16, &str); 5] = [
                ("text/plain", "{}", 415, "unsupported_media_type"),
                ("application/json", "{bad", 400, "invalid_json"),
                ("application/json", "", 400, "invalid_json"),
                ("application/json", "[null,null]", 422, "invalid_request"),
                (
                    "application/json",
                    "{\"name\": [1, 2]}",
                    422,
                    "invalid_request",
                ),
            ];
            for (content_type, body, status, code) in cases {
                let response = client
                    .request(
                        Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                        &url,
                    )
                    .bearer_auth(&server.token)
                    .header("content-type", content_type)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let answered = response.status().as_u16();
                let answer: Value = response.json().await.unwrap();
                // An unknown id in the path may be found out before the body is read.
                if answered == 404 && answer["code"] == "not_found" {
                    assert!(documents_status(&openapi, path, method, 404));
                    continue;
                }
                assert_eq!(
                    answered, status,
                    "{method} {path} with {content_type} {body:?}: {answer}"
                );
                assert_eq!(answer["code"], code, "{method} {path} with {body:?}");
                assert!(
                    documents_status(&openapi, path, method, status),
                    "{method} {path} does not document {status}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 40, "only {checked} cases tried");
    assert_eq!(
        outbox_total(&server).await,
        0,
        "no refused body stored a message"
    );
}

#[tokio::test]
async fn a_page_size_outside_one_to_five_hundred_is_refused() {
    let server = start_server().await;
    let openapi = openapi_document(&server).await;
    for path in [
        "/v1/outbox",
        "/v1/sent",
        "/v1/audit",
        "/v1/records/customer/C1/messages",
    ] {
        for limit in [
            "0",
            "-1",
            "501",
            "2147483648",
            "99999999999999999999",
            "ten",
        ] {
            let (status, body) = server.get(&format!("{path}?limit={limit}")).await.unwrap();
            assert_eq!(status, 422, "{path}?limit={limit}: {body}");
            let template = if path.starts_with("/v1/records") {
                "/v1/records/{type}/{id}/messages"
            } else {
                path
            };
            assert!(
                documents_status(&openapi, template, "get", 422),
                "{template}"
            );
        }
        for limit in ["1", "500"] {
            let (status, body) = server.get(&format!("{path}?limit={limit}")).await.unwrap();
            assert_eq!(status, 200, "{path}?limit={limit}: {body}");
        }
    }
}

#[tokio::test]
async fn a_pickup_folder_must_lie_under_the_pickup_root() {
    let server = start_server().await;
    let root = server.data_dir().canonicalize().unwrap().join("pickup");
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), root.join("escape")).unwrap();
    let refused = [
        "/etc/cron.d".to_owned(),
        format!("{}/../../etc", root.display()),
        format!("{}/escape", root.display()),
        format!("{}/escape/deeper", root.display()),
        "../outside".to_owned(),
        format!("{}-sibling", root.display()),
    ];
    for dir in &refused {
        let (status, body) = server
            .post(
                "/v1/accounts",
                &json!({"connector": "pickup", "name": "Drop", "email_address": "drop@example.com", "pickup_dir": dir}),
            )
            .await
            .unwrap();
        assert_eq!(status, 422, "{dir}: {body}");
        assert_eq!(body["field"], "pickup_dir", "{dir}");
        assert!(
            body["message"].as_str().unwrap().contains("pickup root"),
            "{body}"
        );
    }
    let (_, accounts) = server.get("/v1/accounts").await.unwrap();
    assert_eq!(accounts.as_array().unwrap().len(), 1, "nothing stored");

    for (dir, expected) in [
        (
            format!("{}/invoices", root.display()),
            root.join("invoices"),
        ),
        ("orders".to_owned(), root.join("orders")),
    ] {
        let (status, account) = server
            .post(
                "/v1/accounts",
                &json!({"connector": "pickup", "name": "Drop", "email_address": "drop@example.com", "pickup_dir": dir}),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{account}");
        assert_eq!(account["pickup_dir"], expected.display().to_string());
    }
    // An account cannot be moved out afterwards either.
    let id = id_of(&server.get("/v1/accounts").await.unwrap().1[1]);
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/v1/accounts/{id}"),
            Some(&json!({"pickup_dir": "/tmp"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_stored_password_is_not_sent_to_another_server_unless_it_is_given_again() {
    let server = start_server().await;
    let (status, account) = server
        .post(
            "/v1/accounts",
            &json!({"connector": "smtp", "name": "Sales", "email_address": "sales@example.com",
                    "host": "smtp.example.com", "port": 587, "security": "starttls",
                    "username": "sales", "password": "s3cret"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{account}");
    let path = format!("/v1/accounts/{}", id_of(&account));
    for (change, field) in [
        (json!({"host": "attacker.example.net"}), "host"),
        (json!({"port": 2525}), "port"),
        (json!({"security": "none"}), "security"),
        (json!({"username": "other"}), "username"),
    ] {
        let (status, body) = server
            .call(Method::PATCH, &path, Some(&change), &[])
            .await
            .unwrap();
        assert_eq!(status, 422, "{change}: {body}");
        assert_eq!(body["code"], "password_required");
        assert_eq!(body["field"], "password");
        assert!(body["message"].as_str().unwrap().contains(field), "{body}");
    }
    let (_, unchanged) = server.get(&path).await.unwrap();
    assert_eq!(unchanged["host"], "smtp.example.com");
    assert_eq!(unchanged["port"], 587);

    // Changes that do not move the password, or that give it again, are fine.
    let (status, _) = server
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"name": "Sales EU", "rate_limit_per_minute": 30})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, moved) = server
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"host": "smtp2.example.com", "password": "s3cret"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["host"], "smtp2.example.com");

    let (_, audit) = server.get("/v1/audit").await.unwrap();
    let refused: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "account.update_refused.password_required")
        .collect();
    assert_eq!(refused.len(), 4, "every refusal is audited: {audit}");
    assert!(
        refused
            .iter()
            .any(|e| e["after"]["host"] == "attacker.example.net")
    );
    assert!(!audit.to_string().contains("s3cret"));
}

#[tokio::test]
async fn the_default_account_and_its_message_ids_carry_the_configured_hostname_never_localhost() {
    let server = start_server_with("hostname = \"mail.example.org\"").await;
    let (_, accounts) = server.get("/v1/accounts").await.unwrap();
    assert_eq!(accounts[0]["email_address"], "mailroom@mail.example.org");
    let accepted = server
        .send(&json!({"to": ["a@example.com"], "subject": "s", "text": "t"}))
        .await
        .unwrap();
    let message_id = accepted["message_id"].as_str().unwrap();
    assert!(message_id.ends_with("@mail.example.org>"), "{message_id}");

    let plain = start_server().await;
    let accepted = plain
        .send(&json!({"to": ["a@example.com"], "subject": "s", "text": "t"}))
        .await
        .unwrap();
    assert!(
        !accepted["message_id"]
            .as_str()
            .unwrap()
            .ends_with("@localhost>"),
        "{accepted}"
    );
}
