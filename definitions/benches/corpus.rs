//! Parsing speed over the whole conformance corpus (`shared/conformance`): the 295 definition
//! files and edge cases plus the 4,533 Singularity Hub recipes, each parsed with `parse_all`,
//! best of 10 rounds. Prints figures, never fails: `cargo bench -p kiln-definitions`.
//!
//! For comparison, SingularityCE's own `parser.All` (Go) can be timed the same way over the
//! same recipes; the goal is "well under a second" for the whole corpus.

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;

fn corpus() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    let mut texts = Vec::new();
    for dir in ["defs", "defs/edge"] {
        for entry in fs::read_dir(root.join(dir).join("golden")).expect("golden folder") {
            let golden = entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            let def = root.join(dir).join(golden.trim_end_matches(".golden.json"));
            texts.push(fs::read_to_string(def).expect("definition"));
        }
    }
    let tar = root.join("shub-archive/singularityhub-archive-recipes.tar.gz");
    let mut archive = tar::Archive::new(GzDecoder::new(File::open(tar).expect("recipes")));
    for entry in archive.entries().expect("tar") {
        let mut entry = entry.expect("tar entry");
        if entry.header().entry_type().is_file() {
            let mut text = String::new();
            entry.read_to_string(&mut text).expect("utf-8 recipe");
            texts.push(text);
        }
    }
    texts
}

fn main() {
    let texts = corpus();
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut best = Duration::MAX;
    let mut stages = 0;
    for _ in 0..10 {
        let started = Instant::now();
        stages = 0;
        for text in &texts {
            stages +=
                kiln_definitions::parse_all(std::hint::black_box(text)).map_or(0, |s| s.len());
        }
        best = best.min(started.elapsed());
    }
    println!(
        "parse_all: {} files, {:.1} MB, {stages} stages, best of 10: {best:.1?} ({:.0} MB/s)",
        texts.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / best.as_secs_f64()
    );
}
