//! The build pipeline: bootstrap agents, the layer cache and layer application.
//!
//! A `docker` bootstrap goes [`docker`] (resolve the reference, pull manifest, config and
//! layers through the registry client) → [`cache`] (content-addressed blobs shared by the
//! worker's builds) → [`layer`] (apply each verified blob onto the rootfs directory). The
//! image config travels on in [`docker::PulledImage`] so the metadata step can write
//! `/.singularity.d`.

pub mod cache;
pub mod digest;
pub mod docker;
pub mod layer;
pub mod progress;
