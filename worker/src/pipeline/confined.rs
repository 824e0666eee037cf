//! Root-confined file access for the build's host-side steps (`%files`, `/.singularity.d`):
//! every path is resolved by the kernel with `RESOLVE_IN_ROOT`, so a symlink the base image or
//! `%post` planted (`/.singularity.d -> /etc`, `/tmp/x -> /../../home`) resolves inside the
//! rootfs, as the container would see it, and never reaches a host file.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{UnlinkatFlags, symlinkat, unlinkat};

use crate::metadata::{EntryKind, RootfsEntry};

/// Largest in-image file [`Confined::read`] returns (labels, environment scripts), in bytes.
pub const MAX_READ_BYTES: u64 = 16 << 20;

/// A rootfs directory, opened once; all access goes through its descriptor.
#[derive(Debug)]
pub struct Confined {
    root: OwnedFd,
    path: PathBuf,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        // No mode: openat2 refuses one without O_CREAT, and files are created with openat.
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// `path` without its root and `.` components; `..` is kept (the kernel stops it at the root).
fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| {
            !matches!(
                c,
                Component::RootDir | Component::CurDir | Component::Prefix(_)
            )
        })
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

fn errno(e: Errno) -> io::Error {
    io::Error::from(e)
}

impl Confined {
    /// Opens the rootfs at `path` (trusted configuration).
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        Ok(Self {
            root,
            path: path.to_owned(),
        })
    }

    /// The rootfs's host path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_at(&self, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
        openat2(self.root.as_fd(), &relative(path), how(flags)).map_err(errno)
    }

    /// The parent directory of `path` (resolved in the root) and the final name; `None` as the
    /// name for the root itself.
    fn parent(&self, path: &Path) -> io::Result<(OwnedFd, Option<PathBuf>)> {
        let rel = relative(path);
        match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) if name != OsStr::new("..") => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                let fd = self.open_at(parent, OFlag::O_PATH | OFlag::O_DIRECTORY)?;
                Ok((fd, Some(PathBuf::from(name))))
            }
            _ => Ok((
                self.open_at(&rel, OFlag::O_PATH | OFlag::O_DIRECTORY)?,
                None,
            )),
        }
    }

    /// Whether `path` resolves to an existing directory (symlinks followed inside the root).
    pub fn is_dir(&self, path: &Path) -> bool {
        self.open_at(path, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .is_ok()
    }

    /// Whether something (a dangling symlink included) exists at `path`.
    pub fn exists(&self, path: &Path) -> bool {
        self.open_at(path, OFlag::O_PATH | OFlag::O_NOFOLLOW)
            .is_ok()
    }

    /// Creates `path` and its missing parents as directories (mode 0755).
    pub fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let rel = relative(path);
        let mut so_far = PathBuf::new();
        for component in rel.components() {
            so_far.push(component);
            if self.is_dir(&so_far) {
                continue;
            }
            let (parent, name) = self.parent(&so_far)?;
            let Some(name) = name else { continue };
            match mkdirat(
                parent.as_fd(),
                name.as_path(),
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno(e)),
            }
            if !self.is_dir(&so_far) {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", so_far.display()),
                ));
            }
        }
        Ok(())
    }

    /// Creates (or truncates) the regular file at `path` with `mode`; the parent must exist. An
    /// existing symlink at `path` is replaced, never written through.
    pub fn create_file(&self, path: &Path, mode: u32) -> io::Result<File> {
        let (parent, name) = self.parent(path)?;
        let Some(name) = name else {
            return Err(io::Error::from(io::ErrorKind::IsADirectory));
        };
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOFOLLOW;
        let open = || {
            nix::fcntl::openat(
                parent.as_fd(),
                name.as_path(),
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(mode),
            )
        };
        let fd = match open() {
            Err(Errno::ELOOP) => {
                unlinkat(parent.as_fd(), name.as_path(), UnlinkatFlags::NoRemoveDir)
                    .map_err(errno)?;
                open().map_err(errno)?
            }
            other => other.map_err(errno)?,
        };
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(errno)?;
        Ok(File::from(fd))
    }

    /// Writes a whole file.
    pub fn write(&self, path: &Path, mode: u32, content: &[u8]) -> io::Result<()> {
        self.create_file(path, mode)?.write_all(content)
    }

    /// Reads a regular file of at most [`MAX_READ_BYTES`]; `None` if nothing is there.
    pub fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let fd = match self.open_at(path, OFlag::O_RDONLY) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Ok(None);
        }
        let mut out = Vec::new();
        file.take(MAX_READ_BYTES).read_to_end(&mut out)?;
        Ok(Some(out))
    }

    /// Opens a file for reading (symlinks followed inside the root).
    pub fn open_read(&self, path: &Path) -> io::Result<File> {
        self.open_at(path, OFlag::O_RDONLY).map(File::from)
    }

    /// Creates a symlink at `path`; an existing symlink is re-pointed, anything else is left.
    pub fn symlink(&self, target: &Path, path: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(path)?;
        let Some(name) = name else { return Ok(()) };
        match symlinkat(target, parent.as_fd(), name.as_path()) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                let existing = nix::fcntl::readlinkat(parent.as_fd(), name.as_path());
                match existing {
                    Ok(old) if Path::new(&old) != target => {
                        unlinkat(parent.as_fd(), name.as_path(), UnlinkatFlags::NoRemoveDir)
                            .map_err(errno)?;
                        symlinkat(target, parent.as_fd(), name.as_path()).map_err(errno)
                    }
                    // The same link, or not a symlink: leave it.
                    _ => Ok(()),
                }
            }
            Err(e) => Err(errno(e)),
        }
    }

    /// Creates a FIFO at `path` (mode 0644 until the caller sets one); the parent must exist.
    pub fn make_fifo(&self, path: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(path)?;
        let Some(name) = name else {
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        };
        nix::unistd::mkfifoat(
            parent.as_fd(),
            name.as_path(),
            Mode::from_bits_truncate(0o644),
        )
        .map_err(errno)
    }

    /// Removes a file (not a directory) if it exists.
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (parent, name) = self.parent(path)?;
        let Some(name) = name else { return Ok(()) };
        match unlinkat(parent.as_fd(), name.as_path(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// What is at `path`, the final component not followed; `None` if nothing is.
    pub fn kind(&self, path: &Path, follow: bool) -> io::Result<Option<Kind>> {
        let flags = if follow {
            OFlag::O_PATH
        } else {
            OFlag::O_PATH | OFlag::O_NOFOLLOW
        };
        let fd = match self.open_at(path, flags) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let st = nix::sys::stat::fstat(&fd).map_err(errno)?;
        let mode = st.st_mode & libc::S_IFMT;
        Ok(Some(match mode {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File(st.st_mode & 0o7777),
            libc::S_IFLNK => {
                let (parent, name) = self.parent(path)?;
                let name = name.unwrap_or_else(|| PathBuf::from("."));
                let target =
                    nix::fcntl::readlinkat(parent.as_fd(), name.as_path()).map_err(errno)?;
                Kind::Symlink(PathBuf::from(target))
            }
            _ => Kind::Other,
        }))
    }

    /// Owner, group and permission bits (`mode & 0o7777`) of `path`, the final component
    /// followed only if `follow`.
    pub fn owner_and_mode(&self, path: &Path, follow: bool) -> io::Result<(u32, u32, u32)> {
        let flags = if follow {
            OFlag::O_PATH
        } else {
            OFlag::O_PATH | OFlag::O_NOFOLLOW
        };
        let fd = self.open_at(path, flags)?;
        let st = nix::sys::stat::fstat(&fd).map_err(errno)?;
        Ok((st.st_uid, st.st_gid, st.st_mode & 0o7777))
    }

    /// Gives `path` the owner `uid:gid` and, unless it is a symlink, the permission bits
    /// `mode` (after the owner: `chown` clears setuid and setgid). A symlink at `path` is
    /// changed itself, never followed. Needs root of the namespace that maps the ids.
    pub fn set_owner_and_mode(&self, path: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
        let (uid, gid) = (
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        let (parent, name) = self.parent(path)?;
        let name = name.unwrap_or_else(|| PathBuf::from("."));
        let st = nix::sys::stat::fstatat(
            parent.as_fd(),
            name.as_path(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            return nix::unistd::fchownat(
                parent.as_fd(),
                name.as_path(),
                uid,
                gid,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno);
        }
        // Opened, not named: the change lands on this inode and nowhere a link could point.
        // O_NONBLOCK: a FIFO must not block the open.
        let fd = nix::fcntl::openat(
            parent.as_fd(),
            name.as_path(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        nix::unistd::fchown(&fd, uid, gid).map_err(errno)?;
        fchmod(&fd, Mode::from_bits_truncate(mode)).map_err(errno)
    }

    /// Lists the names in directory `path`.
    pub fn list_dir(&self, path: &Path) -> io::Result<Vec<std::ffi::OsString>> {
        let fd = self.open_at(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
        // The descriptor's /proc link reopens exactly the directory resolved in the root.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", fd.as_raw_fd()))? {
            names.push(entry?.file_name());
        }
        names.sort();
        Ok(names)
    }

    /// Applies the base layout and metadata entries in order, with [`EntryKind`]'s rules.
    pub fn apply_entries(&self, entries: &[RootfsEntry]) -> io::Result<()> {
        for entry in entries {
            let path = Path::new(&entry.path);
            let result = match &entry.kind {
                EntryKind::Dir => self.create_dir_all(path),
                EntryKind::File { mode, content } => self.write(path, *mode, content),
                EntryKind::Symlink { target } => self.symlink(Path::new(target), path),
            };
            result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", entry.path)))?;
        }
        Ok(())
    }
}

/// The type of an entry, as [`Confined::kind`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file and its permission bits.
    File(u32),
    /// A symbolic link and its target.
    Symlink(PathBuf),
    /// A device, FIFO or socket.
    Other,
}

/// Makes `path` a fresh directory with mode 0755 (the image's `/`).
pub fn make_root(path: &Path) -> io::Result<()> {
    std::fs::create_dir(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = dir.path().join("root");
        make_root(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../outside", root.join("up")).unwrap();
        let confined = Confined::open(&root).unwrap();
        // Both links resolve to paths inside the root that do not exist: the writes fail or
        // land inside, never outside.
        let _ = confined.create_dir_all(Path::new("/escape/sub"));
        let _ = confined.write(Path::new("/up/file"), 0o644, b"x");
        let _ = confined.write(Path::new("/escape/file"), 0o644, b"x");
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        std::fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
        confined.create_dir_all(Path::new("/escape/sub")).unwrap();
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("sub")
                .is_dir()
        );
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn a_file_replaces_a_planted_symlink_instead_of_writing_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        make_root(&root).unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("runscript")).unwrap();
        let confined = Confined::open(&root).unwrap();
        confined
            .write(Path::new("/runscript"), 0o755, b"#!/bin/sh\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(
            std::fs::read(root.join("runscript")).unwrap(),
            b"#!/bin/sh\n"
        );
    }
}
