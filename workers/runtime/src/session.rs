//! The connect → serve → reconnect loop that every consumer runs: a central worker and an
//! outlet node alike. Opening a session retries with backoff until it works, shutdown comes,
//! or the broker refuses in a way no retry can fix; serving ends with a reason ([`Ended`]);
//! health and the connection metrics follow each step.
//!
//! What a session is and how it serves (a batch consumer, one outlet's queue) is the caller's.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::metrics::{Health, Metrics};
use crate::retry;

/// Why serving a session ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// Shutdown was requested; the loop ends.
    Shutdown,
    /// The connection or channel went away; the loop reconnects.
    ConnectionLost,
    /// The broker refused us (credentials, permissions); the loop ends with this cause.
    Refused(String),
}

/// The component a session loop runs for, and where it reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reporting<'a> {
    /// Name in health, metrics and logs.
    pub component: &'a str,
    pub health: &'a Health,
    pub metrics: &'a Metrics,
    pub shutdown: &'a CancellationToken,
}

impl Reporting<'_> {
    /// Reports the component connected and idle.
    pub fn waiting(&self) {
        self.health.set(self.component, true, "waiting for work");
    }

    /// Records that a piece of work was settled (when, for the metrics), and that the component
    /// is idle again.
    pub fn work_settled(&self) {
        self.metrics
            .last_job
            .with_label_values(&[self.component])
            .set(chrono::Utc::now().timestamp() as f64);
        self.health.job_settled(self.component);
        self.waiting();
    }
}

/// Opens sessions with `open` and serves them with `serve` until shutdown (`Ok`) or a refusal
/// (`Err` with the broker's words).
pub(crate) async fn run<S, E, Open, Opening, Serve, Serving>(
    reporting: Reporting<'_>,
    is_final: impl Fn(&E) -> bool,
    mut open: Open,
    mut serve: Serve,
) -> Result<(), String>
where
    Open: FnMut() -> Opening,
    Opening: Future<Output = Result<S, E>>,
    E: std::fmt::Display,
    Serve: FnMut(S) -> Serving,
    Serving: Future<Output = Ended>,
{
    let Reporting {
        component,
        health,
        metrics,
        shutdown,
    } = reporting;
    metrics.register_consumer(component);
    let mut connected_before = false;
    let result = loop {
        health.set(component, false, "connecting to the broker");
        let session =
            match retry::until_connected_unless("the broker", shutdown, &is_final, &mut open).await
            {
                Ok(Some(session)) => session,
                Ok(None) => break Ok(()),
                Err(error) => break Err(error.to_string()),
            };
        if connected_before {
            metrics.reconnects.with_label_values(&[component]).inc();
        }
        connected_before = true;
        metrics.connected.with_label_values(&[component]).set(1);
        let ended = serve(session).await;
        metrics.connected.with_label_values(&[component]).set(0);
        match ended {
            Ended::Shutdown => break Ok(()),
            Ended::ConnectionLost => {
                tracing::warn!(component, "lost the broker connection; reconnecting");
            }
            Ended::Refused(cause) => break Err(cause),
        }
    };
    match &result {
        Ok(()) => health.set(component, false, "stopped"),
        Err(_) => health.set(component, false, "refused by the broker"),
    }
    result
}
