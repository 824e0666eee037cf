//! The `kiln-def` binary as a user runs it: output, exit codes and messages.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::conformance_dir;
use serde_json::Value;

fn kiln_def(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln-def"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kiln-def");
    let mut pipe = child.stdin.take().expect("stdin");
    let input = stdin.unwrap_or_default().to_vec();
    // Written from a thread: a large input must not block while the child fills stdout.
    let writer = std::thread::spawn(move || {
        // The child may stop reading early (size limit); a broken pipe is expected then.
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("wait for kiln-def");
    writer.join().expect("stdin writer");
    output
}

fn edge(name: &str) -> PathBuf {
    conformance_dir().join("defs/edge").join(name)
}

fn golden(name: &str) -> Value {
    let path = conformance_dir().join(format!("defs/edge/golden/{name}.golden.json"));
    serde_json::from_slice(&std::fs::read(path).expect("read golden")).expect("golden json")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_stderr_contains(out: &Output, needle: &str) {
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(needle),
        "stderr lacks {needle:?}:\n{stderr}"
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A temporary file that removes itself, named per test so parallel tests do not collide.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, content: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("kiln-def-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, content).expect("write temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn parse_prints_singularityce_json() {
    let file = edge("app_dup_and_order.def");
    let out = kiln_def(&["parse", path(&file)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(printed, golden("app_dup_and_order.def")["sylabs"]["parse"]);
}

#[test]
fn parse_all_prints_every_stage() {
    let file = edge("from_before_bootstrap.def");
    let out = kiln_def(&["parse", "--all", path(&file)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(printed.as_array().map(Vec::len), Some(2));
    assert_eq!(
        printed,
        golden("from_before_bootstrap.def")["sylabs"]["all"]
    );
}

#[test]
fn parse_reads_stdin() {
    let out = kiln_def(
        &["parse", "-"],
        Some(b"Bootstrap: docker\nFrom: alpine\n%post\n  echo hi\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(printed["header"]["from"], "alpine");
    assert_eq!(
        printed["buildData"]["buildScripts"]["post"]["script"],
        "  echo hi\n"
    );
}

#[test]
fn parse_error_exits_1_with_the_message_and_place() {
    let out = kiln_def(
        &["parse", "-"],
        Some(b"Bootstrap: docker\nFrom: alpine\n%label\n  a b\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("<stdin>:3:1: invalid section(s) specified: label\n3 | %label\n"),
        "{stderr}"
    );
}

#[test]
fn parse_all_error_has_the_line_of_the_whole_file() {
    let file = edge("multistage_bootstrap_in_heredoc.def");
    let out = kiln_def(&["parse", "--all", path(&file)], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let source = std::fs::read_to_string(&file).expect("read def");
    let eof_line = source
        .lines()
        .position(|l| l.trim() == "EOF")
        .expect("EOF line")
        + 1;
    assert!(
        stderr.contains(&format!(
            ":{eof_line}:1: failed to parse deffile header: header key EOF had no val"
        )),
        "{stderr}"
    );
}

#[test]
fn oversized_input_is_rejected_with_a_size_error() {
    let big = vec![b'#'; 10 * 1024 * 1024];
    let out = kiln_def(&["parse", "-"], Some(&big));
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_contains(&out, "definition file is too large");
}

#[test]
fn non_utf8_input_cannot_be_read() {
    let out = kiln_def(&["parse", "-"], Some(b"Bootstrap: docker\nFrom: \xff\n"));
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_contains(&out, "not UTF-8");
}

#[test]
fn render_substitutes_build_args_file_and_defaults() {
    let def = b"Bootstrap: docker\nFrom: {{ IMAGE }}\n%post\n  echo {{ A }} {{ B }}\n%arguments\n  B=default\n";
    let args = TempFile::new("args", b"IMAGE=alpine:3.19\nA=from-file\nnot a pair\n");
    let out = kiln_def(
        &[
            "render",
            "--build-arg-file",
            path(&args.0),
            "--build-arg",
            "A=cli",
            "-",
        ],
        Some(def),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Bootstrap: docker\nFrom: alpine:3.19\n%post\n  echo cli default\n%arguments\n  B=default\n"
    );
    assert_eq!(
        text(&out.stderr),
        "warning: Skipping \"not a pair\" in build arg file: \"not a pair\" is not a key=value pair\n"
    );
}

#[test]
fn render_warns_about_unused_build_args() {
    let out = kiln_def(
        &["render", "--build-arg", "ZZ=1", "--build-arg", "AA=2", "-"],
        Some(b"Bootstrap: docker\nFrom: alpine\n"),
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "Bootstrap: docker\nFrom: alpine\n");
    assert_eq!(
        text(&out.stderr),
        "warning: Unused build variables: AA, ZZ\n"
    );
}

#[test]
fn render_missing_variable_exits_1() {
    let file = edge("templating_missing.def");
    let out = kiln_def(
        &["render", "--build-arg", "IMAGE=alpine", path(&file)],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_stderr_contains(
        &out,
        ":4:8: build var MISSING is not defined through either --build-arg (--build-arg-file) \
         or 'arguments' section",
    );
}

#[test]
fn render_refuses_a_bad_build_arg() {
    let out = kiln_def(
        &["render", "--build-arg", "NOEQUALS", "-"],
        Some(b"Bootstrap: docker\n"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_stderr_contains(&out, "\"NOEQUALS\" is not a key=value pair");
}

#[test]
fn check_passes_a_buildable_file() {
    let out = kiln_def(
        &["check", "-"],
        Some(b"Bootstrap: docker\nFrom: alpine\n%post\n  apk add curl\n"),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
}

#[test]
fn check_reports_errors_and_exits_1() {
    let def = b"Bootstrap: Docker\nFrom: alpine\n%setup\n  touch $SINGULARITY_ROOTFS/x\n%files from nowhere\n  /a /b\n";
    let out = kiln_def(&["check", "-"], Some(def));
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("<stdin>:1:1: error: stage 1: invalid build source \"Docker\""),
        "{stdout}"
    );
    assert!(lines[0].contains("write \"docker\""), "{stdout}");
    assert!(
        lines[1].starts_with("<stdin>:3:1: error: stage 1: %setup runs on the build host"),
        "{stdout}"
    );
    assert_eq!(
        lines[2],
        "<stdin>:5:1: error: stage 1: %files from nowhere: stage nowhere was not found"
    );
}

#[test]
fn check_warnings_alone_exit_0() {
    let file = edge("header_continuation_then_comment.def");
    let out = kiln_def(&["check", path(&file)], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(": warning: stage 1: "), "{stdout}");
    assert!(stdout.contains("SingularityCE crashes"), "{stdout}");
}

#[test]
fn check_of_an_unparsable_file_exits_1_with_the_parse_error() {
    let file = edge("header_no_colon.def");
    let out = kiln_def(&["check", path(&file)], None);
    assert_eq!(out.status.code(), Some(1));
    assert_stderr_contains(&out, "header key Bootstrap docker had no val");
}
