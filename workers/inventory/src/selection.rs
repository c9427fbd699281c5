//! Turns the wire's card selection (list, text file, range, quantity) into a checked domain
//! selection, refusing malformed ICCIDs and duplicates before any SQL runs.

use std::collections::BTreeSet;

use simflow_runtime::Rejection;
use simflow_schemas::common::{CardProblem, CardSelection, ReturnSelection};

use crate::iccid::Iccid;
use crate::reasons;

/// At most this many cards in one job: the contract's limit (its schemas say the same).
pub const MAX_CARDS_PER_JOB: usize = simflow_schemas::common::MAX_CARDS_PER_JOB as usize;

/// At most this many problems are listed in an answer; the count covers all of them.
pub const MAX_LISTED_PROBLEMS: usize = 1_000;

/// A checked selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// These distinct ICCIDs, sorted.
    List(Vec<Iccid>),
    /// Every card from `first` to `last`, both included (same length).
    Range {
        /// First ICCID.
        first: Iccid,
        /// Last ICCID.
        last: Iccid,
    },
    /// Any this many available cards, lowest ICCIDs first.
    Quantity(u32),
}

impl Selection {
    /// The ICCIDs of a list selection as strings (for `= ANY($1)`).
    pub fn list_strings(&self) -> Vec<String> {
        match self {
            Selection::List(iccids) => iccids
                .iter()
                .map(|iccid| iccid.as_str().to_owned())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Builds a rejection listing card problems (bounded), with `total` problems in all.
pub fn cards_rejection(
    reason: reasons::Reason,
    mut problems: Vec<CardProblem>,
    total: u64,
) -> Rejection {
    problems.truncate(MAX_LISTED_PROBLEMS);
    Rejection::from(reason).with_problems(problems, total)
}

fn parse_list<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Selection, Rejection> {
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    let mut total_problems = 0u64;
    let mut count = 0usize;
    for line in lines.map(str::trim).filter(|line| !line.is_empty()) {
        count += 1;
        if count > MAX_CARDS_PER_JOB {
            return Err(Rejection::from(reasons::SELECTION_TOO_LARGE));
        }
        match Iccid::parse(line) {
            Ok(iccid) => {
                if !seen.insert(iccid.clone()) {
                    total_problems += 1;
                    problems.push(reasons::DUPLICATE_ICCID.for_card(iccid.as_str()));
                }
            }
            Err(_) => {
                total_problems += 1;
                // A malformed line may be anything; keep the answer small.
                let shown: String = line.chars().take(40).collect();
                problems.push(reasons::ICCID_INVALID.for_card(&shown));
            }
        }
    }
    if total_problems > 0 {
        return Err(cards_rejection(
            reasons::CARDS_NOT_AVAILABLE,
            problems,
            total_problems,
        ));
    }
    if seen.is_empty() {
        let reason = reasons::EMPTY_SELECTION;
        return Err(Rejection::from(reason));
    }
    Ok(Selection::List(seen.into_iter().collect()))
}

/// An ICCID list read leniently: the well-formed distinct ICCIDs, and a problem for every
/// malformed or repeated line (batch return takes what it can and reports the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LenientList {
    /// Distinct well-formed ICCIDs, sorted.
    pub iccids: Vec<String>,
    /// Malformed and repeated lines.
    pub problems: Vec<CardProblem>,
    /// Non-empty lines in all (what the clerk asked for).
    pub lines: u64,
}

/// Reads a return's list or text file leniently.
pub fn parse_lenient(cards: &ReturnSelection) -> Result<LenientList, Rejection> {
    let lines: Box<dyn Iterator<Item = &str>> = match cards {
        ReturnSelection::Iccids { iccids } => Box::new(iccids.iter().map(String::as_str)),
        ReturnSelection::TextFile { content, .. } => Box::new(content.lines()),
    };
    let mut seen = BTreeSet::new();
    let mut list = LenientList::default();
    for line in lines.map(str::trim).filter(|line| !line.is_empty()) {
        list.lines += 1;
        if usize::try_from(list.lines).unwrap_or(usize::MAX) > MAX_CARDS_PER_JOB {
            let reason = reasons::SELECTION_TOO_LARGE;
            return Err(Rejection::from(reason));
        }
        match Iccid::parse(line) {
            Ok(iccid) if seen.insert(iccid.clone()) => {}
            Ok(iccid) => list
                .problems
                .push(reasons::DUPLICATE_ICCID.for_card(iccid.as_str())),
            Err(_) => {
                let shown: String = line.chars().take(40).collect();
                list.problems.push(reasons::ICCID_INVALID.for_card(&shown));
            }
        }
    }
    if list.lines == 0 {
        let reason = reasons::EMPTY_SELECTION;
        return Err(Rejection::from(reason));
    }
    list.iccids = seen.into_iter().map(Iccid::into_string).collect();
    Ok(list)
}

/// Checks a wire selection.
pub fn parse(cards: &CardSelection) -> Result<Selection, Rejection> {
    match cards {
        CardSelection::Iccids { iccids } => parse_list(iccids.iter().map(String::as_str)),
        CardSelection::TextFile { content, .. } => parse_list(content.lines()),
        CardSelection::Range { first, last } => {
            let bad_range = || {
                let reason = reasons::BAD_RANGE;
                Rejection::from(reason)
            };
            let (Ok(first), Ok(last)) = (Iccid::parse(first), Iccid::parse(last)) else {
                return Err(bad_range());
            };
            if first.as_str().len() != last.as_str().len() || first > last {
                return Err(bad_range());
            }
            Ok(Selection::Range { first, last })
        }
        CardSelection::Quantity { quantity } => {
            if *quantity == 0 {
                let reason = reasons::EMPTY_SELECTION;
                return Err(Rejection::from(reason));
            }
            if usize::try_from(*quantity).unwrap_or(usize::MAX) > MAX_CARDS_PER_JOB {
                let reason = reasons::SELECTION_TOO_LARGE;
                return Err(Rejection::from(reason));
            }
            Ok(Selection::Quantity(*quantity))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "8988211000000530082";

    #[test]
    fn a_text_file_ignores_blank_lines_and_spaces() {
        let selection = parse(&CardSelection::TextFile {
            file_name: "f.txt".into(),
            content: format!("\n  {A}  \r\n\n"),
        })
        .expect("valid file");
        assert_eq!(selection.list_strings(), vec![A.to_owned()]);
    }

    #[test]
    fn malformed_and_duplicate_iccids_are_listed_and_nothing_is_selected() {
        let rejection = parse(&CardSelection::Iccids {
            iccids: vec![A.into(), A.into(), "12345".into()],
        })
        .expect_err("refused");
        assert_eq!(rejection.reason.code, "CARDS_NOT_AVAILABLE");
        assert_eq!(rejection.problem_count, 2);
        let codes: Vec<_> = rejection
            .problems
            .iter()
            .map(|p| p.reason.code.as_str())
            .collect();
        assert_eq!(codes, vec!["DUPLICATE_ICCID", "ICCID_INVALID"]);
    }

    #[test]
    fn ranges_must_be_ordered_and_of_equal_length() {
        let later = "8988211000000530090"; // body 898821100000053009, check digit 0
        assert!(
            parse(&CardSelection::Range {
                first: A.into(),
                last: later.into()
            })
            .is_ok()
        );
        let backwards = parse(&CardSelection::Range {
            first: later.into(),
            last: A.into(),
        });
        assert_eq!(backwards.expect_err("refused").reason.code, "BAD_RANGE");
    }

    #[test]
    fn empty_selections_are_refused() {
        assert_eq!(
            parse(&CardSelection::Quantity { quantity: 0 })
                .expect_err("refused")
                .reason
                .code,
            "EMPTY_SELECTION"
        );
        let empty = parse(&CardSelection::TextFile {
            file_name: "e.txt".into(),
            content: "\n\n".into(),
        });
        assert_eq!(empty.expect_err("refused").reason.code, "EMPTY_SELECTION");
    }
}
