//! A build job: everything a worker needs to run one build, published by the scheduler.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{MessageError, PROTOCOL_VERSION, Versioned, decode};

/// One build, as queued for a worker of [`Job::arch`].
///
/// The definition was parsed and checked by the scheduler before queuing, but a worker parses it
/// again and treats it as hostile: it comes from a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// The build id: 24 lowercase hex digits, unique per submission and stable across
    /// redeliveries.
    pub build_id: String,
    /// The user who submitted the build (the owner of the resulting image).
    pub owner: String,
    /// The definition file exactly as the client sent it (`definitionRaw`, decoded).
    pub definition: String,
    /// Values for `{{ name }}` placeholders (`--build-arg`); `%arguments` defaults fill the rest.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// Go architecture name of the image to build (`amd64`, `arm64`, ...).
    pub arch: String,
    /// Where the result goes in the library, `entity/collection/container:tag` without scheme.
    pub library_ref: String,
    /// The library `Bootstrap: library` images are pulled from when their ref names no host.
    #[serde(default)]
    pub library_url: Option<String>,
    /// The uploaded build context for `%files`, when the client sent one.
    #[serde(default)]
    pub context: Option<BuildContextRef>,
    /// The client's working directory, against which relative `%files` sources resolve.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Wall-time limit of the whole build, in seconds; the worker kills the sandbox when it passes.
    pub timeout_seconds: u64,
    /// Where the worker `PUT`s the finished SIF before it reports `finished`: a one-time
    /// scheduler URL that authorizes itself (no token needed), answering 201. `None` from
    /// schedulers that store results some other way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_url: Option<String>,
    /// Lets `Bootstrap: library` read what the job's owner may read (private images, such as
    /// earlier results in `remote-builds`) from one library, for as long as the build runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library_credential: Option<LibraryCredential>,
}

/// A bearer token for one library; a worker sends it there and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryCredential {
    /// The library the token is good for (`http(s)://host[:port][/prefix]`).
    pub url: String,
    /// The token, sent as `Authorization: Bearer`.
    pub token: String,
}

/// A build context stored by the scheduler (`POST /v1/build-context`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildContextRef {
    /// `sha256.<hex>` of the gzip-compressed tar archive, as the client computed it.
    pub digest: String,
    /// Size of the archive in bytes.
    pub size: u64,
    /// Where a worker downloads the archive from (an internal scheduler URL).
    pub url: String,
}

impl Versioned for Job {
    fn version(&self) -> u32 {
        self.version
    }
}

impl Job {
    /// Serializes the job for publishing.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serializes")
    }

    /// Reads a job from a delivery body.
    ///
    /// # Errors
    /// [`MessageError`] when the bytes are not a job or come from a newer protocol.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MessageError> {
        decode(bytes)
    }

    /// A job of the current protocol version with no build args, context or library URL.
    pub fn new(
        build_id: impl Into<String>,
        owner: impl Into<String>,
        definition: impl Into<String>,
        arch: impl Into<String>,
        library_ref: impl Into<String>,
        timeout_seconds: u64,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            build_id: build_id.into(),
            owner: owner.into(),
            definition: definition.into(),
            build_args: BTreeMap::new(),
            arch: arch.into(),
            library_ref: library_ref.into(),
            library_url: None,
            context: None,
            working_dir: None,
            timeout_seconds,
            result_url: None,
            library_credential: None,
        }
    }
}
