//! Graceful shutdown: one token that SIGTERM or SIGINT cancels, which every task watches.
//!
//! Consumers stop taking work when it is cancelled, finish and settle what they hold, and the
//! process exits 0. Nothing here decides what "finish" means; the worker loop does.

pub use tokio_util::sync::CancellationToken;

/// A shutdown signal shared by every task of a process.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal nobody has triggered yet.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// The token to watch.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Triggers shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Triggers shutdown on SIGTERM or SIGINT (in a background task).
    pub fn on_signals(&self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let token = self.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM: finishing in-flight work, then exiting"),
                _ = interrupt.recv() => tracing::info!("SIGINT: finishing in-flight work, then exiting"),
            }
            token.cancel();
        });
        Ok(())
    }
}
