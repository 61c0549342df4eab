//! SMTP authentication against a real Postfix whose SASL is answered by Dovecot: accepted credentials
//! deliver (Postfix relays to a sink), rejected ones fail permanently and say so, and both are counted.

mod common;

use common::{id_of, start_server};
use mailroom_testkit::{MailroomServer, PostfixWithSasl, SmtpSink};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn a_message_is_delivered_through_postfix_with_the_accounts_username_and_password() {
    let sink = SmtpSink::start(&[]).unwrap();
    let postfix = PostfixWithSasl::start("mailer", "s3cret-pässword", sink.port).unwrap();
    let server = start_server().await;
    let account = server
        .add_smtp_account(
            "authed",
            postfix.port,
            json!({"username": "mailer", "password": "s3cret-pässword"}),
        )
        .await
        .unwrap();
    let test = test_account(&server, &account).await;
    assert_eq!(test["ok"], true, "{test}");
    assert!(
        test["detail"]
            .as_str()
            .unwrap()
            .contains("authentication accepted")
    );

    let accepted = server
        .send(&json!({"to": ["customer@example.com"], "subject": "Authenticated", "text": "hello", "account_id": account["id"]}))
        .await
        .unwrap();
    let sent = server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(sent["attempts"][0]["reply_code"], 250);
    // Postfix queued the message and relayed it to the sink with our Message-ID.
    let mut relayed = Vec::new();
    for _ in 0..100 {
        relayed = sink.messages().unwrap();
        if !relayed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(relayed.len(), 1, "postfix log:\n{}", postfix.log());
    assert_eq!(
        relayed[0].message_id.as_deref(),
        accepted["message_id"].as_str()
    );
    assert!(
        postfix.log().contains("sasl_username=mailer"),
        "{}",
        postfix.log()
    );

    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let account_id = id_of(&account);
    assert!(
        has_series(
            &metrics,
            "mailroom_smtp_authentications_total",
            &format!("account=\"{account_id}\",result=\"succeeded\""),
        ),
        "{metrics}"
    );
    assert!(
        has_series(
            &metrics,
            "mailroom_smtp_connections_total",
            &format!("account=\"{account_id}\",result=\"succeeded\""),
        ),
        "{metrics}"
    );
    assert!(
        !server.log().contains("s3cret-pässword"),
        "the password was logged"
    );
}

#[tokio::test]
async fn a_rejected_password_fails_the_message_at_once_as_an_authentication_error() {
    let sink = SmtpSink::start(&[]).unwrap();
    let postfix = PostfixWithSasl::start("mailer", "right", sink.port).unwrap();
    let server = start_server().await;
    let account = server
        .add_smtp_account(
            "wrongpw",
            postfix.port,
            json!({"username": "mailer", "password": "wrong"}),
        )
        .await
        .unwrap();
    let test = test_account(&server, &account).await;
    assert_eq!(test["ok"], false, "{test}");
    assert_eq!(test["failure"], "permanent");
    assert_eq!(test["reply_code"], 535);

    let accepted = server.send(&json!({"to": ["c@example.com"], "subject": "s", "text": "t", "account_id": account["id"]})).await.unwrap();
    let failed = server
        .wait_for_status(&id_of(&accepted), "failed", Duration::from_secs(20))
        .await
        .unwrap();
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "a rejected password is not retried: {failed:#}"
    );
    assert_eq!(attempts[0]["outcome"], "permanent");
    assert_eq!(attempts[0]["reply_code"], 535);
    assert!(
        attempts[0]["reply_text"]
            .as_str()
            .unwrap()
            .contains("authentication rejected"),
        "{}",
        attempts[0]
    );
    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        has_series(
            &metrics,
            "mailroom_smtp_authentications_total",
            &format!("account=\"{}\",result=\"failed\"", id_of(&account)),
        ),
        "{metrics}"
    );
    assert!(sink.messages().unwrap().is_empty());
}

#[tokio::test]
async fn starttls_and_implicit_tls_accounts_deliver_through_postfix_when_its_ca_is_trusted() {
    let sink = SmtpSink::start(&[]).unwrap();
    let postfix = PostfixWithSasl::start("mailer", "pw", sink.port).unwrap();
    let server = common::start_server_with(&format!(
        "extra_root_certificates = [{:?}]",
        postfix.ca_certificate().display().to_string()
    ))
    .await;
    let credentials = json!({"username": "mailer", "password": "pw"});
    let mut starttls = credentials.clone();
    starttls["security"] = json!("starttls");
    let mut implicit = credentials.clone();
    implicit["security"] = json!("tls");
    let starttls_account = server
        .add_smtp_account("starttls", postfix.port, starttls)
        .await
        .unwrap();
    let implicit_account = server
        .add_smtp_account("implicit", postfix.tls_port, implicit)
        .await
        .unwrap();
    for account in [&starttls_account, &implicit_account] {
        let test = test_account(&server, account).await;
        assert_eq!(test["ok"], true, "{test}");
        assert!(
            test["detail"].as_str().unwrap().contains("with TLS"),
            "{test}"
        );
        let accepted = server.send(&json!({"to": ["c@example.com"], "subject": "over TLS", "text": "t", "account_id": account["id"]})).await.unwrap();
        server
            .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(20))
            .await
            .unwrap();
    }
    let log = postfix.log();
    assert!(
        log.matches("TLS connection established").count() >= 4,
        "two tests and two sends over TLS:\n{log}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused_and_nothing_is_sent() {
    let sink = SmtpSink::start(&[]).unwrap();
    let postfix = PostfixWithSasl::start("mailer", "pw", sink.port).unwrap();
    let server = start_server().await;
    for (security, port) in [("starttls", postfix.port), ("tls", postfix.tls_port)] {
        let account = server
            .add_smtp_account(
                &format!("untrusted-{security}"),
                port,
                json!({"security": security, "username": "mailer", "password": "pw"}),
            )
            .await
            .unwrap();
        let test = test_account(&server, &account).await;
        assert_eq!(test["ok"], false, "{security}: {test}");
        assert!(
            test["detail"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("certificate"),
            "{security}: {test}"
        );
        let accepted = server.send(&json!({"to": ["c@example.com"], "subject": "s", "text": "t", "account_id": account["id"]})).await.unwrap();
        let id = id_of(&accepted);
        mailroom_testkit::wait_until(Duration::from_secs(10), "a failed attempt", || async {
            Ok(server.message(&id).await?["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty()))
        })
        .await
        .unwrap();
    }
    assert!(
        !postfix.log().contains("sasl_username=mailer"),
        "credentials must not be sent over an unverified connection"
    );
    assert!(sink.messages().unwrap().is_empty());
}

#[tokio::test]
async fn starttls_against_a_server_that_does_not_offer_it_fails_permanently() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    let account = server
        .add_smtp_account("nostarttls", sink.port, json!({"security": "starttls"}))
        .await
        .unwrap();
    let test = test_account(&server, &account).await;
    assert_eq!(test["ok"], false);
    assert_eq!(test["failure"], "permanent");
    assert!(
        test["detail"]
            .as_str()
            .unwrap()
            .contains("does not offer STARTTLS"),
        "{test}"
    );
    let accepted = server.send(&json!({"to": ["c@example.com"], "subject": "s", "text": "t", "account_id": account["id"]})).await.unwrap();
    let failed = server
        .wait_for_status(&id_of(&accepted), "failed", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(failed["attempts"].as_array().unwrap().len(), 1);
    assert!(
        sink.messages().unwrap().is_empty(),
        "nothing is sent in the clear when STARTTLS was required"
    );
}

/// The answer of `POST /v1/accounts/{id}/test` for `account`.
async fn test_account(server: &MailroomServer, account: &Value) -> Value {
    let (_, test) = server
        .post(&format!("/v1/accounts/{}/test", id_of(account)), &json!({}))
        .await
        .unwrap();
    test
}

/// Whether the metrics have a series of `name` whose labels include `labels` (every series also
/// names its node).
fn has_series(metrics: &str, name: &str, labels: &str) -> bool {
    metrics
        .lines()
        .any(|line| line.starts_with(&format!("{name}{{")) && line.contains(labels))
}
