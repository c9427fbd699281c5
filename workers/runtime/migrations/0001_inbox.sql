-- The inbox: one row per handled message and consumer, written in the handler's own transaction.
-- A redelivered message finds its row and the stored outcome is published again; nothing runs twice.
CREATE TABLE runtime.inbox (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    message_type text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    outcome      jsonb,
    PRIMARY KEY (consumer, message_id)
);

CREATE INDEX inbox_received_at ON runtime.inbox (received_at);
