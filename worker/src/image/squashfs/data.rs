//! The data area: file contents split into blocks, compressed on every core, written in a fixed
//! order, with tail ends packed into fragment blocks and duplicate files stored once.
//!
//! Three kinds of threads share the work:
//! - the *reader* (the calling thread) walks the files in data order, reads their bytes, decides
//!   duplicates, packs fragments, and numbers every item it produces;
//! - *compressors* (one per thread asked for) take blocks from a shared queue;
//! - the *sink* puts results back in the reader's order and writes them to the image.
//!
//! The reader takes a credit before queueing a block and the sink returns it once the block is
//! on disk, so at most [`DataOptions::window`] blocks are in memory whatever the thread speeds,
//! and the output is the same bytes for the same input, whatever the thread count. Markers
//! ("file done", "duplicate of") need no credit: they are a few bytes each, and at most one per
//! file packed into the fragment blocks in flight can wait in the sink. Only blocks make the
//! reader wait, which matters on a loaded machine, where every wait costs a scheduler round trip.
//!
//! Duplicate detection: files with the same size and the same 128-bit xxh3 are candidates; a
//! candidate is stored as a duplicate only after its bytes compared equal to the first file of
//! its group, so crafted inputs with colliding hashes cannot alias files.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

use xxhash_rust::xxh3::Xxh3;

use super::codec::{Codec, new_compressor};
use super::format::DATA_UNCOMPRESSED;
use super::prefetch::Prefetch;
use crate::image::blob::open_blob;
use crate::image::tree::{Content, NodeId};
use crate::image::{ImageError, Result};

/// How the data area is written.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Data block size in bytes.
    pub block_size: u32,
    /// Compressor.
    pub codec: Codec,
    /// Compression level, already validated for `codec`.
    pub level: u32,
    /// Compression threads (at least 1).
    pub threads: usize,
    /// Whether duplicate files are stored once.
    pub dedup: bool,
    /// Bytes of layer file contents kept in memory to compare later duplicates against (a layer
    /// region cannot be re-read without decompressing the layer again). Groups whose first file
    /// does not fit are written without de-duplication.
    pub dedup_memory_bytes: u64,
}

impl DataOptions {
    /// Items in flight between reader and sink.
    fn window(&self) -> usize {
        self.threads * 8 + 16
    }
}

/// A regular file to store.
#[derive(Debug, Clone)]
pub struct FileItem {
    /// The file's node in the tree.
    pub node: NodeId,
    /// Length in bytes.
    pub size: u64,
    /// Where the bytes are.
    pub content: Content,
    /// Content hash if the source computed one.
    pub hash: Option<u128>,
}

/// Where one file's bytes ended up.
#[derive(Debug, Clone, Default)]
pub struct FileData {
    /// Absolute offset of the first block (0 without blocks).
    pub start: u64,
    /// Size word of each full block: on-disk length, [`DATA_UNCOMPRESSED`] if stored raw, 0 for a
    /// sparse (all-zero) block.
    pub blocks: Vec<u32>,
    /// Fragment index and offset in the uncompressed fragment block of the tail end.
    pub fragment: Option<(u32, u32)>,
    /// Bytes saved by sparse blocks.
    pub sparse_bytes: u64,
}

/// What the data area holds once written.
#[derive(Debug, Default)]
pub struct DataLayout {
    /// Placement of every file, by node.
    pub files: HashMap<NodeId, FileData>,
    /// Fragment table entries: absolute offset and size word.
    pub fragments: Vec<(u64, u32)>,
    /// Absolute offset just past the data area.
    pub end: u64,
    /// Files stored as duplicates of an earlier one.
    pub duplicates: u64,
}

/// Writes the contents of `files`, in the given order, to `out` from absolute offset `start`.
/// `blobs` are the layer blobs that [`Content::Layer`] items refer to; those items must come in
/// increasing (blob, offset) order, since a compressed layer can only be read forwards.
pub fn write_data(
    out: &File,
    start: u64,
    files: Vec<FileItem>,
    blobs: &[PathBuf],
    opts: &DataOptions,
) -> Result<DataLayout> {
    let plan = DedupPlan::new(&files, opts)?;
    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(opts.window());
    let job_rx = Mutex::new(job_rx);
    let (item_tx, item_rx) = mpsc::channel::<Sequenced>();
    let (credit_tx, credit_rx) = mpsc::sync_channel::<()>(opts.window());
    for _ in 0..opts.window() {
        credit_tx.send(()).map_err(|_| ImageError::WorkerGone)?;
    }

    let prefetch = Prefetch::new(&files, opts.block_size);
    std::thread::scope(|scope| {
        let prefetch = &prefetch;
        for _ in 0..opts.threads {
            scope.spawn(move || prefetch.work());
        }
        let mut compressors = Vec::new();
        for _ in 0..opts.threads {
            let item_tx = item_tx.clone();
            let job_rx = &job_rx;
            compressors.push(scope.spawn(move || compress_loop(job_rx, item_tx, opts)));
        }
        let files_hint = files.len();
        let sink = scope.spawn(move || sink_loop(out, start, item_rx, credit_tx, files_hint));
        let mut reader = Reader {
            opts,
            block_size: u64::from(opts.block_size),
            seq: 0,
            jobs: job_tx,
            items: item_tx,
            credits: credit_rx,
            fragment: Vec::new(),
            fragment_index: 0,
            layers: LayerCursor { blobs, open: None },
            retained: HashMap::new(),
            retained_bytes: 0,
            duplicates: 0,
            prefetch,
        };
        let read_result = reader.run(&files, &plan);
        prefetch.stop();
        let duplicates = reader.duplicates;
        // Closing the queues lets the compressors and then the sink finish.
        drop(reader);
        for c in compressors {
            c.join().map_err(|_| ImageError::WorkerGone)?;
        }
        let sink_result = sink.join().map_err(|_| ImageError::WorkerGone)?;
        // A sink failure (disk full) makes the reader stop with `WorkerGone`: report the cause.
        let mut layout = match (sink_result, read_result) {
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(layout), Ok(())) => layout,
        };
        layout.duplicates = duplicates;
        let mut by_node = HashMap::with_capacity(layout.files.len());
        for (idx, data) in std::mem::take(&mut layout.files) {
            by_node.insert(files[idx].node, data);
        }
        layout.files = by_node;
        Ok(layout)
    })
}

/// Which files may be duplicates of which.
struct DedupPlan {
    /// For each file (by position), the first file of its (size, hash) group if it is a later
    /// member of one.
    rep_of: Vec<Option<usize>>,
    /// For each group's first file, how many later members still need it.
    followers: Vec<u32>,
}

impl DedupPlan {
    fn new(files: &[FileItem], opts: &DataOptions) -> Result<Self> {
        let mut plan = Self {
            rep_of: vec![None; files.len()],
            followers: vec![0; files.len()],
        };
        if !opts.dedup {
            return Ok(plan);
        }
        let mut same_size: HashMap<u64, u32> = HashMap::new();
        for f in files.iter().filter(|f| f.size > 0) {
            *same_size.entry(f.size).or_default() += 1;
        }
        let candidates: Vec<usize> = (0..files.len())
            .filter(|&i| files[i].size > 0 && same_size[&files[i].size] > 1)
            .collect();
        let hashes = hash_candidates(files, &candidates, opts.threads)?;
        let mut first: HashMap<(u64, u128), usize> = HashMap::new();
        for (&i, hash) in candidates.iter().zip(hashes) {
            // A layer region without a hash cannot be hashed without a second pass over the
            // layer: it is stored as is.
            let Some(hash) = hash else { continue };
            let size = files[i].size;
            match first.get(&(size, hash)) {
                Some(&rep) => {
                    plan.rep_of[i] = Some(rep);
                    plan.followers[rep] += 1;
                }
                None => {
                    first.insert((size, hash), i);
                }
            }
        }
        Ok(plan)
    }
}

/// Hashes of `candidates` (positions in `files`), files on disk read by `threads` threads.
fn hash_candidates(
    files: &[FileItem],
    candidates: &[usize],
    threads: usize,
) -> Result<Vec<Option<u128>>> {
    let hash_one = |i: usize| -> Result<Option<u128>> {
        let f = &files[i];
        Ok(match (f.hash, &f.content) {
            (Some(h), _) => Some(h),
            (None, Content::Path(p)) => Some(hash_path(p, f.size)?),
            (None, Content::Bytes(b)) => Some(xxhash_rust::xxh3::xxh3_128(b)),
            (None, Content::Layer { .. }) => None,
        })
    };
    let threads = threads.clamp(1, candidates.len().max(1));
    let chunk = candidates.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = candidates
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|&i| hash_one(i))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(candidates.len());
        for w in workers {
            out.extend(w.join().map_err(|_| ImageError::WorkerGone)??);
        }
        Ok(out)
    })
}

fn hash_path(path: &Path, size: u64) -> Result<u128> {
    let read_err = |source| ImageError::ReadContent {
        what: path.display().to_string(),
        source,
    };
    let mut f = File::open(path).map_err(read_err)?.take(size);
    let mut h = Xxh3::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.digest128())
}

/// A block for the compressors.
struct Job {
    seq: u64,
    kind: JobKind,
    data: Vec<u8>,
}

enum JobKind {
    Block { file: usize },
    Fragment,
}

/// An item for the sink, numbered by the reader.
struct Sequenced {
    seq: u64,
    item: Item,
    /// Whether the item took a credit (a compressed block), to be returned once written.
    credited: bool,
}

enum Item {
    /// A data block of `file`: bytes to write and its size word (0 and empty for sparse).
    Block {
        file: usize,
        data: Vec<u8>,
        word: u32,
    },
    /// A fragment block.
    Fragment { data: Vec<u8>, word: u32 },
    /// All blocks of `file` are queued.
    FileEnd {
        file: usize,
        fragment: Option<(u32, u32)>,
        sparse_bytes: u64,
    },
    /// `file` has the same bytes as the earlier `of`.
    Duplicate { file: usize, of: usize },
    /// A compressor failed.
    Failed(ImageError),
}

fn compress_loop(jobs: &Mutex<Receiver<Job>>, items: Sender<Sequenced>, opts: &DataOptions) {
    let mut compressor = match new_compressor(opts.codec, opts.level, opts.block_size) {
        Ok(c) => c,
        Err(e) => {
            let _ = items.send(Sequenced {
                seq: u64::MAX,
                item: Item::Failed(e),
                credited: false,
            });
            return;
        }
    };
    let mut scratch = Vec::with_capacity(opts.block_size as usize);
    loop {
        // The guard is dropped before compressing so the others can take jobs meanwhile.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let (data, word) = match compressor.compress(&job.data, &mut scratch) {
            Ok(true) => {
                let word = scratch.len() as u32;
                (std::mem::replace(&mut scratch, job.data), word)
            }
            Ok(false) => {
                let word = job.data.len() as u32 | DATA_UNCOMPRESSED;
                (job.data, word)
            }
            Err(e) => {
                let _ = items.send(Sequenced {
                    seq: job.seq,
                    item: Item::Failed(e),
                    credited: false,
                });
                return;
            }
        };
        scratch.clear();
        let item = match job.kind {
            JobKind::Block { file } => Item::Block { file, data, word },
            JobKind::Fragment => Item::Fragment { data, word },
        };
        if items
            .send(Sequenced {
                seq: job.seq,
                item,
                credited: true,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Intermediate layout keyed by file position (converted to nodes at the end).
struct SinkState {
    files: HashMap<usize, FileData>,
    fragments: Vec<(u64, u32)>,
    pos: u64,
}

fn sink_loop(
    out: &File,
    start: u64,
    items: Receiver<Sequenced>,
    credits: SyncSender<()>,
    files_hint: usize,
) -> Result<DataLayout> {
    let mut file = out;
    file.seek(SeekFrom::Start(start))
        .map_err(ImageError::WriteImage)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut state = SinkState {
        files: HashMap::with_capacity(files_hint),
        fragments: Vec::new(),
        pos: start,
    };
    let mut pending: BTreeMap<u64, (Item, bool)> = BTreeMap::new();
    let mut next = 0u64;
    for Sequenced {
        seq,
        item,
        credited,
    } in items
    {
        if let Item::Failed(e) = item {
            return Err(e);
        }
        pending.insert(seq, (item, credited));
        while let Some((item, credited)) = pending.remove(&next) {
            state.apply(&mut w, item)?;
            next += 1;
            if credited {
                // The reader may already be done and gone; then nobody needs the credit.
                let _ = credits.send(());
            }
        }
    }
    w.flush().map_err(ImageError::WriteImage)?;
    Ok(DataLayout {
        files: state.files,
        fragments: state.fragments,
        end: state.pos,
        duplicates: 0,
    })
}

impl SinkState {
    fn apply(&mut self, w: &mut impl Write, item: Item) -> Result<()> {
        match item {
            Item::Block { file, data, word } => {
                let entry = self.files.entry(file).or_default();
                if entry.blocks.is_empty() {
                    entry.start = self.pos;
                }
                entry.blocks.push(word);
                w.write_all(&data).map_err(ImageError::WriteImage)?;
                self.pos += data.len() as u64;
            }
            Item::Fragment { data, word } => {
                self.fragments.push((self.pos, word));
                w.write_all(&data).map_err(ImageError::WriteImage)?;
                self.pos += data.len() as u64;
            }
            Item::FileEnd {
                file,
                fragment,
                sparse_bytes,
            } => {
                let entry = self.files.entry(file).or_default();
                entry.fragment = fragment;
                entry.sparse_bytes = sparse_bytes;
            }
            Item::Duplicate { file, of } => {
                let data = self.files.get(&of).cloned().unwrap_or_default();
                self.files.insert(file, data);
            }
            Item::Failed(e) => return Err(e),
        }
        Ok(())
    }
}

/// Forward-only reading of layer regions: the open blob and how far it has been read.
struct LayerCursor<'a> {
    blobs: &'a [PathBuf],
    open: Option<(usize, Counting<Box<dyn Read + Send>>)>,
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl LayerCursor<'_> {
    /// A reader of `len` bytes at `offset` of blob `blob`'s tar stream.
    fn region(&mut self, blob: usize, offset: u64, len: u64) -> Result<impl Read + '_> {
        let path = self.blobs.get(blob).ok_or(ImageError::UnknownBlob(blob))?;
        let reopen = match &self.open {
            Some((b, r)) => *b != blob || r.pos > offset,
            None => true,
        };
        if reopen {
            let inner = open_blob(path)?;
            self.open = Some((blob, Counting { inner, pos: 0 }));
        }
        let Some((_, reader)) = self.open.as_mut() else {
            return Err(ImageError::WorkerGone);
        };
        let skip = offset - reader.pos;
        let skipped =
            io::copy(&mut reader.by_ref().take(skip), &mut io::sink()).map_err(|source| {
                ImageError::ReadLayer {
                    path: path.clone(),
                    source,
                }
            })?;
        if skipped != skip {
            return Err(ImageError::ReadLayer {
                path: path.clone(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "layer ended before a file's data",
                ),
            });
        }
        Ok(reader.take(len))
    }
}

struct Reader<'a> {
    opts: &'a DataOptions,
    block_size: u64,
    seq: u64,
    jobs: SyncSender<Job>,
    items: Sender<Sequenced>,
    credits: Receiver<()>,
    /// The fragment block being filled.
    fragment: Vec<u8>,
    fragment_index: u32,
    layers: LayerCursor<'a>,
    /// Contents of layer files that later files must be compared with.
    retained: HashMap<usize, Arc<[u8]>>,
    retained_bytes: u64,
    /// Files stored as duplicates so far.
    duplicates: u64,
    /// Small files read ahead by other threads.
    prefetch: &'a Prefetch<'a>,
}

fn describe(content: &Content) -> String {
    match content {
        Content::Path(p) => p.display().to_string(),
        Content::Bytes(_) => "in-memory file".to_owned(),
        Content::Layer { blob, offset } => format!("layer {blob} at offset {offset}"),
    }
}

fn open_local(content: &Content, size: u64) -> Result<Box<dyn Read + '_>> {
    match content {
        Content::Path(p) => {
            let f = File::open(p).map_err(|source| ImageError::ReadContent {
                what: p.display().to_string(),
                source,
            })?;
            Ok(Box::new(f.take(size)))
        }
        Content::Bytes(b) => Ok(Box::new(Cursor::new(&b[..]))),
        Content::Layer { .. } => Err(ImageError::WorkerGone),
    }
}

fn read_full(r: &mut dyn Read, buf: &mut [u8], content: &Content) -> Result<()> {
    r.read_exact(buf).map_err(|source| ImageError::ReadContent {
        what: describe(content),
        source: if source.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while the image was written",
            )
        } else {
            source
        },
    })
}

/// Reads exactly `len` bytes into a new buffer (without zero-filling it first).
fn read_block(r: &mut dyn Read, len: usize, content: &Content) -> Result<Vec<u8>> {
    let mut block = Vec::with_capacity(len);
    r.take(len as u64)
        .read_to_end(&mut block)
        .map_err(|source| ImageError::ReadContent {
            what: describe(content),
            source,
        })?;
    if block.len() != len {
        return Err(ImageError::ReadContent {
            what: describe(content),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while the image was written",
            ),
        });
    }
    Ok(block)
}

fn is_zero(block: &[u8]) -> bool {
    block
        .chunks(64)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

impl Reader<'_> {
    fn run(&mut self, files: &[FileItem], plan: &DedupPlan) -> Result<()> {
        let mut followers = plan.followers.clone();
        for (i, f) in files.iter().enumerate() {
            let own = if self.prefetch.is_eligible(f) {
                Some(self.prefetch.take(i)?)
            } else {
                self.prefetch.advance(i);
                None
            };
            if f.size == 0 {
                self.emit(Item::FileEnd {
                    file: i,
                    fragment: None,
                    sparse_bytes: 0,
                })?;
                continue;
            }
            if let Some(rep) = plan.rep_of[i] {
                let is_dup = self.compare_or_write(i, f, own, rep, &files[rep])?;
                if is_dup {
                    self.duplicates += 1;
                }
                followers[rep] -= 1;
                if followers[rep] == 0
                    && let Some(kept) = self.retained.remove(&rep)
                {
                    self.retained_bytes -= kept.len() as u64;
                }
                continue;
            }
            let retain = followers[i] > 0
                && matches!(f.content, Content::Layer { .. })
                && self.retained_bytes + f.size <= self.opts.dedup_memory_bytes;
            if let Some(bytes) = own {
                self.write_bytes(i, &bytes, &f.content)?;
            } else if retain {
                let bytes = self.read_all(f)?;
                self.write_bytes(i, &bytes, &f.content)?;
                self.retained_bytes += f.size;
                self.retained.insert(i, Arc::from(bytes));
            } else {
                self.write_from_source(i, f)?;
            }
        }
        self.flush_fragment()
    }

    /// Stores `f` as a duplicate of `rep` when their bytes are equal, else writes it. `own` is
    /// `f`'s bytes when they were read ahead.
    fn compare_or_write(
        &mut self,
        i: usize,
        f: &FileItem,
        own: Option<Vec<u8>>,
        rep: usize,
        rep_item: &FileItem,
    ) -> Result<bool> {
        let rep_bytes: Option<Arc<[u8]>> = self.retained.get(&rep).cloned();
        let rep_available =
            rep_bytes.is_some() || !matches!(rep_item.content, Content::Layer { .. });
        if !rep_available {
            match own {
                Some(bytes) => self.write_bytes(i, &bytes, &f.content)?,
                None => self.write_from_source(i, f)?,
            }
            return Ok(false);
        }
        let mut rep_reader: Box<dyn Read + '_> = match &rep_bytes {
            Some(b) => Box::new(Cursor::new(&b[..])),
            None => open_local(&rep_item.content, rep_item.size)?,
        };
        if let Some(bytes) = own {
            let mut mine: &[u8] = &bytes;
            if readers_equal(&mut mine, &mut rep_reader, f.size, &f.content)? {
                self.emit(Item::Duplicate { file: i, of: rep })?;
                return Ok(true);
            }
            self.write_bytes(i, &bytes, &f.content)?;
            return Ok(false);
        }
        match &f.content {
            Content::Layer { .. } => {
                // The region can be read only once: keep it to write it if it differs.
                if f.size > self.opts.dedup_memory_bytes {
                    self.write_from_source(i, f)?;
                    return Ok(false);
                }
                let bytes = self.read_all(f)?;
                let mut own: &[u8] = &bytes;
                if readers_equal(&mut own, &mut rep_reader, f.size, &f.content)? {
                    self.emit(Item::Duplicate { file: i, of: rep })?;
                    Ok(true)
                } else {
                    self.write_bytes(i, &bytes, &f.content)?;
                    Ok(false)
                }
            }
            _ => {
                let mut own = open_local(&f.content, f.size)?;
                let equal = readers_equal(&mut own, &mut rep_reader, f.size, &f.content)?;
                drop(own);
                if equal {
                    self.emit(Item::Duplicate { file: i, of: rep })?;
                    Ok(true)
                } else {
                    self.write_from_source(i, f)?;
                    Ok(false)
                }
            }
        }
    }

    fn read_all(&mut self, f: &FileItem) -> Result<Vec<u8>> {
        let mut bytes =
            vec![0u8; usize::try_from(f.size).map_err(|_| ImageError::FileTooLarge(f.size))?];
        match &f.content {
            Content::Layer { blob, offset } => {
                let mut r = self.layers.region(*blob, *offset, f.size)?;
                read_full(&mut r, &mut bytes, &f.content)?;
            }
            other => read_full(&mut open_local(other, f.size)?, &mut bytes, other)?,
        }
        Ok(bytes)
    }

    fn write_from_source(&mut self, i: usize, f: &FileItem) -> Result<()> {
        match &f.content {
            Content::Layer { blob, offset } => {
                // The cursor borrows `self.layers`; move it out while blocks are queued.
                let mut layers = std::mem::replace(
                    &mut self.layers,
                    LayerCursor {
                        blobs: &[],
                        open: None,
                    },
                );
                let result = match layers.region(*blob, *offset, f.size) {
                    Ok(mut r) => self.write_stream(i, &mut r, f.size, &f.content),
                    Err(e) => Err(e),
                };
                self.layers = layers;
                result
            }
            other => {
                let mut r = open_local(other, f.size)?;
                self.write_stream(i, &mut r, f.size, other)
            }
        }
    }

    fn write_bytes(&mut self, i: usize, bytes: &[u8], content: &Content) -> Result<()> {
        let mut r: &[u8] = bytes;
        self.write_stream(i, &mut r, bytes.len() as u64, content)
    }

    /// Splits `size` bytes from `r` into blocks compressed in parallel; a file smaller than a
    /// block goes into the current fragment block instead.
    fn write_stream(
        &mut self,
        i: usize,
        r: &mut dyn Read,
        size: u64,
        content: &Content,
    ) -> Result<()> {
        let mut sparse_bytes = 0;
        for _ in 0..size / self.block_size {
            let block = read_block(r, self.block_size as usize, content)?;
            if is_zero(&block) {
                sparse_bytes += self.block_size;
                self.emit(Item::Block {
                    file: i,
                    data: Vec::new(),
                    word: 0,
                })?;
            } else {
                self.submit(JobKind::Block { file: i }, block)?;
            }
        }
        let tail = (size % self.block_size) as usize;
        let fragment = if tail == 0 {
            None
        } else if size > self.block_size {
            // Like mksquashfs (tail ends not packed): the end of a file of a block or more is
            // a short last block; only files smaller than a block share fragment blocks.
            let block = read_block(r, tail, content)?;
            self.submit(JobKind::Block { file: i }, block)?;
            None
        } else {
            if self.fragment.len() + tail > self.block_size as usize {
                self.flush_fragment()?;
            }
            let offset = self.fragment.len();
            self.fragment.resize(offset + tail, 0);
            read_full(r, &mut self.fragment[offset..], content)?;
            Some((self.fragment_index, offset as u32))
        };
        self.emit(Item::FileEnd {
            file: i,
            fragment,
            sparse_bytes,
        })
    }

    fn flush_fragment(&mut self) -> Result<()> {
        if self.fragment.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(
            &mut self.fragment,
            Vec::with_capacity(self.block_size as usize),
        );
        self.fragment_index = self
            .fragment_index
            .checked_add(1)
            .ok_or(ImageError::TooManyFragments)?;
        self.submit(JobKind::Fragment, data)
    }

    fn next_seq(&mut self) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }

    /// Queues a marker for the sink (no credit needed).
    fn emit(&mut self, item: Item) -> Result<()> {
        let seq = self.next_seq();
        self.items
            .send(Sequenced {
                seq,
                item,
                credited: false,
            })
            .map_err(|_| ImageError::WorkerGone)
    }

    /// Queues a block for compression, waiting while the window is full; fails when the sink
    /// stopped (its error is the one reported).
    fn submit(&mut self, kind: JobKind, data: Vec<u8>) -> Result<()> {
        self.credits.recv().map_err(|_| ImageError::WorkerGone)?;
        let seq = self.next_seq();
        self.jobs
            .send(Job { seq, kind, data })
            .map_err(|_| ImageError::WorkerGone)
    }
}

fn readers_equal(a: &mut dyn Read, b: &mut dyn Read, size: u64, content: &Content) -> Result<bool> {
    const CHUNK: usize = 64 * 1024;
    let mut ba = vec![0u8; CHUNK];
    let mut bb = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let n = CHUNK.min(left as usize);
        read_full(a, &mut ba[..n], content)?;
        read_full(b, &mut bb[..n], content)?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}
