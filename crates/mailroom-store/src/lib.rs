//! The mailroom Store: accounts, scenarios, the outbox with every attempt, the sent archive, API
//! tokens and users — on SQLite (one node, zero setup; `sqlite/`) or PostgreSQL (several nodes;
//! `postgres/`). Every operation outside those two folders is written once for both (see `db.rs`).

mod accounts;
mod app_registrations;
mod attachments;
mod blobs;
mod bounces;
mod cache;
mod copy;
mod db;
mod dkim;
mod graph_sync;
mod inbound;
mod jobs;
mod listing;
mod mail_client_app;
mod mailboxes;
mod messages;
mod nodes;
mod oauth;
mod organisation;
pub mod postgres;
mod profiles;
mod retention;
mod scenarios;
pub mod secret;
mod sqlite;
mod stats;
pub mod storage;
mod suppressions;
mod templates;
mod tokens;
mod unsubscribes;
mod users;
mod webhooks;

pub use accounts::{Account, AccountInput, PasswordChange};
pub use app_registrations::{AppRegistration, SecretChange};
pub use attachments::{Attachment, ScenarioAttachment};
pub use blobs::{BlobError, BlobStore, BlobWriter, HashedBytes};
pub use bounces::BounceRecord;
pub use graph_sync::GRAPH_UIDVALIDITY;
pub use inbound::{
    Contact, FolderState, InboundDetail, InboundFilter, InboundMessage, InboundOutcome, NewInbound,
    StoredPart,
};
pub use jobs::{Alert, Job};
pub use mail_client_app::{AppUser, ParticipantRecord};
pub use mailboxes::{
    MailboxChange, MailboxRecord, MailboxTestRecord, ServerProfile, ServerProfileInput,
};
pub use messages::{
    AttemptRecord, ClaimedMessage, InsertClaim, InsertOutcome, MessageFilter, MessagePage,
    NewMessage, Outcome, RecoveredLease, StoredAttempt, StoredMessage, Visibility,
};
pub use nodes::NodeInfo;
pub use oauth::{OAuthState, OAuthTarget};
pub use organisation::{Queue, Team};
pub use profiles::SendingProfile;
pub use retention::RetentionBatch;
pub use scenarios::ScenarioRow;
pub use secret::SecretBox;
pub use stats::{AccountFailures, HourOutcomes, OutboxCounts};
pub use suppressions::Suppression;
pub use templates::TemplateRecord;
pub use tokens::ApiToken;
pub use unsubscribes::{Unsubscribe, UnsubscribeToken};
pub use users::{AuditEntry, User, UserInput};
pub use webhooks::{DeliveryAttempt, DueDelivery, LoggedAttempt, WebhookChange, WebhookEndpoint};

pub use copy::CopiedTable;
pub use db::Backend;
pub use dkim::{DkimKey, DkimSigners, SigningKey};
pub use listing::{EXACT_TOTAL_UP_TO, SUBJECT_SEARCH_WINDOW};

use db::on_db;
use mailroom_core::ValidationError;
use std::path::Path;
use std::sync::Arc;

/// Errors of the store, each mapped by the API to a status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A change refused by a rule of the store, with a stable code (e.g. `last_admin`).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Secret(#[from] secret::SecretError),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("database error: {0}")]
    Write(rusqlite::Error),
    /// The disk under the data folder is full: nothing was written; try again once space is freed.
    #[error("the disk is full: {0}")]
    Full(String),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("the store is shutting down")]
    Closed,
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if storage::sqlx_is_full(&error) {
            let reason = error.to_string();
            storage::note_storage_full(&reason);
            StoreError::Full(reason)
        } else {
            StoreError::Database(error)
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        if storage::rusqlite_is_full(&error) {
            let reason = error.to_string();
            storage::note_storage_full(&reason);
            StoreError::Full(reason)
        } else {
            StoreError::Write(error)
        }
    }
}

impl StoreError {
    /// Whether the disk was full (already logged by the storage alarm; callers need not log it).
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::Full(_))
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<db::Db>,
    secrets: SecretBox,
    caches: Arc<cache::Caches>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.backend().as_str())
    }
}

/// How many connections a node holds to PostgreSQL at most, unless told otherwise
/// (`database_connections`).
pub const DEFAULT_DATABASE_CONNECTIONS: u32 = 24;

impl Store {
    /// Opens the store at `url` — `postgres://…` (or `postgresql://…`) for PostgreSQL, otherwise
    /// SQLite (`sqlite://path` or a plain path, created if needed) — runs the backend's migrations
    /// and seeds the built-in scenarios and templates.
    pub async fn open(url: &str, secrets: SecretBox) -> StoreResult<Self> {
        Self::open_with(url, secrets, DEFAULT_DATABASE_CONNECTIONS).await
    }

    /// [`Store::open`] with at most `connections` connections open to the database at once
    /// (PostgreSQL; SQLite has its own fixed set). Several nodes on one database share its
    /// `max_connections`: each node holds up to this many.
    pub async fn open_with(url: &str, secrets: SecretBox, connections: u32) -> StoreResult<Self> {
        let db = if postgres::is_postgres_url(url) {
            db::Db::Postgres(postgres::PgDb::open(url, connections).await?)
        } else {
            db::Db::Sqlite(sqlite::SqliteDb::open(url).await?)
        };
        let store = Self {
            db: Arc::new(db),
            secrets,
            caches: Default::default(),
        };
        if let db::Db::Postgres(pg) = &*store.db {
            pg.listen_for_changes(Arc::downgrade(&store.caches)).await?;
        }
        store.seed_built_in_scenarios().await?;
        store.seed_built_in_templates().await?;
        Ok(store)
    }

    /// The backend this store runs on.
    pub fn backend(&self) -> Backend {
        match &*self.db {
            db::Db::Sqlite(_) => Backend::Sqlite,
            db::Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> StoreResult<()> {
        on_db!(self, |writer, reader| {
            sqlx::query("SELECT 1").execute(reader).await?;
        });
        Ok(())
    }

    /// Tells the other writers that mail may have been queued behind their back (after the
    /// commit that queued it): on SQLite the store writer, on PostgreSQL every node.
    pub(crate) async fn mail_queued_elsewhere(&self) {
        match &*self.db {
            db::Db::Sqlite(db) => db.mail_queued_elsewhere(),
            db::Db::Postgres(db) => db.notify_queued().await,
        }
    }

    /// Signalled when another node queued mail (PostgreSQL only: on SQLite this process is the
    /// only one that queues), so that an idle dispatcher claims it at once.
    pub fn mail_queued_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        match &*self.db {
            db::Db::Sqlite(_) => None,
            db::Db::Postgres(db) => Some(db.queued.clone()),
        }
    }

    /// Signalled when another node changed configuration (PostgreSQL only), so that the
    /// dispatcher reloads accounts at once.
    pub fn config_changed_signal(&self) -> Option<Arc<tokio::sync::Notify>> {
        match &*self.db {
            db::Db::Sqlite(_) => None,
            db::Db::Postgres(db) => Some(db.changed.clone()),
        }
    }

    /// Reserves the time at which an attempt on a rate-limited account (`limit` starts per
    /// `window_ms`, for every node together) may start: now, or the earliest time the window has
    /// room. On SQLite this process is the only node and its own window is exact: always now.
    pub async fn take_start_slot(
        &self,
        account_id: uuid::Uuid,
        node_id: &str,
        limit: u32,
        window_ms: i64,
    ) -> StoreResult<i64> {
        match &*self.db {
            db::Db::Sqlite(_) => Ok(now_ms()),
            db::Db::Postgres(db) => {
                postgres::limits::take_start_slot(&db.pool, account_id, node_id, limit, window_ms)
                    .await
            }
        }
    }

    /// Takes a place for one open connection of an account among every node (see
    /// `postgres/limits.rs`); `None` while all `limit` are held. SQLite has one node, which keeps
    /// its own count: always `Some(0)`.
    pub async fn take_session_slot(
        &self,
        account_id: uuid::Uuid,
        node_id: &str,
        limit: u32,
        lease_until: i64,
        node_timeout_ms: i64,
    ) -> StoreResult<Option<i64>> {
        match &*self.db {
            db::Db::Sqlite(_) => Ok(Some(0)),
            db::Db::Postgres(db) => {
                postgres::limits::take_session_slot(
                    db,
                    account_id,
                    node_id,
                    limit,
                    now_ms(),
                    lease_until,
                    node_timeout_ms,
                )
                .await
            }
        }
    }

    /// Gives back a place taken with [`Store::take_session_slot`].
    pub async fn release_session_slot(
        &self,
        account_id: uuid::Uuid,
        slot: i64,
        node_id: &str,
    ) -> StoreResult<()> {
        match &*self.db {
            db::Db::Sqlite(_) => Ok(()),
            db::Db::Postgres(db) => {
                postgres::limits::release_session_slot(&db.pool, account_id, slot, node_id).await
            }
        }
    }

    /// Extends the leases of the places `node_id` holds (as it heartbeats).
    pub async fn renew_session_slots(&self, node_id: &str, lease_until: i64) -> StoreResult<()> {
        match &*self.db {
            db::Db::Sqlite(_) => Ok(()),
            db::Db::Postgres(db) => {
                postgres::limits::renew_session_slots(&db.pool, node_id, lease_until).await
            }
        }
    }

    /// Whether the store is shared by several nodes (account limits are then kept in the
    /// database).
    pub fn is_shared(&self) -> bool {
        matches!(&*self.db, db::Db::Postgres(_))
    }

    /// Accounts or routing changed: this node's copy is dropped now, every other node's when
    /// notified (PostgreSQL).
    pub(crate) async fn routing_changed(&self) {
        self.caches.forget_routing();
        self.notify_other_nodes().await;
    }

    /// Tokens or users changed: as [`Store::routing_changed`], for the token cache.
    pub(crate) async fn tokens_changed(&self) {
        self.caches.forget_tokens();
        self.notify_other_nodes().await;
    }

    /// Tells every other node that configuration changed (tokens, users, accounts, routing), so
    /// that they drop their cached copies now rather than when the copies expire.
    async fn notify_other_nodes(&self) {
        if let db::Db::Postgres(db) = &*self.db {
            db.notify_changed().await;
        }
    }
}

/// Milliseconds since the Unix epoch, the unit of every time in the store.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Writes a file readable only by its owner (mode 0600), atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
}
