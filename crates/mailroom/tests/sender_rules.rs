//! Who a message shows as its sender: the current user, Send As, Send On Behalf, the approval-workflow
//! user, and the rule that only one account may substitute senders.

mod common;

use common::{id_of, start_server};
use mailroom_testkit::{MailroomServer, SmtpSink};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

async fn sent_headers(
    server: &MailroomServer,
    sink: &SmtpSink,
    accepted: &Value,
) -> (Option<String>, Option<String>, String) {
    server
        .wait_for_status(&id_of(accepted), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    let received = sink
        .messages()
        .unwrap()
        .into_iter()
        .find(|m| m.message_id.as_deref() == accepted["message_id"].as_str())
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    let from = parsed
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_owned);
    let sender = parsed
        .sender()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_owned);
    (from, sender, received.mail_from)
}

#[tokio::test]
async fn an_account_of_the_current_user_sends_as_the_users_contact_email_or_says_clearly_why_not() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account(
            "personal",
            sink.port,
            json!({"sender_type": "current-user"}),
        )
        .await
        .unwrap();
    let (_, user) = server
        .post("/v1/users", &json!({"name": "Annette Hill", "contact_email": "annette@cronus.example", "licence": "full", "permission_sets": ["email-send"]}))
        .await
        .unwrap();
    let (_, token) = server
        .post(
            &format!("/v1/users/{}/tokens", id_of(&user)),
            &json!({"name": "t"}),
        )
        .await
        .unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/messages", server.base_url))
        .bearer_auth(token["token"].as_str().unwrap())
        .json(&json!({"to": ["c@example.com"], "subject": "s", "text": "t"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let (from, sender, envelope) = sent_headers(&server, &sink, &accepted).await;
    assert_eq!(from.as_deref(), Some("annette@cronus.example"));
    assert_eq!(sender, None);
    assert_eq!(
        envelope, "personal@example.com",
        "the envelope stays the account's"
    );

    // The bootstrap admin has no contact email.
    let (status, error) = server
        .post(
            "/v1/messages",
            &json!({"to": ["c@example.com"], "subject": "s", "text": "t"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("sender")),
        "{error}"
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no contact email")
    );
}

#[tokio::test]
async fn send_as_replaces_from_and_send_on_behalf_adds_the_account_as_sender() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    let shared = server
        .add_default_smtp_account(
            "shared",
            sink.port,
            json!({"substitute_mode": "send-as", "substitute_address": "sales@cronus.example"}),
        )
        .await
        .unwrap();
    let send_as = server
        .send(&json!({"to": ["c@example.com"], "subject": "as", "text": "t"}))
        .await
        .unwrap();
    let (from, sender, envelope) = sent_headers(&server, &sink, &send_as).await;
    assert_eq!(
        (from.as_deref(), sender.as_deref()),
        (Some("sales@cronus.example"), None)
    );
    assert_eq!(envelope, "shared@example.com");

    // A workflow sender outside the account's domains would fail the receivers' DMARC checks.
    let (status, refused) = server
        .post(
            "/v1/messages",
            &json!({"to": ["c@example.com"], "subject": "wf", "text": "t",
                                      "workflow_sender": "Approver <approver@cronus.example>"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, refused["field"].as_str()),
        (422, Some("workflow_sender")),
        "{refused}"
    );
    assert!(
        refused["message"].as_str().unwrap().contains("DMARC"),
        "{refused}"
    );
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/v1/accounts/{}", id_of(&shared)),
            Some(&json!({"allowed_sender_domains": ["Cronus.Example"]})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);

    // The approval-workflow user comes first in the order of choice.
    let workflow = server
        .send(&json!({"to": ["c@example.com"], "subject": "wf", "text": "t", "workflow_sender": "Approver <approver@cronus.example>"}))
        .await
        .unwrap();
    assert_eq!(
        sent_headers(&server, &sink, &workflow).await.0.as_deref(),
        Some("approver@cronus.example")
    );

    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/v1/accounts/{}", id_of(&shared)),
            Some(&json!({"substitute_mode": "send-on-behalf",
                         "substitute_address": "Cronus Sales <sales@cronus.example>"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let on_behalf = server
        .send(&json!({"to": ["c@example.com"], "subject": "obo", "text": "t"}))
        .await
        .unwrap();
    let (from, sender, _) = sent_headers(&server, &sink, &on_behalf).await;
    assert_eq!(
        (from.as_deref(), sender.as_deref()),
        (Some("sales@cronus.example"), Some("shared@example.com"))
    );
    // The substitute's own name is in From, the account's in Sender.
    let raw = sink
        .messages()
        .unwrap()
        .into_iter()
        .find(|m| m.message_id.as_deref() == on_behalf["message_id"].as_str())
        .unwrap()
        .raw;
    let raw = String::from_utf8_lossy(&raw);
    let lines: Vec<&str> = raw.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(
        lines.contains(&"From: Cronus Sales <sales@cronus.example>"),
        "{raw}"
    );
    assert!(
        lines.contains(&"Sender: shared <shared@example.com>"),
        "{raw}"
    );
}

#[tokio::test]
async fn only_one_account_may_substitute_senders_and_others_refuse_a_workflow_sender() {
    let server = start_server().await;
    server
        .add_smtp_account(
            "first",
            2525,
            json!({"substitute_mode": "send-as", "substitute_address": "a@example.com"}),
        )
        .await
        .unwrap();
    let (status, error) = server
        .post("/v1/accounts", &json!({"connector": "smtp", "name": "second", "email_address": "b@example.com", "host": "h", "security": "none",
                                     "substitute_mode": "send-on-behalf"}))
        .await
        .unwrap();
    assert_eq!(status, 409, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("only one account may substitute")
    );
    let (status, error) = server
        .post("/v1/messages", &json!({"to": ["c@example.com"], "subject": "s", "text": "t", "workflow_sender": "x@example.com"}))
        .await
        .unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("workflow_sender")),
        "the default pickup account does not substitute: {error}"
    );
}
