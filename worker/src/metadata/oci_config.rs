//! Singularity files made from a Docker/OCI image config: `Env` becomes
//! `10-docker2singularity.sh`, `Entrypoint` and `Cmd` become the runscript (`deffile.md` §9.1).

/// `/.singularity.d/env/10-docker2singularity.sh` for the image config's `Env` entries.
///
/// A value from the image is a default: a variable set at run time wins, except `PATH`, which the
/// image sets. Entries whose name is not a shell identifier are skipped, as SingularityCE does.
pub fn docker_env_script(env: &[String]) -> String {
    let mut script = String::from("#!/bin/sh\n");
    for entry in env {
        let (name, value) = match entry.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (entry.as_str(), None),
        };
        if !is_shell_identifier(name) {
            continue;
        }
        match value {
            None => script.push_str(&format!("export {name}=\"${{{name}:-}}\"\n")),
            Some(value) if name == "PATH" => {
                script.push_str(&format!(
                    "export PATH=\"{}\"\n",
                    escape_double_quoted(value)
                ));
            }
            Some(value) => script.push_str(&format!(
                "export {name}=\"${{{name}:-\"{}\"}}\"\n",
                escape_double_quoted(value)
            )),
        }
    }
    script
}

/// The runscript of an image built from a Docker/OCI image.
///
/// Docker's rules: arguments given at run time replace `Cmd`; `Entrypoint` always runs first.
/// The words are passed as they are, never through `eval` (SingularityCE's `SINGULARITY_NO_EVAL`
/// behaviour): `$VAR` in `Cmd` is not expanded, as Docker does not expand exec-form commands.
/// `OCI_ENTRYPOINT` and `OCI_CMD` are kept for people and tools that read them.
pub fn oci_runscript(entrypoint: &[String], cmd: &[String]) -> String {
    let quoted = |words: &[String]| -> String {
        words
            .iter()
            .map(|w| format!("\"{}\"", escape_double_quoted(w)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let words = |words: &[String]| -> String {
        words
            .iter()
            .map(|w| single_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut script = format!(
        "#!/bin/sh\nOCI_ENTRYPOINT={}\nOCI_CMD={}\n",
        single_quote(&quoted(entrypoint)),
        single_quote(&quoted(cmd)),
    );
    if !cmd.is_empty() {
        script.push_str(&format!(
            "if [ $# -eq 0 ]; then\n    set -- {}\nfi\n",
            words(cmd)
        ));
    }
    if !entrypoint.is_empty() {
        script.push_str(&format!("set -- {} \"$@\"\n", words(entrypoint)));
    }
    script.push_str(
        "if [ $# -eq 0 ]; then\n    echo \"this image has no Entrypoint or Cmd to run\" >&2\n    exit 1\nfi\nexec \"$@\"\n",
    );
    script
}

fn is_shell_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Escapes what is special inside a double-quoted sh string.
fn escape_double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | '"' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One sh word that stands for `value` exactly.
fn single_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn env_script_as_singularity_writes_it() {
        let env = strings(&[
            "PATH=/usr/local/bin:/usr/bin",
            "LANG=C.UTF-8",
            "QUOTE=a\"b$c",
            "BARE",
            "1BAD=x",
            "bad-name=y",
        ]);
        assert_eq!(
            docker_env_script(&env),
            "#!/bin/sh\n\
             export PATH=\"/usr/local/bin:/usr/bin\"\n\
             export LANG=\"${LANG:-\"C.UTF-8\"}\"\n\
             export QUOTE=\"${QUOTE:-\"a\\\"b\\$c\"}\"\n\
             export BARE=\"${BARE:-}\"\n"
        );
    }

    #[test]
    fn env_script_values_survive_the_shell() {
        let env = strings(&["ODD=a\"b`c$d\\e f", "KEEP=image"]);
        let script = docker_env_script(&env);
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("{script}\nprintf '%s|%s' \"$ODD\" \"$KEEP\""))
            .env("KEEP", "runtime")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "a\"b`c$d\\e f|runtime"
        );
    }

    fn run(script: &str, args: &[&str]) -> String {
        let output = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("runscript")
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    #[test]
    fn runscript_follows_docker_entrypoint_and_cmd_rules() {
        let echo = strings(&["printf", "[%s]"]);
        // Cmd only: run it, or the arguments instead.
        let cmd_only = oci_runscript(&[], &echo);
        assert_eq!(run(&cmd_only, &[]), "[]");
        assert_eq!(run(&cmd_only, &["echo", "x y"]), "x y\n");
        // Entrypoint only: arguments follow it.
        let entry_only = oci_runscript(&echo, &[]);
        assert_eq!(run(&entry_only, &["a b", "$HOME"]), "[a b][$HOME]");
        // Both: Cmd is the default argument list of Entrypoint.
        let both = oci_runscript(&echo, &strings(&["it's", "default"]));
        assert_eq!(run(&both, &[]), "[it's][default]");
        assert_eq!(run(&both, &["given"]), "[given]");
        assert!(both.contains("OCI_ENTRYPOINT='\"printf\" \"[%s]\"'"));
    }
}
