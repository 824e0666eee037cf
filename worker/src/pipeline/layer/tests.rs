//! Layer application against hand-made tarballs, hostile ones included.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

use super::test_tar::{MTIME, Tar};

/// A temp dir holding `root/` (the rootfs) next to `outside/` (which must stay untouched).
struct Scene {
    tmp: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("root")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/passwd"), b"host").unwrap();
        Self { tmp }
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
    fn applier(&self, ownership: OwnershipMode) -> LayerApplier {
        LayerApplier::open(&self.root(), ApplyOptions::new(ownership)).unwrap()
    }
    /// Everything under `outside/`, to compare before and after.
    fn outside_listing(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.outside()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let meta = fs::symlink_metadata(&p).unwrap();
                if meta.is_dir() {
                    stack.push(p.clone());
                    out.push((p, Vec::new()));
                } else {
                    out.push((p.clone(), fs::read(&p).unwrap_or_default()));
                }
            }
        }
        out.sort();
        out
    }
}

fn is_root() -> bool {
    Uid::effective().is_root()
}

#[test]
fn record_mode_keeps_modes_and_owners_in_records_and_files_workable() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let tar = Tar::default()
        .dir("etc/", 0o755, (0, 0))
        .file("etc/shadow", b"secret", 0o000, (0, 42))
        .dir("home/user/", 0o500, (1000, 1000))
        .file("home/user/notes", b"hi", 0o640, (1000, 1000))
        .file("bin/su", b"elf", 0o4755, (0, 0))
        .symlink("bin/sh", "busybox")
        .finish();
    let stats = a.apply_tar(&tar[..]).unwrap();
    assert_eq!(stats.entries, 6);
    assert_eq!(stats.bytes, 11);

    let root = s.root();
    // On disk: readable by the worker whatever the layer said.
    assert_eq!(fs::read(root.join("etc/shadow")).unwrap(), b"secret");
    assert_eq!(
        fs::metadata(root.join("etc/shadow")).unwrap().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        fs::metadata(root.join("home/user")).unwrap().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );

    let r = a.records();
    let meta = |p: &str| r.get(Path::new(p)).and_then(|e| e.meta).unwrap();
    assert_eq!(
        meta("etc/shadow"),
        EntryMeta {
            uid: 0,
            gid: 42,
            mode: 0
        }
    );
    assert_eq!(
        meta("home/user"),
        EntryMeta {
            uid: 1000,
            gid: 1000,
            mode: 0o500
        }
    );
    assert_eq!(meta("bin/su").mode, 0o4755);
    // `home` and `bin` were never listed: tar's implicit parents, root-owned 0755.
    assert_eq!(
        meta("home"),
        EntryMeta {
            uid: 0,
            gid: 0,
            mode: 0o755
        }
    );
    assert_eq!(
        meta("bin"),
        EntryMeta {
            uid: 0,
            gid: 0,
            mode: 0o755
        }
    );
}

#[test]
fn apply_mode_sets_owners_and_exact_modes() {
    if !is_root() {
        eprintln!("skipped: apply mode needs root (or a mapped user namespace)");
        return;
    }
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Apply);
    let tar = Tar::default()
        .dir("srv/", 0o1777, (0, 0))
        .file("srv/tool", b"x", 0o2751, (12, 34))
        .symlink("srv/link", "tool")
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    let root = s.root();
    let tool = fs::metadata(root.join("srv/tool")).unwrap();
    assert_eq!(
        (tool.uid(), tool.gid(), tool.mode() & 0o7777),
        (12, 34, 0o2751)
    );
    assert_eq!(tool.mtime(), MTIME as i64);
    assert_eq!(
        fs::metadata(root.join("srv")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert_eq!(
        fs::metadata(root.join("srv")).unwrap().mtime(),
        MTIME as i64
    );
    assert!(
        a.records().is_empty(),
        "apply mode records nothing for plain entries"
    );
}

#[test]
fn whiteouts_remove_lower_entries_but_not_the_same_layer() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let lower = Tar::default()
        .file("a/gone", b"1", 0o644, (0, 0))
        .file("a/dir/deep", b"1", 0o644, (0, 0))
        .file("a/kept", b"1", 0o644, (0, 0))
        .finish();
    a.apply_tar(&lower[..]).unwrap();
    let upper = Tar::default()
        .whiteout("a/.wh.gone")
        .whiteout("a/.wh.dir")
        .file("a/new", b"2", 0o644, (0, 0))
        .whiteout("a/.wh.new")
        .whiteout("a/.wh.never-existed")
        .finish();
    let stats = a.apply_tar(&upper[..]).unwrap();
    assert_eq!(stats.whiteouts, 4);
    let root = s.root();
    assert!(!root.join("a/gone").exists());
    assert!(!root.join("a/dir").exists());
    assert!(root.join("a/kept").exists());
    assert!(
        root.join("a/new").exists(),
        "a whiteout only hides lower layers"
    );
    assert!(
        !root.join("a/.wh.gone").exists(),
        "whiteout files never appear"
    );
    assert!(a.records().get(Path::new("a/dir/deep")).is_none());
    assert!(a.records().get(Path::new("a/kept")).is_some());
}

#[test]
fn aufs_metadata_is_not_extracted() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let tar = Tar::default()
        .file("keep", b"1", 0o644, (0, 0))
        .dir(".wh..wh.plnk/", 0o700, (0, 0))
        .file(".wh..wh.plnk/123.456", b"link store", 0o644, (0, 0))
        .file("etc/.wh..wh.aufs", b"", 0o644, (0, 0))
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    let mut names: Vec<_> = fs::read_dir(s.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["keep"]);
}

#[test]
fn opaque_marker_hides_lower_contents_wherever_it_sits() {
    for marker_first in [true, false] {
        let s = Scene::new();
        let mut a = s.applier(OwnershipMode::Record);
        let lower = Tar::default()
            .file("d/old", b"1", 0o644, (0, 0))
            .file("d/sub/old", b"1", 0o644, (0, 0))
            .file("other/stay", b"1", 0o644, (0, 0))
            .finish();
        a.apply_tar(&lower[..]).unwrap();
        let mut upper = Tar::default();
        upper.dir("d/", 0o755, (0, 0));
        if marker_first {
            upper.whiteout("d/.wh..wh..opq");
        }
        upper.file("d/sub/new", b"2", 0o644, (0, 0));
        if !marker_first {
            upper.whiteout("d/.wh..wh..opq");
        }
        let upper = upper.finish();
        a.apply_tar(&upper[..]).unwrap();
        let root = s.root();
        assert!(!root.join("d/old").exists(), "marker_first={marker_first}");
        assert!(
            !root.join("d/sub/old").exists(),
            "marker_first={marker_first}"
        );
        assert!(
            root.join("d/sub/new").exists(),
            "marker_first={marker_first}"
        );
        assert!(root.join("other/stay").exists());
        assert!(!root.join("d/.wh..wh..opq").exists());
        assert!(a.records().get(Path::new("d/sub/old")).is_none());
        assert!(a.records().get(Path::new("d/sub/new")).is_some());
    }
}

#[test]
fn hard_links_share_the_inode_and_must_stay_inside() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let tar = Tar::default()
        .file("bin/busybox", b"elf", 0o755, (0, 0))
        .hardlink("bin/ls", "bin/busybox")
        .hardlink("bin/cat", "./bin/busybox")
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    let root = s.root();
    let ino = |p: &str| fs::metadata(root.join(p)).unwrap().ino();
    assert_eq!(ino("bin/ls"), ino("bin/busybox"));
    assert_eq!(ino("bin/cat"), ino("bin/busybox"));
    assert_eq!(
        a.records()
            .get(Path::new("bin/ls"))
            .unwrap()
            .meta
            .unwrap()
            .mode,
        0o755
    );

    // An absolute or climbing target names the rootfs's /outside/passwd, which is not there.
    let abs = format!("{}/passwd", s.outside().display());
    for target in [
        abs.as_str(),
        "../outside/passwd",
        "../../../../outside/passwd",
    ] {
        let tar = Tar::default().hardlink("bin/pw", target).finish();
        let err = a.apply_tar(&tar[..]).unwrap_err();
        assert!(
            matches!(err, LayerError::LinkTargetMissing { .. }),
            "{target}: {err}"
        );
    }
    assert_eq!(fs::metadata(s.outside().join("passwd")).unwrap().nlink(), 1);
}

#[test]
fn hostile_layers_write_nothing_outside_the_rootfs() {
    let s = Scene::new();
    let before = s.outside_listing();
    let outside = s.outside().display().to_string();
    let mut a = s.applier(OwnershipMode::Record);

    // CVE-2021-29136 shape: a symlink to a host path, then entries through it.
    let tar = Tar::default()
        .symlink("etc", &outside)
        .file("etc/passwd", b"pwned", 0o644, (0, 0))
        .symlink("up", "../../../../../../..")
        .file(&format!("up{outside}/passwd2"), b"pwned", 0o644, (0, 0))
        .dir("tmp/", 0o1777, (0, 0))
        .symlink("tmp/abs", "/")
        .file(
            &format!("tmp/abs{outside}/passwd3"),
            b"pwned",
            0o644,
            (0, 0),
        )
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    assert_eq!(s.outside_listing(), before);
    // The writes landed where the container would see them: inside the root.
    let inside = s.root().join(outside.trim_start_matches('/'));
    assert_eq!(fs::read(inside.join("passwd")).unwrap(), b"pwned");
    assert_eq!(fs::read(inside.join("passwd2")).unwrap(), b"pwned");
    assert_eq!(fs::read(inside.join("passwd3")).unwrap(), b"pwned");

    // A later layer replacing the symlink with a file must not write through it.
    let tar = Tar::default().file("etc", b"plain", 0o644, (0, 0)).finish();
    a.apply_tar(&tar[..]).unwrap();
    assert_eq!(fs::read(s.root().join("etc")).unwrap(), b"plain");

    // `..` names stay inside, as umoci keeps them.
    let tar = Tar::default()
        .file("../escape", b"1", 0o644, (0, 0))
        .file("a/../../../outside/escape", b"2", 0o644, (0, 0))
        .finish();
    let stats = a.apply_tar(&tar[..]).unwrap();
    assert_eq!(stats.contained, 2);
    assert_eq!(fs::read(s.root().join("escape")).unwrap(), b"1");
    assert_eq!(fs::read(s.root().join("outside/escape")).unwrap(), b"2");

    for (tar, what) in [
        (Tar::default().symlink(".", "/").finish(), "dot symlink"),
        (
            Tar::default().symlink("./", &outside).finish(),
            "root symlink",
        ),
        (
            Tar::default().symlink("..", &outside).finish(),
            "dotdot symlink",
        ),
        (
            Tar::default().whiteout(".wh..").finish(),
            "whiteout of dotdot",
        ),
    ] {
        let err = a.apply_tar(&tar[..]).unwrap_err();
        assert!(
            matches!(
                err,
                LayerError::ReplaceRoot { .. } | LayerError::BadWhiteout { .. }
            ),
            "{what}: {err}"
        );
    }
    assert_eq!(s.outside_listing(), before);
    assert!(s.root().is_dir());
    assert!(
        !fs::symlink_metadata(s.root())
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn devices_are_recorded_not_created_and_follow_whiteouts() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Apply);
    let tar = Tar::default()
        .dir("dev/", 0o755, (0, 0))
        .device("dev/null", EntryType::Char, 1, 3)
        .device("dev/sda", EntryType::Block, 8, 0)
        .finish();
    // Apply mode with root ids only: works as root; as non-root the dir chown fails first.
    if !is_root() {
        a = s.applier(OwnershipMode::Record);
    }
    a.apply_tar(&tar[..]).unwrap();
    assert!(fs::symlink_metadata(s.root().join("dev/null")).is_err());
    let devices: Vec<_> = a
        .records()
        .devices()
        .map(|(p, d, m)| (p.to_path_buf(), *d, m.map(|m| (m.gid, m.mode))))
        .collect();
    assert_eq!(
        devices,
        vec![
            (
                PathBuf::from("dev/null"),
                DeviceNode {
                    kind: DeviceKind::Char,
                    major: 1,
                    minor: 3
                },
                Some((5, 0o620))
            ),
            (
                PathBuf::from("dev/sda"),
                DeviceNode {
                    kind: DeviceKind::Block,
                    major: 8,
                    minor: 0
                },
                Some((5, 0o620))
            ),
        ]
    );
    let tar = Tar::default().whiteout("dev/.wh.sda").finish();
    a.apply_tar(&tar[..]).unwrap();
    assert_eq!(a.records().devices().count(), 1);
}

#[test]
fn replacing_entries_follow_tar_semantics() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let lower = Tar::default()
        .file("x/keep", b"1", 0o644, (0, 0))
        .file("f", b"1", 0o644, (0, 0))
        .dir("d/", 0o755, (0, 0))
        .file("d/child", b"1", 0o644, (0, 0))
        .finish();
    a.apply_tar(&lower[..]).unwrap();
    let upper = Tar::default()
        .dir("x/", 0o711, (5, 5))
        .dir("f/", 0o755, (0, 0))
        .file("d", b"now a file", 0o644, (0, 0))
        .finish();
    a.apply_tar(&upper[..]).unwrap();
    let root = s.root();
    assert!(root.join("x/keep").exists(), "dir over dir keeps contents");
    assert_eq!(
        a.records().get(Path::new("x")).unwrap().meta.unwrap().mode,
        0o711
    );
    assert!(root.join("f").is_dir());
    assert_eq!(fs::read(root.join("d")).unwrap(), b"now a file");
    assert!(a.records().get(Path::new("d/child")).is_none());
}

#[test]
fn symlinked_parents_resolve_to_physical_paths_in_records() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let tar = Tar::default()
        .dir("usr/lib/", 0o755, (0, 0))
        .symlink("lib", "usr/lib")
        .file("lib/libc.so", b"elf", 0o755, (0, 0))
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    assert!(s.root().join("usr/lib/libc.so").is_file());
    assert!(a.records().get(Path::new("usr/lib/libc.so")).is_some());
    assert!(a.records().get(Path::new("lib/libc.so")).is_none());
}

#[test]
fn bounds_stop_oversized_layers() {
    let s = Scene::new();
    let mut options = ApplyOptions::new(OwnershipMode::Record);
    options.max_bytes = 10;
    let mut a = LayerApplier::open(&s.root(), options).unwrap();
    let tar = Tar::default()
        .file("big", &[7u8; 11], 0o644, (0, 0))
        .finish();
    let err = a.apply_tar(&tar[..]).unwrap_err();
    assert!(matches!(err, LayerError::TooLarge { limit: 10 }), "{err}");
    assert!(
        !s.root().join("big").exists(),
        "nothing written past the bound"
    );

    let mut options = ApplyOptions::new(OwnershipMode::Record);
    options.max_entries = 3;
    let mut a = LayerApplier::open(&s.root(), options).unwrap();
    let tar = Tar::default()
        .file("1", b"", 0o644, (0, 0))
        .file("2", b"", 0o644, (0, 0))
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    let tar = Tar::default()
        .file("3", b"", 0o644, (0, 0))
        .file("4", b"", 0o644, (0, 0))
        .finish();
    let err = a.apply_tar(&tar[..]).unwrap_err();
    assert!(
        matches!(err, LayerError::TooManyEntries { limit: 3 }),
        "{err}"
    );
}

#[test]
fn compressed_blobs_are_applied() {
    use std::io::Write as _;
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let tar = Tar::default().file("gz", b"gzip", 0o644, (0, 0)).finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let stats = a.apply_blob(&gz.finish().unwrap()[..]).unwrap();
    assert_eq!(stats.compression, Compression::Gzip);
    let tar = Tar::default().file("zst", b"zstd", 0o644, (0, 0)).finish();
    let stats = a
        .apply_blob(&zstd::encode_all(&tar[..], 3).unwrap()[..])
        .unwrap();
    assert_eq!(stats.compression, Compression::Zstd);
    assert_eq!(fs::read(s.root().join("gz")).unwrap(), b"gzip");
    assert_eq!(fs::read(s.root().join("zst")).unwrap(), b"zstd");
}

#[test]
fn garbage_is_a_clean_error() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let err = a.apply_blob(&[0x1f, 0x8b, 1, 2, 3][..]).unwrap_err();
    assert!(matches!(err, LayerError::ReadArchive(_)), "{err}");
    let mut junk = vec![b'x'; 512];
    junk.extend([0u8; 1024]);
    let err = a.apply_tar(&junk[..]).unwrap_err();
    assert!(matches!(err, LayerError::ReadArchive(_)), "{err}");
}

#[test]
fn fs_permissions_let_record_mode_reapply_over_read_only_dirs() {
    let s = Scene::new();
    let mut a = s.applier(OwnershipMode::Record);
    let tar = Tar::default()
        .dir("ro/", 0o555, (0, 0))
        .file("ro/f", b"1", 0o444, (0, 0))
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    let tar = Tar::default()
        .file("ro/f", b"2", 0o444, (0, 0))
        .whiteout("ro/.wh.g")
        .finish();
    a.apply_tar(&tar[..]).unwrap();
    assert_eq!(fs::read(s.root().join("ro/f")).unwrap(), b"2");
    let mode = fs::metadata(s.root().join("ro"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o700, 0o700);
}
