//! Outbox, sent archive and one message: lists with the API's filters and paging, bulk retry and
//! cancel, a message's content, records and every attempt with the server's reply, and its actions.

use crate::{Shared, encode, field, form_fields, notice, problem, refuse_foreign_form, signed_in};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

/// The list filters the API takes, passed through as given.
const FILTERS: &[&str] = &[
    "status",
    "account_id",
    "scenario",
    "from",
    "to",
    "recipient",
    "subject",
    "cursor",
];

/// The filters of a page's query: (name, value) for the known names that have a value.
fn filters(query: Option<&str>) -> Vec<(String, String)> {
    form_fields(query.unwrap_or_default())
        .into_iter()
        .filter(|(name, value)| FILTERS.contains(&name.as_str()) && !value.trim().is_empty())
        .collect()
}

async fn list(
    state: Shared,
    headers: HeaderMap,
    query: Option<String>,
    which: &'static str,
) -> Response {
    let State(console) = state;
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let filters = filters(query.as_deref());
    let mut path = format!("/v1/{which}?limit=50");
    for (name, value) in &filters {
        path.push_str(&format!("&{name}={}", encode(value)));
    }
    let ((status, answer), (_, accounts)) = tokio::join!(
        console.call(&current, &path),
        console.call(&current, "/v1/accounts"),
    );
    let notice = notice(query.as_deref());
    let next = answer["next_cursor"].as_str().map(|cursor| {
        let mut query: Vec<String> = filters
            .iter()
            .filter(|(name, _)| name != "cursor")
            .map(|(name, value)| format!("{name}={}", encode(value)))
            .collect();
        query.push(format!("cursor={cursor}"));
        format!("/console/{which}?{}", query.join("&"))
    });
    let value_of = |name: &str| {
        filters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut page = console.render(
        "messages.html",
        json!({
            "title": if which == "outbox" { "Outbox" } else { "Sent" },
            "which": which,
            "user": current.user.name,
            "csrf": current.csrf(),
            "allowed": status != StatusCode::FORBIDDEN,
            "error": (status != StatusCode::OK && status != StatusCode::FORBIDDEN)
                .then(|| answer["message"].as_str().unwrap_or("The API refused the filters.").to_owned()),
            "items": answer["items"],
            "accounts": accounts.as_array().cloned().unwrap_or_default(),
            "total": answer["total"],
            "estimate": answer["total_is_estimate"],
            "next": next,
            "notice": notice,
            "filter": {
                "status": value_of("status"), "account_id": value_of("account_id"),
                "scenario": value_of("scenario"), "from": value_of("from"), "to": value_of("to"),
                "recipient": value_of("recipient"), "subject": value_of("subject"),
            },
        }),
    );
    if status == StatusCode::FORBIDDEN {
        *page.status_mut() = StatusCode::FORBIDDEN;
    }
    page
}

pub(crate) async fn outbox(
    state: Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    list(state, headers, query, "outbox").await
}

pub(crate) async fn sent(state: Shared, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    list(state, headers, query, "sent").await
}

pub(crate) async fn message(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console
        .call(&current, &format!("/v1/messages/{}", encode(&id)))
        .await;
    if status != StatusCode::OK {
        return problem(
            status,
            answer["message"]
                .as_str()
                .unwrap_or("This message cannot be shown."),
        );
    }
    let notice = notice(query.as_deref());
    console.render(
        "message.html",
        json!({
            "title": answer["subject"],
            "user": current.user.name,
            "csrf": current.csrf(),
            "m": answer,
            "notice": notice,
        }),
    )
}

/// What an action is called in the API and in a notice.
fn action(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "retry" => Some(("retry", "queued again")),
        "cancel" => Some(("cancel", "cancelled")),
        "confirm" => Some(("confirm", "confirmed")),
        _ => None,
    }
}

/// Retry, cancel or confirm one message; back to its page with what happened.
pub(crate) async fn act(
    State(console): Shared,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    body: String,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = form_fields(&body);
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &field(&fields, "csrf")) {
        return refusal;
    }
    if name == "resend" {
        return resend(&console, &current, &id).await;
    }
    let Some((verb, done)) = action(&name) else {
        return problem(StatusCode::NOT_FOUND, "No such action.");
    };
    let (status, answer) = console
        .send(
            &current,
            Method::POST,
            &format!("/v1/messages/{}/{verb}", encode(&id)),
            None,
        )
        .await;
    let notice = if status.is_success() {
        format!("The message was {done}.")
    } else {
        answer["message"]
            .as_str()
            .unwrap_or("The action was refused.")
            .to_owned()
    };
    Redirect::to(&format!(
        "/console/messages/{}?notice={}",
        encode(&id),
        encode(&notice)
    ))
    .into_response()
}

/// A new message with the same recipients, content, scenario, account, records and attachments
/// (default attachments the original left off are left off again); to its page.
async fn resend(console: &crate::Console, current: &crate::Session, id: &str) -> Response {
    let back = |said: &str, to: &str| {
        Redirect::to(&format!(
            "/console/messages/{}?notice={}",
            encode(to),
            encode(said)
        ))
        .into_response()
    };
    let (status, original) = console
        .call(current, &format!("/v1/messages/{}", encode(id)))
        .await;
    if !status.is_success() {
        return back(&crate::outcome(status, &original, ""), id);
    }
    if original["content_deleted_at"].is_string() {
        return back(
            "Not done: retention deleted this message's content; there is nothing to send again.",
            id,
        );
    }
    let attached: Vec<Value> = original["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| json!({"id": a["id"]}))
        .collect();
    let scenario = original["scenario"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let mut left_off = Vec::new();
    if scenario != "default" {
        let (_, defaults) = console
            .call(
                current,
                &format!("/v1/scenarios/{}/attachments", encode(&scenario)),
            )
            .await;
        for file in defaults.as_array().into_iter().flatten() {
            if file["mode"] == "default" && !attached.iter().any(|a| a["id"] == file["id"]) {
                left_off.push(json!({"id": file["id"]}));
            }
        }
    }
    let mut body = json!({
        "to": original["to"], "cc": original["cc"], "bcc": original["bcc"],
        "reply_to": original["reply_to"], "subject": original["subject"],
        "scenario": scenario, "account_id": original["account_id"],
        "related_records": original["related_records"], "attachments": attached,
        "exclude_attachments": left_off,
    });
    for part in ["text", "html"] {
        if original[part].is_string() {
            body[part] = original[part].clone();
        }
    }
    let (status, answer) = console
        .send(current, Method::POST, "/v1/messages", Some(body))
        .await;
    match (status.is_success(), answer["id"].as_str()) {
        (true, Some(new_id)) => back("Sent again as this new message.", new_id),
        _ => back(&crate::outcome(status, &answer, ""), id),
    }
}

/// Retry or cancel the messages ticked in a list; back to the list with a count of each outcome.
pub(crate) async fn bulk(State(console): Shared, headers: HeaderMap, body: String) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = form_fields(&body);
    let field = |name: &str| field(&fields, name);
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &field("csrf")) {
        return refusal;
    }
    let Some((verb, done)) = action(&field("action")).filter(|(verb, _)| *verb != "confirm") else {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "Choose retry or cancel.");
    };
    let back = if field("from") == "sent" {
        "sent"
    } else {
        "outbox"
    };
    let ids: Vec<String> = fields
        .iter()
        .filter(|(n, _)| n == "id")
        .map(|(_, v)| v.clone())
        .take(500)
        .collect();
    let (mut succeeded, mut refused) = (0, Vec::new());
    for id in &ids {
        let (status, answer) = console
            .send(
                &current,
                Method::POST,
                &format!("/v1/messages/{}/{verb}", encode(id)),
                None,
            )
            .await;
        if status.is_success() {
            succeeded += 1;
        } else {
            refused.push(Value::from(answer["message"].as_str().unwrap_or("refused")));
        }
    }
    let mut notice = format!("{succeeded} of {} {done}.", ids.len());
    if let Some(first) = refused.first().and_then(Value::as_str) {
        notice.push_str(&format!(" {} refused, e.g.: {first}", refused.len()));
    }
    Redirect::to(&format!("/console/{back}?notice={}", encode(&notice))).into_response()
}
