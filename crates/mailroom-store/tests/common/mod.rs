//! Accounts and messages shared by the store's test files.

#![allow(dead_code)] // each test file uses its own part

use mailroom_core::account::{AccountLimits, ConnectorKind, Security, SenderType};
use mailroom_core::address::EmailAddress;
use mailroom_core::message::{MessageContent, RawContent};
use mailroom_core::scenario::ScenarioName;
use mailroom_store::{AccountInput, NewMessage, now_ms};
use uuid::Uuid;

pub fn account_input(name: &str) -> AccountInput {
    AccountInput {
        connector: ConnectorKind::Smtp,
        name: name.into(),
        email_address: EmailAddress::parse(&format!("{name}@example.com")).unwrap(),
        sender_name: None,
        sender_type: SenderType::SpecificUser,
        host: Some("127.0.0.1".into()),
        port: Some(25),
        security: Security::None,
        username: None,
        pickup_dir: None,
        limits: AccountLimits::new(0, 3, 3).unwrap(),
        substitute_mode: None,
        substitute_address: None,
        substitute_name: None,
        options: Default::default(),
    }
}

pub fn new_message(account_id: Uuid, key: Option<&str>, subject: &str) -> NewMessage {
    message_with_text(account_id, key, subject, "body")
}

/// A message of `account_id` to one recipient, accepted now, with `text` as its body.
pub fn message_with_text(
    account_id: Uuid,
    key: Option<&str>,
    subject: &str,
    text: &str,
) -> NewMessage {
    let to = vec!["a@example.com".to_string()];
    let none: Vec<String> = Vec::new();
    let id = Uuid::now_v7();
    NewMessage {
        id,
        scenario: ScenarioName::default_scenario(),
        account_id,
        message_id_header: format!("<{}@example.com>", id.simple()),
        content: std::sync::Arc::new(
            MessageContent::parse(
                RawContent {
                    to: &to,
                    cc: &none,
                    bcc: &none,
                    reply_to: &none,
                    headers: &[],
                    subject,
                    text: Some(text),
                    html: None,
                },
                1 << 20,
            )
            .unwrap(),
        ),
        related_records: Vec::new(),
        attachments: Vec::new(),
        template: None,
        smart_key: None,
        draft: false,
        send_at_ms: None,
        created_by: "tester".into(),
        idempotency_key: key.map(str::to_owned),
        request_hash: Some(subject.to_owned()),
        created_at_ms: now_ms(),
        claim: None,
    }
}
