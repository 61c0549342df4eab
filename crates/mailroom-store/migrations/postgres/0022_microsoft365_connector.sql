-- Accounts may send through Microsoft Graph (connector 'microsoft365').
ALTER TABLE accounts DROP CONSTRAINT accounts_connector_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_connector_check CHECK (connector IN ('smtp', 'pickup', 'current-user', 'microsoft365'));
