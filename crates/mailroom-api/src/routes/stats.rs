//! `/v1/stats`: the figures of the dashboard — the outbox by state, attempts per hour, failures by
//! account. Organisation-wide, so for those who set email up.

use crate::AppState;
use crate::dto::rfc3339;
use crate::error::{ApiError, ApiQuery, ApiResult, ErrorBody};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_stats))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct StatsQuery {
    /// Hours of attempts to count, up to the current one (1–168, default 24).
    pub hours: Option<u32>,
}

/// The outbox by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct OutboxFigures {
    pub draft: i64,
    /// Waiting for their first try (or a manual retry).
    pub queued: i64,
    /// Waiting to be tried again after a transient failure.
    pub deferred: i64,
    pub sending: i64,
    pub failed: i64,
}

/// Attempts finished in one hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourFigures {
    /// The hour's start (UTC).
    pub hour: String,
    pub sent: i64,
    /// Transient failures: tried again later.
    pub deferred: i64,
    /// Permanent failures.
    pub failed: i64,
}

/// Failed messages of one account.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountFigures {
    pub account_id: String,
    pub account_name: String,
    pub failed: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub outbox: OutboxFigures,
    /// Oldest hour first; hours without attempts included.
    pub per_hour: Vec<HourFigures>,
    /// Accounts with failed messages, most first.
    pub failures_by_account: Vec<AccountFigures>,
}

/// How long attempts per hour, once counted, are served without counting again.
pub const HOURLY_FRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// Attempts per hour: counted now when nothing was counted for these hours yet; otherwise as last
/// counted, recounted in the background once older than [`HOURLY_FRESH`] (one recount at a time).
async fn hourly(
    state: &AppState,
    hours: u32,
) -> Result<Vec<mailroom_store::HourOutcomes>, mailroom_store::StoreError> {
    let cached = {
        let mut cache = state.hourly.lock().expect("hourly lock");
        let (at, for_hours, value, refreshing) = &mut *cache;
        match at {
            Some(at) if *for_hours == hours => {
                if at.elapsed() >= HOURLY_FRESH && !*refreshing {
                    *refreshing = true;
                    let state = state.clone();
                    tokio::spawn(async move {
                        let counted = state
                            .store
                            .hourly_outcomes(mailroom_store::now_ms(), hours)
                            .await;
                        let mut cache = state.hourly.lock().expect("hourly lock");
                        cache.3 = false;
                        match counted {
                            Ok(value) if cache.1 == hours => {
                                *cache = (Some(std::time::Instant::now()), hours, value, false);
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "recounting attempts per hour failed; the last count stays");
                            }
                        }
                    });
                }
                Some(value.clone())
            }
            _ => None,
        }
    };
    if let Some(value) = cached {
        return Ok(value);
    }
    let value = state
        .store
        .hourly_outcomes(mailroom_store::now_ms(), hours)
        .await?;
    *state.hourly.lock().expect("hourly lock") =
        (Some(std::time::Instant::now()), hours, value.clone(), false);
    Ok(value)
}

/// The outbox by state, attempts per hour (counted at most every 30 s), and failed messages by
/// account.
#[utoipa::path(get, path = "/v1/stats", tag = "system", params(StatsQuery),
    responses((status = 200, body = Stats), (status = 422, body = ErrorBody)))]
async fn get_stats(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<axum::Json<Stats>> {
    let hours = query.hours.unwrap_or(24);
    if !(1..=168).contains(&hours) {
        return Err(ApiError::invalid("hours", "between 1 and 168 hours"));
    }
    let (outbox, per_hour, failures) = tokio::try_join!(
        state.store.outbox_counts(),
        hourly(&state, hours),
        state.store.failures_by_account(),
    )?;
    Ok(axum::Json(Stats {
        outbox: OutboxFigures {
            draft: outbox.draft,
            queued: outbox.queued,
            deferred: outbox.deferred,
            sending: outbox.sending,
            failed: outbox.failed,
        },
        per_hour: per_hour
            .iter()
            .map(|h| HourFigures {
                hour: rfc3339(h.hour_start_ms),
                sent: h.sent,
                deferred: h.deferred,
                failed: h.failed,
            })
            .collect(),
        failures_by_account: failures
            .into_iter()
            .map(|f| AccountFigures {
                account_id: f.account_id,
                account_name: f.account_name,
                failed: f.failed,
            })
            .collect(),
    }))
}
