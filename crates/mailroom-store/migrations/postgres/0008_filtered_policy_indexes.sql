-- A user's listing filtered by account or scenario seeks an index for each of its branches (their
-- own messages, each set of record types their policy shows), however rare the combination.
CREATE INDEX messages_by_creator_account ON messages (created_by, account_id, status, id);
CREATE INDEX messages_by_creator_scenario ON messages (created_by, scenario, status, id);
CREATE INDEX messages_by_types_account ON messages (record_types, account_id, status, id);
CREATE INDEX messages_by_types_scenario ON messages (record_types, scenario, status, id);
