//! `mailroom inbound …`: received mail — a mailbox's messages and sync state, one message, its raw
//! bytes, replies and forwards, conversations.

use super::{Client, Output, emit, print_record, print_table};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Write;

#[derive(Subcommand)]
pub enum InboundCommand {
    /// A mailbox's received mail, newest first.
    List {
        /// The mailbox id.
        mailbox: String,
        #[arg(long)]
        folder: Option<String>,
        /// The sender's address contains this.
        #[arg(long)]
        from: Option<String>,
        /// Only unread (true) or read (false) mail.
        #[arg(long)]
        unread: Option<bool>,
        /// Only mail linked to a conversation (true) or not (false).
        #[arg(long)]
        correlated: Option<bool>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One received message: headers, bodies, attachment parts, correlation, records.
    Show { id: String },
    /// The message as received, to standard output.
    Raw { id: String },
    /// How far each folder of a mailbox has been synchronized.
    Sync { mailbox: String },
    /// Reply (or reply to all) from the application.
    Reply {
        id: String,
        #[arg(long)]
        text: String,
        #[arg(long)]
        all: bool,
        /// The account to send through (default: your own mailbox, for mail received in it).
        #[arg(long)]
        account: Option<String>,
    },
    /// Forward with the original's attachments.
    Forward {
        id: String,
        #[arg(long, required = true)]
        to: Vec<String>,
        #[arg(long, default_value = "")]
        text: String,
        #[arg(long)]
        account: Option<String>,
    },
    /// A conversation's outbound and inbound mail in time order.
    Conversation { id: String },
    /// Set the records a received message concerns (`type:id`, e.g. `sales-invoice:103001`),
    /// replacing those found by correlation.
    Regarding {
        id: String,
        #[arg(long = "record", required = true)]
        records: Vec<String>,
    },
    /// Unlink a received message from every record.
    Untrack { id: String },
}

#[derive(Subcommand)]
pub enum ContactCommand {
    /// Create or replace a contact (its id is the application's own).
    Put {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "address", required = true)]
        addresses: Vec<String>,
        /// A record the contact belongs to, `type:id` (repeatable).
        #[arg(long = "record")]
        records: Vec<String>,
    },
    Show {
        id: String,
    },
    Delete {
        id: String,
    },
}

pub async fn contact(client: &Client, command: ContactCommand, output: Output) -> Result<()> {
    match command {
        ContactCommand::Put {
            id,
            name,
            addresses,
            records,
        } => {
            let records = records
                .iter()
                .map(|r| record_ref(r))
                .collect::<Result<Vec<_>>>()?;
            let value = client
                .call(
                    Method::PUT,
                    &format!("/v1/contacts/{id}"),
                    Some(json!({"name": name, "addresses": addresses, "related_records": records})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        ContactCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/contacts/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        ContactCommand::Delete { id } => {
            client
                .call(Method::DELETE, &format!("/v1/contacts/{id}"), None, &[])
                .await?;
            println!("deleted contact {id}");
        }
    }
    Ok(())
}

/// `type:id` as the API's record reference.
fn record_ref(text: &str) -> Result<Value> {
    match text.split_once(':') {
        Some((kind, id)) if !kind.is_empty() && !id.is_empty() => {
            Ok(json!({"type": kind, "id": id}))
        }
        _ => anyhow::bail!("a record is written type:id, e.g. sales-invoice:103001, not {text:?}"),
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn inbound_columns(v: &Value) {
    let items = v["items"].as_array().map(Vec::as_slice).unwrap_or_default();
    let rows: Vec<Value> = items
        .iter()
        .map(|m| {
            json!({
                "id": m["id"], "received_at": m["received_at"], "from": m["from"]["address"],
                "subject": m["subject"], "unread": m["unread"], "correlation": m["correlation_method"],
            })
        })
        .collect();
    print_table(
        &rows,
        &[
            "id",
            "received_at",
            "from",
            "subject",
            "unread",
            "correlation",
        ],
    );
    if let Some(cursor) = v["next_cursor"].as_str() {
        println!("more: --cursor {cursor}");
    }
}

pub async fn inbound(client: &Client, command: InboundCommand, output: Output) -> Result<()> {
    match command {
        InboundCommand::List {
            mailbox,
            folder,
            from,
            unread,
            correlated,
            limit,
            cursor,
        } => {
            let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (key, value) in [
                ("folder", folder),
                ("from", from),
                ("unread", unread.map(|u| u.to_string())),
                ("correlated", correlated.map(|c| c.to_string())),
                ("cursor", cursor),
            ] {
                if let Some(value) = value {
                    query.push((key, value));
                }
            }
            let query: Vec<String> = query
                .iter()
                .map(|(key, value)| format!("{key}={}", form_encode(value)))
                .collect();
            let path = format!("/v1/mailboxes/{mailbox}/messages?{}", query.join("&"));
            let value = client.call(Method::GET, &path, None, &[]).await?;
            emit(output, &value, inbound_columns);
        }
        InboundCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/inbound/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        InboundCommand::Raw { id } => {
            let bytes = client.download(&format!("/v1/inbound/{id}/raw")).await?;
            std::io::stdout().write_all(&bytes)?;
        }
        InboundCommand::Sync { mailbox } => {
            let value = client
                .call(
                    Method::GET,
                    &format!("/v1/mailboxes/{mailbox}/sync"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, |v| {
                print_table(
                    v["folders"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                    &[
                        "folder",
                        "messages",
                        "initial_sync_done",
                        "uidnext",
                        "uidvalidity",
                        "synced_at",
                    ],
                )
            });
        }
        InboundCommand::Reply {
            id,
            text,
            all,
            account,
        } => {
            let path = if all {
                format!("/v1/inbound/{id}/reply-all")
            } else {
                format!("/v1/inbound/{id}/reply")
            };
            let mut body = json!({"text": text});
            if let Some(account) = account {
                body["account_id"] = json!(account);
            }
            let value = client.call(Method::POST, &path, Some(body), &[]).await?;
            emit(output, &value, print_record);
        }
        InboundCommand::Forward {
            id,
            to,
            text,
            account,
        } => {
            let mut body = json!({"to": to, "text": text});
            if let Some(account) = account {
                body["account_id"] = json!(account);
            }
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/inbound/{id}/forward"),
                    Some(body),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        InboundCommand::Conversation { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/conversations/{id}"), None, &[])
                .await?;
            emit(output, &value, |v| {
                print_table(
                    v["items"].as_array().map(Vec::as_slice).unwrap_or_default(),
                    &[
                        "at",
                        "direction",
                        "id",
                        "subject",
                        "status",
                        "correlation_method",
                    ],
                )
            });
        }
        InboundCommand::Regarding { id, records } => {
            let records = records
                .iter()
                .map(|r| record_ref(r))
                .collect::<Result<Vec<_>>>()?;
            let value = client
                .call(
                    Method::PUT,
                    &format!("/v1/inbound/{id}/related-records"),
                    Some(json!({"related_records": records})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        InboundCommand::Untrack { id } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/inbound/{id}/related-records"),
                    None,
                    &[],
                )
                .await?;
            println!("untracked {id}");
        }
    }
    Ok(())
}
