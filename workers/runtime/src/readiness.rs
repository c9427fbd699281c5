//! Readiness of a process's dependencies, as health components: the database (reachable and
//! migrated) and, per worker, the broker (connected, consuming, not blocking publishers; the
//! worker loop reports that itself).
//!
//! A process starts and stays up without its database: [`until_database_ready`] retries its
//! first connection and migrations with backoff while the `database` component says why it is
//! not ready, and [`watch_database`] keeps checking afterwards. `/readyz` is ready only when
//! every component is; `/livez` answers as long as the process serves.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::Health;
use crate::retry;

/// The health component of the database.
pub const DATABASE: &str = "database";

/// How often [`watch_database`] checks the database.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Runs `prepare` (connect, migrate) until it succeeds (`Some`) or shutdown (`None`), with
/// backoff; while it fails, the `database` component is not ready and says why.
pub async fn until_database_ready<T, F, Fut>(
    health: &Health,
    shutdown: &CancellationToken,
    mut prepare: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    health.set(DATABASE, false, "connecting to the database");
    let never_final = |_: &anyhow::Error| false;
    let prepared = retry::until_connected_unless("the database", shutdown, never_final, || {
        let attempt = prepare();
        async move {
            let result = attempt.await;
            if let Err(error) = &result {
                health.set(
                    DATABASE,
                    false,
                    &format!("not ready: the database is unreachable or not migrated: {error:#}"),
                );
            }
            result
        }
    })
    .await;
    match prepared {
        Ok(Some(value)) => {
            health.set(DATABASE, true, "reachable");
            Some(value)
        }
        Ok(None) | Err(_) => None,
    }
}

/// Checks the database every few seconds until shutdown and keeps the `database` component
/// true to what it finds.
pub fn watch_database(
    pool: PgPool,
    health: Health,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let check = tokio::time::timeout(
                CHECK_EVERY,
                sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pool),
            )
            .await;
            match check {
                Ok(Ok(_)) => health.set(DATABASE, true, "reachable"),
                Ok(Err(error)) => health.set(
                    DATABASE,
                    false,
                    &format!("not ready: the database is unreachable: {error}"),
                ),
                Err(_) => health.set(
                    DATABASE,
                    false,
                    "not ready: the database did not answer within 5 s",
                ),
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    })
}
