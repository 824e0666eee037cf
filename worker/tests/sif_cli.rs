//! `kiln-worker sif list/dump/new` against `siftool` 2.8.3: what `new` writes passes siftool
//! and dumps back unchanged, `list` prints what `siftool list` prints, and bad input fails with
//! a message and leaves no image behind. `siftool` is required.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

/// Runs a program and returns its output, failing the test if it cannot start.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a program that must succeed and returns its stdout.
fn ok(program: &str, args: &[&str]) -> Vec<u8> {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

const WORKER: &str = env!("CARGO_BIN_EXE_kiln-worker");

fn s(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Runs `kiln-worker sif new` on `image.def` and `rootfs.squashfs` in `dir`, writing
/// `image.sif` there.
fn sif_new(dir: &Path, arch: &str, extra: &[&str]) -> Output {
    let (def, squashfs, sif) = (
        dir.join("image.def"),
        dir.join("rootfs.squashfs"),
        dir.join("image.sif"),
    );
    let mut args = vec!["sif", "new", "-o", s(&sif), "--deffile", s(&def)];
    args.extend(["--squashfs", s(&squashfs), "--arch", arch]);
    args.extend(extra);
    run(WORKER, &args)
}

#[test]
fn new_writes_what_siftool_reads_back_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    // Any bytes do for the partition: the SIF layer copies it verbatim. An odd length checks that
    // nothing is padded.
    let partition: Vec<u8> = (0..(1 << 20) + 123u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    fs::write(p("rootfs.squashfs"), &partition).expect("write");
    fs::write(p("image.def"), "Bootstrap: scratch\n").expect("write");
    fs::write(p("inspect.json"), r#"{"type":"container"}"#).expect("write");
    fs::write(p("empty.json"), "").expect("write");
    let sif = p("image.sif");
    let inspect = format!("inspect-metadata.json={}", s(&p("inspect.json")));
    let oci = format!("oci-config.json={}", s(&p("empty.json")));
    let output = sif_new(
        dir.path(),
        "arm64",
        &[
            "--json",
            &inspect,
            "--json",
            &oci,
            "--id",
            "28ccd578-99af-4460-a480-8ec6fa299570",
            "--time",
            "1795787187",
        ],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    assert_eq!(
        fs::metadata(&sif).expect("stat").permissions().mode() & 0o777,
        0o755
    );

    let listing = ok("siftool", &["list", s(&sif)]);
    assert_eq!(ok(WORKER, &["sif", "list", s(&sif)]), listing);
    let listing = String::from_utf8(listing).expect("UTF-8");
    assert!(
        listing.contains("|FS (Squashfs/*System/arm64)"),
        "{listing}"
    );
    assert_eq!(
        listing.lines().count(),
        6,
        "deffile, one JSON object, partition: {listing}"
    );
    let header = String::from_utf8(ok("siftool", &["header", s(&sif)])).expect("UTF-8");
    for line in [
        "Launch Script:        #!/usr/bin/env run-singularity",
        "Primary Architecture: arm64",
        "ID:                   28ccd578-99af-4460-a480-8ec6fa299570",
        "Created At:           2026-11-27 13:46:27 +0000 UTC",
    ] {
        assert!(header.contains(line), "{line:?} missing from\n{header}");
    }
    let info = String::from_utf8(ok("siftool", &["info", "2", s(&sif)])).expect("UTF-8");
    assert!(info.contains("inspect-metadata.json"), "{info}");

    assert_eq!(ok("siftool", &["dump", "3", s(&sif)]), partition);
    ok(
        WORKER,
        &["sif", "dump", "3", s(&sif), "-o", s(&p("out.squashfs"))],
    );
    assert_eq!(fs::read(p("out.squashfs")).expect("read"), partition);
    assert_eq!(
        ok(WORKER, &["sif", "dump", "1", s(&sif), "-o", "-"]),
        b"Bootstrap: scratch\n"
    );
}

#[test]
fn list_and_dump_match_siftool_on_siftool_images() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let sif = p("made-by-siftool.sif");
    let data = p("data.bin");
    fs::write(&data, vec![1u8; 5000]).expect("write");
    fs::write(p("sig.asc"), "-----BEGIN PGP SIGNED MESSAGE-----\n").expect("write");
    ok("siftool", &["new", s(&sif)]);
    for flags in [
        "--datatype 4 --parttype 2 --partfs 1 --partarch 11 --groupid 1",
        "--datatype 7 --filename raw.bin --alignment 512",
    ] {
        let mut args = vec!["add", s(&sif), s(&data)];
        args.extend(flags.split_whitespace());
        ok("siftool", &args);
    }
    ok(
        "siftool",
        &[
            "add",
            s(&sif),
            s(&p("sig.asc")),
            "--datatype",
            "5",
            "--signhash",
            "2",
            "--signentity",
            "433FE984155206BD962725E20E8713472A879943",
            "--link",
            "1",
        ],
    );
    assert_eq!(
        ok(WORKER, &["sif", "list", s(&sif)]),
        ok("siftool", &["list", s(&sif)])
    );
    for id in ["1", "2", "3"] {
        assert_eq!(
            ok(WORKER, &["sif", "dump", id, s(&sif), "-o", "-"]),
            ok("siftool", &["dump", id, s(&sif)]),
            "object {id}"
        );
    }
}

#[test]
fn bad_input_fails_with_a_message_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    fs::write(p("image.def"), "Bootstrap: scratch\n").expect("write");
    fs::write(p("rootfs.squashfs"), vec![0u8; 8192]).expect("write");
    let sif = p("image.sif");
    let new = |arch: &str| sif_new(dir.path(), arch, &[]);

    let output = new("sparc");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown architecture \"sparc\""));
    assert!(!sif.exists());

    assert!(new("amd64").status.success());
    let image = fs::read(&sif).expect("read");
    fs::write(p("truncated.sif"), &image[..image.len() - 1]).expect("write");
    let output = run(WORKER, &["sif", "list", s(&p("truncated.sif"))]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a valid SIF image"), "{stderr}");
    assert!(stderr.contains("ends past the end"), "{stderr}");

    let output = run(WORKER, &["sif", "dump", "9", s(&sif), "-o", s(&p("nine"))]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("has no object 9"));
    assert!(!p("nine").exists());
}
