//! A real browser for tests: Debian's chromium, headless, driven by Debian's chromedriver over
//! the W3C WebDriver protocol (plain HTTP and JSON through reqwest).
//!
//! Each [`Browser`] starts its own chromedriver on a free port and one session with a fresh
//! profile directory; chromium runs with the flags a root user in a container needs
//! (`--no-sandbox`) and without anything that reaches the network on its own. Dropping it ends
//! the session (which closes chromium) and stops chromedriver.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::writing::ScratchDir;

/// A headless chromium under chromedriver.
#[derive(Debug)]
pub struct Browser {
    base: String,
    session: String,
    http: reqwest::Client,
    driver: Option<tokio::process::Child>,
    _profile: ScratchDir,
}

impl Browser {
    /// Starts chromedriver and a headless chromium session.
    pub async fn start() -> anyhow::Result<Browser> {
        let profile = ScratchDir::new("chromium-profile")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver (apt-get install chromium chromium-driver)")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .map(|response| response.json::<Value>());
            if let Some(status) = ready
                && status
                    .await
                    .is_ok_and(|status| status["value"]["ready"] == true)
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("chromedriver did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.0.display()),
        ];
        let capabilities = json!({
            "capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
            }}
        });
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await?
            .json()
            .await?;
        let session = created["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no WebDriver session: {created}"))?
            .to_owned();
        Ok(Browser {
            base,
            session,
            http,
            driver: Some(driver),
            _profile: profile,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let request = self.http.request(method.clone(), &url);
        let request = if method == reqwest::Method::GET {
            request
        } else {
            request.json(&body)
        };
        let answer: Value = request.send().await?.json().await?;
        if let Some(error) = answer["value"]["error"].as_str() {
            bail!(
                "WebDriver {path}: {error}: {}",
                answer["value"]["message"].as_str().unwrap_or_default()
            );
        }
        Ok(answer["value"].clone())
    }

    /// Opens a URL and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", json!({ "url": url }))
            .await?;
        Ok(())
    }

    /// The current URL.
    pub async fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .command(reqwest::Method::GET, "/url", Value::Null)
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The element matching a CSS selector (the first one).
    pub async fn find(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({ "using": "css selector", "value": css }),
            )
            .await
            .with_context(|| format!("finding {css}"))?;
        // A W3C element reference: an object with one key (the protocol's constant) whose value
        // is the element's id.
        found
            .as_object()
            .and_then(|reference| reference.values().next())
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("no element reference for {css}: {found}"))
    }

    /// Types text into an element.
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .await?;
        Ok(())
    }

    /// Clicks an element (a link or a submit button: the next page loads before this returns).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await?;
        Ok(())
    }

    /// The visible text of the page's body. A body that goes stale between finding and reading
    /// it (the page was still replacing itself after a click) is found again.
    pub async fn text(&self) -> anyhow::Result<String> {
        let mut tries = 0;
        loop {
            let body = self.find("body").await?;
            let text = self
                .command(
                    reqwest::Method::GET,
                    &format!("/element/{body}/text"),
                    Value::Null,
                )
                .await;
            match text {
                Ok(text) => return Ok(text.as_str().unwrap_or_default().to_owned()),
                Err(error) if tries < 3 && error.to_string().contains("stale element") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Waits until the page's text contains `needle` (after a click that loads a page), at most
    /// `timeout`; returns the text.
    pub async fn wait_for_text(&self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let text = self.text().await.unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {needle:?} on the page: {text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs a script in the page and returns its result.
    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Runs an asynchronous script in the page (it calls its last argument with the result)
    /// and returns that result.
    pub async fn execute_async(&self, script: &str) -> anyhow::Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// A PNG screenshot of the window.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine as _;
        let encoded = self
            .command(reqwest::Method::GET, "/screenshot", Value::Null)
            .await?;
        Ok(base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())?)
    }

    /// Ends the session (closing chromium) and stops chromedriver.
    pub async fn quit(mut self) -> anyhow::Result<()> {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.http.delete(url).send().await;
        if let Some(mut driver) = self.driver.take() {
            let _ = driver.kill().await;
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let Some(mut driver) = self.driver.take() else {
            return;
        };
        // A test that failed before quit(): end the session from a thread of its own (Drop may
        // run inside the test's runtime), so chromium does not outlive the test.
        let url = format!("{}/session/{}", self.base, self.session);
        let ended = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async move {
                    let _ = reqwest::Client::new().delete(url).send().await;
                    let _ = driver.kill().await;
                });
            }
        });
        let _ = ended.join();
    }
}
