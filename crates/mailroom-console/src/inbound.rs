//! Received mail: each mailbox's messages, one message with its correlation and records, and a
//! conversation's outbound and inbound mail in time order.

use crate::{Shared, problem, signed_in};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;
use uuid::Uuid;

pub(crate) async fn mailboxes(State(console): Shared, headers: HeaderMap) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, "/v1/mailboxes").await;
    console.render(
        "inbound_mailboxes.html",
        json!({"title": "Received mail", "user": current.user.name, "csrf": current.csrf(),
               "allowed": status == StatusCode::OK, "items": answer}),
    )
}

pub(crate) async fn mailbox(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console
        .call(&current, &format!("/v1/mailboxes/{id}/messages?limit=100"))
        .await;
    if status != StatusCode::OK {
        return problem(
            status,
            answer["message"]
                .as_str()
                .unwrap_or("This mailbox cannot be shown."),
        );
    }
    console.render(
        "inbound_list.html",
        json!({"title": "Received mail", "user": current.user.name, "csrf": current.csrf(),
               "items": answer["items"], "more": answer["has_more"]}),
    )
}

pub(crate) async fn message(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, &format!("/v1/inbound/{id}")).await;
    if status != StatusCode::OK {
        return problem(
            status,
            answer["message"]
                .as_str()
                .unwrap_or("This message cannot be shown."),
        );
    }
    console.render(
        "inbound_message.html",
        crate::merge(
            crate::frame(
                &current,
                answer["subject"].as_str().unwrap_or("Received"),
                query.as_deref(),
            ),
            json!({"m": answer}),
        ),
    )
}

pub(crate) async fn conversation(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console
        .call(&current, &format!("/v1/conversations/{id}"))
        .await;
    if status != StatusCode::OK {
        return problem(
            status,
            answer["message"]
                .as_str()
                .unwrap_or("This conversation cannot be shown."),
        );
    }
    console.render(
        "conversation.html",
        json!({"title": "Conversation", "user": current.user.name, "csrf": current.csrf(), "c": answer}),
    )
}

/// The message as received, downloaded through the console (the API's answer passed on).
pub(crate) async fn raw(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    match signed_in(&console, &headers).await {
        Ok(current) => {
            console
                .pass_through(&current, &format!("/v1/inbound/{id}/raw"))
                .await
        }
        Err(response) => response,
    }
}

/// One attachment part, downloaded through the console.
pub(crate) async fn part(
    State(console): Shared,
    headers: HeaderMap,
    Path((id, part)): Path<(Uuid, String)>,
) -> Response {
    if part.is_empty()
        || !part
            .split('.')
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return problem(StatusCode::NOT_FOUND, "No such part.");
    }
    match signed_in(&console, &headers).await {
        Ok(current) => {
            console
                .pass_through(&current, &format!("/v1/inbound/{id}/parts/{part}"))
                .await
        }
        Err(response) => response,
    }
}

/// Reply, reply to all, or forward a received message, written in the console (the API quotes the
/// original and threads the answer into its conversation).
pub(crate) async fn answer(
    State(console): Shared,
    headers: HeaderMap,
    Path((id, how)): Path<(Uuid, String)>,
    body: String,
) -> Response {
    crate::form_post(&console, &headers, &body, |fields| {
        let back = format!("/console/inbound/{id}");
        let verb = match how.as_str() {
            "reply" | "reply-all" | "forward" => how.clone(),
            _ => return Err((back, "Not done: reply, reply-all or forward.".into())),
        };
        let to: Vec<String> = crate::field(fields, "to")
            .split([',', ';'])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if verb == "forward" && to.is_empty() {
            return Err((back, "Not done: say whom to forward it to.".into()));
        }
        Ok(crate::FormCall {
            method: axum::http::Method::POST,
            path: format!("/v1/inbound/{id}/{verb}"),
            body: Some(json!({"text": crate::field(fields, "text"), "to": to})),
            done: if verb == "forward" {
                "Forwarded.".into()
            } else {
                "Reply sent.".into()
            },
            back,
        })
    })
    .await
}
