//! The network of a sandbox with the network off: a new network namespace has only a loopback
//! interface, and it starts down (network_namespaces(7)); builds that talk to themselves over
//! 127.0.0.1 need it up.

use std::io;
use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};

/// Name of the loopback interface.
const LOOPBACK: &[u8] = b"lo";

/// Sets `IFF_UP` on `lo` with the `SIOCGIFFLAGS`/`SIOCSIFFLAGS` ioctls (netdevice(7)). Needs
/// `CAP_NET_ADMIN` in the user namespace owning the network namespace.
pub(crate) fn bring_up_loopback() -> io::Result<()> {
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of integers and addresses)
    // for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(LOOPBACK) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: `socket` is an open socket, `request` a valid, NUL-terminated `ifreq` that lives
    // across the call; SIOCGIFFLAGS writes only `ifr_flags` inside it.
    let got = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled the `ifru_flags` member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and `ifr_flags`.
    let set = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if set < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
