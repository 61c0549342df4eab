-- Sender substitution on an account ('send-as': From is replaced; 'send-on-behalf': From is the
-- substitute and Sender the account), and the visible sender fixed for each message when accepted.
ALTER TABLE accounts ADD COLUMN substitute_mode TEXT CHECK (substitute_mode IN ('send-as', 'send-on-behalf'));
ALTER TABLE accounts ADD COLUMN substitute_address TEXT;
ALTER TABLE message_contents ADD COLUMN from_json TEXT;
ALTER TABLE message_contents ADD COLUMN sender_json TEXT;
