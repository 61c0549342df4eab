-- Templates, versioned: a change adds a version, and a sent message records the version it used.
CREATE TABLE templates (
    id            TEXT NOT NULL,
    version       INTEGER NOT NULL,
    document_type TEXT NOT NULL,
    scenario      TEXT,
    subject       TEXT NOT NULL,
    html          TEXT NOT NULL,
    text          TEXT,
    built_in      INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (id, version)
);

ALTER TABLE messages ADD COLUMN template_id TEXT;
ALTER TABLE messages ADD COLUMN template_version INTEGER;
