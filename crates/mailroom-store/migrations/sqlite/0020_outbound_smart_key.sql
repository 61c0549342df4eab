-- Smart matching (MISSION B6) also finds the outbound message a reply answers: a digest of the
-- normalised subject and the participants, written when a message is accepted.
ALTER TABLE messages ADD COLUMN smart_key TEXT;
CREATE INDEX messages_by_smart_key ON messages (smart_key, created_at) WHERE smart_key IS NOT NULL;
