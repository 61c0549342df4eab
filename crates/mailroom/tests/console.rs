//! The browser console over HTTP (the browser-driven tests come with the pages): sign-in with a
//! token gives an HttpOnly, SameSite=Strict session; forms without the session's CSRF token and
//! posts from another site are refused; a page shows only what the user's permissions let the API
//! show; sign-out revokes the session.

mod common;

use common::{id_of, ok, start_server};
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
    let encode = |text: &str| {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
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

    // The administrator sees the message.
    let admin = sign_in(&base, &server.token).await;
    let (_, _, html) = page(&base, "/console", Some(&admin)).await;
    assert!(html.contains("Invoice 103001"), "{html}");
}
