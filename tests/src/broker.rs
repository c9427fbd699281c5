//! A private RabbitMQ node and PostgreSQL cluster for tests that sabotage the broker (alarms,
//! restarts): the shared broker must stay healthy for every other test, so the sabotage happens
//! on a node of the test's own, started by the same `deploy/chaos/services.sh` as the chaos run,
//! on free loopback ports (so it can run beside the chaos run), and stopped and removed on drop.

use std::process::Command;

use anyhow::{Context, bail};
use simflow_cli::services::{HELPER, PrivateServices};
use simflow_runtime::Settings;

/// A broker node and a database cluster owned by one test.
#[derive(Debug)]
pub struct PrivateNode {
    /// Their ports and the helper that runs them.
    pub services: PrivateServices,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn helper(
    command: &str,
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<String> {
    let output = Command::new(crate::workspace_root().join(HELPER))
        .arg(command)
        .arg(dir)
        .args(args)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .current_dir(crate::workspace_root())
        .output()
        .with_context(|| format!("running {HELPER}"))?;
    if !output.status.success() {
        bail!(
            "{HELPER} {command} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl PrivateNode {
    /// Starts a node (named after the test run) and a cluster on free ports; blocks until both
    /// answer (run it on a blocking thread). The ports are free when chosen but may be taken
    /// by a test running beside this one before the node binds them (a node that loses its
    /// port stops during boot: `rabbit_is_not_running`), so a failed start is tried again, at
    /// most three times, each on new ports.
    pub fn start() -> anyhow::Result<PrivateNode> {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::start_once() {
                Ok(node) => return Ok(node),
                Err(error) => failures.push(format!("{error:#}")),
            }
        }
        bail!(
            "the private node did not start: {}",
            failures.join(" | then: ")
        )
    }

    fn start_once() -> anyhow::Result<PrivateNode> {
        let dir = std::env::temp_dir().join(crate::unique_name("simflow_node"));
        let env = vec![
            ("CHAOS_AMQP_PORT", free_port()?.to_string()),
            ("CHAOS_MANAGEMENT_PORT", free_port()?.to_string()),
            ("CHAOS_DIST_PORT", free_port()?.to_string()),
            ("CHAOS_PG_PORT", free_port()?.to_string()),
            ("CHAOS_NODE", crate::unique_name("simflow-test")),
        ];
        Self::start_in(dir, &env)
    }

    fn start_in(dir: std::path::PathBuf, env: &[(&str, String)]) -> anyhow::Result<PrivateNode> {
        if let Err(error) = helper("start", &dir, &[], env) {
            let _ = helper("stop", &dir, &[], &[]);
            return Err(error);
        }
        let services = PrivateServices::open(&dir, &crate::workspace_root().join(HELPER))?;
        Ok(PrivateNode { services })
    }

    /// Test settings pointed at this node's default vhost and at `database` on this cluster.
    pub fn settings(&self, database: &str) -> anyhow::Result<Settings> {
        let base = crate::test_settings("/", "postgres://unused")?;
        Ok(self.services.settings(&base, database))
    }

    /// `rabbitmqctl ARGS` against this node; its output.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        helper("ctl", &self.services.dir, args, &[])
    }

    /// Raises the memory alarm (a 1-byte high watermark): the node blocks every publisher.
    pub fn raise_memory_alarm(&self) -> anyhow::Result<()> {
        self.ctl(&["set_vm_memory_high_watermark", "absolute", "1"])
            .map(drop)
    }

    /// Puts the high watermark back to the default (40% of memory): the alarm clears.
    pub fn clear_memory_alarm(&self) -> anyhow::Result<()> {
        self.ctl(&["set_vm_memory_high_watermark", "0.4"]).map(drop)
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        if let Err(error) = helper("stop", &self.services.dir, &[], &[]) {
            eprintln!("could not stop the private node: {error:#}");
        }
    }
}

/// The ports of the `amqps` test node on a first try (assigned to this suite, so it does not
/// wait for free ports): AMQP, AMQPS, management, distribution. Taken ports fall back to free
/// ones.
const TLS_NODE_PORTS: [u16; 4] = [5691, 5692, 15691, 25691];

/// A private node with an `amqps` listener as outlets reach the centre: a CA made for the
/// test signs the broker's certificate (for 127.0.0.1 and localhost) and is the only issuer
/// the listener accepts client certificates from (`verify_peer`, `fail_if_no_peer_cert`);
/// clients log in by their certificate's common name (`EXTERNAL`). PLAIN stays for the
/// centre's own users (guest on the plain listener). Keys are generated here and live in the
/// node's directory, which is removed with the node.
#[derive(Debug)]
pub struct TlsNode {
    /// The node (its plain listener, management API and database cluster).
    pub node: PrivateNode,
    /// The `amqps` port on 127.0.0.1.
    pub amqps_port: u16,
    /// The CA's certificate (PEM): the broker's issuer and the outlets' CA.
    pub ca_cert_pem: String,
    /// The CA's private key (PEM).
    pub ca_key_pem: secrecy::SecretString,
}

impl TlsNode {
    /// Starts the node (run it on a blocking thread); like [`PrivateNode::start`], a node that
    /// loses a port to a test beside it is started again on free ports, at most three times.
    pub fn start() -> anyhow::Result<TlsNode> {
        let (ca_cert_pem, ca_key_pem) = simflow_runtime::outlet_tls::OutletCa::generate(
            "simflow test outlet CA",
            std::time::Duration::from_secs(86_400),
        )?;
        let (server_cert, server_key) = server_certificate(&ca_cert_pem, &ca_key_pem)?;
        let mut failures = Vec::new();
        for attempt in 0..3 {
            let dir = std::env::temp_dir().join(crate::unique_name("simflow_tls_node"));
            let tls_dir = dir.join("tls-source");
            std::fs::create_dir_all(&tls_dir)?;
            std::fs::write(tls_dir.join("ca.pem"), &ca_cert_pem)?;
            std::fs::write(tls_dir.join("server.pem"), &server_cert)?;
            write_secret_file(&tls_dir.join("server.key"), &server_key)?;
            let assigned_free = TLS_NODE_PORTS
                .iter()
                .all(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok());
            let [amqp, amqps, management, dist] = if attempt == 0 && assigned_free {
                TLS_NODE_PORTS
            } else {
                [free_port()?, free_port()?, free_port()?, free_port()?]
            };
            let env = vec![
                ("CHAOS_AMQP_PORT", amqp.to_string()),
                ("CHAOS_AMQPS_PORT", amqps.to_string()),
                ("CHAOS_MANAGEMENT_PORT", management.to_string()),
                ("CHAOS_DIST_PORT", dist.to_string()),
                ("CHAOS_PG_PORT", free_port()?.to_string()),
                ("CHAOS_NODE", crate::unique_name("simflow-tls")),
                ("CHAOS_TLS_DIR", tls_dir.display().to_string()),
            ];
            match PrivateNode::start_in(dir.clone(), &env) {
                Ok(node) => {
                    return Ok(TlsNode {
                        node,
                        amqps_port: amqps,
                        ca_cert_pem,
                        ca_key_pem,
                    });
                }
                Err(error) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    failures.push(format!("{error:#}"));
                }
            }
        }
        bail!(
            "the private TLS node did not start: {}",
            failures.join(" | then: ")
        )
    }

    /// The outlet CA (the same CA).
    pub fn outlet_ca(&self) -> anyhow::Result<simflow_runtime::outlet_tls::OutletCa> {
        simflow_runtime::outlet_tls::OutletCa::from_pem(&self.ca_cert_pem, &self.ca_key_pem)
    }

    /// `amqps://127.0.0.1:<port>/%2f?auth_mechanism=external`: the node's default vhost, logged
    /// in by the client certificate.
    pub fn external_uri(&self) -> secrecy::SecretString {
        secrecy::SecretString::from(format!(
            "amqps://127.0.0.1:{}/%2f?auth_mechanism=external",
            self.amqps_port
        ))
    }
}

/// A broker certificate for 127.0.0.1 and localhost signed by the CA; (certificate, key) PEM.
fn server_certificate(
    ca_cert_pem: &str,
    ca_key_pem: &secrecy::SecretString,
) -> anyhow::Result<(String, secrecy::SecretString)> {
    use secrecy::ExposeSecret;
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        ca_cert_pem,
        rcgen::KeyPair::from_pem(ca_key_pem.expose_secret())?,
    )?;
    let key = rcgen::KeyPair::generate()?;
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), secrecy::SecretString::from(key.serialize_pem())))
}

fn write_secret_file(path: &std::path::Path, secret: &secrecy::SecretString) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.expose_secret().as_bytes())?;
    Ok(())
}
