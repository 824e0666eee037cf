//! The remote build service's bodies (build-api.md §4).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/build`: a build submission (build-api.md §4.1).
///
/// Clients since SingularityCE 3.10 send `definitionRaw` as standard base64 of the definition
/// file's bytes; older ones also send `callbackURL` and `builderRequirements: null`, which are
/// accepted and ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRequest {
    /// The definition file, base64 (standard alphabet, padded), exactly as written.
    #[serde(rename = "definitionRaw")]
    pub definition_raw: String,
    /// Destination in the library; empty means an ephemeral ref chosen by the service.
    #[serde(rename = "libraryRef", default)]
    pub library_ref: String,
    /// Where `Bootstrap: library` images without a host are pulled from.
    #[serde(
        rename = "libraryURL",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub library_url: Option<String>,
    /// Requirements on the builder; only `arch` (a Go architecture name) exists.
    #[serde(
        rename = "builderRequirements",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub builder_requirements: Option<BTreeMap<String, String>>,
    /// `sha256.<hex>` of an uploaded build context.
    #[serde(
        rename = "contextDigest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub context_digest: Option<String>,
    /// The client's absolute working directory, against which `%files` sources resolve.
    #[serde(
        rename = "workingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
}

impl BuildRequest {
    /// The requested architecture, when the client named one.
    pub fn arch(&self) -> Option<&str> {
        self.builder_requirements
            .as_ref()
            .and_then(|r| r.get("arch"))
            .map(String::as_str)
            .filter(|a| !a.is_empty())
    }
}

/// A build as the clients see it (build-api.md §4.1–4.2): the answer to submit and status.
///
/// SingularityCE reads the status once, after the log stream closed with 1000, and requires
/// `isComplete` and `imageSize > 0`; a failed build is complete with size 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// 24 lowercase hex digits.
    pub id: String,
    /// True once the build ended, whatever the outcome.
    #[serde(rename = "isComplete")]
    pub is_complete: bool,
    /// Size of the resulting SIF in bytes; absent until it succeeded.
    #[serde(rename = "imageSize", default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<u64>,
    /// `sha256.<hex>` of the SIF; absent until it succeeded.
    #[serde(
        rename = "imageChecksum",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub image_checksum: Option<String>,
    /// Where the image is or will be, `library://entity/collection/container:tag`.
    #[serde(rename = "libraryRef")]
    pub library_ref: String,
    /// The library the client downloads the result from.
    #[serde(rename = "libraryURL")]
    pub library_url: String,
    /// When the build was submitted, RFC 3339 (old clients decode it as a non-optional time).
    #[serde(rename = "submitTime")]
    pub submit_time: String,
    /// When a worker started it, RFC 3339.
    #[serde(rename = "startTime", default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it ended, RFC 3339.
    #[serde(
        rename = "completeTime",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub complete_time: Option<String>,
    /// Kiln's own detail, ignored by stock clients: `queued`, `running`, `succeeded`, `failed`,
    /// `cancelled`, `timed_out` or `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Kiln's own detail: why a build did not succeed.
    #[serde(
        rename = "failureReason",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_reason: Option<String>,
}

/// `POST /v1/build-context`: the announcement of a build context upload (build-api.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildContextRequest {
    /// Length of the gzip-compressed tar archive, bytes.
    pub size: u64,
    /// `sha256.<lowercase hex>` of the archive bytes.
    pub digest: String,
}

/// `GET /version`: `{"data":{"version":…,"apiVersion":…}}`; the library client needs
/// `apiVersion` when builder and library share a URL (build-api.md §4.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// The service's version.
    pub version: String,
    /// The library API version the service speaks.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_submission_captured_from_the_real_client() {
        let body = r#"{"definitionRaw":"Qm9vdHN0cmFwOiBkb2NrZXIKRnJvbTogYWxwaW5lOjMuMTkKCiVmaWxlcwogICAgL2hvbWUvYWxpY2UvcHJvai9maWxlcy9hLnR4dCAvb3B0L2EudHh0CgolcG9zdAogICAgZWNobyBoaQo=","libraryRef":"library://alice/default/img:latest","libraryURL":"https://library.example","builderRequirements":{"arch":"arm64"},"contextDigest":"sha256.00e2505b1461c196005584fd15c930f4abeedaa20ae5281ca432566f8023c66e","workingDir":"/home/alice/proj"}"#;
        let request: BuildRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.arch(), Some("arm64"));
        assert_eq!(request.working_dir.as_deref(), Some("/home/alice/proj"));
        // Written back it is the same JSON.
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::from_str::<serde_json::Value>(body).unwrap()
        );
    }

    #[test]
    fn reads_old_clients_bodies() {
        let body = r#"{"libraryRef":"","libraryURL":"https://library.example","callbackURL":"","definitionRaw":"Qg==","builderRequirements":null}"#;
        let request: BuildRequest = serde_json::from_str(body).unwrap();
        assert_eq!(request.arch(), None);
        assert_eq!(request.context_digest, None);
    }

    #[test]
    fn build_info_omits_what_is_not_known_yet() {
        let info = BuildInfo {
            id: "5fe5b3609d4b6974c4fa0c99".into(),
            is_complete: false,
            image_size: None,
            image_checksum: None,
            library_ref: "library://alice/remote-builds/rb-5fe5b3609d4b6974c4fa0c99:latest".into(),
            library_url: "https://library.example.org".into(),
            submit_time: "2024-05-01T12:00:00Z".into(),
            start_time: None,
            complete_time: None,
            state: None,
            failure_reason: None,
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"id":"5fe5b3609d4b6974c4fa0c99","isComplete":false,"libraryRef":"library://alice/remote-builds/rb-5fe5b3609d4b6974c4fa0c99:latest","libraryURL":"https://library.example.org","submitTime":"2024-05-01T12:00:00Z"}"#
        );
    }
}
