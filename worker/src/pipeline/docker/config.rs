//! The parts of an OCI/Docker image config a Singularity build uses.
//!
//! The metadata step turns these into `/.singularity.d` (sif-squashfs spec 3.3): `Env` into
//! `env/10-docker2singularity.sh`, `Entrypoint`/`Cmd` into the runscript, `Labels` into
//! `labels.json`, and stores the raw config as the `oci-config.json` SIF object. `Entrypoint`
//! and `Cmd` stay `Option` because an absent value and an empty list run differently.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Image config fields, from the config blob's `config` object and its top level.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Env`: `NAME=value` entries in image order.
    pub env: Vec<String>,
    /// `Entrypoint`, if set (`null` counts as unset).
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`, if set.
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`, if set and non-empty.
    pub working_dir: Option<String>,
    /// `User`, if set and non-empty.
    pub user: Option<String>,
    /// `Labels`, sorted by key.
    pub labels: BTreeMap<String, String>,
    /// Top-level `os`.
    pub os: Option<String>,
    /// Top-level `architecture`.
    pub architecture: Option<String>,
    /// Top-level `variant`.
    pub variant: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    config: Option<RawRunConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

impl ImageConfig {
    /// Parses a config blob.
    ///
    /// # Errors
    /// The blob is not JSON of the config's shape.
    pub fn parse(blob: &[u8]) -> Result<Self, serde_json::Error> {
        let raw: RawConfig = serde_json::from_slice(blob)?;
        let run = raw.config;
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(match run {
            Some(run) => Self {
                env: run.env.unwrap_or_default(),
                entrypoint: run.entrypoint,
                cmd: run.cmd,
                working_dir: non_empty(run.working_dir),
                user: non_empty(run.user),
                labels: run.labels.unwrap_or_default(),
                os: raw.os,
                architecture: raw.architecture,
                variant: non_empty(raw.variant),
            },
            None => Self {
                os: raw.os,
                architecture: raw.architecture,
                variant: non_empty(raw.variant),
                ..Self::default()
            },
        })
    }
}

/// The image config's `config` object as go-containerregistry's `v1.Config` holds it, in its
/// field order, each field `omitempty`: what SingularityCE stores as the `oci-config.json` SIF
/// object (`json.Marshal(cf.Config)`, sif-squashfs.md §2.1). Fields it does not know are
/// dropped, as Go's decoder drops them; `WorkingDir`, `User` and the rest survive, so the
/// runtimes that read the object (`singularity run --oci`, `singularity oci`) see them.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GoRunConfig {
    #[serde(default, skip_serializing_if = "is_false")]
    attach_stderr: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    attach_stdin: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    attach_stdout: bool,
    #[serde(default, skip_serializing_if = "is_empty_list")]
    cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    healthcheck: Option<GoHealthConfig>,
    #[serde(default, skip_serializing_if = "is_empty_text")]
    domainname: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_list")]
    entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_empty_list")]
    env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_empty_text")]
    hostname: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_text")]
    image: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_map")]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "is_empty_list")]
    on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_false")]
    open_stdin: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    stdin_once: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    tty: bool,
    #[serde(default, skip_serializing_if = "is_empty_text")]
    user: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_set")]
    volumes: Option<BTreeMap<String, EmptyObject>>,
    #[serde(default, skip_serializing_if = "is_empty_text")]
    working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_set")]
    exposed_ports: Option<BTreeMap<String, EmptyObject>>,
    #[serde(default, skip_serializing_if = "is_false")]
    args_escaped: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    network_disabled: bool,
    #[serde(default, skip_serializing_if = "is_empty_text")]
    mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_text")]
    stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "is_empty_list")]
    shell: Option<Vec<String>>,
}

/// go-containerregistry's `HealthConfig`: durations in nanoseconds.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct GoHealthConfig {
    #[serde(default, skip_serializing_if = "is_empty_list")]
    test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    timeout: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    start_period: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    retries: i64,
}

/// Go's `struct{}`: any JSON object in, `{}` out.
#[derive(Debug, Default)]
struct EmptyObject;

impl<'de> Deserialize<'de> for EmptyObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Self)
    }
}

impl Serialize for EmptyObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        s.serialize_map(Some(0))?.end()
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i64) -> bool {
    *n == 0
}
fn is_empty_list(v: &Option<Vec<String>>) -> bool {
    v.as_ref().is_none_or(Vec::is_empty)
}
fn is_empty_text(v: &Option<String>) -> bool {
    v.as_ref().is_none_or(String::is_empty)
}
fn is_empty_map(v: &Option<BTreeMap<String, String>>) -> bool {
    v.as_ref().is_none_or(BTreeMap::is_empty)
}
fn is_empty_set(v: &Option<BTreeMap<String, EmptyObject>>) -> bool {
    v.as_ref().is_none_or(BTreeMap::is_empty)
}

#[derive(Deserialize)]
struct RawGoConfig {
    #[serde(default)]
    config: Option<GoRunConfig>,
}

/// The `oci-config.json` SIF object for a config blob: its `config` object re-encoded as
/// SingularityCE's `json.Marshal(v1.Config)` writes it (`{}` when the blob has none).
///
/// # Errors
/// The blob is not JSON of the config's shape.
pub fn oci_config_object(blob: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let raw: RawGoConfig = serde_json::from_slice(blob)?;
    Ok(crate::metadata::to_go_json(&raw.config.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_run_config_and_platform() {
        let c = ImageConfig::parse(
            br#"{"architecture":"arm64","variant":"v8","os":"linux",
                "config":{"Env":["PATH=/bin","A=1"],"Entrypoint":null,"Cmd":["/bin/sh"],
                "WorkingDir":"/srv","Labels":{"b":"2","a":"1"}},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.env, ["PATH=/bin", "A=1"]);
        assert_eq!(c.entrypoint, None);
        assert_eq!(c.cmd.as_deref(), Some(&["/bin/sh".to_owned()][..]));
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.labels.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(c.architecture.as_deref(), Some("arm64"));
        assert_eq!(c.variant.as_deref(), Some("v8"));
        assert!(ImageConfig::parse(b"[1]").is_err());
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::default());
    }

    #[test]
    fn oci_config_object_is_the_run_config_as_go_marshals_it() {
        let blob = br#"{"architecture":"amd64","os":"linux",
            "config":{"WorkingDir":"/data","Env":["PATH=/bin","A=<1>"],"Cmd":["sh"],
            "Entrypoint":null,"Labels":{"b":"2","a":"1"},"User":"",
            "Volumes":{"/v":{}},"ArgsEscaped":false,"Unknown":1,
            "Healthcheck":{"Test":["CMD","true"],"Interval":1000}},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        assert_eq!(
            String::from_utf8(oci_config_object(blob).unwrap()).unwrap(),
            r#"{"Cmd":["sh"],"Healthcheck":{"Test":["CMD","true"],"Interval":1000},"Env":["PATH=/bin","A=\u003c1\u003e"],"Labels":{"a":"1","b":"2"},"Volumes":{"/v":{}},"WorkingDir":"/data"}"#
        );
        assert_eq!(oci_config_object(b"{}").unwrap(), b"{}");
        assert!(oci_config_object(br#"{"config":{"Cmd":"sh"}}"#).is_err());
    }
}
