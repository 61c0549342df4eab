//! OAuth app registrations: stored with a write-only secret bound to its provider and client, and
//! verified against a real OpenID Connect provider (`oidc-provider`) and against the fake of
//! Microsoft's identity platform, whose refusals come back as advice an administrator can act on.

mod common;

use common::{id_of, ok};
use mailroom_testkit::{FakeClient, MailroomServer, MicrosoftFake, OidcProvider};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write as _;
use std::process::{Command, Stdio};

const SECRET: &str = "Qx8~n3Vq.secret-value";

async fn entra_registration(
    server: &MailroomServer,
    fake: &MicrosoftFake,
    name: &str,
    client_id: &str,
    tenant: &str,
    secret: &str,
) -> Value {
    ok(
        server,
        Method::POST,
        "/v1/app-registrations",
        Some(json!({
            "name": name, "provider": "microsoft-entra", "client_id": client_id, "client_secret": secret,
            "tenant": tenant, "authority": fake.authority(),
            "redirect_uri": format!("{}/oauth/callback", server.base_url),
        })),
    )
    .await
}

async fn verify(server: &MailroomServer, registration: &Value) -> Value {
    ok(
        server,
        Method::POST,
        &format!("/v1/app-registrations/{}/verify", id_of(registration)),
        None,
    )
    .await
}

fn check<'a>(verification: &'a Value, name: &str) -> &'a Value {
    verification["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {verification}"))
}

#[tokio::test]
async fn entra_refusals_are_translated_into_what_the_administrator_must_do() {
    let server = common::start_server().await;
    let mut expired = FakeClient::new("app-expired", SECRET);
    expired.secret_expired = true;
    let mut unconsented = FakeClient::new("app-unconsented", SECRET);
    unconsented.consented = false;
    let fake = MicrosoftFake::start(
        "contoso.example",
        vec![FakeClient::new("app-good", SECRET), expired, unconsented],
    )
    .await
    .unwrap();

    let good = entra_registration(
        &server,
        &fake,
        "Good",
        "app-good",
        "contoso.example",
        SECRET,
    )
    .await;
    assert_eq!(good["has_client_secret"], true);
    assert_eq!(
        good["client_secret"],
        Value::Null,
        "the secret is write-only"
    );
    let verified = verify(&server, &good).await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(check(&verified, "discovery")["result"], "passed");
    assert_eq!(check(&verified, "client_credentials")["result"], "passed");

    let cases = [
        (
            "Secret ID given",
            "app-good",
            "contoso.example",
            "1b2c3d4e-secret-id",
            7000215,
            "not its Secret ID",
        ),
        (
            "Expired",
            "app-expired",
            "contoso.example",
            SECRET,
            7000222,
            "has expired",
        ),
        (
            "No consent",
            "app-unconsented",
            "contoso.example",
            SECRET,
            65001,
            "admin consent",
        ),
        (
            "Elsewhere",
            "app-missing",
            "contoso.example",
            SECRET,
            700016,
            "not found in this tenant",
        ),
    ];
    for (name, client, tenant, secret, code, advice) in cases {
        let registration = entra_registration(&server, &fake, name, client, tenant, secret).await;
        let verified = verify(&server, &registration).await;
        assert_eq!(verified["ok"], false, "{name}: {verified}");
        let refused = check(&verified, "client_credentials");
        assert_eq!(refused["result"], "failed", "{name}");
        assert_eq!(refused["error_codes"], json!([code]), "{name}: {refused}");
        assert!(
            refused["advice"].as_str().unwrap().contains(advice),
            "{name}: {refused}"
        );
        if code == 65001 {
            let link = refused["admin_consent_url"].as_str().unwrap();
            assert!(
                link.starts_with(&format!(
                    "{}/contoso.example/v2.0/adminconsent?client_id=app-unconsented",
                    fake.authority()
                )),
                "{link}"
            );
        }
    }
    // A tenant the cloud does not know fails at discovery, with its own advice.
    let lost = entra_registration(
        &server,
        &fake,
        "Lost",
        "app-good",
        "fabrikam.example",
        SECRET,
    )
    .await;
    let verified = verify(&server, &lost).await;
    let discovery = check(&verified, "discovery");
    assert_eq!(discovery["result"], "failed");
    assert!(
        discovery["detail"]
            .as_str()
            .unwrap()
            .contains("AADSTS90002"),
        "{discovery}"
    );
    assert!(discovery["advice"].as_str().unwrap().contains("tenant"));

    // Nothing ever shows the secret: not the registration, the list, the audit log, nor the server log.
    let (_, list) = server.get("/v1/app-registrations").await.unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 6);
    let (_, audit) = server.get("/v1/audit?limit=200").await.unwrap();
    for text in [list.to_string(), audit.to_string(), server.log()] {
        assert!(!text.contains(SECRET), "the secret leaked");
    }
    assert!(audit.to_string().contains("app_registration.verify_failed"));
}

#[tokio::test]
async fn a_stored_secret_stays_with_the_provider_and_client_it_was_given_for() {
    let server = common::start_server().await;
    let fake = MicrosoftFake::start("contoso.example", vec![FakeClient::new("app-good", SECRET)])
        .await
        .unwrap();
    let registration = entra_registration(
        &server,
        &fake,
        "Contoso",
        "app-good",
        "contoso.example",
        SECRET,
    )
    .await;
    let path = format!("/v1/app-registrations/{}", id_of(&registration));
    // Moving the registration to another authority without the secret would send it there: refused.
    let (status, refused) = server
        .call(
            Method::PATCH,
            &path,
            Some(&json!({"authority": "https://login.attacker.example"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (status, refused["code"].as_str()),
        (422, Some("client_secret_required")),
        "{refused}"
    );
    assert_eq!(refused["field"], "client_secret");
    assert!(refused["message"].as_str().unwrap().contains("authority"));
    let before = fake.token_requests();
    let verified = verify(&server, &registration).await;
    assert_eq!(verified["ok"], true, "the refused change changed nothing");
    assert_eq!(fake.token_requests(), before + 1);
    // Names and scopes may change without it; so may everything, with it.
    let renamed = ok(&server, Method::PATCH, &path, Some(json!({"name": "Contoso EU", "scopes": {"graph": ["Mail.Send"], "mail": [], "app": ["https://graph.microsoft.com/.default"]}}))).await;
    assert_eq!(
        (renamed["name"].as_str(), renamed["scopes"]["graph"].clone()),
        (Some("Contoso EU"), json!(["Mail.Send"]))
    );
    let moved = ok(
        &server,
        Method::PATCH,
        &path,
        Some(json!({"client_id": "app-other", "client_secret": "another value"})),
    )
    .await;
    assert_eq!(moved["client_id"], "app-other");
    // Bad input: a precise field, nothing stored.
    for (body, field) in [
        (
            json!({"name": "X", "provider": "okta", "client_id": "c", "redirect_uri": "https://a.example/cb"}),
            "provider",
        ),
        (
            json!({"name": "X", "provider": "microsoft-entra", "client_id": "c", "redirect_uri": "https://a.example/cb"}),
            "tenant",
        ),
        (
            json!({"name": "X", "provider": "oidc", "client_id": "c", "redirect_uri": "https://a.example/cb"}),
            "discovery_url",
        ),
        (
            json!({"name": "X", "provider": "microsoft-entra", "client_id": "c", "tenant": "t", "redirect_uri": "http://a.example/cb"}),
            "redirect_uri",
        ),
        (
            json!({"name": "X", "provider": "microsoft-entra", "client_id": "c", "tenant": "t", "redirect_uri": "https://a.example/cb", "client_secret": "a\r\nb"}),
            "client_secret",
        ),
    ] {
        let (status, refused) = server.post("/v1/app-registrations", &body).await.unwrap();
        assert_eq!(
            (status, refused["field"].as_str()),
            (422, Some(field)),
            "{refused}"
        );
    }
    let (status, taken) = server
        .post("/v1/app-registrations", &json!({"name": "Contoso EU", "provider": "microsoft-entra", "client_id": "c", "tenant": "t", "redirect_uri": "https://a.example/cb"}))
        .await
        .unwrap();
    assert_eq!(
        (status, taken["code"].as_str()),
        (409, Some("app_registration_name_taken"))
    );
    let (status, _) = server.call(Method::DELETE, &path, None, &[]).await.unwrap();
    assert_eq!(status, 204);
    let (status, gone) = server.get(&path).await.unwrap();
    assert_eq!((status, gone["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn an_openid_connect_registration_is_verified_by_discovery_and_a_client_credentials_token() {
    let server = common::start_server().await;
    let redirect = format!("{}/oauth/callback", server.base_url);
    let provider = OidcProvider::start(&json!({"clients": [{
        "client_id": "mailroom", "client_secret": SECRET, "redirect_uris": [redirect],
        "grant_types": ["authorization_code", "refresh_token", "client_credentials"], "response_types": ["code"],
    }]}))
    .unwrap();
    let registration = ok(&server, Method::POST, "/v1/app-registrations", Some(json!({
        "name": "Company SSO", "provider": "oidc", "client_id": "mailroom", "client_secret": SECRET,
        "redirect_uri": redirect, "discovery_url": provider.discovery_url(),
    })))
    .await;
    assert_eq!(
        registration["scopes"]["mail"],
        json!(["openid", "offline_access", "email"])
    );
    assert_eq!(registration["admin_consent_url"], Value::Null);
    let verified = verify(&server, &registration).await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(
        check(&verified, "discovery")["detail"]
            .as_str()
            .unwrap()
            .contains(&provider.issuer())
    );
    assert!(
        check(&verified, "endpoints")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("{}/token", provider.issuer()))
    );
    assert_eq!(check(&verified, "client_credentials")["result"], "passed");

    // The wrong secret is refused by the real provider, and said so.
    let wrong = ok(
        &server,
        Method::PATCH,
        &format!("/v1/app-registrations/{}", id_of(&registration)),
        Some(json!({"client_secret": "not it"})),
    )
    .await;
    let verified = verify(&server, &wrong).await;
    let refused = check(&verified, "client_credentials");
    assert_eq!(
        (verified["ok"].as_bool(), refused["error"].as_str()),
        (Some(false), Some("invalid_client")),
        "{verified}"
    );
    assert!(
        refused["advice"]
            .as_str()
            .unwrap()
            .contains("client ID and secret")
    );

    // A provider that is not there fails at discovery, and nothing else is tried.
    drop(provider);
    let verified = verify(&server, &registration).await;
    assert_eq!(check(&verified, "discovery")["result"], "failed");
    assert_eq!(check(&verified, "endpoints")["result"], "failed");
}

// Several threads: the CLI is waited for while the fake answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_verifies_and_lists_registrations_with_the_secret_read_from_stdin() {
    let server = common::start_server().await;
    let fake = MicrosoftFake::start("contoso.example", vec![FakeClient::new("app-good", SECRET)])
        .await
        .unwrap();
    let cli = |args: &[&str], stdin: &str| {
        let mut child = Command::new(common::binary())
            .args(args)
            .env("MAILROOM_SERVER", &server.base_url)
            .env("MAILROOM_TOKEN", &server.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    };
    let redirect = format!("{}/oauth/callback", server.base_url);
    let (added, out) = cli(
        &[
            "app-registration",
            "add",
            "Contoso",
            "--client-id",
            "app-good",
            "--tenant",
            "contoso.example",
            "--authority",
            &fake.authority(),
            "--redirect-uri",
            &redirect,
            "--client-secret-stdin",
        ],
        &format!("{SECRET}\n"),
    );
    assert!(added, "{out}");
    assert!(out.contains("secret stored"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    let (verified, out) = cli(&["app-registration", "verify", &id], "");
    assert!(verified, "{out}");
    assert!(
        out.contains("client_credentials") && out.contains("the registration works"),
        "{out}"
    );
    let (listed, out) = cli(&["app-registration", "list"], "");
    assert!(
        listed && out.contains("Contoso") && out.contains("app-good"),
        "{out}"
    );
    assert!(!out.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_adds_a_registration_and_shows_its_verification_with_advice() {
    let server = common::start_server().await;
    let fake = MicrosoftFake::start("contoso.example", vec![FakeClient::new("app-good", SECRET)])
        .await
        .unwrap();
    let session = common::console_session(&server, &server.token).await;
    let html = common::console_page(&server, "/console/app-registrations", &session).await;
    // The redirect URI offered is where this browser reached mailroom (minijinja escapes its slashes).
    let offered = format!("{}/oauth/callback", server.base_url).replace('/', "&#x2f;");
    assert!(
        html.contains("No app registration yet") && html.contains(&offered),
        "{html}"
    );
    let at = html.find("name=\"csrf\" value=\"").unwrap() + 19;
    let csrf = html[at..at + 32].to_owned();
    let fields = [
        ("csrf", csrf.as_str()),
        ("action", "add"),
        ("name", "Contoso"),
        ("provider", "microsoft-entra"),
        ("client_id", "app-good"),
        ("client_secret", "1b2c3d4e-secret-id"),
        ("tenant", "contoso.example"),
        ("discovery_url", ""),
        (
            "redirect_uri",
            "https://mail.contoso.example/oauth/callback",
        ),
        ("authority", &fake.authority()),
    ];
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", common::urlencode(k), common::urlencode(v)))
        .collect();
    let answer = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/console/app-registrations", server.base_url))
        .header("cookie", &session)
        .header("origin", &server.base_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303);
    let (_, list) = server.get("/v1/app-registrations").await.unwrap();
    let id = list["items"][0]["id"].as_str().unwrap().to_owned();
    let verify = common::console_page(
        &server,
        &format!("/console/app-registrations/{id}/verify"),
        &session,
    )
    .await;
    assert!(
        verify.contains("does not work yet") && verify.contains("not its Secret ID"),
        "{verify}"
    );
    let html = common::console_page(&server, "/console/app-registrations", &session).await;
    assert!(
        html.contains("app-good")
            && html.contains("stored")
            && !html.contains("1b2c3d4e-secret-id"),
        "{html}"
    );
}
