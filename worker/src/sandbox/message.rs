//! The typed messages between the worker, the helper and the init, and the channel that carries
//! them: a `SOCK_SEQPACKET` socket pair, so each message arrives whole or not at all, a closed
//! peer reads as end of stream, and file descriptors (the output pipes) travel with
//! `SCM_RIGHTS` (unix(7)).
//!
//! Who sends what:
//! - worker → helper: [`ToHelper`]: `Start` (with the two output pipes) or `Task`, `Mapped`,
//!   `Kill`;
//! - helper → worker: [`FromHelper`]: `Unshared`, `InitStarted`, warnings, a setup failure,
//!   `Finished`, or `TaskDone` for a task;
//! - init and script → helper: [`FromInit`], forwarded to the worker.
//!
//! Every end a process does not use is closed (all are close-on-exec, and each side drops the
//! other's end after `fork`), so a dead peer is always seen as end of stream.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::unix::AsyncFd;

use super::limits::Limits;
use super::rootfs::RootfsSpec;

/// Largest message, in bytes; the spec of a run is the biggest one (argv and environment). A
/// `SOCK_SEQPACKET` message must fit the socket buffer (`net.core.wmem_default`, 208 KiB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Most file descriptors one message carries.
const MAX_FDS: usize = 2;

/// What the helper needs to run one script; sent with the stdout and stderr pipes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HelperSpec {
    /// The mounts to make.
    pub rootfs: RootfsSpec,
    /// Program (absolute, inside the rootfs) and arguments.
    pub argv: Vec<String>,
    /// `NAME=value` strings, the script's whole environment.
    pub env: Vec<String>,
    /// Working directory inside the rootfs.
    pub cwd: PathBuf,
    /// Whether to leave the host's network namespace.
    pub is_network_isolated: bool,
    /// The script's rlimits.
    pub limits: Limits,
}

/// A piece of the worker's own code to run as root of a new user namespace with the build's id
/// map (see [`super::Sandbox::run_task`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskSpec {
    /// Which task, for the helper's [`super::TaskHandler`].
    pub name: String,
    /// Its input, as the task defines it (JSON text).
    pub input: String,
}

/// Worker → helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToHelper {
    /// Run this script; the message carries the stdout and stderr pipes.
    Start(Box<HelperSpec>),
    /// Run this task instead of a script.
    Task(TaskSpec),
    /// The id maps are written: become root in the namespace and go on.
    Mapped,
    /// Kill the sandbox now (timeout or cancellation).
    Kill,
}

/// How the script (or, if it never ran, the init) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

/// A step inside the sandbox that failed, with the errno it failed with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StepFailure {
    /// What was being done, naming the object ("mount proc on /proc").
    pub step: String,
    /// The OS error number.
    pub errno: i32,
}

impl StepFailure {
    /// A failure of `step` with the error `error`.
    pub fn new(step: impl Into<String>, error: &io::Error) -> Self {
        Self {
            step: step.into(),
            errno: error.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Helper → worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromHelper {
    /// The namespaces exist; write the id maps.
    Unshared,
    /// The init, the new pid namespace's first process, exists: only now can the namespace be
    /// opened through `/proc/PID/ns/pid_for_children` (it has no child reaper before).
    InitStarted,
    /// Something was skipped but the script still runs (an optional mount).
    Warning(String),
    /// Setup failed; the script did not run.
    Failed(StepFailure),
    /// The sandbox is gone, every process of it reaped; this is how the script ended.
    Finished(ExitStatus),
    /// The task ended: its output, or why it failed.
    TaskDone(std::result::Result<String, String>),
}

/// Init (and the script before `execve`) → helper.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromInit {
    /// Forwarded as [`FromHelper::Warning`].
    Warning(String),
    /// Forwarded as [`FromHelper::Failed`].
    Failed(StepFailure),
    /// The script ended so; the init exits next, taking the namespace down.
    ScriptExited(ExitStatus),
}

/// One end of a message channel, used blocking (helper, init) or through [`AsyncChannel`].
#[derive(Debug)]
pub(crate) struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair, both ends close-on-exec.
    pub fn pair() -> io::Result<(Self, Self)> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        Ok((Self { fd: a }, Self { fd: b }))
    }

    /// Wraps an end received some other way (the helper gets its end as stdin).
    pub fn from_fd(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// The socket, to hand to a child process.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends `message` with the file descriptors `fds`.
    pub fn send<T: Serialize>(&self, message: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        self.send_with(message, fds, MsgFlags::MSG_NOSIGNAL)
    }

    fn send_with<T: Serialize>(
        &self,
        message: &T,
        fds: &[BorrowedFd<'_>],
        flags: MsgFlags,
    ) -> io::Result<()> {
        let bytes = serde_json::to_vec(message).map_err(io::Error::other)?;
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            self.fd.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            cmsgs,
            flags | MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Receives one message and the descriptors sent with it; `None` once the peer has closed.
    pub fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        self.recv_with(MsgFlags::empty())
    }

    fn recv_with<T: DeserializeOwned>(
        &self,
        flags: MsgFlags,
    ) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        // One byte more than the largest message, to tell a full message from a cut one.
        let mut buffer = vec![0u8; MAX_MESSAGE_BYTES + 1];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let received = recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            flags | MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for cmsg in received.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in our table for this message
                    // (SCM_RIGHTS); nothing else owns it, so wrapping it closes it exactly once.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        let (bytes, msg_flags) = (received.bytes, received.flags);
        if msg_flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "message or its descriptors were cut",
            ));
        }
        if bytes == 0 {
            return Ok(None);
        }
        let message = serde_json::from_slice(&buffer[..bytes]).map_err(io::Error::other)?;
        Ok(Some((message, fds)))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The worker's end of the helper channel, driven by tokio.
pub(crate) struct AsyncChannel {
    inner: AsyncFd<Channel>,
}

impl AsyncChannel {
    /// Registers `channel` with the tokio reactor; must be called inside a runtime.
    pub fn new(channel: Channel) -> io::Result<Self> {
        // SAFETY: `Channel` owns its descriptor for its whole life and `as_raw_fd` always
        // returns that one; the `AsyncFd` owns the `Channel`, so the descriptor stays open and
        // the same until the `AsyncFd` is dropped.
        let inner = unsafe { AsyncFd::register(channel) }?;
        Ok(Self { inner })
    }

    /// Sends `message` with `fds`, waiting for buffer space if needed.
    pub async fn send<T: Serialize>(&self, message: &T, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        loop {
            let mut guard = self.inner.writable().await?;
            match guard.try_io(|c| c.get_ref().send_with(message, fds, MsgFlags::MSG_DONTWAIT)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one message; `None` once the peer has closed. Cancel-safe: a message is either
    /// returned or left in the socket.
    pub async fn recv<T: DeserializeOwned>(&self) -> io::Result<Option<(T, Vec<OwnedFd>)>> {
        loop {
            let mut guard = self.inner.readable().await?;
            match guard.try_io(|c| c.get_ref().recv_with(MsgFlags::MSG_DONTWAIT)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn messages_and_descriptors_cross_and_close_reads_as_end() {
        let (worker, helper) = Channel::pair().unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        worker
            .send(&ToHelper::Kill, &[write.as_fd()])
            .expect("send");
        drop(write);
        let (message, mut fds) = helper.recv::<ToHelper>().unwrap().unwrap();
        assert!(matches!(message, ToHelper::Kill));
        assert_eq!(fds.len(), 1);
        std::fs::File::from(fds.pop().unwrap())
            .write_all(b"through")
            .unwrap();
        let mut text = String::new();
        std::fs::File::from(read).read_to_string(&mut text).unwrap();
        assert_eq!(text, "through");
        drop(worker);
        assert!(helper.recv::<ToHelper>().unwrap().is_none());
    }

    #[test]
    fn oversized_messages_are_refused_before_sending() {
        let (worker, _helper) = Channel::pair().unwrap();
        let huge = FromHelper::Warning("x".repeat(MAX_MESSAGE_BYTES));
        let error = worker.send(&huge, &[]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
