//! A sandboxed script's stdout and stderr, cut into lines as they arrive and handed to the
//! caller (the events publisher) with the stream name and the time. A line longer than the
//! configured bound is cut there and the rest of it dropped, so a script printing megabytes
//! without a newline costs bounded memory.

use std::os::fd::OwnedFd;
use std::time::SystemTime;

use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Which output stream a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The script's standard output.
    Stdout,
    /// The script's standard error.
    Stderr,
}

impl Stream {
    /// The stream's conventional name, `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// One line of a script's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputLine {
    /// The stream it was written to.
    pub stream: Stream,
    /// The text without its newline; invalid UTF-8 replaced by U+FFFD.
    pub text: String,
    /// When the worker read it.
    pub time: SystemTime,
    /// Whether the line was longer than the bound and cut; the rest of it was dropped.
    pub is_truncated: bool,
}

/// Cuts a byte stream into lines of at most `max_line_bytes` bytes.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    max_line_bytes: usize,
    line: Vec<u8>,
    /// Inside an overlong line that was already emitted: drop bytes until the next newline.
    is_skipping: bool,
}

impl LineSplitter {
    /// A splitter cutting lines at `max_line_bytes` (at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes: max_line_bytes.max(1),
            line: Vec::new(),
            is_skipping: false,
        }
    }

    /// Feeds `bytes`; returns the lines they complete as `(text, is_truncated)`.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<(Vec<u8>, bool)> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|b| *b == b'\n');
            let (chunk, rest) = match newline {
                Some(at) => (&bytes[..at], Some(&bytes[at + 1..])),
                None => (bytes, None),
            };
            if !self.is_skipping {
                let room = self.max_line_bytes - self.line.len();
                if chunk.len() > room {
                    self.line.extend_from_slice(&chunk[..room]);
                    lines.push((std::mem::take(&mut self.line), true));
                    self.is_skipping = true;
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            match rest {
                Some(rest) => {
                    if !self.is_skipping {
                        lines.push((std::mem::take(&mut self.line), false));
                    }
                    self.is_skipping = false;
                    bytes = rest;
                }
                None => bytes = &[],
            }
        }
        lines
    }

    /// The last line if the stream ended without a newline.
    pub fn finish(self) -> Option<(Vec<u8>, bool)> {
        (!self.line.is_empty() && !self.is_skipping).then_some((self.line, false))
    }
}

/// Reads `pipe` to its end, sending each line to `lines`. A gone receiver does not stop the
/// reading: the pipe is drained so the script never blocks on a full pipe.
pub(crate) async fn forward_lines(
    pipe: OwnedFd,
    stream: Stream,
    max_line_bytes: usize,
    lines: mpsc::Sender<OutputLine>,
) -> std::io::Result<()> {
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(pipe)?;
    let mut splitter = LineSplitter::new(max_line_bytes);
    let mut buffer = vec![0u8; 16 * 1024];
    let send = |(text, is_truncated): (Vec<u8>, bool)| OutputLine {
        stream,
        text: String::from_utf8_lossy(&text).into_owned(),
        time: SystemTime::now(),
        is_truncated,
    };
    loop {
        let n = pipe.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        for line in splitter.push(&buffer[..n]) {
            // Err means nobody listens any more; keep draining.
            let _ = lines.send(send(line)).await;
        }
    }
    if let Some(line) = splitter.finish() {
        let _ = lines.send(send(line)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: Vec<(Vec<u8>, bool)>) -> Vec<(String, bool)> {
        lines
            .into_iter()
            .map(|(t, cut)| (String::from_utf8(t).unwrap(), cut))
            .collect()
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut s = LineSplitter::new(100);
        assert_eq!(texts(s.push(b"hel")), []);
        assert_eq!(texts(s.push(b"lo\nwor")), [("hello".to_string(), false)]);
        assert_eq!(
            texts(s.push(b"ld\n\nlast")),
            [("world".to_string(), false), (String::new(), false)]
        );
        assert_eq!(s.finish(), Some((b"last".to_vec(), false)));
    }

    #[test]
    fn an_overlong_line_is_cut_once_and_its_rest_dropped() {
        let mut s = LineSplitter::new(4);
        assert_eq!(texts(s.push(b"abcdefgh")), [("abcd".to_string(), true)]);
        assert_eq!(texts(s.push(b"ijkl")), []);
        assert_eq!(texts(s.push(b"mn\nok\n")), [("ok".to_string(), false)]);
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn a_line_of_exactly_the_bound_is_whole() {
        let mut s = LineSplitter::new(4);
        assert_eq!(texts(s.push(b"abcd\n")), [("abcd".to_string(), false)]);
    }
}
