//! The raw equivalents benchmarks compare the workers with: one bare `UPDATE` moving a range of
//! cards to an agent or back, with no rules, no holds and no ledger. Not for production use;
//! it lives here because only this crate touches `inventory.*` tables.

use sqlx::PgPool;

/// Where a raw move puts the cards.
#[derive(Debug, Clone, Copy)]
pub enum RawPlace<'a> {
    /// With the agent of this ESS department code.
    Agent(&'a str),
    /// Into the warehouse of this code.
    Warehouse(&'a str),
}

/// Moves every card from `first` to `last` to `place` in one statement; returns the rows moved.
pub async fn move_range(
    pool: &PgPool,
    first: &str,
    last: &str,
    place: RawPlace<'_>,
) -> Result<u64, sqlx::Error> {
    let (set, code) = match place {
        RawPlace::Agent(agent) => (
            "location_kind = 'agent', agent_code = $3, warehouse_code = NULL",
            agent,
        ),
        RawPlace::Warehouse(warehouse) => (
            "location_kind = 'warehouse', warehouse_code = $3, agent_code = NULL",
            warehouse,
        ),
    };
    let statement = format!(
        "UPDATE inventory.cards SET {set}, updated_at = now() \
         WHERE iccid BETWEEN $1 AND $2 AND length(iccid) = length($1)"
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(first)
        .bind(last)
        .bind(code)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Refreshes the planner's statistics of the card table (after a bulk load).
pub async fn analyze(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("VACUUM ANALYZE inventory.cards")
        .execute(pool)
        .await?;
    Ok(())
}
