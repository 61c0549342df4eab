-- Inbound mail (MISSION B6, A12, C2): what each synchronized folder has been read up to, every
-- received message with its contents and attachment parts, and the records it concerns.
CREATE TABLE mailbox_folders (
    mailbox_id          TEXT NOT NULL,
    folder              TEXT NOT NULL,
    uidvalidity         BIGINT NOT NULL,
    -- New mail: every UID below this has been handled.
    uidnext             BIGINT NOT NULL,
    highestmodseq       BIGINT,
    -- Initial sync, newest first: the UIDs below this are still to be read (0: done).
    initial_below       BIGINT NOT NULL,
    validity_changes    BIGINT NOT NULL DEFAULT 0,
    validity_changed_at BIGINT,
    synced_at           BIGINT,
    PRIMARY KEY (mailbox_id, folder)
);

CREATE TABLE inbound_messages (
    id                 TEXT PRIMARY KEY,
    mailbox_id         TEXT NOT NULL,
    owner_user_id      TEXT,
    folder             TEXT NOT NULL,
    uidvalidity        BIGINT NOT NULL,
    uid                BIGINT NOT NULL,
    message_id_header  TEXT,
    subject            TEXT NOT NULL,
    from_address       TEXT,
    from_json          TEXT,
    to_json            TEXT NOT NULL,
    cc_json            TEXT NOT NULL,
    reply_to_json      TEXT NOT NULL,
    references_json    TEXT NOT NULL,
    sent_at            BIGINT,
    received_at        BIGINT NOT NULL,
    size               BIGINT NOT NULL,
    flags_json         TEXT NOT NULL,
    seen               BOOLEAN NOT NULL,
    raw_sha256         TEXT NOT NULL,
    unparsed           BOOLEAN NOT NULL,
    thread_index       TEXT,
    correlation_method TEXT,
    conversation_id    TEXT NOT NULL,
    created_at         BIGINT NOT NULL,
    UNIQUE (mailbox_id, folder, uidvalidity, uid)
);
CREATE INDEX inbound_by_mailbox ON inbound_messages (mailbox_id, received_at, id);
CREATE INDEX inbound_by_message_id ON inbound_messages (message_id_header) WHERE message_id_header IS NOT NULL;
CREATE INDEX inbound_by_conversation ON inbound_messages (conversation_id);
-- Whether a blob is still in use (the attachment collector asks).
CREATE INDEX inbound_by_raw ON inbound_messages (raw_sha256);
CREATE INDEX inbound_by_thread_index ON inbound_messages (thread_index) WHERE thread_index IS NOT NULL;

CREATE TABLE inbound_contents (
    inbound_id   TEXT PRIMARY KEY REFERENCES inbound_messages (id) ON DELETE CASCADE,
    headers_json TEXT NOT NULL,
    text_body    TEXT,
    html_body    TEXT
);

CREATE TABLE inbound_attachments (
    inbound_id   TEXT NOT NULL REFERENCES inbound_messages (id) ON DELETE CASCADE,
    part_path    TEXT NOT NULL,
    name         TEXT,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    PRIMARY KEY (inbound_id, part_path)
);

CREATE INDEX inbound_attachments_by_blob ON inbound_attachments (sha256);

CREATE TABLE inbound_related_records (
    inbound_id  TEXT NOT NULL REFERENCES inbound_messages (id) ON DELETE CASCADE,
    record_type TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    PRIMARY KEY (inbound_id, record_type, record_id)
);
CREATE INDEX inbound_related_by_record ON inbound_related_records (record_type, record_id, inbound_id);

-- The conversation an outbound message belongs to (NULL: its own, named by its id).
ALTER TABLE messages ADD COLUMN conversation_id TEXT;

-- Which node synchronizes a mailbox: exactly one at a time, taken over once its hold expires.
CREATE TABLE mailbox_sync_holds (
    mailbox_id TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    held_until BIGINT NOT NULL
);

-- Smart matching (same normalised subject and participants within N days) looks these up.
ALTER TABLE inbound_messages ADD COLUMN normalized_subject TEXT;
ALTER TABLE inbound_messages ADD COLUMN participants TEXT;
CREATE INDEX inbound_by_subject ON inbound_messages (normalized_subject, received_at) WHERE normalized_subject IS NOT NULL;

-- Tracking tokens ([MR-7K3QXAB] in subjects, sales+7K3QXAB@ in reply addresses): one per conversation.
CREATE TABLE conversation_tokens (
    token           TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL
);

-- Contacts the business application knows (MISSION A12): their addresses and the records they
-- belong to. Mail from a known contact is kept by the known-contacts filter and linked to them.
CREATE TABLE contacts (
    id         TEXT PRIMARY KEY,
    name       TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE contact_addresses (
    contact_id TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    address    TEXT NOT NULL,
    PRIMARY KEY (address, contact_id)
);
CREATE INDEX contact_addresses_by_contact ON contact_addresses (contact_id);
CREATE TABLE contact_records (
    contact_id  TEXT NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    record_type TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    PRIMARY KEY (contact_id, record_type, record_id)
);
