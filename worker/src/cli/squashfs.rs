//! `kiln-worker squashfs`: packs a directory tree, or OCI layer blobs applied in order, into a
//! SquashFS image with Kiln's writer.

use std::path::PathBuf;

use anyhow::Context;
use kiln_worker::image::{self, Codec, IdMap, SquashfsOptions, Tree};

/// Arguments of `kiln-worker squashfs`.
#[derive(Debug, clap::Args)]
pub struct SquashfsArgs {
    /// Directory tree to pack (the rootfs after %post). Exclusive with --layer.
    #[arg(required_unless_present = "layer", conflicts_with = "layer")]
    dir: Option<PathBuf>,
    /// OCI layer blob (gzip, zstd or plain tar), applied in the order given; repeatable.
    #[arg(long)]
    layer: Vec<PathBuf>,
    /// The image file to write (replaced if it exists).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Compressor: gzip (default; what Singularity writes and reads everywhere), zstd, xz, lz4.
    #[arg(long, default_value = "gzip")]
    comp: String,
    /// Compression level (gzip 1-12, default 9; zstd 1-22, default 3; xz 0-9, default 6).
    #[arg(long)]
    level: Option<u32>,
    /// Data block size in bytes, a power of two from 4096 to 1048576.
    #[arg(long, default_value_t = 131072)]
    block_size: u32,
    /// Compression threads; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Map host uids back to image uids, INNER:HOST:COUNT as in /proc/PID/uid_map; repeatable.
    /// Without any, ids are stored as they are on disk.
    #[arg(long)]
    uid_map: Vec<String>,
    /// Map host gids back to image gids, INNER:HOST:COUNT; repeatable.
    #[arg(long)]
    gid_map: Vec<String>,
    /// Store every file as owned by root (mksquashfs -all-root).
    #[arg(long)]
    all_root: bool,
    /// Superblock creation time (seconds since the epoch); default 0 for reproducible images.
    #[arg(long, default_value_t = 0)]
    mkfs_time: u32,
}

/// Runs `kiln-worker squashfs`.
pub fn run(args: SquashfsArgs) -> anyhow::Result<()> {
    let codec: Codec = args.comp.parse()?;
    if let Some(warning) = codec.portability_warning() {
        tracing::warn!(codec = %codec, "{warning}");
    }
    let mut tree = if let Some(dir) = &args.dir {
        let mut uids = IdMap::default();
        let mut gids = IdMap::default();
        for spec in &args.uid_map {
            uids.push_spec(spec)?;
        }
        for spec in &args.gid_map {
            gids.push_spec(spec)?;
        }
        image::read_dir_tree(dir, &uids, &gids)
            .with_context(|| format!("failed to read {}", dir.display()))?
    } else {
        let mut tree = Tree::new(image::tree::Meta::implicit_dir());
        for layer in &args.layer {
            image::apply_layer(&mut tree, layer)
                .with_context(|| format!("failed to apply layer {}", layer.display()))?;
        }
        tree
    };
    if args.all_root {
        for node in &mut tree.nodes {
            node.meta.uid = 0;
            node.meta.gid = 0;
        }
    }
    let opts = SquashfsOptions {
        codec,
        level: args.level,
        block_size: args.block_size,
        threads: args.threads,
        mkfs_time: args.mkfs_time,
        ..SquashfsOptions::default()
    };
    let out = std::fs::File::create(&args.output)
        .with_context(|| format!("failed to create {}", args.output.display()))?;
    let summary = image::write_squashfs(&tree, &out, &opts)
        .with_context(|| format!("failed to write {}", args.output.display()))?;
    tracing::info!(
        bytes = summary.file_size,
        inodes = summary.inodes,
        files = summary.files,
        duplicates = summary.duplicates,
        fragments = summary.fragments,
        "squashfs image written"
    );
    Ok(())
}
