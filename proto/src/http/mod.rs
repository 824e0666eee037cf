//! HTTP bodies stock Singularity clients exchange with Kiln, byte-compatible with what the
//! SingularityCE build client and library client send and expect (`shared/specs/build-api.md`,
//! `library-api.md`).
//!
//! Wire names are the clients' (`#[serde(rename)]`); Rust names stay snake_case. Request types
//! ignore unknown fields and accept `null` where old clients send it, because every client
//! version since SingularityCE 3.3 must keep working (build-api.md §11–12).

mod build;
mod discovery;
mod envelope;
mod fleet;
pub mod library;
mod upload;

pub use build::{BuildContextRequest, BuildInfo, BuildRequest, VersionInfo};
pub use discovery::{ServiceDocument, ServiceEntry};
pub use envelope::{ErrorBody, Page, Response};
pub use fleet::{QueueInfo, WorkerInfo, WorkerStatus};
pub use upload::StoredBlob;
