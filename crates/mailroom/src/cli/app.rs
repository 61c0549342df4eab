//! `mailroom mail-client-app …`: the app inside users' mail clients — who may use it, its
//! deployment, and its manifest.

use super::{Client, Output, emit, print_record, print_table};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;

#[derive(Subcommand)]
pub enum AppCommand {
    /// Every user's status (not-eligible, eligible, pending, added) and what they lack.
    Users,
    /// Your own status and what you lack.
    Me,
    /// Add the app for yourself (you must be eligible).
    AddMe,
    /// Show or set how the app reaches eligible users: automatic or manual.
    Mode {
        /// `automatic` or `manual`; without it, shows the mode.
        mode: Option<String>,
    },
    /// Deploy the app to every eligible user now (`--all-eligible`) or to the users named.
    Deploy {
        #[arg(long, conflicts_with = "users")]
        all_eligible: bool,
        /// A user id (repeatable).
        #[arg(long = "user")]
        users: Vec<String>,
    },
    /// Print the Office add-in manifest that points mail clients at the pane.
    Manifest,
}

fn print_users(value: &Value) {
    println!("deployment: {}", value["deployment"].as_str().unwrap_or(""));
    let rows: Vec<Value> = value["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            let missing: Vec<&str> = u["missing"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["code"].as_str())
                .collect();
            json!({"user_id": u["user_id"], "name": u["name"], "status": u["status"],
                   "mailbox": u["mailbox_address"], "missing": missing.join(",")})
        })
        .collect();
    print_table(&rows, &["user_id", "name", "status", "mailbox", "missing"]);
}

pub async fn run(client: &Client, command: AppCommand, output: Output) -> Result<()> {
    match command {
        AppCommand::Users => {
            let value = client
                .call(Method::GET, "/v1/addin/users", None, &[])
                .await?;
            emit(output, &value, print_users);
        }
        AppCommand::Me => {
            let value = client.call(Method::GET, "/v1/addin/me", None, &[]).await?;
            emit(output, &value, print_record);
        }
        AppCommand::AddMe => {
            let value = client.call(Method::POST, "/v1/addin/me", None, &[]).await?;
            emit(output, &value, print_record);
        }
        AppCommand::Mode { mode } => {
            let value = match mode {
                Some(mode) => {
                    client
                        .call(
                            Method::PUT,
                            "/v1/addin/settings",
                            Some(json!({"deployment": mode})),
                            &[],
                        )
                        .await?
                }
                None => {
                    client
                        .call(Method::GET, "/v1/addin/settings", None, &[])
                        .await?
                }
            };
            emit(output, &value, print_record);
        }
        AppCommand::Deploy {
            all_eligible,
            users,
        } => {
            let body = if all_eligible {
                json!({"all_eligible": true})
            } else {
                json!({"users": users})
            };
            let value = client
                .call(Method::POST, "/v1/addin/deploy", Some(body), &[])
                .await?;
            emit(output, &value, print_users);
        }
        AppCommand::Manifest => {
            let bytes = client.download("/v1/addin/manifest.xml").await?;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}
