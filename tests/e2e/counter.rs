//! The outlet node's counter page in a real browser (Debian's chromium, headless, under
//! chromedriver), with the real `simflow outlet run` as a child process, the central workers on
//! RabbitMQ and PostgreSQL, pcscd with vpcd readers and soft SIMs: a write from the central
//! request to "done" on the page, a card pulled mid-write, pcscd stopped (a private pcscd: the
//! shared one is never stopped), and who may call the API.
//!
//! The page's states are recorded in the browser as the page shows them (a MutationObserver on
//! the state box, with the browser's clock), so a state that lasts a few milliseconds on a soft
//! SIM (writing) is seen too. The tests print insertion-to-done times and the node's memory;
//! they assert no timing.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;
use simflow_softsim::Faults;
use simflow_tests::browser::Browser;
use simflow_tests::pcsc::{PrivatePcscd, ReaderLease, VirtualReader};
use simflow_tests::process::SimflowProcess;
use simflow_tests::writing::{FIRST_MSISDN, ScratchDir, WriteWorld};
use uuid::Uuid;

use crate::card::lease;
use crate::outlet::{insert, publish_write, request, sim, write_outcome};

/// How long the page may take to show a state.
const PAGE: Duration = Duration::from_secs(40);

/// The CRM origin the tests configure.
const CRM: &str = "http://crm.simflow.test";

/// A `simflow outlet run` child process with its counter page.
struct CounterNode {
    process: SimflowProcess,
    base: String,
}

impl CounterNode {
    /// Starts HX01's node on `reader` (files under `dir`), its counter page on a free loopback
    /// port, with `extra_env` (e.g. another pcscd's socket), and waits until the page answers.
    async fn start(
        world: &WriteWorld,
        reader: &str,
        dir: &Path,
        extra_env: &[(String, String)],
    ) -> anyhow::Result<CounterNode> {
        let settings = world.node_settings("HX01", reader, dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut env: Vec<(String, String)> = [
            ("SIMFLOW__OUTLET__CODE", settings.code.clone()),
            ("SIMFLOW__OUTLET__READER", settings.reader.clone()),
            (
                "SIMFLOW__OUTLET__KEY_FILE",
                settings.key_file.display().to_string(),
            ),
            (
                "SIMFLOW__OUTLET__JOURNAL",
                settings.journal.display().to_string(),
            ),
            (
                "SIMFLOW__OUTLET__BROKER_URI",
                world.outlet_uri("HX01")?.expose_secret().to_owned(),
            ),
            ("SIMFLOW__OUTLET__CARD_WAIT_SECONDS", "30".to_owned()),
            ("SIMFLOW__OUTLET__REINSERT_WAIT_SECONDS", "30".to_owned()),
            (
                "SIMFLOW__OUTLET__COUNTER_LISTEN",
                format!("127.0.0.1:{port}"),
            ),
            ("SIMFLOW__OUTLET__CRM_ORIGIN", CRM.to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        env.extend(extra_env.iter().cloned());
        let process = SimflowProcess::start_with(&world.env.settings, &["outlet", "run"], &env)?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let answered = http
                .get(format!("{base}/api/v1/state"))
                .send()
                .await
                .is_ok_and(|answer| answer.status().is_success());
            if answered {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the counter page did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(CounterNode { process, base })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(reqwest::get(format!("{}{path}", self.base))
            .await?
            .json()
            .await?)
    }

    /// The node's resident memory (VmRSS, kB) and its peak (VmHWM, kB).
    fn memory_kb(&self) -> anyhow::Result<(u64, u64)> {
        let pid = self
            .process
            .pid()
            .ok_or_else(|| anyhow::anyhow!("the node has exited"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/{pid}/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// A browser on the node's page, once it shows the idle state.
    async fn open_page(&self) -> anyhow::Result<Browser> {
        let browser = Browser::start().await?;
        browser.goto(&format!("{}/", self.base)).await?;
        browser.wait_for_text("空闲，等待业务", PAGE).await?;
        Ok(browser)
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        self.process.terminate()?;
        let status = tokio::time::timeout(Duration::from_secs(20), self.process.wait()).await??;
        anyhow::ensure!(status.success(), "the node exited with {status}");
        Ok(())
    }
}

/// A world with outlet HX01, one leased virtual reader, and HX01's node process serving its
/// counter page on that reader (its journal in `dir`).
struct AtCounter {
    world: WriteWorld,
    readers: ReaderLease,
    reader: VirtualReader,
    node: CounterNode,
    dir: ScratchDir,
}

impl AtCounter {
    async fn start(name: &str) -> anyhow::Result<AtCounter> {
        let world = WriteWorld::new(1, 1, &["HX01"], |_| {}).await?;
        let readers = lease(1).await;
        let reader = readers.reader().clone();
        let dir = ScratchDir::new(name)?;
        let node = CounterNode::start(&world, &reader.name, &dir.0, &[]).await?;
        Ok(AtCounter {
            world,
            readers,
            reader,
            node,
            dir,
        })
    }
}

/// Closes the browser, stops the node (it must exit 0) and the world.
async fn finish(browser: Browser, node: CounterNode, world: WriteWorld) -> anyhow::Result<()> {
    browser.quit().await?;
    node.stop().await?;
    world.stop().await
}

/// Where screenshots go: `docs/counter/` when `SIMFLOW_SAVE_SCREENSHOTS` is set (to refresh the
/// README's pictures), else a scratch directory.
fn screenshot_dir() -> anyhow::Result<(std::path::PathBuf, Option<ScratchDir>)> {
    if std::env::var_os("SIMFLOW_SAVE_SCREENSHOTS").is_some() {
        let dir = simflow_tests::workspace_root().join("docs/counter");
        std::fs::create_dir_all(&dir)?;
        Ok((dir, None))
    } else {
        let scratch = ScratchDir::new("counter-screenshots")?;
        Ok((scratch.0.clone(), Some(scratch)))
    }
}

/// Starts recording every state the page shows: `(state, code, Chinese text, browser ms)`.
const RECORD_STATES: &str = r#"
    window.seenStates = [];
    const box = document.getElementById("state");
    const record = () => window.seenStates.push({
        state: box.dataset.kind,
        code: box.dataset.code,
        zh: document.getElementById("state-zh").textContent,
        at: Date.now(),
    });
    record();
    new MutationObserver(record).observe(box, { attributes: true, childList: true, subtree: true, characterData: true });
    return true;
"#;

/// The states the page showed, each once per stretch, with the browser's time of its first showing.
async fn seen_states(browser: &Browser) -> anyhow::Result<Vec<(String, String, String, i64)>> {
    let seen = browser.execute("return window.seenStates;").await?;
    let mut states: Vec<(String, String, String, i64)> = Vec::new();
    for entry in seen.as_array().cloned().unwrap_or_default() {
        let state = entry["state"].as_str().unwrap_or_default().to_owned();
        let code = entry["code"].as_str().unwrap_or_default().to_owned();
        let zh = entry["zh"].as_str().unwrap_or_default().to_owned();
        let at = entry["at"].as_i64().unwrap_or_default();
        if states
            .last()
            .is_none_or(|last| (&last.0, &last.2) != (&state, &zh))
        {
            states.push((state, code, zh, at));
        }
    }
    Ok(states)
}

/// Whether `wanted` occur in `states` in this order (others may come between).
fn in_order(states: &[(String, String, String, i64)], wanted: &[&str]) -> bool {
    let mut wanted = wanted.iter().peekable();
    for (state, ..) in states {
        if wanted.peek().is_some_and(|next| *next == state) {
            wanted.next();
        }
    }
    wanted.peek().is_none()
}

fn at_of(states: &[(String, String, String, i64)], wanted: &str) -> Option<i64> {
    states
        .iter()
        .find(|(state, ..)| state == wanted)
        .map(|entry| entry.3)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_counter_page_shows_waiting_writing_and_done_for_a_write_from_the_centre()
-> anyhow::Result<()> {
    let AtCounter {
        mut world,
        readers: _readers,
        reader,
        node,
        dir: _dir,
    } = AtCounter::start("counter-write").await?;
    let (shots, _scratch) = screenshot_dir()?;

    let browser = node.open_page().await?;
    let text = browser.wait_for_text(&reader.name, PAGE).await?;
    assert!(text.contains("无卡"), "the reader shows no card: {text}");
    browser.execute(RECORD_STATES).await?;

    // The centre sends the script; the page asks for the card.
    let order_id = Uuid::new_v4();
    let card = world.cards[0].clone();
    publish_write(&world, &request(order_id, "HX01", &card, FIRST_MSISDN)).await?;
    let text = browser.wait_for_text("请插入白卡", PAGE).await?;
    assert!(
        text.contains(&card.iccid),
        "the page names the card: {text}"
    );
    assert!(text.contains(&format!("insert blank card {}", card.iccid)));
    std::fs::write(shots.join("waiting.png"), browser.screenshot().await?)?;

    // The clerk inserts the card: writing, then done, without a reload.
    let inserted_at = chrono::Utc::now().timestamp_millis();
    let soft = sim(&card, Faults::default());
    let _inserted = insert(&soft, &reader).await;
    let text = browser.wait_for_text("写卡成功", PAGE).await?;
    assert!(text.contains(&format!("card {} written, remove it", card.iccid)));
    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.written", "{}", outcome.body);

    let states = seen_states(&browser).await?;
    println!("states the page showed: {states:?}");
    assert!(
        in_order(&states, &["waiting_for_card", "reading", "writing", "done"]),
        "the page shows waiting, reading, writing and done in order: {states:?}"
    );
    let writing = states
        .iter()
        .find(|(state, ..)| state == "writing")
        .map(|entry| entry.2.clone())
        .unwrap_or_default();
    assert!(writing.contains("请勿拔卡"), "{writing}");

    // The day's writes list it: time, ICCID, the number masked, the outcome; nothing secret.
    let text = browser.wait_for_text("130****0000", PAGE).await?;
    assert!(text.contains(&card.iccid));
    let today = node.get("/api/v1/writes/today").await?;
    let first = &today["writes"][0];
    assert_eq!(first["iccid"], card.iccid.as_str());
    assert_eq!(first["msisdn"], "130****0000");
    assert_eq!(first["outcome"], "written");
    let listed = today.to_string();
    for secret in ["auth_answer", &card.adm1, &card.ki, &card.opc] {
        assert!(!listed.contains(secret), "the list carries {secret}");
    }
    // The card stays in: the page's read-card step reads it (now written, so not blank).
    browser.click("#read-card").await?;
    // Both languages of the answer (the page may paint one a moment before the other).
    browser.wait_for_text("非白卡", PAGE).await?;
    browser.wait_for_text("not a blank card", PAGE).await?;
    let text = browser.wait_for_text("有卡", PAGE).await?;
    assert!(text.contains("card in"));
    browser
        .wait_for_text(&format!("读卡 {}（非白卡）", card.iccid), PAGE)
        .await?;
    std::fs::write(shots.join("done.png"), browser.screenshot().await?)?;

    // Measured, not asserted: insertion to done as the page showed it, and memory at rest.
    let done_at = at_of(&states, "done").unwrap_or_default();
    let writing_at = at_of(&states, "writing").unwrap_or_default();
    println!(
        "counter measurement: insertion → writing on the page {} ms, insertion → done on the page {} ms, writing → done {} ms",
        writing_at - inserted_at,
        done_at - inserted_at,
        done_at - writing_at
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (rss, peak) = node.memory_kb()?;
    println!("counter measurement: node at rest VmRSS {rss} kB (peak VmHWM {peak} kB)");

    finish(browser, node, world).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_pulled_mid_write_shows_reinsert_the_same_card_on_the_page_then_done()
-> anyhow::Result<()> {
    let AtCounter {
        mut world,
        readers: _readers,
        reader,
        node,
        dir: _dir,
    } = AtCounter::start("counter-pull").await?;
    let (shots, _scratch) = screenshot_dir()?;

    let browser = node.open_page().await?;
    browser.execute(RECORD_STATES).await?;

    let order_id = Uuid::new_v4();
    let card = world.cards[0].clone();
    publish_write(&world, &request(order_id, "HX01", &card, FIRST_MSISDN)).await?;
    browser.wait_for_text("请插入白卡", PAGE).await?;
    // Pulled after the 4 identification APDUs and 20 of the script's, put back 3 s later.
    let soft = sim(
        &card,
        Faults {
            pull_after_apdus: Some(24),
            reinsert_after: Some(Duration::from_secs(3)),
            ..Faults::default()
        },
    );
    let _inserted = insert(&soft, &reader).await;
    let text = browser
        .wait_for_text("写卡中断，请重新插入同一张卡", PAGE)
        .await?;
    assert!(text.contains(&format!("re-insert the same card {}", card.iccid)));
    std::fs::write(shots.join("reinsert.png"), browser.screenshot().await?)?;

    browser.wait_for_text("写卡成功", PAGE).await?;
    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.written", "{}", outcome.body);
    let states = seen_states(&browser).await?;
    println!("states the page showed: {states:?}");
    assert!(
        in_order(
            &states,
            &[
                "waiting_for_card",
                "writing",
                "reinsert_same_card",
                "reading",
                "writing",
                "done"
            ]
        ),
        "the page follows the pull and the re-insertion: {states:?}"
    );

    finish(browser, node, world).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_pcscd_shows_the_decks_driver_not_installed_on_the_page_until_it_is_back()
-> anyhow::Result<()> {
    let world = WriteWorld::new(1, 1, &["HX01"], |_| {}).await?;
    let mut pcscd = tokio::task::spawn_blocking(PrivatePcscd::start).await??;
    let dir = ScratchDir::new("counter-pcscd")?;
    let socket = (
        "PCSCLITE_CSOCK_NAME".to_owned(),
        pcscd.socket().display().to_string(),
    );
    let node = CounterNode::start(&world, &pcscd.reader.name, &dir.0, &[socket]).await?;
    let (shots, _scratch) = screenshot_dir()?;

    let browser = node.open_page().await?;
    let text = browser.wait_for_text(&pcscd.reader.name, PAGE).await?;
    assert!(text.contains("无卡"), "{text}");

    // Only this test's pcscd stops; the shared one serves on.
    tokio::task::block_in_place(|| pcscd.stop())?;
    let text = browser.wait_for_text("写卡器驱动未安装。", PAGE).await?;
    assert!(text.contains("Card writer driver not installed."), "{text}");
    std::fs::write(
        shots.join("driver-missing.png"),
        browser.screenshot().await?,
    )?;
    let state = node.get("/api/v1/state").await?;
    assert_eq!(state["state"], "error");
    assert_eq!(state["code"], "READER_DRIVER_MISSING");
    let readers = node.get("/api/v1/readers").await?;
    assert_eq!(readers["available"], false);
    assert_eq!(readers["error"]["zh"], "写卡器驱动未安装。");

    tokio::task::block_in_place(|| pcscd.restart())?;
    let text = browser.wait_for_text("空闲，等待业务", PAGE).await?;
    assert!(!text.contains("写卡器驱动未安装。"), "{text}");

    finish(browser, node, world).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_counter_api_answers_its_own_page_and_the_crm_origin_and_refuses_other_origins()
-> anyhow::Result<()> {
    let AtCounter {
        world,
        readers: _readers,
        reader,
        node,
        dir: _dir,
    } = AtCounter::start("counter-cors").await?;
    let http = reqwest::Client::new();
    let state = format!("{}/api/v1/state", node.base);

    let from_crm = http.get(&state).header("Origin", CRM).send().await?;
    assert_eq!(from_crm.status(), 200);
    assert_eq!(
        from_crm.headers()["access-control-allow-origin"],
        CRM,
        "the CRM origin may read the API"
    );

    let preflight = http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/api/v1/read-card", node.base),
        )
        .header("Origin", CRM)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await?;
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], CRM);

    for other in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let answer = http.get(&state).header("Origin", other).send().await?;
        assert_eq!(answer.status(), 403, "{other}");
        assert!(
            !answer.headers().contains_key("access-control-allow-origin"),
            "{other} gets no CORS header"
        );
        let body: Value = answer.json().await?;
        assert_eq!(body["code"], "ORIGIN_REFUSED");
        assert_eq!(body["zh"], "此网页无权使用写卡器");
        // A form on another page cannot start a card read either.
        let read = http
            .post(format!("{}/api/v1/read-card", node.base))
            .header("Origin", other)
            .send()
            .await?;
        assert_eq!(read.status(), 403, "{other}");
        let preflight = http
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/api/v1/read-card", node.base),
            )
            .header("Origin", other)
            .header("Access-Control-Request-Method", "POST")
            .send()
            .await?;
        assert_eq!(preflight.status(), 403, "{other}");
    }
    assert_eq!(node.get("/api/v1/state").await?["state"], "idle");

    // A page reaching the node by another host name (DNS rebinding) is refused.
    let rebound = http
        .get(&state)
        .header("Host", "attacker.example")
        .send()
        .await?;
    assert_eq!(rebound.status(), 403);

    // The page itself (same origin) may call it, in a real browser; a page of another origin
    // may not read it.
    let browser = node.open_page().await?;
    let own = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/v1/readers').then(r => r.json()).then(v => done(v.configured), e => done('failed: ' + e));",
        )
        .await?;
    assert_eq!(own, Value::String(reader.name.clone()));
    let other_page = ScratchDir::new("other-origin")?;
    std::fs::write(
        other_page.0.join("index.html"),
        "<!doctype html><title>other</title>",
    )?;
    browser
        .goto(&format!(
            "file://{}",
            other_page.0.join("index.html").display()
        ))
        .await?;
    let foreign = browser
        .execute_async(&format!(
            "const done = arguments[arguments.length - 1];
             fetch('{}/api/v1/readers').then(r => done('read: ' + r.status), e => done('refused'));",
            node.base
        ))
        .await?;
    assert_eq!(foreign, Value::String("refused".into()));

    finish(browser, node, world).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_the_writer_cannot_use_shows_please_use_another_blank_card_on_the_page()
-> anyhow::Result<()> {
    let AtCounter {
        mut world,
        readers: _readers,
        reader,
        node,
        dir: _dir,
    } = AtCounter::start("counter-mute").await?;

    let browser = node.open_page().await?;
    let order_id = Uuid::new_v4();
    let card = world.cards[0].clone();
    publish_write(&world, &request(order_id, "HX01", &card, FIRST_MSISDN)).await?;
    browser.wait_for_text("请插入白卡", PAGE).await?;
    // A card pcscd cannot power up (badly inserted, or not a card at all).
    let mute = sim(
        &card,
        Faults {
            mute: true,
            ..Faults::default()
        },
    );
    let mut inserted = mute.insert(reader.vpcd_addr());
    inserted.connected().await;
    let text = browser.wait_for_text("请更换白卡！", PAGE).await?;
    assert!(text.contains("Please use another blank card."), "{text}");
    let outcome = write_outcome(&mut world.watch, order_id).await?;
    assert_eq!(outcome.routing_key, "card.write_failed", "{}", outcome.body);
    // The day's writes say so too, with the card left untouched.
    let text = browser.wait_for_text(&card.iccid, PAGE).await?;
    assert!(text.contains("Please use another blank card."), "{text}");
    let today = node.get("/api/v1/writes/today").await?;
    assert_eq!(today["writes"][0]["outcome"], "untouched");
    assert_eq!(today["writes"][0]["code"], "CARD_UNUSABLE");
    inserted.remove().await;

    finish(browser, node, world).await
}
