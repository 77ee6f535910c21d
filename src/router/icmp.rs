//! The ICMP messages a router originates: errors about packets it could not
//! deliver, and replies to pings addressed to it.
//!
//! A router that silently drops what it cannot forward leaves the sender
//! guessing: traceroute needs Time Exceeded, path MTU discovery needs
//! Fragmentation Needed, and "no route to host" needs Destination
//! Unreachable. These functions build those messages as complete IPv4
//! packets (no Ethernet header: the router reserves room in front and writes
//! that itself) into a caller-provided buffer, so the fast path allocates
//! nothing.
//!
//! Errors are dangerous if sent carelessly: an error about an error can
//! loop between two routers, and an error to a broadcast source can make a
//! whole subnet answer at once. [`error_allowed`] encodes the RFC 1812
//! §4.3.2.7 rules and [`write_error`] refuses to build a message it forbids.
//! How *often* errors may be sent is a separate concern, handled by
//! [`RateLimiter`](super::rate_limit::RateLimiter).
//!
//! The original packet is quoted verbatim (header, options and as much
//! payload as fits in a 576-byte error, RFC 1812 §4.3.2.3, as Linux does), so
//! the sender can match the error to its socket.

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet};
use std::net::Ipv4Addr;

/// The largest ICMP error this module builds, IP header included (RFC 1812
/// §4.3.2.3: "SHOULD NOT exceed 576 bytes"). Exposed so the router can size
/// the buffer it passes to [`write_error`].
pub const ERROR_MAX_LEN: usize = 576;

/// Length of the IP header of every packet built here: no options.
const IP_HEADER_LEN: usize = 20;
/// Type, code, checksum and the 4-byte "rest of header" word.
const ICMP_HEADER_LEN: usize = 8;
/// The TTL of originated errors: Linux's default `ip_default_ttl`.
const ERROR_TTL: u8 = 64;
/// Precedence "internetwork control" (0xc0), which Linux puts on the ICMP
/// errors it originates so congested queues drop them last.
const ERROR_TOS: u8 = 0xc0;

/// The errors a router sends (RFC 792 / RFC 1812 type and code). One enum
/// rather than raw numbers so the router cannot pair a type with a code that
/// does not belong to it, and so Fragmentation Needed cannot be sent without
/// its MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// The TTL reached zero in transit (type 11, code 0); what traceroute
    /// listens for.
    TimeExceeded,
    /// No route to the destination network (type 3, code 0).
    NetUnreachable,
    /// The destination is on a connected network but did not answer ARP
    /// (type 3, code 1).
    HostUnreachable,
    /// A packet for the router itself carries a protocol it does not speak
    /// (type 3, code 2).
    ProtocolUnreachable,
    /// A UDP packet for the router itself reached a closed port (type 3,
    /// code 3).
    PortUnreachable,
    /// The packet is larger than the next hop's MTU and has DF set (type 3,
    /// code 4). `mtu` is the next-hop MTU (RFC 1191), written into bytes 6..8
    /// of the ICMP header so path MTU discovery can shrink its estimate.
    FragmentationNeeded {
        /// The IP MTU of the link the packet could not be sent on.
        mtu: u16,
    },
    /// A filter refused the packet (type 3, code 13, RFC 1812 §5.2.7.1).
    AdminProhibited,
}

impl IcmpError {
    /// The ICMP type and code octets of this error, for counters and traces
    /// that must name what was sent.
    pub const fn type_and_code(self) -> (u8, u8) {
        match self {
            IcmpError::TimeExceeded => (11, 0),
            IcmpError::NetUnreachable => (3, 0),
            IcmpError::HostUnreachable => (3, 1),
            IcmpError::ProtocolUnreachable => (3, 2),
            IcmpError::PortUnreachable => (3, 3),
            IcmpError::FragmentationNeeded { .. } => (3, 4),
            IcmpError::AdminProhibited => (3, 13),
        }
    }

    /// The "rest of header" word (ICMP bytes 4..8): unused and zero, except
    /// that Fragmentation Needed carries the next-hop MTU in its low half.
    const fn rest_of_header(self) -> [u8; 4] {
        match self {
            IcmpError::FragmentationNeeded { mtu } => {
                let m = mtu.to_be_bytes();
                [0, 0, m[0], m[1]]
            }
            _ => [0; 4],
        }
    }
}

/// ICMP types that are queries rather than errors: echo reply/request,
/// timestamp and its reply, information request/reply, address mask
/// request/reply. Only these may provoke an error; every other type,
/// including unknown ones, is treated as an error message (Linux does the
/// same), so two routers can never bounce errors at each other.
const fn is_icmp_query(icmp_type: u8) -> bool {
    matches!(icmp_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
}

/// Whether `addr` can be the source of a packet that deserves an answer:
/// not unspecified, not multicast, not loopback, not class E (which
/// includes the limited broadcast 255.255.255.255). Answering any of these
/// would either go nowhere or go to many hosts at once.
fn is_answerable_source(addr: Ipv4Addr) -> bool {
    let first = addr.octets()[0];
    !(addr.is_unspecified() || addr.is_multicast() || first == 127 || first >= 240)
}

/// The header length and the number of bytes of `packet` that belong to the
/// IPv4 packet (its total length, or less when the buffer is shorter), or
/// None when not even the header is there. Tolerant of a short buffer on
/// purpose: an error quotes what it has.
fn ipv4_extent(packet: &[u8]) -> Option<(usize, usize)> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < IP_HEADER_LEN || packet.len() < header_len {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if total_len < header_len {
        return None;
    }
    Some((header_len, total_len.min(packet.len())))
}

/// Whether RFC 1812 §4.3.2.7 allows an ICMP error about `original`, a
/// received IPv4 packet (without Ethernet header). Exists so the router can
/// decide before spending a rate-limiter token, and so the rules live in
/// one place.
///
/// Refused: packets too short to hold their own header; ICMP messages that
/// are not queries (an error about an error could loop); non-first
/// fragments (the sender gets at most one error per datagram, for the
/// fragment that carries the transport header); sources that are
/// unspecified, limited broadcast, multicast, loopback or class E; and
/// multicast or limited-broadcast destinations. Link-layer broadcast and
/// directed broadcast need interface knowledge, so the caller checks those.
pub fn error_allowed(original: &[u8]) -> bool {
    let Some((header_len, len)) = ipv4_extent(original) else {
        return false;
    };
    let ip = Ipv4Packet::new_unchecked(original);
    if ip.frag_offset() != 0 {
        return false;
    }
    if !is_answerable_source(ip.src_addr()) {
        return false;
    }
    let dst = ip.dst_addr();
    if dst.is_multicast() || dst.is_broadcast() {
        return false;
    }
    if ip.next_header() == IpProtocol::Icmp {
        // Without a type octet we cannot tell a query from an error: stay
        // silent, as Linux does.
        return match original[..len].get(header_len) {
            Some(&icmp_type) => is_icmp_query(icmp_type),
            None => false,
        };
    }
    true
}

/// Writes an ICMP error about `original` into `out` as a complete IPv4
/// packet and returns its length. The router calls it when it drops a
/// packet the sender should hear about.
///
/// The IP header has source `src` (the address of the interface the error
/// leaves from, chosen by the caller), destination the original's source,
/// TTL 64, TOS 0xc0, DF clear, identification `id`, no options. The ICMP
/// part quotes the original verbatim (its header, options included, then
/// its payload) up to whichever comes first: the original's end or
/// [`ERROR_MAX_LEN`] bytes of error packet.
///
/// None when [`error_allowed`] refuses, or `out` is too small for the whole
/// message (nothing useful can be sent half-written).
pub fn write_error(
    kind: IcmpError,
    src: Ipv4Addr,
    id: u16,
    original: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    if !error_allowed(original) {
        return None;
    }
    let (_, original_len) = ipv4_extent(original)?;
    let quote_len = original_len.min(ERROR_MAX_LEN - IP_HEADER_LEN - ICMP_HEADER_LEN);
    let icmp_len = ICMP_HEADER_LEN + quote_len;
    let total_len = IP_HEADER_LEN + icmp_len;
    let out = out.get_mut(..total_len)?;
    let dst = Ipv4Packet::new_unchecked(original).src_addr();

    let (header, icmp) = out.split_at_mut(IP_HEADER_LEN);
    let (icmp_type, code) = kind.type_and_code();
    icmp[0] = icmp_type;
    icmp[1] = code;
    icmp[4..8].copy_from_slice(&kind.rest_of_header());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&original[..quote_len]);
    Icmpv4Packet::new_unchecked(&mut *icmp).fill_checksum();

    write_ip_header(
        header,
        IpHeader {
            tos: ERROR_TOS,
            total_len,
            id,
            ttl: ERROR_TTL,
            src,
            dst,
        },
    );
    Some(total_len)
}

/// If `packet` is an ICMP echo request, writes the echo reply into `out` and
/// returns its length; this is how the router answers pings to its own
/// addresses. The caller has already checked that the packet is addressed
/// to the router and that its IP header checksum is right.
///
/// The reply keeps the request's identifier, sequence number and data,
/// swaps the addresses (so its source is the address that was pinged), has
/// TTL `ttl`, identification `id`, DF clear, no options (RFC 1812 §4.3.3.6
/// lets a router drop the request's options), and the request's DSCP with
/// ECN cleared (ICMP is not ECN-capable).
///
/// None when the packet is not an unfragmented echo request with code 0, its
/// ICMP checksum is wrong, it is truncated, it was sent to a multicast or
/// broadcast address or from an address that cannot be answered (see
/// [`error_allowed`]), or `out` is too small.
pub fn write_echo_reply(packet: &[u8], ttl: u8, id: u16, out: &mut [u8]) -> Option<usize> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.version() != 4
        || ip.next_header() != IpProtocol::Icmp
        || ip.more_frags()
        || ip.frag_offset() != 0
    {
        return None;
    }
    let (request_src, request_dst) = (ip.src_addr(), ip.dst_addr());
    if !is_answerable_source(request_src)
        || request_dst.is_multicast()
        || request_dst.is_broadcast()
    {
        return None;
    }
    let request = Icmpv4Packet::new_checked(ip.payload()).ok()?;
    if request.msg_type() != Icmpv4Message::EchoRequest
        || request.msg_code() != 0
        || !request.verify_checksum()
    {
        return None;
    }
    let request = request.into_inner();
    let total_len = IP_HEADER_LEN + request.len();
    let out = out.get_mut(..total_len)?;

    let (header, icmp) = out.split_at_mut(IP_HEADER_LEN);
    icmp.copy_from_slice(request);
    let mut reply = Icmpv4Packet::new_unchecked(&mut *icmp);
    reply.set_msg_type(Icmpv4Message::EchoReply);
    reply.fill_checksum();

    write_ip_header(
        header,
        IpHeader {
            tos: ip.dscp() << 2,
            total_len,
            id,
            ttl,
            src: request_dst,
            dst: request_src,
        },
    );
    Some(total_len)
}

/// The fields of an option-less IPv4 header that differ between the packets
/// this module builds.
struct IpHeader {
    tos: u8,
    total_len: usize,
    id: u16,
    ttl: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// Fills the 20 bytes of `header` (exactly [`IP_HEADER_LEN`] long) with an
/// ICMP-carrying IPv4 header, checksum included. `total_len` never exceeds
/// 65535 here: errors are capped at 576 bytes and replies are at most as
/// long as the request they answer.
fn write_ip_header(header: &mut [u8], fields: IpHeader) {
    header.fill(0);
    let mut ip = Ipv4Packet::new_unchecked(header);
    ip.set_version(4);
    ip.set_header_len(IP_HEADER_LEN as u8);
    ip.set_dscp(fields.tos >> 2);
    ip.set_ecn(fields.tos & 0x03);
    ip.set_total_len(u16::try_from(fields.total_len).unwrap_or(u16::MAX));
    ip.set_ident(fields.id);
    // Flags and fragment offset stay zero: DF clear, not a fragment.
    ip.set_hop_limit(fields.ttl);
    ip.set_next_header(IpProtocol::Icmp);
    ip.set_src_addr(fields.src);
    ip.set_dst_addr(fields.dst);
    ip.fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        Icmpv4DstUnreachable, Icmpv4Repr, Icmpv4TimeExceeded, Ipv4Repr, UdpPacket,
    };

    const HOST_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const HOST_B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// An IPv4 packet with a valid header checksum, no options, DF clear.
    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 20 + payload.len()];
        p[0] = 0x45;
        let len = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[8] = ttl;
        p[9] = protocol;
        p[12..16].copy_from_slice(&src.octets());
        p[16..20].copy_from_slice(&dst.octets());
        p[20..].copy_from_slice(payload);
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    /// A UDP datagram (checksum left zero: "none" is legal for IPv4 UDP)
    /// from port 40000 to 33434, as traceroute sends.
    fn udp(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, data_len: usize) -> Vec<u8> {
        let mut u = vec![0u8; 8 + data_len];
        u[0..2].copy_from_slice(&40000u16.to_be_bytes());
        u[2..4].copy_from_slice(&33434u16.to_be_bytes());
        let len = u16::try_from(u.len()).unwrap();
        u[4..6].copy_from_slice(&len.to_be_bytes());
        for (i, b) in u[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        ipv4(src, dst, 17, ttl, &u)
    }

    /// An ICMP message of the given type with a valid checksum.
    fn icmp(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, rest: &[u8]) -> Vec<u8> {
        let mut m = vec![icmp_type, 0, 0, 0];
        m.extend_from_slice(rest);
        Icmpv4Packet::new_unchecked(&mut m[..]).fill_checksum();
        ipv4(src, dst, 1, 64, &m)
    }

    fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut rest = Vec::new();
        rest.extend_from_slice(&ident.to_be_bytes());
        rest.extend_from_slice(&seq.to_be_bytes());
        rest.extend_from_slice(data);
        icmp(src, dst, 8, &rest)
    }

    /// Checks every field of the IP header of an originated error and
    /// returns the ICMP part.
    fn check_error_header(out: &[u8], id: u16, dst: Ipv4Addr) -> &[u8] {
        let ip = Ipv4Packet::new_checked(out).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(out[1], 0xc0, "TOS");
        assert_eq!(usize::from(ip.total_len()), out.len());
        assert_eq!(ip.ident(), id);
        assert!(!ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.next_header(), IpProtocol::Icmp);
        assert_eq!(ip.src_addr(), ROUTER);
        assert_eq!(ip.dst_addr(), dst);
        assert!(ip.verify_checksum(), "IP header checksum");
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(), "ICMP checksum");
        ip.payload()
    }

    #[test]
    fn time_exceeded_quotes_a_small_udp_packet_whole() {
        let original = udp(HOST_A, HOST_B, 1, 12);
        let mut out = [0xaau8; 1500];
        let n = write_error(IcmpError::TimeExceeded, ROUTER, 7, &original, &mut out).unwrap();
        assert_eq!(n, 20 + 8 + original.len());
        let icmp = check_error_header(&out[..n], 7, HOST_A);
        assert_eq!(&icmp[..2], &[11, 0]);
        assert_eq!(&icmp[4..8], &[0, 0, 0, 0]);
        assert_eq!(&icmp[8..], &original[..]);

        // smoltcp agrees on what it is and what it quotes.
        let packet = Icmpv4Packet::new_checked(icmp).unwrap();
        match Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap() {
            Icmpv4Repr::TimeExceeded {
                reason,
                header,
                data,
            } => {
                assert_eq!(reason, Icmpv4TimeExceeded::TtlExpired);
                assert_eq!(
                    header,
                    Ipv4Repr {
                        src_addr: HOST_A,
                        dst_addr: HOST_B,
                        next_header: IpProtocol::Udp,
                        payload_len: 20,
                        hop_limit: 1,
                    }
                );
                let quoted_udp = UdpPacket::new_checked(data).unwrap();
                assert_eq!(quoted_udp.src_port(), 40000);
                assert_eq!(quoted_udp.dst_port(), 33434);
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn error_about_a_large_packet_is_exactly_576_bytes() {
        let original = udp(HOST_A, HOST_B, 1, 1500 - 28);
        assert_eq!(original.len(), 1500);
        let mut out = [0u8; 1500];
        let n = write_error(IcmpError::TimeExceeded, ROUTER, 9, &original, &mut out).unwrap();
        assert_eq!(n, 576);
        let icmp = check_error_header(&out[..n], 9, HOST_A);
        assert_eq!(icmp.len(), 556);
        assert_eq!(&icmp[8..], &original[..548]);
        // A buffer one byte short of the message is refused, not overrun.
        assert_eq!(
            write_error(
                IcmpError::TimeExceeded,
                ROUTER,
                9,
                &original,
                &mut out[..575]
            ),
            None
        );
    }

    #[test]
    fn quote_stops_at_total_length_not_at_buffer_end() {
        // Ethernet pads short frames; the padding is not part of the packet.
        let mut original = udp(HOST_A, HOST_B, 1, 4);
        let real_len = original.len();
        original.extend_from_slice(&[0xee; 14]);
        let mut out = [0u8; 600];
        let n = write_error(IcmpError::PortUnreachable, ROUTER, 1, &original, &mut out).unwrap();
        assert_eq!(n, 28 + real_len);
        let icmp = check_error_header(&out[..n], 1, HOST_A);
        assert_eq!(&icmp[..2], &[3, 3]);
        assert_eq!(&icmp[8..], &original[..real_len]);
    }

    #[test]
    fn fragmentation_needed_carries_the_mtu() {
        let original = udp(HOST_A, HOST_B, 63, 100);
        let mut out = [0u8; 576];
        let kind = IcmpError::FragmentationNeeded { mtu: 1280 };
        let n = write_error(kind, ROUTER, 0xbeef, &original, &mut out).unwrap();
        let icmp = check_error_header(&out[..n], 0xbeef, HOST_A);
        assert_eq!(&icmp[..2], &[3, 4]);
        assert_eq!(&icmp[4..8], &[0, 0, 0x05, 0x00]);
        let packet = Icmpv4Packet::new_checked(icmp).unwrap();
        match Icmpv4Repr::parse(&packet, &ChecksumCapabilities::default()).unwrap() {
            Icmpv4Repr::DstUnreachable { reason, .. } => {
                assert_eq!(reason, Icmpv4DstUnreachable::FragRequired)
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn every_kind_has_its_type_and_code() {
        let original = udp(HOST_A, HOST_B, 5, 8);
        let cases = [
            (IcmpError::TimeExceeded, [11, 0]),
            (IcmpError::NetUnreachable, [3, 0]),
            (IcmpError::HostUnreachable, [3, 1]),
            (IcmpError::ProtocolUnreachable, [3, 2]),
            (IcmpError::PortUnreachable, [3, 3]),
            (IcmpError::FragmentationNeeded { mtu: 576 }, [3, 4]),
            (IcmpError::AdminProhibited, [3, 13]),
        ];
        for (kind, type_code) in cases {
            let mut out = [0u8; 576];
            let n = write_error(kind, ROUTER, 3, &original, &mut out).unwrap();
            let icmp = check_error_header(&out[..n], 3, HOST_A);
            assert_eq!(&icmp[..2], &type_code, "{kind:?}");
            assert_eq!(kind.type_and_code(), (type_code[0], type_code[1]));
        }
    }

    #[test]
    fn no_error_about_an_icmp_error() {
        let mut out = [0u8; 576];
        for error_type in [3u8, 4, 5, 11, 12, 1, 9, 10, 42, 255] {
            let original = icmp(HOST_A, HOST_B, error_type, &[0; 32]);
            assert!(!error_allowed(&original), "type {error_type}");
            assert_eq!(
                write_error(IcmpError::TimeExceeded, ROUTER, 1, &original, &mut out),
                None
            );
        }
        // An ICMP packet with no type octet at all: cannot tell, stay quiet.
        assert!(!error_allowed(&ipv4(HOST_A, HOST_B, 1, 64, &[])));
    }

    #[test]
    fn errors_about_icmp_queries_are_allowed() {
        for query_type in [0u8, 8, 13, 14, 15, 16, 17, 18] {
            let original = icmp(HOST_A, HOST_B, query_type, &[0; 12]);
            assert!(error_allowed(&original), "type {query_type}");
        }
        let ping = echo_request(HOST_A, HOST_B, 1, 1, b"abc");
        let mut out = [0u8; 576];
        let n = write_error(IcmpError::TimeExceeded, ROUTER, 1, &ping, &mut out).unwrap();
        assert_eq!(&out[28..n], &ping[..]);
    }

    #[test]
    fn no_error_about_a_non_first_fragment() {
        let mut first = udp(HOST_A, HOST_B, 1, 64);
        first[6] = 0x20; // MF, offset 0: the first fragment carries the UDP header
        Ipv4Packet::new_unchecked(&mut first[..]).fill_checksum();
        assert!(error_allowed(&first));

        let mut later = udp(HOST_A, HOST_B, 1, 64);
        later[6..8].copy_from_slice(&(0x2000u16 | 185).to_be_bytes()); // MF, offset 1480
        Ipv4Packet::new_unchecked(&mut later[..]).fill_checksum();
        assert!(!error_allowed(&later));

        let mut last = udp(HOST_A, HOST_B, 1, 64);
        last[6..8].copy_from_slice(&185u16.to_be_bytes()); // offset 1480, no MF
        Ipv4Packet::new_unchecked(&mut last[..]).fill_checksum();
        assert!(!error_allowed(&last));
        let mut out = [0u8; 576];
        assert_eq!(
            write_error(IcmpError::NetUnreachable, ROUTER, 1, &last, &mut out),
            None
        );
    }

    #[test]
    fn no_error_to_a_source_that_cannot_be_answered() {
        let bad_sources = [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::new(239, 255, 255, 250),
            Ipv4Addr::new(127, 0, 0, 1),
            Ipv4Addr::new(127, 255, 0, 9),
            Ipv4Addr::new(240, 0, 0, 1),
            Ipv4Addr::new(250, 1, 2, 3),
        ];
        for src in bad_sources {
            assert!(!error_allowed(&udp(src, HOST_B, 1, 8)), "source {src}");
        }
        // The edges just inside the allowed space.
        for src in [
            Ipv4Addr::new(0, 0, 0, 1),
            Ipv4Addr::new(126, 255, 255, 255),
            Ipv4Addr::new(128, 0, 0, 0),
            Ipv4Addr::new(223, 255, 255, 255),
        ] {
            assert!(error_allowed(&udp(src, HOST_B, 1, 8)), "source {src}");
        }
    }

    #[test]
    fn no_error_about_a_multicast_or_broadcast_destination() {
        for dst in [
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 251),
            Ipv4Addr::new(239, 1, 2, 3),
        ] {
            assert!(!error_allowed(&udp(HOST_A, dst, 1, 8)), "destination {dst}");
        }
    }

    #[test]
    fn malformed_originals_are_refused() {
        let good = udp(HOST_A, HOST_B, 1, 8);
        assert!(error_allowed(&good));
        assert!(!error_allowed(&[]));
        assert!(!error_allowed(&good[..19]));
        let mut v6 = good.clone();
        v6[0] = 0x65;
        assert!(!error_allowed(&v6));
        let mut short_ihl = good.clone();
        short_ihl[0] = 0x44;
        assert!(!error_allowed(&short_ihl));
        let mut long_ihl = good.clone();
        long_ihl[0] = 0x4f; // 60-byte header in a 36-byte buffer
        assert!(!error_allowed(&long_ihl));
        let mut tiny_total = good.clone();
        tiny_total[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert!(!error_allowed(&tiny_total));
    }

    #[test]
    fn truncated_original_is_quoted_only_as_far_as_it_goes() {
        // Total length claims 1000 bytes but only 40 arrived.
        let full = udp(HOST_A, HOST_B, 1, 1000 - 28);
        let mut out = [0u8; 576];
        let n = write_error(IcmpError::TimeExceeded, ROUTER, 2, &full[..40], &mut out).unwrap();
        assert_eq!(n, 28 + 40);
        assert_eq!(&out[28..n], &full[..40]);
    }

    #[test]
    fn echo_reply_round_trip_with_odd_payload() {
        let data = b"odd-length payload!"; // 19 bytes
        let request = echo_request(HOST_A, ROUTER, 0x4242, 7, data);
        let mut out = [0u8; 1500];
        let n = write_echo_reply(&request, 64, 0x0102, &mut out).unwrap();
        assert_eq!(n, 20 + 8 + data.len());

        let ip = Ipv4Packet::new_checked(&out[..n]).unwrap();
        assert_eq!(ip.version(), 4);
        assert_eq!(ip.header_len(), 20);
        assert_eq!(out[1], 0, "TOS of a best-effort request");
        assert_eq!(usize::from(ip.total_len()), n);
        assert_eq!(ip.ident(), 0x0102);
        assert!(!ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!(ip.hop_limit(), 64);
        assert_eq!(ip.next_header(), IpProtocol::Icmp);
        assert_eq!(ip.src_addr(), ROUTER);
        assert_eq!(ip.dst_addr(), HOST_A);
        assert!(ip.verify_checksum());

        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(
            Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap(),
            Icmpv4Repr::EchoReply {
                ident: 0x4242,
                seq_no: 7,
                data,
            }
        );
        assert_eq!(&out[20..22], &[0, 0], "echo reply, code 0");
        assert_eq!(&out[24..28], &[0x42, 0x42, 0, 7]);
        assert_eq!(&out[28..n], data);
    }

    #[test]
    fn echo_reply_drops_options_and_keeps_dscp() {
        // A request with a 4-byte option (NOP x3 + EOL) and DSCP EF, ECN CE.
        let plain = echo_request(HOST_A, ROUTER, 1, 2, b"xyz");
        let mut request = Vec::new();
        request.extend_from_slice(&plain[..20]);
        request.extend_from_slice(&[1, 1, 1, 0]);
        request.extend_from_slice(&plain[20..]);
        request[0] = 0x46;
        request[1] = (46 << 2) | 0b11;
        let len = u16::try_from(request.len()).unwrap();
        request[2..4].copy_from_slice(&len.to_be_bytes());
        Ipv4Packet::new_unchecked(&mut request[..]).fill_checksum();

        let mut out = [0u8; 100];
        let n = write_echo_reply(&request, 255, 9, &mut out).unwrap();
        assert_eq!(n, plain.len());
        assert_eq!(out[0], 0x45);
        assert_eq!(out[1], 46 << 2);
        assert_eq!(out[8], 255);
        assert_eq!(&out[28..n], b"xyz");
        assert!(Ipv4Packet::new_unchecked(&out[..n]).verify_checksum());
        assert!(Icmpv4Packet::new_unchecked(&out[20..n]).verify_checksum());
    }

    #[test]
    fn bad_checksum_echo_is_refused() {
        let mut request = echo_request(HOST_A, ROUTER, 1, 1, b"hello");
        let last = request.len() - 1;
        request[last] ^= 0x01;
        let mut out = [0u8; 100];
        assert_eq!(write_echo_reply(&request, 64, 1, &mut out), None);
    }

    #[test]
    fn only_echo_requests_are_answered() {
        let mut out = [0u8; 100];
        let reply = icmp(HOST_A, ROUTER, 0, &[0, 1, 0, 1]);
        assert_eq!(write_echo_reply(&reply, 64, 1, &mut out), None);
        let mut nonzero_code = vec![8, 1, 0, 0, 0, 1, 0, 1];
        Icmpv4Packet::new_unchecked(&mut nonzero_code[..]).fill_checksum();
        let nonzero_code = ipv4(HOST_A, ROUTER, 1, 64, &nonzero_code);
        assert_eq!(write_echo_reply(&nonzero_code, 64, 1, &mut out), None);
        let udp = udp(HOST_A, ROUTER, 64, 8);
        assert_eq!(write_echo_reply(&udp, 64, 1, &mut out), None);
    }

    #[test]
    fn echo_to_broadcast_or_from_martian_is_not_answered() {
        let mut out = [0u8; 100];
        for (src, dst) in [
            (HOST_A, Ipv4Addr::BROADCAST),
            (HOST_A, Ipv4Addr::new(224, 0, 0, 1)),
            (Ipv4Addr::UNSPECIFIED, ROUTER),
            (Ipv4Addr::new(127, 0, 0, 1), ROUTER),
        ] {
            let request = echo_request(src, dst, 1, 1, b"x");
            assert_eq!(write_echo_reply(&request, 64, 1, &mut out), None);
        }
    }

    #[test]
    fn truncated_or_fragmented_echo_is_refused() {
        let request = echo_request(HOST_A, ROUTER, 1, 1, b"0123456789");
        let mut out = [0u8; 100];
        for len in 0..request.len() {
            assert_eq!(
                write_echo_reply(&request[..len], 64, 1, &mut out),
                None,
                "{len}"
            );
        }
        // Too short for the ICMP header even though the IP header is fine.
        let stub = ipv4(HOST_A, ROUTER, 1, 64, &[8, 0, 0xf7, 0xff]);
        assert_eq!(write_echo_reply(&stub, 64, 1, &mut out), None);
        let mut fragment = request.clone();
        fragment[6] = 0x20;
        Ipv4Packet::new_unchecked(&mut fragment[..]).fill_checksum();
        assert_eq!(write_echo_reply(&fragment, 64, 1, &mut out), None);
        // Out one byte too small.
        assert_eq!(
            write_echo_reply(&request, 64, 1, &mut out[..request.len() - 1]),
            None
        );
        assert_eq!(
            write_echo_reply(&request, 64, 1, &mut out[..request.len()]),
            Some(request.len())
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700),
                                    out_len in 0usize..700) {
            let mut out = vec![0u8; out_len];
            let _ = error_allowed(&bytes);
            if let Some(n) = write_error(IcmpError::TimeExceeded, ROUTER, 1, &bytes, &mut out) {
                prop_assert!(n <= ERROR_MAX_LEN && n <= out_len);
            }
            if let Some(n) = write_echo_reply(&bytes, 64, 1, &mut out) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn plausible_headers_never_panic(ver_ihl in prop_oneof![Just(0x45u8), 0x40u8..0x50],
                                         total_len in any::<u16>(),
                                         flags in any::<u16>(),
                                         protocol in prop_oneof![Just(1u8), Just(17u8), any::<u8>()],
                                         rest in proptest::collection::vec(any::<u8>(), 0..120),
                                         out_len in 0usize..700) {
            let mut p = udp(HOST_A, HOST_B, 1, 0);
            p[0] = ver_ihl;
            p[2..4].copy_from_slice(&total_len.to_be_bytes());
            p[6..8].copy_from_slice(&flags.to_be_bytes());
            p[9] = protocol;
            p.truncate(20);
            p.extend_from_slice(&rest);
            let mut out = vec![0u8; out_len];
            let _ = write_error(IcmpError::FragmentationNeeded { mtu: 1280 }, ROUTER, 1, &p, &mut out);
            let _ = write_echo_reply(&p, 64, 1, &mut out);
        }
    }
}
