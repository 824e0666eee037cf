//! Fuzzes `kiln_proto::sif::SifReader` with arbitrary bytes: it must never panic, and whatever it
//! accepts must be fully readable: every object listed, formatted, decoded and copied out with
//! exactly its recorded length, inside the input.
//!
//! Run (from `proto/`): `cargo +nightly fuzz run sif_reader -- -max_len=65536`. Good seeds are
//! small images, e.g. from `SifWriter` with `descriptor_capacity: 2, descriptors_offset: 128`,
//! and images made with `siftool new/add`.

#![no_main]

use std::io::Cursor;

use kiln_proto::sif::{SifReader, SiftoolList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = SifReader::new(Cursor::new(data)) else {
        return;
    };
    let _ = SiftoolList(reader.objects()).to_string();
    let _ = reader.primary_partition();
    let _ = reader.header().id_string();
    let objects = reader.objects().to_vec();
    for d in &objects {
        let _ = d.metadata().fingerprint();
        assert!(d.data_offset() + d.data_len() <= data.len() as u64);
        let mut out = Vec::new();
        let copied = reader
            .copy_object(d.id, &mut out)
            .expect("an accepted object is readable");
        assert_eq!(copied, d.data_len());
        let start = d.data_offset() as usize;
        assert_eq!(out, &data[start..start + out.len()]);
    }
});
