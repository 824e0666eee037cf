//! Everything two Kiln processes, or Kiln and a stock Singularity client, must agree on byte for
//! byte. Nothing in this crate performs I/O of its own or spawns tasks: it holds types, their
//! (de)serialization and constants, so the scheduler and the worker cannot drift apart.
//!
//! - `sif`: the Singularity Image Format (reader and writer over plain structs).
//!
//! The HTTP bodies (`http`) and the AMQP topology and messages (`amqp`) join here with the
//! scheduler (issue #6).
