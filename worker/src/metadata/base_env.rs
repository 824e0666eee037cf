//! The base layout every bootstrap agent lays down before the definition's sections run
//! (SingularityCE `makeBaseEnv`, `sif-squashfs.md` §3.2): mount points, the action scripts, the
//! environment scripts sourced in glob order at run time, and the legacy symlinks.

use super::{RootfsEntry, SINGULARITY_D};

/// Sources every environment script, as `singularity` does before an action.
const SOURCE_ENV: &str = r#"for kiln_env_script in /.singularity.d/env/*.sh; do
    if [ -f "$kiln_env_script" ]; then
        . "$kiln_env_script"
    fi
done
unset kiln_env_script
"#;

/// The default runscript until the bootstrap agent or `%runscript` replaces it.
pub(super) const DEFAULT_RUNSCRIPT: &str =
    "#!/bin/sh\n\necho \"There is no runscript defined for this container\"\n";

/// The initial `90-environment.sh`; `%environment` bodies are appended to it.
pub(super) const ENVIRONMENT_STUB: &str =
    "#!/bin/sh\n# Custom environment shell code should follow\n\n";

fn action(body: &str) -> String {
    format!("#!/bin/sh\n{SOURCE_ENV}{body}")
}

fn scripts() -> Vec<(String, String)> {
    let d = SINGULARITY_D;
    vec![
        (format!("{d}/actions/exec"), action("exec \"$@\"\n")),
        (
            format!("{d}/actions/run"),
            action(
                r#"if [ -x /.singularity.d/runscript ]; then
    exec /.singularity.d/runscript "$@"
fi
echo "No Singularity runscript for this container" >&2
exit 1
"#,
            ),
        ),
        (
            format!("{d}/actions/shell"),
            action(
                r#"if [ -n "${SINGULARITY_SHELL:-}" ] && [ -x "$SINGULARITY_SHELL" ]; then
    exec "$SINGULARITY_SHELL" "$@"
fi
if [ -x /bin/bash ]; then
    PS1="Singularity> " exec /bin/bash --norc "$@"
fi
PS1="Singularity> " exec /bin/sh "$@"
"#,
            ),
        ),
        (
            format!("{d}/actions/start"),
            action(
                r#"if [ -x /.singularity.d/startscript ]; then
    exec /.singularity.d/startscript "$@"
fi
"#,
            ),
        ),
        (
            format!("{d}/actions/test"),
            action(
                r#"if [ -x /.singularity.d/test ]; then
    exec /.singularity.d/test "$@"
fi
echo "No Singularity test script for this container" >&2
exec /bin/sh -c true
"#,
            ),
        ),
        (
            format!("{d}/env/01-base.sh"),
            "#!/bin/sh\n# Written by Kiln: environment common to every image comes first.\n".into(),
        ),
        (
            format!("{d}/env/90-environment.sh"),
            ENVIRONMENT_STUB.into(),
        ),
        (
            format!("{d}/env/95-apps.sh"),
            r#"#!/bin/sh
# Written by Kiln: the environment of the SCIF app chosen with --app.
if [ -n "${SINGULARITY_APPNAME:-}" ]; then
    SCIF_APPNAME="$SINGULARITY_APPNAME"
    SCIF_APPROOT="/scif/apps/$SINGULARITY_APPNAME"
    SCIF_APPDATA="/scif/data/$SINGULARITY_APPNAME"
    SCIF_APPMETA="$SCIF_APPROOT/scif"
    SCIF_APPBIN="$SCIF_APPROOT/bin"
    SCIF_APPLIB="$SCIF_APPROOT/lib"
    SCIF_APPINPUT="$SCIF_APPDATA/input"
    SCIF_APPOUTPUT="$SCIF_APPDATA/output"
    SCIF_APPRUN="$SCIF_APPMETA/runscript"
    SCIF_APPTEST="$SCIF_APPMETA/test"
    SCIF_APPHELP="$SCIF_APPMETA/runscript.help"
    SCIF_APPLABELS="$SCIF_APPMETA/labels.json"
    SCIF_APPENV="$SCIF_APPMETA/env/90-environment.sh"
    export SCIF_APPNAME SCIF_APPROOT SCIF_APPDATA SCIF_APPMETA SCIF_APPBIN SCIF_APPLIB \
        SCIF_APPINPUT SCIF_APPOUTPUT SCIF_APPRUN SCIF_APPTEST SCIF_APPHELP SCIF_APPLABELS \
        SCIF_APPENV
    if [ -d "$SCIF_APPBIN" ]; then
        PATH="$SCIF_APPBIN:$PATH"
    fi
    if [ -d "$SCIF_APPLIB" ]; then
        LD_LIBRARY_PATH="$SCIF_APPLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export LD_LIBRARY_PATH
    fi
    for kiln_app_env in "$SCIF_APPMETA"/env/*.sh; do
        if [ -f "$kiln_app_env" ]; then
            . "$kiln_app_env"
        fi
    done
    unset kiln_app_env
fi
"#
            .into(),
        ),
        (
            format!("{d}/env/99-base.sh"),
            r#"#!/bin/sh
# Written by Kiln: libraries bound in by --nv/--rocm are found last; a recognisable prompt.
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
    LD_LIBRARY_PATH="/.singularity.d/libs"
else
    LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/.singularity.d/libs"
fi
PS1="Singularity> "
export LD_LIBRARY_PATH PS1
"#
            .into(),
        ),
        (
            format!("{d}/env/99-runtimevars.sh"),
            r#"#!/bin/sh
# Written by Kiln: variables the runtime provides, for runtimes that source this file.
if [ -n "${SING_USER_DEFINED_PREPEND_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PREPEND_PATH:$PATH"
fi
if [ -n "${SING_USER_DEFINED_APPEND_PATH:-}" ]; then
    PATH="$PATH:$SING_USER_DEFINED_APPEND_PATH"
fi
if [ -n "${SING_USER_DEFINED_PATH:-}" ]; then
    PATH="$SING_USER_DEFINED_PATH"
fi
unset SING_USER_DEFINED_PREPEND_PATH SING_USER_DEFINED_APPEND_PATH SING_USER_DEFINED_PATH
export PATH
"#
            .into(),
        ),
        (format!("{d}/runscript"), DEFAULT_RUNSCRIPT.into()),
        (format!("{d}/startscript"), "#!/bin/sh\n".into()),
    ]
}

/// The base layout, in creation order: directories first, then files, then symlinks.
///
/// The files replace existing regular files (SingularityCE's `overwrite=true`, used by every agent
/// Kiln supports); the caller applies [`super::EntryKind`]'s rules for existing entries.
pub fn base_environment() -> Vec<RootfsEntry> {
    let d = SINGULARITY_D;
    let mut entries: Vec<RootfsEntry> = [
        format!("{d}/libs"),
        format!("{d}/actions"),
        format!("{d}/env"),
    ]
    .iter()
    .map(String::as_str)
    .chain([
        "/dev", "/proc", "/root", "/var/tmp", "/tmp", "/etc", "/sys", "/home",
    ])
    .map(RootfsEntry::dir)
    .collect();
    entries.push(RootfsEntry::file("/etc/hosts", 0o644, ""));
    entries.push(RootfsEntry::file("/etc/resolv.conf", 0o644, ""));
    entries.extend(
        scripts()
            .into_iter()
            .map(|(path, content)| RootfsEntry::file(&path, 0o755, content)),
    );
    for (link, target) in [
        ("/singularity", ".singularity.d/runscript"),
        ("/.run", ".singularity.d/actions/run"),
        ("/.exec", ".singularity.d/actions/exec"),
        ("/.test", ".singularity.d/actions/test"),
        ("/.shell", ".singularity.d/actions/shell"),
        ("/environment", ".singularity.d/env/90-environment.sh"),
    ] {
        entries.push(RootfsEntry::symlink(link, target));
    }
    entries
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::super::EntryKind;
    use super::*;

    #[test]
    fn lays_out_what_singularity_expects() {
        let entries = base_environment();
        let find = |path: &str| {
            entries
                .iter()
                .find(|e| e.path == path)
                .unwrap_or_else(|| panic!("{path} missing"))
        };
        for dir in [
            "/.singularity.d/libs",
            "/dev",
            "/proc",
            "/sys",
            "/home",
            "/var/tmp",
        ] {
            assert_eq!(find(dir).kind, EntryKind::Dir);
        }
        for script in ["exec", "run", "shell", "start", "test"] {
            let path = format!("/.singularity.d/actions/{script}");
            assert!(matches!(
                find(&path).kind,
                EntryKind::File { mode: 0o755, .. }
            ));
        }
        assert_eq!(
            find("/environment").kind,
            EntryKind::Symlink {
                target: ".singularity.d/env/90-environment.sh".into()
            }
        );
        // Symlinks come after the files they point at, directories before everything.
        let first_file = entries
            .iter()
            .position(|e| matches!(e.kind, EntryKind::File { .. }))
            .unwrap();
        assert!(
            entries[..first_file]
                .iter()
                .all(|e| e.kind == EntryKind::Dir)
        );
    }

    /// Every script is plain POSIX sh: SingularityCE 4 interprets env scripts with mvdan.cc/sh.
    #[test]
    fn scripts_are_valid_sh() {
        for entry in base_environment() {
            if let EntryKind::File { content, .. } = entry.kind {
                if content.is_empty() {
                    continue;
                }
                let status = Command::new("sh")
                    .arg("-n")
                    .arg("-c")
                    .arg(String::from_utf8(content).unwrap())
                    .status()
                    .expect("run sh -n");
                assert!(status.success(), "{} is not valid sh", entry.path);
            }
        }
    }

    /// The environment scripts, sourced in order, give the documented variables.
    #[test]
    fn env_scripts_set_library_path_and_app_variables() {
        let dir = tempfile::tempdir().unwrap();
        let mut script = String::from("SINGULARITY_APPNAME=foo\n");
        for entry in base_environment() {
            if entry.path.starts_with("/.singularity.d/env/")
                && let EntryKind::File { content, .. } = entry.kind
            {
                let path = dir.path().join(entry.path.rsplit('/').next().unwrap());
                std::fs::write(&path, content).unwrap();
                script.push_str(&format!(". {}\n", path.display()));
            }
        }
        script.push_str("echo \"$LD_LIBRARY_PATH|$SCIF_APPROOT|$PS1\"\n");
        let output = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "/.singularity.d/libs|/scif/apps/foo|Singularity> \n"
        );
    }
}
