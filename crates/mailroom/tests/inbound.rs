//! Inbound sync against a private Dovecot: the whole inbound corpus is stored with every
//! attachment part, bodies in other charsets read as Python reads them, the mailbox is left
//! untouched (flags as they were), new mail arrives over IDLE, a UIDVALIDITY change re-indexes
//! without duplicating or losing, a SIGKILL mid-initial-sync loses and duplicates nothing, and
//! replies join the conversation of the mail they answer.

mod common;

use common::mail_service::{
    all_messages, enabled_user, enabled_user_with_filter, mail_service, profile, start,
    wait_for_count,
};
use common::{id_of, ok};
use mailroom_testkit::{MailroomServer, inbound_corpus, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

struct CorpusRow {
    file: String,
    py: usize,
    node: usize,
    flagged: bool,
}

fn corpus_rows() -> Vec<CorpusRow> {
    let text = std::fs::read_to_string(inbound_corpus().join("MANIFEST.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, py, node, flag) = (
        col("file"),
        col("py_attachments"),
        col("node_attachments"),
        col("flag"),
    );
    lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let cells: Vec<&str> = line.split('\t').collect();
            CorpusRow {
                file: cells[file].into(),
                py: cells[py].parse().unwrap(),
                node: cells[node].parse().unwrap_or(usize::MAX),
                flagged: !cells[flag].is_empty(),
            }
        })
        .collect()
}

/// The text bodies of the single-part messages in charsets other than UTF-8 and ASCII, as
/// Python's `email` package decodes them (an independent reader).
fn python_texts() -> HashMap<String, String> {
    let script = r#"
import csv, email, email.policy, json, sys
csv.field_size_limit(10**9)
out = {}
for r in csv.DictReader(open('MANIFEST.tsv'), delimiter='\t'):
    if r['root_content_type'] != 'text/plain':
        continue
    m = email.message_from_bytes(open(r['file'], 'rb').read(), policy=email.policy.default)
    if (m.get_content_charset() or '').lower() in ('', 'utf-8', 'utf8', 'us-ascii'):
        continue
    try:
        out[r['file']] = m.get_content()
    except Exception:
        pass
print(json.dumps(out))
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(inbound_corpus())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn normalized(text: &str) -> String {
    text.replace("\r\n", "\n")
        .lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

#[tokio::test]
async fn every_corpus_message_is_stored_with_every_attachment_part_and_the_mailbox_is_left_as_it_was()
 {
    let service = mail_service(1);
    let rows = corpus_rows();
    let mut imap = service.client(0).await;
    // Every other message was read in another client before mailroom ever looked.
    for (n, row) in rows.iter().enumerate() {
        let raw = std::fs::read(inbound_corpus().join(&row.file)).unwrap();
        let flags = (n % 2 == 1).then_some("(\\Seen)");
        imap.append("INBOX", &raw, flags, None)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", row.file));
    }
    let flags_before = imap.flags("INBOX").await.unwrap();
    let served: HashMap<u32, Vec<u8>> = imap.bodies("INBOX").await.unwrap().into_iter().collect();
    assert_eq!(flags_before.len(), rows.len());

    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX", "Sent"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    wait_for_count(&server, &mailbox, "", rows.len(), Duration::from_secs(120)).await;

    let listed = all_messages(&server, &mailbox, "").await;
    let by_uid: HashMap<u64, &Value> = listed
        .iter()
        .map(|m| (m["uid"].as_u64().unwrap(), m))
        .collect();
    assert_eq!(by_uid.len(), rows.len(), "one message per UID");
    let texts = python_texts();
    assert!(
        texts.len() >= 15,
        "the charset check covers the corpus: {}",
        texts.len()
    );
    let mut wrong = Vec::new();
    for (n, row) in rows.iter().enumerate() {
        let summary = by_uid[&(n as u64 + 1)];
        assert_eq!(
            summary["unread"],
            json!(n % 2 == 0),
            "{}: the flags as they were",
            row.file
        );
        let id = summary["id"].as_str().unwrap();
        let detail = ok(&server, Method::GET, &format!("/v1/inbound/{id}"), None).await;
        let parts = detail["attachments"].as_array().unwrap();
        let count = parts.len();
        if !(count == row.py || (row.flagged && count == row.node)) {
            wrong.push(format!(
                "{}: {count} parts listed, python {} node {}",
                row.file, row.py, row.node
            ));
        }
        for part in parts {
            let path = part["part"].as_str().unwrap();
            assert!(
                path.split('.').all(|p| p.parse::<u32>().is_ok()),
                "{}: {path}",
                row.file
            );
        }
        // The raw message is kept byte for byte as the server serves it (Dovecot stores lines
        // with CRLF, and no NUL, whatever the APPEND sent).
        let (status, raw) = server
            .raw_get(&format!("/v1/inbound/{id}/raw"))
            .await
            .unwrap();
        assert_eq!(status, 200);
        assert!(
            raw == served[&(n as u32 + 1)],
            "{}: the raw message differs",
            row.file
        );
        if let Some(expected) = texts.get(&row.file) {
            let got = detail["text"].as_str().unwrap_or_default();
            if normalized(got) != normalized(expected) {
                wrong.push(format!(
                    "{}: text {:?} but Python reads {:?}",
                    row.file,
                    &got[..got.len().min(80)],
                    &expected[..expected.len().min(80)]
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} mismatches:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // A part inside an attached message downloads with the size listed.
    let mut found_nested = false;
    for m in &listed {
        let id = m["id"].as_str().unwrap();
        let detail = ok(&server, Method::GET, &format!("/v1/inbound/{id}"), None).await;
        if let Some(part) = detail["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["part"].as_str().unwrap().contains('.'))
        {
            let (status, bytes) = server
                .raw_get(part["download"].as_str().unwrap())
                .await
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(bytes.len() as u64, part["size"].as_u64().unwrap());
            found_nested = true;
            break;
        }
    }
    assert!(
        found_nested,
        "the corpus has parts inside attached messages"
    );

    // Nothing mailroom did changed the mailbox: same messages, same flags.
    let flags_after = imap.flags("INBOX").await.unwrap();
    assert_eq!(flags_after, flags_before);
    imap.logout().await;
}

fn reply_to(message_id: &str, subject: &str, n: usize) -> Vec<u8> {
    format!(
        "From: Customer <customer@example.com>\r\nTo: user0@corp.test\r\nSubject: Re: {subject}\r\nMessage-ID: <reply{n}.{}@example.com>\r\nIn-Reply-To: {message_id}\r\nReferences: {message_id}\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\n\r\nThanks, received.\r\n",
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}

fn plain(subject: &str, n: usize) -> Vec<u8> {
    format!(
        "From: Someone <someone@example.com>\r\nTo: user0@corp.test\r\nSubject: {subject}\r\nMessage-ID: <plain{n}.{}@example.com>\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\n\r\nHello {n}\r\n",
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}

#[tokio::test]
async fn new_mail_arrives_over_idle_and_a_reply_joins_the_conversation_of_the_mail_it_answers() {
    let service = mail_service(2);
    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    // Another user with the default (own) view policy, who must not see user0's mail, and whose
    // mailbox keeps only responses to tracked mail (the default for users).
    let (_, other_mailbox, other_token) =
        enabled_user_with_filter(&server, 1, &["email-send"], "responses-to-tracked").await;
    // Give the sync a moment to be idling on the empty INBOX.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut imap = service.client(0).await;
    let mut latencies = Vec::new();
    for n in 0..3 {
        let started = Instant::now();
        imap.append("INBOX", &plain("ping", n), None, None)
            .await
            .unwrap();
        wait_for_count(&server, &mailbox, "", n + 1, Duration::from_secs(10)).await;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    assert!(
        latencies[1] < Duration::from_secs(2),
        "IDLE delivery took {latencies:?}"
    );

    // Mail mailroom sent about an invoice, then the customer's reply to it.
    let sent = server
        .send(
            &json!({"to": ["customer@example.com"], "subject": "Invoice 103001", "text": "attached",
            "related_records": [{"type": "sales-invoice", "id": "103001", "relation": "primary"}]}),
        )
        .await
        .unwrap();
    let sent_id = id_of(&sent);
    let message = server.message(&sent_id).await.unwrap();
    let message_id = message["message_id"]
        .as_str()
        .expect("the outbound Message-ID")
        .to_owned();
    imap.append(
        "INBOX",
        &reply_to(&message_id, "Invoice 103001", 1),
        None,
        None,
    )
    .await
    .unwrap();
    wait_for_count(
        &server,
        &mailbox,
        "&correlated=true",
        1,
        Duration::from_secs(10),
    )
    .await;
    let reply = &all_messages(&server, &mailbox, "&correlated=true").await[0];
    assert_eq!(reply["correlation_method"], "in-reply-to");
    assert_eq!(reply["conversation_id"], json!(sent_id));
    let reply_id = reply["id"].as_str().unwrap();
    let detail = ok(
        &server,
        Method::GET,
        &format!("/v1/inbound/{reply_id}"),
        None,
    )
    .await;
    assert_eq!(
        detail["related_records"],
        json!([{"type": "sales-invoice", "id": "103001"}])
    );
    let conversation = ok(
        &server,
        Method::GET,
        &format!("/v1/conversations/{sent_id}"),
        None,
    )
    .await;
    let directions: Vec<&str> = conversation["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["outbound", "inbound"], "{conversation}");
    // The console shows the same, as the signed-in admin: the mailbox's mail, the reply with what
    // linked it, and the conversation.
    let cookie = common::console_session(&server, &server.token).await;
    let listing = common::console_page(
        &server,
        &format!("/console/inbound/mailboxes/{mailbox}"),
        &cookie,
    )
    .await;
    assert!(
        listing.contains(&format!("/console/inbound/{reply_id}")),
        "{listing}"
    );
    let shown =
        common::console_page(&server, &format!("/console/inbound/{reply_id}"), &cookie).await;
    assert!(shown.contains("in-reply-to"), "{shown}");
    let thread = common::console_page(
        &server,
        &format!("/console/conversations/{sent_id}"),
        &cookie,
    )
    .await;
    assert!(
        thread.contains(&format!("/console/messages/{sent_id}"))
            && thread.contains(&format!("/console/inbound/{reply_id}")),
        "{thread}"
    );
    let timeline = ok(
        &server,
        Method::GET,
        "/v1/records/sales-invoice/103001/messages",
        None,
    )
    .await;
    assert_eq!(
        timeline["inbound"].as_array().unwrap().len(),
        1,
        "{timeline}"
    );
    let unread = all_messages(&server, &mailbox, "&unread=true").await;
    assert_eq!(unread.len(), 4);

    // View policies: another user sees none of it, not even by id.
    let (status, body) = server
        .call_as(
            &other_token,
            Method::GET,
            &format!("/v1/inbound/{reply_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!((status, body["code"].clone()), (404, json!("not_found")));
    let (status, listing) = server
        .call_as(
            &other_token,
            Method::GET,
            &format!("/v1/mailboxes/{mailbox}/messages"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status, listing["items"].as_array().map(Vec::len)),
        (200, Some(0))
    );

    // The other mailbox keeps only the reply, not the stray message next to it.
    let mut other_imap = service.client(1).await;
    other_imap
        .append("INBOX", &plain("stray", 7), None, None)
        .await
        .unwrap();
    other_imap
        .append(
            "INBOX",
            &reply_to(&message_id, "Invoice 103001", 2),
            None,
            None,
        )
        .await
        .unwrap();
    wait_for_count(&server, &other_mailbox, "", 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = all_messages(&server, &other_mailbox, "").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["correlation_method"], "in-reply-to");
    other_imap.logout().await;

    // Set regarding by hand, then untrack.
    let first = all_messages(&server, &mailbox, "&correlated=false").await;
    let stray = first[0]["id"].as_str().unwrap();
    let set = ok(
        &server,
        Method::PUT,
        &format!("/v1/inbound/{stray}/related-records"),
        Some(json!({"related_records": [{"type": "customer", "id": "C-9"}]})),
    )
    .await;
    assert_eq!(
        set["related_records"],
        json!([{"type": "customer", "id": "C-9"}])
    );
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/inbound/{stray}/related-records"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let untracked = ok(&server, Method::GET, &format!("/v1/inbound/{stray}"), None).await;
    assert_eq!(untracked["related_records"], json!([]));

    // Events: one message.received per stored message (the outbox pattern, read by webhooks later).
    assert!(server.log().contains("mailbox_sync_started"));
    imap.logout().await;
}

#[tokio::test]
async fn a_uidvalidity_change_reindexes_the_folder_without_duplicating_or_losing_a_message() {
    let service = mail_service(1);
    let mut imap = service.client(0).await;
    imap.create("Projects").await.unwrap();
    let messages: Vec<Vec<u8>> = (0..5).map(|n| plain("project", n)).collect();
    // One message without a Message-ID: matched by its content.
    let anonymous = b"From: a@example.com\r\nSubject: no id\r\n\r\nno message id here\r\n".to_vec();
    for raw in messages.iter().chain([&anonymous]) {
        imap.append("Projects", raw, None, None).await.unwrap();
    }
    let server = start(&service, "sync_poll_ms = 300\n").await;
    profile(&server, &service, &["INBOX", "Projects"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    wait_for_count(
        &server,
        &mailbox,
        "&folder=Projects",
        6,
        Duration::from_secs(20),
    )
    .await;
    let before: HashSet<String> = all_messages(&server, &mailbox, "&folder=Projects")
        .await
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let old_validity = imap.uidvalidity("Projects").await.unwrap();
    // (Dovecot closes a session whose selected folder is deleted: a fresh one deletes it.)
    imap.logout().await;
    let mut imap = service.client(0).await;

    // The folder is recreated (a new UIDVALIDITY) with the same messages in another order, plus one.
    imap.delete("Projects").await.unwrap();
    imap.create("Projects").await.unwrap();
    for raw in messages
        .iter()
        .rev()
        .chain([&anonymous, &plain("project", 99)])
    {
        imap.append("Projects", raw, None, None).await.unwrap();
    }
    assert_ne!(imap.uidvalidity("Projects").await.unwrap(), old_validity);
    wait_for_count(
        &server,
        &mailbox,
        "&folder=Projects",
        7,
        Duration::from_secs(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = all_messages(&server, &mailbox, "&folder=Projects").await;
    assert_eq!(after.len(), 7, "nothing duplicated");
    let after_ids: HashSet<String> = after
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        before.is_subset(&after_ids),
        "every message kept its record"
    );
    let uids: HashSet<u64> = after.iter().map(|m| m["uid"].as_u64().unwrap()).collect();
    assert_eq!(uids, (1..=7).collect(), "every record moved to its new UID");
    assert!(server.log().contains("folder_reindexed"));
    imap.logout().await;
}

#[tokio::test]
async fn a_sigkill_in_the_middle_of_the_initial_sync_loses_and_duplicates_nothing() {
    let service = mail_service(1);
    let mut imap = service.client(0).await;
    let total = 1500;
    for n in 0..total {
        imap.append("INBOX", &plain("bulk", n), None, None)
            .await
            .unwrap();
    }
    let mut server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    let mut stored = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        stored = all_messages(&server, &mailbox, "").await.len();
        if stored > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    assert!(
        stored > 0 && stored < total,
        "killed halfway ({stored} of {total} stored)"
    );
    server.restart().await.unwrap();
    wait_for_count(&server, &mailbox, "", total, Duration::from_secs(120)).await;
    let all = all_messages(&server, &mailbox, "").await;
    let message_ids: HashSet<&str> = all
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(message_ids.len(), total, "every message once");
    imap.logout().await;
}

#[tokio::test]
async fn a_reply_and_a_forward_written_in_the_application_thread_quote_and_carry_the_original() {
    let service = mail_service(1);
    let server = start(&service, "").await;
    ok(&server, Method::POST, "/v1/accounts", Some(json!({"connector": "current-user", "name": "own", "email_address": "noreply@corp.test"}))).await;
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, token) = enabled_user(&server, 0, &["email-send"]).await;
    let original = "From: Customer <customer@example.com>\r\nTo: user0@corp.test, colleague@corp.test\r\nCc: boss@example.com\r\n\
        Subject: Order 4711\r\nMessage-ID: <order4711@example.com>\r\nReferences: <earlier@example.com>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease confirm the order.\r\nSecond line.\r\n\
        --b\r\nContent-Type: application/pdf; name=\"order.pdf\"\r\nContent-Disposition: attachment; filename=\"order.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";
    let mut imap = service.client(0).await;
    imap.append("INBOX", original.as_bytes(), None, None)
        .await
        .unwrap();
    wait_for_count(&server, &mailbox, "", 1, Duration::from_secs(20)).await;
    let inbound = all_messages(&server, &mailbox, "").await.remove(0);
    let inbound_id = inbound["id"].as_str().unwrap();
    ok(
        &server,
        Method::PUT,
        &format!("/v1/inbound/{inbound_id}/related-records"),
        Some(json!({"related_records": [{"type": "sales-order", "id": "4711"}]})),
    )
    .await;

    // Reply-all from the user's own mailbox.
    let (status, accepted) = server
        .call_as(
            &token,
            Method::POST,
            &format!("/v1/inbound/{inbound_id}/reply-all"),
            Some(&json!({"text": "Confirmed."})),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["conversation_id"], inbound["conversation_id"]);
    server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(30))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the reply reaches the sink",
        || async { Ok(!service.sink.messages()?.is_empty()) },
    )
    .await
    .unwrap();
    let sent = service.sink.messages().unwrap().remove(0);
    let parsed = mail_parser::MessageParser::default()
        .parse(&sent.raw)
        .unwrap();
    assert_eq!(parsed.subject(), Some("Re: Order 4711"));
    assert_eq!(
        parsed.in_reply_to().as_text(),
        Some("order4711@example.com")
    );
    assert_eq!(
        parsed
            .references()
            .as_text_list()
            .map(|l| l.iter().map(|r| r.to_string()).collect::<Vec<_>>()),
        Some(vec![
            "earlier@example.com".to_string(),
            "order4711@example.com".to_string()
        ])
    );
    let text = parsed.body_text(0).unwrap();
    assert!(text.starts_with("Confirmed."), "{text}");
    assert!(
        text.contains("> Please confirm the order.\n> Second line."),
        "{text}"
    );
    let mut recipients = sent.rcpt_to.clone();
    recipients.sort();
    assert_eq!(
        recipients,
        [
            "boss@example.com",
            "colleague@corp.test",
            "customer@example.com"
        ],
        "reply-all, never to the mailbox itself"
    );
    let reply_view = server.message(&id_of(&accepted)).await.unwrap();
    assert_eq!(
        reply_view["related_records"][0]["id"], "4711",
        "{reply_view}"
    );
    // The conversation shows both, and an answer to the reply joins it.
    let conversation_id = inbound["conversation_id"].as_str().unwrap();
    let conversation = ok(
        &server,
        Method::GET,
        &format!("/v1/conversations/{conversation_id}"),
        None,
    )
    .await;
    let directions: Vec<&str> = conversation["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["direction"].as_str().unwrap())
        .collect();
    assert_eq!(directions, ["inbound", "outbound"], "{conversation}");
    let reply_message_id = parsed.message_id().unwrap().to_owned();
    imap.append(
        "INBOX",
        &reply_to(&format!("<{reply_message_id}>"), "Order 4711", 5),
        None,
        None,
    )
    .await
    .unwrap();
    wait_for_count(&server, &mailbox, "", 2, Duration::from_secs(20)).await;
    let answer = all_messages(&server, &mailbox, "&correlated=true")
        .await
        .remove(0);
    assert_eq!(answer["conversation_id"], inbound["conversation_id"]);

    // Forward: the original's attachment goes along.
    let (status, forwarded) = server
        .call_as(
            &token,
            Method::POST,
            &format!("/v1/inbound/{inbound_id}/forward"),
            Some(&json!({"to": ["accounting@example.com"], "text": "FYI"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{forwarded}");
    server
        .wait_for_status(&id_of(&forwarded), "sent", Duration::from_secs(30))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the forward reaches the sink",
        || async { Ok(service.sink.messages()?.len() >= 2) },
    )
    .await
    .unwrap();
    let sent = service
        .sink
        .messages()
        .unwrap()
        .into_iter()
        .find(|m| m.rcpt_to == ["accounting@example.com"])
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&sent.raw)
        .unwrap();
    assert_eq!(parsed.subject(), Some("Fwd: Order 4711"));
    let attachment = parsed.attachment(0).expect("the original's attachment");
    assert_eq!(
        mail_parser::MimeHeaders::attachment_name(attachment),
        Some("order.pdf")
    );
    assert_eq!(attachment.contents(), b"%PDF-1.4\n");
    // A forward needs recipients; someone else's mail cannot be answered by id.
    let (status, body) = server
        .call_as(
            &token,
            Method::POST,
            &format!("/v1/inbound/{inbound_id}/forward"),
            Some(&json!({"text": "?"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["field"].clone()),
        (422, json!("to")),
        "{body}"
    );
    let (status, _) = server
        .call_as(
            &token,
            Method::POST,
            &format!("/v1/inbound/{}/reply", uuid::Uuid::now_v7()),
            Some(&json!({"text": "?"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    imap.logout().await;
}

#[tokio::test]
async fn a_tracking_token_in_the_subject_links_a_reply_that_lost_its_threading_headers() {
    let service = mail_service(1);
    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    let settings = ok(&server, Method::PUT, "/v1/settings/correlation",
        Some(json!({"subject_token": true, "subject_token_prefix": "MR", "plus_addressing": false, "smart_match_days": 0}))).await;
    assert_eq!(settings["subject_token"], true);
    let (status, refused) = server
        .call(Method::PUT, "/v1/settings/correlation", Some(&json!({"subject_token": true, "subject_token_prefix": "M R", "plus_addressing": false, "smart_match_days": 0})), &[])
        .await
        .unwrap();
    assert_eq!(
        (status, refused["field"].clone()),
        (422, json!("subject_token_prefix"))
    );
    // A contact of the customer, whose mail is then linked to the customer record.
    ok(
        &server,
        Method::PUT,
        "/v1/contacts/ann",
        Some(json!({"name": "Ann", "addresses": ["Customer@Example.com"],
        "related_records": [{"type": "customer", "id": "C-7"}]})),
    )
    .await;
    let contact = ok(&server, Method::GET, "/v1/contacts/ann", None).await;
    assert_eq!(contact["addresses"], json!(["customer@example.com"]));
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;

    let sent = server
        .send(
            &json!({"to": ["customer@example.com"], "subject": "Quote 88", "text": "see attached"}),
        )
        .await
        .unwrap();
    let view = server.message(&id_of(&sent)).await.unwrap();
    let subject = view["subject"].as_str().unwrap().to_owned();
    assert!(
        subject.starts_with("Quote 88 [MR-") && subject.ends_with(']'),
        "{subject}"
    );
    // The customer's client dropped In-Reply-To and References, but kept the subject.
    let reply = format!(
        "From: customer@example.com\r\nTo: user0@corp.test\r\nSubject: AW: {subject}\r\nMessage-ID: <lost-headers@example.com>\r\n\r\nok\r\n"
    );
    let mut imap = service.client(0).await;
    imap.append("INBOX", reply.as_bytes(), None, None)
        .await
        .unwrap();
    wait_for_count(&server, &mailbox, "", 1, Duration::from_secs(20)).await;
    let stored = all_messages(&server, &mailbox, "").await.remove(0);
    assert_eq!(stored["correlation_method"], "subject-token");
    assert_eq!(stored["conversation_id"], sent["id"]);
    let detail = ok(
        &server,
        Method::GET,
        &format!("/v1/inbound/{}", stored["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(
        detail["related_records"],
        json!([{"type": "customer", "id": "C-7"}]),
        "linked through the known contact"
    );
    // The CLI shows the same: the mailbox's mail (as JSON), its sync state, the raw message.
    let cli = |args: Vec<String>| {
        let mut all = vec![
            "--server".to_owned(),
            server.base_url.clone(),
            "--token".to_owned(),
            server.token.clone(),
        ];
        all.extend(args);
        std::process::Command::new(common::binary())
            .args(all)
            .output()
            .unwrap()
    };
    let listed = cli(vec![
        "--output".into(),
        "json".into(),
        "inbound".into(),
        "list".into(),
        mailbox.clone(),
        "--correlated".into(),
        "true".into(),
    ]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["items"][0]["id"], stored["id"]);
    let sync = cli(vec!["inbound".into(), "sync".into(), mailbox.clone()]);
    let sync_text = String::from_utf8_lossy(&sync.stdout);
    assert!(
        sync.status.success() && sync_text.contains("INBOX"),
        "{sync_text}"
    );
    let raw = cli(vec![
        "inbound".into(),
        "raw".into(),
        stored["id"].as_str().unwrap().to_owned(),
    ]);
    assert!(
        String::from_utf8_lossy(&raw.stdout).contains("Message-ID: <lost-headers@example.com>")
    );

    // Smart matching, once on, links a reply that lost its headers and carries no token to the
    // mail it answers: same subject, same people.
    let set = cli(vec![
        "--output".into(),
        "json".into(),
        "settings".into(),
        "correlation".into(),
        "set".into(),
        "--subject-token".into(),
        "false".into(),
        "--smart-match-days".into(),
        "7".into(),
    ]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let settings: Value = serde_json::from_slice(&set.stdout).unwrap();
    assert_eq!(
        settings,
        json!({"subject_token": false, "subject_token_prefix": "MR", "plus_addressing": false, "smart_match_days": 7}),
        "what was not given keeps its value"
    );
    let schedule = server
        .send(&json!({"to": ["customer@example.com"], "subject": "Delivery schedule", "text": "week 12"}))
        .await
        .unwrap();
    let accounts = ok(&server, Method::GET, "/v1/accounts", None).await;
    let account = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == schedule["account_id"])
        .unwrap_or_else(|| panic!("{schedule} {accounts}"));
    let reply = format!(
        "From: customer@example.com\r\nTo: {}\r\nSubject: Re: Delivery  schedule\r\nMessage-ID: <no-headers@example.com>\r\n\r\nfine\r\n",
        account["email_address"].as_str().unwrap()
    );
    imap.append("INBOX", reply.as_bytes(), None, None)
        .await
        .unwrap();
    wait_for_count(&server, &mailbox, "", 2, Duration::from_secs(20)).await;
    let matched = all_messages(&server, &mailbox, "")
        .await
        .into_iter()
        .find(|m| m["message_id"] == "no-headers@example.com")
        .unwrap();
    assert_eq!(matched["correlation_method"], "smart-match", "{matched}");
    assert_eq!(matched["conversation_id"], schedule["id"]);

    // Set regarding and untrack by hand, from the CLI; a contact shown and deleted there too.
    let matched_id = matched["id"].as_str().unwrap().to_owned();
    let regarding = cli(vec![
        "inbound".into(),
        "regarding".into(),
        matched_id.clone(),
        "--record".into(),
        "deal:D-9".into(),
    ]);
    assert!(
        regarding.status.success(),
        "{}",
        String::from_utf8_lossy(&regarding.stderr)
    );
    let detail = ok(
        &server,
        Method::GET,
        &format!("/v1/inbound/{matched_id}"),
        None,
    )
    .await;
    assert_eq!(
        detail["related_records"],
        json!([{"type": "deal", "id": "D-9"}])
    );
    let refused = cli(vec![
        "inbound".into(),
        "regarding".into(),
        matched_id.clone(),
        "--record".into(),
        "D-9".into(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("type:id"));
    let untrack = cli(vec!["inbound".into(), "untrack".into(), matched_id.clone()]);
    assert!(
        untrack.status.success(),
        "{}",
        String::from_utf8_lossy(&untrack.stderr)
    );
    let detail = ok(
        &server,
        Method::GET,
        &format!("/v1/inbound/{matched_id}"),
        None,
    )
    .await;
    assert_eq!(detail["related_records"], json!([]));
    let shown = cli(vec![
        "--output".into(),
        "json".into(),
        "contact".into(),
        "show".into(),
        "ann".into(),
    ]);
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["addresses"], json!(["customer@example.com"]));
    let put = cli(vec![
        "contact".into(),
        "put".into(),
        "bob".into(),
        "--address".into(),
        "Bob@Example.com".into(),
        "--record".into(),
        "customer:C-8".into(),
    ]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let bob = ok(&server, Method::GET, "/v1/contacts/bob", None).await;
    assert_eq!(
        bob["related_records"],
        json!([{"type": "customer", "id": "C-8"}])
    );
    let deleted = cli(vec!["contact".into(), "delete".into(), "bob".into()]);
    assert!(deleted.status.success());
    let (status, _) = server.get("/v1/contacts/bob").await.unwrap();
    assert_eq!(status, 404);

    let (status, _) = server
        .call(Method::DELETE, "/v1/contacts/ann", None, &[])
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, _) = server.get("/v1/contacts/ann").await.unwrap();
    assert_eq!(status, 404);
    imap.logout().await;
}

#[tokio::test]
async fn on_postgresql_one_node_synchronizes_a_mailbox_and_another_takes_it_over_when_it_dies() {
    let service = mail_service(1);
    let config = format!(
        "extra_root_certificates = [{:?}]\n{}mailbox_test_retry_ms = 20\nmailbox_test_timeout_ms = 10000\nsync_rescan_ms = 200\nsync_hold_ms = 2000\nsync_retry_ms = 200\n",
        service.postfix.ca_certificate().display().to_string(),
        common::FAST_ENGINE
    );
    let mut nodes = MailroomServer::start_cluster(common::binary(), &config, 2)
        .await
        .expect("two nodes on one PostgreSQL database");
    profile(&nodes[0], &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&nodes[0], 0, &["email-send"]).await;
    let mut imap = service.client(0).await;
    imap.append("INBOX", &plain("before", 1), None, None)
        .await
        .unwrap();
    wait_for_count(&nodes[1], &mailbox, "", 1, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let holders: Vec<usize> = (0..2)
        .filter(|&i| nodes[i].log().contains("mailbox_sync_started"))
        .collect();
    assert_eq!(
        holders.len(),
        1,
        "exactly one node synchronizes the mailbox"
    );
    let (dead, survivor) = (holders[0], 1 - holders[0]);
    nodes[dead].kill();
    imap.append("INBOX", &plain("after", 2), None, None)
        .await
        .unwrap();
    wait_for_count(&nodes[survivor], &mailbox, "", 2, Duration::from_secs(30)).await;
    assert!(
        nodes[survivor].log().contains("mailbox_sync_started"),
        "the other node took it over"
    );
    imap.logout().await;
}

/// A message with one base64 attachment of `content`, lines of 76 characters.
fn with_attachment(subject: &str, content: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(content);
    let mut raw = format!(
        "From: Supplier <supplier@example.com>\r\nTo: user0@corp.test\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
         The drawings are attached.\r\n--b\r\nContent-Type: application/octet-stream; name=\"drawings.bin\"\r\n\
         Content-Disposition: attachment; filename=\"drawings.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    for line in encoded.as_bytes().chunks(76) {
        raw.extend_from_slice(line);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"--b--\r\n");
    raw
}

async fn only_message(server: &MailroomServer, mailbox: &str, subject: &str) -> Value {
    let listed = all_messages(server, mailbox, "").await;
    let summary = listed
        .iter()
        .find(|m| m["subject"] == subject)
        .unwrap_or_else(|| panic!("{subject} is stored: {listed:?}"));
    let id = summary["id"].as_str().unwrap();
    ok(server, Method::GET, &format!("/v1/inbound/{id}"), None).await
}

#[tokio::test]
async fn a_large_message_is_read_piece_by_piece_into_the_blob_store_with_memory_bounded() {
    let service = mail_service(1);
    let mut imap = service.client(0).await;
    // 48 MiB of attachment: 65 MB on the wire, eight times a batch.
    let content: Vec<u8> = (0..48 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let big = with_attachment("drawings", &content);
    imap.append("INBOX", &big, None, None).await.unwrap();
    let server = start(&service, "").await;
    let before = server.peak_rss_mib().unwrap();
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    wait_for_count(&server, &mailbox, "", 1, Duration::from_secs(120)).await;
    let grew = server.peak_rss_mib().unwrap() - before;
    eprintln!("peak memory grew by {grew:.1} MiB");
    // Held whole, the message alone would take 65 MB, its decoded attachment 48 MiB more.
    assert!(
        grew < 32.0,
        "the server's peak memory grew by {grew:.0} MiB reading a {} MB message",
        big.len() / 1_000_000
    );
    let detail = only_message(&server, &mailbox, "drawings").await;
    assert_eq!(detail["text"], "The drawings are attached.");
    let parts = detail["attachments"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "{detail}");
    assert_eq!(parts[0]["part"], "2");
    assert_eq!(parts[0]["size"], json!(content.len()));
    let (status, bytes) = server
        .raw_get(parts[0]["download"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(bytes == content, "the attachment comes back as it was sent");
    let id = detail["id"].as_str().unwrap();
    let (status, raw) = server
        .raw_get(&format!("/v1/inbound/{id}/raw"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(raw == big, "the raw message is kept byte for byte");
    // The console offers the same downloads to a signed-in user.
    let cookie = common::console_session(&server, &server.token).await;
    let shown = common::console_page(&server, &format!("/console/inbound/{id}"), &cookie).await;
    assert!(
        shown.contains(&format!("/console/inbound/{id}/parts/2")),
        "{shown}"
    );
    let downloaded = reqwest::Client::new()
        .get(format!("{}/console/inbound/{id}/parts/2", server.base_url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(downloaded.status(), 200);
    assert!(
        downloaded.bytes().await.unwrap() == content,
        "the same bytes through the console"
    );

    // A forwarded message carrying a large attachment: its structure needs it read whole, and
    // both the attached message and the part inside it are kept.
    let inner_content: Vec<u8> = content[..9 * 1024 * 1024].to_vec();
    let inner = with_attachment("inner", &inner_content);
    let mut forwarded = b"From: Colleague <colleague@example.com>\r\nTo: user0@corp.test\r\n\
        Subject: forwarded drawings\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\n\
        See below.\r\n--outer\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"inner.eml\"\r\n\r\n"
        .to_vec();
    forwarded.extend_from_slice(&inner);
    forwarded.extend_from_slice(b"\r\n--outer--\r\n");
    imap.append("INBOX", &forwarded, None, None).await.unwrap();
    wait_for_count(&server, &mailbox, "", 2, Duration::from_secs(60)).await;
    let detail = only_message(&server, &mailbox, "forwarded drawings").await;
    let parts = detail["attachments"].as_array().unwrap();
    let paths: Vec<&str> = parts.iter().map(|p| p["part"].as_str().unwrap()).collect();
    assert_eq!(paths, ["2", "2.2"], "{detail}");
    let (_, bytes) = server
        .raw_get(parts[1]["download"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        bytes == inner_content,
        "the part inside the attached message is whole"
    );
    assert!(server.log().contains("needs it read whole"));
    imap.logout().await;
}

#[tokio::test]
async fn a_message_read_in_another_client_after_it_was_stored_shows_as_read() {
    let service = mail_service(1);
    let mut imap = service.client(0).await;
    imap.append("INBOX", &plain("unread for now", 1), None, None)
        .await
        .unwrap();
    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    wait_for_count(&server, &mailbox, "", 1, Duration::from_secs(20)).await;
    let stored = all_messages(&server, &mailbox, "").await;
    assert_eq!(stored[0]["unread"], true);
    let uid = stored[0]["uid"].as_u64().unwrap() as u32;

    // Read and flagged in the user's mail client: CONDSTORE names the change, IDLE wakes the sync.
    let mut other_client = service.client(0).await;
    other_client
        .add_flags("INBOX", uid, "\\Seen \\Flagged")
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the message shows as read",
        || async { Ok(all_messages(&server, &mailbox, "&unread=false").await.len() == 1) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    let id = stored[0]["id"].as_str().unwrap();
    let detail = ok(&server, Method::GET, &format!("/v1/inbound/{id}"), None).await;
    let flags = detail["flags"].as_array().unwrap();
    assert!(flags.contains(&json!("\\Flagged")), "{detail}");
    assert!(server.log().contains("flags_synchronized"));
    other_client.logout().await;
    imap.logout().await;
}
