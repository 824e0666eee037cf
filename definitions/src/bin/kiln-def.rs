//! `kiln-def`: parse, render and check definition files from the command line.

fn main() {}
