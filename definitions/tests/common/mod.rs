//! Shared by the conformance tests: where the corpus is, and how a Kiln result is compared with
//! a golden (`{"error": …}`, `{"panic": …}` or the JSON SingularityCE printed).

// Each test binary includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use kiln_definitions::{ParseError, ParseErrorKind};
use serde_json::Value;

/// `shared/conformance`, relative to this crate so it works from any checkout beside `shared/`.
pub fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance")
}

/// How one result compares with its golden.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Agree,
    /// SingularityCE crashed; Kiln's choice is tested on its own.
    GoldenPanicked,
    Disagree(String),
}

/// The prefix of SingularityCE's invalid-section message, whose name list is in random order.
const INVALID_SECTIONS: &str = "invalid section(s) specified: ";

/// Compares an error message with the golden's. A list of several invalid sections is compared
/// as a set, because SingularityCE prints it in Go map order.
pub fn same_error(ours: &ParseError, golden: &str) -> bool {
    if let ParseErrorKind::InvalidSections { names } = &ours.kind
        && names.len() > 1
        && let Some(list) = golden.strip_prefix(INVALID_SECTIONS)
    {
        let mut theirs: Vec<&str> = list.split(", ").collect();
        let mut ours: Vec<&str> = names.iter().map(String::as_str).collect();
        theirs.sort_unstable();
        ours.sort_unstable();
        return theirs == ours;
    }
    ours.to_string() == golden
}

/// Compares `ours` (a JSON value or a parse error) with `golden`. With `strip_raw`, `raw` and
/// `fullraw` are removed from our objects first (the Singularity Hub goldens omit them).
pub fn compare<T: serde::Serialize>(
    ours: &Result<T, ParseError>,
    golden: &Value,
    strip_raw: bool,
) -> Verdict {
    if golden.get("panic").is_some() {
        return Verdict::GoldenPanicked;
    }
    match (ours, golden.get("error").and_then(Value::as_str)) {
        (Err(err), Some(message)) if same_error(err, message) => Verdict::Agree,
        (Err(err), Some(message)) => Verdict::Disagree(format!(
            "error {:?}, golden error {message:?}",
            err.to_string()
        )),
        (Err(err), None) => {
            Verdict::Disagree(format!("error {:?}, golden parses", err.to_string()))
        }
        (Ok(_), Some(message)) => Verdict::Disagree(format!("parses, golden error {message:?}")),
        (Ok(value), None) => {
            let mut ours = serde_json::to_value(value).expect("definitions serialise");
            if strip_raw {
                strip_raw_fields(&mut ours);
            }
            if &ours == golden {
                Verdict::Agree
            } else {
                Verdict::Disagree(format!("json differs:\n ours   {ours}\n golden {golden}"))
            }
        }
    }
}

fn strip_raw_fields(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(strip_raw_fields),
        Value::Object(map) => {
            map.remove("raw");
            map.remove("fullraw");
        }
        _ => {}
    }
}
