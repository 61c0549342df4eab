-- Attachments shown inside the HTML body, referenced there as cid:<content_id>.
ALTER TABLE message_attachments ADD COLUMN content_id TEXT;
