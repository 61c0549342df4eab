//! The app inside the user's mail client (MISSION D1–D3): its deployment page, the pane the mail
//! client shows beside an open message, and a record's timeline where tracked mail appears.

use crate::{
    Shared, encode, field, form_fields, merge, notice, problem, refuse_foreign_form, signed_in,
};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

/// The deployment page: the mode, every user's status, deploy to all eligible users or to the
/// selected ones, the manifest; and for the signed-in user, their own status and "add it for me".
pub(crate) async fn admin(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let ((users_status, users), (_, me)) = tokio::join!(
        console.call(&current, "/v1/addin/users"),
        console.call(&current, "/v1/addin/me"),
    );
    console.render(
        "mail_client_app.html",
        json!({"title": "Mail-client app", "user": current.user.name, "csrf": current.csrf(),
               "notice": notice(query.as_deref()),
               "allowed": users_status == StatusCode::OK, "roster": users, "me": me}),
    )
}

/// The page's forms: `mode`, `deploy-all`, `deploy-selected` (checked `user` fields), `add-me`.
pub(crate) async fn act(State(console): Shared, headers: HeaderMap, body: String) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = form_fields(&body);
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &field(&fields, "csrf")) {
        return refusal;
    }
    let selected: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n == "user")
        .map(|(_, v)| v.as_str())
        .collect();
    let (method, path, body, done) = match field(&fields, "action").as_str() {
        "mode" => (
            Method::PUT,
            "/v1/addin/settings",
            Some(json!({"deployment": field(&fields, "deployment")})),
            "Deployment mode saved.",
        ),
        "deploy-all" => (
            Method::POST,
            "/v1/addin/deploy",
            Some(json!({"all_eligible": true})),
            "Deployed to every eligible user.",
        ),
        "deploy-selected" if selected.is_empty() => {
            return Redirect::to(&format!(
                "/console/mail-client-app?notice={}",
                encode("Select at least one user to deploy to.")
            ))
            .into_response();
        }
        "deploy-selected" => (
            Method::POST,
            "/v1/addin/deploy",
            Some(json!({"users": selected})),
            "Deployed to the selected users.",
        ),
        "add-me" => (
            Method::POST,
            "/v1/addin/me",
            None,
            "The app is added for you; open a message in your mail client to start.",
        ),
        _ => return problem(StatusCode::BAD_REQUEST, "Unknown action."),
    };
    let (status, answer) = console.send(&current, method, path, body).await;
    let said = if status.is_success() {
        done.to_owned()
    } else if status == StatusCode::FORBIDDEN && answer["code"] != "mail_client_app_not_authorised"
    {
        "Your permissions do not include deploying the mail-client app.".to_owned()
    } else {
        answer["message"]
            .as_str()
            .unwrap_or("The change was refused.")
            .to_owned()
    };
    Redirect::to(&format!(
        "/console/mail-client-app?notice={}",
        encode(&said)
    ))
    .into_response()
}

/// The add-in manifest, as the API serves it.
pub(crate) async fn manifest(State(console): Shared, headers: HeaderMap) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    console
        .pass_through_with(&current, "/v1/addin/manifest.xml", &headers)
        .await
}

/// The open message as the pane's address names it.
struct OpenMessage {
    message_id: String,
    from: String,
    to: Vec<String>,
    cc: Vec<String>,
    subject: String,
    office: bool,
}

fn addresses(fields: &[(String, String)], name: &str) -> Vec<String> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.split([',', ';']))
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

impl OpenMessage {
    fn from_fields(fields: &[(String, String)]) -> Self {
        Self {
            message_id: field(fields, "message_id").trim().to_owned(),
            from: field(fields, "from").trim().to_owned(),
            to: addresses(fields, "to"),
            cc: addresses(fields, "cc"),
            subject: field(fields, "subject"),
            office: field(fields, "host") == "office",
        }
    }

    /// The pane's own address for this message (where its forms come back to).
    fn pane_url(&self) -> String {
        let mut url = format!(
            "/pane?message_id={}&from={}&to={}&cc={}&subject={}",
            encode(&self.message_id),
            encode(&self.from),
            encode(&self.to.join(",")),
            encode(&self.cc.join(",")),
            encode(&self.subject)
        );
        if self.office {
            url.push_str("&host=office");
        }
        url
    }
}

/// The pane (MISSION D3): the records of the sender and recipients of the open message, and
/// track / change regarding / untrack. A user who may not use the app sees the app's refusal.
pub(crate) async fn pane(
    State(console): Shared,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let fields = form_fields(query.as_deref().unwrap_or_default());
    let open = OpenMessage::from_fields(&fields);
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(_) => {
            return Redirect::to(&format!(
                "/console/sign-in?next={}",
                encode(&open.pane_url())
            ))
            .into_response();
        }
    };
    let base = json!({"title": "mailroom", "pane": true, "user": current.user.name,
        "csrf": current.csrf(), "office": open.office, "notice": notice(query.as_deref()),
        "subject": open.subject, "message_id": open.message_id, "from": open.from,
        "back": open.pane_url()});
    if open.message_id.is_empty() && open.from.is_empty() {
        return console.render("pane.html", merge(base, json!({"waiting": true})));
    }
    let mut lookup = json!({"to": open.to, "cc": open.cc});
    if !open.message_id.is_empty() {
        lookup["message_id"] = json!(open.message_id);
    }
    if !open.from.is_empty() {
        lookup["from"] = json!(open.from);
    }
    let (status, answer) = console
        .send(&current, Method::POST, "/v1/addin/lookup", Some(lookup))
        .await;
    match status {
        StatusCode::OK => {
            let mut by_address: Vec<(String, Vec<Value>)> = Vec::new();
            let regarding = answer["regarding"].as_array().cloned().unwrap_or_default();
            for record in answer["records"].as_array().into_iter().flatten() {
                let address = record["address"].as_str().unwrap_or_default().to_owned();
                let current = regarding
                    .iter()
                    .any(|r| r["type"] == record["type"] && r["id"] == record["id"]);
                let record = &merge(record.clone(), json!({"current": current}));
                match by_address.iter_mut().find(|(a, _)| *a == address) {
                    Some((_, list)) => list.push(record.clone()),
                    None => by_address.push((address, vec![record.clone()])),
                }
            }
            let groups: Vec<Value> = by_address
                .into_iter()
                .map(|(address, records)| json!({"address": address, "records": records}))
                .collect();
            console.render(
                "pane.html",
                merge(
                    base,
                    json!({"groups": groups, "synchronized": answer["synchronized"],
                           "regarding": answer["regarding"], "inbound_id": answer["inbound_id"]}),
                ),
            )
        }
        StatusCode::FORBIDDEN => {
            let mut page = console.render(
                "pane.html",
                merge(
                    base,
                    json!({"refused": mailroom_core::mail_client_app::NOT_AUTHORISED}),
                ),
            );
            *page.status_mut() = StatusCode::FORBIDDEN;
            page
        }
        _ => {
            let mut page = console.render(
                "pane.html",
                merge(
                    base,
                    json!({"error": answer["message"].as_str().unwrap_or("The lookup failed.")}),
                ),
            );
            *page.status_mut() = status;
            page
        }
    }
}

/// The pane's forms: `track` (a record, from the list or typed in; replaces what the message was
/// tracked to) and `untrack`.
pub(crate) async fn pane_act(
    State(console): Shared,
    headers: HeaderMap,
    Path(action): Path<String>,
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
    let open = OpenMessage::from_fields(&fields);
    let (status, answer, done) = match action.as_str() {
        "track" => {
            let (record_type, record_id) = match field(&fields, "record").split_once('/') {
                Some((t, i)) => (t.to_owned(), i.to_owned()),
                None => (
                    field(&fields, "record_type").trim().to_owned(),
                    field(&fields, "record_id").trim().to_owned(),
                ),
            };
            let (status, answer) = console
                .send(
                    &current,
                    Method::PUT,
                    "/v1/addin/regarding",
                    Some(json!({"message_id": open.message_id,
                                "record": {"type": record_type, "id": record_id}})),
                )
                .await;
            (
                status,
                answer,
                format!("Tracked to {record_type} {record_id}."),
            )
        }
        "untrack" => {
            let (status, answer) = console
                .send(
                    &current,
                    Method::DELETE,
                    &format!(
                        "/v1/addin/regarding?message_id={}",
                        encode(&open.message_id)
                    ),
                    None,
                )
                .await;
            (status, answer, "Untracked.".to_owned())
        }
        _ => return problem(StatusCode::BAD_REQUEST, "Unknown action."),
    };
    let said = if status.is_success() {
        done
    } else {
        answer["message"]
            .as_str()
            .unwrap_or("The change was refused.")
            .to_owned()
    };
    Redirect::to(&format!("{}&notice={}", open.pane_url(), encode(&said))).into_response()
}

/// A record's timeline: the mail sent and received about it, newest first.
pub(crate) async fn record(
    State(console): Shared,
    headers: HeaderMap,
    Path((record_type, record_id)): Path<(String, String)>,
) -> Response {
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console
        .call(
            &current,
            &format!(
                "/v1/records/{}/{}/messages?limit=100",
                encode(&record_type),
                encode(&record_id)
            ),
        )
        .await;
    if status == StatusCode::FORBIDDEN {
        return console.render(
            "record.html",
            json!({"title": "Record", "user": current.user.name, "csrf": current.csrf(),
                   "allowed": false, "record_type": record_type, "record_id": record_id}),
        );
    }
    if status != StatusCode::OK {
        return problem(
            status,
            answer["message"]
                .as_str()
                .unwrap_or("This record cannot be shown."),
        );
    }
    let mut items: Vec<(String, Value)> = Vec::new();
    for m in answer["items"].as_array().into_iter().flatten() {
        let at = m["created_at"].as_str().unwrap_or_default().to_owned();
        items.push((
            at.clone(),
            json!({"direction": "outbound", "id": m["id"], "subject": m["subject"],
                   "at": at, "status": m["status"],
                   "to": m["to"]}),
        ));
    }
    for m in answer["inbound"].as_array().into_iter().flatten() {
        let at = m["received_at"].as_str().unwrap_or_default().to_owned();
        items.push((
            at.clone(),
            json!({"direction": "inbound", "id": m["id"], "subject": m["subject"], "at": at,
                   "from": m["from"]["address"], "correlation_method": m["correlation_method"]}),
        ));
    }
    // RFC 3339 times in UTC sort as text.
    items.sort_by(|a, b| b.0.cmp(&a.0));
    console.render(
        "record.html",
        json!({"title": format!("{record_type} {record_id}"), "user": current.user.name,
               "csrf": current.csrf(), "allowed": true, "record_type": record_type,
               "record_id": record_id, "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>()}),
    )
}
