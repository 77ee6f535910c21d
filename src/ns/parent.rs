//! The outside half of `switchboard ns`: the cable between the namespace's
//! tap and the segment, for as long as the command runs.
//!
//! `switchboard plug` runs cables between two URLs until a side goes away;
//! here one side is a descriptor received from the namespace, and what
//! ends the cable is the command's exit, not a side's. So this is a small
//! loop of its own over the same plugs: it waits for the tap's descriptor,
//! moves frames both ways, forwards SIGINT, SIGTERM and SIGHUP to the
//! child, and returns the child's exit status when it ends (watched through
//! a pidfd, so no SIGCHLD handler races the first wait). If the segment
//! goes away the namespace is cut off but the command keeps running: a
//! shell should not die because a switch restarted.
//!
//! After the tap, the same socket pair may carry the inside's DHCP lease
//! ([`super::lease_msg`]); the loop then also runs a [`Renewer`]: its
//! REQUESTs join the frames toward the segment, its replies are taken out
//! of the frames toward the tap, and its deadline bounds the wait.

use super::lease_msg::{self, LeaseMessage};
use super::renew::{Lost, Renewer};
use crate::plug::url::Endpoint;
use crate::time::MonotonicClock;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use switchboard_plugs::batch::{ALL_FRAMES, BATCH_CAPACITY};
use switchboard_plugs::tap::TapPlug;
use switchboard_plugs::{FrameBatch, Plug, RecvStatus};

const UPLINK: Token = Token(0);
const TAP: Token = Token(1);
const HANDOVER: Token = Token(2);
const SIGNALS: Token = Token(3);
const CHILD: Token = Token(4);

/// How often the child is checked for when no pidfd is available (kernels
/// before 5.3).
const CHILD_CHECK: Duration = Duration::from_millis(200);

/// How `ns` introduces itself to VDE switches (`ctl ports`).
const DESCRIPTION: &str = "switchboard ns";

/// Opens the segment side: every connecting endpoint kind `plug` knows.
///
/// # Errors
///
/// The endpoint cannot be reached; the message says why.
pub(super) fn connect(url: &Endpoint) -> io::Result<Box<dyn Plug>> {
    if matches!(url, Endpoint::Tap { .. } | Endpoint::Stdio) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a segment endpoint",
        ));
    }
    crate::plug::cable::connect_endpoint(url, DESCRIPTION, || {
        std::env::temp_dir().join(format!("switchboard-ns-{}.dgram", std::process::id()))
    })
}

/// What the socket pair from the inside carries next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handover {
    /// The tap's descriptor.
    Tap,
    /// The lease, or nothing (the socket closes) with `--ip`.
    Lease,
}

/// One side of the cable while it is open.
struct Side {
    plug: Option<Box<dyn Plug>>,
    ready: bool,
}

/// Runs the cable for `child` until it exits; returns its exit status
/// (128 + N when killed by signal N).
pub(super) fn run(child: Pid, handover: OwnedFd, uplink: Box<dyn Plug>, label: &str) -> i32 {
    match run_loop(child, handover, uplink, label) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchboard ns: the cable failed: {e}; stopping the command");
            let _ = nix::sys::signal::kill(child, Signal::SIGTERM);
            wait_blocking(child)
        }
    }
}

fn run_loop(child: Pid, handover: OwnedFd, uplink: Box<dyn Plug>, label: &str) -> io::Result<i32> {
    let mut poll = Poll::new()?;
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)?;
    let pidfd = pidfd_open(child);
    if let Some(fd) = &pidfd {
        poll.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), CHILD, Interest::READABLE)?;
    }
    let mut handover = Some(handover);
    let mut stage = Handover::Tap;
    let clock = MonotonicClock::new();
    let mut renewer: Option<Renewer> = None;
    let mut inject = FrameBatch::new();
    if let Some(h) = &handover {
        poll.registry()
            .register(&mut SourceFd(&h.as_raw_fd()), HANDOVER, Interest::READABLE)?;
    }
    let mut sides = [
        Side {
            plug: Some(uplink),
            ready: true,
        },
        Side {
            plug: None,
            ready: false,
        },
    ];
    if let Some(p) = sides[0].plug.as_mut() {
        poll.registry()
            .register(p.as_mut(), UPLINK, Interest::READABLE | Interest::WRITABLE)?;
    }
    let mut events = Events::with_capacity(16);
    let mut batch = FrameBatch::new();
    loop {
        if let Some(code) = try_wait(child) {
            return Ok(code);
        }
        if let Some(r) = renewer.as_mut() {
            renew_step(r, &clock, &mut inject, &mut sides[0]);
        }
        let busy = sides.iter().any(|s| s.ready && s.plug.is_some());
        let renew_at = renewer
            .as_ref()
            .and_then(Renewer::deadline)
            .map(|at| clock.until(at));
        let timeout = if busy {
            Some(Duration::ZERO)
        } else if pidfd.is_none() {
            Some(renew_at.map_or(CHILD_CHECK, |d| d.min(CHILD_CHECK)))
        } else {
            renew_at
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => {
                    for sig in signals.pending() {
                        if let Ok(s) = Signal::try_from(sig) {
                            let _ = nix::sys::signal::kill(child, s);
                        }
                    }
                }
                HANDOVER => {
                    // Edge-triggered: take everything that is there now.
                    while let Some(h) = handover.as_ref() {
                        let next = match stage {
                            Handover::Tap => match super::fdpass::recv_fd(h.as_fd()) {
                                Ok(Some((fd, name))) => {
                                    let mut tap = TapPlug::from_fd(fd, &name)?;
                                    poll.registry().register(
                                        &mut tap,
                                        TAP,
                                        Interest::READABLE | Interest::WRITABLE,
                                    )?;
                                    sides[1].plug = Some(Box::new(tap));
                                    sides[1].ready = true;
                                    Some(Handover::Lease)
                                }
                                // The child failed before handing the tap
                                // over; it said why and is exiting.
                                Ok(None) => None,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Err(e) => {
                                    tracing::warn!(error = %e, "no tap from the namespace");
                                    None
                                }
                            },
                            Handover::Lease => match recv_lease(h.as_fd()) {
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                                Ok(lease) => {
                                    renewer = lease.map(|l| {
                                        Renewer::new(&l, super::child::random_xid(), clock.now())
                                    });
                                    None
                                }
                                Err(e) => {
                                    eprintln!(
                                        "switchboard ns: warning: the lease will not be renewed: {e}"
                                    );
                                    None
                                }
                            },
                        };
                        match next {
                            Some(n) => stage = n,
                            None => {
                                if let Some(h) = handover.take() {
                                    let _ =
                                        poll.registry().deregister(&mut SourceFd(&h.as_raw_fd()));
                                }
                            }
                        }
                    }
                }
                CHILD => {}
                t if t == UPLINK || t == TAP => {
                    let side = &mut sides[t.0];
                    if ev.is_writable()
                        && let Some(p) = side.plug.as_mut()
                    {
                        let _ = p.on_writable();
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        side.ready = true;
                    }
                }
                _ => {}
            }
        }
        for i in 0..2 {
            if !sides[i].ready {
                continue;
            }
            let (a, b) = sides.split_at_mut(1);
            let (from, to) = if i == 0 {
                (&mut a[0], &mut b[0])
            } else {
                (&mut b[0], &mut a[0])
            };
            let Some(plug) = from.plug.as_mut() else {
                from.ready = false;
                continue;
            };
            batch.clear();
            let status = plug.recv_batch(&mut batch).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "receive failed");
                RecvStatus::Closed
            });
            if !batch.is_empty()
                && let Some(out) = to.plug.as_mut()
            {
                match renewer.as_mut() {
                    // From the segment: the renewer's replies stop here.
                    Some(r) if i == 0 => {
                        let now = clock.now();
                        let renewed = r.renewed();
                        let mut pass = [0u16; BATCH_CAPACITY];
                        let mut n = 0;
                        for (k, &index) in ALL_FRAMES[..batch.len()].iter().enumerate() {
                            if !r.receive(now, batch.frame(k)) {
                                pass[n] = index;
                                n += 1;
                            }
                        }
                        if n > 0 {
                            out.send_batch(&batch, &pass[..n]);
                        }
                        if r.renewed() != renewed {
                            tracing::debug!(
                                expires_in = ?clock.until(r.expiry()),
                                "lease renewed"
                            );
                        }
                    }
                    _ => {
                        out.send_batch(&batch, &ALL_FRAMES[..batch.len()]);
                    }
                }
            }
            match status {
                RecvStatus::More => {}
                RecvStatus::Drained => from.ready = false,
                RecvStatus::Closed => {
                    from.ready = false;
                    if let Some(mut p) = from.plug.take() {
                        let _ = poll.registry().deregister(p.as_mut());
                    }
                    if i == 0 {
                        eprintln!(
                            "switchboard ns: the segment {label} went away; the namespace is cut off"
                        );
                    }
                }
            }
        }
    }
}

/// Sends what the renewer has due toward the segment and says, once, if
/// the lease was lost.
fn renew_step(r: &mut Renewer, clock: &MonotonicClock, inject: &mut FrameBatch, uplink: &mut Side) {
    inject.clear();
    while let Some(frame) = r.poll(clock.now()) {
        if !inject.push(&frame) {
            break;
        }
    }
    if !inject.is_empty()
        && let Some(p) = uplink.plug.as_mut()
    {
        p.send_batch(inject, &ALL_FRAMES[..inject.len()]);
    }
    match r.take_lost() {
        Some(Lost::Refused) => eprintln!(
            "switchboard ns: warning: the DHCP server refused to renew the address lease; \
             the address lease was lost (the namespace keeps the address, which the server \
             may give to another host)"
        ),
        Some(Lost::Expired) => eprintln!(
            "switchboard ns: warning: the address lease was lost: it expired without a \
             renewal (the namespace keeps the address, which the server may give to \
             another host)"
        ),
        None => {}
    }
}

/// The lease message from the inside, if one comes: `Ok(None)` when the
/// socket closed without one (`--ip`, or the inside failed).
///
/// # Errors
///
/// `WouldBlock` when nothing has arrived yet; `InvalidData` for a message
/// that is not a lease record.
fn recv_lease(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<LeaseMessage>> {
    // Longer than a record, so that a longer message shows as one.
    let mut buf = [0u8; 2 * lease_msg::LEN];
    let n = nix::sys::socket::recv(
        sock.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    )?;
    if n == 0 {
        return Ok(None);
    }
    LeaseMessage::decode(buf.get(..n).unwrap_or_default())
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the inside sent {n} bytes that are not a lease"),
            )
        })
}

/// A pidfd for `child` (readable once it exits), or `None` on kernels
/// without `pidfd_open`.
fn pidfd_open(child: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    let fd = i32::try_from(fd).ok()?;
    // SAFETY: the kernel just returned this new descriptor to us.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The child's exit status if it has ended.
fn try_wait(child: Pid) -> Option<i32> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(code),
        Ok(WaitStatus::Signaled(_, sig, _)) => Some(128 + sig as i32),
        Ok(_) => None,
        // ECHILD: already reaped, or never ours; nothing left to wait for.
        Err(nix::errno::Errno::EINTR) => None,
        Err(_) => Some(super::SETUP_FAILED),
    }
}

fn wait_blocking(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return super::SETUP_FAILED,
        }
    }
}
