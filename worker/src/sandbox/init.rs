//! The helper process (`kiln-worker sandbox-init`) and the two processes it forks: the init
//! (pid 1 of the sandbox) and the script.
//!
//! The helper is single-threaded (a fresh `execve` of the worker binary that starts no runtime),
//! so `fork` here is safe and `unshare(CLONE_NEWUSER)` is allowed. It stays in the worker's pid
//! namespace: sandboxed processes cannot see or signal it, and it can kill the init without a
//! pid-reuse race because the init is its own unreaped child.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};

use super::error::{Result, SandboxError};
use super::message::{
    Channel, ExitStatus, FromHelper, FromInit, HelperSpec, StepFailure, TaskSpec, ToHelper,
};
use super::rootfs;
use super::seccomp;
use super::syscall::{LinuxSyscall, Syscall, c_path, c_strings};

/// Longest task error passed on, bytes; the rest is cut.
const MAX_TASK_ERROR_BYTES: usize = 16 * 1024;

/// Name of the init in `ps` inside the sandbox.
const INIT_NAME: &std::ffi::CStr = c"kiln-init";

/// The namespaces every sandbox gets; the network namespace is added when the network is off.
pub(crate) fn namespace_flags(is_network_isolated: bool) -> CloneFlags {
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if is_network_isolated {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    flags
}

/// Runs one task for [`super::Sandbox::run_task`]: gets the task's name and input, returns its
/// output or why it failed. The worker binary passes its table of tasks to [`helper_main`].
pub type TaskHandler = fn(name: &str, input: &str) -> std::result::Result<String, String>;

/// Entry point of `kiln-worker sandbox-init`. The worker passes the control channel as stdin;
/// everything else arrives on it. Returns once the sandbox is gone and reported. `tasks` runs
/// the tasks [`super::Sandbox::run_task`] asks for.
pub fn helper_main(tasks: TaskHandler) -> Result<()> {
    let channel = take_channel_from_stdin()?;
    let channel_error = |what: &str| {
        let what = what.to_owned();
        move |source| SandboxError::Channel { what, source }
    };
    let spec = match channel
        .recv::<ToHelper>()
        .map_err(channel_error("receive the spec"))?
    {
        Some((ToHelper::Start(spec), fds)) => (spec, fds),
        Some((ToHelper::Task(task), _)) => return run_task(&channel, &task, tasks),
        _ => {
            return Err(SandboxError::Channel {
                what: "receive the spec".into(),
                source: io::Error::new(io::ErrorKind::InvalidData, "expected Start"),
            });
        }
    };
    let (spec, fds) = spec;
    let Ok::<[OwnedFd; 2], _>([stdout, stderr]) = fds.try_into() else {
        return Err(SandboxError::Channel {
            what: "receive the output pipes".into(),
            source: io::Error::new(io::ErrorKind::InvalidData, "expected two descriptors"),
        });
    };
    let sys = LinuxSyscall;
    match prepare(&sys, &channel, &spec) {
        Ok(true) => {}
        // The worker closed the channel or asked to stop before the start: nothing to run.
        Ok(false) => return Ok(()),
        Err(failure) => {
            return channel
                .send(&FromHelper::Failed(failure), &[])
                .map_err(channel_error("report a failure"));
        }
    }
    let status = supervise(&sys, &channel, &spec, [stdout, stderr]);
    channel
        .send(&FromHelper::Finished(status), &[])
        .map_err(channel_error("report the end"))
}

/// A task: only a new user namespace (the task is the worker's own code, not the build's, so
/// it needs no mounts, pid namespace or limits), root in it with the build's id map, so that it
/// can read, own and remove every file a sandboxed script could make.
fn run_task(channel: &Channel, task: &TaskSpec, tasks: TaskHandler) -> Result<()> {
    let channel_error = |what: &str| {
        let what = what.to_owned();
        move |source| SandboxError::Channel { what, source }
    };
    let sys = LinuxSyscall;
    let entered = enter_namespace(&sys, channel, CloneFlags::CLONE_NEWUSER);
    match entered {
        Ok(true) => {}
        Ok(false) => return Ok(()),
        Err(failure) => {
            return channel
                .send(&FromHelper::Failed(failure), &[])
                .map_err(channel_error("report a failure"));
        }
    }
    let result = tasks(&task.name, &task.input).map_err(|mut message| {
        // The report must fit one message.
        if message.len() > MAX_TASK_ERROR_BYTES {
            let mut end = MAX_TASK_ERROR_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        message
    });
    channel
        .send(&FromHelper::TaskDone(result), &[])
        .map_err(channel_error("report the task's end"))
}

/// Moves the control channel off fd 0 (close-on-exec, so the script never inherits it) and puts
/// `/dev/null` there.
fn take_channel_from_stdin() -> Result<Channel> {
    let wrap = |source: nix::Error| SandboxError::Channel {
        what: "take the control channel from stdin".into(),
        source: source.into(),
    };
    let stdin = io::stdin();
    let fd = fcntl(stdin.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(wrap)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let channel = Channel::from_fd(unsafe { OwnedFd::from_raw_fd(fd) });
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(wrap)?;
    nix::unistd::dup2_stdin(&null).map_err(wrap)?;
    Ok(channel)
}

/// Sets the process limit, unshares and waits for the id maps. `Ok(false)` when the worker
/// went away or asked to stop meanwhile.
fn prepare(
    sys: &dyn Syscall,
    channel: &Channel,
    spec: &HelperSpec,
) -> std::result::Result<bool, StepFailure> {
    // Before unsharing: the new namespace's process ceiling is the creator's RLIMIT_NPROC
    // (kernel/user_namespace.c `create_user_ns`, `set_userns_rlimit_max`).
    sys.set_rlimit(spec.limits.process_limit())
        .map_err(|e| StepFailure::new("set the process limit", &e))?;
    enter_namespace(sys, channel, namespace_flags(spec.is_network_isolated))
}

/// Unshares `flags`, waits while the worker writes the id maps and becomes root of the new user
/// namespace. `Ok(false)` when the worker went away or asked to stop meanwhile.
fn enter_namespace(
    sys: &dyn Syscall,
    channel: &Channel,
    flags: CloneFlags,
) -> std::result::Result<bool, StepFailure> {
    sys.unshare(flags)
        .map_err(|e| StepFailure::new("unshare the namespaces", &e))?;
    channel
        .send(&FromHelper::Unshared, &[])
        .map_err(|e| StepFailure::new("report the namespaces", &e))?;
    match channel.recv::<ToHelper>() {
        Ok(Some((ToHelper::Mapped, _))) => {}
        Ok(_) => return Ok(false),
        Err(e) => return Err(StepFailure::new("wait for the id maps", &e)),
    }
    sys.become_root()
        .map_err(|e| StepFailure::new("become root in the user namespace", &e))?;
    Ok(true)
}

/// Forks the init and waits for it, forwarding its messages and killing it when the worker
/// asks or goes away. Returns how the script ended (or how the init did, if it never ran).
fn supervise(
    sys: &dyn Syscall,
    channel: &Channel,
    spec: &HelperSpec,
    output: [OwnedFd; 2],
) -> ExitStatus {
    let (init_channel, helper_end) = match Channel::pair() {
        Ok(pair) => pair,
        Err(e) => return failed(channel, StepFailure::new("create the init channel", &e)),
    };
    // The init watches the read end: it sees end of stream once the helper has died, which
    // closes the race between its fork and its PR_SET_PDEATHSIG.
    let (alive_read, alive_write) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(pipe) => pipe,
        Err(e) => {
            return failed(
                channel,
                StepFailure::new("create the liveness pipe", &e.into()),
            );
        }
    };
    // SAFETY: this process is single-threaded (the helper starts no threads), so the child may
    // do anything, allocations included; it never returns into the caller (`init_main` exits).
    let init = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop((helper_end, alive_write));
            init_main(sys, &init_channel, alive_read, spec, output)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => return failed(channel, StepFailure::new("fork the init", &e.into())),
    };
    // Only the script may hold the output pipes, so the worker sees their end with the sandbox.
    drop((init_channel, alive_read, output));
    // If the worker is gone, the poll below sees it and kills the init.
    let _ = channel.send(&FromHelper::InitStarted, &[]);
    let pidfd = match pidfd_open(init) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = kill(init, Signal::SIGKILL);
            let _ = waitpid(init, None);
            return failed(channel, StepFailure::new("open a pidfd for the init", &e));
        }
    };
    let mut script_status = None;
    // Each source leaves the poll set at its end of stream, so a closed one cannot spin it.
    let (mut is_worker_listening, mut is_init_talking) = (true, true);
    loop {
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        let init_at = is_init_talking.then(|| {
            fds.push(PollFd::new(helper_end.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        let worker_at = is_worker_listening.then(|| {
            fds.push(PollFd::new(channel.as_fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                let _ = kill(init, Signal::SIGKILL);
                break;
            }
            Ok(_) => {}
        }
        let ready = |at: Option<usize>| {
            at.and_then(|i| fds[i].revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (init_ended, init_spoke, worker_spoke) =
            (ready(Some(0)), ready(init_at), ready(worker_at));
        drop(fds);
        if init_spoke {
            is_init_talking = forward(channel, &helper_end, &mut script_status);
        }
        if worker_spoke {
            // A Kill, or end of stream because the worker died: either way the sandbox goes.
            match channel.recv::<ToHelper>() {
                Ok(Some((ToHelper::Kill, _))) | Ok(None) | Err(_) => {
                    let _ = kill(init, Signal::SIGKILL);
                    is_worker_listening = false;
                }
                Ok(Some(_)) => {}
            }
        }
        if init_ended {
            break;
        }
    }
    // The init has exited, so every process of its namespace has been reaped already
    // (pid_namespaces(7): the kernel kills them when pid 1 ends, and pid 1's exit completes
    // after they are gone).
    let init_status = loop {
        match waitpid(init, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    // Messages the init sent just before it exited.
    while is_ready(helper_end.as_fd()) {
        if !forward(channel, &helper_end, &mut script_status) {
            break;
        }
    }
    script_status.unwrap_or(match init_status {
        Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
        Ok(WaitStatus::Signaled(_, signal, _)) => ExitStatus::Signal(signal as i32),
        _ => ExitStatus::Signal(Signal::SIGKILL as i32),
    })
}

/// Reports `failure` to the worker and returns the status of a script that never ran.
fn failed(channel: &Channel, failure: StepFailure) -> ExitStatus {
    let _ = channel.send(&FromHelper::Failed(failure), &[]);
    ExitStatus::Code(127)
}

/// Whether `fd` is readable or hung up right now.
fn is_ready(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Forwards one message of the init to the worker; false at end of stream.
fn forward(worker: &Channel, init: &Channel, script_status: &mut Option<ExitStatus>) -> bool {
    let message = match init.recv::<FromInit>() {
        Ok(Some((message, _))) => message,
        Ok(None) | Err(_) => return false,
    };
    let _ = match message {
        FromInit::Warning(text) => worker.send(&FromHelper::Warning(text), &[]),
        FromInit::Failed(failure) => worker.send(&FromHelper::Failed(failure), &[]),
        FromInit::ScriptExited(status) => {
            *script_status = Some(status);
            Ok(())
        }
    };
    true
}

/// pidfd_open(2): a descriptor that becomes readable when `pid` exits.
fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and a flags word and returns a new descriptor or -1; no
    // memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The init: pid 1 of the new pid namespace. Mounts, pivots, forks the script and reaps until
/// the script ends; its exit then ends the namespace. Never returns.
fn init_main(
    sys: &dyn Syscall,
    channel: &Channel,
    alive: OwnedFd,
    spec: &HelperSpec,
    output: [OwnedFd; 2],
) -> ! {
    // If the helper is SIGKILLed (the worker's last resort), take the sandbox down with it.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() || is_ready(alive.as_fd()) {
        std::process::exit(1);
    }
    let _ = nix::sys::prctl::set_name(INIT_NAME);
    // The init holds the channel to the helper and the worker's stderr; sandboxed root could
    // ptrace it (same user namespace) and use both. Not dumpable, ptrace needs CAP_SYS_PTRACE
    // in the namespace its memory was made in, the worker's, because the helper was executed
    // before unsharing (ptrace(2), "Ptrace access mode checking").
    if nix::sys::prctl::set_dumpable(false).is_err() {
        std::process::exit(1);
    }
    let report = |message: FromInit| {
        let _ = channel.send(&message, &[]);
    };
    let root = &spec.rootfs.root;
    let steps = rootfs::plan(&spec.rootfs);
    let mut warn = |text: String| report(FromInit::Warning(text));
    if let Err(failure) = rootfs::apply(&steps, root, sys, &mut warn) {
        report(FromInit::Failed(failure));
        std::process::exit(1);
    }
    if spec.is_network_isolated
        && let Err(e) = sys.bring_up_loopback()
    {
        report(FromInit::Warning(format!("loopback left down ({e})")));
    }
    let (script_end, init_end) = match Channel::pair() {
        Ok(pair) => pair,
        Err(e) => {
            report(FromInit::Failed(StepFailure::new(
                "create the exec channel",
                &e,
            )));
            std::process::exit(1);
        }
    };
    // SAFETY: the init is single-threaded (a fork of the single-threaded helper); the child
    // never returns into the caller (`script_main` execs or exits).
    let script = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(init_end);
            script_main(sys, &script_end, spec, output)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            report(FromInit::Failed(StepFailure::new(
                "fork the script",
                &e.into(),
            )));
            std::process::exit(1);
        }
    };
    drop((script_end, output));
    // The script's end of this channel is close-on-exec: end of stream means execve worked;
    // a message is the reason it did not.
    if let Ok(Some((FromInit::Failed(failure), _))) = init_end.recv::<FromInit>() {
        report(FromInit::Failed(failure));
    }
    let status = loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == script => break ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == script => {
                break ExitStatus::Signal(signal as i32);
            }
            // Orphans reparented to pid 1: reaped here and forgotten.
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            // Cannot happen while the script is unreaped; never pass it off as a success.
            Err(_) => std::process::exit(1),
        }
    };
    report(FromInit::ScriptExited(status));
    std::process::exit(0)
}

/// The script: limits, no new privileges, a new session, stdio, then `execve`. Never returns;
/// on failure it reports the step on `channel` and exits 127, like a shell that cannot run a
/// command.
fn script_main(
    sys: &dyn Syscall,
    channel: &Channel,
    spec: &HelperSpec,
    [stdout, stderr]: [OwnedFd; 2],
) -> ! {
    let failure = match prepare_script(sys, spec, stdout, stderr) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let _ = channel.send(&FromInit::Failed(failure), &[]);
    std::process::exit(127)
}

/// Everything before and including `execve`; only returns on failure.
fn prepare_script(
    sys: &dyn Syscall,
    spec: &HelperSpec,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> std::result::Result<std::convert::Infallible, StepFailure> {
    let step = |what: &str| {
        let what = what.to_owned();
        move |e: io::Error| StepFailure::new(what.clone(), &e)
    };
    // A new session without a controlling terminal: a script holding the worker's terminal
    // could push input into it with TIOCSTI (CVE-2017-5226, bubblewrap).
    nix::unistd::setsid()
        .map_err(io::Error::from)
        .map_err(step("start a new session"))?;
    for limit in spec.limits.rlimits() {
        sys.set_rlimit(limit)
            .map_err(step(&format!("set {:?}", limit.resource)))?;
    }
    // Setuid binaries in the image (sudo, su, mount) gain nothing: the sandbox's root is already
    // the most it can be, and a setuid file owned by a host user must not elevate (prctl(2)).
    sys.set_no_new_privs().map_err(step("set no_new_privs"))?;
    sys.install_seccomp(&seccomp::deny_list())
        .map_err(step("install the seccomp filter"))?;
    nix::unistd::chdir(&spec.cwd)
        .map_err(io::Error::from)
        .map_err(step(&format!("change directory to {}", spec.cwd.display())))?;
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io::Error::from)
    .map_err(step("open /dev/null"))?;
    nix::unistd::dup2_stdin(&null)
        .and_then(|()| nix::unistd::dup2_stdout(&stdout))
        .and_then(|()| nix::unistd::dup2_stderr(&stderr))
        .map_err(io::Error::from)
        .map_err(step("set up stdio"))?;
    let program = spec.argv.first().map(String::as_str).unwrap_or_default();
    let exec = step(&format!("execute {program}"));
    let argv = c_strings(&spec.argv).map_err(&exec)?;
    let env = c_strings(&spec.env).map_err(&exec)?;
    let path = c_path(Path::new(program)).map_err(&exec)?;
    let error = nix::unistd::execve(&path, &argv, &env).unwrap_err();
    Err(exec(error.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_namespace_is_new_only_when_the_network_is_off() {
        let base = CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS;
        assert_eq!(namespace_flags(false), base);
        assert_eq!(namespace_flags(true), base | CloneFlags::CLONE_NEWNET);
    }
}
