//! A small generator of JSON instances from the contract's JSON Schemas: valid ones, and
//! invalid ones that each break one constraint of a valid one.
//!
//! It knows the keywords the contract's schemas use (`$ref`, `oneOf`, `anyOf`, `type`,
//! `properties`, `required`, `additionalProperties`, `const`, `enum`, `pattern`, `format`,
//! `minimum`, `maximum`, `minLength`, `maxLength`, `minItems`, `maxItems`, `uniqueItems`,
//! `contains`) and nothing more: a keyword it does not know fails the test that meets it, so a
//! new kind of constraint cannot slip past the agreement test unnoticed.
//! Patterns are generated from their regular expression (`regex-syntax`); the formats of our own
//! (`iccid`, `iccid-lines`) from their definition in `simflow_schemas::common::formats`.
//! A candidate is kept only when the schema's validator agrees (valid ones) or disagrees
//! (invalid ones), so the generator may be approximate where a schema combines constraints.

use chrono::{Duration, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use regex_syntax::hir::{Class, Hir, HirKind};
use serde_json::{Map, Value, json};
use simflow_schemas::common::formats;

/// The keywords the generator understands; annotations are listed so that they are not taken
/// for constraints it missed.
const KNOWN_KEYWORDS: &[&str] = &[
    "$ref",
    "$defs",
    "$schema",
    "title",
    "description",
    "oneOf",
    "anyOf",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "const",
    "enum",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "items",
    "default",
];

/// Lists the keywords of a schema (recursively) that the generator does not understand.
pub fn unknown_keywords(schema: &Value) -> Vec<String> {
    let mut unknown = Vec::new();
    collect_unknown(schema, &mut unknown);
    unknown.sort();
    unknown.dedup();
    unknown
}

fn collect_unknown(schema: &Value, unknown: &mut Vec<String>) {
    let Some(object) = schema.as_object() else {
        return;
    };
    for (keyword, value) in object {
        if !KNOWN_KEYWORDS.contains(&keyword.as_str()) {
            unknown.push(keyword.clone());
        }
        match keyword.as_str() {
            "properties" | "$defs" => {
                for sub in value.as_object().into_iter().flat_map(Map::values) {
                    collect_unknown(sub, unknown);
                }
            }
            "oneOf" | "anyOf" => {
                for sub in value.as_array().into_iter().flatten() {
                    collect_unknown(sub, unknown);
                }
            }
            "items" | "contains" => collect_unknown(value, unknown),
            _ => {}
        }
    }
}

/// Generates instances of one standalone schema (with its `$defs`).
pub struct Generator<'a> {
    root: &'a Value,
    rng: StdRng,
}

impl<'a> Generator<'a> {
    /// A generator over `root`, seeded.
    pub fn new(root: &'a Value, rng: StdRng) -> Generator<'a> {
        Generator { root, rng }
    }

    fn resolve<'s>(&self, schema: &'s Value) -> &'s Value
    where
        'a: 's,
    {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => {
                let pointer = reference.trim_start_matches('#');
                let target = self
                    .root
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("unresolvable $ref {reference}"));
                self.resolve(target)
            }
            None => schema,
        }
    }

    /// A value the schema should accept (the caller checks with the validator).
    pub fn valid(&mut self, schema: &Value) -> Value {
        let schema = self.resolve(schema).clone();
        if let Some(value) = schema.get("const") {
            return value.clone();
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            return values[self.rng.random_range(0..values.len())].clone();
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let branch = branches[self.rng.random_range(0..branches.len())].clone();
            return self.valid(&branch);
        }
        // An `anyOf` beside other keywords (a range's ends of equal length) is left to the
        // validator's filter; alone, it is a choice of branch (an optional value).
        if schema.get("type").is_none()
            && schema.get("properties").is_none()
            && let Some(branches) = schema.get("anyOf").and_then(Value::as_array)
        {
            let branch = branches[self.rng.random_range(0..branches.len())].clone();
            return self.valid(&branch);
        }
        let kind = match schema.get("type") {
            Some(Value::String(kind)) => kind.clone(),
            Some(Value::Array(kinds)) => {
                // Prefer a value to null: optional fields are what the workers read.
                let kinds: Vec<&str> = kinds.iter().filter_map(Value::as_str).collect();
                let not_null: Vec<&str> = kinds.iter().copied().filter(|k| *k != "null").collect();
                if not_null.is_empty() || self.rng.random_bool(0.2) {
                    kinds[0].to_owned()
                } else {
                    not_null[self.rng.random_range(0..not_null.len())].to_owned()
                }
            }
            _ if schema.get("properties").is_some() => "object".to_owned(),
            other => panic!("schema without a type the generator knows: {other:?} in {schema}"),
        };
        match kind.as_str() {
            "object" => self.object(&schema),
            "array" => self.array(&schema),
            "string" => Value::String(self.string(&schema)),
            "integer" => json!(self.integer(&schema)),
            "boolean" => json!(self.rng.random_bool(0.5)),
            "null" => Value::Null,
            other => panic!("type {other} unknown to the generator"),
        }
    }

    fn object(&mut self, schema: &Value) -> Value {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut object = Map::new();
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if required.contains(&name.as_str()) || self.rng.random_bool(0.5) {
                    let value = self.valid(property);
                    object.insert(name.clone(), value);
                }
            }
        }
        Value::Object(object)
    }

    fn array(&mut self, schema: &Value) -> Value {
        let min = schema.get("minItems").and_then(Value::as_u64).unwrap_or(0);
        let max = schema
            .get("maxItems")
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX)
            .min(min + 6);
        let length = self.rng.random_range(min..=max);
        let items = schema.get("items").cloned().unwrap_or(json!({}));
        let unique = schema.get("uniqueItems") == Some(&json!(true));
        let mut values: Vec<Value> = Vec::new();
        let mut tries = 0;
        while (values.len() as u64) < length && tries < 100 {
            tries += 1;
            let value = self.valid(&items);
            if unique && values.contains(&value) {
                continue;
            }
            values.push(value);
        }
        if let Some(contains) = schema.get("contains")
            && !values.is_empty()
        {
            let at = self.rng.random_range(0..values.len());
            values[at] = self.valid(contains);
        }
        Value::Array(values)
    }

    fn integer(&mut self, schema: &Value) -> i64 {
        let min = schema
            .get("minimum")
            .and_then(Value::as_i64)
            .unwrap_or(-1_000_000);
        let max = schema
            .get("maximum")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX);
        // The edges half of the time: that is where rules and schemas disagree.
        match self.rng.random_range(0..4) {
            0 => min,
            1 => max,
            _ => self
                .rng
                .random_range(min..=max.min(min.saturating_add(1_000_000))),
        }
    }

    fn string(&mut self, schema: &Value) -> String {
        match schema.get("format").and_then(Value::as_str) {
            Some(formats::ICCID) => return self.iccid(),
            Some(formats::ICCID_LINES) => return self.iccid_lines(),
            Some("uuid") => return uuid::Uuid::from_u128(self.rng.random()).to_string(),
            Some("date-time") => {
                let offset = Duration::seconds(self.rng.random_range(-86_400..86_400));
                return (Utc::now() + offset).to_rfc3339();
            }
            _ => {}
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            return self.matching(pattern);
        }
        let min = schema.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
        let max = schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .map_or(min + 12, |max| max as usize);
        let length = self.rng.random_range(min..=max.max(min));
        const ALPHABET: &[char] = &['A', 'z', '0', '9', '-', '_', ' ', '张', '三', '卡'];
        (0..length)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())])
            .collect()
    }

    /// A well-formed ICCID of 19 or 20 digits.
    pub fn iccid(&mut self) -> String {
        let length = if self.rng.random_bool(0.5) { 19 } else { 20 };
        self.iccid_of_length(length)
    }

    /// A well-formed ICCID of `length` digits.
    pub fn iccid_of_length(&mut self, length: usize) -> String {
        let mut body = String::from("89");
        while body.len() < length - 1 {
            body.push(char::from(b'0' + self.rng.random_range(0..10u8)));
        }
        let check = formats::luhn_check_digit(&body).expect("digits");
        format!("{body}{check}")
    }

    fn iccid_lines(&mut self) -> String {
        let count = self.rng.random_range(1..=5);
        let mut lines = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < count {
            let iccid = self.iccid();
            if !seen.insert(iccid.clone()) {
                continue;
            }
            let padding = [" ", "\t", "", "", "\r"];
            let before = padding[self.rng.random_range(0..padding.len())];
            let after = padding[self.rng.random_range(0..padding.len())];
            lines.push(format!("{before}{iccid}{after}"));
            if self.rng.random_bool(0.2) {
                lines.push(String::new());
            }
        }
        let mut text = lines.join("\n");
        if self.rng.random_bool(0.5) {
            text.push('\n');
        }
        text
    }

    /// A string the regular expression matches.
    pub fn matching(&mut self, pattern: &str) -> String {
        let hir = regex_syntax::parse(pattern)
            .unwrap_or_else(|error| panic!("pattern {pattern}: {error}"));
        let mut text = String::new();
        self.walk(&hir, &mut text);
        text
    }

    fn walk(&mut self, hir: &Hir, text: &mut String) {
        match hir.kind() {
            HirKind::Empty | HirKind::Look(_) => {}
            HirKind::Literal(literal) => {
                text.push_str(&String::from_utf8_lossy(&literal.0));
            }
            HirKind::Class(Class::Unicode(class)) => {
                let ranges = class.ranges();
                let range = ranges[self.rng.random_range(0..ranges.len())];
                // Stay near the start of wide ranges (`\S` spans all of Unicode).
                let end = (range.start() as u32 + 200).min(range.end() as u32);
                let code = self.rng.random_range(range.start() as u32..=end);
                text.push(char::from_u32(code).unwrap_or(range.start()));
            }
            HirKind::Class(Class::Bytes(class)) => {
                let ranges = class.ranges();
                let range = ranges[self.rng.random_range(0..ranges.len())];
                text.push(char::from(
                    self.rng.random_range(range.start()..=range.end()),
                ));
            }
            HirKind::Repetition(repetition) => {
                let max = repetition.max.unwrap_or(repetition.min + 3);
                let times = self.rng.random_range(repetition.min..=max);
                for _ in 0..times {
                    self.walk(&repetition.sub, text);
                }
            }
            HirKind::Capture(capture) => self.walk(&capture.sub, text),
            HirKind::Concat(parts) => {
                for part in parts {
                    self.walk(part, text);
                }
            }
            HirKind::Alternation(choices) => {
                let choice = &choices[self.rng.random_range(0..choices.len())];
                self.walk(choice, text);
            }
        }
    }
}

/// One way to break one constraint of a valid instance.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Where, as a JSON pointer into the instance.
    pub pointer: String,
    /// Which keyword it breaks, e.g. `pattern`, `format: iccid`, `required`.
    pub constraint: String,
    /// The instance with that one change.
    pub instance: Value,
}

/// Every single-constraint mutation of `instance` the generator can think of, following the
/// schema into the branch the instance took. The caller keeps those the validator refuses.
pub fn mutations(generator: &mut Generator<'_>, schema: &Value, instance: &Value) -> Vec<Mutation> {
    let mut found = Vec::new();
    mutate(
        generator,
        schema,
        instance,
        "",
        &mut |pointer, constraint, replacement| {
            let mut changed = instance.clone();
            match replacement {
                Some(value) => {
                    if pointer.is_empty() {
                        changed = value;
                    } else if let Some(slot) = changed.pointer_mut(pointer) {
                        *slot = value;
                    } else {
                        // A property that is not there: add it under its parent.
                        let (parent, name) = pointer.rsplit_once('/').expect("a pointer");
                        if let Some(Value::Object(object)) = changed.pointer_mut(parent) {
                            object.insert(name.to_owned(), value);
                        }
                    }
                }
                None => {
                    let (parent, name) = pointer.rsplit_once('/').expect("a pointer");
                    if let Some(Value::Object(object)) = changed.pointer_mut(parent) {
                        object.remove(name);
                    }
                }
            }
            found.push(Mutation {
                pointer: pointer.to_owned(),
                constraint: constraint.to_owned(),
                instance: changed,
            });
        },
    );
    found
}

/// Calls `emit(pointer, constraint, replacement)` for each mutation (`None`: remove the value).
fn mutate(
    generator: &mut Generator<'_>,
    schema: &Value,
    value: &Value,
    pointer: &str,
    emit: &mut dyn FnMut(&str, &str, Option<Value>),
) {
    let schema = generator.resolve(schema).clone();
    if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
        // Follow the branch whose `const` tag the instance carries (the tagged enums), else the
        // first branch that lists every property the instance has.
        let branch = branches.iter().find(|branch| {
            let branch = generator.resolve(branch);
            branch
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|properties| {
                    properties
                        .iter()
                        .all(|(name, property)| match property.get("const") {
                            Some(tag) => value.get(name) == Some(tag),
                            None => true,
                        })
                        && value.as_object().is_some_and(|object| {
                            object.keys().all(|key| properties.contains_key(key))
                        })
                })
        });
        if let Some(branch) = branch {
            mutate(generator, &branch.clone(), value, pointer, emit);
        }
        return;
    }
    if let Some(constant) = schema.get("const") {
        emit(pointer, "const", Some(json!(format!("not-{constant}"))));
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let _ = values;
        emit(pointer, "enum", Some(json!("no-such-value")));
    }
    if let Some(anyof) = schema
        .get("anyOf")
        .filter(|_| schema.get("properties").is_some())
    {
        let _ = anyof;
        // A range whose ends differ in length: one end of the other length.
        if let (Some(first), Some(_)) = (
            value.get("first").and_then(Value::as_str),
            value.get("last"),
        ) {
            let other = if first.len() == 19 { 20 } else { 19 };
            emit(
                &format!("{pointer}/last"),
                "anyOf: ends of equal length",
                Some(json!(generator.iccid_of_length(other))),
            );
        }
    }
    match value {
        Value::Object(object) => {
            emit(pointer, "type", Some(json!([])));
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|names| names.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for name in &required {
                emit(&format!("{pointer}/{name}"), "required", None);
            }
            if schema.get("additionalProperties") == Some(&json!(false)) {
                emit(
                    &format!("{pointer}/unexpected_field"),
                    "additionalProperties",
                    Some(json!(1)),
                );
            }
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    if let Some(child) = object.get(name) {
                        mutate(
                            generator,
                            property,
                            child,
                            &format!("{pointer}/{name}"),
                            emit,
                        );
                    }
                }
            }
        }
        Value::Array(items) => {
            emit(pointer, "type", Some(json!({})));
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && min > 0
            {
                emit(
                    pointer,
                    "minItems",
                    Some(json!(items[..(min as usize - 1).min(items.len())])),
                );
            }
            if schema.get("uniqueItems") == Some(&json!(true)) && !items.is_empty() {
                let mut repeated = items.clone();
                repeated.push(items[0].clone());
                emit(pointer, "uniqueItems", Some(Value::Array(repeated)));
            }
            if schema.get("contains").is_some() {
                emit(
                    pointer,
                    "contains",
                    Some(json!(vec![json!(" "); items.len().max(1)])),
                );
            }
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate().take(2) {
                    mutate(
                        generator,
                        item_schema,
                        item,
                        &format!("{pointer}/{index}"),
                        emit,
                    );
                }
            }
        }
        Value::String(text) => {
            emit(pointer, "type", Some(json!(42)));
            match schema.get("format").and_then(Value::as_str) {
                Some(formats::ICCID) => {
                    emit(
                        pointer,
                        "format: iccid (check digit)",
                        Some(json!(wrong_check_digit(text))),
                    );
                }
                Some(formats::ICCID_LINES) => {
                    let first = text
                        .split('\n')
                        .map(|line| line.trim_matches([' ', '\t', '\r']))
                        .find(|line| !line.is_empty())
                        .unwrap_or_default()
                        .to_owned();
                    emit(
                        pointer,
                        "format: iccid-lines (a repeated ICCID)",
                        Some(json!(format!("{text}\n{first}"))),
                    );
                    emit(
                        pointer,
                        "format: iccid-lines (a check digit)",
                        Some(json!(text.replacen(&first, &wrong_check_digit(&first), 1))),
                    );
                }
                Some("uuid") => emit(pointer, "format: uuid", Some(json!("not-a-uuid"))),
                Some("date-time") => emit(pointer, "format: date-time", Some(json!("tomorrow"))),
                _ => {}
            }
            if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
                // The validator's own regular expressions (ECMA-262, as JSON Schema says).
                let regex = jsonschema::validator_for(&json!({ "pattern": pattern }))
                    .expect("pattern compiles");
                let candidates = [
                    format!("{text}x"),
                    format!("x{text}"),
                    format!(" {text}"),
                    text.chars().skip(1).collect(),
                    String::new(),
                    " ".to_owned(),
                    "x".repeat(40),
                    format!("{text}{text}"),
                ];
                for candidate in candidates {
                    if !regex.is_valid(&json!(candidate)) {
                        emit(pointer, "pattern", Some(json!(candidate)));
                    }
                }
            }
        }
        Value::Number(_) => {
            emit(pointer, "type", Some(json!("1")));
            // One past the bound; past the 64-bit range, a number no integer type holds.
            if let Some(min) = schema.get("minimum").and_then(Value::as_i64) {
                emit(
                    pointer,
                    "minimum",
                    Some(
                        min.checked_sub(1)
                            .map_or(json!(-1e20), |below| json!(below)),
                    ),
                );
            }
            match schema.get("maximum") {
                Some(max) if max.as_i64().is_some_and(|max| max < i64::MAX) => {
                    emit(
                        pointer,
                        "maximum",
                        Some(json!(max.as_i64().unwrap_or_default() + 1)),
                    );
                }
                Some(max) if max.as_u64().is_some_and(|max| max < u64::MAX) => {
                    emit(
                        pointer,
                        "maximum",
                        Some(json!(max.as_u64().unwrap_or_default() + 1)),
                    );
                }
                Some(_) => emit(pointer, "maximum", Some(json!(1e20))),
                None => {}
            }
        }
        Value::Bool(_) => emit(pointer, "type", Some(json!("true"))),
        Value::Null => {}
    }
}

/// The same ICCID with a wrong check digit.
pub fn wrong_check_digit(iccid: &str) -> String {
    let (body, check) = iccid.split_at(iccid.len().saturating_sub(1));
    let wrong = (check.parse::<u8>().unwrap_or(0) + 1) % 10;
    format!("{body}{wrong}")
}
