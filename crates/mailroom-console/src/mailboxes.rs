//! Mailboxes: approve, and test & enable with a progress bar that follows the job.

use crate::{Shared, encode, field, form_fields, notice, problem, refuse_foreign_form, signed_in};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;
use uuid::Uuid;

pub(crate) async fn list(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, "/v1/mailboxes").await;
    let notice = notice(query.as_deref());
    console.render(
        "mailboxes.html",
        json!({
            "title": "Mailboxes", "user": current.user.name, "csrf": current.csrf(),
            "allowed": status == StatusCode::OK, "items": answer, "notice": notice,
        }),
    )
}

/// Approve a mailbox's address, or start its test & enable (then follow the job).
pub(crate) async fn act(
    State(console): Shared,
    headers: HeaderMap,
    Path((id, action)): Path<(Uuid, String)>,
    body: String,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let csrf = field(&form_fields(&body), "csrf");
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &csrf) {
        return refusal;
    }
    let verb = match action.as_str() {
        "approve" => "approve",
        "test" => "test",
        _ => return problem(StatusCode::NOT_FOUND, "No such action."),
    };
    let (status, answer) = console
        .send(
            &current,
            Method::POST,
            &format!("/v1/mailboxes/{id}/{verb}"),
            None,
        )
        .await;
    if !status.is_success() {
        let message = answer["message"]
            .as_str()
            .unwrap_or("The action was refused.");
        return Redirect::to(&format!("/console/mailboxes?notice={}", encode(message)))
            .into_response();
    }
    match (verb, answer["id"].as_str()) {
        ("test", Some(job)) => Redirect::to(&format!("/console/jobs/{job}")).into_response(),
        _ => Redirect::to("/console/mailboxes?notice=Approved.").into_response(),
    }
}

async fn job_context(
    console: &crate::Console,
    current: &crate::Session,
    id: Uuid,
) -> Result<serde_json::Value, Response> {
    let (status, job) = console.call(current, &format!("/v1/jobs/{id}")).await;
    if status != StatusCode::OK {
        return Err(problem(
            status,
            job["message"]
                .as_str()
                .unwrap_or("This job cannot be shown."),
        ));
    }
    let total = job["total"].as_u64().unwrap_or(0);
    let done = job["done"].as_u64().unwrap_or(0);
    let percent = (done * 100).checked_div(total).unwrap_or(100);
    Ok(json!({"job": job, "percent": percent, "finished": job["state"] == "done"}))
}

/// A job's page: a progress bar that follows it until it is done.
pub(crate) async fn job(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    match job_context(&console, &current, id).await {
        Ok(mut context) => {
            context["title"] = json!("Test & enable");
            context["user"] = json!(current.user.name);
            context["csrf"] = json!(current.csrf());
            console.render("job.html", context)
        }
        Err(response) => response,
    }
}

/// The progress fragment htmx polls; once the job is done it stops asking.
pub(crate) async fn progress(
    State(console): Shared,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    match job_context(&console, &current, id).await {
        Ok(context) => console.render("job_progress.html", context),
        Err(response) => response,
    }
}
