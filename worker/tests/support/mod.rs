//! Test doubles the shared fixtures do not provide.

pub mod lying_registry;
