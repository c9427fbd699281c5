-- The ops console's audit trail: who replayed or discarded which dead letter, when, and how it
-- ended. A row is written before the action runs (outcome 'started') and completed after it,
-- so no action runs unrecorded.
CREATE SCHEMA IF NOT EXISTS console;

CREATE TABLE console.audit (
    audit_id     bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    role         text NOT NULL,
    action       text NOT NULL CHECK (action IN ('replay', 'discard')),
    queue        text NOT NULL,
    message_id   text NOT NULL,
    reason_code  text,
    outcome      text NOT NULL DEFAULT 'started',
    detail       text,
    finished_at  timestamptz
);

CREATE INDEX audit_by_time ON console.audit (at DESC);
