//! Reading small files ahead on several threads.
//!
//! A root filesystem is mostly small files, and each costs an `open`, a `read` and a `close`
//! that the data writer's single, ordered reader would otherwise do one after the other (and
//! wait for again whenever the machine is busy). Prefetch threads claim files in data order,
//! read the small ones whole, and hand them over by position; at most [`WINDOW_FILES`] files
//! (each at most one block) are held ahead of the reader.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::sync::{Condvar, Mutex};

use super::data::FileItem;
use crate::image::tree::Content;
use crate::image::{ImageError, Result};

/// Files read ahead of the reader at most.
pub const WINDOW_FILES: usize = 512;

/// Shared state between the prefetch threads and the reader.
pub struct Prefetch<'a> {
    files: &'a [FileItem],
    block_size: u64,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Next file position a prefetch thread claims.
    next: usize,
    /// Position the reader waits for or has reached.
    consumed: usize,
    /// Read files by position.
    ready: HashMap<usize, io::Result<Vec<u8>>>,
    /// Set when the reader is done (or failed): prefetch threads stop.
    stopped: bool,
}

impl<'a> Prefetch<'a> {
    /// Prefetching for `files` in their data order.
    pub fn new(files: &'a [FileItem], block_size: u32) -> Self {
        Self {
            files,
            block_size: u64::from(block_size),
            state: Mutex::default(),
            changed: Condvar::new(),
        }
    }

    /// Whether file `f` is read ahead: a file on disk no larger than one block.
    pub fn is_eligible(&self, f: &FileItem) -> bool {
        matches!(f.content, Content::Path(_)) && f.size > 0 && f.size <= self.block_size
    }

    /// A prefetch thread's loop: claim the next file, read it if eligible, repeat.
    pub fn work(&self) {
        loop {
            let i = {
                let Ok(mut st) = self.state.lock() else {
                    return;
                };
                loop {
                    if st.stopped || st.next >= self.files.len() {
                        return;
                    }
                    if st.next < st.consumed + WINDOW_FILES {
                        break;
                    }
                    st = match self.changed.wait(st) {
                        Ok(st) => st,
                        Err(_) => return,
                    };
                }
                st.next += 1;
                st.next - 1
            };
            let f = &self.files[i];
            if !self.is_eligible(f) {
                continue;
            }
            let Content::Path(path) = &f.content else {
                continue;
            };
            let read = File::open(path).and_then(|file| {
                let mut bytes = Vec::with_capacity(f.size as usize);
                file.take(f.size).read_to_end(&mut bytes)?;
                Ok(bytes)
            });
            let Ok(mut st) = self.state.lock() else {
                return;
            };
            st.ready.insert(i, read);
            self.changed.notify_all();
        }
    }

    /// The bytes of eligible file `i`, waiting until a prefetch thread has read them.
    pub fn take(&self, i: usize) -> Result<Vec<u8>> {
        let f = &self.files[i];
        let what = || match &f.content {
            Content::Path(p) => p.display().to_string(),
            _ => String::new(),
        };
        let mut st = self.state.lock().map_err(|_| ImageError::WorkerGone)?;
        st.consumed = i;
        self.changed.notify_all();
        loop {
            if let Some(read) = st.ready.remove(&i) {
                let bytes = read.map_err(|source| ImageError::ReadContent {
                    what: what(),
                    source,
                })?;
                if bytes.len() as u64 != f.size {
                    return Err(ImageError::ReadContent {
                        what: what(),
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "file shrank while the image was written",
                        ),
                    });
                }
                return Ok(bytes);
            }
            st = self.changed.wait(st).map_err(|_| ImageError::WorkerGone)?;
        }
    }

    /// Records that the reader reached file `i` (not read ahead), moving the window on.
    pub fn advance(&self, i: usize) {
        if let Ok(mut st) = self.state.lock()
            && i >= st.consumed + WINDOW_FILES / 4
        {
            st.consumed = i;
            self.changed.notify_all();
        }
    }

    /// Tells the prefetch threads to stop (the reader is done or failed).
    pub fn stop(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.stopped = true;
        }
        self.changed.notify_all();
    }
}
