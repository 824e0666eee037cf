//! `kiln-worker sif …`: list, dump and create SIF images with `kiln_proto::sif`, the same code
//! the build pipeline uses. `list` prints exactly what `siftool list` prints, so the two can be
//! diffed; `new` writes the object set `singularity build` writes (spec `sif-squashfs.md` §2.1).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use kiln_proto::sif::format::DETERMINISTIC_TIME;
use kiln_proto::sif::{
    Arch, CreateOptions, GlobalHeader, SifReader, SiftoolList, write_singularity_image,
};

/// The `sif` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SifCommand {
    /// List the objects of a SIF image, in `siftool list`'s format.
    List {
        /// The SIF image.
        file: PathBuf,
    },
    /// Copy the data of one object out of a SIF image.
    Dump {
        /// Object ID, as `list` shows it.
        id: u32,
        /// The SIF image.
        file: PathBuf,
        /// Where to write the data; `-` for stdout.
        #[arg(short = 'o', long)]
        output: PathBuf,
    },
    /// Write a SIF image as `singularity build` does: the definition file, the JSON objects
    /// sorted by name, then the SquashFS as primary system partition, all in group 1.
    New {
        /// The SIF image to write (replaced if it exists; mode 0755, as Singularity makes it).
        #[arg(short = 'o', long)]
        output: PathBuf,
        /// The definition file.
        #[arg(long)]
        deffile: PathBuf,
        /// The SquashFS image of the root file system.
        #[arg(long)]
        squashfs: PathBuf,
        /// Architecture of the root file system, as a Go name (amd64, arm64, ppc64le, …).
        #[arg(long)]
        arch: String,
        /// A JSON object, NAME=FILE (e.g. inspect-metadata.json=meta.json); repeatable. Empty
        /// files are left out, as Singularity leaves them out.
        #[arg(long = "json", value_name = "NAME=FILE")]
        json: Vec<String>,
        /// Image UUID (8-4-4-4-12 hex); default all zero, for reproducible images.
        #[arg(long)]
        id: Option<String>,
        /// Creation time in seconds since the epoch; default the value sylabs/sif uses for
        /// reproducible images (siftool then shows no time).
        #[arg(long, allow_negative_numbers = true)]
        time: Option<i64>,
        /// The `#!` launch line; default Singularity's. Empty for none, as `siftool new` writes.
        #[arg(long)]
        launch_script: Option<String>,
    },
}

/// Runs one `sif` subcommand.
pub fn run(command: SifCommand) -> anyhow::Result<()> {
    match command {
        SifCommand::List { file } => {
            let reader = open(&file)?;
            let mut stdout = io::stdout().lock();
            write!(stdout, "{}", SiftoolList(reader.objects()))
                .and_then(|()| stdout.flush())
                .context("failed to print the listing")
        }
        SifCommand::Dump { id, file, output } => {
            let mut reader = open(&file)?;
            // Fail before creating the output file.
            reader.object(id)?;
            if output.as_os_str() == "-" {
                let mut stdout = io::stdout().lock();
                reader
                    .copy_object(id, &mut stdout)
                    .with_context(|| format!("failed to dump object {id} of {}", file.display()))?;
                return stdout.flush().context("failed to flush stdout");
            }
            let mut out = BufWriter::new(
                File::create(&output)
                    .with_context(|| format!("failed to create {}", output.display()))?,
            );
            reader
                .copy_object(id, &mut out)
                .with_context(|| format!("failed to dump object {id} of {}", file.display()))?;
            out.flush()
                .with_context(|| format!("failed to write {}", output.display()))
        }
        SifCommand::New {
            output,
            deffile,
            squashfs,
            arch,
            json,
            id,
            time,
            launch_script,
        } => {
            let Some(arch) = Arch::from_go_arch(&arch) else {
                bail!("unknown architecture {arch:?}: use a Go name such as amd64 or arm64");
            };
            let id = match id {
                None => [0; 16],
                Some(text) => GlobalHeader::parse_id(&text)
                    .with_context(|| format!("--id {text:?} is not a UUID"))?,
            };
            let mut options = CreateOptions {
                id,
                time: time.unwrap_or(DETERMINISTIC_TIME),
                ..CreateOptions::default()
            };
            if let Some(script) = launch_script {
                options.launch_script = script.into_bytes();
            }
            let result = new_image(&output, options, &deffile, &squashfs, arch, &json);
            if result.is_err() {
                // Leave no half-written image behind for someone to push.
                let _ = fs::remove_file(&output);
            }
            result
        }
    }
}

/// Opens and validates a SIF image.
fn open(file: &Path) -> anyhow::Result<SifReader<File>> {
    let handle = File::open(file).with_context(|| format!("failed to open {}", file.display()))?;
    SifReader::new(handle).with_context(|| format!("{} is not a valid SIF image", file.display()))
}

/// Writes `output` from the definition file, the JSON objects and the SquashFS.
fn new_image(
    output: &Path,
    options: CreateOptions,
    deffile: &Path,
    squashfs: &Path,
    arch: Arch,
    json: &[String],
) -> anyhow::Result<()> {
    let deffile =
        fs::read(deffile).with_context(|| format!("failed to read {}", deffile.display()))?;
    let mut objects = Vec::new();
    for spec in json {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("--json {spec:?} is not NAME=FILE");
        };
        let data = fs::read(path).with_context(|| format!("failed to read {path}"))?;
        objects.push((name, data));
    }
    let objects: Vec<(&str, &[u8])> = objects.iter().map(|(n, d)| (*n, d.as_slice())).collect();
    let partition =
        File::open(squashfs).with_context(|| format!("failed to open {}", squashfs.display()))?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(output)
        .with_context(|| format!("failed to create {}", output.display()))?;
    let mut out = write_singularity_image(
        BufWriter::new(file),
        options,
        &deffile,
        &objects,
        arch,
        partition,
    )
    .with_context(|| format!("failed to write {}", output.display()))?;
    out.flush()
        .with_context(|| format!("failed to write {}", output.display()))
}
