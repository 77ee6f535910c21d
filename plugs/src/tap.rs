//! Tap devices as switch ports.
//!
//! A tap is the kernel's end of a virtual Ethernet cable: every frame the host
//! stack transmits on the interface can be read from the tap's file
//! descriptor, and every frame written to the descriptor arrives on the
//! interface as if received from a wire. [`TapPlug`] turns one such descriptor
//! into a switch port.
//!
//! The tap is opened through `tun-rs` in plain L2 mode: no packet-information
//! header and no `IFF_VNET_HDR` (offloads stay off, so every frame read is a
//! real Ethernet frame no larger than the MTU, which is what the other port
//! kinds can carry). One `read` or `write` moves one frame; taps have no
//! `recvmmsg` equivalent without vnet headers.
//!
//! State policy, chosen to match `vde_switch -t` and to stay out of the host
//! administrator's way:
//! - a tap that **we created** (the name did not exist) is brought up, since
//!   nobody else is going to configure it before frames should flow;
//! - a tap that **already existed** (`ip tuntap add dev NAME mode tap user
//!   USER`) keeps its administrative state: bringing it up could start IPv6
//!   autoconfiguration or activate addresses and routes its owner staged for
//!   later, and an unprivileged user could not do it anyway. If it is down,
//!   a warning is logged saying how to bring it up;
//! - addresses are never touched.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use mio::{Interest, Registry, Token};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use crate::offload::Offload;
use crate::tap_uring::TapRing;
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

/// Linux `IFNAMSIZ` minus the terminating NUL: the longest interface name.
pub const MAX_TAP_NAME: usize = 15;

/// Smallest MTU accepted for a tap: the IPv4 minimum, which is also the
/// kernel's lower bound for Ethernet devices.
pub const MIN_TAP_MTU: u16 = 68;

/// Largest MTU accepted for a tap: the kernel's limit for a tap, whose
/// frames a batch slot holds (see [`MAX_FRAME_SLOT`](crate::MAX_FRAME_SLOT)).
pub const MAX_TAP_MTU: u16 = 65520;

/// Receives on one tap this close together mean frames are arriving
/// faster than one per turn of the event loop: the tap is then read until
/// its queue is empty, not one frame at a time.
pub const BUSY_WINDOW: Duration = Duration::from_micros(200);

/// How to open a tap. Options default to "leave the interface as it is".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// Set the interface MTU to this value (for jumbo frames). Left alone
    /// when `None`, or when the tap already has this MTU (so that an
    /// unprivileged user can attach to a tap its administrator configured).
    pub mtu: Option<u16>,
    /// Open the tap with virtio-net headers and TCP/UDP segmentation and
    /// checksum offload, so the host hands over 64 KiB super-frames and
    /// leaves checksums to the receiver. Tap-to-tap traffic then moves one
    /// super-frame per syscall instead of forty frames; the switch segments
    /// in software only for ports that cannot take super-frames.
    pub offload: bool,
    /// Open the tap with `IFF_NAPI` and have the kernel deliver the frames
    /// written to it from a kernel thread of its own (threaded NAPI), so
    /// the receiving host's stack runs beside the event loop instead of
    /// inside its `write`. Roughly doubles plain-frame throughput on two
    /// cores at the cost of a thread wake-up per frame on an idle path
    /// (see [`crate::tap_napi`]). Needs `CAP_NET_ADMIN` for the thread;
    /// without it the tap works as an ordinary one, with a warning.
    pub napi_thread: bool,
}

/// A tap device attached to the switch as one port.
///
/// Owns the tap's file descriptor (non-blocking). A tap we created lives as
/// long as this value: it disappears when the plug is dropped, unless it was
/// made persistent by someone else. A pre-existing persistent tap stays.
pub struct TapPlug {
    dev: TapDev,
    name: String,
    description: String,
    created: bool,
    offload: bool,
    /// When the last receive began: receives closer together than
    /// [`BUSY_WINDOW`] mean the tap is under load (see
    /// [`recv_batch`](Plug::recv_batch)).
    last_recv: Option<Instant>,
    /// [`BUSY_WINDOW`], kept per plug so tests can pin either behaviour.
    busy_window: Duration,
    /// Batches the reads of a loaded tap, and every write of more than one
    /// frame, into one system call each (see [`crate::tap_uring`]); `None`
    /// where io_uring is not available or has failed, and the tap then
    /// uses one system call per frame.
    ring: Option<TapRing>,
}

/// The tap's descriptor: opened by tun-rs, or by [`crate::tap_napi`] for a
/// tap with `IFF_NAPI`, which tun-rs cannot ask for.
enum TapDev {
    Tun(SyncDevice),
    Napi(std::os::fd::OwnedFd),
}

impl AsRawFd for TapDev {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            TapDev::Tun(d) => d.as_raw_fd(),
            TapDev::Napi(fd) => fd.as_raw_fd(),
        }
    }
}

impl std::fmt::Debug for TapPlug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapPlug")
            .field("name", &self.name)
            .field("fd", &self.dev.as_raw_fd())
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl TapPlug {
    /// Opens the tap `name`, attaching to an existing one (typically a
    /// persistent tap owned by the current user) or creating it when the
    /// process has `CAP_NET_ADMIN`. The descriptor is non-blocking.
    ///
    /// # Errors
    ///
    /// Errors carry a message meant for the operator: an invalid name
    /// (`InvalidInput`), a missing privilege (`PermissionDenied`, naming the
    /// two ways to fix it), a tap held by another process, a name taken by a
    /// device that is not a tap, a refused MTU.
    pub fn open(name: &str, opts: &TapOptions) -> io::Result<TapPlug> {
        validate_name(name)?;
        if let Some(mtu) = opts.mtu
            && !(MIN_TAP_MTU..=MAX_TAP_MTU).contains(&mtu)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tap {name}: MTU {mtu} is out of range ({MIN_TAP_MTU}..={MAX_TAP_MTU})"),
            ));
        }

        let existed = interface_exists(name);
        if opts.napi_thread {
            return Self::open_napi(name, opts, existed);
        }
        let dev = DeviceBuilder::new()
            .name(name)
            .layer(Layer::L2)
            .packet_information(false)
            .offload(opts.offload)
            .multi_queue(false)
            .inherit_enable_state()
            .build_sync()
            .map_err(|e| explain_open_error(name, existed, e))?;
        dev.set_nonblocking(true)
            .map_err(|e| with_context(e, format!("tap {name}: cannot make non-blocking")))?;

        if let Some(mtu) = opts.mtu {
            let current = dev
                .mtu()
                .map_err(|e| with_context(e, format!("tap {name}: cannot read MTU")))?;
            if current != mtu {
                dev.set_mtu(mtu)
                    .map_err(|e| explain_config_error(name, &format!("set MTU {mtu}"), e))?;
            }
        }

        if existed {
            warn_if_down(name, dev.is_running());
        } else {
            dev.enabled(true)
                .map_err(|e| explain_config_error(name, "bring up", e))?;
        }
        tracing::debug!(tap = name, created = !existed, "tap opened");

        Ok(Self::assemble(
            TapDev::Tun(dev),
            name,
            !existed,
            opts.offload,
        ))
    }

    /// [`open`](Self::open) for a tap with `IFF_NAPI`: the same checks and
    /// state policy, through [`crate::tap_napi`], then the NAPI thread.
    fn open_napi(name: &str, opts: &TapOptions, existed: bool) -> io::Result<TapPlug> {
        use crate::tap_napi;
        let fd = tap_napi::open_napi_tap(name, opts.offload)
            .map_err(|e| explain_open_error(name, existed, e))?;
        if let Some(mtu) = opts.mtu {
            let current = tap_napi::mtu(name)
                .map_err(|e| with_context(e, format!("tap {name}: cannot read MTU")))?;
            if current != mtu {
                tap_napi::set_mtu(name, mtu)
                    .map_err(|e| explain_config_error(name, &format!("set MTU {mtu}"), e))?;
            }
        }
        if existed {
            warn_if_down(name, tap_napi::is_running(name));
        } else {
            tap_napi::set_up(name).map_err(|e| explain_config_error(name, "bring up", e))?;
        }
        match tap_napi::enable_napi_thread(name) {
            Ok(()) => tracing::debug!(
                tap = name,
                "frames written to the tap are delivered by a kernel thread"
            ),
            Err(e) => tracing::warn!(
                tap = name,
                error = %e,
                "cannot give the tap a NAPI thread (needs CAP_NET_ADMIN and sysfs); \
                 it works as an ordinary tap"
            ),
        }
        tracing::debug!(tap = name, created = !existed, "tap opened (IFF_NAPI)");
        Ok(Self::assemble(
            TapDev::Napi(fd),
            name,
            !existed,
            opts.offload,
        ))
    }

    /// The plug for an opened tap: with an io_uring for batched reads and
    /// writes, or with plain system calls (logged once) where that is
    /// refused.
    fn assemble(dev: TapDev, name: &str, created: bool, offload: bool) -> TapPlug {
        let ring = TapRing::new(dev.as_raw_fd(), offload)
            // Worth knowing when throughput is lower than expected, but
            // nothing is wrong: the plain system calls carry every frame.
            .inspect_err(|e| {
                tracing::info!(
                    tap = name,
                    error = %e,
                    "io_uring unavailable: the tap is read and written one frame per system call"
                )
            })
            .ok();
        TapPlug {
            dev,
            name: name.to_owned(),
            description: format!("tap {name}"),
            created,
            offload,
            last_recv: None,
            busy_window: BUSY_WINDOW,
            ring,
        }
    }

    /// Goes back to plain system calls after the ring failed. Dropping the
    /// ring discards the requests it could not submit, which point into
    /// batches the caller is about to reuse.
    fn drop_ring(&mut self, e: &io::Error) {
        tracing::warn!(
            tap = %self.name,
            error = %e,
            "io_uring failed: the tap is read and written one frame per system call from now on"
        );
        self.ring = None;
    }

    /// Whether reads and writes under load are batched through an io_uring.
    pub fn batches_syscalls(&self) -> bool {
        self.ring.is_some()
    }

    /// Adopts a tap that someone else opened, typically in another network
    /// namespace and handed over with `SCM_RIGHTS` (`switchboard ns`
    /// creates the tap inside a new namespace, where the process has
    /// `CAP_NET_ADMIN`, and moves frames for it from outside, where the
    /// switch's sockets are reachable). The descriptor must be a tap opened
    /// with `IFF_TAP | IFF_NO_PI` and without `IFF_VNET_HDR`: frames are
    /// read and written plain, offloads off. It is made non-blocking; the
    /// interface's state is left as its creator set it.
    ///
    /// # Errors
    ///
    /// The descriptor cannot be made non-blocking.
    pub fn from_fd(fd: std::os::fd::OwnedFd, name: &str) -> io::Result<TapPlug> {
        use std::os::fd::IntoRawFd;
        // SAFETY: `fd` is an owned, open descriptor whose ownership moves
        // into the device; the caller's contract (IFF_NO_PI, no vnet
        // header) is the one `from_fd` documents.
        let dev = unsafe { SyncDevice::from_fd(fd.into_raw_fd()) }
            .map_err(|e| with_context(e, format!("tap {name}: cannot adopt descriptor")))?;
        dev.set_nonblocking(true)
            .map_err(|e| with_context(e, format!("tap {name}: cannot make non-blocking")))?;
        Ok(Self::assemble(TapDev::Tun(dev), name, true, false))
    }

    /// The interface name, as given to [`open`](Self::open).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when the tap did not exist before and was created by this plug
    /// (so it was brought up, and it vanishes when the plug is dropped).
    pub fn created(&self) -> bool {
        self.created
    }
}

impl AsRawFd for TapPlug {
    /// The tap's descriptor, for callers that poll it themselves.
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}

impl Plug for TapPlug {
    /// Reads frames into `batch`.
    ///
    /// A tap hands over one frame per `read`, and only a read that fails
    /// with `EAGAIN` tells that its queue is empty. On an idle path (a
    /// ping, a DNS query) that extra read would sit between each frame and
    /// its forwarding, on every hop of every round trip. So when the
    /// previous receive is older than [`BUSY_WINDOW`], one frame is read
    /// and the tap reported drained: the tap is registered level-triggered
    /// (see the `Source` impl), so a frame left behind makes the next poll
    /// return at once. Under load receives come close together and the
    /// queue is read until it is empty or the batch is full, one poll per
    /// batch.
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        let fd = self.dev.as_raw_fd();
        let now = Instant::now();
        let busy = self
            .last_recv
            .is_some_and(|t| now.saturating_duration_since(t) < self.busy_window);
        self.last_recv = Some(now);
        if busy && let Some(ring) = self.ring.as_mut() {
            match ring.recv(batch) {
                Ok(status) => return Ok(status),
                Err(e) if ring.is_broken() => self.drop_ring(&e),
                Err(e) => return Err(with_context(e, format!("tap {}: read failed", self.name))),
            }
        }
        loop {
            let offload = self.offload;
            let Some(slot) = batch.next_slot() else {
                return Ok(RecvStatus::More);
            };
            let mut hdr = [0u8; Offload::HEADER_LEN];
            let result = if offload {
                read_vectored(fd, &mut hdr, slot)
            } else {
                read_plain(fd, slot)
            };
            match result {
                // A tap never returns 0 for a non-empty buffer while the
                // device exists; treat it as end of file.
                Ok(0) => return Ok(RecvStatus::Closed),
                Ok(n) if offload => {
                    // A read shorter than the header cannot happen on a
                    // vnet tap; count it as an empty (too short) frame.
                    let frame_len = n.saturating_sub(Offload::HEADER_LEN);
                    let meta = Offload::parse(&hdr).unwrap_or_default();
                    batch.commit_offloaded(frame_len, meta);
                    if !busy {
                        return Ok(RecvStatus::Drained);
                    }
                }
                Ok(n) => {
                    batch.commit(n);
                    if !busy {
                        return Ok(RecvStatus::Drained);
                    }
                }
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(RecvStatus::Drained),
                    io::ErrorKind::Interrupted => continue,
                    _ if is_gone(&e) => return Ok(RecvStatus::Closed),
                    _ => {
                        return Err(with_context(e, format!("tap {}: read failed", self.name)));
                    }
                },
            }
        }
    }

    fn accepts_offload(&self) -> bool {
        self.offload
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        if which.len() > 1
            && let Some(ring) = self.ring.as_mut()
        {
            let report = ring.send(batch, which);
            if ring.is_broken() {
                self.drop_ring(&io::Error::other("an io_uring submission failed"));
            }
            return report;
        }
        let mut report = TxReport::default();
        // Once a write fails with EIO/EBADFD/ENODEV (the tap was deleted, or
        // is administratively down: the kernel refuses writes with EIO then),
        // the rest of the batch would fail the same way: drop it without
        // further syscalls.
        let mut gone = false;
        for &i in which {
            let i = usize::from(i);
            if gone || i >= batch.len() {
                report.dropped_error += 1;
                continue;
            }
            let frame = batch.frame(i);
            let mut hdr = [0u8; Offload::HEADER_LEN];
            if self.offload {
                batch.offload(i).write(&mut hdr);
            }
            let mut attempts = 0;
            loop {
                attempts += 1;
                let result = if self.offload {
                    write_vectored(self.dev.as_raw_fd(), &hdr, frame)
                } else {
                    write_plain(self.dev.as_raw_fd(), frame)
                };
                match result {
                    Ok(_) => {
                        report.sent += 1;
                        report.sent_bytes += frame.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => report.dropped_full += 1,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted && attempts < 3 => continue,
                    Err(e) => {
                        gone = is_gone(&e);
                        report.dropped_error += 1;
                    }
                }
                break;
            }
        }
        report
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "tap"
    }
}

/// Taps are registered level-triggered, unlike every other mio source:
/// [`recv_batch`](Plug::recv_batch) may leave frames queued on an idle tap
/// to save the read that would only say "empty", and a level-triggered
/// registration reports those frames again at the next poll. Only read
/// interest is registered: a tap's `write` never waits for room, and a
/// level-triggered writable interest would make every poll return at once.
/// The event carries `token` exactly as mio's own registrations do (mio
/// stores the token in the epoll event's data word), so the event loop
/// cannot tell the difference.
impl mio::event::Source for TapPlug {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        _interests: Interest,
    ) -> io::Result<()> {
        epoll_level(
            registry,
            libc::EPOLL_CTL_ADD,
            self.dev.as_raw_fd(),
            Some(token),
        )
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        _interests: Interest,
    ) -> io::Result<()> {
        epoll_level(
            registry,
            libc::EPOLL_CTL_MOD,
            self.dev.as_raw_fd(),
            Some(token),
        )
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        epoll_level(registry, libc::EPOLL_CTL_DEL, self.dev.as_raw_fd(), None)
    }
}

/// Adds, changes or removes `fd` in the epoll set behind `registry`,
/// level-triggered, for reading, with `token` as the event's data.
pub(crate) fn epoll_level(
    registry: &Registry,
    op: libc::c_int,
    fd: RawFd,
    token: Option<Token>,
) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
        u64: token.map_or(0, |t| t.0 as u64),
    };
    // SAFETY: plain syscall on descriptors we hold; `ev` outlives it.
    let r = unsafe { libc::epoll_ctl(registry.as_raw_fd(), op, fd, &mut ev) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Rejects names the kernel would refuse (mirrors `dev_valid_name`), so the
/// operator gets a precise message instead of a bare EINVAL.
/// Tells the operator that an existing tap is down (we leave its state to
/// its owner, so frames will not flow until someone brings it up).
fn warn_if_down(name: &str, running: io::Result<bool>) {
    match running {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            tap = name,
            "tap is down; frames will not flow until it is brought up \
             (ip link set {name} up)"
        ),
        Err(e) => tracing::debug!(tap = name, error = %e, "cannot read tap flags"),
    }
}

/// One `read` of a frame without a virtio-net header.
fn read_plain(fd: RawFd, frame: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `frame` is a live, exclusively borrowed buffer of its length.
    let n = unsafe { libc::read(fd, frame.as_mut_ptr().cast(), frame.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `write` of a frame without a virtio-net header.
fn write_plain(fd: RawFd, frame: &[u8]) -> io::Result<usize> {
    // SAFETY: `frame` is a live buffer of its length; the kernel only reads.
    let n = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `readv`: the virtio-net header into `hdr`, the frame into `frame`.
fn read_vectored(fd: RawFd, hdr: &mut [u8], frame: &mut [u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: frame.as_mut_ptr().cast(),
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point at live, exclusively borrowed buffers of
    // the stated lengths for the duration of the call.
    let n = unsafe { libc::readv(fd, iov.as_ptr(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// One `writev`: the virtio-net header, then the frame.
fn write_vectored(fd: RawFd, hdr: &[u8], frame: &[u8]) -> io::Result<usize> {
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut _,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut _,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point at live buffers of the stated lengths; the
    // kernel only reads from them.
    let n = unsafe { libc::writev(fd, iov.as_ptr(), 2) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn validate_name(name: &str) -> io::Result<()> {
    let invalid = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
    if name.is_empty() {
        return invalid("tap name is empty".to_owned());
    }
    if name.len() > MAX_TAP_NAME {
        return invalid(format!(
            "tap name {name:?} is too long ({} bytes; Linux interface names have at most {MAX_TAP_NAME})",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return invalid(format!("tap name {name:?} is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|&c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return invalid(format!(
            "tap name {name:?} contains {c:?}, which interface names cannot contain"
        ));
    }
    Ok(())
}

/// Whether an interface called `name` exists in this thread's network
/// namespace. Decides whether the tap is ours to bring up.
fn interface_exists(name: &str) -> bool {
    let mut buf = [0u8; MAX_TAP_NAME + 1];
    buf[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `buf` is NUL-terminated (the name was validated to be at most
    // MAX_TAP_NAME bytes with no NUL inside) and outlives the call.
    unsafe { libc::if_nametoindex(buf.as_ptr().cast()) != 0 }
}

/// Errors that mean the tap device itself is gone (deleted, or detached from
/// this descriptor): the port should be removed.
pub(crate) fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::EBADFD | libc::ENODEV | libc::ENXIO | libc::EBADF)
    )
}

/// Prefixes an error with context, keeping its kind.
fn with_context(e: io::Error, context: String) -> io::Error {
    io::Error::new(e.kind(), format!("{context}: {e}"))
}

/// Turns a failed open/TUNSETIFF into an actionable message.
fn explain_open_error(name: &str, existed: bool, e: io::Error) -> io::Error {
    let msg = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            if existed {
                format!(
                    "tap {name}: permission denied: the tap exists but is not owned by this user; \
                     recreate it with `ip tuntap add dev {name} mode tap user $USER`, \
                     or run with CAP_NET_ADMIN"
                )
            } else {
                format!(
                    "tap {name}: permission denied: creating a tap needs CAP_NET_ADMIN; \
                     either have an administrator create it for you \
                     (`ip tuntap add dev {name} mode tap user $USER`) or run with CAP_NET_ADMIN"
                )
            }
        }
        Some(libc::EBUSY) => format!(
            "tap {name} is already in use by another process (a single-queue tap has one reader)"
        ),
        Some(libc::EINVAL) if existed => format!(
            "{name} exists but is not a tap, or is a tap with other flags \
             (multi_queue, tun mode); choose another name"
        ),
        Some(libc::ENOENT | libc::ENXIO | libc::ENODEV) => format!(
            "tap {name}: /dev/net/tun is not available (is the tun module loaded? \
             in a container, pass --device /dev/net/tun)"
        ),
        _ => format!("tap {name}: cannot open: {e}"),
    };
    io::Error::new(e.kind(), msg)
}

/// Turns a failed interface configuration step into an actionable message.
fn explain_config_error(name: &str, what: &str, e: io::Error) -> io::Error {
    let msg = match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => format!(
            "tap {name}: cannot {what}: permission denied (needs CAP_NET_ADMIN; \
             or configure the tap beforehand with `ip link set {name} ...`)"
        ),
        Some(libc::EINVAL) => format!("tap {name}: cannot {what}: the kernel refused the value"),
        _ => format!("tap {name}: cannot {what}: {e}"),
    };
    io::Error::new(e.kind(), msg)
}

#[cfg(test)]
mod tests {
    //! These tests need root and /dev/net/tun. Each runs on its own thread
    //! inside a fresh network namespace (`unshare(CLONE_NEWNET)` affects only
    //! the calling thread), so taps never collide and vanish with the thread;
    //! `ip` commands spawned from that thread inherit its namespace.

    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::Command;
    use std::time::{Duration, Instant};

    const TAP: &str = "sbtap0";
    const ETH_P_TEST: u16 = 0x88b5; // IEEE local experimental EtherType
    const OUR_MAC: [u8; 6] = [0x02, 0x5b, 0, 0, 0, 0x01];

    /// Runs `f` on a new thread inside a fresh network namespace, or prints
    /// why it cannot and returns (the test then passes as skipped).
    fn in_fresh_netns<F: FnOnce() + Send + 'static>(test: &str, f: F) {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP {test}: not root");
            return;
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("SKIP {test}: /dev/net/tun is missing");
            return;
        }
        let handle = std::thread::spawn(move || {
            // SAFETY: unshare only changes this thread's namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // No IPv6 autoconfiguration chatter on the test taps.
            for knob in ["all", "default"] {
                let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1");
            }
            f();
            Ok(())
        });
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("SKIP {test}: cannot create a network namespace: {e}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn ip_link_show(name: &str) -> String {
        let out = Command::new("ip")
            .args(["-o", "link", "show", name])
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// An AF_PACKET socket bound to one interface: the test's view of the
    /// host side of the tap.
    struct PacketSocket(OwnedFd);

    impl PacketSocket {
        fn bind(ifname: &str) -> PacketSocket {
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call; the result is checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    proto.into(),
                )
            };
            assert!(fd >= 0, "AF_PACKET socket: {}", io::Error::last_os_error());
            // SAFETY: fd is a fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let cname = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: cname is NUL-terminated.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            assert!(ifindex != 0, "no interface {ifname}");
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: sll is a valid sockaddr_ll of the given length.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind AF_PACKET: {}", io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            // SAFETY: tv is a valid timeval of the given length.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            assert_eq!(rc, 0);
            PacketSocket(fd)
        }

        fn send(&self, frame: &[u8]) {
            // SAFETY: frame is a valid buffer of its length.
            let n =
                unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            assert_eq!(
                n,
                frame.len() as isize,
                "AF_PACKET send: {}",
                io::Error::last_os_error()
            );
        }

        /// The first frame carrying `marker` seen within `timeout`.
        fn recv_marked(&self, marker: &[u8], timeout: Duration) -> Option<Vec<u8>> {
            let deadline = Instant::now() + timeout;
            let mut buf = vec![0u8; 65536];
            for _ in 0..10_000 {
                if Instant::now() >= deadline {
                    break;
                }
                // SAFETY: buf is a valid writable buffer of its length.
                let n = unsafe {
                    libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                };
                if n > 0 {
                    let frame = &buf[..n as usize];
                    if frame.windows(marker.len()).any(|w| w == marker) {
                        return Some(frame.to_vec());
                    }
                }
            }
            None
        }
    }

    /// A broadcast test frame: EtherType 0x88b5, `marker` and `index` in the
    /// payload, padded to `len` bytes.
    fn test_frame(marker: &[u8; 8], index: u16, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len.max(60)];
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&OUR_MAC);
        f[12..14].copy_from_slice(&ETH_P_TEST.to_be_bytes());
        f[14..22].copy_from_slice(marker);
        f[22..24].copy_from_slice(&index.to_be_bytes());
        f
    }

    fn marker(seed: u8) -> [u8; 8] {
        let pid = std::process::id().to_be_bytes();
        [0x5b, seed, pid[0], pid[1], pid[2], pid[3], 0xa5, 0x5a]
    }

    /// Waits (bounded) until the plug's descriptor is readable, via mio, so
    /// the `mio::event::Source` implementation is exercised too.
    fn wait_readable(plug: &mut TapPlug, timeout: Duration) -> bool {
        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(plug, Token(7), Interest::READABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(timeout)).unwrap();
        let ready = events.iter().any(|e| e.token() == Token(7));
        poll.registry().deregister(plug).unwrap();
        ready
    }

    /// Receives until a frame carrying `marker` arrives (bounded).
    fn recv_marked(plug: &mut TapPlug, marker: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut batch = FrameBatch::new();
        for _ in 0..1000 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            wait_readable(plug, left);
            batch.clear();
            let status = plug.recv_batch(&mut batch).unwrap();
            for i in 0..batch.len() {
                let f = batch.frame(i);
                if f.windows(marker.len()).any(|w| w == marker) {
                    return Some(f.to_vec());
                }
            }
            assert_ne!(status, RecvStatus::Closed, "tap closed unexpectedly");
        }
        None
    }

    #[test]
    fn rejects_bad_names_without_privileges() {
        let e = TapPlug::open("a-very-long-tap-name", &TapOptions::default()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("too long"), "{e}");
        for bad in ["", "a/b", "a b", "x:1", ".."] {
            let e = TapPlug::open(bad, &TapOptions::default()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}: {e}");
        }
        let e = TapPlug::open(
            "sbtok",
            &TapOptions {
                mtu: Some(65530),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("MTU 65530"), "{e}");
    }

    #[test]
    fn created_tap_is_up_and_reports_kind() {
        in_fresh_netns("created_tap_is_up_and_reports_kind", || {
            let plug = TapPlug::open(TAP, &TapOptions::default()).unwrap();
            assert!(plug.created());
            assert_eq!(plug.kind(), "tap");
            assert_eq!(plug.description(), "tap sbtap0");
            assert_eq!(plug.name(), TAP);
            let link = ip_link_show(TAP);
            assert!(link.contains("<BROADCAST,MULTICAST,UP,LOWER_UP>"), "{link}");
            drop(plug);
            assert_eq!(
                ip_link_show(TAP),
                "",
                "a tap we created vanishes with the plug"
            );
        });
    }

    #[test]
    fn existing_tap_is_attached_and_left_down() {
        in_fresh_netns("existing_tap_is_attached_and_left_down", || {
            ip(&["tuntap", "add", "dev", TAP, "mode", "tap"]);
            let plug = TapPlug::open(TAP, &TapOptions::default()).unwrap();
            assert!(!plug.created());
            let link = ip_link_show(TAP);
            assert!(
                link.contains("state DOWN") && !link.contains(",UP"),
                "{link}"
            );
            drop(plug);
            assert!(ip_link_show(TAP).contains(TAP), "a persistent tap stays");
        });
    }

    #[test]
    fn frames_written_by_the_plug_reach_the_interface() {
        in_fresh_netns("frames_written_by_the_plug_reach_the_interface", || {
            let mut plug = TapPlug::open(TAP, &TapOptions::default()).unwrap();
            let sock = PacketSocket::bind(TAP);
            let m = marker(1);
            let mut batch = FrameBatch::new();
            batch.push(&test_frame(&m, 0, 60));
            batch.push(&test_frame(&m, 1, 1514));
            // Index 9 is out of range: counted, not a panic.
            let report = plug.send_batch(&batch, &[0, 1, 9]);
            assert_eq!(report.sent, 2);
            assert_eq!(report.sent_bytes, 60 + 1514);
            assert_eq!(report.dropped_error, 1);
            let mut want = m.to_vec();
            want.extend_from_slice(&1u16.to_be_bytes());
            let got = sock
                .recv_marked(&want, Duration::from_secs(3))
                .expect("frame 1 seen on the interface");
            assert_eq!(got, test_frame(&m, 1, 1514));
        });
    }

    #[test]
    fn a_napi_tap_carries_frames_both_ways_and_never_touches_another_namespace() {
        in_fresh_netns(
            "a_napi_tap_carries_frames_both_ways_and_never_touches_another_namespace",
            || {
                let opts = TapOptions {
                    napi_thread: true,
                    mtu: Some(9000),
                    ..TapOptions::default()
                };
                let mut plug = TapPlug::open(TAP, &opts).unwrap();
                assert!(plug.created());
                assert!(ip_link_show(TAP).contains("mtu 9000"));
                assert!(
                    ip_link_show(TAP).contains("UP"),
                    "a created tap is brought up"
                );
                // This thread's namespace has no /sys of its own: the sysfs
                // entry (if any) is another namespace's device, and must be
                // refused rather than written.
                let e = crate::tap_napi::enable_napi_thread(TAP).unwrap_err();
                assert!(matches!(e.kind(), io::ErrorKind::NotFound), "{e}");

                let sock = PacketSocket::bind(TAP);
                let m = marker(7);
                let mut batch = FrameBatch::new();
                batch.push(&test_frame(&m, 0, 1514));
                assert_eq!(plug.send_batch(&batch, &[0]).sent, 1);
                let got = sock
                    .recv_marked(&m, Duration::from_secs(3))
                    .expect("the frame written reached the interface");
                assert_eq!(got, test_frame(&m, 0, 1514));

                let back = marker(8);
                sock.send(&test_frame(&back, 1, 200));
                plug.busy_window = Duration::from_secs(3600);
                let got = recv_marked(&mut plug, &back, Duration::from_secs(3))
                    .expect("the frame sent on the interface was read");
                assert_eq!(got, test_frame(&back, 1, 200));
            },
        );
    }

    /// Whether this kernel lets us use io_uring at all; where it does, a
    /// tap must batch its system calls through one.
    fn io_uring_allowed() -> bool {
        io_uring::IoUring::new(2).is_ok()
    }

    /// Opens the test tap with `opts`, with or without its io_uring, and
    /// checks that the ring is there where the kernel allows one.
    fn open_tap(opts: &TapOptions, ring: bool) -> TapPlug {
        let mut plug = TapPlug::open(TAP, opts).unwrap();
        if io_uring_allowed() {
            assert!(plug.batches_syscalls(), "io_uring is allowed but unused");
        } else {
            eprintln!("io_uring is disabled here: only plain system calls are tested");
        }
        if !ring {
            plug.ring = None;
        }
        plug
    }

    #[test]
    fn frames_sent_on_the_interface_are_received_in_batches() {
        in_fresh_netns(
            "frames_sent_on_the_interface_are_received_in_batches",
            || receives_in_batches(&TapOptions::default(), true),
        );
    }

    #[test]
    fn without_io_uring_frames_are_received_in_batches_too() {
        in_fresh_netns(
            "without_io_uring_frames_are_received_in_batches_too",
            || receives_in_batches(&TapOptions::default(), false),
        );
    }

    #[test]
    fn an_offload_tap_receives_plain_frames_in_batches() {
        let opts = TapOptions {
            offload: true,
            ..TapOptions::default()
        };
        in_fresh_netns(
            "an_offload_tap_receives_plain_frames_in_batches",
            move || receives_in_batches(&opts, true),
        );
    }

    /// 40 frames queued on the interface come out of the tap in order,
    /// over two batches, the first full.
    fn receives_in_batches(opts: &TapOptions, ring: bool) {
        let mut plug = open_tap(opts, ring);
        // always under load: every receive reads until empty
        plug.busy_window = Duration::from_secs(3600);
        let sock = PacketSocket::bind(TAP);
        let m = marker(2);
        const N: u16 = 40;
        for i in 0..N {
            sock.send(&test_frame(&m, i, 100));
        }
        assert!(
            wait_readable(&mut plug, Duration::from_secs(3)),
            "tap never became readable"
        );
        std::thread::sleep(Duration::from_millis(100));
        let mut batch = FrameBatch::new();
        let mut seen = Vec::new();
        let mut saw_more = false;
        for _ in 0..20 {
            batch.clear();
            let status = plug.recv_batch(&mut batch).unwrap();
            match status {
                RecvStatus::More => {
                    assert!(batch.is_full());
                    saw_more = true;
                }
                RecvStatus::Drained => assert!(!batch.is_full()),
                RecvStatus::Closed => panic!("tap closed"),
            }
            for i in 0..batch.len() {
                let f = batch.frame(i);
                if f.len() == 100 && f[14..22] == m {
                    seen.push(u16::from_be_bytes([f[22], f[23]]));
                }
            }
            if seen.len() == usize::from(N) && status == RecvStatus::Drained {
                break;
            }
            if status == RecvStatus::Drained {
                wait_readable(&mut plug, Duration::from_millis(200));
            }
        }
        assert!(saw_more, "40 queued frames should overflow one batch of 32");
        assert_eq!(seen, (0..N).collect::<Vec<_>>(), "all frames, in order");
        batch.clear();
        assert_eq!(plug.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
    }

    #[test]
    fn a_tap_whose_ring_fails_goes_on_with_plain_system_calls() {
        in_fresh_netns(
            "a_tap_whose_ring_fails_goes_on_with_plain_system_calls",
            || {
                let mut plug = open_tap(&TapOptions::default(), true);
                let Some(ring) = plug.ring.as_mut() else {
                    return;
                };
                ring.break_for_test();
                let sock = PacketSocket::bind(TAP);
                let m = marker(21);
                let mut batch = FrameBatch::new();
                for i in 0..4u16 {
                    batch.push(&test_frame(&m, i, 100));
                }
                let all = &crate::batch::ALL_FRAMES[..4];
                let report = plug.send_batch(&batch, all);
                assert_eq!((report.sent, report.dropped_error), (0, 4), "{report:?}");
                assert!(!plug.batches_syscalls(), "a broken ring is dropped");
                let report = plug.send_batch(&batch, all);
                assert_eq!(report.sent, 4, "{report:?}");
                for i in 0..4u16 {
                    let mut want = m.to_vec();
                    want.extend_from_slice(&i.to_be_bytes());
                    assert!(
                        sock.recv_marked(&want, Duration::from_secs(3)).is_some(),
                        "frame {i} sent after the fallback"
                    );
                }
            },
        );
    }

    #[test]
    fn probing_a_tap_for_io_uring_consumes_no_frame() {
        in_fresh_netns("probing_a_tap_for_io_uring_consumes_no_frame", || {
            let mut plug = open_tap(&TapOptions::default(), false);
            let sock = PacketSocket::bind(TAP);
            let m = marker(22);
            for i in 0..3u16 {
                sock.send(&test_frame(&m, i, 100));
            }
            assert!(wait_readable(&mut plug, Duration::from_secs(3)));
            std::thread::sleep(Duration::from_millis(50));
            if let Err(e) = TapRing::new(plug.as_raw_fd(), false) {
                eprintln!("no io_uring here ({e}): nothing to probe");
                return;
            }
            // under load: read until empty
            plug.busy_window = Duration::from_secs(3600);
            plug.last_recv = Some(Instant::now());
            let mut batch = FrameBatch::new();
            let status = plug.recv_batch(&mut batch).unwrap();
            assert_eq!(status, RecvStatus::Drained);
            let got: Vec<u16> = (0..batch.len())
                .map(|i| batch.frame(i))
                .filter(|f| f[14..22] == m)
                .map(|f| u16::from_be_bytes([f[22], f[23]]))
                .collect();
            assert_eq!(got, [0, 1, 2], "the probe left every queued frame");
        });
    }

    #[test]
    fn a_full_batch_written_at_once_reaches_the_interface_in_order() {
        in_fresh_netns(
            "a_full_batch_written_at_once_reaches_the_interface_in_order",
            || {
                sends_a_full_batch(&TapOptions::default(), true);
                sends_a_full_batch(&TapOptions::default(), false);
                let offload = TapOptions {
                    offload: true,
                    ..TapOptions::default()
                };
                sends_a_full_batch(&offload, true);
                sends_a_full_batch(&offload, false);
            },
        );
    }

    /// One `send_batch` of 32 frames of different sizes: every frame is
    /// reported sent, with its bytes, and the interface sees each of them,
    /// whole and in order.
    fn sends_a_full_batch(opts: &TapOptions, ring: bool) {
        let mut plug = open_tap(opts, ring);
        let sock = PacketSocket::bind(TAP);
        let m = marker(if ring { 11 } else { 12 } + if opts.offload { 2 } else { 0 });
        let mut batch = FrameBatch::new();
        let mut frames = Vec::new();
        for i in 0..32u16 {
            let f = test_frame(&m, i, 60 + usize::from(i) * 45);
            assert!(batch.push(&f));
            frames.push(f);
        }
        let report = plug.send_batch(&batch, &crate::batch::ALL_FRAMES);
        assert_eq!(report.sent, 32, "{report:?}");
        assert_eq!(
            report.sent_bytes,
            frames.iter().map(Vec::len).sum::<usize>()
        );
        for (i, f) in frames.iter().enumerate() {
            let mut want = m.to_vec();
            want.extend_from_slice(&(i as u16).to_be_bytes());
            let got = sock
                .recv_marked(&want, Duration::from_secs(3))
                .unwrap_or_else(|| panic!("frame {i} (ring {ring}) not seen in order"));
            assert_eq!(&got, f, "frame {i} arrived whole");
        }
        drop(sock);
        drop(plug);
        // The created tap goes with its plug, so the next case can reuse
        // the name. Not always at once: a child that another test thread
        // forks holds a copy of our descriptor until its exec.
        let deadline = Instant::now() + Duration::from_secs(3);
        while interface_exists(TAP) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!interface_exists(TAP), "tap outlived its plug");
    }

    #[test]
    fn an_idle_tap_is_read_one_frame_per_poll_without_losing_any() {
        in_fresh_netns(
            "an_idle_tap_is_read_one_frame_per_poll_without_losing_any",
            || {
                let mut plug = TapPlug::open(TAP, &TapOptions::default()).unwrap();
                // never under load: one frame per receive
                plug.busy_window = Duration::ZERO;
                let mut poll = mio::Poll::new().unwrap();
                poll.registry()
                    .register(&mut plug, Token(9), Interest::READABLE | Interest::WRITABLE)
                    .unwrap();
                let mut events = mio::Events::with_capacity(4);
                let mut ready = |poll: &mut mio::Poll, t: Duration| {
                    poll.poll(&mut events, Some(t)).unwrap();
                    let mine: Vec<_> = events.iter().filter(|e| e.token() == Token(9)).collect();
                    assert!(mine.iter().all(|e| e.is_readable()), "only read interest");
                    !mine.is_empty()
                };
                // nothing queued: no event at all, even though the tap is
                // always writable (a level-triggered writable interest
                // would make every poll return at once)
                let _ = ready(&mut poll, Duration::ZERO);
                plug.recv_batch(&mut FrameBatch::new()).unwrap();
                assert!(!ready(&mut poll, Duration::from_millis(50)));

                let sock = PacketSocket::bind(TAP);
                let m = marker(6);
                for i in 0..3 {
                    sock.send(&test_frame(&m, i, 100));
                }
                let mut seen = Vec::new();
                let mut batch = FrameBatch::new();
                for _ in 0..50 {
                    if !ready(&mut poll, Duration::from_secs(2)) {
                        break;
                    }
                    batch.clear();
                    assert_eq!(plug.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
                    assert!(batch.len() <= 1, "an idle tap is read one frame at a time");
                    for i in 0..batch.len() {
                        let f = batch.frame(i);
                        if f.len() == 100 && f[14..22] == m {
                            seen.push(u16::from_be_bytes([f[22], f[23]]));
                        }
                    }
                    if seen.len() == 3 {
                        break;
                    }
                }
                assert_eq!(seen, vec![0, 1, 2], "frames left queued are reported again");
                assert!(
                    !ready(&mut poll, Duration::from_millis(50)),
                    "a drained tap is not reported"
                );
                poll.registry().deregister(&mut plug).unwrap();
            },
        );
    }

    #[test]
    fn kernel_answers_arp_sent_through_the_plug() {
        in_fresh_netns("kernel_answers_arp_sent_through_the_plug", || {
            let mut plug = TapPlug::open(TAP, &TapOptions::default()).unwrap();
            ip(&["addr", "add", "10.99.0.1/24", "dev", TAP]);
            let mut req = vec![0u8; 60];
            req[..6].copy_from_slice(&[0xff; 6]);
            req[6..12].copy_from_slice(&OUR_MAC);
            req[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
            req[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
            req[22..28].copy_from_slice(&OUR_MAC);
            req[28..32].copy_from_slice(&[10, 99, 0, 2]);
            req[38..42].copy_from_slice(&[10, 99, 0, 1]);
            let mut batch = FrameBatch::new();
            batch.push(&req);
            assert_eq!(plug.send_batch(&batch, &[0]).sent, 1);
            // An ARP reply: to us, opcode 2, sender 10.99.0.1, target 10.99.0.2.
            let want = [0, 1, 8, 0, 6, 4, 0, 2];
            let deadline = Instant::now() + Duration::from_secs(3);
            let mut reply = None;
            while reply.is_none() && Instant::now() < deadline {
                let f = recv_marked(&mut plug, &want, Duration::from_millis(500));
                reply = f.filter(|f| f[12..14] == [0x08, 0x06] && f[..6] == OUR_MAC);
            }
            let reply = reply.expect("the kernel's ARP reply came back through the plug");
            assert_eq!(reply[28..32], [10, 99, 0, 1]);
            assert_eq!(reply[32..38], OUR_MAC);
            assert_eq!(reply[38..42], [10, 99, 0, 2]);
        });
    }

    #[test]
    fn jumbo_mtu_carries_9000_byte_payloads() {
        in_fresh_netns("jumbo_mtu_carries_9000_byte_payloads", || {
            let mut plug = TapPlug::open(
                TAP,
                &TapOptions {
                    mtu: Some(9000),
                    ..Default::default()
                },
            )
            .unwrap();
            assert!(
                ip_link_show(TAP).contains("mtu 9000"),
                "{}",
                ip_link_show(TAP)
            );
            let sock = PacketSocket::bind(TAP);
            let m = marker(3);
            sock.send(&test_frame(&m, 7, 9014));
            let got = recv_marked(&mut plug, &m, Duration::from_secs(3)).expect("jumbo frame");
            assert_eq!(got.len(), 9014);
            assert_eq!(got, test_frame(&m, 7, 9014));
        });
    }

    #[test]
    fn deleted_tap_reports_closed() {
        in_fresh_netns("deleted_tap_reports_closed", || {
            let mut plug = TapPlug::open(TAP, &TapOptions::default()).unwrap();
            let mut batch = FrameBatch::new();
            assert_eq!(plug.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
            ip(&["link", "del", TAP]);
            assert!(
                wait_readable(&mut plug, Duration::from_secs(3)),
                "no event after deletion"
            );
            assert_eq!(plug.recv_batch(&mut batch).unwrap(), RecvStatus::Closed);
            batch.push(&test_frame(&marker(4), 0, 60));
            let report = plug.send_batch(&batch, &[0, 0]);
            assert_eq!(report.sent, 0);
            assert_eq!(report.dropped_error, 2);
        });
    }

    /// Drops CAP_NET_ADMIN from this thread's effective set (capabilities
    /// are per thread on Linux).
    fn drop_net_admin() {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        // SAFETY: capget/capset with a v3 header and two data structs.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()),
                0
            );
            data[0].effective &= !(1 << 12); // CAP_NET_ADMIN
            assert_eq!(libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()), 0);
        }
    }

    #[test]
    fn permission_errors_say_how_to_fix_them() {
        in_fresh_netns("permission_errors_say_how_to_fix_them", || {
            ip(&[
                "tuntap", "add", "dev", "sbtother", "mode", "tap", "user", "4242",
            ]);
            drop_net_admin();
            let e = TapPlug::open(TAP, &TapOptions::default()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains("CAP_NET_ADMIN") && msg.contains("ip tuntap add"),
                "{msg}"
            );
            let e = TapPlug::open("sbtother", &TapOptions::default()).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains("not owned by this user") && msg.contains("CAP_NET_ADMIN"),
                "{msg}"
            );
        });
    }
}
