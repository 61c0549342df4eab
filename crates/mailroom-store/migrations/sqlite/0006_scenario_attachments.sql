-- Files that go with every message of a scenario ('default', removable by the sender) or that a sender
-- may pick ('optional'), e.g. terms and conditions on every sales order.
CREATE TABLE scenario_attachments (
    scenario      TEXT NOT NULL REFERENCES scenarios(name) ON DELETE CASCADE,
    attachment_id TEXT NOT NULL REFERENCES attachments(id),
    mode          TEXT NOT NULL CHECK (mode IN ('default', 'optional')),
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (scenario, attachment_id)
);
