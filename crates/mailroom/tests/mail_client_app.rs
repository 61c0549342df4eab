//! The app inside users' mail clients (MISSION D1–D3), against a private Dovecot: who is eligible
//! and what they lack, deployment (selected users, automatic, added by the user, opened by the
//! mail client), the pane's records of a message's participants, tracking → change regarding →
//! untrack reflected on the record's timeline, and the Office add-in manifest.

mod common;

use common::mail_service::{
    MailService, enabled_user, mail_service, profile, start, wait_for_count,
};
use common::{id_of, ok};
use mailroom_testkit::MailroomServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// What the set-up made: the server, the mail service, and user0 (role, enabled mailbox holding
/// one earlier message from Ann tracked to deal D-1 and the open message from her), user1 (enabled
/// mailbox, no role) and user2 (role, mailbox not approved nor tested).
struct World {
    server: MailroomServer,
    _service: MailService,
    user0: (String, String),
    user1: (String, String),
    user2: (String, String),
    mailbox0: String,
    open_message_id: String,
}

fn from_ann(subject: &str, message_id: &str) -> Vec<u8> {
    format!(
        "From: Ann <ann@customer.example>\r\nTo: user0@corp.test\r\nCc: bob@customer.example\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Tue, 1 Sep 2026 10:00:00 +0000\r\n\r\nHello\r\n"
    )
    .into_bytes()
}

async fn world() -> World {
    let service = mail_service(2);
    let server = start(&service, "").await;
    profile(&server, &service, &["INBOX"]).await;
    let (user0, mailbox0, token0) =
        enabled_user(&server, 0, &["email-send", "mail-client-app"]).await;
    let (user1, _, token1) = enabled_user(&server, 1, &["email-send"]).await;
    let user2 = ok(
        &server,
        Method::POST,
        "/v1/users",
        Some(json!({"name": "user2", "contact_email": "user2@corp.test", "licence": "full", "permission_sets": ["mail-client-app"]})),
    )
    .await;
    let user2_id = id_of(&user2);
    let token2 = ok(
        &server,
        Method::POST,
        &format!("/v1/users/{user2_id}/tokens"),
        Some(json!({"name": "t"})),
    )
    .await;

    // Ann is a contact of customer C-1; earlier mail from her was tracked to deal D-1.
    ok(
        &server,
        Method::PUT,
        "/v1/contacts/ann",
        Some(json!({"name": "Ann", "addresses": ["ann@customer.example"], "related_records": [{"type": "customer", "id": "C-1"}]})),
    )
    .await;
    let mut imap = service.client(0).await;
    let earlier_id = format!("earlier.{}@customer.example", uuid::Uuid::new_v4().simple());
    let open_message_id = format!("open.{}@customer.example", uuid::Uuid::new_v4().simple());
    imap.append("INBOX", &from_ann("Pumps", &earlier_id), None, None)
        .await
        .unwrap();
    wait_for_count(&server, &mailbox0, "", 1, Duration::from_secs(15)).await;
    let listed = ok(
        &server,
        Method::GET,
        &format!("/v1/mailboxes/{mailbox0}/messages"),
        None,
    )
    .await;
    let earlier = id_of(&listed["items"][0]);
    ok(
        &server,
        Method::PUT,
        &format!("/v1/inbound/{earlier}/related-records"),
        Some(json!({"related_records": [{"type": "deal", "id": "D-1"}]})),
    )
    .await;
    imap.append(
        "INBOX",
        &from_ann("Pumps, revised", &open_message_id),
        None,
        None,
    )
    .await
    .unwrap();
    wait_for_count(&server, &mailbox0, "", 2, Duration::from_secs(15)).await;
    imap.logout().await;
    World {
        server,
        _service: service,
        user0: (user0, token0),
        user1: (user1, token1),
        user2: (user2_id, token2["token"].as_str().unwrap().to_owned()),
        mailbox0,
        open_message_id,
    }
}

async fn call(
    server: &MailroomServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn status_of(users: &Value, id: &str) -> (String, Vec<String>) {
    let user = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == json!(id))
        .unwrap();
    (
        user["status"].as_str().unwrap().to_owned(),
        user["missing"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["code"].as_str().unwrap().to_owned())
            .collect(),
    )
}

fn regarding(pane: &Value) -> Vec<String> {
    pane["regarding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["type"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect()
}

async fn timeline(server: &MailroomServer, token: &str, record: &str) -> Vec<String> {
    let (status, answer) = call(
        server,
        token,
        Method::GET,
        &format!("/v1/records/{record}/messages"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["inbound"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn eligibility_deployment_and_the_panes_track_change_untrack_reach_the_records_timeline() {
    let w = world().await;
    let server = &w.server;
    let (user0, token0) = (&w.user0.0, &w.user0.1);
    let (user1, token1) = (&w.user1.0, &w.user1.1);
    let (user2, token2) = (&w.user2.0, &w.user2.1);

    // Who is eligible, and what the others lack, under manual deployment.
    let users = ok(server, Method::GET, "/v1/addin/users", None).await;
    assert_eq!(users["deployment"], "manual", "{users}");
    assert_eq!(status_of(&users, user0), ("eligible".into(), vec![]));
    assert_eq!(
        status_of(&users, user1),
        ("not-eligible".into(), vec!["role_missing".into()])
    );
    assert_eq!(
        status_of(&users, user2),
        (
            "not-eligible".into(),
            vec!["mailbox_not_approved".into(), "mailbox_not_tested".into()]
        )
    );

    // A user without the role is told so in the app's words, by every pane call.
    let open = json!({"message_id": format!("<{}>", w.open_message_id), "from": "Ann <ann@customer.example>", "to": ["user0@corp.test"], "cc": ["bob@customer.example"]});
    let (status, refused) = call(
        server,
        token1,
        Method::POST,
        "/v1/addin/lookup",
        Some(open.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["code"], "mail_client_app_not_authorised");
    assert!(refused["message"].as_str().unwrap().starts_with("You are not authorised to use this app. Ask your administrator to update your settings."), "{refused}");
    let (status, _) = call(
        server,
        token1,
        Method::PUT,
        "/v1/addin/regarding",
        Some(json!({"message_id": w.open_message_id, "record": {"type": "deal", "id": "D-1"}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(server, token2, Method::POST, "/v1/addin/me", None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a user who is not eligible cannot add it either"
    );
    // Deploying falls only on eligible users; a refusal names who lacks what and deploys nothing.
    let (status, answer) = call(
        server,
        &server.token,
        Method::POST,
        "/v1/addin/deploy",
        Some(json!({"users": [user0, user1]})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["code"], "user_not_eligible");
    assert!(
        answer["message"].as_str().unwrap().contains("user1")
            && answer["message"].as_str().unwrap().contains("role_missing"),
        "{answer}"
    );
    assert_eq!(
        status_of(
            &ok(server, Method::GET, "/v1/addin/users", None).await,
            user0
        )
        .0,
        "eligible"
    );
    // A user without email-setup cannot deploy.
    let (status, _) = call(
        server,
        token0,
        Method::POST,
        "/v1/addin/deploy",
        Some(json!({"all_eligible": true})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let deployed = ok(
        server,
        Method::POST,
        "/v1/addin/deploy",
        Some(json!({"users": [user0]})),
    )
    .await;
    assert_eq!(status_of(&deployed, user0).0, "pending");

    // Granting the role makes user1 eligible: not deployed under manual, pending under automatic.
    ok(
        server,
        Method::PATCH,
        &format!("/v1/users/{user1}"),
        Some(json!({"permission_sets": ["email-send", "mail-client-app"]})),
    )
    .await;
    assert_eq!(
        status_of(
            &ok(server, Method::GET, "/v1/addin/users", None).await,
            user1
        )
        .0,
        "eligible"
    );
    ok(
        server,
        Method::PUT,
        "/v1/addin/settings",
        Some(json!({"deployment": "automatic"})),
    )
    .await;
    let users = ok(server, Method::GET, "/v1/addin/users", None).await;
    assert_eq!(status_of(&users, user1).0, "pending");
    assert_eq!(status_of(&users, user2).0, "not-eligible");
    let (status, bad) = call(
        server,
        &server.token,
        Method::PUT,
        "/v1/addin/settings",
        Some(json!({"deployment": "sometimes"})),
    )
    .await;
    assert_eq!(
        (status, bad["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("deployment")),
        "{bad}"
    );

    // The pane opens: the records of the sender (contact, earlier mail) — and the app is added.
    let (status, pane) = call(
        server,
        token0,
        Method::POST,
        "/v1/addin/lookup",
        Some(open.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{pane}");
    let records: Vec<(String, String, String)> = pane["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_owned(),
                format!(
                    "{} {}",
                    r["type"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                r["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        records,
        [
            (
                "ann@customer.example".to_owned(),
                "customer C-1".to_owned(),
                "contact".to_owned()
            ),
            (
                "ann@customer.example".to_owned(),
                "deal D-1".to_owned(),
                "mail".to_owned()
            ),
        ],
        "{pane}"
    );
    assert_eq!(pane["synchronized"], true);
    let (_, me) = call(server, token0, Method::GET, "/v1/addin/me", None).await;
    assert_eq!(me["status"], "added", "{me}");

    // Track → the record's timeline shows it; change regarding → it moves; untrack → gone.
    let (status, tracked) = call(
        server,
        token0,
        Method::PUT,
        "/v1/addin/regarding",
        Some(json!({"message_id": w.open_message_id, "record": {"type": "deal", "id": "D-1"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tracked}");
    assert_eq!(regarding(&tracked), ["deal D-1"]);
    assert!(
        timeline(server, token0, "deal/D-1")
            .await
            .contains(&"Pumps, revised".to_owned())
    );
    let (_, changed) = call(
        server,
        token0,
        Method::PUT,
        "/v1/addin/regarding",
        Some(json!({"message_id": w.open_message_id, "record": {"type": "deal", "id": "D-2"}})),
    )
    .await;
    assert_eq!(regarding(&changed), ["deal D-2"]);
    assert!(
        !timeline(server, token0, "deal/D-1")
            .await
            .contains(&"Pumps, revised".to_owned())
    );
    assert_eq!(
        timeline(server, token0, "deal/D-2").await,
        ["Pumps, revised"]
    );
    let (status, _) = call(
        server,
        token0,
        Method::DELETE,
        &format!("/v1/addin/regarding?message_id={}", w.open_message_id),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(timeline(server, token0, "deal/D-2").await.is_empty());
    let (_, after) = call(
        server,
        token0,
        Method::POST,
        "/v1/addin/lookup",
        Some(open.clone()),
    )
    .await;
    assert!(regarding(&after).is_empty(), "{after}");

    // A message not synchronised yet cannot be tracked; a bad Message-ID or record is refused.
    let (_, unknown) = call(
        server,
        token0,
        Method::POST,
        "/v1/addin/lookup",
        Some(json!({"message_id": "<not.here@x.example>"})),
    )
    .await;
    assert_eq!(unknown["synchronized"], false, "{unknown}");
    let (status, refused) = call(
        server,
        token0,
        Method::PUT,
        "/v1/addin/regarding",
        Some(json!({"message_id": "not.here@x.example", "record": {"type": "deal", "id": "D-1"}})),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (StatusCode::CONFLICT, Some("message_not_synchronized")),
        "{refused}"
    );
    let (status, refused) = call(
        server,
        token0,
        Method::PUT,
        "/v1/addin/regarding",
        Some(json!({"message_id": "a b@x", "record": {"type": "deal", "id": "D-1"}})),
    )
    .await;
    assert_eq!(
        (status, refused["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("message_id")),
        "{refused}"
    );
    let (status, refused) = call(
        server,
        token0,
        Method::PUT,
        "/v1/addin/regarding",
        Some(
            json!({"message_id": w.open_message_id, "record": {"type": "Deal Type!", "id": "D-1"}}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (status, refused) = call(
        server,
        token0,
        Method::POST,
        "/v1/addin/lookup",
        Some(json!({"from": "not an address"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
}

#[tokio::test]
async fn in_a_real_browser_a_deployed_user_tracks_changes_and_untracks_from_the_pane_and_an_outsider_is_refused()
 {
    let w = world().await;
    common::run_browser_script(
        "pane.mjs",
        &[
            "--base",
            &w.server.base_url,
            "--admin",
            &w.server.token,
            "--user",
            &w.user0.1,
            "--outsider",
            &w.user1.1,
            "--message-id",
            &format!("<{}>", w.open_message_id),
            "--from",
            "Ann <ann@customer.example>",
            "--to",
            "user0@corp.test",
            "--cc",
            "bob@customer.example",
            "--subject",
            "Pumps, revised",
            "--mailbox",
            &w.mailbox0,
        ],
    )
    .await;
    // What the browser did is what the API holds.
    let (_, me) = call(&w.server, &w.user0.1, Method::GET, "/v1/addin/me", None).await;
    assert_eq!(me["status"], "added", "{me}");
    assert!(
        timeline(&w.server, &w.user0.1, "customer/C-1")
            .await
            .iter()
            .all(|s| s != "Pumps, revised")
    );
}

#[tokio::test]
async fn the_manifest_points_a_mail_client_at_the_pane_with_this_organisations_own_id() {
    let server = common::start_server().await;
    let fetch = || async {
        let response = reqwest::Client::new()
            .get(format!("{}/v1/addin/manifest.xml", server.base_url))
            .bearer_auth(&server.token)
            .header("x-forwarded-proto", "https")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/xml")
        );
        response.text().await.unwrap()
    };
    let xml = fetch().await;
    let document = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "OfficeApp");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://schemas.microsoft.com/office/appforoffice/1.1")
    );
    // The elements in the order the manifest schema requires.
    let order: Vec<&str> = root
        .children()
        .filter(|n| n.is_element())
        .map(|n| n.tag_name().name())
        .collect();
    assert_eq!(
        order,
        [
            "Id",
            "Version",
            "ProviderName",
            "DefaultLocale",
            "DisplayName",
            "Description",
            "IconUrl",
            "HighResolutionIconUrl",
            "SupportUrl",
            "AppDomains",
            "Hosts",
            "Requirements",
            "FormSettings",
            "Permissions",
            "Rule",
            "DisableEntityHighlighting",
        ]
    );
    let text = |name: &str| root.descendants().find(|n| n.has_tag_name(name)).unwrap();
    let id = text("Id").text().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let host = server.base_url.trim_start_matches("http://");
    assert_eq!(
        text("SourceLocation").attribute("DefaultValue"),
        Some(format!("https://{host}/pane?host=office").as_str())
    );
    assert_eq!(text("Permissions").text(), Some("ReadItem"));
    // The same organisation keeps its id; the icons are served.
    let again = fetch().await;
    assert!(again.contains(&format!("<Id>{id}</Id>")));
    for icon in ["icon-64.png", "icon-128.png"] {
        let response = reqwest::get(format!("{}/console/static/{icon}", server.base_url))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(&response.bytes().await.unwrap()[1..4], b"PNG");
    }
    // Another organisation's manifest has another id.
    let other = common::start_server().await;
    let theirs = reqwest::Client::new()
        .get(format!("{}/v1/addin/manifest.xml", other.base_url))
        .bearer_auth(&other.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!theirs.contains(&id));
    assert!(
        theirs.contains("http://127.0.0.1"),
        "without X-Forwarded-Proto the request's scheme is used"
    );
}

#[tokio::test]
async fn signing_in_from_the_pane_returns_to_it_but_never_to_another_site() {
    let server = common::start_server().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |next: &'static str| {
        let client = client.clone();
        let url = format!("{}/console/sign-in", server.base_url);
        let token = server.token.clone();
        async move {
            let answer = client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}&next={}", common::urlencode(next)))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::SEE_OTHER);
            answer.headers()["location"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(
        sign_in("/pane?message_id=a%40b&from=x%40y").await,
        "/pane?message_id=a%40b&from=x%40y"
    );
    for foreign in [
        "https://evil.example/",
        "//evil.example/pane",
        "/pane\\\\evil",
        "/console//evil.example",
        "",
    ] {
        assert_eq!(sign_in(foreign).await, "/console", "{foreign:?}");
    }
    // The pane signed out sends the user to sign in, with the way back.
    let answer = client
        .get(format!("{}/pane?message_id=a%40b", server.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert!(
        answer.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/sign-in?next=%2Fpane%3Fmessage_id%3Da%2540b")
    );
    // The console hands out the manifest.
    let cookie = common::console_session(&server, &server.token).await;
    let manifest = client
        .get(format!(
            "{}/console/mail-client-app/manifest.xml",
            server.base_url
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(manifest.status(), StatusCode::OK);
    let xml = manifest.text().await.unwrap();
    assert!(
        xml.contains(&format!(
            "<SourceLocation DefaultValue=\"{}/pane?host=office\"/>",
            server.base_url
        )),
        "{xml}"
    );
}
