//! Webhooks against a real HTTP receiver on loopback: deliveries signed as the Standard Webhooks
//! specification says (checked here with an HMAC of our own), retried with the same `webhook-id`
//! until the receiver answers 2xx, logged per endpoint, replayed on request; receivers on private
//! addresses refused unless the server allows them; and not one event lost when the receiver is
//! down while mailroom is SIGKILLed.

mod common;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use common::{id_of, ok};
use hmac::Mac;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the receiver got: its `webhook-id`, `webhook-timestamp`, `webhook-signature` and
/// body, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

/// An HTTP receiver on loopback answering each request with the next status of `plan` (then 200).
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(port: u16, plan: Vec<u16>) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let plan = Arc::new(Mutex::new(plan.into_iter()));
        let log = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                let plan = plan.clone();
                async move {
                    let answered = plan.lock().unwrap().next().unwrap_or(200);
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    log.lock().unwrap().push(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body: body.to_vec(),
                        answered,
                    });
                    (StatusCode::from_u16(answered).unwrap(), "thanks")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            received,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Checks a delivery's signature with the secret, independently of mailroom's code.
fn signed_by(received: &Received, secret: &str) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", received.id, received.timestamp).as_bytes());
    mac.update(&received.body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    received.signature.split(' ').any(|s| s == expected)
}

fn body(received: &Received) -> Value {
    serde_json::from_slice(&received.body).unwrap()
}

/// An API call with the admin token: the status and the JSON answer.
async fn call(
    server: &mailroom_testkit::MailroomServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, answer) = server.call(method, path, body.as_ref(), &[]).await.unwrap();
    (status, answer)
}

const ALLOW_PRIVATE: &str = "[webhooks]\nallow_private_targets = true\n";

#[tokio::test]
async fn deliveries_are_signed_retried_with_the_same_id_logged_and_replayed() {
    let sink = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    let refusing = mailroom_testkit::SmtpSink::start(&["-f", "RCPT"]).unwrap();
    // The first delivery is refused, the second answered 200.
    let receiver = Receiver::start(0, vec![500]).await;
    let server = common::start_server_with(ALLOW_PRIVATE).await;
    server
        .add_default_smtp_account("works", sink.port, json!({}))
        .await
        .unwrap();
    let refused_account = id_of(
        &ok(&server, Method::POST, "/v1/accounts", Some(json!({"name": "refused", "connector": "smtp",
            "email_address": "billing@example.com", "host": "127.0.0.1", "port": refusing.port, "security": "none"}))).await,
    );
    let hook = ok(
        &server,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": receiver.url(), "events": ["message.sent", "message.failed"]})),
    )
    .await;
    let hook_id = id_of(&hook);
    let secret = hook["secret"]
        .as_str()
        .expect("the secret is shown once")
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    let listed = ok(
        &server,
        Method::GET,
        &format!("/v1/webhooks/{hook_id}"),
        None,
    )
    .await;
    assert!(
        listed.get("secret").is_none(),
        "never shown again: {listed}"
    );
    assert!(!server.log().contains(&secret[6..]), "never logged");

    let sent = id_of(
        &server
            .send(&json!({"to": ["ann@example.com"], "subject": "Invoice 1", "text": "t"}))
            .await
            .unwrap(),
    );
    let failed = id_of(&server.send(&json!({"to": ["bob@example.com"], "subject": "Invoice 2", "text": "t", "account_id": refused_account})).await.unwrap());
    mailroom_testkit::wait_until(Duration::from_secs(30), "both events delivered", || async {
        Ok(receiver
            .received()
            .iter()
            .filter(|r| r.answered == 200)
            .count()
            >= 2)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let received = receiver.received();
    for r in &received {
        assert!(signed_by(r, &secret), "{r:?}");
        assert!(r.id.starts_with("evt_"));
    }
    // The refused first delivery came again with the same id.
    assert_eq!(received[0].answered, 500);
    let retried: Vec<&Received> = received.iter().filter(|r| r.id == received[0].id).collect();
    assert_eq!(retried.len(), 2, "{received:?}");
    assert_eq!(retried[0].body, retried[1].body);
    let by_message = |id: &str| {
        received
            .iter()
            .filter(|r| r.answered == 200)
            .map(body)
            .find(|b| b["data"]["message_id"] == id)
            .unwrap()
    };
    assert_eq!(by_message(&sent)["type"], "message.sent");
    assert_eq!(by_message(&failed)["type"], "message.failed");
    assert!(
        by_message(&failed)["data"]["reply_text"]
            .as_str()
            .unwrap()
            .len()
            > 3
    );
    assert!(
        by_message(&sent)["timestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );

    // The delivery log: the refused attempt with the receiver's answer, then the delivery. The
    // receiver has answered a moment before mailroom records the answer: wait for the record.
    let first_id = json!(received[0].id);
    let log_path = format!("/v1/webhooks/{hook_id}/deliveries");
    mailroom_testkit::wait_until(Duration::from_secs(10), "the delivery recorded", || async {
        let log = ok(&server, Method::GET, &log_path, None).await;
        Ok(log
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["webhook_id"] == first_id && l["state"] == "delivered"))
    })
    .await
    .unwrap();
    let log = ok(&server, Method::GET, &log_path, None).await;
    let first = log
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["webhook_id"] == first_id && l["attempt"] == 1)
        .unwrap();
    assert_eq!(
        (
            first["status"].as_u64(),
            first["response"].as_str(),
            first["state"].as_str()
        ),
        (Some(500), Some("thanks"), Some("delivered"))
    );

    // A replay comes with the same id; a rotated secret signs beside the old one.
    let event_id = received[0].id.trim_start_matches("evt_").to_owned();
    let rotated = ok(
        &server,
        Method::POST,
        &format!("/v1/webhooks/{hook_id}/rotate-secret"),
        Some(json!({"overlap_hours": 1})),
    )
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(rotated["previous_secret_until"].is_string());
    let (status, _) = call(
        &server,
        Method::POST,
        &format!("/v1/webhooks/{hook_id}/events/{event_id}/replay"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    mailroom_testkit::wait_until(Duration::from_secs(20), "the replay", || async {
        Ok(receiver.received().len() > received.len())
    })
    .await
    .unwrap();
    let replayed = receiver.received().last().unwrap().clone();
    assert_eq!(replayed.id, received[0].id);
    assert!(
        signed_by(&replayed, &secret) && signed_by(&replayed, &new_secret),
        "both secrets sign during the overlap"
    );

    // Unknown ids and event types are refused in words.
    let (status, _) = call(
        &server,
        Method::POST,
        &format!("/v1/webhooks/{hook_id}/events/999999/replay"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, bad) = call(
        &server,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": receiver.url(), "events": ["message.opened"]})),
    )
    .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (422, Some("events")),
        "{bad}"
    );
    receiver.stop();
}

#[tokio::test]
async fn receivers_on_private_addresses_are_refused_unless_the_server_allows_them() {
    let server = common::start_server().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.5/hook",
        "http://[::1]:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest",
    ] {
        let (status, answer) = call(
            &server,
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": url, "events": ["message.sent"]})),
        )
        .await;
        assert_eq!(
            (status, answer["code"].as_str()),
            (422, Some("webhook_target_private")),
            "{url}: {answer}"
        );
    }
    for url in ["ftp://example.com/x", "https://user:pw@example.com/x"] {
        let (status, _) = call(
            &server,
            Method::POST,
            "/v1/webhooks",
            Some(json!({"url": url, "events": ["message.sent"]})),
        )
        .await;
        assert_eq!(status, 422, "{url}");
    }
    // A public name is accepted (here it does not resolve; deliveries say so in the log).
    let (status, _) = call(
        &server,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": "https://hooks.example.com/in", "events": ["message.sent"]})),
    )
    .await;
    assert_eq!(status, 201);
    // Webhooks are for email administrators.
    let user = ok(
        &server,
        Method::POST,
        "/v1/users",
        Some(json!({"name": "clerk", "licence": "full", "permission_sets": ["email-send"]})),
    )
    .await;
    let token = ok(
        &server,
        Method::POST,
        &format!("/v1/users/{}/tokens", id_of(&user)),
        Some(json!({"name": "t"})),
    )
    .await;
    let refused = reqwest::Client::new()
        .get(format!("{}/v1/webhooks", server.base_url))
        .bearer_auth(token["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

#[tokio::test]
async fn no_event_is_lost_while_the_receiver_is_down_and_mailroom_is_killed() {
    let sink = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    // The receiver's port, taken and let go: nothing listens there yet.
    let port = mailroom_testkit::free_port();
    let mut server = common::start_server_with(ALLOW_PRIVATE).await;
    server
        .add_default_smtp_account("works", sink.port, json!({}))
        .await
        .unwrap();
    ok(
        &server,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["message.sent"]})),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..40 {
        ids.push(id_of(
            &server
                .send(&json!({"to": ["ann@example.com"], "subject": format!("m{n}"), "text": "t"}))
                .await
                .unwrap(),
        ));
    }
    for id in &ids {
        server
            .wait_for_status(id, "sent", Duration::from_secs(30))
            .await
            .unwrap();
    }
    // Deliveries have been failing (connection refused); kill mailroom mid-way, then start it
    // again and let the receiver come up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    server.restart().await.unwrap();
    let receiver = Receiver::start(port, vec![]).await;
    // The first retry comes 5 s after the first failure, then 30 s: wait for every event.
    mailroom_testkit::wait_until(
        Duration::from_secs(60),
        "every message.sent delivered",
        || async {
            let delivered: std::collections::HashSet<String> = receiver
                .received()
                .iter()
                .map(|r| {
                    body(r)["data"]["message_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect();
            Ok(ids.iter().all(|id| delivered.contains(id)))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    // Duplicates, if any, carry the same webhook-id as the first copy.
    let received = receiver.received();
    let mut by_id = std::collections::HashMap::new();
    for r in &received {
        let message = body(r)["data"]["message_id"].as_str().unwrap().to_owned();
        assert_eq!(by_id.entry(message).or_insert_with(|| r.id.clone()), &r.id);
    }
    assert_eq!(by_id.len(), ids.len());
    receiver.stop();
}

#[tokio::test]
async fn a_receiver_that_comes_back_gets_its_waiting_events_at_once_not_after_their_backoff() {
    let sink = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    let port = mailroom_testkit::free_port();
    let server = common::start_server_with(ALLOW_PRIVATE).await;
    server
        .add_default_smtp_account("works", sink.port, json!({}))
        .await
        .unwrap();
    let hook = ok(
        &server,
        Method::POST,
        "/v1/webhooks",
        Some(json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["message.sent"]})),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(id_of(
            &server
                .send(&json!({"to": ["ann@example.com"], "subject": format!("m{n}"), "text": "t"}))
                .await
                .unwrap(),
        ));
    }
    // Each event's first try fails at once and its second 5 s later: the third is 30 s after that.
    let log_path = format!("/v1/webhooks/{}/deliveries", id_of(&hook));
    mailroom_testkit::wait_until(
        Duration::from_secs(30),
        "two failed tries of each event",
        || async {
            let log = ok(&server, Method::GET, &log_path, None).await;
            Ok(log.as_array().map_or(0, Vec::len) >= 10)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let came_back = std::time::Instant::now();
    let receiver = Receiver::start(port, vec![]).await;
    // A new event succeeds at once, and with it the waiting ones go.
    ids.push(id_of(
        &server
            .send(&json!({"to": ["ann@example.com"], "subject": "after", "text": "t"}))
            .await
            .unwrap(),
    ));
    mailroom_testkit::wait_until(Duration::from_secs(20), "every event delivered", || async {
        let delivered: std::collections::HashSet<String> = receiver
            .received()
            .iter()
            .map(|r| {
                body(r)["data"]["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        Ok(ids.iter().all(|id| delivered.contains(id)))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert!(
        came_back.elapsed() < Duration::from_secs(15),
        "delivered {:?} after the receiver came back, not after the 30 s backoff",
        came_back.elapsed()
    );
    receiver.stop();
}
