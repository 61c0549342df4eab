//! `mailroom suppression …`: addresses mail is no longer sent to.

use super::{Client, Output, emit, print_record, print_table};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum SuppressionCommand {
    /// Suppressed addresses, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Suppress an address by hand.
    Add {
        address: String,
        #[arg(long)]
        detail: Option<String>,
    },
    /// Mail an address again.
    Remove { address: String },
    /// Addresses that left a list (a scenario) through an unsubscribe link, newest first.
    Unsubscribes {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Put an address back on a list it left.
    Resubscribe { list: String, address: String },
}

pub async fn run(client: &Client, command: SuppressionCommand, output: Output) -> Result<()> {
    match command {
        SuppressionCommand::List { limit } => {
            let value = client
                .call(
                    Method::GET,
                    &format!("/v1/suppressions?limit={limit}"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, |v| {
                let rows: Vec<Value> = v["items"].as_array().cloned().unwrap_or_default();
                print_table(&rows, &["address", "reason", "detail", "created_at"]);
            });
        }
        SuppressionCommand::Add { address, detail } => {
            let value = client
                .call(
                    Method::PUT,
                    &format!("/v1/suppressions/{address}"),
                    Some(json!({"detail": detail})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        SuppressionCommand::Remove { address } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/suppressions/{address}"),
                    None,
                    &[],
                )
                .await?;
            println!("{address} may be mailed again");
        }
        SuppressionCommand::Unsubscribes { limit } => {
            let value = client
                .call(
                    Method::GET,
                    &format!("/v1/unsubscribes?limit={limit}"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, |v| {
                let rows: Vec<Value> = v["items"].as_array().cloned().unwrap_or_default();
                print_table(&rows, &["address", "list", "method", "created_at"]);
            });
        }
        SuppressionCommand::Resubscribe { list, address } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/unsubscribes/{list}/{address}"),
                    None,
                    &[],
                )
                .await?;
            println!("{address} is on {list} again");
        }
    }
    Ok(())
}
