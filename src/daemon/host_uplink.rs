//! The I/O shell of the unprivileged host uplink (see [`crate::uplink`]):
//! the host sockets behind each flow, their mio registrations, and the
//! glue that turns socket readiness into packets for the router.
//!
//! Every socket is registered under `base + slot`, where `slot` is its key
//! in one slab, so the daemon can route every token at or above `base`
//! here without knowing what the uplink holds. Readiness only sets flags;
//! [`HostUplink::poll`] does the work, so the same path serves events,
//! guest packets and timers, and a socket left readable because the queue
//! toward the router was full is simply served again on the next poll.

use std::io::{self, ErrorKind};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};

use hashbrown::HashMap;
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use slab::Slab;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::State;
use smoltcp::wire::Icmpv4DstUnreachable;

use crate::router::nat::Proto;
use crate::time::Instant;
pub(crate) use crate::uplink::HostForward;
use crate::uplink::packet::{self, Inbound, Refusal, TcpSegment};
use crate::uplink::splice;
use crate::uplink::stack::TcpStack;
use crate::uplink::table::{Activity, CONNECT_TIMEOUT, FlowIndex, IdleRule, Limits, PortAllocator};
use crate::uplink::{UplinkCounters, UplinkFlowView, UplinkProto};

/// How the daemon sets the uplink up.
#[derive(Debug, Clone)]
pub(crate) struct UplinkConfig {
    /// IP MTU of packets to/from the guests (default 1500; up to 65520).
    pub mtu: usize,
    /// Address whose flows go to the host's 127.0.0.1 instead (slirp's
    /// host loopback alias, usually the gateway).
    pub loopback: Option<Ipv4Addr>,
    /// Address guests see inbound forwarded connections come from.
    pub forward_source: Ipv4Addr,
    /// Inbound forwards from host addresses to guests.
    pub forwards: Vec<HostForward>,
    /// Cap on TCP flows.
    pub max_tcp: usize,
    /// Cap on UDP flows.
    pub max_udp: usize,
    /// Cap on ICMP echo flows.
    pub max_icmp: usize,
}

impl UplinkConfig {
    /// The defaults (MTU 1500, the default caps, no loopback alias, no
    /// forwards), so callers only spell out what differs.
    pub(crate) fn new(forward_source: Ipv4Addr) -> Self {
        let limits = Limits::default();
        UplinkConfig {
            mtu: 1500,
            loopback: None,
            forward_source,
            forwards: Vec::new(),
            max_tcp: limits.max_tcp,
            max_udp: limits.max_udp,
            max_icmp: limits.max_icmp,
        }
    }
}

/// Smallest MTU accepted (IPv4's minimum); smaller configurations are raised.
const MIN_MTU: usize = 576;
/// Largest MTU accepted.
const MAX_MTU: usize = 65520;
/// Packets handed to the router per `receive` call.
const MAX_DELIVER: usize = 512;
/// Datagrams or connections taken from one socket per poll.
const MAX_PER_SOCKET: usize = 64;
/// Receive buffer for one host datagram.
const DATAGRAM_BUFFER: usize = 65536;

type TcpKey = (SocketAddrV4, SocketAddrV4);
type UdpKey = (SocketAddrV4, SocketAddrV4);
type IcmpKey = (Ipv4Addr, Ipv4Addr, u16);

enum TcpPhase {
    /// The host connect is in progress; the guest's SYN waits.
    Connecting {
        syn: Vec<u8>,
        seg: TcpSegment,
        deadline: Instant,
    },
    /// Terminated in the stack and spliced onto the host stream.
    Spliced(SocketHandle),
}

struct TcpFlow {
    guest: SocketAddrV4,
    seen: SocketAddrV4,
    target: SocketAddr,
    inbound: bool,
    stream: TcpStream,
    registered: bool,
    phase: TcpPhase,
    /// For inbound flows: when the guest must have answered the SYN.
    syn_deadline: Option<Instant>,
    established: bool,
    readable: bool,
    writable: bool,
    host_eof: bool,
    host_shut: bool,
    host_dead: bool,
    activity: Activity,
}

enum UdpHost {
    /// A host socket of the flow's own, connected to the target.
    Own {
        socket: UdpSocket,
        registered: bool,
        readable: bool,
    },
    /// A peer of an inbound UDP forward, answered through its listener.
    Forwarded { listener: usize, peer: SocketAddr },
}

struct UdpFlow {
    guest: SocketAddrV4,
    seen: SocketAddrV4,
    target: SocketAddr,
    host: UdpHost,
    activity: Activity,
}

struct IcmpFlow {
    guest: Ipv4Addr,
    seen: Ipv4Addr,
    ident: u16,
    target: Ipv4Addr,
    socket: UdpSocket,
    registered: bool,
    readable: bool,
    activity: Activity,
}

enum Slot {
    Tcp(TcpFlow),
    Udp(UdpFlow),
    Icmp(IcmpFlow),
    TcpListen {
        listener: TcpListener,
        guest: SocketAddrV4,
        readable: bool,
    },
    UdpListen {
        socket: UdpSocket,
        guest: SocketAddrV4,
        peers: HashMap<SocketAddr, usize>,
        readable: bool,
    },
}

/// The host uplink: a router's host interface terminated onto host
/// sockets, with no privileges.
pub(crate) struct HostUplink {
    mtu: usize,
    loopback: Option<Ipv4Addr>,
    forward_source: Ipv4Addr,
    limits: Limits,
    base: usize,
    stack: TcpStack,
    slots: Slab<Slot>,
    tcp: FlowIndex<TcpKey>,
    udp: FlowIndex<UdpKey>,
    icmp: FlowIndex<IcmpKey>,
    pending_connects: usize,
    ports: PortAllocator,
    counters: UplinkCounters,
    unregistered: Vec<usize>,
    doomed: Vec<usize>,
    next_wake: Option<Instant>,
    backlog: bool,
    scratch: Vec<u8>,
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// An unprivileged ICMP echo socket connected to `target`.
fn ping_socket(target: Ipv4Addr) -> io::Result<UdpSocket> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )
    .map_err(io::Error::from)?;
    let socket = std::net::UdpSocket::from(fd);
    socket.connect(SocketAddrV4::new(target, 0))?;
    Ok(UdpSocket::from_std(socket))
}

/// Closes `stream` with a reset instead of a FIN (the guest side was
/// reset, so the host peer must not think the stream ended cleanly).
fn set_abortive(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger);
}

impl HostUplink {
    /// The first token of this uplink's range, to route events to it.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Sets the uplink up and binds the forward listeners (the error names
    /// the address that failed).
    pub(crate) fn new(
        config: UplinkConfig,
        registry: &Registry,
        base: usize,
    ) -> io::Result<HostUplink> {
        let mtu = config.mtu.clamp(MIN_MTU, MAX_MTU);
        let limits = Limits {
            max_tcp: config.max_tcp,
            max_udp: config.max_udp,
            max_icmp: config.max_icmp,
            ..Limits::default()
        };
        let mut uplink = HostUplink {
            mtu,
            loopback: config.loopback,
            forward_source: config.forward_source,
            limits,
            base,
            stack: TcpStack::new(mtu, config.forward_source, Instant::ZERO, seed()),
            slots: Slab::new(),
            tcp: FlowIndex::new(limits.max_tcp),
            udp: FlowIndex::new(limits.max_udp),
            icmp: FlowIndex::new(limits.max_icmp),
            pending_connects: 0,
            ports: PortAllocator::default(),
            counters: UplinkCounters::default(),
            unregistered: Vec::new(),
            doomed: Vec::new(),
            next_wake: None,
            backlog: false,
            scratch: vec![0u8; DATAGRAM_BUFFER],
        };
        for fwd in &config.forwards {
            let named = |e: io::Error, what: &str| {
                io::Error::new(
                    e.kind(),
                    format!("host forward {what} {} -> {}: {e}", fwd.listen, fwd.guest),
                )
            };
            let slot = match fwd.proto {
                Proto::Tcp => Slot::TcpListen {
                    listener: TcpListener::bind(fwd.listen).map_err(|e| named(e, "tcp"))?,
                    guest: fwd.guest,
                    readable: true,
                },
                Proto::Udp => Slot::UdpListen {
                    socket: UdpSocket::bind(fwd.listen).map_err(|e| named(e, "udp"))?,
                    guest: fwd.guest,
                    peers: HashMap::new(),
                    readable: true,
                },
                Proto::Icmp => {
                    return Err(named(
                        io::Error::new(ErrorKind::InvalidInput, "only tcp and udp forward"),
                        "icmp",
                    ));
                }
            };
            let key = uplink.slots.insert(slot);
            let token = Token(base + key);
            let registered = match &mut uplink.slots[key] {
                Slot::TcpListen { listener, .. } => {
                    registry.register(listener, token, Interest::READABLE)
                }
                Slot::UdpListen { socket, .. } => {
                    registry.register(socket, token, Interest::READABLE)
                }
                _ => Ok(()),
            };
            registered.map_err(|e| named(e, "register"))?;
        }
        Ok(uplink)
    }

    /// Where a flow to `seen` really goes: the loopback alias means the
    /// host itself.
    fn target_ip(&self, seen: Ipv4Addr) -> Ipv4Addr {
        if self.loopback == Some(seen) {
            Ipv4Addr::LOCALHOST
        } else {
            seen
        }
    }

    fn push_out(&mut self, packet: Option<Vec<u8>>) {
        if let Some(p) = packet {
            // A full queue drops our own answers; the guest retries.
            if self.stack.device().push_tx(p).is_err() {
                self.counters.send_failed += 1;
            }
        }
    }

    /// An IPv4 packet the router sent out of its host interface (a guest's
    /// packet to the world).
    pub(crate) fn send(&mut self, now: Instant, packet: &[u8]) {
        self.counters.packets_from_guests += 1;
        match packet::parse(packet) {
            Err(Refusal::Malformed) => self.counters.malformed += 1,
            Err(Refusal::Fragment) => self.counters.fragments_dropped += 1,
            Err(Refusal::Unsupported) => self.counters.unsupported += 1,
            Ok(Inbound::Tcp(seg)) => self.tcp_in(now, seg, packet),
            Ok(Inbound::Udp { src, dst, payload }) => self.udp_in(now, src, dst, payload),
            Ok(Inbound::EchoRequest {
                src,
                dst,
                ident,
                seq,
                data,
            }) => self.icmp_in(now, (src, dst, ident), seq, data, packet),
        }
    }

    fn not_unicast(ip: Ipv4Addr) -> bool {
        ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified()
    }

    fn tcp_in(&mut self, now: Instant, seg: TcpSegment, packet: &[u8]) {
        let key = (seg.src, seg.dst);
        if let Some(slot) = self.tcp.get(&key) {
            if let Some(Slot::Tcp(flow)) = self.slots.get_mut(slot) {
                flow.activity.to_host(now, 0);
                match flow.phase {
                    TcpPhase::Spliced(_) => self.stack.push(packet.to_vec()),
                    // The guest gave up before the host answered.
                    TcpPhase::Connecting { .. } if seg.rst => self.doomed.push(slot),
                    // A retransmitted SYN: the held one stands.
                    TcpPhase::Connecting { .. } => {}
                }
            }
            return;
        }
        if seg.rst {
            return;
        }
        if !seg.syn || seg.ack {
            self.counters.tcp_no_flow += 1;
            self.push_out(Some(packet::build_tcp_rst(&seg)));
            return;
        }
        if Self::not_unicast(*seg.dst.ip()) {
            self.counters.broadcast_dropped += 1;
            return;
        }
        if !self.tcp.has_room() {
            self.counters.refused_tcp_full += 1;
            self.push_out(Some(packet::build_tcp_rst(&seg)));
            return;
        }
        if self.pending_connects >= self.limits.max_pending_connects {
            self.counters.refused_pending_full += 1;
            self.push_out(Some(packet::build_tcp_rst(&seg)));
            return;
        }
        let target = SocketAddr::V4(SocketAddrV4::new(
            self.target_ip(*seg.dst.ip()),
            seg.dst.port(),
        ));
        let stream = match TcpStream::connect(target) {
            Ok(s) => s,
            Err(e) => {
                self.answer_connect_failure(&seg, packet, Some(&e));
                return;
            }
        };
        let slot = self.slots.insert(Slot::Tcp(TcpFlow {
            guest: seg.src,
            seen: seg.dst,
            target,
            inbound: false,
            stream,
            registered: false,
            phase: TcpPhase::Connecting {
                syn: packet.to_vec(),
                seg,
                deadline: now + CONNECT_TIMEOUT,
            },
            syn_deadline: None,
            established: false,
            readable: true,
            writable: true,
            host_eof: false,
            host_shut: false,
            host_dead: false,
            activity: Activity::new(now, IdleRule::Never),
        }));
        let _ = self.tcp.insert(key, slot);
        self.pending_connects += 1;
        self.unregistered.push(slot);
        self.counters.tcp_opened += 1;
    }

    /// Tells the guest its connection failed the way a real network would:
    /// a reset for a refusal, an ICMP unreachable for an unreachable or
    /// silent destination (`None` is the connect timeout).
    fn answer_connect_failure(&mut self, seg: &TcpSegment, syn: &[u8], err: Option<&io::Error>) {
        let from = self.forward_source;
        let unreachable = |reason| packet::build_unreachable(from, reason, syn);
        let answer = match err.and_then(|e| e.raw_os_error()) {
            Some(libc::ECONNREFUSED) => {
                self.counters.connect_refused += 1;
                Some(packet::build_tcp_rst(seg))
            }
            Some(libc::ENETUNREACH) => {
                self.counters.connect_unreachable += 1;
                unreachable(Icmpv4DstUnreachable::NetUnreachable)
            }
            Some(libc::EHOSTUNREACH) => {
                self.counters.connect_unreachable += 1;
                unreachable(Icmpv4DstUnreachable::HostUnreachable)
            }
            None | Some(libc::ETIMEDOUT) => {
                self.counters.connect_timeout += 1;
                unreachable(Icmpv4DstUnreachable::HostUnreachable)
            }
            Some(_) => {
                self.counters.connect_failed += 1;
                Some(packet::build_tcp_rst(seg))
            }
        };
        self.push_out(answer);
    }

    fn udp_in(&mut self, now: Instant, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) {
        if Self::not_unicast(*dst.ip()) {
            self.counters.broadcast_dropped += 1;
            return;
        }
        let key = (src, dst);
        let slot = match self.udp.get(&key) {
            Some(slot) => slot,
            None => {
                if !self.udp.has_room() {
                    self.counters.refused_udp_full += 1;
                    return;
                }
                let target =
                    SocketAddr::V4(SocketAddrV4::new(self.target_ip(*dst.ip()), dst.port()));
                let socket = match UdpSocket::bind(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::UNSPECIFIED,
                    0,
                )))
                .and_then(|s| s.connect(target).map(|()| s))
                {
                    Ok(s) => s,
                    Err(_) => {
                        self.counters.send_failed += 1;
                        return;
                    }
                };
                let slot = self.slots.insert(Slot::Udp(UdpFlow {
                    guest: src,
                    seen: dst,
                    target,
                    host: UdpHost::Own {
                        socket,
                        registered: false,
                        readable: true,
                    },
                    activity: Activity::new(now, IdleRule::Udp),
                }));
                let _ = self.udp.insert(key, slot);
                self.unregistered.push(slot);
                self.counters.udp_opened += 1;
                slot
            }
        };
        let Some(Slot::Udp(flow)) = self.slots.get(slot) else {
            return;
        };
        let sent = match &flow.host {
            UdpHost::Own { socket, .. } => socket.send(payload),
            UdpHost::Forwarded { listener, peer } => match self.slots.get(*listener) {
                Some(Slot::UdpListen { socket, .. }) => socket.send_to(payload, *peer),
                _ => Err(ErrorKind::NotConnected.into()),
            },
        };
        match sent {
            Ok(n) => {
                self.counters.bytes_to_host += n as u64;
                if let Some(Slot::Udp(flow)) = self.slots.get_mut(slot) {
                    flow.activity.to_host(now, n);
                }
            }
            Err(_) => self.counters.send_failed += 1,
        }
    }

    fn icmp_in(&mut self, now: Instant, key: IcmpKey, seq: u16, data: &[u8], packet: &[u8]) {
        let (src, dst, ident) = key;
        if Self::not_unicast(dst) {
            self.counters.broadcast_dropped += 1;
            return;
        }
        let slot = match self.icmp.get(&key) {
            Some(slot) => slot,
            None => {
                if !self.icmp.has_room() {
                    self.counters.refused_icmp_full += 1;
                    return;
                }
                let target = self.target_ip(dst);
                let socket = match ping_socket(target) {
                    Ok(s) => s,
                    Err(e) => {
                        if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) {
                            // The documented behaviour when the host's
                            // ping_group_range excludes us.
                            self.counters.icmp_prohibited += 1;
                            let answer = packet::build_unreachable(
                                self.forward_source,
                                Icmpv4DstUnreachable::CommProhibited,
                                packet,
                            );
                            self.push_out(answer);
                        } else {
                            self.counters.send_failed += 1;
                        }
                        return;
                    }
                };
                let slot = self.slots.insert(Slot::Icmp(IcmpFlow {
                    guest: src,
                    seen: dst,
                    ident,
                    target,
                    socket,
                    registered: false,
                    readable: true,
                    activity: Activity::new(now, IdleRule::Icmp),
                }));
                let _ = self.icmp.insert(key, slot);
                self.unregistered.push(slot);
                self.counters.icmp_opened += 1;
                slot
            }
        };
        let Some(Slot::Icmp(flow)) = self.slots.get_mut(slot) else {
            return;
        };
        let body = packet::build_echo_request_body(ident, seq, data);
        match flow.socket.send(&body) {
            Ok(_) => {
                flow.activity.to_host(now, data.len());
                self.counters.bytes_to_host += data.len() as u64;
            }
            Err(_) => self.counters.send_failed += 1,
        }
    }

    /// IPv4 packets for the router to take in through its host interface
    /// (replies to guests), at most `max` (and never more than a batch) per call;
    /// returns how many were delivered, so the caller can pace them to the
    /// room it has.
    pub(crate) fn receive(
        &mut self,
        _now: Instant,
        max: usize,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> usize {
        let mut n = 0;
        while n < max.min(MAX_DELIVER) {
            let Some(p) = self.stack.device().pop_tx() else {
                break;
            };
            self.counters.packets_to_guests += 1;
            deliver(&p);
            n += 1;
        }
        n
    }

    /// A readiness event for one of the uplink's sockets.
    pub(crate) fn ready(
        &mut self,
        now: Instant,
        _registry: &Registry,
        token: Token,
        readable: bool,
        writable: bool,
    ) {
        let Some(key) = token.0.checked_sub(self.base) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let mut connecting = false;
        match slot {
            Slot::Tcp(flow) => {
                flow.readable |= readable;
                flow.writable |= writable;
                connecting =
                    matches!(flow.phase, TcpPhase::Connecting { ref syn, .. } if !syn.is_empty());
            }
            Slot::Udp(UdpFlow {
                host: UdpHost::Own { readable: r, .. },
                ..
            }) => *r |= readable,
            Slot::Udp(_) => {}
            Slot::Icmp(flow) => flow.readable |= readable,
            Slot::TcpListen { readable: r, .. } | Slot::UdpListen { readable: r, .. } => {
                *r |= readable
            }
        }
        if connecting {
            self.check_connect(now, key);
        }
    }

    /// Finishes a host connect that may have completed: the held SYN goes
    /// to the stack, or the guest is told why not.
    fn check_connect(&mut self, now: Instant, key: usize) {
        let Some(Slot::Tcp(flow)) = self.slots.get_mut(key) else {
            return;
        };
        let outcome = match flow.stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match flow.stream.peer_addr() {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotConnected => return,
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => return,
                Err(e) => Err(e),
            },
        };
        let TcpPhase::Connecting { syn, seg, .. } = std::mem::replace(
            &mut flow.phase,
            TcpPhase::Connecting {
                syn: Vec::new(),
                seg: TcpSegment {
                    src: flow.guest,
                    dst: flow.seen,
                    syn: true,
                    ack: false,
                    rst: false,
                    fin: false,
                    seq: 0,
                    ack_number: 0,
                    payload_len: 0,
                },
                deadline: now,
            },
        ) else {
            return;
        };
        self.pending_connects = self.pending_connects.saturating_sub(1);
        let seen = flow.seen;
        match outcome {
            Ok(()) => match self.stack.accept(now, seen, syn) {
                Ok(handle) => {
                    if let Some(Slot::Tcp(flow)) = self.slots.get_mut(key) {
                        flow.phase = TcpPhase::Spliced(handle);
                    }
                }
                Err(_) => {
                    self.counters.connect_failed += 1;
                    self.doomed.push(key);
                }
            },
            Err(e) => {
                self.answer_connect_failure(&seg, &syn, Some(&e));
                self.doomed.push(key);
            }
        }
    }

    /// Runs after `send`/`ready`/timeouts: registrations, host connects,
    /// datagram sockets, the TCP stack and the splices, expiry.
    pub(crate) fn poll(&mut self, now: Instant, registry: &Registry) {
        self.register(registry);
        self.connect_deadlines(now);
        self.serve_sockets(now, registry);
        self.stack.poll(now);
        self.splice_all(now);
        self.stack.poll(now);
        self.expire(now);
        let doomed = std::mem::take(&mut self.doomed);
        for key in doomed {
            self.remove(registry, key);
        }
        self.compute_wake(now);
    }

    fn register(&mut self, registry: &Registry) {
        let pending = std::mem::take(&mut self.unregistered);
        for key in pending {
            let token = Token(self.base + key);
            let result = match self.slots.get_mut(key) {
                Some(Slot::Tcp(flow)) if !flow.registered => {
                    flow.registered = true;
                    registry.register(
                        &mut flow.stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    )
                }
                Some(Slot::Udp(UdpFlow {
                    host:
                        UdpHost::Own {
                            socket, registered, ..
                        },
                    ..
                })) if !*registered => {
                    *registered = true;
                    registry.register(socket, token, Interest::READABLE)
                }
                Some(Slot::Icmp(flow)) if !flow.registered => {
                    flow.registered = true;
                    registry.register(&mut flow.socket, token, Interest::READABLE)
                }
                _ => Ok(()),
            };
            if result.is_err() {
                // Not registered after all: removal must not deregister.
                match self.slots.get_mut(key) {
                    Some(Slot::Tcp(f)) => f.registered = false,
                    Some(Slot::Icmp(f)) => f.registered = false,
                    Some(Slot::Udp(UdpFlow {
                        host: UdpHost::Own { registered, .. },
                        ..
                    })) => *registered = false,
                    _ => {}
                }
                self.counters.send_failed += 1;
                self.doomed.push(key);
            }
        }
    }

    fn connect_deadlines(&mut self, now: Instant) {
        let mut late = Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            if let Slot::Tcp(flow) = slot {
                match &flow.phase {
                    TcpPhase::Connecting { deadline, .. } if now >= *deadline => late.push(key),
                    TcpPhase::Spliced(h) if flow.syn_deadline.is_some_and(|d| now >= d) => {
                        flow.syn_deadline = None;
                        let socket = self.stack.socket(*h);
                        if socket.state() == State::SynSent {
                            socket.abort();
                        }
                    }
                    _ => {}
                }
            }
        }
        for key in late {
            if let Some(Slot::Tcp(flow)) = self.slots.get_mut(key)
                && let TcpPhase::Connecting { syn, seg, .. } = &flow.phase
            {
                let (syn, seg) = (syn.clone(), *seg);
                self.pending_connects = self.pending_connects.saturating_sub(1);
                flow.phase = TcpPhase::Connecting {
                    syn: Vec::new(),
                    seg,
                    deadline: Instant::from_micros(u64::MAX),
                };
                self.answer_connect_failure(&seg, &syn, None);
                self.doomed.push(key);
            }
        }
    }

    /// Serves listeners and datagram sockets marked readable, as far as
    /// the queue toward the router has room.
    fn serve_sockets(&mut self, now: Instant, registry: &Registry) {
        let keys: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, s)| match s {
                Slot::TcpListen { readable, .. } | Slot::UdpListen { readable, .. } => *readable,
                Slot::Udp(UdpFlow {
                    host: UdpHost::Own { readable, .. },
                    ..
                }) => *readable,
                Slot::Icmp(f) => f.readable,
                _ => false,
            })
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            match self.slots.get(key) {
                Some(Slot::TcpListen { .. }) => self.accept_tcp(now, registry, key),
                Some(Slot::UdpListen { .. }) => self.serve_udp_listener(now, key),
                Some(Slot::Udp(_)) => self.serve_udp(now, key),
                Some(Slot::Icmp(_)) => self.serve_icmp(now, key),
                _ => {}
            }
        }
    }

    fn accept_tcp(&mut self, now: Instant, registry: &Registry, key: usize) {
        for _ in 0..MAX_PER_SOCKET {
            let Some(Slot::TcpListen {
                listener,
                guest,
                readable,
            }) = self.slots.get_mut(key)
            else {
                return;
            };
            let guest = *guest;
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    *readable = false;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // EMFILE and friends: try again on the next poll.
                    return;
                }
            };
            if !self.tcp.has_room() {
                self.counters.refused_tcp_full += 1;
                continue;
            }
            let fs = self.forward_source;
            let tcp = &self.tcp;
            let Some(port) = self
                .ports
                .allocate(|p| tcp.get(&(guest, SocketAddrV4::new(fs, p))).is_some())
            else {
                self.counters.refused_tcp_full += 1;
                continue;
            };
            let local = SocketAddrV4::new(fs, port);
            let Ok(handle) = self.stack.connect(now, local, guest) else {
                self.counters.connect_failed += 1;
                continue;
            };
            let slot = self.slots.vacant_key();
            let token = Token(self.base + slot);
            let registered = registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_ok();
            self.slots.insert(Slot::Tcp(TcpFlow {
                guest,
                seen: local,
                target: peer,
                inbound: true,
                stream,
                registered,
                phase: TcpPhase::Spliced(handle),
                syn_deadline: Some(now + CONNECT_TIMEOUT),
                established: false,
                readable: true,
                writable: true,
                host_eof: false,
                host_shut: false,
                host_dead: false,
                activity: Activity::new_inbound(now, IdleRule::Never),
            }));
            let _ = self.tcp.insert((guest, local), slot);
            self.counters.tcp_opened += 1;
        }
    }

    fn serve_udp_listener(&mut self, now: Instant, key: usize) {
        for _ in 0..MAX_PER_SOCKET {
            if !self.stack.device_ref().tx_has_room() {
                return;
            }
            let Some(Slot::UdpListen {
                socket,
                guest,
                peers,
                readable,
            }) = self.slots.get_mut(key)
            else {
                return;
            };
            let guest = *guest;
            let (n, peer) = match socket.recv_from(&mut self.scratch) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    *readable = false;
                    return;
                }
                Err(_) => continue,
            };
            let existing = peers.get(&peer).copied();
            let flow_key = match existing {
                Some(k) => k,
                None => {
                    if !self.udp.has_room() {
                        self.counters.refused_udp_full += 1;
                        continue;
                    }
                    let fs = self.forward_source;
                    let (tcp, udp) = (&self.tcp, &self.udp);
                    let Some(port) = self.ports.allocate(|p| {
                        let seen = SocketAddrV4::new(fs, p);
                        udp.get(&(guest, seen)).is_some() || tcp.get(&(guest, seen)).is_some()
                    }) else {
                        self.counters.refused_udp_full += 1;
                        continue;
                    };
                    let seen = SocketAddrV4::new(fs, port);
                    let k = self.slots.insert(Slot::Udp(UdpFlow {
                        guest,
                        seen,
                        target: peer,
                        host: UdpHost::Forwarded {
                            listener: key,
                            peer,
                        },
                        activity: Activity::new_inbound(now, IdleRule::Udp),
                    }));
                    let _ = self.udp.insert((guest, seen), k);
                    if let Some(Slot::UdpListen { peers, .. }) = self.slots.get_mut(key) {
                        peers.insert(peer, k);
                    }
                    self.counters.udp_opened += 1;
                    k
                }
            };
            // The peer opened this flow: the guest answering it is the reply.
            self.datagram_to_guest(now, flow_key, n);
        }
    }

    fn serve_udp(&mut self, now: Instant, key: usize) {
        for _ in 0..MAX_PER_SOCKET {
            if !self.stack.device_ref().tx_has_room() {
                return;
            }
            let Some(Slot::Udp(flow)) = self.slots.get_mut(key) else {
                return;
            };
            let UdpHost::Own {
                socket, readable, ..
            } = &mut flow.host
            else {
                return;
            };
            let n = match socket.recv(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    *readable = false;
                    return;
                }
                // ICMP errors surface as ECONNREFUSED and the like.
                Err(_) => continue,
            };
            self.datagram_to_guest(now, key, n);
        }
    }

    /// Hands the guest of UDP flow `key` the `n` bytes a host socket just
    /// received into the scratch buffer, from the address the guest sees;
    /// a datagram that would not fit the guest's MTU is dropped and counted.
    fn datagram_to_guest(&mut self, now: Instant, key: usize, n: usize) {
        let Some(Slot::Udp(flow)) = self.slots.get_mut(key) else {
            return;
        };
        if packet::IPV4_HEADER_LEN + packet::UDP_HEADER_LEN + n > self.mtu {
            self.counters.oversize_dropped += 1;
            return;
        }
        flow.activity.to_guest(now, n);
        let p = packet::build_udp(flow.seen, flow.guest, &self.scratch[..n]);
        self.counters.bytes_to_guest += n as u64;
        self.push_out(p);
    }

    fn serve_icmp(&mut self, now: Instant, key: usize) {
        for _ in 0..MAX_PER_SOCKET {
            if !self.stack.device_ref().tx_has_room() {
                return;
            }
            let Some(Slot::Icmp(flow)) = self.slots.get_mut(key) else {
                return;
            };
            let n = match flow.socket.recv(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    flow.readable = false;
                    return;
                }
                Err(_) => continue,
            };
            let Some((seq, data)) = packet::parse_echo_reply_body(&self.scratch[..n]) else {
                continue;
            };
            if packet::IPV4_HEADER_LEN + packet::ICMP_ECHO_HEADER_LEN + data.len() > self.mtu {
                self.counters.oversize_dropped += 1;
                continue;
            }
            flow.activity.to_guest(now, data.len());
            self.counters.bytes_to_guest += data.len() as u64;
            let p = packet::build_echo_reply(flow.seen, flow.guest, flow.ident, seq, data);
            self.push_out(p);
        }
    }

    /// One splice pass over every terminated connection; finished flows
    /// are queued for removal.
    fn splice_all(&mut self, now: Instant) {
        for (key, slot) in self.slots.iter_mut() {
            let Slot::Tcp(flow) = slot else {
                continue;
            };
            let TcpPhase::Spliced(handle) = flow.phase else {
                continue;
            };
            let socket = self.stack.socket(handle);
            let state = socket.state();
            if state == State::Established {
                flow.established = true;
            }
            let mut to_host = 0;
            let mut to_guest = 0;
            if flow.writable && !flow.host_dead && socket.can_recv() {
                match splice::guest_to_host(socket, &mut flow.stream) {
                    Ok(p) => {
                        to_host = p.bytes;
                        flow.writable = !p.blocked;
                    }
                    Err(_) => {
                        flow.host_dead = true;
                        socket.abort();
                    }
                }
            }
            let guest_finished = matches!(
                socket.state(),
                State::CloseWait | State::LastAck | State::Closing | State::TimeWait
            );
            if guest_finished && !flow.host_shut && !flow.host_dead && socket.recv_queue() == 0 {
                flow.host_shut = true;
                let _ = flow.stream.shutdown(Shutdown::Write);
            }
            if flow.readable && !flow.host_eof && !flow.host_dead && socket.may_send() {
                match splice::host_to_guest(socket, &mut flow.stream) {
                    Ok(p) => {
                        to_guest = p.bytes;
                        if p.blocked {
                            flow.readable = false;
                        }
                        if p.eof {
                            flow.host_eof = true;
                            socket.close();
                        }
                    }
                    Err(_) => {
                        flow.host_dead = true;
                        socket.abort();
                    }
                }
            }
            if to_host > 0 {
                flow.activity.to_host(now, to_host);
                self.counters.bytes_to_host += to_host as u64;
            }
            if to_guest > 0 {
                flow.activity.to_guest(now, to_guest);
                self.counters.bytes_to_guest += to_guest as u64;
            }
            let state = socket.state();
            let done = matches!(state, State::Closed | State::TimeWait)
                && (socket.recv_queue() == 0 || flow.host_dead);
            if done {
                if !(flow.host_eof && flow.host_shut) {
                    // Reset or refused on the guest side: pass it on.
                    set_abortive(&flow.stream);
                }
                if flow.inbound && !flow.established {
                    self.counters.forward_refused += 1;
                }
                self.doomed.push(key);
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        for (key, slot) in self.slots.iter() {
            let activity = match slot {
                Slot::Udp(f) => &f.activity,
                Slot::Icmp(f) => &f.activity,
                _ => continue,
            };
            if activity.expired(now) {
                self.doomed.push(key);
            }
        }
    }

    /// Drops one slot: its index entry, its registration, its smoltcp
    /// socket, its host socket.
    fn remove(&mut self, registry: &Registry, key: usize) {
        let Some(slot) = self.slots.try_remove(key) else {
            return;
        };
        match slot {
            Slot::Tcp(mut flow) => {
                if self.tcp.get(&(flow.guest, flow.seen)) == Some(key) {
                    self.tcp.remove(&(flow.guest, flow.seen));
                }
                match flow.phase {
                    TcpPhase::Spliced(h) => self.stack.remove(h),
                    TcpPhase::Connecting { ref syn, .. } => {
                        // Still waiting (the guest reset it): no longer pending.
                        if !syn.is_empty() {
                            self.pending_connects = self.pending_connects.saturating_sub(1);
                        }
                    }
                }
                if flow.registered {
                    let _ = registry.deregister(&mut flow.stream);
                }
                self.counters.tcp_closed += 1;
            }
            Slot::Udp(flow) => {
                if self.udp.get(&(flow.guest, flow.seen)) == Some(key) {
                    self.udp.remove(&(flow.guest, flow.seen));
                }
                match flow.host {
                    UdpHost::Own {
                        mut socket,
                        registered,
                        ..
                    } => {
                        if registered {
                            let _ = registry.deregister(&mut socket);
                        }
                    }
                    UdpHost::Forwarded { listener, peer } => {
                        if let Some(Slot::UdpListen { peers, .. }) = self.slots.get_mut(listener)
                            && peers.get(&peer) == Some(&key)
                        {
                            peers.remove(&peer);
                        }
                    }
                }
                self.counters.udp_closed += 1;
            }
            Slot::Icmp(mut flow) => {
                let k = (flow.guest, flow.seen, flow.ident);
                if self.icmp.get(&k) == Some(key) {
                    self.icmp.remove(&k);
                }
                if flow.registered {
                    let _ = registry.deregister(&mut flow.socket);
                }
                self.counters.icmp_closed += 1;
            }
            Slot::TcpListen { mut listener, .. } => {
                let _ = registry.deregister(&mut listener);
            }
            Slot::UdpListen { mut socket, .. } => {
                let _ = registry.deregister(&mut socket);
            }
        }
    }

    fn compute_wake(&mut self, now: Instant) {
        let mut wake = self.stack.poll_at(now);
        let mut earliest = |at: Instant| {
            wake = Some(wake.map_or(at, |w| w.min(at)));
        };
        let mut backlog = false;
        for (_, slot) in self.slots.iter() {
            match slot {
                Slot::Tcp(flow) => {
                    if let TcpPhase::Connecting { deadline, syn, .. } = &flow.phase
                        && !syn.is_empty()
                    {
                        earliest(*deadline);
                    }
                    if let Some(d) = flow.syn_deadline {
                        earliest(d);
                    }
                }
                Slot::Udp(f) => {
                    if let Some(at) = f.activity.expires_at() {
                        earliest(at);
                    }
                    if let UdpHost::Own { readable: true, .. } = f.host {
                        backlog = true;
                    }
                }
                Slot::Icmp(f) => {
                    if let Some(at) = f.activity.expires_at() {
                        earliest(at);
                    }
                    backlog |= f.readable;
                }
                Slot::TcpListen { readable, .. } | Slot::UdpListen { readable, .. } => {
                    backlog |= *readable;
                }
            }
        }
        self.next_wake = wake;
        self.backlog = backlog;
    }

    /// When the daemon must call [`poll`](Self::poll) next: at once while
    /// packets wait for the router or sockets wait for room, otherwise the
    /// earliest timer.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.stack.device_ref().tx_len() > 0 || self.backlog {
            return Some(Instant::ZERO);
        }
        self.next_wake
    }

    /// The flows, for `switchboard ctl conntrack`.
    pub(crate) fn flows(&self, now: Instant) -> Vec<UplinkFlowView> {
        let mut out = Vec::new();
        for (_, slot) in self.slots.iter() {
            let (proto, inbound, guest, seen, remote, state, activity) = match slot {
                Slot::Tcp(f) => {
                    let state = match f.phase {
                        TcpPhase::Connecting { .. } => "CONNECTING".to_string(),
                        TcpPhase::Spliced(h) => self.stack.socket_ref(h).state().to_string(),
                    };
                    (
                        UplinkProto::Tcp,
                        f.inbound,
                        f.guest,
                        f.seen,
                        f.target,
                        state,
                        &f.activity,
                    )
                }
                Slot::Udp(f) => (
                    UplinkProto::Udp,
                    matches!(f.host, UdpHost::Forwarded { .. }),
                    f.guest,
                    f.seen,
                    f.target,
                    if f.activity.replied {
                        "replied"
                    } else {
                        "unreplied"
                    }
                    .to_string(),
                    &f.activity,
                ),
                Slot::Icmp(f) => (
                    UplinkProto::Icmp,
                    false,
                    SocketAddrV4::new(f.guest, f.ident),
                    SocketAddrV4::new(f.seen, 0),
                    SocketAddr::V4(SocketAddrV4::new(f.target, 0)),
                    if f.activity.replied {
                        "replied"
                    } else {
                        "unreplied"
                    }
                    .to_string(),
                    &f.activity,
                ),
                _ => continue,
            };
            out.push(UplinkFlowView {
                proto,
                inbound,
                guest,
                remote_seen: seen,
                remote,
                state,
                age_secs: now.saturating_since(activity.created).as_secs(),
                idle_secs: now.saturating_since(activity.last).as_secs(),
                expires_in_secs: activity
                    .expires_at()
                    .map(|at| at.saturating_since(now).as_secs()),
                bytes_to_host: activity.bytes_to_host,
                bytes_to_guest: activity.bytes_to_guest,
            });
        }
        out
    }

    /// A copy of the counters.
    pub(crate) fn counters(&self) -> UplinkCounters {
        self.counters
    }

    /// Deregisters and closes everything (the daemon is stopping or the
    /// uplink is being replaced).
    pub(crate) fn close(&mut self, registry: &Registry) {
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(Slot::Tcp(flow)) = self.slots.get(key) {
                // Connections cut short are reset, not ended cleanly.
                set_abortive(&flow.stream);
            }
            self.remove(registry, key);
        }
        while self.stack.device().pop_tx().is_some() {}
        self.unregistered.clear();
        self.doomed.clear();
        self.pending_connects = 0;
        self.next_wake = None;
        self.backlog = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MonotonicClock;
    use smoltcp::socket::tcp as stcp;
    use std::io::{Read as _, Write as _};
    use std::sync::Mutex;
    use std::time::Duration;

    /// The tests count this process's descriptors; running them one at a
    /// time keeps them from counting each other's.
    static SERIAL: Mutex<()> = Mutex::new(());

    const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    const BASE: usize = 1 << 20;

    /// A guest (a second smoltcp stack on 10.0.2.15) wired to an uplink
    /// through `send`/`receive`, with a real mio poll for the host side.
    struct Harness {
        clock: MonotonicClock,
        poll: mio::Poll,
        events: mio::Events,
        uplink: HostUplink,
        guest: TcpStack,
        /// Non-TCP packets the uplink sent the guest.
        other: Vec<Vec<u8>>,
    }

    impl Harness {
        fn new(forwards: Vec<HostForward>) -> Harness {
            let poll = mio::Poll::new().unwrap();
            let mut config = UplinkConfig::new(GW);
            config.loopback = Some(GW);
            config.forwards = forwards;
            let uplink = HostUplink::new(config, poll.registry(), BASE).unwrap();
            Harness {
                clock: MonotonicClock::new(),
                poll,
                events: mio::Events::with_capacity(256),
                uplink,
                guest: TcpStack::new(1500, GUEST, Instant::ZERO, 7),
                other: Vec::new(),
            }
        }

        fn now(&self) -> Instant {
            self.clock.now()
        }

        /// One turn of a daemon loop plus the guest.
        fn step(&mut self) {
            let now = self.now();
            self.guest.poll(now);
            while let Some(p) = self.guest.device().pop_tx() {
                self.uplink.send(now, &p);
            }
            self.uplink.poll(now, self.poll.registry());
            self.deliver(now);
            self.guest.poll(now);
            // Wait no longer than the uplink asks (and at most 1 ms, the
            // guest has timers too).
            let wait = self
                .uplink
                .poll_timeout()
                .map_or(Duration::from_millis(1), |at| {
                    self.clock.until(at).min(Duration::from_millis(1))
                });
            self.poll.poll(&mut self.events, Some(wait)).unwrap();
            let now = self.now();
            for ev in self.events.iter() {
                self.uplink.ready(
                    now,
                    self.poll.registry(),
                    ev.token(),
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable() || ev.is_write_closed() || ev.is_error(),
                );
            }
            self.uplink.poll(now, self.poll.registry());
            self.deliver(now);
        }

        fn deliver(&mut self, now: Instant) {
            let (guest, other) = (&mut self.guest, &mut self.other);
            self.uplink.receive(now, usize::MAX, &mut |p| {
                if p.len() > 9 && p[9] == 6 {
                    guest.push(p.to_vec());
                } else {
                    other.push(p.to_vec());
                }
            });
        }

        /// Steps until `done` or a wall-clock limit.
        fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&mut Harness) -> bool) {
            let end = std::time::Instant::now() + limit;
            while std::time::Instant::now() < end {
                self.step();
                if done(self) {
                    return;
                }
            }
            panic!("condition not reached within {limit:?}");
        }

        fn connect(&mut self, local_port: u16, dst: SocketAddrV4) -> SocketHandle {
            let now = self.now();
            self.guest
                .connect(now, SocketAddrV4::new(GUEST, local_port), dst)
                .unwrap()
        }

        fn sock(&mut self, h: SocketHandle) -> &mut stcp::Socket<'static> {
            self.guest.socket(h)
        }
    }

    fn fd_count() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect()
    }

    #[test]
    fn tcp_to_the_loopback_alias_carries_a_mebibyte_each_way() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let to_host = pattern(1 << 20, 1);
        let to_guest = pattern(1 << 20, 2);
        let send_back = to_guest.clone();
        let server_thread = std::thread::spawn(move || {
            let (mut conn, peer) = server.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut writer = conn.try_clone().unwrap();
            let w = std::thread::spawn(move || {
                writer.write_all(&send_back).unwrap();
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            w.join().unwrap();
            (got, peer)
        });

        let mut h = Harness::new(Vec::new());
        let s = h.connect(40001, SocketAddrV4::new(GW, port));
        let mut sent = 0;
        let mut received = Vec::new();
        let mut closed = false;
        h.run_until(Duration::from_secs(60), |h| {
            let sock = h.sock(s);
            if sent < to_host.len() && sock.can_send() {
                sent += sock.send_slice(&to_host[sent..]).unwrap();
            }
            if sent == to_host.len() && !closed {
                sock.close();
                closed = true;
            }
            while sock.can_recv() {
                sock.recv(|b| {
                    received.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            closed
                && !sock.may_recv()
                && matches!(sock.state(), stcp::State::TimeWait | stcp::State::Closed)
        });
        let (got, peer) = server_thread.join().unwrap();
        assert_eq!(peer.ip(), std::net::IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(
            got == to_host,
            "host got {} bytes, not the guest's",
            got.len()
        );
        assert!(received == to_guest, "guest got {} bytes", received.len());
        // FIN both ways: the flow goes away by itself.
        h.run_until(Duration::from_secs(10), |h| {
            h.uplink.flows(h.now()).is_empty()
        });
        let c = h.uplink.counters();
        assert_eq!(c.tcp_opened, 1);
        assert_eq!(c.tcp_closed, 1);
        assert_eq!(c.bytes_to_host, 1 << 20);
        assert_eq!(c.bytes_to_guest, 1 << 20);
        assert_eq!(c.malformed + c.tcp_no_flow + c.connect_failed, 0);
    }

    #[test]
    fn a_closed_port_resets_the_guest() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut h = Harness::new(Vec::new());
        let s = h.connect(40002, SocketAddrV4::new(GW, port));
        h.run_until(Duration::from_secs(5), |h| {
            h.sock(s).state() == stcp::State::Closed
        });
        h.step();
        assert_eq!(h.uplink.counters().connect_refused, 1);
        assert_eq!(h.uplink.counters().tcp_closed, 1);
        assert!(h.uplink.flows(h.now()).is_empty());
    }

    #[test]
    fn udp_echo_through_the_loopback_alias() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let echo = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let port = echo.local_addr().unwrap().port();
        let echo_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, peer) = echo.recv_from(&mut buf).unwrap();
            echo.send_to(&buf[..n], peer).unwrap();
            buf[..n].to_vec()
        });
        let mut h = Harness::new(Vec::new());
        let from = SocketAddrV4::new(GUEST, 5000);
        let to = SocketAddrV4::new(GW, port);
        let pkt = packet::build_udp(from, to, b"hello uplink").unwrap();
        let now = h.now();
        h.uplink.send(now, &pkt);
        h.run_until(Duration::from_secs(10), |h| !h.other.is_empty());
        assert_eq!(echo_thread.join().unwrap(), b"hello uplink");
        let reply = h.other.remove(0);
        assert_eq!(
            packet::parse(&reply),
            Ok(Inbound::Udp {
                src: to,
                dst: from,
                payload: b"hello uplink"
            })
        );
        let flows = h.uplink.flows(h.now());
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].proto, UplinkProto::Udp);
        assert_eq!(flows[0].guest, from);
        assert_eq!(flows[0].remote_seen, to);
        assert_eq!(
            flows[0].remote,
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
        );
        assert_eq!(flows[0].state, "replied");
        assert_eq!((flows[0].bytes_to_host, flows[0].bytes_to_guest), (12, 12));
        assert!(matches!(flows[0].expires_in_secs, Some(179) | Some(180)));

        // Broadcast and multicast are dropped and counted.
        let now = h.now();
        let b = packet::build_udp(from, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67), b"x").unwrap();
        h.uplink.send(now, &b);
        let m = packet::build_udp(
            from,
            SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353),
            b"x",
        )
        .unwrap();
        h.uplink.send(now, &m);
        assert_eq!(h.uplink.counters().broadcast_dropped, 2);
        assert_eq!(h.uplink.flows(now).len(), 1);
        // 180 s after the answer the flow expires (time driven, not slept).
        let later = now + Duration::from_secs(181);
        h.uplink.poll(later, h.poll.registry());
        assert!(h.uplink.flows(later).is_empty());
        assert_eq!(h.uplink.counters().udp_closed, 1);
    }

    #[test]
    fn echo_requests_are_relayed_or_refused_as_prohibited() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let allowed = ping_socket(Ipv4Addr::LOCALHOST).is_ok();
        let mut h = Harness::new(Vec::new());
        let mut request = Vec::new();
        etherparse::PacketBuilder::ipv4(GUEST.octets(), GW.octets(), 64)
            .icmpv4_echo_request(0xbeef, 3)
            .write(&mut request, b"are you there")
            .unwrap();
        let now = h.now();
        h.uplink.send(now, &request);
        h.run_until(Duration::from_secs(5), |h| !h.other.is_empty());
        let answer = h.other.remove(0);
        if allowed {
            let reply = packet::build_echo_reply(GW, GUEST, 0xbeef, 3, b"are you there").unwrap();
            assert_eq!(answer[12..], reply[12..], "addresses, ident, seq, data");
            assert_eq!(h.uplink.counters().icmp_opened, 1);
        } else {
            assert_eq!(&answer[12..16], &GW.octets());
            assert_eq!(&answer[16..20], &GUEST.octets());
            assert_eq!((answer[20], answer[21]), (3, 13));
            assert_eq!(&answer[28..48], &request[..20]);
            assert_eq!(h.uplink.counters().icmp_prohibited, 1);
            assert!(h.uplink.flows(h.now()).is_empty());
        }
    }

    #[test]
    fn an_inbound_forward_reaches_the_guest() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let listen = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut h = Harness::new(vec![HostForward {
            proto: Proto::Tcp,
            listen,
            guest: SocketAddrV4::new(GUEST, 22),
        }]);
        let mut server = TcpStack::new_socket();
        server.listen(22).unwrap();
        let sh = h.guest.add_socket(server);
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(listen).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c.write_all(b"ssh-hello").unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            got
        });
        let mut got = Vec::new();
        let mut answered = false;
        h.run_until(Duration::from_secs(10), |h| {
            let sock = h.sock(sh);
            while sock.can_recv() {
                sock.recv(|b| {
                    got.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
            if got == b"ssh-hello" && !answered {
                // Seen from the guest, the connection comes from the gateway.
                assert_eq!(
                    sock.remote_endpoint().map(|e| e.addr),
                    Some(smoltcp::wire::IpAddress::Ipv4(GW))
                );
                sock.send_slice(b"guest-banner").unwrap();
                sock.close();
                answered = true;
            }
            answered && h.uplink.flows(h.now()).is_empty()
        });
        assert_eq!(client.join().unwrap(), b"guest-banner");
        assert_eq!(h.uplink.counters().forward_refused, 0);
    }

    /// Datagrams a guest heard: the sender it saw and the payload.
    type Heard = Vec<(SocketAddrV4, Vec<u8>)>;

    /// A guest with one smoltcp UDP socket, fed the uplink's non-TCP
    /// packets (the harness's own guest only speaks TCP).
    struct UdpGuest {
        iface: smoltcp::iface::Interface,
        device: crate::uplink::device::QueueDevice,
        sockets: smoltcp::iface::SocketSet<'static>,
        handle: SocketHandle,
    }

    impl UdpGuest {
        fn bound(port: u16) -> UdpGuest {
            use smoltcp::socket::udp;
            use smoltcp::wire::{HardwareAddress, IpCidr, Ipv4Cidr};
            let mut device = crate::uplink::device::QueueDevice::new(1500, 64);
            let mut iface = smoltcp::iface::Interface::new(
                smoltcp::iface::Config::new(HardwareAddress::Ip),
                &mut device,
                crate::uplink::stack::smol_now(Instant::ZERO),
            );
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(GUEST, 24)));
            });
            let buffer =
                || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0u8; 4096]);
            let mut socket = udp::Socket::new(buffer(), buffer());
            socket.bind((GUEST, port)).unwrap();
            let mut sockets = smoltcp::iface::SocketSet::new(Vec::new());
            let handle = sockets.add(socket);
            UdpGuest {
                iface,
                device,
                sockets,
                handle,
            }
        }

        /// Takes `packets` in, answers every datagram with `answer(payload)`
        /// and returns the packets the guest sent plus whom it heard from.
        fn exchange(
            &mut self,
            now: Instant,
            packets: Vec<Vec<u8>>,
            answer: impl Fn(&[u8]) -> Vec<u8>,
        ) -> (Vec<Vec<u8>>, Heard) {
            use smoltcp::socket::udp;
            for p in packets {
                self.device.push_rx(p);
            }
            let at = crate::uplink::stack::smol_now(now);
            self.iface.poll(at, &mut self.device, &mut self.sockets);
            let socket = self.sockets.get_mut::<udp::Socket>(self.handle);
            let mut heard = Vec::new();
            while let Ok((payload, meta)) = socket.recv() {
                let SocketAddr::V4(from) = SocketAddr::from(meta.endpoint) else {
                    panic!("the guest heard from {}", meta.endpoint);
                };
                let reply = answer(payload);
                heard.push((from, payload.to_vec()));
                socket.send_slice(&reply, meta.endpoint).unwrap();
            }
            self.iface.poll(at, &mut self.device, &mut self.sockets);
            let mut out = Vec::new();
            while let Some(p) = self.device.pop_tx() {
                out.push(p);
            }
            (out, heard)
        }
    }

    #[test]
    fn an_inbound_udp_forward_answers_each_host_peer() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let listen = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let guest_at = SocketAddrV4::new(GUEST, 53);
        let mut h = Harness::new(vec![HostForward {
            proto: Proto::Udp,
            listen,
            guest: guest_at,
        }]);
        let mut guest = UdpGuest::bound(53);
        let peers: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_nonblocking(true).unwrap();
                s
            })
            .collect();
        peers[0].send_to(b"query-one", listen).unwrap();
        peers[1].send_to(b"query-two", listen).unwrap();
        let answer = |q: &[u8]| [b"answer to ".as_slice(), q].concat();
        let mut heard = Vec::new();
        let mut got: [Option<(Vec<u8>, SocketAddr)>; 2] = [None, None];
        h.run_until(Duration::from_secs(10), |h| {
            let now = h.now();
            let inbound = std::mem::take(&mut h.other);
            let (out, seen) = guest.exchange(now, inbound, answer);
            heard.extend(seen);
            for p in out {
                h.uplink.send(now, &p);
            }
            for (peer, slot) in peers.iter().zip(got.iter_mut()) {
                let mut buf = [0u8; 64];
                if let Ok((n, from)) = peer.recv_from(&mut buf) {
                    assert!(slot.is_none(), "a second answer for one peer");
                    *slot = Some((buf[..n].to_vec(), from));
                }
            }
            got.iter().all(Option::is_some)
        });
        // Each peer got its own answer, from the forward's listen address.
        let [one, two] = got.map(Option::unwrap);
        assert_eq!(one, (b"answer to query-one".to_vec(), listen));
        assert_eq!(two, (b"answer to query-two".to_vec(), listen));
        // The guest heard both from the forward source, on two ports.
        assert_eq!(heard.len(), 2, "{heard:?}");
        heard.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(*heard[0].0.ip(), GW);
        assert_eq!(*heard[1].0.ip(), GW);
        assert_ne!(heard[0].0.port(), heard[1].0.port());
        assert_eq!(heard[0].1, b"query-one");
        assert_eq!(heard[1].1, b"query-two");
        // Two inbound flows, one per host peer.
        let mut flows = h.uplink.flows(h.now());
        flows.sort_by_key(|f| f.remote_seen);
        assert_eq!(flows.len(), 2);
        let mut expected: Vec<(SocketAddrV4, SocketAddr)> = heard
            .iter()
            .zip(&peers)
            .map(|((seen, _), peer)| (*seen, peer.local_addr().unwrap()))
            .collect();
        expected.sort_by_key(|e| e.0);
        for (flow, (seen, peer)) in flows.iter().zip(&expected) {
            assert_eq!(flow.proto, UplinkProto::Udp);
            assert!(flow.inbound);
            assert_eq!(flow.guest, guest_at);
            assert_eq!(flow.remote_seen, *seen);
            assert_eq!(flow.remote, *peer);
            assert_eq!(flow.state, "replied");
            assert_eq!((flow.bytes_to_guest, flow.bytes_to_host), (9, 19));
        }
        let c = h.uplink.counters();
        assert_eq!(
            (c.udp_opened, c.bytes_to_guest, c.bytes_to_host),
            (2, 18, 38)
        );
        assert_eq!(c.send_failed + c.oversize_dropped + c.refused_udp_full, 0);
        // A second datagram from a known peer reuses its flow.
        peers[0].send_to(b"again", listen).unwrap();
        h.run_until(Duration::from_secs(10), |h| {
            h.uplink.counters().bytes_to_guest == 23
        });
        assert_eq!(h.uplink.counters().udp_opened, 2);
        assert_eq!(h.uplink.flows(h.now()).len(), 2);
    }

    #[test]
    fn a_forward_the_guest_refuses_closes_the_host_connection() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let listen = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let mut h = Harness::new(vec![HostForward {
            proto: Proto::Tcp,
            listen,
            guest: SocketAddrV4::new(GUEST, 23),
        }]);
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(listen).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 8];
            c.read(&mut buf)
        });
        // Nothing listens on the guest's port 23: smoltcp resets the SYN.
        h.run_until(Duration::from_secs(10), |h| {
            h.uplink.counters().forward_refused == 1
        });
        let r = client.join().unwrap();
        assert!(matches!(r, Ok(0)) || r.is_err(), "{r:?}");
        assert!(h.uplink.flows(h.now()).is_empty());
    }

    #[test]
    fn two_hundred_short_connections_leave_nothing_behind() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        const N: usize = 200;
        let server_thread = std::thread::spawn(move || {
            for _ in 0..N {
                let (mut c, _) = server.accept().unwrap();
                c.write_all(b"x").unwrap();
            }
        });
        let mut h = Harness::new(Vec::new());
        // Warm up lazily created descriptors before counting.
        h.step();
        let before = fd_count();
        for i in 0..N {
            let s = h.connect(20000 + i as u16, SocketAddrV4::new(GW, port));
            let mut got = false;
            h.run_until(Duration::from_secs(10), |h| {
                let sock = h.sock(s);
                if !got && sock.can_recv() {
                    let mut b = [0u8; 4];
                    assert_eq!(sock.recv_slice(&mut b).unwrap(), 1);
                    assert_eq!(b[0], b'x');
                    got = true;
                    sock.close();
                }
                got && matches!(sock.state(), stcp::State::TimeWait | stcp::State::Closed)
            });
            h.guest.remove(s);
        }
        server_thread.join().unwrap();
        h.run_until(Duration::from_secs(10), |h| {
            h.uplink.flows(h.now()).is_empty()
        });
        let after = fd_count();
        assert!(
            after <= before + 4,
            "descriptors before {before}, after {after}"
        );
        let c = h.uplink.counters();
        assert_eq!((c.tcp_opened, c.tcp_closed), (N as u64, N as u64));
    }

    #[test]
    fn caps_refuse_new_flows() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let poll = mio::Poll::new().unwrap();
        let mut config = UplinkConfig::new(GW);
        config.max_udp = 1;
        config.max_tcp = 0;
        let mut up = HostUplink::new(config, poll.registry(), BASE).unwrap();
        let now = Instant::from_secs(1);
        let from = SocketAddrV4::new(GUEST, 5000);
        for port in [9, 10, 11] {
            let p = packet::build_udp(from, SocketAddrV4::new(Ipv4Addr::LOCALHOST, port), b"d")
                .unwrap();
            up.send(now, &p);
        }
        assert_eq!(up.counters().udp_opened, 1);
        assert_eq!(up.counters().refused_udp_full, 2);
        // TCP beyond the cap is answered with a reset.
        let mut syn = Vec::new();
        etherparse::PacketBuilder::ipv4(GUEST.octets(), [127, 0, 0, 1], 64)
            .tcp(40000, 9, 100, 1000)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
        up.send(now, &syn);
        assert_eq!(up.counters().refused_tcp_full, 1);
        let mut out = Vec::new();
        up.receive(now, usize::MAX, &mut |p| out.push(p.to_vec()));
        assert_eq!(out.len(), 1);
        let Ok(Inbound::Tcp(rst)) = packet::parse(&out[0]) else {
            panic!("not tcp")
        };
        assert!(rst.rst && rst.ack);
        assert_eq!(rst.ack_number, 101);
        // Fragments and garbage are counted, not relayed.
        up.send(now, &[0x45, 0, 0, 1]);
        assert_eq!(up.counters().malformed, 1);
        // Expiry at the exact deadline: 30 s for an unanswered flow.
        up.poll(now + Duration::from_micros(29_999_999), poll.registry());
        assert_eq!(up.flows(now).len(), 1);
        up.poll(now + Duration::from_secs(30), poll.registry());
        assert!(up.flows(now).is_empty());
        up.close(poll.registry());
    }

    #[test]
    fn a_connect_that_does_not_finish_in_ten_seconds_is_unreachable() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = server.local_addr().unwrap().port();
        let poll = mio::Poll::new().unwrap();
        let mut up = HostUplink::new(UplinkConfig::new(GW), poll.registry(), BASE).unwrap();
        let t0 = Instant::from_secs(100);
        let mut syn = Vec::new();
        etherparse::PacketBuilder::ipv4(GUEST.octets(), [127, 0, 0, 1], 64)
            .tcp(40000, port, 100, 1000)
            .syn()
            .write(&mut syn, &[])
            .unwrap();
        up.send(t0, &syn);
        up.poll(t0, poll.registry());
        assert_eq!(up.poll_timeout(), Some(t0 + CONNECT_TIMEOUT));
        let flows = up.flows(t0);
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].state, "CONNECTING");
        // The held SYN was not answered while the host connect is pending.
        let mut out = Vec::new();
        up.receive(t0, usize::MAX, &mut |p| out.push(p.to_vec()));
        assert!(out.is_empty());
        // Its readiness never delivered: at the deadline the guest hears
        // "host unreachable" from the gateway, quoting its SYN.
        let late = t0 + CONNECT_TIMEOUT;
        up.poll(late, poll.registry());
        up.receive(late, usize::MAX, &mut |p| out.push(p.to_vec()));
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0][12..16], &GW.octets());
        assert_eq!((out[0][20], out[0][21]), (3, 1));
        assert_eq!(&out[0][28..48], &syn[..20]);
        assert_eq!(up.counters().connect_timeout, 1);
        assert!(up.flows(late).is_empty());
        up.close(poll.registry());
    }
}
