-- Places for open SMTP connections of an account, shared by every node: a node holds a place for
-- each connection it has open (idle ones included) and gives it back when the connection closes.
-- A place whose lease ran out (its node died) is free again; live nodes renew theirs as they
-- heartbeat.
CREATE TABLE session_slots (
    account_id  TEXT NOT NULL,
    slot        BIGINT NOT NULL,
    node_id     TEXT,
    lease_until BIGINT,
    PRIMARY KEY (account_id, slot)
);
CREATE INDEX session_slots_by_node ON session_slots (node_id);
