-- Reply-To recipients and the caller's custom headers, both JSON arrays.
ALTER TABLE message_contents ADD COLUMN reply_to_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE message_contents ADD COLUMN headers_json TEXT NOT NULL DEFAULT '[]';
