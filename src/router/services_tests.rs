//! The router's DHCP server and DNS forwarder driven through frames, as a
//! client on the wire sees them: broadcasts in, answers out at the right
//! MAC and address with valid checksums, names learnt from DHCP resolvable,
//! forwarded queries leaving through the daemon's queue and coming back.
//! Clients' messages are built with smoltcp (DHCP) and simple-dns (DNS), so
//! the router is checked against independent encoders.

use super::services::{DHCP_CLIENT_PORT, DHCP_SERVER_PORT, DNS_PORT};
use super::*;
use crate::dhcp::{DhcpConfig, Reservation};
use crate::dns::{DnsConfig, Transport};
use crate::mac::MacAddr;
use crate::time::Instant;
use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Name, Packet, Question, ResourceRecord, TYPE};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, DhcpMessageType, DhcpOption, DhcpPacket, DhcpRepr,
    EthernetAddress, EthernetFrame, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket,
    UdpRepr,
};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

const ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);
const CLIENT_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x01]);
const RESERVED_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x02]);
const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const UPSTREAM: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);
const LAN: IfaceId = IfaceId(0);

/// Records every frame the router sends.
#[derive(Default)]
struct Wire {
    space: Vec<u8>,
    frames: Vec<(IfaceId, Vec<u8>)>,
}

impl Transmit for Wire {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        if self.space.is_empty() {
            self.space = vec![0xee; 9000];
        }
        Some(&mut self.space)
    }

    fn send(&mut self, iface: IfaceId, len: usize) {
        self.frames.push((iface, self.space[..len].to_vec()));
        self.space.fill(0xee);
    }
}

fn router(local_only: bool) -> Router {
    let net: ipnet::Ipv4Net = "10.0.0.1/24".parse().unwrap();
    Router::new(RouterConfig {
        name: "net".into(),
        interfaces: vec![InterfaceConfig {
            name: "lan".into(),
            mac: ROUTER_MAC,
            addresses: vec![net],
            mtu: 1500,
            proxy_arp: false,
        }],
        routes: Vec::new(),
        arp: ArpConfig::default(),
        nat: NatConfig::default(),
        host: None,
        services: ServicesConfig {
            dhcp: vec![(
                "lan".into(),
                DhcpConfig {
                    server: GW,
                    subnet: net.trunc(),
                    ranges: vec![(Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 110))],
                    lease_time: Duration::from_secs(600),
                    max_leases: None,
                    reservations: vec![Reservation {
                        mac: RESERVED_MAC,
                        name: Some("vm2".into()),
                        ip: Some(Ipv4Addr::new(10, 0, 0, 50)),
                    }],
                    router: Some(GW),
                    dns_servers: vec![GW],
                    domain: Some("lab".into()),
                    mtu: None,
                },
            )],
            dns: Some(DnsConfig {
                domain: Some("lab".into()),
                upstreams: vec![SocketAddr::new(UPSTREAM.into(), 53)],
                hosts: vec![("vm2".into(), Ipv4Addr::new(10, 0, 0, 50))],
                local_only,
                cache_size: 64,
                local_subnets: vec![net.trunc()],
                seed: 7,
            }),
        },
    })
    .unwrap()
}

fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; (14 + payload.len()).max(60)];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f[14..14 + payload.len()].copy_from_slice(payload);
    f
}

/// A UDP datagram in an IPv4 packet in a frame, checksums filled in.
fn udp_frame(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
    };
    let mut p = vec![0u8; 20 + 8 + payload.len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut p[..]);
    ip.emit(&mut packet, &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(packet.payload_mut()),
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    ethernet(dst_mac, src_mac, 0x0800, &p)
}

/// What the router sent, taken apart: Ethernet destination, IPv4 source
/// and destination, UDP ports, payload. Checks both checksums.
struct Sent {
    eth_dst: MacAddr,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: Vec<u8>,
}

fn parse_udp(frame: &[u8]) -> Sent {
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(eth.src_addr(), EthernetAddress(ROUTER_MAC.0));
    assert_eq!(u16::from(eth.ethertype()), 0x0800);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum(), "IPv4 checksum");
    assert_eq!(ip.next_header(), IpProtocol::Udp);
    let ip_payload = &ip.payload()[..usize::from(ip.total_len()) - 20];
    let udp = UdpPacket::new_checked(ip_payload).unwrap();
    assert!(
        udp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ),
        "UDP checksum"
    );
    Sent {
        eth_dst: MacAddr(eth.dst_addr().0),
        src: SocketAddrV4::new(ip.src_addr(), udp.src_port()),
        dst: SocketAddrV4::new(ip.dst_addr(), udp.dst_port()),
        payload: udp.payload().to_vec(),
    }
}

/// A client's DHCP message as smoltcp writes it, with a host name.
fn dhcp_message(
    kind: DhcpMessageType,
    mac: MacAddr,
    xid: u32,
    requested: Option<Ipv4Addr>,
    server: Option<Ipv4Addr>,
    client_ip: Ipv4Addr,
    hostname: Option<&str>,
) -> Vec<u8> {
    let extra;
    let options: &[DhcpOption] = match hostname {
        Some(h) => {
            extra = [DhcpOption {
                kind: 12,
                data: h.as_bytes(),
            }];
            &extra
        }
        None => &[],
    };
    let repr = DhcpRepr {
        message_type: kind,
        transaction_id: xid,
        secs: 0,
        client_hardware_address: EthernetAddress(mac.0),
        client_ip,
        your_ip: Ipv4Addr::UNSPECIFIED,
        server_ip: Ipv4Addr::UNSPECIFIED,
        router: None,
        subnet_mask: None,
        relay_agent_ip: Ipv4Addr::UNSPECIFIED,
        broadcast: false,
        requested_ip: requested,
        client_identifier: None,
        server_identifier: server,
        parameter_request_list: Some(&[1, 3, 6, 15]),
        dns_servers: None,
        max_size: None,
        lease_duration: None,
        renew_duration: None,
        rebind_duration: None,
        additional_options: options,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
        .unwrap();
    buf
}

/// Broadcasts a DHCP message from `mac` and returns the one reply.
fn dhcp_broadcast(r: &mut Router, now: Instant, mac: MacAddr, msg: &[u8]) -> Sent {
    let mut wire = Wire::default();
    let frame = udp_frame(
        mac,
        MacAddr::BROADCAST,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
        msg,
    );
    r.handle_frame(now, LAN, &frame, &mut wire);
    assert_eq!(wire.frames.len(), 1, "one DHCP reply");
    assert_eq!(wire.frames[0].0, LAN);
    parse_udp(&wire.frames[0].1)
}

/// Takes a client through DISCOVER/OFFER/REQUEST/ACK; returns its address.
fn lease(r: &mut Router, now: Instant, mac: MacAddr, name: Option<&str>) -> Ipv4Addr {
    let discover = dhcp_message(
        DhcpMessageType::Discover,
        mac,
        1,
        None,
        None,
        Ipv4Addr::UNSPECIFIED,
        name,
    );
    let offer = dhcp_broadcast(r, now, mac, &discover);
    // No broadcast flag: unicast to the offered address at the client's MAC.
    assert_eq!(offer.eth_dst, mac);
    assert_eq!(offer.src, SocketAddrV4::new(GW, DHCP_SERVER_PORT));
    assert_eq!(offer.dst.port(), DHCP_CLIENT_PORT);
    let packet = DhcpPacket::new_checked(&offer.payload[..]).unwrap();
    let repr = DhcpRepr::parse(&packet).unwrap();
    assert_eq!(repr.message_type, DhcpMessageType::Offer);
    assert_eq!(repr.transaction_id, 1);
    assert_eq!(*offer.dst.ip(), repr.your_ip);
    assert_eq!(repr.router, Some(GW));
    assert_eq!(repr.server_identifier, Some(GW));
    assert_eq!(repr.dns_servers.as_deref(), Some(&[GW][..]));
    let offered = repr.your_ip;
    let request = dhcp_message(
        DhcpMessageType::Request,
        mac,
        2,
        Some(offered),
        Some(GW),
        Ipv4Addr::UNSPECIFIED,
        name,
    );
    let ack = dhcp_broadcast(r, now, mac, &request);
    let packet = DhcpPacket::new_checked(&ack.payload[..]).unwrap();
    let repr = DhcpRepr::parse(&packet).unwrap();
    assert_eq!(repr.message_type, DhcpMessageType::Ack);
    assert_eq!(repr.your_ip, offered);
    assert_eq!(repr.lease_duration, Some(600));
    offered
}

fn query(id: u16, name: &str, qtype: TYPE) -> Vec<u8> {
    let mut q = Packet::new_query(id);
    q.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
    q.questions.push(Question::new(
        Name::new_unchecked(name),
        qtype.into(),
        CLASS::IN.into(),
        false,
    ));
    q.build_bytes_vec().unwrap()
}

/// The A records of a DNS answer.
fn a_records(payload: &[u8]) -> Vec<Ipv4Addr> {
    let p = Packet::parse(payload).unwrap();
    p.answers
        .iter()
        .filter_map(|rr| match &rr.rdata {
            RData::A(a) => Some(Ipv4Addr::from(a.address)),
            _ => None,
        })
        .collect()
}

/// Teaches the router the client's MAC (as the client's own ARP request
/// for its gateway would), so answers to it need no resolution.
fn arp_from(r: &mut Router, now: Instant, mac: MacAddr, ip: Ipv4Addr) {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(mac.0),
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: GW,
    };
    let mut p = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
    let mut wire = Wire::default();
    r.handle_frame(
        now,
        LAN,
        &ethernet(MacAddr::BROADCAST, mac, 0x0806, &p),
        &mut wire,
    );
}

/// Sends a DNS query from `client` to the router; returns what came back.
fn ask(r: &mut Router, now: Instant, mac: MacAddr, client: SocketAddrV4, q: &[u8]) -> Vec<Sent> {
    let mut wire = Wire::default();
    let frame = udp_frame(mac, ROUTER_MAC, client, SocketAddrV4::new(GW, DNS_PORT), q);
    r.handle_frame(now, LAN, &frame, &mut wire);
    wire.frames.iter().map(|(_, f)| parse_udp(f)).collect()
}

#[test]
fn a_dhcp_client_gets_an_address_and_its_name_resolves() {
    let mut r = router(false);
    let now = Instant::from_secs(10);
    let ip1 = lease(&mut r, now, CLIENT_MAC, Some("vm1"));
    assert!((100..=110).contains(&ip1.octets()[3]), "{ip1}");
    let ip2 = lease(&mut r, now, RESERVED_MAC, None);
    assert_eq!(ip2, Ipv4Addr::new(10, 0, 0, 50), "the reservation");

    arp_from(&mut r, now, CLIENT_MAC, ip1);
    let client = SocketAddrV4::new(ip1, 40000);
    let replies = ask(
        &mut r,
        now,
        CLIENT_MAC,
        client,
        &query(0x1234, "vm1.lab", TYPE::A),
    );
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(reply.eth_dst, CLIENT_MAC);
    assert_eq!(reply.src, SocketAddrV4::new(GW, DNS_PORT));
    assert_eq!(reply.dst, client);
    assert_eq!(Packet::parse(&reply.payload).unwrap().id(), 0x1234);
    assert_eq!(a_records(&reply.payload), vec![ip1]);
    let replies = ask(
        &mut r,
        now,
        CLIENT_MAC,
        client,
        &query(7, "vm2.lab", TYPE::A),
    );
    assert_eq!(a_records(&replies[0].payload), vec![ip2]);
    assert!(r.counters().service_datagrams >= 6);
}

#[test]
fn forwarded_queries_leave_through_the_queue_and_answers_come_back() {
    let mut r = router(false);
    let now = Instant::from_secs(10);
    let ip1 = lease(&mut r, now, CLIENT_MAC, None);
    arp_from(&mut r, now, CLIENT_MAC, ip1);
    let client = SocketAddrV4::new(ip1, 40001);
    let q = query(0x4242, "www.example.com", TYPE::A);
    assert!(ask(&mut r, now, CLIENT_MAC, client, &q).is_empty());
    let mut up = Vec::new();
    r.take_dns_upstream(&mut up);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].server, SocketAddr::new(UPSTREAM.into(), 53));
    assert_eq!(up[0].transport, Transport::Udp);
    let sent = Packet::parse(&up[0].payload).unwrap();
    assert_eq!(sent.questions[0].qname.to_string(), "www.example.com");
    // The resolver answers the query as it was sent (its own id).
    let mut answer = sent.clone().into_reply();
    answer.answers.push(ResourceRecord::new(
        Name::new_unchecked("www.example.com"),
        CLASS::IN,
        300,
        RData::A(A {
            address: u32::from(Ipv4Addr::new(198, 51, 100, 7)),
        }),
    ));
    let bytes = answer.build_bytes_vec().unwrap();
    let mut wire = Wire::default();
    r.handle_dns_upstream(
        now + Duration::from_millis(20),
        up[0].server,
        Transport::Udp,
        &bytes,
        &mut wire,
    );
    assert_eq!(wire.frames.len(), 1);
    let reply = parse_udp(&wire.frames[0].1);
    assert_eq!(reply.dst, client);
    assert_eq!(reply.src, SocketAddrV4::new(GW, DNS_PORT));
    assert_eq!(Packet::parse(&reply.payload).unwrap().id(), 0x4242);
    assert_eq!(
        a_records(&reply.payload),
        vec![Ipv4Addr::new(198, 51, 100, 7)]
    );
}

#[test]
fn an_unanswered_forward_times_out_into_servfail() {
    let mut r = router(false);
    let now = Instant::from_secs(10);
    let ip1 = lease(&mut r, now, CLIENT_MAC, None);
    arp_from(&mut r, now, CLIENT_MAC, ip1);
    let client = SocketAddrV4::new(ip1, 40002);
    assert!(
        ask(
            &mut r,
            now,
            CLIENT_MAC,
            client,
            &query(9, "slow.example", TYPE::A)
        )
        .is_empty()
    );
    let mut wire = Wire::default();
    let mut t = now;
    // Bounded: the forwarder gives up within seconds.
    for _ in 0..100 {
        let Some(next) = r.poll_timeout() else { break };
        if next > now + Duration::from_secs(30) {
            break;
        }
        t = next;
        r.handle_timeout(t, &mut wire);
        if !wire.frames.is_empty() {
            break;
        }
    }
    assert!(t <= now + Duration::from_secs(10), "gave up only at {t:?}");
    let reply = parse_udp(&wire.frames.last().expect("an answer").1);
    assert_eq!(reply.dst, client);
    let p = Packet::parse(&reply.payload).unwrap();
    assert_eq!(p.id(), 9);
    assert_eq!(p.rcode(), simple_dns::RCODE::ServerFailure);
}

#[test]
fn without_services_broadcasts_are_dropped_and_dns_is_refused() {
    let mut r = Router::new(RouterConfig {
        name: "plain".into(),
        interfaces: vec![InterfaceConfig {
            name: "lan".into(),
            mac: ROUTER_MAC,
            addresses: vec!["10.0.0.1/24".parse().unwrap()],
            mtu: 1500,
            proxy_arp: false,
        }],
        routes: Vec::new(),
        arp: ArpConfig::default(),
        nat: NatConfig::default(),
        services: ServicesConfig::default(),
        host: None,
    })
    .unwrap();
    let now = Instant::from_secs(1);
    let discover = dhcp_message(
        DhcpMessageType::Discover,
        CLIENT_MAC,
        1,
        None,
        None,
        Ipv4Addr::UNSPECIFIED,
        None,
    );
    let mut wire = Wire::default();
    let frame = udp_frame(
        CLIENT_MAC,
        MacAddr::BROADCAST,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
        &discover,
    );
    r.handle_frame(now, LAN, &frame, &mut wire);
    assert!(wire.frames.is_empty());
    assert_eq!(r.counters().dropped_broadcast, 1);
    // A DNS query: port unreachable, as from any host without a server.
    let client_ip = Ipv4Addr::new(10, 0, 0, 9);
    arp_from(&mut r, now, CLIENT_MAC, client_ip);
    let frame = udp_frame(
        CLIENT_MAC,
        ROUTER_MAC,
        SocketAddrV4::new(client_ip, 5000),
        SocketAddrV4::new(GW, DNS_PORT),
        &query(1, "x.lab", TYPE::A),
    );
    r.handle_frame(now, LAN, &frame, &mut wire);
    assert_eq!(wire.frames.len(), 1);
    let ip = Ipv4Packet::new_checked(&wire.frames[0].1[14..]).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    assert_eq!(ip.payload()[0], 3, "destination unreachable");
    assert_eq!(ip.payload()[1], 3, "port unreachable");
}

#[test]
fn a_corrupt_udp_checksum_is_dropped_and_counted() {
    let mut r = router(false);
    let now = Instant::from_secs(1);
    let discover = dhcp_message(
        DhcpMessageType::Discover,
        CLIENT_MAC,
        1,
        None,
        None,
        Ipv4Addr::UNSPECIFIED,
        None,
    );
    let mut frame = udp_frame(
        CLIENT_MAC,
        MacAddr::BROADCAST,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, DHCP_CLIENT_PORT),
        SocketAddrV4::new(Ipv4Addr::BROADCAST, DHCP_SERVER_PORT),
        &discover,
    );
    // Flip a payload byte: the UDP checksum no longer matches.
    let last = 14 + 28 + 10;
    frame[last] ^= 0xff;
    let mut wire = Wire::default();
    let before = r.counters().dropped_malformed;
    r.handle_frame(now, LAN, &frame, &mut wire);
    assert!(wire.frames.is_empty());
    assert_eq!(r.counters().dropped_malformed, before + 1);
}
