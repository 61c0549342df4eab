//! CLI commands for server profiles, email settings, mailboxes, queues, teams, jobs and alerts.

use super::{Client, Output, emit, print_record, print_table};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;

#[derive(Subcommand)]
pub enum ProfileCommand {
    /// Add a server profile.
    Add {
        #[arg(long)]
        name: String,
        /// imap-smtp or exchange-online.
        #[arg(long, default_value = "imap-smtp")]
        kind: String,
        /// The IMAP server as host:port[:security] (security none, starttls or tls).
        #[arg(long)]
        incoming: Option<String>,
        /// The SMTP server as host:port[:security].
        #[arg(long)]
        outgoing: Option<String>,
        /// password or oauth2.
        #[arg(long, default_value = "password")]
        auth_type: String,
        /// The user alerted when a mailbox of this profile fails its test.
        #[arg(long)]
        owner: Option<String>,
        /// Connections open at most to the profile's servers at once.
        #[arg(long)]
        max_connections: Option<u32>,
        /// Make it the default profile for new mailboxes.
        #[arg(long)]
        default: bool,
    },
    List,
    Show {
        id: String,
    },
    /// Change a profile.
    Edit {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        incoming: Option<String>,
        #[arg(long)]
        outgoing: Option<String>,
        #[arg(long)]
        max_connections: Option<u32>,
        #[arg(long)]
        default: Option<bool>,
    },
    /// Delete a profile no mailbox uses.
    Delete {
        id: String,
    },
    /// Test & enable every mailbox of the profile (a background job; waits and shows progress).
    TestMailboxes {
        id: String,
        /// Return at once with the job's id instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
pub enum MailboxCommand {
    /// List mailboxes (every one with email-setup, otherwise one's own).
    List {
        #[arg(long)]
        profile: Option<String>,
    },
    Show {
        id: String,
    },
    /// Change a mailbox (or, with several ids, the profile and delivery methods of all of them).
    Edit {
        /// One or more mailbox ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[arg(long)]
        profile: Option<String>,
        /// server-side-sync or none.
        #[arg(long)]
        incoming: Option<String>,
        #[arg(long)]
        outgoing: Option<String>,
        /// Appointments, contacts and tasks: server-side-sync or none.
        #[arg(long)]
        act: Option<String>,
        /// all, responses-to-tracked, known-contacts or none.
        #[arg(long)]
        filter: Option<String>,
        #[arg(long)]
        username: Option<String>,
        /// The password, read from this environment variable (never from the command line).
        #[arg(long)]
        password_env: Option<String>,
    },
    /// Give mailboxes the organisation's defaults, then test & enable them (waits, with progress).
    ApplyDefaults {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    Approve {
        id: String,
    },
    Reject {
        id: String,
    },
    /// Test & enable a mailbox (waits for the result).
    Test {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// The organisation's email settings.
    #[command(subcommand)]
    Email(EmailSettingsCommand),
    /// How received mail is linked to conversations (tracking tokens, smart matching).
    #[command(subcommand)]
    Correlation(CorrelationSettingsCommand),
}

#[derive(Subcommand)]
pub enum CorrelationSettingsCommand {
    Show,
    /// Change some settings; the others keep their value.
    Set {
        /// Add `[PREFIX-TOKEN]` to outbound subjects and match it in replies.
        #[arg(long)]
        subject_token: Option<bool>,
        #[arg(long)]
        subject_token_prefix: Option<String>,
        /// Put the token in a plus-addressed Reply-To and match it.
        #[arg(long)]
        plus_addressing: Option<bool>,
        /// Match by subject and participants within this many days (0: off).
        #[arg(long)]
        smart_match_days: Option<u32>,
    },
}

#[derive(Subcommand)]
pub enum EmailSettingsCommand {
    Show,
    /// Change some settings; the others keep their value.
    Set {
        /// A profile id, or "none".
        #[arg(long)]
        default_profile: Option<String>,
        #[arg(long)]
        incoming: Option<String>,
        #[arg(long)]
        outgoing: Option<String>,
        #[arg(long)]
        act: Option<String>,
        #[arg(long)]
        process_only_approved_users: Option<bool>,
        #[arg(long)]
        process_only_approved_queues: Option<bool>,
        #[arg(long)]
        require_privilege_to_self_approve: Option<bool>,
    },
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// Add a queue (a shared inbox); it gets a mailbox with the organisation's defaults.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long = "email")]
        email_address: String,
        /// A member's user id (repeatable).
        #[arg(long = "member")]
        members: Vec<String>,
    },
    List,
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Add a team; its permission sets apply to its members.
    Add {
        #[arg(long)]
        name: String,
        #[arg(long = "member")]
        members: Vec<String>,
        #[arg(long = "permission")]
        permission_sets: Vec<String>,
    },
    List,
    /// Replace a team's members or permission sets.
    Edit {
        id: String,
        #[arg(long = "member")]
        members: Option<Vec<String>>,
        #[arg(long = "permission")]
        permission_sets: Option<Vec<String>>,
    },
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// A background job's progress.
    Show {
        id: String,
        /// Wait until the job is done, showing a progress bar.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
pub enum AlertCommand {
    /// Your alerts, newest first.
    List {
        #[arg(long)]
        all: bool,
    },
    Dismiss {
        id: String,
    },
}

/// `host:port[:security]` as the API's endpoint object.
fn endpoint(raw: &str) -> Value {
    let mut parts = raw.split(':');
    let host = parts.next().unwrap_or_default();
    let mut body = json!({"host": host});
    if let Some(port) = parts.next() {
        body["port"] = port.parse::<u16>().map_or(json!(port), |p| json!(p));
    }
    if let Some(security) = parts.next() {
        body["security"] = json!(security);
    }
    body
}

fn profile_columns(v: &Value) {
    print_table(
        v.as_array().map(Vec::as_slice).unwrap_or_default(),
        &[
            "id",
            "name",
            "kind",
            "auth_type",
            "is_default_for_new_mailboxes",
        ],
    )
}

fn mailbox_columns(v: &Value) {
    print_table(
        v.as_array().map(Vec::as_slice).unwrap_or_default(),
        &[
            "id",
            "kind",
            "email_address",
            "approval",
            "incoming_status",
            "outgoing_status",
            "enabled",
            "last_error",
        ],
    )
}

/// Draws `done/total` as a bar on one line (on a terminal) or as a line per change (otherwise).
fn draw_progress(job: &Value) {
    let total = job["total"].as_u64().unwrap_or(0);
    let done = job["done"].as_u64().unwrap_or(0);
    let width = 30u64;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    let bar: String = (0..width)
        .map(|i| if i < filled { '#' } else { '.' })
        .collect();
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{bar}] {done}/{total}  succeeded {}  failed {}",
        job["succeeded"].as_u64().unwrap_or(0),
        job["failed"].as_u64().unwrap_or(0)
    );
    let _ = err.flush();
}

/// Polls a job until it is done, with a progress bar on standard error; returns the final job.
pub async fn wait_for_job(client: &Client, id: &str) -> Result<Value> {
    let mut last = (u64::MAX, String::new());
    loop {
        let job = client
            .call(Method::GET, &format!("/v1/jobs/{id}"), None, &[])
            .await?;
        let now = (
            job["done"].as_u64().unwrap_or(0),
            job["state"].as_str().unwrap_or_default().to_owned(),
        );
        if now != last {
            draw_progress(&job);
            last = now;
        }
        if job["state"] == "done" {
            eprintln!();
            return Ok(job);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

pub async fn profiles(client: &Client, command: ProfileCommand, output: Output) -> Result<()> {
    match command {
        ProfileCommand::Add {
            name,
            kind,
            incoming,
            outgoing,
            auth_type,
            owner,
            max_connections,
            default,
        } => {
            let mut body = json!({"name": name, "kind": kind, "auth_type": auth_type,
                "is_default_for_new_mailboxes": default});
            if let Some(incoming) = incoming {
                body["incoming"] = endpoint(&incoming);
            }
            if let Some(outgoing) = outgoing {
                body["outgoing"] = endpoint(&outgoing);
            }
            if let Some(owner) = owner {
                body["owner_user_id"] = json!(owner);
            }
            if let Some(max) = max_connections {
                body["processing"] = json!({"max_connections": max});
            }
            let value = client
                .call(Method::POST, "/v1/server-profiles", Some(body), &[])
                .await?;
            emit(output, &value, print_record);
        }
        ProfileCommand::List => {
            let value = client
                .call(Method::GET, "/v1/server-profiles", None, &[])
                .await?;
            emit(output, &value, profile_columns);
        }
        ProfileCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/server-profiles/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        ProfileCommand::Edit {
            id,
            name,
            incoming,
            outgoing,
            max_connections,
            default,
        } => {
            let mut body = json!({});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if let Some(incoming) = incoming {
                body["incoming"] = endpoint(&incoming);
            }
            if let Some(outgoing) = outgoing {
                body["outgoing"] = endpoint(&outgoing);
            }
            if let Some(max) = max_connections {
                let current = client
                    .call(Method::GET, &format!("/v1/server-profiles/{id}"), None, &[])
                    .await?;
                let mut processing = current["processing"].clone();
                processing["max_connections"] = json!(max);
                body["processing"] = processing;
            }
            if let Some(default) = default {
                body["is_default_for_new_mailboxes"] = json!(default);
            }
            let value = client
                .call(
                    Method::PATCH,
                    &format!("/v1/server-profiles/{id}"),
                    Some(body),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        ProfileCommand::Delete { id } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/server-profiles/{id}"),
                    None,
                    &[],
                )
                .await?;
            println!("deleted server profile {id}");
        }
        ProfileCommand::TestMailboxes { id, no_wait } => {
            let job = client
                .call(
                    Method::POST,
                    &format!("/v1/server-profiles/{id}/test-mailboxes"),
                    None,
                    &[],
                )
                .await?;
            let job = if no_wait {
                job
            } else {
                wait_for_job(client, job["id"].as_str().unwrap_or_default()).await?
            };
            emit(output, &job, print_record);
        }
    }
    Ok(())
}

pub async fn mailboxes(client: &Client, command: MailboxCommand, output: Output) -> Result<()> {
    match command {
        MailboxCommand::List { profile } => {
            let path = match profile {
                Some(profile) => format!("/v1/mailboxes?profile_id={profile}"),
                None => "/v1/mailboxes".to_owned(),
            };
            let value = client.call(Method::GET, &path, None, &[]).await?;
            emit(output, &value, mailbox_columns);
        }
        MailboxCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/mailboxes/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        MailboxCommand::Edit {
            ids,
            profile,
            incoming,
            outgoing,
            act,
            filter,
            username,
            password_env,
        } => {
            let mut set = json!({});
            for (key, value) in [
                ("profile_id", profile),
                ("incoming", incoming),
                ("outgoing", outgoing),
                ("act", act),
                ("filter", filter),
                ("username", username),
            ] {
                if let Some(value) = value {
                    set[key] = json!(value);
                }
            }
            if let Some(variable) = password_env {
                let password = std::env::var(&variable).map_err(|_| {
                    anyhow::anyhow!("the environment variable {variable} is not set")
                })?;
                set["password"] = json!(password);
            }
            let value = if ids.len() == 1 {
                client
                    .call(
                        Method::PATCH,
                        &format!("/v1/mailboxes/{}", ids[0]),
                        Some(set),
                        &[],
                    )
                    .await?
            } else {
                client
                    .call(
                        Method::PATCH,
                        "/v1/mailboxes",
                        Some(json!({"ids": ids, "set": set})),
                        &[],
                    )
                    .await?
            };
            if value.is_array() {
                emit(output, &value, mailbox_columns);
            } else {
                emit(output, &value, print_record);
            }
        }
        MailboxCommand::ApplyDefaults { ids } => {
            let job = client
                .call(
                    Method::POST,
                    "/v1/mailboxes/apply-defaults",
                    Some(json!({"ids": ids})),
                    &[],
                )
                .await?;
            let job = wait_for_job(client, job["id"].as_str().unwrap_or_default()).await?;
            emit(output, &job, print_record);
        }
        MailboxCommand::Approve { id } => {
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/mailboxes/{id}/approve"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        MailboxCommand::Reject { id } => {
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/mailboxes/{id}/reject"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        MailboxCommand::Test { id } => {
            let job = client
                .call(Method::POST, &format!("/v1/mailboxes/{id}/test"), None, &[])
                .await?;
            wait_for_job(client, job["id"].as_str().unwrap_or_default()).await?;
            let value = client
                .call(Method::GET, &format!("/v1/mailboxes/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
    }
    Ok(())
}

pub async fn settings(client: &Client, command: SettingsCommand, output: Output) -> Result<()> {
    let command = match command {
        SettingsCommand::Email(command) => command,
        SettingsCommand::Correlation(command) => {
            return correlation_settings(client, command, output).await;
        }
    };
    let value = match command {
        EmailSettingsCommand::Show => {
            client
                .call(Method::GET, "/v1/settings/email", None, &[])
                .await?
        }
        EmailSettingsCommand::Set {
            default_profile,
            incoming,
            outgoing,
            act,
            process_only_approved_users,
            process_only_approved_queues,
            require_privilege_to_self_approve,
        } => {
            let mut body = json!({});
            if let Some(profile) = default_profile {
                body["default_profile_id"] = if profile == "none" {
                    Value::Null
                } else {
                    json!(profile)
                };
            }
            for (key, value) in [("incoming", incoming), ("outgoing", outgoing), ("act", act)] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            for (key, value) in [
                ("process_only_approved_users", process_only_approved_users),
                ("process_only_approved_queues", process_only_approved_queues),
                (
                    "require_privilege_to_self_approve",
                    require_privilege_to_self_approve,
                ),
            ] {
                if let Some(value) = value {
                    body[key] = json!(value);
                }
            }
            client
                .call(Method::PUT, "/v1/settings/email", Some(body), &[])
                .await?
        }
    };
    emit(output, &value, print_record);
    Ok(())
}

async fn correlation_settings(
    client: &Client,
    command: CorrelationSettingsCommand,
    output: Output,
) -> Result<()> {
    const PATH: &str = "/v1/settings/correlation";
    let mut value = client.call(Method::GET, PATH, None, &[]).await?;
    if let CorrelationSettingsCommand::Set {
        subject_token,
        subject_token_prefix,
        plus_addressing,
        smart_match_days,
    } = command
    {
        // The API replaces the settings whole: what is not given keeps its current value.
        let changes = [
            ("subject_token", subject_token.map(|v| json!(v))),
            (
                "subject_token_prefix",
                subject_token_prefix.map(|v| json!(v)),
            ),
            ("plus_addressing", plus_addressing.map(|v| json!(v))),
            ("smart_match_days", smart_match_days.map(|v| json!(v))),
        ];
        for (key, change) in changes {
            if let Some(change) = change {
                value[key] = change;
            }
        }
        value = client.call(Method::PUT, PATH, Some(value), &[]).await?;
    }
    emit(output, &value, print_record);
    Ok(())
}

pub async fn queues(client: &Client, command: QueueCommand, output: Output) -> Result<()> {
    match command {
        QueueCommand::Add {
            name,
            email_address,
            members,
        } => {
            let value = client
                .call(
                    Method::POST,
                    "/v1/queues",
                    Some(json!({"name": name, "email_address": email_address, "members": members})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        QueueCommand::List => {
            let value = client.call(Method::GET, "/v1/queues", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &["id", "name", "email_address", "mailbox_id"],
                )
            });
        }
    }
    Ok(())
}

pub async fn teams(client: &Client, command: TeamCommand, output: Output) -> Result<()> {
    match command {
        TeamCommand::Add {
            name,
            members,
            permission_sets,
        } => {
            let value = client
                .call(
                    Method::POST,
                    "/v1/teams",
                    Some(json!({"name": name, "members": members, "permission_sets": permission_sets})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        TeamCommand::List => {
            let value = client.call(Method::GET, "/v1/teams", None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &["id", "name", "permission_sets", "members"],
                )
            });
        }
        TeamCommand::Edit {
            id,
            members,
            permission_sets,
        } => {
            let mut body = json!({});
            if let Some(members) = members {
                body["members"] = json!(members);
            }
            if let Some(sets) = permission_sets {
                body["permission_sets"] = json!(sets);
            }
            let value = client
                .call(Method::PATCH, &format!("/v1/teams/{id}"), Some(body), &[])
                .await?;
            emit(output, &value, print_record);
        }
    }
    Ok(())
}

pub async fn jobs(client: &Client, command: JobCommand, output: Output) -> Result<()> {
    let JobCommand::Show { id, wait } = command;
    let value = if wait {
        wait_for_job(client, &id).await?
    } else {
        client
            .call(Method::GET, &format!("/v1/jobs/{id}"), None, &[])
            .await?
    };
    emit(output, &value, print_record);
    Ok(())
}

pub async fn alerts(client: &Client, command: AlertCommand, output: Output) -> Result<()> {
    match command {
        AlertCommand::List { all } => {
            let path = if all {
                "/v1/alerts?include_dismissed=true"
            } else {
                "/v1/alerts"
            };
            let value = client.call(Method::GET, path, None, &[]).await?;
            emit(output, &value, |v| {
                print_table(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &["id", "kind", "created_at", "message"],
                )
            });
        }
        AlertCommand::Dismiss { id } => {
            client
                .call(Method::POST, &format!("/v1/alerts/{id}/dismiss"), None, &[])
                .await?;
            println!("dismissed alert {id}");
        }
    }
    Ok(())
}
