//! Everything two Kiln processes, or Kiln and a stock Singularity client, must agree on byte for
//! byte. Nothing in this crate performs I/O of its own or spawns tasks: it holds types, their
//! (de)serialization and constants, so the scheduler and the worker cannot drift apart.
//!
//! - `http`: the bodies stock clients and Kiln exchange (json-resp envelope, build API,
//!   discovery);
//! - `amqp`: the topology, the jobs the scheduler queues and the events workers send back;
//! - `sif`: the Singularity Image Format (reader and writer over plain structs).
//!
//! The library API's bodies join `http` with issue #8.

pub mod amqp;
pub mod http;
pub mod sif;
