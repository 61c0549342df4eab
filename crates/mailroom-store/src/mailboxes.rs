//! Server profiles, the organisation's email settings, and user and queue mailboxes (MISSION B1–B4).
//!
//! A profile's default flag is the organisation's default profile: one fact, kept in one place
//! (`server_profiles.is_default`). A mailbox's password is sealed for the mailbox and cleared
//! whenever the servers it was given for change (the mailbox's profile, or the profile's endpoints):
//! a stored secret is never presented to a server it was not given for.

use crate::db::{StoreRow, WritePool, on_db};
use crate::{Store, StoreError, StoreResult, now_ms};
use mailroom_core::address::EmailAddress;
use mailroom_core::mailbox::{
    Approval, AuthType, CloudEndpoints, EmailSettings, MailboxFilter, MailboxKind,
    MailboxReadiness, ProcessingOptions, ProfileKind, ServerEndpoint, SyncMethod, TestStatus,
};
use uuid::Uuid;

/// A stored server profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProfile {
    pub id: Uuid,
    pub name: String,
    pub kind: ProfileKind,
    pub incoming: ServerEndpoint,
    pub outgoing: ServerEndpoint,
    pub endpoints: CloudEndpoints,
    pub auth_type: AuthType,
    pub owner_user_id: Option<Uuid>,
    pub is_default: bool,
    pub processing: ProcessingOptions,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A validated server profile definition.
#[derive(Debug, Clone)]
pub struct ServerProfileInput {
    pub name: String,
    pub kind: ProfileKind,
    pub incoming: ServerEndpoint,
    pub outgoing: ServerEndpoint,
    pub endpoints: CloudEndpoints,
    pub auth_type: AuthType,
    pub owner_user_id: Option<Uuid>,
    pub is_default: bool,
    pub processing: ProcessingOptions,
}

/// A stored mailbox. The password is never here: only whether one is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxRecord {
    pub id: Uuid,
    pub kind: MailboxKind,
    pub user_id: Option<Uuid>,
    pub queue_id: Option<Uuid>,
    pub email_address: EmailAddress,
    pub profile_id: Option<Uuid>,
    pub incoming: SyncMethod,
    pub outgoing: SyncMethod,
    pub act: SyncMethod,
    pub username: Option<String>,
    pub has_password: bool,
    /// The app registration whose refresh token the mailbox holds (connected with OAuth 2.0).
    pub oauth_registration_id: Option<Uuid>,
    pub approval: Approval,
    pub incoming_status: TestStatus,
    pub outgoing_status: TestStatus,
    pub act_status: TestStatus,
    pub enabled: bool,
    pub last_test_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub filter: MailboxFilter,
    /// Tries of a transiently failing test so far (0 after a success or a permanent failure).
    pub test_tries: u32,
    /// When a transiently failed test is tried again.
    pub next_test_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl MailboxRecord {
    pub fn readiness(&self) -> MailboxReadiness {
        MailboxReadiness {
            kind: self.kind,
            approval: self.approval,
            enabled: self.enabled,
            outgoing: self.outgoing,
            incoming: self.incoming,
            outgoing_status: self.outgoing_status,
            incoming_status: self.incoming_status,
        }
    }
}

/// A change to one or many mailboxes; `None` keeps the field.
#[derive(Debug, Clone, Default)]
pub struct MailboxChange {
    pub email_address: Option<EmailAddress>,
    /// `Some(None)` removes the profile.
    pub profile_id: Option<Option<Uuid>>,
    pub incoming: Option<SyncMethod>,
    pub outgoing: Option<SyncMethod>,
    pub act: Option<SyncMethod>,
    pub filter: Option<MailboxFilter>,
    /// `Some(None)` removes the username (and the password with it).
    pub username: Option<Option<String>>,
    /// `Some(None)` removes the password.
    pub password: Option<Option<String>>,
}

impl MailboxChange {
    /// Whether the change moves the mailbox to other servers or another identity: the stored
    /// password then no longer applies, and earlier test results say nothing about the new setup.
    fn changes_credential_endpoint(&self, current: &MailboxRecord) -> bool {
        self.profile_id.is_some_and(|p| p != current.profile_id)
            || self
                .username
                .as_ref()
                .is_some_and(|u| *u != current.username)
            || self
                .email_address
                .as_ref()
                .is_some_and(|a| *a != current.email_address)
    }
}

/// What a test did to a mailbox, decided by the engine and applied in one transaction.
#[derive(Debug, Clone)]
pub struct MailboxTestRecord {
    pub incoming_status: TestStatus,
    pub outgoing_status: TestStatus,
    pub act_status: TestStatus,
    pub enabled: bool,
    pub last_error: Option<String>,
    pub test_tries: u32,
    pub next_test_at_ms: Option<i64>,
    /// The address was approved implicitly during the test (a user testing their own mailbox).
    pub approve: bool,
    /// The mailbox was disabled: this alert goes to its owners and the profile's owner, and a
    /// `mailbox.disabled` event is written.
    pub disabled_because: Option<String>,
}

pub(crate) const MAILBOX_COLUMNS: &str = "id, kind, user_id, queue_id, email_address, profile_id, incoming, outgoing, act, username, \
     password_encrypted IS NOT NULL AS has_password, CASE WHEN refresh_token_sealed IS NULL THEN NULL ELSE oauth_registration_id END AS oauth_registration_id, approval, incoming_status, outgoing_status, act_status, enabled, last_test_at, \
     last_error, filter, test_tries, next_test_at, created_at, updated_at";

const PROFILE_COLUMNS: &str = "id, name, kind, incoming_json, outgoing_json, endpoints_json, auth_type, owner_user_id, is_default, \
     processing_json, created_at, updated_at";

fn parse_uuid(raw: &str, what: &str) -> StoreResult<Uuid> {
    raw.parse()
        .map_err(|_| StoreError::Conflict(format!("stored {what} {raw:?} is not a UUID")))
}

fn optional_uuid(raw: Option<String>, what: &str) -> StoreResult<Option<Uuid>> {
    raw.map(|r| parse_uuid(&r, what)).transpose()
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(raw)
        .map_err(|e| StoreError::Conflict(format!("stored {what} cannot be read: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("settings serialize")
}

pub(crate) fn mailbox_from_row(row: &impl StoreRow) -> StoreResult<MailboxRecord> {
    Ok(MailboxRecord {
        id: parse_uuid(&row.get::<String, _>("id"), "mailbox id")?,
        kind: row.get::<String, _>("kind").parse()?,
        user_id: optional_uuid(row.get("user_id"), "user id")?,
        queue_id: optional_uuid(row.get("queue_id"), "queue id")?,
        email_address: EmailAddress::parse(&row.get::<String, _>("email_address"))?,
        profile_id: optional_uuid(row.get("profile_id"), "profile id")?,
        incoming: row.get::<String, _>("incoming").parse()?,
        outgoing: row.get::<String, _>("outgoing").parse()?,
        act: row.get::<String, _>("act").parse()?,
        username: row.get("username"),
        has_password: row.get("has_password"),
        oauth_registration_id: optional_uuid(row.get("oauth_registration_id"), "registration id")?,
        approval: row.get::<String, _>("approval").parse()?,
        incoming_status: row.get::<String, _>("incoming_status").parse()?,
        outgoing_status: row.get::<String, _>("outgoing_status").parse()?,
        act_status: row.get::<String, _>("act_status").parse()?,
        enabled: row.get("enabled"),
        last_test_at_ms: row.get("last_test_at"),
        last_error: row.get("last_error"),
        filter: row.get::<String, _>("filter").parse()?,
        test_tries: row.get::<i64, _>("test_tries").max(0) as u32,
        next_test_at_ms: row.get("next_test_at"),
        created_at_ms: row.get("created_at"),
        updated_at_ms: row.get("updated_at"),
    })
}

fn profile_from_row(row: &impl StoreRow) -> StoreResult<ServerProfile> {
    Ok(ServerProfile {
        id: parse_uuid(&row.get::<String, _>("id"), "profile id")?,
        name: row.get("name"),
        kind: row.get::<String, _>("kind").parse()?,
        incoming: from_json(&row.get::<String, _>("incoming_json"), "incoming server")?,
        outgoing: from_json(&row.get::<String, _>("outgoing_json"), "outgoing server")?,
        endpoints: from_json(&row.get::<String, _>("endpoints_json"), "endpoints")?,
        auth_type: row.get::<String, _>("auth_type").parse()?,
        owner_user_id: optional_uuid(row.get("owner_user_id"), "owner id")?,
        is_default: row.get("is_default"),
        processing: from_json(
            &row.get::<String, _>("processing_json"),
            "processing options",
        )?,
        created_at_ms: row.get("created_at"),
        updated_at_ms: row.get("updated_at"),
    })
}

/// The name of the email settings' row in `settings`.
const EMAIL_SETTINGS: &str = "email";

/// The parts of the email settings stored as a document (the default profile is the profiles' flag).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredEmailSettings {
    incoming: SyncMethod,
    outgoing: SyncMethod,
    act: SyncMethod,
    process_only_approved_users: bool,
    process_only_approved_queues: bool,
    require_privilege_to_self_approve: bool,
}

/// Inserts a mailbox with the organisation's defaults, inside a write transaction.
macro_rules! insert_mailbox {
    ($tx:expr, $store:expr, $kind:expr, $user_id:expr, $queue_id:expr, $address:expr) => {{
        let settings = $store.email_settings().await?;
        let default_profile: Option<String> = settings.default_profile_id.clone();
        let id = Uuid::new_v4();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO mailboxes (id, kind, user_id, queue_id, email_address, profile_id, incoming, outgoing, act,
               approval, incoming_status, outgoing_status, act_status, enabled, filter, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'empty', 'not-run', 'not-run', 'not-run', FALSE, $10, $11, $11)",
        )
        .bind(id.to_string())
        .bind($kind.as_str())
        .bind($user_id.map(|u: Uuid| u.to_string()))
        .bind($queue_id.map(|q: Uuid| q.to_string()))
        .bind($address.as_str())
        .bind(default_profile)
        .bind(settings.incoming.as_str())
        .bind(settings.outgoing.as_str())
        .bind(settings.act.as_str())
        .bind(if $kind == MailboxKind::Queue {
            mailroom_core::mailbox::MailboxFilter::All.as_str()
        } else {
            mailroom_core::mailbox::MailboxFilter::ResponsesToTracked.as_str()
        })
        .bind(now)
        .execute(&mut *$tx)
        .await?;
        id
    }};
}
pub(crate) use insert_mailbox;

impl Store {
    // ----- server profiles -----

    pub async fn create_server_profile(
        &self,
        input: &ServerProfileInput,
    ) -> StoreResult<ServerProfile> {
        on_db!(self, |writer, reader| {
            let id = Uuid::new_v4();
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            if input.is_default {
                sqlx::query("UPDATE server_profiles SET is_default = FALSE WHERE is_default")
                    .execute(&mut *tx)
                    .await?;
            }
            let inserted = sqlx::query(
                "INSERT INTO server_profiles (id, name, kind, incoming_json, outgoing_json, endpoints_json, auth_type,
                   owner_user_id, is_default, processing_json, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) ON CONFLICT (name) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(&input.name)
            .bind(input.kind.as_str())
            .bind(to_json(&input.incoming))
            .bind(to_json(&input.outgoing))
            .bind(to_json(&input.endpoints))
            .bind(input.auth_type.as_str())
            .bind(input.owner_user_id.map(|u| u.to_string()))
            .bind(input.is_default)
            .bind(to_json(&input.processing))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(StoreError::Refused {
                    code: "profile_name_taken",
                    message: format!("a server profile named {:?} exists already", input.name),
                });
            }
            tx.commit().await?;
            self.server_profile(id).await
        })
    }

    /// Replaces a profile's settings. When its servers change, the passwords of its mailboxes are
    /// cleared (they were given for the old servers) and their tests must run again.
    pub async fn update_server_profile(
        &self,
        id: Uuid,
        input: &ServerProfileInput,
    ) -> StoreResult<ServerProfile> {
        let before = self.server_profile(id).await?;
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            if input.is_default && !before.is_default {
                sqlx::query("UPDATE server_profiles SET is_default = FALSE WHERE is_default")
                    .execute(&mut *tx)
                    .await?;
            }
            let taken: Option<String> =
                sqlx::query_scalar("SELECT id FROM server_profiles WHERE name = $1 AND id <> $2")
                    .bind(&input.name)
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if taken.is_some() {
                return Err(StoreError::Refused {
                    code: "profile_name_taken",
                    message: format!("a server profile named {:?} exists already", input.name),
                });
            }
            sqlx::query(
                "UPDATE server_profiles SET name = $2, kind = $3, incoming_json = $4, outgoing_json = $5, endpoints_json = $6,
                   auth_type = $7, owner_user_id = $8, is_default = $9, processing_json = $10, updated_at = $11 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(&input.name)
            .bind(input.kind.as_str())
            .bind(to_json(&input.incoming))
            .bind(to_json(&input.outgoing))
            .bind(to_json(&input.endpoints))
            .bind(input.auth_type.as_str())
            .bind(input.owner_user_id.map(|u| u.to_string()))
            .bind(input.is_default)
            .bind(to_json(&input.processing))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let servers_changed = before.incoming != input.incoming
                || before.outgoing != input.outgoing
                || before.endpoints != input.endpoints
                || before.kind != input.kind
                || before.auth_type != input.auth_type;
            if servers_changed {
                sqlx::query(
                    "UPDATE mailboxes SET password_encrypted = NULL, enabled = FALSE, incoming_status = 'not-run',
                       outgoing_status = 'not-run', act_status = 'not-run', test_tries = 0, next_test_at = NULL,
                       last_error = $2, updated_at = $3 WHERE profile_id = $1",
                )
                .bind(id.to_string())
                .bind("the server profile's servers changed: give the mailbox's password again, then test & enable it")
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            self.server_profile(id).await
        })
    }

    pub async fn server_profile(&self, id: Uuid) -> StoreResult<ServerProfile> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {PROFILE_COLUMNS} FROM server_profiles WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?;
            row.map(|r| profile_from_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("server profile {id}")))
        })
    }

    pub async fn server_profiles(&self) -> StoreResult<Vec<ServerProfile>> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {PROFILE_COLUMNS} FROM server_profiles ORDER BY name");
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(reader)
                .await?;
            rows.iter().map(profile_from_row).collect()
        })
    }

    /// Deletes a profile no mailbox uses; refused with `profile_in_use` naming the mailboxes.
    pub async fn delete_server_profile(&self, id: Uuid) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let users: Vec<String> = sqlx::query_scalar(
                "SELECT email_address FROM mailboxes WHERE profile_id = $1 ORDER BY email_address LIMIT 21",
            )
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?;
            if !users.is_empty() {
                let more = if users.len() > 20 { ", …" } else { "" };
                return Err(StoreError::Refused {
                    code: "profile_in_use",
                    message: format!(
                        "server profile {id} is used by mailboxes {}{more}; move them to another profile first",
                        users[..users.len().min(20)].join(", ")
                    ),
                });
            }
            let deleted = sqlx::query("DELETE FROM server_profiles WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            if deleted.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("server profile {id}")));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    // ----- organisation settings -----

    pub async fn email_settings(&self) -> StoreResult<EmailSettings> {
        on_db!(self, |writer, reader| {
            let stored: Option<String> =
                sqlx::query_scalar("SELECT value_json FROM settings WHERE name = $1")
                    .bind(EMAIL_SETTINGS)
                    .fetch_optional(reader)
                    .await?;
            let default_profile: Option<String> =
                sqlx::query_scalar("SELECT id FROM server_profiles WHERE is_default LIMIT 1")
                    .fetch_optional(reader)
                    .await?;
            let mut settings = match stored {
                Some(raw) => {
                    let s: StoredEmailSettings = from_json(&raw, "email settings")?;
                    EmailSettings {
                        default_profile_id: None,
                        incoming: s.incoming,
                        outgoing: s.outgoing,
                        act: s.act,
                        process_only_approved_users: s.process_only_approved_users,
                        process_only_approved_queues: s.process_only_approved_queues,
                        require_privilege_to_self_approve: s.require_privilege_to_self_approve,
                    }
                }
                None => EmailSettings::default(),
            };
            settings.default_profile_id = default_profile;
            Ok(settings)
        })
    }

    /// Replaces the email settings; the default profile becomes the profiles' default flag.
    pub async fn set_email_settings(&self, settings: &EmailSettings) -> StoreResult<EmailSettings> {
        on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            if let Some(profile) = &settings.default_profile_id {
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT id FROM server_profiles WHERE id = $1")
                        .bind(profile)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    return Err(StoreError::NotFound(format!("server profile {profile}")));
                }
            }
            sqlx::query("UPDATE server_profiles SET is_default = (id = $1)")
                .bind(settings.default_profile_id.clone().unwrap_or_default())
                .execute(&mut *tx)
                .await?;
            let stored = StoredEmailSettings {
                incoming: settings.incoming,
                outgoing: settings.outgoing,
                act: settings.act,
                process_only_approved_users: settings.process_only_approved_users,
                process_only_approved_queues: settings.process_only_approved_queues,
                require_privilege_to_self_approve: settings.require_privilege_to_self_approve,
            };
            sqlx::query(
                "INSERT INTO settings (name, value_json, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET value_json = excluded.value_json, updated_at = excluded.updated_at",
            )
            .bind(EMAIL_SETTINGS)
            .bind(to_json(&stored))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            self.email_settings().await
        })
    }

    // ----- mailboxes -----

    /// Gives a user a mailbox with the organisation's defaults at their contact email, unless they
    /// have one or no contact email. Returns the mailbox when one was made.
    pub async fn ensure_user_mailbox(
        &self,
        user_id: Uuid,
        address: &EmailAddress,
    ) -> StoreResult<Option<MailboxRecord>> {
        if self.mailbox_of_user(user_id).await?.is_some() {
            return Ok(None);
        }
        let id = on_db!(self, |writer, reader| {
            let mut tx = writer.begin_write().await?;
            let id = insert_mailbox!(
                tx,
                self,
                MailboxKind::User,
                Some(user_id),
                None::<Uuid>,
                address
            );
            tx.commit().await?;
            id
        });
        Ok(Some(self.mailbox(id).await?))
    }

    pub async fn mailbox(&self, id: Uuid) -> StoreResult<MailboxRecord> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.to_string())
                .fetch_optional(reader)
                .await?;
            row.map(|r| mailbox_from_row(&r))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound(format!("mailbox {id}")))
        })
    }

    pub async fn mailbox_of_user(&self, user_id: Uuid) -> StoreResult<Option<MailboxRecord>> {
        on_db!(self, |writer, reader| {
            let sql = format!("SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE user_id = $1");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(user_id.to_string())
                .fetch_optional(reader)
                .await?;
            row.map(|r| mailbox_from_row(&r)).transpose()
        })
    }

    /// Mailboxes, by address; only those of `profile` when given; only `user`'s own when given.
    pub async fn mailboxes(
        &self,
        profile: Option<Uuid>,
        user: Option<Uuid>,
    ) -> StoreResult<Vec<MailboxRecord>> {
        on_db!(self, |writer, reader| {
            let sql = format!(
                "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE ($1 = '' OR profile_id = $1) AND ($2 = '' OR user_id = $2)
                 ORDER BY email_address, id"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(profile.map(|p| p.to_string()).unwrap_or_default())
                .bind(user.map(|u| u.to_string()).unwrap_or_default())
                .fetch_all(reader)
                .await?;
            rows.iter().map(mailbox_from_row).collect()
        })
    }

    /// Applies one change to every mailbox in `ids`, in one transaction: all of them or none.
    /// A change of servers or identity clears the stored password (unless the change gives one)
    /// and the test results, and disables the mailbox until it is tested again.
    pub async fn update_mailboxes(
        &self,
        ids: &[Uuid],
        change: &MailboxChange,
    ) -> StoreResult<Vec<MailboxRecord>> {
        let mut current = Vec::with_capacity(ids.len());
        for id in ids {
            current.push(self.mailbox(*id).await?);
        }
        if let Some(Some(profile)) = change.profile_id {
            self.server_profile(profile).await?;
        }
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            for mailbox in &current {
                let id = mailbox.id.to_string();
                let moved = change.changes_credential_endpoint(mailbox);
                sqlx::query(
                    "UPDATE mailboxes SET email_address = $2, profile_id = $3, incoming = $4, outgoing = $5, act = $6,
                       filter = $7, username = $8, updated_at = $9 WHERE id = $1",
                )
                .bind(&id)
                .bind(
                    change
                        .email_address
                        .as_ref()
                        .unwrap_or(&mailbox.email_address)
                        .as_str(),
                )
                .bind(
                    change
                        .profile_id
                        .unwrap_or(mailbox.profile_id)
                        .map(|p| p.to_string()),
                )
                .bind(change.incoming.unwrap_or(mailbox.incoming).as_str())
                .bind(change.outgoing.unwrap_or(mailbox.outgoing).as_str())
                .bind(change.act.unwrap_or(mailbox.act).as_str())
                .bind(change.filter.unwrap_or(mailbox.filter).as_str())
                .bind(change.username.clone().unwrap_or(mailbox.username.clone()))
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if moved {
                    sqlx::query(
                        "UPDATE mailboxes SET password_encrypted = NULL, refresh_token_sealed = NULL, oauth_registration_id = NULL,
                           enabled = FALSE, incoming_status = 'not-run',
                           outgoing_status = 'not-run', act_status = 'not-run', test_tries = 0, next_test_at = NULL
                         WHERE id = $1",
                    )
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?;
                }
                if change
                    .email_address
                    .as_ref()
                    .is_some_and(|a| *a != mailbox.email_address)
                {
                    // A new address needs approving again.
                    sqlx::query("UPDATE mailboxes SET approval = 'empty' WHERE id = $1")
                        .bind(&id)
                        .execute(&mut *tx)
                        .await?;
                }
                let sealed = match &change.password {
                    Some(Some(password)) => Some(Some(self.secrets.seal(&id, password))),
                    Some(None) => Some(None),
                    None => None,
                };
                let sealed = match (sealed, &change.username) {
                    // Without a username there is nothing to log in as.
                    (_, Some(None)) => Some(None),
                    (sealed, _) => sealed,
                };
                if let Some(sealed) = sealed {
                    sqlx::query(
                        "UPDATE mailboxes SET password_encrypted = $2, enabled = FALSE, incoming_status = 'not-run',
                           outgoing_status = 'not-run', act_status = 'not-run', test_tries = 0, next_test_at = NULL
                         WHERE id = $1",
                    )
                    .bind(&id)
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        let mut updated = Vec::with_capacity(ids.len());
        for id in ids {
            updated.push(self.mailbox(*id).await?);
        }
        Ok(updated)
    }

    /// The decrypted password of a mailbox, for its connections only. Never logged, never returned.
    pub async fn mailbox_password(&self, id: Uuid) -> StoreResult<Option<String>> {
        on_db!(self, |writer, reader| {
            let sealed: Option<String> =
                sqlx::query_scalar("SELECT password_encrypted FROM mailboxes WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(reader)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("mailbox {id}")))?;
            sealed
                .map(|s| self.secrets.open(&id.to_string(), &s))
                .transpose()
                .map_err(Into::into)
        })
    }

    /// Sets a mailbox's approval (approve, reject, or back to pending).
    pub async fn set_mailbox_approval(
        &self,
        id: Uuid,
        approval: Approval,
    ) -> StoreResult<MailboxRecord> {
        on_db!(self, |writer, reader| {
            let result =
                sqlx::query("UPDATE mailboxes SET approval = $2, updated_at = $3 WHERE id = $1")
                    .bind(id.to_string())
                    .bind(approval.as_str())
                    .bind(now_ms())
                    .execute(writer)
                    .await?;
            if result.rows_affected() == 0 {
                return Err(StoreError::NotFound(format!("mailbox {id}")));
            }
            self.mailbox(id).await
        })
    }

    /// Applies a test's outcome; a disabling one alerts the mailbox's owners and the profile's
    /// owner and writes a `mailbox.disabled` event, in the same transaction.
    pub async fn record_mailbox_test(
        &self,
        id: Uuid,
        record: &MailboxTestRecord,
    ) -> StoreResult<MailboxRecord> {
        let mailbox = self.mailbox(id).await?;
        let profile_owner = match mailbox.profile_id {
            Some(profile) => self
                .server_profile(profile)
                .await
                .ok()
                .and_then(|p| p.owner_user_id),
            None => None,
        };
        on_db!(self, |writer, reader| {
            let now = now_ms();
            let mut tx = writer.begin_write().await?;
            sqlx::query(
                "UPDATE mailboxes SET incoming_status = $2, outgoing_status = $3, act_status = $4, enabled = $5, last_error = $6,
                   test_tries = $7, next_test_at = $8, last_test_at = $9, updated_at = $9,
                   approval = CASE WHEN $10 THEN 'approved' ELSE approval END
                 WHERE id = $1",
            )
            .bind(id.to_string())
            .bind(record.incoming_status.as_str())
            .bind(record.outgoing_status.as_str())
            .bind(record.act_status.as_str())
            .bind(record.enabled)
            .bind(&record.last_error)
            .bind(i64::from(record.test_tries))
            .bind(record.next_test_at_ms)
            .bind(now)
            .bind(record.approve)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO events (kind, subject_id, payload_json, created_at) VALUES ('mailbox.test_completed', $1, $2, $3)",
            )
            .bind(id.to_string())
            .bind(
                serde_json::json!({"mailbox_id": id, "email_address": mailbox.email_address.as_str(),
                    "incoming_status": record.incoming_status.as_str(), "outgoing_status": record.outgoing_status.as_str(),
                    "enabled": record.enabled, "error": record.last_error})
                .to_string(),
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if let Some(reason) = &record.disabled_because {
                let mut recipients: Vec<String> = match (mailbox.user_id, mailbox.queue_id) {
                    (Some(user), _) => vec![user.to_string()],
                    (None, Some(queue)) => {
                        sqlx::query_scalar("SELECT user_id FROM queue_members WHERE queue_id = $1")
                            .bind(queue.to_string())
                            .fetch_all(&mut *tx)
                            .await?
                    }
                    (None, None) => Vec::new(),
                };
                if let Some(owner) = profile_owner {
                    recipients.push(owner.to_string());
                }
                recipients.sort();
                recipients.dedup();
                let message = format!("Mailbox {} was disabled: {reason}", mailbox.email_address);
                for user in &recipients {
                    sqlx::query(
                        "INSERT INTO alerts (id, user_id, mailbox_id, kind, message, created_at) VALUES ($1, $2, $3, 'mailbox.disabled', $4, $5)",
                    )
                    .bind(Uuid::now_v7().to_string())
                    .bind(user)
                    .bind(id.to_string())
                    .bind(&message)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO events (kind, subject_id, payload_json, created_at) VALUES ('mailbox.disabled', $1, $2, $3)",
                )
                .bind(id.to_string())
                .bind(
                    serde_json::json!({"mailbox_id": id, "email_address": mailbox.email_address.as_str(), "reason": reason})
                        .to_string(),
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<(), StoreError>(())
        })?;
        self.mailbox(id).await
    }

    /// Takes mailboxes whose transiently failed test is due again, and holds each for `hold_ms`
    /// (another node takes it again only if this one does not record an outcome in that time).
    pub async fn take_due_mailbox_retests(
        &self,
        now: i64,
        hold_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<Uuid>> {
        on_db!(self, |writer, reader| {
            let ids: Vec<String> = sqlx::query_scalar(
                "UPDATE mailboxes SET next_test_at = $2 WHERE id IN (
                   SELECT id FROM mailboxes WHERE next_test_at IS NOT NULL AND next_test_at <= $1 ORDER BY next_test_at LIMIT $3)
                 AND next_test_at <= $1
                 RETURNING id",
            )
            .bind(now)
            .bind(now + hold_ms)
            .bind(i64::from(limit))
            .fetch_all(writer)
            .await?;
            ids.iter().map(|id| parse_uuid(id, "mailbox id")).collect()
        })
    }

    /// Events of one kind, oldest first (the hook point webhooks will read).
    pub async fn events(
        &self,
        kind: &str,
        after_id: i64,
    ) -> StoreResult<Vec<(i64, String, serde_json::Value)>> {
        on_db!(self, |writer, reader| {
            let rows = sqlx::query(
                "SELECT id, subject_id, payload_json FROM events WHERE kind = $1 AND id > $2 ORDER BY id LIMIT 500",
            )
            .bind(kind)
            .bind(after_id)
            .fetch_all(reader)
            .await?;
            Ok(rows
                .iter()
                .map(|row| {
                    (
                        row.get::<i64, _>("id"),
                        row.get::<String, _>("subject_id"),
                        serde_json::from_str(&row.get::<String, _>("payload_json"))
                            .unwrap_or(serde_json::Value::Null),
                    )
                })
                .collect())
        })
    }
}
