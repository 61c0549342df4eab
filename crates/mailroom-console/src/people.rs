//! Users (permission sets, licence, tokens, view policy), teams, the audit log, alerts and
//! contacts — each change one API call as the signed-in user.

use crate::{FormCall, Shared, encode, field, frame, listing, merge, required, signed_in};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// The permission sets the console offers as checkboxes (`read <type>` sets are typed in).
const PERMISSION_SETS: &[&str] = &[
    "email-admin",
    "email-setup",
    "email-send",
    "user-admin",
    "mailbox-approve",
    "delegated-mailbox-approver",
    "mail-client-app",
];

/// The checked permission sets of a form, and its `read` field (comma-separated record types).
fn permission_sets(fields: &[(String, String)]) -> Vec<String> {
    let mut sets: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n == "set")
        .map(|(_, v)| v.clone())
        .collect();
    sets.extend(
        field(fields, "read")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| format!("read {t}")),
    );
    sets
}

pub(crate) async fn users(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, "/v1/users").await;
    console.render(
        "users.html",
        merge(
            frame(&current, "Users", query.as_deref()),
            json!({"allowed": status == StatusCode::OK, "items": answer, "sets": PERMISSION_SETS}),
        ),
    )
}

pub(crate) async fn create_user(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/users".to_owned();
        let name = required(fields, "name", &back)?;
        let email = field(fields, "contact_email");
        Ok(FormCall {
            method: Method::POST,
            path: "/v1/users".into(),
            body: Some(json!({"name": name, "licence": field(fields, "licence"),
                "contact_email": if email.trim().is_empty() { Value::Null } else { json!(email.trim()) },
                "permission_sets": permission_sets(fields)})),
            done: format!("User {name} added."),
            back,
        })
    })
    .await
}

/// One user: their settings, permission sets, view policy and tokens.
pub(crate) async fn user(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let id = encode(&id);
    let (user_path, tokens_path) = (format!("/v1/users/{id}"), format!("/v1/users/{id}/tokens"));
    let ((status, user), (_, tokens), (policies_status, policies)) = tokio::join!(
        console.call(&current, &user_path),
        console.call(&current, &tokens_path),
        console.call(&current, "/v1/view-policies"),
    );
    if status != StatusCode::OK && status != StatusCode::FORBIDDEN {
        return crate::problem(status, user["message"].as_str().unwrap_or("No such user."));
    }
    let held: Vec<String> = user["permission_sets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let read: Vec<&str> = held
        .iter()
        .filter_map(|s| s.strip_prefix("read "))
        .collect();
    let policy = policies
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["user"] == user["id"])
        .map(|p| p["policy"].clone());
    console.render(
        "user.html",
        merge(
            frame(&current, "User", query.as_deref()),
            json!({"allowed": status == StatusCode::OK, "u": user, "held": held, "read": read.join(", "),
                   "sets": PERMISSION_SETS, "tokens": tokens.as_array().cloned().unwrap_or_default(),
                   "policy": policy, "policies_allowed": policies_status == StatusCode::OK}),
        ),
    )
}

/// `update` (licence, enabled, contact, permission sets), `policy`, `revoke` (a token).
pub(crate) async fn user_act(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = format!("/console/users/{}", encode(&id));
        let user = encode(&id);
        Ok(match field(fields, "action").as_str() {
            "policy" => FormCall {
                method: Method::PUT,
                path: format!("/v1/view-policies/{user}"),
                body: Some(json!({"policy": field(fields, "policy")})),
                done: "View policy saved.".into(),
                back,
            },
            "revoke" => FormCall {
                method: Method::DELETE,
                path: format!("/v1/users/{user}/tokens/{}", encode(&field(fields, "token_id"))),
                body: None,
                done: "Token revoked.".into(),
                back,
            },
            _ => {
                let email = field(fields, "contact_email");
                FormCall {
                    method: Method::PATCH,
                    path: format!("/v1/users/{user}"),
                    body: Some(json!({"licence": field(fields, "licence"),
                        "enabled": fields.iter().any(|(n, v)| n == "enabled" && v == "on"),
                        "contact_email": if email.trim().is_empty() { Value::Null } else { json!(email.trim()) },
                        "permission_sets": permission_sets(fields)})),
                    done: "User saved.".into(),
                    back,
                }
            }
        })
    })
    .await
}

/// A new token for a user: its secret is shown on the page that answers, once.
pub(crate) async fn create_token(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = crate::form_fields(&body);
    if let Some(refusal) = crate::refuse_foreign_form(&headers, &current, &field(&fields, "csrf")) {
        return refusal;
    }
    let name = field(&fields, "name");
    let (status, answer) = console
        .send(
            &current,
            Method::POST,
            &format!("/v1/users/{}/tokens", encode(&id)),
            Some(json!({"name": name.trim()})),
        )
        .await;
    if !status.is_success() {
        let said = crate::outcome(status, &answer, "");
        return axum::response::Redirect::to(&format!(
            "/console/users/{}?notice={}",
            encode(&id),
            encode(&said)
        ))
        .into_response();
    }
    console.render(
        "token.html",
        merge(
            frame(&current, "New token", None),
            json!({"token": answer["token"], "name": answer["name"], "user_id": id}),
        ),
    )
}

pub(crate) async fn teams(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let ((status, teams), (_, users)) = tokio::join!(
        console.call(&current, "/v1/teams"),
        console.call(&current, "/v1/users"),
    );
    console.render(
        "teams.html",
        merge(
            frame(&current, "Teams", query.as_deref()),
            json!({"allowed": status == StatusCode::OK, "items": teams, "sets": PERMISSION_SETS,
                   "users": users.as_array().cloned().unwrap_or_default()}),
        ),
    )
}

/// `create` a team, or `update` one (members and permission sets).
pub(crate) async fn team_act(State(console): Shared, headers: HeaderMap, body: String) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/teams".to_owned();
        let members: Vec<&str> = fields
            .iter()
            .filter(|(n, _)| n == "member")
            .map(|(_, v)| v.as_str())
            .collect();
        Ok(match field(fields, "action").as_str() {
            "update" => FormCall {
                method: Method::PATCH,
                path: format!("/v1/teams/{}", encode(&required(fields, "id", &back)?)),
                body: Some(json!({"members": members, "permission_sets": permission_sets(fields)})),
                done: "Team saved.".into(),
                back,
            },
            _ => {
                let name = required(fields, "name", &back)?;
                FormCall {
                    method: Method::POST,
                    path: "/v1/teams".into(),
                    body: Some(json!({"name": name, "members": members,
                                      "permission_sets": permission_sets(fields)})),
                    done: format!("Team {name} added."),
                    back,
                }
            }
        })
    })
    .await
}

pub(crate) async fn audit(
    state: Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    listing(
        state,
        headers,
        query,
        "/v1/audit?limit=100",
        "audit.html",
        "Audit log",
    )
    .await
}

/// The suppression list, newest first, with a form to add and a button to remove.
pub(crate) async fn suppressions(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let cursor = field(
        &crate::form_fields(query.as_deref().unwrap_or_default()),
        "cursor",
    );
    let mut path = "/v1/suppressions?limit=100".to_owned();
    if !cursor.is_empty() {
        path.push_str(&format!("&cursor={}", encode(&cursor)));
    }
    let ((status, answer), (_, unsubscribes)) = tokio::join!(
        console.call(&current, &path),
        console.call(&current, "/v1/unsubscribes?limit=100")
    );
    console.render(
        "suppressions.html",
        merge(
            frame(&current, "Suppressions", query.as_deref()),
            json!({"allowed": status == StatusCode::OK, "items": answer["items"], "next": answer["next_cursor"],
                   "unsubscribes": unsubscribes["items"]}),
        ),
    )
}

/// `add` (an address and why) or `remove` one.
pub(crate) async fn suppression_act(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/suppressions".to_owned();
        let address = required(fields, "address", &back)?;
        if field(fields, "action") == "resubscribe" {
            let list = required(fields, "list", &back)?;
            return Ok(FormCall {
                method: Method::DELETE,
                path: format!("/v1/unsubscribes/{}/{}", encode(&list), encode(&address)),
                body: None,
                done: format!("{address} is on {list} again."),
                back,
            });
        }
        let path = format!("/v1/suppressions/{}", encode(&address));
        Ok(if field(fields, "action") == "remove" {
            FormCall {
                method: Method::DELETE,
                path,
                body: None,
                done: format!("{address} may be mailed again."),
                back,
            }
        } else {
            let detail = field(fields, "detail");
            FormCall {
                method: Method::PUT,
                path,
                body: Some(json!({"detail": if detail.trim().is_empty() { Value::Null } else { json!(detail.trim()) }})),
                done: format!("{address} is suppressed."),
                back,
            }
        })
    })
    .await
}

pub(crate) async fn nodes(
    state: Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    listing(state, headers, query, "/v1/nodes", "nodes.html", "Nodes").await
}

pub(crate) async fn alerts(
    state: Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    listing(
        state,
        headers,
        query,
        "/v1/alerts?include_dismissed=true",
        "alerts.html",
        "Alerts",
    )
    .await
}

pub(crate) async fn dismiss_alert(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/alerts".to_owned();
        Ok(FormCall {
            method: Method::POST,
            path: format!(
                "/v1/alerts/{}/dismiss",
                encode(&required(fields, "id", &back)?)
            ),
            body: None,
            done: "Alert dismissed.".into(),
            back,
        })
    })
    .await
}

/// Contacts: look one up by its id, save one (addresses and records), delete one.
pub(crate) async fn contacts(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let wanted = field(
        &crate::form_fields(query.as_deref().unwrap_or_default()),
        "id",
    );
    let found = if wanted.trim().is_empty() {
        None
    } else {
        Some(
            console
                .call(&current, &format!("/v1/contacts/{}", encode(wanted.trim())))
                .await,
        )
    };
    let (contact, error) = match found {
        Some((StatusCode::OK, contact)) => (Some(contact), None),
        Some((StatusCode::FORBIDDEN, _)) => (
            None,
            Some("Your permissions do not include contacts.".to_owned()),
        ),
        Some((_, answer)) => (
            None,
            Some(
                answer["message"]
                    .as_str()
                    .unwrap_or("No such contact.")
                    .to_owned(),
            ),
        ),
        None => (None, None),
    };
    console.render(
        "contacts.html",
        merge(
            frame(&current, "Contacts", query.as_deref()),
            json!({"wanted": wanted, "contact": contact, "error": error}),
        ),
    )
}

pub(crate) async fn contact_act(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let id = field(fields, "id").trim().to_owned();
        let back = "/console/contacts".to_owned();
        if id.is_empty() {
            return Err((back, "Not done: fill in the contact's id.".into()));
        }
        let path = format!("/v1/contacts/{}", encode(&id));
        if field(fields, "action") == "delete" {
            return Ok(FormCall { method: Method::DELETE, path, body: None, done: format!("Contact {id} deleted."), back });
        }
        let list = |name: &str| -> Vec<String> {
            field(fields, name)
                .split([',', '\n'])
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut records = Vec::new();
        for record in list("records") {
            let Some((kind, record_id)) = record.split_once(':') else {
                return Err((back, format!("Not done: write records as type:id (e.g. customer:C-1), not {record:?}.")));
            };
            records.push(json!({"type": kind.trim(), "id": record_id.trim()}));
        }
        let name = field(fields, "name");
        Ok(FormCall {
            method: Method::PUT,
            path,
            body: Some(json!({"name": if name.trim().is_empty() { Value::Null } else { json!(name.trim()) },
                              "addresses": list("addresses"), "related_records": records})),
            done: format!("Contact {id} saved."),
            back: back.clone(),
        })
    })
    .await
}
