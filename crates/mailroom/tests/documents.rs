//! Sending a business document in one call, as each customer's sending profile prefers.

mod common;

use common::{id_of, start_server};
use mailroom_testkit::{MailroomServer, SmtpSink};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

async fn upload_pdf(server: &MailroomServer, name: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(&server.token)
        .header("content-type", "application/pdf")
        .header(
            "content-disposition",
            format!("attachment; filename=\"{name}\""),
        )
        .body(format!("%PDF-1.7 {name}").into_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

fn invoice(customer: &str, pdf: &Value) -> Value {
    json!({
        "document_type": "sales-invoice", "number": "103001",
        "customer": {"id": customer, "name": "Adatum Corporation", "email": "ap@adatum.example"},
        "contact": {"id": "CT-7", "name": "Robert Townes", "email": "robert@adatum.example"},
        "salesperson": {"id": "SP-1", "name": "Annette Hill"},
        "data": {"company": {"name": "Cronus Trading Ltd."},
                 "document": {"due_date": "2026-12-22", "currency": "EUR", "total": 2070.0, "payment_link": "https://pay.example.com/103001",
                              "lines": [{"description": "ATHENS Desk", "quantity": 2, "unit_price": 649.4, "amount": 1298.8}]}},
        "attachments": [{"id": pdf["id"]}]
    })
}

#[tokio::test]
async fn an_invoice_is_sent_to_its_contact_with_its_pdf_template_scenario_and_related_records() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    let billing = server
        .add_smtp_account("billing", sink.port, json!({}))
        .await
        .unwrap();
    server
        .call(
            Method::PUT,
            "/v1/scenarios/sales-invoice",
            Some(&json!({"account_id": billing["id"]})),
            &[],
        )
        .await
        .unwrap();
    let pdf = upload_pdf(&server, "Invoice 103001.pdf").await;
    let (status, sent) = server
        .post("/v1/documents/send", &invoice("C10000", &pdf))
        .await
        .unwrap();
    assert_eq!(status, 202, "{sent}");
    assert_eq!(
        (sent["status"].as_str(), sent["profile"].as_str()),
        (Some("queued"), Some("default"))
    );
    assert_eq!(sent["scenario"], "sales-invoice");
    assert_eq!(sent["account_id"], billing["id"]);
    let message = server
        .wait_for_status(&id_of(&sent), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        message["subject"],
        "Invoice 103001 from Cronus Trading Ltd."
    );
    assert_eq!(message["template"]["id"], "sales-invoice");
    let records: Vec<(String, String, String)> = message["related_records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["type"].as_str().unwrap().into(),
                r["id"].as_str().unwrap().into(),
                r["relation"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        records.contains(&("sales-invoice".into(), "103001".into(), "primary".into())),
        "{records:?}"
    );
    for (kind, id) in [
        ("customer", "C10000"),
        ("contact", "CT-7"),
        ("salesperson", "SP-1"),
    ] {
        assert!(
            records.contains(&(kind.into(), id.into(), "related".into())),
            "{kind} missing: {records:?}"
        );
    }
    let received = sink.messages().unwrap().remove(0);
    assert_eq!(
        received.rcpt_to,
        ["robert@adatum.example"],
        "the contact's address is preferred"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    assert!(parsed.body_html(0).unwrap().contains("ATHENS Desk"));
    assert_eq!(
        parsed.attachment(0).unwrap().contents(),
        b"%PDF-1.7 Invoice 103001.pdf"
    );
    let (_, timeline) = server
        .get("/v1/records/sales-invoice/103001/messages")
        .await
        .unwrap();
    assert_eq!(timeline["total"], 1);
}

#[tokio::test]
async fn a_customer_who_wants_confirmation_gets_a_draft_that_is_sent_once_confirmed() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("docs", sink.port, json!({}))
        .await
        .unwrap();
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/sending-profiles/confirm-first",
            Some(&json!({"email": "after-confirmation", "attachment": "pdf"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/customers/C20000/sending-profile",
            Some(&json!({"profile": "confirm-first"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let pdf = upload_pdf(&server, "inv.pdf").await;
    let (status, draft) = server
        .post("/v1/documents/send", &invoice("C20000", &pdf))
        .await
        .unwrap();
    assert_eq!(
        (status, draft["status"].as_str()),
        (202, Some("draft")),
        "{draft}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        server.message(&id_of(&draft)).await.unwrap()["status"],
        "draft"
    );
    assert!(sink.messages().unwrap().is_empty(), "a draft is not sent");
    let (_, outbox) = server.get("/v1/outbox").await.unwrap();
    assert_eq!(
        outbox["items"][0]["status"], "draft",
        "drafts show in the outbox"
    );
    let (status, _) = server
        .post(
            &format!("/v1/messages/{}/confirm", id_of(&draft)),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    server
        .wait_for_status(&id_of(&draft), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    let (status, _) = server
        .post(
            &format!("/v1/messages/{}/confirm", id_of(&draft)),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "only drafts can be confirmed");
}

#[tokio::test]
async fn profiles_without_email_unknown_document_types_and_missing_pdfs_are_refused_and_nothing_is_queued()
 {
    let server = start_server().await;
    let pdf = upload_pdf(&server, "inv.pdf").await;
    server
        .call(
            Method::PUT,
            "/v1/sending-profiles/paper",
            Some(&json!({"email": "none", "attachment": "none"})),
            &[],
        )
        .await
        .unwrap();
    server
        .call(
            Method::PUT,
            "/v1/customers/C30000/sending-profile",
            Some(&json!({"profile": "paper"})),
            &[],
        )
        .await
        .unwrap();
    let (status, error) = server
        .post("/v1/documents/send", &invoice("C30000", &pdf))
        .await
        .unwrap();
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("profile_no_email")),
        "{error}"
    );

    let mut unknown = invoice("C10000", &pdf);
    unknown["document_type"] = json!("warranty-claim");
    let (status, error) = server.post("/v1/documents/send", &unknown).await.unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("document_type")),
        "{error}"
    );

    let mut without_pdf = invoice("C10000", &pdf);
    without_pdf["attachments"] = json!([]);
    let (status, error) = server
        .post("/v1/documents/send", &without_pdf)
        .await
        .unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("attachments")),
        "{error}"
    );

    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/customers/C1/sending-profile",
            Some(&json!({"profile": "no-such-profile"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (_, outbox) = server
        .get("/v1/outbox?status=draft,queued,sending,sent,failed,cancelled")
        .await
        .unwrap();
    assert_eq!(outbox["total"], 0, "nothing was queued");
}

#[tokio::test]
async fn a_template_made_for_the_document_type_and_scenario_is_preferred_over_the_general_one() {
    let server = start_server().await;
    let pdf = upload_pdf(&server, "inv.pdf").await;
    let specific = json!({"document_type": "sales-invoice", "scenario": "sales-invoice", "subject": "Rechnung {{ document.number }}",
                          "html": "<p>Guten Tag {{ customer.name }}</p>"});
    let (status, _) = server
        .call(
            Method::PUT,
            "/v1/templates/invoice-de",
            Some(&specific),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let (_, sent) = server
        .post("/v1/documents/send", &invoice("C10000", &pdf))
        .await
        .unwrap();
    let message = server.message(&id_of(&sent)).await.unwrap();
    assert_eq!(message["template"]["id"], "invoice-de", "{message:#}");
    assert_eq!(message["subject"], "Rechnung 103001");

    let mut in_other_scenario = invoice("C10000", &pdf);
    in_other_scenario["scenario"] = json!("default");
    let (_, sent) = server
        .post("/v1/documents/send", &in_other_scenario)
        .await
        .unwrap();
    assert_eq!(
        server.message(&id_of(&sent)).await.unwrap()["template"]["id"],
        "sales-invoice"
    );
}
