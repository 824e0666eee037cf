//! The `docker` bootstrap agent against real registries: the shared fixture images
//! (`kiln_tests::registry`), images pushed under unique names, and a lying registry.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln_tests::fixtures::{
    EVIL_HOST_PATHS, Fixture, LAYERS_HELLO, LAYERS_LONG_PATH, MULTI_ARCH_FILE,
};
use kiln_tests::layer::{Entry, Layer};
use kiln_tests::oci::{Descriptor, LayerBlob, OciLayout, Platform as OciPlatform, RuntimeConfig};
use kiln_tests::registry::{TestRegistry, push_layout};
use kiln_worker::pipeline::cache::{CacheOptions, LayerCache};
use kiln_worker::pipeline::digest::Digest;
use kiln_worker::pipeline::docker::{
    Bootstrap, Credentials, Platform, PullError, PullOptions, RetryPolicy, bootstrap,
    docker_reference,
};
use kiln_worker::pipeline::layer::{ApplyOptions, DeviceKind, DeviceNode, OwnershipMode};
use kiln_worker::pipeline::progress::Progress;
use sha2::Digest as _;
use support::lying_registry::{Behaviour, LyingRegistry};

/// Collects log lines and byte counts.
#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
    bytes: Mutex<Vec<(String, u64, u64)>>,
}

impl Recorder {
    /// Log lines containing `needle`.
    fn count(&self, needle: &str) -> usize {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| l.contains(needle)).count()
    }
}

impl Progress for Recorder {
    fn log(&self, line: &str) {
        self.lines.lock().unwrap().push(line.to_owned());
    }
    fn blob_bytes(&self, digest: &Digest, done: u64, total: u64) {
        self.bytes
            .lock()
            .unwrap()
            .push((digest.to_string(), done, total));
    }
}

/// A temp dir with a layer cache and rootfs directories.
struct Env {
    tmp: tempfile::TempDir,
    cache: LayerCache,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cache =
            LayerCache::open(&CacheOptions::new(tmp.path().join("cache"), 1 << 30)).unwrap();
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
        attempts: 3,
        first_delay: Duration::from_millis(20),
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

/// [`run`] with the default options for `arch`, in record mode.
async fn run_record(
    env: &Env,
    reference: &str,
    arch: &str,
    rootfs: &Path,
) -> (Result<Bootstrap, PullError>, Arc<Recorder>) {
    run(
        env,
        reference,
        &options(arch),
        rootfs,
        OwnershipMode::Record,
    )
    .await
}

/// The error as the worker's binary prints it: the whole chain on one line.
fn one_line(err: PullError) -> String {
    let line = format!("{:#}", anyhow::Error::from(err));
    assert!(!line.contains('\n'), "error spans lines: {line}");
    line
}

/// Checks what every ownership mode must produce from the `layers` fixture.
fn assert_layers_tree(rootfs: &Path, boot: &Bootstrap) {
    let data = rootfs.join("data");
    assert_eq!(
        std::fs::read_to_string(data.join("hello.txt")).unwrap(),
        LAYERS_HELLO
    );
    let md = |p: &str| std::fs::symlink_metadata(data.join(p)).unwrap();
    assert_eq!(md("link-hard").ino(), md("hello.txt").ino());
    assert_eq!(
        std::fs::read_link(data.join("link-relative")).unwrap(),
        Path::new("hello.txt")
    );
    assert_eq!(
        std::fs::read_link(data.join("link-absolute")).unwrap(),
        Path::new("/data/hello.txt")
    );
    assert!(!data.join("remove-me.txt").exists(), "file whiteout");
    assert_eq!(
        std::fs::read_to_string(data.join("replaced.txt")).unwrap(),
        "version 2\n"
    );
    assert!(!data.join("opaque/old.txt").exists(), "opaque directory");
    assert!(!data.join("opaque/sub").exists(), "opaque directory");
    assert!(data.join("opaque/new.txt").is_file());
    assert!(md("fifo").file_type().is_fifo());
    assert!(rootfs.join(LAYERS_LONG_PATH).is_file());
    assert!(rootfs.join("bin/busybox").is_file());
    let names: Vec<_> = walk(rootfs)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".wh."))
        .collect();
    assert!(names.is_empty(), "whiteout files left: {names:?}");

    let config = &boot.image.config;
    assert!(config.env.contains(&"KILN_FIXTURE=layers".to_owned()));
    assert_eq!(
        config.entrypoint.as_deref(),
        Some(&["/bin/sh".to_owned(), "-c".to_owned()][..])
    );
    assert_eq!(
        config.cmd.as_deref(),
        Some(&["cat /data/hello.txt".to_owned()][..])
    );
    assert_eq!(config.working_dir.as_deref(), Some("/data"));
    assert_eq!(config.labels["org.kiln.fixture"], "layers");
    assert_eq!(boot.image.layers.len(), 3);
    assert_eq!(
        Digest::sha256_of(&boot.image.config_json),
        boot.image.config_digest
    );
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out
}

/// Pulls `layers` in record mode and checks the recorded owners and modes.
async fn convert_layers_in_record_mode(env: &Env, reference: &str) -> PathBuf {
    let rootfs = env.rootfs("rootfs");
    let (result, recorder) = run_record(env, reference, "amd64", &rootfs).await;
    let boot = result.unwrap();
    assert_layers_tree(&rootfs, &boot);
    let meta = |p: &str| boot.records.get(Path::new(p)).and_then(|r| r.meta).unwrap();
    assert_eq!(meta("data/setuid").mode, 0o4755);
    assert_eq!(
        (meta("data/owned-1000").uid, meta("data/owned-1000").gid),
        (1000, 1000)
    );
    let g42 = meta("data/group-42");
    assert_eq!((g42.uid, g42.gid, g42.mode), (0, 42, 0o640));
    assert_eq!(meta("data/empty").mode, 0o750);
    assert_eq!(meta("data/hello.txt").mode, 0o644);
    // Every layer's progress reached its size.
    let bytes = recorder.bytes.lock().unwrap();
    for layer in &boot.image.layers {
        let d = layer.blob.digest().to_string();
        assert!(
            bytes
                .iter()
                .any(|(b, done, total)| *b == d && done == total),
            "no progress for {d}"
        );
    }
    rootfs
}

#[tokio::test]
async fn layers_image_converts_with_every_property_in_record_mode() {
    let registry = TestRegistry::plain().unwrap();
    convert_layers_in_record_mode(&Env::new(), &registry.reference(Fixture::Layers)).await;
}

/// The same conversion as a plain unprivileged user (no user namespace): as root, this test
/// re-runs itself as `nobody` through `setpriv`.
#[tokio::test]
async fn layers_image_converts_as_an_unprivileged_user() {
    const INNER: &str = "KILN_TEST_UNPRIVILEGED_REFERENCE";
    if let Ok(reference) = std::env::var(INNER) {
        assert!(!nix::unistd::Uid::effective().is_root());
        let env = Env::new();
        let rootfs = convert_layers_in_record_mode(&env, &reference).await;
        let me = nix::unistd::Uid::effective().as_raw();
        assert_eq!(
            std::fs::metadata(rootfs.join("data/owned-1000"))
                .unwrap()
                .uid(),
            me
        );
        return;
    }
    let registry = TestRegistry::plain().unwrap();
    if !nix::unistd::Uid::effective().is_root() {
        convert_layers_in_record_mode(&Env::new(), &registry.reference(Fixture::Layers)).await;
        return;
    }
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "layers_image_converts_as_an_unprivileged_user",
            "--nocapture",
        ])
        .env(INNER, registry.reference(Fixture::Layers))
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

#[tokio::test]
async fn layers_image_applies_owners_on_disk_in_apply_mode() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: apply mode needs root or a mapped user namespace");
        return;
    }
    let registry = TestRegistry::plain().unwrap();
    let env = Env::new();
    let rootfs = env.rootfs("rootfs");
    let reference = registry.reference(Fixture::Layers);
    let (result, _) = run(
        &env,
        &reference,
        &options("amd64"),
        &rootfs,
        OwnershipMode::Apply,
    )
    .await;
    let boot = result.unwrap();
    assert_layers_tree(&rootfs, &boot);
    let md = |p: &str| std::fs::symlink_metadata(rootfs.join("data").join(p)).unwrap();
    assert_eq!(md("setuid").mode() & 0o7777, 0o4755);
    assert_eq!(
        (md("owned-1000").uid(), md("owned-1000").gid()),
        (1000, 1000)
    );
    assert_eq!(
        (md("group-42").gid(), md("group-42").mode() & 0o7777),
        (42, 0o640)
    );
    assert_eq!(md("empty").mode() & 0o7777, 0o750);
    assert!(
        boot.records.is_empty(),
        "nothing to record: {:?}",
        boot.records
    );
}

#[tokio::test]
async fn multi_image_picks_the_requested_platform() {
    let registry = TestRegistry::plain().unwrap();
    let env = Env::new();
    let reference = registry.reference(Fixture::Multi);
    for (arch, want) in [
        ("arm64", "arm64\n"),
        ("arm64/v8", "arm64\n"),
        ("amd64", "amd64\n"),
    ] {
        let rootfs = env.rootfs(&arch.replace('/', "-"));
        let (result, _) = run_record(&env, &reference, arch, &rootfs).await;
        let boot = result.unwrap();
        assert_eq!(
            std::fs::read_to_string(rootfs.join(MULTI_ARCH_FILE)).unwrap(),
            want,
            "--arch {arch}"
        );
        assert!(boot.image.index_digest.is_some());
    }
    let rootfs = env.rootfs("ppc");
    let (result, _) = run_record(&env, &reference, "ppc64le", &rootfs).await;
    let err = result.unwrap_err();
    assert!(err.is_user_fault());
    let line = one_line(err);
    assert!(line.contains("has no linux/ppc64le variant"), "{line}");
    assert!(line.contains("linux/amd64, linux/arm64/v8"), "{line}");
}

#[tokio::test]
async fn evil_image_writes_nothing_outside_the_rootfs() {
    for path in EVIL_HOST_PATHS {
        assert!(
            !Path::new(path).exists(),
            "{path} exists before the test; remove it"
        );
    }
    let registry = TestRegistry::plain().unwrap();
    let env = Env::new();
    let rootfs = env.rootfs("rootfs");
    let (result, recorder) =
        run_record(&env, &registry.reference(Fixture::Evil), "amd64", &rootfs).await;
    let boot = result.unwrap();
    for path in EVIL_HOST_PATHS {
        assert!(!Path::new(path).exists(), "{path} was written on the host");
        // What the layers meant for the host landed in the rootfs instead, except the write
        // through the symlink to a host path: that file replaced the symlink.
        let inside = rootfs.join(path.trim_start_matches('/'));
        assert_eq!(
            inside.is_file(),
            !path.ends_with("through-host-symlink"),
            "{path} inside the rootfs"
        );
    }
    // The regular file replaced the symlink instead of writing through it.
    assert!(
        std::fs::symlink_metadata(rootfs.join("host-file"))
            .unwrap()
            .is_file()
    );
    // Hard links to "host" files link the image's own files.
    let shadow = std::fs::metadata(rootfs.join("etc/shadow")).unwrap().ino();
    assert_eq!(
        std::fs::metadata(rootfs.join("hardlink-shadow"))
            .unwrap()
            .ino(),
        shadow
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("hardlink-dotdot"))
            .unwrap()
            .ino(),
        shadow
    );
    // Devices are recorded, never created.
    assert!(std::fs::symlink_metadata(rootfs.join("dev/kiln-evil-sda")).is_err());
    let devices: Vec<_> = boot
        .records
        .devices()
        .map(|(p, d, _)| (p.to_path_buf(), *d))
        .collect();
    assert_eq!(
        devices,
        vec![
            (
                PathBuf::from("dev/kiln-evil-mem"),
                DeviceNode {
                    kind: DeviceKind::Char,
                    major: 1,
                    minor: 1
                }
            ),
            (
                PathBuf::from("dev/kiln-evil-sda"),
                DeviceNode {
                    kind: DeviceKind::Block,
                    major: 8,
                    minor: 0
                }
            ),
        ]
    );
    assert!(
        recorder.count("kept inside the rootfs") > 0,
        "the contained `..` names are reported"
    );
}

#[tokio::test]
async fn authenticated_registry_needs_the_right_credentials() {
    let registry = TestRegistry::authenticated().unwrap();
    let creds = registry.credentials().unwrap().clone();
    let env = Env::new();
    let reference = registry.reference(Fixture::Busybox);

    let rootfs = env.rootfs("anonymous");
    let (result, _) = run_record(&env, &reference, "amd64", &rootfs).await;
    let line = one_line(result.unwrap_err());
    assert!(
        line.starts_with(&format!("registry refused access to {reference}")),
        "{line}"
    );

    let mut wrong = options("amd64");
    wrong.credentials = Some(Credentials {
        username: creds.username.clone(),
        password: "wrong".into(),
    });
    let (result, _) = run(&env, &reference, &wrong, &rootfs, OwnershipMode::Record).await;
    assert!(matches!(
        result.unwrap_err(),
        PullError::Unauthorized { .. }
    ));

    let mut right = options("amd64");
    right.credentials = Some(Credentials {
        username: creds.username,
        password: creds.password,
    });
    let rootfs = env.rootfs("authenticated");
    let (result, _) = run(&env, &reference, &right, &rootfs, OwnershipMode::Record).await;
    result.unwrap();
    assert!(rootfs.join("bin/busybox").is_file());
}

#[tokio::test]
async fn zstd_and_uncompressed_layers_are_applied_in_order() {
    let registry = TestRegistry::plain().unwrap();
    let env = Env::new();
    let layout = OciLayout::create(&env.tmp.path().join("layout")).unwrap();
    let tar = |layer: Layer| layer.write_tar(Vec::new()).unwrap();
    let diff_id = |tar: &[u8]| format!("sha256:{}", hex::encode(sha2::Sha256::digest(tar)));
    let first = tar(Layer::new(vec![
        Entry::dir("etc"),
        Entry::file("etc/os", "zstd\n"),
        Entry::file("etc/old", "x"),
    ]));
    let second = tar(Layer::new(vec![
        Entry::dir("etc"),
        Entry::whiteout("etc", "old"),
        Entry::file("etc/os", "plain\n"),
    ]));
    let blob = |media_type: &str, bytes: &[u8], tar: &[u8]| -> LayerBlob {
        let descriptor: Descriptor = layout.add_blob(media_type, bytes).unwrap();
        LayerBlob {
            descriptor,
            diff_id: diff_id(tar),
        }
    };
    let zstd_layer = blob(
        "application/vnd.oci.image.layer.v1.tar+zstd",
        &zstd::encode_all(&first[..], 3).unwrap(),
        &first,
    );
    let plain_layer = blob("application/vnd.oci.image.layer.v1.tar", &second, &second);
    let manifest = layout
        .add_image(
            &OciPlatform::linux("amd64", None),
            &RuntimeConfig::default(),
            &[&zstd_layer, &plain_layer],
        )
        .unwrap();
    layout.write_index("latest", &manifest).unwrap();
    let name = kiln_tests::unique_name("kiln-worker-codecs").unwrap();
    let reference = format!("{}/{name}:latest", registry.addr());
    push_layout(layout.dir(), "latest", &reference, None).unwrap();

    let rootfs = env.rootfs("rootfs");
    let (result, _) = run_record(&env, &reference, "amd64", &rootfs).await;
    result.unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/os")).unwrap(),
        "plain\n"
    );
    assert!(!rootfs.join("etc/old").exists());
}

#[tokio::test]
async fn bad_inputs_end_with_one_clear_error_line() {
    let registry = TestRegistry::plain().unwrap();
    let env = Env::new();
    let rootfs = env.rootfs("rootfs");

    // Missing image.
    let missing = format!("{}/kiln-no-such-image:latest", registry.addr());
    let (result, _) = run_record(&env, &missing, "amd64", &rootfs).await;
    let err = result.unwrap_err();
    assert!(err.is_user_fault());
    let line = one_line(err);
    assert!(
        line.starts_with(&format!("image {missing} not found in its registry")),
        "{line}"
    );

    // Registry down: a port nobody listens on; retried, then reported.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("127.0.0.1:{port}/busybox:latest");
    let (result, recorder) = run_record(&env, &down, "amd64", &rootfs).await;
    let err = result.unwrap_err();
    assert!(
        !err.is_user_fault(),
        "an unreachable registry is the infrastructure's fault"
    );
    let line = one_line(err);
    assert!(
        line.starts_with(&format!(
            "failed to fetch the manifest of {down} (after 3 attempts)"
        )),
        "{line}"
    );
    assert_eq!(recorder.count("retry"), 2);

    // Wrong digest: the registry serves other bytes than the manifest's digest names.
    let layer = gzip_layer(Layer::new(vec![Entry::file("x", "payload ".repeat(100))]));
    let liar = LyingRegistry::start(layer, Behaviour::CorruptLayer).await;
    let (result, _) =
        run_record(&env, &format!("{}/lie:latest", liar.addr), "amd64", &rootfs).await;
    let err = result.unwrap_err();
    assert!(err.is_user_fault());
    assert_eq!(
        one_line(err),
        format!(
            "blob {} from the registry does not match its digest",
            liar.layer_digest
        )
    );
    assert!(
        env.cache
            .lease(&liar.layer_digest.parse().unwrap())
            .unwrap()
            .is_none(),
        "bad blob not cached"
    );
    assert!(!rootfs.join("x").exists());
}

#[tokio::test]
async fn transient_registry_errors_are_retried() {
    let env = Env::new();
    let layer = gzip_layer(Layer::new(vec![Entry::file("x", "after two 503s")]));
    let flaky = LyingRegistry::start(layer, Behaviour::FailFirstBlobs(2)).await;
    let rootfs = env.rootfs("rootfs");
    let (result, recorder) = run_record(
        &env,
        &format!("{}/lie:latest", flaky.addr),
        "amd64",
        &rootfs,
    )
    .await;
    result.unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.join("x")).unwrap(),
        "after two 503s"
    );
    assert_eq!(
        flaky.blob_requests.load(Ordering::SeqCst),
        4,
        "config: 503, 503, 200; layer: 200"
    );
    assert_eq!(recorder.count("retry"), 2);
}

#[tokio::test]
async fn builds_share_the_layer_cache() {
    let registry = TestRegistry::plain().unwrap();
    let env = Env::new();
    let reference = registry.reference(Fixture::Layers);
    let (a, b) = (env.rootfs("a"), env.rootfs("b"));
    let (ra, rb) = tokio::join!(
        run_record(&env, &reference, "amd64", &a),
        run_record(&env, &reference, "amd64", &b),
    );
    let (ra, rb) = (ra.0.unwrap(), rb.0.unwrap());
    assert_eq!(ra.records, rb.records);
    assert_eq!(walk(&a).len(), walk(&b).len());
    drop((ra, rb));

    let c = env.rootfs("c");
    let (rc, recorder) = run_record(&env, &reference, "amd64", &c).await;
    rc.unwrap();
    let cached = recorder.count("using cached layer");
    assert_eq!(cached, 3);
}

fn gzip_layer(layer: Layer) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    layer.write_tar(gz).unwrap().finish().unwrap()
}

/// The debootstrap base (`KILN_TEST_DEBIAN`, set by `tests/run.sh`): a real distribution with
/// merged /usr, setuid binaries and a few thousand files.
#[tokio::test]
async fn debian_base_image_converts() {
    let Ok(reference) = std::env::var(kiln_tests::registry::ENV_DEBIAN) else {
        eprintln!("skipped: KILN_TEST_DEBIAN is not set (tests/run.sh sets it)");
        return;
    };
    let env = Env::new();
    let rootfs = env.rootfs("rootfs");
    let (result, _) = run_record(&env, &reference, "amd64", &rootfs).await;
    let boot = result.unwrap();
    assert!(
        std::fs::read_to_string(rootfs.join("etc/debian_version"))
            .unwrap()
            .starts_with("12.")
    );
    // Merged /usr: /bin is a symlink and entries under it resolved to usr/bin.
    assert_eq!(
        std::fs::read_link(rootfs.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    assert!(rootfs.join("usr/bin/apt-get").is_file());
    let su = boot
        .records
        .get(Path::new("usr/bin/su"))
        .and_then(|r| r.meta);
    assert_eq!(su.map(|m| (m.uid, m.mode & 0o4000)), Some((0, 0o4000)));
}
