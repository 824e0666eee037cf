//! Fuzzes `parse`, `parse_all` and `check` with arbitrary text: none may panic, and what they
//! return must hold together (stages cover the file, JSON round-trips, error places exist).

#![no_main]

use kiln_definitions::{Definition, ParseError, check, parse, parse_all};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines = text.split('\n').count();
    let in_file = |err: &ParseError| {
        assert!(err.location.line >= 1 && err.location.line <= lines, "{err:?}");
        assert!(err.location.column >= 1, "{err:?}");
    };

    match parse(text) {
        Ok(def) => {
            assert_eq!(def.raw, text);
            round_trip(&def);
        }
        Err(err) => in_file(&err),
    }

    match parse_all(text) {
        Ok(stages) => {
            for stage in &stages {
                assert_eq!(stage.full_raw, text);
                assert!(text.contains(&stage.raw));
                round_trip(stage);
            }
        }
        Err(err) => in_file(&err),
    }

    match check(text) {
        Ok(findings) => {
            for finding in findings {
                assert!(finding.location.line >= 1 && finding.location.line <= lines);
            }
        }
        Err(err) => in_file(&err),
    }
});

fn round_trip(def: &Definition) {
    let json = serde_json::to_string(def).expect("serialise");
    let back: Definition = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(&back, def);
}
