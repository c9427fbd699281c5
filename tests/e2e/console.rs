//! The ops console against the real broker and database: nothing without a login, dead letters
//! with their Chinese and English reasons and every key masked, viewers who cannot act,
//! operators who replay or discard only after confirming and with the session's CSRF token, an
//! audit record naming who did it; and, in a real browser (headless chromium under
//! chromedriver), a job that fails, is dead-lettered, is replayed from the page and succeeds.

use std::net::SocketAddr;
use std::time::Duration;

use simflow_cli::pipeline::WorkerKind;
use simflow_console::{ConsoleSettings, Role, User};
use simflow_runtime::Settings;
use simflow_runtime::shutdown::CancellationToken;
use simflow_schemas::registry::OutletWorkJob;
use simflow_tests::TestEnv;
use simflow_tests::browser::Browser;
use simflow_tests::writing::{FIRST_MSISDN, WriteWorld};
use uuid::Uuid;

use crate::support::{ANSWER, publish};

const VIEWER_PASSWORD: &str = "viewerPassw0rdForTests";
const OPERATOR_PASSWORD: &str = "operatorPassw0rdForTests";

/// How long the browser test waits for a page after a click.
const PAGE: Duration = Duration::from_secs(15);

/// A console serving a test's vhost and database, with one viewer and one operator.
struct RunningConsole {
    base: String,
    stop: CancellationToken,
}

impl Drop for RunningConsole {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn console_users() -> anyhow::Result<Vec<User>> {
    Ok(vec![
        User {
            name: "viewer".into(),
            role: Role::Viewer,
            password_hash: simflow_console::auth::hash_password(VIEWER_PASSWORD)?,
        },
        User {
            name: "operator".into(),
            role: Role::Operator,
            password_hash: simflow_console::auth::hash_password(OPERATOR_PASSWORD)?,
        },
    ])
}

/// Starts the console for `settings` on a free port.
pub(crate) async fn start_console(
    settings: &Settings,
    pool: &sqlx::PgPool,
    workers: Vec<String>,
) -> anyhow::Result<(SocketAddr, CancellationToken)> {
    let stop = CancellationToken::new();
    let console = ConsoleSettings {
        listen: "127.0.0.1:0".into(),
        workers,
        outlet_nodes: Default::default(),
        users: console_users()?,
        session_minutes: 30,
        business_refresh_seconds: 1,
        secure_cookies: false,
    };
    let (address, _) =
        simflow_console::serve(settings.clone(), console, pool.clone(), stop.clone()).await?;
    Ok((address, stop))
}

async fn running_console(env: &TestEnv) -> anyhow::Result<RunningConsole> {
    let (address, stop) = start_console(&env.settings, &env.pool, Vec::new()).await?;
    Ok(RunningConsole {
        base: format!("http://{address}"),
        stop,
    })
}

/// A logged-in HTTP client (cookies by hand, no redirects followed).
struct Login {
    http: reqwest::Client,
    base: String,
    cookie: String,
    csrf: String,
}

fn cookie_value(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter_map(|value| value.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

fn form_token(page: &str) -> Option<String> {
    let start = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(page[start..].split('"').next()?.to_owned())
}

/// Logs in; `None` when the console refuses.
async fn log_in(base: &str, user: &str, password: &str) -> anyhow::Result<Option<Login>> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = http.get(format!("{base}/login")).send().await?;
    let login_cookie = cookie_value(&page, "simflow_console_login").unwrap_or_default();
    let token = form_token(&page.text().await?).unwrap_or_default();
    let answer = http
        .post(format!("{base}/login"))
        .header(
            reqwest::header::COOKIE,
            format!("simflow_console_login={login_cookie}"),
        )
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("user={user}&password={password}&csrf={token}"))
        .send()
        .await?;
    let Some(session) = cookie_value(&answer, simflow_console::auth::SESSION_COOKIE) else {
        return Ok(None);
    };
    let cookie = format!("{}={session}", simflow_console::auth::SESSION_COOKIE);
    let front = http
        .get(format!("{base}/audit"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await?
        .text()
        .await?;
    let csrf = form_token(&front).unwrap_or_default();
    Ok(Some(Login {
        http,
        base: base.to_owned(),
        cookie,
        csrf,
    }))
}

impl Login {
    async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    async fn post(&self, path: &str, csrf: &str) -> anyhow::Result<(u16, String)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!("csrf={csrf}"))
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }
}

/// Publishes a card data import job (its vendor file inline, with keys) to the transfer queue,
/// where the transfer worker dead-letters it as a type that does not belong there; returns its
/// message id and the keys it carried.
async fn dead_letter_a_card_data_job(env: &TestEnv) -> anyhow::Result<(String, Vec<String>)> {
    let ki = simflow_cli::world::random_hex(16).to_uppercase();
    let opc = simflow_cli::world::random_hex(16).to_uppercase();
    let adm1 = simflow_cli::world::random_digits(8);
    let body = serde_json::json!({
        "import_id": Uuid::new_v4(),
        "staff_id": "HX0001",
        "file_name": "vendor-batch-0042.csv",
        "card_type": "USIM128K_NORMAL",
        "source": {
            "from": "inline",
            "content": format!("ICCID,IMSI,KI,OPC,ADM1\n8986011000000000005,001010000000001,{ki},{opc},{adm1}\n")
        },
        "transport_key": "vendor-2026"
    });
    let message_id = Uuid::new_v4().to_string();
    let properties = simflow_runtime::amqp::base_properties("cardfile.import.v1", &message_id);
    env.client
        .publisher()
        .publish(
            simflow_schemas::topology::JOBS_EXCHANGE,
            "transfer",
            &serde_json::to_vec(&body)?,
            properties,
        )
        .await?;
    Ok((message_id, vec![ki, opc, adm1, "vendor-2026".to_owned()]))
}

async fn dead_letters_in(env: &TestEnv, queue: &str) -> anyhow::Result<u64> {
    env.queue_depth(queue).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_needs_a_login_and_a_wrong_password_gets_none() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let console = running_console(&env).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    for path in [
        "/",
        "/queues",
        "/dead-letters",
        "/outlets",
        "/stock",
        "/cards",
        "/audit",
    ] {
        let response = http.get(format!("{}{path}", console.base)).send().await?;
        assert_eq!(response.status().as_u16(), 303, "{path}");
        assert_eq!(response.headers()[reqwest::header::LOCATION], "/login");
    }
    assert!(
        log_in(&console.base, "operator", "wrongPassword123")
            .await?
            .is_none()
    );
    assert!(
        log_in(&console.base, "nobody", OPERATOR_PASSWORD)
            .await?
            .is_none()
    );
    let viewer = log_in(&console.base, "viewer", VIEWER_PASSWORD)
        .await?
        .expect("the viewer logs in");
    let (status, page) = viewer.get("/stock").await?;
    assert_eq!(status, 200);
    assert!(page.contains("库存 / Stock"), "{page}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_shows_its_reasons_with_every_key_masked_and_a_viewer_cannot_act_on_it()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let (message_id, secrets) = dead_letter_a_card_data_job(&env).await?;
    env.eventually("the dead letter", Duration::from_secs(30), || async {
        Ok(dead_letters_in(&env, "simflow.transfer.dlq").await? == 1)
    })
    .await?;
    let console = running_console(&env).await?;
    let viewer = log_in(&console.base, "viewer", VIEWER_PASSWORD)
        .await?
        .expect("the viewer logs in");

    let (status, list) = viewer.get("/dead-letters").await?;
    assert_eq!(status, 200);
    assert!(list.contains(&message_id), "{list}");
    assert!(list.contains("UNEXPECTED_MESSAGE_TYPE"));
    assert!(list.contains("消息类型不属于此队列"));
    assert!(list.contains("This message type does not belong on this queue"));

    let (status, detail) = viewer
        .get(&format!("/dead-letters/transfer/{message_id}"))
        .await?;
    assert_eq!(status, 200);
    for secret in &secrets {
        assert!(
            !detail.contains(secret.as_str()),
            "a key is shown on the page"
        );
        assert!(
            !list.contains(secret.as_str()),
            "a key is shown in the list"
        );
    }
    assert!(detail.contains("8986011000000000005"), "the ICCID stays");
    assert!(detail.contains("ICCID,IMSI,KI,OPC,ADM1"));
    assert!(
        !detail.contains("id=\"replay\""),
        "a viewer gets no replay button"
    );

    let (status, _) = viewer
        .post(
            &format!("/dead-letters/transfer/{message_id}/replay"),
            &viewer.csrf,
        )
        .await?;
    assert_eq!(status, 403);
    assert_eq!(dead_letters_in(&env, "simflow.transfer.dlq").await?, 1);
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM console.audit")
        .fetch_one(&env.pool)
        .await?;
    assert_eq!(audited, 0, "a refused action is not an action");
    workers.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_discards_a_dead_letter_only_with_the_sessions_token_and_the_audit_names_them()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let workers = env.start_workers(&[WorkerKind::Transfer]);
    let (message_id, _) = dead_letter_a_card_data_job(&env).await?;
    env.eventually("the dead letter", Duration::from_secs(30), || async {
        Ok(dead_letters_in(&env, "simflow.transfer.dlq").await? == 1)
    })
    .await?;
    let console = running_console(&env).await?;
    let operator = log_in(&console.base, "operator", OPERATOR_PASSWORD)
        .await?
        .expect("the operator logs in");
    let path = format!("/dead-letters/transfer/{message_id}/discard");

    let (status, confirm) = operator.get(&path).await?;
    assert_eq!(status, 200);
    assert!(confirm.contains("id=\"confirm\""), "{confirm}");
    let (status, _) = operator.post(&path, "forged").await?;
    assert_eq!(status, 403, "a forged form is refused");
    assert_eq!(dead_letters_in(&env, "simflow.transfer.dlq").await?, 1);

    let (status, done) = operator.post(&path, &operator.csrf).await?;
    assert_eq!(status, 200);
    assert!(done.contains("完成 done"), "{done}");
    env.eventually(
        "the dead-letter queue to be empty",
        Duration::from_secs(15),
        || async { Ok(dead_letters_in(&env, "simflow.transfer.dlq").await? == 0) },
    )
    .await?;
    let audit: Vec<(String, String, String, String, String)> =
        sqlx::query_as("SELECT actor, role, action, message_id, outcome FROM console.audit")
            .fetch_all(&env.pool)
            .await?;
    assert_eq!(
        audit,
        vec![(
            "operator".to_owned(),
            "operator".to_owned(),
            "discard".to_owned(),
            message_id.clone(),
            "done".to_owned()
        )]
    );
    let (_, page) = operator.get("/audit").await?;
    assert!(page.contains(&message_id) && page.contains("discard"));
    workers.stop().await
}

/// Where the browser test leaves its screenshots: `docs/console/` when
/// `SIMFLOW_SAVE_SCREENSHOTS` is set (to refresh the README's pictures), else a scratch dir.
fn screenshot_dir() -> anyhow::Result<(
    std::path::PathBuf,
    Option<simflow_tests::writing::ScratchDir>,
)> {
    if std::env::var_os("SIMFLOW_SAVE_SCREENSHOTS").is_some() {
        let dir = simflow_tests::workspace_root().join("docs/console");
        std::fs::create_dir_all(&dir)?;
        Ok((dir, None))
    } else {
        let scratch = simflow_tests::writing::ScratchDir::new("console-screenshots")?;
        Ok((scratch.0.clone(), Some(scratch)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_replayed_from_the_console_in_a_real_browser_then_succeeds()
-> anyhow::Result<()> {
    let mut world = WriteWorld::new(2, 0, &["HX01"], |_| {}).await?;
    let mut hx01 = world.capture_outlet_work("HX01")?;
    let order_id = Uuid::new_v4();
    let job = crate::writecard::request(
        order_id,
        "HX01",
        "C0601",
        &world.cards[0].iccid,
        FIRST_MSISDN + 3,
    );
    // The job fails: no card data file was imported for the card.
    let message_id = publish(&world.env, &job).await?;
    let failed = world.watch.next_for(&message_id, ANSWER).await?;
    assert_eq!(failed.body["reason"]["code"], "WRITE_SCRIPT_MISSING");

    let (address, stop) = start_console(&world.env.settings, &world.env.pool, Vec::new()).await?;
    let base = format!("http://{address}");
    let (shots, _scratch) = screenshot_dir()?;
    let browser = Browser::start().await?;
    browser.goto(&format!("{base}/dead-letters")).await?;
    assert!(
        browser.url().await?.ends_with("/login"),
        "a login comes first"
    );
    browser.type_into("#user", "operator").await?;
    browser.type_into("#password", OPERATOR_PASSWORD).await?;
    browser.click("#login").await?;
    browser.wait_for_text("退出 Log out", PAGE).await?;

    // Its dead letter appears, with the clerk's reason in both languages.
    browser.goto(&format!("{base}/dead-letters")).await?;
    let timing = browser
        .execute("const n = performance.getEntriesByType('navigation')[0]; return [n.responseEnd - n.startTime, n.domContentLoadedEventEnd - n.startTime, n.loadEventEnd - n.startTime, n.transferSize];")
        .await?;
    println!(
        "console /dead-letters in the browser (Navigation Timing, ms: response end, DOMContentLoaded, load; bytes): {timing}"
    );
    let page = browser.text().await?;
    assert!(page.contains(&message_id), "{page}");
    assert!(
        page.contains("写卡脚本内容不存在，请把号卡文件维护到数据库！"),
        "{page}"
    );
    std::fs::write(shots.join("dead-letters.png"), browser.screenshot().await?)?;

    browser.click(&format!("a[href$='{message_id}']")).await?;
    browser.wait_for_text("WRITE_SCRIPT_MISSING", PAGE).await?;
    std::fs::write(shots.join("dead-letter.png"), browser.screenshot().await?)?;

    // Ops load the card data file, then replay from the page, confirming.
    world.import_card_data(&world.cards.clone()).await?;
    browser.click("#replay").await?;
    assert!(browser.text().await?.contains("Confirm"));
    browser.click("#confirm").await?;
    let result = browser.text().await?;
    assert!(
        result.contains("完成 done") && result.contains("replayed 1"),
        "{result}"
    );
    std::fs::write(shots.join("replayed.png"), browser.screenshot().await?)?;

    // The job succeeds: its sealed script reaches the outlet.
    let work = hx01.next(ANSWER).await?;
    let OutletWorkJob::WriteScript(envelope) = work.job else {
        panic!("expected a write script")
    };
    assert_eq!(envelope.order_id, order_id);
    let who: String = sqlx::query_scalar(
        "SELECT actor FROM console.audit WHERE message_id = $1 AND action = 'replay' AND outcome = 'done'",
    )
    .bind(&message_id)
    .fetch_one(&world.env.pool)
    .await?;
    assert_eq!(who, "operator");

    browser.goto(&format!("{base}/")).await?;
    std::fs::write(shots.join("overview.png"), browser.screenshot().await?)?;
    browser.quit().await?;
    stop.cancel();
    hx01.stop().await?;
    world.stop().await
}
