-- ICCIDs and IMSIs are digit strings: compare them byte by byte (COLLATE "C") instead of through
-- the database's locale. Every index insert of an import compares keys, and the conflict checks
-- of promotion join on them; with a libc locale (even C.UTF-8) each comparison goes through
-- strcoll and PostgreSQL cannot use abbreviated keys when it sorts. Digits order the same
-- either way, so no look-up changes its answer.
--
-- The view is dropped and made again because a column it reads cannot change its collation;
-- its definition is the one of 0002. The indexes on the two columns are rebuilt by the ALTER.

DROP VIEW carddata.cards;

ALTER TABLE carddata.card_rows
    ALTER COLUMN iccid TYPE text COLLATE "C",
    ALTER COLUMN imsi TYPE text COLLATE "C";

CREATE VIEW carddata.cards AS
SELECT r.iccid, r.imsi, i.card_type, r.fingerprint, r.kek_id, r.secrets, r.ki, r.opc, r.adm1,
       r.pin1, r.puk1, r.pin2, r.puk2, r.acc, r.msisdn, r.mcc, r.mnc, r.smsp, r.name,
       r.import_key, coalesce(i.finished_at, r.imported_at) AS imported_at
FROM carddata.card_rows r
JOIN carddata.imports i ON i.import_key = r.import_key AND i.state = 'done';
