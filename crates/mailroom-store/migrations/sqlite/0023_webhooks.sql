-- Webhooks (MISSION E). Every event is written in the transaction of the change it describes
-- (`events`); a node fans each new event out into one delivery per subscribed endpoint, and
-- deliveries are tried under a lease until the receiver answers 2xx or three days have passed.
CREATE TABLE webhook_endpoints (
    id                     TEXT PRIMARY KEY,
    url                    TEXT NOT NULL,
    events_json            TEXT NOT NULL,
    -- The signing secret, sealed with the endpoint's id; during a rotation the previous one too,
    -- until `previous_until`.
    secret_sealed          TEXT NOT NULL,
    previous_secret_sealed TEXT,
    previous_until         INTEGER,
    enabled                INTEGER NOT NULL,
    -- Deliver one event at a time, in order.
    ordered                INTEGER NOT NULL,
    disabled_reason        TEXT,
    -- The first failure since the last success (an endpoint failing for a day is disabled).
    failing_since          INTEGER,
    created_by             TEXT NOT NULL,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);

ALTER TABLE events ADD COLUMN fanned_out INTEGER NOT NULL DEFAULT 0;
-- Events from before webhooks existed are not delivered.
UPDATE events SET fanned_out = 1;
CREATE INDEX events_to_fan_out ON events (id) WHERE fanned_out = FALSE;

CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        INTEGER NOT NULL,
    -- pending, delivered, given-up
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

-- Every attempt of every delivery: the endpoint's delivery log.
CREATE TABLE webhook_attempts (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id    INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    status      INTEGER,
    latency_ms  INTEGER NOT NULL,
    response    TEXT,
    error       TEXT,
    PRIMARY KEY (endpoint_id, event_id, number)
);
CREATE INDEX webhook_attempts_by_time ON webhook_attempts (endpoint_id, at);
