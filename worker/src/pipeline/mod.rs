//! The build pipeline: bootstrap agents, the layer cache and layer application.
//!
//! A `docker` bootstrap goes [`docker`] (resolve the reference, pull manifest, config and
//! layers through the registry client) → [`cache`] (content-addressed blobs shared by the
//! worker's builds) → [`layer`] (apply each verified blob onto the rootfs directory). The
//! image config travels on in [`docker::PulledImage`] so the metadata step can write
//! `/.singularity.d`.
//!
//! Around them, the build itself: [`plan`] turns a definition and the build's options into
//! stages (pure, refusing what a remote builder cannot do); [`build`] runs them: the agent fills
//! each stage's rootfs, `%files` copies in through [`confined`] access, `%post` and `%test` run
//! in the sandbox, [`stage_meta`] writes `/.singularity.d`, and the last stage becomes SquashFS
//! and SIF. [`tasks`] are the steps that run as root of the build's user namespace (squashing,
//! `%files from <stage>`, removing trees), because `%post` may leave files only it can read.

pub mod agents;
pub mod build;
pub mod cache;
pub mod confined;
pub mod digest;
pub mod docker;
pub mod error;
pub mod files;
pub mod layer;
pub mod library;
pub mod plan;
pub mod progress;
pub mod records_overlay;
pub mod squashfs_unpack;
pub mod stage_meta;
pub mod tasks;

pub use build::{BuildEnv, BuildOptions, build};
pub use error::BuildError;
