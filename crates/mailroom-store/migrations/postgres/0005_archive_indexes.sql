-- As SQLite's migration 0014: listings are index seeks however large the archive grows.
ALTER TABLE messages ADD COLUMN record_types TEXT NOT NULL DEFAULT '';
UPDATE messages SET record_types = COALESCE((
    SELECT string_agg(DISTINCT record_type, ',' ORDER BY record_type) FROM related_records r
    WHERE r.message_id = messages.id AND r.record_type <> 'user'), '');
CREATE TABLE record_type_sets (types TEXT PRIMARY KEY);
INSERT INTO record_type_sets (types) SELECT DISTINCT record_types FROM messages WHERE record_types <> '';
CREATE INDEX messages_by_account ON messages (account_id, status, id);
CREATE INDEX messages_by_scenario ON messages (scenario, status, id);
CREATE INDEX messages_by_creator ON messages (created_by, status, id);
CREATE INDEX messages_by_record_types ON messages (record_types, status, id);
DROP INDEX related_records_by_record;
CREATE INDEX related_records_by_record ON related_records (record_type, record_id, message_id);
ALTER TABLE messages ADD COLUMN content_deleted_at BIGINT;
