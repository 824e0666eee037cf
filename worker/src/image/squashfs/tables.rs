//! The inode and directory tables, and the id and xattr tables they index into.
//!
//! Inodes are numbered and written children first: for each directory, its subdirectories
//! (recursively), then its other entries in name order, then the directory itself, whose listing
//! needs the references of all its entries. A hard-linked inode is written once, where it is first
//! met, and every name of it points there. The root comes last.

use std::collections::HashMap;

use super::codec::{Codec, new_compressor};
use super::data::{DataLayout, FileData};
use super::format::{
    self, EXTENDED, MAX_DIR_RUN, METADATA_BYTES, NO_FRAGMENT, NO_XATTR, encode_device,
};
use super::metadata::MetaWriter;
use crate::image::tree::{Meta, NodeId, NodeKind, Tree, Xattrs};
use crate::image::{ImageError, Result};

/// Inode order, numbers and link counts of the nodes reachable from the root.
///
/// Same layout as mksquashfs, so that directory listings (and their sizes in `unsquashfs -lln`)
/// come out the same: one depth-first pass over entries in name order; a directory's inode is
/// written after its whole subtree, other inodes where they are met; numbers are handed out in
/// the order nodes are met (a directory before its entries) and the root gets the last one.
pub struct Walk {
    /// Nodes in the order their inodes are written; the root is last.
    pub order: Vec<NodeId>,
    /// Inode number of each node, from 1.
    pub numbers: HashMap<NodeId, u32>,
    /// Names of each non-directory node (its link count).
    pub links: HashMap<NodeId, u32>,
    /// Parent of each directory other than the root.
    pub parents: HashMap<NodeId, NodeId>,
    /// Regular files in the order they are met, each once.
    pub files: Vec<NodeId>,
}

impl Walk {
    /// Walks `tree` from its root without recursion (layer trees may be deep).
    pub fn new(tree: &Tree) -> Result<Self> {
        let mut walk = Self {
            order: Vec::new(),
            numbers: HashMap::new(),
            links: HashMap::new(),
            parents: HashMap::new(),
            files: Vec::new(),
        };
        let children = |dir: NodeId| -> Result<Vec<NodeId>> {
            Ok(tree
                .entries(dir)
                .ok_or(ImageError::NotADirectory(dir))?
                .values()
                .copied()
                .collect())
        };
        let mut next_number = 1u32;
        let mut stack: Vec<(NodeId, Vec<NodeId>, usize)> =
            vec![(Tree::ROOT, children(Tree::ROOT)?, 0)];
        while let Some((dir, entries, next)) = stack.last_mut() {
            let dir = *dir;
            let Some(&child) = entries.get(*next) else {
                walk.order.push(dir);
                stack.pop();
                continue;
            };
            *next += 1;
            if tree.nodes[child].is_dir() {
                // A directory has exactly one name; a second one would make a loop.
                if child == Tree::ROOT || walk.parents.insert(child, dir).is_some() {
                    return Err(ImageError::DirectoryLinkedTwice(child));
                }
                walk.numbers.insert(child, next_number);
                next_number = next_number
                    .checked_add(1)
                    .ok_or(ImageError::TooManyInodes)?;
                stack.push((child, children(child)?, 0));
                continue;
            }
            let count = walk.links.entry(child).or_insert(0);
            *count += 1;
            if *count == 1 {
                walk.numbers.insert(child, next_number);
                next_number = next_number
                    .checked_add(1)
                    .ok_or(ImageError::TooManyInodes)?;
                walk.order.push(child);
                if matches!(tree.nodes[child].kind, NodeKind::File { .. }) {
                    walk.files.push(child);
                }
            }
        }
        walk.numbers.insert(Tree::ROOT, next_number);
        if next_number == u32::MAX {
            return Err(ImageError::TooManyInodes);
        }
        Ok(walk)
    }
}

/// uid/gid values and their 16-bit indexes.
#[derive(Default)]
pub struct IdTable {
    ids: Vec<u32>,
    index: HashMap<u32, u16>,
}

impl IdTable {
    /// The index of `id`, adding it when new.
    pub fn get(&mut self, id: u32) -> Result<u16> {
        if let Some(&i) = self.index.get(&id) {
            return Ok(i);
        }
        // The superblock counts ids in 16 bits.
        let i = u16::try_from(self.ids.len())
            .ok()
            .filter(|&i| i < u16::MAX)
            .ok_or(ImageError::TooManyIds)?;
        self.ids.push(id);
        self.index.insert(id, i);
        Ok(i)
    }

    /// The table's records.
    pub fn records(&self) -> Vec<u8> {
        self.ids.iter().flat_map(|id| id.to_le_bytes()).collect()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Distinct xattr sets: key/value pairs in one metadata stream, and one id record per set.
pub struct XattrTable {
    kv: MetaWriter,
    records: Vec<u8>,
    by_set: HashMap<Xattrs, u32>,
}

/// Name prefixes SquashFS can store, with their on-disk type.
const XATTR_PREFIXES: [(&[u8], u16); 3] = [(b"user.", 0), (b"trusted.", 1), (b"security.", 2)];

impl XattrTable {
    fn new(codec: Codec, level: u32, block_size: u32) -> Result<Self> {
        Ok(Self {
            kv: MetaWriter::new(new_compressor(codec, level, block_size)?),
            records: Vec::new(),
            by_set: HashMap::new(),
        })
    }

    /// The xattr index for `xattrs`, or [`NO_XATTR`] when none can be stored. Names outside the
    /// `user.`, `trusted.` and `security.` namespaces (e.g. `system.posix_acl_access`) have no
    /// SquashFS encoding and are dropped, as mksquashfs does.
    fn index(&mut self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<u32> {
        let storable: Xattrs = xattrs
            .iter()
            .filter(|(name, _)| XATTR_PREFIXES.iter().any(|(p, _)| name.starts_with(p)))
            .cloned()
            .collect();
        if storable.is_empty() {
            return Ok(NO_XATTR);
        }
        if let Some(&i) = self.by_set.get(&storable) {
            return Ok(i);
        }
        let reference = self.kv.reference();
        let mut size = 0u32;
        for (name, value) in &storable {
            let Some((prefix, kind)) = XATTR_PREFIXES.iter().find(|(p, _)| name.starts_with(p))
            else {
                continue;
            };
            let short = &name[prefix.len()..];
            let mut rec = Vec::with_capacity(8 + short.len() + value.len());
            rec.extend_from_slice(&kind.to_le_bytes());
            rec.extend_from_slice(
                &u16::try_from(short.len())
                    .map_err(|_| ImageError::XattrTooLarge)?
                    .to_le_bytes(),
            );
            rec.extend_from_slice(short);
            rec.extend_from_slice(
                &u32::try_from(value.len())
                    .map_err(|_| ImageError::XattrTooLarge)?
                    .to_le_bytes(),
            );
            rec.extend_from_slice(value);
            size = size
                .checked_add(rec.len() as u32)
                .ok_or(ImageError::XattrTooLarge)?;
            self.kv.write(&rec)?;
        }
        let i = u32::try_from(self.by_set.len()).map_err(|_| ImageError::XattrTooLarge)?;
        self.records.extend_from_slice(&reference.to_le_bytes());
        self.records
            .extend_from_slice(&(storable.len() as u32).to_le_bytes());
        self.records.extend_from_slice(&size.to_le_bytes());
        self.by_set.insert(storable, i);
        Ok(i)
    }

    /// Number of distinct sets.
    pub fn len(&self) -> usize {
        self.by_set.len()
    }

    /// The key/value stream and the id records.
    pub fn finish(self) -> Result<(Vec<u8>, Vec<u8>)> {
        let (kv, _) = self.kv.finish()?;
        Ok((kv, self.records))
    }
}

/// The written inode and directory tables and what the superblock needs from them.
pub struct Tables {
    /// Compressed inode table.
    pub inodes: Vec<u8>,
    /// Compressed directory table.
    pub directories: Vec<u8>,
    /// Reference of the root inode.
    pub root: u64,
    /// Inode reference by inode number − 1 (the export table's records).
    pub export: Vec<u8>,
    /// Number of inodes.
    pub inode_count: u32,
    /// The id table.
    pub ids: IdTable,
    /// The xattr table.
    pub xattrs: XattrTable,
}

/// Writes every inode of `walk` with the data placement of `layout`.
pub fn write_tables(
    tree: &Tree,
    walk: &Walk,
    layout: &DataLayout,
    codec: Codec,
    level: u32,
    block_size: u32,
) -> Result<Tables> {
    let count = walk.order.len() as u32;
    let numbers = &walk.numbers;
    let mut refs: HashMap<NodeId, u64> = HashMap::with_capacity(walk.order.len());
    let mut inodes = MetaWriter::new(new_compressor(codec, level, block_size)?);
    let mut dirs = MetaWriter::new(new_compressor(codec, level, block_size)?);
    let mut ids = IdTable::default();
    let mut xattrs = XattrTable::new(codec, level, block_size)?;
    let empty = FileData::default();

    for &node_id in &walk.order {
        let node = &tree.nodes[node_id];
        let number = numbers[&node_id];
        let xattr = xattrs.index(&node.meta.xattrs)?;
        let mut rec = Vec::with_capacity(64);
        match &node.kind {
            NodeKind::Dir(entries) => {
                let (block, offset) = dirs.position();
                let (listing, index) = listing(
                    entries.iter().map(|(name, &c)| (name, c)),
                    tree,
                    &refs,
                    numbers,
                )?;
                // Each index entry records the directory-table block its run's header lands in.
                let mut index_records = Vec::new();
                let mut written = 0usize;
                for (at, name) in &index {
                    dirs.write(&listing[written..*at as usize])?;
                    written = *at as usize;
                    put32(&mut index_records, *at);
                    put32(
                        &mut index_records,
                        u32::try_from(dirs.position().0).map_err(|_| ImageError::TableTooLarge)?,
                    );
                    put32(&mut index_records, name.len() as u32 - 1);
                    index_records.extend_from_slice(name);
                }
                dirs.write(&listing[written..])?;
                let size = listing.len() as u64 + 3;
                let nlink = 2 + entries
                    .values()
                    .filter(|&&c| tree.nodes[c].is_dir())
                    .count() as u32;
                let parent = walk.parents.get(&node_id).map_or(count + 1, |p| numbers[p]);
                let block = u32::try_from(block).map_err(|_| ImageError::TableTooLarge)?;
                if xattr == NO_XATTR && size <= 0xffff && index.is_empty() {
                    header(&mut rec, format::DIR, &node.meta, number, &mut ids)?;
                    put32(&mut rec, block);
                    put32(&mut rec, nlink);
                    rec.extend_from_slice(&(size as u16).to_le_bytes());
                    rec.extend_from_slice(&offset.to_le_bytes());
                    put32(&mut rec, parent);
                } else {
                    header(
                        &mut rec,
                        format::DIR + EXTENDED,
                        &node.meta,
                        number,
                        &mut ids,
                    )?;
                    put32(&mut rec, nlink);
                    put32(
                        &mut rec,
                        u32::try_from(size).map_err(|_| ImageError::TableTooLarge)?,
                    );
                    put32(&mut rec, block);
                    put32(&mut rec, parent);
                    rec.extend_from_slice(
                        &u16::try_from(index.len())
                            .map_err(|_| ImageError::TableTooLarge)?
                            .to_le_bytes(),
                    );
                    rec.extend_from_slice(&offset.to_le_bytes());
                    put32(&mut rec, xattr);
                    rec.extend_from_slice(&index_records);
                }
            }
            NodeKind::File { size, .. } => {
                let data = layout.files.get(&node_id).unwrap_or(&empty);
                let nlink = walk.links.get(&node_id).copied().unwrap_or(1);
                let (frag, frag_offset) = data.fragment.unwrap_or((NO_FRAGMENT, 0));
                let fits = data.start <= u64::from(u32::MAX) && *size <= u64::from(u32::MAX);
                if nlink == 1 && xattr == NO_XATTR && fits && data.sparse_bytes == 0 {
                    header(&mut rec, format::FILE, &node.meta, number, &mut ids)?;
                    put32(&mut rec, data.start as u32);
                    put32(&mut rec, frag);
                    put32(&mut rec, frag_offset);
                    put32(&mut rec, *size as u32);
                } else {
                    header(
                        &mut rec,
                        format::FILE + EXTENDED,
                        &node.meta,
                        number,
                        &mut ids,
                    )?;
                    rec.extend_from_slice(&data.start.to_le_bytes());
                    rec.extend_from_slice(&size.to_le_bytes());
                    rec.extend_from_slice(&data.sparse_bytes.to_le_bytes());
                    put32(&mut rec, nlink);
                    put32(&mut rec, frag);
                    put32(&mut rec, frag_offset);
                    put32(&mut rec, xattr);
                }
                for &word in &data.blocks {
                    put32(&mut rec, word);
                }
            }
            // Symlinks, devices, fifos and sockets: link count, the kind's payload, and the
            // xattr index when there is one (extended type).
            other => {
                let ext = xattr != NO_XATTR;
                let kind = basic_type(other) + if ext { EXTENDED } else { 0 };
                header(&mut rec, kind, &node.meta, number, &mut ids)?;
                put32(&mut rec, walk.links.get(&node_id).copied().unwrap_or(1));
                match other {
                    NodeKind::Symlink(target) => {
                        let len =
                            u32::try_from(target.len()).map_err(|_| ImageError::TableTooLarge)?;
                        put32(&mut rec, len);
                        rec.extend_from_slice(target);
                    }
                    NodeKind::CharDevice { major, minor }
                    | NodeKind::BlockDevice { major, minor } => {
                        put32(&mut rec, encode_device(*major, *minor));
                    }
                    _ => {}
                }
                if ext {
                    put32(&mut rec, xattr);
                }
            }
        }
        refs.insert(node_id, inodes.reference());
        inodes.write(&rec)?;
    }

    let mut export = vec![0u8; walk.order.len() * 8];
    for (node, reference) in &refs {
        let at = (numbers[node] as usize - 1) * 8;
        export[at..at + 8].copy_from_slice(&reference.to_le_bytes());
    }
    let root = refs[&Tree::ROOT];
    Ok(Tables {
        inodes: inodes.finish()?.0,
        directories: dirs.finish()?.0,
        root,
        export,
        inode_count: count,
        ids,
        xattrs,
    })
}

fn put32(rec: &mut Vec<u8>, v: u32) {
    rec.extend_from_slice(&v.to_le_bytes());
}

fn header(rec: &mut Vec<u8>, kind: u16, meta: &Meta, number: u32, ids: &mut IdTable) -> Result<()> {
    rec.extend_from_slice(&kind.to_le_bytes());
    rec.extend_from_slice(&(meta.mode & 0o7777).to_le_bytes());
    rec.extend_from_slice(&ids.get(meta.uid)?.to_le_bytes());
    rec.extend_from_slice(&ids.get(meta.gid)?.to_le_bytes());
    put32(rec, meta.mtime);
    put32(rec, number);
    Ok(())
}

/// The basic inode type a directory entry records (extended inodes are listed as basic).
fn basic_type(kind: &NodeKind) -> u16 {
    match kind {
        NodeKind::Dir(_) => format::DIR,
        NodeKind::File { .. } => format::FILE,
        NodeKind::Symlink(_) => format::SYMLINK,
        NodeKind::BlockDevice { .. } => format::BLOCK_DEVICE,
        NodeKind::CharDevice { .. } => format::CHAR_DEVICE,
        NodeKind::Fifo => format::FIFO,
        NodeKind::Socket => format::SOCKET,
    }
}

/// Directory index entries: offset of a run's header in the listing, and the run's first name.
type DirIndex = Vec<(u32, Vec<u8>)>;

/// A directory's listing, and its index: runs of at most 256 entries under a header naming the
/// inode metadata block and a base inode number. A new run starts when the block changes, a
/// number is outside −32768..=32767 of the base, or the listing has grown 8 KiB past the last
/// index point; that last kind of run start is recorded in the index (listing offset and first
/// name), which an extended directory inode carries to speed up lookups. mksquashfs makes the
/// same choices, so listings (and directory sizes) match its images.
fn listing<'a>(
    entries: impl Iterator<Item = (&'a Vec<u8>, NodeId)>,
    tree: &Tree,
    refs: &HashMap<NodeId, u64>,
    numbers: &HashMap<NodeId, u32>,
) -> Result<(Vec<u8>, DirIndex)> {
    let mut out: Vec<u8> = Vec::new();
    let mut index = Vec::new();
    // (offset of the run's header, entries in it, inode block, base number)
    let mut run: Option<(usize, usize, u64, u32)> = None;
    let mut index_point = 0usize;
    let close = |out: &mut Vec<u8>, run: &Option<(usize, usize, u64, u32)>| {
        if let Some((at, count, _, _)) = *run {
            out[at..at + 4].copy_from_slice(&(count as u32 - 1).to_le_bytes());
        }
    };
    for (name, child) in entries {
        if name.is_empty() || name.len() > crate::image::tree::MAX_NAME_BYTES {
            return Err(ImageError::BadName(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
        let reference = *refs.get(&child).ok_or(ImageError::NotADirectory(child))?;
        let number = numbers[&child];
        let block = reference >> 16;
        let entry_len = 8 + name.len();
        let crosses = run.is_some() && out.len() + entry_len - index_point > METADATA_BYTES;
        let new_run = match run {
            None => true,
            Some((_, count, run_block, base)) => {
                let delta = i64::from(number) - i64::from(base);
                count == MAX_DIR_RUN
                    || run_block != block
                    || crosses
                    || !(-32768..=32767).contains(&delta)
            }
        };
        if new_run {
            close(&mut out, &run);
            if crosses {
                index.push((out.len() as u32, name.clone()));
                index_point = out.len();
            }
            run = Some((out.len(), 0, block, number));
            put32(&mut out, 0);
            put32(
                &mut out,
                u32::try_from(block).map_err(|_| ImageError::TableTooLarge)?,
            );
            put32(&mut out, number);
        }
        let Some((_, count, _, base)) = run.as_mut() else {
            continue;
        };
        *count += 1;
        out.extend_from_slice(&((reference & 0xffff) as u16).to_le_bytes());
        out.extend_from_slice(&((i64::from(number) - i64::from(*base)) as i16).to_le_bytes());
        out.extend_from_slice(&basic_type(&tree.nodes[child].kind).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
        out.extend_from_slice(name);
    }
    close(&mut out, &run);
    Ok((out, index))
}
