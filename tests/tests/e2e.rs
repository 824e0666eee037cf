//! Kiln's end-to-end suite: one test binary (STYLE.md 2.7), a module per area, shared factories
//! and judges in `helper/`. Services come from `./tests/run.sh` through the environment contract
//! of `kiln_tests::registry`, or are started privately when a test runs alone.

mod fixtures;
mod helper;
mod image;
mod ops;
mod remote;
mod services;
mod web;
