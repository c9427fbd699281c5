//! Outlets as ops see them: provisioned (write-card's outlet table) with their lifecycle state,
//! online or offline (the node's heartbeat: `last_seen` within
//! `simflow_writecard::outlets::OFFLINE_AFTER`), consumers and depth of the outlet's queue
//! (the management API), and the reader's clerk state (the node's own `/healthz`, component
//! `reader`, when `[console] outlet_nodes` names its address), and the lifecycle audit.
//!
//! This is the one seam where an outlet's liveness is decided.

use std::collections::BTreeMap;

use serde::Serialize;
use simflow_schemas::topology::outlet_queue_name;

use crate::Console;

/// One outlet's row.
#[derive(Debug, Clone, Serialize)]
pub struct OutletView {
    /// Outlet code.
    pub code: String,
    /// The agent it belongs to.
    pub agent_code: String,
    /// Not revoked.
    pub active: bool,
    /// `active`, `suspended` or `revoked`.
    pub state: simflow_writecard::outlets::OutletState,
    /// Its node's heartbeat came within the offline window.
    pub online: bool,
    /// When its node's heartbeat last came.
    pub last_seen: Option<chrono::DateTime<chrono::Utc>>,
    /// The node's version, from its heartbeat.
    pub node_version: Option<String>,
    /// Consumers on its queue (a node, or a standby).
    pub consumers: u64,
    /// Work waiting in its queue.
    pub queued: u64,
    /// The reader's state, when the node's address is configured and it answered.
    pub reader: Option<ReaderState>,
}

/// What a node's `/healthz` says about its reader.
#[derive(Debug, Clone, Serialize)]
pub struct ReaderState {
    /// The reader is usable.
    pub ready: bool,
    /// The clerk state line (Chinese / English), or why the node did not answer.
    pub state: String,
}

/// Every provisioned outlet with its liveness and reader state.
pub async fn outlet_views(console: &Console) -> anyhow::Result<Vec<OutletView>> {
    let outlets = {
        let mut connection = console.pool.acquire().await?;
        simflow_writecard::outlets::list(&mut connection).await?
    };
    let queues: BTreeMap<String, (u64, u64)> = console
        .management
        .queues(&console.vhost)
        .await?
        .into_iter()
        .map(|queue| {
            let counters = queue.counters;
            (counters.name, (counters.consumers, counters.messages))
        })
        .collect();
    let now = chrono::Utc::now();
    let mut views = Vec::with_capacity(outlets.len());
    for outlet in outlets {
        let (consumers, queued) = queues
            .get(&outlet_queue_name(&outlet.outlet_code))
            .copied()
            .unwrap_or_default();
        let reader = match console.console.outlet_nodes.get(&outlet.outlet_code) {
            Some(base) => Some(reader_state(&console.http, base).await),
            None => None,
        };
        views.push(OutletView {
            online: outlet.online(now, simflow_writecard::outlets::OFFLINE_AFTER),
            state: outlet.state(),
            code: outlet.outlet_code,
            agent_code: outlet.agent_code,
            active: outlet.active,
            last_seen: outlet.last_seen,
            node_version: outlet.node_version,
            consumers,
            queued,
            reader,
        });
    }
    Ok(views)
}

/// Asks a node's `/healthz` for its `reader` component.
pub async fn reader_state(http: &reqwest::Client, base: &str) -> ReaderState {
    let url = format!("{}/healthz", base.trim_end_matches('/'));
    let answer = async {
        let body: serde_json::Value = http.get(&url).send().await?.json().await?;
        Ok::<_, reqwest::Error>(body)
    }
    .await;
    match answer {
        Ok(body) => {
            let reader = &body["components"]["reader"];
            ReaderState {
                ready: reader["healthy"].as_bool().unwrap_or(false),
                state: reader["state"]
                    .as_str()
                    .unwrap_or("没有读卡器状态 / no reader state")
                    .to_owned(),
            }
        }
        Err(error) => ReaderState {
            ready: false,
            state: format!("节点无应答 / the node did not answer: {error}"),
        },
    }
}

/// The latest lifecycle steps of every outlet, newest first.
pub async fn lifecycle_audit(
    console: &Console,
    limit: i64,
) -> anyhow::Result<Vec<simflow_writecard::outlets::AuditRecord>> {
    let mut connection = console.pool.acquire().await?;
    Ok(simflow_writecard::outlets::audit_trail(&mut connection, None, limit).await?)
}
