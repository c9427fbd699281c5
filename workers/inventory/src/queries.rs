//! Read-only inventory views for people and tools: stock per warehouse, per agent and per card
//! type and state; one card's full ledger history; and reconciliation, which replays the ledger
//! and compares where it says each card is with where the card table says it is.
//!
//! Nothing here writes. Every query is one set-based statement, fit for millions of cards.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

/// Cards in one place, of one type and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct StockLine {
    /// Where: a warehouse code, an agent's ESS code, or `in transit`.
    pub place: String,
    /// Card type code.
    pub card_type: String,
    /// Card state.
    pub state: String,
    /// How many cards.
    pub cards: i64,
}

/// Stock per warehouse (cards in transit listed as `in transit`).
pub async fn stock_by_warehouse(db: &mut PgConnection) -> Result<Vec<StockLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT coalesce(warehouse_code, 'in transit') AS place, card_type, state, count(*) AS cards \
         FROM inventory.cards WHERE location_kind IN ('warehouse', 'in_transit') \
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(db)
    .await
}

/// Stock per agent.
pub async fn stock_by_agent(db: &mut PgConnection) -> Result<Vec<StockLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT agent_code AS place, card_type, state, count(*) AS cards \
         FROM inventory.cards WHERE location_kind = 'agent' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    )
    .fetch_all(db)
    .await
}

/// Cards per card type and state, wherever they are (place = `all`).
pub async fn stock_by_card_type(db: &mut PgConnection) -> Result<Vec<StockLine>, sqlx::Error> {
    sqlx::query_as(
        "SELECT 'all' AS place, card_type, state, count(*) AS cards FROM inventory.cards \
         GROUP BY 2, 3 ORDER BY 2, 3",
    )
    .fetch_all(db)
    .await
}

/// Cards that went through one ledger event in one unit, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UnitEventCount {
    /// The unit's id (`inventory.units`), as text; `unknown` when no place of the entry
    /// belongs to a known unit.
    pub unit: String,
    /// The ledger event (`received`, `transfer_out`, `transfer_in`, `issued`, `returned`,
    /// `written`, `damaged`, `sold`).
    pub event: String,
    /// How many cards.
    pub cards: i64,
}

/// Every ledger event, as the ledger spells it (`inventory::states::LedgerEvent`).
pub const LEDGER_EVENTS: [&str; 8] = [
    "received",
    "transfer_out",
    "transfer_in",
    "issued",
    "returned",
    "written",
    "damaged",
    "sold",
];

/// Cards per unit and ledger event since the ledger began: the business counters ops graph
/// (`simflow_cards_total{unit,event}`), one row for every unit and event (zeros included).
/// The ledger is append-only and written in the same transaction as each movement, so these
/// counts include only committed work, count every card once per movement (a duplicate job
/// writes no entry), and include receipts made outside the workers (`simflow seed cards`). An
/// entry's unit is its target warehouse's, else its source warehouse's, else the agent's
/// (`unknown` when none is known). One scan of the ledger: its cost grows with the ledger
/// (README has the measurement), so callers cache the result.
pub async fn card_events_by_unit(
    db: &mut PgConnection,
) -> Result<Vec<UnitEventCount>, sqlx::Error> {
    sqlx::query_as::<_, (Option<String>, String, i64)>(
        "WITH per_place AS ( \
            SELECT event, coalesce(to_location, '') AS to_place, \
                   coalesce(from_location, '') AS from_place, count(*) AS cards \
            FROM inventory.card_ledger GROUP BY 1, 2, 3), \
         counted AS ( \
            SELECT coalesce(target.unit_id, source.unit_id, agent.unit_id, former.unit_id)::text \
                       AS unit, event, sum(cards)::bigint AS cards \
            FROM per_place \
            LEFT JOIN inventory.warehouses target ON to_place = 'warehouse:' || target.code \
            LEFT JOIN inventory.warehouses source ON from_place = 'warehouse:' || source.code \
            LEFT JOIN inventory.agents agent ON to_place = 'agent:' || agent.ess_code \
            LEFT JOIN inventory.agents former ON from_place = 'agent:' || former.ess_code \
            GROUP BY 1, 2), \
         every AS ( \
            SELECT unit_id::text AS unit, event FROM inventory.units \
            CROSS JOIN unnest($1::text[]) AS events(event)) \
         SELECT coalesce(every.unit, counted.unit), coalesce(every.event, counted.event), \
                coalesce(counted.cards, 0) \
         FROM every FULL JOIN counted ON counted.unit = every.unit AND counted.event = every.event \
         ORDER BY 1, 2",
    )
    .bind(&LEDGER_EVENTS[..])
    .fetch_all(db)
    .await
    .map(|rows| {
        rows.into_iter()
            .map(|(unit, event, cards)| UnitEventCount {
                unit: unit.unwrap_or_else(|| "unknown".to_owned()),
                event,
                cards,
            })
            .collect()
    })
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LedgerEntry {
    /// Entry number (global order).
    pub entry_id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// What happened (`received`, `transfer_out`, `transfer_in`, `issued`, `returned`, …).
    pub event: String,
    /// From where.
    pub from_location: Option<String>,
    /// To where.
    pub to_location: String,
    /// The card's state afterwards.
    pub state_after: String,
    /// The transfer, batch, return or order id.
    pub reference: Option<String>,
    /// The acting staff ID.
    pub staff_id: Option<String>,
}

/// A card as it is now, with its history.
#[derive(Debug, Clone, Serialize)]
pub struct CardHistory {
    /// The ICCID.
    pub iccid: String,
    /// Card type.
    pub card_type: String,
    /// State now.
    pub state: String,
    /// Location now, in the ledger's notation.
    pub location: String,
    /// Every ledger entry, oldest first.
    pub entries: Vec<LedgerEntry>,
}

/// One card's current state and full ledger history, or `None` if no such card.
pub async fn card_history(
    db: &mut PgConnection,
    iccid: &str,
) -> Result<Option<CardHistory>, sqlx::Error> {
    let card: Option<(String, String, String)> = sqlx::query_as(
        "SELECT card_type, state, inventory.location_of(location_kind, warehouse_code, agent_code, transfer_id) \
         FROM inventory.cards WHERE iccid = $1",
    )
    .bind(iccid)
    .fetch_optional(&mut *db)
    .await?;
    let Some((card_type, state, location)) = card else {
        return Ok(None);
    };
    let entries = sqlx::query_as(
        "SELECT entry_id, at, event, from_location, to_location, state_after, reference, staff_id \
         FROM inventory.card_ledger WHERE iccid = $1 ORDER BY entry_id",
    )
    .bind(iccid)
    .fetch_all(&mut *db)
    .await?;
    Ok(Some(CardHistory {
        iccid: iccid.to_owned(),
        card_type,
        state,
        location,
        entries,
    }))
}

/// A card whose ledger and current state disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Mismatch {
    /// The ICCID.
    pub iccid: String,
    /// What is wrong: `no_ledger`, `broken_chain` (an entry does not start where the previous
    /// one ended), `location` or `state` (the last entry disagrees with the card table),
    /// `orphan_ledger` (entries for a card that does not exist).
    pub problem: String,
    /// What the ledger says.
    pub ledger: Option<String>,
    /// What the card table says.
    pub current: Option<String>,
}

/// The result of a reconciliation.
#[derive(Debug, Clone, Serialize)]
pub struct Reconciliation {
    /// Cards checked.
    pub cards: i64,
    /// Ledger entries replayed.
    pub entries: i64,
    /// Disagreements (at most `limit`).
    pub mismatches: Vec<Mismatch>,
}

/// Replays the ledger per card and compares it with the card table.
pub async fn reconcile(db: &mut PgConnection, limit: i64) -> Result<Reconciliation, sqlx::Error> {
    let (cards, entries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM inventory.cards), (SELECT count(*) FROM inventory.card_ledger)",
    )
    .fetch_one(&mut *db)
    .await?;
    let mismatches = sqlx::query_as(
        "WITH replay AS ( \
            SELECT iccid, entry_id, from_location, to_location, state_after, \
                   lag(to_location) OVER (PARTITION BY iccid ORDER BY entry_id) AS previous_to, \
                   row_number() OVER (PARTITION BY iccid ORDER BY entry_id DESC) AS from_end \
            FROM inventory.card_ledger), \
         chains AS ( \
            SELECT DISTINCT ON (iccid) iccid, coalesce(previous_to, '(start)') AS ledger, coalesce(from_location, '(start)') AS current \
            FROM replay WHERE from_location IS DISTINCT FROM previous_to ORDER BY iccid, entry_id), \
         last AS (SELECT * FROM replay WHERE from_end = 1), \
         now_ AS (SELECT iccid, state, inventory.location_of(location_kind, warehouse_code, agent_code, transfer_id) AS location \
                  FROM inventory.cards) \
         SELECT iccid, problem, ledger, current FROM ( \
            SELECT n.iccid, 'no_ledger' AS problem, NULL AS ledger, n.location AS current \
                FROM now_ n LEFT JOIN last l USING (iccid) WHERE l.iccid IS NULL \
            UNION ALL SELECT iccid, 'broken_chain', ledger, current FROM chains \
            UNION ALL SELECT n.iccid, 'location', l.to_location, n.location \
                FROM now_ n JOIN last l USING (iccid) WHERE l.to_location <> n.location \
            UNION ALL SELECT n.iccid, 'state', l.state_after, n.state \
                FROM now_ n JOIN last l USING (iccid) WHERE l.state_after <> n.state \
            UNION ALL SELECT l.iccid, 'orphan_ledger', l.to_location, NULL \
                FROM last l LEFT JOIN now_ n USING (iccid) WHERE n.iccid IS NULL \
         ) AS found ORDER BY iccid, problem LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    Ok(Reconciliation {
        cards,
        entries,
        mismatches,
    })
}
