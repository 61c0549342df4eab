-- The foundation schema: accounts, scenarios, the outbox with its attempts, API tokens.
-- Times are Unix milliseconds (INTEGER). Ids are UUID text; message ids are UUIDv7, so they sort by creation.

CREATE TABLE accounts (
    id                    TEXT PRIMARY KEY,
    connector             TEXT NOT NULL CHECK (connector IN ('smtp', 'pickup')),
    name                  TEXT NOT NULL,
    email_address         TEXT NOT NULL,
    sender_name           TEXT,
    sender_type           TEXT NOT NULL,
    host                  TEXT,
    port                  INTEGER,
    security              TEXT NOT NULL DEFAULT 'none',
    username              TEXT,
    password_encrypted    TEXT,
    pickup_dir            TEXT,
    rate_limit_per_minute INTEGER NOT NULL,
    concurrency_limit     INTEGER NOT NULL,
    max_attempts          INTEGER NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL,
    -- Deleted accounts stay as rows so that the history of their messages keeps its account.
    deleted_at            INTEGER
);

-- Known scenarios: the built-in ones are inserted at start-up, custom ones by admins.
CREATE TABLE scenarios (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    built_in    INTEGER NOT NULL,
    -- The account this scenario sends through; for the 'default' scenario this is the default account.
    account_id  TEXT REFERENCES accounts(id) ON DELETE SET NULL
);

CREATE TABLE messages (
    id                 TEXT PRIMARY KEY,
    status             TEXT NOT NULL CHECK (status IN ('draft', 'queued', 'sending', 'sent', 'failed', 'cancelled')),
    scenario           TEXT NOT NULL,
    account_id         TEXT NOT NULL REFERENCES accounts(id),
    message_id_header  TEXT NOT NULL UNIQUE,
    subject            TEXT NOT NULL,
    created_by         TEXT NOT NULL,
    idempotency_key    TEXT,
    request_hash       TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    send_at            INTEGER,
    next_attempt_at    INTEGER NOT NULL,
    attempt_count      INTEGER NOT NULL DEFAULT 0,
    -- attempt_count at the last manual retry: the attempt budget counts from here.
    retry_base         INTEGER NOT NULL DEFAULT 0,
    lease_owner        TEXT,
    lease_until        INTEGER,
    sent_at            INTEGER,
    last_error         TEXT
);
CREATE UNIQUE INDEX messages_idempotency ON messages (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_due ON messages (account_id, next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_status ON messages (status, id);

-- What the caller asked to send. Written once and never updated: SQLite rewrites a whole row on every
-- UPDATE, so keeping bodies out of `messages` keeps claims and outcome updates small.
CREATE TABLE message_contents (
    message_id   TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    to_json      TEXT NOT NULL,
    cc_json      TEXT NOT NULL,
    bcc_json     TEXT NOT NULL,
    text_body    TEXT,
    html_body    TEXT,
    related_json TEXT NOT NULL
);

CREATE TABLE related_records (
    message_id  TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    record_type TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    relation    TEXT NOT NULL CHECK (relation IN ('primary', 'related')),
    PRIMARY KEY (message_id, record_type, record_id)
);
CREATE INDEX related_records_by_record ON related_records (record_type, record_id);

CREATE TABLE attempts (
    message_id  TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'interrupted')),
    reply_code  INTEGER,
    reply_text  TEXT NOT NULL,
    PRIMARY KEY (message_id, number)
);
CREATE INDEX attempts_started ON attempts (started_at);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
