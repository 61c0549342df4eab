//! A private Postfix + Dovecot with users `user{i}@corp.test` (password `pw{i}`), and mailroom
//! users whose mailboxes on it are approved, tested and enabled.

use super::{id_of, ok};
use mailroom_testkit::{ImapClient, MailroomServer, PostfixWithSasl, SmtpSink, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub struct MailService {
    pub postfix: PostfixWithSasl,
    pub sink: SmtpSink,
}

impl MailService {
    pub fn imap_port(&self) -> u16 {
        self.postfix.imap_port.unwrap()
    }

    pub async fn client(&self, i: usize) -> ImapClient {
        ImapClient::login(
            self.imap_port(),
            &format!("user{i}@corp.test"),
            &format!("pw{i}"),
        )
        .await
        .unwrap()
    }
}

pub fn mail_service(count: usize) -> MailService {
    let sink = SmtpSink::start(&[]).unwrap();
    let users: Vec<(String, String)> = (0..count)
        .map(|i| (format!("user{i}@corp.test"), format!("pw{i}")))
        .collect();
    let postfix = PostfixWithSasl::start_with_users(&users, sink.port).unwrap();
    MailService { postfix, sink }
}

pub async fn start(service: &MailService, engine: &str) -> MailroomServer {
    MailroomServer::start(
        super::binary(),
        &format!(
            "extra_root_certificates = [{:?}]\n{}mailbox_test_retry_ms = 20\nmailbox_test_timeout_ms = 10000\nsync_rescan_ms = 200\nsync_hold_ms = 3000\nsync_retry_ms = 200\n{engine}",
            service.postfix.ca_certificate().display().to_string(),
            super::FAST_ENGINE
        ),
    )
    .await
    .expect("mailroom starts")
}

/// A profile on the service (IMAP without TLS, submission with STARTTLS) syncing `folders`.
pub async fn profile(server: &MailroomServer, service: &MailService, folders: &[&str]) -> String {
    let body = json!({
        "name": "corp", "kind": "imap-smtp",
        "incoming": {"host": "127.0.0.1", "port": service.imap_port(), "security": "none"},
        "outgoing": {"host": "127.0.0.1", "port": service.postfix.port, "security": "starttls"},
        "is_default_for_new_mailboxes": true,
        "processing": {"max_connections": 4, "folders": folders, "use_idle": true}
    });
    id_of(&ok(server, Method::POST, "/v1/server-profiles", Some(body)).await)
}

/// User `user{i}` with an enabled mailbox on the profile that keeps all mail; returns (user id,
/// mailbox id, token).
pub async fn enabled_user(
    server: &MailroomServer,
    i: usize,
    sets: &[&str],
) -> (String, String, String) {
    enabled_user_with_filter(server, i, sets, "all").await
}

pub async fn enabled_user_with_filter(
    server: &MailroomServer,
    i: usize,
    sets: &[&str],
    filter: &str,
) -> (String, String, String) {
    let user = ok(
        server,
        Method::POST,
        "/v1/users",
        Some(json!({"name": format!("user{i}"), "contact_email": format!("user{i}@corp.test"), "licence": "full", "permission_sets": sets})),
    )
    .await;
    let user_id = id_of(&user);
    let token = ok(
        server,
        Method::POST,
        &format!("/v1/users/{user_id}/tokens"),
        Some(json!({"name": "t"})),
    )
    .await;
    let mailboxes = ok(server, Method::GET, "/v1/mailboxes", None).await;
    let mailbox = id_of(
        mailboxes
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == json!(user_id))
            .unwrap(),
    );
    ok(
        server,
        Method::PATCH,
        &format!("/v1/mailboxes/{mailbox}"),
        Some(json!({"username": format!("user{i}@corp.test"), "password": format!("pw{i}"), "filter": filter})),
    )
    .await;
    ok(
        server,
        Method::POST,
        &format!("/v1/mailboxes/{mailbox}/approve"),
        None,
    )
    .await;
    let job = ok(
        server,
        Method::POST,
        &format!("/v1/mailboxes/{mailbox}/test"),
        None,
    )
    .await;
    let job_path = format!("/v1/jobs/{}", id_of(&job));
    wait_until(Duration::from_secs(30), "the test job finishes", || async {
        Ok(ok(server, Method::GET, &job_path, None).await["state"] == "done")
    })
    .await
    .unwrap();
    let tested = ok(
        server,
        Method::GET,
        &format!("/v1/mailboxes/{mailbox}"),
        None,
    )
    .await;
    assert_eq!(tested["enabled"], true, "{tested}\n{}", server.log());
    (
        user_id,
        mailbox,
        token["token"].as_str().unwrap().to_owned(),
    )
}

/// Every received message of a mailbox the admin sees, paging through the listing.
pub async fn all_messages(server: &MailroomServer, mailbox: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/mailboxes/{mailbox}/messages?limit=500{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = ok(server, Method::GET, &path, None).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
}

pub async fn wait_for_count(
    server: &MailroomServer,
    mailbox: &str,
    query: &str,
    count: usize,
    timeout: Duration,
) {
    let mut last = 0;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        last = all_messages(server, mailbox, query).await.len();
        if last >= count {
            assert_eq!(last, count, "more messages than the folder holds");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{last} of {count} messages stored within {timeout:?}\n{}",
        server.log()
    );
}
