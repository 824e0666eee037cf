//! `kiln_proto::sif` judged by the real `siftool` (sylabs/sif 2.8.3, the Go library Singularity
//! itself uses): our images must pass `siftool list/info/header/dump` with the partition dumped
//! byte for byte, images `siftool new/add/del` made must read back exactly as `siftool list`
//! shows them, and for the same inputs, UUID and time our writer must produce siftool's bytes.
//! `siftool` and `mksquashfs` are required; a missing tool fails the test.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_proto::sif::format::{DETERMINISTIC_TIME, SINGULARITY_LAUNCH_SCRIPT};
use kiln_proto::sif::{
    Arch, CreateOptions, Descriptor, Link, ObjectMetadata, SifReader, SiftoolList,
    write_singularity_image,
};

/// Runs `siftool args…` and returns its stdout, failing the test if it fails.
fn siftool(args: &[&str]) -> Vec<u8> {
    let output = Command::new("siftool")
        .args(args)
        .output()
        .expect("siftool must be installed (apt-get install siftool)");
    assert!(
        output.status.success(),
        "siftool {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `siftool add` flags for the objects `singularity build` writes (spec §7.2).
const DEFFILE_FLAGS: &str = "--datatype 1 --groupid 1";
const INSPECT_FLAGS: &str = "--datatype 6 --groupid 1 --filename inspect-metadata.json";
const PRIMARY_PARTITION_FLAGS: &str =
    "--datatype 4 --parttype 2 --partfs 1 --partarch 2 --groupid 1";

/// Runs `siftool add SIF OBJECT FLAGS…`, `flags` split on spaces.
fn siftool_add(sif: &Path, object: &Path, flags: &str) {
    let mut args = vec!["add", path_str(sif), path_str(object)];
    args.extend(flags.split_whitespace());
    siftool(&args);
}

fn siftool_text(args: &[&str]) -> String {
    String::from_utf8(siftool(args)).expect("siftool prints UTF-8")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A SquashFS of a small tree with a few MiB of incompressible data, so the partition is
/// copied in several pieces. Returns its path.
fn make_squashfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    fs::create_dir_all(root.join(".singularity.d")).expect("mkdir");
    fs::write(
        root.join(".singularity.d/runscript"),
        "#!/bin/sh\necho hi\n",
    )
    .expect("write");
    // xorshift: deterministic, incompressible enough that gzip keeps it large.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut blob = Vec::with_capacity(3 << 20);
    while blob.len() < 3 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        blob.extend_from_slice(&state.to_le_bytes());
    }
    fs::write(root.join("blob"), &blob).expect("write blob");
    let image = dir.join("rootfs.squashfs");
    let status = Command::new("mksquashfs")
        .arg(&root)
        .arg(&image)
        .args([
            "-noappend",
            "-comp",
            "gzip",
            "-all-root",
            "-quiet",
            "-no-progress",
        ])
        .status()
        .expect("mksquashfs must be installed (apt-get install squashfs-tools)");
    assert!(status.success(), "mksquashfs failed");
    image
}

const DEFFILE: &[u8] = b"Bootstrap: scratch\n\n%runscript\n    echo hi\n";
const INSPECT: &[u8] =
    br#"{"data":{"attributes":{"deffile":"Bootstrap: scratch"}},"type":"container"}"#;

/// Writes the `singularity build` object set with our writer.
fn write_ours(path: &Path, options: CreateOptions, squashfs: &Path) {
    let out = BufWriter::new(File::create(path).expect("create sif"));
    let partition = File::open(squashfs).expect("open squashfs");
    let mut out = write_singularity_image(
        out,
        options,
        DEFFILE,
        &[("inspect-metadata.json", INSPECT)],
        Arch::AMD64,
        partition,
    )
    .expect("write sif");
    out.flush().expect("flush");
}

fn read_image(path: &Path) -> SifReader<File> {
    SifReader::new(File::open(path).expect("open sif")).expect("our reader accepts the image")
}

/// The `Key: value` lines of `siftool info/header` output.
fn fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Checks `siftool info ID` against our descriptor, field by field.
fn assert_info_matches(sif: &Path, d: &Descriptor) {
    let info = fields(&siftool_text(&["info", &d.id.to_string(), path_str(sif)]));
    let id = d.id;
    assert_eq!(
        field(&info, "Data Type"),
        Some(d.data_type.label()),
        "object {id}"
    );
    assert_eq!(field(&info, "ID"), Some(id.to_string().as_str()));
    let group = d.group().map_or("NONE".to_owned(), |g| g.to_string());
    assert_eq!(
        field(&info, "Group ID"),
        Some(group.as_str()),
        "object {id}"
    );
    let link = match d.link() {
        Link::None => "NONE".to_owned(),
        Link::Object(target) => target.to_string(),
        Link::Group(group) => format!("{group} (G)"),
    };
    assert_eq!(
        field(&info, "Linked ID"),
        Some(link.as_str()),
        "object {id}"
    );
    assert_eq!(field(&info, "Offset"), Some(d.offset.to_string().as_str()));
    assert_eq!(field(&info, "Size"), Some(d.size.to_string().as_str()));
    let name = String::from_utf8_lossy(d.name());
    assert_eq!(field(&info, "Name"), (!name.is_empty()).then_some(&*name));
    match d.metadata() {
        ObjectMetadata::Partition {
            fs_type,
            part_type,
            arch,
        } => {
            assert_eq!(field(&info, "Filesystem Type"), Some(fs_type.label()));
            assert_eq!(field(&info, "Partition Type"), Some(part_type.label()));
            assert_eq!(field(&info, "Architecture"), Some(arch.go_arch()));
        }
        ObjectMetadata::Signature { hash_type, .. } => {
            assert_eq!(field(&info, "Hash Type"), Some(hash_type.label()));
            let entity = d
                .metadata()
                .fingerprint()
                .map(|fp| fp.iter().map(|b| format!("{b:02X}")).collect::<String>());
            assert_eq!(field(&info, "Entity"), entity.as_deref());
        }
        _ => {}
    }
}

#[test]
fn siftool_accepts_our_images_and_dumps_the_partition_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let squashfs = make_squashfs(dir.path());
    let sif = dir.path().join("ours.sif");
    let id = *b"\x28\xcc\xd5\x78\x99\xaf\x44\x60\xa4\x80\x8e\xc6\xfa\x29\x95\x70";
    write_ours(
        &sif,
        CreateOptions {
            id,
            time: 1_795_787_187,
            ..CreateOptions::default()
        },
        &squashfs,
    );

    let header = fields(&siftool_text(&["header", path_str(&sif)]));
    assert_eq!(
        field(&header, "Launch Script"),
        Some(SINGULARITY_LAUNCH_SCRIPT.trim_end())
    );
    assert_eq!(field(&header, "Version"), Some("01"));
    assert_eq!(field(&header, "Primary Architecture"), Some("amd64"));
    assert_eq!(
        field(&header, "ID"),
        Some("28ccd578-99af-4460-a480-8ec6fa299570")
    );
    assert_eq!(
        field(&header, "Created At"),
        Some("2026-11-27 13:46:27 +0000 UTC")
    );
    assert_eq!(field(&header, "Descriptors Free"), Some("45"));
    assert_eq!(field(&header, "Descriptors Total"), Some("48"));
    assert_eq!(field(&header, "Data Offset"), Some("32176"));

    let mut reader = read_image(&sif);
    assert_eq!(
        siftool_text(&["list", path_str(&sif)]),
        SiftoolList(reader.objects()).to_string()
    );
    let objects = reader.objects().to_vec();
    assert_eq!(objects.len(), 3);
    for d in &objects {
        assert_info_matches(&sif, d);
    }
    assert_eq!(objects[2].offset % 4096, 0, "partition is 4 KiB aligned");

    let squashfs_bytes = fs::read(&squashfs).expect("read squashfs");
    assert!(
        squashfs_bytes.len() > 2 << 20,
        "partition spans copy pieces"
    );
    assert_eq!(siftool(&["dump", "3", path_str(&sif)]), squashfs_bytes);
    assert_eq!(siftool(&["dump", "1", path_str(&sif)]), DEFFILE);
    assert_eq!(siftool(&["dump", "2", path_str(&sif)]), INSPECT);
    let mut copied = Vec::new();
    reader.copy_object(3, &mut copied).expect("copy partition");
    assert_eq!(copied, squashfs_bytes);
}

#[test]
fn deterministic_images_show_no_time_or_id_in_siftool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let squashfs = make_squashfs(dir.path());
    let (a, b) = (dir.path().join("a.sif"), dir.path().join("b.sif"));
    write_ours(&a, CreateOptions::default(), &squashfs);
    write_ours(&b, CreateOptions::default(), &squashfs);
    assert_eq!(fs::read(&a).expect("a"), fs::read(&b).expect("b"));
    let header = siftool_text(&["header", path_str(&a)]);
    assert!(!header.contains("Created At"), "{header}");
    assert!(!header.contains("ID:"), "{header}");
    let info = siftool_text(&["info", "3", path_str(&a)]);
    assert!(!info.contains("Created At"), "{info}");
    assert_eq!(read_image(&a).header().created_at, DETERMINISTIC_TIME);
}

#[test]
fn our_reader_lists_siftool_images_as_siftool_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    fs::write(p("d.def"), DEFFILE).expect("write");
    fs::write(p("m.json"), INSPECT).expect("write");
    fs::write(p("part.bin"), vec![0x5a; 10_000]).expect("write");
    fs::write(p("empty"), b"").expect("write");
    let sif = p("siftool.sif");
    let s = path_str(&sif);
    siftool(&["new", s]);
    let adds = [
        ("d.def", DEFFILE_FLAGS),
        ("m.json", INSPECT_FLAGS),
        ("part.bin", PRIMARY_PARTITION_FLAGS),
        ("empty", "--datatype 7"),
        (
            "m.json",
            "--datatype 5 --signhash 1 --signentity 12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84 --link 1",
        ),
        ("m.json", "--datatype 9 --sbomformat spdx-json --link 3"),
        ("m.json", "--datatype 8 --groupid 2 --filename message"),
        ("d.def", "--datatype 3 --alignment 64 --groupid 2"),
        (
            "part.bin",
            "--datatype 4 --parttype 3 --partfs 4 --partarch 4 --groupid 3",
        ),
        ("d.def", "--datatype 2 --groupid 3"),
    ];
    for (object, flags) in adds {
        siftool_add(&sif, &p(object), flags);
    }
    // A deleted object leaves an unused slot between used ones, and a hole in the data.
    siftool(&["del", "2", s]);
    siftool_add(&sif, &p("m.json"), "--datatype 6 --filename again.json");

    let mut reader = read_image(&sif);
    assert_eq!(
        siftool_text(&["list", s]),
        SiftoolList(reader.objects()).to_string()
    );
    let objects = reader.objects().to_vec();
    assert_eq!(objects.len(), 10);
    for d in &objects {
        assert_info_matches(&sif, d);
        let id = d.id.to_string();
        assert_eq!(
            siftool(&["dump", &id, s]),
            reader.read_object(d.id, 1 << 20).expect("read object"),
            "object {id}"
        );
    }
    let header = fields(&siftool_text(&["header", s]));
    assert_eq!(
        field(&header, "ID"),
        Some(reader.header().id_string().as_str())
    );
    assert_eq!(field(&header, "Primary Architecture"), Some("amd64"));
    assert_eq!(reader.primary_partition().map(|d| d.id), Some(3));
}

#[test]
fn our_writer_reproduces_siftool_byte_for_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let squashfs = make_squashfs(dir.path());
    let p = |name: &str| dir.path().join(name);
    fs::write(p("d.def"), DEFFILE).expect("write");
    fs::write(p("inspect-metadata.json"), INSPECT).expect("write");
    // siftool stamps each `add` with the current second; retry if a second boundary fell between
    // them, so that one time describes the whole image (spec §7.3).
    for attempt in 0.. {
        let reference = p(&format!("siftool-{attempt}.sif"));
        let s = path_str(&reference);
        siftool(&["new", s]);
        siftool_add(&reference, &p("d.def"), DEFFILE_FLAGS);
        siftool_add(&reference, &p("inspect-metadata.json"), INSPECT_FLAGS);
        siftool_add(&reference, &squashfs, PRIMARY_PARTITION_FLAGS);
        let theirs = read_image(&reference);
        let header = theirs.header().clone();
        let one_time = header.modified_at == header.created_at
            && theirs
                .objects()
                .iter()
                .all(|d| d.created_at == header.created_at);
        if !one_time {
            assert!(
                attempt < 5,
                "siftool never wrote an image within one second"
            );
            continue;
        }
        let ours = p("ours.sif");
        write_ours(
            &ours,
            CreateOptions {
                launch_script: Vec::new(),
                id: header.id,
                time: header.created_at,
                ..CreateOptions::default()
            },
            &squashfs,
        );
        let (ours, theirs) = (
            fs::read(&ours).expect("ours"),
            fs::read(&reference).expect("theirs"),
        );
        assert_eq!(ours.len(), theirs.len());
        let first_difference = ours.iter().zip(&theirs).position(|(a, b)| a != b);
        assert_eq!(first_difference, None, "images differ");
        break;
    }
}
