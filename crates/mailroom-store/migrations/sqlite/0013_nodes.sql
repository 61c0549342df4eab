-- The nodes of this store (on SQLite, the one process holding the data folder), as on PostgreSQL.
CREATE TABLE nodes (
    id               TEXT PRIMARY KEY,
    host             TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    last_heartbeat   INTEGER NOT NULL,
    declared_dead_at INTEGER
);
