//! Who may do what: permissions on every route, the licence rule, tokens that expire or are revoked,
//! the audit log, and a matrix of users × view policies × messages through every listing route.

mod common;

use common::{id_of, start_server};
use mailroom_core::access::{Grants, PermissionSet, ViewPolicy, may_see};
use mailroom_testkit::MailroomServer;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

/// Creates a user and a token for them; returns (user id, token).
async fn user_with_token(
    server: &MailroomServer,
    name: &str,
    licence: &str,
    sets: &[&str],
) -> (String, String) {
    let (status, user) = server
        .post(
            "/v1/users",
            &json!({"name": name, "licence": licence, "permission_sets": sets}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{user}");
    let (status, token) = server
        .post(
            &format!("/v1/users/{}/tokens", id_of(&user)),
            &json!({"name": "test"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{token}");
    (id_of(&user), token["token"].as_str().unwrap().to_owned())
}

async fn call_as(
    server: &MailroomServer,
    token: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_route_refuses_a_user_without_its_permission_and_names_the_missing_one() {
    let server = start_server().await;
    let (_, token) = user_with_token(&server, "nobody", "full", &[]).await;
    let openapi: Value = reqwest::get(format!("{}/openapi.json", server.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = 0;
    for (path, item) in openapi["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = common::concrete_path(path);
        for method in item.as_object().unwrap().keys() {
            let (needed_method, _, needed) = mailroom_api::ROUTE_PERMISSIONS
                .iter()
                .find(|(m, p, _)| m.eq_ignore_ascii_case(method) && p == path)
                .unwrap_or_else(|| panic!("{method} {path} has no permission entry"));
            let (status, error) = call_as(
                &server,
                &token,
                Method::from_bytes(needed_method.as_bytes()).unwrap(),
                &concrete,
                Some(&json!({})),
            )
            .await;
            if *needed == mailroom_api::SIGNED_IN {
                // Open to every user; the handler limits them to their own mailbox, jobs and alerts.
                assert_ne!(
                    error["code"], "permission_missing",
                    "{method} {path}: {error}"
                );
                continue;
            }
            assert_eq!(status, 403, "{method} {path}: {error}");
            assert_eq!(error["code"], "permission_missing");
            assert!(
                error["message"].as_str().unwrap().contains(needed),
                "{method} {path} must name {needed}: {error}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} operations checked");
}

#[tokio::test]
async fn only_fully_licensed_users_may_send_through_the_organisations_accounts() {
    let server = start_server().await;
    let message = json!({"to": ["c@example.com"], "subject": "s", "text": "t"});
    for licence in ["limited", "guest", "delegated-admin", "external-accountant"] {
        let (_, token) = user_with_token(&server, licence, licence, &["email-send"]).await;
        let (status, error) = call_as(
            &server,
            &token,
            Method::POST,
            "/v1/messages",
            Some(&message),
        )
        .await;
        assert_eq!(status, 403, "{licence}: {error}");
        assert_eq!(error["code"], "licence_not_permitted");
        assert!(
            error["message"].as_str().unwrap().contains(licence),
            "{error}"
        );
    }
    let (_, token) = user_with_token(&server, "full", "full", &["email-send"]).await;
    let (status, _) = call_as(
        &server,
        &token,
        Method::POST,
        "/v1/messages",
        Some(&message),
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test]
async fn tokens_stop_working_when_they_expire_are_revoked_or_their_user_is_disabled() {
    let server = start_server().await;
    let (user_id, token) = user_with_token(&server, "sender", "full", &["email-send"]).await;
    assert_eq!(
        call_as(&server, &token, Method::GET, "/v1/outbox", None)
            .await
            .0,
        200
    );

    // Listed without the secret, stored only as a hash.
    let (_, tokens) = server
        .get(&format!("/v1/users/{user_id}/tokens"))
        .await
        .unwrap();
    assert!(tokens[0].get("token").is_none());
    let stored = server.stored_bytes().await.unwrap();
    for bytes in &stored {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "a token secret is stored"
        );
    }

    let token_id = id_of(&tokens[0]);
    let (status, revoked) = server
        .call(
            Method::DELETE,
            &format!("/v1/users/{user_id}/tokens/{token_id}"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    assert_eq!(
        call_as(&server, &token, Method::GET, "/v1/outbox", None)
            .await
            .0,
        401
    );

    let soon = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let soon = soon
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, short) = server
        .post(
            &format!("/v1/users/{user_id}/tokens"),
            &json!({"name": "short", "expires_at": soon}),
        )
        .await
        .unwrap();
    let short = short["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call_as(&server, &short, Method::GET, "/v1/outbox", None)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        call_as(&server, &short, Method::GET, "/v1/outbox", None)
            .await
            .0,
        401,
        "an expired token"
    );

    let (_, fresh) = server
        .post(
            &format!("/v1/users/{user_id}/tokens"),
            &json!({"name": "fresh"}),
        )
        .await
        .unwrap();
    let fresh = fresh["token"].as_str().unwrap().to_owned();
    assert_eq!(
        call_as(&server, &fresh, Method::GET, "/v1/outbox", None)
            .await
            .0,
        200
    );
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/v1/users/{user_id}"),
            Some(&json!({"enabled": false})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        call_as(&server, &fresh, Method::GET, "/v1/outbox", None)
            .await
            .0,
        401,
        "a disabled user"
    );
}

#[tokio::test]
async fn the_audit_log_records_who_changed_what_with_before_and_after_but_no_secrets() {
    let server = start_server().await;
    let account = server
        .add_smtp_account(
            "audited",
            2525,
            json!({"username": "u", "password": "very-secret-pw"}),
        )
        .await
        .unwrap();
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/v1/accounts/{}", id_of(&account)),
            Some(&json!({"rate_limit_per_minute": 30})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    server
        .call(
            Method::PUT,
            "/v1/view-policies/default",
            Some(&json!({"policy": "own"})),
            &[],
        )
        .await
        .unwrap();
    let (_, entries) = server.get("/v1/audit").await.unwrap();
    let entries = entries.as_array().unwrap();
    let update = entries
        .iter()
        .find(|e| e["action"] == "account.updated")
        .expect("the account change is audited");
    assert_eq!(update["before"]["rate_limit_per_minute"], 0);
    assert_eq!(update["after"]["rate_limit_per_minute"], 30);
    let (_, admins) = server.get("/v1/users").await.unwrap();
    assert_eq!(
        update["actor_id"], admins[0]["id"],
        "the bootstrap admin made the change"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "view_policy.set" && e["after"]["policy"] == "own")
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "token.created" || e["action"] == "account.created")
    );
    assert!(
        !Value::Array(entries.clone())
            .to_string()
            .contains("very-secret-pw")
    );
}

/// The messages of the matrix: their related record types, written by the admin.
const MATRIX: &[&[&str]] = &[
    &[],
    &["customer"],
    &["sales-invoice"],
    &["customer", "sales-invoice"],
    &["customer", "user"],
    &["user"],
];

async fn visible_ids(server: &MailroomServer, token: &str, route: &str) -> (BTreeSet<String>, i64) {
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut total = None;
    loop {
        let separator = if route.contains('?') { '&' } else { '?' };
        let path = match &cursor {
            Some(c) => format!("{route}{separator}limit=2&cursor={c}"),
            None => format!("{route}{separator}limit=2"),
        };
        let (status, page) = call_as(server, token, Method::GET, &path, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        let page_total = page["total"].as_i64().unwrap();
        assert_eq!(
            *total.get_or_insert(page_total),
            page_total,
            "the total is the same on every page"
        );
        for item in page["items"].as_array().unwrap() {
            ids.insert(id_of(item));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    (ids, total.unwrap_or(0))
}

#[tokio::test]
async fn each_user_sees_exactly_the_messages_their_view_policy_allows_through_every_listing_route()
{
    let server = start_server().await;
    let viewers = [
        ("reads-customers", vec!["email-send", "read customer"]),
        (
            "reads-both",
            vec!["email-send", "read customer", "read sales-invoice"],
        ),
        ("reads-nothing", vec!["email-send"]),
    ];
    let mut users = Vec::new();
    for (name, sets) in &viewers {
        let (id, token) = user_with_token(&server, name, "full", sets).await;
        let grants = Grants::new(
            sets.iter()
                .map(|s| s.parse::<PermissionSet>().unwrap())
                .collect(),
        );
        users.push((id, token, grants));
    }
    let (_, admins) = server.get("/v1/users").await.unwrap();
    let admin_id = id_of(&admins[0]);
    // (message id, author, related types)
    let mut messages: Vec<(String, String, Vec<&str>)> = Vec::new();
    for types in MATRIX {
        let related: Vec<Value> = types
            .iter()
            .enumerate()
            .map(|(n, t)| json!({"type": t, "id": format!("R{n}")}))
            .collect();
        let accepted = server.send(&json!({"to": ["c@example.com"], "subject": "m", "text": "t", "related_records": related})).await.unwrap();
        messages.push((id_of(&accepted), admin_id.clone(), types.to_vec()));
    }
    // One message written by the first viewer, about something they may not read.
    let (status, own) = call_as(&server, &users[0].1, Method::POST, "/v1/messages", Some(&json!({
        "to": ["c@example.com"], "subject": "mine", "text": "t", "related_records": [{"type": "sales-invoice", "id": "9"}]
    }))).await;
    assert_eq!(status, 202);
    messages.push((id_of(&own), users[0].0.clone(), vec!["sales-invoice"]));
    for (id, _, _) in &messages {
        server
            .wait_for_status(id, "sent", Duration::from_secs(10))
            .await
            .unwrap();
    }

    let policies = [
        ViewPolicy::Own,
        ViewPolicy::All,
        ViewPolicy::AllRelatedRecords,
        ViewPolicy::AnyRelatedRecord,
    ];
    for policy in policies {
        for (user_id, token, grants) in &users {
            let (status, _) = server
                .call(
                    Method::PUT,
                    &format!("/v1/view-policies/{user_id}"),
                    Some(&json!({"policy": policy.as_str()})),
                    &[],
                )
                .await
                .unwrap();
            assert_eq!(status, 200);
            let expected: BTreeSet<String> = messages
                .iter()
                .filter(|(_, author, types)| may_see(policy, user_id, grants, author, types))
                .map(|(id, _, _)| id.clone())
                .collect();
            for route in [
                "/v1/sent",
                "/v1/outbox?status=queued,sending,sent,failed,cancelled",
            ] {
                let (seen, total) = visible_ids(&server, token, route).await;
                assert_eq!(seen, expected, "{policy} for {user_id} through {route}");
                assert_eq!(
                    total,
                    expected.len() as i64,
                    "{policy}: the total does not leak"
                );
            }
            for (id, _, types) in &messages {
                let (status, _) = call_as(
                    &server,
                    token,
                    Method::GET,
                    &format!("/v1/messages/{id}"),
                    None,
                )
                .await;
                let visible = expected.contains(id);
                assert_eq!(
                    status,
                    if visible { 200 } else { 404 },
                    "{policy}: message about {types:?} for {user_id}"
                );
                let (status, _) = call_as(
                    &server,
                    token,
                    Method::POST,
                    &format!("/v1/messages/{id}/cancel"),
                    None,
                )
                .await;
                assert!(
                    if visible {
                        status == 409
                    } else {
                        status == 404
                    },
                    "{policy}: cancel of {types:?} answered {status}"
                );
            }
        }
    }

    // A user without a row of their own follows the default row; without one, all-related-records.
    let (newcomer_id, newcomer_token) = user_with_token(
        &server,
        "newcomer",
        "full",
        &["email-send", "read customer"],
    )
    .await;
    let newcomer_grants = Grants::new(vec![
        PermissionSet::EmailSend,
        PermissionSet::Read("customer".into()),
    ]);
    let expect = |policy: ViewPolicy| -> BTreeSet<String> {
        messages
            .iter()
            .filter(|(_, a, t)| may_see(policy, &newcomer_id, &newcomer_grants, a, t))
            .map(|(id, _, _)| id.clone())
            .collect()
    };
    assert_eq!(
        visible_ids(&server, &newcomer_token, "/v1/sent").await.0,
        expect(ViewPolicy::AllRelatedRecords)
    );
    for policy in policies {
        server
            .call(
                Method::PUT,
                "/v1/view-policies/default",
                Some(&json!({"policy": policy.as_str()})),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(
            visible_ids(&server, &newcomer_token, "/v1/sent").await.0,
            expect(policy),
            "default row {policy}"
        );
    }
}

#[tokio::test]
async fn the_mail_about_a_record_is_listed_as_the_caller_may_see_it() {
    let server = start_server().await;
    let about = |types: &[(&str, &str)]| -> Value {
        let related: Vec<Value> = types
            .iter()
            .map(|(t, id)| json!({"type": t, "id": id, "relation": "related"}))
            .collect();
        json!({"to": ["c@example.com"], "subject": "s", "text": "t", "related_records": related})
    };
    let invoice_to_c1 = server
        .send(&about(&[("sales-invoice", "103001"), ("customer", "C1")]))
        .await
        .unwrap();
    let quote_to_c1 = server
        .send(&about(&[("sales-quote", "Q7"), ("customer", "C1")]))
        .await
        .unwrap();
    server.send(&about(&[("customer", "C2")])).await.unwrap();

    let (status, list) = server
        .get("/v1/records/customer/C1/messages")
        .await
        .unwrap();
    assert_eq!(status, 200, "{list}");
    let ids: BTreeSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([id_of(&invoice_to_c1), id_of(&quote_to_c1)])
    );
    assert_eq!(list["total"], 2);
    assert_eq!(
        server
            .get("/v1/records/sales-invoice/103001/messages")
            .await
            .unwrap()
            .1["total"],
        1
    );
    assert_eq!(
        server
            .get("/v1/records/customer/nobody/messages")
            .await
            .unwrap()
            .1["total"],
        0
    );
    assert_eq!(
        server
            .get("/v1/records/Not%20A%20Type/1/messages")
            .await
            .unwrap()
            .0,
        422
    );

    // A user who may read customers but not quotes, under all-related-records, sees only the invoice mail
    // if they may read invoices too; here they may not, so neither.
    let (user_id, token) = user_with_token(
        &server,
        "c-reader",
        "full",
        &["email-send", "read customer", "read sales-invoice"],
    )
    .await;
    server
        .call(
            Method::PUT,
            &format!("/v1/view-policies/{user_id}"),
            Some(&json!({"policy": "all-related-records"})),
            &[],
        )
        .await
        .unwrap();
    let (_, theirs) = call_as(
        &server,
        &token,
        Method::GET,
        "/v1/records/customer/C1/messages",
        None,
    )
    .await;
    let ids: Vec<String> = theirs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, vec![id_of(&invoice_to_c1)]);
    assert_eq!(
        theirs["total"], 1,
        "the total does not count what the user may not see"
    );
}

#[tokio::test]
async fn a_token_that_would_already_have_expired_is_refused_at_creation() {
    let server = start_server().await;
    let (user_id, _) = user_with_token(&server, "sender", "full", &["email-send"]).await;
    let past = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    let past = past
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (status, body) = server
        .post(
            &format!("/v1/users/{user_id}/tokens"),
            &json!({"name": "stale", "expires_at": past}),
        )
        .await
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "expires_at");
    let (_, tokens) = server
        .get(&format!("/v1/users/{user_id}/tokens"))
        .await
        .unwrap();
    assert_eq!(tokens.as_array().unwrap().len(), 1, "nothing stored");
}

async fn admin_id(server: &MailroomServer) -> String {
    let (_, users) = server.get("/v1/users").await.unwrap();
    id_of(
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "admin")
            .unwrap(),
    )
}

#[tokio::test]
async fn the_last_enabled_admin_can_neither_be_disabled_nor_lose_email_admin() {
    let server = start_server().await;
    let admin = admin_id(&server).await;
    let path = format!("/v1/users/{admin}");
    for change in [
        json!({"enabled": false}),
        json!({"permission_sets": ["email-setup", "email-send"]}),
    ] {
        let (status, body) = server
            .call(Method::PATCH, &path, Some(&change), &[])
            .await
            .unwrap();
        assert_eq!(status, 409, "{change}: {body}");
        assert_eq!(body["code"], "last_admin");
    }
    let (_, still) = server.get(&path).await.unwrap();
    assert_eq!(still["enabled"], true);
    assert_eq!(still["permission_sets"], json!(["email-admin"]));

    // With a second admin, the first may step down.
    let (second, second_token) =
        user_with_token(&server, "second admin", "full", &["email-admin"]).await;
    let (status, _) = server
        .call(Method::PATCH, &path, Some(&json!({"enabled": false})), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    // …and then the second is the last one, even towards itself.
    let (status, body) = call_as(
        &server,
        &second_token,
        Method::PATCH,
        &format!("/v1/users/{second}"),
        Some(&json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test]
async fn admin_recover_re_enables_the_admin_user_and_prints_a_new_token_while_the_server_is_stopped()
 {
    let mut server = start_server().await;
    let admin = admin_id(&server).await;
    let (_, second_token) = user_with_token(&server, "other admin", "full", &["email-admin"]).await;
    // The other admin locks the owner out: disabled, and stripped of email-admin.
    let (status, _) = call_as(
        &server,
        &second_token,
        Method::PATCH,
        &format!("/v1/users/{admin}"),
        Some(&json!({"enabled": false, "permission_sets": ["email-send"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = server.get("/v1/users").await.unwrap();
    assert_eq!(status, 401, "the owner's token no longer works");

    let recover = |data_dir: &std::path::Path| {
        std::process::Command::new(common::binary())
            .args(["admin", "recover", "--data-dir"])
            .arg(data_dir)
            .env_remove("MAILROOM_SECRET_KEY")
            .env_remove("MAILROOM_DATABASE_URL")
            .output()
            .unwrap()
    };
    let refused = recover(server.data_dir());
    assert!(!refused.status.success(), "refused while the server runs");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("already serving"));

    server.terminate().unwrap();
    let recovered = recover(server.data_dir());
    let stdout = String::from_utf8_lossy(&recovered.stdout);
    assert!(
        recovered.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&recovered.stderr)
    );
    let token = stdout
        .split_whitespace()
        .find(|word| word.starts_with("mr_"))
        .expect("a token is printed")
        .to_owned();
    let written = std::fs::read_to_string(server.data_dir().join("admin-token")).unwrap();
    assert_eq!(written.trim(), token);

    server.restart().await.unwrap();
    let (status, me) = call_as(
        &server,
        &token,
        Method::GET,
        &format!("/v1/users/{admin}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["enabled"], true);
    assert!(
        me["permission_sets"]
            .as_array()
            .unwrap()
            .contains(&json!("email-admin"))
    );
    let (_, audit) = call_as(&server, &token, Method::GET, "/v1/audit", None).await;
    assert!(audit.to_string().contains("admin.recovered"));
}
