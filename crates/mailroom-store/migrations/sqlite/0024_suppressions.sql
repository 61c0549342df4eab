-- Addresses mail is no longer sent to (per organisation): a hard bounce, a complaint, an
-- unsubscribe, or an administrator's choice. Sends to them are refused per recipient.
CREATE TABLE suppressions (
    address    TEXT PRIMARY KEY,
    -- hard-bounce, complaint, unsubscribe, manual
    reason     TEXT NOT NULL,
    detail     TEXT,
    -- The outbound message that caused it, when one did.
    message_id TEXT,
    created_by TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX suppressions_by_time ON suppressions (created_at, address);
