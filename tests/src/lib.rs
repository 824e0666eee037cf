//! Kiln's end-to-end test support: fixture builders (base images from Debian packages), the
//! private test registry, and helpers shared by the test binary in `tests/tests/`.
//!
//! - [`fixtures`]: the fixture images, built by code into cached OCI layouts ([`layer`] writes
//!   deterministic tar layers, [`oci`] the layouts, [`rootfs`] packs a host tree).
//! - [`registry`]: the registries holding them, and the environment contract with
//!   `./tests/run.sh`.
//! - [`rabbitmq`]: a private vhost per test on the shared broker.
//! - [`cluster`]: a whole Kiln (scheduler, worker processes, broker vhost) and a stock-like
//!   client for end-to-end tests.
//! - [`net`]: free ports and readiness probes; [`command`]: running the judges (skopeo, umoci…).

pub mod cluster;
pub mod command;
pub mod error;
pub mod fixtures;
pub mod layer;
pub mod net;
pub mod oci;
pub mod rabbitmq;
pub mod registry;
pub mod rootfs;

use std::fs::File;
use std::io::Read;

pub use error::{Result, SupportError};

/// `<prefix>-<16 random hex digits>`: a name no other test or run on this machine uses, for
/// vhosts, queue prefixes, repositories and databases.
pub fn unique_name(prefix: &str) -> Result<String> {
    let mut random = [0u8; 8];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(error::io_error("read", "/dev/urandom"))?;
    Ok(format!("{prefix}-{}", hex::encode(random)))
}
