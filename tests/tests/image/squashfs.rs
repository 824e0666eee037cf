//! `kiln_worker::image` applies pulled layers straight into a SquashFS image. For `layers` the
//! image must list and restore what umoci unpacks from the same layout; for `evil` every name
//! must land inside the image, as umoci keeps it, and the host stay untouched.

use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_tests::command::run_stdout;
use kiln_tests::fixtures::{EVIL_HOST_PATHS, Fixture};
use kiln_worker::image::tree::Meta;
use kiln_worker::image::{SquashfsOptions, Tree, apply_layer, write_squashfs};

use crate::helper::{is_root, layer_blobs, pull, registry, temp_dir, unpack};

/// `unsquashfs -lln` without the root line; times of directories no layer names (created as
/// parents) masked, since umoci stamps them with the unpack time and Kiln with 0.
fn listing(image: &Path, implicit: &[String]) -> String {
    let out = run_stdout(Command::new("unsquashfs").arg("-lln").arg(image))
        .expect("unsquashfs -lln failed");
    out.lines()
        .skip(1)
        .map(
            |l| match implicit.iter().find(|p| l.ends_with(&format!(" {p}"))) {
                Some(p) => format!("{} <parent> {p}", &l[..l.len() - p.len() - 18]),
                None => l.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn layers_fixture_becomes_the_image_umoci_unpacks() {
    if !is_root() {
        eprintln!("skipped: umoci keeps owners and device nodes only as root");
        return;
    }
    let registry = registry();
    let dir = temp_dir();
    let layout = pull(&registry, Fixture::Layers, dir.path(), None);

    let mut tree = Tree::new(Meta::implicit_dir());
    for blob in layer_blobs(&layout) {
        apply_layer(&mut tree, &blob).expect("a layer of the fixture was refused");
    }
    let ours = dir.path().join("ours.sqfs");
    let file = fs::File::create(&ours).unwrap();
    write_squashfs(
        &tree,
        &file,
        &SquashfsOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();

    let rootfs = unpack(&layout, dir.path(), false);
    let reference = dir.path().join("ref.sqfs");
    run_stdout(
        Command::new("mksquashfs")
            .arg(&rootfs)
            .arg(&reference)
            .args(["-noappend", "-quiet", "-no-progress"]),
    )
    .expect("mksquashfs failed");

    let raw = run_stdout(Command::new("unsquashfs").arg("-lln").arg(&ours)).unwrap();
    let implicit: Vec<String> = raw
        .lines()
        .skip(1)
        .filter(|l| l.contains(" 1970-01-01 00:00 squashfs-root/"))
        .filter_map(|l| l.split(" 1970-01-01 00:00 ").nth(1).map(str::to_owned))
        .filter(|p| !p.contains(" -> "))
        .collect();
    assert_eq!(listing(&ours, &implicit), listing(&reference, &implicit));
    for expected in ["squashfs-root/data", "squashfs-root/bin/busybox"] {
        assert!(raw.contains(expected), "{expected} missing:\n{raw}");
    }

    // Same bytes as the extraction, file by file.
    let out = dir.path().join("out");
    run_stdout(Command::new("unsquashfs").arg("-d").arg(&out).arg(&ours))
        .expect("unsquashfs -d failed");
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&out)
        .arg(&rootfs)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&diff.stdout);
    let real: Vec<&str> = report
        .lines()
        .filter(|l| !l.contains(" is a fifo while "))
        .collect();
    assert!(real.is_empty(), "contents differ:\n{}", real.join("\n"));
}

#[test]
fn evil_fixture_lands_inside_the_image_and_the_host_untouched() {
    let registry = registry();
    let dir = temp_dir();
    let layout = pull(&registry, Fixture::Evil, dir.path(), None);
    let mut tree = Tree::new(Meta::implicit_dir());
    for blob in layer_blobs(&layout) {
        apply_layer(&mut tree, &blob).expect("the evil layers stay inside the image");
    }
    let image = dir.path().join("evil.sqfs");
    let file = fs::File::create(&image).unwrap();
    write_squashfs(&tree, &file, &SquashfsOptions::default()).unwrap();
    let list = listing(&image, &[]);
    // `../` and `/` names are resolved lexically inside the root, as umoci resolves them.
    for inside in ["tmp/kiln-evil-dotdot", "tmp/kiln-evil-absolute"] {
        assert!(
            list.contains(&format!("squashfs-root/{inside}")),
            "{inside} not inside the image:\n{list}"
        );
    }
    for host_path in EVIL_HOST_PATHS {
        assert!(
            !Path::new(host_path).exists(),
            "{host_path} escaped onto the host"
        );
    }
}
