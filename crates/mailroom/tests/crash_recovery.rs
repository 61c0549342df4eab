//! mailroom killed with SIGKILL in the middle of a batch loses nothing: after a restart every message
//! reaches the server, and a message arrives twice only when its attempt was in flight at the kill —
//! then with the same Message-ID and an `interrupted` attempt on record.

mod common;

use common::{id_of, start_server};
use mailroom_testkit::{SmtpSink, wait_until};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn no_message_is_lost_when_the_server_is_killed_during_a_batch_of_a_thousand() {
    let sink = SmtpSink::start(&[]).unwrap();
    let mut server = start_server().await;
    // 250 per (shortened, one-second) window: the batch takes about four seconds to deliver.
    server
        .add_default_smtp_account(
            "batch",
            sink.port,
            json!({"rate_limit_per_minute": 250, "concurrency_limit": 4}),
        )
        .await
        .unwrap();

    let mut accepted: Vec<(String, String)> = Vec::with_capacity(1000);
    let mut pending = Vec::new();
    let client = reqwest::Client::new();
    for n in 0..1000 {
        let url = format!("{}/v1/messages", server.base_url);
        let token = server.token.clone();
        let client = client.clone();
        pending.push(tokio::spawn(async move {
            let body = json!({"to": [format!("rcpt{n}@example.com")], "subject": format!("batch {n}"), "text": "t"});
            let response = client.post(url).bearer_auth(token).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 202);
            let value: serde_json::Value = response.json().await.unwrap();
            (id_of(&value), value["message_id"].as_str().unwrap().to_owned())
        }));
        if pending.len() == 32 {
            for task in pending.drain(..) {
                accepted.push(task.await.unwrap());
            }
        }
    }
    for task in pending.drain(..) {
        accepted.push(task.await.unwrap());
    }
    assert_eq!(accepted.len(), 1000);

    // Kill once part of the batch is out and the rest is still queued or in flight.
    wait_until(Duration::from_secs(30), "some messages sent", || async {
        Ok(server.get("/v1/sent?limit=1").await?.1["total"]
            .as_i64()
            .unwrap_or(0)
            >= 150)
    })
    .await
    .unwrap();
    server.kill();
    let delivered_at_kill = sink.messages().unwrap().len();
    assert!(
        delivered_at_kill < 1000,
        "the whole batch was delivered before the kill; the test proves nothing"
    );

    server.restart().await.unwrap();
    wait_until(Duration::from_secs(60), "every message sent", || async {
        Ok(server.get("/v1/sent?limit=1").await?.1["total"]
            .as_i64()
            .unwrap_or(0)
            == 1000)
    })
    .await
    .unwrap();

    let mut arrivals: HashMap<String, usize> = HashMap::new();
    for message in sink.messages().unwrap() {
        *arrivals
            .entry(
                message
                    .message_id
                    .expect("every delivered message has a Message-ID"),
            )
            .or_default() += 1;
    }
    let mut duplicates = 0;
    for (id, message_id) in &accepted {
        let count = arrivals.get(message_id).copied().unwrap_or(0);
        assert!(
            count >= 1,
            "message {id} ({message_id}) never reached the server"
        );
        if count > 1 {
            duplicates += 1;
            let message = server.message(id).await.unwrap();
            let interrupted = message["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["outcome"] == "interrupted");
            assert!(
                interrupted,
                "message {id} arrived {count} times without an interrupted attempt on record: {message:#}"
            );
        }
    }
    assert_eq!(
        arrivals.len(),
        1000,
        "the server received Message-IDs mailroom never issued"
    );
    // Only attempts in flight at the kill can repeat: at most the account's concurrency plus claimed ones.
    assert!(duplicates <= 4 * 8, "{duplicates} messages arrived twice");
    eprintln!("delivered before the kill: {delivered_at_kill}; delivered twice: {duplicates}");
    let (_, outbox) = server
        .get("/v1/outbox?status=queued,sending,failed")
        .await
        .unwrap();
    assert_eq!(outbox["total"], 0, "{outbox:#}");
}
