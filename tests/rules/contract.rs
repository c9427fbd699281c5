//! Schema and runtime agree, without a broker or a database.
//!
//! For every message type a worker or an outlet node consumes, instances generated from its
//! JSON Schema (`schemas/json/`) that the schema accepts pass every check the runtime makes on a
//! single message: decoding into the queue's closed enum (`JobSet::decode`), then the parse and
//! validation functions the handlers call before any SQL (`selection::parse`,
//! `selection::parse_lenient`, `fee::check_entered`). Instances that break one constraint of
//! the schema are refused by the runtime too, by decoding or with a rejection code.
//!
//! Where the runtime can only tell with the database, the constraint is listed in
//! [`CHECKED_BY_THE_DATABASE`] with the code the handler answers; the test asserts that no
//! single-message check catches those, so the list cannot go stale. The one rule JSON Schema
//! cannot state (a range's first end not after its last) and the two places where the runtime
//! is more lenient than the contract are tests of their own below.

mod generate;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use simflow_inventory::{fee, selection, writers};
use simflow_schemas::common::{CardSelection, formats};
use simflow_schemas::registry::{
    self, CardFileJob, IssueJob, JobSet, MessageRole, OutletResultJob, OutletWorkJob, ReturnJob,
    TransferJob, WriteCardJob,
};
use simflow_schemas::topology::JobQueue;

use generate::{Generator, mutations, unknown_keywords};

/// Valid instances generated per message type.
const VALID_PER_TYPE: usize = 400;
/// Valid instances per type whose every single-constraint mutation is tried.
const MUTATED_PER_TYPE: usize = 60;

/// Constraints only a database lookup enforces: `(message type, pointer, what the runtime
/// answers)`. A value of another shape names nothing that can exist, so the lookup refuses it.
const CHECKED_BY_THE_DATABASE: &[(&str, &str, &str)] = &[
    (
        "writecard.request.v1",
        "/iccid",
        "CARD_UNKNOWN (inventory holds only well-formed ICCIDs)",
    ),
    (
        "writecard.request.v1",
        "/msisdn",
        "NUMBER_UNAVAILABLE (the number pool holds digits only)",
    ),
    (
        "writecard.request.v1",
        "/outlet_code",
        "OUTLET_UNKNOWN (provisioning accepts only such codes)",
    ),
    (
        "writer.issue.v1",
        "/outlet_code",
        "WRITER_OUTLET_UNKNOWN (provisioning accepts only such codes)",
    ),
    (
        "card.read_request.v1",
        "/outlet_code",
        "OUTLET_UNKNOWN (provisioning accepts only such codes)",
    ),
    (
        "outlet.heartbeat.v1",
        "/outlet_code",
        "RESULT_NOT_FROM_OUTLET (only the outlet's own broker user, named by a provisioned code, may send it)",
    ),
    (
        "outlet.key_rotated.v1",
        "/outlet_code",
        "RESULT_NOT_FROM_OUTLET (only the outlet's own broker user, named by a provisioned code, may send it)",
    ),
    (
        "writecard.script.v1",
        "/outlet_code",
        "the outlet node refuses another outlet's work; simflow.outlet-expired finds no such script",
    ),
    (
        "writecard.script.v1",
        "/iccid",
        "the outlet node refuses a script for another card; simflow.outlet-expired finds no such script",
    ),
];

/// What the runtime makes of one message before any SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Decoded and passed every single-message check.
    Accepted,
    /// Dead-lettered as malformed (with the decoder's reason).
    Undecodable(String),
    /// Refused with this rejection code.
    Rejected(String),
}

/// The schema's validator, asserting formats, ours included (`iccid`, `iccid-lines`).
fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .with_format(formats::ICCID, formats::is_iccid)
        .with_format(formats::ICCID_LINES, formats::is_iccid_lines)
        .build(schema)
        .expect("schema compiles")
}

fn rejected(rejection: simflow_runtime::Rejection) -> Verdict {
    Verdict::Rejected(rejection.reason.code)
}

fn decoded<J: JobSet>(message_type: &str, body: &[u8]) -> Result<J, Verdict> {
    J::decode(message_type, body).map_err(|error| Verdict::Undecodable(error.to_string()))
}

/// The range check `return.query.v1` and `return.by_range.v1` run (`returns::range_of`).
fn range(first: &str, last: &str) -> Verdict {
    match selection::parse(&CardSelection::Range {
        first: first.to_owned(),
        last: last.to_owned(),
    }) {
        Ok(_) => Verdict::Accepted,
        Err(rejection) => rejected(rejection),
    }
}

/// The writer serial check every `writer.*` job runs (`writers::parse_serial`).
fn serial(serial: &str) -> Verdict {
    match writers::parse_serial(serial) {
        Ok(_) => Verdict::Accepted,
        Err(reason) => Verdict::Rejected(reason.code.to_owned()),
    }
}

fn then(first: Verdict, second: impl FnOnce() -> Verdict) -> Verdict {
    match first {
        Verdict::Accepted => second(),
        refused => refused,
    }
}

/// Runs what the consumer of `queue` does with a body before it touches the database.
fn on_queue(queue: JobQueue, message_type: &str, body: &[u8]) -> Verdict {
    let result = match queue {
        JobQueue::Transfer => decoded::<TransferJob>(message_type, body).map(|job| match job {
            TransferJob::Create(create) => match selection::parse(&create.cards) {
                Ok(_) => Verdict::Accepted,
                Err(rejection) => rejected(rejection),
            },
            TransferJob::ApproveOut(_) | TransferJob::ApproveIn(_) => Verdict::Accepted,
        }),
        JobQueue::Issue => decoded::<IssueJob>(message_type, body).map(|job| match job {
            IssueJob::Prepare(prepare) => match selection::parse(&prepare.cards) {
                Ok(_) => Verdict::Accepted,
                Err(rejection) => rejected(rejection),
            },
            IssueJob::Commit(_) => Verdict::Accepted,
            IssueJob::WriterPurchase(purchase) => serial(&purchase.writer_serial),
            IssueJob::WriterIssue(issue) => serial(&issue.writer_serial),
            IssueJob::WriterReturn(back) => serial(&back.writer_serial),
            IssueJob::WriterRepair(repair) => serial(&repair.writer_serial),
            IssueJob::WriterWriteOff(write_off) => serial(&write_off.writer_serial),
        }),
        JobQueue::Return => decoded::<ReturnJob>(message_type, body).map(|job| {
            let fee_of = |amount: i64| match fee::check_entered(amount) {
                Ok(()) => Verdict::Accepted,
                Err(reason) => Verdict::Rejected(reason.code.to_owned()),
            };
            match job {
                ReturnJob::ByList(list) => then(
                    match selection::parse_lenient(&list.cards) {
                        Ok(_) => Verdict::Accepted,
                        Err(rejection) => rejected(rejection),
                    },
                    || fee_of(list.fee.return_amount_fen),
                ),
                ReturnJob::Query(query) => range(&query.first, &query.last),
                ReturnJob::ByRange(by_range) => {
                    then(range(&by_range.first, &by_range.last), || {
                        fee_of(by_range.fee.return_amount_fen)
                    })
                }
            }
        }),
        JobQueue::CardFile => decoded::<CardFileJob>(message_type, body).map(|_| Verdict::Accepted),
        JobQueue::WriteCard => {
            decoded::<WriteCardJob>(message_type, body).map(|_| Verdict::Accepted)
        }
        JobQueue::OutletResults => {
            decoded::<OutletResultJob>(message_type, body).map(|_| Verdict::Accepted)
        }
        JobQueue::OutletExpired => {
            decoded::<OutletWorkJob>(message_type, body).map(|_| Verdict::Accepted)
        }
    };
    result.unwrap_or_else(|verdict| verdict)
}

/// What every consumer of the type makes of the body: the first refusal, or acceptance.
/// (`card.read_request.v1` is consumed by `simflow.writecard` and, forwarded, by outlet
/// nodes, whose decoding is `OutletWorkJob`'s like `simflow.outlet-expired`'s.)
fn runtime_verdict(message_type: &str, body: &[u8]) -> Verdict {
    let mut verdict = Verdict::Accepted;
    for queue in JobQueue::ALL {
        if registry::job_types(queue).contains(&message_type) {
            verdict = then(verdict, || on_queue(queue, message_type, body));
        }
    }
    verdict
}

/// Puts a range's ends in order: the one rule JSON Schema cannot state.
fn order_ranges(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let (Some(Value::String(first)), Some(Value::String(last))) =
                (object.get("first"), object.get("last"))
                && first.len() == last.len()
                && first > last
            {
                let (first, last) = (first.clone(), last.clone());
                object.insert("first".into(), Value::String(last));
                object.insert("last".into(), Value::String(first));
            }
            object.values_mut().for_each(order_ranges);
        }
        Value::Array(items) => items.iter_mut().for_each(order_ranges),
        _ => {}
    }
}

/// Whether a refused-by-schema value differs from a well-formed ICCID only by whitespace, or is
/// blank: what the runtime trims and skips in ICCID lists (see the test of that leniency).
fn only_whitespace_from_an_iccid(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        let trimmed = text.trim();
        trimmed.is_empty() || formats::is_iccid(trimmed)
    })
}

fn consumed_types() -> Vec<&'static registry::MessageInfo> {
    registry::all()
        .iter()
        .filter(|info| !matches!(info.role, MessageRole::Event(_)))
        .collect()
}

#[test]
fn schema_valid_messages_pass_the_runtime_checks_and_schema_invalid_ones_are_refused_by_both() {
    let seed: u64 = std::env::var("SIMFLOW_CONTRACT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(20_261_129);
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for info in consumed_types() {
        let schema = serde_json::to_value((info.schema)()).expect("schema serialises");
        assert_eq!(
            unknown_keywords(&schema),
            Vec::<String>::new(),
            "{}: the generator must learn these keywords first",
            info.message_type
        );
        let validator = validator(&schema);
        let mut generator = Generator::new(&schema, StdRng::seed_from_u64(seed));
        let (mut valid, mut tries) = (Vec::new(), 0);
        while valid.len() < VALID_PER_TYPE && tries < VALID_PER_TYPE * 20 {
            tries += 1;
            let mut instance = generator.valid(&schema);
            order_ranges(&mut instance);
            if validator.is_valid(&instance) {
                valid.push(instance);
            }
        }
        assert_eq!(
            valid.len(),
            VALID_PER_TYPE,
            "{}: the generator found too few valid instances",
            info.message_type
        );
        for instance in &valid {
            let body = serde_json::to_vec(instance).expect("JSON");
            let verdict = runtime_verdict(info.message_type, &body);
            if verdict != Verdict::Accepted {
                failures.push(format!(
                    "{}: schema-valid but the runtime says {verdict:?}: {instance}",
                    info.message_type
                ));
            }
        }
        let (mut refused, mut by_database, mut tolerated) = (0, 0, 0);
        for instance in valid.iter().take(MUTATED_PER_TYPE) {
            for mutation in mutations(&mut generator, &schema, instance) {
                if validator.is_valid(&mutation.instance) {
                    continue; // This change happened to keep the instance valid.
                }
                let body = serde_json::to_vec(&mutation.instance).expect("JSON");
                let verdict = runtime_verdict(info.message_type, &body);
                let database = CHECKED_BY_THE_DATABASE.iter().find(|(kind, pointer, _)| {
                    *kind == info.message_type
                        && *pointer == mutation.pointer
                        && (mutation.constraint.starts_with("pattern")
                            || mutation.constraint.starts_with("format"))
                });
                let changed = mutation.instance.pointer(&mutation.pointer);
                match (&verdict, database) {
                    (Verdict::Accepted, Some(_)) => by_database += 1,
                    (Verdict::Accepted, None)
                        if mutation.constraint == "pattern"
                            && changed.is_some_and(only_whitespace_from_an_iccid) =>
                    {
                        tolerated += 1
                    }
                    (Verdict::Accepted, None) => failures.push(format!(
                        "{}: breaks `{}` at {} but the runtime accepts it: {}",
                        info.message_type, mutation.constraint, mutation.pointer, mutation.instance
                    )),
                    (_, Some((_, pointer, answer))) => failures.push(format!(
                        "{}: {pointer} is listed as checked by the database ({answer}), but a \
                         single-message check refused it ({verdict:?}): drop it from the list",
                        info.message_type
                    )),
                    (_, None) => refused += 1,
                }
            }
        }
        assert!(
            refused > 0,
            "{}: no invalid instance was generated",
            info.message_type
        );
        summary.push(format!(
            "{:<24} valid {:>4} | invalid: refused by both {:>4}, by the database only {:>3}, tolerated {:>3}",
            info.message_type, VALID_PER_TYPE, refused, by_database, tolerated
        ));
    }
    println!(
        "schema/runtime agreement (seed {seed}):\n{}",
        summary.join("\n")
    );
    assert!(
        failures.is_empty(),
        "schema and runtime disagree ({} cases; seed {seed}):\n{}",
        failures.len(),
        failures
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_range_whose_first_end_comes_after_its_last_is_schema_valid_and_refused_as_bad_range() {
    // JSON Schema cannot compare two values: this one rule lives only in the runtime.
    let no_schema = serde_json::json!({});
    let mut generator = Generator::new(&no_schema, StdRng::seed_from_u64(7));
    let mut rng = StdRng::seed_from_u64(8);
    for _ in 0..100 {
        let length = if rng.random_bool(0.5) { 19 } else { 20 };
        let (mut first, mut last) = (
            generator.iccid_of_length(length),
            generator.iccid_of_length(length),
        );
        if first == last {
            continue;
        }
        if first < last {
            std::mem::swap(&mut first, &mut last);
        }
        let query = serde_json::json!({
            "query_id": "5e0c5d1a-2b7f-4f9e-9a41-7f2b6c8d1e33",
            "staff_id": "T0601",
            "warehouse": "13ZDF16",
            "agent_ess_code": "ESS0601",
            "first": first,
            "last": last,
        });
        let info = registry::find("return.query.v1").expect("registered");
        let schema = serde_json::to_value((info.schema)()).expect("schema");
        assert!(validator(&schema).is_valid(&query));
        assert_eq!(
            runtime_verdict("return.query.v1", query.to_string().as_bytes()),
            Verdict::Rejected("BAD_RANGE".into())
        );
    }
}

#[test]
fn the_runtime_tolerates_spaces_around_list_iccids_and_other_uuid_spellings_the_contract_does_not_promise()
 {
    // The contract writes ICCIDs and uuids one way; the workers read a little more (they trim
    // what clerks paste, and serde reads uuids without hyphens). A publisher that follows the
    // schema never depends on it.
    let create = |iccids: Value, transfer_id: &str| {
        serde_json::json!({
            "transfer_id": transfer_id,
            "staff_id": "S0601",
            "source_warehouse": "130041",
            "target_warehouse": "13ZDF16",
            "card_type": "USIM128K_NORMAL",
            "cards": { "by": "iccids", "iccids": iccids }
        })
    };
    let info = registry::find("transfer.create.v1").expect("registered");
    let validator = validator(&serde_json::to_value((info.schema)()).expect("schema"));
    let canonical = create(
        serde_json::json!(["8988211000000530082"]),
        "6f1c1f0e-6d4e-4c55-9f57-0d6f4a0c2b10",
    );
    let padded = create(
        serde_json::json!([" 8988211000000530082 ", ""]),
        "6f1c1f0e-6d4e-4c55-9f57-0d6f4a0c2b10",
    );
    let unhyphenated = create(
        serde_json::json!(["8988211000000530082"]),
        "6f1c1f0e6d4e4c559f570d6f4a0c2b10",
    );
    assert!(validator.is_valid(&canonical));
    for lenient in [&padded, &unhyphenated] {
        assert!(!validator.is_valid(lenient), "{lenient}");
        assert_eq!(
            runtime_verdict("transfer.create.v1", lenient.to_string().as_bytes()),
            Verdict::Accepted
        );
    }
}
