//! The mounts that turn a build's rootfs into the root of a sandbox, as a plan (a plain list of
//! steps, computed from a [`RootfsSpec`]) and its application through a [`Syscall`].
//!
//! What a script sees (environment.md, "Rootless execution"; deffile.md 8.3):
//! - the rootfs, bound on itself (`pivot_root` needs a mount point), read-only when asked;
//! - a fresh `/proc` of the new pid namespace: host processes are invisible;
//! - `/dev` as a small tmpfs with the host's `null`, `zero`, `full`, `random`, `urandom` and
//!   `tty` bound in (mknod is refused in a user namespace), a private devpts instance, a tmpfs
//!   `/dev/shm` and the usual symlinks;
//! - a tmpfs `/tmp`;
//! - the host's `resolv.conf` (network on) and `hosts`, bound read-only, as SingularityCE binds
//!   staged copies (`internal/pkg/build/util.go`).
//!
//! No `/sys`: sysfs mounts only with a new network namespace, and binding the host's would show
//! the host's devices. Every target is resolved inside the rootfs (`RESOLVE_IN_ROOT`), so a
//! rootfs whose `/etc` is a symlink to the host's `/etc` cannot turn a mount against the host.
//! `/proc` is mounted before `pivot_root`: the kernel allows a new proc instance in a user
//! namespace only while a full proc mount is visible in the mount namespace
//! (fs/namespace.c `mnt_already_visible`).

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

use super::message::StepFailure;
use super::syscall::{MountPointKind, Syscall};

/// Host device nodes bound into the sandbox's `/dev`.
pub(crate) const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Size of the sandbox's `/dev/shm`, in bytes: Docker's default, 64 MiB.
const SHM_SIZE_BYTES: u64 = 64 << 20;

/// What to mount for one run; sent from the worker to the helper.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootfsSpec {
    /// Host path of the rootfs; owned by the build user (the sandbox's root).
    pub root: PathBuf,
    /// Whether the rootfs is mounted read-only (`%test`, `run`).
    pub is_read_only: bool,
    /// Host directory holding the device nodes, normally `/dev`.
    pub host_dev: PathBuf,
    /// Host file bound on `/etc/resolv.conf`, if any.
    pub resolv_conf: Option<PathBuf>,
    /// Host file bound on `/etc/hosts`, if any.
    pub hosts: Option<PathBuf>,
    /// Size of the tmpfs on `/tmp`, in bytes.
    pub tmp_size_bytes: u64,
}

/// One step of a mount plan. Targets are absolute paths inside the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MountStep {
    /// Stops mount events from propagating to or from the host (mount_namespaces(7)).
    MakePrivate,
    /// Binds the rootfs on itself.
    BindRoot,
    /// Mounts a new filesystem instance.
    Fresh {
        fstype: &'static str,
        target: &'static str,
        flags: MsFlags,
        data: String,
    },
    /// Binds a host file or directory.
    Bind {
        source: PathBuf,
        target: String,
        kind: MountPointKind,
        is_read_only: bool,
        /// A failure is reported as a warning and the step skipped (`resolv.conf` behind a
        /// dangling symlink should not fail a build).
        is_optional: bool,
    },
    /// Creates a symlink `link` → `points_to`.
    Symlink {
        link: &'static str,
        points_to: &'static str,
    },
    /// Remounts the rootfs read-only (after the mount points have been created in it).
    RemountRootReadOnly,
    /// `pivot_root` into the rootfs and detach the host's tree.
    PivotRoot,
}

/// The mount plan for `spec`, in order.
pub(crate) fn plan(spec: &RootfsSpec) -> Vec<MountStep> {
    let no_exec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut steps = vec![
        MountStep::MakePrivate,
        MountStep::BindRoot,
        MountStep::Fresh {
            fstype: "proc",
            target: "/proc",
            flags: no_exec,
            data: String::new(),
        },
        MountStep::Fresh {
            fstype: "tmpfs",
            target: "/dev",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: "mode=755,size=1m".into(),
        },
    ];
    steps.extend(DEV_NODES.iter().map(|node| MountStep::Bind {
        source: spec.host_dev.join(node),
        target: format!("/dev/{node}"),
        kind: MountPointKind::File,
        is_read_only: false,
        is_optional: false,
    }));
    steps.extend([
        MountStep::Fresh {
            fstype: "devpts",
            target: "/dev/pts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            // gid 5 is `tty` in Debian and Red Hat images; the full id map includes it.
            data: "newinstance,ptmxmode=0666,mode=0620,gid=5".into(),
        },
        MountStep::Symlink {
            link: "/dev/ptmx",
            points_to: "pts/ptmx",
        },
        MountStep::Symlink {
            link: "/dev/fd",
            points_to: "/proc/self/fd",
        },
        MountStep::Symlink {
            link: "/dev/stdin",
            points_to: "/proc/self/fd/0",
        },
        MountStep::Symlink {
            link: "/dev/stdout",
            points_to: "/proc/self/fd/1",
        },
        MountStep::Symlink {
            link: "/dev/stderr",
            points_to: "/proc/self/fd/2",
        },
        MountStep::Fresh {
            fstype: "tmpfs",
            target: "/dev/shm",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: format!("mode=1777,size={SHM_SIZE_BYTES}"),
        },
        MountStep::Fresh {
            fstype: "tmpfs",
            target: "/tmp",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: format!("mode=1777,size={}", spec.tmp_size_bytes),
        },
    ]);
    let etc_files = [
        (&spec.resolv_conf, "/etc/resolv.conf"),
        (&spec.hosts, "/etc/hosts"),
    ];
    for (source, target) in etc_files {
        if let Some(source) = source {
            steps.push(MountStep::Bind {
                source: source.clone(),
                target: target.into(),
                kind: MountPointKind::File,
                is_read_only: true,
                is_optional: true,
            });
        }
    }
    if spec.is_read_only {
        steps.push(MountStep::RemountRootReadOnly);
    }
    steps.push(MountStep::PivotRoot);
    steps
}

/// Applies `steps` to the rootfs `root` through `sys`. Skipped optional steps are passed to
/// `warn`; the first failing required step is returned.
pub(crate) fn apply(
    steps: &[MountStep],
    root: &Path,
    sys: &dyn Syscall,
    warn: &mut dyn FnMut(String),
) -> Result<(), StepFailure> {
    let fail = |step: String| move |error: std::io::Error| StepFailure::new(step, &error);
    for step in steps {
        match step {
            MountStep::MakePrivate => sys
                .mount(
                    None,
                    Path::new("/"),
                    None,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None,
                )
                .map_err(fail("make the mounts private".into()))?,
            MountStep::BindRoot => sys
                .mount(
                    Some(root),
                    root,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .map_err(fail(format!("bind the rootfs {}", root.display())))?,
            MountStep::Fresh {
                fstype,
                target,
                flags,
                data,
            } => {
                let path = sys
                    .resolve_in_root(root, target, MountPointKind::Directory)
                    .map_err(fail(format!("make {target} a mount point")))?;
                let data = (!data.is_empty()).then_some(data.as_str());
                sys.mount(Some(Path::new(fstype)), &path, Some(fstype), *flags, data)
                    .map_err(fail(format!("mount {fstype} on {target}")))?;
            }
            MountStep::Bind {
                source,
                target,
                kind,
                is_read_only,
                is_optional,
            } => {
                let result = bind(sys, root, source, target, *kind, *is_read_only);
                match result {
                    Err(failure) if *is_optional => warn(format!(
                        "skipped: {} ({})",
                        failure.step,
                        std::io::Error::from_raw_os_error(failure.errno)
                    )),
                    other => other?,
                }
            }
            MountStep::Symlink { link, points_to } => {
                let (parent, name) = link.rsplit_once('/').unwrap_or(("", link));
                let dir = sys
                    .resolve_in_root(root, parent, MountPointKind::Directory)
                    .map_err(fail(format!("make {parent} for {link}")))?;
                sys.symlink(points_to, &dir.join(name))
                    .map_err(fail(format!("create the symlink {link}")))?;
            }
            MountStep::RemountRootReadOnly => {
                let locked = sys
                    .locked_mount_flags(root)
                    .map_err(fail("read the rootfs mount flags".into()))?;
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked;
                sys.mount(None, root, None, flags, None)
                    .map_err(fail("remount the rootfs read-only".into()))?;
            }
            MountStep::PivotRoot => sys
                .pivot_root(root)
                .map_err(fail(format!("pivot_root into {}", root.display())))?,
        }
    }
    Ok(())
}

/// Binds `source` on `target` inside `root`, read-only if asked.
fn bind(
    sys: &dyn Syscall,
    root: &Path,
    source: &Path,
    target: &str,
    kind: MountPointKind,
    is_read_only: bool,
) -> Result<(), StepFailure> {
    let step = format!("bind {} on {target}", source.display());
    let path = sys
        .resolve_in_root(root, target, kind)
        .map_err(|e| StepFailure::new(format!("make {target} a mount point"), &e))?;
    sys.mount(Some(source), &path, None, MsFlags::MS_BIND, None)
        .map_err(|e| StepFailure::new(step.clone(), &e))?;
    if is_read_only {
        let locked = sys
            .locked_mount_flags(&path)
            .map_err(|e| StepFailure::new(step.clone(), &e))?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked;
        sys.mount(None, &path, None, flags, None)
            .map_err(|e| StepFailure::new(format!("make {target} read-only"), &e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::syscall::recording::{Call, RecordingSyscall};

    fn spec(is_read_only: bool, resolv_conf: bool) -> RootfsSpec {
        RootfsSpec {
            root: "/build/rootfs".into(),
            is_read_only,
            host_dev: "/dev".into(),
            resolv_conf: resolv_conf.then(|| "/etc/resolv.conf".into()),
            hosts: Some("/etc/hosts".into()),
            tmp_size_bytes: 1 << 30,
        }
    }

    fn position(mounts: &[(String, PathBuf, MsFlags)], fstype: &str, target: &str) -> usize {
        mounts
            .iter()
            .position(|(t, p, _)| t == fstype && p == Path::new(target))
            .unwrap_or_else(|| panic!("no {fstype} mount on {target} in {mounts:?}"))
    }

    #[test]
    fn proc_is_mounted_before_pivot_root_and_everything_inside_the_rootfs() {
        let sys = RecordingSyscall::default();
        apply(
            &plan(&spec(false, true)),
            Path::new("/build/rootfs"),
            &sys,
            &mut |w| panic!("unexpected warning {w}"),
        )
        .unwrap();
        let calls = sys.calls.borrow();
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot(_)))
            .unwrap();
        assert_eq!(pivot, calls.len() - 1, "pivot_root comes last");
        let mounts = sys.mounts();
        assert_eq!(
            mounts[0],
            (
                "bind".into(),
                "/".into(),
                MsFlags::MS_REC | MsFlags::MS_PRIVATE
            )
        );
        assert_eq!(
            mounts[1],
            (
                "bind".into(),
                "/build/rootfs".into(),
                MsFlags::MS_BIND | MsFlags::MS_REC
            )
        );
        let proc = position(&mounts, "proc", "/build/rootfs/proc");
        assert_eq!(
            mounts[proc].2,
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
        );
        let dev = position(&mounts, "tmpfs", "/build/rootfs/dev");
        for node in DEV_NODES {
            let at = position(&mounts, "bind", &format!("/build/rootfs/dev/{node}"));
            assert!(at > dev, "/dev/{node} is bound after /dev is mounted");
        }
        position(&mounts, "devpts", "/build/rootfs/dev/pts");
        position(&mounts, "tmpfs", "/build/rootfs/dev/shm");
        position(&mounts, "tmpfs", "/build/rootfs/tmp");
        // Every mount below the root is on a path inside it.
        for (_, target, _) in &mounts[1..] {
            assert!(target.starts_with("/build/rootfs"), "{target:?}");
        }
    }

    #[test]
    fn host_files_are_bound_read_only_keeping_locked_flags() {
        let sys = RecordingSyscall {
            locked_flags: MsFlags::MS_NOSUID | MsFlags::MS_RELATIME,
            ..Default::default()
        };
        apply(
            &plan(&spec(false, true)),
            Path::new("/r"),
            &sys,
            &mut |_| {},
        )
        .unwrap();
        let mounts = sys.mounts();
        for file in ["/r/etc/resolv.conf", "/r/etc/hosts"] {
            let at = position(&mounts, "bind", file);
            assert_eq!(mounts[at].2, MsFlags::MS_BIND);
            assert_eq!(
                mounts[at + 1],
                (
                    "bind".into(),
                    file.into(),
                    MsFlags::MS_BIND
                        | MsFlags::MS_REMOUNT
                        | MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_RELATIME
                )
            );
        }
    }

    #[test]
    fn network_off_binds_no_resolv_conf_and_read_only_remounts_the_root() {
        let steps = plan(&spec(true, false));
        assert!(
            !steps.iter().any(
                |s| matches!(s, MountStep::Bind { target, .. } if target == "/etc/resolv.conf")
            )
        );
        let n = steps.len();
        assert_eq!(
            steps[n - 2..],
            [MountStep::RemountRootReadOnly, MountStep::PivotRoot]
        );
    }

    #[test]
    fn an_unresolvable_optional_bind_warns_and_a_required_one_fails() {
        let sys = RecordingSyscall {
            missing: vec!["/etc/hosts".into()],
            ..Default::default()
        };
        let mut warnings = Vec::new();
        apply(&plan(&spec(false, true)), Path::new("/r"), &sys, &mut |w| {
            warnings.push(w)
        })
        .unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("skipped: make /etc/hosts a mount point"),
            "{warnings:?}"
        );
        assert!(sys.calls.borrow().last() == Some(&Call::PivotRoot("/r".into())));

        let sys = RecordingSyscall {
            missing: vec!["/proc".into()],
            ..Default::default()
        };
        let failure = apply(
            &plan(&spec(false, true)),
            Path::new("/r"),
            &sys,
            &mut |_| {},
        )
        .unwrap_err();
        assert_eq!(failure.step, "make /proc a mount point");
        assert_eq!(failure.errno, libc::ENOENT);
        assert!(!sys.calls.borrow().contains(&Call::PivotRoot("/r".into())));
    }
}
