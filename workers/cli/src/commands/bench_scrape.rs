//! `simflow bench scrape`: what one `/metrics` scrape costs when a process carries many
//! outlets' series (issue 11 asks for 1,000).
//!
//! It builds one registry as the processes do (the runtime's metrics plus the outlet node's,
//! [`simflow_outlet::metrics`]), adds `--outlets` outlets with every series they register at
//! start (connection, readiness, writes by outcome, reader state, time and APDUs per card,
//! journal), a few writes each so the histograms hold data, serves it with the runtime's own
//! HTTP endpoint, and fetches `/metrics` over TCP `--scrapes` times: bytes, series, and the
//! time per scrape (median and slowest), next to rendering alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use simflow_outlet::Status;
use simflow_outlet::metrics::OutletMetrics;
use simflow_runtime::metrics::{Health, Metrics};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::writecard::WriteOutcome;

/// Arguments of `bench scrape`.
#[derive(Debug, Args)]
pub struct ScrapeBenchArgs {
    /// Outlets whose series the registry carries.
    #[arg(long, default_value_t = 1000)]
    pub outlets: usize,
    /// Scrapes to time.
    #[arg(long, default_value_t = 20)]
    pub scrapes: usize,
}

/// Runs the measurement.
pub async fn run(args: ScrapeBenchArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let health = Health::default();
    let outlet_metrics = OutletMetrics::register(metrics.registry())?;
    let written = WriteOutcome::Written {
        auth_answer: String::new(),
        apdu_count: 52,
    };
    for index in 0..args.outlets {
        let code = format!("OUT{index:04}");
        let component = format!("outlet {code}");
        metrics.register_consumer(&component);
        health.set(&component, true, "waiting for work");
        let status = Status::new(Health::default(), false);
        outlet_metrics.add_outlet(&code, &status);
        outlet_metrics.write_finished(&code, &written, Duration::from_secs(4));
    }
    let shutdown = CancellationToken::new();
    let (address, server) = simflow_runtime::http::serve(
        "127.0.0.1:0",
        Arc::clone(&metrics),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let client = reqwest::Client::new();
    let url = format!("http://{address}/metrics");
    let mut times = Vec::with_capacity(args.scrapes);
    let mut bytes = 0;
    let mut series = 0;
    for _ in 0..args.scrapes.max(1) {
        let started = Instant::now();
        let text = client.get(&url).send().await?.text().await?;
        times.push(started.elapsed());
        bytes = text.len();
        series = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .count();
    }
    let render_started = Instant::now();
    let rendered = metrics.render();
    let render_time = render_started.elapsed();
    times.sort();
    let median = times[times.len() / 2];
    let slowest = times[times.len() - 1];
    println!(
        "scrape of /metrics with {} outlets' series: {bytes} bytes ({:.1} KiB), {series} series; \
         over {} scrapes: median {:.1} ms, slowest {:.1} ms; rendering alone {:.1} ms ({} bytes)",
        args.outlets,
        bytes as f64 / 1024.0,
        times.len(),
        median.as_secs_f64() * 1000.0,
        slowest.as_secs_f64() * 1000.0,
        render_time.as_secs_f64() * 1000.0,
        rendered.len(),
    );
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}
