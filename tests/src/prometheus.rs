//! A real Prometheus (Debian's `prometheus` package) for a test: the checked-in
//! `deploy/prometheus/prometheus.yml` and rules, with a one-second scrape and evaluation
//! interval, the test's own targets files, a free port and a data directory of its own (never
//! the package's service or port 9090). Stopped when dropped.
//!
//! Also the one helper the observability tests share: the metric names a PromQL expression
//! reads ([`metric_names`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::writing::ScratchDir;

/// Where Prometheus scrapes, by job of the checked-in configuration.
#[derive(Debug, Default)]
pub struct Targets {
    /// `simflow-workers`: worker processes' `/metrics`.
    pub workers: Vec<SocketAddr>,
    /// `simflow-outlets`: outlet nodes, with their outlet codes.
    pub outlets: Vec<(SocketAddr, String)>,
    /// `simflow-console`: the ops console.
    pub console: Vec<SocketAddr>,
}

/// A running Prometheus server.
#[derive(Debug)]
pub struct PrometheusServer {
    /// `127.0.0.1:<port>`.
    pub address: String,
    http: reqwest::Client,
    child: tokio::process::Child,
    _dir: ScratchDir,
}

fn targets_file(entries: &[(SocketAddr, Option<&str>)]) -> String {
    let mut text = String::from("[]\n");
    if !entries.is_empty() {
        text.clear();
        for (address, outlet) in entries {
            text.push_str(&format!("- targets: [\"{address}\"]\n"));
            if let Some(outlet) = outlet {
                text.push_str(&format!("  labels: {{outlet: \"{outlet}\"}}\n"));
            }
        }
    }
    text
}

impl PrometheusServer {
    /// Starts Prometheus with the checked-in configuration and rules, scraping `targets` (and
    /// the machine's RabbitMQ plugin on 15692) every second; returns once it is ready.
    pub async fn start(targets: &Targets) -> anyhow::Result<PrometheusServer> {
        let dir = ScratchDir::new("prometheus")?;
        let deploy = crate::workspace_root().join("deploy/prometheus");
        let config = std::fs::read_to_string(deploy.join("prometheus.yml"))?
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        std::fs::write(dir.0.join("prometheus.yml"), config)?;
        std::fs::create_dir_all(dir.0.join("rules"))?;
        std::fs::copy(
            deploy.join("rules/simflow.rules.yml"),
            dir.0.join("rules/simflow.rules.yml"),
        )?;
        std::fs::create_dir_all(dir.0.join("targets"))?;
        let plain = |addresses: &[SocketAddr]| {
            targets_file(
                &addresses
                    .iter()
                    .map(|address| (*address, None))
                    .collect::<Vec<_>>(),
            )
        };
        std::fs::write(dir.0.join("targets/workers.yml"), plain(&targets.workers))?;
        std::fs::write(dir.0.join("targets/console.yml"), plain(&targets.console))?;
        std::fs::write(
            dir.0.join("targets/outlets.yml"),
            targets_file(
                &targets
                    .outlets
                    .iter()
                    .map(|(address, code)| (*address, Some(code.as_str())))
                    .collect::<Vec<_>>(),
            ),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let address = format!("127.0.0.1:{port}");
        let child = tokio::process::Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting prometheus (deploy/setup.sh installs Debian's package)")?;
        let server = PrometheusServer {
            address,
            http: reqwest::Client::new(),
            child,
            _dir: dir,
        };
        crate::eventually(
            "Prometheus to be ready",
            Duration::from_secs(30),
            || async {
                Ok(server
                    .http
                    .get(format!("http://{}/-/ready", server.address))
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success()))
            },
        )
        .await?;
        Ok(server)
    }

    /// GETs an API path and returns its `data`, failing on an error status.
    pub async fn api(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> anyhow::Result<serde_json::Value> {
        let encoded: Vec<String> = query
            .iter()
            .map(|(key, value)| format!("{key}={}", encode(value)))
            .collect();
        let body: serde_json::Value = self
            .http
            .get(format!(
                "http://{}{path}?{}",
                self.address,
                encoded.join("&")
            ))
            .send()
            .await?
            .json()
            .await?;
        if body["status"] != "success" {
            bail!("Prometheus {path} {query:?}: {body}");
        }
        Ok(body["data"].clone())
    }

    /// Evaluates an instant query.
    pub async fn query(&self, expr: &str) -> anyhow::Result<serde_json::Value> {
        self.api("/api/v1/query", &[("query", expr)]).await
    }

    /// The series of one metric name Prometheus holds.
    pub async fn series(&self, metric: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let data = self.api("/api/v1/series", &[("match[]", metric)]).await?;
        Ok(data.as_array().cloned().unwrap_or_default())
    }

    /// The health of every active target, as `(job, health, last error)`.
    pub async fn targets(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let data = self.api("/api/v1/targets", &[]).await?;
        Ok(data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|target| {
                (
                    target["labels"]["job"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    target["health"].as_str().unwrap_or_default().to_owned(),
                    target["lastError"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The metric names an expression reads: every identifier that is not a function, keyword,
/// label name, string or duration. Recording rules' names (with a colon) are included.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const WORDS: [&str; 24] = [
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "rate",
        "increase",
        "delta",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "histogram_quantile",
        "time",
        "absent",
        "offset",
        "topk",
        "inf",
    ];
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut index = 0;
    let mut in_braces = 0;
    let mut in_parens_after_by = false;
    while index < bytes.len() {
        let character = bytes[index];
        match character {
            '"' | '\'' => {
                index += 1;
                while index < bytes.len() && bytes[index] != character {
                    if bytes[index] == '\\' {
                        index += 1;
                    }
                    index += 1;
                }
                index += 1;
            }
            '{' => {
                in_braces += 1;
                index += 1;
            }
            '}' => {
                in_braces -= 1;
                index += 1;
            }
            '[' => {
                while index < bytes.len() && bytes[index] != ']' {
                    index += 1;
                }
            }
            ')' => {
                in_parens_after_by = false;
                index += 1;
            }
            character if character.is_ascii_alphabetic() || character == '_' => {
                let start = index;
                while index < bytes.len()
                    && (bytes[index].is_ascii_alphanumeric()
                        || bytes[index] == '_'
                        || bytes[index] == ':')
                {
                    index += 1;
                }
                let word: String = bytes[start..index].iter().collect();
                let next = bytes[index..].iter().find(|c| !c.is_whitespace());
                if WORDS.contains(&word.as_str()) {
                    if matches!(word.as_str(), "by" | "without" | "on" | "ignoring") {
                        in_parens_after_by = true;
                    }
                } else if in_braces == 0 && !in_parens_after_by && next != Some(&'(') {
                    names.insert(word);
                }
            }
            _ => index += 1,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::metric_names;

    #[test]
    fn metric_names_are_read_from_expressions_without_labels_functions_or_keywords() {
        let names = metric_names(
            r#"1 - sum by (worker) (rate(simflow_job_publish_to_outcome_seconds_bucket{le="30"}[5m]))
               / sum by (worker, le) (rate(simflow_x_count[5m])) > (14.4 * 0.01)
               and simflow:job_latency_slo_misses:ratio_rate5m > 0
               or max by (vhost, queue) (rabbitmq_detailed_queue_consumers{queue=~"simflow\\.outlet\\..+"}) == 0
               or up{job="simflow-outlets"} == 0"#,
        );
        let expected: Vec<&str> = vec![
            "rabbitmq_detailed_queue_consumers",
            "simflow:job_latency_slo_misses:ratio_rate5m",
            "simflow_job_publish_to_outcome_seconds_bucket",
            "simflow_x_count",
            "up",
        ];
        assert_eq!(
            names.iter().map(String::as_str).collect::<Vec<_>>(),
            expected
        );
    }
}
