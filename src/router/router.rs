//! One router: the state machine that turns frames in into frames out.
//!
//! A [`Router`] is fed every frame its segments deliver to its interfaces'
//! ports ([`Router::handle_frame`]) and the passing of time
//! ([`Router::handle_timeout`]); it answers ARP for its addresses (and, per
//! interface, for hosts it routes to), answers pings, forwards IPv4 by
//! longest-prefix match with the TTL and header checksum updated, fragments
//! or refuses packets too big for the next link, and reports trouble to the
//! sender with rate-limited ICMP errors. Every frame it emits goes into a
//! [`Transmit`] sink, which the daemon feeds back into the segments.
//!
//! The forwarding fast path copies the packet once, straight into the
//! output buffer, and rewrites it there: Ethernet addresses, TTL, and the
//! checksum by incremental update (RFC 1624). Nothing is allocated per
//! packet unless the next hop is still being resolved.

use super::IfaceId;
use super::arp_cache::{ArpCache, ArpConfig, ArpEntryView, ArpEvent, ArpStats, Resolution};
use super::counters::RouterCounters;
use super::fragment::Fragmenter;
use super::icmp::{self, IcmpError};
use super::interface::InterfaceConfig;
use super::nat::conntrack::ConntrackConfig;
use super::nat::rewrite::Classified;
use super::nat::rules::{ForwardConfig, MasqueradeConfig, MasqueradeRule, NatRules, PortForward};
use super::nat::translator::{Egress, Ingress, Nat, Translation};
use super::rate_limit::RateLimiter;
use super::route_table::{Route, RouteError, RouteKind, RouteTable};
use super::services::{
    DHCP_SERVER_PORT, DNS_PORT, ServiceSend, Services, ServicesConfig, UpstreamQuery,
};
use crate::mac::MacAddr;
use crate::time::Instant;
use ipnet::Ipv4Net;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    UdpPacket, UdpRepr,
};
use std::fmt;
use std::net::Ipv4Addr;
use std::net::{SocketAddr, SocketAddrV4};

/// Length of the Ethernet header the router writes (it never tags).
pub const ETHERNET_HEADER_LEN: usize = 14;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;

/// The TTL of packets the router originates (Linux's default).
const DEFAULT_TTL: u8 = 64;

/// Where a router's frames go. The daemon implements it over its frame
/// batches; tests collect into vectors.
pub trait Transmit {
    /// Space for the next frame, or `None` when the output is full (the
    /// frame is then dropped and counted). Until [`send`](Self::send) is
    /// called, every call returns the same space with its contents intact,
    /// so a frame may be written in steps.
    fn buffer(&mut self) -> Option<&mut [u8]>;

    /// Sends the first `len` bytes of the space out of interface `iface`.
    fn send(&mut self, iface: IfaceId, len: usize);

    /// Sends a frame that is the frame being handled, rewritten (addresses,
    /// TTL, header checksum). Whatever its sender left for the hardware to
    /// do (a super-frame to cut into segments, an L4 checksum to fill in)
    /// still applies to it, so a sink that carries such work along (the
    /// daemon's, for taps with offloads) attaches it here.
    fn send_forwarded(&mut self, iface: IfaceId, len: usize) {
        self.send(iface, len);
    }

    /// Sends the IPv4 packet of `len` bytes that starts after the Ethernet
    /// header in the space (`buffer()[ETHERNET_HEADER_LEN..]`) out of the
    /// router's host interface, which carries packets to the host uplink
    /// rather than frames to a segment. A sink without a host uplink never
    /// gets one.
    fn send_packet(&mut self, iface: IfaceId, len: usize) {
        let _ = (iface, len);
    }
}

/// A static route as configured or typed: the interface by name, and
/// either may be left for the router to work out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    /// Destination network (`0.0.0.0/0` for the default route).
    pub dest: Ipv4Net,
    /// Next hop; `None` means the destination is on the link itself.
    pub gateway: Option<Ipv4Addr>,
    /// Interface name; `None` means "the one whose subnet holds the gateway".
    pub iface: Option<String>,
    /// Preference among routes to the same prefix: lower wins.
    pub metric: u32,
}

impl StaticRoute {
    /// Reads a route destination as people write it: `default`, a network
    /// (`10.1.0.0/16`; host bits are cleared), or a bare address (a host
    /// route, `/32`).
    pub fn parse_destination(s: &str) -> Result<Ipv4Net, String> {
        let s = s.trim();
        if s == "default" {
            return Ok(Ipv4Net::default());
        }
        if s.contains('/') {
            s.parse::<Ipv4Net>()
                .map(|n| n.trunc())
                .map_err(|_| format!("{s:?} is not an IPv4 network like 10.1.0.0/16"))
        } else {
            s.parse::<Ipv4Addr>()
                .map(Ipv4Net::from)
                .map_err(|_| format!("{s:?} is not an IPv4 address, a network or \"default\""))
        }
    }
}

/// Everything needed to build a router.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The router's name (its VRF name, in effect).
    pub name: String,
    /// Its interfaces, in order: `IfaceId(i)` is the `i`-th.
    pub interfaces: Vec<InterfaceConfig>,
    /// Static routes on top of the connected ones.
    pub routes: Vec<StaticRoute>,
    /// Neighbour cache tuning.
    pub arp: ArpConfig,
    /// Address translation; none when both rule lists are empty.
    pub nat: NatConfig,
    /// DHCP servers and the DNS forwarder on the router's addresses.
    pub services: ServicesConfig,
    /// The host interface (to the unprivileged host uplink), if any.
    pub host: Option<HostInterfaceConfig>,
}

/// The router's interface to the host uplink: IPv4 packets, no Ethernet,
/// no ARP. Routes name it like any interface (`dev = "host"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterfaceConfig {
    /// Its name (`host` in network blocks).
    pub name: String,
    /// The largest packet it takes.
    pub mtu: u16,
    /// One of the router's own addresses whose TCP and UDP traffic goes to
    /// the host's loopback through the uplink (slirp's 10.0.2.2), if any.
    pub loopback: Option<Ipv4Addr>,
}

/// A router's NAT as configured.
#[derive(Debug, Clone, Default)]
pub struct NatConfig {
    /// Masquerade rules, first match wins.
    pub masquerade: Vec<MasqueradeConfig>,
    /// Port forwards, first match wins.
    pub forwards: Vec<ForwardConfig>,
    /// Flow table size, port range and timeouts.
    pub conntrack: ConntrackConfig,
}

/// A request the router cannot carry out, said so a person can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError(pub String);

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RouterError {}

/// One IPv4 router with its own routing table and ARP cache (a VRF).
pub struct Router {
    name: String,
    interfaces: Vec<InterfaceConfig>,
    /// Every address of every interface, for "is this packet for me".
    local: Vec<(Ipv4Addr, IfaceId)>,
    routes: RouteTable,
    arp: ArpCache,
    limiter: RateLimiter,
    counters: RouterCounters,
    next_ip_id: u16,
    /// A packet being fragmented (reused; grows to the largest MTU seen).
    scratch: Vec<u8>,
    /// Events from the ARP cache's timers (reused).
    arp_events: Vec<ArpEvent>,
    /// Address translation, when the router has rules.
    nat: Option<Nat>,
    /// DHCP and DNS, when the router serves them.
    services: Option<Box<Services>>,
    /// Datagrams the services want sent (reused).
    service_out: Vec<ServiceSend>,
    /// The Ethernet source of the frame being handled (a DHCP client with
    /// no address yet is answered at it).
    frame_src: MacAddr,
    /// The host interface, when the router has one (the last interface).
    host: Option<IfaceId>,
    /// The address whose TCP/UDP goes to the host's loopback.
    host_loopback: Option<Ipv4Addr>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("name", &self.name)
            .field("interfaces", &self.interfaces)
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Router {
    /// Builds a router: connected routes from the interface addresses, then
    /// the static routes, each checked.
    pub fn new(config: RouterConfig) -> Result<Router, RouterError> {
        if config.interfaces.len() > usize::from(u16::MAX) {
            return Err(RouterError(format!(
                "router {:?} has too many interfaces",
                config.name
            )));
        }
        let mut router = Router {
            name: config.name,
            interfaces: Vec::new(),
            local: Vec::new(),
            routes: RouteTable::new(),
            arp: ArpCache::new(config.arp),
            limiter: RateLimiter::default(),
            counters: RouterCounters::default(),
            next_ip_id: 1,
            scratch: Vec::new(),
            arp_events: Vec::new(),
            nat: None,
            services: None,
            service_out: Vec::new(),
            frame_src: MacAddr([0; 6]),
            host: None,
            host_loopback: None,
        };
        for (i, iface) in config.interfaces.into_iter().enumerate() {
            if router.interfaces.iter().any(|o| o.name == iface.name) {
                return Err(RouterError(format!(
                    "router {:?}: interface {:?} is defined twice",
                    router.name, iface.name
                )));
            }
            if !(68..=65520).contains(&iface.mtu) {
                return Err(RouterError(format!(
                    "router {:?}: interface {:?}: mtu {} is outside 68..=65520",
                    router.name, iface.name, iface.mtu
                )));
            }
            let id = IfaceId(i as u16);
            for net in &iface.addresses {
                if router.local.iter().any(|(a, _)| *a == net.addr()) {
                    return Err(RouterError(format!(
                        "router {:?}: address {} is used twice",
                        router.name,
                        net.addr()
                    )));
                }
                router.local.push((net.addr(), id));
                // Two interfaces on one subnet: the first one's route wins
                // the lookup; the second is still listed.
                let _ = router.routes.insert(Route {
                    dest: net.trunc(),
                    gateway: None,
                    iface: id,
                    metric: 0,
                    kind: RouteKind::Connected,
                });
            }
            router.interfaces.push(iface);
        }
        if let Some(h) = config.host {
            if router.interfaces.iter().any(|o| o.name == h.name) {
                return Err(RouterError(format!(
                    "router {:?}: the host interface's name {:?} is taken",
                    router.name, h.name
                )));
            }
            if let Some(a) = h.loopback
                && !router.local.iter().any(|(l, _)| *l == a)
            {
                return Err(RouterError(format!(
                    "router {:?}: host loopback address {a} is not one of the router's",
                    router.name
                )));
            }
            let id = IfaceId(router.interfaces.len() as u16);
            router.interfaces.push(InterfaceConfig {
                name: h.name,
                mac: MacAddr([0; 6]),
                addresses: Vec::new(),
                mtu: h.mtu.max(68),
                proxy_arp: false,
            });
            router.host = Some(id);
            router.host_loopback = h.loopback;
        }
        for route in config.routes {
            router.add_route(route)?;
        }
        let rules = router.resolve_nat(&config.nat)?;
        if !rules.is_empty() {
            router.nat = Some(Nat::new(rules, config.nat.conntrack));
        }
        if !config.services.is_empty() {
            let services = Services::new(config.services, |n| router.iface_by_name(n))
                .map_err(|e| RouterError(format!("router {:?}: {e}", router.name)))?;
            router.services = Some(Box::new(services));
        }
        Ok(router)
    }

    /// Checks NAT rules against the interfaces and resolves their names.
    fn resolve_nat(&self, config: &NatConfig) -> Result<NatRules, RouterError> {
        let iface = |name: &str, what: &str| {
            self.iface_by_name(name).ok_or_else(|| {
                RouterError(format!(
                    "router {:?}: {what} names interface {name:?}, which it does not have",
                    self.name
                ))
            })
        };
        let mut rules = NatRules::default();
        for m in &config.masquerade {
            let out = iface(&m.out, "a masquerade rule")?;
            if self.interfaces[out.index()].addresses.is_empty() {
                return Err(RouterError(format!(
                    "router {:?}: masquerade out of {:?}, which has no address to masquerade as",
                    self.name, m.out
                )));
            }
            rules.masquerade.push(MasqueradeRule {
                out,
                sources: m.sources.iter().map(|n| n.trunc()).collect(),
                except: m.except.iter().map(|n| n.trunc()).collect(),
            });
        }
        for f in &config.forwards {
            let at = iface(&f.iface, "a port forward")?;
            let addrs = &self.interfaces[at.index()].addresses;
            if let Some(a) = f.outside
                && !addrs.iter().any(|n| n.addr() == a)
            {
                return Err(RouterError(format!(
                    "router {:?}: port forward on {a}, which is not an address of {:?}",
                    self.name, f.iface
                )));
            }
            if addrs.is_empty() {
                return Err(RouterError(format!(
                    "router {:?}: port forward on {:?}, which has no address",
                    self.name, f.iface
                )));
            }
            if f.ports.0 == 0 || f.ports.0 > f.ports.1 {
                return Err(RouterError(format!(
                    "router {:?}: port forward range {}-{} is empty or starts at 0",
                    self.name, f.ports.0, f.ports.1
                )));
            }
            let span = f.ports.1 - f.ports.0;
            if f.to.port() == 0 || u32::from(f.to.port()) + u32::from(span) > 65535 {
                return Err(RouterError(format!(
                    "router {:?}: port forward to {} cannot take {} ports",
                    self.name,
                    f.to,
                    u32::from(span) + 1
                )));
            }
            if !matches!(f.proto, super::nat::Proto::Tcp | super::nat::Proto::Udp) {
                return Err(RouterError(format!(
                    "router {:?}: port forwards are for tcp or udp",
                    self.name
                )));
            }
            rules.forwards.push(PortForward {
                proto: f.proto,
                iface: at,
                outside: f.outside,
                ports: f.ports,
                inside: *f.to.ip(),
                inside_port: f.to.port(),
            });
        }
        Ok(rules)
    }

    /// The router's NAT (rules and flow table), if it has rules.
    pub fn nat(&self) -> Option<&Nat> {
        self.nat.as_ref()
    }

    /// Forgets every tracked flow; returns how many there were.
    pub fn flush_conntrack(&mut self) -> usize {
        self.nat.as_mut().map_or(0, Nat::flush)
    }

    /// The router's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its interfaces; `IfaceId(i)` indexes this slice.
    pub fn interfaces(&self) -> &[InterfaceConfig] {
        &self.interfaces
    }

    /// The interface called `name`.
    pub fn iface_by_name(&self, name: &str) -> Option<IfaceId> {
        self.interfaces
            .iter()
            .position(|i| i.name == name)
            .map(|i| IfaceId(i as u16))
    }

    /// What the router has done so far.
    pub fn counters(&self) -> RouterCounters {
        self.counters
    }

    /// The routing table, connected routes included.
    pub fn routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.routes.iter()
    }

    /// The route a packet to `addr` would take.
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&Route> {
        self.routes.lookup(addr)
    }

    /// The neighbour cache, for display.
    pub fn arp_entries(&self, now: Instant) -> impl Iterator<Item = ArpEntryView> + '_ {
        self.arp.entries(now)
    }

    /// The neighbour cache's statistics.
    pub fn arp_stats(&self) -> ArpStats {
        self.arp.stats()
    }

    /// The neighbour cache itself, for flushing.
    pub fn arp_cache_mut(&mut self) -> &mut ArpCache {
        &mut self.arp
    }

    /// ICMP errors suppressed by the rate limit so far.
    pub fn icmp_suppressed(&self) -> u64 {
        self.limiter.suppressed()
    }

    /// Adds a static route, working out its interface from the gateway when
    /// none is named. Refuses a gateway outside every connected network of
    /// the chosen interface, as `ip route add` does.
    pub fn add_route(&mut self, route: StaticRoute) -> Result<(), RouterError> {
        let named = match &route.iface {
            Some(name) => Some(self.iface_by_name(name).ok_or_else(|| {
                RouterError(format!("router {:?} has no interface {name:?}", self.name))
            })?),
            None => None,
        };
        let iface = match (route.gateway, named) {
            (None, None) => {
                return Err(RouterError(format!(
                    "route to {}: give a gateway (via) or an interface (dev)",
                    route.dest
                )));
            }
            (None, Some(i)) => i,
            (Some(gw), named) => {
                if self.local.iter().any(|(a, _)| *a == gw) {
                    return Err(RouterError(format!(
                        "route to {}: gateway {gw} is this router's own address",
                        route.dest
                    )));
                }
                let on_link = |i: &InterfaceConfig| i.addresses.iter().any(|n| n.contains(&gw));
                match named {
                    Some(i) if on_link(&self.interfaces[i.index()]) => i,
                    Some(i) => {
                        return Err(RouterError(format!(
                            "route to {}: gateway {gw} is not on a network of interface {:?}",
                            route.dest,
                            self.interfaces[i.index()].name
                        )));
                    }
                    None => self
                        .interfaces
                        .iter()
                        .position(on_link)
                        .map(|i| IfaceId(i as u16))
                        .ok_or_else(|| {
                            RouterError(format!(
                                "route to {}: gateway {gw} is not on any connected network of router {:?}",
                                route.dest, self.name
                            ))
                        })?,
                }
            }
        };
        self.routes
            .insert(Route {
                dest: route.dest.trunc(),
                gateway: route.gateway,
                iface,
                metric: route.metric,
                kind: RouteKind::Static,
            })
            .map_err(|e| self.route_error(route.dest, e))
    }

    /// Removes one static route. `gateway`, `iface` and `metric` narrow the
    /// match when several routes share the prefix; connected routes cannot
    /// be removed (they go with their address).
    pub fn remove_route(
        &mut self,
        dest: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        iface: Option<&str>,
        metric: Option<u32>,
    ) -> Result<Route, RouterError> {
        let iface = match iface {
            Some(name) => Some(self.iface_by_name(name).ok_or_else(|| {
                RouterError(format!("router {:?} has no interface {name:?}", self.name))
            })?),
            None => None,
        };
        let dest = dest.trunc();
        let statics = self
            .routes
            .iter()
            .filter(|r| {
                r.dest == dest
                    && r.kind == RouteKind::Static
                    && gateway.is_none_or(|g| r.gateway == Some(g))
                    && iface.is_none_or(|i| r.iface == i)
                    && metric.is_none_or(|m| r.metric == m)
            })
            .cloned()
            .collect::<Vec<_>>();
        match statics.as_slice() {
            [] => Err(RouterError(format!(
                "router {:?} has no static route to {dest} matching that",
                self.name
            ))),
            [one] => self
                .routes
                .remove(one.dest, one.gateway, Some(one.iface), Some(one.metric))
                .map_err(|e| self.route_error(dest, e)),
            many => Err(RouterError(format!(
                "{} static routes to {dest} match; say which with via, dev or metric",
                many.len()
            ))),
        }
    }

    fn route_error(&self, dest: Ipv4Net, e: RouteError) -> RouterError {
        RouterError(format!("router {:?}: route to {dest}: {e}", self.name))
    }

    /// Announces the interfaces' addresses with gratuitous ARP, so hosts
    /// that cached another MAC for them (a previous router) update at once.
    /// Called when the router's ports come up.
    pub fn start(&mut self, tx: &mut impl Transmit) {
        for i in 0..self.interfaces.len() {
            let id = IfaceId(i as u16);
            for a in 0..self.interfaces[i].addresses.len() {
                let addr = self.interfaces[i].addresses[a].addr();
                self.send_arp(
                    tx,
                    id,
                    ArpOperation::Request,
                    addr,
                    MacAddr([0; 6]),
                    addr,
                    MacAddr::BROADCAST,
                );
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let nat = self.nat.as_ref().and_then(Nat::poll_timeout);
        let services = self.services.as_ref().and_then(|s| s.poll_timeout());
        [self.arp.poll_timeout(), nat, services]
            .into_iter()
            .flatten()
            .min()
    }

    /// ARP retries, failed resolutions (answered with ICMP host
    /// unreachable) and cache expiry.
    pub fn handle_timeout(&mut self, now: Instant, tx: &mut impl Transmit) {
        if let Some(nat) = &mut self.nat
            && nat.poll_timeout().is_some_and(|t| t <= now)
        {
            nat.handle_timeout(now);
        }
        if let Some(services) = &mut self.services
            && services.poll_timeout().is_some_and(|t| t <= now)
        {
            let mut out = std::mem::take(&mut self.service_out);
            services.handle_timeout(now, &mut out);
            self.send_service_output(now, tx, &mut out);
            self.service_out = out;
        }
        let mut events = std::mem::take(&mut self.arp_events);
        events.clear();
        self.arp.handle_timeout(now, &mut events);
        for event in events.drain(..) {
            match event {
                ArpEvent::Retry { iface, ip } => self.send_arp_request(tx, iface, ip, None),
                ArpEvent::Failed { packets, .. } => {
                    self.counters.arp_failed += packets.len() as u64;
                    for packet in &packets {
                        self.send_icmp_error(now, tx, IcmpError::HostUnreachable, packet);
                    }
                }
            }
        }
        self.arp_events = events;
    }

    /// Takes one frame that arrived on interface `iface`.
    pub fn handle_frame(
        &mut self,
        now: Instant,
        iface: IfaceId,
        frame: &[u8],
        tx: &mut impl Transmit,
    ) {
        self.handle_frame_sized(now, iface, frame, frame.len(), tx);
    }

    /// Takes one frame whose largest piece on the wire is `wire_len` bytes:
    /// less than its length for a super-frame from a tap with offloads
    /// (a TCP stream coalesced into one 64 KiB frame that the egress will
    /// cut into segments). The MTU check applies to the pieces, as the
    /// kernel's forwarding does for GSO packets, so super-frames are routed
    /// whole instead of being segmented first.
    pub fn handle_frame_sized(
        &mut self,
        now: Instant,
        iface: IfaceId,
        frame: &[u8],
        wire_len: usize,
        tx: &mut impl Transmit,
    ) {
        self.counters.received += 1;
        let Some(config) = self.interfaces.get(iface.index()) else {
            return;
        };
        if frame.len() < ETHERNET_HEADER_LEN {
            self.counters.dropped_malformed += 1;
            return;
        }
        let dst = MacAddr([frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]]);
        let to_us = dst == config.mac;
        if !to_us && !dst.is_broadcast() {
            self.counters.not_for_us += 1;
            return;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let payload = &frame[ETHERNET_HEADER_LEN..];
        self.frame_src = MacAddr([frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]);
        match ethertype {
            ETHERTYPE_ARP => self.handle_arp(now, iface, payload, tx),
            ETHERTYPE_IPV4 if to_us => {
                let largest = wire_len
                    .min(frame.len())
                    .saturating_sub(ETHERNET_HEADER_LEN);
                self.handle_ipv4(now, iface, payload, largest, tx)
            }
            // IPv4 to the broadcast MAC: DHCP clients without an address,
            // served when the interface has a DHCP server.
            ETHERTYPE_IPV4 => {
                if !self.handle_dhcp_broadcast(now, iface, payload, tx) {
                    self.counters.dropped_broadcast += 1;
                }
            }
            _ => self.counters.unsupported += 1,
        }
    }

    fn handle_arp(&mut self, now: Instant, iface: IfaceId, payload: &[u8], tx: &mut impl Transmit) {
        let Ok(packet) = ArpPacket::new_checked(payload) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr: sender_ip,
            target_protocol_addr: target_ip,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            self.counters.dropped_malformed += 1;
            return;
        };
        self.counters.arp_in += 1;
        let sender_mac = MacAddr(source_hardware_addr.0);
        if !sender_mac.is_valid_source() {
            self.counters.dropped_martian += 1;
            return;
        }
        let config = &self.interfaces[iface.index()];
        let ours = config.addresses.iter().any(|n| n.addr() == target_ip);
        if self.local.iter().any(|(a, _)| *a == sender_ip) {
            // Someone else claims our address (or our own gratuitous ARP
            // came back through a loop): never learn it.
            return;
        }
        // Proxy ARP: answer for a host we route to out of another
        // interface, as Linux does with proxy_arp=1.
        let proxied = !ours
            && operation == ArpOperation::Request
            && config.proxy_arp
            && sender_ip != target_ip
            && !self.local.iter().any(|(a, _)| *a == target_ip)
            && self
                .routes
                .lookup(target_ip)
                .is_some_and(|r| r.iface != iface);
        let sender_known = !sender_ip.is_unspecified();
        if sender_known {
            let released = self
                .arp
                .learn(now, iface, sender_ip, sender_mac, ours || proxied);
            for packet in released {
                self.send_resolved(tx, iface, sender_mac, &packet);
            }
        }
        if operation == ArpOperation::Request && (ours || proxied) {
            let mac = self.interfaces[iface.index()].mac;
            self.send_arp(
                tx,
                iface,
                ArpOperation::Reply,
                target_ip,
                mac,
                sender_ip,
                sender_mac,
            );
        }
    }

    fn handle_ipv4(
        &mut self,
        now: Instant,
        iface: IfaceId,
        payload: &[u8],
        largest: usize,
        tx: &mut impl Transmit,
    ) {
        let Ok(packet) = Ipv4Packet::new_checked(payload) else {
            self.counters.dropped_malformed += 1;
            return;
        };
        if packet.version() != 4 || !packet.verify_checksum() {
            self.counters.dropped_malformed += 1;
            return;
        }
        // Ethernet pads short frames: the packet is what the header says.
        let packet_bytes = &payload[..usize::from(packet.total_len())];
        let (src, dst) = (packet.src_addr(), packet.dst_addr());
        if is_martian_source(src) {
            self.counters.dropped_martian += 1;
            return;
        }
        if dst.is_multicast() || dst.is_broadcast() || dst.is_unspecified() {
            self.counters.dropped_broadcast += 1;
            return;
        }
        let largest = largest.min(packet_bytes.len());
        let mut class = None;
        if let Some(nat) = &mut self.nat {
            match nat.ingress(now, iface, packet_bytes, &self.local, &mut self.counters) {
                Ingress::Pass(c) => class = Some(c),
                Ingress::Translate(t) => {
                    self.forward(now, packet_bytes, largest, Some(t), None, tx);
                    return;
                }
                Ingress::Drop => return,
            }
        }
        if self.local.iter().any(|(a, _)| *a == dst) {
            if Some(dst) == self.host_loopback && self.to_host_loopback(iface, packet_bytes) {
                self.send_to_host(tx, packet_bytes);
                return;
            }
            self.deliver_local(now, iface, packet_bytes, tx);
            return;
        }
        if self.interfaces.iter().any(|i| i.is_directed_broadcast(dst)) {
            self.counters.dropped_broadcast += 1;
            return;
        }
        self.forward(now, packet_bytes, largest, None, class, tx);
    }

    /// Forwards a valid packet that is not for the router; `largest` is its
    /// largest piece on the wire (less than its length for a super-frame).
    /// `xlate`: the NAT rewrite it gets (its flow's), if known on arrival;
    /// `class`: otherwise, what NAT saw in it, so a masquerade rule can
    /// open a flow once the route is known.
    fn forward(
        &mut self,
        now: Instant,
        packet: &[u8],
        largest: usize,
        mut xlate: Option<Translation>,
        class: Option<Classified>,
        tx: &mut impl Transmit,
    ) {
        let header = Ipv4Packet::new_unchecked(packet);
        if header.hop_limit() <= 1 {
            self.counters.ttl_exceeded += 1;
            self.send_icmp_error(now, tx, IcmpError::TimeExceeded, packet);
            return;
        }
        let dst = xlate.map_or(header.dst_addr(), |t| t.destination());
        let Some(route) = self.routes.lookup(dst) else {
            self.counters.dropped_no_route += 1;
            self.send_icmp_error(now, tx, IcmpError::NetUnreachable, packet);
            return;
        };
        let (out, hop) = (route.iface, route.gateway.unwrap_or(dst));
        if let (Some(class), Some(nat)) = (class, &mut self.nat) {
            let outside = self.interfaces[out.index()].source_for(dst);
            match nat.egress(now, class, packet, out, outside, &mut self.counters) {
                Egress::Pass => {}
                Egress::Translate(t) => xlate = Some(t),
                Egress::Drop => return,
            }
        }
        let mtu = usize::from(self.interfaces[out.index()].mtu);
        if largest > mtu {
            // A super-frame cannot be fragmented; its pieces would be TCP
            // segments (always DF) or UDP datagrams sent as such.
            let whole = largest < packet.len();
            if header.dont_frag() || whole {
                self.counters.frag_needed += 1;
                let mtu = mtu as u16;
                self.send_icmp_error(now, tx, IcmpError::FragmentationNeeded { mtu }, packet);
            } else {
                self.forward_fragmented(now, packet, xlate, out, hop, mtu, tx);
            }
            return;
        }
        let Some(buf) = tx.buffer() else {
            self.counters.tx_no_buffer += 1;
            return;
        };
        let end = ETHERNET_HEADER_LEN + packet.len();
        if buf.len() < end {
            self.counters.tx_no_buffer += 1;
            return;
        }
        buf[ETHERNET_HEADER_LEN..end].copy_from_slice(packet);
        if let Some(t) = xlate
            && !t.apply(&mut buf[ETHERNET_HEADER_LEN..end])
        {
            self.counters.dropped_malformed += 1;
            return;
        }
        decrement_ttl(&mut buf[ETHERNET_HEADER_LEN..end]);
        self.counters.forwarded += 1;
        self.finish(now, tx, out, hop, packet.len(), true);
    }

    /// Splits a too-big packet (DF clear) into fragments that fit `mtu`,
    /// each sent like a packet of its own.
    #[allow(clippy::too_many_arguments)]
    fn forward_fragmented(
        &mut self,
        now: Instant,
        packet: &[u8],
        xlate: Option<Translation>,
        out: IfaceId,
        hop: Ipv4Addr,
        mtu: usize,
        tx: &mut impl Transmit,
    ) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(packet);
        if let Some(t) = xlate
            && !t.apply(&mut scratch)
        {
            self.counters.dropped_malformed += 1;
            self.scratch = scratch;
            return;
        }
        decrement_ttl(&mut scratch);
        match Fragmenter::new(&scratch, mtu) {
            None => self.counters.dropped_malformed += 1,
            Some(mut fragments) => {
                self.counters.fragmented += 1;
                self.counters.forwarded += 1;
                loop {
                    let Some(buf) = tx.buffer() else {
                        self.counters.tx_no_buffer += 1;
                        break;
                    };
                    let Some(len) = fragments.next_into(&mut buf[ETHERNET_HEADER_LEN..]) else {
                        break;
                    };
                    self.finish(now, tx, out, hop, len, false);
                }
            }
        }
        self.scratch = scratch;
    }

    /// Packets addressed to the router: echo requests are answered, the
    /// rest refused with the ICMP error a host would send.
    fn deliver_local(
        &mut self,
        now: Instant,
        iface: IfaceId,
        packet: &[u8],
        tx: &mut impl Transmit,
    ) {
        let header = Ipv4Packet::new_unchecked(packet);
        if header.more_frags() || header.frag_offset() != 0 {
            // No reassembly: a router answers pings, not large datagrams.
            self.counters.dropped_fragment += 1;
            return;
        }
        self.counters.delivered += 1;
        match header.next_header() {
            IpProtocol::Icmp => {
                let src = header.src_addr();
                let Some(route) = self.routes.lookup(src).cloned() else {
                    self.counters.dropped_no_route += 1;
                    return;
                };
                let id = self.next_id();
                let Some(buf) = tx.buffer() else {
                    self.counters.tx_no_buffer += 1;
                    return;
                };
                // Anything but a well-formed echo request (replies, errors
                // about our own packets) is consumed silently.
                if let Some(len) =
                    icmp::write_echo_reply(packet, DEFAULT_TTL, id, &mut buf[ETHERNET_HEADER_LEN..])
                {
                    self.counters.icmp_sent += 1;
                    self.finish(
                        now,
                        tx,
                        route.iface,
                        route.gateway.unwrap_or(src),
                        len,
                        false,
                    );
                }
            }
            IpProtocol::Udp if self.serve_udp(now, iface, packet, tx) => {}
            IpProtocol::Udp | IpProtocol::Tcp => {
                self.send_icmp_error(now, tx, IcmpError::PortUnreachable, packet)
            }
            _ => self.send_icmp_error(now, tx, IcmpError::ProtocolUnreachable, packet),
        }
    }

    /// Sends an ICMP error about `original` back to its source, from the
    /// address of the interface the error leaves by, within the rate limit.
    fn send_icmp_error(
        &mut self,
        now: Instant,
        tx: &mut impl Transmit,
        kind: IcmpError,
        original: &[u8],
    ) {
        if !icmp::error_allowed(original) {
            return;
        }
        let Ok(header) = Ipv4Packet::new_checked(original) else {
            return;
        };
        let to = header.src_addr();
        let Some(route) = self.routes.lookup(to).cloned() else {
            return;
        };
        let Some(src) = self.source_for(route.iface, to) else {
            return;
        };
        if !self.limiter.allow(now) {
            self.counters.icmp_rate_limited += 1;
            return;
        }
        let id = self.next_id();
        let Some(buf) = tx.buffer() else {
            self.counters.tx_no_buffer += 1;
            return;
        };
        if let Some(len) =
            icmp::write_error(kind, src, id, original, &mut buf[ETHERNET_HEADER_LEN..])
        {
            self.counters.icmp_sent += 1;
            self.finish(
                now,
                tx,
                route.iface,
                route.gateway.unwrap_or(to),
                len,
                false,
            );
        }
    }

    /// Sends the IPv4 packet of `len` bytes already written after the
    /// Ethernet header in the transmit buffer out of `out` towards `hop`,
    /// resolving the hop's MAC (or queueing the packet until it is known).
    /// `forwarded`: the packet is the handled frame's own (see
    /// [`Transmit::send_forwarded`]).
    fn finish(
        &mut self,
        now: Instant,
        tx: &mut impl Transmit,
        out: IfaceId,
        hop: Ipv4Addr,
        len: usize,
        forwarded: bool,
    ) {
        let Some(buf) = tx.buffer() else {
            self.counters.tx_no_buffer += 1;
            return;
        };
        let end = ETHERNET_HEADER_LEN + len;
        if Some(out) == self.host {
            // Packets, not frames: nothing to resolve.
            let _ = (hop, forwarded);
            tx.send_packet(out, len);
            return;
        }
        match self
            .arp
            .resolve(now, out, hop, &buf[ETHERNET_HEADER_LEN..end])
        {
            Resolution::Known(mac) => {
                write_ethernet(buf, mac, self.interfaces[out.index()].mac, ETHERTYPE_IPV4);
                send(tx, out, end, forwarded);
            }
            Resolution::KnownRefresh(mac) => {
                write_ethernet(buf, mac, self.interfaces[out.index()].mac, ETHERTYPE_IPV4);
                send(tx, out, end, forwarded);
                self.send_arp_request(tx, out, hop, Some(mac));
            }
            Resolution::QueuedSendRequest => self.send_arp_request(tx, out, hop, None),
            Resolution::Queued => {}
            Resolution::QueueFull => self.counters.arp_queue_full += 1,
            Resolution::TableFull => self.counters.arp_table_full += 1,
        }
    }

    /// Sends a packet that waited for its next hop, now resolved.
    fn send_resolved(&mut self, tx: &mut impl Transmit, out: IfaceId, mac: MacAddr, packet: &[u8]) {
        let Some(buf) = tx.buffer() else {
            self.counters.tx_no_buffer += 1;
            return;
        };
        let end = ETHERNET_HEADER_LEN + packet.len();
        if buf.len() < end {
            self.counters.tx_no_buffer += 1;
            return;
        }
        buf[ETHERNET_HEADER_LEN..end].copy_from_slice(packet);
        write_ethernet(buf, mac, self.interfaces[out.index()].mac, ETHERTYPE_IPV4);
        tx.send(out, end);
    }

    /// Asks who has `target` on `out`: broadcast, or unicast to `known` to
    /// refresh an entry.
    fn send_arp_request(
        &mut self,
        tx: &mut impl Transmit,
        out: IfaceId,
        target: Ipv4Addr,
        known: Option<MacAddr>,
    ) {
        let sender = self
            .source_for(out, target)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        self.send_arp(
            tx,
            out,
            ArpOperation::Request,
            sender,
            MacAddr([0; 6]),
            target,
            known.unwrap_or(MacAddr::BROADCAST),
        );
    }

    /// Emits one ARP packet. `target_mac` is the frame's destination; in a
    /// request the packet's target hardware field is zero.
    #[allow(clippy::too_many_arguments)]
    fn send_arp(
        &mut self,
        tx: &mut impl Transmit,
        out: IfaceId,
        operation: ArpOperation,
        sender_ip: Ipv4Addr,
        packet_target_mac: MacAddr,
        target_ip: Ipv4Addr,
        frame_dst: MacAddr,
    ) {
        let own = self.interfaces[out.index()].mac;
        let target_hw = if operation == ArpOperation::Reply {
            frame_dst
        } else {
            packet_target_mac
        };
        let repr = ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: EthernetAddress(own.0),
            source_protocol_addr: sender_ip,
            target_hardware_addr: EthernetAddress(target_hw.0),
            target_protocol_addr: target_ip,
        };
        let Some(buf) = tx.buffer() else {
            self.counters.tx_no_buffer += 1;
            return;
        };
        let end = ETHERNET_HEADER_LEN + repr.buffer_len();
        // Pad to Ethernet's 60-byte minimum, as a NIC would.
        let padded = end.max(60);
        if buf.len() < padded {
            self.counters.tx_no_buffer += 1;
            return;
        }
        repr.emit(&mut ArpPacket::new_unchecked(
            &mut buf[ETHERNET_HEADER_LEN..end],
        ));
        buf[end..padded].fill(0);
        write_ethernet(buf, frame_dst, own, ETHERTYPE_ARP);
        self.counters.arp_out += 1;
        tx.send(out, padded);
    }

    /// An IPv4 frame to the broadcast MAC: a DHCP client's broadcast when
    /// the interface has a server. Returns whether it was taken.
    fn handle_dhcp_broadcast(
        &mut self,
        now: Instant,
        iface: IfaceId,
        payload: &[u8],
        tx: &mut impl Transmit,
    ) -> bool {
        if !self.services.as_ref().is_some_and(|s| s.serves_dhcp(iface)) {
            return false;
        }
        let Ok(packet) = Ipv4Packet::new_checked(payload) else {
            self.counters.dropped_malformed += 1;
            return true;
        };
        if packet.version() != 4 || !packet.verify_checksum() {
            self.counters.dropped_malformed += 1;
            return true;
        }
        let bytes = &payload[..usize::from(packet.total_len())];
        if packet.next_header() != IpProtocol::Udp
            || packet.more_frags()
            || packet.frag_offset() != 0
        {
            return false;
        }
        self.serve_udp(now, iface, bytes, tx)
    }

    /// A UDP datagram to the router (or broadcast on one of its links):
    /// handed to DHCP or DNS when one of them listens on its port. Returns
    /// whether a service took it.
    fn serve_udp(
        &mut self,
        now: Instant,
        iface: IfaceId,
        packet: &[u8],
        tx: &mut impl Transmit,
    ) -> bool {
        let Some(services) = &mut self.services else {
            return false;
        };
        let header = Ipv4Packet::new_unchecked(packet);
        let (src, dst) = (header.src_addr(), header.dst_addr());
        let Ok(udp) = UdpPacket::new_checked(header.payload()) else {
            self.counters.dropped_malformed += 1;
            return true;
        };
        let port = udp.dst_port();
        let wanted = match port {
            DHCP_SERVER_PORT => services.serves_dhcp(iface),
            DNS_PORT => services.serves_dns() && !dst.is_broadcast(),
            _ => false,
        };
        if !wanted {
            return false;
        }
        // A zero checksum means "not computed" (RFC 768).
        if udp.checksum() != 0 && !udp.verify_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst))
        {
            self.counters.dropped_malformed += 1;
            return true;
        }
        let len = usize::from(udp.len()).clamp(8, udp.as_ref().len());
        let payload = &udp.as_ref()[8..len];
        let client = SocketAddrV4::new(src, udp.src_port());
        let mut out = std::mem::take(&mut self.service_out);
        out.clear();
        if port == DHCP_SERVER_PORT {
            services.dhcp_message(now, iface, self.frame_src, src, payload, &mut out);
        } else {
            let local = SocketAddrV4::new(dst, DNS_PORT);
            services.dns_query(now, local, client, payload, &mut out);
        }
        self.counters.service_datagrams += 1;
        self.send_service_output(now, tx, &mut out);
        self.service_out = out;
        true
    }

    /// Sends the datagrams the services produced.
    fn send_service_output(
        &mut self,
        now: Instant,
        tx: &mut impl Transmit,
        out: &mut Vec<ServiceSend>,
    ) {
        for send in out.drain(..) {
            self.send_udp(now, tx, &send);
        }
    }

    /// Sends one UDP datagram from the router: straight to `dst_mac` on
    /// `iface` when given (DHCP), else routed and resolved like any packet
    /// the router originates.
    fn send_udp(&mut self, now: Instant, tx: &mut impl Transmit, send: &ServiceSend) {
        let (out, hop) = match (send.iface, send.dst_mac) {
            (Some(i), Some(_)) => (i, *send.dst.ip()),
            _ => match self.routes.lookup(*send.dst.ip()) {
                Some(r) => (r.iface, r.gateway.unwrap_or(*send.dst.ip())),
                None => {
                    self.counters.dropped_no_route += 1;
                    return;
                }
            },
        };
        let src_ip = if send.src.ip().is_unspecified() {
            match self.source_for(out, *send.dst.ip()) {
                Some(a) => a,
                None => return,
            }
        } else {
            *send.src.ip()
        };
        let udp = UdpRepr {
            src_port: send.src.port(),
            dst_port: send.dst.port(),
        };
        let udp_len = udp.header_len() + send.payload.len();
        let ip = Ipv4Repr {
            src_addr: src_ip,
            dst_addr: *send.dst.ip(),
            next_header: IpProtocol::Udp,
            payload_len: udp_len,
            hop_limit: DEFAULT_TTL,
        };
        let id = self.next_id();
        let Some(buf) = tx.buffer() else {
            self.counters.tx_no_buffer += 1;
            return;
        };
        let ip_len = ip.buffer_len() + udp_len;
        let end = ETHERNET_HEADER_LEN + ip_len;
        if buf.len() < end.max(60) {
            self.counters.tx_no_buffer += 1;
            return;
        }
        let caps = ChecksumCapabilities::default();
        {
            let mut packet = Ipv4Packet::new_unchecked(&mut buf[ETHERNET_HEADER_LEN..end]);
            ip.emit(&mut packet, &caps);
            packet.set_ident(id);
            packet.fill_checksum();
            let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
            udp.emit(
                &mut datagram,
                &IpAddress::Ipv4(src_ip),
                &IpAddress::Ipv4(*send.dst.ip()),
                send.payload.len(),
                |p| p.copy_from_slice(&send.payload),
                &caps,
            );
        }
        self.counters.service_replies += 1;
        match send.dst_mac {
            Some(mac) => {
                // Pad to Ethernet's minimum, as a NIC would.
                let padded = end.max(60);
                buf[end..padded].fill(0);
                write_ethernet(buf, mac, self.interfaces[out.index()].mac, ETHERTYPE_IPV4);
                tx.send(out, padded);
            }
            None => self.finish(now, tx, out, hop, ip_len, false),
        }
    }

    /// Hands an upstream resolver's answer (received by the daemon) to the
    /// DNS forwarder, which answers the client that asked.
    pub fn handle_dns_upstream(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: crate::dns::Transport,
        payload: &[u8],
        tx: &mut impl Transmit,
    ) {
        let Some(services) = &mut self.services else {
            return;
        };
        let mut out = std::mem::take(&mut self.service_out);
        out.clear();
        services.dns_upstream(now, server, transport, payload, &mut out);
        self.send_service_output(now, tx, &mut out);
        self.service_out = out;
    }

    /// Moves the DNS queries waiting to go upstream into `out`, for the
    /// daemon to send through host sockets.
    pub fn take_dns_upstream(&mut self, out: &mut Vec<UpstreamQuery>) {
        if let Some(services) = &mut self.services {
            services.take_upstream(out);
        }
    }

    /// The router's DHCP and DNS services, if it has any.
    pub fn services(&self) -> Option<&Services> {
        self.services.as_deref()
    }

    /// The same, to restore and save leases.
    pub fn services_mut(&mut self) -> Option<&mut Services> {
        self.services.as_deref_mut()
    }

    /// Takes an IPv4 packet from the host uplink (an answer to a guest, or
    /// a forwarded host port's connection) as if it had arrived on the host
    /// interface: validated, routed, TTL decremented.
    pub fn handle_host_packet(&mut self, now: Instant, packet: &[u8], tx: &mut impl Transmit) {
        self.counters.received += 1;
        let Some(host) = self.host else {
            return;
        };
        self.frame_src = MacAddr([0; 6]);
        self.handle_ipv4(now, host, packet, packet.len(), tx);
    }

    /// The host interface, if the router has one.
    pub fn host_interface(&self) -> Option<IfaceId> {
        self.host
    }

    /// Whether a packet to the loopback alias goes to the host: TCP, and
    /// UDP except what the router's own services answer.
    fn to_host_loopback(&self, iface: IfaceId, packet: &[u8]) -> bool {
        if self.host.is_none() || Some(iface) == self.host {
            return false;
        }
        let header = Ipv4Packet::new_unchecked(packet);
        match header.next_header() {
            IpProtocol::Tcp => true,
            IpProtocol::Udp => {
                let Ok(udp) = UdpPacket::new_checked(header.payload()) else {
                    return false;
                };
                let served = self
                    .services
                    .as_ref()
                    .is_some_and(|s| match udp.dst_port() {
                        DHCP_SERVER_PORT => s.serves_dhcp(iface),
                        DNS_PORT => s.serves_dns(),
                        _ => false,
                    });
                !served
            }
            _ => false,
        }
    }

    /// Hands a packet unchanged (it is addressed to the router itself, so
    /// no hop is taken) to the host interface.
    fn send_to_host(&mut self, tx: &mut impl Transmit, packet: &[u8]) {
        let Some(host) = self.host else {
            return;
        };
        let Some(buf) = tx.buffer() else {
            self.counters.tx_no_buffer += 1;
            return;
        };
        let end = ETHERNET_HEADER_LEN + packet.len();
        if buf.len() < end {
            self.counters.tx_no_buffer += 1;
            return;
        }
        buf[ETHERNET_HEADER_LEN..end].copy_from_slice(packet);
        self.counters.delivered += 1;
        tx.send_packet(host, packet.len());
    }

    /// The address the router speaks from towards `peer` out of `out`: one
    /// of that interface's, else any of the router's (Linux picks a
    /// global address of the host the same way).
    fn source_for(&self, out: IfaceId, peer: Ipv4Addr) -> Option<Ipv4Addr> {
        self.interfaces[out.index()]
            .source_for(peer)
            .or_else(|| self.local.first().map(|(a, _)| *a))
    }

    fn next_id(&mut self) -> u16 {
        let id = self.next_ip_id;
        self.next_ip_id = self.next_ip_id.wrapping_add(1);
        id
    }
}

/// Sources no host may use: a router drops them (RFC 1812 5.3.7).
fn is_martian_source(src: Ipv4Addr) -> bool {
    src.is_multicast()
        || src.is_broadcast()
        || src.is_loopback()
        || src.is_unspecified()
        || src.octets()[0] >= 240
}

fn send(tx: &mut impl Transmit, out: IfaceId, len: usize, forwarded: bool) {
    if forwarded {
        tx.send_forwarded(out, len);
    } else {
        tx.send(out, len);
    }
}

fn write_ethernet(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf[0..6].copy_from_slice(&dst.0);
    buf[6..12].copy_from_slice(&src.0);
    buf[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// Decrements the TTL and patches the header checksum for it (RFC 1624:
/// the TTL is the high byte of its 16-bit word, so the word drops by
/// 0x0100 and the one's-complement checksum rises by as much).
fn decrement_ttl(packet: &mut [u8]) {
    packet[8] -= 1;
    let sum = u32::from(u16::from_be_bytes([packet[10], packet[11]])) + 0x0100;
    let sum = (sum & 0xffff) + (sum >> 16);
    packet[10..12].copy_from_slice(&(sum as u16).to_be_bytes());
}

#[cfg(test)]
mod ttl_tests {
    use super::*;

    #[test]
    fn incremental_ttl_update_matches_a_full_recompute() {
        for ttl in 2..=255u8 {
            for seed in [0u16, 0x00ff, 0xfeff, 0xffff, 0x1234] {
                let mut p = [0u8; 20];
                p[0] = 0x45;
                p[2..4].copy_from_slice(&20u16.to_be_bytes());
                p[4..6].copy_from_slice(&seed.to_be_bytes());
                p[8] = ttl;
                p[9] = 17;
                p[12..16].copy_from_slice(&[10, 0, 0, 1]);
                p[16..20].copy_from_slice(&[10, 0, seed as u8, 2]);
                let mut full = Ipv4Packet::new_unchecked(&mut p[..]);
                full.fill_checksum();
                decrement_ttl(&mut p);
                let check = Ipv4Packet::new_unchecked(&p[..]);
                assert_eq!(check.hop_limit(), ttl - 1);
                assert!(check.verify_checksum(), "ttl {ttl} seed {seed:#x}");
            }
        }
    }
}
