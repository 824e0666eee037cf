//! The worker's content-addressed blob cache, shared by all builds (and worker processes) on a
//! host.
//!
//! Layout: `<dir>/blobs/<algorithm>/<hex>` holds verified blobs, `<dir>/tmp/` downloads in
//! progress. Both are mode 0700: a build must not read or plant another user's layers
//! (Singularity's CVE-2020-25039/25040 were world-readable build directories).
//!
//! Concurrency, without a lock server:
//! - a download goes to its own temp file, is hashed while written, and is renamed into place
//!   only if the digest matches, so readers never see a partial or wrong blob, and two builds
//!   fetching the same layer at once both succeed (the second rename replaces identical bytes);
//! - a build using a blob holds a [`BlobLease`], a shared `flock` on the blob file;
//! - eviction takes an exclusive, non-blocking `flock` before unlinking, so a leased blob is
//!   never evicted, and it re-checks that the path still names the locked inode;
//! - least recently used goes first: taking a lease sets the blob's mtime to now.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tempfile::NamedTempFile;

use super::digest::{Digest, Hasher};

/// How the cache is set up.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// The cache directory; created (mode 0700) if missing.
    pub dir: PathBuf,
    /// Blobs are evicted, least recently used first, while the cache holds more than this
    /// (bytes). Leased blobs are never evicted, so the bound can be exceeded while builds run.
    pub max_bytes: u64,
    /// Temp files older than this are leftovers of a crashed process and removed on open.
    /// Default one day.
    pub stale_temp_age: Duration,
}

impl CacheOptions {
    /// Options with the default temp-file age.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
            stale_temp_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Ways the cache fails.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache directories could not be created or listed.
    #[error("failed to prepare cache directory {path}")]
    Setup {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A blob file could not be opened, locked or renamed.
    #[error("failed to access cached blob {digest}")]
    Blob {
        /// The blob's digest.
        digest: Digest,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The downloaded bytes have another digest than announced.
    #[error("blob {expected} has digest {actual}: content does not match its digest")]
    DigestMismatch {
        /// The digest the manifest announced.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// The downloaded bytes have another size than announced.
    #[error("blob {digest} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// The size the manifest announced.
        expected: u64,
        /// Bytes received (so far, when too many).
        actual: u64,
    },
}

/// Shorthand for results of this module.
pub type Result<T> = std::result::Result<T, CacheError>;

/// A handle on the cache directory. Cheap to clone; clones share the directory.
#[derive(Debug, Clone)]
pub struct LayerCache {
    blobs: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
}

/// Outcome of an eviction pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Eviction {
    /// Blobs removed.
    pub removed: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Bytes the cache still holds.
    pub remaining_bytes: u64,
}

impl LayerCache {
    /// Opens (creating if needed) the cache and clears stale temp files.
    ///
    /// # Errors
    /// [`CacheError::Setup`] when the directories cannot be created or listed.
    pub fn open(options: &CacheOptions) -> Result<Self> {
        let blobs = options.dir.join("blobs");
        let tmp = options.dir.join("tmp");
        for dir in [&options.dir, &blobs, &tmp] {
            let setup = |source| CacheError::Setup {
                path: dir.clone(),
                source,
            };
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(setup)?;
            // An existing directory keeps its mode through `create`; tighten it.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(setup)?;
        }
        let cache = Self {
            blobs,
            tmp,
            max_bytes: options.max_bytes,
        };
        cache.remove_stale_temps(options.stale_temp_age)?;
        Ok(cache)
    }

    /// Where a blob lives once cached.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs
            .join(digest.algorithm().name())
            .join(digest.hex())
    }

    /// Leases a cached blob, or returns `None` if it is not cached.
    ///
    /// # Errors
    /// [`CacheError::Blob`] when the file exists but cannot be opened or locked.
    pub fn lease(&self, digest: &Digest) -> Result<Option<BlobLease>> {
        let path = self.blob_path(digest);
        let err = |source| CacheError::Blob {
            digest: digest.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e)),
        };
        let file =
            Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| err(io::Error::from(e)))?;
        // An evictor may have unlinked the path between our open and our lock.
        if !names_same_inode(&path, &file).map_err(err)? {
            return Ok(None);
        }
        let size = file.metadata().map_err(err)?.len();
        // Best effort: the LRU order only gets worse if this fails.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(BlobLease {
            _lock: file,
            path,
            digest: digest.clone(),
            size,
        }))
    }

    /// Starts a download of `digest` into a temp file of the cache.
    ///
    /// # Errors
    /// [`CacheError::Blob`] when the temp file cannot be created.
    pub fn writer(&self, digest: &Digest, expected_size: u64) -> Result<BlobWriter> {
        let file = tempfile::Builder::new()
            .prefix(digest.hex())
            .tempfile_in(&self.tmp)
            .map_err(|source| CacheError::Blob {
                digest: digest.clone(),
                source,
            })?;
        Ok(BlobWriter {
            cache: self.clone(),
            file,
            hasher: Hasher::new(digest.algorithm()),
            written: 0,
            digest: digest.clone(),
            expected_size,
        })
    }

    /// Bytes of blobs currently cached.
    ///
    /// # Errors
    /// [`CacheError::Setup`] when the blob directories cannot be listed.
    pub fn size_bytes(&self) -> Result<u64> {
        Ok(self.list_blobs()?.iter().map(|b| b.1).sum())
    }

    /// Removes least recently used blobs that no build holds until the cache is within its
    /// bound.
    ///
    /// # Errors
    /// [`CacheError::Setup`] when the blob directories cannot be listed.
    pub fn evict(&self) -> Result<Eviction> {
        let mut blobs = self.list_blobs()?;
        let mut total: u64 = blobs.iter().map(|b| b.1).sum();
        let mut out = Eviction::default();
        blobs.sort_by_key(|b| b.2);
        for (path, size, _) in blobs {
            if total <= self.max_bytes {
                break;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                // Leased by a build (EWOULDBLOCK) or otherwise unlockable: keep it.
                Err(_) => continue,
            };
            if !names_same_inode(&path, &file).unwrap_or(false) {
                continue;
            }
            if fs::remove_file(&path).is_ok() {
                total = total.saturating_sub(size);
                out.removed += 1;
                out.freed_bytes += size;
            }
        }
        out.remaining_bytes = total;
        Ok(out)
    }

    /// `(path, bytes, mtime)` of every cached blob.
    fn list_blobs(&self) -> Result<Vec<(PathBuf, u64, SystemTime)>> {
        let setup = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Setup { path, source }
        };
        let mut out = Vec::new();
        for algo in fs::read_dir(&self.blobs).map_err(setup(&self.blobs))? {
            let algo = algo.map_err(setup(&self.blobs))?.path();
            if !algo.is_dir() {
                continue;
            }
            for blob in fs::read_dir(&algo).map_err(setup(&algo))? {
                let Ok(blob) = blob else { continue };
                let Ok(meta) = blob.metadata() else { continue };
                if meta.is_file() {
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push((blob.path(), meta.len(), mtime));
                }
            }
        }
        Ok(out)
    }

    fn remove_stale_temps(&self, age: Duration) -> Result<()> {
        let entries = fs::read_dir(&self.tmp).map_err(|source| CacheError::Setup {
            path: self.tmp.clone(),
            source,
        })?;
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > age);
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}

/// Whether `path` still names the inode `file` has open (and it was not unlinked).
fn names_same_inode(path: &Path, file: &File) -> io::Result<bool> {
    let open = file.metadata()?;
    if open.nlink() == 0 {
        return Ok(false);
    }
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A download in progress; bytes are hashed as they are written. Dropping it discards them.
#[derive(Debug)]
pub struct BlobWriter {
    cache: LayerCache,
    file: NamedTempFile,
    hasher: Hasher,
    written: u64,
    digest: Digest,
    expected_size: u64,
}

impl BlobWriter {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks size and digest, moves the blob into the cache, leases it and evicts older
    /// blobs if the cache went over its bound.
    ///
    /// # Errors
    /// [`CacheError::SizeMismatch`] or [`CacheError::DigestMismatch`] when the bytes are not
    /// the announced blob (nothing is stored); [`CacheError::Blob`] on I/O failure.
    pub fn commit(self) -> Result<BlobLease> {
        let digest = self.digest.clone();
        let err = |source| CacheError::Blob {
            digest: digest.clone(),
            source,
        };
        if self.written != self.expected_size {
            return Err(CacheError::SizeMismatch {
                digest,
                expected: self.expected_size,
                actual: self.written,
            });
        }
        let actual = self.hasher.finish();
        if actual != digest {
            return Err(CacheError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        self.file.as_file().sync_data().map_err(err)?;
        let path = self.cache.blob_path(&digest);
        if let Some(parent) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(err)?;
        }
        // Blobs are read-only once cached: a stray write would corrupt every build using it.
        let mut perms = self.file.as_file().metadata().map_err(err)?.permissions();
        perms.set_readonly(true);
        self.file.as_file().set_permissions(perms).map_err(err)?;
        // No-clobber: a blob another build already stored stays (same bytes, and it may be
        // leased); this copy is then discarded.
        match self.file.persist_noclobber(&path) {
            Ok(_) => {}
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => drop(e.file),
            Err(e) => return Err(err(e.error)),
        }
        let cache = self.cache;
        let lease = cache
            .lease(&digest)?
            .ok_or_else(|| err(io::Error::from(Errno::ENOENT)))?;
        // Eviction is housekeeping: failing to list the cache must not fail the build.
        let _ = cache.evict();
        Ok(lease)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written.saturating_add(buf.len() as u64) > self.expected_size {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "blob {} is larger than its announced {} bytes",
                    self.digest, self.expected_size
                ),
            ));
        }
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A cached blob a build is using; it cannot be evicted until the lease is dropped.
#[derive(Debug)]
pub struct BlobLease {
    /// Held only for its shared lock, released on drop.
    _lock: Flock<File>,
    path: PathBuf,
    digest: Digest,
    size: u64,
}

impl BlobLease {
    /// The blob's path in the cache (stable while the lease lives).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Opens the blob for reading from the start (its own file offset).
    ///
    /// # Errors
    /// The file could not be opened.
    pub fn open(&self) -> io::Result<File> {
        File::open(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn put(cache: &LayerCache, data: &[u8]) -> BlobLease {
        let digest = Digest::sha256_of(data);
        let mut w = cache.writer(&digest, data.len() as u64).unwrap();
        w.write_all(data).unwrap();
        w.commit().unwrap()
    }

    #[test]
    fn stores_verified_blobs_and_refuses_wrong_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&CacheOptions::new(tmp.path(), 1 << 20)).unwrap();
        let lease = put(&cache, b"layer one");
        let mut back = Vec::new();
        lease.open().unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, b"layer one");
        assert_eq!(fs::metadata(tmp.path()).unwrap().mode() & 0o777, 0o700);

        let claimed = Digest::sha256_of(b"something else");
        let mut w = cache.writer(&claimed, 9).unwrap();
        w.write_all(b"layer two").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, CacheError::DigestMismatch { .. }), "{err}");
        assert!(cache.lease(&claimed).unwrap().is_none());
        assert_eq!(
            fs::read_dir(tmp.path().join("tmp")).unwrap().count(),
            0,
            "temp removed"
        );

        let mut w = cache.writer(&claimed, 4).unwrap();
        assert!(w.write_all(b"too long").is_err());
    }

    #[test]
    fn eviction_is_lru_and_spares_leased_blobs() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&CacheOptions::new(tmp.path(), 25)).unwrap();
        let a = put(&cache, &[b'a'; 10]);
        let a_digest = a.digest().clone();
        drop(a);
        let old = SystemTime::now() - Duration::from_secs(60);
        File::open(cache.blob_path(&a_digest))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let b = put(&cache, &[b'b'; 10]);
        // 30 bytes > 25: `a` is unused and oldest, so it goes; `b` and `c` are leased.
        let c = put(&cache, &[b'c'; 10]);
        assert!(cache.lease(&a_digest).unwrap().is_none());
        assert!(cache.blob_path(b.digest()).exists());
        assert!(cache.blob_path(c.digest()).exists());

        // Over the bound with everything leased: nothing is evicted.
        let d = put(&cache, &[b'd'; 10]);
        assert_eq!(cache.size_bytes().unwrap(), 30);
        drop((b, c));
        let ev = cache.evict().unwrap();
        assert_eq!(ev.removed, 1);
        assert_eq!(ev.remaining_bytes, 20);
        assert!(cache.blob_path(d.digest()).exists());
    }

    #[test]
    fn concurrent_writers_of_one_blob_both_succeed() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = LayerCache::open(&CacheOptions::new(tmp.path(), 1 << 20)).unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::sha256_of(&data);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let cache = cache.clone();
                let data = data.clone();
                let digest = digest.clone();
                std::thread::spawn(move || {
                    let mut w = cache.writer(&digest, data.len() as u64).unwrap();
                    for chunk in data.chunks(4096) {
                        w.write_all(chunk).unwrap();
                    }
                    w.commit().unwrap()
                })
            })
            .collect();
        let leases: Vec<BlobLease> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        for lease in &leases {
            let mut back = Vec::new();
            lease.open().unwrap().read_to_end(&mut back).unwrap();
            assert_eq!(back, data);
        }
        assert_eq!(cache.size_bytes().unwrap(), data.len() as u64);
    }
}
