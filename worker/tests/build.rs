//! End-to-end builds with the `kiln-worker` binary, run as the unprivileged build user (as
//! root, CI, through `setpriv`), judged by `siftool`, `unsquashfs` and `kiln-worker run`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kiln_worker::sandbox::BuildUser;

/// The build user the tests run the worker as when they run as root.
const BUILD_USER: &str = "kiln-build";

/// A directory the build user can use, removed at the end.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kiln-build-test-")
            .tempdir()
            .expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }
}

fn build_user() -> Option<BuildUser> {
    if !nix::unistd::getuid().is_root() {
        return None;
    }
    Some(
        BuildUser::from_name(BUILD_USER)
            .expect("look up the build user")
            .unwrap_or_else(|| panic!("no user {BUILD_USER}: run tests/setup/build-user.sh")),
    )
}

/// `kiln-worker ARGS`, as the build user when the tests run as root.
fn worker(args: &[&str]) -> Output {
    let exe = env!("CARGO_BIN_EXE_kiln-worker");
    let mut command = match build_user() {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={}", user.uid),
                &format!("--regid={}", user.gid),
                "--clear-groups",
                "--",
                exe,
            ]);
            c
        }
        None => Command::new(exe),
    };
    command
        .args(args)
        .env("KILN_LOG", "warn")
        .env("TMPDIR", std::env::temp_dir());
    command.output().expect("run kiln-worker")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A gzip tar of `/bin/busybox` at `bin/busybox`, the build context of a scratch build.
fn busybox_context(scratch: &Scratch) -> PathBuf {
    let path = scratch.path("context.tar.gz");
    let file = std::fs::File::create(&path).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_path_with_name("/bin/busybox", "work/proj/busybox")
        .expect("add /bin/busybox (package busybox-static)");
    tar.into_inner().unwrap().finish().unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

const POST_DEF: &str = r#"Bootstrap: scratch

%files
busybox /bin/busybox
busybox /bin/sh

%post
/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /etc /root /home
/bin/busybox --install -s /bin
echo 'root:x:0:0:root:/root:/bin/sh' > /etc/passwd
echo 'root:x:0:' > /etc/group
echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd
echo 'alice:x:1000:' >> /etc/group
mkdir -p /home/alice
chown alice:alice /home/alice
echo "alice's data" > /home/alice/data.txt
chown alice:alice /home/alice/data.txt
mkdir -p /opt/app
echo built > /opt/app/marker
echo 'export FROM_POST=post-value' >> $SINGULARITY_ENVIRONMENT
echo 'org.kiln.from-post yes' >> $SINGULARITY_LABELS

%environment
export GREETING="hello from environment"

%runscript
echo "runscript: $GREETING, $FROM_POST, args: $*"
cat /opt/app/marker
id -un

%labels
Maintainer kiln

%test
test -f /opt/app/marker
echo test ran

%help
A busybox test image.
"#;

#[test]
fn scratch_busybox_with_post_builds_a_sif_that_runs() {
    let scratch = Scratch::new();
    let def = scratch.write("post.def", POST_DEF);
    let context = busybox_context(&scratch);
    let sif = scratch.path("post.sif");
    let out = worker(&[
        "build",
        "--context-tar",
        context.to_str().unwrap(),
        "--working-dir",
        "/work/proj",
        "-o",
        sif.to_str().unwrap(),
        def.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "build failed: {stderr}\n{}",
        text(&out.stdout)
    );
    assert!(stderr.contains("test ran") || text(&out.stdout).contains("test ran"));

    // siftool accepts it, with the objects a native build writes.
    let list = Command::new("siftool")
        .arg("list")
        .arg(&sif)
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", text(&list.stderr));
    let objects = text(&list.stdout);
    for object in ["Def.FILE", "JSON.Generic", "FS (Squashfs/*System/amd64)"] {
        assert!(objects.contains(object), "{objects}");
    }

    // The partition's owners: alice's file is 1000:1000, the rest root's.
    let list = listing(&scratch, &sif);
    assert_eq!(entry(&list, "/home/alice/data.txt").1, "1000/1000");
    assert_eq!(entry(&list, "/opt/app/marker").1, "0/0");
    assert_eq!(entry(&list, "/.singularity.d/runscript").1, "0/0");
    assert!(!list.iter().any(|(p, _, _)| p == "/.post.script"));
    entry(&list, "/.singularity.d/env/91-environment.sh");

    // The runscript runs with %environment and %post's exports applied.
    let run = worker(&["run", sif.to_str().unwrap(), "a", "b"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(
        text(&run.stdout),
        "runscript: hello from environment, post-value, args: a b\nbuilt\nroot\n"
    );

    // Labels: automatic, from %post and from %labels.
    let objects = text(
        &Command::new("siftool")
            .arg("dump")
            .arg("2")
            .arg(&sif)
            .output()
            .unwrap()
            .stdout,
    );
    let meta: serde_json::Value = serde_json::from_str(&objects).expect("inspect metadata is JSON");
    let labels = &meta["data"]["attributes"]["labels"];
    assert_eq!(labels["Maintainer"], "kiln");
    assert_eq!(labels["org.kiln.from-post"], "yes");
    assert_eq!(
        labels["org.label-schema.usage.singularity.deffile.bootstrap"],
        "scratch"
    );
    assert!(labels["org.label-schema.build-date"].is_string());
}

#[test]
fn a_failing_post_ends_with_one_clear_line() {
    let scratch = Scratch::new();
    let def = scratch.write(
        "fail.def",
        "Bootstrap: scratch\n%files\nbusybox /bin/sh\n%post\necho about to fail\nexit 7\n",
    );
    let context = busybox_context(&scratch);
    let sif = scratch.path("fail.sif");
    let out = worker(&[
        "build",
        "--json-events",
        "--context-tar",
        context.to_str().unwrap(),
        "--working-dir",
        "/work/proj",
        "-o",
        sif.to_str().unwrap(),
        def.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(!sif.exists());
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is a JSON event"))
        .collect();
    let log = events
        .iter()
        .any(|e| e.to_string().contains("about to fail"));
    assert!(log, "{events:#?}");
    let last = events.last().unwrap().to_string();
    assert!(last.contains("exited with code 7"), "{last}");
    assert!(last.contains("\"user\""), "{last}");
}

#[test]
fn bad_inputs_end_with_one_clear_error_line() {
    let scratch = Scratch::new();
    let sif = scratch.path("bad.sif");
    for (def, expected) in [
        (
            "Bootstrap: nosuch\nFrom: x\n",
            "invalid build source \"nosuch\"",
        ),
        (
            "Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: http://x\n",
            "remote builder",
        ),
        (
            "Bootstrap: scratch\n%setup\ntouch x\n",
            "%setup runs on the build host",
        ),
        (
            "Bootstrap: scratch\n%files\nmissing.txt\n",
            "%files of stage 1",
        ),
    ] {
        let path = scratch.write("bad.def", def);
        let out = worker(&["build", "-o", sif.to_str().unwrap(), path.to_str().unwrap()]);
        assert!(!out.status.success(), "{def}");
        let stderr = text(&out.stderr);
        let fatal: Vec<&str> = stderr.lines().filter(|l| l.starts_with("FATAL")).collect();
        assert_eq!(fatal.len(), 1, "{stderr}");
        assert!(fatal[0].contains(expected), "{def}: {stderr}");
    }
}

/// The fixture registry and the `--insecure-registry` argument for it.
fn registry() -> (kiln_tests::registry::TestRegistry, String) {
    let registry = kiln_tests::registry::TestRegistry::plain().expect("test registry");
    let addr = registry.addr().to_owned();
    (registry, addr)
}

/// `kiln-worker build` of `def` into `sif` with the registry allowed over HTTP.
fn build_def(scratch: &Scratch, addr: &str, def: &str, sif: &Path, extra: &[&str]) -> Output {
    let path = scratch.write("image.def", def);
    let cache = scratch.path("cache");
    let mut args = vec![
        "build",
        "--insecure-registry",
        addr,
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        sif.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    worker(&args)
}

/// `unsquashfs -lln` of the image's partition: path → "uid/gid" and the mode string.
fn listing(scratch: &Scratch, sif: &Path) -> Vec<(String, String, String)> {
    let squashfs = scratch.path("list.squashfs");
    let objects = Command::new("siftool")
        .arg("list")
        .arg(sif)
        .output()
        .unwrap();
    assert!(objects.status.success(), "{}", text(&objects.stderr));
    let id = text(&objects.stdout)
        .lines()
        .find(|l| l.contains("FS (Squashfs/*System/"))
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .expect("a primary system partition");
    let dump = worker(&[
        "sif",
        "dump",
        &id,
        sif.to_str().unwrap(),
        "-o",
        squashfs.to_str().unwrap(),
    ]);
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    let ls = Command::new("unsquashfs")
        .args(["-lln"])
        .arg(&squashfs)
        .output()
        .unwrap();
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    text(&ls.stdout)
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let path = fields.iter().find(|f| f.starts_with("squashfs-root"))?;
            Some((
                path.trim_start_matches("squashfs-root").to_owned(),
                fields[1].to_owned(),
                fields[0].to_owned(),
            ))
        })
        .collect()
}

/// The bytes of the SIF object named `name`, found with `siftool info`, through `siftool dump`.
fn sif_object(sif: &Path, name: &str) -> Vec<u8> {
    let objects = Command::new("siftool")
        .arg("list")
        .arg(sif)
        .output()
        .unwrap();
    assert!(objects.status.success(), "{}", text(&objects.stderr));
    let id = text(&objects.stdout)
        .lines()
        .filter(|l| l.contains("JSON.Generic"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .find(|id| {
            let info = Command::new("siftool")
                .args(["info", id])
                .arg(sif)
                .output()
                .unwrap();
            text(&info.stdout).contains("Name:") && text(&info.stdout).contains(name)
        })
        .unwrap_or_else(|| panic!("no object {name}: {}", text(&objects.stdout)));
    let dump = Command::new("siftool")
        .args(["dump", &id])
        .arg(sif)
        .output()
        .unwrap();
    assert!(dump.status.success(), "{}", text(&dump.stderr));
    dump.stdout
}

/// Asserts the owner and mode string of each `(path, "uid/gid", mode)`.
fn assert_entries(list: &[(String, String, String)], expected: &[(&str, &str, &str)]) {
    for (path, owner, mode) in expected {
        let found = entry(list, path);
        assert_eq!(
            (found.1.as_str(), found.2.as_str()),
            (*owner, *mode),
            "{path}"
        );
    }
}

fn entry<'a>(list: &'a [(String, String, String)], path: &str) -> &'a (String, String, String) {
    list.iter()
        .find(|(p, _, _)| p == path)
        .unwrap_or_else(|| panic!("{path} not in the image: {list:#?}"))
}

#[test]
fn docker_busybox_with_post_sets_owners_environment_and_runs() {
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("busybox.sif");
    let def = format!(
        "Bootstrap: docker\nFrom: {addr}/busybox:latest\n\n%post\n\
         echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd\n\
         echo 'alice:x:1000:' >> /etc/group\n\
         mkdir -p /home/alice && echo hi > /home/alice/file && chown -R alice:alice /home/alice\n\
         echo 'export FROM_POST=yes' >> $SINGULARITY_ENVIRONMENT\n\n\
         %environment\nexport GREETING=hello\n\n\
         %runscript\necho \"$GREETING $FROM_POST $(cat /home/alice/file) $*\"\n"
    );
    let out = build_def(&scratch, &addr, &def, &sif, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let siftool = Command::new("siftool")
        .arg("list")
        .arg(&sif)
        .output()
        .unwrap();
    assert!(siftool.status.success());
    assert!(text(&siftool.stdout).contains("JSON.Generic"));
    let list = listing(&scratch, &sif);
    assert_eq!(entry(&list, "/home/alice/file").1, "1000/1000");
    assert_eq!(entry(&list, "/bin/busybox").1, "0/0");
    // /etc/shadow keeps the layer's group (42) and mode through the rootless application.
    let shadow = entry(&list, "/etc/shadow");
    assert_eq!(shadow.1, "0/42");
    assert_eq!(shadow.2, "-rw-r-----");
    let run = worker(&["run", sif.to_str().unwrap(), "x"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "hello yes hi x\n");
}

#[test]
fn docker_layers_without_post_stream_with_every_property() {
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("layers.sif");
    let def = format!("Bootstrap: docker\nFrom: {addr}/layers:latest\n\n%labels\nstreamed yes\n");
    let out = build_def(&scratch, &addr, &def, &sif, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = listing(&scratch, &sif);
    assert_eq!(entry(&list, "/data/owned-1000").1, "1000/1000");
    assert_eq!(entry(&list, "/data/group-42").1, "0/42");
    assert!(entry(&list, "/data/setuid").2.starts_with("-rwsr-xr-x"));
    assert!(entry(&list, "/data/fifo").2.starts_with('p'));
    assert!(
        list.iter()
            .any(|(p, _, _)| p == "/.singularity.d/env/10-docker2singularity.sh")
    );
    // Entrypoint `sh -c`, Cmd `cat /data/hello.txt`.
    let run = worker(&["run", sif.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(!text(&run.stdout).is_empty());
    // The run config as SingularityCE stores it: the config's `config` object, WorkingDir kept.
    let config: serde_json::Value =
        serde_json::from_slice(&sif_object(&sif, "oci-config.json")).unwrap();
    assert_eq!(config["WorkingDir"], "/data", "{config}");
    assert_eq!(config["Entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(config["Labels"]["org.kiln.fixture"], "layers");
    assert!(config.get("rootfs").is_none(), "{config}");
    // and the runscript starts there, as `singularity run --oci` does.
    let run = worker(&["run", sif.to_str().unwrap(), "pwd"]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "/data\n");
    // The same image through the built-tree path (a %post) has the same owners.
    let sif2 = scratch.path("layers-post.sif");
    let def = format!("Bootstrap: docker\nFrom: {addr}/layers:latest\n%post\ntouch /made\n");
    let out = build_def(&scratch, &addr, &def, &sif2, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list2 = listing(&scratch, &sif2);
    for path in ["/data/owned-1000", "/data/group-42", "/data/setuid"] {
        assert_eq!(entry(&list, path).1, entry(&list2, path).1, "{path}");
        assert_eq!(entry(&list, path).2, entry(&list2, path).2, "{path}");
    }
}

#[test]
fn multi_stage_copies_from_the_first_stage_with_arguments_and_build_args() {
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("multi.sif");
    let def = format!(
        "Bootstrap: docker\nFrom: {addr}/busybox:latest\nStage: build\n\n\
         %arguments\nGREETING=default\nOTHER=other-default\n\n\
         %post\nmkdir -p /out && echo '{{{{ GREETING }}}} {{{{ OTHER }}}}' > /out/made.txt\n\n\
         Bootstrap: docker\nFrom: {addr}/busybox:latest\n\n\
         %files from build\n/out/made.txt /final/made.txt\n\n\
         %runscript\ncat /final/made.txt\n"
    );
    let out = build_def(
        &scratch,
        &addr,
        &def,
        &sif,
        &["--build-arg", "GREETING=from-cli"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = listing(&scratch, &sif);
    assert!(
        !list.iter().any(|(p, _, _)| p == "/out/made.txt"),
        "only the last stage is the image"
    );
    let run = worker(&["run", sif.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "from-cli other-default\n");
}

#[test]
fn missing_images_and_a_down_registry_end_with_one_clear_line() {
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("x.sif");
    let down = format!("127.0.0.1:{}", kiln_tests::net::free_port().unwrap());
    for (from, insecure, expected) in [
        (
            format!("{addr}/no-such-image:latest"),
            addr.clone(),
            "no-such-image",
        ),
        (
            format!("{addr}/busybox@sha256:{}", "0".repeat(64)),
            addr.clone(),
            "busybox",
        ),
        (format!("{down}/busybox:latest"), down.clone(), &*down),
    ] {
        let def = format!("Bootstrap: docker\nFrom: {from}\n");
        let out = build_def(&scratch, &insecure, &def, &sif, &["--json-events"]);
        assert!(!out.status.success(), "{from}");
        let stdout = text(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        assert!(
            last.contains("failed") && last.contains(expected),
            "{from}: {stdout}"
        );
        let fault = if from.starts_with(&down) {
            "infrastructure"
        } else {
            "user"
        };
        assert!(last.contains(fault), "{from}: {last}");
    }
}

/// A `%post` that leaves what `useradd -m` and package scripts leave: files and directories of
/// other users the worker, outside the user namespace, can neither read nor enter.
const PRIVATE_POST: &str = "\
echo 'bob:x:1001:1001::/home/bob:/bin/sh' >> /etc/passwd
echo 'bob:x:1001:' >> /etc/group
mkdir -p /home/bob/.ssh
echo secret > /home/bob/secret
echo key > /home/bob/.ssh/id
chown -R bob:bob /home/bob
chmod 0700 /home/bob /home/bob/.ssh
chmod 0600 /home/bob/secret
chmod 0400 /home/bob/.ssh/id
echo locked > /etc/gshadow
chown 0:42 /etc/gshadow
chmod 0000 /etc/gshadow
mkdir -p /var/lib/private
echo state > /var/lib/private/state
chown -R 1002:1003 /var/lib/private
chmod 0700 /var/lib/private
chmod 0640 /var/lib/private/state
";

fn assert_private_entries(list: &[(String, String, String)]) {
    assert_entries(
        list,
        &[
            ("/home/bob", "1001/1001", "drwx------"),
            ("/home/bob/.ssh", "1001/1001", "drwx------"),
            ("/home/bob/secret", "1001/1001", "-rw-------"),
            ("/home/bob/.ssh/id", "1001/1001", "-r--------"),
            ("/var/lib/private", "1002/1003", "drwx------"),
            ("/var/lib/private/state", "1002/1003", "-rw-r-----"),
        ],
    );
}

/// The stage trees left in a work directory.
fn stage_trees(work: &Path) -> Vec<String> {
    std::fs::read_dir(work)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("stage-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn files_post_made_private_to_other_users_are_squashed_with_their_owners() {
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("private.sif");
    let work = scratch.path("work");
    let def = format!(
        "Bootstrap: docker\nFrom: {addr}/busybox:latest\n\n%post\n{PRIVATE_POST}\n\
         %runscript\ncat /home/bob/secret /home/bob/.ssh/id /etc/gshadow /var/lib/private/state\n"
    );
    let out = build_def(
        &scratch,
        &addr,
        &def,
        &sif,
        &["--work-dir", work.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = listing(&scratch, &sif);
    assert_private_entries(&list);
    let gshadow = entry(&list, "/etc/gshadow");
    assert_eq!(
        (gshadow.1.as_str(), gshadow.2.as_str()),
        ("0/42", "----------")
    );
    let run = worker(&["run", sif.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "secret\nkey\nlocked\nstate\n");
    // The stage tree, private files and all, is gone.
    assert_eq!(stage_trees(&work), Vec::<String>::new());
}

/// SingularityCE writes the metadata after `%post` as real root, whatever `%post` did to
/// `/.singularity.d`; the worker must too, though outside the namespace it could not enter a
/// directory `%post` gave to another user and made private.
#[test]
fn metadata_is_written_into_a_singularity_d_post_made_private() {
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("private-meta.sif");
    let def = format!(
        "Bootstrap: docker\nFrom: {addr}/busybox:latest\n\n%post\n\
         \x20   echo 'Stamp from-post' >> \"$SINGULARITY_LABELS\"\n\
         \x20   chown -R 1000:1000 /.singularity.d\n\
         \x20   chmod 0700 /.singularity.d /.singularity.d/env /.singularity.d/actions\n\
         \x20   chown 1000:1000 /\n\
         \x20   chmod 0700 /\n\
         %environment\n    export GREETING=hello\n\
         %runscript\n    echo \"runscript says $GREETING\"\n\
         %labels\n    Owner alice\n"
    );
    let out = build_def(&scratch, &addr, &def, &sif, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = listing(&scratch, &sif);
    assert_entries(
        &list,
        &[
            ("/.singularity.d", "1000/1000", "drwx------"),
            ("/.singularity.d/env", "1000/1000", "drwx------"),
            // Rewritten in place, as SingularityCE's os.WriteFile does: the owner stays.
            ("/.singularity.d/runscript", "1000/1000", "-rwxr-xr-x"),
            // New files belong to root.
            ("/.singularity.d/Singularity", "0/0", "-rw-r--r--"),
        ],
    );
    assert!(
        !list
            .iter()
            .any(|(path, _, _)| path == "/.post.script" || path == "/.build.labels"),
        "%post's leftovers are removed: {list:?}"
    );
    let inspect: serde_json::Value =
        serde_json::from_slice(&sif_object(&sif, "inspect-metadata.json")).unwrap();
    let attributes = &inspect["data"]["attributes"];
    assert_eq!(attributes["labels"]["Owner"], "alice", "{inspect}");
    assert_eq!(attributes["labels"]["Stamp"], "from-post", "{inspect}");
    assert!(
        attributes["runscript"]
            .as_str()
            .unwrap_or_default()
            .contains("runscript says"),
        "{inspect}"
    );
    let run = worker(&["run", sif.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "runscript says hello\n");
}

#[test]
fn files_from_a_stage_keep_owners_and_modes() {
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("copied.sif");
    let def = format!(
        "Bootstrap: docker\nFrom: {addr}/busybox:latest\nStage: one\n\n%post\n{PRIVATE_POST}\
         mkdir -p /usr/bin && cp /bin/busybox /usr/bin/setuid-tool\n\
         chown 0:1001 /usr/bin/setuid-tool && chmod 4750 /usr/bin/setuid-tool\n\n\
         Bootstrap: docker\nFrom: {addr}/busybox:latest\n\n\
         %files from one\n/home/bob /copied/\n/var/lib/private /copied/var/lib/private\n\
         /usr/bin/setuid-tool\n\n\
         %runscript\ncat /copied/bob/secret /copied/var/lib/private/state\n"
    );
    let out = build_def(&scratch, &addr, &def, &sif, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = listing(&scratch, &sif);
    assert_entries(
        &list,
        &[
            ("/copied/bob", "1001/1001", "drwx------"),
            ("/copied/bob/.ssh/id", "1001/1001", "-r--------"),
            ("/copied/bob/secret", "1001/1001", "-rw-------"),
            ("/copied/var/lib/private", "1002/1003", "drwx------"),
            ("/copied/var/lib/private/state", "1002/1003", "-rw-r-----"),
            ("/usr/bin/setuid-tool", "0/1001", "-rwsr-x---"),
        ],
    );
    let run = worker(&["run", sif.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "secret\nstate\n");
}

#[test]
fn oras_builds_on_a_sif_artifact_keeping_its_owners_and_metadata() {
    use kiln_tests::fixtures::{SIF_OWNED_ENTRIES, SIF_RUNSCRIPT_OUTPUT};
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    let sif = scratch.path("oras.sif");
    let def = format!(
        "Bootstrap: oras\nFrom: {addr}/sif:latest\n\n\
         %post\necho made > /made\nchown 1000:1000 /made\n\n\
         %environment\nexport ADDED=added\n"
    );
    let out = build_def(&scratch, &addr, &def, &sif, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("could not be verified"),
        "{}",
        text(&out.stderr)
    );
    let list = listing(&scratch, &sif);
    assert_entries(&list, SIF_OWNED_ENTRIES);
    assert_eq!(entry(&list, "/made").1, "1000/1000");
    assert_eq!(entry(&list, "/bin/busybox").1, "0/0");
    // The base image's runscript and environment survive; %environment is appended.
    let run = worker(&["run", sif.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), format!("{SIF_RUNSCRIPT_OUTPUT}\n"));
    let env_def = format!(
        "Bootstrap: oras\nFrom: {addr}/sif:latest\n\n\
         %environment\nexport ADDED=added\n\n%runscript\necho \"$SIF_BASE $ADDED\"\n"
    );
    let sif2 = scratch.path("oras-env.sif");
    let out = build_def(&scratch, &addr, &env_def, &sif2, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let run = worker(&["run", sif2.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), "yes added\n");
    // A container image is not a SIF artifact: one clear line.
    let bad = format!("Bootstrap: oras\nFrom: {addr}/busybox:latest\n");
    let out = build_def(
        &scratch,
        &addr,
        &bad,
        &scratch.path("bad.sif"),
        &["--json-events"],
    );
    assert!(!out.status.success());
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains("not a SIF stored as an OCI artifact") && last.contains("user"),
        "{stdout}"
    );
}

/// A Library API stand-in serving one SIF (issue #8's library is not on main yet):
/// `GET /v1/images/{ref}?arch=amd64` for `kiln/tests/base:latest` and for
/// `kiln/tests/tampered:latest` (whose record announces another hash), `GET /v1/imagefile/{ref}`
/// as a 303 to an absolute blob URL, the blob itself. Stops when dropped.
struct LibraryServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LibraryServer {
    fn start(sif: Vec<u8>) -> Self {
        use axum::extract::{Path as UrlPath, Query, State};
        use axum::http::{StatusCode, header};
        use axum::response::IntoResponse;
        use sha2::Digest as _;

        #[derive(Clone)]
        struct Served {
            sif: std::sync::Arc<Vec<u8>>,
            hash: String,
            base: String,
        }
        let hash = format!("sha256.{}", hex::encode(sha2::Sha256::digest(&sif)));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let served = Served {
            sif: std::sync::Arc::new(sif),
            hash,
            base: url.clone(),
        };
        async fn image(
            State(s): State<Served>,
            UrlPath(reference): UrlPath<String>,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> axum::response::Response {
            let hash = match reference.as_str() {
                "kiln/tests/base:latest" => s.hash.clone(),
                "kiln/tests/tampered:latest" => format!("sha256.{}", "0".repeat(64)),
                _ => return StatusCode::NOT_FOUND.into_response(),
            };
            if query.get("arch").map(String::as_str) != Some("amd64") {
                return StatusCode::NOT_FOUND.into_response();
            }
            axum::Json(serde_json::json!({"data": {
                "id": "0123456789abcdef01234567", "hash": hash, "size": s.sif.len(),
                "uploaded": true, "arch": "amd64"}}))
            .into_response()
        }
        async fn imagefile(State(s): State<Served>) -> axum::response::Response {
            (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, format!("{}/_blob/base.sif", s.base))],
            )
                .into_response()
        }
        async fn blob(State(s): State<Served>) -> Vec<u8> {
            s.sif.as_ref().clone()
        }
        let app = axum::Router::new()
            .route("/v1/images/{*reference}", axum::routing::get(image))
            .route("/v1/imagefile/{*reference}", axum::routing::get(imagefile))
            .route("/_blob/base.sif", axum::routing::get(blob))
            .with_state(served);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LibraryServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn library_builds_on_a_sif_from_the_library_api_checking_its_hash() {
    use kiln_tests::fixtures::{FixtureStore, SIF_OWNED_ENTRIES, SIF_RUNSCRIPT_OUTPUT};
    let sif_bytes = std::fs::read(FixtureStore::in_target_dir().sif_image().unwrap()).unwrap();
    let library = LibraryServer::start(sif_bytes);
    let (_registry, addr) = registry();
    let scratch = Scratch::new();
    // `Library:` names the library; the build's --library is the fallback.
    let sif = scratch.path("library.sif");
    let def = format!(
        "Bootstrap: library\nLibrary: {}\nFrom: kiln/tests/base:latest\n\n\
         %post\necho made > /made\n",
        library.url
    );
    let out = build_def(&scratch, &addr, &def, &sif, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list = listing(&scratch, &sif);
    assert_entries(&list, SIF_OWNED_ENTRIES);
    entry(&list, "/made");
    let run = worker(&["run", sif.to_str().unwrap()]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert_eq!(text(&run.stdout), format!("{SIF_RUNSCRIPT_OUTPUT}\n"));
    let sif2 = scratch.path("library2.sif");
    let def = "Bootstrap: library\nFrom: library://kiln/tests/base\n";
    let out = build_def(&scratch, &addr, def, &sif2, &["--library", &library.url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // A missing image, a file that does not match its hash, an arch the library lacks: one
    // clear line each, the user's fault.
    for (from, extra, expected) in [
        (
            "kiln/tests/missing",
            "amd64",
            "does not exist in the library",
        ),
        ("kiln/tests/tampered", "amd64", "does not match its hash"),
        ("kiln/tests/base", "arm64", "does not exist in the library"),
    ] {
        let def = format!("Bootstrap: library\nFrom: {from}\n");
        let out = build_def(
            &scratch,
            &addr,
            &def,
            &scratch.path("bad.sif"),
            &["--library", &library.url, "--arch", extra, "--json-events"],
        );
        assert!(!out.status.success(), "{from}");
        let stdout = text(&out.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        assert!(
            last.contains(expected) && last.contains("user"),
            "{from}: {stdout}"
        );
    }
}
