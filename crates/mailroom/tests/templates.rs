//! Templates: built-ins that render, versions, previews, errors with their line, and messages that are
//! rendered from a template and record the version they used.

mod common;

use common::{id_of, start_server};
use mailroom_testkit::SmtpSink;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn the_built_in_templates_are_listed_and_preview_with_sample_data() {
    let server = start_server().await;
    let (_, templates) = server.get("/v1/templates").await.unwrap();
    let ids: Vec<&str> = templates
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for id in [
        "purchase-order",
        "reminder",
        "sales-credit-memo",
        "sales-invoice",
        "sales-order",
        "sales-quote",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let (status, preview) = server
        .post("/v1/templates/sales-invoice/preview", &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        preview["subject"],
        "Invoice 103001 from Cronus Trading Ltd."
    );
    assert!(preview["html"].as_str().unwrap().contains("2,070.00 EUR"));
    assert!(
        preview["text"]
            .as_str()
            .unwrap()
            .contains("Pay online: https://pay.example.com/103001")
    );
}

#[tokio::test]
async fn a_template_error_is_refused_with_its_part_line_and_reason() {
    let server = start_server().await;
    let broken = json!({"document_type": "sales-invoice", "subject": "Invoice {{ document.number }}", "html": "<p>Dear {{ customer.name }},</p>\n<p>{% if x %}unclosed</p>"});
    let (status, error) = server
        .call(Method::PUT, "/v1/templates/my-invoice", Some(&broken), &[])
        .await
        .unwrap();
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "html");
    assert!(
        error["message"].as_str().unwrap().contains("line 2"),
        "{error}"
    );
    let (status, _) = server.get("/v1/templates/my-invoice").await.unwrap();
    assert_eq!(status, 404, "nothing half-stored");

    let valid = json!({"document_type": "sales-invoice", "subject": "Invoice {{ document.number }}", "html": "<p>Due {{ document.due_date }}</p>"});
    server
        .call(Method::PUT, "/v1/templates/my-invoice", Some(&valid), &[])
        .await
        .unwrap();
    let (status, error) = server
        .post(
            "/v1/templates/my-invoice/preview",
            &json!({"data": {"document": {"number": "1"}}}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "a missing variable is an error: {error}");
    assert_eq!(
        error["field"], "data.document.due_date",
        "named with its path: {error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("is missing"),
        "{error}"
    );
    // A variable the document type's schema does not know is still named by the template error.
    let odd =
        json!({"document_type": "sales-invoice", "subject": "x", "html": "<p>{{ mood }}</p>"});
    server
        .call(Method::PUT, "/v1/templates/odd", Some(&odd), &[])
        .await
        .unwrap();
    let (status, error) = server
        .post("/v1/templates/odd/preview", &json!({"data": {}}))
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert!(
        error["message"].as_str().unwrap().contains("undefined"),
        "{error}"
    );
}

#[tokio::test]
async fn a_message_rendered_from_a_template_records_the_version_it_used() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("billing", sink.port, json!({}))
        .await
        .unwrap();
    let version_one = json!({"document_type": "sales-invoice", "subject": "Invoice {{ document.number }}",
                             "html": "<p>Dear {{ customer.name }}, you owe {{ document.total|money(document.currency) }}.</p>"});
    let (status, saved) = server
        .call(
            Method::PUT,
            "/v1/templates/short-invoice",
            Some(&version_one),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (status, saved["version"].as_i64()),
        (200, Some(1)),
        "{saved}"
    );
    let data = json!({"customer": {"name": "Adatum"}, "document": {"number": "103001", "total": 1250.5, "currency": "EUR"}});
    let first = server
        .send(&json!({"to": ["c@example.com"], "template": {"id": "short-invoice", "data": data}, "related_records": [{"type": "sales-invoice", "id": "103001", "relation": "primary"}]}))
        .await
        .unwrap();
    let sent = server
        .wait_for_status(&id_of(&first), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        sent["template"],
        json!({"id": "short-invoice", "version": 1})
    );
    assert_eq!(sent["subject"], "Invoice 103001");
    let received = sink.messages().unwrap().remove(0);
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    assert!(
        parsed
            .body_html(0)
            .unwrap()
            .contains("you owe 1,250.50 EUR")
    );
    assert!(
        parsed
            .body_text(0)
            .unwrap()
            .contains("you owe 1,250.50 EUR"),
        "the text is derived from the HTML"
    );

    let version_two = json!({"document_type": "sales-invoice", "subject": "Your invoice {{ document.number }}", "html": "<p>Please pay {{ document.total|money }}.</p>"});
    server
        .call(
            Method::PUT,
            "/v1/templates/short-invoice",
            Some(&version_two),
            &[],
        )
        .await
        .unwrap();
    let second = server
        .send(&json!({"to": ["c@example.com"], "template": {"id": "short-invoice", "data": data}}))
        .await
        .unwrap();
    let second = server
        .wait_for_status(&id_of(&second), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(second["template"]["version"], 2);
    assert_eq!(
        server.message(&id_of(&first)).await.unwrap()["template"]["version"],
        1,
        "the first message keeps its version"
    );
    let (_, shown) = server.get("/v1/templates/short-invoice").await.unwrap();
    let versions: Vec<i64> = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [2, 1]);

    let (status, error) = server
        .post("/v1/messages", &json!({"to": ["c@example.com"], "subject": "mine", "template": {"id": "short-invoice", "data": data}}))
        .await
        .unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("template")),
        "{error}"
    );
    let (status, error) = server
        .post(
            "/v1/messages",
            &json!({"to": ["c@example.com"], "template": {"id": "no-such-template"}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("template.id")),
        "{error}"
    );
}

#[tokio::test]
async fn an_expensive_template_is_refused_while_the_server_stays_responsive() {
    let server = start_server().await;
    let loops = json!({"document_type": "sales-invoice", "subject": "Invoice",
        "html": "{% for a in range(10000) %}{% for b in range(10000) %}{{ a }}{% endfor %}{% endfor %}"});
    let (status, body) = server
        .call(Method::PUT, "/v1/templates/loops", Some(&loops), &[])
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    let health = {
        let url = format!("{}/healthz", server.base_url);
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut slowest = Duration::ZERO;
            for _ in 0..40 {
                let started = std::time::Instant::now();
                assert!(client.get(&url).send().await.unwrap().status().is_success());
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            slowest
        })
    };
    let sends: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/v1/messages", server.base_url);
            let token = server.token.clone();
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .json(
                        &json!({"to": ["a@example.com"], "template": {"id": "loops", "data": {}}}),
                    )
                    .send()
                    .await
                    .unwrap();
                (
                    response.status().as_u16(),
                    response.json::<serde_json::Value>().await.unwrap(),
                )
            })
        })
        .collect();
    for send in sends {
        let (status, body) = send.await.unwrap();
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["code"], "template_too_expensive");
        assert!(
            body["message"].as_str().unwrap().contains("limit"),
            "{body}"
        );
    }
    let slowest = health.await.unwrap();
    eprintln!("slowest /healthz while four renders were refused: {slowest:?}");
    // The target is 50 ms on an idle machine; the bound leaves room for a test suite running beside it.
    assert!(
        slowest < Duration::from_millis(250),
        "/healthz took {slowest:?}"
    );
    let (_, outbox) = server.get("/v1/outbox").await.unwrap();
    assert_eq!(outbox["total"], 0, "nothing stored");

    let (status, body) = server
        .post("/v1/templates/loops/preview", &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(body["code"], "template_too_expensive", "{body}");
}

#[tokio::test]
async fn the_data_a_document_type_expects_is_published_and_a_missing_value_is_named_with_its_path()
{
    let server = start_server().await;
    let openapi: serde_json::Value = reqwest::get(format!("{}/openapi.json", server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schema = &openapi["components"]["schemas"]["DocumentData.sales-invoice"];
    assert!(
        schema["properties"]["document"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("due_date")),
        "{schema}"
    );
    let (_, template) = server.get("/v1/templates/sales-invoice").await.unwrap();
    assert_eq!(
        template["data_schema"]["properties"]["document"]["properties"]["lines"]["items"]["required"],
        json!(["description", "quantity", "unit_price", "amount"])
    );

    // The preview says which sample data it used.
    let (status, preview) = server
        .post("/v1/templates/sales-invoice/preview", &json!({}))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(preview["data"]["document"]["number"], "103001");

    let mut data = preview["data"].clone();
    data["document"]["lines"][0]
        .as_object_mut()
        .unwrap()
        .remove("amount");
    let (status, error) = server
        .post(
            "/v1/templates/sales-invoice/preview",
            &json!({"data": data}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "data.document.lines[0].amount", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("is missing"), "{message}");
    assert!(message.contains("template needs it (line "), "{message}");
}

/// Renders `html` in headless Chromium with a viewport `width` pixels wide and returns by how many
/// pixels the page is wider than the viewport (0: no horizontal scrolling).
fn overflow_in_chromium(html: &str, width: u32) -> i64 {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("page.html");
    let probe = "<script>document.documentElement.setAttribute('data-overflow', \
                 String(document.documentElement.scrollWidth - window.innerWidth));</script>";
    let html = match html.rfind("</body>") {
        Some(end) => format!("{}{probe}{}", &html[..end], &html[end..]),
        None => format!("{html}{probe}"),
    };
    std::fs::write(&page, html).unwrap();
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--hide-scrollbars",
            &format!("--window-size={width},900"),
            &format!("--user-data-dir={}", dir.path().join("profile").display()),
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (.ci/run installs it)");
    let dom = String::from_utf8_lossy(&output.stdout);
    let start = dom
        .find("data-overflow=\"")
        .unwrap_or_else(|| panic!("no measurement: {dom}"))
        + "data-overflow=\"".len();
    dom[start..start + dom[start..].find('"').unwrap()]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn every_built_in_template_reads_on_a_375_pixel_phone_without_sideways_scrolling() {
    let server = start_server().await;
    let (_, templates) = server.get("/v1/templates").await.unwrap();
    let built_in: Vec<String> = templates
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["built_in"] == true)
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(built_in.len(), 6);
    for id in built_in {
        let (status, preview) = server
            .post(&format!("/v1/templates/{id}/preview"), &json!({}))
            .await
            .unwrap();
        assert_eq!(status, 200);
        let html = preview["html"].as_str().unwrap();
        assert_eq!(
            overflow_in_chromium(html, 375),
            0,
            "{id} scrolls sideways at 375 px"
        );
    }
    // The measurement can fail: a fixed 600-pixel table does scroll.
    assert!(
        overflow_in_chromium(
            "<html><body><table width=\"600\"><tr><td>x</td></tr></table></body></html>",
            375
        ) > 0
    );
}
