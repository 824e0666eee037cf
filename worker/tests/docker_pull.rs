//! The `docker` bootstrap agent against a real registry: pull, cache, apply.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_worker::pipeline::cache::{CacheOptions, LayerCache};
use kiln_worker::pipeline::digest::Digest;
use kiln_worker::pipeline::docker::{
    Bootstrap, Credentials, Platform, PullError, PullOptions, RetryPolicy, bootstrap, docker_reference,
};
use kiln_worker::pipeline::layer::{ApplyOptions, DeviceKind, LayerError, OwnershipMode};
use kiln_worker::pipeline::progress::Progress;
use support::{Layout, Registry, Tar};

/// Collects log lines and the largest byte count seen per blob.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
    bytes: Mutex<Vec<(String, u64, u64)>>,
}

impl Progress for Recorder {
    fn log(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_owned());
    }
    fn blob_bytes(&self, digest: &Digest, done: u64, total: u64) {
        self.bytes.lock().unwrap().push((digest.to_string(), done, total));
    }
}

struct Env {
    tmp: tempfile::TempDir,
    cache: LayerCache,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&CacheOptions::new(tmp.path().join("cache"), 1 << 30)).unwrap();
        Self { tmp, cache }
    }
    fn rootfs(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

fn options(arch: &str) -> PullOptions {
    let mut o = PullOptions::new(Platform::from_arch(arch).unwrap());
    o.retry = RetryPolicy {
        attempts: 2,
        first_delay: Duration::from_millis(50),
    };
    o
}

async fn run(
    env: &Env,
    reference: &str,
    opts: &PullOptions,
    rootfs: &Path,
    ownership: OwnershipMode,
) -> (Result<Bootstrap, PullError>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let reference = docker_reference(reference, None, None).unwrap();
    let result = bootstrap(
        &reference,
        opts,
        &env.cache,
        rootfs.to_path_buf(),
        ApplyOptions::new(ownership),
        recorder.clone(),
    )
    .await;
    (result, recorder)
}

/// The error as the worker's binary prints it: the whole chain on one line.
fn one_line(err: PullError) -> String {
    let line = format!("{:#}", anyhow::Error::from(err));
    assert!(!line.contains('\n'), "error spans lines: {line}");
    line
}

/// `layers`: three layers (gzip, zstd, plain) with modes, owners, links, a device and
/// whiteouts.
fn push_layers(registry: &Registry, dir: &Path) {
    let mut layout = Layout::new(dir);
    let l1 = Tar::default()
        .dir("bin/", 0o755, (0, 0))
        .file("bin/busybox", b"#!/bin/sh\necho busybox\n", 0o755, (0, 0))
        .hardlink("bin/ls", "bin/busybox")
        .symlink("bin/sh", "busybox")
        .file("bin/su", b"su", 0o4755, (0, 0))
        .dir("etc/", 0o755, (0, 0))
        .file("etc/shadow", b"root:*:", 0o640, (0, 42))
        .file("etc/obsolete", b"old", 0o644, (0, 0))
        .dir("home/alice/", 0o700, (1000, 1000))
        .file("home/alice/.profile", b"export A=1\n", 0o600, (1000, 1000))
        .dir("opt/app/", 0o755, (0, 0))
        .file("opt/app/old-1", b"1", 0o644, (0, 0))
        .dir("opt/app/sub/", 0o755, (0, 0))
        .file("opt/app/sub/old-2", b"2", 0o644, (0, 0))
        .dir("dev/", 0o755, (0, 0))
        .device("dev/null", tar::EntryType::Char, 1, 3)
        .dir("tmp/", 0o1777, (0, 0))
        .finish();
    let l2 = Tar::default()
        .file("etc/.wh.obsolete", b"", 0o644, (0, 0))
        .dir("opt/app/", 0o750, (0, 7))
        .file("opt/app/.wh..wh..opq", b"", 0o644, (0, 0))
        .file("opt/app/new", b"new", 0o644, (0, 0))
        .finish();
    let l3 = Tar::default()
        .file("etc/motd", b"hello\n", 0o644, (0, 0))
        .file("home/alice/.wh..profile", b"", 0o644, (0, 0))
        .finish();
    let layers = [layout.gzip_layer(&l1), layout.zstd_layer(&l2), layout.plain_layer(&l3)];
    let image = layout.image(
        "amd64",
        &layers,
        serde_json::json!({
            "Env": ["PATH=/bin", "GREETING=hi there"],
            "Entrypoint": ["/bin/sh"],
            "Cmd": ["-c", "echo hi"],
            "WorkingDir": "/opt/app",
            "Labels": {"org.example.fixture": "layers"},
        }),
    );
    layout.tag("latest", image);
    registry.push(dir, "latest", "layers", None);
}

/// `multi`: an index with amd64, arm/v7 and arm64 images, each naming its platform.
fn push_multi(registry: &Registry, dir: &Path) {
    let mut layout = Layout::new(dir);
    let mut entries = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm", Some("v7")), ("arm64", Some("v8"))] {
        let name = variant.map_or(arch.to_owned(), |v| format!("{arch}/{v}"));
        let tar = Tar::default().file("platform", name.as_bytes(), 0o644, (0, 0)).finish();
        let layer = layout.gzip_layer(&tar);
        let mut image_config = serde_json::json!({"Cmd": ["/bin/sh"]});
        image_config["Labels"] = serde_json::json!({"platform": name});
        let image = layout.image(arch, &[layer], image_config);
        entries.push((image, arch, variant));
    }
    let index = layout.index(&entries);
    layout.tag("latest", index);
    registry.push(dir, "latest", "multi", None);
}

#[tokio::test]
async fn layers_image_converts_with_every_property_in_record_mode() {
    let registry = Registry::start(None);
    let env = Env::new();
    push_layers(&registry, &env.tmp.path().join("layout"));
    convert_layers_in_record_mode(&env, &registry.addr).await;
}

/// The same conversion as a plain unprivileged user (no user namespace): as root, this test
/// starts the registry and re-runs itself as `nobody` through `setpriv`.
#[tokio::test]
async fn layers_image_converts_as_an_unprivileged_user() {
    const INNER: &str = "KILN_TEST_UNPRIVILEGED_REGISTRY";
    if let Ok(addr) = std::env::var(INNER) {
        assert!(!nix::unistd::Uid::effective().is_root());
        let env = Env::new();
        let rootfs = convert_layers_in_record_mode(&env, &addr).await;
        let me = nix::unistd::Uid::effective().as_raw();
        assert_eq!(std::fs::metadata(rootfs.join("etc/shadow")).unwrap().uid(), me);
        return;
    }
    let registry = Registry::start(None);
    let env = Env::new();
    push_layers(&registry, &env.tmp.path().join("layout"));
    if !nix::unistd::Uid::effective().is_root() {
        convert_layers_in_record_mode(&env, &registry.addr).await;
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "layers_image_converts_as_an_unprivileged_user", "--nocapture"])
        .env(INNER, &registry.addr)
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "unprivileged run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pulls `layers` from `addr` in record mode and checks every fixture property.
async fn convert_layers_in_record_mode(env: &Env, addr: &str) -> PathBuf {
    let rootfs = env.rootfs("rootfs");
    let (result, recorder) = run(
        env,
        &format!("{addr}/layers:latest"),
        &options("amd64"),
        &rootfs,
        OwnershipMode::Record,
    )
    .await;
    let boot = result.unwrap();

    // Whiteouts and the opaque directory.
    assert!(!rootfs.join("etc/obsolete").exists());
    assert!(!rootfs.join("home/alice/.profile").exists());
    assert!(!rootfs.join("opt/app/old-1").exists());
    assert!(!rootfs.join("opt/app/sub").exists());
    assert_eq!(std::fs::read(rootfs.join("opt/app/new")).unwrap(), b"new");
    assert_eq!(std::fs::read(rootfs.join("etc/motd")).unwrap(), b"hello\n");
    // Links.
    let ino = |p: &str| std::fs::metadata(rootfs.join(p)).unwrap().ino();
    assert_eq!(ino("bin/ls"), ino("bin/busybox"));
    assert_eq!(std::fs::read_link(rootfs.join("bin/sh")).unwrap(), Path::new("busybox"));
    // Owners and modes, recorded.
    let meta = |p: &str| boot.records.get(Path::new(p)).and_then(|r| r.meta).unwrap();
    assert_eq!((meta("etc/shadow").gid, meta("etc/shadow").mode), (42, 0o640));
    assert_eq!((meta("home/alice").uid, meta("home/alice").mode), (1000, 0o700));
    assert_eq!(meta("bin/su").mode, 0o4755);
    assert_eq!(meta("tmp").mode, 0o1777);
    assert_eq!((meta("opt/app").gid, meta("opt/app").mode), (7, 0o750));
    // The device node is recorded, not created.
    assert!(std::fs::symlink_metadata(rootfs.join("dev/null")).is_err());
    let devices: Vec<_> = boot.records.devices().map(|(p, d, _)| (p.to_path_buf(), d.kind)).collect();
    assert_eq!(devices, vec![(PathBuf::from("dev/null"), DeviceKind::Char)]);
    // The config for the metadata step.
    let config = &boot.image.config;
    assert_eq!(config.env, ["PATH=/bin", "GREETING=hi there"]);
    assert_eq!(config.entrypoint.as_deref(), Some(&["/bin/sh".to_owned()][..]));
    assert_eq!(config.working_dir.as_deref(), Some("/opt/app"));
    assert_eq!(config.labels["org.example.fixture"], "layers");
    assert_eq!(boot.image.layers.len(), 3);
    assert_eq!(Digest::sha256_of(&boot.image.config_json), boot.image.config_digest);
    // Progress: every layer reported complete.
    let bytes = recorder.bytes.lock().unwrap();
    for layer in &boot.image.layers {
        let d = layer.blob.digest().to_string();
        assert!(bytes.iter().any(|(b, done, total)| *b == d && done == total), "no progress for {d}");
    }
    rootfs
}

#[tokio::test]
async fn layers_image_applies_owners_on_disk_in_apply_mode() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: apply mode needs root or a mapped user namespace");
        return;
    }
    let registry = Registry::start(None);
    let env = Env::new();
    push_layers(&registry, &env.tmp.path().join("layout"));
    let rootfs = env.rootfs("rootfs");
    let reference = format!("{}/layers:latest", registry.addr);
    let (result, _) = run(&env, &reference, &options("amd64"), &rootfs, OwnershipMode::Apply).await;
    let boot = result.unwrap();
    let md = |p: &str| std::fs::symlink_metadata(rootfs.join(p)).unwrap();
    assert_eq!((md("etc/shadow").gid(), md("etc/shadow").mode() & 0o7777), (42, 0o640));
    assert_eq!((md("home/alice").uid(), md("home/alice").mode() & 0o7777), (1000, 0o700));
    assert_eq!(md("bin/su").mode() & 0o7777, 0o4755);
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(md("bin/busybox").mtime(), support::MTIME as i64);
    // Only the device node needs a record in apply mode.
    assert_eq!(boot.records.len(), 1);
}

#[tokio::test]
async fn multi_image_picks_the_requested_platform() {
    let registry = Registry::start(None);
    let env = Env::new();
    push_multi(&registry, &env.tmp.path().join("layout"));
    let reference = format!("{}/multi:latest", registry.addr);
    for (arch, want) in [("arm64", "arm64/v8"), ("amd64", "amd64"), ("arm/v7", "arm/v7")] {
        let rootfs = env.rootfs(&arch.replace('/', "-"));
        let (result, _) = run(&env, &reference, &options(arch), &rootfs, OwnershipMode::Record).await;
        let boot = result.unwrap();
        assert_eq!(std::fs::read_to_string(rootfs.join("platform")).unwrap(), want, "--arch {arch}");
        assert_eq!(boot.image.config.labels["platform"], want);
        assert!(boot.image.index_digest.is_some());
    }
    let rootfs = env.rootfs("ppc");
    let (result, _) = run(&env, &reference, &options("ppc64le"), &rootfs, OwnershipMode::Record).await;
    let line = one_line(result.unwrap_err());
    assert!(line.contains("has no linux/ppc64le variant"), "{line}");
    assert!(line.contains("linux/arm64/v8"), "{line}");
}

#[tokio::test]
async fn evil_image_writes_nothing_outside_the_rootfs() {
    let registry = Registry::start(None);
    let env = Env::new();
    let outside = env.rootfs("outside");
    std::fs::write(outside.join("passwd"), b"host").unwrap();
    let target = outside.display().to_string();
    let mut layout = Layout::new(&env.tmp.path().join("layout"));
    // Symlinks to host paths, then writes through them, in the first layer; a later layer
    // replaces a symlinked dir and hard-links to a host path.
    let l1 = Tar::default()
        .symlink("etc", &target)
        .file("etc/passwd", b"pwned", 0o644, (0, 0))
        .symlink("up", "../../../../../../../..")
        .file(&format!("up{target}/passwd"), b"pwned", 0o644, (0, 0))
        .symlink("root-link", "/")
        .dir(&format!("root-link{target}/newdir/"), 0o755, (0, 0))
        .finish();
    let l2 = Tar::default()
        .hardlink("stolen", &format!("{target}/passwd"))
        .finish();
    let layers = [layout.gzip_layer(&l1), layout.gzip_layer(&l2)];
    let image = layout.image("amd64", &layers, serde_json::json!({}));
    layout.tag("latest", image);
    registry.push(&layout.dir, "latest", "evil", None);

    let rootfs = env.rootfs("rootfs");
    let reference = format!("{}/evil:latest", registry.addr);
    let (result, _) = run(&env, &reference, &options("amd64"), &rootfs, OwnershipMode::Record).await;
    let line = one_line(result.unwrap_err());
    assert!(line.contains("hard link stolen points to"), "{line}");
    assert_eq!(std::fs::read(outside.join("passwd")).unwrap(), b"host");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "nothing new outside");
    assert_eq!(std::fs::metadata(outside.join("passwd")).unwrap().nlink(), 1);
    // What the first layer wrote went inside the rootfs.
    let inside = rootfs.join(target.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside.join("passwd")).unwrap(), b"pwned");
    assert!(inside.join("newdir").is_dir());

    // `..` names are refused outright.
    let mut layout = Layout::new(&env.tmp.path().join("layout2"));
    let l = Tar::default().file("../../escape", b"x", 0o644, (0, 0)).finish();
    let layer = layout.gzip_layer(&l);
    let image = layout.image("amd64", &[layer], serde_json::json!({}));
    layout.tag("latest", image);
    registry.push(&layout.dir, "latest", "evil2", None);
    let rootfs = env.rootfs("rootfs2");
    let (result, _) = run(&env, &format!("{}/evil2:latest", registry.addr), &options("amd64"), &rootfs, OwnershipMode::Record).await;
    let err = result.unwrap_err();
    assert!(matches!(err, PullError::Apply { source: LayerError::Escape { .. }, .. }), "{err}");
    assert!(!env.tmp.path().join("escape").exists());
}

#[tokio::test]
async fn bad_inputs_end_with_one_clear_error_line() {
    let registry = Registry::start(None);
    let env = Env::new();
    push_layers(&registry, &env.tmp.path().join("layout"));
    let rootfs = env.rootfs("rootfs");

    // Missing image.
    let (result, _) = run(&env, &format!("{}/nope:latest", registry.addr), &options("amd64"), &rootfs, OwnershipMode::Record).await;
    let err = result.unwrap_err();
    assert!(err.is_user_fault());
    let line = one_line(err);
    assert!(line.starts_with(&format!("image {}/nope:latest not found", registry.addr)), "{line}");

    // Registry down: a port nobody listens on; retried, then reported.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (result, recorder) = run(&env, &format!("127.0.0.1:{port}/layers:latest"), &options("amd64"), &rootfs, OwnershipMode::Record).await;
    let err = result.unwrap_err();
    assert!(!err.is_user_fault(), "an unreachable registry is the infrastructure's fault");
    let line = one_line(err);
    assert!(line.starts_with(&format!("failed to fetch the manifest of 127.0.0.1:{port}/layers:latest (after 2 attempts)")), "{line}");
    assert!(recorder.lines.lock().unwrap().iter().any(|l| l.contains("retry 1 of 1")));

    // Wrong digest: corrupt a layer in the registry's storage (same length, other bytes).
    let reference = docker_reference(&format!("{}/layers:latest", registry.addr), None, None).unwrap();
    let pulled = kiln_worker::pipeline::docker::pull(&reference, &options("amd64"), &env.cache, &kiln_worker::pipeline::progress::NoProgress).await.unwrap();
    let victim = pulled.layers[2].blob.digest().to_string();
    drop(pulled);
    let file = registry.blob_file(&victim);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let fresh = Env::new();
    let rootfs = fresh.rootfs("rootfs");
    let (result, _) = run(&fresh, &format!("{}/layers:latest", registry.addr), &options("amd64"), &rootfs, OwnershipMode::Record).await;
    let line = one_line(result.unwrap_err());
    assert_eq!(line, format!("blob {victim} from the registry does not match its digest"));
    assert!(fresh.cache.lease(&victim.parse().unwrap()).unwrap().is_none(), "bad blob not cached");
}

#[tokio::test]
async fn basic_auth_registry_needs_the_right_credentials() {
    let registry = Registry::start(Some(("kiln", "s3cret")));
    let env = Env::new();
    let mut layout = Layout::new(&env.tmp.path().join("layout"));
    let layer = layout.gzip_layer(&Tar::default().file("hello", b"hi", 0o644, (0, 0)).finish());
    let image = layout.image("amd64", &[layer], serde_json::json!({}));
    layout.tag("v1", image);
    registry.push(&layout.dir, "v1", "private/hello", Some(("kiln", "s3cret")));
    let reference = format!("{}/private/hello:v1", registry.addr);

    let rootfs = env.rootfs("anon");
    let (result, _) = run(&env, &reference, &options("amd64"), &rootfs, OwnershipMode::Record).await;
    let line = one_line(result.unwrap_err());
    assert!(line.starts_with(&format!("registry refused access to {reference}")), "{line}");

    let mut wrong = options("amd64");
    wrong.credentials = Some(Credentials { username: "kiln".into(), password: "nope".into() });
    let (result, _) = run(&env, &reference, &wrong, &rootfs, OwnershipMode::Record).await;
    assert!(matches!(result.unwrap_err(), PullError::Unauthorized { .. }));

    let mut right = options("amd64");
    right.credentials = Some(Credentials { username: "kiln".into(), password: "s3cret".into() });
    let rootfs = env.rootfs("authed");
    let (result, _) = run(&env, &reference, &right, &rootfs, OwnershipMode::Record).await;
    result.unwrap();
    assert_eq!(std::fs::read(rootfs.join("hello")).unwrap(), b"hi");
}

#[tokio::test]
async fn builds_share_the_layer_cache() {
    let registry = Registry::start(None);
    let env = Env::new();
    push_layers(&registry, &env.tmp.path().join("layout"));
    let reference = format!("{}/layers:latest", registry.addr);
    let opts = options("amd64");
    let (a, b) = (env.rootfs("a"), env.rootfs("b"));
    let (ra, rb) = tokio::join!(
        run(&env, &reference, &opts, &a, OwnershipMode::Record),
        run(&env, &reference, &opts, &b, OwnershipMode::Record),
    );
    let (ra, rb) = (ra.0.unwrap(), rb.0.unwrap());
    assert_eq!(ra.records, rb.records);
    assert_eq!(std::fs::read(a.join("etc/motd")).unwrap(), std::fs::read(b.join("etc/motd")).unwrap());
    drop((ra, rb));

    let c = env.rootfs("c");
    let (rc, recorder) = run(&env, &reference, &opts, &c, OwnershipMode::Record).await;
    rc.unwrap();
    let cached = recorder.lines.lock().unwrap().iter().filter(|l| l.starts_with("using cached layer")).count();
    assert_eq!(cached, 3);
}
