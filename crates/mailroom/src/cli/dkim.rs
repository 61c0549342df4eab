//! `mailroom dkim …`: DKIM keys per sending domain and the DNS records that publish them.

use super::{Client, Output, emit, print_table};
use anyhow::{Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum DkimCommand {
    /// Every key, by domain, each domain's active key first.
    List {
        #[arg(long)]
        domain: Option<String>,
    },
    /// Generate a key for a domain (its first key signs at once).
    Generate {
        domain: String,
        /// The DNS selector (default `mr` and today's date).
        #[arg(long)]
        selector: Option<String>,
        /// `rsa-sha256` (2048 bits) or `ed25519-sha256`.
        #[arg(long, default_value = "rsa-sha256")]
        algorithm: String,
    },
    /// Import a private key from a PEM file (PKCS#1 or PKCS#8; RSA or Ed25519).
    Import {
        domain: String,
        #[arg(long)]
        selector: String,
        /// The PEM file.
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// The TXT record to publish for a key.
    Dns { id: String },
    /// Sign the domain's mail with this key from now on (rotation).
    Activate { id: String },
    /// Delete a key (not the active key of a domain that has others).
    Delete { id: String },
}

fn print_key(key: &Value) {
    println!(
        "{} {} ({}){}",
        key["domain"].as_str().unwrap_or_default(),
        key["selector"].as_str().unwrap_or_default(),
        key["algorithm"].as_str().unwrap_or_default(),
        if key["active"].as_bool() == Some(true) {
            ", active"
        } else {
            ""
        }
    );
    println!("id: {}", key["id"].as_str().unwrap_or_default());
    println!("publish this TXT record:");
    println!("  {}", key["dns"]["name"].as_str().unwrap_or_default());
    println!("  {}", key["dns"]["value"].as_str().unwrap_or_default());
}

pub async fn run(client: &Client, command: DkimCommand, output: Output) -> Result<()> {
    match command {
        DkimCommand::List { domain } => {
            let path = match domain {
                Some(domain) => format!("/v1/dkim/keys?domain={domain}"),
                None => "/v1/dkim/keys".to_owned(),
            };
            let value = client.call(Method::GET, &path, None, &[]).await?;
            emit(output, &value, |v| {
                let rows: Vec<Value> = v["items"].as_array().cloned().unwrap_or_default();
                print_table(&rows, &["id", "domain", "selector", "algorithm", "active"]);
            });
        }
        DkimCommand::Generate {
            domain,
            selector,
            algorithm,
        } => {
            let body = json!({"domain": domain, "selector": selector, "algorithm": algorithm});
            let value = client
                .call(Method::POST, "/v1/dkim/keys", Some(body), &[])
                .await?;
            emit(output, &value, print_key);
        }
        DkimCommand::Import {
            domain,
            selector,
            file,
        } => {
            let pem = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let body = json!({"domain": domain, "selector": selector, "private_key_pem": pem});
            let value = client
                .call(Method::POST, "/v1/dkim/keys", Some(body), &[])
                .await?;
            emit(output, &value, print_key);
        }
        DkimCommand::Dns { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/dkim/keys/{id}"), None, &[])
                .await?;
            emit(output, &value, print_key);
        }
        DkimCommand::Activate { id } => {
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/dkim/keys/{id}/activate"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_key);
        }
        DkimCommand::Delete { id } => {
            client
                .call(Method::DELETE, &format!("/v1/dkim/keys/{id}"), None, &[])
                .await?;
            println!("DKIM key {id} deleted");
        }
    }
    Ok(())
}
