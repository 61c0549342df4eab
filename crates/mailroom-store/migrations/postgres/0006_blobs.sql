-- The blob store in the database (`blob_store = "database"`): uploaded files reachable from every
-- node, in chunks of at most 1 MiB so that neither an upload nor a read holds a whole file in one
-- value. A blob is named by its SHA-256 once complete; chunks of an upload in progress are written
-- under a temporary name inside the upload's transaction, so a failed upload leaves nothing.
CREATE TABLE blobs (
    sha256     TEXT PRIMARY KEY,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE blob_chunks (
    blob TEXT NOT NULL,
    seq  BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob, seq)
);
