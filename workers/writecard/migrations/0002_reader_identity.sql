-- Reader identity (the writer ledger's check at the centre): the reader each outlet node last
-- reported when it connected, the reader that ran each write script, and every time an outlet
-- used a reader the writer ledger has not issued to it.

CREATE TABLE writecard.reader_reports (
    outlet_code  text PRIMARY KEY REFERENCES writecard.outlets,
    -- `ReaderIdentity` as reported (name, vendor, IFD type, serial and its source); NULL when
    -- the node had no reader.
    reader       jsonb,
    serial       text,
    reported_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE writecard.scripts ADD COLUMN reader_serial text;

CREATE TABLE writecard.foreign_readers (
    flag_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outlet_code  text NOT NULL,
    reader       jsonb,
    serial       text,
    seen_in      text NOT NULL CHECK (seen_in IN ('connect', 'write_result')),
    script_id    uuid,
    -- The outlet the writer ledger has this serial with, if any.
    issued_to    text,
    action       text NOT NULL CHECK (action IN ('flagged', 'refused')),
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX foreign_readers_by_outlet ON writecard.foreign_readers (outlet_code, flag_id);
