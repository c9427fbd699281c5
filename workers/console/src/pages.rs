//! The console's pages. Each reads its sources when it is asked for (nothing is cached but the
//! business counters), shows a source that cannot be read as such instead of failing, and
//! masks every dead-letter body and detail ([`crate::mask`]).
//!
//! Replay and discard are two steps: a confirmation page (GET) and the action (POST, with the
//! session's CSRF token, operators only), audited before and after it runs.

use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use simflow_runtime::amqp::Client;
use simflow_runtime::deadletter::{self, DeadLetter, Selection};
use simflow_schemas::topology::JobQueue;

use crate::audit::{self, Target};
use crate::auth::{self, Session};
use crate::html::{self, esc, num, table};
use crate::mask::{mask_body, mask_text};
use crate::{Console, outlets};
use simflow_writecard::outlets::OutletState;

/// How many dead letters of one queue a list shows.
const LISTED_PER_QUEUE: usize = 50;

type Page = Result<Response, Response>;

fn ok(title: &str, session: &Session, body: &str) -> Page {
    Ok(html::page(title, Some(session), body).into_response())
}

async fn broker(console: &Console) -> anyhow::Result<Client> {
    Ok(Client::connect_any(&console.settings.amqp.addresses(), "simflow-console").await?)
}

/// `GET /`: every worker process's readiness, and the work queues with their dead letters.
pub async fn overview(State(console): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let session = auth::session(&console, &headers)?;
    let mut rows = Vec::new();
    for base in &console.console.workers {
        let url = format!("{}/readyz", base.trim_end_matches('/'));
        match console.http.get(&url).send().await {
            Ok(response) => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let components = body["components"].as_object().cloned().unwrap_or_default();
                for (name, component) in components {
                    rows.push(vec![
                        esc(base),
                        esc(&name),
                        html::ready(component["healthy"].as_bool().unwrap_or(false)),
                        esc(component["state"].as_str().unwrap_or_default()),
                    ]);
                }
            }
            Err(error) => rows.push(vec![
                esc(base),
                "-".to_owned(),
                "<span class=\"bad\">无应答 down</span>".to_owned(),
                esc(&error.to_string()),
            ]),
        }
    }
    let mut body = String::from("<h2>健康 / Health</h2>");
    body.push_str(&table(&["process", "component", "ready", "state"], &rows));
    body.push_str("<h2>工作队列 / Work queues</h2>");
    match console.management.queues(&console.vhost).await {
        Ok(queues) => {
            let depth = |name: &str| {
                queues
                    .iter()
                    .map(|queue| &queue.counters)
                    .find(|queue| queue.name == name)
                    .map(|queue| (queue.messages, queue.consumers))
            };
            let rows: Vec<Vec<String>> = JobQueue::ALL
                .into_iter()
                .map(|queue| {
                    let (messages, consumers) = depth(&queue.queue_name()).unwrap_or_default();
                    let (dead, _) = depth(&queue.dead_letter_queue()).unwrap_or_default();
                    let consumers = if consumers == 0 {
                        "<span class=\"bad\">0</span>".to_owned()
                    } else {
                        num(consumers)
                    };
                    let dead = if dead > 0 {
                        format!("<a class=\"bad\" href=\"/dead-letters\">{dead}</a>")
                    } else {
                        num(0)
                    };
                    vec![esc(&queue.queue_name()), num(messages), consumers, dead]
                })
                .collect();
            body.push_str(&table(
                &["queue", "depth", "consumers", "dead letters"],
                &rows,
            ));
        }
        Err(error) => body.push_str(&html::unavailable("RabbitMQ management API", &error)),
    }
    ok("概览 / Overview", &session, &body)
}

/// `GET /queues`: every queue of the vhost with depth, consumers and rates.
pub async fn queues(State(console): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let session = auth::session(&console, &headers)?;
    let body = match console.management.queues(&console.vhost).await {
        Ok(queues) => {
            let rows: Vec<Vec<String>> = queues
                .iter()
                .map(|rates| {
                    let (queue, stats) = (&rates.counters, &rates.message_stats);
                    vec![
                        esc(&queue.name),
                        esc(&queue.queue_type),
                        num(queue.messages_ready),
                        num(queue.messages_unacknowledged),
                        num(queue.consumers),
                        num(format!("{:.1}", stats.publish_details.rate)),
                        num(format!("{:.1}", stats.deliver_get_details.rate)),
                        num(format!("{:.1}", stats.ack_details.rate)),
                    ]
                })
                .collect();
            table(
                &[
                    "queue",
                    "type",
                    "ready",
                    "unacked",
                    "consumers",
                    "publish/s",
                    "deliver/s",
                    "ack/s",
                ],
                &rows,
            )
        }
        Err(error) => html::unavailable("RabbitMQ management API", &error),
    };
    ok(
        &format!("队列 / Queues ({})", console.vhost),
        &session,
        &body,
    )
}

/// The dead letters of every work queue (up to [`LISTED_PER_QUEUE`] each).
async fn all_dead_letters(console: &Console) -> anyhow::Result<Vec<(JobQueue, DeadLetter)>> {
    let client = broker(console).await?;
    let mut letters = Vec::new();
    for queue in JobQueue::ALL {
        for letter in deadletter::list(
            client.connection(),
            &queue.dead_letter_queue(),
            LISTED_PER_QUEUE,
        )
        .await?
        {
            letters.push((queue, letter));
        }
    }
    client.close().await;
    Ok(letters)
}

/// One dead letter by its queue key and message id.
async fn find_dead_letter(
    console: &Console,
    queue: JobQueue,
    message_id: &str,
) -> anyhow::Result<Option<DeadLetter>> {
    let client = broker(console).await?;
    let letters =
        deadletter::list(client.connection(), &queue.dead_letter_queue(), usize::MAX).await?;
    client.close().await;
    Ok(letters
        .into_iter()
        .find(|letter| letter.message_id.as_deref() == Some(message_id)))
}

fn letter_link(queue: JobQueue, letter: &DeadLetter) -> String {
    match &letter.message_id {
        Some(id) => format!(
            "<a href=\"/dead-letters/{}/{}\">{}</a>",
            esc(queue.key()),
            esc(id),
            esc(id)
        ),
        None => "<span class=\"muted\">(no message id)</span>".to_owned(),
    }
}

/// `GET /dead-letters`: every queue's dead letters with their reasons.
pub async fn dead_letters(State(console): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let session = auth::session(&console, &headers)?;
    let body = match all_dead_letters(&console).await {
        Ok(letters) => {
            let rows: Vec<Vec<String>> = letters
                .iter()
                .map(|(queue, letter)| {
                    vec![
                        esc(&letter.queue),
                        letter_link(*queue, letter),
                        esc(letter.message_type.as_deref().unwrap_or("-")),
                        format!("<code>{}</code>", esc(&letter.reason_code)),
                        esc(letter.reason_zh.as_deref().unwrap_or("-")),
                        esc(letter.reason_en.as_deref().unwrap_or("-")),
                        letter.attempts.map(num).unwrap_or_else(|| "-".to_owned()),
                        esc(letter.first_failure.as_deref().unwrap_or("-")),
                    ]
                })
                .collect();
            table(
                &[
                    "dead-letter queue",
                    "message id",
                    "type",
                    "code",
                    "原因",
                    "reason",
                    "tries",
                    "first failure",
                ],
                &rows,
            )
        }
        Err(error) => html::unavailable("RabbitMQ", &error),
    };
    ok("死信 / Dead letters", &session, &body)
}

fn queue_of(key: &str) -> Result<JobQueue, Response> {
    JobQueue::from_key(key)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no queue {key:?}")).into_response())
}

fn letter_fields(letter: &DeadLetter) -> String {
    let rows: Vec<Vec<String>> = [
        ("queue", Some(letter.queue.clone())),
        ("message id", letter.message_id.clone()),
        ("type", letter.message_type.clone()),
        ("code", Some(letter.reason_code.clone())),
        ("原因", letter.reason_zh.clone()),
        ("reason", letter.reason_en.clone()),
        ("detail", letter.detail.as_deref().map(mask_text)),
        ("tries", letter.attempts.map(|tries| tries.to_string())),
        ("worker", letter.worker.clone()),
        ("first failure", letter.first_failure.clone()),
        (
            "replays to",
            Some(format!(
                "{} / {}",
                letter.original_exchange, letter.original_routing_key
            )),
        ),
        ("body bytes", Some(letter.body_bytes.to_string())),
    ]
    .into_iter()
    .map(|(name, value)| vec![esc(name), esc(value.as_deref().unwrap_or("-"))])
    .collect();
    table(&["field", "value"], &rows)
}

/// `GET /dead-letters/{queue}/{message_id}`: one dead letter, its body masked.
pub async fn dead_letter(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((queue_key, message_id)): Path<(String, String)>,
) -> Page {
    let session = auth::session(&console, &headers)?;
    let queue = queue_of(&queue_key)?;
    let letter = match find_dead_letter(&console, queue, &message_id).await {
        Ok(Some(letter)) => letter,
        Ok(None) => {
            return Err((
                StatusCode::NOT_FOUND,
                html::page(
                    "死信 / Dead letter",
                    Some(&session),
                    "<p>没有这条死信（可能已重放或丢弃） / No such dead letter (replayed or discarded?). <a href=\"/dead-letters\">Back</a></p>",
                ),
            )
                .into_response());
        }
        Err(error) => {
            return ok(
                "死信 / Dead letter",
                &session,
                &html::unavailable("RabbitMQ", &error),
            );
        }
    };
    let mut body = letter_fields(&letter);
    body.push_str(&format!(
        "<h2>内容 / Body (secrets masked)</h2><pre id=\"body\">{}</pre>",
        esc(&mask_body(&letter.body))
    ));
    if session.may_operate() {
        let base = format!("/dead-letters/{}/{}", esc(queue.key()), esc(&message_id));
        body.push_str(&format!(
            "<p><a href=\"{base}/replay\" id=\"replay\"><button>重放 Replay…</button></a> \
             <a href=\"{base}/discard\" id=\"discard\"><button class=\"danger\">丢弃 Discard…</button></a></p>"
        ));
    } else {
        body.push_str(
            "<p class=\"muted\">只读用户不能重放或丢弃 / Viewers cannot replay or discard.</p>",
        );
    }
    ok("死信 / Dead letter", &session, &body)
}

/// What an action does, in the clerk's two languages.
fn action_words(action: &str) -> Result<(&'static str, &'static str), Response> {
    match action {
        "replay" => Ok((
            "重放",
            "Replay: send it back to its queue once, keeping its message id",
        )),
        "discard" => Ok((
            "丢弃",
            "Discard: take it out of the dead-letter queue for good",
        )),
        other => Err((StatusCode::NOT_FOUND, format!("no action {other:?}")).into_response()),
    }
}

/// `GET /dead-letters/{queue}/{message_id}/{action}`: the confirmation page.
pub async fn confirm(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((queue_key, message_id, action)): Path<(String, String, String)>,
) -> Page {
    let session = auth::session(&console, &headers)?;
    let queue = queue_of(&queue_key)?;
    let (zh, en) = action_words(&action)?;
    if !session.may_operate() {
        return Err(auth::forbidden(&session));
    }
    let letter = find_dead_letter(&console, queue, &message_id)
        .await
        .ok()
        .flatten();
    let summary = letter
        .as_ref()
        .map(letter_fields)
        .unwrap_or_else(|| "<p class=\"bad\">没有这条死信 / No such dead letter.</p>".to_owned());
    let body = format!(
        "{summary}<form method=\"post\" action=\"/dead-letters/{queue}/{id}/{action}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <p>{zh}？ / {en}?</p>\
         <button type=\"submit\" id=\"confirm\" class=\"danger\">确认{zh} / Confirm</button> \
         <a href=\"/dead-letters/{queue}/{id}\">取消 / Cancel</a></form>",
        queue = esc(queue.key()),
        id = esc(&message_id),
        action = esc(&action),
        csrf = esc(&session.csrf),
    );
    ok(&format!("确认{zh} / Confirm {action}"), &session, &body)
}

/// The action form.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    csrf: String,
}

/// `POST /dead-letters/{queue}/{message_id}/{action}`: replays or discards, audited.
pub async fn act(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path((queue_key, message_id, action)): Path<(String, String, String)>,
    Form(form): Form<ActionForm>,
) -> Page {
    let session = auth::operator(&console, &headers, &form.csrf)?;
    let queue = queue_of(&queue_key)?;
    let (zh, _) = action_words(&action)?;
    let letter = find_dead_letter(&console, queue, &message_id)
        .await
        .ok()
        .flatten();
    let target = Target {
        action: &action,
        queue: queue.key(),
        message_id: &message_id,
        reason_code: letter.as_ref().map(|letter| letter.reason_code.as_str()),
    };
    let audit_id = match audit::begin(&console.pool, &session, target).await {
        Ok(id) => id,
        Err(error) => {
            // No record, no action.
            return ok(
                "未执行 / Not done",
                &session,
                &html::unavailable("the audit table", &error),
            );
        }
    };
    let result = perform(&console, queue, &message_id, &action).await;
    let (done, detail) = match &result {
        Ok(detail) => (true, detail.clone()),
        Err(error) => (false, format!("{error:#}")),
    };
    if let Err(error) = audit::finish(&console.pool, audit_id, done, &detail).await {
        tracing::error!(error = %format!("{error:#}"), audit_id, "cannot complete an audit record");
    }
    tracing::info!(user = %session.user, action, queue = queue.key(), message_id, done, "console action");
    let class = if done { "ok" } else { "bad" };
    let body = format!(
        "<p class=\"{class}\" id=\"result\">{zh} {outcome}: {detail}</p>\
         <p>审计记录 / audit record #{audit_id}. <a href=\"/dead-letters\">返回死信 / Back to dead letters</a></p>",
        outcome = if done { "完成 done" } else { "失败 failed" },
        detail = esc(&detail),
    );
    ok(&format!("{zh} / {action}"), &session, &body)
}

async fn perform(
    console: &Console,
    queue: JobQueue,
    message_id: &str,
    action: &str,
) -> anyhow::Result<String> {
    let client = broker(console).await?;
    let result = if action == "replay" {
        deadletter::replay(
            client.connection(),
            &console.pool,
            queue,
            &Selection::MessageId(message_id.to_owned()),
        )
        .await
        .map(|report| {
            format!(
                "replayed {} to {}; {} second copies dropped",
                report.replayed.len(),
                queue.queue_name(),
                report.duplicates_dropped
            )
        })
    } else {
        deadletter::discard(client.connection(), &console.pool, queue, message_id)
            .await
            .map(|removed| {
                format!(
                    "removed {removed} copies from {}",
                    queue.dead_letter_queue()
                )
            })
    };
    client.close().await;
    result
}

/// `GET /outlets`.
pub async fn outlets(State(console): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let session = auth::session(&console, &headers)?;
    let body = match outlets::outlet_views(&console).await {
        Ok(views) => {
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|view| {
                    vec![
                        esc(&view.code),
                        esc(&view.agent_code),
                        match view.state {
                            OutletState::Revoked => {
                                "<span class=\"muted\">已吊销 revoked</span>".to_owned()
                            }
                            OutletState::Suspended => {
                                "<span class=\"bad\">已暂停 suspended</span>".to_owned()
                            }
                            OutletState::Active => "<span class=\"ok\">正常 active</span>".to_owned(),
                        },
                        if view.online {
                            "<span class=\"ok\">在线 online</span>".to_owned()
                        } else {
                            "<span class=\"bad\">离线 offline</span>".to_owned()
                        },
                        view.last_seen.map_or_else(
                            || "<span class=\"muted\">从未 never</span>".to_owned(),
                            |seen| esc(&seen.to_rfc3339()),
                        ),
                        esc(view.node_version.as_deref().unwrap_or("-")),
                        num(view.consumers),
                        num(view.queued),
                        match &view.reader {
                            Some(reader) => {
                                format!("{} {}", html::ready(reader.ready), esc(&reader.state))
                            }
                            None => "<span class=\"muted\">未配置节点地址 / node address not configured</span>".to_owned(),
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "outlet",
                    "agent",
                    "state",
                    "liveness",
                    "last seen",
                    "version",
                    "consumers",
                    "queued",
                    "reader",
                ],
                &rows,
            )
        }
        Err(error) => html::unavailable("outlets", &error),
    };
    let audit = match outlets::lifecycle_audit(&console, 200).await {
        Ok(records) => {
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|record| {
                    vec![
                        num(record.audit_id),
                        esc(&record.at.to_rfc3339()),
                        esc(&record.outlet_code),
                        esc(&record.actor),
                        esc(record.action.name()),
                        esc(&record.reason),
                        esc(&record.detail.0.to_string()),
                    ]
                })
                .collect();
            table(
                &["#", "at", "outlet", "who", "step", "reason", "detail"],
                &rows,
            )
        }
        Err(error) => html::unavailable("the outlet audit", &error),
    };
    let body = format!("{body}<h2>网点生命周期审计 / Outlet lifecycle audit</h2>{audit}");
    ok("网点 / Outlets", &session, &body)
}

fn stock_table(lines: &[simflow_inventory::queries::StockLine], place: &str) -> String {
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|line| {
            vec![
                esc(&line.place),
                esc(&line.card_type),
                esc(&line.state),
                num(line.cards),
            ]
        })
        .collect();
    table(&[place, "card type", "state", "cards"], &rows)
}

/// `GET /stock`: per warehouse and per agent.
pub async fn stock(State(console): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let session = auth::session(&console, &headers)?;
    let read = async {
        let mut connection = console.read_pool.acquire().await?;
        let warehouses = simflow_inventory::queries::stock_by_warehouse(&mut connection).await?;
        let agents = simflow_inventory::queries::stock_by_agent(&mut connection).await?;
        Ok::<_, anyhow::Error>((warehouses, agents))
    }
    .await;
    let body = match read {
        Ok((warehouses, agents)) => format!(
            "<h2>仓库 / Warehouses</h2>{}<h2>代理商 / Agents</h2>{}",
            stock_table(&warehouses, "warehouse"),
            stock_table(&agents, "agent")
        ),
        Err(error) => html::unavailable("the database", &error),
    };
    ok("库存 / Stock", &session, &body)
}

/// The card search.
#[derive(Debug, Deserialize)]
pub struct CardQuery {
    #[serde(default)]
    iccid: String,
}

/// `GET /cards?iccid=…`: one card's place, state and ledger.
pub async fn card(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(query): Query<CardQuery>,
) -> Page {
    let session = auth::session(&console, &headers)?;
    let iccid = query.iccid.trim();
    let mut body = format!(
        "<form method=\"get\" action=\"/cards\"><label>ICCID <input name=\"iccid\" id=\"iccid\" value=\"{}\"></label> <button type=\"submit\">查询 Look up</button></form>",
        esc(iccid)
    );
    if !iccid.is_empty() {
        let history = async {
            let mut connection = console.read_pool.acquire().await?;
            Ok::<_, anyhow::Error>(
                simflow_inventory::queries::card_history(&mut connection, iccid).await?,
            )
        }
        .await;
        match history {
            Ok(Some(history)) => {
                body.push_str(&format!(
                    "<p>{} · {} · {} · {}</p>",
                    esc(&history.iccid),
                    esc(&history.card_type),
                    esc(&history.state),
                    esc(&history.location)
                ));
                let rows: Vec<Vec<String>> = history
                    .entries
                    .iter()
                    .map(|entry| {
                        vec![
                            num(entry.entry_id),
                            esc(&entry.at.to_rfc3339()),
                            esc(&entry.event),
                            esc(entry.from_location.as_deref().unwrap_or("-")),
                            esc(&entry.to_location),
                            esc(&entry.state_after),
                            esc(entry.reference.as_deref().unwrap_or("-")),
                            esc(entry.staff_id.as_deref().unwrap_or("-")),
                        ]
                    })
                    .collect();
                body.push_str(&table(
                    &[
                        "#",
                        "at",
                        "event",
                        "from",
                        "to",
                        "state",
                        "reference",
                        "staff",
                    ],
                    &rows,
                ));
            }
            Ok(None) => body.push_str("<p class=\"bad\">没有这张卡 / No such card.</p>"),
            Err(error) => body.push_str(&html::unavailable("the database", &error)),
        }
    }
    ok("卡片 / Card history", &session, &body)
}

/// `GET /audit`: the latest console actions.
pub async fn audit(State(console): State<Arc<Console>>, headers: HeaderMap) -> Page {
    let session = auth::session(&console, &headers)?;
    let body = match audit::latest(&console.pool, 200).await {
        Ok(records) => {
            let rows: Vec<Vec<String>> = records
                .iter()
                .map(|record| {
                    vec![
                        num(record.audit_id),
                        esc(&record.at.to_rfc3339()),
                        esc(&record.actor),
                        esc(&record.role),
                        esc(&record.action),
                        esc(&record.queue),
                        esc(&record.message_id),
                        esc(record.reason_code.as_deref().unwrap_or("-")),
                        esc(&record.outcome),
                        esc(record.detail.as_deref().unwrap_or("-")),
                    ]
                })
                .collect();
            table(
                &[
                    "#",
                    "at",
                    "who",
                    "role",
                    "action",
                    "queue",
                    "message id",
                    "code",
                    "outcome",
                    "detail",
                ],
                &rows,
            )
        }
        Err(error) => html::unavailable("the audit table", &error),
    };
    ok("审计 / Audit", &session, &body)
}
