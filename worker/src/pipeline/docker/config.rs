//! The parts of an OCI/Docker image config a Singularity build uses.
//!
//! The metadata step turns these into `/.singularity.d` (sif-squashfs spec 3.3): `Env` into
//! `env/10-docker2singularity.sh`, `Entrypoint`/`Cmd` into the runscript, `Labels` into
//! `labels.json`, and stores the raw config as the `oci-config.json` SIF object. `Entrypoint`
//! and `Cmd` stay `Option` because an absent value and an empty list run differently.

use std::collections::BTreeMap;

use serde::Deserialize;

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
}
