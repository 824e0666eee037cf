//! Library refs of build results: `entity/collection/container:tag`, as the library client's
//! `IsLibraryPushRef` accepts them (build-api.md §4.1), with or without `library://` or the
//! opaque `library:` of the `scs-build` CLI, and never with a host.

use std::fmt;

/// A parsed library ref (no scheme, one tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryRef {
    entity: String,
    collection: String,
    container: String,
    tag: String,
}

/// `[a-z0-9]+(?:[._-][a-z0-9]+)*`: a path element of a library ref.
pub fn is_ref_element(text: &str) -> bool {
    !text.is_empty()
        && text.split(['.', '_', '-']).all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl LibraryRef {
    /// The ref Kiln chooses when the client sent none: `<user>/remote-builds/rb-<id>:latest`,
    /// like the hosted service's ephemeral refs.
    pub fn ephemeral(user: &str, build_id: &str) -> Self {
        Self {
            entity: user.to_owned(),
            collection: "remote-builds".into(),
            container: format!("rb-{build_id}"),
            tag: "latest".into(),
        }
    }

    /// Parses a client's ref. Of several comma-separated tags the first counts, as in the
    /// download path (build-api.md §5.1); no tag means `latest`.
    ///
    /// # Errors
    /// A message for the client naming the ref.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bare = text
            .strip_prefix("library://")
            .or_else(|| text.strip_prefix("library:"))
            .unwrap_or(text);
        let invalid = || {
            format!(
                "invalid library ref {text:?}: expected library://entity/collection/container[:tag]"
            )
        };
        let (path, tags) = match bare.split_once(':') {
            Some((path, tags)) => (path, Some(tags)),
            None => (bare, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let [entity, collection, container] = parts[..] else {
            return Err(invalid());
        };
        if ![entity, collection, container]
            .into_iter()
            .all(is_ref_element)
        {
            return Err(invalid());
        }
        let tag = match tags {
            None => "latest",
            Some(tags) => tags.split(',').next().unwrap_or_default(),
        };
        if !tags.is_none_or(|tags| tags.split(',').all(is_ref_element)) {
            return Err(invalid());
        }
        Ok(Self {
            entity: entity.to_owned(),
            collection: collection.to_owned(),
            container: container.to_owned(),
            tag: tag.to_owned(),
        })
    }

    /// The owner's entity.
    pub fn entity(&self) -> &str {
        &self.entity
    }

    /// The collection.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// The container.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// The (first) tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl fmt::Display for LibraryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.entity, self.collection, self.container, self.tag
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_clients_forms_and_rejects_hosts() {
        for text in [
            "library://alice/default/img:latest",
            "library:alice/default/img:latest",
            "alice/default/img",
            "alice/default/img:latest,v1",
        ] {
            assert_eq!(
                LibraryRef::parse(text).unwrap().to_string(),
                "alice/default/img:latest",
                "{text}"
            );
        }
        for text in [
            "library://host.example/alice/default/img",
            "alice/img",
            "Alice/default/img",
            "alice/default/img:",
            "alice/../img",
            "alice/default/img:v1,",
        ] {
            assert!(LibraryRef::parse(text).is_err(), "{text}");
        }
        assert_eq!(
            LibraryRef::ephemeral("bob", "5fe5b3609d4b6974c4fa0c99").to_string(),
            "bob/remote-builds/rb-5fe5b3609d4b6974c4fa0c99:latest"
        );
    }
}
