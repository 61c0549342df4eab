-- Accounts connected with OAuth 2.0 (SMTP with XOAUTH2, Microsoft 365 with delegated permission):
-- the refresh token, sealed with the account and registration ids.
ALTER TABLE accounts ADD COLUMN refresh_token_sealed TEXT;
-- What an authorization request connects: a mailbox or an account (its id in mailbox_id).
ALTER TABLE oauth_states ADD COLUMN target TEXT NOT NULL DEFAULT 'mailbox';
