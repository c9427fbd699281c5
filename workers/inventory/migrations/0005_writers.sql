-- The writer ledger (写卡器发放明细): card writers as assets of a branch, and every step of
-- each one, append-only.
--
-- A branch is named by its secondary warehouse (二级库在用仓库编码), which records the issue.
-- The outlet and its agent are copied from the write-card worker's outlet register when the
-- writer is issued (this schema never reads another's tables).

CREATE TABLE inventory.writers (
    writer_serial   text PRIMARY KEY,
    model           text NOT NULL,
    purchase_ref    text NOT NULL,
    branch_code     text NOT NULL REFERENCES inventory.warehouses,
    state           text NOT NULL CHECK (state IN ('in_stock', 'issued', 'in_repair', 'written_off')),
    outlet_code     text,
    agent_code      text REFERENCES inventory.agents,
    purchased_by    text NOT NULL,
    purchased_at    timestamptz NOT NULL DEFAULT now(),
    moved_at        timestamptz NOT NULL DEFAULT now(),
    -- An issued writer names its outlet and agent; no other state does.
    CHECK ((state = 'issued') = (outlet_code IS NOT NULL AND agent_code IS NOT NULL))
);

-- At most one writer per outlet: an outlet node drives one reader.
CREATE UNIQUE INDEX writers_one_per_outlet ON inventory.writers (outlet_code) WHERE state = 'issued';
CREATE INDEX writers_by_agent ON inventory.writers (agent_code) WHERE state = 'issued';
CREATE INDEX writers_by_branch ON inventory.writers (branch_code);

CREATE TABLE inventory.writer_ledger (
    entry_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    writer_serial   text NOT NULL REFERENCES inventory.writers,
    event           text NOT NULL CHECK (event IN ('purchased', 'issued', 'returned', 'repair_out', 'repair_back', 'written_off')),
    from_state      text,
    to_state        text NOT NULL,
    outlet_code     text,
    agent_code      text,
    staff_id        text NOT NULL,
    note            text,
    job_message_id  text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX writer_ledger_by_writer ON inventory.writer_ledger (writer_serial, entry_id);

CREATE FUNCTION inventory.refuse_writer_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'inventory.writer_ledger is append-only';
END;
$$;

CREATE TRIGGER writer_ledger_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON inventory.writer_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION inventory.refuse_writer_ledger_change();
