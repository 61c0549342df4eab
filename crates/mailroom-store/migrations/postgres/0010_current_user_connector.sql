-- Accounts may send through each sending user's own mailbox (connector 'current-user').
ALTER TABLE accounts DROP CONSTRAINT accounts_connector_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_connector_check CHECK (connector IN ('smtp', 'pickup', 'current-user'));
