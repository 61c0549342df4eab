-- One-click unsubscribe (RFC 8058): a scenario whose mail carries List-Unsubscribe, and the
-- addresses that left each list (a list is a scenario). Mail of that scenario to them is refused.
ALTER TABLE scenarios ADD COLUMN unsubscribe INTEGER NOT NULL DEFAULT 0;
CREATE TABLE unsubscribes (
    address    TEXT NOT NULL,
    list       TEXT NOT NULL,
    -- The message whose link or reply unsubscribed it.
    message_id TEXT,
    -- one-click, mailto, manual
    method     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (address, list)
);
CREATE INDEX unsubscribes_by_time ON unsubscribes (created_at, address, list);
