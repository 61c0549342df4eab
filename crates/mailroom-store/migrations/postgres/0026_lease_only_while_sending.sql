-- A lease (owner and expiry) exists exactly while its message is being sent: every way into
-- 'sending' sets it and every way out clears it. The constraint makes that an invariant, so that an
-- outcome can be fenced by (lease owner, attempt number) alone and found by primary key: a
-- condition on the status let the planner read every message that was ever 'sending' since the
-- last vacuum through the status index (a bitmap scan never marks dead index entries), which made
-- each outcome batch slower as the sent archive grew.
UPDATE messages SET lease_owner = NULL, lease_until = NULL
 WHERE status <> 'sending' AND (lease_owner IS NOT NULL OR lease_until IS NOT NULL);
ALTER TABLE messages ADD CONSTRAINT messages_lease_only_while_sending
  CHECK (status = 'sending' OR (lease_owner IS NULL AND lease_until IS NULL));
