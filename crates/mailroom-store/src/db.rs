//! The two backends behind one store: what every operation is written against.
//!
//! Shared operations are written once, in SQL both SQLite and PostgreSQL accept (`$1` placeholders,
//! `ON CONFLICT`, `RETURNING`, `TRUE`/`FALSE`, `GREATEST` never — see ARCHITECTURE.md), and
//! [`on_db!`] compiles each body once per backend. What differs lives under `sqlite/` and
//! `postgres/`: opening, the hot write path (group commit), and multi-node coordination.

use sqlx::postgres::{PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqlitePool, SqliteRow};
use sqlx::{ColumnIndex, Decode, Type};

/// The database a store runs on.
pub(crate) enum Db {
    Sqlite(crate::sqlite::SqliteDb),
    Postgres(crate::postgres::PgDb),
}

/// Which backend a store runs on, for callers that report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Runs `$body` once per backend with `$writer` bound to the pool that writes and `$reader` to the
/// pool that reads (the same pool on PostgreSQL; on SQLite reads use read-only connections so that
/// they never wait for a write).
macro_rules! on_db {
    ($store:expr, |$writer:ident, $reader:ident| $body:expr) => {
        $crate::db::on_db!($store, |$writer, $reader, _keyed| $body)
    };
    // `$keyed` reads by primary key whatever the planner's statistics say: on PostgreSQL a
    // connection of `PgDb::keyed`, on SQLite the reader.
    ($store:expr, |$writer:ident, $reader:ident, $keyed:ident| $body:expr) => {{
        match &*$store.db {
            $crate::db::Db::Sqlite(db) => {
                #[allow(unused_variables)]
                let $writer = &db.writer;
                #[allow(unused_variables)]
                let $reader = &db.reader;
                #[allow(unused_variables)]
                let $keyed = &db.reader;
                $body
            }
            $crate::db::Db::Postgres(db) => {
                #[allow(unused_variables)]
                let $writer = &db.pool;
                #[allow(unused_variables)]
                let $reader = &db.pool;
                #[allow(unused_variables)]
                let $keyed = &db.keyed;
                $body
            }
        }
    }};
}
pub(crate) use on_db;

/// A value both backends decode.
pub(crate) trait Value:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> Value for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

/// A column index both backends' rows accept.
pub(crate) trait Column: ColumnIndex<SqliteRow> + ColumnIndex<PgRow> {}
impl Column for &str {}
impl Column for usize {}

/// A row of either backend, read with the same code.
pub(crate) trait StoreRow {
    /// The value of a column; a column the query did not select, or of a type the schema does not
    /// give it, is a bug in the store and panics (as `sqlx::Row::get` does).
    fn get<T: Value, I: Column>(&self, index: I) -> T {
        self.try_get(index)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The value of a column, or why it cannot be read.
    fn try_get<T: Value, I: Column>(&self, index: I) -> sqlx::Result<T>;
}

impl StoreRow for SqliteRow {
    fn try_get<T: Value, I: Column>(&self, index: I) -> sqlx::Result<T> {
        sqlx::Row::try_get(self, index)
    }
}

impl StoreRow for PgRow {
    fn try_get<T: Value, I: Column>(&self, index: I) -> sqlx::Result<T> {
        sqlx::Row::try_get(self, index)
    }
}

/// Starting a write transaction, the same call on both backends.
/// Transactions of the sqlx writer waiting for SQLite's write lock (see `begin_write`).
pub(crate) static SQLX_WRITERS_WAITING: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

pub(crate) trait WritePool {
    type Database: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = sqlx::Result<sqlx::Transaction<'static, Self::Database>>> + Send;
}

impl WritePool for SqlitePool {
    type Database = Sqlite;
    /// Takes SQLite's write lock at once: the store writer has a connection of its own, and a
    /// transaction that read first and only then tried to write after the writer had committed
    /// would fail with "database is locked" instead of waiting its turn.
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, Sqlite>> {
        // The group-commit writer lets a waiting transaction in between two of its own: SQLite's
        // lock is not fair, and under a steady load it would otherwise take the lock back every
        // time (starving webhook deliveries, settings changes… for as long as the load lasts).
        struct Waiting;
        impl Drop for Waiting {
            fn drop(&mut self) {
                SQLX_WRITERS_WAITING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        SQLX_WRITERS_WAITING.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _waiting = Waiting;
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl WritePool for PgPool {
    type Database = Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, Postgres>> {
        self.begin().await
    }
}
