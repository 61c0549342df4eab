//! The CLI client: each command is one or two API calls against a running server.
//! `--output json` prints the API's JSON; the default is a human table.

use crate::config::{DEFAULT_DATA_DIR, ServeArgs};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

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
    /// Email templates.
    #[command(subcommand)]
    Template(crate::cli_content::TemplateCommand),
    /// Business documents.
    #[command(subcommand)]
    Document(crate::cli_content::DocumentCommand),
    /// Files to attach to messages.
    #[command(subcommand)]
    Attachment(crate::cli_content::AttachmentCommand),
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Regain access: re-enable the admin user (granting it email-admin) and print a new token.
    /// Runs on the server's machine while the server is stopped.
    Recover(ServeArgs),
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Add an account.
    #[command(subcommand)]
    Add(AddAccount),
    List,
    Show {
        id: String,
    },
    /// Change an account; what is not given stays. Changing the server or username of an account
    /// with a password needs the password again (--password-stdin).
    Edit(EditAccount),
    /// Test the connection (and authentication) of an account.
    Test {
        id: String,
    },
    Remove {
        id: String,
    },
}

#[derive(Args)]
pub struct CommonAccountArgs {
    #[arg(long)]
    name: String,
    /// The account's address (sender address).
    #[arg(long = "email")]
    email_address: String,
    #[arg(long)]
    sender_name: Option<String>,
    /// Messages per minute (0 = unlimited).
    #[arg(long)]
    rate_limit: Option<i64>,
    #[arg(long)]
    concurrency: Option<i64>,
    #[arg(long)]
    max_attempts: Option<i64>,
}

#[derive(Subcommand)]
pub enum AddAccount {
    Smtp {
        #[command(flatten)]
        common: CommonAccountArgs,
        #[arg(long)]
        host: String,
        #[arg(long)]
        port: Option<u16>,
        /// none, starttls or tls.
        #[arg(long)]
        security: Option<String>,
        #[arg(long)]
        username: Option<String>,
        /// Prefer --password-stdin: a password on the command line is visible to other local users.
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        #[arg(long)]
        password_stdin: bool,
    },
    Pickup {
        #[command(flatten)]
        common: CommonAccountArgs,
        /// Folder for the .eml files (absolute); default <data-dir>/pickup of the server.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct EditAccount {
    id: String,
    #[arg(long)]
    name: Option<String>,
    #[arg(long = "email")]
    email_address: Option<String>,
    #[arg(long)]
    sender_name: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// none, starttls or tls.
    #[arg(long)]
    security: Option<String>,
    #[arg(long)]
    username: Option<String>,
    /// Read the (new) password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// Messages per minute (0 = unlimited).
    #[arg(long)]
    rate_limit: Option<i64>,
    #[arg(long)]
    concurrency: Option<i64>,
    #[arg(long)]
    max_attempts: Option<i64>,
}

/// Answers for the guided setup; whatever is not given is asked for on the terminal.
#[derive(Args)]
pub struct SetupArgs {
    #[arg(long)]
    name: Option<String>,
    #[arg(long = "email")]
    email_address: Option<String>,
    /// The name recipients see beside the address.
    #[arg(long)]
    sender_name: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// none, starttls or tls.
    #[arg(long)]
    security: Option<String>,
    /// Send a test message to this address once the account works ("" to skip).
    #[arg(long)]
    test_to: Option<String>,
    /// Leave empty for no authentication.
    #[arg(long)]
    username: Option<String>,
    #[arg(long)]
    password_stdin: bool,
    /// Messages per minute the provider allows (0 = unlimited).
    #[arg(long)]
    rate_limit: Option<i64>,
    /// Do not ask; fail when an answer is missing.
    #[arg(long)]
    non_interactive: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long = "email")]
        contact_email: Option<String>,
        /// full, limited, guest, delegated-admin or external-accountant.
        #[arg(long, default_value = "full")]
        licence: String,
        /// A permission set, e.g. email-send or "read customer" (repeatable).
        #[arg(long = "permission")]
        permission_sets: Vec<String>,
    },
    List,
    Show {
        id: String,
    },
    /// Disable a user; their tokens stop working.
    Disable {
        id: String,
    },
    /// Create a token for a user (the secret is printed once).
    Token {
        id: String,
        #[arg(long, default_value = "cli")]
        name: String,
        /// RFC 3339 expiry time.
        #[arg(long)]
        expires_at: Option<String>,
    },
    /// List a user's tokens.
    Tokens {
        id: String,
    },
    /// Revoke a user's token.
    Revoke {
        id: String,
        token_id: String,
    },
}

#[derive(Subcommand)]
pub enum ScenarioCommand {
    List,
    /// Send a scenario through an account (creates custom scenarios).
    Assign {
        name: String,
        account_id: String,
    },
    /// Let a scenario use the default account again.
    Unassign {
        name: String,
    },
}

#[derive(Args)]
pub struct SendArgs {
    #[arg(long, required = true)]
    to: Vec<String>,
    #[arg(long)]
    cc: Vec<String>,
    #[arg(long)]
    bcc: Vec<String>,
    #[arg(long)]
    subject: String,
    #[arg(long)]
    text: Option<String>,
    #[arg(long)]
    html: Option<String>,
    #[arg(long)]
    scenario: Option<String>,
    #[arg(long)]
    account: Option<String>,
    /// A related record as TYPE:ID or TYPE:ID:primary (repeatable).
    #[arg(long)]
    related: Vec<String>,
    /// RFC 3339 time to send at.
    #[arg(long)]
    send_at: Option<String>,
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Subcommand)]
pub enum MessageCommand {
    /// A message: its fields, the text part, related records and every attempt.
    Show { id: String },
    /// Send a draft (a document for a customer whose profile sends after confirmation).
    Confirm { id: String },
}

#[derive(Args)]
pub struct ListArgs {
    /// Comma-separated statuses (outbox only).
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    scenario: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Subcommand)]
pub enum OutboxCommand {
    List(ListArgs),
    Retry { id: String },
    Cancel { id: String },
}

#[derive(Subcommand)]
pub enum SentCommand {
    List(ListArgs),
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
            return Err(ApiFailure {
                summary: format!(
                    "{status} {}: {}",
                    value["code"].as_str().unwrap_or_default(),
                    value["message"].as_str().unwrap_or("request failed")
                ),
                body: value,
            }
            .into());
        }
        Ok(value)
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

fn str_of(value: &Value, key: &str) -> String {
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

const ACCOUNT_COLUMNS: &[&str] = &[
    "id",
    "connector",
    "name",
    "email_address",
    "host",
    "port",
    "rate_limit_per_minute",
    "is_default",
];
const MESSAGE_COLUMNS: &[&str] = &[
    "id",
    "status",
    "scenario",
    "to",
    "subject",
    "attempt_count",
    "created_at",
    "last_error",
];

fn list_query(args: &ListArgs) -> String {
    let mut parts = Vec::new();
    for (key, value) in [
        ("status", &args.status),
        ("account_id", &args.account),
        ("scenario", &args.scenario),
        ("cursor", &args.cursor),
    ] {
        if let Some(value) = value {
            parts.push(format!("{key}={value}"));
        }
    }
    if let Some(limit) = args.limit {
        parts.push(format!("limit={limit}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn print_page(value: &Value) {
    let items = value
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    print_table(&items, MESSAGE_COLUMNS);
    println!(
        "{} of {} shown",
        items.len(),
        value.get("total").and_then(Value::as_i64).unwrap_or(0)
    );
    if let Some(cursor) = value.get("next_cursor").and_then(Value::as_str) {
        println!("next page: --cursor {cursor}");
    }
}

fn account_body(common: CommonAccountArgs, connector: &str) -> serde_json::Map<String, Value> {
    let mut body = serde_json::Map::new();
    body.insert("connector".into(), json!(connector));
    body.insert("name".into(), json!(common.name));
    body.insert("email_address".into(), json!(common.email_address));
    let optional = [
        ("sender_name", common.sender_name.map(Value::from)),
        ("rate_limit_per_minute", common.rate_limit.map(Value::from)),
        ("concurrency_limit", common.concurrency.map(Value::from)),
        ("max_attempts", common.max_attempts.map(Value::from)),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    }
    body
}

/// Asks a question on the terminal; an empty answer takes the default.
fn ask(question: &str, default: Option<&str>, non_interactive: bool) -> Result<String> {
    if non_interactive {
        return default
            .map(str::to_owned)
            .with_context(|| format!("{question}: no answer given (use the matching flag)"));
    }
    match default {
        Some(default) => eprint!("{question} [{default}]: "),
        None => eprint!("{question}: "),
    }
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    let answer = answer.trim();
    match (answer.is_empty(), default) {
        (true, Some(default)) => Ok(default.to_owned()),
        (true, None) => bail!("{question}: an answer is required"),
        (false, _) => Ok(answer.to_owned()),
    }
}

async fn setup(client: &Client, args: SetupArgs, output: Output) -> Result<()> {
    use reqwest::Method;
    let quiet = args.non_interactive;
    let name = match args.name {
        Some(v) => v,
        None => ask("Account name", Some("Company mail"), quiet)?,
    };
    let email = match args.email_address {
        Some(v) => v,
        None => ask("Sender address (e.g. sales@example.com)", None, quiet)?,
    };
    let sender_name = match args.sender_name {
        Some(v) => v,
        None => ask(
            "Sender name recipients see (e.g. Cronus Sales)",
            Some(&name),
            quiet,
        )?,
    };
    let host = match args.host {
        Some(v) => v,
        None => ask("SMTP server host", None, quiet)?,
    };
    let security = match args.security {
        Some(v) => v,
        None => ask("Security (none, starttls, tls)", Some("starttls"), quiet)?,
    };
    let default_port = match security.as_str() {
        "none" => "25",
        "tls" => "465",
        _ => "587",
    };
    let port: u16 = match args.port {
        Some(v) => v,
        None => ask("Port", Some(default_port), quiet)?
            .parse()
            .context("the port must be a number")?,
    };
    let username = match args.username {
        Some(v) => v,
        None => ask("Username (empty for no authentication)", Some(""), quiet)?,
    };
    let password = if username.is_empty() {
        None
    } else if args.password_stdin || quiet {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Some(text.trim_end_matches(['\r', '\n']).to_owned())
    } else {
        Some(ask("Password", None, false)?)
    };
    let rate_limit: i64 = match args.rate_limit {
        Some(v) => v,
        None => ask(
            "Messages per minute the provider allows (0 = unlimited)",
            Some("30"),
            quiet,
        )?
        .parse()
        .context("the limit must be a number")?,
    };
    let mut body = json!({"connector": "smtp", "name": name, "email_address": email, "host": host, "port": port,
                          "security": security, "rate_limit_per_minute": rate_limit, "sender_name": sender_name});
    if let Some(password) = password {
        body["username"] = json!(username);
        body["password"] = json!(password);
    }
    let account = client
        .call(Method::POST, "/v1/accounts", Some(body), &[])
        .await?;
    let id = account["id"]
        .as_str()
        .context("the server answered without an account id")?
        .to_owned();
    let test = client
        .call(Method::POST, &format!("/v1/accounts/{id}/test"), None, &[])
        .await?;
    if test["ok"] != Value::Bool(true) {
        // An account that cannot send must not become the default: remove it and say why.
        client
            .call(Method::DELETE, &format!("/v1/accounts/{id}"), None, &[])
            .await?;
        bail!(
            "the connection test failed, so the account was not kept: {}",
            str_of(&test, "detail")
        );
    }
    client
        .call(
            Method::PUT,
            "/v1/scenarios/default",
            Some(json!({"account_id": id})),
            &[],
        )
        .await?;
    let account = client
        .call(Method::GET, &format!("/v1/accounts/{id}"), None, &[])
        .await?;
    emit(output, &account, |account| {
        println!("{}", str_of(&test, "detail"));
        println!(
            "Account {} ({}) is now the default account. Its id: {}",
            str_of(account, "name"),
            str_of(account, "email_address"),
            str_of(account, "id")
        );
    });
    let test_to = match args.test_to {
        Some(v) => v,
        None if quiet => String::new(),
        None => ask(
            "Send a test message to (an address; empty to skip)",
            Some(""),
            false,
        )?,
    };
    if !test_to.trim().is_empty() {
        let sent = client
            .call(
                Method::POST,
                "/v1/messages",
                Some(json!({"to": [test_to.trim()], "account_id": id,
                    "subject": "mailroom test message",
                    "text": format!("This message was sent through the account {name} to check that it works.")})),
                &[],
            )
            .await?;
        if output == Output::Table {
            println!(
                "Test message queued ({}); follow it with: mailroom message show {}",
                str_of(&sent, "status"),
                str_of(&sent, "id")
            );
        }
    }
    Ok(())
}

pub async fn run(global: Global, command: Command) -> Result<()> {
    let client = Client::new(&global)?;
    let output = global.output;
    use reqwest::Method;
    match command {
        Command::Serve(_) | Command::Admin(_) => {
            unreachable!("serve and admin work on the data folder and are handled by main")
        }
        Command::Setup(args) => setup(&client, args, output).await?,
        Command::Account(AccountCommand::Add(add)) => {
            let body = match add {
                AddAccount::Smtp {
                    common,
                    host,
                    port,
                    security,
                    username,
                    password,
                    password_stdin,
                } => {
                    let mut body = account_body(common, "smtp");
                    body.insert("host".into(), json!(host));
                    if let Some(port) = port {
                        body.insert("port".into(), json!(port));
                    }
                    if let Some(security) = security {
                        body.insert("security".into(), json!(security));
                    }
                    if let Some(username) = username {
                        body.insert("username".into(), json!(username));
                    }
                    let password = if password_stdin {
                        let mut text = String::new();
                        std::io::stdin().read_to_string(&mut text)?;
                        Some(text.trim_end_matches(['\r', '\n']).to_owned())
                    } else {
                        password
                    };
                    if let Some(password) = password {
                        body.insert("password".into(), json!(password));
                    }
                    body
                }
                AddAccount::Pickup { common, dir } => {
                    let mut body = account_body(common, "pickup");
                    if let Some(dir) = dir {
                        let dir = if dir.is_absolute() {
                            dir
                        } else {
                            std::env::current_dir()?.join(dir)
                        };
                        body.insert("pickup_dir".into(), json!(dir.display().to_string()));
                    }
                    body
                }
            };
            let value = client
                .call(Method::POST, "/v1/accounts", Some(Value::Object(body)), &[])
                .await?;
            emit(output, &value, print_record);
        }
        Command::Account(AccountCommand::List) => {
            let value = client.call(Method::GET, "/v1/accounts", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    ACCOUNT_COLUMNS,
                )
            });
        }
        Command::Account(AccountCommand::Show { id }) => {
            let value = client
                .call(Method::GET, &format!("/v1/accounts/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        Command::Account(AccountCommand::Test { id }) => {
            let value = client
                .call(Method::POST, &format!("/v1/accounts/{id}/test"), None, &[])
                .await?;
            emit(output, &value, print_record);
            if value.get("ok") != Some(&Value::Bool(true)) {
                bail!("the connection test failed");
            }
        }
        Command::Account(AccountCommand::Remove { id }) => {
            client
                .call(Method::DELETE, &format!("/v1/accounts/{id}"), None, &[])
                .await?;
            emit(output, &json!({"removed": id}), |_| {
                println!("account {id} removed")
            });
        }
        Command::User(UserCommand::Add {
            name,
            contact_email,
            licence,
            permission_sets,
        }) => {
            let mut body =
                json!({"name": name, "licence": licence, "permission_sets": permission_sets});
            if let Some(email) = contact_email {
                body["contact_email"] = json!(email);
            }
            let value = client
                .call(Method::POST, "/v1/users", Some(body), &[])
                .await?;
            emit(output, &value, print_record);
        }
        Command::User(UserCommand::List) => {
            let value = client.call(Method::GET, "/v1/users", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "id",
                        "name",
                        "licence",
                        "enabled",
                        "permission_sets",
                        "contact_email",
                    ],
                )
            });
        }
        Command::User(UserCommand::Show { id }) => {
            let value = client
                .call(Method::GET, &format!("/v1/users/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        Command::User(UserCommand::Disable { id }) => {
            let value = client
                .call(
                    Method::PATCH,
                    &format!("/v1/users/{id}"),
                    Some(json!({"enabled": false})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        Command::User(UserCommand::Token {
            id,
            name,
            expires_at,
        }) => {
            let mut body = json!({"name": name});
            if let Some(expires_at) = expires_at {
                body["expires_at"] = json!(expires_at);
            }
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/users/{id}/tokens"),
                    Some(body),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        Command::User(UserCommand::Tokens { id }) => {
            let value = client
                .call(Method::GET, &format!("/v1/users/{id}/tokens"), None, &[])
                .await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &["id", "name", "created_at", "expires_at", "revoked_at"],
                )
            });
        }
        Command::User(UserCommand::Revoke { id, token_id }) => {
            let value = client
                .call(
                    Method::DELETE,
                    &format!("/v1/users/{id}/tokens/{token_id}"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        Command::Scenario(ScenarioCommand::List) => {
            let value = client.call(Method::GET, "/v1/scenarios", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "name",
                        "built_in",
                        "account_id",
                        "effective_account_id",
                        "description",
                    ],
                )
            });
        }
        Command::Scenario(ScenarioCommand::Assign { name, account_id }) => {
            let value = client
                .call(
                    Method::PUT,
                    &format!("/v1/scenarios/{name}"),
                    Some(json!({"account_id": account_id})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        Command::Scenario(ScenarioCommand::Unassign { name }) => {
            let value = client
                .call(Method::DELETE, &format!("/v1/scenarios/{name}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        Command::Send(args) => {
            let related = args
                .related
                .iter()
                .map(|spec| {
                    let parts: Vec<&str> = spec.splitn(3, ':').collect();
                    match parts.as_slice() {
                        [kind, id] => Ok(json!({"type": kind, "id": id})),
                        [kind, id, relation] => {
                            Ok(json!({"type": kind, "id": id, "relation": relation}))
                        }
                        _ => bail!("--related {spec:?}: expected TYPE:ID or TYPE:ID:primary"),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let mut body = json!({"to": args.to, "cc": args.cc, "bcc": args.bcc, "subject": args.subject, "related_records": related});
            for (key, value) in [
                ("text", args.text),
                ("html", args.html),
                ("scenario", args.scenario),
                ("account_id", args.account),
                ("send_at", args.send_at),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            let headers: Vec<(&str, String)> = args
                .idempotency_key
                .map(|k| vec![("Idempotency-Key", k)])
                .unwrap_or_default();
            let value = client
                .call(Method::POST, "/v1/messages", Some(body), &headers)
                .await?;
            emit(output, &value, print_record);
        }
        Command::Template(command) => {
            crate::cli_content::templates(&client, command, output).await?
        }
        Command::Document(command) => {
            crate::cli_content::documents(&client, command, output).await?
        }
        Command::Attachment(command) => {
            crate::cli_content::attachments(&client, command, output).await?
        }
        Command::Message(MessageCommand::Confirm { id }) => {
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/messages/{id}/confirm"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        Command::Account(AccountCommand::Edit(edit)) => {
            let mut body = serde_json::Map::new();
            let mut put = |key: &str, value: Option<Value>| {
                if let Some(value) = value {
                    body.insert(key.into(), value);
                }
            };
            put("name", edit.name.map(Value::from));
            put("email_address", edit.email_address.map(Value::from));
            put("sender_name", edit.sender_name.map(Value::from));
            put("host", edit.host.map(Value::from));
            put("port", edit.port.map(Value::from));
            put("security", edit.security.map(Value::from));
            put("username", edit.username.map(Value::from));
            put("rate_limit_per_minute", edit.rate_limit.map(Value::from));
            put("concurrency_limit", edit.concurrency.map(Value::from));
            put("max_attempts", edit.max_attempts.map(Value::from));
            if edit.password_stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                put(
                    "password",
                    Some(Value::from(text.trim_end_matches(['\r', '\n']))),
                );
            }
            let value = client
                .call(
                    Method::PATCH,
                    &format!("/v1/accounts/{}", edit.id),
                    Some(Value::Object(body)),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        Command::Message(MessageCommand::Show { id }) => {
            let value = client
                .call(Method::GET, &format!("/v1/messages/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        Command::Outbox(OutboxCommand::List(args)) => {
            let value = client
                .call(
                    Method::GET,
                    &format!("/v1/outbox{}", list_query(&args)),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_page);
        }
        Command::Outbox(OutboxCommand::Retry { id }) => {
            let value = client
                .call(Method::POST, &format!("/v1/messages/{id}/retry"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        Command::Outbox(OutboxCommand::Cancel { id }) => {
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/messages/{id}/cancel"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        Command::Sent(SentCommand::List(args)) => {
            let value = client
                .call(
                    Method::GET,
                    &format!("/v1/sent{}", list_query(&args)),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_page);
        }
    }
    Ok(())
}
