//! Mailboxes against a private Dovecot (IMAP, SASL) and Postfix (submission with SASL through
//! Dovecot): test & enable with right and wrong passwords, an unreachable port, the approval
//! matrix, bulk edits, a 500-mailbox profile test within its connection cap, jobs that resume
//! after SIGKILL, and sending from one's own mailbox.

mod common;

use common::{id_of, ok};
use mailroom_testkit::{CountingProxy, MailroomServer, PostfixWithSasl, SmtpSink, wait_until};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// A mail service with `count` users (`user{i}@corp.test`, password `pw{i}`), reached through
/// proxies that count the connections its servers see.
struct MailService {
    postfix: PostfixWithSasl,
    imap: CountingProxy,
    smtp: CountingProxy,
    sink: SmtpSink,
}

async fn mail_service(count: usize) -> MailService {
    let sink = SmtpSink::start(&[]).unwrap();
    let users: Vec<(String, String)> = (0..count)
        .map(|i| (format!("user{i}@corp.test"), format!("pw{i}")))
        .collect();
    let postfix = PostfixWithSasl::start_with_users(&users, sink.port).unwrap();
    let imap = CountingProxy::start(postfix.imap_port.unwrap())
        .await
        .unwrap();
    let smtp = CountingProxy::start(postfix.port).await.unwrap();
    MailService {
        postfix,
        imap,
        smtp,
        sink,
    }
}

async fn start(service: &MailService) -> MailroomServer {
    MailroomServer::start(
        common::binary(),
        &format!(
            "extra_root_certificates = [{:?}]\n{}mailbox_test_retry_ms = 20\nmailbox_test_timeout_ms = 10000\njob_lease_ms = 1500\n",
            service.postfix.ca_certificate().display().to_string(),
            common::FAST_ENGINE
        ),
    )
    .await
    .expect("mailroom starts")
}

/// A profile on the service's servers (through the counting proxies), default for new mailboxes.
async fn profile(
    server: &MailroomServer,
    service: &MailService,
    max_connections: u32,
    owner: Option<&str>,
) -> String {
    let mut body = json!({
        "name": "corp", "kind": "imap-smtp",
        "incoming": {"host": "127.0.0.1", "port": service.imap.port, "security": "none"},
        "outgoing": {"host": "127.0.0.1", "port": service.smtp.port, "security": "starttls"},
        "is_default_for_new_mailboxes": true,
        "processing": {"max_connections": max_connections}
    });
    if let Some(owner) = owner {
        body["owner_user_id"] = json!(owner);
    }
    id_of(&ok(server, Method::POST, "/v1/server-profiles", Some(body)).await)
}

/// A user `user{i}` with contact email `user{i}@corp.test`; returns (user id, mailbox id, token).
async fn user(server: &MailroomServer, i: usize, sets: &[&str]) -> (String, String, String) {
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
    let mailbox = mailboxes
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user_id"] == json!(user_id))
        .expect("every new user gets a mailbox");
    (
        user_id,
        id_of(mailbox),
        token["token"].as_str().unwrap().to_owned(),
    )
}

async fn set_credentials(server: &MailroomServer, mailbox: &str, username: &str, password: &str) {
    ok(
        server,
        Method::PATCH,
        &format!("/v1/mailboxes/{mailbox}"),
        Some(json!({"username": username, "password": password})),
    )
    .await;
}

async fn wait_for_job(server: &MailroomServer, job: &Value, timeout: Duration) -> Value {
    let path = format!("/v1/jobs/{}", id_of(job));
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        last = ok(server, Method::GET, &path, None).await;
        if last["state"] == "done" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the job did not finish within {timeout:?}: {last}\n{}",
        server.log()
    );
}

async fn test_and_wait(server: &MailroomServer, mailbox: &str) -> Value {
    let job = ok(
        server,
        Method::POST,
        &format!("/v1/mailboxes/{mailbox}/test"),
        None,
    )
    .await;
    wait_for_job(server, &job, Duration::from_secs(30)).await;
    ok(
        server,
        Method::GET,
        &format!("/v1/mailboxes/{mailbox}"),
        None,
    )
    .await
}

#[tokio::test]
async fn the_right_password_enables_a_mailbox_and_a_wrong_one_disables_it_and_alerts_both_owners() {
    let service = mail_service(2).await;
    let server = start(&service).await;
    let (owner_id, _, owner_token) = user(&server, 90, &["email-setup"]).await;
    profile(&server, &service, 4, Some(&owner_id)).await;
    let (_, good, _) = user(&server, 0, &["email-send"]).await;
    let (_, bad, bad_token) = user(&server, 1, &["email-send"]).await;
    set_credentials(&server, &good, "user0@corp.test", "pw0").await;
    set_credentials(&server, &bad, "user1@corp.test", "wrong").await;
    for mailbox in [&good, &bad] {
        ok(
            &server,
            Method::POST,
            &format!("/v1/mailboxes/{mailbox}/approve"),
            None,
        )
        .await;
    }
    let enabled = test_and_wait(&server, &good).await;
    assert_eq!(enabled["enabled"], true, "{enabled}");
    assert_eq!(enabled["incoming_status"], "success");
    assert_eq!(enabled["outgoing_status"], "success");
    assert_eq!(enabled["outgoing_readiness"]["ready"], true);
    assert_eq!(enabled["credentials"]["has_password"], true);
    assert!(
        enabled.get("password").is_none() && !enabled.to_string().contains("pw0"),
        "never returned"
    );

    let disabled = test_and_wait(&server, &bad).await;
    assert_eq!(disabled["enabled"], false, "{disabled}");
    assert_eq!(disabled["incoming_status"], "failure");
    assert_eq!(disabled["outgoing_status"], "failure");
    assert_eq!(
        disabled["next_test_at"],
        Value::Null,
        "a rejected password is not retried"
    );
    let error = disabled["last_error"].as_str().unwrap();
    assert!(
        error.contains("AUTHENTICATIONFAILED") || error.contains("Authentication failed"),
        "{error}"
    );
    assert!(error.contains("535"), "the SMTP server's words: {error}");
    for token in [&bad_token, &owner_token] {
        let (status, alerts) = server
            .call_as(token, Method::GET, "/v1/alerts", None)
            .await
            .unwrap();
        assert_eq!(status, 200);
        let alerts = alerts.as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(
            alerts[0]["message"]
                .as_str()
                .unwrap()
                .contains("user1@corp.test")
        );
        let (status, _) = server
            .call_as(
                token,
                Method::POST,
                &format!("/v1/alerts/{}/dismiss", id_of(&alerts[0])),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 204);
    }
    // The password is never in the log either.
    assert!(!server.log().contains("pw0"));
}

#[tokio::test]
async fn an_unreachable_server_is_tried_ten_times_with_backoff_then_the_mailbox_is_disabled() {
    let service = mail_service(1).await;
    let server = start(&service).await;
    let closed = mailroom_testkit::free_port();
    ok(
        &server,
        Method::POST,
        "/v1/server-profiles",
        Some(
            json!({"name": "gone", "kind": "imap-smtp", "is_default_for_new_mailboxes": true,
            "incoming": {"host": "127.0.0.1", "port": closed, "security": "none"},
            "outgoing": {"host": "127.0.0.1", "port": closed, "security": "none"}}),
        ),
    )
    .await;
    let (_, mailbox, _) = user(&server, 0, &["email-send"]).await;
    set_credentials(&server, &mailbox, "user0@corp.test", "pw0").await;
    ok(
        &server,
        Method::POST,
        &format!("/v1/mailboxes/{mailbox}/approve"),
        None,
    )
    .await;
    let started = std::time::Instant::now();
    let first = test_and_wait(&server, &mailbox).await;
    // The first retry comes 20 ms later here, so by the time the job's end is seen a retry or two
    // may already have run: what matters is that the failure counts its tries and schedules the next.
    let tries = first["test_tries"].as_u64().unwrap_or(0);
    assert!((1..10).contains(&tries), "{first}");
    assert!(
        first["last_error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("(try {tries} of 10; trying again in"))),
        "{first}"
    );
    assert!(
        first["next_test_at"].is_string(),
        "a transient failure is tried again: {first}"
    );
    let path = format!("/v1/mailboxes/{mailbox}");
    wait_until(Duration::from_secs(40), "the tenth try", || async {
        Ok(server.get(&path).await?.1["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("gave up after 10 tries")))
    })
    .await
    .unwrap();
    // Nine waits doubling from 20 ms: 20 + 40 + … + 5120 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(10_220),
        "the tries back off: {:?}",
        started.elapsed()
    );
    let last = ok(&server, Method::GET, &path, None).await;
    assert_eq!(last["enabled"], false);
    assert_eq!(last["next_test_at"], Value::Null);
    let alerts = ok(&server, Method::GET, "/v1/alerts", None).await;
    assert_eq!(
        alerts.as_array().unwrap().len(),
        0,
        "the admin owns neither the mailbox nor the profile"
    );
    assert!(server.log().matches("mailbox_tested").count() >= 10);
}

#[tokio::test]
async fn who_may_approve_whom_and_who_may_grant_the_delegated_approver_role() {
    let service = mail_service(1).await;
    let server = start(&service).await;
    profile(&server, &service, 2, None).await;
    let (_, plain_box, plain) = user(&server, 0, &["email-send"]).await;
    let (_, _, approver) = user(&server, 1, &["mailbox-approve"]).await;
    let (delegate_id, _, delegate) = user(&server, 2, &["mailbox-approve"]).await;
    let (_, _, user_admin) = user(&server, 3, &["user-admin"]).await;
    let approve = format!("/v1/mailboxes/{plain_box}/approve");
    let code = |value: &Value| value["code"].as_str().unwrap_or_default().to_owned();

    // Without mailbox-approve: refused; with it but neither admin nor delegated: refused.
    let (status, body) = server
        .call_as(&approver, Method::POST, &approve, None)
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (403, "mailbox_approver_role_missing".into()),
        "{body}"
    );
    let (_, _, nobody) = user(&server, 4, &["email-send"]).await;
    let (status, body) = server
        .call_as(&nobody, Method::POST, &approve, None)
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (403, "mailbox_approve_permission_missing".into())
    );

    // Only an email admin grants the delegated role, and never to a team.
    let grant = json!({"permission_sets": ["mailbox-approve", "delegated-mailbox-approver"]});
    let (status, body) = server
        .call_as(
            &user_admin,
            Method::PATCH,
            &format!("/v1/users/{delegate_id}"),
            Some(&grant),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (403, "delegated_approver_grant_denied".into()),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "Only an email administrator can assign the delegated mailbox approver role"
    );
    let (status, body) = server
        .post(
            "/v1/teams",
            &json!({"name": "approvers", "permission_sets": ["delegated-mailbox-approver"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (422, "delegated_approver_not_for_teams".into()),
        "{body}"
    );
    assert_eq!(
        body["message"],
        "The delegated mailbox approver role cannot be assigned to a team"
    );
    let (status, body) = server
        .call_as(
            &user_admin,
            Method::PATCH,
            &format!("/v1/users/{delegate_id}"),
            Some(&json!({"permission_sets": ["email-admin"]})),
        )
        .await
        .unwrap();
    assert_eq!((status, code(&body)), (403, "admin_grant_denied".into()));
    ok(
        &server,
        Method::PATCH,
        &format!("/v1/users/{delegate_id}"),
        Some(grant),
    )
    .await;
    let (status, body) = server
        .call_as(&delegate, Method::POST, &approve, None)
        .await
        .unwrap();
    assert_eq!(
        (status, body["approval"].clone()),
        (200, json!("approved")),
        "{body}"
    );

    // mailbox-approve through a team counts too.
    let approver_id = ok(&server, Method::GET, "/v1/users", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "user1")
        .map(id_of)
        .unwrap();
    ok(
        &server,
        Method::PATCH,
        &format!("/v1/users/{approver_id}"),
        Some(json!({"permission_sets": ["email-send"]})),
    )
    .await;
    ok(&server, Method::POST, "/v1/teams", Some(json!({"name": "approvers", "members": [approver_id], "permission_sets": ["mailbox-approve"]}))).await;
    let (status, body) = server
        .call_as(&approver, Method::POST, &approve, None)
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (403, "mailbox_approver_role_missing".into()),
        "the team gave the permission, not the role"
    );

    // Self-approval: allowed by default, refused once the organisation requires the permission.
    let own_id = {
        let mine = server
            .call_as(&nobody, Method::GET, "/v1/mailboxes", None)
            .await
            .unwrap()
            .1;
        assert_eq!(
            mine.as_array().unwrap().len(),
            1,
            "a user lists only their own mailbox"
        );
        id_of(&mine[0])
    };
    let own = format!("/v1/mailboxes/{own_id}/approve");
    ok(
        &server,
        Method::PUT,
        "/v1/settings/email",
        Some(json!({"require_privilege_to_self_approve": true})),
    )
    .await;
    let (status, body) = server
        .call_as(&nobody, Method::POST, &own, None)
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (403, "self_approval_needs_permission".into())
    );
    ok(
        &server,
        Method::PUT,
        "/v1/settings/email",
        Some(json!({"require_privilege_to_self_approve": false})),
    )
    .await;
    let (status, body) = server
        .call_as(&nobody, Method::POST, &own, None)
        .await
        .unwrap();
    assert_eq!((status, body["approval"].clone()), (200, json!("approved")));
    // …but not another user's mailbox, which they may not even read.
    let (status, body) = server
        .call_as(
            &plain,
            Method::GET,
            &format!("/v1/mailboxes/{own_id}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!((status, code(&body)), (403, "mailbox_not_yours".into()));
}

#[tokio::test]
async fn an_unapproved_mailbox_is_never_connected_to_and_a_users_own_test_approves_it() {
    let service = mail_service(1).await;
    let server = start(&service).await;
    let own_account = ok(&server, Method::POST, "/v1/accounts", Some(json!({"connector": "current-user", "name": "own", "email_address": "noreply@corp.test"}))).await;
    profile(&server, &service, 2, None).await;
    let (_, mailbox, token) = user(&server, 0, &["email-send"]).await;
    set_credentials(&server, &mailbox, "user0@corp.test", "pw0").await;
    let send = json!({"to": ["someone@example.com"], "subject": "from my own mailbox", "text": "hi", "account_id": own_account["id"]});
    let (status, body) = server
        .call_as(&token, Method::POST, "/v1/messages", Some(&send))
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("mailbox_not_approved")),
        "{body}"
    );
    // An administrator's test does not approve someone else's address: nothing is connected to.
    let tested = test_and_wait(&server, &mailbox).await;
    assert_eq!(tested["enabled"], false);
    assert_eq!(tested["incoming_readiness"]["code"], "mailbox_not_approved");
    assert!(
        tested["last_error"]
            .as_str()
            .unwrap()
            .contains("not approved")
    );
    assert_eq!(
        (service.imap.total(), service.smtp.total()),
        (0, 0),
        "never touched"
    );
    // The user's own test approves their own address on the way, and enables the mailbox.
    let (_, job) = server
        .call_as(
            &token,
            Method::POST,
            &format!("/v1/mailboxes/{mailbox}/test"),
            None,
        )
        .await
        .unwrap();
    wait_for_job(&server, &job, Duration::from_secs(30)).await;
    let (_, mine) = server
        .call_as(
            &token,
            Method::GET,
            &format!("/v1/mailboxes/{mailbox}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (mine["approval"].clone(), mine["enabled"].clone()),
        (json!("approved"), json!(true)),
        "{mine}"
    );
    // Now mail goes out through the user's own mailbox, as the user.
    let (status, accepted) = server
        .call_as(&token, Method::POST, "/v1/messages", Some(&send))
        .await
        .unwrap();
    assert_eq!(status, 202, "{accepted}");
    server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(30))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "Postfix relays it to the sink",
        || async { Ok(!service.sink.messages()?.is_empty()) },
    )
    .await
    .unwrap();
    let delivered = &service.sink.messages().unwrap()[0];
    assert_eq!(delivered.mail_from, "user0@corp.test");
    assert!(String::from_utf8_lossy(&delivered.raw).contains("From: user0 <user0@corp.test>"));
    // Turned off again: refused with the missing step, and queued mail fails without connecting.
    ok(
        &server,
        Method::PATCH,
        "/v1/mailboxes",
        Some(json!({"ids": [mailbox], "set": {"outgoing": "none"}})),
    )
    .await;
    let (status, body) = server
        .call_as(&token, Method::POST, "/v1/messages", Some(&send))
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("mailbox_direction_off"))
    );
}

#[tokio::test]
async fn bulk_edits_and_apply_defaults_change_many_mailboxes_at_once() {
    let service = mail_service(3).await;
    let server = start(&service).await;
    let mut boxes = Vec::new();
    for i in 0..3 {
        boxes.push(user(&server, i, &["email-send"]).await.1);
    }
    let (status, body) = server
        .call(Method::PATCH, "/v1/mailboxes", Some(&json!({"ids": [boxes[0], "00000000-0000-0000-0000-000000000000"], "set": {"incoming": "none"}})), &[])
        .await
        .unwrap();
    assert_eq!(status, 404, "{body}");
    let untouched = ok(
        &server,
        Method::GET,
        &format!("/v1/mailboxes/{}", boxes[0]),
        None,
    )
    .await;
    assert_eq!(untouched["incoming"], "server-side-sync", "all or none");
    let changed = ok(
        &server,
        Method::PATCH,
        "/v1/mailboxes",
        Some(json!({"ids": boxes, "set": {"incoming": "none", "filter": "all"}})),
    )
    .await;
    assert!(
        changed
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["incoming"] == "none" && m["filter"] == "all")
    );
    // Apply defaults: the (new) default profile and the organisation's delivery methods, then a test.
    let profile_id = profile(&server, &service, 3, None).await;
    // Credentials are given for a profile's servers: first the profile, then the passwords.
    ok(
        &server,
        Method::PATCH,
        "/v1/mailboxes",
        Some(json!({"ids": boxes, "set": {"profile_id": profile_id}})),
    )
    .await;
    ok(
        &server,
        Method::PUT,
        "/v1/settings/email",
        Some(json!({"process_only_approved_users": false})),
    )
    .await;
    for (i, mailbox) in boxes.iter().enumerate() {
        set_credentials(
            &server,
            mailbox,
            &format!("user{i}@corp.test"),
            &format!("pw{i}"),
        )
        .await;
    }
    let job = ok(
        &server,
        Method::POST,
        "/v1/mailboxes/apply-defaults",
        Some(json!({"ids": boxes})),
    )
    .await;
    let done = wait_for_job(&server, &job, Duration::from_secs(30)).await;
    let states = ok(&server, Method::GET, "/v1/mailboxes", None).await;
    assert_eq!(
        (done["total"].clone(), done["succeeded"].clone()),
        (json!(3), json!(3)),
        "{done} {states}"
    );
    for mailbox in &boxes {
        let m = ok(
            &server,
            Method::GET,
            &format!("/v1/mailboxes/{mailbox}"),
            None,
        )
        .await;
        assert_eq!(
            (
                m["profile_id"].clone(),
                m["incoming"].clone(),
                m["enabled"].clone()
            ),
            (json!(profile_id), json!("server-side-sync"), json!(true))
        );
    }
    // Deleting the profile in use is refused, naming the mailboxes.
    let (status, body) = server
        .call(
            Method::DELETE,
            &format!("/v1/server-profiles/{profile_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].clone()),
        (409, json!("profile_in_use"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("user0@corp.test")
    );
}

/// Creates `count` users with mailboxes and credentials, unapproved processing allowed.
async fn many_mailboxes(server: &MailroomServer, count: usize) -> Vec<String> {
    ok(
        server,
        Method::PUT,
        "/v1/settings/email",
        Some(json!({"process_only_approved_users": false})),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..count {
        let user = ok(
            server,
            Method::POST,
            "/v1/users",
            Some(json!({"name": format!("user{i}"), "contact_email": format!("user{i}@corp.test"), "licence": "full"})),
        )
        .await;
        ids.push(id_of(&user));
    }
    let by_user: HashMap<String, String> = ok(server, Method::GET, "/v1/mailboxes", None)
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap_or_default().to_owned(),
                id_of(m),
            )
        })
        .collect();
    let mut boxes = Vec::new();
    for (i, user) in ids.iter().enumerate() {
        let mailbox = by_user[user].clone();
        set_credentials(
            server,
            &mailbox,
            &format!("user{i}@corp.test"),
            &format!("pw{i}"),
        )
        .await;
        boxes.push(mailbox);
    }
    // Nothing is synchronized (filter `none`), so that the proxies count the tests' connections
    // only: sync shares the profile's cap, and would open connections of its own once enabled.
    for chunk in boxes.chunks(100) {
        ok(
            server,
            Method::PATCH,
            "/v1/mailboxes",
            Some(json!({"ids": chunk, "set": {"filter": "none"}})),
        )
        .await;
    }
    boxes
}

#[tokio::test]
async fn testing_500_mailboxes_of_a_profile_keeps_its_connection_cap_shows_progress_and_takes_under_a_minute()
 {
    let service = mail_service(500).await;
    let server = start(&service).await;
    let profile_id = profile(&server, &service, 5, None).await;
    many_mailboxes(&server, 500).await;
    let started = std::time::Instant::now();
    let job = ok(
        &server,
        Method::POST,
        &format!("/v1/server-profiles/{profile_id}/test-mailboxes"),
        None,
    )
    .await;
    assert_eq!(job["total"], 500);
    // The CLI waits with a progress bar.
    let cli = tokio::process::Command::new(common::binary())
        .args([
            "--server",
            &server.base_url,
            "--token",
            &server.token,
            "job",
            "show",
            &id_of(&job),
            "--wait",
        ])
        .output();
    let mut seen_progress = Vec::new();
    let path = format!("/v1/jobs/{}", id_of(&job));
    let watcher = async {
        loop {
            let now = ok(&server, Method::GET, &path, None).await;
            seen_progress.push(now["done"].as_u64().unwrap());
            if now["state"] == "done" {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (output, done) = tokio::join!(cli, watcher);
    let elapsed = started.elapsed();
    let output = output.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("500/500"),
        "the progress bar ends at 500/500"
    );
    assert_eq!(
        (done["succeeded"].clone(), done["failed"].clone()),
        (json!(500), json!(0)),
        "{done}"
    );
    assert!(
        seen_progress.iter().any(|d| *d > 0 && *d < 500),
        "progress was visible: {seen_progress:?}"
    );
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    for proxy in [&service.imap, &service.smtp] {
        assert_eq!(
            proxy.total(),
            500,
            "one connection per mailbox and direction"
        );
        assert!(
            proxy.most_at_once() <= 5,
            "at most max_connections at once, saw {}",
            proxy.most_at_once()
        );
    }
    assert!(
        service.imap.most_at_once() + service.smtp.most_at_once() >= 3,
        "tests ran side by side"
    );
    eprintln!("500 mailboxes tested in {elapsed:?}");
}

#[tokio::test]
async fn a_job_killed_halfway_resumes_after_a_restart_and_counts_each_mailbox_once() {
    let service = mail_service(120).await;
    let mut server = start(&service).await;
    let profile_id = profile(&server, &service, 1, None).await;
    many_mailboxes(&server, 120).await;
    let job = ok(
        &server,
        Method::POST,
        &format!("/v1/server-profiles/{profile_id}/test-mailboxes"),
        None,
    )
    .await;
    let path = format!("/v1/jobs/{}", id_of(&job));
    wait_until(
        Duration::from_secs(30),
        "a part of the job is done",
        || async { Ok(server.get(&path).await?.1["done"].as_u64().unwrap_or(0) >= 10) },
    )
    .await
    .unwrap();
    server.kill();
    let halfway = service.imap.total();
    assert!(halfway < 120, "killed before the end ({halfway} tested)");
    server.restart().await.unwrap();
    let done = wait_for_job(&server, &job, Duration::from_secs(60)).await;
    assert_eq!(
        (
            done["done"].clone(),
            done["succeeded"].clone(),
            done["failed"].clone()
        ),
        (json!(120), json!(120), json!(0)),
        "{done}"
    );
    let mailboxes = ok(
        &server,
        Method::GET,
        &format!("/v1/mailboxes?profile_id={profile_id}"),
        None,
    )
    .await;
    assert!(
        mailboxes
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["enabled"] == true)
    );
    // Mailboxes finished before the kill are not tested again (at most the ones in flight are).
    assert!(
        service.imap.total() <= 120 + 2,
        "tested {} times",
        service.imap.total()
    );
}
