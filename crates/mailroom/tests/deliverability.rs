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

/// The message once at least `count` bounces or complaints are recorded on it (within `seconds`).
async fn bounces_recorded(
    server: &mailroom_testkit::MailroomServer,
    id: &str,
    count: usize,
    seconds: u64,
) -> serde_json::Value {
    mailroom_testkit::wait_until(
        std::time::Duration::from_secs(seconds),
        "the reports recorded",
        || async {
            Ok(server.message(id).await?["bounces"]
                .as_array()
                .map_or(0, Vec::len)
                >= count)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    server.message(id).await.unwrap()
}

fn dsn(original_message_id: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: user0@corp.test\r\nSubject: Undelivered Mail Returned to Sender\r\n\
Message-ID: <dsn.{}@mx.customer.example>\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n\
--r\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered to one recipient.\r\n\
--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.example\r\n\r\n\
Final-Recipient: rfc822; nobody@customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
Diagnostic-Code: smtp; 550 5.1.1 <nobody@customer.example>: Recipient address rejected: User unknown\r\n\r\n\
Final-Recipient: rfc822; later@customer.example\r\nAction: delayed\r\nStatus: 4.2.2\r\n\r\n\
--r\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_message_id}\r\nSubject: Invoice 7\r\n\r\n--r--\r\n",
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}

fn complaint(original_message_id: &str) -> Vec<u8> {
    format!(
        "From: abuse@isp.example\r\nTo: user0@corp.test\r\nSubject: Abuse report\r\nMessage-ID: <arf.{}@isp.example>\r\n\
Date: Tue, 1 Sep 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"f\"\r\n\r\n\
--f\r\nContent-Type: text/plain\r\n\r\nA complaint about a message from your network.\r\n\
--f\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: isp/1.0\r\nVersion: 1\r\n\
Original-Rcpt-To: <later@customer.example>\r\n\r\n\
--f\r\nContent-Type: message/rfc822\r\n\r\nMessage-ID: {original_message_id}\r\nFrom: billing@corp.test\r\nTo: later@customer.example\r\nSubject: Invoice 7\r\n\r\nInvoice\r\n--f--\r\n",
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}

#[tokio::test]
async fn a_bounce_and_a_complaint_received_in_a_synced_mailbox_are_recorded_on_the_message_and_suppress_the_address()
 {
    use common::mail_service::{enabled_user, mail_service, profile, start, wait_for_count};
    let service = mail_service(1);
    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    server
        .add_default_smtp_account("out", service.sink.port, json!({}))
        .await
        .unwrap();
    let sent = server
        .send(&json!({"to": ["nobody@customer.example", "later@customer.example"], "subject": "Invoice 7", "text": "t"}))
        .await
        .unwrap();
    let id = common::id_of(&sent);
    server
        .wait_for_status(&id, "sent", std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let message_id = server.message(&id).await.unwrap()["message_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The DSN arrives, twice (a repeat records nothing more), then the complaint.
    let mut imap = service.client(0).await;
    imap.append("INBOX", &dsn(&message_id), None, None)
        .await
        .unwrap();
    imap.append("INBOX", &dsn(&message_id), None, None)
        .await
        .unwrap();
    wait_for_count(&server, &mailbox, "", 2, std::time::Duration::from_secs(15)).await;
    let bounces = |view: &serde_json::Value| -> Vec<(String, String, String, bool)> {
        view["bounces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["recipient"].as_str().unwrap().to_owned(),
                    b["action"].as_str().unwrap().to_owned(),
                    b["status"].as_str().unwrap().to_owned(),
                    b["hard"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let view = bounces_recorded(&server, &id, 1, 10).await;
    assert_eq!(
        bounces(&view),
        [
            (
                "later@customer.example".into(),
                "delayed".into(),
                "4.2.2".into(),
                false
            ),
            (
                "nobody@customer.example".into(),
                "failed".into(),
                "5.1.1".into(),
                true
            ),
        ],
        "{view}"
    );
    assert!(
        view["bounces"][1]["diagnostic"]
            .as_str()
            .unwrap()
            .contains("User unknown")
    );

    // The hard bounce suppressed its address, not the delayed one; mail to it is refused.
    let listed = ok(&server, Method::GET, "/v1/suppressions", None).await;
    let suppressed: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(suppressed, ["nobody@customer.example"]);
    assert_eq!(listed["items"][0]["reason"], "hard-bounce");
    assert_eq!(listed["items"][0]["message_id"], json!(id));
    let (status, refused) = server
        .call(
            Method::POST,
            "/v1/messages",
            Some(&json!({"to": ["nobody@customer.example"], "subject": "again", "text": "t"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("recipient_suppressed"))
    );

    // The complaint suppresses the other recipient.
    imap.append("INBOX", &complaint(&message_id), None, None)
        .await
        .unwrap();
    let view = bounces_recorded(&server, &id, 3, 15).await;
    let complaint = view["bounces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "complaint")
        .unwrap()
        .clone();
    assert_eq!(
        (
            complaint["recipient"].as_str(),
            complaint["action"].as_str()
        ),
        (Some("later@customer.example"), Some("abuse"))
    );
    let listed = ok(&server, Method::GET, "/v1/suppressions", None).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    imap.logout().await;
}

/// The return path of the message at the sink with this Message-ID.
async fn return_path_at_sink(sink: &mailroom_testkit::SmtpSink, message_id: &str) -> String {
    let mut found = String::new();
    mailroom_testkit::wait_until(
        std::time::Duration::from_secs(20),
        "the message at the sink",
        || {
            let hit = sink
                .messages()
                .unwrap()
                .into_iter()
                .find(|m| m.message_id.as_deref() == Some(message_id));
            let done = hit.is_some();
            if let Some(message) = hit {
                found = message.mail_from;
            }
            async move { Ok(done) }
        },
    )
    .await
    .unwrap();
    found
}

#[tokio::test]
async fn postfix_bounces_mail_for_an_unknown_user_to_the_verp_address_and_the_synced_bounce_is_recorded()
 {
    use common::mail_service::{MailService, enabled_user, profile, start};
    let sink = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    let postfix = mailroom_testkit::PostfixWithSasl::start_with_local_domain(
        &[("user0@corp.test".into(), "pw0".into())],
        "corp.test",
        &[("bounces@corp.test".into(), "user0@corp.test".into())],
        sink.port,
    )
    .unwrap();
    let service = MailService { postfix, sink };
    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    // user0's mailbox receives what is sent to bounces@corp.test: the bounce mailbox.
    enabled_user(&server, 0, &["email-send"]).await;
    let account = server
        .add_default_smtp_account(
            "out",
            service.postfix.port,
            json!({"email_address": "billing@corp.test", "username": "user0@corp.test", "password": "pw0",
                   "bounce_domain": "Corp.test"}),
        )
        .await
        .unwrap();
    assert_eq!(account["bounce_domain"], "corp.test", "{account}");
    let sent = server
        .send(&json!({"to": ["nobody@corp.test", "ann@customer.example"], "subject": "Invoice 8", "text": "t"}))
        .await
        .unwrap();
    let id = common::id_of(&sent);
    let message = server
        .wait_for_status(&id, "sent", std::time::Duration::from_secs(20))
        .await
        .unwrap();

    // The copy Postfix relayed to the customer carries the message's VERP return path.
    let return_path =
        return_path_at_sink(&service.sink, message["message_id"].as_str().unwrap()).await;
    assert!(
        return_path.starts_with("bounces+") && return_path.ends_with("@corp.test"),
        "{return_path}"
    );
    assert_eq!(return_path.split('@').next().unwrap().len(), 50);

    // Dovecot refused the unknown user; Postfix's own DSN reached the bounce mailbox, was synced,
    // and recorded on the message.
    let view = bounces_recorded(&server, &id, 1, 40).await;
    let bounce = &view["bounces"][0];
    assert_eq!(
        (
            bounce["recipient"].as_str(),
            bounce["action"].as_str(),
            bounce["status"].as_str(),
            bounce["hard"].as_bool()
        ),
        (
            Some("nobody@corp.test"),
            Some("failed"),
            Some("5.1.1"),
            Some(true)
        ),
        "{view}"
    );
    assert_eq!(view["bounces"].as_array().unwrap().len(), 1, "{view}");
    let listed = ok(&server, Method::GET, "/v1/suppressions", None).await;
    assert_eq!(listed["items"][0]["address"], "nobody@corp.test");
    assert_eq!(listed["items"][0]["reason"], "hard-bounce");
}

/// A free-text bounce (qmail's) that quotes nothing of the message, delivered to `to`.
fn qmail_bounce(to: &str, recipient: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mx.customer.example\r\nTo: {to}\r\nSubject: failure notice\r\n\
Message-ID: <qmail.{}@mx.customer.example>\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\n\r\n\
Hi. This is the qmail-send program at mx.customer.example.\r\n\
I'm afraid I wasn't able to deliver your message to the following addresses.\r\n\
This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n<{recipient}>:\r\n\
Remote host said: 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown\r\n",
        uuid::Uuid::new_v4().simple()
    )
    .into_bytes()
}

#[tokio::test]
async fn a_free_text_bounce_without_the_message_id_is_matched_by_its_verp_token_and_a_forged_token_matches_nothing()
 {
    use common::mail_service::{enabled_user, mail_service, profile, start, wait_for_count};
    let service = mail_service(1);
    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    server
        .add_default_smtp_account(
            "out",
            service.sink.port,
            json!({"bounce_domain": "bounces.corp.test"}),
        )
        .await
        .unwrap();
    let sent = server
        .send(&json!({"to": ["gone@customer.example"], "subject": "Invoice 9", "text": "t"}))
        .await
        .unwrap();
    let id = common::id_of(&sent);
    let message = server
        .wait_for_status(&id, "sent", std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let return_path =
        return_path_at_sink(&service.sink, message["message_id"].as_str().unwrap()).await;
    assert!(return_path.ends_with("@bounces.corp.test"), "{return_path}");

    // A bounce to a token whose signature is wrong, then the real one.
    let (local, domain) = return_path.split_once('@').unwrap();
    let last = if local.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}@{domain}", &local[..local.len() - 1]);
    let mut imap = service.client(0).await;
    imap.append(
        "INBOX",
        &qmail_bounce(&forged, "gone@customer.example"),
        None,
        None,
    )
    .await
    .unwrap();
    imap.append(
        "INBOX",
        &qmail_bounce(&return_path, "gone@customer.example"),
        None,
        None,
    )
    .await
    .unwrap();
    wait_for_count(&server, &mailbox, "", 2, std::time::Duration::from_secs(15)).await;
    let view = bounces_recorded(&server, &id, 1, 10).await;
    assert_eq!(view["bounces"].as_array().unwrap().len(), 1, "{view}");
    assert_eq!(
        (
            view["bounces"][0]["recipient"].as_str(),
            view["bounces"][0]["status"].as_str()
        ),
        (Some("gone@customer.example"), Some("5.1.1"))
    );
    imap.logout().await;
}

/// The value of a header in raw message bytes (unfolded).
fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let head = text.split("\n\n").next().unwrap_or_default();
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    unfolded.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_owned())
    })
}

#[tokio::test]
async fn a_scenarios_mail_carries_a_one_click_unsubscribe_link_that_takes_the_recipient_off_that_list_only()
 {
    let sink = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    let server = common::start_server_with("public_url = \"https://mail.cronus.example/\"").await;
    let account = server
        .add_default_smtp_account("news", sink.port, json!({}))
        .await
        .unwrap();
    let scenario = ok(
        &server,
        Method::PUT,
        "/v1/scenarios/newsletter",
        Some(json!({"account_id": account["id"], "unsubscribe": true})),
    )
    .await;
    assert_eq!(scenario["unsubscribe"], true);
    let sent = server
        .send(&json!({"scenario": "newsletter", "to": ["Ann@customer.example"], "cc": ["bob@customer.example"],
                      "subject": "November news", "text": "t"}))
        .await
        .unwrap();
    let message = server
        .wait_for_status(
            &common::id_of(&sent),
            "sent",
            std::time::Duration::from_secs(20),
        )
        .await
        .unwrap();
    let message_id = message["message_id"].as_str().unwrap().to_owned();
    let mut raw = Vec::new();
    mailroom_testkit::wait_until(std::time::Duration::from_secs(20), "the message", || {
        if let Some(m) = sink
            .messages()
            .unwrap()
            .into_iter()
            .find(|m| m.message_id.as_deref() == Some(message_id.as_str()))
        {
            raw = m.raw;
        }
        let done = !raw.is_empty();
        async move { Ok(done) }
    })
    .await
    .unwrap();
    assert_eq!(
        header_value(&raw, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let link = header_value(&raw, "List-Unsubscribe").unwrap();
    let url = link
        .trim_start_matches('<')
        .split('>')
        .next()
        .unwrap()
        .to_owned();
    let token = url
        .strip_prefix("https://mail.cronus.example/u/")
        .unwrap_or_else(|| panic!("{link}"))
        .to_owned();
    assert!(
        !token.contains("ann") && !token.contains("newsletter"),
        "{token}"
    );

    let http = reqwest::Client::new();
    let local = format!("{}/u/{token}", server.base_url);
    // A person who clicks sees a page that asks; fetching it unsubscribes no one.
    let page = http.get(&local).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(
        page.contains("newsletter")
            && page.contains("ann@customer.example")
            && page.contains("method=\"post\""),
        "{page}"
    );
    assert!(
        ok(&server, Method::GET, "/v1/unsubscribes", None).await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // What a mail provider sends (RFC 8058), twice.
    for _ in 0..2 {
        let answer = http
            .post(&local)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let listed = ok(&server, Method::GET, "/v1/unsubscribes", None).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the To recipient only, once: {listed}");
    assert_eq!(
        (
            items[0]["address"].as_str(),
            items[0]["list"].as_str(),
            items[0]["method"].as_str()
        ),
        (
            Some("ann@customer.example"),
            Some("newsletter"),
            Some("one-click")
        )
    );
    // A changed token is refused.
    let mut changed = token.clone();
    let last = if changed.ends_with('A') { "B" } else { "A" };
    changed.replace_range(changed.len() - 1.., last);
    let refused = http
        .post(format!("{}/u/{changed}", server.base_url))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    assert_eq!(
        refused.json::<serde_json::Value>().await.unwrap()["code"],
        "unsubscribe_token_invalid"
    );

    // The list's mail to her is refused; other mail is not.
    let (status, answer) = server
        .call(Method::POST, "/v1/messages",
            Some(&json!({"scenario": "newsletter", "to": ["ann@customer.example"], "subject": "December news", "text": "t"})), &[])
        .await
        .unwrap();
    assert_eq!(
        (status, answer["code"].as_str()),
        (422, Some("recipient_suppressed")),
        "{answer}"
    );
    server
        .send(&json!({"to": ["ann@customer.example"], "subject": "Invoice 10", "text": "t"}))
        .await
        .unwrap();
    let (status, _) = server
        .call(
            Method::DELETE,
            "/v1/unsubscribes/newsletter/ann@customer.example",
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    server
        .send(&json!({"scenario": "newsletter", "to": ["ann@customer.example"], "subject": "December news", "text": "t"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unsubscribe_link_needs_a_public_url_and_an_unsubscribe_request_by_mail_is_honoured() {
    use common::mail_service::{enabled_user, mail_service, profile, wait_for_count};
    let without = common::start_server().await;
    without
        .add_default_smtp_account("out", 25, json!({}))
        .await
        .unwrap();
    let (status, refused) = without
        .call(Method::POST, "/v1/messages",
            Some(&json!({"to": ["ann@customer.example"], "subject": "s", "text": "t", "unsubscribe": true})), &[])
        .await
        .unwrap();
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("unsubscribe_needs_public_url"))
    );
    drop(without);

    let service = mail_service(1);
    let server = mailroom_testkit::MailroomServer::start(
        common::binary(),
        &format!(
            "public_url = \"https://mail.cronus.example\"\nextra_root_certificates = [{:?}]\n{}mailbox_test_retry_ms = 20\nmailbox_test_timeout_ms = 10000\nsync_rescan_ms = 200\nsync_hold_ms = 3000\nsync_retry_ms = 200\n",
            service.postfix.ca_certificate().display().to_string(),
            common::FAST_ENGINE
        ),
    )
    .await
    .unwrap();
    profile(&server, &service, &["INBOX"]).await;
    let (_, mailbox, _) = enabled_user(&server, 0, &["email-send"]).await;
    server
        .add_default_smtp_account(
            "out",
            service.sink.port,
            json!({"bounce_domain": "corp.test"}),
        )
        .await
        .unwrap();
    let sent = server
        .send(&json!({"to": ["ann@customer.example"], "subject": "Reminder", "text": "t", "unsubscribe": true}))
        .await
        .unwrap();
    let message = server
        .wait_for_status(
            &common::id_of(&sent),
            "sent",
            std::time::Duration::from_secs(20),
        )
        .await
        .unwrap();
    let message_id = message["message_id"].as_str().unwrap().to_owned();
    let mut link = None;
    mailroom_testkit::wait_until(std::time::Duration::from_secs(20), "the message", || {
        link = service
            .sink
            .messages()
            .unwrap()
            .into_iter()
            .find(|m| m.message_id.as_deref() == Some(message_id.as_str()))
            .and_then(|m| header_value(&m.raw, "List-Unsubscribe"));
        let done = link.is_some();
        async move { Ok(done) }
    })
    .await
    .unwrap();
    let link = link.unwrap();
    let mailto = link
        .split(", ")
        .find_map(|part| part.strip_prefix("<mailto:"))
        .unwrap_or_else(|| panic!("{link}"))
        .trim_end_matches('>');
    let (address, query) = mailto.split_once('?').unwrap();
    assert_eq!(address, "bounces+unsubscribe@corp.test");
    let subject = query.strip_prefix("subject=").unwrap().replace("%20", " ");
    // The recipient's mail client sends the request; it arrives in the synced mailbox.
    let request = format!(
        "From: ann@customer.example\r\nTo: {address}\r\nSubject: {subject}\r\nMessage-ID: <u1@customer.example>\r\n\r\n\r\n"
    );
    let mut imap = service.client(0).await;
    imap.append("INBOX", request.as_bytes(), None, None)
        .await
        .unwrap();
    wait_for_count(&server, &mailbox, "", 1, std::time::Duration::from_secs(15)).await;
    mailroom_testkit::wait_until(
        std::time::Duration::from_secs(10),
        "the unsubscribe recorded",
        || async {
            Ok(
                !ok(&server, Method::GET, "/v1/unsubscribes", None).await["items"]
                    .as_array()
                    .unwrap()
                    .is_empty(),
            )
        },
    )
    .await
    .unwrap();
    let listed = ok(&server, Method::GET, "/v1/unsubscribes", None).await;
    assert_eq!(
        (
            listed["items"][0]["address"].as_str(),
            listed["items"][0]["list"].as_str(),
            listed["items"][0]["method"].as_str()
        ),
        (
            Some("ann@customer.example"),
            Some("default"),
            Some("mailto")
        )
    );
    imap.logout().await;
}
