//! Subcommands people run by hand to inspect and assemble images; part of the binary only, so
//! the library stays free of `anyhow` and of printing.

pub mod build;
pub mod serve;
pub mod sif;
pub mod squashfs;
