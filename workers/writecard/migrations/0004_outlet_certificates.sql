-- Client certificates of outlets that reach the broker over TLS (EXTERNAL login by the
-- certificate's common name, the outlet's broker user). One row per certificate the outlet CA
-- issued, kept after expiry and revocation: the serials are the CRL's source.

CREATE TABLE writecard.outlet_certificates (
    -- Upper-case hex, as the certificate carries it.
    serial        text PRIMARY KEY,
    outlet_code   text NOT NULL REFERENCES writecard.outlets,
    common_name   text NOT NULL,
    not_before    timestamptz NOT NULL,
    not_after     timestamptz NOT NULL,
    issued_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK (not_after > not_before)
);

CREATE INDEX outlet_certificates_by_outlet ON writecard.outlet_certificates (outlet_code, not_after);
