//! From a definition and the build's options to what the pipeline runs, stage by stage; pure.
//!
//! Everything a remote builder refuses is refused here, before anything is fetched, with a
//! message that says why (`deffile.md` §10.2): agents that read the user's machine or need
//! root and host tools, and the host scripts `%setup` and `%pre`.

use kiln_definitions::{BuildArgs, Definition, Severity, check, render};

use super::error::BuildError;

/// The agents Kiln runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Agent {
    /// An empty rootfs.
    Scratch,
    /// An image from an OCI/Docker registry; `from` as written after `From:`.
    Docker {
        /// The reference.
        from: String,
    },
    /// A SIF from a Library API server.
    Library {
        /// The reference, `[library://][host/]entity/collection/container[:tag]`.
        from: String,
        /// The `Library:` header, if any.
        library_url: Option<String>,
    },
    /// A SIF stored as an OCI artifact.
    Oras {
        /// The reference, `registry/name:tag`.
        from: String,
    },
}

/// Why a remote builder cannot run an agent SingularityCE knows.
fn refusal(agent: &str) -> Option<&'static str> {
    Some(match agent {
        "localimage" | "docker-archive" | "oci" | "oci-archive" => {
            "it reads an image file on your machine, which a remote builder cannot reach; \
             push the image to a registry and use `Bootstrap: docker` or `oras`"
        }
        "docker-daemon" => {
            "it reads images from your Docker daemon, which a remote builder cannot reach; \
             push the image to a registry and use `Bootstrap: docker`"
        }
        "shub" => "Singularity Hub is archived and serves no images",
        "debootstrap" | "yum" | "dnf" | "zypper" | "arch" | "busybox" => {
            "it runs the build host's package tools as root, which a rootless remote builder \
             has neither; start from a registry image (`Bootstrap: docker`) instead"
        }
        _ => return None,
    })
}

/// One `%files` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesStep {
    /// The stage copied from (`%files from NAME`), as a 0-based index; `None` for the build
    /// context.
    pub from_stage: Option<usize>,
    /// `(source, destination)` pairs; an empty destination means the source path.
    pub entries: Vec<(String, String)>,
}

/// One SCIF app of a stage, in `appOrder`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct App {
    /// The app's name.
    pub name: String,
    /// `%appinstall`.
    pub install: String,
    /// `%apprun`.
    pub run: String,
    /// `%appstart`.
    pub start: String,
    /// `%apptest`.
    pub test: String,
    /// `%apphelp`.
    pub help: String,
    /// `%appenv`.
    pub env: String,
    /// `%applabels` body.
    pub labels: String,
    /// `%appfiles` body.
    pub files: String,
}

/// What one stage runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StagePlan {
    /// 1-based.
    pub number: usize,
    /// `Stage:` header, maybe empty.
    pub name: String,
    /// The bootstrap.
    pub agent: Agent,
    /// The templated stage.
    pub definition: Definition,
    /// SCIF apps in order.
    pub apps: Vec<App>,
    /// `%files` sections in file order.
    pub files: Vec<FilesStep>,
    /// `%post` with each `%appinstall` appended, and its command line (`deffile.md` §8.2);
    /// `None` when there is nothing to run.
    pub post: Option<(Vec<String>, String)>,
}

impl StagePlan {
    /// Whether anything after the bootstrap changes the rootfs beyond `/.singularity.d`:
    /// `%post`, `%files`, apps, or `%test` (which runs in the rootfs).
    pub fn changes_rootfs(&self, notest: bool) -> bool {
        self.post.is_some()
            || self.files.iter().any(|f| !f.entries.is_empty())
            || !self.apps.is_empty()
            || (!notest
                && !self
                    .definition
                    .image_data
                    .image_scripts
                    .test
                    .script
                    .is_empty())
    }
}

/// The whole build.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Stages in file order; the last becomes the image.
    pub stages: Vec<StagePlan>,
    /// The templated definition: the image's `/.singularity.d/Singularity` and SIF deffile.
    pub deffile: String,
    /// Templating warnings to log.
    pub warnings: Vec<String>,
}

/// Where `%post` is written in the rootfs (`deffile.md` §8.3).
pub const POST_SCRIPT: &str = "/.post.script";

/// The command line of `%post` for its section arguments: `/bin/sh -e [args] /.post.script`,
/// or with `-c SHELL…`, `/bin/sh -e [args] -c "SHELL… /.post.script"`.
pub fn post_command(args: &str) -> Vec<String> {
    let cut = args.split('#').next().unwrap_or("");
    let words: Vec<&str> = cut.split_whitespace().collect();
    let mut argv = vec!["/bin/sh".to_owned(), "-e".to_owned()];
    match words.iter().position(|w| *w == "-c") {
        Some(at) => {
            argv.extend(words[..at].iter().map(|w| (*w).to_owned()));
            argv.push("-c".into());
            let mut shell: Vec<&str> = words[at + 1..].to_vec();
            shell.push(POST_SCRIPT);
            argv.push(shell.join(" "));
        }
        None => {
            argv.extend(words.iter().map(|w| (*w).to_owned()));
            argv.push(POST_SCRIPT.into());
        }
    }
    argv
}

/// Templates `text` with `build_args`, checks it and plans each stage.
///
/// # Errors
/// [`BuildError::Definition`] when it does not parse or template, [`BuildError::Refused`] for the
/// first thing Kiln does not build.
pub fn plan(text: &str, build_args: &BuildArgs) -> Result<Plan, BuildError> {
    let rendered =
        render(text, build_args).map_err(|e| BuildError::Definition(e.report("definition")))?;
    // The agent refusals with reasons first, then the parser's own checks.
    for (index, stage) in rendered.stages.iter().enumerate() {
        let agent = stage.header_value("bootstrap").unwrap_or("");
        if let Some(why) = refusal(agent) {
            return Err(BuildError::Refused(format!(
                "stage {}: `Bootstrap: {agent}` cannot run on a remote builder: {why}",
                index + 1
            )));
        }
    }
    let findings =
        check(&rendered.text).map_err(|e| BuildError::Definition(e.report("definition")))?;
    if let Some(error) = findings.iter().find(|f| f.severity == Severity::Error) {
        return Err(BuildError::Refused(format!(
            "line {}: stage {}: {}",
            error.location.line, error.stage, error.message
        )));
    }
    let names: Vec<&str> = rendered.stages.iter().map(Definition::stage_name).collect();
    let mut stages = Vec::with_capacity(rendered.stages.len());
    for (index, definition) in rendered.stages.iter().enumerate() {
        stages.push(plan_stage(index, definition, &names)?);
    }
    if stages.is_empty() {
        return Err(BuildError::Refused("the definition has no stage".into()));
    }
    Ok(Plan {
        stages,
        deffile: rendered.text,
        warnings: rendered.warnings,
    })
}

fn plan_stage(index: usize, def: &Definition, names: &[&str]) -> Result<StagePlan, BuildError> {
    let number = index + 1;
    let from = def.header_value("from").unwrap_or("").trim().to_owned();
    let agent = match def.header_value("bootstrap").unwrap_or("") {
        "scratch" => Agent::Scratch,
        "docker" => Agent::Docker { from },
        "library" => Agent::Library {
            from,
            library_url: def
                .header_value("library")
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned),
        },
        "oras" => Agent::Oras { from },
        other => {
            return Err(BuildError::Refused(format!(
                "stage {number}: invalid build source {other:?}"
            )));
        }
    };
    let mut files = Vec::new();
    for section in &def.build_data.files {
        let from_stage = match section.stage() {
            Some(name) => Some(names.iter().position(|n| *n == name).ok_or_else(|| {
                BuildError::Refused(format!(
                    "stage {number}: %files from {name}: stage {name} was not found"
                ))
            })?),
            None => None,
        };
        files.push(FilesStep {
            from_stage,
            entries: section
                .files
                .iter()
                .map(|f| (f.source.clone(), f.destination.clone()))
                .collect(),
        });
    }
    let apps = apps(def);
    let post_script = &def.build_data.build_scripts.post;
    let mut body = post_script.script.clone();
    for app in &apps {
        if !app.install.is_empty() {
            body.push_str(&format!(
                "\ncd /\n. /scif/apps/{0}/scif/env/01-base.sh\ncd /scif/apps/{0}\n{1}\ncd /\n",
                app.name, app.install
            ));
        }
    }
    let post = (!body.trim().is_empty()).then(|| (post_command(&post_script.args), body));
    Ok(StagePlan {
        number,
        name: def.stage_name().to_owned(),
        agent,
        definition: def.clone(),
        apps,
        files,
        post,
    })
}

/// The stage's SCIF apps, in `appOrder`, from the parser's `customData` (`appKIND NAME` keys).
fn apps(def: &Definition) -> Vec<App> {
    let Some(custom) = &def.custom_data else {
        return Vec::new();
    };
    def.app_order
        .iter()
        .map(|name| {
            let get = |kind: &str| {
                custom
                    .get(&format!("{kind} {name}"))
                    .cloned()
                    .unwrap_or_default()
            };
            App {
                name: name.clone(),
                install: get("appinstall"),
                run: get("apprun"),
                start: get("appstart"),
                test: get("apptest"),
                help: get("apphelp"),
                env: get("appenv"),
                labels: get("applabels"),
                files: get("appfiles"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BuildArgs {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn post_runs_under_sh_e_and_honours_dash_c() {
        assert_eq!(post_command(""), ["/bin/sh", "-e", "/.post.script"]);
        assert_eq!(
            post_command("-x # trace"),
            ["/bin/sh", "-e", "-x", "/.post.script"]
        );
        assert_eq!(
            post_command("-c /bin/bash -l"),
            ["/bin/sh", "-e", "-c", "/bin/bash -l /.post.script"]
        );
    }

    #[test]
    fn stages_files_from_and_build_args_are_planned() {
        let text = "Bootstrap: docker\nFrom: busybox:{{ TAG }}\nStage: one\n\n%arguments\nTAG=1\n\n\
                    %post\necho hi > /made\n\n\
                    Bootstrap: scratch\nStage: two\n\n%files from one\n/made /copied\n\n%files\nctx.txt\n";
        let plan = plan(text, &args(&[("TAG", "2")])).unwrap();
        assert_eq!(plan.stages.len(), 2);
        assert_eq!(
            plan.stages[0].agent,
            Agent::Docker {
                from: "busybox:2".into()
            }
        );
        assert!(plan.deffile.contains("From: busybox:2"));
        let (argv, body) = plan.stages[0].post.clone().unwrap();
        assert_eq!(argv.last().unwrap(), POST_SCRIPT);
        assert!(body.contains("echo hi"));
        let two = &plan.stages[1];
        assert_eq!(two.agent, Agent::Scratch);
        assert_eq!(two.files[0].from_stage, Some(0));
        assert_eq!(two.files[0].entries, [("/made".into(), "/copied".into())]);
        assert_eq!(two.files[1].from_stage, None);
        assert!(two.changes_rootfs(true));
    }

    #[test]
    fn refused_agents_say_why() {
        for (agent, why) in [
            ("debootstrap", "package tools as root"),
            ("localimage", "on your machine"),
            ("docker-daemon", "Docker daemon"),
        ] {
            let error =
                plan(&format!("Bootstrap: {agent}\nFrom: x\n"), &BuildArgs::new()).unwrap_err();
            let line = error.one_line();
            assert!(line.contains(why), "{line}");
            assert!(line.contains("remote builder"), "{line}");
            assert_eq!(error.fault(), kiln_proto::amqp::Fault::User);
        }
        let error = plan("Bootstrap: nosuch\nFrom: x\n", &BuildArgs::new()).unwrap_err();
        assert!(error.one_line().contains("invalid build source \"nosuch\""));
    }

    #[test]
    fn setup_and_pre_are_refused() {
        let error = plan(
            "Bootstrap: scratch\n%setup\ntouch $SINGULARITY_ROOTFS/x\n",
            &BuildArgs::new(),
        )
        .unwrap_err();
        assert!(error.one_line().contains("%setup runs on the build host"));
    }

    #[test]
    fn undefined_template_variables_fail_with_the_line() {
        let error = plan("Bootstrap: docker\nFrom: {{ IMAGE }}\n", &BuildArgs::new()).unwrap_err();
        assert!(error.one_line().contains("IMAGE"), "{}", error.one_line());
    }

    #[test]
    fn apps_are_read_in_order_and_installs_join_post() {
        let text = "Bootstrap: scratch\n%post\necho base\n%appinstall foo\necho foo\n\
                    %apprun foo\necho run foo\n%appinstall bar\necho bar\n";
        let plan = plan(text, &BuildArgs::new()).unwrap();
        let stage = &plan.stages[0];
        let names: Vec<&str> = stage.apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["foo", "bar"]);
        assert_eq!(stage.apps[0].run.trim(), "echo run foo");
        let body = &stage.post.as_ref().unwrap().1;
        let foo = body.find("cd /scif/apps/foo").unwrap();
        let bar = body.find("cd /scif/apps/bar").unwrap();
        assert!(body.starts_with("echo base") && foo < bar);
    }

    #[test]
    fn a_stage_with_only_metadata_does_not_change_the_rootfs() {
        let text =
            "Bootstrap: docker\nFrom: busybox\n%runscript\necho hi\n%labels\nA B\n%test\ntrue\n";
        let plan = plan(text, &BuildArgs::new()).unwrap();
        assert!(!plan.stages[0].changes_rootfs(true));
        assert!(plan.stages[0].changes_rootfs(false));
    }
}
