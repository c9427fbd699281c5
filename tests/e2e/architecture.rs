//! The invariants ARCHITECTURE.md states as absences, checked against the real dependency
//! graph (`cargo metadata`) and the sources, so the document cannot quietly go stale.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use simflow_tests::workspace_root;

/// Direct normal (non-dev) dependencies of every workspace package.
fn dependency_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("metadata is JSON");
    let mut graph = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let dependencies = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|dependency| dependency["kind"].is_null())
            .map(|dependency| {
                dependency["name"]
                    .as_str()
                    .expect("dependency name")
                    .to_owned()
            })
            .collect();
        graph.insert(name, dependencies);
    }
    graph
}

fn users_of(graph: &BTreeMap<String, BTreeSet<String>>, crate_name: &str) -> BTreeSet<String> {
    graph
        .iter()
        .filter(|(_, dependencies)| dependencies.contains(crate_name))
        .map(|(package, _)| package.clone())
        .collect()
}

fn rust_sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn only_the_runtime_depends_on_lapin() {
    let graph = dependency_graph();
    assert_eq!(
        users_of(&graph, "lapin"),
        BTreeSet::from(["simflow-runtime".to_owned()])
    );
}

#[test]
fn only_the_reader_crate_depends_on_pcsc() {
    let graph = dependency_graph();
    assert_eq!(
        users_of(&graph, "pcsc"),
        BTreeSet::from(["simflow-reader".to_owned()])
    );
}

#[test]
fn only_the_retry_module_uses_backoff() {
    let graph = dependency_graph();
    assert_eq!(
        users_of(&graph, "backoff"),
        BTreeSet::from(["simflow-runtime".to_owned()])
    );
    let users: Vec<PathBuf> = rust_sources(&workspace_root().join("workers/runtime/src"))
        .into_iter()
        .filter(|path| {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .contains("backoff::")
        })
        .collect();
    assert_eq!(users.len(), 1, "backoff used in {users:?}");
    assert!(users[0].ends_with("retry.rs"));
}

#[test]
fn schemas_and_card_do_no_io() {
    let graph = dependency_graph();
    let io_crates = [
        "tokio", "sqlx", "lapin", "reqwest", "pcsc", "axum", "rustix", "csv",
    ];
    for pure in ["simflow-schemas", "simflow-card"] {
        let dependencies = &graph[pure];
        for io in io_crates {
            assert!(!dependencies.contains(io), "{pure} depends on {io}");
        }
    }
    for dir in ["schemas/src", "workers/card/src"] {
        for file in rust_sources(&workspace_root().join(dir)) {
            if file.ends_with("contract_tests.rs") {
                continue; // The contract test reads the checked-in files; it is not the crate.
            }
            let text = std::fs::read_to_string(&file).expect("source readable");
            let code: String = text
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for io in ["std::fs", "std::net", "std::process", "File::open"] {
                assert!(!code.contains(io), "{} uses {io}", file.display());
            }
        }
    }
}

#[test]
fn worker_crates_never_settle_deliveries() {
    for crate_dir in std::fs::read_dir(workspace_root().join("workers"))
        .expect("workers dir")
        .flatten()
    {
        if crate_dir.file_name() == "runtime" {
            continue;
        }
        for file in rust_sources(&crate_dir.path().join("src")) {
            let text = std::fs::read_to_string(&file).expect("source readable");
            for settle in ["acker", ".ack(", ".nack(", "basic_reject", "basic_ack"] {
                assert!(
                    !text.contains(settle),
                    "{} settles deliveries ({settle})",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn only_the_inventory_crate_touches_inventory_tables() {
    for crate_dir in std::fs::read_dir(workspace_root().join("workers"))
        .expect("workers dir")
        .flatten()
    {
        if crate_dir.file_name() == "inventory" {
            continue;
        }
        for file in rust_sources(&crate_dir.path().join("src")) {
            let text = std::fs::read_to_string(&file).expect("source readable");
            assert!(
                !text.contains("inventory.cards")
                    && !text.contains("inventory.card_ledger")
                    && !text.contains("inventory.writer"),
                "{} reaches into inventory's tables",
                file.display()
            );
        }
    }
}

#[test]
fn the_outlet_node_reaches_cards_only_through_the_reader_crate_and_has_no_postgres() {
    let graph = dependency_graph();
    let outlet = &graph["simflow-outlet"];
    assert!(outlet.contains("simflow-reader"));
    for forbidden in [
        "pcsc",
        "lapin",
        "simflow-writecard",
        "simflow-carddata",
        "simflow-inventory",
    ] {
        assert!(
            !outlet.contains(forbidden),
            "simflow-outlet depends on {forbidden}"
        );
    }
    for file in rust_sources(&workspace_root().join("workers/outlet/src")) {
        let text = std::fs::read_to_string(&file).expect("source readable");
        for postgres in ["PgPool", "PgConnection", "postgres://"] {
            assert!(
                !text.contains(postgres),
                "{} uses PostgreSQL ({postgres})",
                file.display()
            );
        }
    }
}

#[test]
fn every_reason_code_is_declared_once_in_the_workspace_with_one_text() {
    let crates: [(&str, &[simflow_schemas::Reason]); 4] = [
        ("runtime", simflow_runtime::reasons::ALL),
        ("inventory", simflow_inventory::reasons::ALL),
        ("carddata", simflow_carddata::reasons::ALL),
        ("writecard", simflow_writecard::reasons::ALL),
    ];
    let mut declared: BTreeMap<&str, &str> = BTreeMap::new();
    for (owner, reasons) in crates {
        for reason in reasons {
            if let Some(first) = declared.insert(reason.code, owner) {
                panic!(
                    "{} is declared by both {first} and {owner}: reuse one",
                    reason.code
                );
            }
            assert!(
                reason
                    .code
                    .bytes()
                    .all(|byte| byte.is_ascii_uppercase() || byte.is_ascii_digit() || byte == b'_'),
                "{} is a stable upper-case code",
                reason.code
            );
            assert!(
                !reason.zh.is_empty() && !reason.en.is_empty(),
                "{}",
                reason.code
            );
        }
    }
}

#[test]
fn only_the_schemas_crate_defines_a_reason_type() {
    let root = workspace_root();
    let mut offenders = Vec::new();
    for file in rust_sources(&root.join("workers")) {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.contains("pub struct Reason") || text.contains("struct Reason {") {
            offenders.push(file.display().to_string());
        }
    }
    assert!(
        offenders.is_empty(),
        "Reason types outside schemas: {offenders:?}"
    );
}

#[test]
fn the_console_shows_dead_letter_bodies_and_details_only_masked() {
    let pages = std::fs::read_to_string(workspace_root().join("workers/console/src/pages.rs"))
        .expect("pages readable");
    for field in ["letter.body", "letter.detail"] {
        for (index, _) in pages.match_indices(field) {
            let after = &pages[index + field.len()..];
            if after.starts_with(|next: char| next == '_' || next.is_ascii_alphanumeric()) {
                continue; // another field, e.g. `body_bytes`
            }
            let window = &pages[index.saturating_sub(40)..(index + 60).min(pages.len())];
            assert!(
                window.contains("mask_body(") || window.contains("mask_text"),
                "{field} reaches a page unmasked: …{window}…"
            );
        }
    }
}

#[test]
fn the_console_reaches_other_crates_tables_only_through_their_functions() {
    for file in rust_sources(&workspace_root().join("workers/console/src")) {
        let text = std::fs::read_to_string(&file).expect("source readable");
        for table in ["inventory.", "writecard.", "carddata.", "runtime."] {
            assert!(
                !text.contains(&format!("FROM {table}"))
                    && !text.contains(&format!("INTO {table}")),
                "{} queries {table}* itself",
                file.display()
            );
        }
    }
}

#[test]
fn the_counter_api_listens_on_loopback_by_default_and_allows_no_wildcard_origin() {
    let defaults: simflow_outlet::OutletSettings =
        serde_json::from_str("{}").expect("every [outlet] field has a default");
    let access = defaults
        .counter_access()
        .expect("the default is valid")
        .expect("the counter is on by default");
    assert!(access.listen.ip().is_loopback(), "{}", access.listen);
    assert!(access.crm_origin.is_none(), "no CRM origin ships");
    assert!(
        simflow_outlet::counter::CounterAccess::check("0.0.0.0:9466", false, None).is_err(),
        "a non-loopback address needs counter_allow_remote"
    );
    for file in rust_sources(&workspace_root().join("workers/outlet/src")) {
        let text = std::fs::read_to_string(&file).expect("source readable");
        for wildcard in [
            "AllowOrigin::any",
            "cors::Any",
            "mirror_request",
            "very_permissive",
            "permissive()",
        ] {
            assert!(
                !text.contains(wildcard),
                "{} opens the counter API to any origin ({wildcard})",
                file.display()
            );
        }
    }
}
