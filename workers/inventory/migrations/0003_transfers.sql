-- Transfers (调拨, type 下拨) from a secondary warehouse to its unit's on-site target warehouse.

CREATE TABLE inventory.transfers (
    transfer_id       uuid PRIMARY KEY,
    source_warehouse  text NOT NULL REFERENCES inventory.warehouses,
    target_warehouse  text NOT NULL REFERENCES inventory.warehouses,
    card_type         text NOT NULL REFERENCES inventory.card_types,
    -- What the caller asked for, to tell a re-sent create from a conflicting one.
    selection         jsonb NOT NULL,
    state             text NOT NULL CHECK (state IN ('created', 'approved_out', 'approved_in')),
    card_count        integer NOT NULL,
    first_iccid       text NOT NULL,
    last_iccid        text NOT NULL,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    approved_out_by   text,
    approved_out_at   timestamptz,
    approved_in_by    text,
    approved_in_at    timestamptz
);
