//! Reading and rewriting the fields NAT translates, in place.
//!
//! NAT touches a forwarded packet in one place: it swaps addresses and
//! ports for the ones the flow table chose. Everything here works on a bare
//! IPv4 packet (no Ethernet header) whose IPv4 header the caller has already
//! validated, and edits the buffer where it lies, so translating costs a
//! handful of 16-bit stores and no allocation.
//!
//! # Checksums
//!
//! Every checksum a translation disturbs is patched incrementally
//! (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`) from the words that changed,
//! never recomputed over the payload. That keeps the cost independent of
//! packet size and, just as important, keeps a checksum that was wrong on
//! arrival wrong on departure: NAT must not bless a corrupted packet. The
//! IPv4 header checksum covers the addresses; the TCP and UDP checksums cover
//! them too through the pseudo-header, plus the ports; the ICMP checksum
//! covers only the ICMP message, so an echo's identifier is its only NAT
//! input. A UDP checksum of 0 means "none" (RFC 768) and stays 0; a UDP
//! checksum that works out to 0 is sent as `0xffff`, its one's-complement
//! twin.
//!
//! The one exception is [`rewrite_icmp_error`], which recomputes the ICMP
//! checksum over the whole error message (after checking the one that
//! arrived), as Linux does: an ICMP error is rare, small and rate limited.
//!
//! # ICMP echo identifiers
//!
//! ICMP echo has no ports, so NAT translates the query identifier like one
//! (RFC 5508, section 3.1) and a [`FlowKey`] for echo carries the identifier
//! as *both* ports. When rewriting, an echo **request** takes its identifier
//! from the new *source* port and an echo **reply** from the new
//! *destination* port: the identifier belongs to the querying host, which is
//! the source of a request and the destination of a reply. Applying a flow
//! key's addresses to either kind of packet therefore does the right thing.
//!
//! # Fragments
//!
//! Only the first fragment carries the transport header. A later fragment
//! has its addresses and IPv4 header checksum rewritten and nothing else;
//! its share of the transport checksum needs no change, because the
//! pseudo-header part of that checksum (the addresses) is adjusted once, in
//! the first fragment, when it is rewritten with the same addresses. NAT
//! must therefore translate every fragment of a datagram the same way; the
//! caller finds the flow of a later fragment by its IPv4 identification.

use super::{FlowKey, Proto};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// IPv4 protocol number of ICMP.
const PROTO_ICMP: u8 = 1;
/// IPv4 protocol number of TCP.
const PROTO_TCP: u8 = 6;
/// IPv4 protocol number of UDP.
const PROTO_UDP: u8 = 17;

/// ICMP echo reply type.
const ICMP_ECHO_REPLY: u8 = 0;
/// ICMP echo request type.
const ICMP_ECHO_REQUEST: u8 = 8;

/// The "more fragments" bit of the IPv4 flags/fragment-offset word.
const MORE_FRAGMENTS: u16 = 0x2000;
/// The fragment offset bits of the same word.
const OFFSET_MASK: u16 = 0x1fff;

/// Smallest IPv4 header.
const IPV4_MIN_HEADER: usize = 20;
/// Offset of the IPv4 header checksum.
const IPV4_CHECKSUM: usize = 10;
/// Offset of the IPv4 source address (the destination follows it).
const IPV4_SRC: usize = 12;
/// Offset of the IPv4 destination address.
const IPV4_DST: usize = 16;

/// Smallest TCP header.
const TCP_MIN_HEADER: usize = 20;
/// Offset of the TCP flags byte.
const TCP_FLAGS: usize = 13;
/// Offset of the TCP checksum.
const TCP_CHECKSUM: usize = 16;
/// The UDP header's length.
const UDP_HEADER: usize = 8;
/// Offset of the UDP checksum.
const UDP_CHECKSUM: usize = 6;
/// The ICMP header's length (type, code, checksum, four type-specific bytes).
const ICMP_HEADER: usize = 8;
/// Offset of the ICMP checksum.
const ICMP_CHECKSUM: usize = 2;
/// Offset of the ICMP echo identifier.
const ICMP_ECHO_ID: usize = 4;
/// How much of a quoted transport header RFC 792 promises: enough for both
/// ports (or an echo's identifier), not necessarily a checksum beyond them.
const QUOTED_L4_MIN: usize = 8;

/// What NAT needs to know about a packet, so the caller can look it up in
/// the flow table without parsing the packet twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// A TCP/UDP packet or ICMP echo request/reply (first fragment or
    /// unfragmented): its key. `tcp_flags` is 0 for non-TCP;
    /// `first_fragment` is set when MF is set at offset 0, so the caller can
    /// remember the datagram's identification for the later fragments.
    Flow {
        /// The packet's flow key as it is on the wire (ICMP echo: the
        /// identifier in both ports).
        key: FlowKey,
        /// The TCP flags byte (CWR..FIN), 0 for UDP and ICMP.
        tcp_flags: u8,
        /// The packet is the first fragment of a fragmented datagram.
        first_fragment: bool,
    },
    /// An ICMP error (types 3, 4, 5, 11, 12) quoting a TCP/UDP/ICMP-echo
    /// packet: `inner` is the key of the quoted packet exactly as quoted
    /// (its src/dst as it was sent), which is the *reply* key of the flow
    /// the error belongs to, reversed.
    IcmpError {
        /// The quoted packet's key, source and destination as quoted.
        inner: FlowKey,
    },
    /// A non-first fragment (offset > 0): only the IP header is usable, so
    /// the flow has to be found by the datagram's identification.
    LaterFragment {
        /// The IPv4 protocol number.
        proto: u8,
        /// The IPv4 identification shared by all fragments of a datagram.
        ident: u16,
    },
    /// Anything NAT does not handle (other protocols, other ICMP types,
    /// truncated L4 header): it passes untranslated or is dropped, the
    /// caller's choice.
    Other,
}

/// Why a packet could not be rewritten. The packet is left untouched
/// whenever an error is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteError {
    /// The packet ends before a field that has to change.
    Truncated,
    /// The packet is not one NAT translates: another protocol, another ICMP
    /// type, a fragmented ICMP error, or an ICMP error whose checksum does
    /// not verify (NAT will not give a corrupted error a fresh checksum).
    Unsupported,
}

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewriteError::Truncated => f.write_str("packet too short to translate"),
            RewriteError::Unsupported => f.write_str("packet not translatable"),
        }
    }
}

impl std::error::Error for RewriteError {}

/// Classifies an IPv4 packet (no Ethernet header) for NAT. Never panics:
/// anything malformed is [`Classified::Other`]. Bytes past the IPv4 total
/// length (Ethernet padding) are ignored.
pub fn classify(packet: &[u8]) -> Classified {
    let Some(ip) = Ipv4Fields::parse(packet, false) else {
        return Classified::Other;
    };
    if ip.offset() != 0 {
        return Classified::LaterFragment {
            proto: ip.proto,
            ident: ip.ident,
        };
    }
    let Some(l4) = packet.get(ip.header_len..ip.end) else {
        return Classified::Other;
    };
    if ip.proto == PROTO_ICMP && l4.first().is_some_and(|&t| is_icmp_error(t)) {
        // The ICMP checksum of a fragmented error spans fragments; it cannot
        // be translated piecewise.
        if ip.more_fragments() {
            return Classified::Other;
        }
        return match quoted_key(l4) {
            Ok((inner, _)) => Classified::IcmpError { inner },
            Err(_) => Classified::Other,
        };
    }
    match flow_key(&ip, l4, TCP_MIN_HEADER) {
        Some(key) => Classified::Flow {
            key,
            tcp_flags: if ip.proto == PROTO_TCP {
                l4.get(TCP_FLAGS).copied().unwrap_or(0)
            } else {
                0
            },
            first_fragment: ip.more_fragments(),
        },
        None => Classified::Other,
    }
}

/// Rewrites a packet's source and destination address and port in place:
/// the one operation NAT performs on every translated packet.
///
/// The IPv4 header checksum and the TCP/UDP/ICMP checksum are updated
/// incrementally (RFC 1624); a UDP checksum of 0 stays 0 and one that
/// becomes 0 is written as `0xffff`.
///
/// ICMP echo carries no ports: an echo **request** takes `new_src.port()` as
/// its identifier and an echo **reply** `new_dst.port()`, matching
/// [`classify`], which reports the identifier as both ports. Any other ICMP
/// type is [`RewriteError::Unsupported`] (errors go through
/// [`rewrite_icmp_error`]).
///
/// A non-first fragment (offset > 0) has no transport header: only its
/// addresses and IPv4 header checksum change and the ports are ignored. The
/// transport checksum's pseudo-header part is adjusted in the first
/// fragment instead, so every fragment of a datagram must be given the same
/// addresses.
///
/// On error the packet is unchanged.
pub fn rewrite(
    packet: &mut [u8],
    new_src: SocketAddrV4,
    new_dst: SocketAddrV4,
) -> Result<(), RewriteError> {
    let ip = Ipv4Fields::parse(packet, false).ok_or(RewriteError::Truncated)?;
    let src = new_src.ip().octets();
    let dst = new_dst.ip().octets();
    let mut pseudo = Delta::default();
    pseudo.addr(ip.src, src);
    pseudo.addr(ip.dst, dst);

    if ip.offset() == 0 {
        let l4 = packet
            .get_mut(ip.header_len..ip.end)
            .ok_or(RewriteError::Truncated)?;
        check_l4(ip.proto, l4, TCP_MIN_HEADER)?;
        rewrite_l4(ip.proto, l4, pseudo, new_src.port(), new_dst.port());
    }
    set_addr(packet, IPV4_SRC, src);
    set_addr(packet, IPV4_DST, dst);
    patch(packet, IPV4_CHECKSUM, pseudo);
    Ok(())
}

/// Rewrites an ICMP error for delivery to the inside host, so that the host
/// recognises the packet it sent in the quote and its stack can act on the
/// error (path MTU discovery and traceroute depend on it).
///
/// The outer destination becomes `outer_dst`; the quoted packet's source
/// becomes `inner_src` and its destination `inner_dst` (address and
/// port, or an echo's identifier by the same rule as [`rewrite`]). The quoted
/// IPv4 header checksum is patched incrementally, as is the quoted
/// transport checksum when it lies within the quote (UDP 0 stays 0; TCP's
/// sits at offset 16 and may be cut off). The ICMP checksum is recomputed
/// over the whole message, of any length, after the arriving one has been
/// checked; the outer IPv4 checksum is patched.
///
/// Refused with [`RewriteError::Unsupported`]: not an ICMP error of type 3,
/// 4, 5, 11 or 12, a fragmented error, a quote of anything but TCP, UDP or
/// an echo's first fragment, and an error whose ICMP checksum is wrong. On
/// error the packet is unchanged.
pub fn rewrite_icmp_error(
    packet: &mut [u8],
    outer_dst: Ipv4Addr,
    inner_src: SocketAddrV4,
    inner_dst: SocketAddrV4,
) -> Result<(), RewriteError> {
    let ip = Ipv4Fields::parse(packet, false).ok_or(RewriteError::Truncated)?;
    if ip.proto != PROTO_ICMP || ip.offset() != 0 || ip.more_fragments() {
        return Err(RewriteError::Unsupported);
    }
    let icmp = packet
        .get_mut(ip.header_len..ip.end)
        .ok_or(RewriteError::Truncated)?;
    if !icmp.first().is_some_and(|&t| is_icmp_error(t)) {
        return Err(if icmp.is_empty() {
            RewriteError::Truncated
        } else {
            RewriteError::Unsupported
        });
    }
    let (_, inner) = quoted_key(icmp)?;
    if ones_sum(icmp) != 0xffff {
        return Err(RewriteError::Unsupported);
    }

    // Everything checked; from here on nothing fails.
    let src = inner_src.ip().octets();
    let dst = inner_dst.ip().octets();
    let mut pseudo = Delta::default();
    pseudo.addr(inner.src, src);
    pseudo.addr(inner.dst, dst);
    if let Some(quote) = icmp.get_mut(ICMP_HEADER..) {
        if let Some(l4) = quote.get_mut(inner.header_len..) {
            rewrite_l4(inner.proto, l4, pseudo, inner_src.port(), inner_dst.port());
        }
        set_addr(quote, IPV4_SRC, src);
        set_addr(quote, IPV4_DST, dst);
        patch(quote, IPV4_CHECKSUM, pseudo);
    }
    set16(icmp, ICMP_CHECKSUM, 0);
    let checksum = !ones_sum(icmp);
    set16(icmp, ICMP_CHECKSUM, checksum);

    let outer = outer_dst.octets();
    let mut delta = Delta::default();
    delta.addr(ip.dst, outer);
    set_addr(packet, IPV4_DST, outer);
    patch(packet, IPV4_CHECKSUM, delta);
    Ok(())
}

/// The IPv4 header fields NAT reads, located and bounds-checked once.
#[derive(Debug, Clone, Copy)]
struct Ipv4Fields {
    /// Header length in bytes (IHL × 4).
    header_len: usize,
    /// Where the packet's bytes end: the total length for a packet, the
    /// end of the available bytes for a quote.
    end: usize,
    /// Protocol number.
    proto: u8,
    /// Flags and fragment offset word.
    frag: u16,
    /// Identification.
    ident: u16,
    /// Source address.
    src: [u8; 4],
    /// Destination address.
    dst: [u8; 4],
}

impl Ipv4Fields {
    /// Reads an IPv4 header at the start of `bytes`. A packet's total
    /// length must fit in `bytes`; a `quoted` header (inside an ICMP error)
    /// describes a packet that was cut short, so its total length is not
    /// held against the bytes that follow.
    fn parse(bytes: &[u8], quoted: bool) -> Option<Ipv4Fields> {
        let first = *bytes.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < IPV4_MIN_HEADER || header_len > bytes.len() {
            return None;
        }
        let end = if quoted {
            bytes.len()
        } else {
            let total = usize::from(get16(bytes, 2)?);
            if total < header_len || total > bytes.len() {
                return None;
            }
            total
        };
        Some(Ipv4Fields {
            header_len,
            end,
            proto: *bytes.get(9)?,
            frag: get16(bytes, 6)?,
            ident: get16(bytes, 4)?,
            src: get_addr(bytes, IPV4_SRC)?,
            dst: get_addr(bytes, IPV4_DST)?,
        })
    }

    /// The fragment offset in 8-byte units; non-zero for a later fragment.
    fn offset(&self) -> u16 {
        self.frag & OFFSET_MASK
    }

    /// Whether more fragments follow this one.
    fn more_fragments(&self) -> bool {
        self.frag & MORE_FRAGMENTS != 0
    }
}

/// Whether an ICMP type is one of the errors that quote the offending
/// packet and that NAT translates: unreachable, source quench, redirect,
/// time exceeded, parameter problem.
fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// The flow key of a first-fragment transport header `l4`, or `None` if the
/// protocol is not tracked or the header is shorter than NAT needs (a TCP
/// header must have `tcp_min` bytes: all of it in a packet, the ports in a
/// quote).
fn flow_key(ip: &Ipv4Fields, l4: &[u8], tcp_min: usize) -> Option<FlowKey> {
    let src = Ipv4Addr::from(ip.src);
    let dst = Ipv4Addr::from(ip.dst);
    let (proto, sport, dport) = match ip.proto {
        PROTO_TCP if l4.len() >= tcp_min => (Proto::Tcp, get16(l4, 0)?, get16(l4, 2)?),
        PROTO_UDP if l4.len() >= UDP_HEADER => (Proto::Udp, get16(l4, 0)?, get16(l4, 2)?),
        PROTO_ICMP if l4.len() >= ICMP_HEADER => match *l4.first()? {
            ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY => {
                let id = get16(l4, ICMP_ECHO_ID)?;
                (Proto::Icmp, id, id)
            }
            _ => return None,
        },
        _ => return None,
    };
    Some(FlowKey {
        proto,
        src: SocketAddrV4::new(src, sport),
        dst: SocketAddrV4::new(dst, dport),
    })
}

/// Finds the quoted packet in an ICMP error message `icmp` (starting at
/// the ICMP header) and returns its key and header fields (offsets relative
/// to the quote). The quote must be a first fragment with at least the
/// eight transport bytes RFC 792 promises.
fn quoted_key(icmp: &[u8]) -> Result<(FlowKey, Ipv4Fields), RewriteError> {
    let quote = icmp.get(ICMP_HEADER..).ok_or(RewriteError::Truncated)?;
    let inner = Ipv4Fields::parse(quote, true).ok_or(RewriteError::Truncated)?;
    if inner.offset() != 0 {
        return Err(RewriteError::Unsupported);
    }
    let l4 = quote
        .get(inner.header_len..)
        .ok_or(RewriteError::Truncated)?;
    check_l4(inner.proto, l4, QUOTED_L4_MIN)?;
    let key = flow_key(&inner, l4, QUOTED_L4_MIN).ok_or(RewriteError::Unsupported)?;
    Ok((key, inner))
}

/// Checks that a transport header holds every field [`rewrite_l4`] will
/// change, so that a rewrite either happens whole or not at all.
fn check_l4(proto: u8, l4: &[u8], tcp_min: usize) -> Result<(), RewriteError> {
    let min = match proto {
        PROTO_TCP => tcp_min,
        PROTO_UDP => UDP_HEADER,
        PROTO_ICMP => match l4.first() {
            Some(&ICMP_ECHO_REQUEST | &ICMP_ECHO_REPLY) => ICMP_HEADER,
            Some(_) => return Err(RewriteError::Unsupported),
            None => return Err(RewriteError::Truncated),
        },
        _ => return Err(RewriteError::Unsupported),
    };
    if l4.len() < min {
        return Err(RewriteError::Truncated);
    }
    Ok(())
}

/// Rewrites the ports (or echo identifier) of a transport header already
/// passed by [`check_l4`] and patches its checksum: by `pseudo` (the
/// address change) plus the port change for TCP and UDP, by the identifier
/// change alone for ICMP, which has no pseudo-header. A TCP checksum cut off
/// by a short quote is left alone.
fn rewrite_l4(proto: u8, l4: &mut [u8], pseudo: Delta, src_port: u16, dst_port: u16) {
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let mut delta = pseudo;
            for (at, new) in [(0, src_port), (2, dst_port)] {
                if let Some(old) = get16(l4, at) {
                    delta.word(old, new);
                    set16(l4, at, new);
                }
            }
            if proto == PROTO_TCP {
                patch(l4, TCP_CHECKSUM, delta);
            } else if let Some(old) = get16(l4, UDP_CHECKSUM)
                && old != 0
            {
                let new = delta.apply(old);
                set16(l4, UDP_CHECKSUM, if new == 0 { 0xffff } else { new });
            }
        }
        PROTO_ICMP => {
            let new = match l4.first() {
                Some(&ICMP_ECHO_REQUEST) => src_port,
                Some(&ICMP_ECHO_REPLY) => dst_port,
                _ => return,
            };
            if let Some(old) = get16(l4, ICMP_ECHO_ID) {
                let mut delta = Delta::default();
                delta.word(old, new);
                set16(l4, ICMP_ECHO_ID, new);
                patch(l4, ICMP_CHECKSUM, delta);
            }
        }
        _ => {}
    }
}

/// A pending incremental checksum update (RFC 1624, eqn. 3): the
/// one's-complement sum of `~old + new` over every 16-bit word that
/// changes. Kept unfolded; a few words cannot overflow a `u32`.
#[derive(Debug, Clone, Copy, Default)]
struct Delta(u32);

impl Delta {
    /// Records that one checksummed word changes from `old` to `new`.
    fn word(&mut self, old: u16, new: u16) {
        self.0 += u32::from(!old) + u32::from(new);
    }

    /// Records that an address (two words) changes.
    fn addr(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.word(
            u16::from_be_bytes([old[0], old[1]]),
            u16::from_be_bytes([new[0], new[1]]),
        );
        self.word(
            u16::from_be_bytes([old[2], old[3]]),
            u16::from_be_bytes([new[2], new[3]]),
        );
    }

    /// The checksum `checksum` becomes after the recorded changes. A sum
    /// folding to 0 is the one's-complement zero of non-zero data and is
    /// taken as `0xffff`, so the result equals a full recomputation.
    fn apply(self, checksum: u16) -> u16 {
        let sum = fold(u64::from(!checksum) + u64::from(self.0));
        !(if sum == 0 { 0xffff } else { sum })
    }
}

/// Folds a one's-complement sum to 16 bits with end-around carry.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 bits.
    sum as u16
}

/// The folded one's-complement sum of `data` as 16-bit big-endian words,
/// an odd last byte padded with zero. A message whose checksum is right
/// sums to `0xffff`.
fn ones_sum(data: &[u8]) -> u16 {
    let mut words = data.chunks_exact(2);
    let mut sum: u64 = words
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    fold(sum)
}

/// Applies `delta` to the checksum stored at `at`, if it is there.
fn patch(bytes: &mut [u8], at: usize, delta: Delta) {
    if let Some(old) = get16(bytes, at) {
        set16(bytes, at, delta.apply(old));
    }
}

/// Reads a big-endian word at `at`, or `None` past the end.
fn get16(bytes: &[u8], at: usize) -> Option<u16> {
    let word: [u8; 2] = bytes.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_be_bytes(word))
}

/// Writes a big-endian word at `at`; a no-op past the end (callers check
/// lengths first).
fn set16(bytes: &mut [u8], at: usize, value: u16) {
    if let Some(word) = at.checked_add(2).and_then(|end| bytes.get_mut(at..end)) {
        word.copy_from_slice(&value.to_be_bytes());
    }
}

/// Reads an IPv4 address at `at`, or `None` past the end.
fn get_addr(bytes: &[u8], at: usize) -> Option<[u8; 4]> {
    bytes.get(at..at.checked_add(4)?)?.try_into().ok()
}

/// Writes an IPv4 address at `at`; a no-op past the end.
fn set_addr(bytes: &mut [u8], at: usize, addr: [u8; 4]) {
    if let Some(field) = at.checked_add(4).and_then(|end| bytes.get_mut(at..end)) {
        field.copy_from_slice(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::icmpv4::TimeExceededCode;
    use etherparse::{
        Icmpv4Slice, Icmpv4Type, IpNumber, Ipv4HeaderSlice, PacketBuilder, TcpHeader,
        TcpHeaderSlice, UdpHeader,
    };
    use proptest::prelude::*;

    fn sock(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    /// A TCP packet with the given flags byte, checksums filled in.
    fn tcp_packet(src: SocketAddrV4, dst: SocketAddrV4, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut tcp = TcpHeader::new(src.port(), dst.port(), 0x0102_0304, 8192);
        tcp.fin = flags & 0x01 != 0;
        tcp.syn = flags & 0x02 != 0;
        tcp.rst = flags & 0x04 != 0;
        tcp.psh = flags & 0x08 != 0;
        tcp.ack = flags & 0x10 != 0;
        tcp.urg = flags & 0x20 != 0;
        let mut out = Vec::new();
        PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
            .tcp_header(tcp)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// A UDP packet; `no_checksum` zeroes the UDP checksum ("none").
    fn udp_packet(
        src: SocketAddrV4,
        dst: SocketAddrV4,
        no_checksum: bool,
        payload: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(src.ip().octets(), dst.ip().octets(), 64)
            .udp(src.port(), dst.port())
            .write(&mut out, payload)
            .unwrap();
        if no_checksum {
            out[26] = 0;
            out[27] = 0;
        }
        out
    }

    /// An ICMP echo request or reply.
    fn echo_packet(
        request: bool,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        payload: &[u8],
    ) -> Vec<u8> {
        let builder = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
        let builder = if request {
            builder.icmpv4_echo_request(id, 7)
        } else {
            builder.icmpv4_echo_reply(id, 7)
        };
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    /// A time-exceeded error from `router` to `to` quoting `quote`.
    fn time_exceeded(router: Ipv4Addr, to: Ipv4Addr, quote: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4(router.octets(), to.octets(), 64)
            .icmpv4(Icmpv4Type::TimeExceeded(
                TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut out, quote)
            .unwrap();
        out
    }

    /// Recomputes the IPv4 header checksum after a test edited the header.
    fn fix_ip_checksum(packet: &mut [u8]) {
        let sum = Ipv4HeaderSlice::from_slice(packet)
            .unwrap()
            .to_header()
            .calc_header_checksum();
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }

    /// Asserts that every checksum in an IPv4 packet equals a full
    /// recomputation by etherparse (UDP 0 means none).
    fn assert_checksums(packet: &[u8]) {
        let ip = Ipv4HeaderSlice::from_slice(packet).unwrap();
        assert_eq!(
            ip.header_checksum(),
            ip.to_header().calc_header_checksum(),
            "IPv4 checksum"
        );
        let l4 = &packet[ip.slice().len()..usize::from(ip.total_len())];
        match ip.protocol() {
            IpNumber::TCP => {
                let tcp = TcpHeaderSlice::from_slice(l4).unwrap();
                let payload = &l4[tcp.slice().len()..];
                let want = tcp
                    .to_header()
                    .calc_checksum_ipv4_raw(ip.source(), ip.destination(), payload)
                    .unwrap();
                assert_eq!(tcp.checksum(), want, "TCP checksum");
            }
            IpNumber::UDP => {
                let (udp, payload) = UdpHeader::from_slice(l4).unwrap();
                if udp.checksum != 0 {
                    let want = udp
                        .calc_checksum_ipv4_raw(ip.source(), ip.destination(), payload)
                        .unwrap();
                    assert_eq!(udp.checksum, want, "UDP checksum");
                }
            }
            IpNumber::ICMP => {
                let icmp = Icmpv4Slice::from_slice(l4).unwrap();
                assert_eq!(
                    icmp.checksum(),
                    icmp.icmp_type().calc_checksum(icmp.payload()),
                    "ICMP checksum"
                );
            }
            other => panic!("unexpected protocol {other:?}"),
        }
    }

    /// The kinds of packet the round-trip property covers.
    #[derive(Debug, Clone, Copy)]
    enum Kind {
        Tcp(u8),
        Udp,
        UdpNoChecksum,
        EchoRequest,
        EchoReply,
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop_oneof![
            any::<u8>().prop_map(|f| Kind::Tcp(f & 0x3f)),
            Just(Kind::Udp),
            Just(Kind::UdpNoChecksum),
            Just(Kind::EchoRequest),
            Just(Kind::EchoReply),
        ]
    }

    fn build(kind: Kind, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        match kind {
            Kind::Tcp(flags) => tcp_packet(src, dst, flags, payload),
            Kind::Udp => udp_packet(src, dst, false, payload),
            Kind::UdpNoChecksum => udp_packet(src, dst, true, payload),
            // The querying host's identifier: the source port of a
            // request, the destination port of a reply.
            Kind::EchoRequest => echo_packet(true, *src.ip(), *dst.ip(), src.port(), payload),
            Kind::EchoReply => echo_packet(false, *src.ip(), *dst.ip(), dst.port(), payload),
        }
    }

    proptest! {
        #[test]
        fn translate_and_back_restores_the_packet(
            kind in kind(),
            src in any::<([u8; 4], u16)>(),
            dst in any::<([u8; 4], u16)>(),
            new_src in any::<([u8; 4], u16)>(),
            new_dst in any::<([u8; 4], u16)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let (src, dst) = (sock(src.0, src.1), sock(dst.0, dst.1));
            let (new_src, mut new_dst) = (sock(new_src.0, new_src.1), sock(new_dst.0, new_dst.1));
            let original = build(kind, src, dst, &payload);
            let Classified::Flow { key, tcp_flags, first_fragment } = classify(&original) else {
                panic!("not a flow: {:?}", classify(&original));
            };
            prop_assert!(!first_fragment);
            // For echo both ports of a key are the identifier; a
            // translated key keeps that shape.
            if matches!(kind, Kind::EchoRequest | Kind::EchoReply) {
                prop_assert_eq!(key.src.port(), key.dst.port());
                new_dst.set_port(new_src.port());
            }
            match kind {
                Kind::Tcp(flags) => prop_assert_eq!(tcp_flags, flags),
                _ => prop_assert_eq!(tcp_flags, 0),
            }
            let proto = key.proto;
            prop_assert_eq!(key.src.ip(), src.ip());
            prop_assert_eq!(key.dst.ip(), dst.ip());

            let mut packet = original.clone();
            rewrite(&mut packet, new_src, new_dst).unwrap();
            assert_checksums(&packet);
            let translated = FlowKey { proto, src: new_src, dst: new_dst };
            prop_assert_eq!(
                classify(&packet),
                Classified::Flow { key: translated, tcp_flags, first_fragment: false }
            );
            if matches!(kind, Kind::UdpNoChecksum) {
                prop_assert_eq!(&packet[26..28], &[0, 0]);
            }
            // Nothing but addresses, ports and checksums moved.
            prop_assert_eq!(packet.len(), original.len());
            prop_assert_eq!(&packet[..10], &original[..10]);

            rewrite(&mut packet, key.src, key.dst).unwrap();
            prop_assert_eq!(packet, original);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            exercise(bytes);
        }

        #[test]
        fn plausible_headers_never_panic(
            mut bytes in proptest::collection::vec(any::<u8>(), 20..120),
            proto in prop_oneof![Just(1u8), Just(6), Just(17), any::<u8>()],
            icmp_type in prop_oneof![Just(0u8), Just(3), Just(8), Just(11), any::<u8>()],
            inner_proto in prop_oneof![Just(1u8), Just(6), Just(17), any::<u8>()],
            inner_type in prop_oneof![Just(0u8), Just(8), any::<u8>()],
            frag in prop_oneof![Just(0u16), Just(0x2000), Just(0x4000), any::<u16>()],
            cut in any::<u8>(),
        ) {
            let len = bytes.len();
            bytes[0] = 0x45;
            let total = len.saturating_sub(usize::from(cut % 4)) as u16;
            bytes[2..4].copy_from_slice(&total.to_be_bytes());
            bytes[6..8].copy_from_slice(&frag.to_be_bytes());
            bytes[9] = proto;
            for (at, value) in [(20, icmp_type), (28, 0x45), (37, inner_proto), (48, inner_type)] {
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            if let Some(b) = bytes.get_mut(34..36) {
                b.copy_from_slice(&[0, 0]);
            }
            // A valid ICMP checksum, so that error rewriting gets past its
            // check and edits whatever the quote holds.
            let total = usize::from(total);
            if proto == PROTO_ICMP && total >= 24 {
                bytes[22..24].copy_from_slice(&[0, 0]);
                let sum = !ones_sum(&bytes[20..total]);
                bytes[22..24].copy_from_slice(&sum.to_be_bytes());
            }
            exercise(bytes);
        }
    }

    /// Runs every entry point over `bytes`; a refused rewrite must leave
    /// the bytes as they were.
    fn exercise(bytes: Vec<u8>) {
        let _ = classify(&bytes);
        let a = sock([10, 0, 0, 1], 1);
        let b = sock([10, 0, 0, 2], 2);
        let mut copy = bytes.clone();
        if rewrite(&mut copy, a, b).is_err() {
            assert_eq!(copy, bytes);
        }
        let mut copy = bytes.clone();
        if rewrite_icmp_error(&mut copy, *a.ip(), a, b).is_err() {
            assert_eq!(copy, bytes);
        }
    }

    #[test]
    fn udp_checksum_becoming_zero_is_sent_as_ffff() {
        let src = sock([192, 168, 1, 10], 5000);
        let dst = sock([198, 51, 100, 7], 53);
        let original = udp_packet(src, dst, false, b"query");
        // Find the one source port for which the full checksum sums to zero.
        let mut found = None;
        for port in 0..=u16::MAX {
            let probe = udp_packet(sock([203, 0, 113, 1], port), dst, false, b"query");
            if probe[26..28] == [0xff, 0xff] {
                found = Some(port);
                break;
            }
        }
        let port = found.expect("some port zeroes the sum");
        let mut packet = original.clone();
        rewrite(&mut packet, sock([203, 0, 113, 1], port), dst).unwrap();
        assert_eq!(&packet[26..28], &[0xff, 0xff]);
        assert_checksums(&packet);
        rewrite(&mut packet, src, dst).unwrap();
        assert_eq!(packet, original);
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let mut packet = udp_packet(
            sock([10, 0, 0, 5], 1111),
            sock([8, 8, 8, 8], 53),
            true,
            b"x",
        );
        rewrite(
            &mut packet,
            sock([203, 0, 113, 9], 40000),
            sock([8, 8, 8, 8], 53),
        )
        .unwrap();
        assert_eq!(&packet[12..16], &[203, 0, 113, 9]);
        assert_eq!(&packet[20..22], &40000u16.to_be_bytes());
        assert_eq!(&packet[26..28], &[0, 0]);
        assert_checksums(&packet);
    }

    #[test]
    fn echo_identifier_follows_the_querying_host() {
        let inside = Ipv4Addr::new(10, 0, 0, 5);
        let public = Ipv4Addr::new(203, 0, 113, 1);
        let remote = Ipv4Addr::new(198, 51, 100, 7);
        // Request out: the identifier is taken from the new source port.
        let mut request = echo_packet(true, inside, remote, 0x1234, b"ping");
        rewrite(
            &mut request,
            SocketAddrV4::new(public, 0x9999),
            SocketAddrV4::new(remote, 0x9999),
        )
        .unwrap();
        assert_eq!(&request[24..26], &[0x99, 0x99]);
        assert_checksums(&request);
        // Reply back: from the new destination port.
        let mut reply = echo_packet(false, remote, public, 0x9999, b"ping");
        rewrite(
            &mut reply,
            SocketAddrV4::new(remote, 0x1234),
            SocketAddrV4::new(inside, 0x1234),
        )
        .unwrap();
        assert_eq!(&reply[16..20], &inside.octets());
        assert_eq!(&reply[24..26], &[0x12, 0x34]);
        assert_checksums(&reply);
        assert_eq!(reply, echo_packet(false, remote, inside, 0x1234, b"ping"));
    }

    #[test]
    fn other_packets_are_refused_untouched() {
        let a = sock([10, 0, 0, 1], 1);
        let b = sock([10, 0, 0, 2], 2);
        // GRE.
        let mut gre = udp_packet(a, b, false, b"");
        gre[9] = 47;
        fix_ip_checksum(&mut gre);
        assert_eq!(classify(&gre), Classified::Other);
        let before = gre.clone();
        assert_eq!(rewrite(&mut gre, b, a), Err(RewriteError::Unsupported));
        assert_eq!(gre, before);
        // ICMP timestamp request.
        let mut stamp = echo_packet(true, *a.ip(), *b.ip(), 1, &[0; 12]);
        stamp[20] = 13;
        assert_eq!(classify(&stamp), Classified::Other);
        assert_eq!(rewrite(&mut stamp, b, a), Err(RewriteError::Unsupported));
        // A TCP header cut short by the total length.
        let mut short = tcp_packet(a, b, 0x02, b"");
        short.truncate(30);
        short[2..4].copy_from_slice(&30u16.to_be_bytes());
        fix_ip_checksum(&mut short);
        assert_eq!(classify(&short), Classified::Other);
        let before = short.clone();
        assert_eq!(rewrite(&mut short, b, a), Err(RewriteError::Truncated));
        assert_eq!(short, before);
        // A total length beyond the buffer.
        let mut long = udp_packet(a, b, false, b"abc");
        long.truncate(25);
        assert_eq!(classify(&long), Classified::Other);
        assert_eq!(rewrite(&mut long, b, a), Err(RewriteError::Truncated));
    }

    #[test]
    fn padding_after_the_total_length_is_ignored() {
        let src = sock([10, 0, 0, 5], 1111);
        let dst = sock([8, 8, 8, 8], 53);
        let mut packet = udp_packet(src, dst, false, b"x");
        let len = packet.len();
        packet.extend_from_slice(&[0xaa; 17]);
        rewrite(&mut packet, sock([203, 0, 113, 9], 40000), dst).unwrap();
        assert_eq!(&packet[len..], &[0xaa; 17]);
        assert_checksums(&packet[..len]);
    }

    #[test]
    fn fragments_are_classified_and_rewritten_consistently() {
        let src = sock([10, 0, 0, 5], 4444);
        let dst = sock([198, 51, 100, 7], 9999);
        let new_src = sock([203, 0, 113, 1], 50000);
        let payload: Vec<u8> = (0..100u8).collect();
        let whole = udp_packet(src, dst, false, &payload);
        let udp = &whole[20..];

        // First fragment: UDP header and 48 payload bytes, MF set.
        let mut first = whole[..20].to_vec();
        first.extend_from_slice(&udp[..56]);
        first[2..4].copy_from_slice(&76u16.to_be_bytes());
        first[4..6].copy_from_slice(&0xbeefu16.to_be_bytes());
        first[6..8].copy_from_slice(&MORE_FRAGMENTS.to_be_bytes());
        fix_ip_checksum(&mut first);
        // Later fragment: the rest, at offset 56 / 8 = 7.
        let mut later = whole[..20].to_vec();
        later.extend_from_slice(&udp[56..]);
        let later_len = later.len() as u16;
        later[2..4].copy_from_slice(&later_len.to_be_bytes());
        later[4..6].copy_from_slice(&0xbeefu16.to_be_bytes());
        later[6..8].copy_from_slice(&7u16.to_be_bytes());
        fix_ip_checksum(&mut later);

        assert_eq!(
            classify(&first),
            Classified::Flow {
                key: FlowKey {
                    proto: Proto::Udp,
                    src,
                    dst
                },
                tcp_flags: 0,
                first_fragment: true,
            }
        );
        assert_eq!(
            classify(&later),
            Classified::LaterFragment {
                proto: 17,
                ident: 0xbeef
            }
        );

        let before = later.clone();
        rewrite(&mut first, new_src, dst).unwrap();
        rewrite(&mut later, new_src, dst).unwrap();
        // The later fragment: only the source address and the IP checksum.
        for (i, (a, b)) in before.iter().zip(&later).enumerate() {
            if a != b {
                assert!(
                    (10..12).contains(&i) || (12..16).contains(&i),
                    "byte {i} changed"
                );
            }
        }
        assert_eq!(&later[12..16], &[203, 0, 113, 1]);
        assert_eq!(&later[20..], &before[20..]);
        let ip = Ipv4HeaderSlice::from_slice(&later).unwrap();
        assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());

        // Reassembled, the datagram's UDP checksum holds for the new source.
        let mut reassembled = first[..20].to_vec();
        reassembled.extend_from_slice(&first[20..]);
        reassembled.extend_from_slice(&later[20..]);
        let total = reassembled.len() as u16;
        reassembled[2..4].copy_from_slice(&total.to_be_bytes());
        reassembled[6..8].copy_from_slice(&[0, 0]);
        fix_ip_checksum(&mut reassembled);
        assert_checksums(&reassembled);
        assert_eq!(&reassembled[20..22], &50000u16.to_be_bytes());
        assert_eq!(&reassembled[28..], &payload[..]);
    }

    /// The scene every ICMP error test plays: an inside host's packet was
    /// translated on the way out and a router beyond sends back a time
    /// exceeded quoting `quote_len` bytes of the translated packet.
    fn error_round_trip(inside_packet: Vec<u8>, quote_len: usize) {
        let inside = match classify(&inside_packet) {
            Classified::Flow { key, .. } => key,
            other => panic!("{other:?}"),
        };
        let public = sock([203, 0, 113, 1], 61000);
        // An echo's translated key carries the new identifier both ways.
        let mut remote = inside.dst;
        if inside.proto == Proto::Icmp {
            remote.set_port(public.port());
        }
        let mut translated = inside_packet.clone();
        rewrite(&mut translated, public, remote).unwrap();
        let router = Ipv4Addr::new(192, 0, 2, 254);
        let quote = &translated[..quote_len.min(translated.len())];
        let mut error = time_exceeded(router, *public.ip(), quote);
        assert_checksums(&error);

        assert_eq!(
            classify(&error),
            Classified::IcmpError {
                inner: FlowKey {
                    proto: inside.proto,
                    src: public,
                    dst: remote
                }
            }
        );
        rewrite_icmp_error(&mut error, *inside.src.ip(), inside.src, inside.dst).unwrap();

        assert_eq!(&error[12..16], &router.octets(), "outer source kept");
        assert_eq!(
            &error[16..20],
            &inside.src.ip().octets(),
            "outer destination"
        );
        assert_checksums(&error);
        // The quote is now exactly what the inside host sent, bytes and
        // checksums (inner IP, and L4 where quoted) included.
        assert_eq!(&error[28..], &inside_packet[..quote.len()]);
        let inner = Ipv4HeaderSlice::from_slice(&error[28..]).unwrap();
        assert_eq!(
            inner.header_checksum(),
            inner.to_header().calc_header_checksum()
        );
        if quote.len() == translated.len() {
            assert_checksums(&error[28..]);
        }
        assert_eq!(classify(&error), Classified::IcmpError { inner: inside });
    }

    #[test]
    fn icmp_error_quoting_udp_is_translated_back() {
        let src = sock([10, 0, 0, 5], 3333);
        let dst = sock([198, 51, 100, 7], 33434);
        // A full 576-byte error: 548 quoted bytes, the whole datagram.
        error_round_trip(udp_packet(src, dst, false, &[0x5a; 520]), 548);
        // Only the eight bytes RFC 792 promises.
        error_round_trip(udp_packet(src, dst, false, &[0x5a; 520]), 28);
        // A quoted UDP packet without checksum keeps none.
        error_round_trip(udp_packet(src, dst, true, &[0x5a; 40]), 68);
    }

    #[test]
    fn icmp_error_quoting_tcp_is_translated_back() {
        let src = sock([10, 0, 0, 5], 40001);
        let dst = sock([198, 51, 100, 7], 443);
        let packet = tcp_packet(src, dst, 0x02, &[0x33; 508]);
        assert_eq!(packet.len(), 548);
        error_round_trip(packet.clone(), 548);
        // Eight bytes of TCP: ports but no checksum in the quote.
        error_round_trip(packet.clone(), 28);
        // Eighteen: the checksum is just in.
        error_round_trip(packet, 38);
    }

    #[test]
    fn icmp_error_quoting_echo_is_translated_back() {
        let inside = Ipv4Addr::new(10, 0, 0, 5);
        let remote = Ipv4Addr::new(198, 51, 100, 7);
        error_round_trip(echo_packet(true, inside, remote, 0x4242, &[1; 56]), 84);
    }

    #[test]
    fn corrupt_or_odd_icmp_errors_are_refused_untouched() {
        let src = sock([10, 0, 0, 5], 3333);
        let dst = sock([198, 51, 100, 7], 53);
        let to = Ipv4Addr::new(203, 0, 113, 1);
        let router = Ipv4Addr::new(192, 0, 2, 254);
        let quote = udp_packet(src, dst, false, b"abcd");

        let mut bad = time_exceeded(router, to, &quote);
        bad[22] ^= 1;
        let before = bad.clone();
        assert_eq!(
            rewrite_icmp_error(&mut bad, *src.ip(), src, dst),
            Err(RewriteError::Unsupported)
        );
        assert_eq!(bad, before);

        // A quote that stops inside the UDP header.
        let mut short = time_exceeded(router, to, &quote[..24]);
        assert_eq!(classify(&short), Classified::Other);
        assert_eq!(
            rewrite_icmp_error(&mut short, *src.ip(), src, dst),
            Err(RewriteError::Truncated)
        );

        // A quoted later fragment has no ports.
        let mut frag = quote.clone();
        frag[6..8].copy_from_slice(&3u16.to_be_bytes());
        let mut error = time_exceeded(router, to, &frag);
        assert_eq!(classify(&error), Classified::Other);
        assert_eq!(
            rewrite_icmp_error(&mut error, *src.ip(), src, dst),
            Err(RewriteError::Unsupported)
        );

        // An echo is not an error.
        let mut echo = echo_packet(true, *src.ip(), *dst.ip(), 1, b"");
        assert_eq!(
            rewrite_icmp_error(&mut echo, *src.ip(), src, dst),
            Err(RewriteError::Unsupported)
        );
    }

    #[test]
    fn checksum_delta_matches_rfc1624_example() {
        // RFC 1624 section 4: HC 0xdd2f, m 0x5555 -> m' 0x3285 gives 0x0000.
        let mut delta = Delta::default();
        delta.word(0x5555, 0x3285);
        assert_eq!(delta.apply(0xdd2f), 0x0000);
        // A sum that folds to zero is the zero of non-zero data, as a full
        // recomputation would see it: the checksum becomes 0, not 0xffff.
        let mut delta = Delta::default();
        delta.word(0xffff, 0x0000);
        assert_eq!(delta.apply(0xffff), 0x0000);
    }
}
