//! A rich message through a real mail stack: mailroom → Postfix (SMTP AUTH via Dovecot) → Dovecot
//! mailbox (LMTP) → fetched over IMAP and parsed, byte for byte where it matters.

mod common;

use common::{id_of, start_server};
use mail_parser::MimeHeaders;
use mailroom_testkit::PostfixWithSasl;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn a_rich_message_arrives_in_a_dovecot_mailbox_intact() {
    let postfix =
        PostfixWithSasl::start_with_mailbox("mailer", "pw", "kunde@example.com", "inbox-pw")
            .unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("vertrieb", postfix.port, json!({"username": "mailer", "password": "pw", "sender_name": "Vertrieb Müller & Söhne"}))
        .await
        .unwrap();
    let pdf: Vec<u8> = (0..50_000u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(&server.token)
        .header("content-type", "application/pdf")
        .header(
            "content-disposition",
            "attachment; filename=\"Rechnung 103001.pdf\"",
        )
        .body(pdf.clone())
        .send()
        .await
        .unwrap();
    let attachment: Value = response.json().await.unwrap();
    let subject =
        "Rechnung 103001 – Fälligkeit am 22. Dezember, bitte beachten Sie die Zahlungsbedingungen";
    let accepted = server
        .send(&json!({
            "to": ["Frau Ünal <kunde@example.com>"], "reply_to": ["Buchhaltung <accounts@example.com>"],
            "headers": {"X-Order-Ref": "4711"}, "subject": subject,
            "html": "<h1>Rechnung 103001</h1><p>Gesamt: <b>2.070,00 €</b></p>",
            "attachments": [{"id": attachment["id"]}]
        }))
        .await
        .unwrap();
    server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(20))
        .await
        .unwrap();

    let fetched = postfix
        .fetch_first_message("kunde@example.com", "inbox-pw", Duration::from_secs(20))
        .await
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&fetched)
        .unwrap();
    assert_eq!(
        format!("<{}>", parsed.message_id().unwrap()),
        accepted["message_id"].as_str().unwrap()
    );
    assert_eq!(parsed.subject(), Some(subject));
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("Vertrieb Müller & Söhne")
    );
    assert_eq!(
        parsed.to().unwrap().first().unwrap().name(),
        Some("Frau Ünal")
    );
    assert_eq!(
        parsed.reply_to().unwrap().first().unwrap().address(),
        Some("accounts@example.com")
    );
    assert!(parsed.header("X-Order-Ref").is_some());
    assert!(parsed.body_html(0).unwrap().contains("2.070,00 €"));
    assert!(
        parsed.body_text(0).unwrap().contains("2.070,00 €"),
        "the derived text alternative arrived"
    );
    let part = parsed.attachment(0).unwrap();
    assert_eq!(part.attachment_name(), Some("Rechnung 103001.pdf"));
    assert!(
        part.contents() == pdf.as_slice(),
        "the PDF arrived byte for byte"
    );
    assert!(
        parsed.header("Received").is_some(),
        "it really passed through Postfix"
    );
}
