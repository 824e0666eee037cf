//! Path resolution and removal inside a rootfs directory that never leaves it.
//!
//! Layer tarballs are hostile input: a symlink `etc -> /etc` in one entry followed by
//! `etc/passwd` in the next is how umoci's CVE-2021-29136 wrote host files during a build.
//! Every path is therefore walked one component at a time from a file descriptor of the root,
//! with `O_NOFOLLOW` on each step. Symlinks met on the way are resolved by hand, as if the
//! rootfs were `/` (an absolute target restarts at the root, `..` stops at the root), which is
//! what the container will see at run time and what `RESOLVE_IN_ROOT` does in the kernel.
//! The walk also yields the *physical* path of what it reached, so that records keyed by path
//! agree with what the image writer later finds on disk.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, SFlag, fchmodat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Linux's own limit on symlinks followed during one lookup (`path_resolution(7)`).
const MAX_SYMLINKS: u32 = 40;

/// Flags for a directory handle used only as the `dirfd` of `*at` calls.
fn dir_path_flags() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Why a path inside the root could not be resolved.
#[derive(Debug)]
pub(super) enum ResolveError {
    /// A component on the way is neither a directory nor a symlink; carries its physical path.
    NotADirectory(PathBuf),
    /// More than [`MAX_SYMLINKS`] symlinks were followed.
    Loop,
    /// A system call failed.
    Sys(&'static str, Errno),
}

/// A directory reached inside the root: a handle for `*at` calls and its physical path
/// relative to the root (empty for the root itself).
#[derive(Debug)]
pub(super) struct ResolvedDir {
    pub fd: OwnedFd,
    pub physical: PathBuf,
}

/// Whether a walk creates missing directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Missing {
    /// Report a missing component as `Ok(None)`.
    Stop,
    /// Create it with mode 0755, like `tar` creates the parents an archive forgot.
    Create,
}

/// The rootfs directory, opened once; all changes go through its descriptor.
#[derive(Debug)]
pub(super) struct RootDir {
    fd: OwnedFd,
    /// The root as a walk's starting point.
    top: Arc<ResolvedDir>,
    /// The directories of the last walk up to its first symlink or `..`, keyed by name: there
    /// logical and physical paths agree, so the next walk starts below the longest shared
    /// prefix. Archives list a tree depth first, so most walks start one or two levels up.
    /// Cleared on every removal, the only change that can alter what a path resolves to.
    chain: Vec<(OsString, Arc<ResolvedDir>)>,
}

impl RootDir {
    /// Opens the rootfs directory. The path itself is trusted configuration, so it may be a
    /// symlink; nothing below it is followed out of it.
    pub fn open(path: &Path) -> Result<Self, Errno> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let top = Arc::new(ResolvedDir {
            fd: openat(fd.as_fd(), ".", dir_path_flags(), Mode::empty())?,
            physical: PathBuf::new(),
        });
        Ok(Self {
            fd,
            top,
            chain: Vec::new(),
        })
    }

    /// The root's own descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Forgets the cached walk; call after anything was removed or replaced.
    pub fn invalidate(&mut self) {
        self.chain.clear();
    }

    /// Walks `logical` (normal components only) from the root. Physical paths of directories
    /// created on the way are appended to `created`.
    pub fn resolve(
        &mut self,
        logical: &[OsString],
        missing: Missing,
        created: &mut Vec<PathBuf>,
    ) -> Result<Option<Arc<ResolvedDir>>, ResolveError> {
        let shared = self
            .chain
            .iter()
            .zip(logical)
            .take_while(|((name, _), l)| name == *l)
            .count();
        self.chain.truncate(shared);
        let mut cur = match self.chain.last() {
            Some((_, dir)) => Arc::clone(dir),
            None => Arc::clone(&self.top),
        };
        let mut physical: Vec<OsString> = logical[..shared].to_vec();
        let mut pending: VecDeque<OsString> = logical[shared..].iter().cloned().collect();
        // Until a symlink or `..` is met, the logical path is the physical one.
        let mut straight = true;
        let mut links = 0;
        while let Some(name) = pending.pop_front() {
            if name.is_empty() || name == "." {
                continue;
            }
            if name == ".." {
                // `..` at the root is the root, as in the kernel's own walk from `/`.
                straight = false;
                physical.pop();
                cur = self.open_physical(&physical)?;
                continue;
            }
            match stat_at(cur.fd.as_fd(), &name) {
                Ok(Some(st)) if is_type(&st, SFlag::S_IFDIR) => {}
                Ok(Some(st)) if is_type(&st, SFlag::S_IFLNK) => {
                    straight = false;
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return Err(ResolveError::Loop);
                    }
                    let target = readlinkat(cur.fd.as_fd(), name.as_os_str())
                        .map_err(|e| ResolveError::Sys("read symlink", e))?;
                    let target = Path::new(&target);
                    if target.is_absolute() {
                        physical.clear();
                        cur = Arc::clone(&self.top);
                    }
                    for comp in target.components().rev() {
                        match comp {
                            Component::Normal(c) => pending.push_front(c.to_owned()),
                            Component::ParentDir => pending.push_front("..".into()),
                            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                        }
                    }
                    continue;
                }
                Ok(Some(_)) => {
                    let mut path: PathBuf = physical.iter().collect();
                    path.push(&name);
                    return Err(ResolveError::NotADirectory(path));
                }
                Ok(None) if missing == Missing::Stop => return Ok(None),
                Ok(None) => {
                    let mode = Mode::from_bits_truncate(0o755);
                    mkdirat(cur.fd.as_fd(), name.as_os_str(), mode)
                        .map_err(|e| ResolveError::Sys("create directory", e))?;
                    // mkdir applies the umask; the mode must not depend on the worker's. The
                    // directory was created just now by this process, so following is safe.
                    fchmodat(
                        cur.fd.as_fd(),
                        name.as_os_str(),
                        mode,
                        FchmodatFlags::FollowSymlink,
                    )
                    .map_err(|e| ResolveError::Sys("set mode of", e))?;
                    created.push(physical.iter().chain([&name]).collect());
                }
                Err(e) => return Err(ResolveError::Sys("inspect", e)),
            }
            let fd = open_dir(cur.fd.as_fd(), &name)?;
            physical.push(name.clone());
            cur = Arc::new(ResolvedDir {
                fd,
                physical: physical.iter().collect(),
            });
            if straight {
                self.chain.push((name, Arc::clone(&cur)));
            }
        }
        Ok(Some(cur))
    }

    /// Opens a physical directory path (no symlinks expected) one component at a time.
    fn open_physical(&self, physical: &[OsString]) -> Result<Arc<ResolvedDir>, ResolveError> {
        let mut cur = Arc::clone(&self.top);
        for (depth, name) in physical.iter().enumerate() {
            cur = Arc::new(ResolvedDir {
                fd: open_dir(cur.fd.as_fd(), name)?,
                physical: physical[..=depth].iter().collect(),
            });
        }
        Ok(cur)
    }
}

/// Opens directory `name` in `parent` as a handle for `*at` calls, refusing a symlink.
fn open_dir(parent: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, ResolveError> {
    openat(parent, name, dir_path_flags(), Mode::empty())
        .map_err(|e| ResolveError::Sys("open directory", e))
}

/// `fstatat` without following a final symlink; `Ok(None)` when the name does not exist.
pub(super) fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a stat result has the given file type.
pub(super) fn is_type(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Removes `name` in `dir`, recursively when it is a directory, never following a symlink.
pub(super) fn remove_tree(dir: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    let Some(st) = stat_at(dir, name)? else {
        return Ok(());
    };
    if !is_type(&st, SFlag::S_IFDIR) {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    let sub = openat(dir, name, dir_path_flags(), Mode::empty())?;
    prune(sub.as_fd(), Path::new(""), &|_| false)?;
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

/// Removes everything below `base` whose physical path (`base_physical` joined with the
/// relative path) `keep` rejects. Directories that are kept are searched too, so only kept
/// entries survive. Iterative, with one open directory at a time, so a deep hostile tree cannot
/// exhaust the stack or the descriptor table.
pub(super) fn prune(
    base: BorrowedFd<'_>,
    base_physical: &Path,
    keep: &dyn Fn(&Path) -> bool,
) -> Result<(), Errno> {
    let mut to_scan: Vec<PathBuf> = vec![PathBuf::new()];
    let mut to_remove: Vec<PathBuf> = Vec::new();
    while let Some(rel) = to_scan.pop() {
        let fd = open_beneath(base, &rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        let dir_fd = nix::unistd::dup(&fd)?;
        let mut dir = Dir::from_fd(fd)?;
        let mut names: Vec<(OsString, bool)> = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                Some(nix::dir::Type::Directory) => true,
                Some(_) => false,
                None => {
                    stat_at(dir_fd.as_fd(), &name)?.is_some_and(|st| is_type(&st, SFlag::S_IFDIR))
                }
            };
            names.push((name, is_dir));
        }
        drop(dir);
        for (name, is_dir) in names {
            let child = rel.join(&name);
            let kept = keep(&base_physical.join(&child));
            if is_dir {
                to_scan.push(child.clone());
                if !kept {
                    to_remove.push(child);
                }
            } else if !kept {
                unlinkat(dir_fd.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
            }
        }
    }
    // Children were discovered after their parents, so the reverse order empties each
    // directory before removing it.
    for rel in to_remove.iter().rev() {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let parent = open_beneath(base, parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
        unlinkat(parent.as_fd(), name, UnlinkatFlags::RemoveDir)?;
    }
    Ok(())
}

/// Opens a path below `base` that must contain no symlink at all (`RESOLVE_NO_SYMLINKS`):
/// used on trees this process just listed.
pub(super) fn open_beneath(
    base: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
) -> Result<OwnedFd, Errno> {
    let path = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(base, path, how)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn comps(path: &str) -> Vec<OsString> {
        path.split('/')
            .filter(|c| !c.is_empty())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn absolute_and_dotdot_symlinks_stay_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("usr/up")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        let mut dir = RootDir::open(&root).unwrap();
        let mut created = Vec::new();

        let got = dir
            .resolve(&comps("abs/usr/up/lib"), Missing::Stop, &mut created)
            .unwrap()
            .unwrap();
        assert_eq!(got.physical, Path::new("usr/lib"));

        let got = dir
            .resolve(&comps("abs/etc"), Missing::Create, &mut created)
            .unwrap()
            .unwrap();
        assert_eq!(got.physical, Path::new("etc"));
        assert_eq!(created, vec![PathBuf::from("etc")]);
        assert!(root.join("etc").is_dir());
    }

    #[test]
    fn a_file_on_the_way_is_not_a_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let mut dir = RootDir::open(tmp.path()).unwrap();
        let err = dir
            .resolve(&comps("f/x"), Missing::Create, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, ResolveError::NotADirectory(p) if p == Path::new("f")));
    }

    #[test]
    fn symlink_loops_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        symlink("b", tmp.path().join("a")).unwrap();
        symlink("a", tmp.path().join("b")).unwrap();
        let mut dir = RootDir::open(tmp.path()).unwrap();
        let err = dir
            .resolve(&comps("a/x"), Missing::Create, &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, ResolveError::Loop));
    }

    #[test]
    fn prune_keeps_only_what_is_kept_and_never_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("precious"), b"x").unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d/keep/gone")).unwrap();
        std::fs::write(root.join("d/keep/kept"), b"x").unwrap();
        std::fs::write(root.join("d/keep/gone/f"), b"x").unwrap();
        symlink(&outside, root.join("d/link")).unwrap();
        let dir = RootDir::open(&root).unwrap();
        let d = openat(dir.fd(), "d", dir_path_flags(), Mode::empty()).unwrap();
        prune(d.as_fd(), Path::new("d"), &|p| {
            p == Path::new("d/keep") || p == Path::new("d/keep/kept")
        })
        .unwrap();
        assert!(root.join("d/keep/kept").exists());
        assert!(!root.join("d/keep/gone").exists());
        assert!(!root.join("d/link").exists());
        assert!(outside.join("precious").exists());

        remove_tree(dir.fd(), OsStr::new("d")).unwrap();
        assert!(!root.join("d").exists());
    }
}
