//! Parsing the guests' IPv4 packets and building the ones the uplink
//! answers with, all through `smoltcp::wire` so lengths and checksums are
//! checked by a well-kept parser rather than by hand.
//!
//! The uplink relays TCP, UDP and ICMP echo; everything else is refused
//! with a reason the caller counts. Fragments are refused rather than
//! reassembled: the router in front has already fragmented only what its
//! MTU forced, and a relay that holds partial datagrams is a memory sink.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4DstUnreachable, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

/// Hop limit of every packet the uplink originates.
const TTL: u8 = 64;
/// IPv4 header length of the packets the uplink builds (no options).
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header length.
pub const UDP_HEADER_LEN: usize = 8;
/// ICMP echo header length.
pub const ICMP_ECHO_HEADER_LEN: usize = 8;

/// The facts about a guest's TCP segment the flow table needs; the
/// segment itself goes to the TCP stack whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// The guest's end.
    pub src: SocketAddrV4,
    /// The destination the guest addressed.
    pub dst: SocketAddrV4,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// RST flag.
    pub rst: bool,
    /// FIN flag.
    pub fin: bool,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful when `ack`).
    pub ack_number: u32,
    /// Payload length in bytes.
    pub payload_len: usize,
}

/// A guest packet the uplink relays, borrowed from the packet bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// A TCP segment.
    Tcp(TcpSegment),
    /// A UDP datagram.
    Udp {
        /// The guest's end.
        src: SocketAddrV4,
        /// The destination.
        dst: SocketAddrV4,
        /// The datagram's payload.
        payload: &'a [u8],
    },
    /// An ICMP echo request.
    EchoRequest {
        /// The guest.
        src: Ipv4Addr,
        /// The destination.
        dst: Ipv4Addr,
        /// The guest's echo identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Echo data.
        data: &'a [u8],
    },
}

/// Why a guest packet was not relayed; each reason is its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Short, inconsistent lengths, bad checksum, not IPv4.
    Malformed,
    /// A fragment (first or later).
    Fragment,
    /// A protocol or ICMP type the uplink does not relay.
    Unsupported,
}

/// Classifies one IPv4 packet from the router.
pub fn parse(packet: &[u8]) -> Result<Inbound<'_>, Refusal> {
    let ip = Ipv4Packet::new_checked(packet).map_err(|_| Refusal::Malformed)?;
    if ip.version() != 4 || !ip.verify_checksum() {
        return Err(Refusal::Malformed);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Refusal::Fragment);
    }
    let src = ip.src_addr();
    let dst = ip.dst_addr();
    let payload = ip.payload();
    let (src_ip, dst_ip) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
    match ip.next_header() {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| Refusal::Malformed)?;
            if !tcp.verify_checksum(&src_ip, &dst_ip) {
                return Err(Refusal::Malformed);
            }
            Ok(Inbound::Tcp(TcpSegment {
                src: SocketAddrV4::new(src, tcp.src_port()),
                dst: SocketAddrV4::new(dst, tcp.dst_port()),
                syn: tcp.syn(),
                ack: tcp.ack(),
                rst: tcp.rst(),
                fin: tcp.fin(),
                seq: tcp.seq_number().0 as u32,
                ack_number: tcp.ack_number().0 as u32,
                payload_len: tcp.payload().len(),
            }))
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| Refusal::Malformed)?;
            let repr = UdpRepr::parse(&udp, &src_ip, &dst_ip, &ChecksumCapabilities::default())
                .map_err(|_| Refusal::Malformed)?;
            Ok(Inbound::Udp {
                src: SocketAddrV4::new(src, repr.src_port),
                dst: SocketAddrV4::new(dst, repr.dst_port),
                payload: udp.payload(),
            })
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_checked(payload).map_err(|_| Refusal::Malformed)?;
            match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()) {
                Ok(Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                }) => Ok(Inbound::EchoRequest {
                    src,
                    dst,
                    ident,
                    seq: seq_no,
                    data,
                }),
                Ok(_) => Err(Refusal::Unsupported),
                // Types smoltcp does not model are not ours to relay either;
                // only a bad checksum or length is malformed.
                Err(_) if icmp.verify_checksum() => Err(Refusal::Unsupported),
                Err(_) => Err(Refusal::Malformed),
            }
        }
        _ => Err(Refusal::Unsupported),
    }
}

/// Emits an IPv4 header and lets `body` fill the payload.
fn build_ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    payload_len: usize,
    body: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len,
        hop_limit: TTL,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload_len];
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut ip, &ChecksumCapabilities::default());
    body(ip.payload_mut());
    buf
}

/// A UDP datagram from `src` to `dst` (a host answer rebuilt for a guest,
/// or a forwarded host datagram). `None` if it cannot fit one IPv4 packet.
pub fn build_udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Option<Vec<u8>> {
    let udp_len = UDP_HEADER_LEN + payload.len();
    if IPV4_HEADER_LEN + udp_len > usize::from(u16::MAX) {
        return None;
    }
    let repr = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    Some(build_ipv4(
        *src.ip(),
        *dst.ip(),
        IpProtocol::Udp,
        udp_len,
        |buf| {
            let mut udp = UdpPacket::new_unchecked(buf);
            repr.emit(
                &mut udp,
                &IpAddress::Ipv4(*src.ip()),
                &IpAddress::Ipv4(*dst.ip()),
                payload.len(),
                |p| p.copy_from_slice(payload),
                &ChecksumCapabilities::default(),
            );
        },
    ))
}

/// An echo reply from `src` to the guest `dst`, carrying the guest's own
/// identifier (the host kernel picked another one for its socket).
pub fn build_echo_reply(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Option<Vec<u8>> {
    let repr = Icmpv4Repr::EchoReply {
        ident,
        seq_no: seq,
        data,
    };
    if IPV4_HEADER_LEN + repr.buffer_len() > usize::from(u16::MAX) {
        return None;
    }
    Some(build_ipv4(
        src,
        dst,
        IpProtocol::Icmp,
        repr.buffer_len(),
        |buf| {
            let mut icmp = Icmpv4Packet::new_unchecked(buf);
            repr.emit(&mut icmp, &ChecksumCapabilities::default());
        },
    ))
}

/// The echo request a ping socket sends: header and data only, the kernel
/// adds the IP header and replaces identifier and checksum.
pub fn build_echo_request_body(ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no: seq,
        data,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// Reads an echo reply as a ping socket returns it (ICMP header and data,
/// no IP header): its sequence number and data.
pub fn parse_echo_reply_body(body: &[u8]) -> Option<(u16, &[u8])> {
    let icmp = Icmpv4Packet::new_checked(body).ok()?;
    // The kernel has checked the checksum and rewritten the identifier, so
    // only the type matters here.
    if icmp.msg_type() != smoltcp::wire::Icmpv4Message::EchoReply {
        return None;
    }
    Some((icmp.echo_seq_no(), icmp.data()))
}

/// The reset that refuses `seg` (RFC 9293 section 3.10.7.1): a segment
/// with ACK gets a bare RST at its acknowledgment number; one without gets
/// RST+ACK acknowledging everything it occupied.
pub fn build_tcp_rst(seg: &TcpSegment) -> Vec<u8> {
    let (seq, ack) = if seg.ack {
        (seg.ack_number, None)
    } else {
        let len = seg.payload_len as u32 + u32::from(seg.syn) + u32::from(seg.fin);
        (0, Some(seg.seq.wrapping_add(len)))
    };
    let repr = TcpRepr {
        src_port: seg.dst.port(),
        dst_port: seg.src.port(),
        control: TcpControl::Rst,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack.map(|a| TcpSeqNumber(a as i32)),
        window_len: 0,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    let (src, dst) = (*seg.dst.ip(), *seg.src.ip());
    build_ipv4(src, dst, IpProtocol::Tcp, repr.buffer_len(), |buf| {
        repr.emit(
            &mut TcpPacket::new_unchecked(buf),
            &IpAddress::Ipv4(src),
            &IpAddress::Ipv4(dst),
            &ChecksumCapabilities::default(),
        );
    })
}

/// A destination unreachable from `from` about `original` (a guest
/// packet), quoting its header and first eight payload bytes as RFC 792
/// asks. `None` if `original` is not a readable IPv4 packet.
pub fn build_unreachable(
    from: Ipv4Addr,
    reason: Icmpv4DstUnreachable,
    original: &[u8],
) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(original).ok()?;
    let header_len = usize::from(ip.header_len());
    let quoted_len = (header_len + ip.payload().len().min(8)).min(original.len());
    let quoted = &original[..quoted_len];
    // Quoted verbatim (options included) so the guest's stack matches it
    // to its socket exactly as it would a router's error.
    Some(build_ipv4(
        from,
        ip.src_addr(),
        IpProtocol::Icmp,
        ICMP_ECHO_HEADER_LEN + quoted.len(),
        |buf| {
            let mut icmp = Icmpv4Packet::new_unchecked(buf);
            icmp.set_msg_type(smoltcp::wire::Icmpv4Message::DstUnreachable);
            icmp.set_msg_code(reason.into());
            icmp.data_mut().copy_from_slice(quoted);
            icmp.fill_checksum();
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IcmpEchoHeader, Icmpv4Type, NetSlice, SlicedPacket, TransportSlice};

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn tcp_packet(flags: (bool, bool, bool), seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        let builder = etherparse::PacketBuilder::ipv4([10, 0, 2, 15], [93, 184, 216, 34], 64)
            .tcp(40000, 80, seq, 65535);
        let builder = if flags.0 { builder.syn() } else { builder };
        let builder = if flags.1 { builder.ack(ack) } else { builder };
        let builder = if flags.2 { builder.fin() } else { builder };
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn parses_a_syn() {
        let pkt = tcp_packet((true, false, false), 1000, 0, &[]);
        let Ok(Inbound::Tcp(seg)) = parse(&pkt) else {
            panic!("not tcp")
        };
        assert_eq!(seg.src, a("10.0.2.15:40000"));
        assert_eq!(seg.dst, a("93.184.216.34:80"));
        assert!(seg.syn && !seg.ack && !seg.rst && !seg.fin);
        assert_eq!(seg.seq, 1000);
        assert_eq!(seg.payload_len, 0);
    }

    #[test]
    fn refuses_bad_checksums_short_packets_and_fragments() {
        let mut pkt = tcp_packet((false, true, false), 1, 2, b"hello");
        let last = pkt.len() - 1;
        pkt[last] ^= 0xff;
        assert_eq!(parse(&pkt), Err(Refusal::Malformed));
        assert_eq!(parse(&[0x45, 0, 0]), Err(Refusal::Malformed));
        assert_eq!(parse(&[]), Err(Refusal::Malformed));

        let mut frag = build_udp(a("10.0.2.15:5000"), a("1.1.1.1:53"), b"q").unwrap();
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frag[..]);
            ip.set_more_frags(true);
            ip.fill_checksum();
        }
        assert_eq!(parse(&frag), Err(Refusal::Fragment));
        let mut later = build_udp(a("10.0.2.15:5000"), a("1.1.1.1:53"), b"q").unwrap();
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut later[..]);
            ip.set_frag_offset(8);
            ip.fill_checksum();
        }
        assert_eq!(parse(&later), Err(Refusal::Fragment));
    }

    #[test]
    fn udp_round_trips_with_a_valid_checksum() {
        let pkt = build_udp(a("8.8.8.8:53"), a("10.0.2.15:5353"), b"answer").unwrap();
        let sliced = SlicedPacket::from_ip(&pkt).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!()
        };
        assert_eq!(ip.header().source(), [8, 8, 8, 8]);
        assert_eq!(ip.header().destination(), [10, 0, 2, 15]);
        assert_eq!(ip.header().ttl(), 64);
        let Some(TransportSlice::Udp(udp)) = &sliced.transport else {
            panic!()
        };
        assert_eq!(udp.source_port(), 53);
        assert_eq!(udp.destination_port(), 5353);
        assert_eq!(udp.payload(), b"answer");
        let expected = udp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), b"answer")
            .unwrap();
        assert_eq!(udp.checksum(), expected);
        assert_ne!(udp.checksum(), 0);
        // And our own parser reads it back.
        assert_eq!(
            parse(&pkt),
            Ok(Inbound::Udp {
                src: a("8.8.8.8:53"),
                dst: a("10.0.2.15:5353"),
                payload: b"answer"
            })
        );
    }

    #[test]
    fn echo_reply_keeps_guest_ident_seq_and_data() {
        let pkt = build_echo_reply(
            Ipv4Addr::new(1, 1, 1, 1),
            Ipv4Addr::new(10, 0, 2, 15),
            0x1234,
            7,
            b"ping-data",
        )
        .unwrap();
        let sliced = SlicedPacket::from_ip(&pkt).unwrap();
        let Some(TransportSlice::Icmpv4(icmp)) = &sliced.transport else {
            panic!()
        };
        assert_eq!(
            icmp.icmp_type(),
            Icmpv4Type::EchoReply(IcmpEchoHeader { id: 0x1234, seq: 7 })
        );
        assert_eq!(icmp.payload(), b"ping-data");
        let header = icmp.header();
        assert_eq!(
            icmp.checksum(),
            header.icmp_type.calc_checksum(b"ping-data")
        );
        // The guest's request parses back as an echo request.
        let body = build_echo_request_body(0x1234, 7, b"ping-data");
        assert_eq!(body[0], 8);
        assert_eq!(parse_echo_reply_body(&body), None);
        let mut reply_body = body.clone();
        reply_body[0] = 0;
        assert_eq!(
            parse_echo_reply_body(&reply_body),
            Some((7, &b"ping-data"[..]))
        );
    }

    #[test]
    fn rst_for_a_syn_acknowledges_it() {
        let syn = tcp_packet((true, false, false), 1000, 0, &[]);
        let Ok(Inbound::Tcp(seg)) = parse(&syn) else {
            panic!()
        };
        let rst = build_tcp_rst(&seg);
        let sliced = SlicedPacket::from_ip(&rst).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!()
        };
        assert_eq!(ip.header().source(), [93, 184, 216, 34]);
        assert_eq!(ip.header().destination(), [10, 0, 2, 15]);
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            panic!()
        };
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!(tcp.source_port(), 80);
        assert_eq!(tcp.destination_port(), 40000);
        assert_eq!(tcp.sequence_number(), 0);
        assert_eq!(tcp.acknowledgment_number(), 1001);
        assert_eq!(
            tcp.checksum(),
            tcp.to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), &[])
                .unwrap()
        );
    }

    #[test]
    fn rst_for_an_ack_uses_its_ack_number() {
        let pkt = tcp_packet((false, true, false), 5, 777, b"xy");
        let Ok(Inbound::Tcp(seg)) = parse(&pkt) else {
            panic!()
        };
        let rst = build_tcp_rst(&seg);
        let sliced = SlicedPacket::from_ip(&rst).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
            panic!()
        };
        assert!(tcp.rst() && !tcp.ack());
        assert_eq!(tcp.sequence_number(), 777);
    }

    #[test]
    fn unreachable_quotes_the_header_and_eight_bytes() {
        let syn = tcp_packet((true, false, false), 1000, 0, &[]);
        let pkt = build_unreachable(
            Ipv4Addr::new(10, 0, 2, 2),
            Icmpv4DstUnreachable::HostUnreachable,
            &syn,
        )
        .unwrap();
        let sliced = SlicedPacket::from_ip(&pkt).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
            panic!()
        };
        assert_eq!(ip.header().source(), [10, 0, 2, 2]);
        assert_eq!(ip.header().destination(), [10, 0, 2, 15]);
        let Some(TransportSlice::Icmpv4(icmp)) = &sliced.transport else {
            panic!()
        };
        assert_eq!(icmp.type_u8(), 3);
        assert_eq!(icmp.code_u8(), 1);
        let quoted = icmp.payload();
        assert_eq!(quoted.len(), 28);
        assert_eq!(&quoted[..20], &syn[..20]);
        assert_eq!(&quoted[20..28], &syn[20..28]);
        assert_eq!(
            icmp.checksum(),
            icmp.header().icmp_type.calc_checksum(quoted)
        );

        let prohibited = build_unreachable(
            Ipv4Addr::new(10, 0, 2, 2),
            Icmpv4DstUnreachable::CommProhibited,
            &syn,
        )
        .unwrap();
        assert_eq!(prohibited[20], 3);
        assert_eq!(prohibited[21], 13);
        assert_eq!(
            build_unreachable(
                Ipv4Addr::LOCALHOST,
                Icmpv4DstUnreachable::HostUnreachable,
                &[1]
            ),
            None
        );
    }
}
