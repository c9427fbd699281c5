//! The raw equivalents benchmarks compare the workers with: one bare `UPDATE` moving a range of
//! cards to an agent or back, with no rules, no holds and no ledger. Not for production use;
//! it lives here because only this crate touches `inventory.*` tables.

use sqlx::PgPool;

/// Moves every card from `first` to `last` to `agent` in one statement; returns the rows moved.
pub async fn move_range_to_agent(
    pool: &PgPool,
    first: &str,
    last: &str,
    agent: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE inventory.cards SET location_kind = 'agent', agent_code = $3, warehouse_code = NULL, updated_at = now() \
         WHERE iccid BETWEEN $1 AND $2 AND length(iccid) = length($1)",
    )
    .bind(first)
    .bind(last)
    .bind(agent)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Moves every card from `first` to `last` into `warehouse` in one statement.
pub async fn move_range_to_warehouse(
    pool: &PgPool,
    first: &str,
    last: &str,
    warehouse: &str,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE inventory.cards SET location_kind = 'warehouse', warehouse_code = $3, agent_code = NULL, updated_at = now() \
         WHERE iccid BETWEEN $1 AND $2 AND length(iccid) = length($1)",
    )
    .bind(first)
    .bind(last)
    .bind(warehouse)
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
