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

/// `mailroom connect`: starts connecting a mailbox with OAuth, prints the link to open, and waits
/// until the person has signed in and the mailbox's test has run.
pub async fn connect(
    client: &Client,
    mailbox: Option<String>,
    registration: Option<String>,
    wait_s: u64,
) -> Result<()> {
    let mut path = "/v1/oauth/connect?purpose=mailbox".to_owned();
    if let Some(mailbox) = &mailbox {
        path.push_str(&format!("&mailbox={mailbox}"));
    }
    if let Some(registration) = &registration {
        path.push_str(&format!("&registration={registration}"));
    }
    let started = client.call(Method::GET, &path, None, &[]).await?;
    let link = started["authorization_url"].as_str().unwrap_or_default();
    let mailbox_id = started["mailbox_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let before = client
        .call(
            Method::GET,
            &format!("/v1/mailboxes/{mailbox_id}"),
            None,
            &[],
        )
        .await?;
    println!("Open this link in the browser of the person who signs in (valid ten minutes):");
    println!("  {link}");
    println!("Waiting for the sign-in…");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait_s);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = client
            .call(
                Method::GET,
                &format!("/v1/mailboxes/{mailbox_id}"),
                None,
                &[],
            )
            .await?;
        // Connecting stores the sign-in and runs the mailbox's test: a newer test is the sign.
        if now["credentials"]["oauth_registration_id"].is_string()
            && now["last_test_at"] != before["last_test_at"]
        {
            if now["enabled"].as_bool() == Some(true) {
                println!(
                    "{} is connected, tested and enabled.",
                    now["email_address"].as_str().unwrap_or_default()
                );
                return Ok(());
            }
            anyhow::bail!(
                "{} is connected, but its test did not pass: {}",
                now["email_address"].as_str().unwrap_or_default(),
                now["last_error"].as_str().unwrap_or("see the mailbox")
            );
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("nobody signed in within {wait_s} s; run mailroom connect again");
        }
    }
}
