//! Deliverability: the suppression list refuses mail to suppressed addresses per recipient, says
//! why, and lets an administrator take an address off it.

mod common;

use common::ok;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_message_to_a_suppressed_address_is_refused_naming_it_until_the_suppression_is_removed() {
    let sink = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    let server = common::start_server().await;
    server
        .add_default_smtp_account("works", sink.port, json!({}))
        .await
        .unwrap();
    let suppressed = ok(
        &server,
        Method::PUT,
        "/v1/suppressions/Ann@Customer.example",
        Some(json!({"detail": "asked not to be mailed"})),
    )
    .await;
    assert_eq!(
        (
            suppressed["address"].as_str(),
            suppressed["reason"].as_str()
        ),
        (Some("ann@customer.example"), Some("manual"))
    );

    let (status, refused) = server
        .call(Method::POST, "/v1/messages",
            Some(&json!({"to": ["bob@customer.example"], "cc": ["ANN@customer.example"], "subject": "Invoice", "text": "t"})), &[])
        .await
        .unwrap();
    assert_eq!(status, 422, "{refused}");
    assert_eq!(
        (refused["code"].as_str(), refused["field"].as_str()),
        (Some("recipient_suppressed"), Some("cc"))
    );
    let words = refused["message"].as_str().unwrap();
    assert!(
        words.contains("ann@customer.example (manual: asked not to be mailed)"),
        "{words}"
    );
    let outbox = ok(&server, Method::GET, "/v1/outbox", None).await;
    assert_eq!(outbox["total"], 0, "nothing was stored");

    let listed = ok(&server, Method::GET, "/v1/suppressions", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let (status, _) = server
        .call(
            Method::DELETE,
            "/v1/suppressions/ann@customer.example",
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, _) = server
        .call(
            Method::DELETE,
            "/v1/suppressions/ann@customer.example",
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/suppressions/not-an-address",
            Some(&json!({})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 422);
    let sent = server
        .send(&json!({"to": ["bob@customer.example"], "cc": ["ann@customer.example"], "subject": "Invoice", "text": "t"}))
        .await
        .unwrap();
    assert!(sent["id"].is_string(), "{sent}");
}
