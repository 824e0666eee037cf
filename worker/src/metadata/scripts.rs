//! Files made from the definition's script sections (SingularityCE `insertMetadata`,
//! `sif-squashfs.md` §3.4 steps 1, 4–7).

use super::base_env::ENVIRONMENT_STUB;

/// The content of `runscript`, `startscript` or `test` for a section body and its arguments.
///
/// A body whose first non-blank text is `#!` supplies the interpreter line; otherwise it is
/// `#!/bin/sh`. Section arguments (`%runscript -x`) are appended to the interpreter line, cut at the
/// first `#`. The file is `<interpreter>\n\n<body>\n`, the body verbatim.
pub fn section_script(body: &str, args: &str) -> String {
    let (mut interpreter, script) = if body.trim_start().starts_with("#!") {
        match body.split_once('\n') {
            Some((first, rest)) => (first.trim().to_owned(), rest),
            None => (body.trim().to_owned(), ""),
        }
    } else {
        ("#!/bin/sh".to_owned(), body)
    };
    let args = args.split('#').next().unwrap_or_default();
    let args: Vec<&str> = args.split_whitespace().collect();
    if !args.is_empty() {
        interpreter.push(' ');
        interpreter.push_str(&args.join(" "));
    }
    format!("{interpreter}\n\n{script}\n")
}

/// `90-environment.sh` after `%environment`: appended to the existing file, or a new file when the
/// image has none.
pub fn append_environment(existing: Option<&[u8]>, body: &str) -> Vec<u8> {
    let mut out = match existing {
        Some(existing) => existing.to_vec(),
        None => ENVIRONMENT_STUB.as_bytes().to_vec(),
    };
    out.push(b'\n');
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
    out
}

/// `runscript.help` from `%help`.
pub fn help_file(body: &str) -> String {
    format!("{body}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_interpreter_and_verbatim_body() {
        assert_eq!(
            section_script("    echo hi\n", ""),
            "#!/bin/sh\n\n    echo hi\n\n"
        );
    }

    #[test]
    fn shebang_in_body_wins_even_indented() {
        assert_eq!(
            section_script("  #!/usr/bin/env python3  \nprint(1)\n", ""),
            "#!/usr/bin/env python3\n\nprint(1)\n\n"
        );
    }

    #[test]
    fn arguments_join_the_interpreter_without_comments() {
        assert_eq!(
            section_script("echo hi\n", "-x   -e # trace"),
            "#!/bin/sh -x -e\n\necho hi\n\n"
        );
        // `%test -c /bin/bash` is not a shell switch here: SingularityCE writes it into the line.
        assert_eq!(
            section_script("true\n", "-c /bin/bash"),
            "#!/bin/sh -c /bin/bash\n\ntrue\n\n"
        );
    }

    #[test]
    fn environment_appends_or_starts_a_file() {
        assert_eq!(
            append_environment(Some(b"#!/bin/sh\nA=1\n"), "export B=2\n"),
            b"#!/bin/sh\nA=1\n\nexport B=2\n\n".to_vec()
        );
        let fresh = String::from_utf8(append_environment(None, "export B=2\n")).unwrap();
        assert!(fresh.starts_with("#!/bin/sh\n"));
        assert!(fresh.ends_with("\nexport B=2\n\n"));
    }
}
