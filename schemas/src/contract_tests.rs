//! Keeps the checked-in contract files in step with the types.
//!
//! Run with `SIMFLOW_BLESS=1` to rewrite the generated files after a deliberate change; the diff
//! is then the contract change to review.

use std::path::{Path, PathBuf};

use crate::card::CardReadRequest;
use crate::common::formats;
use crate::registry::Message;
use crate::registry::{
    self, CardFileJob, IssueJob, JobSet, MessageRole, OutletResultJob, OutletWorkJob, ReturnJob,
    TransferJob, WriteCardJob,
};
use crate::topology::JobQueue;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pretty(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    text.push('\n');
    text
}

/// A validator that asserts formats, ours included (`iccid`, `iccid-lines`).
pub(crate) fn validator(schema: &serde_json::Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .with_format(formats::ICCID, formats::is_iccid)
        .with_format(formats::ICCID_LINES, formats::is_iccid_lines)
        .build(schema)
        .expect("schema compiles")
}

/// Compares a generated file with the checked-in one, or rewrites it when blessing.
fn check_generated(path: &Path, generated: &str) -> Result<(), String> {
    if std::env::var_os("SIMFLOW_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("create dir");
        std::fs::write(path, generated).expect("write generated file");
        return Ok(());
    }
    match std::fs::read_to_string(path) {
        Ok(existing) if existing == generated => Ok(()),
        Ok(_) => Err(format!("{} is out of date", path.display())),
        Err(error) => Err(format!("{} cannot be read: {error}", path.display())),
    }
}

#[test]
fn json_schema_files_match_the_types() {
    let mut drift = Vec::new();
    let schema_dir = crate_dir().join("json");
    for info in registry::all() {
        let schema = serde_json::to_value((info.schema)()).expect("schema serialises");
        let path = schema_dir.join(format!("{}.schema.json", info.message_type));
        if let Err(problem) = check_generated(&path, &pretty(&schema)) {
            drift.push(problem);
        }
    }
    let expected: Vec<String> = registry::all()
        .iter()
        .map(|info| format!("{}.schema.json", info.message_type))
        .collect();
    for entry in std::fs::read_dir(&schema_dir).expect("schemas/json exists") {
        let name = entry
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if !expected.contains(&name) {
            drift.push(format!("schemas/json/{name} belongs to no message type"));
        }
    }
    assert!(
        drift.is_empty(),
        "contract drift (run with SIMFLOW_BLESS=1 after a deliberate change):\n{}",
        drift.join("\n")
    );
}

#[test]
fn the_asyncapi_document_matches_the_types_and_topology() {
    let path = crate_dir().join("asyncapi.json");
    if let Err(problem) = check_generated(&path, &pretty(&crate::asyncapi::document())) {
        panic!("{problem} (run with SIMFLOW_BLESS=1 after a deliberate change)");
    }
}

#[test]
fn the_rabbitmq_definitions_match_the_topology() {
    let path = crate_dir().join("../deploy/rabbitmq/definitions.json");
    let document = crate::definitions::document(&crate::topology::TopologyParams::default());
    if let Err(problem) = check_generated(&path, &pretty(&document)) {
        panic!("{problem} (run with SIMFLOW_BLESS=1 after a deliberate change)");
    }
}

#[test]
fn every_message_type_has_an_example_that_validates_and_decodes() {
    let examples = crate_dir().join("examples");
    let mut problems = Vec::new();
    for info in registry::all() {
        let schema = serde_json::to_value((info.schema)()).expect("schema serialises");
        let validator = validator(&schema);
        let mut found = 0;
        for entry in std::fs::read_dir(&examples).expect("schemas/examples exists") {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            // Examples are named `<type>.json` or `<type>.<variant>.json`.
            let Some(rest) = name.strip_prefix(info.message_type) else {
                continue;
            };
            if !(rest == ".json" || (rest.starts_with('.') && rest.ends_with(".json"))) {
                continue;
            }
            found += 1;
            let text = std::fs::read_to_string(&path).expect("example readable");
            let value: serde_json::Value = match serde_json::from_str(&text) {
                Ok(value) => value,
                Err(error) => {
                    problems.push(format!("{name}: not JSON: {error}"));
                    continue;
                }
            };
            for error in validator.iter_errors(&value) {
                problems.push(format!("{name}: {error} at {}", error.instance_path()));
            }
            if let Err(error) = (info.check)(text.as_bytes()) {
                problems.push(format!("{name}: does not decode: {error}"));
            }
        }
        if found == 0 {
            problems.push(format!("no example for {}", info.message_type));
        }
    }
    assert!(
        problems.is_empty(),
        "example problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn unknown_types_and_malformed_bodies_are_errors_not_guesses() {
    assert!(matches!(
        TransferJob::decode("transfer.create.v9", b"{}"),
        Err(registry::DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        TransferJob::decode("transfer.approve_out.v1", b"{\"transfer_id\": 3}"),
        Err(registry::DecodeError::Malformed { .. })
    ));
    let with_extra_field =
        br#"{"transfer_id":"6f1c1f0e-6d4e-4c55-9f57-0d6f4a0c2b10","staff_id":"a","extra":1}"#;
    assert!(matches!(
        TransferJob::decode("transfer.approve_out.v1", with_extra_field),
        Err(registry::DecodeError::Malformed { .. })
    ));
}

#[test]
fn a_queue_refuses_another_queues_jobs_by_name() {
    let approve = br#"{"transfer_id":"6f1c1f0e-6d4e-4c55-9f57-0d6f4a0c2b10","staff_id":"a"}"#;
    assert!(TransferJob::decode("transfer.approve_out.v1", approve).is_ok());
    assert!(matches!(
        IssueJob::decode("transfer.approve_out.v1", approve),
        Err(registry::DecodeError::NotForThisQueue { .. })
    ));
}

#[test]
fn every_consumed_type_belongs_to_the_enum_of_the_queue_it_is_published_to() {
    let sets: [(&[&str], MessageRole); 7] = [
        (TransferJob::TYPES, MessageRole::Job(JobQueue::Transfer)),
        (IssueJob::TYPES, MessageRole::Job(JobQueue::Issue)),
        (ReturnJob::TYPES, MessageRole::Job(JobQueue::Return)),
        (CardFileJob::TYPES, MessageRole::Job(JobQueue::CardFile)),
        (WriteCardJob::TYPES, MessageRole::Job(JobQueue::WriteCard)),
        (OutletWorkJob::TYPES, MessageRole::OutletWork),
        (OutletResultJob::TYPES, MessageRole::OutletResult),
    ];
    // The one message the centre forwards unchanged: it is consumed twice.
    let forwarded = [(<CardReadRequest as Message>::TYPE, MessageRole::OutletWork)];
    for info in registry::all() {
        let homes: Vec<MessageRole> = sets
            .iter()
            .filter(|(types, _)| types.contains(&info.message_type))
            .map(|(_, role)| *role)
            .collect();
        let mut expected = match info.role {
            MessageRole::Event(_) => Vec::new(),
            role => vec![role],
        };
        expected.extend(
            forwarded
                .iter()
                .filter(|(name, _)| *name == info.message_type)
                .map(|(_, role)| *role),
        );
        assert_eq!(homes, expected, "{}", info.message_type);
    }
}

#[test]
fn events_route_with_one_of_the_keys_their_type_declares() {
    use crate::registry::{Event, Message};
    use crate::transfer::{ApprovalStage, TransferApproved};
    for stage in [ApprovalStage::Out, ApprovalStage::In] {
        let event = TransferApproved {
            transfer_id: uuid::Uuid::nil(),
            stage,
            card_count: 1,
            approved_by: "S".into(),
            approved_at: chrono::Utc::now(),
            already_approved: false,
        };
        let MessageRole::Event(keys) = TransferApproved::ROLE else {
            panic!("an event")
        };
        assert!(keys.contains(&event.routing_key()));
    }
}

#[test]
fn message_types_are_unique_and_versioned() {
    let mut seen = std::collections::BTreeSet::new();
    for info in registry::all() {
        assert!(
            seen.insert(info.message_type),
            "{} registered twice",
            info.message_type
        );
        let version = info.message_type.rsplit('.').next().expect("has a dot");
        assert!(
            version.starts_with('v') && version[1..].parse::<u32>().is_ok(),
            "{} ends in a version",
            info.message_type
        );
    }
}

#[test]
fn our_formats_refuse_a_wrong_check_digit_and_a_repeated_line() {
    let iccid = validator(&serde_json::json!({ "type": "string", "format": formats::ICCID }));
    assert!(iccid.is_valid(&serde_json::json!("8988211000000530082")));
    assert!(!iccid.is_valid(&serde_json::json!("8988211000000530083")));
    let lines = validator(&serde_json::json!({ "type": "string", "format": formats::ICCID_LINES }));
    assert!(lines.is_valid(&serde_json::json!(" 8988211000000530082\r\n\n")));
    assert!(!lines.is_valid(&serde_json::json!(
        "8988211000000530082\n8988211000000530082"
    )));
    assert!(!lines.is_valid(&serde_json::json!("\n \n")));
}

#[test]
fn the_broker_example_limits_bodies_to_the_contracts_size() {
    let path = crate_dir().join("../deploy/rabbitmq/rabbitmq.conf.example");
    let text = std::fs::read_to_string(&path).expect("rabbitmq.conf.example readable");
    let limit = text
        .lines()
        .find_map(|line| line.strip_prefix("max_message_size = "))
        .expect("max_message_size set");
    assert_eq!(
        limit.trim().parse::<u64>().expect("a number"),
        crate::topology::MAX_MESSAGE_BYTES
    );
}
