//! Image refs in library paths (library-api.md §2, §3): `entity/collection/container[:tag]`,
//! where the tag is a name or the content ref `sha256.<hex>`, and the client passes short
//! paths verbatim, so the server maps `container` to `{E}/default/container` and
//! `collection/container` to `{E}/collection/container` ({E}: the configured default entity).
//! Old clients send an empty entity as `//`, which maps the same way.

use crate::library_ref::is_ref_element;
use crate::upload::is_digest;

/// A parsed image ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Entity name.
    pub entity: String,
    /// Collection name.
    pub collection: String,
    /// Container name.
    pub container: String,
    /// What picks the image.
    pub selector: Selector,
}

/// How a ref picks an image of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A tag (`latest` when the ref has none).
    Tag(String),
    /// `sha256.<hex>` of the file.
    Hash(String),
}

impl ImageRef {
    /// Parses the path part of `/v1/images/{ref}` or `/v1/imagefile/{ref}`; `None` when it
    /// cannot name an image (the caller answers 404, as for a missing one).
    pub fn parse(path: &str, default_entity: &str) -> Option<Self> {
        let path = path.strip_prefix("library://").unwrap_or(path);
        let path = path.trim_start_matches('/');
        // The tag is after the last ':' of the last segment (§3).
        let (path, tag) = match path.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, Some(t)),
            _ => (path, None),
        };
        let mut parts: Vec<&str> = path.split('/').collect();
        if parts.len() == 3 && parts[1].is_empty() {
            parts[1] = "default";
        }
        let parts: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
        let (entity, collection, container) = match parts[..] {
            [c] => (default_entity, "default", c),
            [l, c] => (default_entity, l, c),
            [e, l, c] => (e, l, c),
            _ => return None,
        };
        if ![entity, collection, container]
            .into_iter()
            .all(is_ref_element)
        {
            return None;
        }
        let selector = match tag.filter(|t| !t.is_empty()) {
            None => Selector::Tag("latest".into()),
            // Of several comma-separated tags the first counts (the download path's rule).
            Some(tags) => {
                let tag = tags.split(',').next().unwrap_or_default();
                if is_digest(tag) {
                    Selector::Hash(tag.to_owned())
                } else if is_tag(tag) {
                    Selector::Tag(tag.to_owned())
                } else {
                    return None;
                }
            }
        };
        Some(Self {
            entity: entity.to_owned(),
            collection: collection.to_owned(),
            container: container.to_owned(),
            selector,
        })
    }
}

/// A tag name: letters, digits, `.`, `_`, `-`, at most 128 characters (Docker's rule, which
/// admits the upper case some users tag with).
pub fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<(String, String, String, Selector)> {
        ImageRef::parse(text, "library").map(|r| (r.entity, r.collection, r.container, r.selector))
    }

    #[test]
    fn maps_short_refs_and_reads_tags_and_hashes() {
        let tag = |t: &str| Selector::Tag(t.into());
        let hash = format!("sha256.{}", "ab".repeat(32));
        assert_eq!(
            parse("alice/builds/hello:v1"),
            Some(("alice".into(), "builds".into(), "hello".into(), tag("v1")))
        );
        assert_eq!(
            parse("/alpine"),
            Some((
                "library".into(),
                "default".into(),
                "alpine".into(),
                tag("latest")
            ))
        );
        assert_eq!(
            parse("tools/alpine:3.19"),
            Some((
                "library".into(),
                "tools".into(),
                "alpine".into(),
                tag("3.19")
            ))
        );
        assert_eq!(
            parse("alice//hello:v1,v2"),
            Some(("alice".into(), "default".into(), "hello".into(), tag("v1")))
        );
        assert_eq!(
            parse(&format!("alice/builds/hello:{hash}")),
            Some((
                "alice".into(),
                "builds".into(),
                "hello".into(),
                Selector::Hash(hash)
            ))
        );
        for bad in [
            "",
            "a/b/c/d",
            "Alice/b/c",
            "a/../c",
            "a/b/c:bad tag",
            "a/b/c:x/y",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
