-- Exchange Online mailboxes synchronized over Microsoft Graph: where each folder's delta query
-- continues (the whole deltaLink, which carries the service's state), and the number each Graph
-- message id is stored under, so that a resync from scratch finds what it stored before.
CREATE TABLE graph_folder_states (
    mailbox_id TEXT NOT NULL,
    folder     TEXT NOT NULL,
    delta_link TEXT,
    next_uid   INTEGER NOT NULL,
    synced_at  INTEGER,
    PRIMARY KEY (mailbox_id, folder)
);

CREATE TABLE graph_message_uids (
    mailbox_id TEXT NOT NULL,
    folder     TEXT NOT NULL,
    graph_id   TEXT NOT NULL,
    uid        INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, folder, graph_id)
);
