-- A receiver that comes back gets its waiting deliveries at once: found per endpoint.
CREATE INDEX webhook_deliveries_pending_by_endpoint ON webhook_deliveries (endpoint_id) WHERE state = 'pending';
