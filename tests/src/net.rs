//! Free ports and readiness probes for the services a test starts on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Result, SupportError, io_error};

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The kernel picks it (bind to port 0), so parallel tests get different ports; a service started
/// on it may still lose a race with another process, and callers retry on a bind failure.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_error("bind a port on", "127.0.0.1"))?;
    let port = listener
        .local_addr()
        .map_err(io_error("read the address of", "127.0.0.1"))?
        .port();
    Ok(port)
}

/// The status code of `GET path` on `addr` (`host:port`), or `None` when nothing answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Polls `ready` every 50 ms until it returns true, or fails with [`SupportError::Timeout`]
/// naming `service` and `condition` after `deadline`.
pub fn wait_until(
    service: &str,
    condition: &'static str,
    deadline: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if ready()? {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(SupportError::Timeout {
                service: service.to_owned(),
                condition,
                waited_secs: deadline.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
