//! `mailroom webhook …`: receivers of events, their secrets, delivery logs and replays.

use super::{Client, Output, emit, print_record, print_table};
use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Add a receiver; prints its signing secret, shown this once.
    Add {
        url: String,
        /// An event type to deliver (repeatable), e.g. `message.sent`; `mailroom webhook event-types`
        /// lists them.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// Deliver one event at a time, in order.
        #[arg(long)]
        ordered: bool,
    },
    List,
    Show {
        id: String,
    },
    /// Change the URL or events, enable or disable.
    Edit {
        id: String,
        #[arg(long)]
        url: Option<String>,
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long)]
        enabled: Option<bool>,
        #[arg(long)]
        ordered: Option<bool>,
    },
    Delete {
        id: String,
    },
    /// A new signing secret (printed once); the previous one signs beside it for the overlap.
    RotateSecret {
        id: String,
        #[arg(long, default_value_t = 24)]
        overlap_hours: u32,
    },
    /// The delivery log, newest attempt first.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Deliver an event to the receiver again, now.
    Replay {
        id: String,
        event_id: i64,
    },
    /// The event types and the keys of each one's data.
    EventTypes,
}

pub async fn run(client: &Client, command: WebhookCommand, output: Output) -> Result<()> {
    match command {
        WebhookCommand::Add {
            url,
            events,
            ordered,
        } => {
            let value = client
                .call(
                    Method::POST,
                    "/v1/webhooks",
                    Some(json!({"url": url, "events": events, "ordered": ordered})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        WebhookCommand::List => {
            let value = client.call(Method::GET, "/v1/webhooks", None, &[]).await?;
            emit(output, &value, |v| {
                let rows: Vec<Value> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        json!({"id": w["id"], "url": w["url"], "enabled": w["enabled"],
                               "events": w["events"].as_array().map(|e| e.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")),
                               "failing_since": w["failing_since"]})
                    })
                    .collect();
                print_table(&rows, &["id", "url", "enabled", "events", "failing_since"]);
            });
        }
        WebhookCommand::Show { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/webhooks/{id}"), None, &[])
                .await?;
            emit(output, &value, print_record);
        }
        WebhookCommand::Edit {
            id,
            url,
            events,
            enabled,
            ordered,
        } => {
            let mut body = json!({});
            if let Some(url) = url {
                body["url"] = json!(url);
            }
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(enabled) = enabled {
                body["enabled"] = json!(enabled);
            }
            if let Some(ordered) = ordered {
                body["ordered"] = json!(ordered);
            }
            let value = client
                .call(
                    Method::PATCH,
                    &format!("/v1/webhooks/{id}"),
                    Some(body),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        WebhookCommand::Delete { id } => {
            client
                .call(Method::DELETE, &format!("/v1/webhooks/{id}"), None, &[])
                .await?;
            println!("deleted webhook {id}");
        }
        WebhookCommand::RotateSecret { id, overlap_hours } => {
            let value = client
                .call(
                    Method::POST,
                    &format!("/v1/webhooks/{id}/rotate-secret"),
                    Some(json!({"overlap_hours": overlap_hours})),
                    &[],
                )
                .await?;
            emit(output, &value, print_record);
        }
        WebhookCommand::Deliveries { id, limit } => {
            let value = client
                .call(
                    Method::GET,
                    &format!("/v1/webhooks/{id}/deliveries?limit={limit}"),
                    None,
                    &[],
                )
                .await?;
            emit(output, &value, |v| {
                let rows: Vec<Value> = v.as_array().cloned().unwrap_or_default();
                print_table(
                    &rows,
                    &[
                        "at",
                        "webhook_id",
                        "type",
                        "attempt",
                        "status",
                        "latency_ms",
                        "error",
                        "state",
                    ],
                );
            });
        }
        WebhookCommand::Replay { id, event_id } => {
            client
                .call(
                    Method::POST,
                    &format!("/v1/webhooks/{id}/events/{event_id}/replay"),
                    None,
                    &[],
                )
                .await?;
            println!("event {event_id} will be delivered to webhook {id} again");
        }
        WebhookCommand::EventTypes => {
            let value = client
                .call(Method::GET, "/v1/webhooks/event-types", None, &[])
                .await?;
            emit(output, &value, |v| {
                let rows: Vec<Value> = v.as_array().cloned().unwrap_or_default();
                print_table(&rows, &["type", "meaning"]);
            });
        }
    }
    Ok(())
}
