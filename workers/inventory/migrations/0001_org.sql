-- Organisation: units with their two warehouses, departments, staff IDs with their warehouse
-- bindings and permissions, social channels (agents), and card types.

CREATE TABLE inventory.units (
    unit_id  integer PRIMARY KEY,
    name_zh  text NOT NULL,
    name_en  text NOT NULL
);

CREATE TABLE inventory.warehouses (
    code     text PRIMARY KEY,
    unit_id  integer NOT NULL REFERENCES inventory.units,
    -- secondary: 二级库在用仓库; onsite_target: 社会渠道现场写卡目标仓库 (自有网点)
    kind     text NOT NULL CHECK (kind IN ('secondary', 'onsite_target')),
    UNIQUE (unit_id, kind)
);

CREATE TABLE inventory.staff (
    staff_id       text PRIMARY KEY,
    name           text NOT NULL,
    department_id  text NOT NULL,
    active         boolean NOT NULL DEFAULT true
);

-- Which warehouses a staff ID works for, with which permissions:
-- transfer_create, transfer_approve (HQ CRM allocation), ess_batch (HQ ESS batch issue/return).
CREATE TABLE inventory.staff_warehouses (
    staff_id        text NOT NULL REFERENCES inventory.staff,
    warehouse_code  text NOT NULL REFERENCES inventory.warehouses,
    permissions     text[] NOT NULL,
    PRIMARY KEY (staff_id, warehouse_code)
);

-- Social channels (社会渠道 / 代理商), chosen by their ESS department code.
CREATE TABLE inventory.agents (
    ess_code       text PRIMARY KEY,
    name           text NOT NULL,
    unit_id        integer NOT NULL REFERENCES inventory.units,
    department_id  text NOT NULL,
    active         boolean NOT NULL DEFAULT true
);

CREATE TABLE inventory.card_types (
    code         text PRIMARY KEY,
    name_zh      text NOT NULL,
    name_en      text NOT NULL,
    network      text NOT NULL,
    form_factor  text NOT NULL
);

INSERT INTO inventory.card_types (code, name_zh, name_en, network, form_factor) VALUES
    ('USIM128K_NORMAL', '128K手机白卡(普通)', '128K handset blank card, normal size', '3G', '2FF'),
    ('USIM128K_MICRO',  '128K手机白卡(微型)', '128K handset blank card, micro', '3G', '3FF'),
    ('USIM_NANO',       '手机白卡(nano)', 'Handset blank card, nano', '4G/5G', '4FF');
