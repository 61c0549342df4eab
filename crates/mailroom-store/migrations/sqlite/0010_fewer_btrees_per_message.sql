-- Fewer B-trees written for each message: every one of them costs a page in the write-ahead log at
-- each commit.
--
-- The lease queries (renew, recover expired) find messages being sent through `messages_status`:
-- only messages in flight are 'sending', so a separate index on their lease was written twice per
-- message (on claim and on outcome) for lookups that are small anyway.
DROP INDEX IF EXISTS messages_leased;

-- Attempts are always read by their message: keyed by (message_id, number) without a rowid, one
-- B-tree holds the rows instead of a table plus its primary-key index.
CREATE TABLE attempts_keyed (
    message_id  TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'interrupted')),
    reply_code  INTEGER,
    reply_text  TEXT NOT NULL,
    PRIMARY KEY (message_id, number)
) WITHOUT ROWID;
INSERT INTO attempts_keyed (message_id, number, started_at, finished_at, outcome, reply_code, reply_text)
    SELECT message_id, number, started_at, finished_at, outcome, reply_code, reply_text FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_keyed RENAME TO attempts;
CREATE INDEX attempts_started ON attempts (started_at);
