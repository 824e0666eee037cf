//! The fixture images, built by code from Debian's `busybox-static` binary, never downloaded
//! (STYLE.md 2.7). Each is an OCI layout tagged `latest`, built on first use and cached; the
//! registry helper ([`crate::registry`]) pushes them as `<repository>:latest`.
//!
//! | fixture | what it exercises |
//! |---|---|
//! | `busybox` | one layer: `/bin/busybox`, its applets as symlinks, `/etc/passwd`; `Cmd` `/bin/sh` |
//! | `layers` | busybox plus two layers with file and opaque whiteouts, symlinks, a hard link, setuid, owners 1000 and gid 42, a fifo, an empty directory, a long path, and a full config |
//! | `multi` | an image index with linux/amd64 and linux/arm64/v8 images; `/etc/kiln-arch` says which was pulled |
//! | `evil` | layers that try to write outside the rootfs (see [`EVIL_HOST_PATHS`]) |
//! | `sif` | not an image: a SIF stored as an OCI artifact, as `singularity push oras://` stores it (see [`build_sif`]) |
//!
//! The cache key hashes this module's source, the layer and layout writers' sources and the
//! busybox binary, so changing a fixture or upgrading busybox builds a new cache entry.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use sha2::{Digest, Sha256};

use crate::command;
use crate::error::{Result, SupportError, io_error};
use crate::layer::{Entry, EntryKind, FileData, Layer};
use crate::oci::{LayerBlob, OciLayout, Platform, RuntimeConfig};

/// The busybox of Debian's `busybox-static` package, statically linked.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// The tag every fixture carries, in its layout and in the registry.
pub const TAG: &str = "latest";

/// `PATH` of every fixture's config, Docker's default.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The host paths a broken extractor would create or overwrite while unpacking the `evil` fixture.
/// A safe consumer leaves every one of them absent (the fixture never names an existing host
/// file as a write target).
pub const EVIL_HOST_PATHS: &[&str] = &[
    "/tmp/kiln-evil-dotdot",
    "/tmp/kiln-evil-inner-dotdot",
    "/tmp/kiln-evil-absolute",
    "/tmp/kiln-evil-via-root-symlink",
    "/tmp/kiln-evil-via-root-symlink-layer2",
    "/tmp/kiln-evil-through-host-symlink",
];

/// Sources whose content defines the fixtures' bytes; part of the cache key.
const BUILDER_SOURCES: &[&str] = &[
    include_str!("fixtures.rs"),
    include_str!("layer.rs"),
    include_str!("oci.rs"),
];

/// The fixture images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// `busybox:latest`.
    Busybox,
    /// `layers:latest`.
    Layers,
    /// `multi:latest`, an image index.
    Multi,
    /// `evil:latest`.
    Evil,
    /// `sif:latest`, a SIF artifact for `Bootstrap: oras`.
    Sif,
}

impl Fixture {
    /// Every fixture, in the order they are built and pushed.
    pub const ALL: [Fixture; 5] = [
        Fixture::Busybox,
        Fixture::Layers,
        Fixture::Multi,
        Fixture::Evil,
        Fixture::Sif,
    ];

    /// The repository name in a registry and the directory name in the cache.
    pub fn repository(self) -> &'static str {
        match self {
            Fixture::Busybox => "busybox",
            Fixture::Layers => "layers",
            Fixture::Multi => "multi",
            Fixture::Evil => "evil",
            Fixture::Sif => "sif",
        }
    }
}

/// Builds fixture layouts into a cache directory and hands out their paths.
#[derive(Debug, Clone)]
pub struct FixtureStore {
    root: PathBuf,
    busybox: PathBuf,
}

impl FixtureStore {
    /// A store caching under `root`, packing the static busybox binary at `busybox`.
    pub fn new(root: impl Into<PathBuf>, busybox: impl Into<PathBuf>) -> FixtureStore {
        FixtureStore {
            root: root.into(),
            busybox: busybox.into(),
        }
    }

    /// The store under the workspace's `target/kiln-fixtures`, packing [`DEFAULT_BUSYBOX`].
    pub fn in_target_dir() -> FixtureStore {
        FixtureStore::new(FixtureStore::in_target_dir_path(), DEFAULT_BUSYBOX)
    }

    /// `target/kiln-fixtures` of the workspace this crate was built in.
    pub fn in_target_dir_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/kiln-fixtures")
    }

    /// The OCI layout of `fixture` (tag [`TAG`]), built now unless the cache has it.
    ///
    /// Concurrent callers (several test binaries) each build into a private directory and
    /// rename it into place; the loser of the race discards its copy.
    pub fn layout(&self, fixture: Fixture) -> Result<PathBuf> {
        let dir = self.root.join(self.cache_key()?);
        let path = dir.join(fixture.repository());
        if path.join("index.json").exists() {
            return Ok(path);
        }
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        let partial = tempfile::Builder::new()
            .prefix(&format!(".partial-{}-", fixture.repository()))
            .tempdir_in(&dir)
            .map_err(io_error("create a directory in", &dir))?;
        let layout = OciLayout::create(partial.path())?;
        match fixture {
            Fixture::Busybox => build_busybox(&layout, &self.busybox)?,
            Fixture::Layers => build_layers(&layout, &self.busybox)?,
            Fixture::Multi => build_multi(&layout, &self.busybox)?,
            Fixture::Evil => build_evil(&layout, &self.busybox)?,
            Fixture::Sif => build_sif(&layout, &self.busybox)?,
        }
        let built = partial.keep();
        if let Err(error) = fs::rename(&built, &path) {
            // Another process finished first; its copy has the same bytes.
            let _ = fs::remove_dir_all(&built);
            if !path.join("index.json").exists() {
                return Err(io_error("rename into place", &path)(error));
            }
        }
        Ok(path)
    }

    /// The SIF file inside the `sif` fixture's layout (its artifact's one layer).
    pub fn sif_image(&self) -> Result<PathBuf> {
        let layout = self.layout(Fixture::Sif)?;
        let read_json = |path: PathBuf| -> Result<serde_json::Value> {
            let bytes = fs::read(&path).map_err(io_error("read", &path))?;
            serde_json::from_slice(&bytes).map_err(|source| SupportError::Json {
                what: "sif fixture layout",
                source,
            })
        };
        let blob = |digest: &serde_json::Value| {
            let digest = digest.as_str().unwrap_or_default();
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:"))
        };
        let index = read_json(layout.join("index.json"))?;
        let manifest = read_json(blob(&index["manifests"][0]["digest"]))?;
        Ok(blob(&manifest["layers"][0]["digest"]))
    }

    fn cache_key(&self) -> Result<String> {
        let mut hasher = Sha256::new();
        for source in BUILDER_SOURCES {
            hasher.update(source.as_bytes());
        }
        let busybox = fs::read(&self.busybox).map_err(io_error("read", &self.busybox))?;
        hasher.update(&busybox);
        Ok(hex::encode(hasher.finalize())[..16].to_owned())
    }
}

/// The busybox rootfs as one layer: `/bin/busybox`, a symlink to it for each applet at the path
/// `busybox --list-full` gives, the directories they live in, and minimal account files.
pub fn busybox_layer(busybox: &Path) -> Result<Layer> {
    let applets = command::run_stdout(Command::new(busybox).arg("--list-full"))?;
    let mut dirs: BTreeMap<String, Entry> = BTreeMap::new();
    for dir in ["bin", "dev", "etc", "proc", "sys", "usr", "var"] {
        dirs.insert(dir.to_owned(), Entry::dir(dir));
    }
    dirs.insert("root".to_owned(), Entry::dir("root").with_mode(0o700));
    dirs.insert("tmp".to_owned(), Entry::dir("tmp").with_mode(0o1777));
    let mut entries = vec![
        Entry::new(
            "bin/busybox",
            EntryKind::File(FileData::Host(busybox.to_owned())),
            0o755,
        ),
        Entry::file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        Entry::file("etc/group", "root:x:0:\nshadow:x:42:\nnogroup:x:65534:\n"),
        Entry::file(
            "etc/shadow",
            "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
        )
        .with_owner(0, 42)
        .with_mode(0o640),
    ];
    for applet in applets.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if applet == "bin/busybox" {
            continue;
        }
        for dir in Path::new(applet).ancestors().skip(1) {
            if !dir.as_os_str().is_empty() {
                let dir = dir.to_string_lossy().into_owned();
                dirs.entry(dir.clone()).or_insert_with(|| Entry::dir(&dir));
            }
        }
        // busybox picks the applet from argv[0]'s base name, so one absolute target serves all.
        entries.push(Entry::symlink(applet, "/bin/busybox"));
    }
    entries.extend(dirs.into_values());
    Ok(Layer::new(entries))
}

fn busybox_config() -> RuntimeConfig {
    RuntimeConfig {
        env: vec![PATH_ENV.to_owned()],
        cmd: vec!["/bin/sh".to_owned()],
        ..RuntimeConfig::default()
    }
}

fn amd64() -> Platform {
    Platform::linux("amd64", None)
}

fn build_busybox(layout: &OciLayout, busybox: &Path) -> Result<()> {
    let base = layout.add_layer(&busybox_layer(busybox)?, Compression::default())?;
    let manifest = layout.add_image(&amd64(), &busybox_config(), &[&base])?;
    layout.write_index(TAG, &manifest)
}

/// Content of `/data/hello.txt` in the `layers` fixture.
pub const LAYERS_HELLO: &str = "hello from the layers fixture\n";

/// A path of more than 100 bytes in the `layers` fixture, beyond a plain tar header's name field.
pub const LAYERS_LONG_PATH: &str = "data/long/a-directory-name-that-is-long-enough-0123456789/\
     and-another-one-to-pass-one-hundred-bytes-0123456789/file.txt";

fn build_layers(layout: &OciLayout, busybox: &Path) -> Result<()> {
    let base = layout.add_layer(&busybox_layer(busybox)?, Compression::default())?;
    let long_dirs = Path::new(LAYERS_LONG_PATH)
        .ancestors()
        .skip(1)
        .filter(|p| p.starts_with("data/long"))
        .map(|p| Entry::dir(p.to_string_lossy().as_bytes()));
    let mut content = vec![
        Entry::dir("data"),
        Entry::file("data/hello.txt", LAYERS_HELLO),
        // Named after its target so the sorted archive lists the target first.
        Entry::hard_link("data/link-hard", "data/hello.txt"),
        Entry::symlink("data/link-relative", "hello.txt"),
        Entry::symlink("data/link-absolute", "/data/hello.txt"),
        Entry::file(
            "data/remove-me.txt",
            "deleted by a whiteout in the next layer\n",
        ),
        Entry::file("data/replaced.txt", "version 1\n"),
        Entry::dir("data/opaque"),
        Entry::file("data/opaque/old.txt", "hidden by the opaque whiteout\n"),
        Entry::dir("data/opaque/sub"),
        Entry::file("data/opaque/sub/old.txt", "hidden too\n"),
        Entry::file("data/setuid", "#!/bin/sh\necho setuid\n").with_mode(0o4755),
        Entry::file("data/owned-1000", "owned by 1000:1000\n").with_owner(1000, 1000),
        Entry::file("data/group-42", "group 42\n")
            .with_owner(0, 42)
            .with_mode(0o640),
        Entry::fifo("data/fifo"),
        Entry::dir("data/empty").with_mode(0o750),
        Entry::file(LAYERS_LONG_PATH, "at the end of a long path\n"),
    ];
    content.extend(long_dirs);
    let content = layout.add_layer(&Layer::new(content), Compression::default())?;
    let changes = Layer::new(vec![
        Entry::dir("data"),
        Entry::whiteout("data", "remove-me.txt"),
        Entry::dir("data/opaque"),
        Entry::opaque("data/opaque"),
        Entry::file("data/opaque/new.txt", "added with the opaque whiteout\n"),
        Entry::file("data/replaced.txt", "version 2\n"),
    ]);
    let changes = layout.add_layer(&changes, Compression::default())?;
    let config = RuntimeConfig {
        env: vec![PATH_ENV.to_owned(), "KILN_FIXTURE=layers".to_owned()],
        entrypoint: vec!["/bin/sh".to_owned(), "-c".to_owned()],
        cmd: vec!["cat /data/hello.txt".to_owned()],
        working_dir: Some("/data".to_owned()),
        labels: BTreeMap::from([
            ("org.kiln.fixture".to_owned(), "layers".to_owned()),
            (
                "org.opencontainers.image.title".to_owned(),
                "Kiln layers fixture".to_owned(),
            ),
        ]),
    };
    let manifest = layout.add_image(&amd64(), &config, &[&base, &content, &changes])?;
    layout.write_index(TAG, &manifest)
}

/// Path of the file naming the platform of the `multi` image that was pulled.
pub const MULTI_ARCH_FILE: &str = "etc/kiln-arch";

fn build_multi(layout: &OciLayout, busybox: &Path) -> Result<()> {
    let base = layout.add_layer(&busybox_layer(busybox)?, Compression::default())?;
    let mut manifests = Vec::new();
    // The arm64 image carries the same amd64 busybox: what tests observe is which manifest a
    // client picked, through /etc/kiln-arch, not whether the binary runs.
    for platform in [amd64(), Platform::linux("arm64", Some("v8"))] {
        let marker = Layer::new(vec![
            Entry::dir("etc"),
            Entry::file(MULTI_ARCH_FILE, format!("{}\n", platform.architecture)),
        ]);
        let marker = layout.add_layer(&marker, Compression::default())?;
        manifests.push(layout.add_image(&platform, &busybox_config(), &[&base, &marker])?);
    }
    let index = layout.add_index(&manifests)?;
    layout.write_index(TAG, &index)
}

fn build_evil(layout: &OciLayout, busybox: &Path) -> Result<()> {
    let base = layout.add_layer(&busybox_layer(busybox)?, Compression::default())?;
    let up = "../".repeat(12);
    let first = Layer::new(vec![
        // Parent-directory escapes, plain and hidden behind a directory component.
        Entry::file(format!("{up}tmp/kiln-evil-dotdot"), "escaped with ../\n"),
        Entry::dir("a"),
        Entry::file(
            format!("a/{up}tmp/kiln-evil-inner-dotdot"),
            "escaped with a/../\n",
        ),
        // An absolute name belongs inside the rootfs, not at the host's /tmp.
        Entry::file("/tmp/kiln-evil-absolute", "absolute entry name\n"),
        // A symlink to the host's root, then a file written through it in the same layer.
        Entry::symlink("rootlink", "/"),
        Entry::file(
            "rootlink/tmp/kiln-evil-via-root-symlink",
            "written through a symlink to /\n",
        ),
        // Absolute symlinks to host paths: one to read (a packer that follows links would copy
        // the host's shadow file into the image), one the next layer writes through.
        Entry::symlink("etc-shadow", "/etc/shadow"),
        Entry::symlink("host-file", "/tmp/kiln-evil-through-host-symlink"),
        // Hard links to host files.
        Entry::hard_link("hardlink-shadow", "/etc/shadow"),
        Entry::hard_link("hardlink-dotdot", format!("{up}etc/shadow")),
        // Device nodes: the host's first disk and physical memory.
        Entry::dir("dev"),
        Entry::new(
            "dev/kiln-evil-sda",
            EntryKind::BlockDevice { major: 8, minor: 0 },
            0o666,
        ),
        Entry::new(
            "dev/kiln-evil-mem",
            EntryKind::CharDevice { major: 1, minor: 1 },
            0o666,
        ),
    ]);
    let first = layout.add_layer(&first, Compression::default())?;
    let second = Layer::new(vec![
        // Through the previous layer's symlinks: a file below the link to /, and a regular file
        // replacing the link to a host path (a naive open(O_TRUNC) follows it).
        Entry::file(
            "rootlink/tmp/kiln-evil-via-root-symlink-layer2",
            "written through a symlink to / from a later layer\n",
        ),
        Entry::file("host-file", "written through a symlink to a host path\n"),
    ]);
    let second = layout.add_layer(&second, Compression::default())?;
    let layers: [&LayerBlob; 3] = [&base, &first, &second];
    let manifest = layout.add_image(&amd64(), &busybox_config(), &layers)?;
    layout.write_index(TAG, &manifest)
}

/// Config media type of a SIF artifact (sylabs/singularity `internal/pkg/client/oras`).
pub const SIF_CONFIG_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
/// Layer media type of a SIF artifact: the image file.
pub const SIF_LAYER_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";

/// Text the `sif` fixture's runscript prints.
pub const SIF_RUNSCRIPT_OUTPUT: &str = "runscript of the sif fixture";

/// Owners and modes the `sif` fixture's SquashFS gives, as `unsquashfs -lln` shows them:
/// `(path, "uid/gid", mode string)`.
pub const SIF_OWNED_ENTRIES: &[(&str, &str, &str)] = &[
    ("/data/owned-1000", "1000/1000", "-rw-r-----"),
    ("/data/private", "1001/1002", "drwx------"),
    ("/data/private/secret", "1001/1002", "-r--------"),
];

/// The `sif` fixture: a busybox rootfs with `/.singularity.d` (a runscript printing
/// [`SIF_RUNSCRIPT_OUTPUT`], `SIF_BASE=yes` in `90-environment.sh`) and files of other owners
/// ([`SIF_OWNED_ENTRIES`]), squashed by `mksquashfs` and wrapped as a SIF, stored as the one
/// layer of an OCI artifact whose config has [`SIF_CONFIG_MEDIA_TYPE`]. Deterministic: time 0
/// everywhere, a fixed SIF id.
fn build_sif(layout: &OciLayout, busybox: &Path) -> Result<()> {
    let work = tempfile::tempdir().map_err(io_error("create a temp dir", "/tmp"))?;
    let root = work.path().join("rootfs");
    let write = |path: &str, text: &str, mode: u32| -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
        }
        fs::write(&path, text).map_err(io_error("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_error("chmod", &path))
    };
    for dir in ["bin", "etc", "tmp", "data/private", ".singularity.d/env"] {
        let dir = root.join(dir);
        fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
    }
    let target = root.join("bin/busybox");
    fs::copy(busybox, &target).map_err(io_error("copy", &target))?;
    for applet in ["sh", "cat", "echo", "id", "ls", "pwd", "test"] {
        let link = root.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link).map_err(io_error("symlink", &link))?;
    }
    write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)?;
    write("etc/group", "root:x:0:\n", 0o644)?;
    write("data/owned-1000", "owned by 1000\n", 0o640)?;
    write("data/private/secret", "private\n", 0o400)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let private = root.join("data/private");
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
            .map_err(io_error("chmod", &private))?;
    }
    write(
        ".singularity.d/runscript",
        &format!("#!/bin/sh\necho \"{SIF_RUNSCRIPT_OUTPUT}\"\n"),
        0o755,
    )?;
    write(
        ".singularity.d/env/90-environment.sh",
        "#!/bin/sh\nexport SIF_BASE=yes\n",
        0o755,
    )?;
    // Owners by pseudo definitions, so that the builder need not be root: root for everything
    // (`-all-root` would override them), then the entries of other users.
    let pseudo = work.path().join("owners.pseudo");
    let mut lines = String::new();
    for entry in walkdir::WalkDir::new(&root)
        .min_depth(1)
        .sort_by_file_name()
    {
        let entry = entry.map_err(|e| SupportError::Io {
            action: "walk",
            path: root.clone(),
            source: e.into(),
        })?;
        let path = entry.path().strip_prefix(&root).unwrap_or(entry.path());
        let owned = SIF_OWNED_ENTRIES
            .iter()
            .find(|(p, _, _)| Path::new(p.trim_start_matches('/')) == path);
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            entry
                .metadata()
                .map_err(|e| SupportError::Io {
                    action: "stat",
                    path: entry.path().to_owned(),
                    source: e.into(),
                })?
                .permissions()
                .mode()
                & 0o7777
        };
        let owner = owned.map_or("0 0".to_owned(), |(_, o, _)| o.replace('/', " "));
        lines.push_str(&format!("{} m {mode:o} {owner}\n", path.display()));
    }
    fs::write(&pseudo, lines).map_err(io_error("write", &pseudo))?;
    let squashfs = work.path().join("rootfs.squashfs");
    let mut mksquashfs = Command::new("mksquashfs");
    mksquashfs
        .arg(&root)
        .arg(&squashfs)
        .args([
            "-noappend",
            "-comp",
            "gzip",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
            "-no-progress",
            "-quiet",
            "-no-xattrs",
        ])
        .arg("-pf")
        .arg(&pseudo);
    command::run(&mut mksquashfs)?;
    let partition = fs::File::open(&squashfs).map_err(io_error("open", &squashfs))?;
    let mut sif = std::io::Cursor::new(Vec::new());
    kiln_proto::sif::write_singularity_image(
        &mut sif,
        kiln_proto::sif::CreateOptions {
            id: *b"kiln-sif-fixture",
            ..kiln_proto::sif::CreateOptions::default()
        },
        b"bootstrap: scratch\n",
        &[],
        kiln_proto::sif::Arch::AMD64,
        partition,
    )
    .map_err(|e| SupportError::Io {
        action: "write the SIF of",
        path: squashfs.clone(),
        source: std::io::Error::other(e),
    })?;
    let manifest = layout.add_artifact(
        SIF_CONFIG_MEDIA_TYPE,
        b"{}",
        SIF_LAYER_MEDIA_TYPE,
        &sif.into_inner(),
    )?;
    layout.write_index(TAG, &manifest)
}

/// Packs a host directory tree as a one-layer image for `platform` and writes it as the OCI
/// layout `out` with reference `tag`. Used for the debootstrap base (`tests/setup/debootstrap.sh`).
///
/// The layout is written beside `out` and renamed into place, so an interrupted run leaves no
/// half layout. Errors as [`crate::rootfs::rootfs_layer`], plus I/O on `out`.
pub fn pack_rootfs(
    rootfs: &Path,
    out: &Path,
    tag: &str,
    platform: &Platform,
    config: &RuntimeConfig,
) -> Result<()> {
    let parent = out.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error("create directory", parent))?;
    let partial = tempfile::Builder::new()
        .prefix(".partial-layout-")
        .tempdir_in(parent)
        .map_err(io_error("create a directory in", parent))?;
    let layout = OciLayout::create(partial.path())?;
    let layer = crate::rootfs::rootfs_layer(rootfs)?;
    // Level 1: the base is packed once, and tests read it far more often than it is written.
    let blob = layout.add_layer(&layer, Compression::fast())?;
    let manifest = layout.add_image(platform, config, &[&blob])?;
    layout.write_index(tag, &manifest)?;
    let built = partial.keep();
    fs::rename(&built, out).map_err(|source| {
        let _ = fs::remove_dir_all(&built);
        SupportError::Io {
            action: "rename into place",
            path: out.to_owned(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(layer: &Layer) -> Vec<String> {
        layer
            .entries()
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect()
    }

    #[test]
    fn busybox_layer_has_shell_and_applet_parents() {
        let layer = busybox_layer(Path::new(DEFAULT_BUSYBOX)).unwrap();
        let paths = paths(&layer);
        for expected in ["bin", "bin/busybox", "bin/sh", "usr", "usr/bin", "tmp"] {
            assert!(paths.iter().any(|p| p == expected), "missing {expected}");
        }
        // Every entry's parent directory is an earlier entry.
        for (i, path) in paths.iter().enumerate() {
            if let Some(parent) = Path::new(path).parent().filter(|p| *p != Path::new("")) {
                let parent = parent.to_string_lossy();
                assert!(
                    paths[..i].iter().any(|p| *p == parent),
                    "{path} before {parent}"
                );
            }
        }
    }

    #[test]
    fn long_path_is_longer_than_a_tar_name_field() {
        assert!(LAYERS_LONG_PATH.len() > 100);
    }

    #[test]
    fn builds_are_byte_identical() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let digests = |dir: &Path| {
            let store = FixtureStore::new(dir, DEFAULT_BUSYBOX);
            Fixture::ALL
                .iter()
                .map(|f| fs::read(store.layout(*f).unwrap().join("index.json")).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(digests(a.path()), digests(b.path()));
    }
}
