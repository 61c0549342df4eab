//! CLI commands for users, their permission sets and tokens.

use super::{Client, Output, emit, print_record, print_table};
use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

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

/// Runs a `user` command.
pub async fn run(client: &Client, command: UserCommand, output: Output) -> Result<()> {
    use reqwest::Method;
    match command {
        UserCommand::Add {
            name,
            contact_email,
            licence,
            permission_sets,
        } => {
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
        UserCommand::List => {
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
        UserCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/users/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        UserCommand::Disable { id } => {
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
        UserCommand::Token {
            id,
            name,
            expires_at,
        } => {
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
        UserCommand::Tokens { id } => {
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
        UserCommand::Revoke { id, token_id } => {
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
    }
    Ok(())
}
