-- Batch issue to agents (批量领卡: prepare, then commit) and batch return from agents (批量退卡).

CREATE TABLE inventory.issue_batches (
    batch_id        uuid PRIMARY KEY,
    warehouse_code  text NOT NULL REFERENCES inventory.warehouses,
    agent_code      text NOT NULL REFERENCES inventory.agents,
    card_type       text NOT NULL REFERENCES inventory.card_types,
    -- The department ID of the preparing staff ID, which every card of the batch carries.
    department_id   text NOT NULL,
    selection       jsonb NOT NULL,
    state           text NOT NULL CHECK (state IN ('prepared', 'committed', 'expired')),
    card_count      integer NOT NULL,
    first_iccid     text NOT NULL,
    last_iccid      text NOT NULL,
    acceptance_slip text NOT NULL,
    prepared_by     text NOT NULL,
    prepared_at     timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    committed_by    text,
    committed_at    timestamptz
);

CREATE TABLE inventory.returns (
    return_id          uuid PRIMARY KEY,
    warehouse_code     text NOT NULL REFERENCES inventory.warehouses,
    agent_code         text NOT NULL REFERENCES inventory.agents,
    staff_id           text NOT NULL,
    -- What the caller asked for (list or range), to tell a re-sent return from a conflicting one.
    selection          jsonb NOT NULL,
    requested_count    integer NOT NULL,
    success_count      integer NOT NULL,
    failed_count       integer NOT NULL,
    return_amount_fen  bigint NOT NULL CHECK (return_amount_fen >= 0),
    paid_amount_fen    bigint NOT NULL CHECK (paid_amount_fen >= 0),
    -- The answer as sent, so a re-sent return gets the same answer.
    answer             jsonb NOT NULL,
    committed_at       timestamptz NOT NULL DEFAULT now()
);

-- Every card a return could not take, and why (the answer lists a bounded number).
CREATE TABLE inventory.return_failures (
    return_id  uuid NOT NULL REFERENCES inventory.returns,
    iccid      text NOT NULL,
    code       text NOT NULL,
    PRIMARY KEY (return_id, iccid)
);
