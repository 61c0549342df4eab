//! Users connect their own mailboxes (MISSION C1) at a real OpenID Connect provider
//! (`oidc-provider`, its login and consent forms driven over HTTP), and the mailbox then logs in to
//! a real Dovecot (IMAP) and Postfix (submission, SASL by Dovecot) with XOAUTH2, Dovecot checking
//! each access token at the provider's introspection endpoint. Access tokens are refreshed before
//! they expire; a sign-in the provider no longer honours disables the mailbox with an alert.

mod common;

use common::{id_of, ok};
use mailroom_testkit::{
    ImapClient, MailroomServer, OidcProvider, PostfixWithSasl, SmtpSink, wait_until,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;

const CLIENT_SECRET: &str = "mailroom-client-secret";

/// A browser: follows nothing by itself, keeps cookies (127.0.0.1 only, so by name).
struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Browser {
    fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    /// One request; returns the status, the Location (absolute) and the body.
    async fn go(
        &mut self,
        url: &str,
        form: Option<&[(&str, &str)]>,
    ) -> (u16, Option<String>, String) {
        let mut request = match form {
            Some(form) => self
                .http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    form.iter()
                        .map(|(k, v)| format!("{}={}", common::urlencode(k), common::urlencode(v)))
                        .collect::<Vec<_>>()
                        .join("&"),
                ),
            None => self.http.get(url),
        };
        if !self.cookies.is_empty() {
            let jar: Vec<String> = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            request = request.header("cookie", jar.join("; "));
        }
        let response = request.send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies
                    .insert(name.trim().to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|l| {
            let l = l.to_str().unwrap();
            if l.starts_with('/') {
                format!("{}{l}", origin(url))
            } else {
                l.to_owned()
            }
        });
        (status, location, response.text().await.unwrap())
    }
}

fn origin(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    format!("http://{}", rest.split('/').next().unwrap())
}

/// Opens the link mailroom gave, signs in at the provider as `login`, consents, and returns the
/// page mailroom shows at the end (status, body).
async fn sign_in(link: &str, login: &str) -> (u16, String) {
    let mut browser = Browser::new();
    let mut url = link.to_owned();
    for _ in 0..12 {
        let (status, location, body) = browser.go(&url, None).await;
        if let Some(next) = location {
            url = next;
            continue;
        }
        if status == 200 && body.contains("name=\"login\"") {
            let (_, next, _) = browser
                .go(
                    &url,
                    Some(&[("prompt", "login"), ("login", login), ("password", "any")]),
                )
                .await;
            url = next.expect("the login form redirects");
            continue;
        }
        if status == 200 && body.contains("value=\"consent\"") {
            let (_, next, _) = browser.go(&url, Some(&[("prompt", "consent")])).await;
            url = next.expect("the consent form redirects");
            continue;
        }
        return (status, body);
    }
    panic!("the sign-in did not finish at {url}");
}

struct World {
    provider: OidcProvider,
    provider_config: Value,
    postfix: PostfixWithSasl,
    sink: SmtpSink,
    server: MailroomServer,
    registration: String,
    account: Value,
}

/// Postfix + Dovecot taking tokens from the provider, mailroom, an OIDC registration, an oauth2
/// profile and a current-user account. Access tokens live `token_ttl` seconds.
async fn world(token_ttl: u64) -> World {
    let sink = SmtpSink::start(&[]).unwrap();
    let provider_port = mailroom_testkit::free_port();
    let users = vec![
        ("ann@corp.test".to_owned(), "imap-password".to_owned()),
        ("bob@corp.test".to_owned(), "imap-password".to_owned()),
    ];
    let postfix = PostfixWithSasl::start_with_oauth2(
        &users,
        &format!("http://dovecot:dovecot-secret@127.0.0.1:{provider_port}/token/introspection"),
        sink.port,
    )
    .unwrap();
    let server = MailroomServer::start(
        common::binary(),
        &format!(
            "extra_root_certificates = [{:?}]\n{}mailbox_test_retry_ms = 20\nmailbox_test_timeout_ms = 10000\nsync_rescan_ms = 200\nsync_hold_ms = 3000\nsync_retry_ms = 200\n",
            postfix.ca_certificate().display().to_string(),
            common::FAST_ENGINE
        ),
    )
    .await
    .unwrap();
    let redirect = format!("{}/oauth/callback", server.base_url);
    let provider_config = json!({"access_token_ttl": token_ttl, "clients": [
        {"client_id": "mailroom", "client_secret": CLIENT_SECRET, "redirect_uris": [redirect],
         "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]},
        {"client_id": "dovecot", "client_secret": "dovecot-secret", "redirect_uris": [], "grant_types": [], "response_types": []},
    ]});
    let provider = OidcProvider::start_on(provider_port, &provider_config).unwrap();
    let registration = id_of(&ok(&server, Method::POST, "/v1/app-registrations", Some(json!({
        "name": "Corp SSO", "provider": "oidc", "client_id": "mailroom", "client_secret": CLIENT_SECRET,
        "redirect_uri": redirect, "discovery_url": provider.discovery_url(),
    }))).await);
    ok(&server, Method::POST, "/v1/server-profiles", Some(json!({
        "name": "corp", "kind": "imap-smtp", "auth_type": "oauth2", "app_registration_id": registration,
        "incoming": {"host": "127.0.0.1", "port": postfix.imap_port.unwrap(), "security": "none"},
        "outgoing": {"host": "127.0.0.1", "port": postfix.port, "security": "starttls"},
        "is_default_for_new_mailboxes": true,
        "processing": {"max_connections": 4, "folders": ["INBOX"], "use_idle": true}
    }))).await;
    let account = ok(&server, Method::POST, "/v1/accounts", Some(json!({"connector": "current-user", "name": "own", "email_address": "noreply@corp.test"}))).await;
    World {
        provider,
        provider_config,
        postfix,
        sink,
        server,
        registration,
        account,
    }
}

/// A user whose contact address is `address` (their mailbox is made on the oauth2 profile).
async fn user(server: &MailroomServer, name: &str, address: &str) -> (String, String) {
    let user = ok(server, Method::POST, "/v1/users", Some(json!({"name": name, "contact_email": address, "licence": "full", "permission_sets": ["email-send"]}))).await;
    let token = ok(
        server,
        Method::POST,
        &format!("/v1/users/{}/tokens", id_of(&user)),
        Some(json!({"name": "t"})),
    )
    .await;
    let mailboxes = ok(server, Method::GET, "/v1/mailboxes", None).await;
    let mailbox = id_of(
        mailboxes
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["user_id"] == user["id"])
            .unwrap(),
    );
    (token["token"].as_str().unwrap().to_owned(), mailbox)
}

async fn connect_link(server: &MailroomServer, token: &str) -> Value {
    let (status, started) = server
        .call_as(
            token,
            Method::GET,
            "/v1/oauth/connect?purpose=mailbox",
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{started}");
    started
}

async fn send_as(world: &World, token: &str, subject: &str) -> String {
    let (status, accepted) = world
        .server
        .call_as(token, Method::POST, "/v1/messages", Some(&json!({"to": ["someone@example.com"], "subject": subject, "text": "hi", "account_id": world.account["id"]})))
        .await
        .unwrap();
    assert_eq!(status, 202, "{accepted}");
    id_of(&accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_connects_their_mailbox_and_mail_goes_out_and_comes_in_over_xoauth2() {
    let world = world(3600).await;
    let (token, mailbox) = user(&world.server, "ann", "ann@corp.test").await;
    let (status, _) = world
        .server
        .call_as(
            &token,
            Method::PATCH,
            &format!("/v1/mailboxes/{mailbox}"),
            Some(&json!({"filter": "all"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let started = connect_link(&world.server, &token).await;
    assert_eq!(started["mailbox_id"], mailbox);
    let (status, page) = sign_in(
        started["authorization_url"].as_str().unwrap(),
        "ann@corp.test",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Mailbox ann@corp.test connected") && page.contains("enabled"),
        "{page}\n{}",
        world.postfix.dovecot_log()
    );
    let (_, connected) = world
        .server
        .call_as(
            &token,
            Method::GET,
            &format!("/v1/mailboxes/{mailbox}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            connected["enabled"].as_bool(),
            connected["credentials"]["has_password"].as_bool()
        ),
        (Some(true), Some(false)),
        "{connected}"
    );
    assert_eq!(
        connected["credentials"]["oauth_registration_id"],
        world.registration
    );
    assert_eq!(connected["credentials"]["username"], "ann@corp.test");
    assert_eq!(
        connected["approval"], "approved",
        "signing in as the address is the user's own test"
    );

    // Out through Postfix, authenticated with XOAUTH2 as ann.
    let id = send_as(&world, &token, "over oauth").await;
    let sent = world
        .server
        .wait_for_status(&id, "sent", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(sent["attempts"][0]["outcome"], "sent");
    assert!(
        world
            .postfix
            .log()
            .contains("sasl_method=XOAUTH2, sasl_username=ann@corp.test"),
        "{}",
        world.postfix.log()
    );
    wait_until(Duration::from_secs(20), "the message at the sink", || {
        let arrived = world
            .sink
            .messages()
            .unwrap()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.raw).contains("Subject: over oauth"));
        async move { Ok(arrived) }
    })
    .await
    .unwrap();

    // In: a message put into ann's INBOX is synchronized over IMAP with XOAUTH2.
    let mut imap = ImapClient::login(
        world.postfix.imap_port.unwrap(),
        "ann@corp.test",
        "imap-password",
    )
    .await
    .unwrap();
    imap.append("INBOX", b"From: Carl <carl@customer.example>\r\nTo: ann@corp.test\r\nSubject: Question about 103001\r\nMessage-ID: <q1@customer.example>\r\n\r\nHello Ann\r\n", None, None).await.unwrap();
    wait_until(Duration::from_secs(30), "the message synchronized", || {
        let server = &world.server;
        let token = token.clone();
        let mailbox = mailbox.clone();
        async move {
            let (_, list) = server
                .call_as(
                    &token,
                    Method::GET,
                    &format!("/v1/mailboxes/{mailbox}/messages"),
                    None,
                )
                .await?;
            Ok(list.to_string().contains("Question about 103001"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", world.server.log()));
    assert!(
        world.postfix.dovecot_log().contains("method=XOAUTH2"),
        "IMAP logins used XOAUTH2"
    );
    // The refresh token is never shown.
    assert!(!world.server.log().contains("refresh_token\":\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_by_someone_else_or_twice_connects_nothing() {
    let world = world(3600).await;
    let (token, mailbox) = user(&world.server, "ann", "ann@corp.test").await;
    // Bob signs in with ann's link: refused, ann's mailbox stays unconnected.
    let started = connect_link(&world.server, &token).await;
    let link = started["authorization_url"].as_str().unwrap().to_owned();
    let (status, page) = sign_in(&link, "bob@corp.test").await;
    assert_eq!(status, 400);
    assert!(
        page.contains("you signed in as bob@corp.test, but this mailbox is ann@corp.test"),
        "{page}"
    );
    let (_, unconnected) = world
        .server
        .call_as(
            &token,
            Method::GET,
            &format!("/v1/mailboxes/{mailbox}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        unconnected["credentials"]["oauth_registration_id"],
        Value::Null
    );
    // The same link again: used up.
    let (status, page) = sign_in(&link, "ann@corp.test").await;
    assert_eq!(status, 400);
    assert!(page.contains("expired"), "{page}");
    // The provider's callback reached without the browser that started: refused.
    let started = connect_link(&world.server, &token).await;
    let state = started["authorization_url"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let (status, body) = world
        .server
        .raw_get(&format!("/oauth/callback?state={state}&code=stolen"))
        .await
        .unwrap();
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("started in another browser"));
    // Another user's mailbox needs email-setup.
    let (bob_token, _) = user(&world.server, "bob", "bob@corp.test").await;
    let (status, refused) = world
        .server
        .call_as(
            &bob_token,
            Method::GET,
            &format!("/v1/oauth/connect?mailbox={mailbox}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("mailbox_not_yours"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_refreshed_before_they_expire_and_a_revoked_sign_in_disables_the_mailbox()
 {
    // Access tokens live 6 s; mailroom uses each for at most half its life.
    let mut world = world(6).await;
    let (token, mailbox) = user(&world.server, "ann", "ann@corp.test").await;
    let started = connect_link(&world.server, &token).await;
    let (status, page) = sign_in(
        started["authorization_url"].as_str().unwrap(),
        "ann@corp.test",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    // 20 s of sending, one message a second: over three token lifetimes, as three minutes are of
    // 60 s tokens, and no failure from expiry.
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(send_as(&world, &token, &format!("steady {n}")).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for id in &ids {
        let sent = world
            .server
            .wait_for_status(id, "sent", Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(sent["attempts"].as_array().unwrap().len(), 1, "{sent}");
    }
    // Each refreshed token made a new transport, so a new login: several over the run.
    let logins = world.postfix.log().matches("sasl_method=XOAUTH2").count();
    assert!(
        logins >= 3,
        "{logins} XOAUTH2 logins: the access token was not refreshed"
    );

    // The provider forgets every grant (consent revoked): the next refresh is refused for good.
    let config = world.provider_config.clone();
    world.provider.restart(&config).unwrap();
    // Longer than a token is used (3 s), so the next send needs a refresh.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let id = send_as(&world, &token, "after revocation").await;
    let failed = world
        .server
        .wait_for_status(&id, "failed", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("connect the mailbox again"),
        "{failed}"
    );
    let (_, disabled) = world
        .server
        .call_as(
            &token,
            Method::GET,
            &format!("/v1/mailboxes/{mailbox}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(disabled["enabled"], false, "{disabled}");
    let (_, alerts) = world
        .server
        .call_as(&token, Method::GET, "/v1/alerts", None)
        .await
        .unwrap();
    let text = alerts.to_string();
    assert!(
        text.contains("was disabled")
            && text.contains(&format!(
                "/v1/oauth/connect?registration={}",
                world.registration
            )),
        "{alerts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_connects_a_users_mailbox_in_their_browser() {
    let world = world(3600).await;
    let (token, mailbox) = user(&world.server, "ann", "ann@corp.test").await;
    let session = common::console_session(&world.server, &token).await;
    let list = common::console_page(&world.server, "/console/mailboxes", &session).await;
    assert!(
        list.contains(&format!("/console/mailboxes/{mailbox}/connect"))
            && list.contains("Connect (sign in)"),
        "{list}"
    );
    // The console starts the flow as ann and sends her browser to its first stop.
    let mut browser = Browser::new();
    browser.cookies.insert(
        session.split_once('=').unwrap().0.to_owned(),
        session.split_once('=').unwrap().1.to_owned(),
    );
    let (status, location, _) = browser
        .go(
            &format!(
                "{}/console/mailboxes/{mailbox}/connect",
                world.server.base_url
            ),
            None,
        )
        .await;
    assert_eq!(status, 303);
    let start = location.unwrap();
    assert!(
        start.starts_with(&format!("{}/oauth/start/", world.server.base_url)),
        "{start}"
    );
    let (status, page) = sign_in(&start, "ann@corp.test").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Mailbox ann@corp.test connected"), "{page}");
    let list = common::console_page(&world.server, "/console/mailboxes", &session).await;
    assert!(list.contains("Connect again"), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_link_and_waits_until_the_mailbox_is_connected() {
    use tokio::io::AsyncBufReadExt;
    let world = world(3600).await;
    let (token, _) = user(&world.server, "ann", "ann@corp.test").await;
    let mut child = tokio::process::Command::new(common::binary())
        .args(["connect", "--wait", "60"])
        .env("MAILROOM_SERVER", &world.server.base_url)
        .env("MAILROOM_TOKEN", &token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut link = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(url) = line
            .trim()
            .strip_prefix(&format!("{}/oauth/start/", world.server.base_url))
        {
            link = Some(format!("{}/oauth/start/{url}", world.server.base_url));
            break;
        }
    }
    let (status, page) = sign_in(&link.expect("the CLI prints the link"), "ann@corp.test").await;
    assert_eq!(status, 200, "{page}");
    let mut rest = String::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    let exit = child.wait().await.unwrap();
    assert!(
        exit.success() && rest.contains("ann@corp.test is connected, tested and enabled."),
        "{rest}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_connects_an_smtp_account_that_then_signs_in_with_xoauth2() {
    let world = world(3600).await;
    let account = ok(&world.server, Method::POST, "/v1/accounts", Some(json!({
        "connector": "smtp", "name": "Billing", "email_address": "billing@corp.test",
        "host": "127.0.0.1", "port": world.postfix.port, "security": "starttls", "app_registration_id": world.registration,
    }))).await;
    assert_eq!(account["oauth_connected"], false);
    // The console offers to connect it, and sends the browser on its way.
    let session = common::console_session(&world.server, &world.server.token).await;
    let accounts = common::console_page(&world.server, "/console/accounts", &session).await;
    assert!(accounts.contains("Connect Billing (sign in)"), "{accounts}");
    let mut browser = Browser::new();
    let (name, value) = session.split_once('=').unwrap();
    browser.cookies.insert(name.to_owned(), value.to_owned());
    let (status, location, _) = browser
        .go(
            &format!(
                "{}/console/accounts/{}/connect",
                world.server.base_url,
                id_of(&account)
            ),
            None,
        )
        .await;
    assert_eq!(status, 303);
    assert!(location.unwrap().contains("/oauth/start/"));
    // A password does not go with a registration.
    let (status, refused) = world.server.post("/v1/accounts", &json!({
        "connector": "smtp", "name": "X", "email_address": "x@corp.test", "host": "127.0.0.1", "username": "x", "password": "p",
        "app_registration_id": world.registration,
    })).await.unwrap();
    assert_eq!(
        (status, refused["field"].as_str()),
        (422, Some("password")),
        "{refused}"
    );
    let (status, started) = world
        .server
        .get(&format!("/v1/oauth/connect?account={}", id_of(&account)))
        .await
        .unwrap();
    assert_eq!(status, 200, "{started}");
    let (status, page) = sign_in(
        started["authorization_url"].as_str().unwrap(),
        "billing@corp.test",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Account Billing connected") && page.contains("test passed"),
        "{page}"
    );
    let (_, shown) = world
        .server
        .get(&format!("/v1/accounts/{}", id_of(&account)))
        .await
        .unwrap();
    assert_eq!(
        (
            shown["oauth_connected"].as_bool(),
            shown["username"].as_str()
        ),
        (Some(true), Some("billing@corp.test")),
        "{shown}"
    );
    let accepted = world.server.send(&json!({"to": ["c@customer.example"], "subject": "from billing", "text": "t", "account_id": account["id"]})).await.unwrap();
    world
        .server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        world
            .postfix
            .log()
            .contains("sasl_method=XOAUTH2, sasl_username=billing@corp.test"),
        "{}",
        world.postfix.log()
    );
    // Connecting accounts is for admins.
    let (token, _) = user(&world.server, "ann", "ann@corp.test").await;
    let (status, _) = world
        .server
        .call_as(
            &token,
            Method::GET,
            &format!("/v1/oauth/connect?account={}", id_of(&account)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_connects_a_queues_shared_mailbox_by_signing_in_for_it() {
    let world = world(3600).await;
    ok(
        &world.server,
        Method::POST,
        "/v1/queues",
        Some(json!({"name": "Support", "email_address": "support@corp.test", "members": []})),
    )
    .await;
    let mailboxes = ok(&world.server, Method::GET, "/v1/mailboxes", None).await;
    let queue = id_of(
        mailboxes
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == "queue")
            .unwrap(),
    );
    ok(
        &world.server,
        Method::POST,
        &format!("/v1/mailboxes/{queue}/approve"),
        None,
    )
    .await;
    let (status, started) = world
        .server
        .get(&format!("/v1/oauth/connect?mailbox={queue}"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{started}");
    // The admin signs in with the shared mailbox's own account at the provider.
    let (status, page) = sign_in(
        started["authorization_url"].as_str().unwrap(),
        "support@corp.test",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Mailbox support@corp.test connected"),
        "{page}"
    );
    let (_, connected) = world
        .server
        .get(&format!("/v1/mailboxes/{queue}"))
        .await
        .unwrap();
    assert_eq!(
        connected["credentials"]["oauth_registration_id"],
        world.registration
    );
    assert_eq!(
        (
            connected["incoming_status"].as_str(),
            connected["enabled"].as_bool()
        ),
        (Some("success"), Some(true)),
        "{connected}"
    );
}
