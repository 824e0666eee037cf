//! The `inspect-metadata.json` SIF object: what `singularity inspect` shows without opening the
//! image (`sif-squashfs.md` §2.2). Field order and omission rules follow SingularityCE's
//! `inspect.Metadata`, so the bytes match what a native build writes for the same files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::to_go_json;

/// The attributes of an image, each the content of its file with trailing newlines removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InspectMetadata {
    /// SCIF apps by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, AppMetadata>,
    /// `10-docker*.sh` and `9*-environment.sh` by absolute in-image path.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// `labels.json`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `/.singularity.d/runscript`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runscript: String,
    /// `/.singularity.d/test`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub test: String,
    /// `/.singularity.d/runscript.help`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub helpfile: String,
    /// `/.singularity.d/Singularity`, the definition file.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub deffile: String,
    /// `/.singularity.d/startscript`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub startscript: String,
}

/// The attributes of one SCIF app, from `/scif/apps/<name>/scif/`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppMetadata {
    /// `env/9*-environment.sh` by absolute in-image path.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// `labels.json`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `runscript`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub runscript: String,
    /// `startscript`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub startscript: String,
    /// `test`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub test: String,
    /// `runscript.help`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub helpfile: String,
}

#[derive(Serialize)]
struct Document<'a> {
    data: Data<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Data<'a> {
    attributes: &'a InspectMetadata,
}

impl InspectMetadata {
    /// Trims a file's content the way `singularity inspect` does before storing it.
    pub fn file_value(content: &[u8]) -> String {
        String::from_utf8_lossy(content)
            .trim_end_matches('\n')
            .to_owned()
    }

    /// The object's bytes: compact Go JSON, no trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_go_json(&Document {
            data: Data { attributes: self },
            kind: "container",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_native_build_byte_for_byte() {
        // The shape and values of busybox_amd64.sif's object 2 (sif-squashfs.md §2.2), with a
        // shorter runscript.
        let mut metadata = InspectMetadata {
            deffile: InspectMetadata::file_value(b"BootStrap: docker\nFrom: busybox:1.33.1\n"),
            startscript: InspectMetadata::file_value(b"#!/bin/sh\n"),
            runscript: "#!/bin/sh\nOCI_CMD='\"sh\"'".into(),
            ..Default::default()
        };
        metadata.environment.insert(
            "/.singularity.d/env/90-environment.sh".into(),
            InspectMetadata::file_value(
                b"#!/bin/sh\n# Custom environment shell code should follow\n\n",
            ),
        );
        metadata
            .labels
            .insert("org.label-schema.build-arch".into(), "amd64".into());
        assert_eq!(
            String::from_utf8(metadata.to_bytes()).unwrap(),
            r##"{"data":{"attributes":{"environment":{"/.singularity.d/env/90-environment.sh":"#!/bin/sh\n# Custom environment shell code should follow"},"labels":{"org.label-schema.build-arch":"amd64"},"runscript":"#!/bin/sh\nOCI_CMD='\"sh\"'","deffile":"BootStrap: docker\nFrom: busybox:1.33.1","startscript":"#!/bin/sh"}},"type":"container"}"##
        );
    }

    #[test]
    fn empty_image_has_empty_attributes() {
        assert_eq!(
            InspectMetadata::default().to_bytes(),
            br#"{"data":{"attributes":{}},"type":"container"}"#.to_vec()
        );
    }
}
