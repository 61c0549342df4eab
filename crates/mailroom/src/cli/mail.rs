//! CLI commands about mail: scenario routing, sending, one message, the outbox and the sent archive.

use super::{Client, MESSAGE_COLUMNS, Output, emit, print_record, print_table};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum ScenarioCommand {
    List,
    /// Send a scenario through an account (creates custom scenarios).
    Assign {
        name: String,
        account_id: String,
        /// Give the scenario's mail a one-click unsubscribe link (true/false; absent: unchanged).
        #[arg(long)]
        unsubscribe: Option<bool>,
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
    /// Give this message a one-click unsubscribe link (default: its scenario's setting).
    #[arg(long)]
    unsubscribe: Option<bool>,
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

/// Runs a `scenario` command.
pub async fn scenarios(client: &Client, command: ScenarioCommand, output: Output) -> Result<()> {
    use reqwest::Method;
    match command {
        ScenarioCommand::List => {
            let value = client.call(Method::GET, "/v1/scenarios", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "name",
                        "built_in",
                        "account_id",
                        "effective_account_id",
                        "unsubscribe",
                        "description",
                    ],
                )
            });
        }
        ScenarioCommand::Assign {
            name,
            account_id,
            unsubscribe,
        } => {
            let value = client
                .call(
                    Method::PUT,
                    &format!("/v1/scenarios/{name}"),
                    Some(json!({"account_id": account_id, "unsubscribe": unsubscribe})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        ScenarioCommand::Unassign { name } => {
            let value = client
                .call(Method::DELETE, &format!("/v1/scenarios/{name}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
    }
    Ok(())
}

/// Runs `send`: queues one message.
pub async fn send(client: &Client, args: SendArgs, output: Output) -> Result<()> {
    use reqwest::Method;
    let related = args
        .related
        .iter()
        .map(|spec| {
            let parts: Vec<&str> = spec.splitn(3, ':').collect();
            match parts.as_slice() {
                [kind, id] => Ok(json!({"type": kind, "id": id})),
                [kind, id, relation] => Ok(json!({"type": kind, "id": id, "relation": relation})),
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
    if let Some(unsubscribe) = args.unsubscribe {
        body["unsubscribe"] = json!(unsubscribe);
    }
    let headers: Vec<(&str, String)> = args
        .idempotency_key
        .map(|k| vec![("Idempotency-Key", k)])
        .unwrap_or_default();
    let value = client
        .call(Method::POST, "/v1/messages", Some(body), &headers)
        .await?;
    emit(output, &value, print_record);
    Ok(())
}

/// Runs a `message` command.
pub async fn messages(client: &Client, command: MessageCommand, output: Output) -> Result<()> {
    use reqwest::Method;
    match command {
        MessageCommand::Confirm { id } => {
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
        MessageCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/messages/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
    }
    Ok(())
}

/// Runs an `outbox` command.
pub async fn outbox(client: &Client, command: OutboxCommand, output: Output) -> Result<()> {
    use reqwest::Method;
    match command {
        OutboxCommand::List(args) => {
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
        OutboxCommand::Retry { id } => {
            let value = client
                .call(Method::POST, &format!("/v1/messages/{id}/retry"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        OutboxCommand::Cancel { id } => {
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
    }
    Ok(())
}

/// Runs a `sent` command.
pub async fn sent(client: &Client, command: SentCommand, output: Output) -> Result<()> {
    use reqwest::Method;
    match command {
        SentCommand::List(args) => {
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
