//! Templates: the list, and an editor whose preview follows every keystroke (the API renders the
//! unsaved edit with sample data) and shows a template error at its line.

use crate::{Shared, encode, field, form_fields, notice, problem, refuse_foreign_form, signed_in};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

fn slug_path(id: &str) -> Option<String> {
    (!id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    .then(|| id.to_owned())
}

pub(crate) async fn list(State(console): Shared, headers: HeaderMap) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, "/v1/templates").await;
    console.render(
        "templates.html",
        json!({
            "title": "Templates", "user": current.user.name, "csrf": current.csrf(),
            "allowed": status == StatusCode::OK, "items": answer,
        }),
    )
}

pub(crate) async fn editor(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let Some(id) = slug_path(&id) else {
        return problem(StatusCode::NOT_FOUND, "No such template.");
    };
    let (status, template) = console.call(&current, &format!("/v1/templates/{id}")).await;
    if status != StatusCode::OK {
        return problem(
            status,
            template["message"]
                .as_str()
                .unwrap_or("This template cannot be shown."),
        );
    }
    let notice = notice(query.as_deref());
    console.render(
        "template.html",
        json!({
            "title": format!("Template {id}"), "user": current.user.name, "csrf": current.csrf(),
            "t": template, "notice": notice,
        }),
    )
}

/// The API's answer for an edit: a preview or where the template is wrong.
fn edit_of(fields: &[(String, String)]) -> Value {
    json!({
        "subject": field(fields, "subject"),
        "html": field(fields, "html"),
        "text": Some(field(fields, "text")).filter(|t| !t.trim().is_empty()),
    })
}

/// The preview fragment (htmx swaps it in): the rendered edit, or its error at its line.
pub(crate) async fn preview(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
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
    let Some(id) = slug_path(&id) else {
        return problem(StatusCode::NOT_FOUND, "No such template.");
    };
    let (status, answer) = console
        .send(
            &current,
            Method::POST,
            &format!("/v1/templates/{id}/preview"),
            Some(json!({"source": edit_of(&fields)})),
        )
        .await;
    console.render(
        "template_preview.html",
        json!({
            "ok": status == StatusCode::OK,
            "preview": answer,
            "error": (status != StatusCode::OK).then(|| json!({
                "field": answer["field"], "message": answer["message"].as_str().unwrap_or("The preview failed."),
            })),
        }),
    )
}

/// Saves the edit as the template's next version; an error keeps the edit on the page.
pub(crate) async fn save(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
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
    let Some(id) = slug_path(&id) else {
        return problem(StatusCode::NOT_FOUND, "No such template.");
    };
    let mut edit = edit_of(&fields);
    edit["document_type"] = json!(field(&fields, "document_type"));
    let scenario = field(&fields, "scenario");
    edit["scenario"] = if scenario.is_empty() {
        Value::Null
    } else {
        json!(scenario)
    };
    let (status, answer) = console
        .send(
            &current,
            Method::PUT,
            &format!("/v1/templates/{id}"),
            Some(edit.clone()),
        )
        .await;
    if status == StatusCode::OK {
        let notice = format!("Saved as version {}.", answer["version"]);
        return Redirect::to(&format!(
            "/console/templates/{id}?notice={}",
            encode(&notice)
        ))
        .into_response();
    }
    let mut template = edit;
    template["id"] = json!(id);
    let mut page = console.render(
        "template.html",
        json!({
            "title": format!("Template {id}"), "user": current.user.name, "csrf": current.csrf(),
            "t": template,
            "error": answer["message"].as_str().unwrap_or("The template was not saved."),
        }),
    );
    *page.status_mut() = status;
    page
}
