-- Blank cards and their append-only ledger.
--
-- A card is in exactly one place: a warehouse, in transit on a transfer, or with an agent.
-- Its state is orthogonal: blank, written, sold, damaged. Holds (a transfer that is not yet
-- approved out, a prepared batch issue) mark a card without moving it.

CREATE TABLE inventory.cards (
    iccid           text COLLATE "C" PRIMARY KEY,
    card_type       text NOT NULL REFERENCES inventory.card_types,
    -- The department ID that HQ CRM holds for the card (批量领卡 compares it with the staff's).
    department_id   text NOT NULL,
    state           text NOT NULL CHECK (state IN ('blank', 'written', 'sold', 'damaged')),
    location_kind   text NOT NULL CHECK (location_kind IN ('warehouse', 'in_transit', 'agent')),
    warehouse_code  text REFERENCES inventory.warehouses,
    agent_code      text REFERENCES inventory.agents,
    transfer_id     uuid,
    -- A prepared batch issue holds the card until it is committed or the hold lapses.
    batch_id        uuid,
    batch_hold_until timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (
        (location_kind = 'warehouse'  AND warehouse_code IS NOT NULL AND agent_code IS NULL) OR
        (location_kind = 'in_transit' AND warehouse_code IS NULL AND agent_code IS NULL AND transfer_id IS NOT NULL) OR
        (location_kind = 'agent'      AND agent_code IS NOT NULL AND warehouse_code IS NULL)
    )
-- Room on every page so that setting a hold (transfer_id, batch_id: in no index) is a HOT update.
) WITH (fillfactor = 80);

CREATE INDEX cards_in_warehouse ON inventory.cards (warehouse_code, card_type, state, iccid)
    WHERE location_kind = 'warehouse';
CREATE INDEX cards_with_agent ON inventory.cards (agent_code, card_type, state)
    WHERE location_kind = 'agent';
-- No index on transfer_id or batch_id, on purpose: holds are set on up to 100,000 cards at a
-- time and must stay cheap (HOT updates). Jobs find their held cards through the primary key,
-- between the lowest and highest ICCID they hold, which every transfer and batch records.

-- Every movement and state change of a card, in order. Locations are written
-- 'warehouse:<code>', 'transit:<transfer id>' or 'agent:<ess code>'.
CREATE TABLE inventory.card_ledger (
    entry_id        bigserial PRIMARY KEY,
    iccid           text COLLATE "C" NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    event           text NOT NULL,
    from_location   text,
    to_location     text NOT NULL,
    state_after     text NOT NULL,
    reference       text,
    staff_id        text,
    job_message_id  text
);

CREATE INDEX card_ledger_by_card ON inventory.card_ledger (iccid, entry_id);

CREATE FUNCTION inventory.refuse_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'inventory.card_ledger is append-only';
END;
$$;

CREATE TRIGGER card_ledger_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON inventory.card_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION inventory.refuse_ledger_change();

-- The location of a card, in the ledger's notation.
CREATE FUNCTION inventory.location_of(location_kind text, warehouse_code text, agent_code text, transfer_id uuid)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE location_kind
        WHEN 'warehouse' THEN 'warehouse:' || warehouse_code
        WHEN 'in_transit' THEN 'transit:' || transfer_id::text
        ELSE 'agent:' || agent_code
    END
$$;
