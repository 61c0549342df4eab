-- Mailboxes (MISSION B1-B5): server profiles, the organisation's email settings, teams, queues,
-- user and queue mailboxes, background jobs, alerts, and the event log other parts read.
CREATE TABLE server_profiles (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    incoming_json   TEXT NOT NULL,
    outgoing_json   TEXT NOT NULL,
    endpoints_json  TEXT NOT NULL,
    auth_type       TEXT NOT NULL,
    owner_user_id   TEXT,
    is_default      BOOLEAN NOT NULL DEFAULT FALSE,
    processing_json TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Organisation-wide settings by name, each a JSON document (`email`: the email settings).
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value_json TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE teams (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    permission_sets TEXT NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_by_user ON team_members (user_id);

CREATE TABLE queues (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    email_address TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE queue_members (
    queue_id TEXT NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (queue_id, user_id)
);

CREATE TABLE mailboxes (
    id                 TEXT PRIMARY KEY,
    kind               TEXT NOT NULL CHECK (kind IN ('user', 'queue')),
    user_id            TEXT UNIQUE,
    queue_id           TEXT UNIQUE,
    email_address      TEXT NOT NULL,
    profile_id         TEXT REFERENCES server_profiles (id),
    incoming           TEXT NOT NULL,
    outgoing           TEXT NOT NULL,
    act                TEXT NOT NULL,
    username           TEXT,
    password_encrypted TEXT,
    approval           TEXT NOT NULL,
    incoming_status    TEXT NOT NULL,
    outgoing_status    TEXT NOT NULL,
    act_status         TEXT NOT NULL,
    enabled            BOOLEAN NOT NULL DEFAULT FALSE,
    last_test_at       BIGINT,
    last_error         TEXT,
    filter             TEXT NOT NULL,
    test_tries         BIGINT NOT NULL DEFAULT 0,
    next_test_at       BIGINT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX mailboxes_by_profile ON mailboxes (profile_id);
CREATE INDEX mailboxes_by_next_test ON mailboxes (next_test_at) WHERE next_test_at IS NOT NULL;

CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done')),
    total       BIGINT NOT NULL,
    done        BIGINT NOT NULL DEFAULT 0,
    succeeded   BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    params_json TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX jobs_unfinished ON jobs (created_at) WHERE state <> 'done';

CREATE TABLE job_items (
    job_id     TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    mailbox_id TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'succeeded', 'failed')),
    detail     TEXT,
    PRIMARY KEY (job_id, mailbox_id)
);

CREATE TABLE alerts (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    mailbox_id   TEXT,
    kind         TEXT NOT NULL,
    message      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    dismissed_at BIGINT
);
CREATE INDEX alerts_by_user ON alerts (user_id, created_at);

-- Things that happened, written in the transaction of the change they report (read by webhooks).
CREATE TABLE events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
