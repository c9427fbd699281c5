-- Group commit claims a batch's message ids first (outcome still NULL) and records the outcomes
-- at the end of the same transaction; a NULL outcome is never visible to anyone else.
-- The body's SHA-256 lets a reused message_id with a different body be told from a redelivery.
ALTER TABLE runtime.inbox ADD COLUMN body_sha256 bytea;
