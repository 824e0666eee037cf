//! The definition corpus (`shared/conformance/defs`, deffile spec §11): for every golden,
//! `parse`, `parse_all` and (where the golden has it) `render` with no build arguments must give
//! what SingularityCE's parser gave, as JSON values, or the same error. The tests walk the
//! golden folders, so files added there are covered without touching this code.

mod common;

use std::fs;
use std::path::Path;

use common::{Verdict, compare, conformance_dir};
use kiln_definitions::{BuildArgs, RenderError, parse, parse_all, render};
use serde_json::Value;

/// Counts for one folder.
#[derive(Default)]
struct Tally {
    files: usize,
    agree: usize,
    kiln_choice: usize,
    disagreements: Vec<String>,
}

fn run_folder(defs: &Path) -> Tally {
    let goldens = defs.join("golden");
    let mut entries: Vec<_> = fs::read_dir(&goldens)
        .unwrap_or_else(|e| panic!("read {}: {e}", goldens.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".golden.json"))
        .collect();
    entries.sort();
    let mut tally = Tally::default();
    for golden_path in entries {
        let file_name = golden_path.file_name().unwrap().to_string_lossy();
        let def_name = file_name.trim_end_matches(".golden.json");
        let text = fs::read_to_string(defs.join(def_name))
            .unwrap_or_else(|e| panic!("read {def_name}: {e}"));
        let golden: Value = serde_json::from_slice(&fs::read(&golden_path).unwrap()).unwrap();
        let sylabs = &golden["sylabs"];

        let mut verdicts = vec![
            ("parse", compare(&parse(&text), &sylabs["parse"], false)),
            ("all", compare(&parse_all(&text), &sylabs["all"], false)),
        ];
        if let Some(templated) = sylabs.get("templated") {
            verdicts.push(("templated", compare_render(&text, templated, sylabs)));
        }
        tally.files += 1;
        let mut agrees = true;
        for (what, verdict) in verdicts {
            match verdict {
                Verdict::Agree => {}
                Verdict::GoldenPanicked => tally.kiln_choice += 1,
                Verdict::Disagree(why) => {
                    agrees = false;
                    tally
                        .disagreements
                        .push(format!("{def_name} [{what}]: {why}"));
                }
            }
        }
        if agrees {
            tally.agree += 1;
        }
    }
    tally
}

/// `render` with no build arguments against the `templated` golden and its warnings.
fn compare_render(text: &str, golden: &Value, sylabs: &Value) -> Verdict {
    let rendered = render(text, &BuildArgs::new());
    let as_parse = match &rendered {
        Ok(r) => Ok(r.stages.clone()),
        Err(RenderError::Parse(e)) | Err(RenderError::Reparse { error: e, .. }) => Err(e.clone()),
        Err(other) => {
            return match golden.get("error").and_then(Value::as_str) {
                Some(message) if message == other.to_string() => Verdict::Agree,
                _ => Verdict::Disagree(format!("render error {other}, golden {golden}")),
            };
        }
    };
    let verdict = compare(&as_parse, golden, false);
    if verdict != Verdict::Agree {
        return verdict;
    }
    let expected: Vec<&str> = sylabs
        .get("templated_warnings")
        .and_then(Value::as_array)
        .map(|w| w.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let ours: Vec<&str> = rendered
        .as_ref()
        .map(|r| r.warnings.iter().map(String::as_str).collect())
        .unwrap_or_default();
    // Warnings of a failed render are not kept; the golden lists them either way.
    if rendered.is_ok() && ours != expected {
        return Verdict::Disagree(format!("warnings {ours:?}, golden {expected:?}"));
    }
    Verdict::Agree
}

fn assert_all_agree(name: &str, tally: &Tally, expected_files: usize) {
    println!(
        "{name}: {} of {} files agree with SingularityCE ({} results where SingularityCE panics \
         follow Kiln's documented choice)",
        tally.agree, tally.files, tally.kiln_choice
    );
    for d in &tally.disagreements {
        println!("  DISAGREE {d}");
    }
    assert!(
        tally.files >= expected_files,
        "{name}: only {} goldens found",
        tally.files
    );
    assert!(
        tally.disagreements.is_empty(),
        "{name}: {} disagreements",
        tally.disagreements.len()
    );
}

#[test]
fn real_definition_files_agree_with_singularityce() {
    let tally = run_folder(&conformance_dir().join("defs"));
    assert_all_agree("defs", &tally, 250);
}

#[test]
fn edge_cases_agree_with_singularityce() {
    let tally = run_folder(&conformance_dir().join("defs/edge"));
    assert_all_agree("defs/edge", &tally, 45);
}
