//! Who may do what: licences, permission sets, and the view policies that decide which mail a user sees.

use crate::ValidationError;
use crate::account::string_enum;
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// A user's licence. Only `full` users may send through the organisation's accounts.
    Licence {
        Full => "full",
        Limited => "limited",
        Guest => "guest",
        DelegatedAdmin => "delegated-admin",
        ExternalAccountant => "external-accountant",
    }
);

string_enum!(
    /// Which queued and sent mail a user may see (MISSION A8).
    ViewPolicy {
        Own => "own",
        All => "all",
        AllRelatedRecords => "all-related-records",
        AnyRelatedRecord => "any-related-record",
    }
);

impl Licence {
    /// Whether this licence may send through the organisation's accounts; the reason when not.
    pub fn may_send(self) -> Result<(), String> {
        match self {
            Licence::Full => Ok(()),
            other => Err(format!(
                "users with a {other} licence may not send email through the organisation's accounts; only fully licensed users may"
            )),
        }
    }
}

/// The policy that applies when neither the user nor the default row sets one.
pub const FALLBACK_VIEW_POLICY: ViewPolicy = ViewPolicy::AllRelatedRecords;

/// The record type of users; relations to users are ignored by view policies.
pub const USER_RECORD_TYPE: &str = "user";

/// What a permission set grants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PermissionSet {
    /// Everything.
    EmailAdmin,
    /// Configure accounts, scenarios, limits, policies and templates.
    EmailSetup,
    /// Send mail and see one's own.
    EmailSend,
    /// Manage users and teams and grant them permission sets (except `email-admin` and
    /// `delegated-mailbox-approver`, which only an email administrator grants).
    UserAdmin,
    /// Approve email addresses for users or queues (MISSION B4).
    MailboxApprove,
    /// With `mailbox-approve`, approve the addresses of other users and of queues without being an
    /// email administrator. Granted to users only, never to teams.
    DelegatedMailboxApprover,
    /// The role of a mail-client app user (MISSION D1): look up the records of a message's
    /// participants from inside the mail client, and track the user's own mail to records. With an
    /// approved, tested, server-side-synchronised mailbox it makes the user eligible for the app.
    MailClientApp,
    /// Read records of one type, e.g. `read customer`.
    Read(String),
}

impl FromStr for PermissionSet {
    type Err = ValidationError;

    fn from_str(raw: &str) -> Result<Self, ValidationError> {
        match raw {
            "email-admin" => Ok(Self::EmailAdmin),
            "email-setup" => Ok(Self::EmailSetup),
            "email-send" => Ok(Self::EmailSend),
            "user-admin" => Ok(Self::UserAdmin),
            "mailbox-approve" => Ok(Self::MailboxApprove),
            "delegated-mailbox-approver" => Ok(Self::DelegatedMailboxApprover),
            "mail-client-app" => Ok(Self::MailClientApp),
            other => match other.strip_prefix("read ") {
                Some(record_type)
                    if !record_type.is_empty()
                        && record_type.len() <= 64
                        && record_type.chars().all(|c| {
                            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                        }) =>
                {
                    Ok(Self::Read(record_type.to_owned()))
                }
                _ => Err(ValidationError::new(
                    "permission_sets",
                    format!(
                        "{other:?} is not a permission set (email-admin, email-setup, email-send, user-admin, mailbox-approve, delegated-mailbox-approver, mail-client-app, or \"read <record-type>\")"
                    ),
                )),
            },
        }
    }
}

impl fmt::Display for PermissionSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmailAdmin => f.write_str("email-admin"),
            Self::EmailSetup => f.write_str("email-setup"),
            Self::EmailSend => f.write_str("email-send"),
            Self::UserAdmin => f.write_str("user-admin"),
            Self::MailboxApprove => f.write_str("mailbox-approve"),
            Self::DelegatedMailboxApprover => f.write_str("delegated-mailbox-approver"),
            Self::MailClientApp => f.write_str("mail-client-app"),
            Self::Read(record_type) => write!(f, "read {record_type}"),
        }
    }
}

/// The permission sets one user holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Vec<PermissionSet>);

impl Grants {
    pub fn new(mut sets: Vec<PermissionSet>) -> Self {
        sets.sort();
        sets.dedup();
        Self(sets)
    }

    pub fn sets(&self) -> &[PermissionSet] {
        &self.0
    }

    /// Whether the needed permission is granted (email-admin grants everything).
    pub fn allows(&self, needed: &PermissionSet) -> bool {
        self.0
            .iter()
            .any(|held| held == needed || *held == PermissionSet::EmailAdmin)
    }

    /// The record types this user may read; `None` means every type.
    pub fn readable_types(&self) -> Option<Vec<String>> {
        if self.0.contains(&PermissionSet::EmailAdmin) {
            return None;
        }
        Some(
            self.0
                .iter()
                .filter_map(|set| {
                    if let PermissionSet::Read(t) = set {
                        Some(t.clone())
                    } else {
                        None
                    }
                })
                .collect(),
        )
    }
}

/// Whether `viewer` may see a message written by `author` with related records of `related_types`.
/// The author always sees their own mail; relations to users are ignored.
pub fn may_see(
    policy: ViewPolicy,
    viewer: &str,
    grants: &Grants,
    author: &str,
    related_types: &[&str],
) -> bool {
    if viewer == author || policy == ViewPolicy::All {
        return true;
    }
    let readable = |t: &str| {
        grants
            .readable_types()
            .is_none_or(|types| types.iter().any(|r| r == t))
    };
    let relevant: Vec<&str> = related_types
        .iter()
        .copied()
        .filter(|t| *t != USER_RECORD_TYPE)
        .collect();
    match policy {
        ViewPolicy::Own => false,
        ViewPolicy::All => true,
        ViewPolicy::AllRelatedRecords => {
            !relevant.is_empty() && relevant.iter().all(|t| readable(t))
        }
        ViewPolicy::AnyRelatedRecord => relevant.iter().any(|t| readable(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(sets: &[&str]) -> Grants {
        Grants::new(sets.iter().map(|s| s.parse().unwrap()).collect())
    }

    #[test]
    fn permission_sets_round_trip_and_unknown_ones_are_refused() {
        for name in [
            "email-admin",
            "email-setup",
            "email-send",
            "mail-client-app",
            "read sales-invoice",
        ] {
            assert_eq!(name.parse::<PermissionSet>().unwrap().to_string(), name);
        }
        assert!("read".parse::<PermissionSet>().is_err());
        assert!("read Sales Invoice".parse::<PermissionSet>().is_err());
        assert!("superuser".parse::<PermissionSet>().is_err());
    }

    #[test]
    fn email_admin_grants_every_permission() {
        let admin = grants(&["email-admin"]);
        assert!(admin.allows(&PermissionSet::EmailSetup));
        assert!(admin.allows(&PermissionSet::Read("customer".into())));
        assert!(!grants(&["email-send"]).allows(&PermissionSet::EmailSetup));
    }

    #[test]
    fn only_full_licences_may_send() {
        assert!(Licence::Full.may_send().is_ok());
        for licence in [
            Licence::Limited,
            Licence::Guest,
            Licence::DelegatedAdmin,
            Licence::ExternalAccountant,
        ] {
            assert!(licence.may_send().unwrap_err().contains(licence.as_str()));
        }
    }

    #[test]
    fn view_policies_follow_the_related_records_a_user_may_read() {
        let reader = grants(&["email-send", "read customer"]);
        let see =
            |policy, types: &[&str]| may_see(policy, "viewer", &reader, "someone-else", types);
        assert!(see(ViewPolicy::All, &[]));
        assert!(!see(ViewPolicy::Own, &["customer"]));
        assert!(
            !see(ViewPolicy::AllRelatedRecords, &[]),
            "no related record: nothing to judge by"
        );
        assert!(see(ViewPolicy::AllRelatedRecords, &["customer"]));
        assert!(!see(
            ViewPolicy::AllRelatedRecords,
            &["customer", "sales-invoice"]
        ));
        assert!(see(
            ViewPolicy::AnyRelatedRecord,
            &["customer", "sales-invoice"]
        ));
        assert!(!see(ViewPolicy::AnyRelatedRecord, &["sales-invoice"]));
        assert!(
            !see(ViewPolicy::AnyRelatedRecord, &["user"]),
            "relations to users are ignored"
        );
        assert!(
            see(ViewPolicy::AllRelatedRecords, &["customer", "user"]),
            "relations to users are ignored"
        );
        assert!(
            may_see(ViewPolicy::Own, "me", &reader, "me", &[]),
            "the author always sees their own mail"
        );
    }
}
