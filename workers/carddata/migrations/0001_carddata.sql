-- Card data (号卡文件): the live card keys, the imports that brought them, and what each import
-- refused. Secret columns hold AES-256-GCM sealed values (nonce ‖ ciphertext ‖ tag) under the
-- key-encryption key named in kek_id; no column ever holds a key in plain text.

CREATE TABLE carddata.imports (
    import_key    bigserial PRIMARY KEY,
    -- A file is identified by its content and the card type it is imported as.
    file_sha256   bytea NOT NULL,
    card_type     text NOT NULL,
    file_name     text NOT NULL,
    started_by    text NOT NULL,
    -- 'staging': rows are being validated into carddata.staged_<import_key>; 'done': promoted.
    state         text NOT NULL CHECK (state IN ('staging', 'done')),
    total_rows    bigint NOT NULL,
    -- The checkpoint: data rows handled (staged or refused) and committed.
    rows_read     bigint NOT NULL DEFAULT 0,
    accepted      bigint,
    rejected      bigint,
    -- The answer as first given, so a re-import reports exactly the same.
    report        jsonb,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (file_sha256, card_type)
);

-- Every refused row of an import: line, column and code (never a value).
CREATE TABLE carddata.import_problems (
    import_key    bigint NOT NULL REFERENCES carddata.imports ON DELETE CASCADE,
    line          bigint NOT NULL,
    column_name   text,
    code          text NOT NULL
);
CREATE INDEX import_problems_by_line ON carddata.import_problems (import_key, line);

CREATE TABLE carddata.cards (
    iccid         text PRIMARY KEY,
    imsi          text NOT NULL UNIQUE,
    card_type     text NOT NULL,
    -- SHA-256 over everything the row says (see validate::fingerprint): same card, same digest.
    fingerprint   bytea NOT NULL,
    kek_id        text NOT NULL,
    ki            bytea NOT NULL,
    opc           bytea NOT NULL,
    adm1          bytea NOT NULL,
    pin1          bytea,
    puk1          bytea,
    pin2          bytea,
    puk2          bytea,
    acc           text,
    msisdn        text,
    mcc           text,
    mnc           text,
    smsp          text,
    name          text,
    -- The import that brought the card (no foreign key: a per-row trigger check would double
    -- the cost of promoting a million rows, and imports rows are never deleted once done).
    import_key    bigint NOT NULL,
    imported_at   timestamptz NOT NULL DEFAULT now()
);
