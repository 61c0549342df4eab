-- Who may do what: users with licences and permission sets, tokens per user, view policies, audit log.

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    contact_email   TEXT,
    licence         TEXT NOT NULL CHECK (licence IN ('full', 'limited', 'guest', 'delegated-admin', 'external-accountant')),
    enabled         INTEGER NOT NULL DEFAULT 1,
    -- JSON array of permission set names, e.g. ["email-send", "read customer"].
    permission_sets TEXT NOT NULL DEFAULT '[]',
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- Every token belongs to a user (the bootstrap token to the first admin user).
ALTER TABLE api_tokens ADD COLUMN user_id TEXT REFERENCES users(id);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id);

-- One row per user, and the row with user_id '*' is the default for everyone.
CREATE TABLE view_policies (
    user_id TEXT PRIMARY KEY,
    policy  TEXT NOT NULL CHECK (policy IN ('own', 'all', 'all-related-records', 'any-related-record'))
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor_id    TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_by_target ON audit_log (target_type, target_id);
