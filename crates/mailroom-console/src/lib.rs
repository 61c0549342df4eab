//! The browser console (MISSION E): server-rendered pages under `/console`.
//!
//! - **Same rules as the API, not a copy of them.** Every page gets its data by calling the API in
//!   process with the signed-in user's session token: the console shows and allows exactly what the
//!   API allows that user (permission table, view policies), and a section the API refuses says so.
//! - **Sign-in** with an API token: the console issues a session token of 12 hours (an API token
//!   named `console session`, so it is listed, expires and can be revoked like any other), kept only
//!   in an `HttpOnly`, `SameSite=Strict` cookie. Sign-out revokes it.
//! - **CSRF**: every form carries a token derived from the session secret, which another site can
//!   neither read nor compute; a POST without it is refused with 403. A POST whose `Origin` is
//!   another site's is refused too (sign-in included).
//! - **No build step, nothing from elsewhere**: templates and static files (htmx 2, the style
//!   sheet) are compiled into the binary.

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use mailroom_store::{ApiToken, Store, User};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tower::ServiceExt;

mod accounts;
mod app;
mod chart;
mod hooks;
mod inbound;
mod mail;
mod mailboxes;
mod people;
mod setup;
mod templates;

/// The cookie that holds the session token.
const SESSION_COOKIE: &str = "mailroom_session";
/// How long a console session lasts.
const SESSION_MS: i64 = 12 * 60 * 60 * 1000;
/// The name of the API tokens the console issues as sessions.
pub const SESSION_TOKEN_NAME: &str = "console session";

pub(crate) struct Console {
    api: Router,
    store: Store,
    templates: minijinja::Environment<'static>,
}

pub(crate) type Shared = State<Arc<Console>>;

/// The console's routes. `api` is the API router: pages call it in process.
pub fn router(api: Router, store: Store) -> Router {
    let mut templates = minijinja::Environment::new();
    // A path segment or query value, percent-encoded (links to records whose ids hold `/` or `?`).
    templates.add_filter("urlencode", |value: String| encode(&value));
    macro_rules! templates {
        ($($name:literal),* $(,)?) => {
            [$(($name, include_str!(concat!("../templates/", $name)))),*]
        };
    }
    for (name, source) in templates![
        "base.html",
        "sign_in.html",
        "dashboard.html",
        "messages.html",
        "message.html",
        "templates.html",
        "template.html",
        "template_preview.html",
        "mailboxes.html",
        "job.html",
        "job_progress.html",
        "accounts.html",
        "account_new.html",
        "account_test.html",
        "inbound_mailboxes.html",
        "inbound_list.html",
        "inbound_message.html",
        "conversation.html",
        "users.html",
        "audit.html",
        "mail_client_app.html",
        "pane.html",
        "record.html",
        "scenarios.html",
        "scenario.html",
        "sending_profiles.html",
        "server_profiles.html",
        "settings.html",
        "user.html",
        "token.html",
        "teams.html",
        "alerts.html",
        "contacts.html",
        "nodes.html",
        "webhooks.html",
        "webhook.html",
        "webhook_secret.html",
        "suppressions.html",
        "dkim.html",
        "app_registrations.html",
        "app_registration_verify.html",
    ] {
        templates
            .add_template(name, source)
            .expect("the console's templates compile");
    }
    let console = Arc::new(Console {
        api,
        store,
        templates,
    });
    Router::new()
        .route("/console", get(dashboard))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/static/{file}", get(static_file))
        .route("/console/outbox", get(mail::outbox))
        .route("/console/sent", get(mail::sent))
        .route("/console/messages/bulk", post(mail::bulk))
        .route("/console/messages/{id}", get(mail::message))
        .route("/console/messages/{id}/{action}", post(mail::act))
        .route("/console/templates", get(templates::list))
        .route("/console/accounts", get(accounts::list))
        .route(
            "/console/accounts/new",
            get(accounts::wizard).post(accounts::create),
        )
        .route("/console/accounts/{id}/test", get(accounts::test))
        .route(
            "/console/accounts/{id}/send-test",
            post(accounts::send_test),
        )
        .route("/console/inbound", get(inbound::mailboxes))
        .route("/console/inbound/mailboxes/{id}", get(inbound::mailbox))
        .route("/console/inbound/{id}", get(inbound::message))
        .route("/console/inbound/{id}/raw", get(inbound::raw))
        .route("/console/inbound/{id}/answer/{how}", post(inbound::answer))
        .route("/console/inbound/{id}/parts/{part}", get(inbound::part))
        .route("/console/conversations/{id}", get(inbound::conversation))
        .route(
            "/console/users",
            get(people::users).post(people::create_user),
        )
        .route(
            "/console/users/{id}",
            get(people::user).post(people::user_act),
        )
        .route("/console/users/{id}/tokens", post(people::create_token))
        .route("/console/teams", get(people::teams).post(people::team_act))
        .route("/console/nodes", get(people::nodes))
        .route("/console/dkim", get(setup::dkim).post(setup::dkim_act))
        .route(
            "/console/app-registrations",
            get(setup::app_registrations).post(setup::app_registration_act),
        )
        .route(
            "/console/app-registrations/{id}/verify",
            get(setup::app_registration_verify),
        )
        .route(
            "/console/mailboxes/{id}/connect",
            get(setup::connect_mailbox),
        )
        .route(
            "/console/accounts/{id}/connect",
            get(setup::connect_account),
        )
        .route(
            "/console/suppressions",
            get(people::suppressions).post(people::suppression_act),
        )
        .route("/console/webhooks", get(hooks::list).post(hooks::create))
        .route("/console/webhooks/{id}", get(hooks::show).post(hooks::act))
        .route(
            "/console/alerts",
            get(people::alerts).post(people::dismiss_alert),
        )
        .route(
            "/console/contacts",
            get(people::contacts).post(people::contact_act),
        )
        .route("/console/audit", get(people::audit))
        .route("/console/mail-client-app", get(app::admin).post(app::act))
        .route("/console/mail-client-app/manifest.xml", get(app::manifest))
        .route(
            "/console/records/{record_type}/{record_id}",
            get(app::record),
        )
        .route(
            "/console/scenarios",
            get(setup::scenarios).post(setup::scenario_act),
        )
        .route("/console/scenarios/{name}", get(setup::scenario))
        .route(
            "/console/scenarios/{name}/attachments",
            post(setup::scenario_attachment_act),
        )
        .route(
            "/console/scenarios/{name}/upload",
            post(setup::scenario_upload),
        )
        .route(
            "/console/sending-profiles",
            get(setup::sending_profiles).post(setup::sending_profile_save),
        )
        .route(
            "/console/server-profiles",
            get(setup::server_profiles).post(setup::server_profile_act),
        )
        .route(
            "/console/settings",
            get(setup::settings).post(setup::settings_save),
        )
        .route("/pane", get(app::pane))
        .route("/pane/{action}", post(app::pane_act))
        .route("/console/mailboxes", get(mailboxes::list))
        .route("/console/mailboxes/{id}/{action}", post(mailboxes::act))
        .route("/console/jobs/{id}", get(mailboxes::job))
        .route("/console/jobs/{id}/progress", get(mailboxes::progress))
        .route(
            "/console/templates/{id}",
            get(templates::editor).post(templates::save),
        )
        .route("/console/templates/{id}/preview", post(templates::preview))
        .with_state(console)
}

/// A signed-in user: their session token (id, secret) and who they are.
pub(crate) struct Session {
    token: ApiToken,
    secret: String,
    user: User,
}

impl Session {
    /// The CSRF token of this session's forms.
    pub(crate) fn csrf(&self) -> String {
        csrf_for(&self.secret)
    }
}

fn csrf_for(secret: &str) -> String {
    hex::encode(&Sha256::digest(format!("mailroom console csrf\n{secret}").as_bytes())[..16])
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// The session of the request, if its cookie holds a valid token of an enabled user.
async fn session(console: &Console, headers: &HeaderMap) -> Result<Option<Session>, Response> {
    let Some(secret) = cookie_value(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    match console.store.authenticate_token(secret).await {
        Ok(Some((token, user))) => Ok(Some(Session {
            token,
            secret: secret.to_owned(),
            user,
        })),
        Ok(None) => Ok(None),
        Err(error) => {
            tracing::error!(%error, "console: reading the session failed");
            Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store cannot be read right now; try again in a moment.",
            ))
        }
    }
}

/// A POST from another site's page is refused (browsers send `Origin` with every POST).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

/// The session of a page's request; without one, the answer is the way to the sign-in page.
pub(crate) async fn signed_in(console: &Console, headers: &HeaderMap) -> Result<Session, Response> {
    match session(console, headers).await? {
        Some(current) => Ok(current),
        None => Err(Redirect::to("/console/sign-in").into_response()),
    }
}

/// A form post is the session's own: same origin, and the session's CSRF token. `None` when it
/// is; otherwise the refusal to answer with.
pub(crate) fn refuse_foreign_form(
    headers: &HeaderMap,
    current: &Session,
    csrf: &str,
) -> Option<Response> {
    (!same_origin(headers) || csrf != current.csrf()).then(|| {
        problem(
            StatusCode::FORBIDDEN,
            "This form is not from your console session (CSRF check failed). Reload the page and try again.",
        )
    })
}

/// Percent-encodes a path segment or query value (everything but unreserved characters).
pub(crate) fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a form or query field (the first of that name), or empty.
pub(crate) fn field(fields: &[(String, String)], name: &str) -> String {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The `notice` a redirect put in the query, to show on the page.
pub(crate) fn notice(query: Option<&str>) -> Option<String> {
    Some(field(&form_fields(query.unwrap_or_default()), "notice")).filter(|n| !n.is_empty())
}

/// The fields of an `application/x-www-form-urlencoded` body, repeated names kept (checkboxes).
pub(crate) fn form_fields(body: &str) -> Vec<(String, String)> {
    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

/// `base` with the fields of `more` added (both JSON objects).
pub(crate) fn merge(mut base: Value, more: Value) -> Value {
    if let (Some(base), Value::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

/// What every page's template gets: its title, the user, the CSRF token, the notice.
pub(crate) fn frame(current: &Session, title: &str, query: Option<&str>) -> Value {
    json!({"title": title, "user": current.user.name, "csrf": current.csrf(),
           "notice": notice(query)})
}

/// A page that shows one API list: `path` into `template`, or that the user may not see it.
pub(crate) async fn listing(
    state: Shared,
    headers: HeaderMap,
    query: Option<String>,
    path: &str,
    template: &str,
    title: &str,
) -> Response {
    let State(console) = state;
    let current = match signed_in(&console, &headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let (status, answer) = console.call(&current, path).await;
    console.render(
        template,
        merge(
            frame(&current, title, query.as_deref()),
            json!({"allowed": status == StatusCode::OK, "items": answer}),
        ),
    )
}

/// A form field that must be filled in; otherwise the page's refusal (back to `back`, in words).
pub(crate) fn required(
    fields: &[(String, String)],
    name: &str,
    back: &str,
) -> Result<String, (String, String)> {
    let value = field(fields, name).trim().to_owned();
    if value.is_empty() {
        return Err((back.to_owned(), format!("Not done: fill in {name}.")));
    }
    Ok(value)
}

/// What a console form asks of the API, and the page the user goes back to.
pub(crate) struct FormCall {
    pub method: axum::http::Method,
    pub path: String,
    pub body: Option<Value>,
    /// Said when the API did it.
    pub done: String,
    /// The page to return to (a path without a query).
    pub back: String,
}

/// What the API's answer to a form means for the user: `done`, or the API's own words.
pub(crate) fn outcome(status: StatusCode, answer: &Value, done: &str) -> String {
    if status.is_success() {
        done.to_owned()
    } else if status == StatusCode::FORBIDDEN && answer["code"] == "permission_missing" {
        "Your permissions do not include this change.".to_owned()
    } else {
        format!(
            "Not done: {}",
            answer["message"]
                .as_str()
                .unwrap_or("the change was refused.")
        )
    }
}

/// A form post: signed in, the session's own form (origin and CSRF), one API call as the user,
/// then back to the page with what happened in words. `plan` reads the fields; its `Err` is the
/// page's own refusal (a missing field…), said the same way.
pub(crate) async fn form_post(
    console: &Console,
    headers: &HeaderMap,
    body: &str,
    plan: impl FnOnce(&[(String, String)]) -> Result<FormCall, (String, String)>,
) -> Response {
    let current = match signed_in(console, headers).await {
        Ok(current) => current,
        Err(response) => return response,
    };
    let fields = form_fields(body);
    if let Some(refusal) = refuse_foreign_form(headers, &current, &field(&fields, "csrf")) {
        return refusal;
    }
    let (back, said) = match plan(&fields) {
        Ok(call) => {
            let (status, answer) = console
                .send(&current, call.method, &call.path, call.body)
                .await;
            (call.back, outcome(status, &answer, &call.done))
        }
        Err((back, said)) => (back, said),
    };
    Redirect::to(&format!("{back}?notice={}", encode(&said))).into_response()
}

pub(crate) fn problem(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.to_owned(),
    )
        .into_response()
}

impl Console {
    pub(crate) fn render(&self, name: &str, context: Value) -> Response {
        match self
            .templates
            .get_template(name)
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(&context))))
        {
            Ok(html) => (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                html,
            )
                .into_response(),
            Err(error) => {
                tracing::error!(%error, template = name, "console: a page failed to render");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "This page failed to render.",
                )
            }
        }
    }

    /// Calls the API in process as the session's user: the status and the JSON answer.
    pub(crate) async fn call(&self, session: &Session, path: &str) -> (StatusCode, Value) {
        self.send(session, axum::http::Method::GET, path, None)
            .await
    }

    /// A GET of the API in process as the session's user, its answer passed on as it is (status,
    /// headers, streamed body): downloads.
    pub(crate) async fn pass_through(&self, session: &Session, path: &str) -> Response {
        self.pass_through_with(session, path, &HeaderMap::new())
            .await
    }

    /// [`Self::pass_through`], telling the API the `Host` and `X-Forwarded-Proto` the browser's
    /// request came with (for answers that name mailroom's own address).
    pub(crate) async fn pass_through_with(
        &self,
        session: &Session,
        path: &str,
        headers: &HeaderMap,
    ) -> Response {
        let mut request = Request::get(path);
        for name in [header::HOST.as_str(), "x-forwarded-proto"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        let Ok(request) = request
            .header(header::AUTHORIZATION, format!("Bearer {}", session.secret))
            .body(Body::empty())
        else {
            return problem(StatusCode::BAD_REQUEST, "Not a valid address.");
        };
        match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The API's answer to a request: its status and its JSON (`Null` when it is not JSON).
    async fn answer(
        &self,
        request: Result<Request<Body>, axum::http::Error>,
    ) -> (StatusCode, Value) {
        let Ok(request) = request else {
            return (
                StatusCode::BAD_REQUEST,
                json!({"message": "not a valid address"}),
            );
        };
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// A request body passed to the API as it came (an upload), with its content type and length.
    pub(crate) async fn forward(
        &self,
        session: &Session,
        path: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> (StatusCode, Value) {
        let mut request =
            Request::post(path).header(header::AUTHORIZATION, format!("Bearer {}", session.secret));
        for name in [header::CONTENT_TYPE, header::CONTENT_LENGTH] {
            if let Some(value) = headers.get(&name) {
                request = request.header(name, value);
            }
        }
        self.answer(request.body(body)).await
    }

    /// Any API call in process as the session's user (a JSON body when given).
    pub(crate) async fn send(
        &self,
        session: &Session,
        method: axum::http::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", session.secret));
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        self.answer(request.body(body)).await
    }
}

/// Whether the browser reached mailroom over https (directly, or through a proxy that says so):
/// then the session cookie is `Secure`, never sent over plain http.
fn over_https(headers: &HeaderMap) -> bool {
    let says = |name: &str, prefix: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with(prefix))
    };
    says("x-forwarded-proto", "https") || says(header::ORIGIN.as_str(), "https://")
}

fn session_cookie(secret: &str, max_age_s: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("a token is a valid header value")
}

async fn sign_in_page(
    State(console): Shared,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Response {
    let next = field(&form_fields(query.as_deref().unwrap_or_default()), "next");
    let next = local_destination(&next);
    match session(&console, &headers).await {
        Ok(Some(_)) => Redirect::to(next).into_response(),
        Ok(None) => console.render("sign_in.html", json!({"title": "Sign in", "next": next})),
        Err(response) => response,
    }
}

#[derive(serde::Deserialize)]
struct SignIn {
    token: String,
    #[serde(default)]
    next: String,
}

/// Where to go after signing in: a console page or the pane that sent the user here, never
/// another site.
fn local_destination(next: &str) -> &str {
    let local = (next.starts_with("/console") || next.starts_with("/pane"))
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control());
    if local { next } else { "/console" }
}

async fn sign_in(State(console): Shared, headers: HeaderMap, Form(form): Form<SignIn>) -> Response {
    if !same_origin(&headers) {
        return problem(
            StatusCode::FORBIDDEN,
            "Sign-in from another site is refused.",
        );
    }
    let refused = |message: &str| {
        let mut page = console.render(
            "sign_in.html",
            json!({"title": "Sign in", "error": message, "next": local_destination(&form.next)}),
        );
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        page
    };
    let user = match console.store.authenticate_token(form.token.trim()).await {
        Ok(Some((_, user))) => user,
        Ok(None) => {
            return refused(
                "That token is not valid: it may be mistyped, expired or revoked, or its user disabled.",
            );
        }
        Err(error) => {
            tracing::error!(%error, "console: sign-in could not read the store");
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "The store cannot be read right now; try again in a moment.",
            );
        }
    };
    let expires = mailroom_store::now_ms() + SESSION_MS;
    match console
        .store
        .create_token(Some(user.id), SESSION_TOKEN_NAME, Some(expires))
        .await
    {
        Ok((_, secret)) => {
            tracing::info!(event = "console_signed_in", user = %user.id, "a user signed in to the console");
            let mut response = Redirect::to(local_destination(&form.next)).into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&secret, SESSION_MS / 1000, over_https(&headers)),
            );
            response
        }
        Err(error) => {
            tracing::error!(%error, "console: issuing a session failed");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "A session could not be started; try again in a moment.",
            )
        }
    }
}

#[derive(serde::Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    State(console): Shared,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let current = match session(&console, &headers).await {
        Ok(Some(current)) => current,
        Ok(None) => return Redirect::to("/console/sign-in").into_response(),
        Err(response) => return response,
    };
    if let Some(refusal) = refuse_foreign_form(&headers, &current, &form.csrf) {
        return refusal;
    }
    if let Err(error) = console
        .store
        .revoke_token(current.user.id, current.token.id)
        .await
    {
        tracing::error!(%error, "console: revoking a session failed");
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "Signing out failed; try again in a moment.",
        );
    }
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie("", 0, over_https(&headers)),
    );
    response
}

/// What the dashboard shows of one API listing: its items, or why there are none.
fn section(status: StatusCode, answer: Value) -> Value {
    match status {
        StatusCode::OK => json!({
            "allowed": true,
            "items": answer["items"].as_array().cloned().unwrap_or_default(),
            "more": answer["has_more"].as_bool().unwrap_or(false),
            "total": answer["total"].as_i64().unwrap_or(0),
            "estimate": answer["total_is_estimate"].as_bool().unwrap_or(false),
        }),
        StatusCode::FORBIDDEN => json!({"allowed": false}),
        other => json!({"allowed": true, "error": format!("The API answered {other}.")}),
    }
}

async fn dashboard(State(console): Shared, headers: HeaderMap) -> Response {
    let current = match session(&console, &headers).await {
        Ok(Some(current)) => current,
        Ok(None) => return Redirect::to("/console/sign-in").into_response(),
        Err(response) => return response,
    };
    let (failed, queued, sent, alerts, stats, mailboxes) = tokio::join!(
        console.call(&current, "/v1/outbox?status=failed&limit=10"),
        console.call(&current, "/v1/outbox?status=queued&limit=10"),
        console.call(&current, "/v1/sent?limit=10"),
        console.call(&current, "/v1/alerts"),
        console.call(&current, "/v1/stats?hours=24"),
        console.call(&current, "/v1/mailboxes"),
    );
    let figures = match stats.0 {
        StatusCode::OK => {
            let per_hour = stats.1["per_hour"].as_array().cloned().unwrap_or_default();
            json!({"allowed": true, "outbox": stats.1["outbox"], "per_hour": per_hour,
                   "chart": chart::hour_bars(&per_hour),
                   "failures_by_account": stats.1["failures_by_account"]})
        }
        _ => json!({"allowed": false}),
    };
    // Mailboxes that cannot work as they are: not approved, disabled, or a failed test.
    let attention: Vec<Value> = mailboxes
        .1
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| {
            m["approval"] != "approved"
                || m["enabled"] != true
                || m["incoming_status"] == "failure"
                || m["outgoing_status"] == "failure"
        })
        .cloned()
        .collect();
    console.render(
        "dashboard.html",
        json!({
            "title": "Dashboard",
            "user": current.user.name,
            "csrf": current.csrf(),
            "figures": figures,
            "attention": attention,
            "failed": section(failed.0, failed.1),
            "queued": section(queued.0, queued.1),
            "sent": section(sent.0, sent.1),
            "alerts": match alerts.0 {
                StatusCode::OK => json!({"allowed": true, "items": alerts.1.as_array().cloned().unwrap_or_default()}),
                _ => json!({"allowed": false}),
            },
        }),
    )
}

async fn static_file(Path(file): Path<String>) -> Response {
    let (content_type, bytes): (&str, &'static [u8]) = match file.as_str() {
        "htmx-2.0.11.min.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../static/htmx-2.0.11.min.js"),
        ),
        "console.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../static/console.css"),
        ),
        "icon-64.png" => ("image/png", include_bytes!("../static/icon-64.png")),
        "icon-128.png" => ("image/png", include_bytes!("../static/icon-128.png")),
        "pane.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../static/pane.js"),
        ),
        _ => return problem(StatusCode::NOT_FOUND, "No such file."),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            // An hour: a new release's files are fetched again within the hour.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        bytes,
    )
        .into_response()
}
