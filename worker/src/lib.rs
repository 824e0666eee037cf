//! The Kiln build worker: turns a definition file into a SIF image as an unprivileged user.
//!
//! Data flow of one build, and where each step lives:
//! - `pipeline/`: bootstrap agents (docker, library, oras, scratch), layer application and the
//!   definition's sections, in SingularityCE's order;
//! - `sandbox/`: the only place that touches namespaces, mounts, id maps and process spawning;
//!   a `%post` line is born on the pipe of a sandboxed child here;
//! - `image/`: SquashFS and SIF assembly from a built tree or straight from layers;
//! - `metadata`: what a build writes into `/.singularity.d` and the SIF's JSON objects;
//! - `events`: the structured build events (log lines, progress, status) the consumer publishes.

pub mod consumer;
pub mod events;
pub mod image;
pub mod metadata;
pub mod pipeline;
pub mod sandbox;
