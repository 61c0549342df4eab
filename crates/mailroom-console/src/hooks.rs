//! Webhooks: the receivers, adding one (its secret shown once), one receiver's delivery log with
//! replays, enabling, disabling, rotating its secret, deleting it.

use crate::{FormCall, Shared, encode, field, frame, merge, signed_in};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

pub(crate) async fn list(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let ((status, hooks), (_, types)) = tokio::join!(
        console.call(&current, "/v1/webhooks"),
        console.call(&current, "/v1/webhooks/event-types"),
    );
    console.render(
        "webhooks.html",
        merge(
            frame(&current, "Webhooks", query.as_deref()),
            json!({"allowed": status == StatusCode::OK, "items": hooks,
                   "types": types.as_array().cloned().unwrap_or_default()}),
        ),
    )
}

/// Adds a receiver and shows its secret, once.
pub(crate) async fn create(State(console): Shared, headers: HeaderMap, body: String) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = crate::form_fields(&body);
    if let Some(refusal) = crate::refuse_foreign_form(&headers, &current, &field(&fields, "csrf")) {
        return refusal;
    }
    let events: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n == "event")
        .map(|(_, v)| v.as_str())
        .collect();
    let (status, answer) = console
        .send(
            &current,
            Method::POST,
            "/v1/webhooks",
            Some(
                json!({"url": field(&fields, "url").trim(), "events": events,
                        "ordered": fields.iter().any(|(n, v)| n == "ordered" && v == "on")}),
            ),
        )
        .await;
    if !status.is_success() {
        let said = crate::outcome(status, &answer, "");
        return Redirect::to(&format!("/console/webhooks?notice={}", encode(&said)))
            .into_response();
    }
    console.render(
        "webhook_secret.html",
        merge(
            frame(&current, "Webhook added", None),
            json!({"hook": answer, "secret": answer["secret"]}),
        ),
    )
}

/// One receiver: its settings and its delivery log.
pub(crate) async fn show(
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
    let (hook_path, log_path) = (
        format!("/v1/webhooks/{id}"),
        format!("/v1/webhooks/{id}/deliveries?limit=100"),
    );
    let ((status, hook), (_, log)) = tokio::join!(
        console.call(&current, &hook_path),
        console.call(&current, &log_path),
    );
    if status != StatusCode::OK && status != StatusCode::FORBIDDEN {
        return crate::problem(
            status,
            hook["message"].as_str().unwrap_or("No such webhook."),
        );
    }
    console.render(
        "webhook.html",
        merge(
            frame(&current, "Webhook", query.as_deref()),
            json!({"allowed": status == StatusCode::OK, "hook": hook,
                   "log": log.as_array().cloned().unwrap_or_default()}),
        ),
    )
}

/// `enable`, `disable`, `delete`, `replay` (an event), `rotate` (shows the new secret once).
pub(crate) async fn act(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let fields = crate::form_fields(&body);
    if field(&fields, "action") == "rotate" {
        let current = match signed_in(&console, &headers).await {
            Ok(current) => current,
            Err(response) => return response,
        };
        if let Some(refusal) =
            crate::refuse_foreign_form(&headers, &current, &field(&fields, "csrf"))
        {
            return refusal;
        }
        let (status, answer) = console
            .send(
                &current,
                Method::POST,
                &format!("/v1/webhooks/{}/rotate-secret", encode(&id)),
                Some(json!({"overlap_hours": 24})),
            )
            .await;
        if !status.is_success() {
            let said = crate::outcome(status, &answer, "");
            return Redirect::to(&format!(
                "/console/webhooks/{}?notice={}",
                encode(&id),
                encode(&said)
            ))
            .into_response();
        }
        return console.render(
            "webhook_secret.html",
            merge(
                frame(&current, "New webhook secret", None),
                json!({"hook": answer, "secret": answer["secret"], "rotated": true}),
            ),
        );
    }
    crate::form_post(&console, &headers, &body, |fields| {
        let back = format!("/console/webhooks/{}", encode(&id));
        let path = format!("/v1/webhooks/{}", encode(&id));
        Ok(match field(fields, "action").as_str() {
            "enable" | "disable" => FormCall {
                method: Method::PATCH,
                path,
                body: Some(json!({"enabled": field(fields, "action") == "enable"})),
                done: "Saved.".into(),
                back,
            },
            "delete" => FormCall {
                method: Method::DELETE,
                path,
                body: None,
                done: "Webhook deleted.".into(),
                back: "/console/webhooks".into(),
            },
            "replay" => {
                let event: Value = field(fields, "event_id")
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_default();
                FormCall {
                    method: Method::POST,
                    path: format!("{path}/events/{event}/replay"),
                    body: None,
                    done: format!("Event {event} will be delivered again."),
                    back,
                }
            }
            _ => return Err((back, "Not done: unknown action.".into())),
        })
    })
    .await
}
