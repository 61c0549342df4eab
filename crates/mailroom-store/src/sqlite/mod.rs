//! The SQLite backend (WAL mode, `synchronous = FULL`): the zero-setup default for one node.
//!
//! Hot-path writes (message inserts, claims, attempt outcomes) go to one writer thread with its own
//! connection: it folds every write waiting into one transaction — one commit, one fsync — and answers
//! each caller only after that commit, so concurrent API requests share a commit. Other writes use one
//! sqlx connection whose transactions begin `IMMEDIATE`, so the two wait for each other instead of
//! failing. Reads use a separate pool of connections.

pub(crate) mod writer;

use crate::{StoreError, StoreResult, storage};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// An open SQLite database.
pub(crate) struct SqliteDb {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
    writes: mpsc::Sender<writer::WriteRequest>,
    /// Advanced after mail is queued outside the store writer, which then forgets which accounts
    /// it knew to have nothing waiting (see [`crate::Store::claim_due`]).
    queued_elsewhere: Arc<AtomicU64>,
}

impl SqliteDb {
    /// Opens (creating if needed) the SQLite database at `url` (`sqlite://path` or a plain path),
    /// runs migrations and starts the writer.
    pub(crate) async fn open(url: &str) -> StoreResult<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_owned()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30))
            // Statement journals of the grouped writes stay in memory instead of spilling to a
            // temporary file (a thousand small writes a second under load).
            .pragma("temp_store", "memory")
            // Taken when the database file is created (an existing database keeps its own). A
            // message's content row (~2.3 KiB for a 2 KiB body) fits only once in a 4 KiB page and
            // three times in an 8 KiB one: the file grows by a third less per message.
            .page_size(8192);
        // The writer never checkpoints (copying the WAL back into the database file) as part of a
        // commit: a background task does it, so that this work stays off the single write path.
        // Migrations run on a connection of their own, closed before the writer opens: a migration
        // that edits a table's definition in place (0018) leaves its connection with the old one.
        {
            let migrating = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            sqlx::migrate!("./migrations/sqlite")
                .run(&migrating)
                .await?;
            migrating.close().await;
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A BEGIN or COMMIT that failed (a full disk) can leave the connection inside a
            // transaction, and every later write would fail with "begin_with at non-zero
            // transaction depth" until a restart: such a connection is closed and a fresh one
            // opened; and any transaction SQLite still holds when a write starts is rolled back.
            .after_release(|connection, _| {
                Box::pin(async move {
                    use sqlx::Connection;
                    Ok(!connection.is_in_transaction())
                })
            })
            .before_acquire(|connection, _| {
                Box::pin(async move {
                    // Fails harmlessly ("no transaction is active") in the normal case.
                    let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                    Ok(true)
                })
            })
            .connect_with(options.clone().pragma("wal_autocheckpoint", "0"))
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await?;
        let (writes, receiver) = mpsc::channel(4096);
        let connection = writer::open(options.get_filename())?;
        let log_copied = Arc::new(AtomicBool::new(false));
        let queued_elsewhere = Arc::new(AtomicU64::new(0));
        let writer_state = writer::WriterState::new(log_copied.clone(), queued_elsewhere.clone());
        // The writer runs on its own thread: on the shared runtime each of its steps (collecting
        // requests, running SQLite, answering callers) would queue behind API requests.
        std::thread::Builder::new()
            .name("mailroom-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            runtime.block_on(writer::run_writer(connection, receiver, writer_state))
                        }));
                        if ran.is_err() {
                            // Without its writer the store can only refuse every write: exit, so
                            // that a supervisor starts mailroom again (everything acknowledged is
                            // in the database; leases are recovered at start).
                            tracing::error!(
                                event = "store_writer_died",
                                "the store writer stopped unexpectedly; exiting"
                            );
                            std::process::exit(70);
                        }
                    }
                    Err(error) => tracing::error!(%error, "the store writer could not start"),
                }
            })
            .map_err(sqlx::Error::Io)?;
        let checkpointer =
            <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await?;
        tokio::spawn(checkpoint_regularly(
            checkpointer,
            writes.downgrade(),
            log_copied,
        ));
        Ok(Self {
            writer,
            reader,
            writes,
            queued_elsewhere,
        })
    }

    /// Hands one write to the writer and waits for its commit.
    pub(crate) async fn write<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<StoreResult<T>>) -> writer::WriteRequest,
    ) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(request(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Tells the writer that mail may have been queued behind its back (after the commit that
    /// queued it).
    pub(crate) fn mail_queued_elsewhere(&self) {
        self.queued_elsewhere.fetch_add(1, Ordering::AcqRel);
    }
}

/// Copies the write-ahead log back into the database file every half second (a passive checkpoint
/// never blocks the writer or readers), until the store is gone. After each complete pass it raises
/// `log_copied`, so that the writer restarts the log from its beginning (see
/// [`writer::run_writer`]).
async fn checkpoint_regularly(
    mut connection: sqlx::SqliteConnection,
    store: mpsc::WeakSender<writer::WriteRequest>,
    log_copied: Arc<AtomicBool>,
) {
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if store.upgrade().is_none() {
            break;
        }
        // (busy, frames in the log, frames copied): busy is 1 when another checkpoint was running.
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&mut connection)
            .await
        {
            Ok((0, frames, _)) if frames > 0 => log_copied.store(true, Ordering::Release),
            Ok(_) => {}
            Err(error) if storage::sqlx_is_full(&error) => {
                storage::note_storage_full(&error.to_string());
            }
            Err(error) => tracing::warn!(%error, "checkpointing the write-ahead log failed"),
        }
    }
    let _ = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .execute(&mut connection)
        .await;
    let _ = sqlx::Connection::close(connection).await;
}
