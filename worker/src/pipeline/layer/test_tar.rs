//! Tar archives for the layer tests, written header by header in the order given (whiteout
//! placement matters) with raw names, so that hostile names (`..`, absolute link targets) can be
//! expressed: `tar::Header::set_path` refuses them.

/// Modification time of every entry (seconds since the epoch).
pub const MTIME: u64 = 1_700_000_000;

/// A tar archive being written.
#[derive(Default)]
pub struct Tar {
    out: Vec<u8>,
}

impl Tar {
    /// Appends one entry; `name` and `link` must fit the 100-byte ustar fields.
    pub fn entry(
        &mut self,
        kind: tar::EntryType,
        name: &str,
        link: &str,
        mode: u32,
        owner: (u64, u64),
        data: &[u8],
    ) -> &mut Self {
        let mut h = tar::Header::new_ustar();
        {
            let raw = h.as_old_mut();
            raw.name = [0; 100];
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            raw.linkname = [0; 100];
            raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        self.out
            .extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }

    /// A directory (`name` should end in `/`).
    pub fn dir(&mut self, name: &str, mode: u32, owner: (u64, u64)) -> &mut Self {
        self.entry(tar::EntryType::Directory, name, "", mode, owner, b"")
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, data: &[u8], mode: u32, owner: (u64, u64)) -> &mut Self {
        self.entry(tar::EntryType::Regular, name, "", mode, owner, data)
    }

    /// A symlink owned by root.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(tar::EntryType::Symlink, name, target, 0o777, (0, 0), b"")
    }

    /// A hard link to `target` (an archive path).
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(tar::EntryType::Link, name, target, 0o644, (0, 0), b"")
    }

    /// A whiteout or opaque marker (an empty file).
    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, b"", 0o644, (0, 0))
    }

    /// A character or block device, mode 0620, group 5.
    pub fn device(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        major: u32,
        minor: u32,
    ) -> &mut Self {
        let start = self.out.len();
        self.entry(kind, name, "", 0o620, (0, 5), b"");
        let mut h = tar::Header::from_byte_slice(&self.out[start..start + 512]).clone();
        h.set_device_major(major)
            .expect("ustar header has device fields");
        h.set_device_minor(minor)
            .expect("ustar header has device fields");
        h.set_cksum();
        self.out[start..start + 512].copy_from_slice(h.as_bytes());
        self
    }

    /// The archive with its two end-of-archive blocks.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}
