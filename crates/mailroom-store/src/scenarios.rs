//! Scenarios and their routing: each scenario is assigned to at most one account; unassigned ones use
//! the account of the `default` scenario, which is the default account.

use crate::cache::Routing;
use crate::db::{StoreRow, WritePool, on_db};
use crate::{Account, Store, StoreError, StoreResult};
use mailroom_core::scenario::{BUILT_IN_SCENARIOS, DEFAULT_SCENARIO, ScenarioName};
use uuid::Uuid;

/// A known scenario and the account it is routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioRow {
    pub name: String,
    pub description: String,
    pub built_in: bool,
    /// The account assigned to this scenario, if any.
    pub account_id: Option<Uuid>,
    /// The account mail of this scenario goes through now: its own, else the default account.
    pub effective_account_id: Option<Uuid>,
    /// Whether its mail carries a one-click unsubscribe link (RFC 8058).
    pub unsubscribe: bool,
}

impl Store {
    pub(crate) async fn seed_built_in_scenarios(&self) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            for (name, description) in BUILT_IN_SCENARIOS {
                sqlx::query("INSERT INTO scenarios (name, description, built_in) VALUES ($1, $2, TRUE) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(description)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn scenarios(&self) -> StoreResult<Vec<ScenarioRow>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT s.name, s.description, s.built_in, s.account_id, s.unsubscribe,
                        COALESCE(s.account_id, (SELECT d.account_id FROM scenarios d WHERE d.name = 'default')) AS effective
                 FROM scenarios s ORDER BY s.built_in DESC, s.name",
            )
            .fetch_all(reader)
            .await?;
            Ok(rows
                .iter()
                .map(|row| ScenarioRow {
                    name: row.get("name"),
                    description: row.get("description"),
                    built_in: row.get("built_in"),
                    account_id: row
                        .get::<Option<String>, _>("account_id")
                        .and_then(|s| s.parse().ok()),
                    effective_account_id: row
                        .get::<Option<String>, _>("effective")
                        .and_then(|s| s.parse().ok()),
                    unsubscribe: row.get("unsubscribe"),
                })
                .collect())
        })
    }

    pub async fn scenario(&self, name: &ScenarioName) -> StoreResult<ScenarioRow> {
        self.scenarios()
            .await?
            .into_iter()
            .find(|s| s.name == name.as_str())
            .ok_or_else(|| StoreError::NotFound(format!("scenario {name:?}")))
    }

    /// Assigns a scenario to an account (creating it as a custom scenario if it is new), or with
    /// `None` only registers it. Assigning `default` chooses the default account.
    pub async fn assign_scenario(
        &self,
        name: &ScenarioName,
        account_id: Option<Uuid>,
        description: Option<&str>,
        unsubscribe: Option<bool>,
    ) -> StoreResult<ScenarioRow> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            if let Some(account_id) = account_id {
                let exists: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(1 AS BIGINT) FROM accounts WHERE id = $1 AND deleted_at IS NULL",
                )
                .bind(account_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("account {account_id}")));
                }
            } else if name.is_default() {
                return Err(StoreError::Conflict(
                    "the default scenario needs an account: it decides where unassigned scenarios send"
                        .into(),
                ));
            }
            sqlx::query(
                "INSERT INTO scenarios (name, description, built_in, account_id) VALUES ($1, $2, FALSE, $3)
                 ON CONFLICT (name) DO UPDATE SET account_id = excluded.account_id,
                   description = CASE WHEN scenarios.built_in THEN scenarios.description ELSE COALESCE($4, scenarios.description) END",
            )
            .bind(name.as_str())
            .bind(description.unwrap_or("Custom scenario"))
            .bind(account_id.map(|id| id.to_string()))
            .bind(description)
            .execute(&mut *tx)
            .await?;
            if let Some(unsubscribe) = unsubscribe {
                sqlx::query("UPDATE scenarios SET unsubscribe = $2 WHERE name = $1")
                    .bind(name.as_str())
                    .bind(unsubscribe)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            self.routing_changed().await;
            self.scenario(name).await
        })
    }

    /// Removes a scenario's assignment so that it uses the default account again.
    /// The default scenario cannot be unassigned while accounts exist.
    pub async fn unassign_scenario(&self, name: &ScenarioName) -> StoreResult<ScenarioRow> {
        on_db!(self, |writer, reader| {
            let current = self.scenario(name).await?;
            if name.is_default() && current.account_id.is_some() {
                return Err(StoreError::Conflict(
                    "the default account cannot be unassigned while accounts exist; assign another account to the default scenario instead".into(),
                ));
            }
            sqlx::query("UPDATE scenarios SET account_id = NULL WHERE name = $1")
                .bind(name.as_str())
                .execute(writer)
                .await?;
            self.routing_changed().await;
            self.scenario(name).await
        })
    }

    /// Scenarios and accounts as routing reads them: from the cache, else from the database.
    async fn routing(&self) -> StoreResult<std::sync::Arc<Routing>> {
        if let Some(routing) = self.caches.routing() {
            return Ok(routing);
        }
        let routing = std::sync::Arc::new(Routing {
            scenarios: self.scenarios().await?,
            accounts: self
                .accounts()
                .await?
                .into_iter()
                .map(|a| (a.id, a))
                .collect(),
        });
        self.caches.remember_routing(routing.clone());
        Ok(routing)
    }

    /// Whether mail of a scenario carries a one-click unsubscribe link (false for an unknown one).
    pub async fn scenario_unsubscribe(&self, scenario: &ScenarioName) -> StoreResult<bool> {
        Ok(self
            .routing()
            .await?
            .scenarios
            .iter()
            .any(|s| s.name == scenario.as_str() && s.unsubscribe))
    }

    /// Picks the account a message goes through: the explicit account, else the scenario's account,
    /// else the default account.
    pub async fn resolve_account(
        &self,
        scenario: &ScenarioName,
        account_id: Option<Uuid>,
    ) -> StoreResult<Account> {
        let routing = self.routing().await?;
        let account_by_id = |id: Uuid| {
            routing
                .accounts
                .get(&id)
                .cloned()
                .ok_or_else(|| StoreError::NotFound(format!("account {id}")))
        };
        if let Some(account_id) = account_id {
            return account_by_id(account_id);
        }
        let row = routing
            .scenarios
            .iter()
            .find(|s| s.name == scenario.as_str())
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "scenario {:?} (register custom scenarios with PUT /v1/scenarios/{{name}})",
                    scenario.as_str()
                ))
            })?;
        match row.effective_account_id {
            Some(id) => account_by_id(id),
            None => Err(StoreError::Conflict(format!(
                "scenario {:?} has no account and there is no default account; assign an account to the {DEFAULT_SCENARIO:?} scenario",
                scenario.as_str()
            ))),
        }
    }
}
