//! The PostgreSQL backend: several nodes on one database.
//!
//! Durable before 202: every connection runs with `synchronous_commit = on`, so a commit returns
//! only once its WAL record is flushed. Group commit comes from the server: each node writes over a
//! pool of connections, and PostgreSQL flushes the WAL of every transaction waiting to commit in
//! one fsync (the WAL writer and `commit_delay`/`commit_siblings` if an operator sets them), so
//! throughput does not fall to one fsync per message.
//!
//! Nodes learn of each other's changes through `LISTEN/NOTIFY`: `mailroom_queued` when mail was
//! queued (idle dispatchers wake at once; polling stays the fallback) and `mailroom_changes` when
//! configuration changed (cached tokens and routing are dropped).

pub(crate) mod batch;
pub(crate) mod hot;
pub mod limits;

use crate::StoreResult;
use crate::cache::Caches;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;

const QUEUED_CHANNEL: &str = "mailroom_queued";

/// How long due mail may wait before new mail of its account stops skipping the queue.
///
/// On one node the rule is exact (new mail never overtakes waiting mail). With several nodes,
/// mail that another node queued a moment ago — because it had no room at that instant, or did not
/// know the account yet — is claimed by a dispatcher within milliseconds of its `NOTIFY`; making
/// every node queue its new mail behind it meanwhile kept the queue from ever emptying under a
/// steady load (each queued group made the next ones queue too), so most mail paid for a claim.
/// Nodes accept mail concurrently, so the order of mail accepted within such a moment on different
/// nodes was never defined. Mail that has waited longer — a retry that came due, mail queued
/// while its account had no room — is never overtaken: by this node's clock, so with nodes whose
/// clocks differ, by up to this allowance plus their difference.
const OVERTAKE_ALLOWANCE_MS: i64 = 500;

/// Mail due at or before this keeps new mail that arrived at `arrived_ms` out of the sending
/// state. Measured from the moment of the insert, not the arrival: new mail may have waited for
/// room in its account's lane meanwhile, while older mail waited in the queue.
fn overtake_cutoff(arrived_ms: i64) -> i64 {
    arrived_ms.max(crate::now_ms()) - OVERTAKE_ALLOWANCE_MS
}
const CHANGES_CHANNEL: &str = "mailroom_changes";

/// The settings under which the planner takes keys through their indexes whatever its statistics
/// say, set for the sessions of [`PgDb::keyed`] (and for single transactions, see
/// [`BY_KEY_ONLY_IN_TRANSACTION`]). A table that
/// grew since it was last analyzed (a new database's first minute under load, say) looks small to
/// the planner, which then hashes all of it — or reads every message that was ever 'sending'
/// through the status index, whose dead entries a bitmap scan never marks — and each batch costs
/// time in proportion to the archive.
const BY_KEY_ONLY: [(&str, &str); 4] = [
    ("enable_seqscan", "off"),
    ("enable_bitmapscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

/// [`BY_KEY_ONLY`] for one transaction on any connection: run first in it.
pub(crate) const BY_KEY_ONLY_IN_TRANSACTION: &str =
    "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true),
            set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)";

/// Whether a database URL names PostgreSQL.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// An open PostgreSQL database.
pub(crate) struct PgDb {
    pub(crate) pool: PgPool,
    /// Signalled when any node queued mail.
    pub(crate) queued: Arc<Notify>,
    /// Signalled when another node changed configuration.
    pub(crate) changed: Arc<Notify>,
    /// A few connections whose planner takes rows by primary key whatever its statistics say
    /// ([`BY_KEY_ONLY`], set for the whole session): the outcome batches and the claimed mail's
    /// content read run on them, each one statement without a transaction around it, so one round
    /// trip instead of four or five. (Claims stay a transaction on the main pool, see `hot::claim`.)
    pub(crate) keyed: PgPool,
    /// Stores new mail in groups.
    pub(crate) inserts: batch::Batcher,
    /// How many connection places (`session_slots`) this process knows exist, per account.
    pub(crate) session_places: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, u32>>,
}

impl PgDb {
    /// Opens both pools: `connections` in all (at least 3), a third of them (at least one) for
    /// the statements that find rows by key only.
    pub(crate) async fn open(url: &str, connections: u32) -> StoreResult<Self> {
        let keyed_connections = (connections / 3).max(1);
        let main_connections = connections.saturating_sub(keyed_connections).max(2);
        // No JIT: mailroom's statements are short, and a plan whose estimate crosses
        // `jit_above_cost` (any plan with a path `BY_KEY_ONLY` turns off is costed that high)
        // spent ~300 ms compiling itself — a batch of outcomes took 300 ms instead of 20.
        let options = PgConnectOptions::from_str(url)?
            .options([("synchronous_commit", "on"), ("jit", "off")])
            .application_name("mailroom");
        let pool = PgPoolOptions::new()
            .max_connections(main_connections)
            .min_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        // Several nodes may start at once: sqlx holds an advisory lock while it migrates.
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let keyed = PgPoolOptions::new()
            .max_connections(keyed_connections)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.options(BY_KEY_ONLY))
            .await?;
        Ok(Self {
            keyed,
            queued: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
            inserts: batch::Batcher::start(pool.clone()),
            session_places: Default::default(),
            pool,
        })
    }

    /// Listens for other nodes' notifications until the store is dropped: configuration changes
    /// clear `caches`, queued mail signals [`PgDb::queued`]. A lost connection is re-established
    /// (and the caches cleared, since changes may have been missed meanwhile).
    pub(crate) async fn listen_for_changes(&self, caches: Weak<Caches>) -> StoreResult<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener
            .listen_all([QUEUED_CHANNEL, CHANGES_CHANNEL])
            .await?;
        let queued = Arc::downgrade(&self.queued);
        let changed = Arc::downgrade(&self.changed);
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if notification.channel() == QUEUED_CHANNEL {
                            match queued.upgrade() {
                                Some(queued) => queued.notify_one(),
                                None => return,
                            }
                        } else {
                            match caches.upgrade() {
                                Some(caches) => caches.forget_all(),
                                None => return,
                            }
                            if let Some(changed) = changed.upgrade() {
                                changed.notify_one();
                            }
                        }
                    }
                    // The connection was lost and is re-established on the next call.
                    Ok(None) => match caches.upgrade() {
                        Some(caches) => caches.forget_all(),
                        None => return,
                    },
                    Err(error) => {
                        if caches.upgrade().is_none() {
                            return;
                        }
                        tracing::warn!(%error, "listening for other nodes' changes failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        Ok(())
    }

    pub(crate) async fn notify_queued(&self) {
        self.notify(QUEUED_CHANNEL).await
    }

    pub(crate) async fn notify_changed(&self) {
        self.notify(CHANGES_CHANNEL).await
    }

    async fn notify(&self, channel: &str) {
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(channel)
            .execute(&self.pool)
            .await
        {
            // Other nodes still see the change when their caches expire or they poll.
            tracing::warn!(%error, channel, "notifying other nodes failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn the_settings_by_key_only_are_the_same_for_a_session_and_for_one_transaction() {
        for (name, value) in super::BY_KEY_ONLY {
            assert!(
                super::BY_KEY_ONLY_IN_TRANSACTION
                    .contains(&format!("set_config('{name}', '{value}', true)")),
                "{name} = {value} missing for one transaction"
            );
        }
        assert_eq!(
            super::BY_KEY_ONLY_IN_TRANSACTION
                .matches("set_config(")
                .count(),
            super::BY_KEY_ONLY.len()
        );
    }

    #[tokio::test]
    async fn a_node_opens_no_more_connections_than_it_is_given() {
        let database = mailroom_testkit::TestDatabase::create().await.unwrap();
        // 7: two for the statements by key, five for the rest.
        let db = super::PgDb::open(&database.url, 7).await.unwrap();
        let mut held = Vec::new();
        for pool in [&db.pool, &db.keyed] {
            let limit = if std::ptr::eq(pool, &db.pool) { 5 } else { 2 };
            for _ in 0..limit {
                held.push(pool.acquire().await.unwrap());
            }
            let one_more = tokio::time::timeout(Duration::from_millis(300), pool.acquire()).await;
            assert!(one_more.is_err(), "a pool opened more than {limit}");
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'mailroom'",
        )
        .fetch_one(&mut *held[0])
        .await
        .unwrap();
        assert_eq!(open, 7);
    }

    /// Migration 0029: every message adds about twenty index entries over these columns; under
    /// the database's libc collation each comparison placing them was a strcoll().
    #[tokio::test]
    async fn the_keys_of_stored_mail_compare_bytewise_and_bodies_compress_with_lz4_where_the_server_has_it()
     {
        let database = mailroom_testkit::TestDatabase::create().await.unwrap();
        let db = super::PgDb::open(&database.url, 3).await.unwrap();
        let not_bytewise: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND data_type = 'text'
               AND (table_name, column_name) IN (('messages', 'id'), ('messages', 'status'),
                 ('messages', 'account_id'), ('messages', 'created_by'), ('messages', 'scenario'),
                 ('messages', 'record_types'), ('messages', 'message_id_header'),
                 ('messages', 'idempotency_key'), ('messages', 'smart_key'),
                 ('message_contents', 'message_id'), ('message_recipients', 'address'),
                 ('message_recipients', 'message_id'), ('related_records', 'message_id'),
                 ('related_records', 'record_type'), ('related_records', 'record_id'),
                 ('record_type_sets', 'types'), ('attempts', 'message_id'),
                 ('message_attachments', 'message_id'), ('message_bounces', 'message_id'))
               AND collation_name IS DISTINCT FROM 'C'",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(not_bytewise, Vec::new());
        let has_lz4 = sqlx::query("CREATE TEMPORARY TABLE lz4_probe (t TEXT COMPRESSION lz4)")
            .execute(&db.pool)
            .await
            .is_ok();
        let methods: Vec<String> = sqlx::query_scalar(
            "SELECT attcompression::text FROM pg_attribute
             WHERE attrelid = 'message_contents'::regclass AND attname IN ('text_body', 'html_body')",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        let expected = if has_lz4 { "l" } else { "" };
        assert_eq!(methods, vec![expected.to_owned(), expected.to_owned()]);
    }
}
