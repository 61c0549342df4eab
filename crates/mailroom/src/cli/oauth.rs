//! `mailroom app-registration …`: OAuth applications (Microsoft Entra ID or any OpenID Connect
//! provider) and their check against the provider.

use super::{Client, Output, emit, print_table};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Read as _;

#[derive(Subcommand)]
pub enum AppRegistrationCommand {
    /// Every app registration.
    List,
    /// Register an OAuth application; the client secret is read from standard input.
    Add {
        name: String,
        /// `microsoft-entra` or `oidc`.
        #[arg(long, default_value = "microsoft-entra")]
        provider: String,
        /// The application (client) ID.
        #[arg(long)]
        client_id: String,
        /// Microsoft Entra: the Directory (tenant) ID or a verified domain.
        #[arg(long)]
        tenant: Option<String>,
        /// Where the provider sends users back after consent (register it there exactly).
        #[arg(long)]
        redirect_uri: String,
        /// A sovereign cloud's login host (default https://login.microsoftonline.com).
        #[arg(long)]
        authority: Option<String>,
        /// Default https://graph.microsoft.com/v1.0.
        #[arg(long)]
        graph_base_url: Option<String>,
        /// An OpenID Connect provider's discovery URL (required for `oidc`).
        #[arg(long)]
        discovery_url: Option<String>,
        /// Read the client secret's value from standard input (keeps it out of the process list).
        #[arg(long)]
        client_secret_stdin: bool,
    },
    /// Check a registration against its provider, with advice for what it refuses.
    Verify { id: String },
    /// Delete a registration.
    Delete { id: String },
}

fn print_registration(r: &Value) {
    println!(
        "{} ({}), client {}{}",
        r["name"].as_str().unwrap_or_default(),
        r["provider"].as_str().unwrap_or_default(),
        r["client_id"].as_str().unwrap_or_default(),
        if r["has_client_secret"].as_bool() == Some(true) {
            ", secret stored"
        } else {
            ", no secret"
        }
    );
    println!("id: {}", r["id"].as_str().unwrap_or_default());
    if let Some(url) = r["admin_consent_url"].as_str() {
        println!("admin consent: {url}");
    }
}

fn print_verification(v: &Value) {
    for check in v["checks"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:<8} {}",
            check["check"].as_str().unwrap_or_default(),
            check["result"].as_str().unwrap_or_default(),
            check["detail"].as_str().unwrap_or_default()
        );
        if let Some(advice) = check["advice"].as_str() {
            println!("{:<29} {advice}", "");
        }
        if let Some(url) = check["admin_consent_url"].as_str() {
            println!("{:<29} admin consent: {url}", "");
        }
    }
    println!(
        "{}",
        if v["ok"].as_bool() == Some(true) {
            "the registration works"
        } else {
            "the registration does not work yet"
        }
    );
}

pub async fn run(client: &Client, command: AppRegistrationCommand, output: Output) -> Result<()> {
    match command {
        AppRegistrationCommand::List => {
            let value = client
                .call(Method::GET, "/v1/app-registrations", None, &[])
                .await?;
            emit(output, &value, |v| {
                let rows: Vec<Value> = v["items"].as_array().cloned().unwrap_or_default();
                print_table(
                    &rows,
                    &[
                        "id",
                        "name",
                        "provider",
                        "client_id",
                        "tenant",
                        "has_client_secret",
                    ],
                );
            });
        }
        AppRegistrationCommand::Add {
            name,
            provider,
            client_id,
            tenant,
            redirect_uri,
            authority,
            graph_base_url,
            discovery_url,
            client_secret_stdin,
        } => {
            let secret = if client_secret_stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let body = json!({
                "name": name, "provider": provider, "client_id": client_id, "tenant": tenant,
                "redirect_uri": redirect_uri, "authority": authority, "graph_base_url": graph_base_url,
                "discovery_url": discovery_url, "client_secret": secret,
            });
            let value = client
                .call(Method::POST, "/v1/app-registrations", Some(body), &[])
                .await?;
            emit(output, &value, print_registration);
        }
        AppRegistrationCommand::Verify { id } => {
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/app-registrations/{id}/verify"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, print_verification);
        }
        AppRegistrationCommand::Delete { id } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/app-registrations/{id}"),
                    None,
                    &[],
                )
                .await?;
            println!("app registration {id} deleted");
        }
    }
    Ok(())
}
