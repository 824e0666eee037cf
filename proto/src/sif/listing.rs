//! The object table as `siftool list` prints it (sylabs/sif `internal/app/siftool/info.go`
//! `writeList`), so that `kiln-worker sif list` and `siftool list` can be compared line by line.

use std::fmt;

use super::format::{Descriptor, Link, ObjectMetadata};

/// Formats descriptors exactly as `siftool list` does, with one deliberate difference: siftool
/// prints nothing after `|Signature` (not even the line break) when the hash type is unknown;
/// this prints `|Signature (unknown)`.
#[derive(Clone, Copy, Debug)]
pub struct SiftoolList<'a>(pub &'a [Descriptor]);

/// The rule siftool draws above and below the column titles (78 dashes).
const RULE: &str = "------------------------------------------------------------------------------";

impl fmt::Display for SiftoolList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{RULE}")?;
        // Go: `Fprintf("%-4s %-8s %-8s %-26s %s\n", "ID", "|GROUP", "|LINK", …)`, spelled out.
        writeln!(f, "ID   |GROUP   |LINK    |SIF POSITION (start-end)  |TYPE")?;
        writeln!(f, "{RULE}")?;
        for d in self.0 {
            write!(f, "{:<4} ", d.id)?;
            match d.group() {
                None => write!(f, "|{:<7} ", "NONE")?,
                Some(group) => write!(f, "|{group:<7} ")?,
            }
            match d.link() {
                Link::None => write!(f, "|{:<7} ", "NONE")?,
                Link::Group(group) => write!(f, "|{group:<3} (G) ")?,
                Link::Object(id) => write!(f, "|{id:<7} ")?,
            }
            // Go adds in int64 and would wrap; the reader has bounded both by the file length.
            let position = format!("|{}-{} ", d.offset, d.offset.saturating_add(d.size));
            write!(f, "{position:<26} |{}", d.data_type)?;
            match d.metadata() {
                ObjectMetadata::Partition {
                    fs_type,
                    part_type,
                    arch,
                } => writeln!(f, " ({fs_type}/{part_type}/{})", arch.go_arch())?,
                ObjectMetadata::Signature { hash_type, .. } => writeln!(f, " ({hash_type})")?,
                ObjectMetadata::CryptoMessage { format, message } => {
                    writeln!(f, " ({format}/{message})")?;
                }
                ObjectMetadata::Sbom { format } => writeln!(f, " ({format})")?,
                ObjectMetadata::None | ObjectMetadata::OciBlob { .. } => writeln!(f)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sif::format::{Arch, DataType, FsType, GROUP_MASK, HashType, PartType};

    #[test]
    fn matches_the_siftool_columns() {
        let mut partition = Descriptor::unused();
        partition.data_type = DataType::PARTITION;
        partition.used = true;
        partition.id = 3;
        partition.group_id = GROUP_MASK | 1;
        partition.offset = 36864;
        partition.size = 4096;
        partition.extra = ObjectMetadata::Partition {
            fs_type: FsType::SQUASHFS,
            part_type: PartType::PRIMARY_SYSTEM,
            arch: Arch::AMD64,
        }
        .encode()
        .expect("fits");
        let mut signature = Descriptor::unused();
        signature.data_type = DataType::SIGNATURE;
        signature.used = true;
        signature.id = 5;
        signature.group_id = GROUP_MASK;
        signature.linked_id = GROUP_MASK | 1;
        signature.offset = 790528;
        signature.size = 1765;
        signature.extra[0] = HashType::SHA256.0 as u8;
        let text = SiftoolList(&[partition, signature]).to_string();
        // Rows copied from `siftool list` output (spec §2.1, §7.2).
        let expected = "\
------------------------------------------------------------------------------
ID   |GROUP   |LINK    |SIF POSITION (start-end)  |TYPE
------------------------------------------------------------------------------
3    |1       |NONE    |36864-40960               |FS (Squashfs/*System/amd64)
5    |NONE    |1   (G) |790528-792293             |Signature (SHA-256)
";
        assert_eq!(text, expected);
    }
}
