//! The browser console over HTTP (the browser-driven tests come with the pages): sign-in with a
//! token gives an HttpOnly, SameSite=Strict session; forms without the session's CSRF token and
//! posts from another site are refused; a page shows only what the user's permissions let the API
//! show; sign-out revokes the session.

mod common;

use common::{id_of, ok, run_browser_script, start_server};
use reqwest::{Method, StatusCode, redirect::Policy};
use serde_json::json;

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A form post as a browser sends it (`application/x-www-form-urlencoded`).
fn form(request: reqwest::RequestBuilder, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", common::urlencode(k), common::urlencode(v)))
        .collect();
    request
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
}

/// Signs in with `token`; returns the session cookie (`name=value`).
async fn sign_in(base: &str, token: &str) -> String {
    let answer = form(
        browser().post(format!("{base}/console/sign-in")),
        &[("token", token)],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(answer.headers()["location"], "/console");
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

async fn page(base: &str, path: &str, cookie: Option<&str>) -> (StatusCode, String, String) {
    let mut request = browser().get(format!("{base}{path}"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status();
    let location = answer
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, location, answer.text().await.unwrap())
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 32].to_owned()
}

#[tokio::test]
async fn a_token_signs_in_to_a_session_that_csrf_protects_and_sign_out_revokes() {
    let server = start_server().await;
    let base = server.base_url.clone();
    // Not signed in: the sign-in page, whose static files are served by the binary.
    let (status, location, _) = page(&base, "/console", None).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/console/sign-in")
    );
    let (status, _, html) = page(&base, "/console/sign-in", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<label for=\"token\">"), "{html}");
    let (status, _, script) = page(&base, "/console/static/htmx-2.0.11.min.js", None).await;
    assert!(status == StatusCode::OK && script.starts_with("var htmx="));

    // A wrong token is refused in plain words.
    let refused = form(
        browser().post(format!("{base}/console/sign-in")),
        &[("token", "mr_not-a-token")],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("That token is not valid")
    );
    // A sign-in posted from another site's page is refused.
    let cross_site = form(
        browser()
            .post(format!("{base}/console/sign-in"))
            .header("origin", "http://evil.example"),
        &[("token", server.token.as_str())],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);

    let cookie = sign_in(&base, &server.token).await;
    let (status, _, html) = page(&base, "/console", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<h1>Dashboard</h1>") && html.contains("Failed"),
        "{html}"
    );
    let csrf = csrf_of(&html);

    // Sign-out without the form's CSRF token (what another site's form would send) is refused.
    let forged = form(
        browser()
            .post(format!("{base}/console/sign-out"))
            .header("cookie", &cookie),
        &[("csrf", &"0".repeat(32))],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let (status, _, _) = page(&base, "/console", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "still signed in");

    let signed_out = form(
        browser()
            .post(format!("{base}/console/sign-out"))
            .header("cookie", &cookie),
        &[("csrf", csrf.as_str())],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER);
    assert!(
        signed_out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie no longer works: its token was revoked.
    let (status, location, _) = page(&base, "/console", Some(&cookie)).await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/console/sign-in")
    );
}

#[tokio::test]
async fn a_page_shows_only_what_the_users_permissions_let_the_api_show() {
    let server = start_server().await;
    let base = server.base_url.clone();
    server
        .send(&json!({"to": ["customer@example.com"], "subject": "Invoice 103001", "text": "attached"}))
        .await
        .unwrap();
    // A user with no permission set: signed in, but shown none of the mail.
    let user = ok(
        &server,
        Method::POST,
        "/v1/users",
        Some(json!({"name": "reader", "licence": "full", "permission_sets": []})),
    )
    .await;
    let token = ok(
        &server,
        Method::POST,
        &format!("/v1/users/{}/tokens", id_of(&user)),
        Some(json!({"name": "t"})),
    )
    .await;
    let cookie = sign_in(&base, token["token"].as_str().unwrap()).await;
    let (status, _, html) = page(&base, "/console", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Your permissions do not include this."),
        "{html}"
    );
    assert!(!html.contains("Invoice 103001"), "{html}");

    for path in [
        "/console/outbox",
        "/console/users",
        "/console/audit",
        "/console/templates",
    ] {
        let (_, _, html) = page(&base, path, Some(&cookie)).await;
        assert!(
            html.contains("Your permissions do not include"),
            "{path}: {html}"
        );
    }

    // The administrator sees the message, the users and who created the reader.
    let admin = sign_in(&base, &server.token).await;
    let (_, _, html) = page(&base, "/console", Some(&admin)).await;
    assert!(html.contains("Invoice 103001"), "{html}");
    let (_, _, html) = page(&base, "/console/users", Some(&admin)).await;
    assert!(html.contains(">reader</a></td>"), "{html}");
    let (_, _, html) = page(&base, "/console/audit", Some(&admin)).await;
    assert!(html.contains("user.created"), "{html}");
}

#[tokio::test]
async fn an_operator_finds_a_failed_message_reads_the_servers_reply_and_retries_it() {
    let sink = mailroom_testkit::SmtpSink::start(&["-f", "RCPT"]).unwrap();
    let server = start_server().await;
    let base = server.base_url.clone();
    server
        .add_default_smtp_account("reject", sink.port, json!({}))
        .await
        .unwrap();
    let id = id_of(
        &server
            .send(&json!({"to": ["nobody@example.com"], "subject": "Invoice 104", "text": "t"}))
            .await
            .unwrap(),
    );
    let failed = server
        .wait_for_status(&id, "failed", std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let reply_text = failed["attempts"][0]["reply_text"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = sign_in(&base, &server.token).await;

    // The outbox filtered to failed mail lists it, with the server's words.
    let (status, _, html) = page(&base, "/console/outbox?status=failed", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{}", server.log());
    assert!(
        html.contains("Invoice 104") && html.contains(&format!("/console/messages/{id}")),
        "{html}"
    );
    let (_, _, html) = page(&base, "/console/outbox?status=queued", Some(&cookie)).await;
    assert!(!html.contains("Invoice 104"), "the filter applies");

    // The message page: every attempt with the reply, and a retry button.
    let (status, _, html) = page(&base, &format!("/console/messages/{id}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Attempt 1")
            && html.contains(&reply_text.replace('<', "&lt;").replace('>', "&gt;")),
        "{html}"
    );
    assert!(
        html.contains(&format!("action=\"/console/messages/{id}/retry\"")),
        "{html}"
    );
    let csrf = csrf_of(&html);

    // A retry without the CSRF token is refused; with it, the message is queued again and tried.
    let forged = form(
        browser()
            .post(format!("{base}/console/messages/{id}/retry"))
            .header("cookie", &cookie),
        &[("csrf", "x")],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let retried = form(
        browser()
            .post(format!("{base}/console/messages/{id}/retry"))
            .header("cookie", &cookie),
        &[("csrf", csrf.as_str())],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    let location = retried.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("queued%20again"), "{location}");
    mailroom_testkit::wait_until(
        std::time::Duration::from_secs(20),
        "a second attempt",
        || async {
            let view = server.message(&id).await?;
            Ok(view["attempts"].as_array().map_or(0, Vec::len) >= 2)
        },
    )
    .await
    .unwrap();
    let (_, _, html) = page(&base, &location, Some(&cookie)).await;
    assert!(html.contains("The message was queued again."), "{html}");
    assert!(html.contains("Attempt 2"), "{html}");

    // Bulk cancel from the list: the count of what was done comes back.
    let bulk = form(
        browser()
            .post(format!("{base}/console/messages/bulk"))
            .header("cookie", &cookie),
        &[
            ("csrf", csrf.as_str()),
            ("action", "cancel"),
            ("from", "outbox"),
            ("id", id.as_str()),
        ],
    )
    .send()
    .await
    .unwrap();
    assert_eq!(bulk.status(), StatusCode::SEE_OTHER);
    let location = bulk.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("/console/outbox?notice=1%20of%201%20cancelled"),
        "{location}"
    );
    assert_eq!(server.message(&id).await.unwrap()["status"], "cancelled");
}

#[tokio::test]
async fn in_a_real_browser_the_console_signs_in_retries_a_failed_message_and_edits_a_template_accessibly()
 {
    let sink = mailroom_testkit::SmtpSink::start(&["-f", "RCPT"]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("reject", sink.port, json!({}))
        .await
        .unwrap();
    let id = id_of(
        &server
            .send(&json!({"to": ["nobody@example.com"], "subject": "Invoice 105", "text": "t"}))
            .await
            .unwrap(),
    );
    server
        .wait_for_status(&id, "failed", std::time::Duration::from_secs(20))
        .await
        .unwrap();
    // Screenshots of every page, at both widths, for people to look at.
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let report = run_browser_script(
        "console.mjs",
        &[
            "--base",
            &server.base_url,
            "--token",
            &server.token,
            "--message",
            &id,
        ],
    )
    .await;
    for name in [
        "sign-in",
        "dashboard",
        "outbox",
        "sent",
        "message",
        "templates",
        "template",
    ] {
        assert!(
            report["accessibility"][name].is_array(),
            "{name} was audited"
        );
        assert!(out.join(format!("{name}-390.png")).exists());
    }
    // The retry made in the browser reached the store.
    mailroom_testkit::wait_until(
        std::time::Duration::from_secs(20),
        "a second attempt",
        || async {
            let view = server.message(&id).await?;
            Ok(view["attempts"].as_array().map_or(0, Vec::len) >= 2)
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_template_edit_is_previewed_before_it_is_saved_and_an_error_is_shown_at_its_line() {
    let server = start_server().await;
    let base = server.base_url.clone();
    let cookie = sign_in(&base, &server.token).await;
    let templates = ok(&server, Method::GET, "/v1/templates", None).await;
    let id = templates[0]["id"].as_str().unwrap().to_owned();
    let (status, _, html) = page(&base, &format!("/console/templates/{id}"), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&html);
    let template = ok(&server, Method::GET, &format!("/v1/templates/{id}"), None).await;
    let versions_before = template["version"].as_i64().unwrap();
    let broken = format!("{}\n{{% if %}}", template["html"].as_str().unwrap());
    let post = |path: String, fields: Vec<(&'static str, String)>| {
        let (cookie, base) = (cookie.clone(), base.clone());
        async move {
            let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let answer = form(
                browser()
                    .post(format!("{base}{path}"))
                    .header("cookie", cookie),
                &fields,
            )
            .send()
            .await
            .unwrap();
            (answer.status(), answer.text().await.unwrap())
        }
    };
    let fields = |html: &str| {
        vec![
            ("csrf", csrf.clone()),
            (
                "document_type",
                template["document_type"].as_str().unwrap().to_owned(),
            ),
            ("subject", "Edited {{ document.number }}".to_owned()),
            ("html", html.to_owned()),
        ]
    };
    // The preview of a broken edit names the line; nothing is stored.
    let (status, fragment) =
        post(format!("/console/templates/{id}/preview"), fields(&broken)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        fragment.contains("template-error") && fragment.contains("line"),
        "{fragment}"
    );
    // The preview of a good edit renders it with sample data.
    let (_, fragment) = post(
        format!("/console/templates/{id}/preview"),
        fields(template["html"].as_str().unwrap()),
    )
    .await;
    assert!(fragment.contains("Subject:</strong> Edited "), "{fragment}");
    // Saving the broken edit is refused and keeps it on the page; the good one becomes a version.
    let (status, page_html) = post(format!("/console/templates/{id}"), fields(&broken)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page_html.contains("{% if %}"), "the edit is kept");
    let after = ok(&server, Method::GET, &format!("/v1/templates/{id}"), None).await;
    assert_eq!(
        after["version"].as_i64().unwrap(),
        versions_before,
        "nothing saved"
    );
    let saved = form(
        browser()
            .post(format!("{}/console/templates/{id}", server.base_url))
            .header("cookie", &cookie),
        &fields(template["html"].as_str().unwrap())
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let after = ok(&server, Method::GET, &format!("/v1/templates/{id}"), None).await;
    assert_eq!(after["version"].as_i64().unwrap(), versions_before + 1);
    assert_eq!(after["subject"], "Edited {{ document.number }}");
}

#[tokio::test]
async fn in_a_real_browser_an_admin_approves_a_mailbox_and_watches_its_test_reach_100_percent() {
    use mailroom_testkit::{MailroomServer, PostfixWithSasl, SmtpSink};
    let sink = SmtpSink::start(&[]).unwrap();
    let postfix =
        PostfixWithSasl::start_with_users(&[("user0@corp.test".into(), "pw0".into())], sink.port)
            .unwrap();
    let server = MailroomServer::start(
        common::binary(),
        &format!(
            "extra_root_certificates = [{:?}]\n{}mailbox_test_retry_ms = 20\nmailbox_test_timeout_ms = 10000\n",
            postfix.ca_certificate().display().to_string(),
            common::FAST_ENGINE
        ),
    )
    .await
    .unwrap();
    ok(
        &server,
        Method::POST,
        "/v1/server-profiles",
        Some(json!({"name": "corp", "kind": "imap-smtp",
            "incoming": {"host": "127.0.0.1", "port": postfix.imap_port.unwrap(), "security": "none"},
            "outgoing": {"host": "127.0.0.1", "port": postfix.port, "security": "starttls"},
            "is_default_for_new_mailboxes": true})),
    )
    .await;
    let user = ok(
        &server,
        Method::POST,
        "/v1/users",
        Some(json!({"name": "user0", "contact_email": "user0@corp.test", "licence": "full", "permission_sets": ["email-send"]})),
    )
    .await;
    let mailboxes = ok(&server, Method::GET, "/v1/mailboxes", None).await;
    let mailbox = id_of(
        mailboxes
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == user["id"])
            .unwrap(),
    );
    ok(
        &server,
        Method::PATCH,
        &format!("/v1/mailboxes/{mailbox}"),
        Some(json!({"username": "user0@corp.test", "password": "pw0"})),
    )
    .await;
    let cookie = sign_in(&server.base_url, &server.token).await;
    let (status, _, html) = page(&server.base_url, "/console/mailboxes", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{html}\n{}", server.log());
    assert!(html.contains("user0@corp.test"), "{html}");
    run_browser_script(
        "mailbox.mjs",
        &[
            "--base",
            &server.base_url,
            "--token",
            &server.token,
            "--address",
            "user0@corp.test",
        ],
    )
    .await;
    let tested = ok(
        &server,
        Method::GET,
        &format!("/v1/mailboxes/{mailbox}"),
        None,
    )
    .await;
    assert_eq!(
        (tested["approval"].as_str(), tested["enabled"].as_bool()),
        (Some("approved"), Some(true)),
        "{tested}"
    );
}

#[tokio::test]
async fn in_a_real_browser_the_setup_wizard_shows_a_refusal_in_the_servers_words_then_sets_up_and_sends()
 {
    let refusing = mailroom_testkit::SmtpSink::start(&["-f", "EHLO,HELO"]).unwrap();
    let working = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    run_browser_script(
        "account.mjs",
        &[
            "--base",
            &server.base_url,
            "--token",
            &server.token,
            "--bad-port",
            &refusing.port.to_string(),
            "--good-port",
            &working.port.to_string(),
        ],
    )
    .await;
    let accounts = ok(&server, Method::GET, "/v1/accounts", None).await;
    let billing = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "billing")
        .expect("the account was created");
    assert_eq!(billing["is_default"], true, "{billing}");
    assert_eq!(billing["rate_limit_per_minute"], 30, "{billing}");
    mailroom_testkit::wait_until(
        std::time::Duration::from_secs(20),
        "the test message",
        || async { Ok(!working.messages()?.is_empty()) },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn the_dashboard_charts_the_days_outcomes_and_the_lists_find_mail_by_recipient_and_subject() {
    let refusing = mailroom_testkit::SmtpSink::start(&["-f", "RCPT"]).unwrap();
    let working = mailroom_testkit::SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    let base = server.base_url.clone();
    server
        .add_default_smtp_account("works", working.port, json!({}))
        .await
        .unwrap();
    let refused_account = id_of(
        &ok(
            &server,
            Method::POST,
            "/v1/accounts",
            Some(json!({"name": "refused", "connector": "smtp", "email_address": "billing@example.com",
                        "host": "127.0.0.1", "port": refusing.port, "security": "none"})),
        )
        .await,
    );
    let mut sent = Vec::new();
    for (to, subject) in [
        ("ann@customer.example", "Invoice 2001"),
        ("bob@customer.example", "Invoice 2002"),
        ("Ann@Customer.example", "Reminder 2001"),
    ] {
        sent.push(id_of(
            &server
                .send(&json!({"to": [to], "subject": subject, "text": "t"}))
                .await
                .unwrap(),
        ));
    }
    let failed = id_of(
        &server
            .send(&json!({"to": ["carol@customer.example"], "subject": "Invoice 2003", "text": "t", "account_id": refused_account}))
            .await
            .unwrap(),
    );
    for id in &sent {
        server
            .wait_for_status(id, "sent", std::time::Duration::from_secs(20))
            .await
            .unwrap();
    }
    server
        .wait_for_status(&failed, "failed", std::time::Duration::from_secs(20))
        .await
        .unwrap();

    // The API's figures.
    let stats = ok(&server, Method::GET, "/v1/stats?hours=24", None).await;
    let hours = stats["per_hour"].as_array().unwrap();
    assert_eq!(hours.len(), 24);
    let sum = |field: &str| {
        hours
            .iter()
            .map(|h| h[field].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!((sum("sent"), sum("failed")), (3, 1), "{stats}");
    assert_eq!(stats["outbox"]["failed"], 1);
    assert_eq!(stats["failures_by_account"][0]["account_name"], "refused");
    let (status, _) = (
        reqwest::Client::new()
            .get(format!("{base}/v1/stats?hours=0"))
            .bearer_auth(&server.token)
            .send()
            .await
            .unwrap()
            .status(),
        (),
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The dashboard draws them.
    let cookie = sign_in(&base, &server.token).await;
    let (_, _, html) = page(&base, "/console", Some(&cookie)).await;
    assert!(html.contains("<svg class=\"chart\""), "{html}");
    assert!(html.contains("3 sent, 0 deferred, 1 failed"), "{html}");
    assert!(
        html.contains(&format!(
            "account_id={refused_account}\">refused</a></td><td>1</td>"
        )),
        "{html}"
    );

    // The sent archive by recipient (any case) and by subject, in the API and the console.
    let ann = ok(
        &server,
        Method::GET,
        "/v1/sent?recipient=ANN@customer.example",
        None,
    )
    .await;
    let subjects: Vec<&str> = ann["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["Reminder 2001", "Invoice 2001"]);
    let invoices = ok(&server, Method::GET, "/v1/sent?subject=invoice", None).await;
    assert_eq!(invoices["items"].as_array().unwrap().len(), 2);
    let (_, _, html) = page(
        &base,
        "/console/sent?recipient=bob%40customer.example&subject=2002",
        Some(&cookie),
    )
    .await;
    assert!(
        html.contains("Invoice 2002") && !html.contains("Invoice 2001"),
        "{html}"
    );
    assert!(
        html.contains("value=\"bob@customer.example\""),
        "the filter stays filled in"
    );
    let refused = reqwest::Client::new()
        .get(format!("{base}/v1/sent?recipient=not-an-address"))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["field"], "recipient");
}

#[tokio::test]
async fn in_a_real_browser_an_admin_sets_up_scenarios_profiles_settings_users_teams_and_contacts() {
    let sink = mailroom_testkit::SmtpSink::start(&["-f", "RCPT"]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("reject", sink.port, json!({}))
        .await
        .unwrap();
    let id = id_of(
        &server
            .send(
                &json!({"to": ["nobody@example.com"], "subject": "Invoice 106", "text": "t",
                          "related_records": [{"type": "sales-invoice", "id": "106"}]}),
            )
            .await
            .unwrap(),
    );
    server
        .wait_for_status(&id, "failed", std::time::Duration::from_secs(20))
        .await
        .unwrap();
    run_browser_script(
        "setup.mjs",
        &[
            "--base",
            &server.base_url,
            "--token",
            &server.token,
            "--message",
            &id,
        ],
    )
    .await;

    // What the browser did is what the API holds.
    let files = ok(
        &server,
        Method::GET,
        "/v1/scenarios/delivery-note/attachments",
        None,
    )
    .await;
    assert_eq!(
        (files[0]["filename"].as_str(), files[0]["mode"].as_str()),
        (Some("terms.pdf"), Some("optional")),
        "{files}"
    );
    let scenarios = ok(&server, Method::GET, "/v1/scenarios", None).await;
    let note = scenarios
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "delivery-note")
        .unwrap();
    assert_eq!(note["unsubscribe"], true, "{note}");
    let keys = ok(&server, Method::GET, "/v1/dkim/keys", None).await;
    assert_eq!(
        (
            keys["items"][0]["domain"].as_str(),
            keys["items"][0]["selector"].as_str(),
            keys["items"][0]["algorithm"].as_str()
        ),
        (Some("cronus.example"), Some("s1"), Some("ed25519-sha256")),
        "{keys}"
    );
    let profiles = ok(&server, Method::GET, "/v1/sending-profiles", None).await;
    assert!(
        profiles
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "paper-free" && p["email"] == "without-asking")
    );
    let servers = ok(&server, Method::GET, "/v1/server-profiles", None).await;
    assert_eq!(
        servers.as_array().unwrap().len(),
        1,
        "the refused profile was not added: {servers}"
    );
    assert_eq!(servers[0]["incoming"]["port"], 1143);
    let correlation = ok(&server, Method::GET, "/v1/settings/correlation", None).await;
    assert_eq!(
        (
            correlation["subject_token_prefix"].as_str(),
            correlation["smart_match_days"].as_u64()
        ),
        (Some("INV"), Some(7))
    );
    let email = ok(&server, Method::GET, "/v1/settings/email", None).await;
    assert_eq!(email["process_only_approved_queues"], false);
    let users = ok(&server, Method::GET, "/v1/users", None).await;
    let clerk = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "clerk")
        .unwrap();
    assert_eq!(
        clerk["permission_sets"],
        json!(["email-send", "read customer"])
    );
    let clerk_id = clerk["id"].as_str().unwrap();
    let tokens = ok(
        &server,
        Method::GET,
        &format!("/v1/users/{clerk_id}/tokens"),
        None,
    )
    .await;
    assert!(tokens[0]["revoked_at"].is_string(), "{tokens}");
    let policies = ok(&server, Method::GET, "/v1/view-policies", None).await;
    assert!(
        policies
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == clerk["id"] && p["policy"] == "any-related-record")
    );
    let teams = ok(&server, Method::GET, "/v1/teams", None).await;
    assert_eq!(teams[0]["members"], json!([clerk_id]));
    let contact = ok(&server, Method::GET, "/v1/contacts/ann", None).await;
    assert_eq!(
        contact["related_records"],
        json!([{"type": "customer", "id": "C-1"}])
    );
    let outbox = ok(
        &server,
        Method::GET,
        "/v1/outbox?subject=Invoice%20106",
        None,
    )
    .await;
    let copies: Vec<&serde_json::Value> = outbox["items"].as_array().unwrap().iter().collect();
    assert_eq!(
        copies.len(),
        2,
        "the original and the copy sent again: {outbox}"
    );
    assert!(
        copies
            .iter()
            .all(|m| m["related_records"][0]["id"] == "106")
    );
}

#[tokio::test]
async fn the_session_cookie_is_secure_when_the_browser_came_over_https() {
    let server = start_server().await;
    let sign_in_via = |proto: Option<&'static str>| {
        let url = format!("{}/console/sign-in", server.base_url);
        let token = server.token.clone();
        async move {
            let mut request = browser().post(url);
            if let Some(proto) = proto {
                request = request.header("x-forwarded-proto", proto);
            }
            let answer = form(request, &[("token", token.as_str())])
                .send()
                .await
                .unwrap();
            answer.headers()["set-cookie"].to_str().unwrap().to_owned()
        }
    };
    assert!(sign_in_via(Some("https")).await.contains("; Secure"));
    assert!(
        !sign_in_via(None).await.contains("Secure"),
        "plain http on loopback keeps working"
    );
}
