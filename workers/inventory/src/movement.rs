//! The one way cards move or change state: one `UPDATE … RETURNING` of `inventory.cards`
//! joined to one `INSERT` into the append-only ledger, set-based whatever the number of cards.
//!
//! A [`Movement`] names which cards (held by a job between two ICCIDs, listed in a `wanted`
//! relation of the caller's statement, or one card), where they must be and in which states,
//! where they go, their new state, and the cause for the ledger. [`move_cards`] runs it alone;
//! [`push_movement`] adds it as the `moved` and `logged` parts of a larger statement, for a
//! rule that also needs to see, in the same snapshot, the cards that did not move (a return).
//!
//! Receiving new cards is not a movement (there is nothing to update) but writes its ledger
//! entries with the same column list, [`LEDGER_COLUMNS`].

use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::states::{CardState, LedgerEvent};

/// The ledger columns every entry fills, in order.
pub const LEDGER_COLUMNS: &str =
    "iccid, event, from_location, to_location, state_after, reference, staff_id, job_message_id";

/// Where a card is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location<'a> {
    /// In a warehouse.
    Warehouse(&'a str),
    /// In transit on a transfer.
    InTransit(Uuid),
    /// With an agent.
    Agent(&'a str),
}

impl Location<'_> {
    /// The ledger's notation: `warehouse:<code>`, `transit:<transfer id>`, `agent:<code>`.
    pub fn notation(&self) -> String {
        match self {
            Location::Warehouse(code) => format!("warehouse:{code}"),
            Location::InTransit(transfer_id) => format!("transit:{transfer_id}"),
            Location::Agent(code) => format!("agent:{code}"),
        }
    }
}

/// What holds cards for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// A transfer, until it is approved out.
    Transfer(Uuid),
    /// A prepared batch issue whose hold has not lapsed.
    Batch(Uuid),
}

/// Which cards a movement takes.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// The cards a job holds, found through the primary key between its lowest and highest
    /// ICCID (holds are in no index, on purpose).
    Held {
        /// The job.
        by: HeldBy,
        /// Its lowest ICCID.
        first: &'a str,
        /// Its highest ICCID.
        last: &'a str,
    },
    /// The cards of the relation `wanted(iccid)` that the caller's statement defines before
    /// the movement ([`push_movement`] only).
    Wanted,
    /// One card.
    One(&'a str),
}

/// Who and what caused a movement, for the ledger.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    /// The transfer, batch, return, order or script.
    pub reference: &'a str,
    /// The acting staff ID, if any.
    pub staff_id: Option<&'a str>,
    /// The job's message id.
    pub job_message_id: &'a str,
}

/// One movement or state change of a set of cards.
#[derive(Debug, Clone, Copy)]
pub struct Movement<'a> {
    /// The ledger event.
    pub event: LedgerEvent,
    /// Which cards.
    pub which: Which<'a>,
    /// Where they must be; `None`: wherever they are (a state change in place).
    pub from: Option<Location<'a>>,
    /// Where they go; `None`: they stay.
    pub to: Option<Location<'a>>,
    /// The states they must be in.
    pub in_states: &'a [CardState],
    /// Their new state; `None`: unchanged.
    pub new_state: Option<CardState>,
    /// Whatever held them (a transfer, a batch) lets go.
    pub release_holds: bool,
    /// For the ledger.
    pub cause: Cause<'a>,
}

/// Runs a movement; returns how many cards moved.
pub async fn move_cards(
    db: &mut PgConnection,
    movement: &Movement<'_>,
) -> Result<u64, sqlx::Error> {
    let mut builder = QueryBuilder::new("WITH ");
    push_movement(&mut builder, movement);
    builder.push(" SELECT count(*) FROM logged");
    let moved: i64 = builder.build_query_scalar().fetch_one(db).await?;
    Ok(u64::try_from(moved).unwrap_or_default())
}

/// Pushes `moved AS (UPDATE …), logged AS (INSERT …)` into a statement's `WITH` list; `moved`
/// returns the moved cards' `iccid`.
pub fn push_movement(builder: &mut QueryBuilder<Postgres>, movement: &Movement<'_>) {
    builder.push("moved AS (UPDATE inventory.cards c SET updated_at = now()");
    match movement.to {
        Some(Location::Warehouse(code)) => {
            builder.push(", location_kind = 'warehouse', warehouse_code = ");
            builder.push_bind(code.to_owned());
            builder.push(", agent_code = NULL");
        }
        Some(Location::InTransit(transfer_id)) => {
            builder.push(", location_kind = 'in_transit', warehouse_code = NULL, agent_code = NULL, transfer_id = ");
            builder.push_bind(transfer_id);
        }
        Some(Location::Agent(code)) => {
            builder.push(", location_kind = 'agent', agent_code = ");
            builder.push_bind(code.to_owned());
            builder.push(", warehouse_code = NULL");
        }
        None => {}
    }
    if let Some(state) = movement.new_state {
        builder.push(", state = ");
        builder.push_bind(state);
    }
    if movement.release_holds {
        if !matches!(movement.to, Some(Location::InTransit(_))) {
            builder.push(", transfer_id = NULL");
        }
        builder.push(", batch_id = NULL, batch_hold_until = NULL");
    }
    match movement.which {
        Which::Wanted => {
            builder.push(" FROM wanted w WHERE c.iccid = w.iccid");
        }
        Which::One(iccid) => {
            builder.push(" WHERE c.iccid = ");
            builder.push_bind(iccid.to_owned());
        }
        Which::Held { by, first, last } => {
            builder.push(" WHERE c.iccid BETWEEN ");
            builder.push_bind(first.to_owned());
            builder.push(" AND ");
            builder.push_bind(last.to_owned());
            match by {
                HeldBy::Transfer(transfer_id) => {
                    builder.push(" AND c.transfer_id = ");
                    builder.push_bind(transfer_id);
                }
                HeldBy::Batch(batch_id) => {
                    builder.push(" AND c.batch_id = ");
                    builder.push_bind(batch_id);
                    builder.push(" AND c.batch_hold_until >= now()");
                }
            }
        }
    }
    match movement.from {
        Some(Location::Warehouse(code)) => {
            builder.push(" AND c.location_kind = 'warehouse' AND c.warehouse_code = ");
            builder.push_bind(code.to_owned());
        }
        Some(Location::InTransit(transfer_id)) => {
            builder.push(" AND c.location_kind = 'in_transit' AND c.transfer_id = ");
            builder.push_bind(transfer_id);
        }
        Some(Location::Agent(code)) => {
            builder.push(" AND c.location_kind = 'agent' AND c.agent_code = ");
            builder.push_bind(code.to_owned());
        }
        None => {}
    }
    match movement.in_states {
        [state] => {
            builder.push(" AND c.state = ");
            builder.push_bind(*state);
        }
        states => {
            builder.push(" AND c.state = ANY(");
            builder.push_bind(states.to_vec());
            builder.push(")");
        }
    }
    builder.push(" RETURNING c.iccid, c.state, ");
    // After the UPDATE the row is where the card went; a card that stays is where it was.
    let here =
        "inventory.location_of(c.location_kind, c.warehouse_code, c.agent_code, c.transfer_id)";
    match movement.from {
        Some(from) => {
            builder.push_bind(from.notation());
        }
        None => {
            builder.push(here);
        }
    }
    builder.push("::text AS from_location, ");
    builder.push(here);
    builder.push(" AS to_location), logged AS (INSERT INTO inventory.card_ledger (");
    builder.push(LEDGER_COLUMNS);
    builder.push(") SELECT iccid, ");
    builder.push_bind(movement.event);
    builder.push(", from_location, to_location, state, ");
    builder.push_bind(movement.cause.reference.to_owned());
    builder.push(", ");
    builder.push_bind(movement.cause.staff_id.map(str::to_owned));
    builder.push(", ");
    builder.push_bind(movement.cause.job_message_id.to_owned());
    builder.push(" FROM moved RETURNING 1)");
}
