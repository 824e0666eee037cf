//! The system calls that set up a sandbox, behind a small trait: [`LinuxSyscall`] makes them,
//! `RecordingSyscall` (tests only) records them, so mount plans and namespace flags are checked
//! without privileges (the youki `syscall` pattern, STYLE.md 2.6). The caller passes the
//! implementation in; nothing picks one behind its back.
//!
//! Process control (`fork`, `execve`, `waitpid`) stays outside the trait: it cannot be recorded
//! meaningfully and is exercised by the end-to-end tests instead.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::{Resource as NixResource, getrlimit, setrlimit};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::sys::statvfs::{FsFlags, fstatvfs};
use nix::unistd::{Gid, Uid};

use super::limits::{Resource, Rlimit};
use super::seccomp::Instruction;

/// What a mount point must be: the kind of the thing mounted on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MountPointKind {
    /// A directory (a filesystem or a bound directory).
    Directory,
    /// A regular file (a bound file or device node).
    File,
}

/// The calls that build a sandbox. Paths are host paths unless said otherwise; errors are the
/// OS errors of the underlying call.
pub(crate) trait Syscall {
    /// unshare(2) with `flags`.
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// Sets the real, effective and saved uid and gid to 0 of the current user namespace.
    fn become_root(&self) -> io::Result<()>;
    /// setrlimit(2), lowered to the current hard limit (raising it needs `CAP_SYS_RESOURCE` in
    /// the initial user namespace, which a rootless worker never has).
    fn set_rlimit(&self, limit: Rlimit) -> io::Result<()>;
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// The flags of the mount holding `path` that a remount inside a user namespace must keep:
    /// the kernel locks them (mount_namespaces(7), "MNT_LOCK_*"), and a remount without them
    /// fails with `EPERM`.
    fn locked_mount_flags(&self, path: &Path) -> io::Result<MsFlags>;
    /// Resolves `target`, an absolute path inside `root`, as if `root` were `/` (symlinks
    /// included, so a hostile rootfs cannot point a mount at a host path), creates it and its
    /// missing parents as `kind`, and returns its host path.
    fn resolve_in_root(
        &self,
        root: &Path,
        target: &str,
        kind: MountPointKind,
    ) -> io::Result<PathBuf>;
    /// Creates the symlink `link` (a host path) pointing at `points_to`.
    fn symlink(&self, points_to: &str, link: &Path) -> io::Result<()>;
    /// Makes `new_root` the root of the mount namespace and detaches the old root.
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    /// prctl(PR_SET_NO_NEW_PRIVS, 1).
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// Brings up the loopback interface of a new network namespace.
    fn bring_up_loopback(&self) -> io::Result<()>;
    /// Installs a seccomp filter (after no_new_privs).
    fn install_seccomp(&self, program: &[Instruction]) -> io::Result<()>;
}

/// Where the real implementation reads the path of an open file.
const PROC_SELF_FD: &str = "/proc/self/fd";

/// The real system calls.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::unshare(flags)?)
    }

    fn become_root(&self) -> io::Result<()> {
        let (uid, gid) = (Uid::from_raw(0), Gid::from_raw(0));
        nix::unistd::setresgid(gid, gid, gid)?;
        Ok(nix::unistd::setresuid(uid, uid, uid)?)
    }

    fn set_rlimit(&self, limit: Rlimit) -> io::Result<()> {
        let resource = match limit.resource {
            Resource::Nproc => NixResource::RLIMIT_NPROC,
            Resource::Nofile => NixResource::RLIMIT_NOFILE,
            Resource::Fsize => NixResource::RLIMIT_FSIZE,
            Resource::Cpu => NixResource::RLIMIT_CPU,
            Resource::Data => NixResource::RLIMIT_DATA,
            Resource::As => NixResource::RLIMIT_AS,
            Resource::Core => NixResource::RLIMIT_CORE,
        };
        let (_, current_hard) = getrlimit(resource)?;
        let hard = limit.hard.min(current_hard);
        Ok(setrlimit(resource, limit.soft.min(hard), hard)?)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        Ok(nix::mount::mount(source, target, fstype, flags, data)?)
    }

    fn locked_mount_flags(&self, path: &Path) -> io::Result<MsFlags> {
        let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())?;
        let fs_flags = fstatvfs(&fd)?.flags();
        let pairs = [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ];
        Ok(pairs
            .into_iter()
            .filter(|(fs, _)| fs_flags.contains(*fs))
            .fold(MsFlags::empty(), |acc, (_, ms)| acc | ms))
    }

    fn resolve_in_root(
        &self,
        root: &Path,
        target: &str,
        kind: MountPointKind,
    ) -> io::Result<PathBuf> {
        let root_fd = open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let components: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
        if components.iter().any(|c| *c == "." || *c == "..") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "mount target with . or ..",
            ));
        }
        let mut found = None;
        for depth in 1..=components.len() {
            let is_last = depth == components.len();
            let prefix = components[..depth].join("/");
            let fd = match open_in_root(&root_fd, &prefix) {
                Err(Errno::ENOENT) => {
                    let parent = open_in_root(&root_fd, &components[..depth - 1].join("/"))?;
                    let name = components[depth - 1];
                    if is_last && kind == MountPointKind::File {
                        // O_NOFOLLOW|O_EXCL: a dangling symlink here is an error, not a way
                        // to create a file elsewhere.
                        drop(openat(
                            &parent,
                            name,
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_WRONLY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o644),
                        )?);
                    } else {
                        mkdirat(&parent, name, Mode::from_bits_truncate(0o755))?;
                    }
                    open_in_root(&root_fd, &prefix)?
                }
                other => other?,
            };
            if is_last {
                found = Some(fd);
            }
        }
        let fd = match found {
            Some(fd) => fd,
            None => open_in_root(&root_fd, "")?,
        };
        let is_dir = SFlag::from_bits_truncate(fstat(&fd)?.st_mode).contains(SFlag::S_IFDIR);
        match (kind, is_dir) {
            (MountPointKind::Directory, false) => return Err(Errno::ENOTDIR.into()),
            (MountPointKind::File, true) => return Err(Errno::EISDIR.into()),
            _ => {}
        }
        let link = format!("{PROC_SELF_FD}/{}", fd.as_raw_fd());
        Ok(PathBuf::from(nix::fcntl::readlink(link.as_str())?))
    }

    fn symlink(&self, points_to: &str, link: &Path) -> io::Result<()> {
        Ok(nix::unistd::symlinkat(
            points_to,
            nix::fcntl::AT_FDCWD,
            link,
        )?)
    }

    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        // pivot_root(".", ".") stacks the old root on the new one; unmounting "." then detaches
        // it, so no path to the host's tree remains (pivot_root(2), NOTES).
        nix::unistd::chdir(new_root)?;
        nix::unistd::pivot_root(".", ".")?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH)?;
        Ok(nix::unistd::chdir("/")?)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        Ok(nix::sys::prctl::set_no_new_privs()?)
    }

    fn bring_up_loopback(&self) -> io::Result<()> {
        super::net::bring_up_loopback()
    }

    fn install_seccomp(&self, program: &[Instruction]) -> io::Result<()> {
        super::seccomp::install(program)
    }
}

/// Opens `path` (relative, possibly empty for the root itself) with `root_fd` as `/`.
fn open_in_root(root_fd: &OwnedFd, path: &str) -> nix::Result<OwnedFd> {
    let path = if path.is_empty() { "." } else { path };
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root_fd.as_fd(), path, how)
}

/// `text` as a C string for `execve`; a NUL byte inside is an error.
fn c_string(text: &[u8]) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

/// Arguments or environment strings as C strings for `execve`.
pub(crate) fn c_strings(texts: &[String]) -> io::Result<Vec<CString>> {
    texts.iter().map(|t| c_string(t.as_bytes())).collect()
}

/// `path` as a C string.
pub(crate) fn c_path(path: &Path) -> io::Result<CString> {
    c_string(path.as_os_str().as_bytes())
}

#[cfg(test)]
pub(crate) mod recording {
    //! A [`Syscall`] that records what it is asked and answers from a script.

    use std::cell::RefCell;

    use super::*;

    /// One recorded call.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) enum Call {
        Unshare(CloneFlags),
        BecomeRoot,
        SetRlimit(Rlimit),
        Mount {
            source: Option<PathBuf>,
            target: PathBuf,
            fstype: Option<String>,
            flags: MsFlags,
            data: Option<String>,
        },
        Resolve {
            target: String,
            kind: MountPointKind,
        },
        Symlink {
            points_to: String,
            link: PathBuf,
        },
        PivotRoot(PathBuf),
        NoNewPrivs,
        LoopbackUp,
        Seccomp(usize),
    }

    /// Records every call; resolves targets by joining them to the root, except those listed
    /// in `missing`, which fail with `ENOENT`.
    pub(crate) struct RecordingSyscall {
        pub calls: RefCell<Vec<Call>>,
        pub locked_flags: MsFlags,
        pub missing: Vec<String>,
    }

    impl Default for RecordingSyscall {
        fn default() -> Self {
            Self {
                calls: RefCell::default(),
                locked_flags: MsFlags::empty(),
                missing: Vec::new(),
            }
        }
    }

    impl RecordingSyscall {
        fn record(&self, call: Call) -> io::Result<()> {
            self.calls.borrow_mut().push(call);
            Ok(())
        }

        /// The mounts made, as `(fstype or "bind", target, flags)`.
        pub fn mounts(&self) -> Vec<(String, PathBuf, MsFlags)> {
            self.calls
                .borrow()
                .iter()
                .filter_map(|c| match c {
                    Call::Mount {
                        target,
                        fstype,
                        flags,
                        ..
                    } => Some((
                        fstype.clone().unwrap_or_else(|| "bind".into()),
                        target.clone(),
                        *flags,
                    )),
                    _ => None,
                })
                .collect()
        }
    }

    impl Syscall for RecordingSyscall {
        fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
            self.record(Call::Unshare(flags))
        }
        fn become_root(&self) -> io::Result<()> {
            self.record(Call::BecomeRoot)
        }
        fn set_rlimit(&self, limit: Rlimit) -> io::Result<()> {
            self.record(Call::SetRlimit(limit))
        }
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            self.record(Call::Mount {
                source: source.map(Path::to_owned),
                target: target.to_owned(),
                fstype: fstype.map(str::to_owned),
                flags,
                data: data.map(str::to_owned),
            })
        }
        fn locked_mount_flags(&self, _path: &Path) -> io::Result<MsFlags> {
            Ok(self.locked_flags)
        }
        fn resolve_in_root(
            &self,
            root: &Path,
            target: &str,
            kind: MountPointKind,
        ) -> io::Result<PathBuf> {
            self.record(Call::Resolve {
                target: target.to_owned(),
                kind,
            })?;
            if self.missing.iter().any(|m| m == target) {
                return Err(Errno::ENOENT.into());
            }
            Ok(root.join(target.trim_start_matches('/')))
        }
        fn symlink(&self, points_to: &str, link: &Path) -> io::Result<()> {
            self.record(Call::Symlink {
                points_to: points_to.to_owned(),
                link: link.to_owned(),
            })
        }
        fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
            self.record(Call::PivotRoot(new_root.to_owned()))
        }
        fn set_no_new_privs(&self) -> io::Result<()> {
            self.record(Call::NoNewPrivs)
        }
        fn bring_up_loopback(&self) -> io::Result<()> {
            self.record(Call::LoopbackUp)
        }
        fn install_seccomp(&self, program: &[Instruction]) -> io::Result<()> {
            self.record(Call::Seccomp(program.len()))
        }
    }
}
