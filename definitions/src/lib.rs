//! Singularity definition files: the parser, compatible with SingularityCE's, and the JSON form
//! of its `types.Definition`. Pure functions from `&str` to plain structs; no I/O.
