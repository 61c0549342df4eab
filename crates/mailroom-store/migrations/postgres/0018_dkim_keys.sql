-- DKIM keys per sending domain. A domain signs with its one active key; older keys stay listed (and
-- published in DNS) until deleted, so mail signed before a rotation still verifies.
CREATE TABLE dkim_keys (
    id                 TEXT PRIMARY KEY,
    domain             TEXT NOT NULL,
    selector           TEXT NOT NULL,
    -- rsa-sha256 or ed25519-sha256
    algorithm          TEXT NOT NULL,
    -- The private key (DER), sealed with the installation's key and the row id.
    private_key_sealed TEXT NOT NULL,
    -- Base64, as published in the TXT record's p= tag.
    public_key         TEXT NOT NULL,
    active             BOOLEAN NOT NULL,
    created_by         TEXT,
    created_at         BIGINT NOT NULL,
    activated_at       BIGINT,
    UNIQUE (domain, selector)
);
