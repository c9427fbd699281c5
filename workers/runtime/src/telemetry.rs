//! Logging set-up: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
//!
//! Log lines never carry message bodies: bodies may hold personal data, and scripts hold keys.

/// Installs the global subscriber once; later calls are no-ops (tests call it many times).
pub fn init() {
    init_with_default("info,sqlx=warn,lapin=warn");
}

/// Like [`init`], with another filter when `RUST_LOG` is not set.
pub fn init_with_default(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
