//! Interface set-up inside the namespace with the classic ioctls: create a
//! tap, bring links up, set the MTU, the address and netmask, and add the
//! default route.
//!
//! `switchboard ns` must not depend on `ip` being installed, and what it
//! configures is exactly what `ifconfig` and `route` always could: one
//! address, one mask, one gateway. The ioctls (`TUNSETIFF`, `SIOCSIF*`,
//! `SIOCADDRT`) need no message building and act on the caller's network
//! namespace, where our own user namespace gives us `CAP_NET_ADMIN`.
//! Every call checks the interface name first and returns the kernel's
//! error with the operation named.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Linux's `IFNAMSIZ` minus the NUL.
pub const MAX_IFNAME: usize = 15;

/// `struct rtentry` from `<net/route.h>`, which the `libc` crate does not
/// carry for glibc: the argument of `SIOCADDRT`.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

/// Checks an interface name the way the kernel's `dev_valid_name` does, so
/// a bad `--name` gets a sentence instead of `EINVAL`.
///
/// # Errors
///
/// `InvalidInput` saying what is wrong with the name.
pub fn check_name(name: &str) -> io::Result<()> {
    let bad = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?}: {why}"),
        ))
    };
    if name.is_empty() || name == "." || name == ".." {
        return bad("not a name");
    }
    if name.len() > MAX_IFNAME {
        return bad("longer than 15 bytes");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
    {
        return bad("contains '/', ':', a space or a NUL");
    }
    Ok(())
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    check_name(name)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and
    // sockaddr is plain old data, as the ioctl ABI intends.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn last_error(what: &str, name: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{name}: cannot {what}: {e}"))
}

/// A datagram socket to issue interface ioctls on, in the caller's network
/// namespace.
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ioctl(fd: &OwnedFd, request: libc::Ioctl, arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: callers pass a request whose argument type matches `arg`
    // (an ifreq or an rtentry that lives across the call).
    unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) }
}

/// Creates the tap `name` in the current network namespace and returns
/// its descriptor (plain frames: `IFF_NO_PI`, no virtio-net header), with
/// the name the kernel gave it.
///
/// # Errors
///
/// `/dev/net/tun` cannot be opened (missing, or not accessible to this
/// user), or the kernel refuses the tap (name taken, no privilege).
pub fn create_tap(name: &str) -> io::Result<(OwnedFd, String)> {
    let mut req = ifreq(name)?;
    let path = CString::new("/dev/net/tun").map_err(io::Error::other)?;
    // SAFETY: open(2) with a valid NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        let hint = match e.raw_os_error() {
            Some(libc::EACCES) | Some(libc::EPERM) => {
                " (it must be readable and writable by this user: Debian creates it \
                 with mode 0666; as root: chmod 0666 /dev/net/tun)"
            }
            Some(libc::ENOENT) => " (load the tun module: modprobe tun)",
            _ => "",
        };
        return Err(io::Error::new(
            e.kind(),
            format!("cannot open /dev/net/tun: {e}{hint}"),
        ));
    }
    // SAFETY: fd was just returned by open(2) and is owned by nobody else.
    let tun = unsafe { OwnedFd::from_raw_fd(fd) };
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    if ioctl(&tun, libc::TUNSETIFF, (&raw mut req).cast()) < 0 {
        return Err(last_error("create the tap", name));
    }
    let given: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok((tun, String::from_utf8_lossy(&given).into_owned()))
}

/// Brings the interface `name` up (`IFF_UP`), keeping its other flags.
///
/// # Errors
///
/// No such interface, or the kernel refuses.
pub fn set_up(name: &str) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut req = ifreq(name)?;
    if ioctl(&s, libc::SIOCGIFFLAGS, (&raw mut req).cast()) < 0 {
        return Err(last_error("read the flags of", name));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    if ioctl(&s, libc::SIOCSIFFLAGS, (&raw mut req).cast()) < 0 {
        return Err(last_error("bring up", name));
    }
    Ok(())
}

/// The interface's hardware (MAC) address.
///
/// # Errors
///
/// No such interface.
pub fn hardware_address(name: &str) -> io::Result<[u8; 6]> {
    let s = ctl_socket()?;
    let mut req = ifreq(name)?;
    if ioctl(&s, libc::SIOCGIFHWADDR, (&raw mut req).cast()) < 0 {
        return Err(last_error("read the MAC address of", name));
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// The interface index, for binding packet sockets.
///
/// # Errors
///
/// No such interface.
pub fn index(name: &str) -> io::Result<u32> {
    check_name(name)?;
    let c = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: if_nametoindex reads a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(last_error("find", name));
    }
    Ok(i)
}

/// Sets the interface MTU.
///
/// # Errors
///
/// The kernel refuses the value or the interface.
pub fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    let s = ctl_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    if ioctl(&s, libc::SIOCSIFMTU, (&raw mut req).cast()) < 0 {
        return Err(last_error(&format!("set MTU {mtu} on"), name));
    }
    Ok(())
}

/// Gives the interface the address `ip/prefix_len` (the kernel then adds
/// the connected route, the interface being up).
///
/// # Errors
///
/// `prefix_len` above 32, or the kernel refuses.
pub fn set_address(name: &str, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
    if prefix_len > 32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("prefix length {prefix_len} is above 32"),
        ));
    }
    let s = ctl_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(ip);
    if ioctl(&s, libc::SIOCSIFADDR, (&raw mut req).cast()) < 0 {
        return Err(last_error(&format!("set address {ip} on"), name));
    }
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0);
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
    if ioctl(&s, libc::SIOCSIFNETMASK, (&raw mut req).cast()) < 0 {
        return Err(last_error(
            &format!("set prefix length {prefix_len} on"),
            name,
        ));
    }
    Ok(())
}

/// Adds the default route via `gateway` on the interface `name`.
///
/// # Errors
///
/// The gateway is not reachable on a connected network (`ENETUNREACH`), or
/// the kernel refuses.
pub fn add_default_route(name: &str, gateway: Ipv4Addr) -> io::Result<()> {
    check_name(name)?;
    let s = ctl_socket()?;
    let mut dev = CString::new(name)
        .map_err(io::Error::other)?
        .into_bytes_with_nul();
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    if ioctl(&s, libc::SIOCADDRT, (&raw mut rt).cast()) < 0 {
        return Err(last_error(
            &format!("add the default route via {gateway} on"),
            name,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_like_the_kernel_does() {
        assert!(check_name("eth0").is_ok());
        assert!(check_name("a23456789012345").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a234567890123456",
            "a/b",
            "a b",
            "a:1",
            "a\0",
        ] {
            let e = check_name(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn ifreq_carries_the_name_nul_terminated() {
        let r = ifreq("tap7").unwrap();
        let name: Vec<u8> = r.ifr_name.iter().map(|&c| c as u8).collect();
        assert_eq!(&name[..5], b"tap7\0");
        assert!(name[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn sockaddr_in_is_network_order() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 9, 0, 5));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        let data: Vec<u8> = sa.sa_data.iter().map(|&c| c as u8).collect();
        // Port (2 bytes), then the address.
        assert_eq!(&data[..6], &[0, 0, 10, 9, 0, 5]);
    }

    #[test]
    fn rtentry_has_the_c_layout() {
        // glibc's struct rtentry on LP64 is 120 bytes, on ILP32 68.
        let expected = if cfg!(target_pointer_width = "64") {
            120
        } else {
            68
        };
        assert_eq!(std::mem::size_of::<RtEntry>(), expected);
    }
}
