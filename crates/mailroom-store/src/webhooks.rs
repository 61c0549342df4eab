//! Webhooks: endpoints with their sealed signing secrets, the fan-out of new events into one delivery
//! per subscribed endpoint, deliveries taken under a lease and tried until the receiver answers or
//! three days have passed, and each endpoint's delivery log.
//!
//! At least once: an event is written in the transaction of its change; the fan-out marks it in the
//! transaction that writes its deliveries (on PostgreSQL, each event is taken by one node: `FOR
//! UPDATE SKIP LOCKED`); a delivery is marked delivered only after the receiver answered 2xx, and a
//! lease that expires (its node died) lets another node try it again, with the same event id.

use crate::db::{WritePool, on_db};
use crate::{AttemptRecord, Outcome, Store, StoreError, StoreResult, now_ms};
use mailroom_core::webhook::{DISABLE_AFTER_MS, EventType, GIVE_UP_AFTER_MS, SigningSecret};
use uuid::Uuid;

/// The event a recorded attempt's outcome is: its type and JSON payload.
pub(crate) fn outcome_event(record: &AttemptRecord) -> (&'static str, String) {
    let kind = match record.next {
        Outcome::Sent => EventType::MessageSent,
        Outcome::RetryAt(_) => EventType::MessageDeferred,
        Outcome::Failed => EventType::MessageFailed,
    };
    let mut payload = serde_json::json!({
        "message_id": record.message_id.to_string(),
        "attempt": record.number,
        "outcome": record.outcome.as_str(),
        "reply_code": record.reply_code,
        "reply_text": record.reply_text,
    });
    if let Outcome::RetryAt(at) = record.next {
        payload["next_attempt_at_ms"] = at.into();
    }
    (kind.as_str(), payload.to_string())
}

/// A receiver of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<EventType>,
    pub enabled: bool,
    /// One event at a time, in order.
    pub ordered: bool,
    pub disabled_reason: Option<String>,
    pub failing_since_ms: Option<i64>,
    /// Until when the previous secret still signs (a rotation's overlap).
    pub previous_until_ms: Option<i64>,
    pub created_by: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A change to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub events: Option<Vec<EventType>>,
    pub enabled: Option<bool>,
    pub ordered: Option<bool>,
}

/// A delivery due now, taken under this node's lease.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub endpoint_id: Uuid,
    pub url: String,
    pub event_id: i64,
    pub kind: String,
    pub subject_id: String,
    pub payload_json: String,
    pub event_at_ms: i64,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What one attempt of a delivery came to.
#[derive(Debug, Clone)]
pub struct DeliveryAttempt {
    pub at_ms: i64,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub latency_ms: i64,
    /// The first bytes of the answer.
    pub response: Option<String>,
    /// Why there was no answer (connection refused, timeout, a private target…).
    pub error: Option<String>,
}

impl DeliveryAttempt {
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// One line of an endpoint's delivery log.
#[derive(Debug, Clone)]
pub struct LoggedAttempt {
    pub event_id: i64,
    pub kind: String,
    pub number: u32,
    pub attempt: DeliveryAttempt,
    /// The delivery's state now: `pending`, `delivered` or `given-up`.
    pub state: String,
}

type EndpointRow = (
    String,
    String,
    String,
    bool,
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
    String,
    i64,
    i64,
);

/// endpoint, url, event id, kind, subject, payload, event time, attempts.
type DueRow = (String, String, i64, String, String, String, i64, i64);

const ENDPOINT_COLUMNS: &str = "id, url, events_json, enabled, ordered, disabled_reason, failing_since, previous_until, created_by, created_at, updated_at";

fn endpoint_from(row: EndpointRow) -> StoreResult<WebhookEndpoint> {
    let (
        id,
        url,
        events,
        enabled,
        ordered,
        disabled_reason,
        failing_since,
        previous_until,
        created_by,
        created_at,
        updated_at,
    ) = row;
    let names: Vec<String> = serde_json::from_str(&events)
        .map_err(|e| StoreError::Conflict(format!("stored webhook events are unreadable: {e}")))?;
    Ok(WebhookEndpoint {
        id: id
            .parse()
            .map_err(|_| StoreError::Conflict(format!("stored id {id:?} is not a UUID")))?,
        url,
        events: names
            .iter()
            .map(|n| n.parse::<EventType>())
            .collect::<Result<_, _>>()?,
        enabled,
        ordered,
        disabled_reason,
        failing_since_ms: failing_since,
        previous_until_ms: previous_until,
        created_by,
        created_at_ms: created_at,
        updated_at_ms: updated_at,
    })
}

fn events_json(events: &[EventType]) -> String {
    let mut names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    serde_json::to_string(&names).expect("names serialise")
}

impl Store {
    pub async fn create_webhook(
        &self,
        url: &str,
        events: &[EventType],
        ordered: bool,
        secret: &SigningSecret,
        created_by: &str,
    ) -> StoreResult<WebhookEndpoint> {
        let id = Uuid::now_v7();
        let sealed = self.secrets.seal(&id.to_string(), &secret.expose());
        let now = now_ms();
        on_db!(self, |writer, reader| {
            sqlx::query(
                "INSERT INTO webhook_endpoints (id, url, events_json, secret_sealed, enabled, ordered, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, TRUE, $5, $6, $7, $7)",
            )
            .bind(id.to_string())
            .bind(url)
            .bind(events_json(events))
            .bind(sealed)
            .bind(ordered)
            .bind(created_by)
            .bind(now)
            .execute(writer)
            .await?;
        });
        self.webhook(id).await
    }

    pub async fn webhook(&self, id: Uuid) -> StoreResult<WebhookEndpoint> {
        let row: Option<EndpointRow> = on_db!(self, |writer, reader| {
            let sql = format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1");
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?
        });
        row.map(endpoint_from)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("webhook {id}")))
    }

    pub async fn webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>> {
        let rows: Vec<EndpointRow> = on_db!(self, |writer, reader| {
            let sql =
                format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id");
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(reader)
                .await?
        });
        rows.into_iter().map(endpoint_from).collect()
    }

    /// Changes an endpoint. Enabling it clears why it was disabled and its failing streak.
    pub async fn update_webhook(
        &self,
        id: Uuid,
        change: &WebhookChange,
    ) -> StoreResult<WebhookEndpoint> {
        let current = self.webhook(id).await?;
        let enabled = change.enabled.unwrap_or(current.enabled);
        let reenabled = enabled && !current.enabled;
        on_db!(self, |writer, reader| {
            sqlx::query(
                "UPDATE webhook_endpoints SET url = $2, events_json = $3, enabled = $4, ordered = $5,
                   disabled_reason = CASE WHEN $6 THEN NULL ELSE disabled_reason END,
                   failing_since = CASE WHEN $6 THEN NULL ELSE failing_since END, updated_at = $7
                 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(change.url.clone().unwrap_or(current.url.clone()))
            .bind(events_json(change.events.as_deref().unwrap_or(&current.events)))
            .bind(enabled)
            .bind(change.ordered.unwrap_or(current.ordered))
            .bind(reenabled)
            .bind(now_ms())
            .execute(writer)
            .await?;
        });
        self.webhook(id).await
    }

    pub async fn delete_webhook(&self, id: Uuid) -> StoreResult<()> {
        self.forget_webhook_secrets(id);
        on_db!(self, |writer, reader| {
            let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
                .bind(id.to_string())
                .execute(writer)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("webhook {id}")));
            }
            Ok(())
        })
    }

    /// A new signing secret; the current one keeps signing beside it until `overlap_ms` from now.
    pub async fn rotate_webhook_secret(
        &self,
        id: Uuid,
        secret: &SigningSecret,
        overlap_ms: i64,
    ) -> StoreResult<WebhookEndpoint> {
        let sealed = self.secrets.seal(&id.to_string(), &secret.expose());
        let now = now_ms();
        on_db!(self, |writer, reader| {
            let updated = sqlx::query(
                "UPDATE webhook_endpoints SET previous_secret_sealed = secret_sealed, previous_until = $3,
                   secret_sealed = $2, updated_at = $4 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(sealed)
            .bind(now + overlap_ms.max(0))
            .bind(now)
            .execute(writer)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("webhook {id}")));
            }
        });
        self.forget_webhook_secrets(id);
        self.webhook(id).await
    }

    /// The secrets that sign an endpoint's deliveries now: the current one, and the previous one
    /// while a rotation's overlap lasts.
    pub async fn webhook_secrets(&self, id: Uuid) -> StoreResult<Vec<SigningSecret>> {
        if let Some((secrets, at)) = self
            .caches
            .webhook_secrets
            .lock()
            .expect("cache lock")
            .get(&id)
            && at.elapsed() < crate::cache::TTL
        {
            return Ok(secrets.clone());
        }
        let secrets = self.read_webhook_secrets(id).await?;
        self.caches
            .webhook_secrets
            .lock()
            .expect("cache lock")
            .insert(id, (secrets.clone(), std::time::Instant::now()));
        Ok(secrets)
    }

    /// Forgets the cached secrets of an endpoint (after a change to it).
    fn forget_webhook_secrets(&self, id: Uuid) {
        self.caches
            .webhook_secrets
            .lock()
            .expect("cache lock")
            .remove(&id);
    }

    async fn read_webhook_secrets(&self, id: Uuid) -> StoreResult<Vec<SigningSecret>> {
        let row: Option<(String, Option<String>, Option<i64>)> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT secret_sealed, previous_secret_sealed, previous_until FROM webhook_endpoints WHERE id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(reader)
            .await?
        });
        let (current, previous, until) =
            row.ok_or_else(|| StoreError::NotFound(format!("webhook {id}")))?;
        let key = id.to_string();
        let mut secrets = vec![SigningSecret::parse(&self.secrets.open(&key, &current)?)?];
        if let (Some(previous), Some(until)) = (previous, until)
            && until > now_ms()
        {
            secrets.push(SigningSecret::parse(&self.secrets.open(&key, &previous)?)?);
        }
        Ok(secrets)
    }

    /// Turns up to `limit` new events into one pending delivery per enabled endpoint subscribed to
    /// their type, and marks them fanned out, in one transaction of three set-based statements
    /// whatever the number of events (the outcome path writes an event per message: this must not
    /// compete with it for the database). The number of events taken.
    pub async fn fan_out_events(&self, limit: i64) -> StoreResult<usize> {
        let any_endpoint: Option<String> = on_db!(self, |writer, reader| {
            sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE enabled = TRUE LIMIT 1")
                .fetch_optional(reader)
                .await?
        });
        let now = now_ms();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let lock = if matches!(self.backend(), crate::Backend::Postgres) {
                " FOR UPDATE SKIP LOCKED"
            } else {
                ""
            };
            let sql = format!(
                "SELECT id FROM events WHERE fanned_out = FALSE ORDER BY id LIMIT $1{lock}"
            );
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            if ids.is_empty() {
                return Ok(0);
            }
            let in_list = |query: &mut sqlx::QueryBuilder<_>| {
                let mut list = query.separated(", ");
                for id in &ids {
                    list.push_bind(*id);
                }
            };
            if any_endpoint.is_some() {
                // An endpoint subscribes to a type when its JSON list names it.
                let mut deliveries = sqlx::QueryBuilder::new(
                    "INSERT INTO webhook_deliveries (endpoint_id, event_id, state, attempts, next_attempt_at, created_at, updated_at)
                     SELECT w.id, e.id, 'pending', 0, ",
                );
                deliveries
                    .push_bind(now)
                    .push(", ")
                    .push_bind(now)
                    .push(", ")
                    .push_bind(now)
                    .push(
                        " FROM events e JOIN webhook_endpoints w
                           ON w.enabled = TRUE AND w.events_json LIKE '%\"' || e.kind || '\"%'
                         WHERE e.id IN (",
                    );
                in_list(&mut deliveries);
                deliveries.push(") ON CONFLICT DO NOTHING");
                deliveries.build().execute(&mut *tx).await?;
            }
            let mut mark =
                sqlx::QueryBuilder::new("UPDATE events SET fanned_out = TRUE WHERE id IN (");
            in_list(&mut mark);
            mark.push(")");
            mark.build().execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(ids.len())
        })
    }

    /// Takes up to `limit` deliveries due at `now` for `node` until `lease_until`, oldest event
    /// first; of an ordered endpoint only its oldest pending delivery, and only when no other of
    /// its deliveries is leased.
    pub async fn claim_deliveries(
        &self,
        node: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> StoreResult<Vec<DueDelivery>> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let lock = if matches!(self.backend(), crate::Backend::Postgres) {
                " FOR UPDATE OF d SKIP LOCKED"
            } else {
                ""
            };
            let sql = format!(
                "SELECT d.endpoint_id, w.url, d.event_id, e.kind, e.subject_id, e.payload_json, e.created_at, d.attempts
                 FROM webhook_deliveries d
                 JOIN webhook_endpoints w ON w.id = d.endpoint_id
                 JOIN events e ON e.id = d.event_id
                 WHERE d.state = 'pending' AND d.next_attempt_at <= $1 AND w.enabled = TRUE
                   AND (d.lease_until IS NULL OR d.lease_until < $1)
                   AND (w.ordered = FALSE OR (
                     d.event_id = (SELECT MIN(o.event_id) FROM webhook_deliveries o
                                   WHERE o.endpoint_id = d.endpoint_id AND o.state = 'pending')
                     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries l WHERE l.endpoint_id = d.endpoint_id
                                     AND l.state = 'pending' AND l.lease_until >= $1)))
                 ORDER BY d.next_attempt_at, d.event_id LIMIT $2{lock}"
            );
            let rows: Vec<DueRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let mut due = Vec::with_capacity(rows.len());
            for (endpoint, url, event_id, kind, subject_id, payload_json, event_at, attempts) in
                rows
            {
                sqlx::query(
                    "UPDATE webhook_deliveries SET lease_owner = $3, lease_until = $4 WHERE endpoint_id = $1 AND event_id = $2",
                )
                .bind(&endpoint)
                .bind(event_id)
                .bind(node)
                .bind(lease_until)
                .execute(&mut *tx)
                .await?;
                due.push(DueDelivery {
                    endpoint_id: endpoint.parse().map_err(|_| {
                        StoreError::Conflict(format!("stored id {endpoint:?} is not a UUID"))
                    })?,
                    url,
                    event_id,
                    kind,
                    subject_id,
                    payload_json,
                    event_at_ms: event_at,
                    attempts: u32::try_from(attempts).unwrap_or(0),
                });
            }
            tx.commit().await?;
            Ok(due)
        })
    }

    /// Records an attempt of a delivery held by `node`: delivered on 2xx; otherwise tried again at
    /// `retry_at`, or given up once the event is three days old. The endpoint's failing streak
    /// starts or ends here; an endpoint failing for a day is disabled, and its creator alerted.
    /// `false` when the lease was lost meanwhile (nothing but the log line is written then).
    pub async fn record_delivery(
        &self,
        node: &str,
        delivery: &DueDelivery,
        attempt: &DeliveryAttempt,
        retry_at: i64,
    ) -> StoreResult<bool> {
        let recorded = self
            .record_deliveries(node, &[(delivery.clone(), attempt.clone(), retry_at)])
            .await?;
        Ok(recorded.first().copied().unwrap_or(false))
    }

    /// [`Store::record_delivery`] for many attempts in one transaction (the webhook worker records
    /// what its requests bring back together, so that a thousand deliveries a second are not a
    /// thousand write transactions). One `bool` per attempt, in order.
    pub async fn record_deliveries(
        &self,
        node: &str,
        attempts: &[(DueDelivery, DeliveryAttempt, i64)],
    ) -> StoreResult<Vec<bool>> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let mut recorded = Vec::with_capacity(attempts.len());
            for (delivery, attempt, retry_at) in attempts {
                let number = i64::from(delivery.attempts) + 1;
                let (state, next) = if attempt.succeeded() {
                    ("delivered", attempt.at_ms)
                } else if attempt.at_ms - delivery.event_at_ms >= GIVE_UP_AFTER_MS {
                    ("given-up", attempt.at_ms)
                } else {
                    ("pending", *retry_at)
                };
                let endpoint = delivery.endpoint_id.to_string();
                sqlx::query(
                "INSERT INTO webhook_attempts (endpoint_id, event_id, number, at, status, latency_ms, response, error)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(&endpoint)
            .bind(delivery.event_id)
            .bind(number)
            .bind(attempt.at_ms)
            .bind(attempt.status.map(i64::from))
            .bind(attempt.latency_ms)
            .bind(&attempt.response)
            .bind(&attempt.error)
            .execute(&mut *tx)
            .await?;
                let moved = sqlx::query(
                "UPDATE webhook_deliveries SET state = $4, attempts = $5, next_attempt_at = $6, lease_owner = NULL,
                   lease_until = NULL, updated_at = $7
                 WHERE endpoint_id = $1 AND event_id = $2 AND lease_owner = $3 AND state = 'pending'",
            )
            .bind(&endpoint)
            .bind(delivery.event_id)
            .bind(node)
            .bind(state)
            .bind(number)
            .bind(next)
            .bind(attempt.at_ms)
            .execute(&mut *tx)
            .await?;
                if moved.rows_affected() == 0 {
                    recorded.push(false);
                    continue;
                }
                if attempt.succeeded() {
                    let recovered = sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                    .bind(&endpoint)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0;
                    // The receiver is back: what waits for a retry goes now, not after its backoff
                    // (which may be an hour after an outage).
                    if recovered {
                        sqlx::query(
                        "UPDATE webhook_deliveries SET next_attempt_at = $2
                         WHERE endpoint_id = $1 AND state = 'pending' AND next_attempt_at > $2 AND lease_owner IS NULL",
                    )
                    .bind(&endpoint)
                    .bind(attempt.at_ms)
                    .execute(&mut *tx)
                    .await?;
                    }
                } else {
                    sqlx::query("UPDATE webhook_endpoints SET failing_since = $2 WHERE id = $1 AND failing_since IS NULL")
                    .bind(&endpoint)
                    .bind(attempt.at_ms)
                    .execute(&mut *tx)
                    .await?;
                    let row: Option<(String, String)> = sqlx::query_as(
                    "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $3, updated_at = $2
                     WHERE id = $1 AND enabled = TRUE AND failing_since <= $4 RETURNING created_by, url",
                )
                .bind(&endpoint)
                .bind(attempt.at_ms)
                .bind("every delivery failed for a day")
                .bind(attempt.at_ms - DISABLE_AFTER_MS)
                .fetch_optional(&mut *tx)
                .await?;
                    if let Some((owner, url)) = row {
                        sqlx::query(
                        "INSERT INTO alerts (id, user_id, mailbox_id, kind, message, created_at) VALUES ($1, $2, NULL, 'webhook.disabled', $3, $4)",
                    )
                    .bind(Uuid::now_v7().to_string())
                    .bind(owner)
                    .bind(format!(
                        "The webhook to {url} was disabled: every delivery failed for a day. Fix the receiver, then enable it again; its events wait."
                    ))
                    .bind(attempt.at_ms)
                    .execute(&mut *tx)
                    .await?;
                    }
                }
                recorded.push(true);
            }
            tx.commit().await?;
            Ok(recorded)
        })
    }

    /// An endpoint's latest attempts, newest first.
    pub async fn webhook_log(&self, id: Uuid, limit: i64) -> StoreResult<Vec<LoggedAttempt>> {
        type Row = (
            i64,
            String,
            i64,
            i64,
            Option<i64>,
            i64,
            Option<String>,
            Option<String>,
            String,
        );
        let rows: Vec<Row> = on_db!(self, |writer, reader| {
            sqlx::query_as(
                "SELECT a.event_id, e.kind, a.number, a.at, a.status, a.latency_ms, a.response, a.error, d.state
                 FROM webhook_attempts a
                 JOIN events e ON e.id = a.event_id
                 JOIN webhook_deliveries d ON d.endpoint_id = a.endpoint_id AND d.event_id = a.event_id
                 WHERE a.endpoint_id = $1 ORDER BY a.at DESC, a.event_id DESC, a.number DESC LIMIT $2",
            )
            .bind(id.to_string())
            .bind(limit)
            .fetch_all(reader)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(
                |(event_id, kind, number, at, status, latency, response, error, state)| {
                    LoggedAttempt {
                        event_id,
                        kind,
                        number: u32::try_from(number).unwrap_or(0),
                        attempt: DeliveryAttempt {
                            at_ms: at,
                            status: status.and_then(|s| u16::try_from(s).ok()),
                            latency_ms: latency,
                            response,
                            error,
                        },
                        state,
                    }
                },
            )
            .collect())
    }

    /// Delivers an event to an endpoint again now, whatever became of it before (the endpoint need
    /// not have been subscribed to its type).
    pub async fn replay_event(&self, id: Uuid, event_id: i64) -> StoreResult<()> {
        let now = now_ms();
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM events WHERE id = $1")
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("event {event_id}")));
            }
            let endpoint: Option<String> =
                sqlx::query_scalar("SELECT id FROM webhook_endpoints WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if endpoint.is_none() {
                return Err(StoreError::NotFound(format!("webhook {id}")));
            }
            sqlx::query(
                "INSERT INTO webhook_deliveries (endpoint_id, event_id, state, attempts, next_attempt_at, created_at, updated_at)
                 VALUES ($1, $2, 'pending', 0, $3, $3, $3)
                 ON CONFLICT (endpoint_id, event_id) DO UPDATE SET state = 'pending', next_attempt_at = $3,
                   lease_owner = NULL, lease_until = NULL, updated_at = $3",
            )
            .bind(id.to_string())
            .bind(event_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
