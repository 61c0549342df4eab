//! Email scenarios: the business processes that send mail, each routed to at most one account.

use crate::ValidationError;
use std::fmt;

/// The scenario every unassigned scenario falls back to; its account is "the default account".
pub const DEFAULT_SCENARIO: &str = "default";

/// Scenarios mailroom knows without being told (MISSION A6). Custom ones may be added by name.
pub const BUILT_IN_SCENARIOS: &[(&str, &str)] = &[
    ("default", "Everything without a scenario of its own"),
    ("sales-quote", "Sales quotes"),
    ("sales-order", "Sales order confirmations"),
    ("sales-invoice", "Sales invoices"),
    ("sales-credit-memo", "Sales credit memos"),
    ("sales-shipment", "Shipment notices"),
    ("purchase-order", "Purchase orders"),
    ("purchase-quote", "Requests for quotation"),
    ("reminder", "Payment reminders"),
    ("finance-charge-memo", "Finance charge memos"),
    ("statement", "Customer statements"),
    ("approval-request", "Approval requests"),
    (
        "external-accountant-invitation",
        "Invitations to external accountants",
    ),
    ("notification", "System notifications"),
];

/// A scenario name: lowercase letters, digits and hyphens, 1 to 64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScenarioName(String);

impl ScenarioName {
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let valid = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !raw.starts_with('-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ValidationError::new(
                "scenario",
                format!(
                    "{raw:?} is not a valid scenario name (use 1-64 lowercase letters, digits and hyphens)"
                ),
            ))
        }
    }

    pub fn default_scenario() -> Self {
        Self(DEFAULT_SCENARIO.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_default(&self) -> bool {
        self.0 == DEFAULT_SCENARIO
    }

    pub fn is_built_in(&self) -> bool {
        BUILT_IN_SCENARIOS.iter().any(|(name, _)| *name == self.0)
    }
}

impl fmt::Display for ScenarioName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_lowercase_slugs() {
        assert!(ScenarioName::parse("sales-invoice").unwrap().is_built_in());
        assert!(!ScenarioName::parse("warranty-claim").unwrap().is_built_in());
        for bad in ["", "Sales", "a b", "-x", "x/y"] {
            assert!(ScenarioName::parse(bad).is_err(), "{bad}");
        }
    }
}
