//! Every backoff decision of simflow, and the only module that uses the `backoff` crate.
//!
//! `backoff` 0.4 is flagged unmaintained (RUSTSEC-2025-0012) and pulls `instant`
//! (RUSTSEC-2024-0384); the product owner chose it, so it stays behind this module's three
//! functions and can be swapped without touching the rest of the runtime.
//!
//! Three kinds of waiting live here: reconnecting to the broker (forever, capped interval),
//! quick in-process tries of a transient job failure, and the choice of TTL retry queue (with
//! jitter) for a job that keeps failing.

use std::future::Future;
use std::time::Duration;

use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Backoff for (re)connecting to the broker or the database: starts at 200 ms, doubles up to
/// 3 s, ±50 % jitter, never gives up on its own. (Up to 10 s, a broker restart of ~20 s cost
/// the workers up to 50 s in the chaos run: they slept through the broker's return.)
fn reconnect_policy() -> ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(200))
        .with_max_interval(Duration::from_secs(3))
        .with_multiplier(2.0)
        .with_randomization_factor(0.5)
        .with_max_elapsed_time(None)
        .build()
}

/// Tries `connect` until it succeeds (`Ok(Some)`), shutdown is requested (`Ok(None)`), or it
/// fails with an error `is_final` says retrying cannot fix (refused credentials or
/// permissions): `Err(that error)`.
pub(crate) async fn until_connected_unless<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    is_final: impl Fn(&E) -> bool,
    mut connect: F,
) -> Result<Option<T>, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut policy = reconnect_policy();
    loop {
        match connect().await {
            Ok(value) => return Ok(Some(value)),
            Err(error) if is_final(&error) => return Err(error),
            Err(error) => {
                let wait = policy.next_backoff().unwrap_or(policy.max_interval);
                tracing::warn!(%error, wait_ms = wait.as_millis() as u64, "cannot connect to {what}; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// The waits between quick in-process tries of a transient failure: 100 ms doubling, ±50 %
/// jitter, at most 1 s each; `tries - 1` waits in all.
pub(crate) fn in_process_waits(tries: u32) -> Vec<Duration> {
    let mut policy = ExponentialBackoffBuilder::new()
        .with_initial_interval(Duration::from_millis(100))
        .with_max_interval(Duration::from_secs(1))
        .with_multiplier(2.0)
        .with_randomization_factor(0.5)
        .with_max_elapsed_time(None)
        .build();
    (1..tries)
        .map(|_| policy.next_backoff().unwrap_or(policy.max_interval))
        .collect()
}

/// The retry queue level for the `retry_number`-th retry (1-based) and a jitter to wait before
/// publishing to it, so that jobs failing together do not come back together.
/// The jitter is up to a tenth of the level, at most 2 s.
pub(crate) fn retry_level(retry_number: u32, levels: &[Duration]) -> (Duration, Duration) {
    let index = usize::try_from(retry_number.saturating_sub(1))
        .unwrap_or(usize::MAX)
        .min(levels.len().saturating_sub(1));
    let level = levels.get(index).copied().unwrap_or(Duration::from_secs(1));
    let jitter_cap = (level / 10).min(Duration::from_secs(2));
    let jitter_ms = rand::rng().random_range(0..=jitter_cap.as_millis() as u64);
    (level, Duration::from_millis(jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_climb_the_levels_and_stay_on_the_last() {
        let levels = [
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(30),
        ];
        assert_eq!(retry_level(1, &levels).0, Duration::from_secs(1));
        assert_eq!(retry_level(2, &levels).0, Duration::from_secs(5));
        assert_eq!(retry_level(3, &levels).0, Duration::from_secs(30));
        assert_eq!(retry_level(9, &levels).0, Duration::from_secs(30));
    }

    #[test]
    fn jitter_stays_within_a_tenth_of_the_level_and_two_seconds() {
        let levels = [Duration::from_secs(5), Duration::from_secs(120)];
        for _ in 0..200 {
            assert!(retry_level(1, &levels).1 <= Duration::from_millis(500));
            assert!(retry_level(2, &levels).1 <= Duration::from_secs(2));
        }
    }

    #[test]
    fn in_process_waits_grow_and_are_bounded() {
        let waits = in_process_waits(6);
        assert_eq!(waits.len(), 5);
        assert!(
            waits
                .iter()
                .all(|wait| *wait <= Duration::from_millis(1500))
        );
        assert!(waits[0] <= Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn reconnecting_backs_off_and_stops_on_shutdown() {
        let shutdown = CancellationToken::new();
        let mut tries = 0;
        let started = tokio::time::Instant::now();
        let never_final = |_: &&str| false;
        let connected = until_connected_unless("nothing", &shutdown, never_final, || {
            tries += 1;
            let attempt = tries;
            async move {
                if attempt < 4 {
                    Err("refused")
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(connected, Ok(Some(4)));
        // Three waits of 200, 400 and 800 ms, each ±50 %.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(700) && waited <= Duration::from_millis(2100),
            "{waited:?}"
        );

        shutdown.cancel();
        let never: Result<Option<()>, &str> =
            until_connected_unless("nothing", &shutdown, never_final, || async {
                Err::<(), _>("refused")
            })
            .await;
        assert_eq!(never, Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_refusal_ends_the_tries_at_once() {
        let shutdown = CancellationToken::new();
        let mut tries = 0;
        let refused: Result<Option<()>, &str> = until_connected_unless(
            "nothing",
            &shutdown,
            |error: &&str| *error == "refused",
            || {
                tries += 1;
                async { Err("refused") }
            },
        )
        .await;
        assert_eq!(refused, Err("refused"));
        assert_eq!(tries, 1);
    }
}
