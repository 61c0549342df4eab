-- Mailboxes connected with OAuth 2.0: the registration their refresh token was issued by, and the
-- refresh token itself, sealed with the mailbox and registration ids (so it opens only for them).
ALTER TABLE mailboxes ADD COLUMN oauth_registration_id TEXT;
ALTER TABLE mailboxes ADD COLUMN refresh_token_sealed TEXT;

-- Authorization requests under way (authorization code with PKCE): single use, ten minutes.
CREATE TABLE oauth_states (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    registration_id TEXT NOT NULL,
    mailbox_id      TEXT NOT NULL,
    -- The PKCE verifier and the browser binding, sealed with the state id.
    secret_sealed   TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
);
