-- The app inside the user's mail client (MISSION D2): what was recorded about each user —
-- `requested` (deployed to them, or they added it) or `opened` (their mail client opened it).
-- The deployment mode is the `mail_client_app` row of `settings`.
CREATE TABLE mail_client_app_users (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    state      TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The pane looks up the records of earlier mail from a message's participants.
CREATE INDEX inbound_by_from ON inbound_messages (from_address, received_at) WHERE from_address IS NOT NULL;
