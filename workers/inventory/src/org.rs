//! Loading organisation data and receiving blank cards into stock.
//!
//! Org files are CSV with a header line: `units.csv` as in the operator's table (seq, names,
//! the two warehouse codes), `staff.csv` (staff ID, name, department ID, warehouse code,
//! permissions separated by `;`; one line per binding) and `agents.csv` (ESS department code,
//! name, unit seq, department ID). Loading is idempotent: a second load updates in place.

use std::io::Read;

use anyhow::{Context, bail};
use serde::Deserialize;
use sqlx::PgConnection;

use crate::iccid::Iccid;

#[derive(Debug, Deserialize)]
struct UnitLine {
    seq: i32,
    unit_zh: String,
    unit_en: String,
    secondary_warehouse: String,
    onsite_target_warehouse: String,
}

#[derive(Debug, Deserialize)]
struct StaffLine {
    staff_id: String,
    name: String,
    department_id: String,
    warehouse_code: String,
    permissions: String,
}

#[derive(Debug, Deserialize)]
struct AgentLine {
    ess_code: String,
    name: String,
    unit_seq: i32,
    department_id: String,
}

fn read_csv<T: for<'de> Deserialize<'de>>(reader: impl Read, what: &str) -> anyhow::Result<Vec<T>> {
    let mut csv = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut lines = Vec::new();
    for (index, record) in csv.deserialize().enumerate() {
        lines.push(record.with_context(|| format!("{what}: line {} is malformed", index + 2))?);
    }
    Ok(lines)
}

/// Loads units and their two warehouses; returns how many units.
pub async fn load_units(db: &mut PgConnection, reader: impl Read) -> anyhow::Result<usize> {
    let units: Vec<UnitLine> = read_csv(reader, "units")?;
    for unit in &units {
        sqlx::query(
            "INSERT INTO inventory.units (unit_id, name_zh, name_en) VALUES ($1, $2, $3) \
             ON CONFLICT (unit_id) DO UPDATE SET name_zh = EXCLUDED.name_zh, name_en = EXCLUDED.name_en",
        )
        .bind(unit.seq)
        .bind(&unit.unit_zh)
        .bind(&unit.unit_en)
        .execute(&mut *db)
        .await?;
        for (code, kind) in [
            (&unit.secondary_warehouse, "secondary"),
            (&unit.onsite_target_warehouse, "onsite_target"),
        ] {
            sqlx::query(
                "INSERT INTO inventory.warehouses (code, unit_id, kind) VALUES ($1, $2, $3) \
                 ON CONFLICT (code) DO UPDATE SET unit_id = EXCLUDED.unit_id, kind = EXCLUDED.kind",
            )
            .bind(code)
            .bind(unit.seq)
            .bind(kind)
            .execute(&mut *db)
            .await?;
        }
    }
    Ok(units.len())
}

/// Loads staff IDs and their warehouse bindings; returns how many lines.
pub async fn load_staff(db: &mut PgConnection, reader: impl Read) -> anyhow::Result<usize> {
    let lines: Vec<StaffLine> = read_csv(reader, "staff")?;
    const KNOWN: [&str; 5] = [
        "transfer_create",
        "transfer_approve",
        "ess_batch",
        "writer_purchase",
        "writers",
    ];
    for line in &lines {
        let permissions: Vec<String> = line
            .permissions
            .split(';')
            .map(str::trim)
            .filter(|permission| !permission.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(unknown) = permissions
            .iter()
            .find(|permission| !KNOWN.contains(&permission.as_str()))
        {
            bail!(
                "staff {}: unknown permission {unknown:?} (known: {KNOWN:?})",
                line.staff_id
            );
        }
        sqlx::query(
            "INSERT INTO inventory.staff (staff_id, name, department_id) VALUES ($1, $2, $3) \
             ON CONFLICT (staff_id) DO UPDATE SET name = EXCLUDED.name, department_id = EXCLUDED.department_id",
        )
        .bind(&line.staff_id)
        .bind(&line.name)
        .bind(&line.department_id)
        .execute(&mut *db)
        .await?;
        if line.warehouse_code.is_empty() {
            continue;
        }
        sqlx::query(
            "INSERT INTO inventory.staff_warehouses (staff_id, warehouse_code, permissions) VALUES ($1, $2, $3) \
             ON CONFLICT (staff_id, warehouse_code) DO UPDATE SET permissions = EXCLUDED.permissions",
        )
        .bind(&line.staff_id)
        .bind(&line.warehouse_code)
        .bind(&permissions)
        .execute(&mut *db)
        .await
        .with_context(|| format!("staff {}: warehouse {} is not loaded", line.staff_id, line.warehouse_code))?;
    }
    Ok(lines.len())
}

/// Loads agents (social channels); returns how many.
pub async fn load_agents(db: &mut PgConnection, reader: impl Read) -> anyhow::Result<usize> {
    let lines: Vec<AgentLine> = read_csv(reader, "agents")?;
    for line in &lines {
        sqlx::query(
            "INSERT INTO inventory.agents (ess_code, name, unit_id, department_id) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (ess_code) DO UPDATE SET name = EXCLUDED.name, unit_id = EXCLUDED.unit_id, \
                 department_id = EXCLUDED.department_id",
        )
        .bind(&line.ess_code)
        .bind(&line.name)
        .bind(line.unit_seq)
        .bind(&line.department_id)
        .execute(&mut *db)
        .await
        .with_context(|| format!("agent {}: unit {} is not loaded", line.ess_code, line.unit_seq))?;
    }
    Ok(lines.len())
}

/// What to receive into stock.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The warehouse receiving the cards (normally a secondary warehouse).
    pub warehouse: String,
    /// Card type code.
    pub card_type: String,
    /// The department ID HQ CRM holds for the cards.
    pub department_id: String,
    /// ICCID body (without check digit) of the first card, e.g. `898601100000000000`.
    pub first_body: u64,
    /// How many consecutive cards.
    pub count: u64,
}

/// The ICCIDs of a receipt, in order.
pub fn receipt_iccids(receipt: &Receipt) -> anyhow::Result<Vec<Iccid>> {
    let width = receipt.first_body.to_string().len();
    (0..receipt.count)
        .map(|offset| {
            let body = format!("{:0width$}", receipt.first_body + offset);
            Iccid::from_body(&body).map_err(|error| anyhow::anyhow!("ICCID body {body}: {error}"))
        })
        .collect()
}

/// Receives blank cards into a warehouse with one ledger entry each; cards that already exist
/// are left alone. Returns how many were new.
pub async fn receive_blank_cards(
    db: &mut PgConnection,
    receipt: &Receipt,
    reference: &str,
) -> anyhow::Result<u64> {
    let iccids: Vec<String> = receipt_iccids(receipt)?
        .into_iter()
        .map(Iccid::into_string)
        .collect();
    let mut received = 0u64;
    for chunk in iccids.chunks(50_000) {
        let inserted: i64 = sqlx::query_scalar(
            "WITH new_cards AS ( \
                INSERT INTO inventory.cards (iccid, card_type, department_id, state, location_kind, warehouse_code) \
                SELECT iccid, $2, $3, 'blank', 'warehouse', $4 FROM unnest($1::text[]) AS iccid \
                ON CONFLICT (iccid) DO NOTHING RETURNING iccid), \
             logged AS ( \
                INSERT INTO inventory.card_ledger (iccid, event, from_location, to_location, state_after, reference) \
                SELECT iccid, 'received', NULL, 'warehouse:' || $4, 'blank', $5 FROM new_cards RETURNING 1) \
             SELECT count(*) FROM logged",
        )
        .bind(chunk)
        .bind(&receipt.card_type)
        .bind(&receipt.department_id)
        .bind(&receipt.warehouse)
        .bind(reference)
        .fetch_one(&mut *db)
        .await
        .with_context(|| format!("receiving cards into {}", receipt.warehouse))?;
        received += u64::try_from(inserted).unwrap_or_default();
    }
    Ok(received)
}
