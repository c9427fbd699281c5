//! The counter page and its local API: what replaces the deck's browser control.
//!
//! `simflow outlet run` serves, on `[outlet] counter_listen` (loopback by default; another
//! address only with `counter_allow_remote = true`), a small page for the clerk and a JSON API
//! that the operator's CRM page may call instead of the old ActiveX control:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (plain HTML, CSS and JS embedded in the binary; no external asset) |
//! | `GET /api/v1/state` | the clerk state now: `state`, `code`, `iccid`, `zh`, `en`, `busy` |
//! | `GET /api/v1/readers` | the readers pcscd has, which one is the node's, whether a card is in, or why none can be used |
//! | `GET /api/v1/events` | Server-Sent Events: `state` at every change of the clerk state, in order; `readers` at every change of the readers |
//! | `GET /api/v1/writes/today` | the day's writes from the journal (time, ICCID, MSISDN masked, outcome); never a key, ADM or answer |
//! | `POST /api/v1/read-card` | reads the card in the reader now (ICCID, blank or not, family); `409` while a job uses the card |
//!
//! Every text the clerk reads comes from the server (the clerk state, `simflow-reader`'s
//! deck messages, the journal's stored reasons) or from the page's HTML; the script has none.
//!
//! Who may call it: requests whose `Host` is not this node's loopback address are refused
//! (a web page cannot reach it by DNS rebinding), and requests that carry an `Origin` other than
//! the page's own or `[outlet] crm_origin` are refused with `403` before anything runs, so
//! another web page open in the clerk's browser can neither read the API nor start a card read.
//! CORS headers (tower-http's `CorsLayer`, never a wildcard) are sent for the CRM origin only.
//!
//! This module does not decide anything about cards: a read goes through [`crate::card`] under
//! the node's card lock, and it never touches the broker.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::card::ReaderOutcome;
use simflow_schemas::writecard::{CardWriteState, WriteOutcome};
use tokio::sync::{broadcast, watch};

use crate::card::{self, CardWork};
use crate::journal::{FinishedWrite, Journal};
use crate::node::CardLock;
use crate::readers::Readers;
use crate::status::{ClerkState, Status};

const PAGE: &str = include_str!("counter/page.html");
const SCRIPT: &str = include_str!("counter/counter.js");
const STYLE: &str = include_str!("counter/counter.css");

/// The page may load only its own script and style and talk only to its own node.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How many of the day's writes the page lists.
const WRITES_LISTED: u32 = 50;

/// The longest a read the page asked for waits for a card (the clerk inserts it first).
const READ_WAIT: Duration = Duration::from_secs(10);

/// Where the counter listens and who may call it, checked.
#[derive(Debug, Clone)]
pub struct CounterAccess {
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The CRM page's origin (`scheme://host[:port]`), if one may call the API.
    pub crm_origin: Option<HeaderValue>,
}

impl CounterAccess {
    /// Checks `[outlet] counter_listen`, `counter_allow_remote` and `crm_origin`.
    pub fn check(
        listen: &str,
        allow_remote: bool,
        crm_origin: Option<&str>,
    ) -> anyhow::Result<CounterAccess> {
        let address: SocketAddr = listen.parse().with_context(|| {
            format!(
                "[outlet] counter_listen {listen:?}: give an IP address and port, e.g. 127.0.0.1:9466"
            )
        })?;
        anyhow::ensure!(
            address.ip().is_loopback() || allow_remote,
            "[outlet] counter_listen {listen}: not a loopback address, so the counter page and its \
             card API would be open to the network. Use 127.0.0.1:<port> (the CRM page runs on the \
             same PC), or set [outlet] counter_allow_remote = true if another host must reach it \
             (and firewall the port)"
        );
        let crm_origin = crm_origin
            .map(str::trim)
            .filter(|origin| !origin.is_empty())
            .map(check_origin)
            .transpose()?;
        Ok(CounterAccess {
            listen: address,
            crm_origin,
        })
    }
}

/// An origin as browsers send it: `http` or `https`, a host, an optional port, nothing else.
fn check_origin(origin: &str) -> anyhow::Result<HeaderValue> {
    let explain = || {
        format!(
            "[outlet] crm_origin {origin:?}: give one origin as the browser sends it, \
             e.g. https://crm.example.cn or http://10.1.2.3:8080 (no path, no wildcard)"
        )
    };
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .with_context(explain)?;
    anyhow::ensure!(
        !rest.is_empty()
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')),
        explain()
    );
    HeaderValue::from_str(origin).with_context(explain)
}

/// What the counter serves from.
#[derive(Debug, Clone)]
pub struct Counter {
    /// The outlet code, shown on the page.
    pub outlet_code: String,
    /// The node's reader (its card work: name, waits, clerk state).
    pub work: CardWork,
    /// The readers as the watcher sees them.
    pub readers: watch::Receiver<Readers>,
    /// The journal, for the day's writes.
    pub journal: Journal,
    /// The node's card lock.
    pub card_lock: CardLock,
}

#[derive(Clone)]
struct App {
    counter: Arc<Counter>,
    access: Arc<CounterAccess>,
    /// `Host` values that name this node (loopback only); `None` when remote access is on.
    hosts: Option<Arc<Vec<String>>>,
    shutdown: CancellationToken,
}

/// Serves the counter until `shutdown`; returns the bound address.
pub async fn serve(
    access: CounterAccess,
    counter: Counter,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(access.listen)
        .await
        .with_context(|| format!("cannot listen on {} for the counter page", access.listen))?;
    let address = listener.local_addr()?;
    let hosts = address.ip().is_loopback().then(|| {
        let port = address.port();
        Arc::new(vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ])
    });
    let app = App {
        counter: Arc::new(counter),
        access: Arc::new(access),
        hosts,
        shutdown: shutdown.clone(),
    };
    let router = router(app);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "counter page stopped");
        }
    });
    tracing::info!(%address, "serving the counter page");
    Ok((address, task))
}

fn router(app: App) -> Router {
    let api = Router::new()
        .route("/api/v1/state", get(state))
        .route("/api/v1/readers", get(readers))
        .route("/api/v1/events", get(events))
        .route("/api/v1/writes/today", get(writes_today))
        .route("/api/v1/read-card", post(read_card));
    let api = match &app.access.crm_origin {
        Some(origin) => api.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origin.clone())
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::CONTENT_TYPE])
                .max_age(Duration::from_secs(600)),
        ),
        None => api,
    };
    Router::new()
        .route("/", get(page))
        .route("/counter.js", get(script))
        .route("/counter.css", get(style))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn refused(code: &str, zh: &str, en: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "code": code, "zh": zh, "en": en })),
    )
        .into_response()
}

/// Refuses requests for another host name and requests from other web pages.
async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if let Some(hosts) = &app.hosts
        && !hosts.contains(&host)
    {
        return refused(
            "HOST_REFUSED",
            "请用本机地址打开写卡页面",
            "Open the counter page by this PC's loopback address",
        );
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let same_page = origin
            .to_str()
            .is_ok_and(|origin| origin == format!("http://{host}"));
        let crm = app.access.crm_origin.as_ref() == Some(origin);
        if !same_page && !crm {
            tracing::warn!(origin = ?origin, "counter API refused a web page of another origin");
            return refused(
                "ORIGIN_REFUSED",
                "此网页无权使用写卡器",
                "This web page may not use the card writer",
            );
        }
    }
    next.run(request).await
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        STYLE,
    )
}

/// The clerk state as the API shows it.
pub fn state_view(state: &ClerkState) -> Value {
    json!({
        "state": state.kind(),
        "code": state.code(),
        "iccid": state.iccid(),
        "zh": state.zh(),
        "en": state.en(),
        "busy": state.is_busy(),
    })
}

/// The readers as the API shows them.
fn readers_view(counter: &Counter, readers: &Readers) -> Value {
    let configured = counter.work.reader.as_str();
    match readers {
        Readers::Unknown => json!({
            "configured": configured, "available": false, "error": null, "readers": [],
        }),
        Readers::Unavailable(message) => json!({
            "configured": configured,
            "available": false,
            "error": { "code": message.code, "zh": message.message_zh, "en": message.message_en },
            "readers": [],
        }),
        Readers::Seen(readers) => json!({
            "configured": configured,
            "available": readers.iter().any(|reader| reader.name == configured),
            "error": null,
            "readers": readers.iter().map(|reader| {
                let (zh, en) = match (reader.card_present, reader.card_mute) {
                    (true, false) => ("有卡", "card in"),
                    (true, true) => ("卡片无响应", "card does not answer"),
                    (false, _) => ("无卡", "no card"),
                };
                json!({
                    "name": reader.name,
                    "configured": reader.name == configured,
                    "card_present": reader.card_present,
                    "card_mute": reader.card_mute,
                    "zh": zh,
                    "en": en,
                })
            }).collect::<Vec<_>>(),
        }),
    }
}

fn no_store(body: Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
}

async fn state(State(app): State<App>) -> Response {
    let mut view = state_view(&app.counter.work.status.get());
    view["outlet_code"] = json!(app.counter.outlet_code);
    no_store(view)
}

async fn readers(State(app): State<App>) -> Response {
    let readers = app.counter.readers.borrow().clone();
    no_store(readers_view(&app.counter, &readers))
}

/// What the live feed keeps between events.
struct Feed {
    app: App,
    pending: std::collections::VecDeque<Event>,
    changes: broadcast::Receiver<ClerkState>,
    readers: watch::Receiver<Readers>,
}

fn state_event(state: &ClerkState) -> Event {
    Event::default()
        .event("state")
        .data(state_view(state).to_string())
}

fn readers_event(counter: &Counter, readers: &Readers) -> Event {
    Event::default()
        .event("readers")
        .data(readers_view(counter, readers).to_string())
}

async fn events(State(app): State<App>) -> impl IntoResponse {
    let status: &Status = &app.counter.work.status;
    // Subscribe before taking the current values, so no change falls in between.
    let changes = status.changes();
    let mut readers = app.counter.readers.clone();
    let current_readers = readers.borrow_and_update().clone();
    let pending = [
        state_event(&status.get()),
        readers_event(&app.counter, &current_readers),
    ]
    .into();
    let feed = Feed {
        app,
        pending,
        changes,
        readers,
    };
    let stream = futures_util::stream::unfold(feed, |mut feed| async move {
        if let Some(event) = feed.pending.pop_front() {
            return Some((Ok::<_, Infallible>(event), feed));
        }
        let event = tokio::select! {
            _ = feed.app.shutdown.cancelled() => return None,
            change = feed.changes.recv() => match change {
                Ok(state) => state_event(&state),
                // Too far behind: the latest state is what matters now.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    state_event(&feed.app.counter.work.status.get())
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            changed = feed.readers.changed() => match changed {
                Ok(()) => {
                    let readers = feed.readers.borrow_and_update().clone();
                    readers_event(&feed.app.counter, &readers)
                }
                Err(_) => return None,
            },
        };
        Some((Ok(event), feed))
    });
    (
        [(header::CACHE_CONTROL, "no-store")],
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
}

/// An MSISDN with its middle four digits hidden, as on receipts (`130****0000`).
pub fn mask_msisdn(msisdn: &str) -> String {
    let chars: Vec<char> = msisdn.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len());
    }
    let end = chars.len() - 4;
    let start = end - 4;
    chars[..start]
        .iter()
        .chain(std::iter::repeat_n(&'*', 4))
        .chain(&chars[end..])
        .collect()
}

/// One finished write as the page lists it: never the card's answer or anything secret.
pub fn write_view(write: &FinishedWrite) -> Value {
    let (outcome, code, zh, en) = match &write.result.outcome {
        WriteOutcome::Written { .. } => {
            ("written", None, "写卡成功".to_owned(), "written".to_owned())
        }
        WriteOutcome::Failed { card_state, reason } => (
            match card_state {
                CardWriteState::Untouched => "untouched",
                CardWriteState::Damaged => "damaged",
            },
            Some(reason.code.clone()),
            reason.message_zh.clone(),
            reason.message_en.clone(),
        ),
    };
    json!({
        "at": write.finished_at.with_timezone(&chrono::Local).to_rfc3339(),
        "time": write.finished_at.with_timezone(&chrono::Local).format("%H:%M:%S").to_string(),
        "iccid": write.iccid,
        "msisdn": write.msisdn.as_deref().map(mask_msisdn),
        "outcome": outcome,
        "code": code,
        "zh": zh,
        "en": en,
    })
}

async fn writes_today(State(app): State<App>) -> Response {
    let midnight = chrono::Local::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|midnight| midnight.and_local_timezone(chrono::Local).earliest())
        .map(|midnight| midnight.with_timezone(&chrono::Utc))
        .unwrap_or_else(chrono::Utc::now);
    match app
        .counter
        .journal
        .finished_since(midnight, WRITES_LISTED)
        .await
    {
        Ok(writes) => no_store(json!({
            "since": midnight.with_timezone(&chrono::Local).to_rfc3339(),
            "writes": writes.iter().map(write_view).collect::<Vec<_>>(),
        })),
        Err(error) => {
            tracing::error!(%error, "cannot read the journal for the counter page");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({
                    "code": "JOURNAL_FAILED",
                    "zh": "写卡器日志不可用，请联系运维",
                    "en": "The writer's journal is not usable; call ops",
                })),
            )
                .into_response()
        }
    }
}

async fn read_card(State(app): State<App>) -> Response {
    let Ok(card_guard) = Arc::clone(&app.counter.card_lock).try_lock_owned() else {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({
                "code": "WRITER_BUSY",
                "zh": "写卡器正忙，请稍候",
                "en": "The card writer is busy; wait until it finishes",
            })),
        )
            .into_response();
    };
    let mut work = app.counter.work.clone();
    work.card_wait = work.card_wait.min(READ_WAIT);
    let stop = app.shutdown.clone();
    let read = tokio::task::spawn_blocking(move || {
        let outcome = card::read_card(&work, &stop);
        if let Ok(outcome) = &outcome {
            work.status.set(card::read_state(outcome));
        }
        drop(card_guard);
        outcome
    })
    .await;
    match read {
        Ok(Ok(ReaderOutcome::Read {
            iccid,
            blank,
            family,
        })) => no_store(json!({
            "outcome": "read",
            "iccid": iccid,
            "blank": blank,
            "family": family,
            "zh": if blank { "白卡" } else { "非白卡" },
            "en": if blank { "blank card" } else { "not a blank card" },
        })),
        Ok(Ok(ReaderOutcome::Error { error })) => no_store(json!({
            "outcome": "error",
            "code": error.code,
            "zh": error.message_zh,
            "en": error.message_en,
        })),
        Ok(Err(_)) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "code": "NODE_STOPPING",
                "zh": "写卡程序正在停止",
                "en": "The writer node is stopping",
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counter_listens_on_loopback_unless_remote_access_is_allowed() {
        assert!(CounterAccess::check("127.0.0.1:9466", false, None).is_ok());
        assert!(CounterAccess::check("[::1]:9466", false, None).is_ok());
        let error = CounterAccess::check("0.0.0.0:9466", false, None)
            .expect_err("a wildcard address is refused")
            .to_string();
        assert!(error.contains("not a loopback address"), "{error}");
        assert!(error.contains("counter_allow_remote"), "{error}");
        assert!(CounterAccess::check("0.0.0.0:9466", true, None).is_ok());
        assert!(CounterAccess::check("localhost:9466", false, None).is_err());
    }

    #[test]
    fn the_crm_origin_is_one_exact_origin() {
        let access = CounterAccess::check("127.0.0.1:0", false, Some("https://crm.example.cn"))
            .expect("a plain origin");
        assert_eq!(
            access.crm_origin,
            Some(HeaderValue::from_static("https://crm.example.cn"))
        );
        for bad in [
            "*",
            "https://*.example.cn",
            "crm.example.cn",
            "https://crm.example.cn/page",
        ] {
            assert!(
                CounterAccess::check("127.0.0.1:0", false, Some(bad)).is_err(),
                "{bad} accepted"
            );
        }
        assert!(
            CounterAccess::check("127.0.0.1:0", false, Some(""))
                .expect("empty is none")
                .crm_origin
                .is_none()
        );
    }

    #[test]
    fn a_listed_msisdn_hides_its_middle_four_digits() {
        assert_eq!(mask_msisdn("13012340000"), "130****0000");
        assert_eq!(mask_msisdn("+8613800138000"), "+86138****8000");
        assert_eq!(mask_msisdn("1234"), "****");
    }

    #[test]
    fn the_page_script_has_no_clerk_texts_of_its_own() {
        assert!(
            !SCRIPT
                .chars()
                .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)),
            "counter.js carries Chinese text: texts come from the server"
        );
    }
}
