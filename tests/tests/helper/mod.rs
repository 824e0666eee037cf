//! Judges the tests call: skopeo, umoci and GNU tar, run on what the registry serves, so no
//! assertion relies on the code that built the fixtures.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_tests::command::{run, run_stdout};
use kiln_tests::fixtures::Fixture;
use kiln_tests::registry::TestRegistry;
use serde_json::Value;

/// The plain registry with the fixtures, shared or private (panics with the cause if neither).
pub fn registry() -> TestRegistry {
    TestRegistry::plain().expect("no registry with the fixtures")
}

/// `skopeo inspect [extra…] docker://<fixture>` on `registry`, parsed.
pub fn inspect(registry: &TestRegistry, fixture: Fixture, extra: &[&str]) -> Value {
    serde_json::from_str(&inspect_text(registry, fixture, None, extra))
        .expect("skopeo printed invalid JSON")
}

/// The standard output of `skopeo [--override-arch arch] inspect [extra…] docker://<fixture>`,
/// with the registry's credentials if it has some.
pub fn inspect_text(
    registry: &TestRegistry,
    fixture: Fixture,
    arch: Option<&str>,
    extra: &[&str],
) -> String {
    let mut skopeo = Command::new("skopeo");
    skopeo.arg("--insecure-policy");
    if let Some(arch) = arch {
        skopeo.args(["--override-arch", arch]);
    }
    skopeo.args(["inspect", "--tls-verify=false"]);
    if let Some(credentials) = registry.credentials() {
        skopeo.arg("--creds").arg(credentials.colon_pair());
    }
    skopeo
        .args(extra)
        .arg(format!("docker://{}", registry.reference(fixture)));
    run_stdout(&mut skopeo).expect("skopeo inspect failed")
}

/// Arguments for a registry source: plain HTTP and, when it has some, its credentials.
pub fn source_args(registry: &TestRegistry) -> Vec<String> {
    let mut args = vec!["--src-tls-verify=false".to_owned()];
    if let Some(credentials) = registry.credentials() {
        args.push("--src-creds".to_owned());
        args.push(credentials.colon_pair());
    }
    args
}

/// Copies `fixture` from `registry` into the OCI layout `dir` (tag `pulled`), for the platform
/// `arch` when given, and returns the layout's path.
pub fn pull(registry: &TestRegistry, fixture: Fixture, dir: &Path, arch: Option<&str>) -> PathBuf {
    let layout = dir.join("layout");
    let mut skopeo = Command::new("skopeo");
    skopeo.arg("--insecure-policy");
    if let Some(arch) = arch {
        skopeo.args(["--override-arch", arch]);
    }
    skopeo.args(["copy", "--quiet"]).args(source_args(registry));
    skopeo
        .arg(format!("docker://{}", registry.reference(fixture)))
        .arg(format!("oci:{}:pulled", layout.display()));
    run(&mut skopeo).expect("skopeo copy failed");
    layout
}

/// The manifest of tag `pulled` in a layout written by [`pull`].
pub fn pulled_manifest(layout: &Path) -> Value {
    let index: Value = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("no manifest in index.json");
    read_json(&blob(layout, digest))
}

/// Path of the blob `digest` (`sha256:…`) in `layout`.
pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The layer blobs of a pulled image, lowest first.
pub fn layer_blobs(layout: &Path) -> Vec<PathBuf> {
    let manifest = pulled_manifest(layout);
    manifest["layers"]
        .as_array()
        .expect("manifest without layers")
        .iter()
        .map(|l| blob(layout, l["digest"].as_str().expect("layer without digest")))
        .collect()
}

/// `umoci unpack` of tag `pulled` into `dir/bundle`; returns the rootfs. Rootless when asked or
/// when we are not root: then owners are not applied and device nodes are skipped.
pub fn unpack(layout: &Path, dir: &Path, rootless: bool) -> PathBuf {
    let bundle = dir.join("bundle");
    let mut umoci = Command::new("umoci");
    umoci.arg("unpack");
    if rootless || !is_root() {
        umoci.arg("--rootless");
    }
    umoci
        .arg("--image")
        .arg(format!("{}:pulled", layout.display()))
        .arg(&bundle);
    run(&mut umoci).expect("umoci unpack failed");
    bundle.join("rootfs")
}

/// One line of `tar --numeric-owner -tvzf`.
#[derive(Debug, Clone)]
pub struct TarLine {
    /// Mode string, e.g. `-rwsr-xr-x`, `hrw-r--r--`, `b---------`.
    pub mode: String,
    /// `uid/gid`.
    pub owner: String,
    /// Size, or `major,minor` for devices.
    pub size: String,
    /// Date and time columns.
    pub time: String,
    /// Name, followed by ` -> target` or ` link to target` for links.
    pub name: String,
}

/// GNU tar's verbose listing of a gzip layer blob, names and link targets as stored.
pub fn tar_listing(blob: &Path) -> Vec<TarLine> {
    let out = run_stdout(
        Command::new("tar")
            .args(["--numeric-owner", "--absolute-names", "-tvzf"])
            .arg(blob),
    )
    .expect("tar could not list the layer");
    out.lines()
        .map(|line| {
            let mut fields = line.split_whitespace();
            let mut next = || fields.next().unwrap_or_default().to_owned();
            let (mode, owner) = (next(), next());
            let mut size = next();
            if size.ends_with(',') {
                // Devices: "8, 0".
                size.push_str(&next());
            }
            let time = format!("{} {}", next(), next());
            let rest: Vec<String> =
                std::iter::from_fn(|| fields.next().map(str::to_owned)).collect();
            TarLine {
                mode,
                owner,
                size,
                time,
                name: rest.join(" "),
            }
        })
        .collect()
}

/// The listing line whose name (before any link arrow) is `name`.
pub fn entry<'a>(listing: &'a [TarLine], name: &str) -> &'a TarLine {
    listing
        .iter()
        .find(|l| l.name == name || l.name.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is not in the layer: {listing:#?}"))
}

/// Reads and parses a JSON file.
pub fn read_json(path: &Path) -> Value {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// True when the test runs as root.
pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A temp dir for one test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kiln-e2e-")
        .tempdir()
        .expect("cannot create a temp dir")
}
