//! Fuzzes `render` and the build-argument parsers. The input is a build-arg file, a NUL byte,
//! then the definition, so both sides are explored together.

#![no_main]

use kiln_definitions::{MAX_DEFINITION_BYTES, parse, parse_build_arg_file, render};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (arg_file, definition) = input.split_once('\0').unwrap_or(("", input));
    let (args, _warnings) = parse_build_arg_file(arg_file);
    if let Ok(rendered) = render(definition, &args) {
        assert!(rendered.text.len() <= MAX_DEFINITION_BYTES);
        let mut joined = String::new();
        for stage in &rendered.stages {
            assert_eq!(stage.full_raw, rendered.text);
            // Each templated stage parses again on its own, to the same definition.
            let mut again = parse(&stage.raw).expect("a rendered stage parses");
            again.full_raw.clone_from(&stage.full_raw);
            assert_eq!(&again, stage);
            joined.push_str(&stage.raw);
        }
        assert_eq!(joined, rendered.text);
        for unused in &rendered.unused_build_args {
            assert!(args.contains_key(unused));
        }
    }
});
