//! The inside half of `switchboard ns`: from a forked copy of the command
//! line to the user's command running in a configured namespace.
//!
//! Every step that can fail says which step and why on stderr and exits
//! with [`SETUP_FAILED`] before the command runs, so a script never runs
//! its command in a namespace without a network. The tap is handed out as
//! soon as it exists, so the cable is running by the time the DHCP
//! DISCOVER leaves; a DHCP lease follows it over the same socket pair
//! just before the command is executed, for the outside to renew.

use super::dhcp_client::{DhcpClient, Step};
use super::lease_msg::LeaseMessage;
use super::packet::{MAX_FRAME, PacketSocket};
use super::{Addressing, Configured, DHCP_TIMEOUT, NsPlan, SETUP_FAILED};
use super::{dhcp_frame, fdpass, netif, resolv, userns};
use crate::mac::MacAddr;
use crate::time::MonotonicClock;
use std::convert::Infallible;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

/// Sets up the namespace and executes the command; never returns (the
/// process becomes the command, or exits).
pub(super) fn run(plan: &NsPlan, handover: OwnedFd, inherited: &[i32]) -> ! {
    let code = match setup_and_exec(plan, handover, inherited) {
        Ok(never) => match never {},
        Err((code, msg)) => {
            eprintln!("switchboard ns: {msg}");
            code
        }
    };
    // SAFETY: _exit ends the process without running the parent's
    // destructors (its copy of the segment's socket files must survive).
    unsafe { libc::_exit(code) }
}

type Failure = (i32, String);

fn setup(msg: impl Into<String>) -> Failure {
    (SETUP_FAILED, msg.into())
}

fn setup_and_exec(
    plan: &NsPlan,
    handover: OwnedFd,
    inherited: &[i32],
) -> Result<Infallible, Failure> {
    die_with_parent()?;
    close_on_exec_except(inherited);
    userns::enter().map_err(setup)?;
    let (tap, name) = netif::create_tap(&plan.ifname).map_err(|e| setup(e.to_string()))?;
    if let Some(mtu) = plan.mtu {
        netif::set_mtu(&name, mtu).map_err(|e| setup(e.to_string()))?;
    }
    netif::set_up("lo").map_err(|e| setup(e.to_string()))?;
    netif::set_up(&name).map_err(|e| setup(e.to_string()))?;
    fdpass::send_fd(handover.as_fd(), tap.as_fd(), &name)
        .map_err(|e| setup(format!("cannot hand the tap out of the namespace: {e}")))?;
    drop(tap);

    let configured = match &plan.addressing {
        Addressing::Static {
            address,
            prefix_len,
            gateway,
        } => {
            netif::set_address(&name, *address, *prefix_len).map_err(|e| setup(e.to_string()))?;
            if let Some(g) = gateway {
                netif::add_default_route(&name, *g).map_err(|e| setup(e.to_string()))?;
            }
            Configured {
                ifname: name.clone(),
                address: *address,
                prefix_len: *prefix_len,
                gateway: *gateway,
                dns: plan.dns.clone(),
                mtu: plan.mtu,
            }
        }
        Addressing::Dhcp => {
            let mac = netif::hardware_address(&name).map_err(|e| setup(e.to_string()))?;
            let lease = obtain_lease(&name, MacAddr(mac), &plan.url_text)?;
            tell_lease(&handover, &lease, MacAddr(mac));
            let mtu = plan.mtu.or(lease.mtu);
            if plan.mtu.is_none()
                && let Some(m) = lease.mtu
            {
                netif::set_mtu(&name, m).map_err(|e| setup(e.to_string()))?;
            }
            netif::set_address(&name, lease.address, lease.prefix_len)
                .map_err(|e| setup(e.to_string()))?;
            let mut gateway = lease.router;
            if let Some(g) = lease.router
                && let Err(e) = netif::add_default_route(&name, g)
            {
                eprintln!("switchboard ns: warning: the DHCP server's router is unusable: {e}");
                gateway = None;
            }
            let dns = if plan.dns.is_empty() {
                lease.dns_servers.clone()
            } else {
                plan.dns.clone()
            };
            if !dns.is_empty() {
                let text = resolv::resolv_conf_text(&dns, lease.domain.as_deref());
                resolv::install(&text, &std::env::temp_dir()).map_err(|e| setup(e.to_string()))?;
            }
            Configured {
                ifname: name.clone(),
                address: lease.address,
                prefix_len: lease.prefix_len,
                gateway,
                dns,
                mtu,
            }
        }
    };
    if matches!(plan.addressing, Addressing::Static { .. }) && !plan.dns.is_empty() {
        let text = resolv::resolv_conf_text(&plan.dns, None);
        resolv::install(&text, &std::env::temp_dir()).map_err(|e| setup(e.to_string()))?;
    }
    // With --ip nothing was said: the outside sees the socket close and
    // has nothing to renew.
    drop(handover);
    eprintln!("{}", configured.summary());

    let (prog, args) = plan
        .command
        .split_first()
        .ok_or_else(|| setup("no command"))?;
    let e = std::process::Command::new(prog)
        .args(args)
        .env("SWITCHBOARD_NS", "1")
        .exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    Err((code, format!("cannot run {prog}: {e}")))
}

/// Runs the DHCP exchange on `ifname` over a packet socket until a lease
/// or the timeout.
fn obtain_lease(
    ifname: &str,
    mac: MacAddr,
    url: &str,
) -> Result<super::dhcp_client::Lease, Failure> {
    let index = netif::index(ifname).map_err(|e| setup(e.to_string()))?;
    let socket = PacketSocket::open(index)
        .map_err(|e| setup(format!("cannot open a packet socket on {ifname}: {e}")))?;
    let clock = MonotonicClock::new();
    let mut client = DhcpClient::new(mac, random_xid(), clock.now(), DHCP_TIMEOUT);
    let mut buf = vec![0u8; MAX_FRAME];
    // Bounded: the client gives up at its deadline, and each turn either
    // sends (at most a handful of times) or waits until a set time.
    loop {
        match client.poll(clock.now()) {
            Step::Send(payload) => {
                let Some(frame) = dhcp_frame::broadcast_frame(mac, &payload) else {
                    return Err(setup("DHCP message too large"));
                };
                if let Err(e) = socket.send(&frame) {
                    tracing::debug!(error = %e, "DHCP send failed");
                }
            }
            Step::WaitUntil(at) => {
                if let Some(n) = socket
                    .recv(&mut buf, clock.until(at))
                    .map_err(|e| setup(format!("packet socket on {ifname}: {e}")))?
                    && let Some(payload) =
                        dhcp_frame::reply_payload(mac, buf.get(..n).unwrap_or_default())
                    && let Err(why) = client.receive(clock.now(), payload)
                {
                    tracing::debug!(?why, "DHCP reply ignored");
                }
            }
            Step::Bound(lease) => return Ok(lease),
            Step::GaveUp => {
                let heard = if client.refused() > 0 {
                    format!(
                        " ({} replies were not usable: other transactions, or unusable addresses)",
                        client.refused()
                    )
                } else {
                    String::new()
                };
                return Err(setup(format!(
                    "no DHCP lease on {url} within {} s{heard}: does the segment have a \
                     DHCP server (a router interface with [dhcp], or a network)? \
                     Otherwise give --ip ADDR/PREFIX [--gw ADDR]",
                    DHCP_TIMEOUT.as_secs()
                )));
            }
        }
    }
}

/// Tells the outside the lease so that it renews it while the command
/// runs. A lease without a time (a server breaking RFC 2131) is not told:
/// there is nothing to plan a renewal from. Failing to tell is only
/// warned about: the namespace works, it just will not renew.
fn tell_lease(handover: &OwnedFd, lease: &super::dhcp_client::Lease, mac: MacAddr) {
    let Some(lease_secs) = lease.lease_secs else {
        return;
    };
    let msg = LeaseMessage {
        address: lease.address,
        server: lease.server,
        lease_secs,
        mac,
    };
    if let Err(e) = nix::sys::socket::send(
        handover.as_raw_fd(),
        &msg.encode(),
        nix::sys::socket::MsgFlags::empty(),
    ) {
        eprintln!("switchboard ns: warning: the lease will not be renewed: {e}");
    }
}

/// A random transaction id, so that namespaces started together do not
/// take each other's replies; the clock when the kernel has no entropy
/// call.
pub(super) fn random_xid() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom(2) writes at most 4 bytes into a 4-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 4 {
        return u32::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// The command should not outlive the cable that is its network: when the
/// outside process dies, the inside gets SIGHUP, like a shell whose
/// terminal went away.
fn die_with_parent() -> Result<(), Failure> {
    let parent = nix::unistd::getppid();
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number, no memory.
    let r = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGHUP as libc::c_ulong) };
    if r < 0 {
        return Err(setup(format!(
            "prctl(PR_SET_PDEATHSIG): {}",
            std::io::Error::last_os_error()
        )));
    }
    if nix::unistd::getppid() != parent {
        return Err(setup("the outside process is gone"));
    }
    Ok(())
}

/// Descriptors `ns` itself opened before forking (the segment's sockets)
/// must not leak into the command; the ones we were started with (the
/// user's redirections) stay.
fn close_on_exec_except(inherited: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && !inherited.contains(&fd) {
            // SAFETY: fcntl(F_SETFD) on a descriptor number; a stale number
            // (the directory's own, already closed) just fails with EBADF.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}
