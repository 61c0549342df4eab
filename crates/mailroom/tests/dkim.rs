//! DKIM: mail from a domain with a key is signed when it is composed, and an independent verifier
//! (dkimpy, given the TXT record mailroom says to publish) accepts the signature — straight from
//! mailroom and after a trip through Postfix; a rotation switches selectors only when activated.

mod common;

use common::{id_of, ok};
use mailroom_testkit::{MailroomServer, SmtpSink};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// dkimpy's verdict on every signature of `raw`, as "<selector> pass|fail…" lines.
fn dkimpy(raw: &[u8], records: &BTreeMap<String, String>) -> Vec<String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), raw).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scripts/dkim_verify.py");
    let output = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(file.path())
        .arg(serde_json::to_string(records).unwrap())
        .output()
        .expect("running /usr/bin/python3 (Debian python3-dkim)");
    assert!(
        output.status.success(),
        "dkim_verify.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn record_of(key: &Value) -> (String, String) {
    (
        key["dns"]["name"].as_str().unwrap().to_owned(),
        key["dns"]["value"].as_str().unwrap().to_owned(),
    )
}

/// Sends one message and returns its bytes as the sink received them.
async fn send_and_receive(server: &MailroomServer, sink: &SmtpSink, subject: &str) -> Vec<u8> {
    let accepted = server
        .send(&json!({"to": ["ann@customer.example"], "subject": subject, "text": "Please find the invoice attached.\nRegards"}))
        .await
        .unwrap();
    let sent = server
        .wait_for_status(&id_of(&accepted), "sent", Duration::from_secs(20))
        .await
        .unwrap();
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    let mut raw = None;
    mailroom_testkit::wait_until(Duration::from_secs(20), "the message at the sink", || {
        let found = sink
            .messages()
            .unwrap()
            .into_iter()
            .find(|m| m.message_id.as_deref() == Some(message_id.as_str()));
        let done = found.is_some();
        if let Some(message) = found {
            raw = Some(message.raw);
        }
        async move { Ok(done) }
    })
    .await
    .unwrap();
    raw.unwrap()
}

#[tokio::test]
async fn mail_is_signed_with_the_domains_active_key_and_dkimpy_verifies_it_through_a_rotation() {
    let sink = SmtpSink::start(&[]).unwrap();
    let server = common::start_server().await;
    server
        .add_default_smtp_account(
            "billing",
            sink.port,
            json!({"email_address": "billing@cronus.example"}),
        )
        .await
        .unwrap();

    let unsigned = send_and_receive(&server, &sink, "Before any key").await;
    assert!(!String::from_utf8_lossy(&unsigned).contains("DKIM-Signature"));

    let rsa = ok(
        &server,
        Method::POST,
        "/v1/dkim/keys",
        Some(json!({"domain": "Cronus.example", "selector": "s1"})),
    )
    .await;
    assert_eq!(
        (
            rsa["domain"].as_str(),
            rsa["algorithm"].as_str(),
            rsa["active"].as_bool()
        ),
        (Some("cronus.example"), Some("rsa-sha256"), Some(true)),
        "{rsa}"
    );
    assert_eq!(rsa["dns"]["name"], "s1._domainkey.cronus.example");
    assert!(
        rsa["dns"]["value"]
            .as_str()
            .unwrap()
            .starts_with("v=DKIM1; k=rsa; p=MIIBIjAN"),
        "a 2048-bit SubjectPublicKeyInfo: {rsa}"
    );
    let mut records = BTreeMap::from([record_of(&rsa)]);

    let signed = send_and_receive(&server, &sink, "Invoice 103001").await;
    assert_eq!(dkimpy(&signed, &records), ["s1 pass"]);
    let text = String::from_utf8_lossy(&signed).into_owned();
    assert!(text.contains("c=relaxed/relaxed"), "{text}");
    // The verifier is not a rubber stamp: a changed subject fails.
    let tampered = text.replace("Invoice 103001", "Invoice 999999");
    assert!(dkimpy(tampered.as_bytes(), &records)[0].starts_with("s1 fail"));

    // Rotation: a second key waits until activated; then mail is signed with it.
    let ed = ok(
        &server,
        Method::POST,
        "/v1/dkim/keys",
        Some(json!({"domain": "cronus.example", "selector": "s2", "algorithm": "ed25519-sha256"})),
    )
    .await;
    assert_eq!(ed["active"], false, "{ed}");
    assert!(
        ed["dns"]["value"]
            .as_str()
            .unwrap()
            .starts_with("v=DKIM1; k=ed25519; p=")
    );
    records.extend([record_of(&ed)]);
    let still_rsa = send_and_receive(&server, &sink, "Before the switch").await;
    assert_eq!(dkimpy(&still_rsa, &records), ["s1 pass"]);

    let activated = ok(
        &server,
        Method::POST,
        &format!("/v1/dkim/keys/{}/activate", id_of(&ed)),
        None,
    )
    .await;
    assert_eq!(activated["active"], true);
    let ed_signed = send_and_receive(&server, &sink, "After the switch").await;
    assert_eq!(dkimpy(&ed_signed, &records), ["s2 pass"]);

    let listed = ok(&server, Method::GET, "/v1/dkim/keys", None).await;
    let listed_text = listed.to_string();
    assert!(!listed_text.contains("private"), "{listed}");
    let order: Vec<(&str, bool)> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["selector"].as_str().unwrap(),
                k["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(order, [("s2", true), ("s1", false)]);

    // The same selector twice, the active key of a domain with others: refused with their codes.
    let (status, taken) = server
        .call(
            Method::POST,
            "/v1/dkim/keys",
            Some(&json!({"domain": "cronus.example", "selector": "s1"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (status, taken["code"].as_str()),
        (409, Some("dkim_selector_taken"))
    );
    let (status, active) = server
        .call(
            Method::DELETE,
            &format!("/v1/dkim/keys/{}", id_of(&ed)),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (status, active["code"].as_str()),
        (409, Some("dkim_key_active"))
    );
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/v1/dkim/keys/{}", id_of(&rsa)),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let (status, invalid) = server
        .call(
            Method::POST,
            "/v1/dkim/keys",
            Some(&json!({"domain": "cronus.example", "selector": "s3", "private_key_pem": "not a key"})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (status, invalid["field"].as_str()),
        (422, Some("private_key")),
        "{invalid}"
    );
}

#[tokio::test]
async fn an_imported_key_signs_and_the_signature_survives_a_trip_through_postfix() {
    let sink = SmtpSink::start(&[]).unwrap();
    let postfix = mailroom_testkit::PostfixWithSasl::start("mailer", "pw", sink.port).unwrap();
    let server = common::start_server().await;
    server
        .add_default_smtp_account(
            "billing",
            postfix.port,
            json!({"email_address": "billing@cronus.example", "username": "mailer", "password": "pw"}),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("key.pem");
    let generated = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem_path)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let pem = std::fs::read_to_string(&pem_path).unwrap();
    assert!(pem.contains("BEGIN PRIVATE KEY"), "PKCS#8 from openssl");
    let key = ok(
        &server,
        Method::POST,
        "/v1/dkim/keys",
        Some(json!({"domain": "cronus.example", "selector": "imported", "private_key_pem": pem})),
    )
    .await;
    // The published key is the one openssl derives from the private key.
    let public = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem_path)
        .output()
        .unwrap();
    use base64::Engine as _;
    let expected = base64::engine::general_purpose::STANDARD.encode(&public.stdout);
    assert_eq!(
        key["dns"]["value"].as_str().unwrap(),
        format!("v=DKIM1; k=rsa; p={expected}")
    );

    let relayed = send_and_receive(&server, &sink, "Relayed invoice").await;
    // Postfix logs the relay once the sink has answered, which may be after the sink wrote it.
    let relayed_by_postfix = mailroom_testkit::wait_until(
        Duration::from_secs(10),
        "Postfix logging the relay",
        || async { Ok(postfix.log().contains("status=sent")) },
    )
    .await;
    assert!(
        relayed_by_postfix.is_ok(),
        "Postfix queued and relayed it: {}",
        postfix.log()
    );
    assert_eq!(
        dkimpy(&relayed, &BTreeMap::from([record_of(&key)])),
        ["imported pass"]
    );
}
