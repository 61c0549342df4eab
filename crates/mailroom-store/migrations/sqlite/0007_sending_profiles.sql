-- Document sending profiles: how each customer prefers to receive documents.
CREATE TABLE sending_profiles (
    name       TEXT PRIMARY KEY,
    email      TEXT NOT NULL CHECK (email IN ('without-asking', 'after-confirmation', 'none')),
    attachment TEXT NOT NULL CHECK (attachment IN ('pdf', 'none', 'electronic-document')),
    is_default INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX one_default_sending_profile ON sending_profiles (is_default) WHERE is_default = 1;
INSERT INTO sending_profiles (name, email, attachment, is_default, updated_at) VALUES ('default', 'without-asking', 'pdf', 1, 0);

CREATE TABLE customer_profiles (
    customer_id TEXT PRIMARY KEY,
    profile     TEXT NOT NULL REFERENCES sending_profiles(name)
);
