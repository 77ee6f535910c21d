//! VXLAN (RFC 7348): a segment carried over UDP, as one VNI, to other
//! VTEPs: Linux `ip link add ... type vxlan` devices, Open vSwitch, other
//! switchboards.
//!
//! Why a plug of its own rather than a [`UdpCable`](crate::dgram_peer::UdpCable)
//! with a header: a VXLAN port is one switch port with *many* far ends. The
//! frames a segment hands it go to one remote VTEP when the inner
//! destination MAC has been seen behind that VTEP, and to every configured
//! remote (head-end replication) or a multicast group otherwise. So the plug
//! keeps a small table of its own, inner MAC -> outer address, learned from
//! what arrives, the way the kernel's vxlan FDB does.
//!
//! # Wire format and what we are strict about
//!
//! Every datagram is an 8-byte header and then the inner Ethernet frame
//! (no FCS): `flags(1) reserved(3) VNI(3) reserved(1)`. We always send flags
//! exactly `0x08` (the I bit: "the VNI is valid") and zero reserved fields,
//! because Linux drops anything else (it diverges from the RFC there). On
//! receive we follow the RFC: the I bit must be set and the VNI must be
//! ours, reserved bits are ignored. A datagram that fails either check is
//! dropped, counted in [`VxlanCounters`], and reported in the log (at most
//! every ten seconds), and never reaches the segment.
//!
//! # Ports and addresses
//!
//! The socket is bound to the configured local address, by default on the
//! IANA port 4789 ([`IANA_PORT`]); Linux's own default is 8472
//! ([`LINUX_DEFAULT_PORT`]), so either side must say which. We send every
//! datagram from that one bound port. RFC 7348 recommends a source port
//! hashed from the inner flow, for ECMP in the underlay; that would need a
//! socket per source port, and receivers (Linux included) accept any
//! source port, so we do not. Learned remotes are sent to on the
//! configured remote port, not on the source port they sent from: a Linux
//! VTEP sends from a hashed ephemeral port but listens only on its
//! `dstport`, so the source port says nothing about where to reply. The
//! source port is still recorded, for diagnostics.
//!
//! The UDP checksum is whatever the socket does: a normal UDP socket always
//! fills it in, which RFC 7348 allows ("SHOULD be zero", receivers accept
//! both) and which IPv6 underlays would need anyway. Only IPv4 underlays
//! are supported. The 50 bytes of outer headers are not fragmented away by
//! us: give the segment an MTU of 1450 on a 1500-byte underlay (as Linux
//! does for its vxlan devices), or give the underlay jumbo frames.
//!
//! # Multicast
//!
//! With a group, the socket joins it (`IP_ADD_MEMBERSHIP`, on the local
//! address's interface), sends floods to it with TTL 1 by default, and has
//! multicast loopback off, so it never hears (and learns from) its own
//! floods. A socket bound to a unicast address receives no multicast, so
//! with a group the socket is bound to the wildcard address on the local
//! port, and the local address picks the interface instead.
//!
//! # Not done
//!
//! VLANs are not implemented in the switch yet, so a VNI maps to a whole
//! segment; mapping one VLAN of a segment to a VNI waits for them. Inner
//! 802.1Q tags pass through untouched.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::ptr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use crate::batch::{BATCH_CAPACITY, MAX_FRAME_SLOT};
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

/// The IANA-assigned VXLAN port (RFC 7348 section 5), our default.
pub const IANA_PORT: u16 = 4789;

/// The port a Linux vxlan device uses when created without `dstport`, kept
/// by the kernel "for compatibility with early adopters".
pub const LINUX_DEFAULT_PORT: u16 = 8472;

/// Bytes of the VXLAN header in front of every inner frame.
pub const HEADER_LEN: usize = 8;

/// The I flag: the VNI field is valid. The only flag RFC 7348 defines, and
/// the only value of the flags byte Linux accepts.
pub const FLAG_VNI: u8 = 0x08;

/// Default bound on learned remotes (inner MACs), as the task of a VTEP in
/// a lab: far more than the stations a lab segment has.
pub const DEFAULT_LEARN_CAPACITY: usize = 4096;

/// Default age after which a learned remote is forgotten: Linux's vxlan
/// `ageing` default, and the switch's own MAC aging.
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);

/// Default multicast TTL: floods stay on the local link unless the
/// configuration says otherwise.
pub const DEFAULT_MULTICAST_TTL: u32 = 1;

/// How often expired learned remotes are swept out of the table. Lookups
/// ignore expired entries anyway; the sweep only frees their room.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// How often, at most, dropped datagrams are reported in the log.
const DROP_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Receive syscalls one call may spend on datagrams it throws away before
/// yielding to the event loop.
const DISCARD_ROUNDS: usize = 8;

/// Datagrams one `sendmmsg` carries at most: a full batch replicated to two
/// remotes. Larger floods take more calls.
const SEND_MSGS: usize = 2 * BATCH_CAPACITY;

/// Socket buffer size asked for, both directions, so bursts queue rather
/// than drop. The kernel caps it at `net.core.{r,w}mem_max`.
const SOCKET_BUFFER: usize = 1 << 21;

/// A VXLAN Network Identifier: 24 bits, so a type that cannot hold more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    /// The largest VNI.
    pub const MAX: u32 = 0x00FF_FFFF;

    /// The VNI `value`, or `None` if it does not fit in 24 bits.
    pub fn new(value: u32) -> Option<Vni> {
        (value <= Vni::MAX).then_some(Vni(value))
    }

    /// Its numeric value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A zero-copy view of a VXLAN header at the start of a buffer (and the
/// inner frame after it), in the style of `smoltcp::wire`: the checks run
/// once in [`new_checked`](Self::new_checked), so the accessors cannot go
/// out of bounds.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer`, or `None` if it is shorter than a header.
    pub fn new_checked(buffer: T) -> Option<Header<T>> {
        (buffer.as_ref().len() >= HEADER_LEN).then_some(Header { buffer })
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Whether the I flag is set: without it the VNI means nothing and the
    /// datagram is refused.
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_VNI != 0
    }

    /// The VNI field.
    pub fn vni(&self) -> Vni {
        let b = self.buffer.as_ref();
        Vni(u32::from_be_bytes([0, b[4], b[5], b[6]]))
    }

    /// Whether every bit RFC 7348 reserves is zero (what we send; what
    /// Linux insists on). Receivers ignore them, so this is diagnostic only.
    pub fn reserved_clear(&self) -> bool {
        let b = self.buffer.as_ref();
        b[0] & !FLAG_VNI == 0 && b[1..4] == [0; 3] && b[7] == 0
    }

    /// The bytes after the header: the inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Writes the header for `vni` exactly as Linux wants it: flags `0x08`,
    /// reserved fields zero.
    pub fn emit(&mut self, vni: Vni) {
        let b = self.buffer.as_mut();
        let v = vni.0.to_be_bytes();
        b[..HEADER_LEN].copy_from_slice(&[FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]);
    }
}

/// Why a received datagram was refused before reaching the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxRefusal {
    /// Shorter than a VXLAN header.
    Short,
    /// The I flag is clear.
    NoVniFlag,
    /// Another VNI than the port's.
    WrongVni(Vni),
}

/// Checks a received datagram's header against the port's VNI. Reserved
/// bits are ignored, as RFC 7348 says receivers must.
pub fn check_header(datagram: &[u8], ours: Vni) -> Result<(), RxRefusal> {
    let h = Header::new_checked(datagram).ok_or(RxRefusal::Short)?;
    if !h.vni_valid() {
        return Err(RxRefusal::NoVniFlag);
    }
    if h.vni() != ours {
        return Err(RxRefusal::WrongVni(h.vni()));
    }
    Ok(())
}

/// Where a learned inner MAC lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Learned {
    /// The outer source address of the last datagram it was seen in.
    pub ip: Ipv4Addr,
    /// The outer source port of that datagram (diagnostic: replies go to
    /// the configured port).
    pub source_port: u16,
    /// When it was last seen.
    pub seen: Instant,
}

/// What [`RemoteTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// A MAC not known before (or known but expired).
    New,
    /// Seen again behind the same remote.
    Refreshed,
    /// Now behind another remote (a VM migrated, or a MAC reused).
    Moved,
    /// Not learnable: a group or all-zero source MAC.
    Ignored,
    /// The table is full of live entries; not learned.
    Full,
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To one remote: the inner destination was learned there.
    Unicast(SocketAddrV4),
    /// To every flood target: broadcast, multicast or unknown unicast.
    Flood,
}

/// The remotes of one VXLAN port: the static list and multicast group that
/// get floods, and the learned inner MAC -> remote map that lets unicast go
/// to one remote only.
///
/// Bounded: at most `capacity` learned entries; room is made by aging, and
/// a full table of live entries refuses new MACs (their frames are then
/// flooded, which is still correct). Memory is reserved up front, so
/// learning never allocates.
#[derive(Debug)]
pub struct RemoteTable {
    flood: Vec<SocketAddrV4>,
    port: u16,
    learned: HashMap<[u8; 6], Learned>,
    capacity: usize,
    aging: Duration,
    next_sweep: Option<Instant>,
}

impl RemoteTable {
    /// A table flooding to `statics` (then `group`, if any), sending learned
    /// unicast to port `port`, learning at most `capacity` MACs for `aging`.
    /// Duplicate static remotes are kept once, so a flood never sends the
    /// same frame twice to one VTEP.
    pub fn new(
        statics: &[SocketAddrV4],
        group: Option<SocketAddrV4>,
        port: u16,
        capacity: usize,
        aging: Duration,
    ) -> RemoteTable {
        let mut flood: Vec<SocketAddrV4> = Vec::with_capacity(statics.len() + 1);
        for s in statics.iter().copied().chain(group) {
            if !flood.contains(&s) {
                flood.push(s);
            }
        }
        RemoteTable {
            flood,
            port,
            learned: HashMap::with_capacity(capacity),
            capacity,
            aging,
            next_sweep: None,
        }
    }

    /// Records that `mac` was the inner source of a datagram from `from`.
    pub fn learn(&mut self, mac: [u8; 6], from: SocketAddrV4, now: Instant) -> Learn {
        if mac[0] & 1 != 0 || mac == [0; 6] {
            return Learn::Ignored;
        }
        let fresh = Learned {
            ip: *from.ip(),
            source_port: from.port(),
            seen: now,
        };
        let aging = self.aging;
        if let Some(e) = self.learned.get_mut(&mac) {
            let outcome = if now.saturating_duration_since(e.seen) >= aging {
                Learn::New
            } else if e.ip == fresh.ip {
                Learn::Refreshed
            } else {
                Learn::Moved
            };
            *e = fresh;
            return outcome;
        }
        if self.learned.len() >= self.capacity {
            self.expire(now);
            if self.learned.len() >= self.capacity {
                return Learn::Full;
            }
        }
        self.learned.insert(mac, fresh);
        Learn::New
    }

    /// Where a frame for inner destination `dst` goes.
    pub fn lookup(&self, dst: [u8; 6], now: Instant) -> Delivery {
        if dst[0] & 1 != 0 {
            return Delivery::Flood;
        }
        match self.learned.get(&dst) {
            Some(e) if now.saturating_duration_since(e.seen) < self.aging => {
                Delivery::Unicast(SocketAddrV4::new(e.ip, self.port))
            }
            _ => Delivery::Flood,
        }
    }

    /// Where floods go: the static remotes in configured order, then the
    /// group.
    pub fn flood_targets(&self) -> &[SocketAddrV4] {
        &self.flood
    }

    /// The live entry for `mac`, if any.
    pub fn get(&self, mac: [u8; 6], now: Instant) -> Option<Learned> {
        self.learned
            .get(&mac)
            .filter(|e| now.saturating_duration_since(e.seen) < self.aging)
            .copied()
    }

    /// Forgets entries not seen for the aging time; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.learned.len();
        let aging = self.aging;
        self.learned
            .retain(|_, e| now.saturating_duration_since(e.seen) < aging);
        self.next_sweep = Some(now + SWEEP_INTERVAL);
        before - self.learned.len()
    }

    /// Runs [`expire`](Self::expire) when a sweep is due; cheap otherwise.
    pub fn maybe_expire(&mut self, now: Instant) {
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.expire(now);
        }
    }

    /// Learned entries, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.learned.len()
    }

    /// True when nothing is learned.
    pub fn is_empty(&self) -> bool {
        self.learned.is_empty()
    }
}

/// How one VXLAN port is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The VNI this port carries.
    pub vni: Vni,
    /// The address to bind (port included; the port is where remotes send).
    pub local: SocketAddrV4,
    /// Static remote VTEPs: floods go to each.
    pub remotes: Vec<Ipv4Addr>,
    /// The UDP port remote VTEPs listen on.
    pub port: u16,
    /// A multicast group that also gets floods, and whose floods we hear.
    pub group: Option<Ipv4Addr>,
    /// TTL of datagrams sent to the group.
    pub multicast_ttl: u32,
    /// Bound on learned inner MACs.
    pub learn_capacity: usize,
    /// How long a learned MAC is kept without being seen.
    pub aging: Duration,
}

impl VxlanConfig {
    /// A port for `vni` bound at `local`, with no remotes yet and every
    /// other setting at its default.
    pub fn new(vni: Vni, local: SocketAddrV4) -> VxlanConfig {
        VxlanConfig {
            vni,
            local,
            remotes: Vec::new(),
            port: IANA_PORT,
            group: None,
            multicast_ttl: DEFAULT_MULTICAST_TTL,
            learn_capacity: DEFAULT_LEARN_CAPACITY,
            aging: DEFAULT_AGING,
        }
    }
}

/// What a VXLAN port dropped or did, beyond the switch's port counters
/// (which count inner frames).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VxlanCounters {
    /// Datagrams received with a valid header for our VNI.
    pub rx_datagrams: u64,
    /// Datagrams dropped: shorter than a header.
    pub rx_short: u64,
    /// Datagrams dropped: the I flag was clear.
    pub rx_bad_flags: u64,
    /// Datagrams dropped: another VNI.
    pub rx_wrong_vni: u64,
    /// Inner source MACs not learned because the table was full.
    pub learn_full: u64,
    /// Datagrams the socket accepted (a flood counts once per remote).
    pub tx_datagrams: u64,
    /// Frames with no remote to go to (a flood with no static remote and
    /// no group).
    pub tx_no_remote: u64,
    /// Datagrams the socket refused for good (no route, too big).
    pub tx_errors: u64,
}

impl VxlanCounters {
    fn rx_dropped(&self) -> u64 {
        self.rx_short + self.rx_bad_flags + self.rx_wrong_vni
    }
}

/// Per-port receive scratch: each datagram's header and source address
/// land here, beside its frame in the batch slot. Boxed: about 1 KiB.
struct RxScratch {
    headers: [[u8; HEADER_LEN]; BATCH_CAPACITY],
    names: [libc::sockaddr_in; BATCH_CAPACITY],
}

/// A VXLAN port: one UDP socket speaking RFC 7348 for one VNI to any number
/// of remote VTEPs. See the module documentation.
pub struct VxlanPlug {
    socket: UdpSocket,
    vni: Vni,
    /// The header every datagram we send starts with; the same for all of
    /// them, since the VNI is the port's.
    header: [u8; HEADER_LEN],
    table: RemoteTable,
    rx: Box<RxScratch>,
    counters: VxlanCounters,
    reported_drops: u64,
    next_report: Option<Instant>,
    local: SocketAddr,
    description: String,
}

impl fmt::Debug for VxlanPlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VxlanPlug")
            .field("vni", &self.vni)
            .field("local", &self.local)
            .field("flood", &self.table.flood_targets())
            .finish_non_exhaustive()
    }
}

/// The `sockaddr_in` the kernel wants for `addr`.
fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is a plain C struct; all zeros is valid.
    let mut sa: libc::sockaddr_in = unsafe { mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from(*addr.ip()).to_be();
    sa
}

/// The address in a `sockaddr_in` the kernel filled in, if it is one.
fn from_sockaddr(sa: &libc::sockaddr_in) -> Option<SocketAddrV4> {
    (i32::from(sa.sin_family) == libc::AF_INET).then(|| {
        SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
            u16::from_be(sa.sin_port),
        )
    })
}

/// Sets `IP_MULTICAST_IF`, which std has no call for.
fn set_multicast_if(fd: &impl AsRawFd, ip: Ipv4Addr) -> io::Result<()> {
    let addr = libc::in_addr {
        s_addr: u32::from(ip).to_be(),
    };
    // SAFETY: setsockopt reads `size_of::<in_addr>()` bytes from `addr`.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            ptr::from_ref(&addr).cast(),
            mem::size_of::<libc::in_addr>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Asks for large socket buffers; a smaller one only means earlier drops.
fn set_buffers(fd: &impl std::os::fd::AsFd) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(fd, sockopt::SndBuf, &SOCKET_BUFFER);
    let _ = setsockopt(fd, sockopt::RcvBuf, &SOCKET_BUFFER);
}

impl VxlanPlug {
    /// Binds the port's socket, joins its group, and builds its tables.
    pub fn open(config: &VxlanConfig) -> io::Result<VxlanPlug> {
        let bind = match config.group {
            Some(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, config.local.port()),
            None => config.local,
        };
        let socket = std::net::UdpSocket::bind(bind)?;
        if let Some(group) = config.group {
            if !group.is_multicast() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{group} is not a multicast group"),
                ));
            }
            let iface = *config.local.ip();
            socket.join_multicast_v4(&group, &iface)?;
            socket.set_multicast_ttl_v4(config.multicast_ttl)?;
            socket.set_multicast_loop_v4(false)?;
            if !iface.is_unspecified() {
                set_multicast_if(&socket, iface)?;
            }
        }
        socket.set_nonblocking(true)?;
        set_buffers(&socket);
        let local = socket.local_addr()?;
        let statics: Vec<SocketAddrV4> = config
            .remotes
            .iter()
            .map(|ip| SocketAddrV4::new(*ip, config.port))
            .collect();
        let group = config.group.map(|g| SocketAddrV4::new(g, config.port));
        let table = RemoteTable::new(
            &statics,
            group,
            config.port,
            config.learn_capacity,
            config.aging,
        );
        let mut header = [0u8; HEADER_LEN];
        Header::new_checked(&mut header[..])
            .expect("a header-sized buffer")
            .emit(config.vni);
        let mut description = format!("vxlan vni {} {local}", config.vni);
        let mut sep = " -> ";
        for t in table.flood_targets() {
            description.push_str(sep);
            description.push_str(&t.to_string());
            sep = ", ";
        }
        Ok(VxlanPlug {
            socket: UdpSocket::from_std(socket),
            vni: config.vni,
            header,
            table,
            // SAFETY: byte arrays and sockaddr_in are plain data; all zeros
            // is valid for both.
            rx: Box::new(unsafe { mem::zeroed() }),
            counters: VxlanCounters::default(),
            reported_drops: 0,
            next_report: None,
            local,
            description,
        })
    }

    /// The address the socket is bound to (the port picked, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The VNI it carries.
    pub fn vni(&self) -> Vni {
        self.vni
    }

    /// Its drop and datagram counters.
    pub fn counters(&self) -> VxlanCounters {
        self.counters
    }

    /// Its remotes, static and learned.
    pub fn remotes(&self) -> &RemoteTable {
        &self.table
    }

    /// Logs receive drops, at most every [`DROP_REPORT_INTERVAL`], so a
    /// misconfigured peer is visible without flooding the log.
    fn report_drops(&mut self, now: Instant) {
        let dropped = self.counters.rx_dropped();
        if dropped == self.reported_drops || self.next_report.is_some_and(|t| now < t) {
            return;
        }
        let c = &self.counters;
        tracing::warn!(
            vni = %self.vni,
            local = %self.local,
            wrong_vni = c.rx_wrong_vni,
            bad_flags = c.rx_bad_flags,
            short = c.rx_short,
            "vxlan datagrams dropped"
        );
        self.reported_drops = dropped;
        self.next_report = Some(now + DROP_REPORT_INTERVAL);
    }

    /// One `recvmmsg` into the free slots of `batch`; keeps the valid
    /// datagrams (moved down over refused ones) and learns their sources.
    /// Returns how many datagrams the kernel handed over.
    fn recv_round(&mut self, batch: &mut FrameBatch, now: Instant) -> io::Result<usize> {
        let free = batch.remaining();
        let base = batch.len();
        // SAFETY: iovec/mmsghdr are plain C structs; all zeros is valid.
        let mut iovs: [[libc::iovec; 2]; BATCH_CAPACITY] = unsafe { mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH_CAPACITY] = unsafe { mem::zeroed() };
        let rx = &mut *self.rx;
        for (i, ((iov, slot), head)) in iovs
            .iter_mut()
            .zip(batch.free_slots())
            .zip(rx.headers.iter_mut())
            .enumerate()
        {
            iov[0].iov_base = head.as_mut_ptr().cast();
            iov[0].iov_len = HEADER_LEN;
            iov[1].iov_base = slot.as_mut_ptr().cast();
            iov[1].iov_len = slot.len();
            let hdr = &mut hdrs[i].msg_hdr;
            hdr.msg_iov = iov.as_mut_ptr();
            hdr.msg_iovlen = 2;
            hdr.msg_name = ptr::from_mut(&mut rx.names[i]).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        let fd = self.socket.as_raw_fd();
        let received = loop {
            // SAFETY: `hdrs[..free]` point at `iovs`, which point at
            // distinct free slots of `batch` and distinct scratch headers,
            // and at distinct scratch addresses; all outlive the call.
            let result = self
                .socket
                .try_io(|| unsafe { crate::dgram::recvmmsg_raw(fd, &mut hdrs[..free]) });
            match result {
                Ok(n) => break n.min(free),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // News about an earlier send (ICMP), not about this receive.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => return Err(e),
            }
        };

        let mut kept = 0;
        for (i, hdr) in hdrs.iter().enumerate().take(received) {
            let total = hdr.msg_len as usize;
            let head = &self.rx.headers[i][..total.min(HEADER_LEN)];
            if let Err(why) = check_header(head, self.vni) {
                match why {
                    RxRefusal::Short => self.counters.rx_short += 1,
                    RxRefusal::NoVniFlag => self.counters.rx_bad_flags += 1,
                    RxRefusal::WrongVni(_) => self.counters.rx_wrong_vni += 1,
                }
                continue;
            }
            let mut len = total - HEADER_LEN;
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                len = len.max(MAX_FRAME_SLOT);
            }
            // After a refused datagram, this frame moves down a slot.
            batch.commit_from(i - kept, len);
            self.counters.rx_datagrams += 1;
            let frame = batch.frame(base + kept);
            if let (Some(src), Some(from)) = (frame.get(6..12), from_sockaddr(&self.rx.names[i])) {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(src);
                if self.table.learn(mac, from, now) == Learn::Full {
                    self.counters.learn_full += 1;
                }
            }
            kept += 1;
        }
        Ok(received)
    }
}

/// What became of one frame of a send chunk, across all its copies.
#[derive(Debug, Clone, Copy, Default)]
struct FrameFate {
    sent: bool,
    full: bool,
}

/// The datagrams of one `sendmmsg`, built on the stack: each is the port's
/// header and one frame, to one address.
struct Outgoing {
    iovs: [[libc::iovec; 2]; SEND_MSGS],
    names: [libc::sockaddr_in; SEND_MSGS],
    /// Position in the chunk of each datagram's frame.
    frame_of: [u8; SEND_MSGS],
    count: usize,
}

impl Outgoing {
    fn new() -> Outgoing {
        // SAFETY: plain C structs and integers; all zeros is valid.
        unsafe { mem::zeroed() }
    }
}

impl VxlanPlug {
    /// Sends the queued datagrams, marking each frame's fate; on a full
    /// socket the rest are dropped and `congested` is set, so the remaining
    /// frames of the batch are not tried.
    fn flush(&mut self, out: &mut Outgoing, fates: &mut [FrameFate], congested: &mut bool) {
        let count = out.count;
        out.count = 0;
        if count == 0 {
            return;
        }
        // SAFETY: plain C structs; all zeros is valid.
        let mut hdrs: [libc::mmsghdr; SEND_MSGS] = unsafe { mem::zeroed() };
        for (i, hdr) in hdrs.iter_mut().enumerate().take(count) {
            hdr.msg_hdr.msg_iov = out.iovs[i].as_mut_ptr();
            hdr.msg_hdr.msg_iovlen = 2;
            hdr.msg_hdr.msg_name = ptr::from_mut(&mut out.names[i]).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        let fd = self.socket.as_raw_fd();
        let mut start = 0;
        let mut interrupted = false;
        while start < count {
            if *congested {
                for &k in &out.frame_of[start..count] {
                    fates[usize::from(k)].full = true;
                }
                return;
            }
            let pending = &mut hdrs[start..count];
            let result = self.socket.try_io(|| {
                // SAFETY: `pending` points at `out`'s iovecs and addresses,
                // which point at the port's header and at frames borrowed
                // from the batch; all outlive the call, which only reads
                // them.
                let rc = unsafe {
                    libc::sendmmsg(
                        fd,
                        pending.as_mut_ptr(),
                        pending.len() as libc::c_uint,
                        (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as _,
                    )
                };
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(rc as usize)
                }
            });
            match result {
                Ok(0) => *congested = true,
                Ok(n) => {
                    let n = n.min(count - start);
                    for &k in &out.frame_of[start..start + n] {
                        fates[usize::from(k)].sent = true;
                    }
                    self.counters.tx_datagrams += n as u64;
                    start += n;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted && !interrupted => {
                    interrupted = true;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    *congested = true;
                }
                Err(_) => {
                    // This datagram's fault (too big, no route to that
                    // remote): the others may still go.
                    self.counters.tx_errors += 1;
                    start += 1;
                }
            }
        }
    }

    /// Queues one datagram: the header and `frame`, to `to`.
    fn queue(
        &mut self,
        out: &mut Outgoing,
        fates: &mut [FrameFate],
        congested: &mut bool,
        k: usize,
        frame: &[u8],
        to: SocketAddrV4,
    ) {
        if out.count == SEND_MSGS {
            self.flush(out, fates, congested);
        }
        let m = out.count;
        // sendmmsg only reads through these pointers; *mut is what the C
        // struct demands.
        out.iovs[m][0].iov_base = self.header.as_ptr().cast_mut().cast();
        out.iovs[m][0].iov_len = HEADER_LEN;
        out.iovs[m][1].iov_base = frame.as_ptr().cast_mut().cast();
        out.iovs[m][1].iov_len = frame.len();
        out.names[m] = sockaddr(to);
        out.frame_of[m] = k as u8;
        out.count += 1;
    }

    /// Sends up to [`BATCH_CAPACITY`] frames, each to its remote(s).
    fn send_chunk(
        &mut self,
        batch: &FrameBatch,
        chunk: &[u16],
        now: Instant,
        congested: &mut bool,
        report: &mut TxReport,
    ) {
        let mut out = Outgoing::new();
        let mut fates = [FrameFate::default(); BATCH_CAPACITY];
        let mut valid = [false; BATCH_CAPACITY];
        for (k, &index) in chunk.iter().enumerate().take(BATCH_CAPACITY) {
            let index = usize::from(index);
            if index >= batch.len() {
                continue;
            }
            let frame = batch.frame(index);
            let Some(dst) = frame.get(..6) else {
                continue;
            };
            valid[k] = true;
            let mut mac = [0u8; 6];
            mac.copy_from_slice(dst);
            match self.table.lookup(mac, now) {
                Delivery::Unicast(to) => {
                    self.queue(&mut out, &mut fates, congested, k, frame, to);
                }
                Delivery::Flood => {
                    if self.table.flood_targets().is_empty() {
                        self.counters.tx_no_remote += 1;
                    }
                    for t in 0..self.table.flood_targets().len() {
                        let to = self.table.flood_targets()[t];
                        self.queue(&mut out, &mut fates, congested, k, frame, to);
                    }
                }
            }
        }
        self.flush(&mut out, &mut fates, congested);
        for (k, &index) in chunk.iter().enumerate().take(BATCH_CAPACITY) {
            let f = fates[k];
            if f.sent {
                report.sent += 1;
                report.sent_bytes += batch.frame(usize::from(index)).len();
            } else if f.full && valid[k] {
                report.dropped_full += 1;
            } else {
                report.dropped_error += 1;
            }
        }
    }
}

impl Plug for VxlanPlug {
    /// Receives datagrams with `recvmmsg`, each header into the port's
    /// scratch and each frame straight into its batch slot. Refused
    /// datagrams are counted and never committed.
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        let now = Instant::now();
        self.table.maybe_expire(now);
        let mut status = RecvStatus::More;
        for _ in 0..DISCARD_ROUNDS {
            let free = batch.remaining();
            if free == 0 {
                break;
            }
            if self.recv_round(batch, now)? < free {
                status = RecvStatus::Drained;
                break;
            }
        }
        self.report_drops(now);
        Ok(status)
    }

    /// Sends each frame to the remote its destination was learned behind,
    /// or to every flood target; a frame counts as sent when at least one
    /// copy was accepted.
    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        let now = Instant::now();
        let mut report = TxReport::default();
        let mut congested = false;
        for chunk in which.chunks(BATCH_CAPACITY) {
            self.send_chunk(batch, chunk, now, &mut congested, &mut report);
        }
        report
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "vxlan"
    }

    fn stats(&self) -> Vec<(&'static str, u64)> {
        let c = &self.counters;
        vec![
            ("rx_datagrams", c.rx_datagrams),
            ("rx_short", c.rx_short),
            ("rx_bad_flags", c.rx_bad_flags),
            ("rx_wrong_vni", c.rx_wrong_vni),
            ("learn_full", c.learn_full),
            ("tx_datagrams", c.tx_datagrams),
            ("tx_no_remote", c.tx_no_remote),
            ("tx_errors", c.tx_errors),
            ("remotes_learned", self.table.len() as u64),
        ]
    }
}

crate::delegate_source!(VxlanPlug, socket);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::recv_frames;

    const VNI: u32 = 42;

    fn vni(v: u32) -> Vni {
        Vni::new(v).unwrap()
    }

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> [u8; 6] {
        [0x02, 0, 0, 0, 0, last]
    }

    /// An Ethernet frame from `src` to `dst` with a recognisable payload.
    fn frame(dst: [u8; 6], src: [u8; 6], fill: u8, len: usize) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    #[test]
    fn vni_is_24_bits() {
        assert_eq!(Vni::new(0xFF_FFFF).map(Vni::get), Some(0xFF_FFFF));
        assert_eq!(Vni::new(0x100_0000), None);
        assert_eq!(vni(42).to_string(), "42");
    }

    #[test]
    fn emitted_header_is_exactly_what_linux_accepts() {
        let mut buf = [0xFFu8; 10];
        Header::new_checked(&mut buf[..])
            .unwrap()
            .emit(vni(0x12_3456));
        assert_eq!(buf, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xFF, 0xFF]);
        let h = Header::new_checked(&buf[..]).unwrap();
        assert_eq!(h.flags(), 0x08);
        assert!(h.vni_valid());
        assert!(h.reserved_clear());
        assert_eq!(h.vni(), vni(0x12_3456));
        assert_eq!(h.payload(), &[0xFF, 0xFF]);
    }

    #[test]
    fn header_view_refuses_short_buffers() {
        assert!(Header::new_checked(&[0x08u8, 0, 0, 0, 0, 0, 42][..]).is_none());
        assert!(Header::new_checked(&[0u8; 8][..]).is_some());
        assert_eq!(check_header(&[0x08; 7], vni(1)), Err(RxRefusal::Short));
        assert_eq!(check_header(&[], vni(1)), Err(RxRefusal::Short));
    }

    #[test]
    fn receive_check_follows_the_rfc() {
        let ok = [0x08, 0, 0, 0, 0, 0, 42, 0];
        assert_eq!(check_header(&ok, vni(42)), Ok(()));
        // Reserved bits set: ignored on receipt (RFC 7348 section 5).
        let noisy = [0x08 | 0x80, 1, 2, 3, 0, 0, 42, 4];
        assert!(!Header::new_checked(&noisy[..]).unwrap().reserved_clear());
        assert_eq!(check_header(&noisy, vni(42)), Ok(()));
        // The I flag is required.
        let no_i = [0x00, 0, 0, 0, 0, 0, 42, 0];
        assert_eq!(check_header(&no_i, vni(42)), Err(RxRefusal::NoVniFlag));
        // Another VNI.
        let other = [0x08, 0, 0, 0, 0, 0, 43, 0];
        assert_eq!(
            check_header(&other, vni(42)),
            Err(RxRefusal::WrongVni(vni(43)))
        );
        // The VNI is all three bytes, not the low one.
        let high = [0x08, 0, 0, 0, 1, 0, 42, 0];
        assert_eq!(
            check_header(&high, vni(42)),
            Err(RxRefusal::WrongVni(vni(0x01_002A)))
        );
    }

    fn table(cap: usize) -> RemoteTable {
        RemoteTable::new(
            &[addr("192.0.2.2:4789"), addr("192.0.2.3:4789")],
            Some(addr("239.1.1.1:4789")),
            4789,
            cap,
            Duration::from_secs(300),
        )
    }

    #[test]
    fn broadcast_multicast_and_unknown_unicast_flood() {
        let t = table(16);
        let now = Instant::now();
        assert_eq!(t.lookup([0xFF; 6], now), Delivery::Flood);
        assert_eq!(t.lookup([0x01, 0, 0x5E, 0, 0, 1], now), Delivery::Flood);
        assert_eq!(t.lookup(mac(9), now), Delivery::Flood);
        assert_eq!(
            t.flood_targets(),
            &[
                addr("192.0.2.2:4789"),
                addr("192.0.2.3:4789"),
                addr("239.1.1.1:4789")
            ]
        );
    }

    #[test]
    fn duplicate_statics_are_flooded_once() {
        let t = RemoteTable::new(
            &[addr("192.0.2.2:4789"), addr("192.0.2.2:4789")],
            None,
            4789,
            4,
            DEFAULT_AGING,
        );
        assert_eq!(t.flood_targets(), &[addr("192.0.2.2:4789")]);
    }

    #[test]
    fn learned_unicast_goes_to_the_configured_port_of_its_remote() {
        let mut t = table(16);
        let t0 = Instant::now();
        // Linux sends from a hashed ephemeral port; it listens on 4789.
        assert_eq!(t.learn(mac(1), addr("198.51.100.7:51234"), t0), Learn::New);
        assert_eq!(
            t.lookup(mac(1), t0 + Duration::from_secs(1)),
            Delivery::Unicast(addr("198.51.100.7:4789"))
        );
        let e = t.get(mac(1), t0).unwrap();
        assert_eq!(e.ip, Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(e.source_port, 51234);
        assert_eq!(e.seen, t0);
        // Same remote again: refreshed; another remote: moved.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            t.learn(mac(1), addr("198.51.100.7:40000"), t1),
            Learn::Refreshed
        );
        assert_eq!(t.get(mac(1), t1).unwrap().source_port, 40000);
        assert_eq!(t.learn(mac(1), addr("192.0.2.3:4789"), t1), Learn::Moved);
        assert_eq!(
            t.lookup(mac(1), t1),
            Delivery::Unicast(addr("192.0.2.3:4789"))
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn group_and_zero_sources_are_not_learned() {
        let mut t = table(16);
        let now = Instant::now();
        let from = addr("192.0.2.2:4789");
        assert_eq!(t.learn([0xFF; 6], from, now), Learn::Ignored);
        assert_eq!(t.learn([0x01, 0, 0x5E, 0, 0, 1], from, now), Learn::Ignored);
        assert_eq!(t.learn([0; 6], from, now), Learn::Ignored);
        assert!(t.is_empty());
    }

    #[test]
    fn learned_entries_age_out() {
        let mut t = table(16);
        let t0 = Instant::now();
        t.learn(mac(1), addr("192.0.2.2:4789"), t0);
        let just_before = t0 + Duration::from_secs(299);
        let at = t0 + Duration::from_secs(300);
        assert_eq!(
            t.lookup(mac(1), just_before),
            Delivery::Unicast(addr("192.0.2.2:4789"))
        );
        // Expired: flooded again even before a sweep removed it.
        assert_eq!(t.lookup(mac(1), at), Delivery::Flood);
        assert_eq!(t.get(mac(1), at), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(at), 1);
        assert!(t.is_empty());
        // Seen again after expiry: new.
        t.learn(mac(2), addr("192.0.2.2:4789"), t0);
        assert_eq!(t.learn(mac(2), addr("192.0.2.2:4789"), at), Learn::New);
    }

    #[test]
    fn table_is_bounded_and_makes_room_by_aging() {
        let mut t = table(2);
        let t0 = Instant::now();
        let from = addr("192.0.2.2:4789");
        assert_eq!(t.learn(mac(1), from, t0), Learn::New);
        assert_eq!(
            t.learn(mac(2), from, t0 + Duration::from_secs(100)),
            Learn::New
        );
        // Full of live entries: refused, the old ones stay.
        let t1 = t0 + Duration::from_secs(200);
        assert_eq!(t.learn(mac(3), from, t1), Learn::Full);
        assert_eq!(t.lookup(mac(3), t1), Delivery::Flood);
        assert_eq!(t.len(), 2);
        // Known MACs still refresh when full.
        assert_eq!(t.learn(mac(1), from, t1), Learn::Refreshed);
        // Once mac(2) has aged out (mac(1) was refreshed), mac(3) fits.
        let t2 = t0 + Duration::from_secs(400);
        assert_eq!(t.learn(mac(3), from, t2), Learn::New);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(mac(2), t2), Delivery::Flood);
        assert_eq!(t.lookup(mac(1), t2), Delivery::Unicast(from));
        assert_eq!(t.lookup(mac(3), t2), Delivery::Unicast(from));
    }

    /// A raw UDP socket standing for a remote VTEP, on loopback.
    fn remote() -> std::net::UdpSocket {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn port_of(s: &std::net::UdpSocket) -> u16 {
        s.local_addr().unwrap().port()
    }

    /// A plug on loopback whose static remotes are `remotes`; all of them
    /// listen on `port`, so tests give each remote its own loopback address.
    fn plug(remotes: &[Ipv4Addr], port: u16) -> VxlanPlug {
        let mut c = VxlanConfig::new(vni(VNI), addr("127.0.0.1:0"));
        c.remotes = remotes.to_vec();
        c.port = port;
        VxlanPlug::open(&c).unwrap()
    }

    fn recv_datagram(s: &std::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 70_000];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        buf.truncate(n);
        (buf, from)
    }

    #[test]
    fn floods_to_every_remote_then_unicasts_to_the_learned_one() {
        // Two remote VTEPs on one port, on two loopback addresses.
        let a = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let port = port_of(&a);
        let Ok(b) = std::net::UdpSocket::bind(("127.0.0.3", port)) else {
            eprintln!("SKIP: port {port} taken on 127.0.0.3");
            return;
        };
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let mut p = plug(
            &[Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)],
            port,
        );
        let ours = p.local_addr();

        // A broadcast goes to both, with the exact header in front.
        let bcast = frame([0xFF; 6], mac(1), 0xAB, 60);
        let mut batch = FrameBatch::new();
        batch.push(&bcast);
        let r = p.send_batch(&batch, &[0]);
        assert_eq!((r.sent, r.sent_bytes), (1, 60));
        for s in [&a, &b] {
            let (d, from) = recv_datagram(s);
            assert_eq!(from, ours);
            assert_eq!(&d[..8], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
            assert_eq!(&d[8..], &bcast[..]);
        }
        assert_eq!(p.counters().tx_datagrams, 2);

        // B answers from some other source port; we learn mac(2) -> B.
        let reply = frame(mac(1), mac(2), 0xCD, 80);
        let mut dgram = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
        dgram.extend_from_slice(&reply);
        let b_other = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
        b_other.send_to(&dgram, ours).unwrap();
        let got = recv_frames(&mut p, 1);
        assert_eq!(got, vec![reply.clone()]);
        let e = p.remotes().get(mac(2), Instant::now()).unwrap();
        assert_eq!(e.ip, Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(e.source_port, port_of(&b_other));

        // Unicast to mac(2) now goes to B only, on the VTEP port.
        let uni = frame(mac(2), mac(1), 0xEF, 100);
        batch.clear();
        batch.push(&uni);
        let r = p.send_batch(&batch, &[0]);
        assert_eq!(r.sent, 1);
        let (d, _) = recv_datagram(&b);
        assert_eq!(&d[8..], &uni[..]);
        a.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 2000];
        assert!(a.recv_from(&mut buf).is_err(), "A must not get the unicast");
        assert_eq!(p.counters().tx_datagrams, 3);
    }

    #[test]
    fn wrong_vni_bad_flags_and_runts_are_dropped_and_counted() {
        let peer = remote();
        let mut p = plug(&[Ipv4Addr::LOCALHOST], port_of(&peer));
        let ours = p.local_addr();
        let good = frame(mac(1), mac(7), 0x11, 64);
        let with = |head: [u8; 8]| {
            let mut d = head.to_vec();
            d.extend_from_slice(&good);
            d
        };
        peer.send_to(&with([0x08, 0, 0, 0, 0, 0, 43, 0]), ours)
            .unwrap();
        peer.send_to(&with([0x00, 0, 0, 0, 0, 0, 42, 0]), ours)
            .unwrap();
        peer.send_to(&[0x08, 0, 0], ours).unwrap();
        // Reserved bits are ignored on receipt.
        peer.send_to(&with([0x0C, 0, 0, 0, 0, 0, 42, 0x55]), ours)
            .unwrap();
        let got = recv_frames(&mut p, 1);
        // The good one arrived in the batch's first slot, moved down over
        // the refused ones.
        assert_eq!(got, vec![good]);
        let c = p.counters();
        assert_eq!(
            (c.rx_wrong_vni, c.rx_bad_flags, c.rx_short, c.rx_datagrams),
            (1, 1, 1, 1)
        );
        // Nothing was learned from refused datagrams: only mac(7), once.
        assert_eq!(p.remotes().len(), 1);
    }

    #[test]
    fn a_flood_with_no_remote_is_dropped_as_an_error() {
        let mut p = VxlanPlug::open(&VxlanConfig::new(vni(VNI), addr("127.0.0.1:0"))).unwrap();
        let mut batch = FrameBatch::new();
        batch.push(&frame([0xFF; 6], mac(1), 0, 60));
        batch.push(&[0u8; 3]);
        let r = p.send_batch(&batch, &[0, 1, 9]);
        assert_eq!(r.sent, 0);
        assert_eq!(r.dropped_error, 3);
        assert_eq!(p.counters().tx_no_remote, 1);
    }

    #[test]
    fn large_batches_replicate_in_several_calls() {
        // Three remotes on three loopback addresses: 3 x 32 datagrams is
        // more than one sendmmsg carries.
        let first = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let port = port_of(&first);
        let mut socks = vec![first];
        for ip in ["127.0.0.3", "127.0.0.4"] {
            match std::net::UdpSocket::bind((ip, port)) {
                Ok(s) => socks.push(s),
                Err(_) => {
                    eprintln!("SKIP: port {port} taken on {ip}");
                    return;
                }
            }
        }
        for s in &socks {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
        let ips: Vec<Ipv4Addr> = socks
            .iter()
            .map(|s| match s.local_addr().unwrap() {
                SocketAddr::V4(a) => *a.ip(),
                SocketAddr::V6(_) => unreachable!(),
            })
            .collect();
        let mut p = plug(&ips, port);
        let mut batch = FrameBatch::new();
        for i in 0..BATCH_CAPACITY {
            batch.push(&frame([0xFF; 6], mac(1), i as u8, 60 + i));
        }
        let which: Vec<u16> = (0..BATCH_CAPACITY as u16).collect();
        let r = p.send_batch(&batch, &which);
        assert_eq!(r.sent, BATCH_CAPACITY);
        assert_eq!(
            r.sent_bytes,
            (0..BATCH_CAPACITY).map(|i| 60 + i).sum::<usize>()
        );
        assert_eq!(p.counters().tx_datagrams, 3 * BATCH_CAPACITY as u64);
        for s in &socks {
            for i in 0..BATCH_CAPACITY {
                let (d, _) = recv_datagram(s);
                assert_eq!(d.len(), 8 + 60 + i);
                assert_eq!(d[8 + 20], i as u8, "frames arrive in order");
            }
        }
    }

    #[test]
    fn two_plugs_talk_to_each_other() {
        // Two switchboards: each one's static remote is the other.
        let mut a = plug(&[Ipv4Addr::LOCALHOST], 1);
        let a_port = a.local_addr().port();
        let mut b = plug(&[Ipv4Addr::LOCALHOST], a_port);
        let b_port = b.local_addr().port();
        // a must send to b's port: rebuild a with it.
        a = {
            let mut c = VxlanConfig::new(vni(VNI), SocketAddrV4::new(Ipv4Addr::LOCALHOST, a_port));
            c.remotes = vec![Ipv4Addr::LOCALHOST];
            c.port = b_port;
            drop(a);
            VxlanPlug::open(&c).unwrap()
        };
        let f = frame([0xFF; 6], mac(1), 0x77, 1514);
        let mut batch = FrameBatch::new();
        batch.push(&f);
        assert_eq!(a.send_batch(&batch, &[0]).sent, 1);
        assert_eq!(recv_frames(&mut b, 1), vec![f]);
        let g = frame(mac(1), mac(2), 0x66, 9000);
        batch.clear();
        batch.push(&g);
        assert_eq!(b.send_batch(&batch, &[0]).sent, 1);
        assert_eq!(recv_frames(&mut a, 1), vec![g]);
        assert_eq!(
            b.remotes().lookup(mac(1), Instant::now()),
            Delivery::Unicast(SocketAddrV4::new(Ipv4Addr::LOCALHOST, a_port))
        );
        assert_eq!(a.kind(), "vxlan");
        assert!(a.description().starts_with("vxlan vni 42 127.0.0.1:"));
    }

    #[test]
    fn a_group_that_is_not_multicast_is_refused() {
        let mut c = VxlanConfig::new(vni(VNI), addr("127.0.0.1:0"));
        c.group = Some(Ipv4Addr::new(192, 0, 2, 1));
        let e = VxlanPlug::open(&c).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
