-- A node that stopped cleanly says so: it is neither alive nor dead.
ALTER TABLE nodes ADD COLUMN stopped_at BIGINT;
