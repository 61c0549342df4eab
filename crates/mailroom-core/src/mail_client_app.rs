//! The app inside the user's mail client (MISSION D1–D3): who may use it, and how it reaches them.

use crate::ValidationError;
use crate::access::{Grants, PermissionSet};
use crate::mailbox::{Approval, MailboxKind, MailboxReadiness, SyncMethod, TestStatus};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a user who may not use the app is told (MISSION D1).
pub const NOT_AUTHORISED: &str =
    "You are not authorised to use this app. Ask your administrator to update your settings.";

/// One prerequisite of the app a user lacks, in the order an administrator fixes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ineligible {
    /// The user holds neither `mail-client-app` nor `email-admin`.
    RoleMissing,
    /// The user has no mailbox of their own (queue mailboxes cannot use the app).
    NoMailbox,
    /// The mailbox's incoming mail is not synchronised by the server.
    NotServerSideSync,
    /// The mailbox's email address is not approved.
    NotApproved,
    /// The mailbox's incoming side has not passed test & enable, or the mailbox is disabled.
    NotTested,
}

impl Ineligible {
    pub fn code(self) -> &'static str {
        match self {
            Self::RoleMissing => "role_missing",
            Self::NoMailbox => "mailbox_missing",
            Self::NotServerSideSync => "incoming_not_server_side_sync",
            Self::NotApproved => "mailbox_not_approved",
            Self::NotTested => "mailbox_not_tested",
        }
    }

    /// What an administrator does about it.
    pub fn message(self) -> &'static str {
        match self {
            Self::RoleMissing => "grant the user the mail-client-app permission set",
            Self::NoMailbox => "create a mailbox for the user",
            Self::NotServerSideSync => "set the mailbox's incoming email to server-side-sync",
            Self::NotApproved => "approve the mailbox's email address",
            Self::NotTested => "run test & enable on the mailbox until its incoming side succeeds",
        }
    }
}

/// Everything a user lacks to use the app; empty when the user is eligible. A user's mailbox is
/// needed with server-side synchronisation of incoming mail, an approved address (whether or not the
/// organisation requires approval for processing), and a successful incoming test (MISSION D1).
pub fn ineligible(grants: &Grants, mailbox: Option<&MailboxReadiness>) -> Vec<Ineligible> {
    let mut missing = Vec::new();
    if !grants.allows(&PermissionSet::MailClientApp) {
        missing.push(Ineligible::RoleMissing);
    }
    let Some(mailbox) = mailbox.filter(|m| m.kind == MailboxKind::User) else {
        missing.push(Ineligible::NoMailbox);
        return missing;
    };
    if mailbox.incoming != SyncMethod::ServerSideSync {
        missing.push(Ineligible::NotServerSideSync);
    }
    if mailbox.approval != Approval::Approved {
        missing.push(Ineligible::NotApproved);
    }
    if !mailbox.enabled || mailbox.incoming_status != TestStatus::Success {
        missing.push(Ineligible::NotTested);
    }
    missing
}

/// How the app reaches eligible users (MISSION D2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentMode {
    /// Every user who becomes eligible gets the app.
    Automatic,
    /// Only users an administrator deploys it to (all eligible users now, or selected ones), and
    /// users who add it themselves.
    #[default]
    Manual,
}

impl FromStr for DeploymentMode {
    type Err = ValidationError;
    fn from_str(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "automatic" => Ok(Self::Automatic),
            "manual" => Ok(Self::Manual),
            other => Err(ValidationError::new(
                "deployment",
                format!("{other:?} is not a deployment mode (automatic or manual)"),
            )),
        }
    }
}

impl fmt::Display for DeploymentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Automatic => "automatic",
            Self::Manual => "manual",
        })
    }
}

/// What is recorded about one user and the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployed {
    /// Deployed to the user (by an administrator, or the user asked for it); their mail client has
    /// not opened the app yet.
    Requested,
    /// The user's mail client has opened the app.
    Opened,
}

impl Deployed {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Opened => "opened",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "requested" => Some(Self::Requested),
            "opened" => Some(Self::Opened),
            _ => None,
        }
    }
}

/// A user's deployment status, as the console shows it (MISSION D2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentStatus {
    /// The user lacks a prerequisite.
    NotEligible,
    /// Eligible, but the app has not been deployed to them (manual deployment) and they have not
    /// added it themselves.
    Eligible,
    /// Deployed; waiting for the user's mail client to open it.
    Pending,
    /// The user's mail client has opened the app.
    Added,
}

impl DeploymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotEligible => "not-eligible",
            Self::Eligible => "eligible",
            Self::Pending => "pending",
            Self::Added => "added",
        }
    }
}

/// The status of a user: not eligible whatever was recorded (losing a prerequisite takes the app
/// away), else what was recorded, else pending under automatic deployment.
pub fn deployment_status(
    eligible: bool,
    mode: DeploymentMode,
    recorded: Option<Deployed>,
) -> DeploymentStatus {
    match (eligible, recorded, mode) {
        (false, _, _) => DeploymentStatus::NotEligible,
        (true, Some(Deployed::Opened), _) => DeploymentStatus::Added,
        (true, Some(Deployed::Requested), _) | (true, None, DeploymentMode::Automatic) => {
            DeploymentStatus::Pending
        }
        (true, None, DeploymentMode::Manual) => DeploymentStatus::Eligible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> MailboxReadiness {
        MailboxReadiness {
            kind: MailboxKind::User,
            approval: Approval::Approved,
            enabled: true,
            outgoing: SyncMethod::ServerSideSync,
            incoming: SyncMethod::ServerSideSync,
            outgoing_status: TestStatus::NotRun,
            incoming_status: TestStatus::Success,
        }
    }

    fn role() -> Grants {
        Grants::new(vec![PermissionSet::MailClientApp])
    }

    #[test]
    fn a_user_with_the_role_and_a_synchronised_approved_tested_mailbox_is_eligible() {
        assert_eq!(ineligible(&role(), Some(&ready())), []);
        let admin = Grants::new(vec![PermissionSet::EmailAdmin]);
        assert_eq!(ineligible(&admin, Some(&ready())), []);
    }

    #[test]
    fn every_missing_prerequisite_is_named_in_the_order_an_administrator_fixes_them() {
        let mut mailbox = ready();
        mailbox.incoming = SyncMethod::None;
        mailbox.approval = Approval::Pending;
        mailbox.incoming_status = TestStatus::Failure;
        assert_eq!(
            ineligible(&Grants::default(), Some(&mailbox)),
            [
                Ineligible::RoleMissing,
                Ineligible::NotServerSideSync,
                Ineligible::NotApproved,
                Ineligible::NotTested
            ]
        );
        assert_eq!(
            ineligible(&role(), None),
            [Ineligible::NoMailbox],
            "no mailbox at all"
        );
        let mut queue = ready();
        queue.kind = MailboxKind::Queue;
        assert_eq!(ineligible(&role(), Some(&queue)), [Ineligible::NoMailbox]);
        let mut disabled = ready();
        disabled.enabled = false;
        assert_eq!(
            ineligible(&role(), Some(&disabled)),
            [Ineligible::NotTested]
        );
    }

    #[test]
    fn the_status_follows_eligibility_then_what_was_recorded_then_the_mode() {
        use DeploymentMode::*;
        use DeploymentStatus::*;
        assert_eq!(
            deployment_status(false, Automatic, Some(Deployed::Opened)),
            NotEligible
        );
        assert_eq!(
            deployment_status(true, Manual, Some(Deployed::Opened)),
            Added
        );
        assert_eq!(
            deployment_status(true, Manual, Some(Deployed::Requested)),
            Pending
        );
        assert_eq!(deployment_status(true, Automatic, None), Pending);
        assert_eq!(deployment_status(true, Manual, None), Eligible);
        assert_eq!("automatic".parse::<DeploymentMode>().unwrap(), Automatic);
        assert!("sometimes".parse::<DeploymentMode>().is_err());
    }
}
