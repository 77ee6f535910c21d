//! In-memory tests of the router: simulated hosts, explicit times.
//!
//! Hosts build their frames with `smoltcp::wire` (so the router is checked
//! against an independent encoder, not against itself), every frame the
//! router emits is collected by a [`Wire`], and each test asserts on the
//! exact frames that crossed it: Ethernet addresses, ARP fields, IPv4
//! addresses, TTL and checksum, ICMP type, code and quoted bytes.

use super::arp_cache::ArpState;
use super::*;
use crate::mac::MacAddr;
use crate::time::Instant;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
    UdpRepr,
};
use std::net::Ipv4Addr;
use std::time::Duration;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;

/// Ethernet's minimum frame length without the FCS: what a NIC pads to.
const MIN_FRAME: usize = 60;

/// Bytes written into the transmit space right after a send, so a router
/// that relies on the space keeping a sent frame is caught.
const POISON: u8 = 0xee;

// ---------------------------------------------------------------------------
// The wire
// ---------------------------------------------------------------------------

/// A [`Transmit`] that records every frame with the interface it left by.
struct Wire {
    space: Vec<u8>,
    frames: Vec<(IfaceId, Vec<u8>)>,
    /// How many of `frames` were sent as the handled frame rewritten.
    forwarded: usize,
}

impl Wire {
    fn new() -> Wire {
        Wire {
            space: vec![POISON; 70_000],
            frames: Vec::new(),
            forwarded: 0,
        }
    }

    fn take(&mut self) -> Vec<(IfaceId, Vec<u8>)> {
        std::mem::take(&mut self.frames)
    }
}

impl Transmit for Wire {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        Some(&mut self.space)
    }

    fn send(&mut self, iface: IfaceId, len: usize) {
        self.frames.push((iface, self.space[..len].to_vec()));
        self.space.fill(POISON);
    }

    fn send_forwarded(&mut self, iface: IfaceId, len: usize) {
        self.forwarded += 1;
        self.send(iface, len);
    }
}

// ---------------------------------------------------------------------------
// Addresses and configuration
// ---------------------------------------------------------------------------

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn net(s: &str) -> ipnet::Ipv4Net {
    s.parse().unwrap()
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, last])
}

/// The router's interface MACs in the standard rig: easy to read in a
/// failing assertion.
const R0: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);
const R1: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);

const LEFT: IfaceId = IfaceId(0);
const RIGHT: IfaceId = IfaceId(1);

fn iface(name: &str, mac: MacAddr, addrs: &[&str], mtu: u16, proxy_arp: bool) -> InterfaceConfig {
    InterfaceConfig {
        name: name.into(),
        mac,
        addresses: addrs.iter().map(|a| net(a)).collect(),
        mtu,
        proxy_arp,
    }
}

/// The standard router: "left" 10.0.0.1/24 (iface 0), "right" 10.1.0.1/24
/// (iface 1), both MTU 1500, no proxy ARP, no static routes.
fn standard() -> RouterConfig {
    RouterConfig {
        name: "r".into(),
        interfaces: vec![
            iface("left", R0, &["10.0.0.1/24"], 1500, false),
            iface("right", R1, &["10.1.0.1/24"], 1500, false),
        ],
        routes: Vec::new(),
        arp: ArpConfig::default(),
        nat: crate::router::NatConfig::default(),
        services: Default::default(),
        host: None,
    }
}

/// Host A on the left network, B on the right.
fn host_a() -> Host {
    Host::new(mac(0x0a), "10.0.0.2")
}

fn host_b() -> Host {
    Host::new(mac(0x0b), "10.1.0.2")
}

fn secs(s: u64) -> Instant {
    Instant::from_secs(s)
}

// ---------------------------------------------------------------------------
// Frame building
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

/// An IPv4 packet: no options, DF clear, identification 0x0101, checksum
/// filled in.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, proto: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len: payload.len(),
        hop_limit: ttl,
    };
    let mut p = vec![0u8; repr.buffer_len() + payload.len()];
    let mut packet = Ipv4Packet::new_unchecked(&mut p[..]);
    repr.emit(&mut packet, &ChecksumCapabilities::default());
    packet.payload_mut().copy_from_slice(payload);
    packet.set_ident(0x0101);
    packet.set_dont_frag(false);
    packet.fill_checksum();
    p
}

/// `packet` with its header changed by `edit` and the checksum refilled.
fn edited(mut packet: Vec<u8>, edit: impl FnOnce(&mut Ipv4Packet<&mut [u8]>)) -> Vec<u8> {
    let mut p = Ipv4Packet::new_unchecked(&mut packet[..]);
    edit(&mut p);
    p.fill_checksum();
    packet
}

/// What a correct router puts on the next link: the same packet with TTL
/// one less and the header checksum to match.
fn forwarded_form(packet: &[u8]) -> Vec<u8> {
    let ttl = packet[8];
    edited(packet.to_vec(), |p| p.set_hop_limit(ttl - 1))
}

/// A simulated host: one MAC, one IPv4 address.
#[derive(Debug, Clone, Copy)]
struct Host {
    mac: MacAddr,
    ip: Ipv4Addr,
}

impl Host {
    fn new(mac: MacAddr, addr: &str) -> Host {
        Host { mac, ip: ip(addr) }
    }

    fn arp(
        &self,
        op: ArpOperation,
        target_mac: MacAddr,
        target_ip: Ipv4Addr,
        to: MacAddr,
    ) -> Vec<u8> {
        let repr = ArpRepr::EthernetIpv4 {
            operation: op,
            source_hardware_addr: EthernetAddress(self.mac.0),
            source_protocol_addr: self.ip,
            target_hardware_addr: EthernetAddress(target_mac.0),
            target_protocol_addr: target_ip,
        };
        let mut p = vec![0u8; repr.buffer_len()];
        repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
        ethernet(to, self.mac, ETHERTYPE_ARP, &p)
    }

    /// "Who has `target`?", broadcast.
    fn arp_request(&self, target: Ipv4Addr) -> Vec<u8> {
        self.arp(
            ArpOperation::Request,
            MacAddr([0; 6]),
            target,
            MacAddr::BROADCAST,
        )
    }

    /// "I am here", unicast to whoever asked.
    fn arp_reply(&self, to_mac: MacAddr, to_ip: Ipv4Addr) -> Vec<u8> {
        self.arp(ArpOperation::Reply, to_mac, to_ip, to_mac)
    }

    /// `packet` in a frame to `to` (the router's interface MAC).
    fn frame(&self, to: MacAddr, packet: &[u8]) -> Vec<u8> {
        ethernet(to, self.mac, ETHERTYPE_IPV4, packet)
    }

    /// A UDP datagram from this host, as an IPv4 packet.
    fn udp(&self, dst: Ipv4Addr, ttl: u8, data: &[u8]) -> Vec<u8> {
        udp_packet(self.ip, dst, ttl, data)
    }

    /// An ICMP echo request from this host, as an IPv4 packet.
    fn ping(&self, dst: Ipv4Addr, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no,
            data,
        };
        let mut icmp = vec![0u8; repr.buffer_len()];
        repr.emit(
            &mut Icmpv4Packet::new_unchecked(&mut icmp[..]),
            &ChecksumCapabilities::default(),
        );
        ipv4(self.ip, dst, 64, IpProtocol::Icmp, &icmp)
    }
}

fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, data: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: 40000,
        dst_port: 9,
    };
    let mut dgram = vec![0u8; repr.header_len() + data.len()];
    repr.emit(
        &mut UdpPacket::new_unchecked(&mut dgram[..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        data.len(),
        |buf| buf.copy_from_slice(data),
        &ChecksumCapabilities::default(),
    );
    ipv4(src, dst, ttl, IpProtocol::Udp, &dgram)
}

// ---------------------------------------------------------------------------
// Parsing what the router sent
// ---------------------------------------------------------------------------

fn eth_addrs(frame: &[u8]) -> (MacAddr, MacAddr, u16) {
    let f = EthernetFrame::new_checked(frame).expect("frame shorter than its header");
    (
        MacAddr(f.dst_addr().0),
        MacAddr(f.src_addr().0),
        u16::from(f.ethertype()),
    )
}

/// One ARP frame as seen on the wire.
#[derive(Debug, PartialEq, Eq)]
struct ArpSeen {
    eth_dst: MacAddr,
    eth_src: MacAddr,
    op: ArpOperation,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_mac: MacAddr,
    target_ip: Ipv4Addr,
}

fn arp_of(frame: &[u8]) -> ArpSeen {
    let (eth_dst, eth_src, ethertype) = eth_addrs(frame);
    assert_eq!(ethertype, ETHERTYPE_ARP, "not ARP: {frame:02x?}");
    assert_eq!(frame.len(), MIN_FRAME, "ARP frames are padded to 60 bytes");
    assert!(
        frame[42..].iter().all(|&b| b == 0),
        "padding is zero: {frame:02x?}"
    );
    let packet = ArpPacket::new_checked(&frame[14..]).unwrap();
    let Ok(ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_hardware_addr,
        target_protocol_addr,
    }) = ArpRepr::parse(&packet)
    else {
        panic!("not Ethernet/IPv4 ARP: {frame:02x?}");
    };
    ArpSeen {
        eth_dst,
        eth_src,
        op: operation,
        sender_mac: MacAddr(source_hardware_addr.0),
        sender_ip: source_protocol_addr,
        target_mac: MacAddr(target_hardware_addr.0),
        target_ip: target_protocol_addr,
    }
}

/// The broadcast request a router with interface MAC `own` and address
/// `sender` sends to resolve `target`.
fn who_has(own: MacAddr, sender: &str, target: &str) -> ArpSeen {
    ArpSeen {
        eth_dst: MacAddr::BROADCAST,
        eth_src: own,
        op: ArpOperation::Request,
        sender_mac: own,
        sender_ip: ip(sender),
        target_mac: MacAddr([0; 6]),
        target_ip: ip(target),
    }
}

/// An IPv4 frame: its Ethernet destination and source, and the IPv4 packet
/// (cut to its total length). Checks the header checksum and that anything
/// past the packet is only padding to the Ethernet minimum.
fn ipv4_of(frame: &[u8]) -> (MacAddr, MacAddr, &[u8]) {
    let (dst, src, ethertype) = eth_addrs(frame);
    assert_eq!(ethertype, ETHERTYPE_IPV4, "not IPv4: {frame:02x?}");
    let packet = Ipv4Packet::new_checked(&frame[14..]).expect("truncated IPv4");
    assert_eq!(packet.version(), 4);
    assert!(
        packet.verify_checksum(),
        "bad IPv4 header checksum: {frame:02x?}"
    );
    let end = 14 + usize::from(packet.total_len());
    assert!(
        frame.len() == end || (frame.len() == MIN_FRAME && end < MIN_FRAME),
        "frame of {} bytes carries an IPv4 packet of {}",
        frame.len(),
        end - 14
    );
    (dst, src, &frame[14..end])
}

/// An ICMP message inside an IPv4 packet: type, code, the "rest of header"
/// word and the body (for errors, the quoted packet). Checks the ICMP
/// checksum.
fn icmp_of(packet: &[u8]) -> (u8, u8, [u8; 4], &[u8]) {
    let ip = Ipv4Packet::new_checked(packet).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Icmp, "not ICMP");
    let body = ip.payload();
    let icmp = Icmpv4Packet::new_checked(body).unwrap();
    assert!(icmp.verify_checksum(), "bad ICMP checksum: {body:02x?}");
    (
        body[0],
        body[1],
        [body[4], body[5], body[6], body[7]],
        &body[8..],
    )
}

/// Checks an ICMP error the router sent: out of `out` to `host` from the
/// interface MAC `own`, from address `from`, TTL 64, the given type and
/// code; returns the rest-of-header word and the quote.
fn expect_icmp_error(
    sent: &(IfaceId, Vec<u8>),
    out: IfaceId,
    own: MacAddr,
    host: Host,
    from: &str,
    (ty, code): (u8, u8),
) -> ([u8; 4], Vec<u8>) {
    assert_eq!(sent.0, out);
    let (dst, src, packet) = ipv4_of(&sent.1);
    assert_eq!((dst, src), (host.mac, own));
    let header = Ipv4Packet::new_unchecked(packet);
    assert_eq!(header.src_addr(), ip(from));
    assert_eq!(header.dst_addr(), host.ip);
    assert_eq!(header.hop_limit(), 64);
    assert!(!header.more_frags() && header.frag_offset() == 0);
    let (t, c, rest, quote) = icmp_of(packet);
    assert_eq!((t, c), (ty, code));
    (rest, quote.to_vec())
}

// ---------------------------------------------------------------------------
// The rig
// ---------------------------------------------------------------------------

struct Rig {
    router: Router,
    wire: Wire,
}

impl Rig {
    fn new(config: RouterConfig) -> Rig {
        Rig {
            router: Router::new(config).expect("valid router config"),
            wire: Wire::new(),
        }
    }

    /// Feeds one frame in on `iface`; returns what came out.
    fn input(&mut self, now: Instant, iface: IfaceId, frame: &[u8]) -> Vec<(IfaceId, Vec<u8>)> {
        self.router.handle_frame(now, iface, frame, &mut self.wire);
        self.wire.take()
    }

    /// Lets time pass to `now`; returns what came out.
    fn timeout(&mut self, now: Instant) -> Vec<(IfaceId, Vec<u8>)> {
        self.router.handle_timeout(now, &mut self.wire);
        self.wire.take()
    }

    /// `host`, on `iface`, asks the router for its first address there, as
    /// a host does before using its gateway; the router learns the host and
    /// answers with exactly one reply.
    fn introduce(&mut self, now: Instant, iface: IfaceId, host: Host) {
        let config = &self.router.interfaces()[iface.index()];
        let (own, addr) = (config.mac, config.addresses[0].addr());
        let out = self.input(now, iface, &host.arp_request(addr));
        assert_eq!(out.len(), 1, "one ARP reply to {host:?}");
        assert_eq!(out[0].0, iface);
        assert_eq!(
            arp_of(&out[0].1),
            ArpSeen {
                eth_dst: host.mac,
                eth_src: own,
                op: ArpOperation::Reply,
                sender_mac: own,
                sender_ip: addr,
                target_mac: host.mac,
                target_ip: host.ip,
            }
        );
    }

    fn counters(&self) -> RouterCounters {
        self.router.counters()
    }

    /// The ARP cache as (iface, ip, mac, state, queued).
    fn arp(&self, now: Instant) -> Vec<(IfaceId, Ipv4Addr, Option<MacAddr>, ArpState, usize)> {
        self.router
            .arp_entries(now)
            .map(|e| (e.iface, e.ip, e.mac, e.state, e.queued))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn arp_request_for_own_address_is_answered_and_requester_learned() {
    let mut rig = Rig::new(standard());
    let a = host_a();
    let t = secs(5);
    let request = a.arp_request(ip("10.0.0.1"));
    assert_eq!(request.len(), 60);
    let out = rig.input(t, LEFT, &request);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, LEFT);
    // The exact reply, byte for byte: Ethernet to A from the left MAC, ARP
    // reply "10.0.0.1 is at R0" addressed to A, zero-padded to 60 bytes.
    let mut expected = Vec::new();
    expected.extend_from_slice(&a.mac.0);
    expected.extend_from_slice(&R0.0);
    expected.extend_from_slice(&[0x08, 0x06]);
    expected.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02]);
    expected.extend_from_slice(&R0.0);
    expected.extend_from_slice(&[10, 0, 0, 1]);
    expected.extend_from_slice(&a.mac.0);
    expected.extend_from_slice(&[10, 0, 0, 2]);
    expected.resize(60, 0);
    assert_eq!(out[0].1, expected);
    assert_eq!(
        rig.arp(t),
        vec![(LEFT, a.ip, Some(a.mac), ArpState::Reachable, 0)]
    );

    // A request for someone else's address on the link: no answer, and the
    // overheard requester is not added (RFC 826: only update what exists).
    let c = Host::new(mac(0x0c), "10.0.0.3");
    assert!(
        rig.input(t, LEFT, &c.arp_request(ip("10.0.0.99")))
            .is_empty()
    );
    assert_eq!(
        rig.arp(t),
        vec![(LEFT, a.ip, Some(a.mac), ArpState::Reachable, 0)]
    );
    let counters = rig.counters();
    assert_eq!(
        (counters.received, counters.arp_in, counters.arp_out),
        (2, 2, 1)
    );
    assert_eq!(counters.dropped_malformed, 0);
}

#[test]
fn forwarding_resolves_the_next_hop_queues_then_releases_in_order() {
    let mut rig = Rig::new(standard());
    let (a, b) = (host_a(), host_b());
    let t = secs(1);
    // Short datagrams: their frames are padded, which must not be forwarded.
    let packets: Vec<Vec<u8>> = (0..3u8)
        .map(|i| a.udp(b.ip, 64, &[i, i + 1, i + 2, 0x55]))
        .collect();
    let out = rig.input(t, LEFT, &a.frame(R0, &packets[0]));
    assert_eq!(out.len(), 1, "exactly one frame: the ARP request");
    assert_eq!(out[0].0, RIGHT);
    assert_eq!(arp_of(&out[0].1), who_has(R1, "10.1.0.1", "10.1.0.2"));
    for (i, p) in packets.iter().enumerate().skip(1) {
        let later = t + Duration::from_millis(i as u64);
        assert!(
            rig.input(later, LEFT, &a.frame(R0, p)).is_empty(),
            "packet {i} waits"
        );
    }
    assert_eq!(
        rig.arp(t),
        vec![(RIGHT, b.ip, None, ArpState::Incomplete, 3)]
    );

    // B answers: the three packets go out in order, rewritten.
    let t2 = t + Duration::from_millis(10);
    let out = rig.input(t2, RIGHT, &b.arp_reply(R1, ip("10.1.0.1")));
    assert_eq!(out.len(), 3);
    for (sent, original) in out.iter().zip(&packets) {
        assert_eq!(sent.0, RIGHT);
        let (dst, src, packet) = ipv4_of(&sent.1);
        assert_eq!((dst, src), (b.mac, R1));
        assert_eq!(Ipv4Packet::new_unchecked(packet).hop_limit(), 63);
        assert_eq!(packet, &forwarded_form(original)[..]);
        // Payload byte-identical (the transport checksum still holds).
        assert_eq!(&packet[20..], &original[20..]);
    }
    assert_eq!(
        rig.arp(t2),
        vec![(RIGHT, b.ip, Some(b.mac), ArpState::Reachable, 0)]
    );

    // A fourth packet goes straight out.
    let fourth = a.udp(b.ip, 9, b"fourth");
    let out = rig.input(t2, LEFT, &a.frame(R0, &fourth));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, RIGHT);
    let (dst, src, packet) = ipv4_of(&out[0].1);
    assert_eq!((dst, src), (b.mac, R1));
    assert_eq!(packet, &forwarded_form(&fourth)[..]);
    assert_eq!(Ipv4Packet::new_unchecked(packet).hop_limit(), 8);

    let c = rig.counters();
    assert_eq!((c.forwarded, c.arp_in, c.arp_out), (4, 1, 1));
    assert_eq!(c.icmp_sent, 0);
}

#[test]
fn queue_overflow_while_resolving_is_counted() {
    let mut rig = Rig::new(standard());
    let (a, b) = (host_a(), host_b());
    let t = secs(1);
    let packets: Vec<Vec<u8>> = (0..10u8).map(|i| a.udp(b.ip, 64, &[i; 8])).collect();
    let mut sent = Vec::new();
    for p in &packets {
        sent.extend(rig.input(t, LEFT, &a.frame(R0, p)));
    }
    assert_eq!(sent.len(), 1, "only the one ARP request");
    assert_eq!(arp_of(&sent[0].1), who_has(R1, "10.1.0.1", "10.1.0.2"));
    assert_eq!(rig.counters().arp_queue_full, 2);
    assert_eq!(
        rig.arp(t),
        vec![(RIGHT, b.ip, None, ArpState::Incomplete, 8)]
    );

    // The first eight (default queue_per_hop) come out; the last two are gone.
    let out = rig.input(t, RIGHT, &b.arp_reply(R1, ip("10.1.0.1")));
    assert_eq!(out.len(), 8);
    for (sent, original) in out.iter().zip(&packets[..8]) {
        let (dst, _, packet) = ipv4_of(&sent.1);
        assert_eq!(dst, b.mac);
        assert_eq!(packet, &forwarded_form(original)[..]);
    }
    assert_eq!(rig.counters().arp_queue_full, 2);
}

#[test]
fn unanswered_arp_retries_then_reports_host_unreachable() {
    let mut rig = Rig::new(standard());
    let (a, b) = (host_a(), host_b());
    let t0 = secs(10);
    rig.introduce(t0, LEFT, a);
    let packets = [a.udp(b.ip, 64, b"first one"), a.udp(b.ip, 30, b"second")];
    let out = rig.input(t0, LEFT, &a.frame(R0, &packets[0]));
    assert_eq!(out.len(), 1);
    assert_eq!(arp_of(&out[0].1), who_has(R1, "10.1.0.1", "10.1.0.2"));
    assert!(rig.input(t0, LEFT, &a.frame(R0, &packets[1])).is_empty());

    // Retries at 1 s and 2 s, not before.
    assert_eq!(rig.router.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    assert!(rig.timeout(t0 + Duration::from_millis(999)).is_empty());
    for n in 1..=2u64 {
        let at = t0 + Duration::from_secs(n);
        let out = rig.timeout(at);
        assert_eq!(out.len(), 1, "retry {n}");
        assert_eq!(out[0].0, RIGHT);
        assert_eq!(arp_of(&out[0].1), who_has(R1, "10.1.0.1", "10.1.0.2"));
        assert_eq!(rig.router.poll_timeout(), Some(at + Duration::from_secs(1)));
        assert_eq!(rig.counters().arp_failed, 0);
    }

    // At 3 s it gives up: one host unreachable per queued packet, to A,
    // from the left address.
    let t3 = t0 + Duration::from_secs(3);
    let out = rig.timeout(t3);
    assert_eq!(out.len(), 2);
    for (sent, original) in out.iter().zip(&packets) {
        let (rest, quote) = expect_icmp_error(sent, LEFT, R0, a, "10.0.0.1", (3, 1));
        assert_eq!(rest, [0; 4]);
        // The quote is the packet as it was queued for the next link, TTL
        // already decremented: Linux queues the forwarded skb and quotes it
        // from the neighbour failure path. Everything else is the original.
        assert_eq!(quote, forwarded_form(original));
        assert_eq!(&quote[12..20], &original[12..20]);
    }
    let c = rig.counters();
    assert_eq!((c.arp_failed, c.icmp_sent), (2, 2));
    assert_eq!(
        rig.arp(t3),
        vec![(LEFT, a.ip, Some(a.mac), ArpState::Reachable, 0)]
    );
    assert!(rig.router.poll_timeout().is_none_or(|t| t > t3));
    assert!(rig.timeout(t3 + Duration::from_secs(1)).is_empty());
}

#[test]
fn ttl_one_is_answered_with_time_exceeded_and_ttl_two_is_forwarded() {
    let mut rig = Rig::new(standard());
    let (a, b) = (host_a(), host_b());
    let t = secs(2);
    rig.introduce(t, LEFT, a);
    rig.introduce(t, RIGHT, b);

    let dying = a.udp(b.ip, 1, b"traceroute probe");
    let out = rig.input(t, LEFT, &a.frame(R0, &dying));
    assert_eq!(out.len(), 1, "the error only; nothing forwarded");
    let (rest, quote) = expect_icmp_error(&out[0], LEFT, R0, a, "10.0.0.1", (11, 0));
    assert_eq!(rest, [0; 4]);
    assert_eq!(quote, dying, "the whole packet quoted as received");
    let c = rig.counters();
    assert_eq!((c.ttl_exceeded, c.forwarded, c.icmp_sent), (1, 0, 1));

    let ttl2 = a.udp(b.ip, 2, b"one more hop");
    let out = rig.input(t, LEFT, &a.frame(R0, &ttl2));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, RIGHT);
    let (dst, src, packet) = ipv4_of(&out[0].1);
    assert_eq!((dst, src), (b.mac, R1));
    assert_eq!(Ipv4Packet::new_unchecked(packet).hop_limit(), 1);
    assert_eq!(packet, &forwarded_form(&ttl2)[..]);
    assert_eq!(rig.counters().forwarded, 1);
}

#[test]
fn no_route_gives_net_unreachable_until_a_default_route_is_added() {
    let mut rig = Rig::new(standard());
    let a = host_a();
    let gw = Host::new(mac(0x99), "10.1.0.254");
    let t = secs(3);
    rig.introduce(t, LEFT, a);
    let far = a.udp(ip("192.0.2.7"), 64, b"far away");
    let out = rig.input(t, LEFT, &a.frame(R0, &far));
    assert_eq!(out.len(), 1);
    let (rest, quote) = expect_icmp_error(&out[0], LEFT, R0, a, "10.0.0.1", (3, 0));
    assert_eq!(rest, [0; 4]);
    assert_eq!(quote, far);
    assert_eq!(rig.counters().dropped_no_route, 1);

    rig.router
        .add_route(StaticRoute {
            dest: net("0.0.0.0/0"),
            gateway: Some(gw.ip),
            iface: None,
            metric: 0,
        })
        .unwrap();
    assert_eq!(
        rig.router.lookup(ip("192.0.2.7")),
        Some(&Route {
            dest: net("0.0.0.0/0"),
            gateway: Some(gw.ip),
            iface: RIGHT,
            metric: 0,
            kind: RouteKind::Static,
        })
    );
    let out = rig.input(t, LEFT, &a.frame(R0, &far));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, RIGHT);
    assert_eq!(arp_of(&out[0].1), who_has(R1, "10.1.0.1", "10.1.0.254"));
    let out = rig.input(t, RIGHT, &gw.arp_reply(R1, ip("10.1.0.1")));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, RIGHT);
    let (dst, src, packet) = ipv4_of(&out[0].1);
    assert_eq!((dst, src), (gw.mac, R1));
    assert_eq!(packet, &forwarded_form(&far)[..]);
    let c = rig.counters();
    assert_eq!((c.dropped_no_route, c.forwarded, c.icmp_sent), (1, 1, 1));
}

#[test]
fn pings_to_any_router_address_are_answered() {
    let mut rig = Rig::new(standard());
    let a = host_a();
    let t = secs(4);
    rig.introduce(t, LEFT, a);
    let data = b"0123456789abcdefghij";
    for (n, target) in ["10.0.0.1", "10.1.0.1"].into_iter().enumerate() {
        let request = a.ping(ip(target), 0x1234, 7 + n as u16, data);
        let out = rig.input(t, LEFT, &a.frame(R0, &request));
        assert_eq!(out.len(), 1, "reply to a ping of {target}");
        assert_eq!(out[0].0, LEFT);
        let (dst, src, packet) = ipv4_of(&out[0].1);
        assert_eq!((dst, src), (a.mac, R0));
        let header = Ipv4Packet::new_checked(packet).unwrap();
        assert_eq!(header.src_addr(), ip(target));
        assert_eq!(header.dst_addr(), a.ip);
        assert_eq!(header.hop_limit(), 64);
        assert_eq!(header.next_header(), IpProtocol::Icmp);
        let icmp = Icmpv4Packet::new_checked(header.payload()).unwrap();
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()),
            Ok(Icmpv4Repr::EchoReply {
                ident: 0x1234,
                seq_no: 7 + n as u16,
                data,
            })
        );
    }
    let c = rig.counters();
    assert_eq!((c.delivered, c.icmp_sent, c.forwarded), (2, 2, 0));
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    let mut rig = Rig::new(standard());
    let a = host_a();
    let t = secs(1);
    rig.introduce(t, LEFT, a);
    let good = a.udp(host_b().ip, 64, &[0x42; 100]);
    assert!(
        good.len() + 14 > MIN_FRAME,
        "no padding to hide a bad length in"
    );
    let mut bad_checksum = good.clone();
    bad_checksum[10] ^= 0x01;
    let mut truncated_arp = a.arp_request(ip("10.0.0.1"));
    truncated_arp.truncate(14 + 20);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("frame shorter than an Ethernet header", vec![0xff; 10]),
        ("IPv4 header cut short", {
            let mut f = a.frame(R0, &good);
            f.truncate(14 + 12);
            f
        }),
        ("bad header checksum", a.frame(R0, &bad_checksum)),
        (
            "version 6 in an IPv4 frame",
            a.frame(R0, &edited(good.clone(), |p| p.set_version(6))),
        ),
        (
            "total length beyond the frame",
            a.frame(
                R0,
                &edited(good.clone(), |p| p.set_total_len(good.len() as u16 + 1)),
            ),
        ),
        (
            "header length 16",
            a.frame(R0, &edited(good.clone(), |p| p.set_header_len(16))),
        ),
        ("ARP packet cut short", truncated_arp),
    ];
    for (n, (what, frame)) in cases.iter().enumerate() {
        assert!(rig.input(t, LEFT, frame).is_empty(), "{what}: nothing sent");
        assert_eq!(
            rig.counters().dropped_malformed,
            n as u64 + 1,
            "{what}: counted"
        );
    }

    // A good packet for a MAC that is not the router's (flooded unicast).
    let out = rig.input(t, LEFT, &a.frame(mac(0x77), &good));
    assert!(out.is_empty());
    let c = rig.counters();
    assert_eq!(c.not_for_us, 1);
    assert_eq!(c.dropped_malformed, cases.len() as u64);
    assert_eq!((c.forwarded, c.icmp_sent, c.arp_out), (0, 0, 1));
}

#[test]
fn routers_are_separate_vrfs_with_overlapping_addresses() {
    let config = |name: &str, right: &str| RouterConfig {
        name: name.into(),
        interfaces: vec![
            iface(
                "left",
                stable_mac(name, "left"),
                &["10.0.0.1/24"],
                1500,
                false,
            ),
            iface("right", stable_mac(name, "right"), &[right], 1500, false),
        ],
        routes: Vec::new(),
        arp: ArpConfig::default(),
        nat: crate::router::NatConfig::default(),
        services: Default::default(),
        host: None,
    };
    let mut red = Rig::new(config("red", "10.1.0.1/24"));
    let mut blue = Rig::new(config("blue", "10.2.0.1/24"));
    let red_left = stable_mac("red", "left");
    let red_right = stable_mac("red", "right");
    assert_ne!(red_left, stable_mac("blue", "left"));
    // The same address behind each, with different MACs.
    let a_red = Host::new(mac(0x21), "10.0.0.2");
    let a_blue = Host::new(mac(0x22), "10.0.0.2");
    let t = secs(1);
    red.introduce(t, LEFT, a_red);
    blue.introduce(t, LEFT, a_blue);
    assert_eq!(
        red.arp(t),
        vec![(LEFT, a_red.ip, Some(a_red.mac), ArpState::Reachable, 0)]
    );
    assert_eq!(
        blue.arp(t),
        vec![(LEFT, a_blue.ip, Some(a_blue.mac), ArpState::Reachable, 0)]
    );
    let blue_counters = blue.counters();
    let blue_arp = blue.arp(t);

    let p = a_red.udp(ip("10.1.0.5"), 64, b"red only");
    let out = red.input(t, LEFT, &a_red.frame(red_left, &p));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, RIGHT);
    assert_eq!(
        arp_of(&out[0].1),
        who_has(red_right, "10.1.0.1", "10.1.0.5")
    );
    assert!(blue.wire.take().is_empty());
    assert_eq!(blue.counters(), blue_counters);
    assert_eq!(blue.arp(t), blue_arp);
    assert_eq!(
        red.arp(t),
        vec![
            (LEFT, a_red.ip, Some(a_red.mac), ArpState::Reachable, 0),
            (RIGHT, ip("10.1.0.5"), None, ArpState::Incomplete, 1),
        ]
    );
    // Red knows no 10.2.0.0/24; blue knows no 10.1.0.0/24.
    assert!(red.router.lookup(ip("10.2.0.5")).is_none());
    assert!(blue.router.lookup(ip("10.1.0.5")).is_none());
}

#[test]
fn proxy_arp_answers_for_hosts_routed_out_of_another_interface() {
    let config = |proxy: bool| RouterConfig {
        name: "p".into(),
        interfaces: vec![
            iface("inside", R0, &["10.30.0.1/32"], 1500, proxy),
            iface("uplink", R1, &["10.1.0.1/24"], 1500, false),
        ],
        routes: vec![StaticRoute {
            dest: net("10.30.0.0/24"),
            gateway: Some(ip("10.1.0.254")),
            iface: None,
            metric: 0,
        }],
        arp: ArpConfig::default(),
        nat: crate::router::NatConfig::default(),
        services: Default::default(),
        host: None,
    };
    let h = Host::new(mac(0x31), "10.30.0.11");
    let t = secs(1);
    let mut rig = Rig::new(config(true));
    let out = rig.input(t, LEFT, &h.arp_request(ip("10.30.0.12")));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, LEFT);
    assert_eq!(
        arp_of(&out[0].1),
        ArpSeen {
            eth_dst: h.mac,
            eth_src: R0,
            op: ArpOperation::Reply,
            sender_mac: R0,
            sender_ip: ip("10.30.0.12"),
            target_mac: h.mac,
            target_ip: h.ip,
        }
    );

    // An address routed back out of the interface the request came in on.
    rig.router
        .add_route(StaticRoute {
            dest: net("10.30.0.13/32"),
            gateway: None,
            iface: Some("inside".into()),
            metric: 0,
        })
        .unwrap();
    assert!(
        rig.input(t, LEFT, &h.arp_request(ip("10.30.0.13")))
            .is_empty()
    );
    // A gratuitous announcement (sender == target) is not answered either.
    let g = Host::new(mac(0x32), "10.30.0.20");
    assert!(rig.input(t, LEFT, &g.arp_request(g.ip)).is_empty());
    assert_eq!(rig.counters().arp_out, 1);

    let mut off = Rig::new(config(false));
    assert!(
        off.input(t, LEFT, &h.arp_request(ip("10.30.0.12")))
            .is_empty()
    );
    assert_eq!(off.counters().arp_out, 0);
}

#[test]
fn too_big_packets_get_frag_needed_with_df_and_are_fragmented_without() {
    let mut config = standard();
    config.interfaces[1].mtu = 576;
    let mut rig = Rig::new(config);
    let (a, b) = (host_a(), host_b());
    let t = secs(1);
    rig.introduce(t, LEFT, a);
    rig.introduce(t, RIGHT, b);
    let data: Vec<u8> = (0..972u32).map(|i| (i * 7 % 251) as u8).collect();
    let big = a.udp(b.ip, 64, &data);
    assert_eq!(big.len(), 1000);

    let df = edited(big.clone(), |p| p.set_dont_frag(true));
    let out = rig.input(t, LEFT, &a.frame(R0, &df));
    assert_eq!(out.len(), 1, "the error only");
    let (rest, quote) = expect_icmp_error(&out[0], LEFT, R0, a, "10.0.0.1", (3, 4));
    assert_eq!(rest, [0, 0, 0x02, 0x40], "next-hop MTU 576");
    // Quoted as received, cut so the error is 576 bytes.
    assert_eq!(out[0].1.len(), 14 + 576);
    assert_eq!(quote, &df[..576 - 28]);
    let c = rig.counters();
    assert_eq!((c.frag_needed, c.fragmented, c.forwarded), (1, 0, 0));

    let big = edited(big, |p| p.set_ident(0x4242));
    let out = rig.input(t, LEFT, &a.frame(R0, &big));
    let lens: Vec<usize> = out.iter().map(|(_, f)| f.len() - 14).collect();
    assert_eq!(lens, vec![572, 448]);
    let mut reassembled = vec![None; big.len() - 20];
    for (n, (iface, frame)) in out.iter().enumerate() {
        assert_eq!(*iface, RIGHT);
        let (dst, src, packet) = ipv4_of(frame);
        assert_eq!((dst, src), (b.mac, R1));
        assert!(packet.len() <= 576);
        let f = Ipv4Packet::new_checked(packet).unwrap();
        assert_eq!(f.ident(), 0x4242);
        assert_eq!(f.hop_limit(), 63);
        assert_eq!((f.src_addr(), f.dst_addr()), (a.ip, b.ip));
        assert_eq!(f.next_header(), IpProtocol::Udp);
        assert!(!f.dont_frag());
        assert_eq!(f.more_frags(), n + 1 < out.len());
        let offset = usize::from(f.frag_offset());
        assert_eq!(offset % 8, 0);
        for (i, byte) in f.payload().iter().enumerate() {
            let slot = &mut reassembled[offset + i];
            assert!(slot.is_none(), "fragments overlap at {}", offset + i);
            *slot = Some(*byte);
        }
    }
    let reassembled: Vec<u8> = reassembled
        .into_iter()
        .map(|b| b.expect("a hole"))
        .collect();
    assert_eq!(reassembled, big[20..]);
    let c = rig.counters();
    assert_eq!((c.frag_needed, c.fragmented, c.forwarded), (1, 1, 1));
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut rig = Rig::new(standard());
    let (a, b) = (host_a(), host_b());
    let t0 = secs(7);
    rig.introduce(t0, LEFT, a);
    let dying = a.frame(R0, &a.udp(b.ip, 1, b"flood"));
    let burst = |rig: &mut Rig, at: Instant| -> usize {
        let mut sent = 0;
        for _ in 0..200 {
            for frame in rig.input(at, LEFT, &dying) {
                expect_icmp_error(&frame, LEFT, R0, a, "10.0.0.1", (11, 0));
                sent += 1;
            }
        }
        sent
    };
    assert_eq!(burst(&mut rig, t0), 50);
    let c = rig.counters();
    assert_eq!(
        (c.ttl_exceeded, c.icmp_sent, c.icmp_rate_limited),
        (200, 50, 150)
    );

    // A second later the bucket is full again.
    assert_eq!(burst(&mut rig, t0 + Duration::from_secs(1)), 50);
    let c = rig.counters();
    assert_eq!(
        (c.ttl_exceeded, c.icmp_sent, c.icmp_rate_limited),
        (400, 100, 300)
    );
    assert_eq!(rig.router.icmp_suppressed(), 300);
}

#[test]
fn start_announces_every_address_with_gratuitous_arp() {
    let mut config = standard();
    config.interfaces[0].addresses.push(net("10.9.0.1/24"));
    let mut rig = Rig::new(config);
    rig.router.start(&mut rig.wire);
    let out = rig.wire.take();
    let seen: Vec<(IfaceId, ArpSeen)> = out.iter().map(|(i, f)| (*i, arp_of(f))).collect();
    let announce = |own: MacAddr, addr: &str| ArpSeen {
        eth_dst: MacAddr::BROADCAST,
        eth_src: own,
        op: ArpOperation::Request,
        sender_mac: own,
        sender_ip: ip(addr),
        target_mac: MacAddr([0; 6]),
        target_ip: ip(addr),
    };
    assert_eq!(
        seen,
        vec![
            (LEFT, announce(R0, "10.0.0.1")),
            (LEFT, announce(R0, "10.9.0.1")),
            (RIGHT, announce(R1, "10.1.0.1")),
        ]
    );
    assert_eq!(rig.counters().arp_out, 3);

    // Its own announcement heard back (a loop) is neither answered nor
    // learned.
    let t = secs(1);
    assert!(rig.input(t, LEFT, &out[0].1).is_empty());
    assert!(rig.arp(t).is_empty());
}

#[test]
fn martian_sources_and_broadcast_destinations_are_not_forwarded() {
    let mut rig = Rig::new(standard());
    let (a, b) = (host_a(), host_b());
    let t = secs(1);
    rig.introduce(t, LEFT, a);
    for (n, src) in [
        "127.0.0.1",
        "224.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "240.0.0.1",
    ]
    .into_iter()
    .enumerate()
    {
        let p = udp_packet(ip(src), b.ip, 64, b"martian");
        assert!(
            rig.input(t, LEFT, &a.frame(R0, &p)).is_empty(),
            "source {src}"
        );
        assert_eq!(rig.counters().dropped_martian, n as u64 + 1, "source {src}");
    }
    for (n, dst) in ["255.255.255.255", "224.0.0.5", "10.1.0.255", "10.0.0.255"]
        .into_iter()
        .enumerate()
    {
        let p = a.udp(ip(dst), 64, b"to many");
        assert!(
            rig.input(t, LEFT, &a.frame(R0, &p)).is_empty(),
            "destination {dst}"
        );
        assert_eq!(
            rig.counters().dropped_broadcast,
            n as u64 + 1,
            "destination {dst}"
        );
    }
    // Unicast IPv4 in a broadcast frame.
    let p = a.udp(b.ip, 64, b"in a broadcast frame");
    assert!(
        rig.input(t, LEFT, &a.frame(MacAddr::BROADCAST, &p))
            .is_empty()
    );
    let c = rig.counters();
    assert_eq!((c.dropped_martian, c.dropped_broadcast), (5, 5));
    assert_eq!((c.forwarded, c.icmp_sent, c.arp_out), (0, 0, 1));
}

#[test]
fn route_edits_are_checked() {
    let mut rig = Rig::new(standard());
    let r = &mut rig.router;
    let route = |dest: &str, gateway: Option<&str>, iface: Option<&str>, metric: u32| StaticRoute {
        dest: net(dest),
        gateway: gateway.map(ip),
        iface: iface.map(String::from),
        metric,
    };
    let snapshot = |r: &Router| r.routes().cloned().collect::<Vec<_>>();
    let connected = snapshot(r);
    assert_eq!(connected.len(), 2);

    for (why, bad, needle) in [
        (
            "gateway off-link",
            route("172.16.0.0/16", Some("192.168.5.1"), None, 0),
            "192.168.5.1",
        ),
        (
            "gateway not on the named interface",
            route("172.16.0.0/16", Some("10.0.0.254"), Some("right"), 0),
            "10.0.0.254",
        ),
        (
            "unknown interface",
            route("172.16.0.0/16", None, Some("nope"), 0),
            "nope",
        ),
        (
            "neither gateway nor interface",
            route("172.16.0.0/16", None, None, 0),
            "172.16.0.0/16",
        ),
        (
            "gateway is the router itself",
            route("172.16.0.0/16", Some("10.0.0.1"), None, 0),
            "10.0.0.1",
        ),
    ] {
        let err = r.add_route(bad).expect_err(why);
        assert!(err.to_string().contains(needle), "{why}: {err}");
        assert_eq!(snapshot(r), connected, "{why}: nothing added");
    }

    r.add_route(route("172.16.0.0/16", Some("10.1.0.254"), None, 0))
        .unwrap();
    for dup in [
        route("172.16.0.0/16", Some("10.1.0.254"), None, 0),
        route("172.16.0.0/16", Some("10.1.0.254"), Some("right"), 10),
        route("172.16.9.9/16", Some("10.1.0.254"), None, 0),
    ] {
        assert!(r.add_route(dup.clone()).is_err(), "duplicate {dup:?}");
    }
    r.add_route(route("172.16.0.0/16", Some("10.1.0.253"), None, 5))
        .unwrap();
    assert_eq!(snapshot(r).len(), 4);

    // Connected routes go with their address, not by hand.
    assert!(
        r.remove_route(net("10.0.0.0/24"), None, None, None)
            .is_err()
    );
    assert!(
        r.remove_route(net("10.1.0.0/24"), None, Some("right"), None)
            .is_err()
    );
    // Two statics match: refuse to guess.
    let err = r
        .remove_route(net("172.16.0.0/16"), None, None, None)
        .unwrap_err();
    assert!(err.to_string().contains('2'), "{err}");
    assert!(
        r.remove_route(net("172.16.0.0/16"), None, Some("nope"), None)
            .is_err()
    );
    assert_eq!(snapshot(r).len(), 4);

    let removed = r
        .remove_route(net("172.16.0.0/16"), Some(ip("10.1.0.253")), None, None)
        .unwrap();
    assert_eq!(
        removed,
        Route {
            dest: net("172.16.0.0/16"),
            gateway: Some(ip("10.1.0.253")),
            iface: RIGHT,
            metric: 5,
            kind: RouteKind::Static,
        }
    );
    let kept = Route {
        dest: net("172.16.0.0/16"),
        gateway: Some(ip("10.1.0.254")),
        iface: RIGHT,
        metric: 0,
        kind: RouteKind::Static,
    };
    assert_eq!(r.lookup(ip("172.16.3.4")), Some(&kept));
    let mut expected = connected.clone();
    expected.push(kept.clone());
    let mut now = snapshot(r);
    now.sort_by_key(|r| (r.dest, r.metric));
    expected.sort_by_key(|r| (r.dest, r.metric));
    assert_eq!(now, expected);

    // Host bits in the destination are ignored, as when adding.
    assert_eq!(
        r.remove_route(net("172.16.5.0/16"), None, None, None),
        Ok(kept)
    );
    assert_eq!(snapshot(r), connected);
    assert!(
        r.remove_route(net("172.16.0.0/16"), None, None, None)
            .is_err()
    );
}

#[test]
fn super_frames_are_forwarded_whole_when_their_pieces_fit() {
    let mut rig = Rig::new(standard());
    let (a, b) = (host_a(), host_b());
    let t = secs(2);
    rig.introduce(t, LEFT, a);
    rig.introduce(t, RIGHT, b);
    // A 20 000-byte packet standing for a TSO super-frame whose segments
    // are 1500 bytes on the wire (DF set, as TCP's always is).
    let data = vec![0x5a; 20_000 - 28];
    let big = edited(a.udp(b.ip, 64, &data), |p| p.set_dont_frag(true));
    let frame = a.frame(R0, &big);

    rig.router
        .handle_frame_sized(t, LEFT, &frame, 14 + 1500, &mut rig.wire);
    assert_eq!(
        rig.wire.forwarded, 1,
        "sent as the handled frame, offload work kept"
    );
    let out = rig.wire.take();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, RIGHT);
    let (dst, src, packet) = ipv4_of(&out[0].1);
    assert_eq!((dst, src), (b.mac, R1));
    assert_eq!(
        packet,
        &forwarded_form(&big)[..],
        "whole, TTL 63, checksum right"
    );
    assert_eq!(
        (rig.counters().forwarded, rig.counters().frag_needed),
        (1, 0)
    );

    // Pieces bigger than the egress MTU: refused with the MTU to use.
    rig.router
        .handle_frame_sized(t, LEFT, &frame, 14 + 1600, &mut rig.wire);
    let out = rig.wire.take();
    assert_eq!(out.len(), 1, "the error only");
    let (rest, _) = expect_icmp_error(&out[0], LEFT, R0, a, "10.0.0.1", (3, 4));
    assert_eq!(rest, [0, 0, 0x05, 0xdc]);
    assert_eq!(rig.counters().frag_needed, 1);

    // Generated frames (ARP, ICMP) are never marked as forwarded.
    assert_eq!(rig.wire.forwarded, 1);
}
