//! CLI commands for email accounts, and the guided setup.

use super::{ACCOUNT_COLUMNS, Client, Output, emit, print_record, print_table, str_of};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

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
    /// A Microsoft 365 mailbox, sent through Microsoft Graph with an app registration's app-only
    /// token (application permission Mail.Send). Defaults: 30 messages a minute, 4 at once.
    Microsoft365 {
        #[command(flatten)]
        common: CommonAccountArgs,
        /// The app registration (see `mailroom app-registration list`).
        #[arg(long)]
        app_registration: String,
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
    /// Send again a message whose outcome is unknown (connection lost after the final ".").
    #[arg(long)]
    retry_after_unknown: Option<bool>,
    /// The name given in EHLO (default: the server's hostname).
    #[arg(long)]
    ehlo_name: Option<String>,
    /// A domain besides the account's own that a workflow sender may be in (repeatable; replaces
    /// the list).
    #[arg(long = "allowed-sender-domain")]
    allowed_sender_domains: Vec<String>,
    /// The VERP bounce domain: return paths become bounces+<token>@<domain> ("" turns it off).
    #[arg(long)]
    bounce_domain: Option<String>,
    /// Seconds to wait for the connection (and implicit TLS).
    #[arg(long)]
    timeout_connect: Option<u32>,
    /// Seconds to wait for the greeting.
    #[arg(long)]
    timeout_greeting: Option<u32>,
    /// Seconds to wait for each command's reply.
    #[arg(long)]
    timeout_command: Option<u32>,
    /// Seconds to wait for the reply to the final ".".
    #[arg(long)]
    timeout_end_of_data: Option<u32>,
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

pub async fn setup(client: &Client, args: SetupArgs, output: Output) -> Result<()> {
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

/// Runs an `account` command.
pub async fn run(client: &Client, command: AccountCommand, output: Output) -> Result<()> {
    use reqwest::Method;
    match command {
        AccountCommand::Add(add) => {
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
                AddAccount::Microsoft365 {
                    common,
                    app_registration,
                } => {
                    let mut body = account_body(common, "microsoft365");
                    body.insert("app_registration_id".into(), json!(app_registration));
                    body.insert("permission".into(), json!("application"));
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
        AccountCommand::List => {
            let value = client.call(Method::GET, "/v1/accounts", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    ACCOUNT_COLUMNS,
                )
            });
        }
        AccountCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/accounts/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        AccountCommand::Test { id } => {
            let value = client
                .call(Method::POST, &format!("/v1/accounts/{id}/test"), None, &[])
                .await?;
            emit(output, &value, print_record);
            if value.get("ok") != Some(&Value::Bool(true)) {
                bail!("the connection test failed");
            }
        }
        AccountCommand::Remove { id } => {
            client
                .call(Method::DELETE, &format!("/v1/accounts/{id}"), None, &[])
                .await?;
            emit(output, &json!({"removed": id}), |_| {
                println!("account {id} removed")
            });
        }
        AccountCommand::Edit(edit) => {
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
            put(
                "retry_after_unknown",
                edit.retry_after_unknown.map(Value::from),
            );
            put("ehlo_name", edit.ehlo_name.map(Value::from));
            put(
                "bounce_domain",
                edit.bounce_domain.map(|d| {
                    if d.is_empty() {
                        Value::Null
                    } else {
                        Value::from(d)
                    }
                }),
            );
            if !edit.allowed_sender_domains.is_empty() {
                put(
                    "allowed_sender_domains",
                    Some(json!(edit.allowed_sender_domains)),
                );
            }
            let mut timeouts = serde_json::Map::new();
            for (key, seconds) in [
                ("connect_s", edit.timeout_connect),
                ("greeting_s", edit.timeout_greeting),
                ("command_s", edit.timeout_command),
                ("end_of_data_s", edit.timeout_end_of_data),
            ] {
                if let Some(seconds) = seconds {
                    timeouts.insert(key.into(), seconds.into());
                }
            }
            if !timeouts.is_empty() {
                put("timeouts", Some(Value::Object(timeouts)));
            }
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
    }
    Ok(())
}
