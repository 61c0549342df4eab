-- The eight listing indexes of the view policies hold drafts, sent, failed and cancelled mail only:
-- a message in flight ('queued', 'sending') changes its row two or three times in a few seconds,
-- and each change of a row whose status is indexed writes an entry into every index of the table.
-- Two narrow indexes keep the outbox's in-flight part listable for a user under a view policy
-- (their own mail; a set of record types); an administrator's in-flight listing reads
-- messages_status, and one filtered by account the queue's messages_due.
-- Listing branches write their status as a literal so that the planner can use these indexes.
DROP INDEX messages_by_account;
DROP INDEX messages_by_scenario;
DROP INDEX messages_by_creator;
DROP INDEX messages_by_record_types;
DROP INDEX messages_by_creator_account;
DROP INDEX messages_by_creator_scenario;
DROP INDEX messages_by_types_account;
DROP INDEX messages_by_types_scenario;
CREATE INDEX messages_by_account ON messages (account_id, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_by_scenario ON messages (scenario, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_by_creator ON messages (created_by, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_by_record_types ON messages (record_types, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_by_creator_account ON messages (created_by, account_id, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_by_creator_scenario ON messages (created_by, scenario, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_by_types_account ON messages (record_types, account_id, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_by_types_scenario ON messages (record_types, scenario, status, id)
  WHERE status NOT IN ('queued', 'sending');
CREATE INDEX messages_in_flight_by_creator ON messages (created_by, status, id)
  WHERE status IN ('queued', 'sending');
CREATE INDEX messages_in_flight_by_record_types ON messages (record_types, status, id)
  WHERE status IN ('queued', 'sending');
