//! Taps whose received frames the kernel delivers from a thread of its
//! own (threaded NAPI), and the interface settings such a tap needs.
//!
//! A frame written to an ordinary tap goes through the receiving host's
//! whole stack inside the `write` call: with plain 1500-byte frames that is
//! most of what switchboard's event loop spends its time on, and a single
//! TCP stream through two taps keeps one core busy while the other idles.
//! A tap opened with `IFF_NAPI` queues written frames for a NAPI instance
//! instead; with the interface's `threaded` attribute set, that instance
//! runs in a kernel thread (`napi/<tap>-<id>`), so the receiving stacks run
//! beside the event loop, on the other core, in batches. Measured with
//! `benches/routed.sh` (one TCP stream routed between two plain taps on a
//! 2-core VM) this nearly doubles the rate; the price is a thread wake-up
//! per frame on an idle path, about 30 µs more per round trip, which is why
//! it is a per-segment choice (`tap_napi_thread`) and not the default.
//!
//! tun-rs, which opens every other tap, has no way to ask for `IFF_NAPI`,
//! so these taps are opened here with the same flags tun-rs would use
//! (`IFF_TAP | IFF_NO_PI`, plus `IFF_VNET_HDR` and the TCP/UDP offloads for
//! an offloading tap), and configured by name through the usual interface
//! ioctls.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `TUNSETIFF`: attach the descriptor to (or create) the named tap.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNSETOFFLOAD`: which offloads the tap may hand over.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `IFF_NAPI`: written frames go through a NAPI instance.
const IFF_NAPI: libc::c_short = 0x0010;

/// Opens (or creates) tap `name` with `IFF_NAPI`, non-blocking, with
/// virtio-net headers and TCP (and, where the kernel has them, UDP)
/// segmentation offloads when `offload` is set.
///
/// # Errors
///
/// The raw `open`/`ioctl` error, for the caller to explain.
pub(crate) fn open_napi_tap(name: &str, offload: bool) -> io::Result<OwnedFd> {
    // SAFETY: plain open(2) of a NUL-terminated path; the result is checked.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = ifreq_named(name)?;
    let mut flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short | IFF_NAPI;
    if offload {
        flags |= libc::IFF_VNET_HDR as libc::c_short;
    }
    ifr.ifr_ifru.ifru_flags = flags;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if offload {
        let tcp = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
        let udp = libc::TUN_F_USO4 | libc::TUN_F_USO6;
        // Older kernels refuse the UDP offloads; TCP alone is what the
        // switch relies on.
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, (tcp | udp) as libc::c_ulong) } < 0
            && unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, tcp as libc::c_ulong) } < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// Runs the tap's NAPI instance in a kernel thread (the interface's
/// `threaded` attribute). Needs `CAP_NET_ADMIN` and a sysfs mounted for the
/// network namespace the tap is in.
///
/// # Errors
///
/// The sysfs write failed (no privilege, no sysfs, a kernel without
/// threaded NAPI).
pub(crate) fn enable_napi_thread(name: &str) -> io::Result<()> {
    // /sys shows the devices of the namespace that mounted it, which need
    // not be ours (a process that entered a namespace without remounting
    // /sys): make sure the entry is this very tap, by index and address,
    // before writing to it.
    let dir = format!("/sys/class/net/{name}");
    let read = |attr: &str| std::fs::read_to_string(format!("{dir}/{attr}"));
    let same_index = read("ifindex")?.trim().parse::<i32>().ok() == Some(ifindex(name)?);
    let same_mac = read("address")?
        .trim()
        .eq_ignore_ascii_case(&mac_text(name)?);
    if !(same_index && same_mac) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{dir} is another namespace's device (/sys not mounted for this one)"),
        ));
    }
    std::fs::write(format!("{dir}/threaded"), "1")
}

/// The interface's index in this network namespace.
fn ifindex(name: &str) -> io::Result<i32> {
    let mut ifr = ifreq_named(name)?;
    if_ioctl(libc::SIOCGIFINDEX, &mut ifr)?;
    // SAFETY: SIOCGIFINDEX filled the `ifru_ifindex` member.
    Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
}

/// The interface's MAC address as sysfs prints it (`aa:bb:...`).
fn mac_text(name: &str) -> io::Result<String> {
    let mut ifr = ifreq_named(name)?;
    if_ioctl(libc::SIOCGIFHWADDR, &mut ifr)?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member.
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(data[..6]
        .iter()
        .map(|b| format!("{:02x}", *b as u8))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The interface's MTU.
pub(crate) fn mtu(name: &str) -> io::Result<u16> {
    let mut ifr = ifreq_named(name)?;
    if_ioctl(libc::SIOCGIFMTU, &mut ifr)?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    u16::try_from(mtu).map_err(|_| io::Error::other(format!("MTU {mtu} out of range")))
}

/// Sets the interface's MTU.
pub(crate) fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    let mut ifr = ifreq_named(name)?;
    ifr.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    if_ioctl(libc::SIOCSIFMTU, &mut ifr)
}

/// The interface's flags (`IFF_UP`, `IFF_RUNNING`, ...).
fn flags(name: &str) -> io::Result<libc::c_short> {
    let mut ifr = ifreq_named(name)?;
    if_ioctl(libc::SIOCGIFFLAGS, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member.
    Ok(unsafe { ifr.ifr_ifru.ifru_flags })
}

/// True when the interface is up and running.
pub(crate) fn is_running(name: &str) -> io::Result<bool> {
    let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    Ok(flags(name)? & want == want)
}

/// Brings the interface up.
pub(crate) fn set_up(name: &str) -> io::Result<()> {
    let current = flags(name)?;
    let mut ifr = ifreq_named(name)?;
    ifr.ifr_ifru.ifru_flags = current | libc::IFF_UP as libc::c_short;
    if_ioctl(libc::SIOCSIFFLAGS, &mut ifr)
}

/// An `ifreq` carrying `name` (already checked to fit by the caller; a name
/// that does not fit is refused here too).
fn ifreq_named(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: all-zero is a valid ifreq.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= ifr.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid interface name {name:?}"),
        ));
    }
    for (d, &s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = s as libc::c_char;
    }
    Ok(ifr)
}

/// One interface ioctl through a throwaway datagram socket.
fn if_ioctl(req: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the interface ioctls read and write one ifreq, which outlives
    // the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), req as _, ifr as *mut libc::ifreq) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
