//! The business counters, served on the console's `/metrics`: `simflow_cards_total{unit,event}`,
//! cards per unit (the org's 20 units, a bounded label) and ledger event (`received`,
//! `transfer_out`, `transfer_in`, `issued`, `returned`, `written`, `damaged`, `sold`).
//!
//! Why from the ledger and not from the workers: every card movement is one append-only ledger
//! entry written in the movement's own transaction, so counting the ledger counts committed
//! work only, never a duplicate (a redelivered job writes no entry), and includes what no
//! worker does (cards received by `simflow seed cards`, damaged cards withdrawn by the
//! write-card worker through the inventory crate). Counting in handlers would add a metric path
//! to every handler and still miss receipts. The price is one scan of the ledger per refresh
//! (`simflow_inventory::queries::card_events_by_unit`), so the result is cached for
//! `[console] business_refresh_seconds` (60 s by default; README has the measured cost).
//! The values only grow (the ledger is append-only), so they are counters; they are served by
//! one process, the console, so no sum double-counts.
//!
//! Beside them, `simflow_foreign_readers_total{seen_in,action}`: the times an outlet reported
//! or wrote with a reader the writer ledger has not issued to it (`writecard.foreign_readers`,
//! through `simflow_writecard::foreign_reader::counts`; the labels are two fixed sets, every
//! pair served from zero).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use simflow_inventory::queries::UnitEventCount;
use tokio::sync::Mutex;

use crate::Console;

/// The cached counts and when they were read.
#[derive(Debug)]
pub struct BusinessCounters {
    refresh: Duration,
    cached: Mutex<Option<Cached>>,
}

#[derive(Debug, Clone)]
struct Cached {
    read_at: Instant,
    counts: Vec<UnitEventCount>,
    foreign_readers: Vec<(String, String, i64)>,
    query_seconds: f64,
}

impl BusinessCounters {
    /// Counters refreshed at most every `refresh`.
    pub fn new(refresh: Duration) -> BusinessCounters {
        BusinessCounters {
            refresh,
            cached: Mutex::new(None),
        }
    }

    /// The text exposition, reading the ledger again when the cache is older than the refresh
    /// interval.
    pub async fn exposition(&self, pool: &sqlx::PgPool) -> anyhow::Result<String> {
        let mut cached = self.cached.lock().await;
        let stale = cached
            .as_ref()
            .is_none_or(|cached| cached.read_at.elapsed() >= self.refresh);
        if stale {
            let started = Instant::now();
            let mut connection = pool.acquire().await?;
            let counts = simflow_inventory::queries::card_events_by_unit(&mut connection).await?;
            let foreign_readers =
                simflow_writecard::foreign_reader::counts(&mut connection).await?;
            *cached = Some(Cached {
                read_at: Instant::now(),
                counts,
                foreign_readers,
                query_seconds: started.elapsed().as_secs_f64(),
            });
        }
        let cached = cached
            .as_ref()
            .map(Cached::clone)
            .unwrap_or_else(|| Cached {
                read_at: Instant::now(),
                counts: Vec::new(),
                foreign_readers: Vec::new(),
                query_seconds: 0.0,
            });
        let mut text = exposition_text(&cached.counts, cached.query_seconds);
        text.push_str(&foreign_readers_text(&cached.foreign_readers));
        Ok(text)
    }
}

/// The text exposition of the counts (every unit and event, zeros included, as the query
/// returns them).
pub fn exposition_text(counts: &[UnitEventCount], query_seconds: f64) -> String {
    let mut text = String::from(
        "# HELP simflow_cards_total Cards per unit and ledger event since the ledger began (from the card ledger).\n\
         # TYPE simflow_cards_total counter\n",
    );
    for count in counts {
        let _ = writeln!(
            text,
            "simflow_cards_total{{unit=\"{}\",event=\"{}\"}} {}",
            label(&count.unit),
            label(&count.event),
            count.cards
        );
    }
    let _ = write!(
        text,
        "# HELP simflow_cards_query_seconds Seconds the last read of the ledger counts took.\n\
         # TYPE simflow_cards_query_seconds gauge\n\
         simflow_cards_query_seconds {query_seconds}\n"
    );
    text
}

/// The text exposition of the foreign-reader flags, every `(seen_in, action)` pair from zero.
pub fn foreign_readers_text(counts: &[(String, String, i64)]) -> String {
    let mut text = String::from(
        "# HELP simflow_foreign_readers_total Times an outlet reported or wrote with a reader not issued to it (writer ledger).\n\
         # TYPE simflow_foreign_readers_total counter\n",
    );
    for seen_in in ["connect", "write_result"] {
        for action in ["flagged", "refused"] {
            let count = counts
                .iter()
                .find(|(seen, done, _)| seen == seen_in && done == action)
                .map_or(0, |(_, _, count)| *count);
            let _ = writeln!(
                text,
                "simflow_foreign_readers_total{{seen_in=\"{seen_in}\",action=\"{action}\"}} {count}"
            );
        }
    }
    text
}

fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics` (no login: Prometheus scrapes it; it holds counts only).
pub async fn render_metrics(console: &Console) -> Response {
    match console.business.exposition(&console.pool).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => {
            tracing::warn!(error = %format!("{error:#}"), "cannot read the business counters");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unreachable\n",
            )
                .into_response()
        }
    }
}

/// The route handler of `/metrics`.
pub async fn render(State(console): State<Arc<Console>>) -> Response {
    render_metrics(&console).await
}
