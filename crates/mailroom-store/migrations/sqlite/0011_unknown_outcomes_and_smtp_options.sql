-- An attempt whose connection was lost or timed out after the final "." has an unknown outcome: the
-- server may have accepted the message. The CHECK constraint of `attempts` gains 'unknown' (SQLite
-- cannot alter a constraint, so the table is rebuilt as in 0010).
CREATE TABLE attempts_rebuilt (
    message_id  TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'interrupted', 'unknown')),
    reply_code  INTEGER,
    reply_text  TEXT NOT NULL,
    PRIMARY KEY (message_id, number)
) WITHOUT ROWID;
INSERT INTO attempts_rebuilt (message_id, number, started_at, finished_at, outcome, reply_code, reply_text)
    SELECT message_id, number, started_at, finished_at, outcome, reply_code, reply_text FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_rebuilt RENAME TO attempts;
CREATE INDEX attempts_started ON attempts (started_at);

-- Per-account SMTP options as one JSON object (timeouts per stage, the EHLO name, whether mail with an
-- unknown outcome is sent again); '{}' means every default.
ALTER TABLE accounts ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
