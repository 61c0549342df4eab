//! Attachments: streamed into the blob store, attached by id, delivered intact, refused precisely when
//! too large or malformed, and never silently dropped — a file that cannot be read fails the message.

mod common;

use common::{id_of, start_server, start_server_with, upload};
use mail_parser::MimeHeaders;
use mailroom_testkit::{MailroomServer, SmtpSink};
use serde_json::{Value, json};
use std::time::Duration;

fn pseudo_random_bytes(length: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn blob_files(server: &MailroomServer) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |entries| {
            entries
                .map(|e| e.unwrap().path())
                .map(|p| if p.is_dir() { count(&p) } else { 1 })
                .sum()
        })
    }
    count(&server.data_dir().join("blobs"))
}

#[tokio::test]
async fn an_uploaded_file_is_attached_delivered_intact_and_downloadable() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("docs", sink.port, json!({}))
        .await
        .unwrap();
    let pdf = pseudo_random_bytes(300_000);
    let (status, attachment) = upload(
        &server,
        &server.token,
        "Rechnung 103001.pdf",
        "application/pdf",
        pdf.clone(),
    )
    .await;
    assert_eq!(status, 201, "{attachment}");
    assert_eq!(attachment["size"], 300_000);
    let accepted = server
        .send(&json!({"to": ["c@example.com"], "subject": "Ihre Rechnung", "text": "anbei", "attachments": [{"id": attachment["id"]}]}))
        .await
        .unwrap();
    let message = server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(message["attachments"][0]["filename"], "Rechnung 103001.pdf");

    let received = sink.messages().unwrap().remove(0);
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    let part = parsed.attachment(0).expect("the attachment arrived");
    assert_eq!(part.attachment_name(), Some("Rechnung 103001.pdf"));
    assert_eq!(part.content_type().unwrap().subtype(), Some("pdf"));
    assert!(
        part.contents() == pdf.as_slice(),
        "the attachment arrived byte for byte"
    );
    assert_eq!(parsed.body_text(0).unwrap().trim(), "anbei");

    let downloaded = reqwest::Client::new()
        .get(format!(
            "{}/v1/attachments/{}",
            server.base_url,
            id_of(&attachment)
        ))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.headers()["content-type"], "application/pdf");
    assert!(downloaded.bytes().await.unwrap() == pdf);
}

#[tokio::test]
async fn uploads_and_messages_over_the_attachment_limit_are_refused_with_the_limit_named_and_nothing_kept()
 {
    let server = start_server_with("max_attachment_bytes = 1000").await;
    let (status, error) = upload(
        &server,
        &server.token,
        "big.bin",
        "application/octet-stream",
        vec![7u8; 2000],
    )
    .await;
    assert_eq!(status, 413, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("1000 bytes"),
        "{error}"
    );
    assert_eq!(
        blob_files(&server),
        0,
        "a refused upload leaves no file behind"
    );

    let (_, first) = upload(
        &server,
        &server.token,
        "a.bin",
        "application/octet-stream",
        vec![1u8; 600],
    )
    .await;
    let (_, second) = upload(
        &server,
        &server.token,
        "b.bin",
        "application/octet-stream",
        vec![2u8; 600],
    )
    .await;
    let (status, error) = server
        .post("/v1/messages", &json!({"to": ["c@example.com"], "subject": "s", "text": "t", "attachments": [{"id": first["id"]}, {"id": second["id"]}]}))
        .await
        .unwrap();
    assert_eq!(status, 413, "{error}");
    assert!(error["message"].as_str().unwrap().contains("1000 bytes"));
    let (_, outbox) = server
        .get("/v1/outbox?status=queued,sending,sent,failed,cancelled")
        .await
        .unwrap();
    assert_eq!(outbox["total"], 0, "nothing was stored");
}

#[tokio::test]
async fn unknown_attachments_and_unsafe_file_names_are_refused() {
    let server = start_server().await;
    let (status, error) = server
        .post("/v1/messages", &json!({"to": ["c@example.com"], "subject": "s", "text": "t", "attachments": [{"id": "00000000-0000-0000-0000-000000000000"}]}))
        .await
        .unwrap();
    assert_eq!(status, 422);
    assert_eq!(error["field"], "attachments[0].id");
    for name in [
        "../etc/passwd",
        "dir\\\\file.txt",
        "bad\\u{7}bell.txt",
        "..",
    ] {
        let (status, error) =
            upload(&server, &server.token, name, "text/plain", b"x".to_vec()).await;
        assert_eq!(status, 422, "{name}: {error}");
        assert_eq!(error["field"], "filename");
    }
    let (status, error) = upload(
        &server,
        &server.token,
        "ok.txt",
        "not a type",
        b"x".to_vec(),
    )
    .await;
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("content_type"))
    );
    assert_eq!(blob_files(&server), 0);
}

#[tokio::test]
async fn a_message_whose_attachment_cannot_be_read_fails_with_that_reason_and_is_never_sent_without_it()
 {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("docs", sink.port, json!({}))
        .await
        .unwrap();
    let (_, attachment) = upload(
        &server,
        &server.token,
        "terms.pdf",
        "application/pdf",
        b"%PDF-1.4 terms".to_vec(),
    )
    .await;
    let sha = attachment["sha256"].as_str().unwrap();
    std::fs::remove_file(server.data_dir().join("blobs").join(&sha[..2]).join(sha)).unwrap();
    let accepted = server
        .send(&json!({"to": ["c@example.com"], "subject": "s", "text": "t", "attachments": [{"id": attachment["id"]}]}))
        .await
        .unwrap();
    let failed = server
        .wait_for_status(&id_of(&accepted), "failed", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(failed["attempts"][0]["outcome"], "permanent");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("\"terms.pdf\" cannot be read"),
        "{failed:#}"
    );
    assert!(sink.messages().unwrap().is_empty());
}

#[tokio::test]
async fn an_attachment_is_downloadable_only_by_its_uploader_and_those_who_may_see_its_message() {
    let server = start_server().await;
    let (_, user) = server
        .post(
            "/v1/users",
            &json!({"name": "other", "licence": "full", "permission_sets": ["email-send"]}),
        )
        .await
        .unwrap();
    let (_, token) = server
        .post(
            &format!("/v1/users/{}/tokens", id_of(&user)),
            &json!({"name": "t"}),
        )
        .await
        .unwrap();
    let other = token["token"].as_str().unwrap();
    server
        .call(
            reqwest::Method::PUT,
            &format!("/v1/view-policies/{}", id_of(&user)),
            Some(&json!({"policy": "own"})),
            &[],
        )
        .await
        .unwrap();
    let (_, admins_file) = upload(
        &server,
        &server.token,
        "private.pdf",
        "application/pdf",
        b"secret".to_vec(),
    )
    .await;
    let download = |token: String, id: String| {
        let url = format!("{}/v1/attachments/{id}", server.base_url);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        download(server.token.clone(), id_of(&admins_file)).await,
        200
    );
    assert_eq!(download(other.to_owned(), id_of(&admins_file)).await, 404);
    // Nor may they attach it to their own message.
    let (status, error) = reqwest::Client::new()
        .post(format!("{}/v1/messages", server.base_url))
        .bearer_auth(other)
        .json(&json!({"to": ["c@example.com"], "subject": "s", "text": "t", "attachments": [{"id": admins_file["id"]}]}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 422, "{:?}", error.text().await);
    let (_, own_file) = upload(&server, other, "mine.txt", "text/plain", b"mine".to_vec()).await;
    assert_eq!(download(other.to_owned(), id_of(&own_file)).await, 200);
}

#[tokio::test]
async fn uploads_no_message_refers_to_are_collected_with_their_files_and_used_ones_are_kept() {
    let server = common::start_server_with_engine("attachment_retention_ms = 300").await;
    let (_, used) = upload(
        &server,
        &server.token,
        "used.pdf",
        "application/pdf",
        b"used content".to_vec(),
    )
    .await;
    let (_, unused) = upload(
        &server,
        &server.token,
        "unused.pdf",
        "application/pdf",
        b"unused content".to_vec(),
    )
    .await;
    server.send(&json!({"to": ["c@example.com"], "subject": "s", "text": "t", "attachments": [{"id": used["id"]}]})).await.unwrap();
    assert_eq!(blob_files(&server), 2);
    mailroom_testkit::wait_until(
        Duration::from_secs(10),
        "the unused upload collected",
        || async {
            let (status, _) = server
                .get(&format!("/v1/attachments/{}", id_of(&unused)))
                .await?;
            Ok(status == 404 && blob_files(&server) == 1)
        },
    )
    .await
    .unwrap();
    let (status, _) = server
        .get(&format!("/v1/attachments/{}", id_of(&used)))
        .await
        .unwrap();
    assert_eq!(status, 200, "an attachment a message refers to is kept");
}

#[tokio::test]
async fn a_scenarios_default_attachments_go_with_its_messages_unless_the_sender_removes_them() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("orders", sink.port, json!({}))
        .await
        .unwrap();
    let (_, terms) = upload(
        &server,
        &server.token,
        "terms.pdf",
        "application/pdf",
        b"%PDF terms".to_vec(),
    )
    .await;
    let (_, catalogue) = upload(
        &server,
        &server.token,
        "catalogue.pdf",
        "application/pdf",
        b"%PDF catalogue".to_vec(),
    )
    .await;
    let put = |scenario: &str, id: &Value, mode: &str| {
        let path = format!(
            "/v1/scenarios/{scenario}/attachments/{}",
            id.as_str().unwrap()
        );
        let body = json!({"mode": mode});
        let server = &server;
        async move {
            server
                .call(reqwest::Method::PUT, &path, Some(&body), &[])
                .await
                .unwrap()
                .0
        }
    };
    assert_eq!(put("sales-order", &terms["id"], "default").await, 204);
    assert_eq!(put("sales-order", &catalogue["id"], "optional").await, 204);
    assert_eq!(
        put("default", &terms["id"], "default").await,
        422,
        "never for the default scenario"
    );
    let (_, listed) = server
        .get("/v1/scenarios/sales-order/attachments")
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    let names = |message: &Value| -> Vec<String> {
        message["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["filename"].as_str().unwrap().to_owned())
            .collect()
    };
    let plain = server.send(&json!({"to": ["c@example.com"], "subject": "order", "text": "t", "scenario": "sales-order"})).await.unwrap();
    let plain = server
        .wait_for_status(&id_of(&plain), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        names(&plain),
        ["terms.pdf"],
        "default attachments are added, optional ones are not"
    );

    let picked = server
        .send(&json!({"to": ["c@example.com"], "subject": "order", "text": "t", "scenario": "sales-order", "attachments": [{"id": catalogue["id"]}]}))
        .await
        .unwrap();
    assert_eq!(
        names(
            &server
                .wait_for_status(&id_of(&picked), "sent", Duration::from_secs(20))
                .await
                .unwrap()
        ),
        ["catalogue.pdf", "terms.pdf"]
    );

    let removed = server
        .send(&json!({"to": ["c@example.com"], "subject": "order", "text": "t", "scenario": "sales-order", "exclude_attachments": [{"id": terms["id"]}]}))
        .await
        .unwrap();
    assert!(
        names(
            &server
                .wait_for_status(&id_of(&removed), "sent", Duration::from_secs(20))
                .await
                .unwrap()
        )
        .is_empty()
    );

    let other = server
        .send(&json!({"to": ["c@example.com"], "subject": "other", "text": "t"}))
        .await
        .unwrap();
    assert!(
        names(
            &server
                .wait_for_status(&id_of(&other), "sent", Duration::from_secs(20))
                .await
                .unwrap()
        )
        .is_empty(),
        "other scenarios get none"
    );

    let (status, error) = server
        .post("/v1/messages", &json!({"to": ["c@example.com"], "subject": "o", "text": "t", "scenario": "sales-order", "exclude_attachments": [{"id": catalogue["id"]}]}))
        .await
        .unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("exclude_attachments[0].id")),
        "{error}"
    );
    // The delivered order really carries the terms.
    let first = sink
        .messages()
        .unwrap()
        .into_iter()
        .find(|m| m.message_id.as_deref() == plain["message_id"].as_str())
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&first.raw)
        .unwrap();
    assert_eq!(parsed.attachment(0).unwrap().contents(), b"%PDF terms");
}

#[tokio::test]
async fn an_image_can_be_shown_inside_the_html_body_by_its_content_id() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("brand", sink.port, json!({}))
        .await
        .unwrap();
    let png = [
        &[0x89u8, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a][..],
        &pseudo_random_bytes(2048),
    ]
    .concat();
    let (_, logo) = upload(&server, &server.token, "logo.png", "image/png", png.clone()).await;
    let html = "<p><img src=\"cid:logo@cronus\" alt=\"Cronus\"></p><p>Hello</p>";
    let accepted = server
        .send(&json!({"to": ["c@example.com"], "subject": "branded", "html": html, "attachments": [{"id": logo["id"], "content_id": "logo@cronus"}]}))
        .await
        .unwrap();
    server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    let received = sink.messages().unwrap().remove(0);
    let raw = String::from_utf8_lossy(&received.raw).to_string();
    assert!(
        raw.contains("multipart/related"),
        "the HTML and its image are related parts"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    assert!(parsed.body_html(0).unwrap().contains("cid:logo@cronus"));
    let image = parsed
        .attachments()
        .find(|p| p.content_id() == Some("logo@cronus"))
        .expect("the inline image part");
    assert_eq!(
        image.content_disposition().map(|d| d.ctype()),
        Some("inline")
    );
    assert!(image.contents() == png.as_slice());

    let (status, error) = server
        .post("/v1/messages", &json!({"to": ["c@example.com"], "subject": "s", "html": "<p>no image</p>", "attachments": [{"id": logo["id"], "content_id": "logo"}]}))
        .await
        .unwrap();
    assert_eq!(
        (status, error["field"].as_str()),
        (422, Some("attachments[0].content_id")),
        "{error}"
    );
}

#[tokio::test]
async fn a_file_may_be_uploaded_as_multipart_form_data() {
    let server = start_server().await;
    let contents = pseudo_random_bytes(70_000);
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnot the file\r\n",
    );
    body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"report.csv\"\r\nContent-Type: text/csv\r\n\r\n");
    body.extend_from_slice(&contents);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let response = reqwest::Client::new()
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(&server.token)
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let attachment: Value = response.json().await.unwrap();
    assert_eq!(
        (
            attachment["filename"].as_str(),
            attachment["content_type"].as_str()
        ),
        (Some("report.csv"), Some("text/csv"))
    );
    assert_eq!(attachment["size"], 70_000);
    let downloaded = reqwest::Client::new()
        .get(format!(
            "{}/v1/attachments/{}",
            server.base_url,
            id_of(&attachment)
        ))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(downloaded == contents);

    let response = reqwest::Client::new()
        .post(format!("{}/v1/attachments", server.base_url))
        .bearer_auth(&server.token)
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body("--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nno file here\r\n--XyZ--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    assert_eq!(blob_files(&server), 1);
}

#[tokio::test]
async fn an_upload_declared_as_a_multipart_is_kept_and_sent_as_opaque_bytes() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = start_server().await;
    server
        .add_default_smtp_account("files", sink.port, json!({}))
        .await
        .unwrap();
    // A multipart needs a boundary that a stored file does not have: written as a leaf it would be
    // dropped by readers; it goes as application/octet-stream, byte for byte.
    let bytes = b"--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n".to_vec();
    let (status, attachment) = upload(
        &server,
        &server.token,
        "parts.mime",
        "multipart/mixed; boundary=x",
        bytes.clone(),
    )
    .await;
    assert_eq!(status, 201, "{attachment}");
    assert_eq!(attachment["content_type"], "application/octet-stream");
    let accepted = server
        .send(
            &json!({"to": ["a@example.com"], "subject": "parts", "text": "see attached",
                      "attachments": [{"id": attachment["id"]}]}),
        )
        .await
        .unwrap();
    server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    let received = sink.messages().unwrap().remove(0);
    let parsed = mail_parser::MessageParser::default()
        .parse(&received.raw)
        .unwrap();
    let part = parsed.attachment(0).expect("the attachment arrives");
    assert_eq!(part.contents(), bytes.as_slice());
}
