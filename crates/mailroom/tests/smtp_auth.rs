//! SMTP authentication against a real Postfix whose SASL is answered by Dovecot: accepted credentials
//! deliver (Postfix relays to a sink), rejected ones fail permanently and say so, and both are counted.

mod common;

use common::{id_of, start_server};
use mailroom_testkit::{PostfixWithSasl, SmtpSink};
use serde_json::json;
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
    let (_, test) = server
        .post(
            &format!("/v1/accounts/{}/test", id_of(&account)),
            &json!({}),
        )
        .await
        .unwrap();
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
        metrics.contains(&format!(
            "mailroom_smtp_authentications_total{{account=\"{account_id}\",result=\"succeeded\"}}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "mailroom_smtp_connections_total{{account=\"{account_id}\",result=\"succeeded\"}}"
        )),
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
    let (_, test) = server
        .post(
            &format!("/v1/accounts/{}/test", id_of(&account)),
            &json!({}),
        )
        .await
        .unwrap();
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
        metrics.contains(&format!(
            "mailroom_smtp_authentications_total{{account=\"{}\",result=\"failed\"}}",
            id_of(&account)
        )),
        "{metrics}"
    );
    assert!(sink.messages().unwrap().is_empty());
}
