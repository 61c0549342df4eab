-- OAuth app registrations (Microsoft Entra ID or any OpenID Connect provider). The client secret is
-- sealed with the installation's key and the row id; it is never returned.
CREATE TABLE app_registrations (
    id                     TEXT PRIMARY KEY,
    name                   TEXT NOT NULL UNIQUE,
    -- microsoft-entra or oidc
    provider               TEXT NOT NULL,
    client_id              TEXT NOT NULL,
    client_secret_sealed   TEXT,
    tenant                 TEXT,
    redirect_uri           TEXT NOT NULL,
    authority              TEXT NOT NULL,
    graph_base_url         TEXT NOT NULL,
    discovery_url          TEXT,
    authorization_endpoint TEXT,
    token_endpoint         TEXT,
    -- {"graph": [...], "mail": [...], "app": [...]}
    scopes                 TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
