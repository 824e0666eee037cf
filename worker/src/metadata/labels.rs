//! `/.singularity.d/labels.json`: the image's labels merged in SingularityCE's order
//! (`deffile.md` §8.6, `sif-squashfs.md` §3.4–3.5).

use std::collections::BTreeMap;

use time::OffsetDateTime;

/// The labels every build adds about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildLabels {
    /// `org.label-schema.build-date`, see [`build_date_label`].
    pub build_date: String,
    /// `org.label-schema.usage.singularity.version`: the builder's version.
    pub builder_version: String,
    /// `org.label-schema.build-arch`: the Go name of the architecture built for.
    pub arch: String,
    /// The stage's header keywords (lower-cased keys, as the parser gives them).
    pub header: BTreeMap<String, String>,
    /// True when the definition has `%help`.
    pub has_help: bool,
}

impl BuildLabels {
    fn into_labels(self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::new();
        labels.insert("org.label-schema.schema-version".into(), "1.0".into());
        labels.insert("org.label-schema.build-date".into(), self.build_date);
        labels.insert(
            "org.label-schema.usage.singularity.version".into(),
            self.builder_version,
        );
        if self.has_help {
            for key in [
                "org.label-schema.usage",
                "org.label-schema.usage.singularity.runscript.help",
            ] {
                labels.insert(key.into(), "/.singularity.d/runscript.help".into());
            }
        }
        for (key, value) in self.header {
            labels.insert(
                format!("org.label-schema.usage.singularity.deffile.{key}"),
                value,
            );
        }
        labels.insert("org.label-schema.build-arch".into(), self.arch);
        labels
    }
}

/// `org.label-schema.build-date` as SingularityCE writes it: `Monday_2_August_2021_14:9:36_UTC`,
/// no zero padding.
pub fn build_date_label(time: OffsetDateTime) -> String {
    let zone = if time.offset().is_utc() {
        "UTC".to_owned()
    } else {
        let (h, m, _) = time.offset().as_hms();
        format!("{:+03}{:02}", h, m.abs())
    };
    format!(
        "{}_{}_{}_{}_{}:{}:{}_{}",
        time.weekday(),
        time.day(),
        time.month(),
        time.year(),
        time.hour(),
        time.minute(),
        time.second(),
        zone
    )
}

/// The merged labels and the warnings to show, in SingularityCE's order: the image's existing
/// labels, then `NAME VALUE` lines `%post` wrote to `$SINGULARITY_LABELS`, then the build labels,
/// then `%labels`, which never replace an existing key.
///
/// An existing `labels.json` that is not a JSON object of strings is replaced, with a warning.
pub fn merge_labels(
    existing_json: Option<&[u8]>,
    post_labels: Option<&str>,
    build: BuildLabels,
    definition_labels: &[(String, String)],
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut labels: BTreeMap<String, String> = match existing_json {
        Some(bytes) => serde_json::from_slice(bytes).unwrap_or_else(|_| {
            warnings
                .push("ignoring the base image's labels.json: not a JSON object of strings".into());
            BTreeMap::new()
        }),
        None => BTreeMap::new(),
    };
    for line in post_labels.unwrap_or_default().lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        labels.insert(key.to_owned(), value.trim().to_owned());
    }
    labels.extend(build.into_labels());
    for (key, value) in definition_labels {
        if labels.contains_key(key) {
            warnings.push(format!(
                "Label: {key} already exists and force option is false, not overwriting"
            ));
        } else {
            labels.insert(key.clone(), value.clone());
        }
    }
    (labels, warnings)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn build() -> BuildLabels {
        BuildLabels {
            build_date: "d".into(),
            builder_version: "kiln-0.1.0".into(),
            arch: "amd64".into(),
            header: [("bootstrap".to_string(), "docker".to_string())].into(),
            has_help: true,
        }
    }

    #[test]
    fn date_is_unpadded_like_go() {
        assert_eq!(
            build_date_label(datetime!(2021-08-02 14:09:06 UTC)),
            "Monday_2_August_2021_14:9:6_UTC"
        );
    }

    #[test]
    fn merge_order_and_no_overwrite() {
        let (labels, warnings) = merge_labels(
            Some(br#"{"maintainer":"docker","org.label-schema.build-arch":"stale"}"#),
            Some("FROM_POST hello world\n\n"),
            build(),
            &[
                ("maintainer".into(), "def".into()),
                ("version".into(), "1".into()),
            ],
        );
        assert_eq!(labels["maintainer"], "docker");
        assert_eq!(labels["version"], "1");
        assert_eq!(labels["FROM_POST"], "hello world");
        assert_eq!(labels["org.label-schema.build-arch"], "amd64");
        assert_eq!(
            labels["org.label-schema.usage.singularity.deffile.bootstrap"],
            "docker"
        );
        assert_eq!(
            labels["org.label-schema.usage"],
            "/.singularity.d/runscript.help"
        );
        assert_eq!(
            warnings,
            ["Label: maintainer already exists and force option is false, not overwriting"]
        );
    }

    #[test]
    fn broken_base_labels_are_replaced_with_a_warning() {
        let (labels, warnings) = merge_labels(Some(b"[1,2]"), None, build(), &[]);
        assert_eq!(labels["org.label-schema.schema-version"], "1.0");
        assert_eq!(warnings.len(), 1);
    }
}
