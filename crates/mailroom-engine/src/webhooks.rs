//! Delivering webhooks: on every node, a loop fans new events out into deliveries, takes the due
//! ones under a lease, and POSTs each, signed as the Standard Webhooks specification says
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature`), to its receiver; a failure is tried
//! again with backoff for up to three days (`mailroom_core::webhook::retry_delay_ms`).

use mailroom_connect::WebhookClient;
use mailroom_core::webhook::{SigningSecret, retry_delay_ms};
use mailroom_store::{DeliveryAttempt, DueDelivery, Store, now_ms};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Whether receivers on loopback, private or link-local addresses may be reached.
    pub allow_private_targets: bool,
    /// How often the node looks for new events and due deliveries when there was nothing to do.
    pub poll: Duration,
    /// A delivery taken by a node is another node's to try after this (the node died mid-request).
    pub lease: Duration,
    /// Deliveries in flight at once on this node.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            poll: Duration::from_millis(250),
            lease: Duration::from_secs(60),
            concurrency: 32,
        }
    }
}

/// Events fanned out in one transaction at most.
const FAN_OUT_BATCH: i64 = 2_000;

/// Deliveries claimed per request place: claimed deliveries wait for a place (their lease is long
/// enough), and a claim is one transaction for many.
const CLAIMED_PER_REQUEST_PLACE: usize = 8;

/// A delivery, how its attempt went, and when to try again.
type Recorded = (DueDelivery, DeliveryAttempt, i64);

pub struct WebhookWorker {
    store: Store,
    client: WebhookClient,
    node_id: String,
    config: WebhookConfig,
}

/// The body of a delivery: `{"type", "timestamp", "data"}`.
pub fn delivery_body(delivery: &DueDelivery) -> Vec<u8> {
    let data: serde_json::Value =
        serde_json::from_str(&delivery.payload_json).unwrap_or(serde_json::Value::Null);
    let timestamp = time::OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(delivery.event_at_ms) * 1_000_000,
    )
    .ok()
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "type": delivery.kind,
        "timestamp": timestamp,
        "data": data,
    }))
    .expect("a JSON value serialises")
}

impl WebhookWorker {
    pub fn new(
        store: Store,
        node_id: String,
        config: WebhookConfig,
        extra_roots: &[Vec<u8>],
    ) -> Result<Self, String> {
        Ok(Self {
            client: WebhookClient::new(config.allow_private_targets, extra_roots)?,
            store,
            node_id,
            config,
        })
    }

    /// Fans out and delivers until `stopping`.
    pub async fn run(self: Arc<Self>, stopping: CancellationToken) {
        let mut in_flight = tokio::task::JoinSet::new();
        let places = Arc::new(tokio::sync::Semaphore::new(self.config.concurrency.max(1)));
        // What the requests bring back is recorded together, a transaction per batch.
        let (record, mut to_record) = tokio::sync::mpsc::unbounded_channel::<Recorded>();
        let recorder = {
            let store = self.store.clone();
            let node = self.node_id.clone();
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(256);
                while let Some(first) = to_record.recv().await {
                    batch.push(first);
                    while batch.len() < 256 {
                        match to_record.try_recv() {
                            Ok(next) => batch.push(next),
                            Err(_) => break,
                        }
                    }
                    if let Err(error) = store.record_deliveries(&node, &batch).await {
                        tracing::warn!(%error, size = batch.len(), "webhooks: recording deliveries failed; they are tried again when their leases expire");
                    }
                    batch.clear();
                }
            })
        };
        loop {
            // Busy means: go round again at once. A full batch of events leaves more behind; a
            // partial one is all there was (the next round comes after the poll interval, so that
            // a steady stream of events is fanned out a few thousand at a time, not one by one).
            let mut busy = false;
            match self.store.fan_out_events(FAN_OUT_BATCH).await {
                Ok(taken) => busy |= taken as i64 == FAN_OUT_BATCH,
                Err(error) => tracing::warn!(%error, "webhooks: fanning out events failed"),
            }
            // Deliveries are claimed many at a time (a claim is a write transaction) and sent
            // `concurrency` at a time; claim again when a quarter of the claimed places are free.
            let capacity = self.config.concurrency * CLAIMED_PER_REQUEST_PLACE;
            let room = capacity.saturating_sub(in_flight.len());
            if room > 0 && (in_flight.is_empty() || room >= capacity.div_ceil(4)) {
                let now = now_ms();
                let lease_until = now + self.config.lease.as_millis() as i64;
                match self
                    .store
                    .claim_deliveries(&self.node_id, now, lease_until, room as i64)
                    .await
                {
                    Ok(due) => {
                        busy |= !due.is_empty();
                        for delivery in due {
                            let worker = self.clone();
                            let record = record.clone();
                            let places = places.clone();
                            in_flight.spawn(async move {
                                let Ok(_place) = places.acquire_owned().await else {
                                    return;
                                };
                                let recorded = worker.deliver(delivery).await;
                                if let Some(recorded) = recorded {
                                    let _ = record.send(recorded);
                                }
                            });
                        }
                    }
                    Err(error) => tracing::warn!(%error, "webhooks: taking due deliveries failed"),
                }
            }
            while in_flight.try_join_next().is_some() {}
            if busy {
                continue;
            }
            tokio::select! {
                _ = stopping.cancelled() => break,
                _ = tokio::time::sleep(self.config.poll) => {}
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        // Requests in flight finish (at most the receiver timeout); what they do not record is
        // tried again once their lease expires.
        while in_flight.join_next().await.is_some() {}
        drop(record);
        let _ = recorder.await;
    }

    /// The endpoint's signing secrets (the store keeps them a second).
    async fn secrets_of(&self, endpoint: uuid::Uuid) -> Option<Vec<SigningSecret>> {
        match self.store.webhook_secrets(endpoint).await {
            Ok(secrets) => Some(secrets),
            Err(error) => {
                tracing::error!(%error, %endpoint, "webhooks: the endpoint's secret cannot be read");
                None
            }
        }
    }

    /// Sends one delivery; what to record of it (nothing when its secret cannot be read: the lease
    /// expires and it is tried again).
    async fn deliver(&self, delivery: DueDelivery) -> Option<Recorded> {
        let secrets = self.secrets_of(delivery.endpoint_id).await?;
        let body = delivery_body(&delivery);
        let id = format!("evt_{}", delivery.event_id);
        let timestamp = now_ms() / 1000;
        let signature = secrets
            .iter()
            .map(|s| s.sign(&id, timestamp, &body))
            .collect::<Vec<_>>()
            .join(" ");
        let at_ms = now_ms();
        let answer = self
            .client
            .deliver(
                &delivery.url,
                &[
                    ("webhook-id", id.clone()),
                    ("webhook-timestamp", timestamp.to_string()),
                    ("webhook-signature", signature),
                ],
                body,
            )
            .await;
        let attempt = DeliveryAttempt {
            at_ms,
            status: answer.status,
            latency_ms: answer.latency.as_millis() as i64,
            response: answer.response,
            error: answer.error,
        };
        metrics::counter!(
            "mailroom_webhook_deliveries_total",
            "outcome" => if attempt.succeeded() { "delivered" } else { "failed" }
        )
        .increment(1);
        if !attempt.succeeded() {
            tracing::info!(event = "webhook_failed", endpoint = %delivery.endpoint_id, webhook_id = %id,
                status = ?attempt.status, error = ?attempt.error, "a webhook delivery failed; it is tried again later");
        }
        let retry_at = now_ms() + retry_delay_ms(delivery.attempts + 1);
        Some((delivery, attempt, retry_at))
    }
}
