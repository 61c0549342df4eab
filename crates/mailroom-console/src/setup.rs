//! Setting email up: scenarios and their default attachments, sending profiles, server profiles,
//! and the organisation's email and correlation settings. Every change is one API call as the
//! signed-in user (`form_post`), so the console allows exactly what the API allows them.

use crate::{
    FormCall, Shared, encode, field, frame, merge, outcome, problem, refuse_foreign_form, required,
    signed_in,
};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use uuid::Uuid;

fn allowed(status: StatusCode) -> bool {
    status == StatusCode::OK
}

fn checked(fields: &[(String, String)], name: &str) -> bool {
    fields.iter().any(|(n, v)| n == name && v == "on")
}

/// Scenarios, the account each goes through, and a form for a custom one.
pub(crate) async fn scenarios(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let ((status, scenarios), (_, accounts)) = tokio::join!(
        console.call(&current, "/v1/scenarios"),
        console.call(&current, "/v1/accounts"),
    );
    console.render(
        "scenarios.html",
        merge(
            frame(&current, "Scenarios", query.as_deref()),
            json!({"allowed": allowed(status), "items": scenarios,
                   "accounts": accounts.as_array().cloned().unwrap_or_default()}),
        ),
    )
}

/// `assign` (an account, or none; a description for a new custom scenario) and `unassign`.
pub(crate) async fn scenario_act(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/scenarios".to_owned();
        let name = required(fields, "name", &back)?;
        let path = format!("/v1/scenarios/{}", encode(&name));
        Ok(match field(fields, "action").as_str() {
            "unassign" => FormCall {
                method: Method::DELETE,
                path,
                body: None,
                done: format!("{name} goes through the default account now."),
                back,
            },
            "unsubscribe" => {
                let account = field(fields, "account_id");
                let on = field(fields, "unsubscribe") == "on";
                FormCall {
                    method: Method::PUT,
                    path,
                    body: Some(json!({"account_id": if account.is_empty() { Value::Null } else { json!(account) },
                                      "unsubscribe": on})),
                    done: if on {
                        format!("{name}'s mail carries a one-click unsubscribe link now.")
                    } else {
                        format!("{name}'s mail carries no unsubscribe link now.")
                    },
                    back,
                }
            }
            _ => {
                let account = field(fields, "account_id");
                let mut body = json!({"account_id": if account.is_empty() { Value::Null } else { json!(account) }});
                let description = field(fields, "description");
                if !description.trim().is_empty() {
                    body["description"] = json!(description.trim());
                }
                FormCall {
                    method: Method::PUT,
                    path,
                    body: Some(body),
                    done: format!("{name} saved."),
                    back,
                }
            }
        })
    })
    .await
}

/// One scenario's default attachments: each with its mode, an upload form.
pub(crate) async fn scenario(
    State(console): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, attachments) = console
        .call(
            &current,
            &format!("/v1/scenarios/{}/attachments", encode(&name)),
        )
        .await;
    console.render(
        "scenario.html",
        merge(
            frame(&current, &format!("Scenario {name}"), query.as_deref()),
            json!({"allowed": status != StatusCode::FORBIDDEN, "name": name, "encoded": encode(&name),
                   "error": (!status.is_success() && status != StatusCode::FORBIDDEN).then(|| attachments["message"].clone()),
                   "items": attachments.as_array().cloned().unwrap_or_default()}),
        ),
    )
}

/// A file for a scenario: uploaded as it came (multipart, streamed to the API's upload), then
/// attached to the scenario as a default attachment. The CSRF token rides in the query, since the
/// body is the file.
pub(crate) async fn scenario_upload(
    State(console): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let csrf = field(
        &crate::form_fields(query.as_deref().unwrap_or_default()),
        "csrf",
    );
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &csrf) {
        return refusal;
    }
    let back = format!("/console/scenarios/{}", encode(&name));
    let (status, uploaded) = console
        .forward(&current, "/v1/attachments", &headers, body)
        .await;
    let said = if status.is_success() {
        let id = uploaded["id"].as_str().unwrap_or_default();
        let (status, answer) = console
            .send(
                &current,
                Method::PUT,
                &format!("/v1/scenarios/{}/attachments/{id}", encode(&name)),
                Some(json!({"mode": "default"})),
            )
            .await;
        outcome(
            status,
            &answer,
            &format!(
                "{} is a default attachment of {name}.",
                uploaded["filename"].as_str().unwrap_or("The file")
            ),
        )
    } else {
        outcome(status, &uploaded, "")
    };
    Redirect::to(&format!("{back}?notice={}", encode(&said))).into_response()
}

/// `mode` (default ↔ optional) and `remove` of one attachment of a scenario.
pub(crate) async fn scenario_attachment_act(
    State(console): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = format!("/console/scenarios/{}", encode(&name));
        let id = required(fields, "attachment_id", &back)?;
        let path = format!(
            "/v1/scenarios/{}/attachments/{}",
            encode(&name),
            encode(&id)
        );
        Ok(match field(fields, "action").as_str() {
            "remove" => FormCall {
                method: Method::DELETE,
                path,
                body: None,
                done: "Removed.".into(),
                back,
            },
            _ => FormCall {
                method: Method::PUT,
                path,
                body: Some(json!({"mode": field(fields, "mode")})),
                done: "Saved.".into(),
                back,
            },
        })
    })
    .await
}

/// Sending profiles (how documents go to customers) and a form to save one.
pub(crate) async fn sending_profiles(
    state: Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    crate::listing(
        state,
        headers,
        query,
        "/v1/sending-profiles",
        "sending_profiles.html",
        "Sending profiles",
    )
    .await
}

pub(crate) async fn sending_profile_save(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/sending-profiles".to_owned();
        let name = required(fields, "name", &back)?;
        Ok(FormCall {
            method: Method::PUT,
            path: format!("/v1/sending-profiles/{}", encode(&name)),
            body: Some(
                json!({"email": field(fields, "email"), "attachment": field(fields, "attachment"),
                              "is_default": checked(fields, "is_default")}),
            ),
            done: format!("Sending profile {name} saved."),
            back,
        })
    })
    .await
}

/// Server profiles (the mail servers mailboxes connect to): list, add, delete, test all mailboxes.
pub(crate) async fn server_profiles(
    state: Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    crate::listing(
        state,
        headers,
        query,
        "/v1/server-profiles",
        "server_profiles.html",
        "Server profiles",
    )
    .await
}

/// An endpoint of the form; a port that is not a number is refused in words.
fn endpoint(fields: &[(String, String)], side: &str) -> Result<Value, String> {
    let port = field(fields, &format!("{side}_port"));
    let port = match port.trim() {
        "" => None,
        text => Some(text.parse::<u16>().map_err(|_| {
            format!("Not done: the {side} port must be a number from 1 to 65535, not {text:?}.")
        })?),
    };
    Ok(
        json!({"host": field(fields, &format!("{side}_host")).trim(), "port": port,
              "security": field(fields, &format!("{side}_security"))}),
    )
}

pub(crate) async fn server_profile_act(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = crate::form_fields(&body);
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &field(&fields, "csrf")) {
        return refusal;
    }
    let back = "/console/server-profiles";
    let id = field(&fields, "id");
    let (method, path, body, done) = match field(&fields, "action").as_str() {
        "create" => {
            let (incoming, outgoing) =
                match (endpoint(&fields, "incoming"), endpoint(&fields, "outgoing")) {
                    (Ok(incoming), Ok(outgoing)) => (incoming, outgoing),
                    (Err(said), _) | (_, Err(said)) => {
                        return Redirect::to(&format!("{back}?notice={}", encode(&said)))
                            .into_response();
                    }
                };
            (
                Method::POST,
                "/v1/server-profiles".to_owned(),
                Some(
                    json!({"name": field(&fields, "name").trim(), "kind": "imap-smtp",
                            "incoming": incoming, "outgoing": outgoing,
                            "is_default_for_new_mailboxes": checked(&fields, "is_default")}),
                ),
                "Server profile added.",
            )
        }
        "delete" => (
            Method::DELETE,
            format!("/v1/server-profiles/{}", encode(&id)),
            None,
            "Server profile deleted.",
        ),
        "test" => {
            let (status, answer) = console
                .send(
                    &current,
                    Method::POST,
                    &format!("/v1/server-profiles/{}/test-mailboxes", encode(&id)),
                    None,
                )
                .await;
            if status.is_success()
                && let Some(job) = answer["id"].as_str()
            {
                return Redirect::to(&format!("/console/jobs/{}", encode(job))).into_response();
            }
            let said = outcome(status, &answer, "");
            return Redirect::to(&format!("{back}?notice={}", encode(&said))).into_response();
        }
        _ => return crate::problem(StatusCode::BAD_REQUEST, "Unknown action."),
    };
    let (status, answer) = console.send(&current, method, &path, body).await;
    let said = outcome(status, &answer, done);
    Redirect::to(&format!("{back}?notice={}", encode(&said))).into_response()
}

/// The organisation's email settings and correlation settings.
pub(crate) async fn settings(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let ((email_status, email), (_, correlation), (_, profiles)) = tokio::join!(
        console.call(&current, "/v1/settings/email"),
        console.call(&current, "/v1/settings/correlation"),
        console.call(&current, "/v1/server-profiles"),
    );
    console.render(
        "settings.html",
        merge(
            frame(&current, "Organisation settings", query.as_deref()),
            json!({"allowed": allowed(email_status), "email": email, "correlation": correlation,
                   "profiles": profiles.as_array().cloned().unwrap_or_default()}),
        ),
    )
}

pub(crate) async fn settings_save(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/settings".to_owned();
        Ok(match field(fields, "form").as_str() {
            "correlation" => {
                let days = field(fields, "smart_match_days");
                let Ok(days) = days.trim().parse::<u32>() else {
                    return Err((back, format!("Not done: smart matching needs a whole number of days, not {days:?}.")));
                };
                FormCall {
                method: Method::PUT,
                path: "/v1/settings/correlation".into(),
                body: Some(json!({
                    "subject_token": checked(fields, "subject_token"),
                    "subject_token_prefix": field(fields, "subject_token_prefix").trim(),
                    "plus_addressing": checked(fields, "plus_addressing"),
                    "smart_match_days": days,
                })),
                done: "Correlation settings saved.".into(),
                back,
            }
            }
            _ => {
                let profile = field(fields, "default_profile_id");
                FormCall {
                    method: Method::PUT,
                    path: "/v1/settings/email".into(),
                    body: Some(json!({
                        "default_profile_id": if profile.is_empty() { Value::Null } else { json!(profile) },
                        "incoming": field(fields, "incoming"),
                        "outgoing": field(fields, "outgoing"),
                        "act": field(fields, "act"),
                        "process_only_approved_users": checked(fields, "process_only_approved_users"),
                        "process_only_approved_queues": checked(fields, "process_only_approved_queues"),
                        "require_privilege_to_self_approve": checked(fields, "require_privilege_to_self_approve"),
                    })),
                    done: "Email settings saved.".into(),
                    back,
                }
            }
        })
    })
    .await
}

/// DKIM keys by domain, each with the TXT record to publish; forms to generate or import a key,
/// and to activate (rotate) or delete one.
pub(crate) async fn dkim(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, "/v1/dkim/keys").await;
    console.render(
        "dkim.html",
        merge(
            frame(&current, "DKIM keys", query.as_deref()),
            json!({"allowed": allowed(status), "items": answer["items"]}),
        ),
    )
}

/// `generate`, `import` (a PEM), `activate` or `delete` a key.
pub(crate) async fn dkim_act(State(console): Shared, headers: HeaderMap, body: String) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/dkim".to_owned();
        let action = field(fields, "action");
        if action == "activate" || action == "delete" {
            let id = required(fields, "id", &back)?;
            let (method, path, done) = if action == "activate" {
                (
                    Method::POST,
                    format!("/v1/dkim/keys/{}/activate", encode(&id)),
                    "The key signs its domain's mail from now on.",
                )
            } else {
                (
                    Method::DELETE,
                    format!("/v1/dkim/keys/{}", encode(&id)),
                    "The key is deleted.",
                )
            };
            return Ok(FormCall {
                method,
                path,
                body: None,
                done: done.into(),
                back,
            });
        }
        let domain = required(fields, "domain", &back)?;
        let mut body = json!({"domain": domain.trim()});
        let selector = field(fields, "selector");
        if !selector.trim().is_empty() {
            body["selector"] = json!(selector.trim());
        }
        if action == "import" {
            body["private_key_pem"] = json!(required(fields, "private_key_pem", &back)?);
        } else {
            body["algorithm"] = json!(field(fields, "algorithm"));
        }
        Ok(FormCall {
            method: Method::POST,
            path: "/v1/dkim/keys".into(),
            body: Some(body),
            done: format!(
                "A key for {} is stored: publish its TXT record.",
                domain.trim()
            ),
            back,
        })
    })
    .await
}

/// App registrations (OAuth applications): the list, a form to add one, delete.
pub(crate) async fn app_registrations(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, "/v1/app-registrations").await;
    // Where this browser reached mailroom: the callback the provider must know.
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let redirect_uri = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|host| {
            format!(
                "{}://{host}/oauth/callback",
                if https { "https" } else { "http" }
            )
        })
        .unwrap_or_default();
    console.render(
        "app_registrations.html",
        merge(
            frame(&current, "App registrations", query.as_deref()),
            json!({"allowed": allowed(status), "items": answer["items"], "redirect_uri": redirect_uri}),
        ),
    )
}

/// `add` or `delete` a registration.
pub(crate) async fn app_registration_act(
    State(console): Shared,
    headers: HeaderMap,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = "/console/app-registrations".to_owned();
        if field(fields, "action") == "delete" {
            let id = required(fields, "id", &back)?;
            return Ok(FormCall {
                method: Method::DELETE,
                path: format!("/v1/app-registrations/{}", encode(&id)),
                body: None,
                done: "The app registration is deleted.".into(),
                back,
            });
        }
        let mut body = json!({
            "name": required(fields, "name", &back)?,
            "provider": field(fields, "provider"),
            "client_id": required(fields, "client_id", &back)?,
            "redirect_uri": required(fields, "redirect_uri", &back)?,
        });
        for name in ["client_secret", "tenant", "discovery_url", "authority"] {
            let value = field(fields, name);
            if !value.trim().is_empty() {
                body[name] = json!(if name == "client_secret" {
                    value
                } else {
                    value.trim().to_owned()
                });
            }
        }
        Ok(FormCall {
            method: Method::POST,
            path: "/v1/app-registrations".into(),
            body: Some(body),
            done: "The app registration is stored: verify it.".into(),
            back,
        })
    })
    .await
}

/// Checks a registration against its provider and shows each check with its advice.
pub(crate) async fn app_registration_verify(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, registration) = console
        .call(&current, &format!("/v1/app-registrations/{id}"))
        .await;
    if status != StatusCode::OK {
        return problem(
            status,
            registration["message"]
                .as_str()
                .unwrap_or("No such registration."),
        );
    }
    let (_, outcome) = console
        .send(
            &current,
            Method::POST,
            &format!("/v1/app-registrations/{id}/verify"),
            None,
        )
        .await;
    console.render(
        "app_registration_verify.html",
        merge(
            frame(&current, "Verify an app registration", None),
            json!({"registration": registration, "outcome": outcome}),
        ),
    )
}

/// Connect a mailbox with OAuth: the API starts the flow as the signed-in user, and the browser
/// goes to its first stop (which ties the flow to this browser) and on to the provider.
pub(crate) async fn connect_mailbox(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    connect(
        &console,
        &headers,
        &format!("/v1/oauth/connect?purpose=mailbox&mailbox={id}"),
    )
    .await
}

/// Connect an account with OAuth (an SMTP account with XOAUTH2, a delegated Microsoft 365 account).
pub(crate) async fn connect_account(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    connect(
        &console,
        &headers,
        &format!("/v1/oauth/connect?account={id}"),
    )
    .await
}

async fn connect(console: &crate::Console, headers: &HeaderMap, path: &str) -> Response {
    let current = match signed_in(console, headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, started) = console.call(&current, path).await;
    let start = started["authorization_url"]
        .as_str()
        .and_then(|url| url.find("/oauth/start/").map(|at| url[at..].to_owned()));
    match (status, start) {
        (StatusCode::OK, Some(path)) => (
            StatusCode::SEE_OTHER,
            [(axum::http::header::LOCATION, path)],
        )
            .into_response(),
        _ => problem(
            status,
            started["message"]
                .as_str()
                .unwrap_or("The mailbox cannot be connected."),
        ),
    }
}
