-- The recipient filter of listings (the console's "to whom"): every To, Cc and Bcc address of a
-- message, lower-cased, read newest first per address.
CREATE TABLE message_recipients (
    address    TEXT NOT NULL,
    message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (address, message_id)
);

INSERT INTO message_recipients (address, message_id)
SELECT DISTINCT lower(r ->> 'address'), c.message_id
FROM message_contents c,
     LATERAL jsonb_array_elements(c.to_json::jsonb || c.cc_json::jsonb || c.bcc_json::jsonb) r
ON CONFLICT DO NOTHING;
