-- Attempt starts of rate-limited accounts, shared by every node: a node may start an attempt only
-- while the account's window (ending now, by the database's clock) holds fewer starts than its
-- limit, checked and recorded under a per-account advisory lock. Rows older than the window are
-- deleted as the window slides.
CREATE TABLE attempt_starts (
    account_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    node_id    TEXT NOT NULL
);
CREATE INDEX attempt_starts_by_account ON attempt_starts (account_id, started_at);
