//! What a build writes into `/.singularity.d` and the SIF's JSON objects, after SingularityCE's
//! `makeBaseEnv` and `insertMetadata` (`shared/specs/sif-squashfs.md` §2.2, §3; `deffile.md` §8.6,
//! §9.1).
//!
//! Everything here is pure: functions return the files to place ([`RootfsEntry`]) or the bytes to
//! store, and the pipeline writes them into the rootfs through its root-confined file access. The
//! scripts are Kiln's own text with SingularityCE's names, modes and behaviour.

mod base_env;
mod go_json;
mod inspect;
mod labels;
mod oci_config;
mod scripts;

pub use base_env::base_environment;
pub use go_json::{to_go_json, to_go_json_indented};
pub use inspect::{AppMetadata, InspectMetadata};
pub use labels::{BuildLabels, build_date_label, merge_labels};
pub use oci_config::{docker_env_script, oci_runscript};
pub use scripts::{append_environment, help_file, section_script};

/// Where the build's metadata lives inside the image.
pub const SINGULARITY_D: &str = "/.singularity.d";

/// One entry to create in the rootfs, at an absolute in-image path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsEntry {
    /// Absolute path inside the image, for example `/.singularity.d/env/01-base.sh`.
    pub path: String,
    /// What to create there.
    pub kind: EntryKind,
}

/// The kind and content of a [`RootfsEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (mode 0755), created only when missing.
    Dir,
    /// A regular file with its permission bits, replacing an existing regular file.
    File {
        /// Permission bits, for example `0o755`.
        mode: u32,
        /// The whole content.
        content: Vec<u8>,
    },
    /// A symbolic link, re-pointed when it points elsewhere, left alone when a non-link exists.
    Symlink {
        /// The link target, relative to the link's directory.
        target: String,
    },
}

impl RootfsEntry {
    fn dir(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            kind: EntryKind::Dir,
        }
    }

    fn file(path: &str, mode: u32, content: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.to_owned(),
            kind: EntryKind::File {
                mode,
                content: content.into(),
            },
        }
    }

    fn symlink(path: &str, target: &str) -> Self {
        Self {
            path: path.to_owned(),
            kind: EntryKind::Symlink {
                target: target.to_owned(),
            },
        }
    }
}
