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
    previous_until         BIGINT,
    enabled                BOOLEAN NOT NULL,
    -- Deliver one event at a time, in order.
    ordered                BOOLEAN NOT NULL,
    disabled_reason        TEXT,
    -- The first failure since the last success (an endpoint failing for a day is disabled).
    failing_since          BIGINT,
    created_by             TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);

ALTER TABLE events ADD COLUMN fanned_out BOOLEAN NOT NULL DEFAULT FALSE;
-- Events from before webhooks existed are not delivered.
UPDATE events SET fanned_out = TRUE;
CREATE INDEX events_to_fan_out ON events (id) WHERE fanned_out = FALSE;

CREATE TABLE webhook_deliveries (
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        BIGINT NOT NULL,
    -- pending, delivered, given-up
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';

-- Every attempt of every delivery: the endpoint's delivery log.
CREATE TABLE webhook_attempts (
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id    BIGINT NOT NULL,
    number      BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    status      BIGINT,
    latency_ms  BIGINT NOT NULL,
    response    TEXT,
    error       TEXT,
    PRIMARY KEY (endpoint_id, event_id, number)
);
CREATE INDEX webhook_attempts_by_time ON webhook_attempts (endpoint_id, at);
