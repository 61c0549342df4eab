-- What delivery status notifications and feedback reports said about a message we sent, per
-- recipient (the report was received into a synchronised mailbox).
CREATE TABLE message_bounces (
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    recipient  TEXT NOT NULL,
    -- bounce, complaint
    kind       TEXT NOT NULL,
    -- failed, delayed (bounces); the feedback type (complaints)
    action     TEXT NOT NULL,
    status     TEXT NOT NULL,
    diagnostic TEXT,
    hard       BOOLEAN NOT NULL,
    inbound_id TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (message_id, recipient, kind, action)
);
