//! DHCP messages in and out of Ethernet frames, for a client that has no
//! address yet.
//!
//! Before it has a lease, the interface cannot use an ordinary UDP socket:
//! its DISCOVER must leave from 0.0.0.0 to the limited broadcast address,
//! and the server may answer by unicast to the address it is offering,
//! which the kernel would drop as "not ours". So `switchboard ns` talks DHCP
//! over a packet socket bound to the interface, and this module builds and
//! takes apart the whole frame (RFC 2131 §4.1: source 0.0.0.0:68,
//! destination 255.255.255.255:67, Ethernet broadcast), with smoltcp's wire
//! types. Received frames are checked layer by layer (destination MAC,
//! IPv4 header checksum, no fragments, UDP ports and checksum) and anything
//! else is ignored.

use crate::mac::MacAddr;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};
use std::net::Ipv4Addr;

/// The client's UDP port.
pub const CLIENT_PORT: u16 = 68;
/// The server's UDP port.
pub const SERVER_PORT: u16 = 67;

/// TTL of the messages we send; they never leave the link.
const TTL: u8 = 64;

/// An Ethernet frame broadcasting the DHCP message `payload` from `mac`,
/// 0.0.0.0:68 to 255.255.255.255:67, with IPv4 and UDP checksums filled in.
/// `None` only if `payload` could not fit in one IPv4 packet.
pub fn broadcast_frame(mac: MacAddr, payload: &[u8]) -> Option<Vec<u8>> {
    broadcast_frame_from(mac, Ipv4Addr::UNSPECIFIED, payload)
}

/// As [`broadcast_frame`], but from the address `src`: a client that holds
/// a lease and rebinds it (RFC 2131 §4.4.5) broadcasts from that address.
pub fn broadcast_frame_from(mac: MacAddr, src: Ipv4Addr, payload: &[u8]) -> Option<Vec<u8>> {
    let udp = UdpRepr {
        src_port: CLIENT_PORT,
        dst_port: SERVER_PORT,
    };
    let udp_len = udp.header_len() + payload.len();
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: Ipv4Addr::BROADCAST,
        next_header: IpProtocol::Udp,
        payload_len: udp_len,
        hop_limit: TTL,
    };
    if ip.buffer_len() + udp_len > usize::from(u16::MAX) {
        return None;
    }
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac.0),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + udp_len];
    let caps = ChecksumCapabilities::default();
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &caps);
    let mut datagram = UdpPacket::new_unchecked(packet.payload_mut());
    udp.emit(
        &mut datagram,
        &IpAddress::Ipv4(ip.src_addr),
        &IpAddress::Ipv4(ip.dst_addr),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    Some(buf)
}

/// The DHCP payload of `frame` when it is a datagram from port 67 to port
/// 68 addressed to `mac` (or broadcast); `None` for anything else,
/// including malformed or fragmented packets and bad checksums.
pub fn reply_payload(mac: MacAddr, frame: &[u8]) -> Option<&[u8]> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let dst = eth.dst_addr();
    if eth.ethertype() != EthernetProtocol::Ipv4
        || !(dst == EthernetAddress(mac.0) || dst == EthernetAddress::BROADCAST)
    {
        return None;
    }
    let ip_bytes = &frame[EthernetFrame::<&[u8]>::header_len()..];
    let packet = Ipv4Packet::new_checked(ip_bytes).ok()?;
    let caps = ChecksumCapabilities::default();
    let ip = Ipv4Repr::parse(&packet, &caps).ok()?;
    if ip.next_header != IpProtocol::Udp {
        return None;
    }
    let header_len = usize::from(packet.header_len());
    let total_len = usize::from(packet.total_len());
    let udp_bytes = ip_bytes.get(header_len..total_len)?;
    let datagram = UdpPacket::new_checked(udp_bytes).ok()?;
    let udp = UdpRepr::parse(
        &datagram,
        &IpAddress::Ipv4(ip.src_addr),
        &IpAddress::Ipv4(ip.dst_addr),
        &caps,
    )
    .ok()?;
    if udp.src_port != SERVER_PORT || udp.dst_port != CLIENT_PORT {
        return None;
    }
    let udp_len = usize::from(datagram.len());
    udp_bytes.get(udp.header_len()..udp_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x42]);

    /// A server's reply frame: `from` 67 to `to` 68, by smoltcp.
    fn server_frame(
        dst_mac: [u8; 6],
        to: Ipv4Addr,
        sport: u16,
        dport: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let udp = UdpRepr {
            src_port: sport,
            dst_port: dport,
        };
        let ip = Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 0, 2, 2),
            dst_addr: to,
            next_header: IpProtocol::Udp,
            payload_len: 8 + payload.len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress([0x52, 0x54, 0, 0, 0, 1]),
            dst_addr: EthernetAddress(dst_mac),
            ethertype: EthernetProtocol::Ipv4,
        };
        // Plus Ethernet padding, which the parser must ignore.
        let mut buf = vec![0u8; 14 + 20 + 8 + payload.len() + 6];
        let caps = ChecksumCapabilities::default();
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &caps);
        let mut u = UdpPacket::new_unchecked(p.payload_mut());
        udp.emit(
            &mut u,
            &IpAddress::Ipv4(ip.src_addr),
            &IpAddress::Ipv4(ip.dst_addr),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &caps,
        );
        buf
    }

    #[test]
    fn broadcast_frame_has_every_header_field_rfc_2131_asks_for() {
        let f = broadcast_frame(MAC, b"hello").unwrap();
        assert_eq!(f.len(), 14 + 20 + 8 + 5);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC.0);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(ip.dst_addr(), Ipv4Addr::BROADCAST);
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        assert_eq!(ip.total_len(), 20 + 8 + 5);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (68, 67));
        assert_eq!(udp.len(), 13);
        assert_ne!(udp.checksum(), 0);
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(Ipv4Addr::UNSPECIFIED),
            &IpAddress::Ipv4(Ipv4Addr::BROADCAST)
        ));
        assert_eq!(udp.payload(), b"hello");
    }

    #[test]
    fn replies_to_us_or_broadcast_are_taken_apart() {
        let unicast = server_frame(MAC.0, Ipv4Addr::new(10, 0, 2, 15), 67, 68, b"offer");
        assert_eq!(reply_payload(MAC, &unicast), Some(&b"offer"[..]));
        let bcast = server_frame([0xff; 6], Ipv4Addr::BROADCAST, 67, 68, b"ack");
        assert_eq!(reply_payload(MAC, &bcast), Some(&b"ack"[..]));
    }

    #[test]
    fn everything_else_is_ignored() {
        let to = Ipv4Addr::new(10, 0, 2, 15);
        let other_mac = server_frame([2, 2, 2, 2, 2, 2], to, 67, 68, b"x");
        assert_eq!(reply_payload(MAC, &other_mac), None);
        let wrong_port = server_frame(MAC.0, to, 67, 69, b"x");
        assert_eq!(reply_payload(MAC, &wrong_port), None);
        let our_own = broadcast_frame(MAC, b"discover").unwrap();
        assert_eq!(reply_payload(MAC, &our_own), None);

        let mut bad_udp_sum = server_frame(MAC.0, to, 67, 68, b"xyz");
        bad_udp_sum[14 + 20 + 8] ^= 0xff;
        assert_eq!(reply_payload(MAC, &bad_udp_sum), None);
        let mut bad_ip_sum = server_frame(MAC.0, to, 67, 68, b"xyz");
        bad_ip_sum[14 + 8] ^= 1; // TTL
        assert_eq!(reply_payload(MAC, &bad_ip_sum), None);
        let good = server_frame(MAC.0, to, 67, 68, b"xyz");
        for len in 0..good.len() - 6 {
            assert_eq!(reply_payload(MAC, &good[..len]), None, "truncated to {len}");
        }
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(reply_payload(MAC, &arp), None);
    }
}
