//! The submit-time check of a definition file (ARCHITECTURE.md "fast reject of bad input"): it
//! must parse like SingularityCE parses it, and pass the build-time checks (`kiln_definitions::
//! check`: a stage with a supported bootstrap agent, no host scripts, existing `%files from`
//! stages...), before a build is recorded. Warnings do not stop a build.

use kiln_definitions::{Severity, check};

/// The file name errors are reported under (`definition:<line>:<column>: ...`).
const REPORT_NAME: &str = "definition";

/// Checks `text` as a definition file. The error is the message for the client: each problem
/// with its line and column, the offending line and a caret under the column.
///
/// # Errors
/// The report, when the definition does not parse or would not build.
pub fn validate_definition(text: &str) -> Result<(), String> {
    let findings = check(text).map_err(|error| error.report(REPORT_NAME))?;
    let errors: Vec<String> = findings
        .iter()
        .filter(|finding| finding.severity == Severity::Error)
        .map(|finding| {
            finding.location.report(
                REPORT_NAME,
                &format!("stage {}: {}", finding.stage, finding.message),
            )
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_errors_and_refusals_with_their_place() {
        assert_eq!(
            validate_definition("Bootstrap: docker\nFrom: alpine:3.19\n%post\n  echo hi\n"),
            Ok(())
        );
        let error =
            validate_definition("Bootstrap: docker\nFrom: alpine\n%labels\n%bogus\n").unwrap_err();
        assert!(error.starts_with("definition:4:"), "{error}");
        let error = validate_definition("Bootstrap: yum\nMirrorURL: http://x\n").unwrap_err();
        assert!(error.starts_with("definition:1:"), "{error}");
        assert!(validate_definition("# only a comment\n").is_err());
    }
}
