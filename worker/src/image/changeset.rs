//! The naming rules of an OCI layer changeset (image-spec `layer.md`), in one place for both
//! layer appliers: the one that extracts onto a rootfs directory (`pipeline::layer`) and the
//! one that applies layers straight into the image model ([`super::layers`]).
//!
//! - Names are resolved lexically with the rootfs as `/`: a leading `/` and `.` components go,
//!   and a `..` at the top stays there, as umoci (so SingularityCE) and GNU tar without `-P`
//!   keep such names inside the target. The caller learns that a name climbed, to report it.
//! - `.wh.<name>` hides `<name>` of the lower layers; `.wh..wh..opq` hides every lower entry of
//!   its directory; other `.wh..wh.` names (anywhere in the path) are aufs bookkeeping
//!   (`.wh..wh.plnk/`, `.wh..wh.aufs`) and carry nothing for the image, as Docker skips them.

/// Name of the opaque-directory marker ("Opaque Whiteout").
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Prefix of a whiteout file.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Prefix of aufs metadata; the opaque marker shares it.
pub const AUFS_META_PREFIX: &[u8] = b".wh..wh.";

/// The normal components of an archive name, resolved lexically with the rootfs as `/`, and
/// whether a `..` tried to climb above it.
pub fn logical_components(raw: &[u8]) -> (Vec<&[u8]>, bool) {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut climbed = false;
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => climbed |= out.pop().is_none(),
            c => out.push(c),
        }
    }
    (out, climbed)
}

/// What one archive entry is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a, 'b> {
    /// The rootfs itself (`./`).
    Root,
    /// aufs bookkeeping: skip the entry.
    AufsMeta,
    /// `.wh..wh..opq`: hide the lower entries of directory `parent`.
    Opaque {
        /// The directory's components.
        parent: &'b [&'a [u8]],
    },
    /// `.wh.<hidden>`: hide `hidden` of the lower layers in `parent`.
    Whiteout {
        /// The directory's components.
        parent: &'b [&'a [u8]],
        /// The hidden name.
        hidden: &'a [u8],
    },
    /// An entry to create at `parent/leaf`.
    Entry {
        /// The parent's components.
        parent: &'b [&'a [u8]],
        /// The entry's name.
        leaf: &'a [u8],
    },
}

/// Classifies the entry whose name resolved to `comps` ([`logical_components`]).
pub fn classify<'a, 'b>(comps: &'b [&'a [u8]]) -> Change<'a, 'b> {
    let Some((&leaf, parent)) = comps.split_last() else {
        return Change::Root;
    };
    let is_aufs_meta = |c: &&[u8]| c.starts_with(AUFS_META_PREFIX) && *c != OPAQUE_MARKER;
    if comps.iter().any(is_aufs_meta) {
        return Change::AufsMeta;
    }
    if leaf == OPAQUE_MARKER {
        return Change::Opaque { parent };
    }
    match leaf.strip_prefix(WHITEOUT_PREFIX) {
        Some(hidden) => Change::Whiteout { parent, hidden },
        None => Change::Entry { parent, leaf },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_lexically_inside_the_root() {
        assert_eq!(
            logical_components(b"./a//b/./c"),
            (vec![&b"a"[..], b"b", b"c"], false)
        );
        assert_eq!(
            logical_components(b"a/../../etc"),
            (vec![&b"etc"[..]], true)
        );
        assert_eq!(
            logical_components(b"/etc/passwd"),
            (vec![&b"etc"[..], b"passwd"], false)
        );
        assert_eq!(logical_components(b"./"), (Vec::<&[u8]>::new(), false));
    }

    #[test]
    fn whiteouts_opaque_markers_and_aufs_names_are_told_apart() {
        let comps = |raw: &'static [u8]| logical_components(raw).0;
        assert_eq!(classify(&comps(b"./")), Change::Root);
        let c = comps(b"a/.wh..wh..opq");
        assert_eq!(classify(&c), Change::Opaque { parent: &[b"a"] });
        let c = comps(b"a/.wh.b");
        assert_eq!(
            classify(&c),
            Change::Whiteout {
                parent: &[b"a"],
                hidden: b"b"
            }
        );
        assert_eq!(classify(&comps(b".wh..wh.plnk/123.456")), Change::AufsMeta);
        assert_eq!(classify(&comps(b"a/.wh..wh.aufs")), Change::AufsMeta);
        let c = comps(b"a/b");
        assert_eq!(
            classify(&c),
            Change::Entry {
                parent: &[b"a"],
                leaf: b"b"
            }
        );
    }
}
