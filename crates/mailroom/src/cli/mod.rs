//! The CLI client: each command is one or two API calls against a running server.
//! `--output json` prints the API's JSON; the default is a human table.

mod accounts;
mod app;
mod content;
mod dkim;
mod inbound;
mod mail;
mod mailboxes;
mod oauth;
mod suppressions;
mod users;
mod webhooks;

use crate::config::{DEFAULT_DATA_DIR, ServeArgs};
use accounts::{AccountCommand, SetupArgs};
use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mail::{MessageCommand, OutboxCommand, ScenarioCommand, SendArgs, SentCommand};
use serde_json::{Value, json};
use std::path::PathBuf;
use users::UserCommand;

#[derive(Parser)]
#[command(
    name = "mailroom",
    version,
    about = "A self-hosted email hub for business applications"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct Global {
    /// Base URL of the mailroom server; default: MAILROOM_SERVER, else http:// and the address
    /// `serve` listens on (MAILROOM_LISTEN, or `listen` in the config file), else
    /// http://127.0.0.1:8025.
    #[arg(long, global = true, env = "MAILROOM_SERVER")]
    pub server: Option<String>,
    /// The config file `serve` reads (for its `listen` address); default <data-dir>/mailroom.toml.
    #[arg(long = "server-config", global = true, env = "MAILROOM_CONFIG")]
    pub config: Option<PathBuf>,
    /// API token; default: MAILROOM_TOKEN, else <data-dir>/admin-token.
    #[arg(long, global = true, env = "MAILROOM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory to read the admin token from.
    #[arg(long = "token-data-dir", global = true, env = "MAILROOM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the API and the delivery workers.
    Serve(ServeArgs),
    /// Guided setup: add an SMTP account, set its per-minute limit, test it and make it the default.
    Setup(SetupArgs),
    /// Email accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Users, their permission sets and tokens.
    #[command(subcommand)]
    User(UserCommand),
    /// Scenario routing.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Queue a message.
    Send(SendArgs),
    /// One message: show it with all its attempts, or confirm a draft.
    #[command(subcommand)]
    Message(MessageCommand),
    /// Messages not (yet) sent.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The sent archive.
    #[command(subcommand)]
    Sent(SentCommand),
    /// Work on the data folder itself, with the server stopped.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Work on the store itself, with every server on it stopped.
    #[command(subcommand)]
    Store(StoreCommand),
    /// The nodes sharing the store.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Email templates.
    #[command(subcommand)]
    Template(content::TemplateCommand),
    /// Business documents.
    #[command(subcommand)]
    Document(content::DocumentCommand),
    /// Files to attach to messages.
    #[command(subcommand)]
    Attachment(content::AttachmentCommand),
    /// Server profiles: the mail servers mailboxes connect to.
    #[command(subcommand)]
    Profile(mailboxes::ProfileCommand),
    /// Mailboxes of users and queues: edit, approve, test & enable.
    #[command(subcommand)]
    Mailbox(mailboxes::MailboxCommand),
    /// Organisation settings.
    #[command(subcommand)]
    Settings(mailboxes::SettingsCommand),
    /// Queues (shared inboxes).
    #[command(subcommand)]
    Queue(mailboxes::QueueCommand),
    /// Teams: permission sets granted to their members.
    #[command(subcommand)]
    Team(mailboxes::TeamCommand),
    /// Background jobs.
    #[command(subcommand)]
    Job(mailboxes::JobCommand),
    /// Your alerts.
    #[command(subcommand)]
    Alert(mailboxes::AlertCommand),
    /// Received mail: list, show, raw, sync state, reply, forward, conversations.
    #[command(subcommand)]
    Inbound(inbound::InboundCommand),
    /// Contacts the business application knows: their addresses and the records they belong to.
    #[command(subcommand)]
    Contact(inbound::ContactCommand),
    /// The app inside users' mail clients: eligibility, deployment, the add-in manifest.
    #[command(subcommand, name = "mail-client-app")]
    MailClientApp(app::AppCommand),
    /// Webhooks: receivers of events, their secrets, delivery logs and replays.
    #[command(subcommand)]
    Webhook(webhooks::WebhookCommand),
    /// The suppression list: addresses mail is no longer sent to.
    #[command(subcommand)]
    Suppression(suppressions::SuppressionCommand),
    /// DKIM keys per sending domain: generate, import, the DNS record to publish, rotation.
    #[command(subcommand)]
    Dkim(dkim::DkimCommand),
    /// Connect a mailbox with OAuth 2.0: prints the link to open, waits for the sign-in.
    Connect {
        /// Another mailbox than one's own (a queue's; needs email-setup).
        #[arg(long)]
        mailbox: Option<String>,
        /// The app registration (default: the one the mailbox's server profile names).
        #[arg(long)]
        registration: Option<String>,
        /// How long to wait for the sign-in, in seconds.
        #[arg(long, default_value_t = 600)]
        wait: u64,
    },
    /// OAuth app registrations (Microsoft Entra ID, OpenID Connect): add, verify, list, delete.
    #[command(subcommand, name = "app-registration")]
    AppRegistration(oauth::AppRegistrationCommand),
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Every node: id, host, state (alive, stopped, dead), last heartbeat, messages in flight.
    List,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy everything from one store into a new, empty one (e.g. SQLite to PostgreSQL when moving
    /// to several nodes), then check every table's row count and checksum on both sides.
    Copy(StoreCopyArgs),
}

#[derive(Args)]
pub struct StoreCopyArgs {
    /// The store to copy: sqlite://PATH or postgres://…
    #[arg(long)]
    pub from: String,
    /// The empty store to copy into: postgres://… or sqlite://PATH
    #[arg(long)]
    pub to: String,
    /// Also copy the uploaded files under this folder (the source's `<data-dir>/blobs`) into the
    /// target database, for servers with `blob_store = "database"`.
    #[arg(long)]
    pub blobs: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Regain access: re-enable the admin user (granting it email-admin) and print a new token.
    /// Runs on the server's machine while the server is stopped.
    Recover(ServeArgs),
}

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(global: &Global) -> Result<Self> {
        let token = match &global.token {
            Some(token) => token.clone(),
            None => {
                let dir = global
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                let path = dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no token: set MAILROOM_TOKEN or --token, or run where {} exists",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: server_url(global)?.trim_end_matches('/').to_owned(),
            token,
        })
    }

    /// Uploads raw bytes with their media type and disposition.
    pub(crate) async fn upload(
        &self,
        path: &str,
        bytes: Vec<u8>,
        content_type: &str,
        disposition: &str,
    ) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", content_type)
            .header("content-disposition", disposition)
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach the mailroom server at {}", self.base))?;
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(ApiFailure::new(status, value).into());
        }
        Ok(value)
    }

    /// A GET whose answer is bytes (a download).
    pub(crate) async fn download(&self, path: &str) -> Result<Vec<u8>> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the mailroom server at {}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let value: Value = response.json().await.unwrap_or(Value::Null);
            return Err(ApiFailure::new(status, value).into());
        }
        Ok(response.bytes().await?.to_vec())
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the mailroom server at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let message = value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("request failed");
            let code = value.get("code").and_then(Value::as_str).unwrap_or("");
            return Err(ApiFailure {
                summary: format!("{status} {code}: {message}"),
                body: value,
            }
            .into());
        }
        Ok(value)
    }
}

/// The server refused a request: its JSON error body, kept for `--output json`.
#[derive(Debug)]
pub struct ApiFailure {
    summary: String,
    pub body: Value,
}

impl ApiFailure {
    fn new(status: reqwest::StatusCode, value: Value) -> Self {
        Self {
            summary: format!(
                "{status} {}: {}",
                value["code"].as_str().unwrap_or_default(),
                value["message"].as_str().unwrap_or("request failed")
            ),
            body: value,
        }
    }
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl std::error::Error for ApiFailure {}

/// A failed command as JSON: the server's own error body when it refused the request, else
/// `{"code": "cli_error", "message": …}`.
pub fn error_as_json(error: &anyhow::Error) -> Value {
    match error.downcast_ref::<ApiFailure>() {
        Some(failure) if failure.body.is_object() => failure.body.clone(),
        _ => json!({"code": "cli_error", "message": format!("{error:#}")}),
    }
}

/// The server to talk to: `--server`/MAILROOM_SERVER, else the address `serve` listens on
/// (MAILROOM_LISTEN, else `listen` in its config file), else the default.
fn server_url(global: &Global) -> Result<String> {
    if let Some(server) = &global.server {
        return Ok(server.clone());
    }
    let listen = match std::env::var("MAILROOM_LISTEN") {
        Ok(listen) if !listen.trim().is_empty() => Some(listen),
        _ => {
            let data_dir = global
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
            let file = global
                .config
                .clone()
                .unwrap_or_else(|| data_dir.join("mailroom.toml"));
            match std::fs::read_to_string(&file) {
                Ok(text) => toml::from_str::<toml::Table>(&text)
                    .with_context(|| format!("reading {}", file.display()))?
                    .get("listen")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                Err(_) => None,
            }
        }
    };
    Ok(match listen {
        Some(listen) => {
            // A server listening on every interface is reached on loopback.
            let listen = listen
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:");
            format!("http://{listen}")
        }
        None => "http://127.0.0.1:8025".into(),
    })
}

pub(crate) fn str_of(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

pub(crate) fn print_table(rows: &[Value], columns: &[&str]) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| str_of(row, c)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let line = |values: Vec<String>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| {
                let v: String = v.chars().take(*w).collect();
                format!("{v:<w$}")
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!(
        "{}",
        line(columns.iter().map(|c| c.to_uppercase()).collect())
    );
    for row in cells {
        println!("{}", line(row));
    }
}

pub(crate) fn print_record(value: &Value) {
    if let Value::Object(map) = value {
        for (key, field) in map {
            // The bodies come last, as text: a person reads the text part, not raw HTML.
            if matches!(
                key.as_str(),
                "attempts" | "related_records" | "text" | "html"
            ) {
                continue;
            }
            println!("{key:<22} {}", str_of(value, key));
            let _ = field;
        }
        if let Some(Value::Array(records)) = value.get("related_records")
            && !records.is_empty()
        {
            println!("related_records");
            for record in records {
                println!(
                    "  {} {} ({})",
                    str_of(record, "type"),
                    str_of(record, "id"),
                    str_of(record, "relation")
                );
            }
        }
        if let Some(Value::String(text)) = value.get("text") {
            println!("text");
            for line in text.lines() {
                println!("  {line}");
            }
        } else if value.get("html").is_some_and(Value::is_string) {
            println!("text                   (HTML only; see --output json)");
        }
        if let Some(Value::Array(attempts)) = value.get("attempts") {
            println!("attempts");
            print_table(
                attempts,
                &[
                    "number",
                    "started_at",
                    "outcome",
                    "reply_code",
                    "reply_text",
                ],
            );
        }
    } else {
        println!("{value}");
    }
}

pub(crate) fn emit(output: Output, value: &Value, table: impl FnOnce(&Value)) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Table => table(value),
    }
}

pub(crate) const ACCOUNT_COLUMNS: &[&str] = &[
    "id",
    "connector",
    "name",
    "email_address",
    "host",
    "port",
    "rate_limit_per_minute",
    "is_default",
];
pub(crate) const MESSAGE_COLUMNS: &[&str] = &[
    "id",
    "status",
    "scenario",
    "to",
    "subject",
    "attempt_count",
    "created_at",
    "last_error",
];

pub async fn run(global: Global, command: Command) -> Result<()> {
    let client = Client::new(&global)?;
    let output = global.output;
    match command {
        Command::Serve(_) | Command::Admin(_) | Command::Store(_) => {
            unreachable!("serve and admin work on the data folder and are handled by main")
        }
        Command::Setup(args) => accounts::setup(&client, args, output).await?,
        Command::Template(command) => content::templates(&client, command, output).await?,
        Command::Document(command) => content::documents(&client, command, output).await?,
        Command::Attachment(command) => content::attachments(&client, command, output).await?,
        Command::Send(args) => mail::send(&client, args, output).await?,
        Command::Profile(command) => mailboxes::profiles(&client, command, output).await?,
        Command::Mailbox(command) => mailboxes::mailboxes(&client, command, output).await?,
        Command::Settings(command) => mailboxes::settings(&client, command, output).await?,
        Command::Queue(command) => mailboxes::queues(&client, command, output).await?,
        Command::Team(command) => mailboxes::teams(&client, command, output).await?,
        Command::Job(command) => mailboxes::jobs(&client, command, output).await?,
        Command::Alert(command) => mailboxes::alerts(&client, command, output).await?,
        Command::Inbound(command) => inbound::inbound(&client, command, output).await?,
        Command::Contact(command) => inbound::contact(&client, command, output).await?,
        Command::MailClientApp(command) => app::run(&client, command, output).await?,
        Command::Webhook(command) => webhooks::run(&client, command, output).await?,
        Command::Suppression(command) => suppressions::run(&client, command, output).await?,
        Command::Dkim(command) => dkim::run(&client, command, output).await?,
        Command::AppRegistration(command) => oauth::run(&client, command, output).await?,
        Command::Connect {
            mailbox,
            registration,
            wait,
        } => oauth::connect(&client, mailbox, registration, wait).await?,
        Command::Account(command) => accounts::run(&client, command, output).await?,
        Command::User(command) => users::run(&client, command, output).await?,
        Command::Scenario(command) => mail::scenarios(&client, command, output).await?,
        Command::Message(command) => mail::messages(&client, command, output).await?,
        Command::Outbox(command) => mail::outbox(&client, command, output).await?,
        Command::Sent(command) => mail::sent(&client, command, output).await?,
        Command::Node(NodeCommand::List) => {
            let value = client
                .call(reqwest::Method::GET, "/v1/nodes", None, &[])
                .await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "id",
                        "host",
                        "state",
                        "last_heartbeat_at",
                        "messages_in_flight",
                    ],
                )
            });
        }
    }
    Ok(())
}
