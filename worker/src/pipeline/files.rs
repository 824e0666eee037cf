//! `%files`: copies from the uploaded build context and from earlier stages into the rootfs,
//! with SingularityCE's semantics (`deffile.md` §8.4): Go `filepath.Glob` sources, the source
//! path as default destination, `cp -fLr`'s into-a-directory rule, a trailing `/` creating the
//! whole destination directory.
//!
//! Both sides are [`Confined`] roots, so neither a context path nor a stage's symlink reaches
//! outside its tree. From the context every symlink is followed (`cp -L`; the client already
//! turned them into files); from a stage only the matched path itself is followed and links
//! inside copied directories are kept. Copies from the context belong to the image's root, as
//! `cp` run by root makes them; copies from a stage keep their owners and modes, as
//! SingularityCE's tar copy does, which needs the caller to be root of the build's user
//! namespace (`super::tasks`).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::confined::{Confined, Kind};

/// Most matches of one glob.
const MAX_MATCHES: usize = 100_000;

/// Matches `name` against one glob component (`*`, `?`, `[...]`, `[!...]`/`[^...]`, `\` escapes),
/// as Go's `filepath.Match`.
pub fn component_matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, end)) = class(&pattern[p..], name[n])
                        && matched
                    {
                        p += end;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == name[n] => {
                    p += 2;
                    n += 1;
                    continue;
                }
                c if c == name[n] => {
                    p += 1;
                    n += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at the start of `pattern`: whether `c` matches, and the class's length.
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        if pattern[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = pattern[i];
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            matched |= lo <= c && c <= pattern[i + 2];
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    None
}

fn has_meta(component: &[u8]) -> bool {
    component.iter().any(|c| matches!(c, b'*' | b'?' | b'['))
}

/// The paths under `root` matching `pattern` (relative, `/`-separated), sorted; `..` is not
/// allowed in a pattern.
pub fn glob(root: &Confined, pattern: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            continue;
        };
        let part = part.as_encoded_bytes();
        let mut next = Vec::new();
        for base in &found {
            if !has_meta(part) {
                let candidate = base.join(std::ffi::OsStr::from_bytes(part));
                if root.kind(&candidate, false)?.is_some() {
                    next.push(candidate);
                }
                continue;
            }
            if !root.is_dir(base) {
                continue;
            }
            for name in root.list_dir(base)? {
                // As Go: a leading dot is matched by `*` too.
                if component_matches(part, name.as_encoded_bytes()) {
                    next.push(base.join(name));
                }
            }
        }
        if next.len() > MAX_MATCHES {
            return Err(io::Error::other(format!("more than {MAX_MATCHES} matches")));
        }
        found = next;
    }
    found.retain(|p| !p.as_os_str().is_empty());
    found.sort();
    Ok(found)
}

/// Copies `src_path` of `src` to `dst_path` of `dst` with `cp -fLr`'s rules: into an existing
/// directory under the source's name, else to the destination (a trailing `/` creates it
/// as a directory first). `follow_all` follows symlinks below the source too; `keep_owners`
/// gives each copy the owner, group and mode bits (setuid included) of its source.
pub fn copy_entry(
    src: &Confined,
    src_path: &Path,
    dst: &Confined,
    dst_path: &str,
    follow_all: bool,
    keep_owners: bool,
) -> io::Result<()> {
    if dst_path.ends_with('/') {
        dst.create_dir_all(Path::new(dst_path))?;
    } else if let Some(parent) = Path::new(dst_path).parent() {
        dst.create_dir_all(parent)?;
    }
    let mut target = PathBuf::from(dst_path);
    if dst.is_dir(&target) {
        let name = src_path
            .file_name()
            .ok_or_else(|| io::Error::other("the source has no name"))?;
        target.push(name);
    }
    let options = CopyOptions {
        follow_all,
        keep_owners,
    };
    copy_tree(src, src_path, dst, &target, true, options, 0)
}

#[derive(Clone, Copy)]
struct CopyOptions {
    follow_all: bool,
    keep_owners: bool,
}

/// Deepest directory nesting copied.
const MAX_DEPTH: usize = 256;

fn copy_tree(
    src: &Confined,
    from: &Path,
    dst: &Confined,
    to: &Path,
    follow: bool,
    options: CopyOptions,
    depth: usize,
) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "{} is nested more than {MAX_DEPTH} directories deep",
            from.display()
        )));
    }
    let kind = src.kind(from, follow)?;
    let is_symlink = matches!(kind, Some(Kind::Symlink(_)));
    let copied = match kind {
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} does not exist", from.display()),
        )),
        Some(Kind::Dir) => {
            if !dst.is_dir(to) {
                dst.remove_file(to)?;
                dst.create_dir_all(to)?;
            }
            for name in src.list_dir(from)? {
                copy_tree(
                    src,
                    &from.join(&name),
                    dst,
                    &to.join(&name),
                    options.follow_all,
                    options,
                    depth + 1,
                )?;
            }
            Ok(())
        }
        Some(Kind::File(mode)) => {
            let mut reader = src.open_read(from)?;
            let mut writer = dst.create_file(to, mode & 0o777)?;
            io::copy(&mut reader, &mut writer).map(|_| ())
        }
        Some(Kind::Symlink(target)) => dst.symlink(&target, to),
        Some(Kind::Other) => Err(io::Error::other(format!(
            "{} is not a file, directory or symlink",
            from.display()
        ))),
    };
    copied?;
    // A symlink copy leaves an existing non-link in place: that one keeps its owner.
    let is_kept = is_symlink && !matches!(dst.kind(to, false)?, Some(Kind::Symlink(_)));
    if options.keep_owners && !is_kept {
        // After the contents: a directory's own mode may forbid writing into it.
        let (uid, gid, mode) = src.owner_and_mode(from, follow)?;
        dst.set_owner_and_mode(to, uid, gid, mode)?;
    }
    Ok(())
}

/// The context-relative glob pattern of a `%files` source: relative sources resolve against the
/// client's working directory; the leading `/` goes (the context holds paths from `/`).
pub fn context_pattern(source: &str, working_dir: &Path) -> Option<PathBuf> {
    let joined = if source.starts_with('/') {
        PathBuf::from(source)
    } else {
        working_dir.join(source)
    };
    let mut out = PathBuf::new();
    for component in joined.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_follow_go_filepath_match() {
        assert!(component_matches(b"*.txt", b"a.txt"));
        assert!(!component_matches(b"*.txt", b"a.txt.bak"));
        assert!(component_matches(b"a?c", b"abc"));
        assert!(component_matches(b"[a-c]x", b"bx"));
        assert!(!component_matches(b"[!a-c]x", b"bx"));
        assert!(component_matches(b"\\*", b"*"));
        assert!(component_matches(b"*", b".hidden"));
        assert!(component_matches(b"a*b*c", b"aXbYbc"));
    }

    #[test]
    fn context_patterns_resolve_against_the_working_dir() {
        let wd = Path::new("/home/u/proj");
        assert_eq!(
            context_pattern("data/*.csv", wd).unwrap(),
            Path::new("home/u/proj/data/*.csv")
        );
        assert_eq!(context_pattern("/etc/x", wd).unwrap(), Path::new("etc/x"));
        assert_eq!(
            context_pattern("../lib", wd).unwrap(),
            Path::new("home/u/lib")
        );
        assert_eq!(context_pattern("../../../../x", wd), None);
    }

    #[test]
    fn copies_follow_cp_rules() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        super::super::confined::make_root(&a).unwrap();
        super::super::confined::make_root(&b).unwrap();
        std::fs::create_dir_all(a.join("src/sub")).unwrap();
        std::fs::write(a.join("src/sub/f"), "f").unwrap();
        std::fs::write(a.join("one.txt"), "1").unwrap();
        std::os::unix::fs::symlink("f", a.join("src/sub/link")).unwrap();
        std::fs::create_dir(b.join("opt")).unwrap();
        let (src, dst) = (Confined::open(&a).unwrap(), Confined::open(&b).unwrap());
        let matches = glob(&src, Path::new("*.txt")).unwrap();
        assert_eq!(matches, [PathBuf::from("one.txt")]);
        // Into an existing directory, under the source's name.
        copy_entry(&src, Path::new("src"), &dst, "/opt", false, false).unwrap();
        assert_eq!(std::fs::read(b.join("opt/src/sub/f")).unwrap(), b"f");
        assert!(b.join("opt/src/sub/link").is_symlink());
        // A new name; a trailing slash makes a directory.
        copy_entry(&src, Path::new("one.txt"), &dst, "/x/y.txt", false, false).unwrap();
        copy_entry(&src, Path::new("one.txt"), &dst, "/new/", false, false).unwrap();
        assert_eq!(std::fs::read(b.join("x/y.txt")).unwrap(), b"1");
        assert_eq!(std::fs::read(b.join("new/one.txt")).unwrap(), b"1");
        // Following every link dereferences the one inside too.
        copy_entry(&src, Path::new("src"), &dst, "/deref", true, false).unwrap();
        assert!(!b.join("deref/sub/link").is_symlink());
    }
}
