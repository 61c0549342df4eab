-- A message's parts (content, recipient keys, related records) are written in the statement or
-- transaction that writes the message itself, and messages are never deleted (retention removes
-- their content and keeps the envelope), so these foreign keys guard nothing the store does not
-- already guarantee by construction. They were what storing a message paid most for after its
-- indexes: each checked row runs a trigger that reads its parent and locks it (`FOR KEY SHARE`).
-- Measured with pgbench on this schema, three runs each, medians: groups of 40 messages on 2
-- connections stored 8,300 messages/s with the checks and 10,000 without; groups of 10 on 6
-- connections (three nodes) 4,300 and 5,050.
-- Kept: a message's account (a message for an unknown account is refused) and an attempt's message
-- (an attempt is recorded long after its message, by the outcome batch).
ALTER TABLE message_contents DROP CONSTRAINT message_contents_message_id_fkey;
ALTER TABLE message_recipients DROP CONSTRAINT message_recipients_message_id_fkey;
ALTER TABLE related_records DROP CONSTRAINT related_records_message_id_fkey;
