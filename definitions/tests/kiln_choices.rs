//! Where SingularityCE crashes or answers at random (deffile spec §12 items 5 and 8), and where
//! Kiln adds a limit, Kiln's documented choice (crate docs) is pinned here.

mod common;

use common::conformance_dir;
use kiln_definitions::{
    BuildArgs, MAX_DEFINITION_BYTES, MAX_STAGES, ParseErrorKind, RenderError, Severity, check,
    parse, parse_all, render,
};

/// §12.5: a `\` continuation followed by a comment line panics SingularityCE; Kiln ends the value
/// at that line (what the upstream code means to do) and goes on with the next key.
#[test]
fn continuation_ended_by_a_comment_keeps_the_value_so_far() {
    let text = std::fs::read_to_string(
        conformance_dir().join("defs/edge/header_continuation_then_comment.def"),
    )
    .expect("read edge case");
    for def in [parse(&text).unwrap(), parse_all(&text).unwrap().remove(0)] {
        let header = def.header.as_ref().expect("header");
        assert_eq!(header.get("bootstrap").map(String::as_str), Some("docker"));
        assert_eq!(header.get("from").map(String::as_str), Some("alpine "));
        assert_eq!(header.get("stage").map(String::as_str), Some("x"));
        assert_eq!(def.build_data.build_scripts.post.script, "  echo\n");
    }
    let findings = check(&text).unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Warning);
    assert_eq!(findings[0].location.line, 3);
}

/// The same with a blank line, and with a key that is not valid: the ended value is checked like
/// any other key.
#[test]
fn continuation_ended_by_a_blank_line_validates_its_key() {
    let def = parse("Bootstrap: docker\nFrom: a\\\n  b \\\n\nStage: s\n").unwrap();
    let header = def.header.unwrap();
    assert_eq!(header["from"], "ab ");
    assert_eq!(header["stage"], "s");

    let err = parse("Bootstrap: docker\nMaintainer: me \\\n# c\nFrom: a\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to parse deffile header: invalid header keyword found: maintainer"
    );
    assert_eq!(err.location.line, 2);
}

/// §12.8: SingularityCE lists several invalid sections in Go map order; Kiln lists them in order
/// of first appearance, every time, and points at the first.
#[test]
fn invalid_sections_are_listed_in_file_order() {
    let text = "Bootstrap: docker\n%zeta\n%post\n%alpha x\n% post\n%zeta\n%Mid\n";
    for _ in 0..20 {
        let err = parse(text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid section(s) specified: zeta, alpha, , mid"
        );
        assert_eq!((err.location.line, err.location.column), (2, 1));
        assert_eq!(err.location.text, "%zeta");
    }
}

/// A `%files` line that is a lone `"` makes SingularityCE index an empty match list and crash.
#[test]
fn lone_quote_in_files_is_an_error_not_a_crash() {
    let err = parse("Bootstrap: docker\n%files\n  a b\n   \"\n").unwrap_err();
    assert_eq!(
        err.kind,
        ParseErrorKind::FilesLineWithoutSource { line: "\"".into() }
    );
    assert_eq!((err.location.line, err.location.column), (4, 4));
    // Two quotes are a quoted empty source, which SingularityCE accepts.
    let def = parse("Bootstrap: docker\n%files\n\"\" dst\n").unwrap();
    assert_eq!(def.build_data.files[0].files[0].source, "");
    assert_eq!(def.build_data.files[0].files[0].destination, "dst");
}

/// A 10 MiB definition is refused by size before any parsing, by every entry point.
#[test]
fn ten_mib_definition_is_rejected_by_size() {
    let mut text = String::from("Bootstrap: docker\nFrom: alpine\n");
    while text.len() < 10 * 1024 * 1024 {
        text.push_str("%post\n  echo a line of shell that is not too long for one section\n");
    }
    let too_large = ParseErrorKind::TooLarge {
        size: text.len(),
        limit: MAX_DEFINITION_BYTES,
    };
    assert_eq!(parse(&text).unwrap_err().kind, too_large);
    assert_eq!(parse_all(&text).unwrap_err().kind, too_large);
    assert_eq!(check(&text).unwrap_err().kind, too_large);
    match render(&text, &BuildArgs::new()) {
        Err(RenderError::Parse(err)) => assert_eq!(err.kind, too_large),
        other => panic!("expected a size error, got {other:?}"),
    }
    // Just under the limit, the same content parses.
    text.truncate(MAX_DEFINITION_BYTES);
    let cut = text.rfind('\n').unwrap() + 1;
    text.truncate(cut);
    assert!(parse_all(&text).is_ok());
}

/// SingularityCE's 64 KiB scanner limit on one header or section is kept, with its message.
#[test]
fn section_over_64_kib_keeps_singularityce_error() {
    let text = format!(
        "Bootstrap: docker\n%post\n{}\n%test\n  true\n",
        "  echo x\n".repeat(8000)
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.to_string(), "bufio.Scanner: token too long");
    assert_eq!(err.location.line, 2);
}

/// Each stage holds the whole file, so the stage count is bounded; blank chunks do not count.
#[test]
fn stage_count_is_bounded() {
    let stage = "Bootstrap: docker\nFrom: alpine\n";
    let at_limit = format!("# leading comment\n{}", stage.repeat(MAX_STAGES));
    assert_eq!(parse_all(&at_limit).unwrap().len(), MAX_STAGES);
    let over = stage.repeat(MAX_STAGES + 1);
    let err = parse_all(&over).unwrap_err();
    assert_eq!(
        err.kind,
        ParseErrorKind::TooManyStages { limit: MAX_STAGES }
    );
    assert_eq!(err.location.line, 2 * MAX_STAGES + 1);
    // A file of nothing but `Bootstrap:` lines, as large as allowed, is refused cheaply.
    let hostile = "bootstrap:\n".repeat(MAX_DEFINITION_BYTES / 11);
    assert!(matches!(
        check(&hostile).unwrap_err().kind,
        ParseErrorKind::TooManyStages { .. }
    ));
}
