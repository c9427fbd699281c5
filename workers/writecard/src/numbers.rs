//! The number pools: subscriber numbers (MSISDN, chosen by the customer) and subscriber
//! identities (IMSI, handed out in order). Every reservation names the order that holds it, so
//! a number is never given to two orders; an IMSI written onto a card is never handed out again.

use sqlx::PgConnection;
use uuid::Uuid;

/// Adds `count` consecutive numbers starting at `first` (as many digits as `first`) to the
/// MSISDN pool; returns how many were new.
pub async fn add_msisdns(
    db: &mut PgConnection,
    first: u64,
    count: u64,
) -> Result<u64, sqlx::Error> {
    let width = first.to_string().len();
    let numbers: Vec<String> = (0..count)
        .map(|offset| format!("{:0width$}", first + offset))
        .collect();
    let added = sqlx::query(
        "INSERT INTO writecard.msisdns (msisdn, state) SELECT m, 'free' FROM unnest($1::text[]) AS m \
         ON CONFLICT (msisdn) DO NOTHING",
    )
    .bind(&numbers)
    .execute(db)
    .await?
    .rows_affected();
    Ok(added)
}

/// Adds `count` consecutive IMSIs starting at `first` (15 digits) to the IMSI pool.
pub async fn add_imsis(db: &mut PgConnection, first: u64, count: u64) -> Result<u64, sqlx::Error> {
    let imsis: Vec<String> = (0..count)
        .map(|offset| format!("{:015}", first + offset))
        .collect();
    let added = sqlx::query(
        "INSERT INTO writecard.imsis (imsi, state) SELECT i, 'free' FROM unnest($1::text[]) AS i \
         ON CONFLICT (imsi) DO NOTHING",
    )
    .bind(&imsis)
    .execute(db)
    .await?
    .rows_affected();
    Ok(added)
}

/// Reserves the chosen number for an order (again, if the order already holds it). False when
/// the number does not exist or another order holds it.
pub async fn reserve_msisdn(
    db: &mut PgConnection,
    msisdn: &str,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let reserved = sqlx::query(
        "UPDATE writecard.msisdns SET state = 'reserved', order_id = $2, available_after = NULL, updated_at = now() \
         WHERE msisdn = $1 AND (state = 'free' \
            OR (state = 'cooling' AND available_after < now()) \
            OR (state = 'reserved' AND order_id = $2))",
    )
    .bind(msisdn)
    .bind(order_id)
    .execute(db)
    .await?
    .rows_affected();
    Ok(reserved == 1)
}

/// Reserves the lowest free IMSI for an order; `None` when the pool is empty.
pub async fn reserve_imsi(
    db: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE writecard.imsis SET state = 'reserved', order_id = $1, updated_at = now() \
         WHERE imsi = (SELECT imsi FROM writecard.imsis WHERE state = 'free' ORDER BY imsi LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING imsi",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await
}

/// Whether an IMSI is still usable for a write (reserved for this order, not retired).
pub async fn imsi_usable(
    db: &mut PgConnection,
    imsi: &str,
    order_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM writecard.imsis WHERE imsi = $1 AND order_id = $2 AND state = 'reserved')")
        .bind(imsi)
        .bind(order_id)
        .fetch_one(db)
        .await
}

/// Marks an order's number and IMSI in use (the line is open).
pub async fn take_into_use(
    db: &mut PgConnection,
    order_id: Uuid,
    msisdn: &str,
    imsi: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE writecard.msisdns SET state = 'in_use', updated_at = now() WHERE msisdn = $1 AND order_id = $2")
        .bind(msisdn)
        .bind(order_id)
        .execute(&mut *db)
        .await?;
    sqlx::query("UPDATE writecard.imsis SET state = 'in_use', updated_at = now() WHERE imsi = $1 AND order_id = $2")
        .bind(imsi)
        .bind(order_id)
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// Retires an IMSI that was written onto a card that will never be activated.
pub async fn retire_imsi(db: &mut PgConnection, imsi: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE writecard.imsis SET state = 'retired', updated_at = now() WHERE imsi = $1")
        .bind(imsi)
        .execute(db)
        .await?;
    Ok(())
}

/// Gives an order's reservations back. A number that was written onto a card cools down for
/// `cooling_days`; one that never reached a card is free at once. An IMSI that reached a card is
/// retired; one that did not is free again.
pub async fn release(
    db: &mut PgConnection,
    order_id: Uuid,
    msisdn: &str,
    imsi: &str,
    written_to_a_card: bool,
    cooling_days: u32,
) -> Result<(), sqlx::Error> {
    if written_to_a_card {
        sqlx::query(
            "UPDATE writecard.msisdns SET state = 'cooling', order_id = NULL, \
                 available_after = now() + make_interval(days => $3), updated_at = now() \
             WHERE msisdn = $1 AND order_id = $2",
        )
        .bind(msisdn)
        .bind(order_id)
        .bind(i32::try_from(cooling_days).unwrap_or(i32::MAX))
        .execute(&mut *db)
        .await?;
        retire_imsi(db, imsi).await?;
    } else {
        sqlx::query("UPDATE writecard.msisdns SET state = 'free', order_id = NULL, updated_at = now() WHERE msisdn = $1 AND order_id = $2")
            .bind(msisdn)
            .bind(order_id)
            .execute(&mut *db)
            .await?;
        sqlx::query("UPDATE writecard.imsis SET state = 'free', order_id = NULL, updated_at = now() WHERE imsi = $1 AND order_id = $2 AND state = 'reserved'")
            .bind(imsi)
            .bind(order_id)
            .execute(&mut *db)
            .await?;
    }
    Ok(())
}
