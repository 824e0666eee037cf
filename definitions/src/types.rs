//! The parsed form of one build stage, serialised exactly like SingularityCE's `types.Definition`
//! (`pkg/build/types/definition.go`) through Go's `encoding/json`: the same field names, `null`
//! where Go has a nil map or slice, `[]`/`{}` where the parser makes an empty one, and `raw`,
//! `fullraw` and `metadata` as base64 strings (Go's `[]byte`). Deffile spec §7.
//!
//! The scheduler and the worker exchange this JSON, and `kiln-def parse` prints it, so a value
//! that SingularityCE's parser would print is what comes out here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One build stage of a definition file.
///
/// Maps are `BTreeMap` so that the JSON has sorted keys, as Go's encoder writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Definition {
    /// Header keys (lower-cased) and their values; `None` (JSON `null`) when the stage has no
    /// header line at all.
    #[serde(deserialize_with = "null_as_default::deserialize")]
    pub header: Option<BTreeMap<String, String>>,
    /// What ends up in the image: labels and the runtime scripts.
    #[serde(rename = "imageData")]
    pub image_data: ImageData,
    /// What only the build uses: `%files` and the build-time scripts.
    #[serde(rename = "buildData")]
    pub build_data: BuildData,
    /// `%app*` sections keyed `"<section> <app>"` (and, in a definition that failed to parse,
    /// unknown sections); `None` (JSON `null`) when there are none.
    #[serde(rename = "customData")]
    pub custom_data: Option<BTreeMap<String, String>>,
    /// The text of this stage, verbatim (JSON: base64).
    #[serde(with = "base64_text")]
    pub raw: String,
    /// The text of the whole file, or after templating the templated stages concatenated
    /// (JSON: base64). This is what a build stores in the image as its definition.
    #[serde(rename = "fullraw", with = "base64_text")]
    pub full_raw: String,
    /// App names in order of first appearance in any `%app*` section; `%appinstall` scripts
    /// run in this order.
    #[serde(rename = "appOrder", deserialize_with = "null_as_default::deserialize")]
    pub app_order: Vec<String>,
}

impl Definition {
    /// The value of header `key` (lower-case, e.g. `"bootstrap"`), if the stage has it.
    pub fn header_value(&self, key: &str) -> Option<&str> {
        self.header.as_ref()?.get(key).map(String::as_str)
    }

    /// The stage name from `Stage:`, or `""` for an unnamed stage, as SingularityCE names them.
    pub fn stage_name(&self) -> &str {
        self.header_value("stage").unwrap_or("")
    }
}

/// Data stored in the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageData {
    /// Unused by the parser: always `None` (JSON `null`).
    #[serde(with = "base64_bytes")]
    pub metadata: Option<Vec<u8>>,
    /// `%labels` entries; `{}` when there are none.
    #[serde(deserialize_with = "null_as_default::deserialize")]
    pub labels: BTreeMap<String, String>,
    /// The runtime scripts.
    #[serde(rename = "imageScripts")]
    pub image_scripts: ImageScripts,
}

/// Scripts used after the build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageScripts {
    /// `%help`.
    pub help: Script,
    /// `%environment`.
    pub environment: Script,
    /// `%runscript`.
    #[serde(rename = "runScript")]
    pub run_script: Script,
    /// `%test` (the same value as [`BuildScripts::test`]).
    pub test: Script,
    /// `%startscript`.
    #[serde(rename = "startScript")]
    pub start_script: Script,
}

/// Data used only during the build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildData {
    /// One entry per distinct `%files` argument string, in order of first appearance; `[]`
    /// when there is no `%files` section.
    #[serde(deserialize_with = "null_as_default::deserialize")]
    pub files: Vec<Files>,
    /// The build-time scripts.
    #[serde(rename = "buildScripts")]
    pub build_scripts: BuildScripts,
}

/// Scripts run during the build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildScripts {
    /// `%pre`: runs on the build host before the bootstrap.
    pub pre: Script,
    /// `%setup`: runs on the build host after the bootstrap.
    pub setup: Script,
    /// `%post`: runs in the container.
    pub post: Script,
    /// `%test` (the same value as [`ImageScripts::test`]).
    pub test: Script,
    /// `%arguments`: `KEY=value` defaults for templating.
    pub arguments: Script,
}

/// One script section: the text after the section name on its line, and the body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Script {
    /// Everything after the first space of the section line, verbatim (comments included).
    pub args: String,
    /// The body, every line ending in `\n`; repeated sections are concatenated.
    pub script: String,
}

/// One `%files` section (all sections with the same argument string merged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Files {
    /// Everything after the first space of the section line, e.g. `from build`.
    pub args: String,
    /// The copy list; JSON `null` when empty, as Go leaves the slice nil.
    #[serde(with = "empty_as_null")]
    pub files: Vec<FileTransport>,
}

impl Files {
    /// The build stage this section copies from, by SingularityCE's rule (`Files.Stage()`): the
    /// arguments cut at `#`, split on whitespace, exactly two words of which the first is not
    /// `stage`. `None` means a copy from the build context (the host, for SingularityCE).
    pub fn stage(&self) -> Option<&str> {
        let cut = self.args.split('#').next().unwrap_or("");
        let mut words = cut.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some(first), Some(name), None) if first != "stage" => Some(name),
            _ => None,
        }
    }
}

/// One line of a `%files` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileTransport {
    /// The source path or glob, with surrounding `"` removed.
    pub source: String,
    /// The destination, `""` when the line names only a source.
    pub destination: String,
}

/// Go writes a nil map or slice as `null`; reading accepts `null` as the empty value.
mod null_as_default {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }
}

/// `Files.files`: a nil slice in Go when empty, so `null`.
mod empty_as_null {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::FileTransport;

    pub fn serialize<S: Serializer>(v: &[FileTransport], s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<FileTransport>, D::Error> {
        Ok(Option::<Vec<FileTransport>>::deserialize(d)?.unwrap_or_default())
    }
}

/// Text held as Go `[]byte`: a base64 string in JSON (`null` reads as empty).
mod base64_text {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let Some(encoded) = Option::<String>::deserialize(d)? else {
            return Ok(String::new());
        };
        let bytes = STANDARD.decode(encoded).map_err(D::Error::custom)?;
        String::from_utf8(bytes).map_err(D::Error::custom)
    }
}

/// Optional bytes as Go `[]byte`: `null` when nil, else base64.
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|encoded| STANDARD.decode(encoded).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_definition_serialises_like_go() {
        let value = serde_json::to_value(Definition::default()).unwrap();
        let expected = serde_json::json!({
            "header": null,
            "imageData": {"metadata": null, "labels": {}, "imageScripts": {
                "help": {"args": "", "script": ""}, "environment": {"args": "", "script": ""},
                "runScript": {"args": "", "script": ""}, "test": {"args": "", "script": ""},
                "startScript": {"args": "", "script": ""}}},
            "buildData": {"files": [], "buildScripts": {
                "pre": {"args": "", "script": ""}, "setup": {"args": "", "script": ""},
                "post": {"args": "", "script": ""}, "test": {"args": "", "script": ""},
                "arguments": {"args": "", "script": ""}}},
            "customData": null, "raw": "", "fullraw": "", "appOrder": []
        });
        assert_eq!(value, expected);
    }

    #[test]
    fn empty_files_section_is_null_and_round_trips() {
        let mut def = Definition {
            raw: "Bootstrap: docker\n".into(),
            ..Definition::default()
        };
        def.build_data.files.push(Files::default());
        let json = serde_json::to_value(&def).unwrap();
        assert_eq!(
            json["buildData"]["files"],
            serde_json::json!([{"args": "", "files": null}])
        );
        assert_eq!(json["raw"], "Qm9vdHN0cmFwOiBkb2NrZXIK");
        let back: Definition = serde_json::from_value(json).unwrap();
        assert_eq!(back, def);
    }

    #[test]
    fn files_stage_follows_singularityce() {
        let stage = |args: &str| {
            Files {
                args: args.into(),
                files: vec![],
            }
            .stage()
            .map(str::to_owned)
        };
        assert_eq!(stage("from build"), Some("build".into()));
        assert_eq!(stage("from build # copy"), Some("build".into()));
        assert_eq!(stage("stage build"), None);
        assert_eq!(stage("a b c"), None);
        assert_eq!(stage("   "), None);
        assert_eq!(stage(""), None);
    }
}
