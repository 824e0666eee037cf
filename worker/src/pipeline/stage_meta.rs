//! Step 9 of a stage (`deffile.md` §8.6): the definition's metadata written into
//! `/.singularity.d`, and SCIF apps laid out (step 3, §8.5); then what `inspect-metadata.json`
//! holds, read back from the files as `singularity inspect` would.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_definitions::Definition;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::confined::Confined;
use super::error::{BuildError, io};
use super::plan::App;
use crate::metadata::{
    AppMetadata, BuildLabels, InspectMetadata, append_environment, build_date_label, help_file,
    merge_labels, section_script, to_go_json_indented,
};

const D: &str = "/.singularity.d";

/// What the metadata step needs besides the stage's definition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetaInput {
    /// The templated definition file.
    pub deffile: String,
    /// Go architecture name.
    pub arch: String,
    /// `org.label-schema.usage.singularity.version`.
    pub builder_version: String,
    /// `NAME VALUE` lines `%post` wrote to `$SINGULARITY_LABELS`.
    pub post_labels: Option<String>,
    /// Build time, Unix seconds (the label has seconds).
    pub build_time: i64,
}

fn write(root: &Confined, path: &str, mode: u32, content: &[u8]) -> Result<(), BuildError> {
    root.write(Path::new(path), mode, content)
        .map_err(io("write", Path::new(path)))
}

fn read(root: &Confined, path: &str) -> Result<Option<Vec<u8>>, BuildError> {
    root.read(Path::new(path))
        .map_err(io("read", Path::new(path)))
}

/// Writes the stage's metadata files and returns the labels' warnings.
pub fn write_metadata(
    root: &Confined,
    definition: &Definition,
    input: &MetaInput,
) -> Result<Vec<String>, BuildError> {
    let scripts = &definition.image_data.image_scripts;
    root.create_dir_all(Path::new("/.singularity.d/env"))
        .map_err(io("create", Path::new(D)))?;
    let help_path = format!("{D}/runscript.help");
    if !scripts.help.script.is_empty() && read(root, &help_path)?.is_none() {
        write(
            root,
            &help_path,
            0o644,
            help_file(&scripts.help.script).as_bytes(),
        )?;
    }
    let existing_labels = read(root, &format!("{D}/labels.json"))?;
    let build = BuildLabels {
        build_date: build_date_label(
            OffsetDateTime::from_unix_timestamp(input.build_time)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        ),
        builder_version: input.builder_version.clone(),
        arch: input.arch.clone(),
        header: definition.header.clone().unwrap_or_default(),
        has_help: !scripts.help.script.is_empty(),
    };
    let definition_labels: Vec<(String, String)> = definition
        .image_data
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (labels, warnings) = merge_labels(
        existing_labels.as_deref(),
        input.post_labels.as_deref(),
        build,
        &definition_labels,
    );
    write(
        root,
        &format!("{D}/labels.json"),
        0o644,
        &to_go_json_indented(&labels, "\t"),
    )?;
    // An older definition (from a SIF base image) goes to the history.
    let deffile_path = format!("{D}/Singularity");
    if let Some(old) = read(root, &deffile_path)? {
        let history = format!("{D}/bootstrap_history");
        root.create_dir_all(Path::new(&history))
            .map_err(io("create", Path::new(&history)))?;
        let mut n = 0;
        while root.exists(Path::new(&format!("{history}/Singularity{n}"))) {
            n += 1;
        }
        write(root, &format!("{history}/Singularity{n}"), 0o644, &old)?;
    }
    write(root, &deffile_path, 0o644, input.deffile.as_bytes())?;
    if !scripts.environment.script.is_empty() {
        let path = format!("{D}/env/90-environment.sh");
        let existing = read(root, &path)?;
        let content = append_environment(existing.as_deref(), &scripts.environment.script);
        write(root, &path, 0o755, &content)?;
    }
    for (name, script) in [
        ("startscript", &scripts.start_script),
        ("runscript", &scripts.run_script),
        ("test", &scripts.test),
    ] {
        if !script.script.is_empty() {
            let content = section_script(&script.script, &script.args);
            write(root, &format!("{D}/{name}"), 0o755, content.as_bytes())?;
        }
    }
    Ok(warnings)
}

/// Lays out the stage's SCIF apps (`deffile.md` §8.5) except `%appfiles`, which the caller
/// copies from the context.
pub fn write_apps(root: &Confined, apps: &[App]) -> Result<(), BuildError> {
    let mut index = String::from("#!/bin/sh\n");
    for app in apps {
        let base = format!("/scif/apps/{}", app.name);
        let data = format!("/scif/data/{}", app.name);
        for dir in [
            format!("{base}/bin"),
            format!("{base}/lib"),
            format!("{base}/scif/env"),
            format!("{data}/input"),
            format!("{data}/output"),
        ] {
            root.create_dir_all(Path::new(&dir))
                .map_err(io("create", Path::new(&dir)))?;
        }
        let meta = format!("{base}/scif");
        let env_base = format!(
            "#!/bin/sh\nSCIF_APPNAME={name}\nSCIF_APPROOT=\"{base}\"\nSCIF_APPDATA=\"{data}\"\n\
             SCIF_APPMETA=\"{meta}\"\nSCIF_APPBIN=\"{base}/bin\"\nSCIF_APPLIB=\"{base}/lib\"\n\
             SCIF_APPINPUT=\"{data}/input\"\nSCIF_APPOUTPUT=\"{data}/output\"\n\
             export SCIF_APPNAME SCIF_APPROOT SCIF_APPDATA SCIF_APPMETA SCIF_APPBIN SCIF_APPLIB \
             SCIF_APPINPUT SCIF_APPOUTPUT\n",
            name = app.name
        );
        write(
            root,
            &format!("{meta}/env/01-base.sh"),
            0o755,
            env_base.as_bytes(),
        )?;
        if !app.env.is_empty() {
            write(
                root,
                &format!("{meta}/env/90-environment.sh"),
                0o755,
                &append_environment(None, &app.env),
            )?;
        }
        for (name, body) in [
            ("runscript", &app.run),
            ("startscript", &app.start),
            ("test", &app.test),
        ] {
            if !body.is_empty() {
                write(
                    root,
                    &format!("{meta}/{name}"),
                    0o755,
                    format!("#!/bin/sh\n\n{body}\n").as_bytes(),
                )?;
            }
        }
        if !app.help.is_empty() {
            write(
                root,
                &format!("{meta}/runscript.help"),
                0o644,
                help_file(&app.help).as_bytes(),
            )?;
        }
        let mut labels: BTreeMap<String, String> = BTreeMap::new();
        labels.insert("SCIF_APP_NAME".into(), app.name.clone());
        for line in app.labels.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            labels.insert(key.to_owned(), value.trim().to_owned());
        }
        write(
            root,
            &format!("{meta}/labels.json"),
            0o644,
            &to_go_json_indented(&labels, "\t"),
        )?;
        let var: String = app
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        for (suffix, path) in [
            ("DATA", data.clone()),
            ("ROOT", base.clone()),
            ("META", meta.clone()),
            ("BIN", format!("{base}/bin")),
            ("LIB", format!("{base}/lib")),
        ] {
            index.push_str(&format!(
                "SCIF_APP{suffix}_{var}=\"{path}\"\nexport SCIF_APP{suffix}_{var}\n"
            ));
        }
    }
    if !apps.is_empty() {
        write(
            root,
            &format!("{D}/env/94-appsbase.sh"),
            0o755,
            index.as_bytes(),
        )?;
    }
    Ok(())
}

/// `inspect-metadata.json` for the finished rootfs.
pub fn inspect_metadata(root: &Confined, apps: &[App]) -> Result<InspectMetadata, BuildError> {
    let text = |path: &str| -> Result<String, BuildError> {
        Ok(read(root, path)?
            .map(|b| InspectMetadata::file_value(&b))
            .unwrap_or_default())
    };
    let labels = |path: &str| -> Result<BTreeMap<String, String>, BuildError> {
        Ok(read(root, path)?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default())
    };
    let mut meta = InspectMetadata {
        labels: labels(&format!("{D}/labels.json"))?,
        runscript: text(&format!("{D}/runscript"))?,
        test: text(&format!("{D}/test"))?,
        helpfile: text(&format!("{D}/runscript.help"))?,
        deffile: text(&format!("{D}/Singularity"))?,
        startscript: text(&format!("{D}/startscript"))?,
        ..InspectMetadata::default()
    };
    let env_dir = format!("{D}/env");
    if root.is_dir(Path::new(&env_dir)) {
        for name in root
            .list_dir(Path::new(&env_dir))
            .map_err(io("list", Path::new(&env_dir)))?
        {
            let name = name.to_string_lossy().into_owned();
            let is_env = (name.starts_with("10-docker") || name.starts_with('9'))
                && name.ends_with(".sh")
                && (name.starts_with("10-docker") || name.ends_with("-environment.sh"));
            if is_env {
                let path = format!("{env_dir}/{name}");
                meta.environment.insert(path.clone(), text(&path)?);
            }
        }
    }
    for app in apps {
        let m = format!("/scif/apps/{}/scif", app.name);
        let mut environment = BTreeMap::new();
        let env = format!("{m}/env/90-environment.sh");
        if let Some(bytes) = read(root, &env)? {
            environment.insert(env, InspectMetadata::file_value(&bytes));
        }
        meta.apps.insert(
            app.name.clone(),
            AppMetadata {
                environment,
                labels: labels(&format!("{m}/labels.json"))?,
                runscript: text(&format!("{m}/runscript"))?,
                startscript: text(&format!("{m}/startscript"))?,
                test: text(&format!("{m}/test"))?,
                helpfile: text(&format!("{m}/runscript.help"))?,
            },
        );
    }
    Ok(meta)
}
