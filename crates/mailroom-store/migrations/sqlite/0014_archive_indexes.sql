-- Listings stay fast however large the archive grows (each page is an index seek, never a scan):
-- a message carries the set of its related record types (sorted, comma-separated, '' for none;
-- relations to users do not count), so that a view policy becomes a few index ranges; the types
-- sets in use are listed in record_type_sets. Listing by account, scenario or creator seeks its
-- own index, newest first; a record's messages are found from the record, newest first.
ALTER TABLE messages ADD COLUMN record_types TEXT NOT NULL DEFAULT '';
UPDATE messages SET record_types = COALESCE((
    SELECT group_concat(record_type, ',') FROM (
        SELECT DISTINCT record_type FROM related_records r
        WHERE r.message_id = messages.id AND r.record_type <> 'user' ORDER BY record_type)), '');
CREATE TABLE record_type_sets (types TEXT PRIMARY KEY) WITHOUT ROWID;
INSERT INTO record_type_sets (types) SELECT DISTINCT record_types FROM messages WHERE record_types <> '';
CREATE INDEX messages_by_account ON messages (account_id, status, id);
CREATE INDEX messages_by_scenario ON messages (scenario, status, id);
CREATE INDEX messages_by_creator ON messages (created_by, status, id);
CREATE INDEX messages_by_record_types ON messages (record_types, status, id);
DROP INDEX related_records_by_record;
CREATE INDEX related_records_by_record ON related_records (record_type, record_id, message_id);
-- Retention: when the content of a sent message was deleted (its envelope and attempts stay).
ALTER TABLE messages ADD COLUMN content_deleted_at INTEGER;
