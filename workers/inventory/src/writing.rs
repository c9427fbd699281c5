//! What the write-card worker asks of the inventory, and the card state changes it makes:
//! the card (type, state, which agent holds it), the agent and the clerk's department, and
//! marking a card written, damaged or sold — each with its ledger entry in the same statement.
//!
//! The write-card worker never reads or writes `inventory.*` tables itself; it calls these.

use serde::Serialize;
use sqlx::PgConnection;

pub use crate::movement::Cause;
use crate::movement::{self, Movement, Which};
use crate::states::{CardState, LedgerEvent};

/// A card as the write path sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct CardForWrite {
    /// ICCID.
    pub iccid: String,
    /// Card type code.
    pub card_type: String,
    /// Its state.
    pub state: CardState,
    /// The agent holding the card, when it is issued to one.
    pub agent_code: Option<String>,
}

/// Looks a card up and locks it for the rest of the transaction (so two write requests for
/// one card serialise).
pub async fn card_for_write(
    db: &mut PgConnection,
    iccid: &str,
) -> Result<Option<CardForWrite>, sqlx::Error> {
    sqlx::query_as(
        "SELECT iccid, card_type, state, CASE WHEN location_kind = 'agent' THEN agent_code END AS agent_code \
         FROM inventory.cards WHERE iccid = $1 FOR UPDATE",
    )
    .bind(iccid)
    .fetch_optional(db)
    .await
}

/// Looks a card up without locking (for read answers).
pub async fn card(db: &mut PgConnection, iccid: &str) -> Result<Option<CardForWrite>, sqlx::Error> {
    sqlx::query_as(
        "SELECT iccid, card_type, state, CASE WHEN location_kind = 'agent' THEN agent_code END AS agent_code \
         FROM inventory.cards WHERE iccid = $1",
    )
    .bind(iccid)
    .fetch_optional(db)
    .await
}

/// An agent (social channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Agent {
    /// ESS department code.
    pub ess_code: String,
    /// Name.
    pub name: String,
    /// Department ID.
    pub department_id: String,
    /// Still active.
    pub active: bool,
}

/// Looks an agent up by ESS department code.
pub async fn agent(db: &mut PgConnection, ess_code: &str) -> Result<Option<Agent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT ess_code, name, department_id, active FROM inventory.agents WHERE ess_code = $1",
    )
    .bind(ess_code)
    .fetch_optional(db)
    .await
}

/// The department of an active staff ID, if it exists.
pub async fn staff_department(
    db: &mut PgConnection,
    staff_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT department_id FROM inventory.staff WHERE staff_id = $1 AND active")
        .bind(staff_id)
        .fetch_optional(db)
        .await
}

/// A state change of one card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Blank → written (the on-site write succeeded and the card proved its key).
    Written,
    /// Blank or written → damaged (a write broke it, or a written order was cancelled).
    Damaged,
    /// Written → sold (final submit opened the line).
    Sold,
}

impl Mark {
    fn movement(self) -> (LedgerEvent, CardState, &'static [CardState]) {
        match self {
            Mark::Written => (
                LedgerEvent::Written,
                CardState::Written,
                &[CardState::Blank],
            ),
            Mark::Damaged => (
                LedgerEvent::Damaged,
                CardState::Damaged,
                &[CardState::Blank, CardState::Written],
            ),
            Mark::Sold => (LedgerEvent::Sold, CardState::Sold, &[CardState::Written]),
        }
    }
}

/// Changes a card's state where it is, with a ledger entry. Returns false when the card was not
/// in a state the change starts from (nothing changes then).
pub async fn mark(
    db: &mut PgConnection,
    iccid: &str,
    mark: Mark,
    cause: Cause<'_>,
) -> Result<bool, sqlx::Error> {
    let (event, new_state, in_states) = mark.movement();
    let changed = movement::move_cards(
        db,
        &Movement {
            event,
            which: Which::One(iccid),
            from: None,
            to: None,
            in_states,
            new_state: Some(new_state),
            release_holds: false,
            cause,
        },
    )
    .await?;
    Ok(changed == 1)
}
