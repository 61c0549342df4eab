//! Accounts and the setup wizard (MISSION A5): choose the connector, fill in the fields, test the
//! connection (a failure shows the server's own words), set the per-minute limit, make it the
//! default, send a test message — one flow, every step through the API.

use crate::{Console, Session, Shared, form_fields, problem, refuse_foreign_form, signed_in};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use uuid::Uuid;

/// A field's value without surrounding white space (what a person typed into the wizard).
fn field(fields: &[(String, String)], name: &str) -> String {
    crate::field(fields, name).trim().to_owned()
}

pub(crate) async fn list(State(console): Shared, headers: HeaderMap) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, "/v1/accounts").await;
    console.render(
        "accounts.html",
        json!({"title": "Accounts", "user": current.user.name, "csrf": current.csrf(),
               "allowed": status == StatusCode::OK, "items": answer}),
    )
}

pub(crate) async fn wizard(State(console): Shared, headers: HeaderMap) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    console.render(
        "account_new.html",
        json!({"title": "Set up an account", "user": current.user.name, "csrf": current.csrf(),
               "form": {"connector": "smtp", "security": "starttls", "port": "587", "rate_limit_per_minute": "60"}}),
    )
}

/// Step 1: create the account from the form; then straight to its test.
pub(crate) async fn create(State(console): Shared, headers: HeaderMap, body: String) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = form_fields(&body);
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &field(&fields, "csrf")) {
        return refusal;
    }
    let mut account = json!({
        "connector": field(&fields, "connector"),
        "name": field(&fields, "name"),
        "email_address": field(&fields, "email_address"),
    });
    if field(&fields, "connector") == "smtp" {
        account["host"] = json!(field(&fields, "host"));
        account["security"] = json!(field(&fields, "security"));
        match field(&fields, "port").parse::<u16>() {
            Ok(port) => account["port"] = json!(port),
            Err(_) => {
                return form_again(
                    &console,
                    &current,
                    &fields,
                    "Port: a number from 1 to 65535.",
                );
            }
        }
        for key in ["username", "password", "bounce_domain"] {
            let value = field(&fields, key);
            if !value.is_empty() {
                account[key] = json!(value);
            }
        }
    }
    match field(&fields, "rate_limit_per_minute").parse::<i64>() {
        Ok(limit) => account["rate_limit_per_minute"] = json!(limit),
        Err(_) if field(&fields, "rate_limit_per_minute").is_empty() => {}
        Err(_) => {
            return form_again(
                &console,
                &current,
                &fields,
                "Per-minute limit: a whole number.",
            );
        }
    }
    let (status, answer) = console
        .send(&current, Method::POST, "/v1/accounts", Some(account))
        .await;
    if !status.is_success() {
        let message = match answer["field"].as_str() {
            Some(field) => format!(
                "{field}: {}",
                answer["message"].as_str().unwrap_or("invalid")
            ),
            None => answer["message"]
                .as_str()
                .unwrap_or("The account was refused.")
                .to_owned(),
        };
        return form_again(&console, &current, &fields, &message);
    }
    let id = answer["id"].as_str().unwrap_or_default().to_owned();
    if field(&fields, "make_default") == "on" {
        let (status, answer) = console
            .send(
                &current,
                Method::PUT,
                "/v1/scenarios/default",
                Some(json!({"account_id": id})),
            )
            .await;
        if !status.is_success() {
            tracing::warn!(answer = %answer, "console: making an account the default was refused");
        }
    }
    Redirect::to(&format!("/console/accounts/{id}/test")).into_response()
}

fn form_again(
    console: &Console,
    current: &Session,
    fields: &[(String, String)],
    error: &str,
) -> Response {
    let form: serde_json::Map<String, Value> = fields
        .iter()
        .filter(|(name, _)| name != "password" && name != "csrf")
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let mut page = console.render(
        "account_new.html",
        json!({"title": "Set up an account", "user": current.user.name, "csrf": current.csrf(),
               "form": form, "error": error}),
    );
    *page.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    page
}

/// Step 2: test the connection and show the outcome in the server's words; step 3 from there:
/// send a test message.
pub(crate) async fn test(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, account) = console.call(&current, &format!("/v1/accounts/{id}")).await;
    if status != StatusCode::OK {
        return problem(
            status,
            account["message"].as_str().unwrap_or("No such account."),
        );
    }
    let (_, outcome) = console
        .send(
            &current,
            Method::POST,
            &format!("/v1/accounts/{id}/test"),
            None,
        )
        .await;
    console.render(
        "account_test.html",
        json!({"title": "Test the account", "user": current.user.name, "csrf": current.csrf(),
               "account": account, "test": outcome}),
    )
}

/// Step 3: a test message through the account.
pub(crate) async fn send_test(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
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
    let (status, answer) = console
        .send(
            &current,
            Method::POST,
            "/v1/messages",
            Some(json!({"account_id": id, "to": [field(&fields, "to")],
                        "subject": "mailroom test message", "text": "This account can send mail."})),
        )
        .await;
    if status.is_success() {
        let message = answer["id"].as_str().unwrap_or_default();
        return Redirect::to(&format!("/console/messages/{message}")).into_response();
    }
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        answer["message"]
            .as_str()
            .unwrap_or("The test message was refused."),
    )
}
