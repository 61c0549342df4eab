-- The whole schema as SQLite has it after its migration 0012, for PostgreSQL. Times are milliseconds
-- since the Unix epoch (BIGINT), ids are the same text as on SQLite (so `mailroom store copy` moves
-- rows unchanged), flags are BOOLEAN. Later changes come as numbered migrations on both backends.

CREATE TABLE accounts (
    id                    TEXT PRIMARY KEY,
    connector             TEXT NOT NULL CHECK (connector IN ('smtp', 'pickup')),
    name                  TEXT NOT NULL,
    email_address         TEXT NOT NULL,
    sender_name           TEXT,
    sender_type           TEXT NOT NULL,
    host                  TEXT,
    port                  BIGINT,
    security              TEXT NOT NULL DEFAULT 'none',
    username              TEXT,
    password_encrypted    TEXT,
    pickup_dir            TEXT,
    rate_limit_per_minute BIGINT NOT NULL,
    concurrency_limit     BIGINT NOT NULL,
    max_attempts          BIGINT NOT NULL,
    created_at            BIGINT NOT NULL,
    updated_at            BIGINT NOT NULL,
    deleted_at            BIGINT,
    substitute_mode       TEXT CHECK (substitute_mode IN ('send-as', 'send-on-behalf')),
    substitute_address    TEXT,
    options               TEXT NOT NULL DEFAULT '{}',
    substitute_name       TEXT
);

CREATE TABLE scenarios (
    name        TEXT PRIMARY KEY,
    description TEXT NOT NULL,
    built_in    BOOLEAN NOT NULL,
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
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    send_at            BIGINT,
    next_attempt_at    BIGINT NOT NULL,
    attempt_count      BIGINT NOT NULL DEFAULT 0,
    retry_base         BIGINT NOT NULL DEFAULT 0,
    lease_owner        TEXT,
    lease_until        BIGINT,
    sent_at            BIGINT,
    last_error         TEXT,
    template_id        TEXT,
    template_version   BIGINT
);
CREATE UNIQUE INDEX messages_idempotency ON messages (created_by, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_due ON messages (account_id, next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_status ON messages (status, id);

CREATE TABLE message_contents (
    message_id    TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    to_json       TEXT NOT NULL,
    cc_json       TEXT NOT NULL,
    bcc_json      TEXT NOT NULL,
    text_body     TEXT,
    html_body     TEXT,
    related_json  TEXT NOT NULL,
    reply_to_json TEXT NOT NULL DEFAULT '[]',
    headers_json  TEXT NOT NULL DEFAULT '[]',
    from_json     TEXT,
    sender_json   TEXT
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
    number      BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'interrupted', 'unknown')),
    reply_code  BIGINT,
    reply_text  TEXT NOT NULL,
    PRIMARY KEY (message_id, number)
);
CREATE INDEX attempts_started ON attempts (started_at);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    contact_email   TEXT,
    licence         TEXT NOT NULL CHECK (licence IN ('full', 'limited', 'guest', 'delegated-admin', 'external-accountant')),
    enabled         BOOLEAN NOT NULL DEFAULT TRUE,
    permission_sets TEXT NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT,
    user_id     TEXT REFERENCES users(id)
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

CREATE TABLE view_policies (
    user_id TEXT PRIMARY KEY,
    policy  TEXT NOT NULL CHECK (policy IN ('own', 'all', 'all-related-records', 'any-related-record'))
);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_by_target ON audit_log (target_type, target_id);

CREATE TABLE attachments (
    id           TEXT PRIMARY KEY,
    sha256       TEXT NOT NULL,
    size         BIGINT NOT NULL,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX attachments_by_blob ON attachments (sha256);

CREATE TABLE message_attachments (
    message_id    TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position      BIGINT NOT NULL,
    attachment_id TEXT NOT NULL REFERENCES attachments(id),
    content_id    TEXT,
    PRIMARY KEY (message_id, position)
);
CREATE INDEX message_attachments_by_attachment ON message_attachments (attachment_id);

CREATE TABLE templates (
    id            TEXT NOT NULL,
    version       BIGINT NOT NULL,
    document_type TEXT NOT NULL,
    scenario      TEXT,
    subject       TEXT NOT NULL,
    html          TEXT NOT NULL,
    text          TEXT,
    built_in      BOOLEAN NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (id, version)
);

CREATE TABLE scenario_attachments (
    scenario      TEXT NOT NULL REFERENCES scenarios(name) ON DELETE CASCADE,
    attachment_id TEXT NOT NULL REFERENCES attachments(id),
    mode          TEXT NOT NULL CHECK (mode IN ('default', 'optional')),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (scenario, attachment_id)
);

CREATE TABLE sending_profiles (
    name       TEXT PRIMARY KEY,
    email      TEXT NOT NULL CHECK (email IN ('without-asking', 'after-confirmation', 'none')),
    attachment TEXT NOT NULL CHECK (attachment IN ('pdf', 'none', 'electronic-document')),
    is_default BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX one_default_sending_profile ON sending_profiles (is_default) WHERE is_default;
INSERT INTO sending_profiles (name, email, attachment, is_default, updated_at) VALUES ('default', 'without-asking', 'pdf', TRUE, 0);

CREATE TABLE customer_profiles (
    customer_id TEXT PRIMARY KEY,
    profile     TEXT NOT NULL REFERENCES sending_profiles(name)
);

-- The nodes sharing this database: each heartbeats; one silent for longer than the node timeout is
-- declared dead (by exactly one other node: the UPDATE that sets declared_dead_at) and its leases
-- are recovered.
CREATE TABLE nodes (
    id               TEXT PRIMARY KEY,
    host             TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    last_heartbeat   BIGINT NOT NULL,
    declared_dead_at BIGINT
);
