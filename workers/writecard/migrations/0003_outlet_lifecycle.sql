-- The outlet lifecycle: suspend and resume, heartbeats ("last seen"), and an audit row for
-- every step (provision, rotate, suspend, resume, revoke), written in the transaction of the
-- step itself so that no step happens without its row.

-- An outlet is suspended while `suspended_at` is set (and not revoked): it gets no new work.
-- `active = false` stays what it was: revoked, for good.
ALTER TABLE writecard.outlets
    ADD COLUMN suspended_at timestamptz,
    -- When the centre last received the node's heartbeat (the centre's clock, never the node's).
    ADD COLUMN last_seen    timestamptz,
    -- The node's software version, as its last heartbeat said.
    ADD COLUMN node_version text;

CREATE TABLE writecard.outlet_audit (
    audit_id     bigserial PRIMARY KEY,
    outlet_code  text NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    -- Who: an ops login (`--by`) for commands, the outlet's broker user for what a node did.
    actor        text NOT NULL,
    action       text NOT NULL CHECK (action IN ('provision', 'rotate', 'suspend', 'resume', 'revoke')),
    reason       text NOT NULL,
    -- What changed, for people (key fingerprints, scripts expired); never a secret.
    detail       jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX outlet_audit_by_outlet ON writecard.outlet_audit (outlet_code, audit_id DESC);
