//! The whole Singularity Hub archive (`shared/conformance/shub-archive`, 4,533 real recipes, deffile
//! spec §11): `parse` and `parse_all` against SingularityCE's output (the goldens omit `raw` and
//! `fullraw`). At least 99.9 % of the recipes must agree; every disagreement is printed.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

use common::{Verdict, compare, conformance_dir};
use flate2::read::GzDecoder;
use kiln_definitions::{parse, parse_all};
use serde_json::Value;

/// The recipes by name (the tar holds `rec/<name>`).
fn recipes() -> HashMap<String, String> {
    let path = conformance_dir().join("shub-archive/singularityhub-archive-recipes.tar.gz");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut recipes = HashMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .expect("entry path")
            .to_string_lossy()
            .into_owned();
        let name = path.trim_start_matches("rec/").to_owned();
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{path} is not UTF-8: {e}"));
        recipes.insert(name, text);
    }
    recipes
}

#[test]
fn singularity_hub_archive_agrees_with_singularityce() {
    let recipes = recipes();
    let path = conformance_dir().join("shub-archive/singularityhub-archive-golden.jsonl.gz");
    let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut total = 0;
    let mut agree = 0;
    let mut disagreements = Vec::new();
    for line in BufReader::new(GzDecoder::new(file)).lines() {
        let golden: Value = serde_json::from_str(&line.expect("golden line")).expect("golden json");
        let name = golden["name"].as_str().expect("golden name");
        let text = recipes
            .get(name)
            .unwrap_or_else(|| panic!("recipe {name} missing from the archive"));
        total += 1;
        let verdicts = [
            (
                "parse",
                compare(&parse(text), &golden["sylabs_parse"], true),
            ),
            (
                "all",
                compare(&parse_all(text), &golden["sylabs_all"], true),
            ),
        ];
        let mut ok = true;
        for (what, verdict) in verdicts {
            if let Verdict::Disagree(why) = verdict {
                ok = false;
                disagreements.push(format!("{name} [{what}]: {why}"));
            } else if verdict == Verdict::GoldenPanicked {
                ok = false;
                disagreements.push(format!("{name} [{what}]: SingularityCE panicked"));
            }
        }
        if ok {
            agree += 1;
        }
    }

    // Only the parsing itself, for the figure printed below (a benchmark, not a pass/fail goal).
    let started = Instant::now();
    let mut stages = 0;
    for text in recipes.values() {
        stages += parse_all(text).map_or(0, |s| s.len());
    }
    let elapsed = started.elapsed();

    println!(
        "shub-archive: {agree} of {total} recipes agree with SingularityCE ({:.2} %); \
         parse_all over all of them: {stages} stages in {elapsed:.1?}",
        100.0 * agree as f64 / total as f64
    );
    for d in &disagreements {
        println!("  DISAGREE {d}");
    }
    assert!(total >= 4533, "only {total} goldens");
    assert!(
        agree * 1000 >= total * 999,
        "agreement {agree}/{total} is below 99.9 %"
    );
}
