//! The router's host interface: packets (not frames) to and from the host
//! uplink, the default route leading there, and the loopback alias.

use super::*;
use crate::mac::MacAddr;
use crate::time::Instant;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    UdpPacket, UdpRepr,
};
use std::net::Ipv4Addr;

const ROUTER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x10]);
const GUEST_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0f]);
const GW: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const FAR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const LAN: IfaceId = IfaceId(0);
const HOST: IfaceId = IfaceId(1);

/// What left the router: frames on segments, packets to the host.
#[derive(Default)]
struct Wire {
    space: Vec<u8>,
    frames: Vec<(IfaceId, Vec<u8>)>,
    packets: Vec<(IfaceId, Vec<u8>)>,
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
    }

    fn send_packet(&mut self, iface: IfaceId, len: usize) {
        self.packets
            .push((iface, self.space[14..14 + len].to_vec()));
    }
}

fn router() -> Router {
    Router::new(router_config()).unwrap()
}

fn router_config() -> RouterConfig {
    RouterConfig {
        name: "def".into(),
        interfaces: vec![InterfaceConfig {
            name: "lan".into(),
            mac: ROUTER_MAC,
            addresses: vec!["10.0.2.2/24".parse().unwrap()],
            mtu: 1500,
            proxy_arp: false,
        }],
        routes: vec![StaticRoute {
            dest: "0.0.0.0/0".parse().unwrap(),
            gateway: None,
            iface: Some("host".into()),
            metric: 0,
        }],
        arp: ArpConfig::default(),
        nat: NatConfig::default(),
        services: Default::default(),
        host: Some(HostInterfaceConfig {
            name: "host".into(),
            mtu: 65520,
            loopback: Some(GW),
        }),
    }
}

fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, ttl: u8) -> Vec<u8> {
    let payload = b"hello";
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: ttl,
    };
    let mut p = vec![0u8; 20 + 8 + payload.len()];
    let caps = ChecksumCapabilities::default();
    let mut packet = Ipv4Packet::new_unchecked(&mut p[..]);
    ip.emit(&mut packet, &caps);
    UdpRepr {
        src_port: sport,
        dst_port: dport,
    }
    .emit(
        &mut UdpPacket::new_unchecked(packet.payload_mut()),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
    p
}

fn frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; (14 + payload.len()).max(60)];
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    f[14..14 + payload.len()].copy_from_slice(payload);
    f
}

/// The guest announces itself, as its ARP request for the gateway would.
fn learn_guest(r: &mut Router, now: Instant) {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(GUEST_MAC.0),
        source_protocol_addr: GUEST,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: GW,
    };
    let mut p = vec![0u8; repr.buffer_len()];
    repr.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
    r.handle_frame(
        now,
        LAN,
        &frame(MacAddr::BROADCAST, GUEST_MAC, 0x0806, &p),
        &mut Wire::default(),
    );
}

#[test]
fn the_default_route_leads_to_the_host_as_packets() {
    let mut r = router();
    let now = Instant::from_secs(1);
    let out = udp(GUEST, FAR, 40000, 53, 64);
    let mut wire = Wire::default();
    r.handle_frame(
        now,
        LAN,
        &frame(ROUTER_MAC, GUEST_MAC, 0x0800, &out),
        &mut wire,
    );
    assert!(
        wire.frames.is_empty(),
        "no frame, no ARP: {:?}",
        wire.frames
    );
    assert_eq!(wire.packets.len(), 1);
    assert_eq!(wire.packets[0].0, HOST);
    let sent = Ipv4Packet::new_checked(&wire.packets[0].1[..]).unwrap();
    assert_eq!(sent.hop_limit(), 63, "forwarded: TTL decremented");
    assert!(sent.verify_checksum());
    assert_eq!(
        &wire.packets[0].1[20..],
        &out[20..],
        "the datagram unchanged"
    );
    assert_eq!(r.counters().forwarded, 1);
}

#[test]
fn packets_from_the_host_are_routed_to_the_guest() {
    let mut r = router();
    let now = Instant::from_secs(1);
    learn_guest(&mut r, now);
    let back = udp(FAR, GUEST, 53, 40000, 64);
    let mut wire = Wire::default();
    r.handle_host_packet(now, &back, &mut wire);
    assert!(wire.packets.is_empty());
    assert_eq!(wire.frames.len(), 1);
    let (iface, f) = &wire.frames[0];
    assert_eq!(*iface, LAN);
    assert_eq!(&f[..6], &GUEST_MAC.0);
    assert_eq!(&f[6..12], &ROUTER_MAC.0);
    let ip = Ipv4Packet::new_checked(&f[14..14 + back.len()]).unwrap();
    assert_eq!(ip.src_addr(), FAR);
    assert_eq!(ip.hop_limit(), 63);
}

#[test]
fn the_loopback_alias_sends_tcp_and_udp_to_the_host_and_answers_pings_itself() {
    let mut r = router();
    let now = Instant::from_secs(1);
    learn_guest(&mut r, now);
    let to_gw = udp(GUEST, GW, 40001, 8080, 64);
    let mut wire = Wire::default();
    r.handle_frame(
        now,
        LAN,
        &frame(ROUTER_MAC, GUEST_MAC, 0x0800, &to_gw),
        &mut wire,
    );
    assert_eq!(wire.packets.len(), 1, "{:?}", wire.frames);
    assert_eq!(wire.packets[0].1, to_gw, "handed over unchanged (TTL 64)");
    // Without the alias, the router itself answers: port unreachable.
    let mut config_without = router_config();
    config_without.host.as_mut().unwrap().loopback = None;
    let mut plain = Router::new(config_without).unwrap();
    learn_guest(&mut plain, now);
    let mut wire = Wire::default();
    plain.handle_frame(
        now,
        LAN,
        &frame(ROUTER_MAC, GUEST_MAC, 0x0800, &to_gw),
        &mut wire,
    );
    assert!(wire.packets.is_empty());
    assert_eq!(wire.frames.len(), 1);
    let ip = Ipv4Packet::new_checked(&wire.frames[0].1[14..]).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    assert_eq!(ip.payload()[0], 3);
}

#[test]
fn a_host_interface_needs_a_free_name_and_a_router_address_for_loopback() {
    let mut c = RouterConfig {
        name: "r".into(),
        interfaces: vec![InterfaceConfig {
            name: "host".into(),
            mac: ROUTER_MAC,
            addresses: vec!["10.0.2.2/24".parse().unwrap()],
            mtu: 1500,
            proxy_arp: false,
        }],
        routes: Vec::new(),
        arp: ArpConfig::default(),
        nat: NatConfig::default(),
        services: Default::default(),
        host: Some(HostInterfaceConfig {
            name: "host".into(),
            mtu: 65520,
            loopback: None,
        }),
    };
    assert!(Router::new(c.clone()).unwrap_err().0.contains("is taken"));
    c.interfaces[0].name = "lan".into();
    c.host.as_mut().unwrap().loopback = Some(Ipv4Addr::new(10, 0, 2, 3));
    assert!(
        Router::new(c)
            .unwrap_err()
            .0
            .contains("is not one of the router's")
    );
}
