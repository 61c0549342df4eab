-- Keys compare byte by byte, as SQLite compares them, and stored mail costs PostgreSQL less CPU.
--
-- Ids, statuses, account ids, authors, scenarios, record keys, Message-IDs and addresses are
-- compared all day long: every message adds about twenty entries to B-tree indexes over them, and
-- each entry is placed by comparing keys. Under the database's default collation (a libc locale,
-- such as C.UTF-8) every comparison goes through strcoll(); under "C" it is a memcmp(). The values
-- are identifiers, not words: the order "C" gives is SQLite's BINARY order, which the SQLite
-- backend already uses, so both backends now list and match alike. Only the collation changes, so
-- the tables are not rewritten; the indexes over these columns are rebuilt (on a large archive this
-- migration takes a while, with the tables locked: plan it as for any index rebuild).
ALTER TABLE messages
  ALTER COLUMN id TYPE TEXT COLLATE "C",
  ALTER COLUMN status TYPE TEXT COLLATE "C",
  ALTER COLUMN created_by TYPE TEXT COLLATE "C",
  ALTER COLUMN scenario TYPE TEXT COLLATE "C",
  ALTER COLUMN record_types TYPE TEXT COLLATE "C",
  ALTER COLUMN message_id_header TYPE TEXT COLLATE "C",
  ALTER COLUMN idempotency_key TYPE TEXT COLLATE "C",
  ALTER COLUMN smart_key TYPE TEXT COLLATE "C";
ALTER TABLE message_contents ALTER COLUMN message_id TYPE TEXT COLLATE "C";
ALTER TABLE message_recipients
  ALTER COLUMN address TYPE TEXT COLLATE "C",
  ALTER COLUMN message_id TYPE TEXT COLLATE "C";
ALTER TABLE related_records
  ALTER COLUMN message_id TYPE TEXT COLLATE "C",
  ALTER COLUMN record_type TYPE TEXT COLLATE "C",
  ALTER COLUMN record_id TYPE TEXT COLLATE "C";
ALTER TABLE record_type_sets ALTER COLUMN types TYPE TEXT COLLATE "C";
ALTER TABLE message_attachments ALTER COLUMN message_id TYPE TEXT COLLATE "C";
ALTER TABLE message_bounces ALTER COLUMN message_id TYPE TEXT COLLATE "C";

-- An attempt is written only by the outcome batch, for a message its node stored or claimed, or by
-- the recovery of a lease, for the message it has just moved; messages are never deleted
-- (retention removes their content and keeps the envelope, attempts included). So this foreign key
-- guarded nothing, and its check ran a query and locked the message row for every outcome.
ALTER TABLE attempts DROP CONSTRAINT attempts_message_id_fkey;
ALTER TABLE attempts ALTER COLUMN message_id TYPE TEXT COLLATE "C";

-- A message's account: every inserting transaction locked the account's row (`FOR KEY SHARE`),
-- so all nodes storing mail of one account locked the same row at once (a shared lock held by
-- several transactions becomes a MultiXact). Accounts are never removed (deleting one marks it
-- deleted), so the insert checks that the account exists instead, without a lock.
ALTER TABLE messages DROP CONSTRAINT messages_account_id_fkey;
ALTER TABLE messages ALTER COLUMN account_id TYPE TEXT COLLATE "C";

-- Bodies of about 2 KB and more are compressed when stored. PostgreSQL's own method (pglz) was the
-- single costliest function of a database storing mail; LZ4 compresses several times faster.
-- A server built without LZ4 keeps pglz.
DO $$
BEGIN
  ALTER TABLE message_contents
    ALTER COLUMN text_body SET COMPRESSION lz4,
    ALTER COLUMN html_body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
  RAISE NOTICE 'LZ4 is not available on this server: mail bodies stay compressed with pglz';
END
$$;
