-- Uploaded files. The bytes live in the blob store on disk, named by their SHA-256; never in the database.
CREATE TABLE attachments (
    id           TEXT PRIMARY KEY,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX attachments_by_blob ON attachments (sha256);

CREATE TABLE message_attachments (
    message_id    TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    attachment_id TEXT NOT NULL REFERENCES attachments(id),
    PRIMARY KEY (message_id, position)
);
CREATE INDEX message_attachments_by_attachment ON message_attachments (attachment_id);
