//! Delivery through real SMTP servers (Postfix's smtp-sink): content, retries, permanent failures,
//! dropped connections, rate limits and scenario routing.

mod common;

use common::{id_of, start_server, start_server_with_engine, upload};
use mail_parser::MimeHeaders;
use mailroom_testkit::{MailroomServer, SmtpSink, wait_until};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_message_reaches_the_smtp_server_with_its_content_headers_and_envelope() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    let account = server
        .add_smtp_account("sales", sink.port, json!({"sender_name": "Sales Team"}))
        .await
        .unwrap();
    let accepted = server
        .send(&json!({
            "to": ["Jörg Müller <joerg@example.com>"], "cc": ["cc@example.com"], "bcc": ["audit@example.com"],
            "subject": "Rechnung 103001 – fällig am 1. Dezember",
            "text": "Guten Tag,\nanbei Ihre Rechnung.", "html": "<p>Guten Tag,</p><p>anbei Ihre Rechnung.</p>",
            "account_id": account["id"],
        }))
        .await
        .unwrap();
    let message = server
        .wait_for_status(&id_of(&accepted), "sent", WAIT)
        .await
        .unwrap();
    assert_eq!(message["attempts"][0]["outcome"], "sent");
    assert_eq!(message["attempts"][0]["reply_code"], 250);

    let dumped = sink.messages().unwrap();
    assert_eq!(dumped.len(), 1);
    let received = &dumped[0];
    assert_eq!(
        received.message_id.as_deref(),
        accepted["message_id"].as_str()
    );
    assert_eq!(received.mail_from, "sales@example.com");
    let mut recipients = received.rcpt_to.clone();
    recipients.sort();
    assert_eq!(
        recipients,
        ["audit@example.com", "cc@example.com", "joerg@example.com"]
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    assert_eq!(
        parsed.subject(),
        Some("Rechnung 103001 – fällig am 1. Dezember")
    );
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("Sales Team")
    );
    assert_eq!(
        parsed.to().unwrap().first().unwrap().name(),
        Some("Jörg Müller")
    );
    assert_eq!(
        parsed
            .body_text(0)
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "Guten Tag,\nanbei Ihre Rechnung."
    );
    assert!(parsed.body_html(0).unwrap().contains("anbei Ihre Rechnung"));
    let raw = String::from_utf8_lossy(&received.raw).to_ascii_lowercase();
    assert!(
        !raw.contains("audit@example.com"),
        "a Bcc recipient leaked into the headers"
    );
}

#[tokio::test]
async fn a_4xx_reply_is_retried_until_the_server_accepts_the_message() {
    let sink = SmtpSink::start(&["-r", "RCPT"]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("retry", sink.port, json!({}))
        .await
        .unwrap();
    let id = id_of(
        &server
            .send(&json!({"to": ["a@example.com"], "subject": "s", "text": "t"}))
            .await
            .unwrap(),
    );
    wait_until(WAIT, "two transient attempts", || async {
        let message = server.message(&id).await?;
        Ok(message["attempts"].as_array().map_or(0, Vec::len) >= 2)
    })
    .await
    .unwrap();
    let deferred = server.message(&id).await.unwrap();
    assert_eq!(deferred["status"], "queued", "{deferred:#}");
    let first = &deferred["attempts"][0];
    assert_eq!(first["outcome"], "transient");
    assert!(first["reply_code"].as_u64().unwrap() / 100 == 4, "{first}");
    assert!(deferred["next_attempt_at"].is_string());

    let sink = sink.restart_with(&[]).unwrap();
    let sent = server.wait_for_status(&id, "sent", WAIT).await.unwrap();
    let attempts = sent["attempts"].as_array().unwrap();
    assert_eq!(attempts.last().unwrap()["outcome"], "sent");
    assert!(
        attempts[..attempts.len() - 1]
            .iter()
            .all(|a| a["outcome"] == "transient")
    );
    assert_eq!(sink.messages().unwrap().len(), 1);
}

#[tokio::test]
async fn a_5xx_reply_fails_the_message_at_once_with_the_servers_reply_text() {
    let sink = SmtpSink::start(&["-f", "RCPT"]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("reject", sink.port, json!({}))
        .await
        .unwrap();
    let id = id_of(
        &server
            .send(&json!({"to": ["nobody@example.com"], "subject": "s", "text": "t"}))
            .await
            .unwrap(),
    );
    let failed = server.wait_for_status(&id, "failed", WAIT).await.unwrap();
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        1,
        "a permanent failure must not be retried: {failed:#}"
    );
    assert_eq!(attempts[0]["outcome"], "permanent");
    assert!(attempts[0]["reply_code"].as_u64().unwrap() / 100 == 5);
    assert!(
        attempts[0]["reply_text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("error"),
        "{}",
        attempts[0]
    );
    assert_eq!(failed["last_error"], attempts[0]["reply_text"]);
    assert!(sink.messages().unwrap().is_empty());
}

#[tokio::test]
async fn a_connection_dropped_mid_transaction_is_retried_and_the_message_delivered_once_accepted() {
    let sink = SmtpSink::start(&["-q", "DATA"]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("dropper", sink.port, json!({}))
        .await
        .unwrap();
    let id = id_of(
        &server
            .send(&json!({"to": ["a@example.com"], "subject": "s", "text": "t"}))
            .await
            .unwrap(),
    );
    wait_until(WAIT, "a transient attempt", || async {
        let message = server.message(&id).await?;
        Ok(message["attempts"]
            .as_array()
            .is_some_and(|a| !a.is_empty()))
    })
    .await
    .unwrap();
    let message = server.message(&id).await.unwrap();
    assert_eq!(
        message["attempts"][0]["outcome"], "transient",
        "{message:#}"
    );
    let sink = sink.restart_with(&[]).unwrap();
    server.wait_for_status(&id, "sent", WAIT).await.unwrap();
    let delivered = sink.messages().unwrap();
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        delivered[0].message_id.as_deref(),
        message["message_id"].as_str()
    );
}

#[tokio::test]
async fn a_connection_lost_after_the_final_dot_is_recorded_as_an_unknown_outcome() {
    // smtp-sink hangs up on the final "." without answering: it may or may not have the message.
    let sink = SmtpSink::start(&["-q", "."]).unwrap();
    let server = start_server().await;
    let retrying = server
        .add_smtp_account("retrying", sink.port, json!({"max_attempts": 2}))
        .await
        .unwrap();
    let cautious = server
        .add_smtp_account(
            "cautious",
            sink.port,
            json!({"max_attempts": 5, "retry_after_unknown": false}),
        )
        .await
        .unwrap();
    assert_eq!(
        retrying["retry_after_unknown"], true,
        "the default, as MTAs do"
    );
    assert_eq!(cautious["retry_after_unknown"], false);

    for (account, attempts) in [(&retrying, 2), (&cautious, 1)] {
        let id = id_of(
            &server
                .send(
                    &json!({"to": ["a@example.com"], "subject": "s", "text": "t",
                              "account_id": account["id"]}),
                )
                .await
                .unwrap(),
        );
        let failed = server.wait_for_status(&id, "failed", WAIT).await.unwrap();
        let recorded = failed["attempts"].as_array().unwrap();
        assert_eq!(recorded.len(), attempts, "{failed:#}");
        assert!(
            recorded.iter().all(|a| a["outcome"] == "unknown"),
            "{failed:#}"
        );
        assert!(
            recorded[0]["reply_text"]
                .as_str()
                .unwrap()
                .starts_with("end of data: "),
            "{failed:#}"
        );
        assert_eq!(failed["possibly_delivered"], true);
        assert!(
            failed["last_error"]
                .as_str()
                .unwrap()
                .contains("may have accepted the message"),
            "{failed:#}"
        );
    }
}

#[tokio::test]
async fn transient_failures_stop_after_the_accounts_maximum_number_of_attempts() {
    let sink = SmtpSink::start(&["-r", "MAIL"]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("limited", sink.port, json!({"max_attempts": 3}))
        .await
        .unwrap();
    let id = id_of(
        &server
            .send(&json!({"to": ["a@example.com"], "subject": "s", "text": "t"}))
            .await
            .unwrap(),
    );
    let failed = server.wait_for_status(&id, "failed", WAIT).await.unwrap();
    let attempts = failed["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts.iter().all(|a| a["outcome"] == "transient"));
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 3 attempts")
    );

    // A manual retry gives the message a fresh budget; once the server accepts, it is sent.
    let sink = sink.restart_with(&[]).unwrap();
    let (status, _) = server
        .post(&format!("/v1/messages/{id}/retry"), &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let sent = server.wait_for_status(&id, "sent", WAIT).await.unwrap();
    assert_eq!(sent["attempts"].as_array().unwrap().len(), 4);
    assert_eq!(sink.messages().unwrap().len(), 1);
}

#[tokio::test]
async fn queued_mail_waits_when_the_account_is_over_its_limit_and_no_window_holds_more() {
    // The test configuration shortens the rate window to one second.
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account(
            "limited",
            sink.port,
            json!({"rate_limit_per_minute": 4, "concurrency_limit": 2}),
        )
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..14 {
        ids.push(id_of(
            &server
                .send(&json!({"to": ["a@example.com"], "subject": format!("m{n}"), "text": "t"}))
                .await
                .unwrap(),
        ));
    }
    let mut starts = Vec::new();
    for id in &ids {
        let message = server
            .wait_for_status(id, "sent", Duration::from_secs(30))
            .await
            .unwrap();
        let started = message["attempts"][0]["started_at"]
            .as_str()
            .unwrap()
            .to_owned();
        starts.push(time_ms(&started));
    }
    starts.sort();
    for (index, start) in starts.iter().enumerate() {
        let in_window = starts[index..]
            .iter()
            .take_while(|t| **t < start + 1000)
            .count();
        assert!(
            in_window <= 4,
            "{in_window} attempts started within one window from {start}: {starts:?}"
        );
    }
    let span = starts.last().unwrap() - starts.first().unwrap();
    assert!(
        span >= 2_900,
        "14 messages at 4 per second need at least 3 windows; they took {span} ms"
    );
    assert_eq!(sink.messages().unwrap().len(), 14);
}

/// A message to a@example.com with this subject.
fn text(subject: &str) -> Value {
    json!({"to": ["a@example.com"], "subject": subject, "text": "t"})
}

/// A sink that answers each DATA after a second, and a server whose default account has one
/// connection and may hold eight messages claimed (the dispatcher claims more only once four or
/// fewer are held); new mail waits up to `in_flow_delay_ms` for room. One message has been sent, so
/// the dispatcher has found the account's queue empty: new mail goes straight to sending.
async fn slow_account(in_flow_delay_ms: u64) -> (SmtpSink, MailroomServer) {
    let sink = SmtpSink::start(&["-w", "1"]).unwrap();
    let server = start_server_with_engine(&format!(
        "prefetch_per_slot = 8\nin_flow_delay_ms = {in_flow_delay_ms}"
    ))
    .await;
    server
        .add_default_smtp_account("slow", sink.port, json!({"concurrency_limit": 1}))
        .await
        .unwrap();
    let warm_up = id_of(&server.send(&text("warm-up")).await.unwrap());
    server
        .wait_for_status(&warm_up, "sent", WAIT)
        .await
        .unwrap();
    (sink, server)
}

#[tokio::test]
async fn new_mail_skips_the_queue_only_while_nothing_older_waits() {
    // New mail does not wait for room.
    let (_sink, server) = slow_account(0).await;
    let mut statuses = Vec::new();
    let mut first = String::new();
    for n in 0..9 {
        let accepted = server.send(&text(&format!("m{n}"))).await.unwrap();
        if n == 0 {
            first = id_of(&accepted);
        }
        statuses.push(accepted["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        statuses,
        [&["sending"; 8][..], &["queued"]].concat(),
        "eight fit the account's room, the ninth waits in the queue"
    );
    // Room for one more opens, but the dispatcher does not claim yet: new mail must not overtake
    // the message waiting in the queue.
    server.wait_for_status(&first, "sent", WAIT).await.unwrap();
    let late = server.send(&text("late")).await.unwrap();
    assert_eq!(late["status"], "queued", "{late}");
    // Once the dispatcher has claimed what waited (the ninth and the late one; with a one-second
    // sink the late one is still being sent when this looks), new mail skips the queue again.
    let late = id_of(&late);
    let deadline = std::time::Instant::now() + WAIT;
    while server.message(&late).await.unwrap()["status"] == "queued" {
        assert!(
            std::time::Instant::now() < deadline,
            "the late message was never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = server.send(&text("again")).await.unwrap();
    assert_eq!(again["status"], "sending", "{again}");
}

#[tokio::test]
async fn new_mail_waits_a_moment_for_room_in_its_account_before_it_takes_the_queue() {
    // New mail may wait up to five seconds for a place.
    let (_sink, server) = slow_account(5000).await;
    for n in 0..8 {
        let accepted = server.send(&text(&format!("m{n}"))).await.unwrap();
        assert_eq!(accepted["status"], "sending", "{accepted}");
    }
    // Every place is taken until the first of the eight is delivered, about a second from now:
    // the ninth is answered once it has a place, and skips the queue.
    let asked = std::time::Instant::now();
    let ninth = server.send(&text("ninth")).await.unwrap();
    let waited = asked.elapsed();
    assert_eq!(ninth["status"], "sending", "{ninth}");
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}, before any place was free"
    );
}

#[tokio::test]
async fn new_mail_arriving_behind_waiting_mail_waits_for_the_queue_to_drain_and_never_overtakes_it()
{
    let (_sink, server) = slow_account(5000).await;
    for n in 0..8 {
        let accepted = server.send(&text(&format!("m{n}"))).await.unwrap();
        assert_eq!(accepted["status"], "sending", "{accepted}");
    }
    // Mail with an attachment always takes the queue: now older mail waits.
    let (status, upload) = upload(
        &server,
        &server.token,
        "a.txt",
        "text/plain",
        b"attached".to_vec(),
    )
    .await;
    assert_eq!(status, 201, "{upload}");
    let mut with_file = text("with a file");
    with_file["attachments"] = json!([{"id": upload["id"]}]);
    let waiting = server.send(&with_file).await.unwrap();
    assert_eq!(waiting["status"], "queued", "{waiting}");
    // The next message waits for room (about a second) and is then kept behind the waiting one.
    let behind = server.send(&text("behind")).await.unwrap();
    assert_eq!(behind["status"], "queued", "{behind}");
    // Now the account is known to have a queue: the next caller is answered only once the
    // dispatcher has claimed that queue (deliveries are a second apart, and it claims when half
    // of the account's 8 places are free) — not at once — and then takes a place of its own.
    let asked = std::time::Instant::now();
    let paced = server.send(&text("paced")).await.unwrap();
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}: did not wait for the queue ahead of it"
    );
    assert_eq!(paced["status"], "sending", "{paced}");
    // One connection: the attempts start one after the other, in the order the mail was due.
    let mut starts = Vec::new();
    for accepted in [&waiting, &behind, &paced] {
        let message = server
            .wait_for_status(&id_of(accepted), "sent", WAIT)
            .await
            .unwrap();
        starts.push(time_ms(
            message["attempts"][0]["started_at"].as_str().unwrap(),
        ));
    }
    assert!(
        starts[0] <= starts[2] && starts[1] <= starts[2],
        "the paced message started before the mail queued ahead of it: {starts:?}"
    );
}

fn time_ms(rfc3339: &str) -> i64 {
    let parsed =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
            .unwrap();
    (parsed.unix_timestamp_nanos() / 1_000_000) as i64
}

#[tokio::test]
async fn scenarios_route_to_their_account_and_unassigned_ones_use_the_default_account() {
    let default_sink = SmtpSink::start(&[]).unwrap();
    let invoice_sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    // The fresh install's pickup account is the default; make the first SMTP account the default instead.
    let general = server
        .add_smtp_account("general", default_sink.port, json!({}))
        .await
        .unwrap();
    let billing = server
        .add_smtp_account("billing", invoice_sink.port, json!({}))
        .await
        .unwrap();
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            "/v1/scenarios/default",
            Some(&json!({"account_id": general["id"]})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, scenario) = server
        .call(
            reqwest::Method::PUT,
            "/v1/scenarios/sales-invoice",
            Some(&json!({"account_id": billing["id"]})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{scenario}");
    assert_eq!(scenario["effective_account_id"], billing["id"]);

    let invoice = server.send(&json!({"to": ["c@example.com"], "subject": "invoice", "text": "t", "scenario": "sales-invoice"})).await.unwrap();
    let reminder = server.send(&json!({"to": ["c@example.com"], "subject": "reminder", "text": "t", "scenario": "reminder"})).await.unwrap();
    assert_eq!(invoice["account_id"], billing["id"]);
    assert_eq!(reminder["account_id"], general["id"]);
    server
        .wait_for_status(&id_of(&invoice), "sent", WAIT)
        .await
        .unwrap();
    server
        .wait_for_status(&id_of(&reminder), "sent", WAIT)
        .await
        .unwrap();
    let subjects = |sink: &SmtpSink| -> Vec<String> {
        sink.messages()
            .unwrap()
            .iter()
            .map(|m| {
                mail_parser::MessageParser::default()
                    .parse(&m.raw)
                    .unwrap()
                    .subject()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(subjects(&invoice_sink), ["invoice"]);
    assert_eq!(subjects(&default_sink), ["reminder"]);

    // Unassigning sends the scenario back to the default account.
    let (status, scenario) = server
        .call(
            reqwest::Method::DELETE,
            "/v1/scenarios/sales-invoice",
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(scenario["account_id"], Value::Null);
    assert_eq!(scenario["effective_account_id"], general["id"]);
    let later = server.send(&json!({"to": ["c@example.com"], "subject": "later", "text": "t", "scenario": "sales-invoice"})).await.unwrap();
    assert_eq!(later["account_id"], general["id"]);

    // A custom scenario exists once an admin registers it.
    let (status, _) = server.post("/v1/messages", &json!({"to": ["c@example.com"], "subject": "x", "text": "t", "scenario": "warranty-claim"})).await.unwrap();
    assert_eq!(status, 422);
    let (status, _) = server
        .call(
            reqwest::Method::PUT,
            "/v1/scenarios/warranty-claim",
            Some(&json!({"account_id": billing["id"], "description": "Warranty claims"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let custom = server.send(&json!({"to": ["c@example.com"], "subject": "x", "text": "t", "scenario": "warranty-claim"})).await.unwrap();
    assert_eq!(custom["account_id"], billing["id"]);
}

#[tokio::test]
async fn an_html_message_arrives_with_a_text_alternative_reply_to_custom_headers_and_folded_encoded_lines()
 {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account(
            "rich",
            sink.port,
            json!({"sender_name": "Vertrieb Müller & Söhne"}),
        )
        .await
        .unwrap();
    let subject = format!(
        "Ihre Rechnung 103001 über {} – bitte prüfen",
        "sehr lange Beschreibung ".repeat(8)
    );
    let html = "<html><body><h1>Rechnung 103001</h1><p>Sehr geehrte Frau Ünal,</p><p>Gesamt: <b>1.250,00 €</b></p>\
                <p><a href=\"https://pay.example.com/103001\">Jetzt bezahlen</a></p></body></html>";
    let accepted = server
        .send(&json!({
            "to": ["Ayşe Ünal <ayse@example.com>"], "reply_to": ["Buchhaltung <accounts@example.com>"],
            "headers": {"X-Order-Ref": "Auftrag 4711 – Müller", "List-Unsubscribe": "<mailto:unsubscribe@example.com>"},
            "subject": subject, "html": html,
        }))
        .await
        .unwrap();
    let message = server
        .wait_for_status(&id_of(&accepted), "sent", WAIT)
        .await
        .unwrap();
    assert!(
        message["text"].as_str().unwrap().contains("1.250,00 €"),
        "the derived text is stored and shown: {message:#}"
    );
    assert_eq!(message["headers"]["X-Order-Ref"], "Auftrag 4711 – Müller");

    let received = sink.messages().unwrap().remove(0);
    let raw = String::from_utf8(received.raw.clone()).expect("the message on the wire is ASCII");
    assert!(
        raw.lines().all(|line| line.len() <= 998),
        "no line exceeds RFC 5322's limit"
    );
    assert!(
        raw.lines()
            .filter(|l| l.starts_with("Subject:"))
            .all(|l| l.len() <= 78),
        "the long subject is folded: {raw}"
    );
    // mail-parser applies its default parsers only while no custom header parser is registered, so the
    // custom header is decoded in a second pass.
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    let custom = mail_parser::MessageParser::default()
        .header_text(mail_parser::HeaderName::Other("X-Order-Ref".into()));
    let custom = custom.parse(&received.raw).unwrap();
    assert_eq!(parsed.subject(), Some(subject.as_str()));
    assert_eq!(
        parsed.from().unwrap().first().unwrap().name(),
        Some("Vertrieb Müller & Söhne")
    );
    assert_eq!(
        parsed.to().unwrap().first().unwrap().name(),
        Some("Ayşe Ünal")
    );
    assert_eq!(
        parsed.reply_to().unwrap().first().unwrap().address(),
        Some("accounts@example.com")
    );
    assert_eq!(
        custom.header("X-Order-Ref").and_then(|h| h.as_text()),
        Some("Auftrag 4711 – Müller")
    );
    assert!(parsed.header("List-Unsubscribe").is_some());
    let text = parsed.body_text(0).unwrap();
    assert!(
        text.contains("Rechnung 103001")
            && text.contains("1.250,00 €")
            && text.contains("https://pay.example.com/103001"),
        "{text}"
    );
    assert!(parsed.body_html(0).unwrap().contains("<b>1.250,00 €</b>"));
    assert_eq!(
        parsed.content_type().unwrap().subtype(),
        Some("alternative"),
        "text and HTML are alternatives"
    );

    for (name, field) in [
        ("Message-ID", "headers.Message-ID"),
        ("bcc", "headers.bcc"),
        ("X Bad", "headers.X Bad"),
    ] {
        let (status, error) = server
            .post("/v1/messages", &json!({"to": ["a@example.com"], "subject": "s", "text": "t", "headers": {name: "x"}}))
            .await
            .unwrap();
        assert_eq!(status, 422, "{name}: {error}");
        assert_eq!(error["field"], field);
    }
}

#[tokio::test]
async fn lines_that_start_with_a_dot_arrive_intact_whether_or_not_the_server_offers_pipelining() {
    let text = "Totals:\n.\n.5 % discount\n..two dots\nend";
    for flags in [&[][..], &["-p"][..]] {
        let sink = SmtpSink::start(flags).unwrap();
        let server = start_server().await;
        let account = server
            .add_smtp_account("dots", sink.port, json!({}))
            .await
            .unwrap();
        let accepted = server
            .send(&json!({"to": ["buyer@example.com"], "subject": "dots", "text": text, "account_id": account["id"]}))
            .await
            .unwrap();
        server
            .wait_for_status(&id_of(&accepted), "sent", WAIT)
            .await
            .unwrap();
        let dumped = sink.messages().unwrap();
        assert_eq!(dumped.len(), 1, "sink flags {flags:?}");
        let parsed = mail_parser::MessageParser::default()
            .parse(&dumped[0].raw)
            .unwrap();
        assert_eq!(
            parsed
                .body_text(0)
                .unwrap()
                .replace("\r\n", "\n")
                .trim_end(),
            text,
            "sink flags {flags:?}"
        );
    }
}

#[tokio::test]
async fn logs_and_metrics_are_readable_by_an_operator() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = common::start_server_with("log_format = \"json\"").await;
    server
        .add_default_smtp_account("Invoices", sink.port, json!({}))
        .await
        .unwrap();
    let id = id_of(&server.send(&text("logged")).await.unwrap());
    server.wait_for_status(&id, "sent", WAIT).await.unwrap();
    for _ in 0..3 {
        let refused = reqwest::Client::new()
            .get(format!("{}/v1/outbox", server.base_url))
            .bearer_auth("mr_guessed")
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();

    // No line has a key twice (Python's json keeps the last one silently; the hook finds them).
    let check = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, json\n\
             def pairs(p):\n\
             \x20   keys = [k for k, _ in p]\n\
             \x20   assert len(keys) == len(set(keys)), keys\n\
             \x20   return dict(p)\n\
             for line in sys.stdin:\n\
             \x20   json.loads(line, object_pairs_hook=pairs)\n",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let mut child = check;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(log.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "a log line has a duplicate key: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let sent = lines
        .iter()
        .find(|l| l["fields"]["event"] == "email_sent")
        .expect("an email_sent line");
    assert_eq!(sent["fields"]["reply_code"], 250, "a number: {sent}");
    assert_eq!(sent["fields"]["account_name"], "Invoices");
    assert_eq!(sent["fields"]["message_uuid"], id);
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["event"] == "api_authentication_failed")
        .collect();
    assert_eq!(refused.len(), 1, "rate-limited: {refused:?}");
    assert!(
        refused[0]["fields"]["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{refused:?}"
    );
    assert!(
        !log.contains("mr_guessed"),
        "a presented token is never logged"
    );

    let metrics = reqwest::get(format!("{}/metrics", server.base_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let typed: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(typed.len() >= 5, "{metrics}");
    for family in typed {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "{family} has no # HELP:\n{metrics}"
        );
    }
}
