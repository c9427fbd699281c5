-- Imports write their rows straight into the live table, once; the import's state decides
-- whether readers see them. `carddata.card_rows` holds every row (of finished imports and of
-- imports still staging); `carddata.cards` is the view readers use: the rows of 'done' imports.
-- Promotion refuses conflicts, deletes the refused rows and flips the one `imports` row.
--
-- The unique constraints on ICCID and IMSI move from the table to promotion (which runs under
-- a SHARE ROW EXCLUSIVE lock on card_rows, so promotions take turns): an import still staging
-- may hold an ICCID that a finished import holds, until promotion refuses or drops its row.
--
-- Format v2 of the secrets: `secrets` holds the whole secret record of a card (Ki, OPc, ADM1,
-- PIN/PUK; see secrets::SecretRecord) as ONE AES-256-GCM value (nonce ‖ ciphertext ‖ tag) with
-- associated data `simflow.carddata.v2.record ‖ iccid`. Rows written before this migration keep
-- format v1 (ki, opc, adm1, pin1…puk2 sealed one by one) until rotate-kek rewrites them as v2.

ALTER TABLE carddata.cards RENAME TO card_rows;
ALTER TABLE carddata.card_rows DROP CONSTRAINT cards_pkey;
ALTER TABLE carddata.card_rows DROP CONSTRAINT cards_imsi_key;
ALTER TABLE carddata.card_rows
    ALTER COLUMN ki DROP NOT NULL,
    ALTER COLUMN opc DROP NOT NULL,
    ALTER COLUMN adm1 DROP NOT NULL,
    ALTER COLUMN card_type DROP NOT NULL,
    -- The card's line in its file (for refusals at promotion); NULL for rows from before.
    ADD COLUMN line bigint,
    ADD COLUMN secrets bytea,
    ADD CONSTRAINT card_rows_sealed CHECK (
        secrets IS NOT NULL OR (ki IS NOT NULL AND opc IS NOT NULL AND adm1 IS NOT NULL)
    );

CREATE INDEX card_rows_by_iccid ON carddata.card_rows (iccid);
CREATE INDEX card_rows_by_imsi ON carddata.card_rows (imsi);
-- An import's rows are appended together: a BRIN index finds them at almost no cost to load.
CREATE INDEX card_rows_by_import ON carddata.card_rows USING brin (import_key);

CREATE VIEW carddata.cards AS
SELECT r.iccid, r.imsi, i.card_type, r.fingerprint, r.kek_id, r.secrets, r.ki, r.opc, r.adm1,
       r.pin1, r.puk1, r.pin2, r.puk2, r.acc, r.msisdn, r.mcc, r.mnc, r.smsp, r.name,
       r.import_key, coalesce(i.finished_at, r.imported_at) AS imported_at
FROM carddata.card_rows r
JOIN carddata.imports i ON i.import_key = r.import_key AND i.state = 'done';
