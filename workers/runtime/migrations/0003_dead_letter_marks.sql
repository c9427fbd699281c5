-- Which messages a worker has dead-lettered and not yet seen replayed. A redelivery of a
-- message that was dead-lettered (the worker died after the copy was confirmed, before the ack)
-- is acknowledged without a second copy; a replay removes the mark first, so a replayed job
-- that fails again is dead-lettered again. Messages without a message_id are keyed by
-- 'sha256:<hex of the body>'.
CREATE TABLE runtime.dead_letter_marks (
    consumer         text        NOT NULL,
    message_key      text        NOT NULL,
    reason_code      text        NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_key)
);
