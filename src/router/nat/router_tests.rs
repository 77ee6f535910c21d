//! In-memory tests of NAT inside the router: a lan behind a masquerading
//! gateway, simulated hosts on every side, explicit times.
//!
//! The NAT modules test translation and the flow table on their own; these
//! tests check that the router applies them at the right moments (before
//! routing for replies, ICMP errors and port forwards, after routing for new
//! masqueraded flows) and that what actually leaves is right: interface,
//! Ethernet addresses, TTL, addresses and ports, and every checksum. Hosts
//! build their packets with `smoltcp::wire`; each emitted packet is compared
//! byte for byte with one built independently for the translated addresses,
//! and every checksum in it is recomputed here from scratch.
//!
//! The topology is always the same: router "gw" with "lan" 10.0.3.1/24
//! (iface 0) and "wan" 198.51.100.1/24 (iface 1), a default route via the
//! upstream host 198.51.100.2, and masquerade out of "wan" for sources in
//! 10.0.3.0/24 except destinations in 10.0.3.0/24. Some tests add a port
//! forward (tcp wan:8080 to 10.0.3.11:80) or a third interface "dmz"
//! 172.16.0.1/24 without a masquerade rule.

use crate::mac::MacAddr;
use crate::router::nat::Proto;
use crate::router::nat::conntrack::{ConntrackConfig, Flow, FlowState};
use crate::router::nat::rules::{ForwardConfig, MasqueradeConfig};
use crate::router::{
    ArpConfig, IfaceId, InterfaceConfig, NatConfig, Router, RouterConfig, RouterCounters,
    StaticRoute, Transmit,
};
use crate::time::Instant;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet, Icmpv4Repr,
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet's minimum frame length without the FCS: what a NIC pads to.
const MIN_FRAME: usize = 60;
/// Written into the transmit space after every send, so a router that
/// relies on the space keeping a sent frame is caught.
const POISON: u8 = 0xee;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_GRE: u8 = 47;

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// The IPv4 identification of every packet the hosts build (unless a test
/// sets another): the router must carry it through unchanged.
const IDENT: u16 = 0x0101;

// ---------------------------------------------------------------------------
// Topology
// ---------------------------------------------------------------------------

const LAN: IfaceId = IfaceId(0);
const WAN: IfaceId = IfaceId(1);
const DMZ: IfaceId = IfaceId(2);

const GW_LAN: MacAddr = MacAddr([0x02, 0, 0, 0, 0x03, 0x01]);
const GW_WAN: MacAddr = MacAddr([0x02, 0, 0, 0, 0x64, 0x01]);
const GW_DMZ: MacAddr = MacAddr([0x02, 0, 0, 0, 0x10, 0x01]);

/// The router's address on the wan: what masquerade translates to.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// A remote server beyond the upstream router.
const DNS: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);
/// A remote client beyond the upstream router.
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// A simulated host: one MAC, one IPv4 address.
#[derive(Debug, Clone, Copy)]
struct Host {
    mac: MacAddr,
    ip: Ipv4Addr,
}

const ALICE: Host = Host {
    mac: MacAddr([0x52, 0x54, 0, 0, 0x03, 0x11]),
    ip: Ipv4Addr::new(10, 0, 3, 11),
};
const BOB: Host = Host {
    mac: MacAddr([0x52, 0x54, 0, 0, 0x03, 0x12]),
    ip: Ipv4Addr::new(10, 0, 3, 12),
};
const UPSTREAM: Host = Host {
    mac: MacAddr([0x52, 0x54, 0, 0, 0x64, 0x02]),
    ip: Ipv4Addr::new(198, 51, 100, 2),
};
const DMZ_HOST: Host = Host {
    mac: MacAddr([0x52, 0x54, 0, 0, 0x10, 0x05]),
    ip: Ipv4Addr::new(172, 16, 0, 5),
};

fn sa(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

fn net(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

fn iface(name: &str, mac: MacAddr, addr: &str) -> InterfaceConfig {
    InterfaceConfig {
        name: name.into(),
        mac,
        addresses: vec![net(addr)],
        mtu: 1500,
        proxy_arp: false,
    }
}

/// The gateway of every test: lan, wan, default route upstream, masquerade
/// out of wan for the lan except towards the lan.
fn gw() -> RouterConfig {
    RouterConfig {
        name: "gw".into(),
        interfaces: vec![
            iface("lan", GW_LAN, "10.0.3.1/24"),
            iface("wan", GW_WAN, "198.51.100.1/24"),
        ],
        routes: vec![StaticRoute {
            dest: net("0.0.0.0/0"),
            gateway: Some(UPSTREAM.ip),
            iface: None,
            metric: 0,
        }],
        arp: ArpConfig::default(),
        nat: NatConfig {
            masquerade: vec![MasqueradeConfig {
                out: "wan".into(),
                sources: vec![net("10.0.3.0/24")],
                except: vec![net("10.0.3.0/24")],
            }],
            forwards: Vec::new(),
            conntrack: ConntrackConfig::default(),
        },
        services: Default::default(),
        host: None,
    }
}

/// `gw()` plus the port forward tcp wan:8080 → 10.0.3.11:80.
fn gw_with_forward() -> RouterConfig {
    let mut config = gw();
    config.nat.forwards.push(ForwardConfig {
        proto: Proto::Tcp,
        iface: "wan".into(),
        outside: None,
        ports: (8080, 8080),
        to: sa("10.0.3.11:80"),
    });
    config
}

/// `gw()` plus a third interface, "dmz", that no masquerade rule names.
fn gw_with_dmz() -> RouterConfig {
    let mut config = gw();
    config
        .interfaces
        .push(iface("dmz", GW_DMZ, "172.16.0.1/24"));
    config
}

// ---------------------------------------------------------------------------
// The wire and the rig
// ---------------------------------------------------------------------------

/// A [`Transmit`] that records every frame with the interface it left by.
struct Wire {
    space: Vec<u8>,
    frames: Vec<(IfaceId, Vec<u8>)>,
}

impl Transmit for Wire {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.space)
    }

    fn send(&mut self, iface: IfaceId, len: usize) {
        self.frames.push((iface, self.space[..len].to_vec()));
        self.space.fill(POISON);
    }
}

/// A router, its wire, and the current time.
struct Rig {
    router: Router,
    wire: Wire,
    now: Instant,
}

impl Rig {
    /// Builds the router and lets every host ARP for its gateway, so the
    /// router knows all their MACs before the first packet.
    fn new(config: RouterConfig) -> Rig {
        let mut rig = Rig {
            router: Router::new(config).expect("valid router config"),
            wire: Wire {
                space: vec![POISON; 70_000],
                frames: Vec::new(),
            },
            now: Instant::from_secs(100),
        };
        rig.introduce(WAN, UPSTREAM);
        rig.introduce(LAN, ALICE);
        rig.introduce(LAN, BOB);
        if rig.router.interfaces().len() > DMZ.index() {
            rig.introduce(DMZ, DMZ_HOST);
        }
        rig
    }

    /// `host` asks who has the router's address on `iface`; exactly one
    /// ARP reply must come back to it.
    fn introduce(&mut self, iface: IfaceId, host: Host) {
        let gateway = self.router.interfaces()[iface.index()].addresses[0].addr();
        let mut arp = [0u8; 28];
        arp[..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        arp[8..14].copy_from_slice(&host.mac.0);
        arp[14..18].copy_from_slice(&host.ip.octets());
        arp[24..28].copy_from_slice(&gateway.octets());
        let out = self.input(
            iface,
            &ethernet(MacAddr::BROADCAST, host.mac, ETHERTYPE_ARP, &arp),
        );
        assert_eq!(out.len(), 1, "one ARP reply to {host:?}");
        assert_eq!(out[0].0, iface);
        let frame = &out[0].1;
        assert_eq!(&frame[0..6], &host.mac.0);
        assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), ETHERTYPE_ARP);
        assert_eq!(&frame[20..22], &[0, 2], "an ARP reply");
    }

    fn input(&mut self, iface: IfaceId, frame: &[u8]) -> Vec<(IfaceId, Vec<u8>)> {
        self.router
            .handle_frame(self.now, iface, frame, &mut self.wire);
        std::mem::take(&mut self.wire.frames)
    }

    /// `packet` sent by `host` on `iface` to the router's MAC there.
    fn sends(&mut self, iface: IfaceId, host: Host, packet: &[u8]) -> Vec<(IfaceId, Vec<u8>)> {
        let gw_mac = self.router.interfaces()[iface.index()].mac;
        self.input(iface, &ethernet(gw_mac, host.mac, ETHERTYPE_IPV4, packet))
    }

    fn lan_sends(&mut self, host: Host, packet: &[u8]) -> Vec<(IfaceId, Vec<u8>)> {
        self.sends(LAN, host, packet)
    }

    /// `packet` arriving on the wan, relayed by the upstream router.
    fn wan_sends(&mut self, packet: &[u8]) -> Vec<(IfaceId, Vec<u8>)> {
        self.sends(WAN, UPSTREAM, packet)
    }

    /// Lets time pass to `target` the way the daemon's event loop does:
    /// `handle_timeout` at every `poll_timeout` up to it. Whatever the
    /// timers send (ARP refreshes) is discarded.
    fn advance_to(&mut self, target: Instant) {
        for _ in 0..100_000 {
            match self.router.poll_timeout() {
                Some(t) if t <= target => {
                    self.now = t.max(self.now);
                    self.router.handle_timeout(self.now, &mut self.wire);
                }
                _ => break,
            }
        }
        assert!(
            self.router.poll_timeout().is_none_or(|t| t > target),
            "timers never got past {target:?}"
        );
        self.now = target;
        self.wire.frames.clear();
    }

    fn counters(&self) -> RouterCounters {
        self.router.counters()
    }

    fn flows(&self) -> Vec<Flow> {
        let nat = self.router.nat().expect("the router has NAT rules");
        nat.table().flows().map(|(_, f)| f.clone()).collect()
    }
}

// ---------------------------------------------------------------------------
// Building packets
// ---------------------------------------------------------------------------

/// An Ethernet II frame, padded to 60 bytes as a sending NIC would.
fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: EthernetAddress(src.0),
        dst_addr: EthernetAddress(dst.0),
        ethertype: EthernetProtocol::from(ethertype),
    };
    let mut f = vec![0u8; (repr.buffer_len() + payload.len()).max(MIN_FRAME)];
    let mut frame = EthernetFrame::new_unchecked(&mut f[..]);
    repr.emit(&mut frame);
    frame.payload_mut()[..payload.len()].copy_from_slice(payload);
    f
}

/// An IPv4 packet: no options, TTL 64, DF clear, identification
/// [`IDENT`], checksum filled in.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::from(proto),
        payload_len: payload.len(),
        hop_limit: 64,
    };
    let mut p = vec![0u8; repr.buffer_len() + payload.len()];
    let mut packet = Ipv4Packet::new_unchecked(&mut p[..]);
    repr.emit(&mut packet, &ChecksumCapabilities::default());
    packet.payload_mut().copy_from_slice(payload);
    packet.set_ident(IDENT);
    packet.set_dont_frag(false);
    packet.fill_checksum();
    p
}

/// `packet` with its IPv4 header changed by `edit` and its checksum refilled.
fn edited(mut packet: Vec<u8>, edit: impl FnOnce(&mut Ipv4Packet<&mut [u8]>)) -> Vec<u8> {
    let mut p = Ipv4Packet::new_unchecked(&mut packet[..]);
    edit(&mut p);
    p.fill_checksum();
    packet
}

/// `packet` as it looks one router further on: TTL one less.
fn hop(packet: &[u8]) -> Vec<u8> {
    let ttl = packet[8];
    edited(packet.to_vec(), |p| p.set_hop_limit(ttl - 1))
}

/// A UDP datagram (header and data, checksum filled in).
fn udp_segment(src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let mut dgram = vec![0u8; repr.header_len() + data.len()];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut dgram[..]),
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        data.len(),
        |buf| buf.copy_from_slice(data),
        &ChecksumCapabilities::default(),
    );
    dgram
}

/// A UDP datagram as an IPv4 packet.
fn udp(src: SocketAddrV4, dst: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    ipv4(
        *src.ip(),
        *dst.ip(),
        PROTO_UDP,
        &udp_segment(src, dst, data),
    )
}

/// A bare TCP segment (no options, no data) as an IPv4 packet.
fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    let mut seg = vec![0u8; 20];
    seg[0..2].copy_from_slice(&src.port().to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port().to_be_bytes());
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[8..12].copy_from_slice(&ack.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = flags;
    seg[14..16].copy_from_slice(&64240u16.to_be_bytes());
    TcpPacket::new_unchecked(&mut seg[..])
        .fill_checksum(&IpAddress::Ipv4(*src.ip()), &IpAddress::Ipv4(*dst.ip()));
    ipv4(*src.ip(), *dst.ip(), PROTO_TCP, &seg)
}

/// An ICMP echo request (or reply) as an IPv4 packet.
fn echo(src: Ipv4Addr, dst: Ipv4Addr, request: bool, ident: u16, seq_no: u16) -> Vec<u8> {
    let data = b"switchboard ping";
    let repr = if request {
        Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        }
    } else {
        Icmpv4Repr::EchoReply {
            ident,
            seq_no,
            data,
        }
    };
    let mut icmp = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut icmp[..]),
        &ChecksumCapabilities::default(),
    );
    ipv4(src, dst, PROTO_ICMP, &icmp)
}

/// An ICMP error of `ty`/`code` quoting `quote` byte for byte.
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, quote: &[u8]) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quote);
    Icmpv4Packet::new_unchecked(&mut icmp[..]).fill_checksum();
    ipv4(src, dst, PROTO_ICMP, &icmp)
}

/// One fragment of a UDP datagram: `part` of its bytes at byte `offset`.
fn udp_fragment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    offset: u16,
    more: bool,
    part: &[u8],
) -> Vec<u8> {
    edited(ipv4(src, dst, PROTO_UDP, part), |p| {
        p.set_ident(ident);
        p.set_more_frags(more);
        p.set_frag_offset(offset);
    })
}

// ---------------------------------------------------------------------------
// Checking what the router sent
// ---------------------------------------------------------------------------

/// The one's-complement sum (RFC 1071) of `bytes`, folded to 16 bits.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The TCP/UDP pseudo-header followed by the segment.
fn with_pseudo_header(src: &[u8], dst: &[u8], proto: u8, segment: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + segment.len());
    v.extend_from_slice(src);
    v.extend_from_slice(dst);
    v.extend_from_slice(&[0, proto]);
    v.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    v.extend_from_slice(segment);
    v
}

/// Recomputes every checksum of an IPv4 packet: the header's, and for a
/// whole datagram the TCP, UDP (which must be present) or ICMP one.
fn assert_checksums(packet: &[u8]) {
    let header_len = usize::from(packet[0] & 0x0f) * 4;
    assert_eq!(
        ones_sum(&packet[..header_len]),
        0xffff,
        "IPv4 header checksum: {packet:02x?}"
    );
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    if frag & 0x3fff != 0 {
        // A fragment: its transport checksum spans the whole datagram.
        return;
    }
    let l4 = &packet[header_len..];
    match packet[9] {
        PROTO_TCP | PROTO_UDP => {
            let whole = with_pseudo_header(&packet[12..16], &packet[16..20], packet[9], l4);
            assert_eq!(
                ones_sum(&whole),
                0xffff,
                "transport checksum: {packet:02x?}"
            );
            if packet[9] == PROTO_UDP {
                assert_ne!(&l4[6..8], &[0, 0], "UDP checksum dropped");
            }
        }
        PROTO_ICMP => assert_eq!(ones_sum(l4), 0xffff, "ICMP checksum: {packet:02x?}"),
        _ => {}
    }
}

/// The single frame in `out`, which must be IPv4 leaving by `iface` from
/// `eth_src` to `eth_dst` with all checksums right; returns its packet.
fn expect_one(
    out: Vec<(IfaceId, Vec<u8>)>,
    iface: IfaceId,
    eth_dst: MacAddr,
    eth_src: MacAddr,
) -> Vec<u8> {
    assert_eq!(out.len(), 1, "exactly one frame out: {out:02x?}");
    let (sent_by, frame) = &out[0];
    assert_eq!(*sent_by, iface, "left by the wrong interface");
    assert_eq!(&frame[0..6], &eth_dst.0, "Ethernet destination");
    assert_eq!(&frame[6..12], &eth_src.0, "Ethernet source");
    assert_eq!(u16::from_be_bytes([frame[12], frame[13]]), ETHERTYPE_IPV4);
    let header = Ipv4Packet::new_checked(&frame[14..]).expect("truncated IPv4");
    let end = 14 + usize::from(header.total_len());
    assert!(
        frame.len() == end || (frame.len() == MIN_FRAME && end < MIN_FRAME),
        "frame of {} bytes carries an IPv4 packet of {}",
        frame.len(),
        end - 14
    );
    let packet = frame[14..end].to_vec();
    assert_checksums(&packet);
    packet
}

/// Protocol, source and destination of a TCP/UDP packet, for readable
/// failures before the byte comparison.
fn endpoints(packet: &[u8]) -> (u8, SocketAddrV4, SocketAddrV4) {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    let l4 = ip.payload();
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    (
        packet[9],
        SocketAddrV4::new(ip.src_addr(), port(0)),
        SocketAddrV4::new(ip.dst_addr(), port(2)),
    )
}

/// The identifier of an ICMP echo packet.
fn echo_ident(packet: &[u8]) -> u16 {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    Icmpv4Packet::new_checked(ip.payload())
        .unwrap()
        .echo_ident()
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

const QUERY: &[u8] = b"dns query for example.org";
const ANSWER: &[u8] = b"dns answer: 93.184.216.34, ttl 3600";

#[test]
fn the_checksum_helper_agrees_with_rfc_1071() {
    // RFC 1071, section 3: these bytes sum to 0xddf2.
    assert_eq!(
        ones_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        0xddf2
    );
    // An odd length is padded with a zero byte.
    assert_eq!(ones_sum(&[0xff, 0xff, 0x01]), 0x0100);
    let query = udp(sa("10.0.3.11:40000"), sa("8.8.8.8:53"), QUERY);
    assert_checksums(&query);
    let mut corrupt = query.clone();
    corrupt[30] ^= 0x01;
    assert!(std::panic::catch_unwind(|| assert_checksums(&corrupt)).is_err());
}

#[test]
fn udp_from_the_lan_leaves_masqueraded_with_its_port_and_the_reply_comes_back() {
    let mut rig = Rig::new(gw());
    let query = udp(sa("10.0.3.11:40000"), sa("8.8.8.8:53"), QUERY);
    let sent = expect_one(rig.lan_sends(ALICE, &query), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(
        endpoints(&sent),
        (PROTO_UDP, sa("198.51.100.1:40000"), sa("8.8.8.8:53"))
    );
    assert_eq!(sent[8], 63, "TTL");
    assert_eq!(
        sent,
        hop(&udp(sa("198.51.100.1:40000"), sa("8.8.8.8:53"), QUERY))
    );

    let answer = udp(sa("8.8.8.8:53"), sa("198.51.100.1:40000"), ANSWER);
    let back = expect_one(rig.wan_sends(&answer), LAN, ALICE.mac, GW_LAN);
    assert_eq!(
        endpoints(&back),
        (PROTO_UDP, sa("8.8.8.8:53"), sa("10.0.3.11:40000"))
    );
    assert_eq!(
        back,
        hop(&udp(sa("8.8.8.8:53"), sa("10.0.3.11:40000"), ANSWER))
    );

    let flows = rig.flows();
    assert_eq!(flows.len(), 1);
    assert_eq!(
        (flows[0].original.src, flows[0].original.dst),
        (sa("10.0.3.11:40000"), sa("8.8.8.8:53"))
    );
    assert_eq!(
        (flows[0].reply.src, flows[0].reply.dst),
        (sa("8.8.8.8:53"), sa("198.51.100.1:40000"))
    );
    assert_eq!(flows[0].state, FlowState::Replied);
    assert_eq!(flows[0].packets, [1, 1]);
    let c = rig.counters();
    assert_eq!((c.forwarded, c.nat_translated), (2, 2));
}

#[test]
fn two_lan_hosts_with_one_source_port_get_distinct_outside_ports() {
    let mut rig = Rig::new(gw());
    let a = expect_one(
        rig.lan_sends(
            ALICE,
            &udp(sa("10.0.3.11:40000"), sa("8.8.8.8:53"), b"from alice"),
        ),
        WAN,
        UPSTREAM.mac,
        GW_WAN,
    );
    assert_eq!(endpoints(&a).1, sa("198.51.100.1:40000"));
    let b = expect_one(
        rig.lan_sends(
            BOB,
            &udp(sa("10.0.3.12:40000"), sa("8.8.8.8:53"), b"from bob"),
        ),
        WAN,
        UPSTREAM.mac,
        GW_WAN,
    );
    let bob_port = endpoints(&b).1.port();
    assert_ne!(
        bob_port, 40000,
        "the second flow cannot reuse the first's port"
    );
    assert!(bob_port >= 1024, "taken from the configured range");
    let bob_outside = SocketAddrV4::new(OUTSIDE, bob_port);
    assert_eq!(b, hop(&udp(bob_outside, sa("8.8.8.8:53"), b"from bob")));

    // Replies, Bob's first: each reaches its own host.
    let to_bob = udp(sa("8.8.8.8:53"), bob_outside, b"answer for bob");
    let got = expect_one(rig.wan_sends(&to_bob), LAN, BOB.mac, GW_LAN);
    assert_eq!(
        got,
        hop(&udp(
            sa("8.8.8.8:53"),
            sa("10.0.3.12:40000"),
            b"answer for bob"
        ))
    );
    let to_alice = udp(
        sa("8.8.8.8:53"),
        sa("198.51.100.1:40000"),
        b"answer for alice",
    );
    let got = expect_one(rig.wan_sends(&to_alice), LAN, ALICE.mac, GW_LAN);
    assert_eq!(
        got,
        hop(&udp(
            sa("8.8.8.8:53"),
            sa("10.0.3.11:40000"),
            b"answer for alice"
        ))
    );
    assert_eq!(rig.flows().len(), 2);
}

#[test]
fn tcp_handshake_is_translated_both_ways_and_tracked_to_close() {
    let mut rig = Rig::new(gw());
    let (inside, remote) = (sa("10.0.3.11:40001"), sa("93.184.216.34:443"));
    let outside = sa("198.51.100.1:40001");
    let state = |rig: &Rig| {
        let flows = rig.flows();
        assert_eq!(flows.len(), 1);
        flows[0].state
    };

    let syn = tcp(inside, remote, TCP_SYN, 1000, 0);
    let sent = expect_one(rig.lan_sends(ALICE, &syn), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(sent, hop(&tcp(outside, remote, TCP_SYN, 1000, 0)));
    assert_eq!(state(&rig), FlowState::SynSent);

    let syn_ack = tcp(remote, outside, TCP_SYN | TCP_ACK, 5000, 1001);
    let got = expect_one(rig.wan_sends(&syn_ack), LAN, ALICE.mac, GW_LAN);
    assert_eq!(
        got,
        hop(&tcp(remote, inside, TCP_SYN | TCP_ACK, 5000, 1001))
    );
    assert_eq!(state(&rig), FlowState::SynReceived);

    let ack = tcp(inside, remote, TCP_ACK, 1001, 5001);
    let sent = expect_one(rig.lan_sends(ALICE, &ack), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(sent, hop(&tcp(outside, remote, TCP_ACK, 1001, 5001)));
    assert_eq!(state(&rig), FlowState::Established);

    let rst = tcp(remote, outside, TCP_RST | TCP_ACK, 5001, 1001);
    let got = expect_one(rig.wan_sends(&rst), LAN, ALICE.mac, GW_LAN);
    assert_eq!(
        got,
        hop(&tcp(remote, inside, TCP_RST | TCP_ACK, 5001, 1001))
    );
    assert_eq!(state(&rig), FlowState::Close);
    assert_eq!(rig.counters().nat_translated, 4);
}

#[test]
fn icmp_echo_keeps_a_free_identifier_and_the_reply_is_translated_back() {
    let mut rig = Rig::new(gw());
    let ping = echo(ALICE.ip, DNS, true, 0x1234, 1);
    let sent = expect_one(rig.lan_sends(ALICE, &ping), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(echo_ident(&sent), 0x1234);
    assert_eq!(sent, hop(&echo(OUTSIDE, DNS, true, 0x1234, 1)));
    let pong = echo(DNS, OUTSIDE, false, 0x1234, 1);
    let got = expect_one(rig.wan_sends(&pong), LAN, ALICE.mac, GW_LAN);
    assert_eq!(got, hop(&echo(DNS, ALICE.ip, false, 0x1234, 1)));

    // Bob picks the same identifier: his is translated, and the reply
    // carries his own back to him.
    let ping = echo(BOB.ip, DNS, true, 0x1234, 7);
    let sent = expect_one(rig.lan_sends(BOB, &ping), WAN, UPSTREAM.mac, GW_WAN);
    let ident = echo_ident(&sent);
    assert_ne!(ident, 0x1234);
    assert_eq!(sent, hop(&echo(OUTSIDE, DNS, true, ident, 7)));
    let pong = echo(DNS, OUTSIDE, false, ident, 7);
    let got = expect_one(rig.wan_sends(&pong), LAN, BOB.mac, GW_LAN);
    assert_eq!(got, hop(&echo(DNS, BOB.ip, false, 0x1234, 7)));
}

#[test]
fn unsolicited_traffic_at_the_outside_address_is_dropped_but_pings_are_answered() {
    let mut rig = Rig::new(gw());
    let outside_port = sa("198.51.100.1:5555");
    let syn = tcp(sa("203.0.113.9:5000"), outside_port, TCP_SYN, 1, 0);
    assert!(rig.wan_sends(&syn).is_empty(), "no RST, no ICMP, nothing");
    assert_eq!(rig.counters().nat_unsolicited, 1);
    let dgram = udp(sa("203.0.113.9:5000"), outside_port, b"knock knock");
    assert!(rig.wan_sends(&dgram).is_empty());
    assert_eq!(rig.counters().nat_unsolicited, 2);
    assert!(rig.flows().is_empty());

    // The router itself still answers pings on its outside address.
    let ping = echo(REMOTE, OUTSIDE, true, 0x0077, 3);
    let reply = expect_one(rig.wan_sends(&ping), WAN, UPSTREAM.mac, GW_WAN);
    let header = Ipv4Packet::new_checked(&reply[..]).unwrap();
    assert_eq!((header.src_addr(), header.dst_addr()), (OUTSIDE, REMOTE));
    assert_eq!(header.hop_limit(), 64);
    let icmp = Icmpv4Packet::new_checked(header.payload()).unwrap();
    assert_eq!((icmp.msg_type().into(), icmp.msg_code()), (0u8, 0));
    assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x0077, 3));
    assert_eq!(icmp.data(), b"switchboard ping");
    assert_eq!(rig.counters().nat_unsolicited, 2);

    // A flow's outside port stops answering once the flow has expired.
    let query = udp(sa("10.0.3.11:40000"), sa("8.8.8.8:53"), QUERY);
    expect_one(rig.lan_sends(ALICE, &query), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(rig.flows().len(), 1);
    let udp_timeout = ConntrackConfig::default().timeouts.udp;
    rig.advance_to(rig.now + udp_timeout + Duration::from_secs(2));
    assert!(rig.flows().is_empty(), "the unreplied UDP flow expired");
    let late = udp(sa("8.8.8.8:53"), sa("198.51.100.1:40000"), ANSWER);
    assert!(rig.wan_sends(&late).is_empty());
    assert_eq!(rig.counters().nat_unsolicited, 3);
}

#[test]
fn icmp_error_about_a_translated_packet_reaches_the_inside_host_rewritten() {
    let mut rig = Rig::new(gw());
    let query = udp(sa("10.0.3.11:40000"), sa("8.8.8.8:53"), QUERY);
    let sent = expect_one(rig.lan_sends(ALICE, &query), WAN, UPSTREAM.mac, GW_WAN);

    // Some hop further on ran out of TTL: it quotes the packet whole, as it
    // arrived there (TTL 1).
    let hop_addr = Ipv4Addr::new(192, 0, 2, 7);
    let quote = edited(sent, |p| p.set_hop_limit(1));
    let error = icmp_error(hop_addr, OUTSIDE, 11, 0, &quote);
    let got = expect_one(rig.wan_sends(&error), LAN, ALICE.mac, GW_LAN);

    // The quote is now Alice's own packet (at TTL 1), both of its
    // checksums valid, the outer source still the hop.
    let original_quote = edited(query.clone(), |p| p.set_hop_limit(1));
    assert_eq!(
        got,
        hop(&icmp_error(hop_addr, ALICE.ip, 11, 0, &original_quote))
    );
    let outer = Ipv4Packet::new_checked(&got[..]).unwrap();
    assert_eq!((outer.src_addr(), outer.dst_addr()), (hop_addr, ALICE.ip));
    let inner = &outer.payload()[8..];
    assert_eq!(
        endpoints(inner),
        (PROTO_UDP, sa("10.0.3.11:40000"), sa("8.8.8.8:53"))
    );
    assert_checksums(inner);
    assert_eq!(rig.counters().nat_translated, 2);
}

#[test]
fn port_forward_reaches_the_inside_server_and_hairpin_is_refused() {
    let mut rig = Rig::new(gw_with_forward());
    let (client, forwarded) = (sa("203.0.113.9:5000"), sa("198.51.100.1:8080"));
    let server = sa("10.0.3.11:80");

    let syn = tcp(client, forwarded, TCP_SYN, 7000, 0);
    let got = expect_one(rig.wan_sends(&syn), LAN, ALICE.mac, GW_LAN);
    assert_eq!(endpoints(&got), (PROTO_TCP, client, server));
    assert_eq!(got, hop(&tcp(client, server, TCP_SYN, 7000, 0)));

    let syn_ack = tcp(server, client, TCP_SYN | TCP_ACK, 9000, 7001);
    let sent = expect_one(rig.lan_sends(ALICE, &syn_ack), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(endpoints(&sent), (PROTO_TCP, forwarded, client));
    assert_eq!(
        sent,
        hop(&tcp(forwarded, client, TCP_SYN | TCP_ACK, 9000, 7001))
    );

    let flows = rig.flows();
    assert_eq!(flows.len(), 1);
    assert!(flows[0].dnat);
    assert_eq!(flows[0].state, FlowState::SynReceived);

    // Bob tries the outside address from the inside.
    let hairpin = tcp(sa("10.0.3.12:41000"), forwarded, TCP_SYN, 1, 0);
    assert!(rig.lan_sends(BOB, &hairpin).is_empty());
    assert_eq!(rig.counters().nat_hairpin_refused, 1);
    assert_eq!(rig.flows().len(), 1);
}

#[test]
fn a_full_table_refuses_new_flows_but_keeps_translating_old_ones() {
    let mut config = gw();
    config.nat.conntrack.max_flows = 2;
    let mut rig = Rig::new(config);
    for port in [40000, 40001] {
        let src = SocketAddrV4::new(ALICE.ip, port);
        let sent = expect_one(
            rig.lan_sends(ALICE, &udp(src, sa("8.8.8.8:53"), QUERY)),
            WAN,
            UPSTREAM.mac,
            GW_WAN,
        );
        assert_eq!(
            sent,
            hop(&udp(
                SocketAddrV4::new(OUTSIDE, port),
                sa("8.8.8.8:53"),
                QUERY
            ))
        );
    }
    let third = udp(sa("10.0.3.11:40002"), sa("8.8.8.8:53"), QUERY);
    assert!(rig.lan_sends(ALICE, &third).is_empty(), "refused silently");
    let c = rig.counters();
    assert_eq!((c.nat_refused, c.forwarded), (1, 2));
    assert_eq!(rig.flows().len(), 2);

    let answer = udp(sa("8.8.8.8:53"), sa("198.51.100.1:40000"), ANSWER);
    let got = expect_one(rig.wan_sends(&answer), LAN, ALICE.mac, GW_LAN);
    assert_eq!(
        got,
        hop(&udp(sa("8.8.8.8:53"), sa("10.0.3.11:40000"), ANSWER))
    );
}

#[test]
fn excluded_destinations_and_unmasqueraded_interfaces_are_routed_untranslated() {
    let mut rig = Rig::new(gw_with_dmz());
    // Inside the lan (the rule's exception, and not out of wan anyway).
    let to_bob = udp(sa("10.0.3.11:40000"), sa("10.0.3.12:7"), b"hi bob");
    let got = expect_one(rig.lan_sends(ALICE, &to_bob), LAN, BOB.mac, GW_LAN);
    assert_eq!(got, hop(&to_bob));

    // To the dmz, which has no masquerade rule, and back.
    let to_dmz = udp(sa("10.0.3.11:40000"), sa("172.16.0.5:7"), b"hi dmz");
    let got = expect_one(rig.lan_sends(ALICE, &to_dmz), DMZ, DMZ_HOST.mac, GW_DMZ);
    assert_eq!(got, hop(&to_dmz));
    let from_dmz = udp(sa("172.16.0.5:7"), sa("10.0.3.11:40000"), b"hi alice");
    let got = expect_one(rig.sends(DMZ, DMZ_HOST, &from_dmz), LAN, ALICE.mac, GW_LAN);
    assert_eq!(got, hop(&from_dmz));
    assert!(rig.flows().is_empty());
    assert_eq!(rig.counters().nat_translated, 0);

    // An excepted destination that is routed out of wan stays untranslated
    // too: the exception is about the destination, not the interface.
    let mut config = gw();
    config.nat.masquerade[0].except.push(net("192.0.2.0/24"));
    let mut rig = Rig::new(config);
    let packet = udp(sa("10.0.3.11:40000"), sa("192.0.2.50:7"), b"hi partner");
    let got = expect_one(rig.lan_sends(ALICE, &packet), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(got, hop(&packet));
    assert!(rig.flows().is_empty());
}

#[test]
fn later_fragments_follow_their_first_fragment_and_orphans_are_dropped() {
    let mut rig = Rig::new(gw());
    let data: Vec<u8> = (0..40u8).collect();
    let (inside, dst) = (sa("10.0.3.11:40000"), sa("8.8.8.8:53"));
    let outside = sa("198.51.100.1:40000");
    let whole = udp_segment(inside, dst, &data);
    assert_eq!(whole.len(), 48);
    let first = udp_fragment(ALICE.ip, DNS, 0x4242, 0, true, &whole[..24]);
    let second = udp_fragment(ALICE.ip, DNS, 0x4242, 24, false, &whole[24..]);

    let out1 = expect_one(rig.lan_sends(ALICE, &first), WAN, UPSTREAM.mac, GW_WAN);
    let translated = udp_segment(outside, dst, &data);
    assert_eq!(
        out1,
        hop(&udp_fragment(
            OUTSIDE,
            DNS,
            0x4242,
            0,
            true,
            &translated[..24]
        ))
    );
    let out2 = expect_one(rig.lan_sends(ALICE, &second), WAN, UPSTREAM.mac, GW_WAN);
    assert_eq!(
        out2,
        hop(&edited(second.clone(), |p| p.set_src_addr(OUTSIDE)))
    );
    assert_eq!(
        &out2[20..],
        &second[20..],
        "a later fragment's data is untouched"
    );

    // Reassembled, the datagram's UDP checksum holds for the new addresses.
    let mut reassembled = out1[20..].to_vec();
    reassembled.extend_from_slice(&out2[20..]);
    let pseudo = with_pseudo_header(&OUTSIDE.octets(), &DNS.octets(), PROTO_UDP, &reassembled);
    assert_eq!(ones_sum(&pseudo), 0xffff);

    // A later fragment of a datagram whose first fragment never came.
    let orphan = udp_fragment(ALICE.ip, DNS, 0x5151, 24, false, &whole[24..]);
    assert!(rig.lan_sends(ALICE, &orphan).is_empty());
    let c = rig.counters();
    assert_eq!(
        (c.nat_fragments_dropped, c.forwarded, c.nat_translated),
        (1, 2, 2)
    );
}

#[test]
fn untrackable_protocols_are_not_masqueraded_but_dropped() {
    // GRE has no ports to keep flows apart; sending it out with the inside
    // address would leak it, so the documented choice is to drop it.
    let mut rig = Rig::new(gw());
    let gre = ipv4(
        ALICE.ip,
        REMOTE,
        PROTO_GRE,
        &[0, 0, 0x08, 0x00, 0x45, 0, 0, 20],
    );
    assert!(rig.lan_sends(ALICE, &gre).is_empty());
    let c = rig.counters();
    assert_eq!((c.nat_untrackable, c.forwarded), (1, 0));
    assert!(rig.flows().is_empty());
}
