//! The platform a build asks for (`--arch`) and how it picks an entry of an image index.
//!
//! Rules from go-containerregistry, which SingularityCE uses (deffile spec 9.1, step 4): the
//! first entry whose `os` and `architecture` are equal wins; a requested `variant` must be equal
//! too; an entry without a platform counts as `linux/amd64`. One normalisation is added, the
//! one containerd makes: `arm64` without a variant is `arm64/v8`.

use std::fmt;

use oci_client::manifest::{ImageIndexEntry, Platform as OciPlatform};

/// A requested platform: always `linux`, a Go architecture name and an optional variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Go `GOARCH` name: `amd64`, `arm64`, `arm`, `ppc64le`, `s390x`, `riscv64`, `386`...
    pub architecture: String,
    /// CPU variant (`v7` for `arm`, `v8` for `arm64`), if one is required.
    pub variant: Option<String>,
}

/// An `--arch` value that is not `<arch>` or `<arch>/<variant>` in Go's spelling.
#[derive(Debug, thiserror::Error)]
#[error("invalid architecture {0:?}: expected a Go name such as amd64, arm64 or arm/v7")]
pub struct PlatformError(String);

impl Platform {
    /// Parses a build's `--arch` value: `arm64`, `arm/v7`, `linux/arm64/v8`. The common
    /// kernel spellings `x86_64` and `aarch64` are accepted for `amd64` and `arm64`.
    ///
    /// # Errors
    /// [`PlatformError`] for anything else.
    pub fn from_arch(arch: &str) -> Result<Self, PlatformError> {
        let bad = || PlatformError(arch.to_owned());
        let rest = arch.strip_prefix("linux/").unwrap_or(arch);
        let (name, variant) = match rest.split_once('/') {
            Some((name, variant)) => (name, Some(variant)),
            None => (rest, None),
        };
        let name = match name {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let word = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !word(name) || variant.is_some_and(|v| !word(v)) {
            return Err(bad());
        }
        Ok(Self {
            architecture: name.to_owned(),
            variant: variant.map(str::to_owned),
        })
    }

    /// Whether an index entry's platform (or its absence) satisfies this one.
    pub fn matches(&self, entry: Option<&OciPlatform>) -> bool {
        let (os, arch, variant) = match entry {
            Some(p) => (
                p.os.to_string(),
                p.architecture.to_string(),
                p.variant.clone(),
            ),
            None => ("linux".to_owned(), "amd64".to_owned(), None),
        };
        self.matches_parts(&os, &arch, variant.as_deref())
    }

    /// Whether `os`/`arch`/`variant` (as an image config states them) satisfy this platform.
    pub fn matches_parts(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        if os != "linux" || arch != self.architecture {
            return false;
        }
        let Some(wanted) = self.variant.as_deref() else {
            return true;
        };
        let normalised = match (arch, variant) {
            ("arm64", None | Some("")) => Some("v8"),
            (_, v) => v,
        };
        normalised == Some(wanted)
    }

    /// Picks the first matching entry of an image index.
    pub fn choose<'a>(&self, entries: &'a [ImageIndexEntry]) -> Option<&'a ImageIndexEntry> {
        entries.iter().find(|e| self.matches(e.platform.as_ref()))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "linux/{}", self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// `os/arch[/variant]` of an index entry, for error messages.
pub(super) fn describe(entry: &ImageIndexEntry) -> String {
    match &entry.platform {
        Some(p) => match &p.variant {
            Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
            None => format!("{}/{}", p.os, p.architecture),
        },
        None => "unspecified".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> ImageIndexEntry {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn parses_arch_values() {
        assert_eq!(
            Platform::from_arch("arm64").unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::from_arch("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(Platform::from_arch("x86_64").unwrap().architecture, "amd64");
        for bad in ["", "ARM64", "arm64/", "a b", "linux/arm/v7/x", "../x"] {
            assert!(Platform::from_arch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chooses_the_first_entry_matching_arch_and_variant() {
        let entries = vec![
            entry(
                r#"{"mediaType":"m","digest":"sha256:a","size":1,"platform":{"os":"linux","architecture":"amd64"}}"#,
            ),
            entry(
                r#"{"mediaType":"m","digest":"sha256:b","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v6"}}"#,
            ),
            entry(
                r#"{"mediaType":"m","digest":"sha256:c","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}}"#,
            ),
            entry(
                r#"{"mediaType":"m","digest":"sha256:d","size":1,"platform":{"os":"linux","architecture":"arm64"}}"#,
            ),
            entry(
                r#"{"mediaType":"m","digest":"sha256:e","size":1,"platform":{"os":"windows","architecture":"arm64"}}"#,
            ),
        ];
        let pick = |arch: &str| {
            Platform::from_arch(arch)
                .unwrap()
                .choose(&entries)
                .map(|e| e.digest.clone())
        };
        assert_eq!(pick("amd64").as_deref(), Some("sha256:a"));
        assert_eq!(pick("arm").as_deref(), Some("sha256:b"));
        assert_eq!(pick("arm/v7").as_deref(), Some("sha256:c"));
        assert_eq!(pick("arm64").as_deref(), Some("sha256:d"));
        assert_eq!(pick("arm64/v8").as_deref(), Some("sha256:d"));
        assert_eq!(pick("ppc64le"), None);
        let bare = vec![entry(r#"{"mediaType":"m","digest":"sha256:z","size":1}"#)];
        let amd = Platform::from_arch("amd64").unwrap();
        assert_eq!(
            amd.choose(&bare).map(|e| e.digest.as_str()),
            Some("sha256:z")
        );
    }
}
