-- The recipient filter of listings (the console's "to whom"): every To, Cc and Bcc address of a
-- message, lower-cased, read newest first per address.
CREATE TABLE message_recipients (
    address    TEXT NOT NULL,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (address, message_id)
) WITHOUT ROWID;

INSERT OR IGNORE INTO message_recipients (address, message_id)
SELECT lower(json_extract(r.value, '$.address')), c.message_id
FROM message_contents c, json_each(c.to_json) r
UNION
SELECT lower(json_extract(r.value, '$.address')), c.message_id
FROM message_contents c, json_each(c.cc_json) r
UNION
SELECT lower(json_extract(r.value, '$.address')), c.message_id
FROM message_contents c, json_each(c.bcc_json) r;
