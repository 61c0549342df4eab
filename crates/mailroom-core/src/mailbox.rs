//! Mailboxes (MISSION B1–B5): server profiles, the organisation's email settings, user and queue
//! mailboxes, who may approve an address, what a test outcome does to a mailbox, and which step a
//! user still lacks before mail can go out from their own mailbox.

use crate::ValidationError;
use crate::access::{Grants, PermissionSet};
use crate::account::{Security, parse_host, string_enum};
use crate::address::EmailAddress;
use std::fmt;
use std::str::FromStr;

string_enum!(
    /// What kind of mail service a server profile describes.
    ProfileKind { ImapSmtp => "imap-smtp", ExchangeOnline => "exchange-online" }
);

string_enum!(
    /// How mailboxes of a profile authenticate.
    AuthType { Password => "password", Oauth2 => "oauth2" }
);

string_enum!(
    /// Whether a direction (incoming, outgoing, appointments/contacts/tasks) is synchronized by the server.
    SyncMethod { ServerSideSync => "server-side-sync", None => "none" }
);

string_enum!(
    /// Whose mailbox it is: a user's, or a queue's (a shared inbox such as support@).
    MailboxKind { User => "user", Queue => "queue" }
);

string_enum!(
    /// Whether the mailbox's address has been approved for processing.
    Approval { Empty => "empty", Pending => "pending", Approved => "approved", Rejected => "rejected" }
);

string_enum!(
    /// The outcome of the last test of one direction.
    TestStatus { NotRun => "not-run", Success => "success", Failure => "failure" }
);

string_enum!(
    /// Which incoming mail inbound sync keeps for a mailbox.
    MailboxFilter {
        All => "all",
        ResponsesToTracked => "responses-to-tracked",
        KnownContacts => "known-contacts",
        None => "none",
    }
);

/// One server of a profile: where to connect and how the connection is secured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerEndpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

impl ServerEndpoint {
    /// Validates a raw endpoint; the port defaults by protocol and security.
    pub fn parse(
        field: &str,
        host: &str,
        port: Option<u16>,
        security: Option<&str>,
        default_port: impl Fn(Security) -> u16,
    ) -> Result<Self, ValidationError> {
        let host = parse_host(host).map_err(|e| e.at(format!("{field}.host")))?;
        let security = security
            .map(str::parse::<Security>)
            .transpose()
            .map_err(|e| e.at(format!("{field}.security")))?
            .unwrap_or(Security::Tls);
        let port = port.unwrap_or_else(|| default_port(security));
        if port == 0 {
            return Err(ValidationError::new(
                format!("{field}.port"),
                "must be between 1 and 65535",
            ));
        }
        Ok(Self {
            host,
            port,
            security,
        })
    }

    /// IMAP's well-known ports: 143 (plain or STARTTLS), 993 (implicit TLS).
    pub fn imap_port(security: Security) -> u16 {
        match security {
            Security::Tls => 993,
            _ => 143,
        }
    }

    /// Submission ports: 587 (STARTTLS or plain), 465 (implicit TLS).
    pub fn submission_port(security: Security) -> u16 {
        match security {
            Security::Tls => 465,
            _ => 587,
        }
    }
}

impl fmt::Display for ServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.host, self.port, self.security)
    }
}

/// Microsoft 365 endpoints of a profile, overridable for sovereign clouds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloudEndpoints {
    pub graph_base_url: String,
    pub authority: String,
    /// `oauth2` profiles: the app registration users connect their mailboxes with.
    #[serde(default)]
    pub app_registration_id: Option<uuid::Uuid>,
}

impl Default for CloudEndpoints {
    fn default() -> Self {
        Self {
            graph_base_url: "https://graph.microsoft.com/v1.0".into(),
            authority: "https://login.microsoftonline.com".into(),
            app_registration_id: None,
        }
    }
}

impl CloudEndpoints {
    pub fn validate(self) -> Result<Self, ValidationError> {
        for (field, url) in [
            ("endpoints.graph_base_url", &self.graph_base_url),
            ("endpoints.authority", &self.authority),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.len() > 2048
                || url.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(ValidationError::new(
                    field,
                    "must be an http(s) URL without spaces",
                ));
            }
        }
        Ok(self)
    }
}

/// How mailboxes of a profile are processed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessingOptions {
    /// Seconds between two polls of a mailbox (when IDLE is not used).
    pub poll_interval_s: u32,
    /// Connections open at most to the profile's servers at once, tests included.
    pub max_connections: u32,
    /// Mail received before this date (YYYY-MM-DD) is not processed.
    pub process_from: Option<String>,
    /// Folders synchronized.
    pub folders: Vec<String>,
    /// Whether to wait for new mail with IMAP IDLE instead of polling.
    pub use_idle: bool,
}

impl Default for ProcessingOptions {
    fn default() -> Self {
        Self {
            poll_interval_s: 60,
            max_connections: 10,
            process_from: None,
            folders: vec!["INBOX".into(), "Sent".into()],
            use_idle: true,
        }
    }
}

impl ProcessingOptions {
    pub fn validate(self) -> Result<Self, ValidationError> {
        if !(5..=86_400).contains(&self.poll_interval_s) {
            return Err(ValidationError::new(
                "processing.poll_interval_s",
                "must be between 5 and 86400 seconds",
            ));
        }
        if !(1..=1_000).contains(&self.max_connections) {
            return Err(ValidationError::new(
                "processing.max_connections",
                "must be between 1 and 1000",
            ));
        }
        if let Some(date) = &self.process_from
            && !is_calendar_date(date)
        {
            return Err(ValidationError::new(
                "processing.process_from",
                "must be a date as YYYY-MM-DD",
            ));
        }
        if self.folders.is_empty() || self.folders.len() > 100 {
            return Err(ValidationError::new(
                "processing.folders",
                "name between 1 and 100 folders",
            ));
        }
        for (index, folder) in self.folders.iter().enumerate() {
            if folder.is_empty()
                || folder.len() > 255
                || folder.chars().any(|c| c.is_control() || c == '"')
            {
                return Err(ValidationError::new(
                    format!("processing.folders[{index}]"),
                    "a folder name is 1-255 characters without control characters or quotes",
                ));
            }
        }
        Ok(self)
    }
}

fn is_calendar_date(raw: &str) -> bool {
    let parts: Vec<&str> = raw.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return false;
    };
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    matches!(
        (number(year, 4), number(month, 2), number(day, 2)),
        (Some(y), Some(m), Some(d)) if y >= 1970 && (1..=12).contains(&m) && (1..=31).contains(&d)
    )
}

/// The organisation's email settings (MISSION B2).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmailSettings {
    pub default_profile_id: Option<String>,
    pub incoming: SyncMethod,
    pub outgoing: SyncMethod,
    pub act: SyncMethod,
    pub process_only_approved_users: bool,
    pub process_only_approved_queues: bool,
    pub require_privilege_to_self_approve: bool,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            default_profile_id: None,
            incoming: SyncMethod::ServerSideSync,
            outgoing: SyncMethod::ServerSideSync,
            act: SyncMethod::None,
            process_only_approved_users: true,
            process_only_approved_queues: true,
            require_privilege_to_self_approve: false,
        }
    }
}

impl EmailSettings {
    /// Whether mailboxes of this kind are processed only once approved.
    pub fn approval_required(&self, kind: MailboxKind) -> bool {
        match kind {
            MailboxKind::User => self.process_only_approved_users,
            MailboxKind::Queue => self.process_only_approved_queues,
        }
    }
}

/// A refusal to approve or reject a mailbox's address, each with its own code (MISSION B4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalRefusal {
    /// The approver lacks `mailbox-approve`.
    PermissionMissing,
    /// Approving someone else's (or a queue's) address also needs `email-admin` or the
    /// `delegated-mailbox-approver` role.
    ApproverRoleMissing,
    /// The organisation requires `mailbox-approve` even for one's own address.
    SelfApprovalNeedsPermission,
}

impl ApprovalRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::PermissionMissing => "mailbox_approve_permission_missing",
            Self::ApproverRoleMissing => "mailbox_approver_role_missing",
            Self::SelfApprovalNeedsPermission => "self_approval_needs_permission",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::PermissionMissing => {
                "Approving email addresses for users or queues needs the mailbox-approve permission"
            }
            Self::ApproverRoleMissing => {
                "Approving the email address of another user or of a queue needs the mailbox-approve permission and either email-admin or the delegated mailbox approver role"
            }
            Self::SelfApprovalNeedsPermission => {
                "The organisation requires the mailbox-approve permission to approve your own email address"
            }
        }
    }
}

/// Who wants to approve: their id, contact email and effective permission sets.
pub struct Approver<'a> {
    pub user_id: &'a str,
    pub contact_email: Option<&'a EmailAddress>,
    pub grants: &'a Grants,
}

/// The mailbox to approve, as far as the rule needs it.
pub struct ApprovalTarget<'a> {
    pub kind: MailboxKind,
    pub user_id: Option<&'a str>,
    pub email_address: &'a EmailAddress,
}

impl ApprovalTarget<'_> {
    /// A user's own mailbox: theirs, and at the address they are known by (their contact email).
    /// A user's mailbox at any other address is approved like anybody else's.
    fn is_own(&self, approver: &Approver<'_>) -> bool {
        self.kind == MailboxKind::User
            && self.user_id == Some(approver.user_id)
            && approver.contact_email == Some(self.email_address)
    }
}

/// Whether `approver` may approve (or reject) `target`'s address.
pub fn may_approve(
    approver: &Approver<'_>,
    target: &ApprovalTarget<'_>,
    settings: &EmailSettings,
) -> Result<(), ApprovalRefusal> {
    let holds_permission = approver.grants.allows(&PermissionSet::MailboxApprove);
    if target.is_own(approver) {
        return if !settings.require_privilege_to_self_approve || holds_permission {
            Ok(())
        } else {
            Err(ApprovalRefusal::SelfApprovalNeedsPermission)
        };
    }
    if !holds_permission {
        return Err(ApprovalRefusal::PermissionMissing);
    }
    let admin = approver.grants.sets().contains(&PermissionSet::EmailAdmin);
    let delegated = approver
        .grants
        .sets()
        .contains(&PermissionSet::DelegatedMailboxApprover);
    if admin || delegated {
        Ok(())
    } else {
        Err(ApprovalRefusal::ApproverRoleMissing)
    }
}

/// A refusal to grant a permission set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantRefusal {
    /// Only an email administrator may grant `delegated-mailbox-approver`.
    DelegatedApproverNeedsAdmin,
    /// `delegated-mailbox-approver` is granted to users, never to a team.
    DelegatedApproverNotForTeams,
    /// Only an email administrator may grant `email-admin`.
    AdminNeedsAdmin,
}

impl GrantRefusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::DelegatedApproverNeedsAdmin => "delegated_approver_grant_denied",
            Self::DelegatedApproverNotForTeams => "delegated_approver_not_for_teams",
            Self::AdminNeedsAdmin => "admin_grant_denied",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::DelegatedApproverNeedsAdmin => {
                "Only an email administrator can assign the delegated mailbox approver role"
            }
            Self::DelegatedApproverNotForTeams => {
                "The delegated mailbox approver role cannot be assigned to a team"
            }
            Self::AdminNeedsAdmin => "Only an email administrator can grant email-admin",
        }
    }

    /// 422 for what can never be granted there, 403 for what this granter may not grant.
    pub fn is_forbidden(self) -> bool {
        !matches!(self, Self::DelegatedApproverNotForTeams)
    }
}

/// Whether `granter` may give the sets in `newly_granted` to a user (`to_team` false) or a team.
/// Sets the grantee already held are not re-judged.
pub fn may_grant(
    granter: &Grants,
    newly_granted: &[PermissionSet],
    to_team: bool,
) -> Result<(), GrantRefusal> {
    let admin = granter.sets().contains(&PermissionSet::EmailAdmin);
    for set in newly_granted {
        match set {
            PermissionSet::DelegatedMailboxApprover if to_team => {
                return Err(GrantRefusal::DelegatedApproverNotForTeams);
            }
            PermissionSet::DelegatedMailboxApprover if !admin => {
                return Err(GrantRefusal::DelegatedApproverNeedsAdmin);
            }
            PermissionSet::EmailAdmin if !admin => return Err(GrantRefusal::AdminNeedsAdmin),
            _ => {}
        }
    }
    Ok(())
}

/// What a mailbox is, as far as deciding whether it may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailboxReadiness {
    pub kind: MailboxKind,
    pub approval: Approval,
    pub enabled: bool,
    pub outgoing: SyncMethod,
    pub incoming: SyncMethod,
    pub outgoing_status: TestStatus,
    pub incoming_status: TestStatus,
}

/// The step a mailbox still lacks before it may be used for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingStep {
    NoMailbox,
    NotApproved,
    NotTested,
    DirectionOff,
}

impl MissingStep {
    pub fn code(self) -> &'static str {
        match self {
            Self::NoMailbox => "mailbox_missing",
            Self::NotApproved => "mailbox_not_approved",
            Self::NotTested => "mailbox_not_tested",
            Self::DirectionOff => "mailbox_direction_off",
        }
    }

    /// What to do, for a message naming the direction ("outgoing" or "incoming").
    pub fn message(self, direction: &str) -> String {
        match self {
            Self::NoMailbox => "the user has no mailbox; an administrator creates one (mailroom mailbox list shows every mailbox)".into(),
            Self::NotApproved => "the mailbox's email address is not approved; approve it (POST /v1/mailboxes/{id}/approve)".into(),
            Self::NotTested => format!("the mailbox's {direction} side has not passed a test, or the mailbox is disabled; run test & enable (POST /v1/mailboxes/{{id}}/test)"),
            Self::DirectionOff => format!("{direction} email is turned off for this mailbox; set it to server-side-sync"),
        }
    }
}

/// Which direction of a mailbox is about to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incoming => "incoming",
            Self::Outgoing => "outgoing",
        }
    }
}

/// Whether a mailbox may be used for `direction` now: it exists, is approved (when the organisation
/// requires it), is switched on for that direction, and passed its test of that direction.
pub fn ready_for(
    mailbox: Option<&MailboxReadiness>,
    direction: Direction,
    settings: &EmailSettings,
) -> Result<(), MissingStep> {
    let mailbox = mailbox.ok_or(MissingStep::NoMailbox)?;
    if settings.approval_required(mailbox.kind) && mailbox.approval != Approval::Approved {
        return Err(MissingStep::NotApproved);
    }
    let (method, status) = match direction {
        Direction::Incoming => (mailbox.incoming, mailbox.incoming_status),
        Direction::Outgoing => (mailbox.outgoing, mailbox.outgoing_status),
    };
    if method == SyncMethod::None {
        return Err(MissingStep::DirectionOff);
    }
    if !mailbox.enabled || status != TestStatus::Success {
        return Err(MissingStep::NotTested);
    }
    Ok(())
}

/// Tries of a transiently failing test before the mailbox is disabled (MISSION B5).
pub const MAX_TEST_TRIES: u32 = 10;

/// How long to wait before try `tries_so_far + 1` of a transiently failing test: the initial delay,
/// doubled per try, at most an hour.
pub fn test_retry_delay_ms(tries_so_far: u32, initial_ms: u64) -> u64 {
    let factor = 1u64 << tries_so_far.saturating_sub(1).min(20);
    initial_ms.saturating_mul(factor).min(3_600_000)
}

/// Whether a server's refusal during a test is worth trying again: network trouble, timeouts,
/// SMTP 4xx and IMAP `[UNAVAILABLE]`/`[INUSE]`/`[LIMIT]` are; rejected credentials and missing
/// mailboxes are not. `reply_code` is the SMTP code, when there was one.
pub fn refusal_is_transient(reply_code: Option<u16>, text: &str) -> bool {
    if let Some(code) = reply_code {
        return (400..500).contains(&code);
    }
    let upper = text.to_ascii_uppercase();
    const PERMANENT: [&str; 6] = [
        "[AUTHENTICATIONFAILED]",
        "[AUTHORIZATIONFAILED]",
        "[NONEXISTENT]",
        "[NOPERM]",
        "AUTHENTICATION FAILED",
        "NO SUCH MAILBOX",
    ];
    !PERMANENT.iter().any(|marker| upper.contains(marker))
}

/// The sets a team or user gains: those in `next` not in `previous`.
pub fn newly_granted(previous: &Grants, next: &Grants) -> Vec<PermissionSet> {
    next.sets()
        .iter()
        .filter(|set| !previous.sets().contains(set))
        .cloned()
        .collect()
}

impl FromStr for ServerEndpoint {
    type Err = ValidationError;

    /// `host:port[:security]`, as the CLI takes it.
    fn from_str(raw: &str) -> Result<Self, ValidationError> {
        let mut parts = raw.split(':');
        let host = parts.next().unwrap_or_default();
        let port = parts
            .next()
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| ValidationError::new("port", format!("{p:?} is not a port")))
            })
            .transpose()?;
        let security = parts.next();
        ServerEndpoint::parse("endpoint", host, port, security, |_| 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(sets: &[&str]) -> Grants {
        Grants::new(sets.iter().map(|s| s.parse().unwrap()).collect())
    }

    fn approve(sets: &[&str], own: bool, require_privilege: bool) -> Result<(), ApprovalRefusal> {
        let me = EmailAddress::parse("me@example.com").unwrap();
        let held = grants(sets);
        let approver = Approver {
            user_id: "me",
            contact_email: Some(&me),
            grants: &held,
        };
        let target = ApprovalTarget {
            kind: MailboxKind::User,
            user_id: Some(if own { "me" } else { "someone" }),
            email_address: &me,
        };
        let settings = EmailSettings {
            require_privilege_to_self_approve: require_privilege,
            ..EmailSettings::default()
        };
        may_approve(&approver, &target, &settings)
    }

    #[test]
    fn approving_anothers_address_needs_the_permission_and_admin_or_the_delegated_role() {
        assert_eq!(
            approve(&["email-send"], false, false),
            Err(ApprovalRefusal::PermissionMissing)
        );
        assert_eq!(
            approve(&["mailbox-approve"], false, false),
            Err(ApprovalRefusal::ApproverRoleMissing)
        );
        assert_eq!(
            approve(
                &["mailbox-approve", "delegated-mailbox-approver"],
                false,
                false
            ),
            Ok(())
        );
        assert_eq!(approve(&["email-admin"], false, false), Ok(()));
        assert_eq!(
            approve(&["delegated-mailbox-approver"], false, false),
            Err(ApprovalRefusal::PermissionMissing),
            "the role alone is not the permission"
        );
    }

    #[test]
    fn one_may_approve_ones_own_address_unless_the_organisation_requires_the_permission() {
        assert_eq!(approve(&[], true, false), Ok(()));
        assert_eq!(
            approve(&[], true, true),
            Err(ApprovalRefusal::SelfApprovalNeedsPermission)
        );
        assert_eq!(approve(&["mailbox-approve"], true, true), Ok(()));
    }

    #[test]
    fn a_users_mailbox_at_another_address_is_not_their_own() {
        let me = EmailAddress::parse("me@example.com").unwrap();
        let other = EmailAddress::parse("ceo@example.com").unwrap();
        let held = grants(&[]);
        let approver = Approver {
            user_id: "me",
            contact_email: Some(&me),
            grants: &held,
        };
        let target = ApprovalTarget {
            kind: MailboxKind::User,
            user_id: Some("me"),
            email_address: &other,
        };
        assert_eq!(
            may_approve(&approver, &target, &EmailSettings::default()),
            Err(ApprovalRefusal::PermissionMissing)
        );
    }

    #[test]
    fn only_an_admin_grants_the_delegated_approver_role_and_never_to_a_team() {
        let role = vec![PermissionSet::DelegatedMailboxApprover];
        assert_eq!(
            may_grant(&grants(&["user-admin"]), &role, false),
            Err(GrantRefusal::DelegatedApproverNeedsAdmin)
        );
        assert_eq!(may_grant(&grants(&["email-admin"]), &role, false), Ok(()));
        assert_eq!(
            may_grant(&grants(&["email-admin"]), &role, true),
            Err(GrantRefusal::DelegatedApproverNotForTeams)
        );
        assert_eq!(
            may_grant(
                &grants(&["user-admin"]),
                &[PermissionSet::EmailAdmin],
                false
            ),
            Err(GrantRefusal::AdminNeedsAdmin)
        );
        assert_eq!(
            may_grant(&grants(&["user-admin"]), &[PermissionSet::EmailSend], true),
            Ok(())
        );
    }

    #[test]
    fn a_mailbox_is_ready_to_send_only_when_approved_switched_on_and_tested() {
        let settings = EmailSettings::default();
        let ready = MailboxReadiness {
            kind: MailboxKind::User,
            approval: Approval::Approved,
            enabled: true,
            outgoing: SyncMethod::ServerSideSync,
            incoming: SyncMethod::ServerSideSync,
            outgoing_status: TestStatus::Success,
            incoming_status: TestStatus::NotRun,
        };
        let out = Direction::Outgoing;
        assert_eq!(ready_for(Some(&ready), out, &settings), Ok(()));
        assert_eq!(ready_for(None, out, &settings), Err(MissingStep::NoMailbox));
        let pending = MailboxReadiness {
            approval: Approval::Pending,
            ..ready
        };
        assert_eq!(
            ready_for(Some(&pending), out, &settings),
            Err(MissingStep::NotApproved)
        );
        let lenient = EmailSettings {
            process_only_approved_users: false,
            ..settings.clone()
        };
        assert_eq!(ready_for(Some(&pending), out, &lenient), Ok(()));
        assert_eq!(
            ready_for(Some(&ready), Direction::Incoming, &settings),
            Err(MissingStep::NotTested)
        );
        let off = MailboxReadiness {
            outgoing: SyncMethod::None,
            ..ready
        };
        assert_eq!(
            ready_for(Some(&off), out, &settings),
            Err(MissingStep::DirectionOff)
        );
    }

    #[test]
    fn network_trouble_and_unavailable_servers_are_retried_rejected_logins_are_not() {
        assert!(refusal_is_transient(Some(421), "try later"));
        assert!(!refusal_is_transient(Some(535), "5.7.8 bad credentials"));
        assert!(refusal_is_transient(None, "NO [UNAVAILABLE] backend down"));
        assert!(refusal_is_transient(None, "connection refused"));
        assert!(!refusal_is_transient(
            None,
            "NO [AUTHENTICATIONFAILED] Authentication failed."
        ));
        assert!(!refusal_is_transient(
            None,
            "NO [NONEXISTENT] Mailbox doesn't exist"
        ));
    }

    #[test]
    fn test_retries_back_off_from_the_initial_delay_up_to_an_hour() {
        assert_eq!(test_retry_delay_ms(1, 1000), 1000);
        assert_eq!(test_retry_delay_ms(2, 1000), 2000);
        assert_eq!(test_retry_delay_ms(4, 1000), 8000);
        assert_eq!(test_retry_delay_ms(30, 60_000), 3_600_000);
    }

    #[test]
    fn processing_options_are_checked() {
        assert!(ProcessingOptions::default().validate().is_ok());
        let bad_date = ProcessingOptions {
            process_from: Some("2026-13-01".into()),
            ..Default::default()
        };
        assert_eq!(
            bad_date.validate().unwrap_err().field,
            "processing.process_from"
        );
        let no_connections = ProcessingOptions {
            max_connections: 0,
            ..Default::default()
        };
        assert!(no_connections.validate().is_err());
    }
}
