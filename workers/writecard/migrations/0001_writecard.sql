-- The write-card path: outlets with their public keys, the number pools, account-opening
-- orders, and the write scripts sent to outlets.

CREATE TABLE writecard.outlets (
    outlet_code      text PRIMARY KEY,
    -- The agent (social channel) the outlet belongs to, by ESS department code.
    agent_code       text NOT NULL,
    -- The X25519 public key scripts are sealed to (base64), and its fingerprint.
    public_key       text NOT NULL,
    key_fingerprint  text NOT NULL,
    broker_user      text NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    provisioned_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz
);

-- Subscriber numbers. A number is reserved for one order at a time; a number written onto a
-- card that was never sold cools down before it is offered again.
CREATE TABLE writecard.msisdns (
    msisdn           text PRIMARY KEY,
    state            text NOT NULL CHECK (state IN ('free', 'reserved', 'in_use', 'cooling')),
    order_id         uuid,
    available_after  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Subscriber identities (IMSI数据). An IMSI once written onto a card is never handed out again
-- unless the line is closed through provisioning (outside simflow).
CREATE TABLE writecard.imsis (
    imsi        text PRIMARY KEY,
    state       text NOT NULL CHECK (state IN ('free', 'reserved', 'in_use', 'retired')),
    order_id    uuid,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX imsis_free ON writecard.imsis (imsi) WHERE state = 'free';

CREATE TABLE writecard.packages (
    package_code     text PRIMARY KEY,
    name_zh          text NOT NULL,
    name_en          text NOT NULL,
    monthly_fee_fen  bigint NOT NULL CHECK (monthly_fee_fen >= 0),
    prepaid_fen      bigint NOT NULL CHECK (prepaid_fen >= 0),
    card_fee_fen     bigint NOT NULL CHECK (card_fee_fen >= 0)
);

INSERT INTO writecard.packages (package_code, name_zh, name_en, monthly_fee_fen, prepaid_fen, card_fee_fen) VALUES
    ('3G-46',  '3G基本套餐46元', '3G basic plan, 46 yuan',    4600,  5000, 0),
    ('3G-96',  '3G畅享套餐96元', '3G unlimited plan, 96 yuan', 9600, 10000, 0),
    ('4G-59',  '4G套餐59元',     '4G plan, 59 yuan',          5900,  5000, 2000);

CREATE TABLE writecard.orders (
    order_id        uuid PRIMARY KEY,
    outlet_code     text NOT NULL REFERENCES writecard.outlets,
    agent_code      text NOT NULL,
    staff_id        text NOT NULL,
    iccid           text NOT NULL,
    card_type       text NOT NULL,
    msisdn          text NOT NULL REFERENCES writecard.msisdns,
    imsi            text NOT NULL REFERENCES writecard.imsis,
    customer_name   text NOT NULL,
    package_code    text NOT NULL REFERENCES writecard.packages,
    state           text NOT NULL CHECK (state IN ('requested', 'written', 'presubmitted', 'submitted', 'cancelled')),
    -- What the card in the order holds: nothing yet, this order's data, or data of a failed write.
    card_written    boolean NOT NULL DEFAULT false,
    fees            jsonb,
    total_fen       bigint,
    acceptance_form text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    written_at      timestamptz,
    presubmitted_at timestamptz,
    submitted_at    timestamptz,
    cancelled_at    timestamptz
);

-- One live order per card: no card is written for two orders (and so with two numbers).
CREATE UNIQUE INDEX orders_one_live_per_card ON writecard.orders (iccid) WHERE state <> 'cancelled';

CREATE TABLE writecard.scripts (
    script_id    uuid PRIMARY KEY,
    order_id     uuid NOT NULL REFERENCES writecard.orders,
    outlet_code  text NOT NULL,
    iccid        text NOT NULL,
    family       text NOT NULL,
    -- The authentication challenge (not secret: RAND and AUTN travel on every radio link).
    rand         bytea NOT NULL,
    autn         bytea NOT NULL,
    sqn          bigint NOT NULL,
    state        text NOT NULL CHECK (state IN ('sent', 'expired', 'written', 'failed', 'damaged')),
    not_after    timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    settled_at   timestamptz,
    -- The event the result produced, so a repeated result gets the same answer.
    answer       jsonb
);
CREATE INDEX scripts_by_order ON writecard.scripts (order_id);

-- The highest SQN used in a challenge per card (the card accepts only a higher one).
CREATE TABLE writecard.card_sqn (
    iccid  text PRIMARY KEY,
    sqn    bigint NOT NULL
);
