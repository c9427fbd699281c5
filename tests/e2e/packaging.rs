//! The Debian package (`cargo deb`, deploy/debian/) and its systemd units as systemd itself
//! reads them:
//! `systemd-analyze verify` with the real `simflow` binary in place of /usr/bin/simflow, and
//! the settings the deployment guide promises (service user, read-only system, state directory
//! for the outlet journal, a stop timeout long enough to finish a card), and the package
//! installed and upgraded on this machine with dpkg.
//! The stop itself (SIGTERM mid-write finishes the card) is proven in `outlet.rs`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::Command;

use simflow_outlet::OutletSettings;
use simflow_runtime::Settings;
use simflow_tests::process::simflow_binary;
use simflow_tests::workspace_root;
use simflow_tests::writing::ScratchDir;

const UNITS: [&str; 3] = [
    "simflow-worker.service",
    "simflow-console.service",
    "simflow-outlet.service",
];

/// A unit's source: cargo-deb installs `simflow.<unit>` (the package name first, as
/// debhelper names them) as `<unit>`.
fn unit_path(name: &str) -> PathBuf {
    workspace_root()
        .join("deploy/debian")
        .join(format!("simflow.{name}"))
}

/// `Key=value` lines of a unit's `[Service]` section (the last one wins, as in systemd).
fn service_section(name: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(unit_path(name)).expect("the unit file");
    let mut section = String::new();
    let mut keys = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
        } else if section == "[Service]"
            && let Some((key, value)) = line.split_once('=')
            && !line.starts_with('#')
        {
            keys.insert(key.trim().to_owned(), value.trim().to_owned());
        }
    }
    keys
}

#[test]
fn every_unit_passes_systemd_analyze_verify_without_a_warning() {
    let simflow = simflow_binary().expect("the simflow binary");
    let dir = ScratchDir::new("units").expect("a scratch directory");
    let mut copies = Vec::new();
    for name in UNITS {
        let text = std::fs::read_to_string(unit_path(name)).expect("the unit file");
        assert!(text.contains("ExecStart=/usr/bin/simflow "), "{name}");
        let copy = dir.0.join(name);
        std::fs::write(
            &copy,
            text.replace("/usr/bin/simflow", &simflow.display().to_string()),
        )
        .expect("write the copy");
        copies.push(copy);
    }
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("systemd-analyze (Debian's systemd package) runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warned: {stderr}"
    );
}

#[test]
fn every_unit_runs_as_the_service_user_on_a_read_only_system() {
    for name in UNITS {
        let service = service_section(name);
        for (key, value) in [
            ("User", "simflow"),
            ("Group", "simflow"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("NoNewPrivileges", "yes"),
            ("PrivateTmp", "yes"),
            ("CapabilityBoundingSet", ""),
            ("KillMode", "mixed"),
        ] {
            assert_eq!(
                service.get(key).map(String::as_str),
                Some(value),
                "{name}: {key}"
            );
        }
    }
}

#[test]
fn the_outlet_keeps_its_journal_in_its_state_directory_and_may_finish_a_card_on_stop() {
    let service = service_section("simflow-outlet.service");
    assert_eq!(
        service.get("StateDirectory").map(String::as_str),
        Some("simflow/outlet")
    );
    // The example configuration, read as the node reads it, puts the journal and the key where
    // the unit may write.
    let settings = Settings::load_with_environment(
        Some(&workspace_root().join("config/outlet.example.toml")),
        Some(HashMap::new()),
    )
    .expect("the example outlet configuration loads");
    let outlet: OutletSettings = settings.section("outlet").expect("[outlet]");
    for path in [&outlet.journal, &outlet.key_file] {
        assert!(
            path.starts_with("/var/lib/simflow/outlet/"),
            "{} is outside the state directory",
            path.display()
        );
    }
    // Long enough for a card (seconds) and a clerk's re-insertion (reinsert_wait_seconds).
    let stop: u64 = service["TimeoutStopSec"].parse().expect("seconds");
    assert!(
        stop > outlet.reinsert_wait_seconds + 30,
        "TimeoutStopSec={stop} leaves no time to finish a card"
    );
    // The worker's stop timeout covers its shutdown grace.
    let worker = service_section("simflow-worker.service");
    let grace = settings.worker.shutdown_grace_ms;
    let worker_stop: u64 = worker["TimeoutStopSec"].parse().expect("seconds");
    assert!(worker_stop * 1000 > grace, "TimeoutStopSec={worker_stop}");
}

/// Builds the Debian package with `cargo deb` from the test build's binary (fast compression,
/// the dev profile: the package's contents, not its size, are under test here).
fn build_package(version: &str, out: &std::path::Path) -> PathBuf {
    simflow_binary().expect("the simflow binary");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let deb = out.join(format!("simflow_{version}.deb"));
    let output = Command::new(cargo)
        .args(["deb", "-p", "simflow-cli", "--profile", "dev", "--no-build"])
        .args(["--no-strip", "--fast", "--deb-version", version, "-o"])
        .arg(&deb)
        .current_dir(workspace_root())
        .output()
        .expect("cargo deb (deploy/setup.sh installs cargo-deb) runs");
    assert!(
        output.status.success(),
        "cargo deb: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    deb
}

fn dpkg(args: &[&str]) -> std::process::Output {
    Command::new("dpkg").args(args).output().expect("dpkg runs")
}

/// Purges the package when the test ends, whatever happened.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = dpkg(&["--purge", "simflow"]);
    }
}

/// The package installed on this machine, then upgraded: the service user and the units are
/// there and verify as installed, nothing is enabled or started by the install, and the
/// outlet's state directory (its journal) is the same file after the upgrade. Needs root, as
/// `deploy/setup.sh` does; the package is purged at the end.
#[test]
fn the_package_installs_its_units_and_user_and_an_upgrade_keeps_the_outlet_journal() {
    assert!(
        nix_is_root(),
        "installing a package needs root (run the suite as deploy/test.sh does)"
    );
    if dpkg(&["-s", "simflow"]).status.success() {
        panic!("a simflow package is already installed on this machine; not touching it");
    }
    let dir = ScratchDir::new("deb").expect("a scratch directory");
    let first = build_package("0.0.1-1", &dir.0);
    let second = build_package("0.0.1-2", &dir.0);

    let installed = Installed;
    let output = dpkg(&["-i", &first.display().to_string()]);
    assert!(
        output.status.success(),
        "dpkg -i: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    assert!(
        passwd.lines().any(|line| line.starts_with("simflow:")),
        "the service user exists"
    );
    let units: Vec<String> = UNITS
        .iter()
        .map(|name| format!("/usr/lib/systemd/system/{name}"))
        .collect();
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze runs");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "the installed units verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    for name in UNITS {
        assert!(
            !std::path::Path::new("/etc/systemd/system/multi-user.target.wants")
                .join(name)
                .exists(),
            "{name} is not enabled by the install"
        );
    }

    // The outlet's journal, where the unit's StateDirectory keeps it.
    let state = std::path::Path::new("/var/lib/simflow/outlet");
    let created_state = !state.exists();
    std::fs::create_dir_all(state).expect("the state directory");
    let journal = state.join(format!(
        "{}.journal.sqlite",
        simflow_tests::unique_name("t")
    ));
    std::fs::write(&journal, b"journal entries").expect("a journal");

    let output = dpkg(&["-i", &second.display().to_string()]);
    assert!(
        output.status.success(),
        "the upgrade: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = String::from_utf8_lossy(&dpkg(&["-s", "simflow"]).stdout).into_owned();
    assert!(status.contains("Version: 0.0.1-2"), "{status}");
    assert_eq!(
        std::fs::read(&journal).expect("the journal is still there"),
        b"journal entries"
    );
    drop(installed);
    assert!(!std::path::Path::new("/usr/bin/simflow").exists(), "purged");
    std::fs::remove_file(&journal).expect("remove the test journal");
    if created_state {
        let _ = std::fs::remove_dir("/var/lib/simflow/outlet");
    }
}

fn nix_is_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}
