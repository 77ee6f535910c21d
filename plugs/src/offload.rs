//! Software fallback for virtio-net ("vnet_hdr") offloads.
//!
//! A tap opened with `IFF_VNET_HDR` prefixes every frame with a
//! `struct virtio_net_hdr` and may hand the switch frames whose work is not
//! finished: TCP/UDP "super-frames" of up to 64 KiB that still have to be cut
//! into MTU-sized segments (GSO/TSO/USO), and frames whose L4 checksum holds
//! only the pseudo-header sum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`). When such a
//! frame leaves through a port that cannot take offloaded frames (a VDE
//! datagram socket, a plain tap), the switch has to finish that work itself.
//! This module does it, and nothing else: it is pure (no I/O), never panics on
//! hostile input, and does not allocate — segmentation writes every segment
//! into one caller-provided scratch buffer.
//!
//! Header layout and semantics follow Linux `include/uapi/linux/virtio_net.h`
//! and `include/linux/virtio_net.h`; the per-segment TCP rules (sequence
//! numbers, FIN/PSH only on the last segment, CWR only on the first, IPv4
//! identification incremented per segment) follow `net/ipv4/tcp_offload.c`
//! and `net/ipv4/af_inet.c`.

use etherparse::checksum::Sum16BitWords;
use std::fmt;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// At most this many VLAN tags are skipped before the IP header (802.1Q, or
/// 802.1ad + 802.1Q).
const MAX_VLAN_TAGS: usize = 2;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The offload metadata of one frame: a parsed `struct virtio_net_hdr`.
///
/// Kept as a plain `Copy` value so the tap plug can parse it once per frame,
/// store it beside the frame in a batch, and hand it to [`segment`] or
/// [`complete_checksum`] when the frame's output port cannot take offloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// `VIRTIO_NET_HDR_F_*` bits: [`Offload::F_NEEDS_CSUM`],
    /// [`Offload::F_DATA_VALID`].
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` type, possibly with [`Offload::GSO_ECN`] set.
    pub gso_type: u8,
    /// Length of the headers as the sender saw them. Only a hint: Linux sets
    /// it to the linear part of its buffer, which may include payload, so the
    /// segmenter recomputes the header length from the headers themselves.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP), headers excluded.
    pub gso_size: u16,
    /// Where checksumming starts, counted from the start of the Ethernet
    /// frame.
    pub csum_start: u16,
    /// Where the checksum field is, counted from `csum_start`.
    pub csum_offset: u16,
}

impl Offload {
    /// Size of `struct virtio_net_hdr` on the wire, so callers can split it
    /// off the front of what a vnet_hdr tap reads.
    pub const HEADER_LEN: usize = 10;
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum field holds only the
    /// pseudo-header sum; the rest must be summed in before the frame is
    /// valid on a wire.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified; no
    /// work to do, named so callers need not hard-code the bit.
    pub const F_DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_GSO_NONE`: not a super-frame.
    pub const GSO_NONE: u8 = 0;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`: an IPv4 TCP super-frame (TSO).
    pub const GSO_TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_UDP`: legacy UFO (IP fragmentation), which this
    /// module refuses with [`OffloadError::Unsupported`].
    pub const GSO_UDP: u8 = 3;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`: an IPv6 TCP super-frame (TSO).
    pub const GSO_TCPV6: u8 = 4;
    /// `VIRTIO_NET_HDR_GSO_UDP_L4`: a UDP super-frame cut into whole UDP
    /// datagrams (USO), IPv4 or IPv6.
    pub const GSO_UDP_L4: u8 = 5;
    /// `VIRTIO_NET_HDR_GSO_ECN`: the TCP flow uses ECN; combined with a GSO
    /// type, never a type of its own.
    pub const GSO_ECN: u8 = 0x80;

    /// Parses the first [`Offload::HEADER_LEN`] bytes of `hdr` (little-endian,
    /// which is what a tap uses on little-endian hosts, and on any host after
    /// `TUNSETVNETLE`). Returns `None` if `hdr` is too short, so a short read
    /// is dropped rather than misread.
    pub fn parse(hdr: &[u8]) -> Option<Offload> {
        let h = hdr.get(..Self::HEADER_LEN)?;
        let le = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
        Some(Offload {
            flags: h[0],
            gso_type: h[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    /// Serialises the header (little-endian), so frames can be handed to a
    /// vnet_hdr tap with their offload metadata intact.
    pub fn write(&self, out: &mut [u8; 10]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
    }

    /// Whether the L4 checksum still has to be completed before the frame
    /// may go out on a port without checksum offload.
    pub fn needs_csum(&self) -> bool {
        self.flags & Self::F_NEEDS_CSUM != 0
    }

    /// Whether the frame is a super-frame that must be cut into segments
    /// before it may go out on a port without segmentation offload. The ECN
    /// bit alone does not make a frame GSO.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !Self::GSO_ECN != 0
    }

    /// Whether the frame is already a finished wire frame (no GSO, no
    /// pending checksum), so the fast path can forward it untouched.
    pub fn is_plain(&self) -> bool {
        !self.needs_csum() && !self.is_gso()
    }
}

/// Why a frame's offload work could not be finished. The caller counts the
/// frame as dropped; nothing here is fatal to the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// The frame ends before the headers it declares (or before the length
    /// its IP header claims), e.g. because it was truncated to a batch slot.
    Truncated,
    /// `csum_start`/`csum_offset` point outside the frame, or at an odd
    /// offset where a 16-bit checksum cannot be placed.
    ChecksumOutOfBounds,
    /// A GSO type with `gso_size` 0, which would make no progress.
    ZeroGsoSize,
    /// An offload this module does not do: legacy UFO (IP fragmentation), an
    /// unknown GSO type, IPv6 extension headers, IP fragments, more than two
    /// VLAN tags, or a segment whose length does not fit the IP length field.
    Unsupported,
    /// The ethertype (after any VLAN tags) is neither IPv4 nor IPv6.
    NotIp,
    /// The IP version, or the L4 protocol, is not the one the GSO type says.
    WrongProtocol,
    /// A header field is impossible (IPv4 IHL < 5, TCP data offset < 5, IP
    /// version nibble not matching the ethertype, IP length shorter than its
    /// header).
    Malformed,
    /// The scratch buffer cannot hold one segment.
    ScratchTooSmall,
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OffloadError::Truncated => "frame truncated",
            OffloadError::ChecksumOutOfBounds => "checksum position outside the frame",
            OffloadError::ZeroGsoSize => "GSO frame with gso_size 0",
            OffloadError::Unsupported => "unsupported offload",
            OffloadError::NotIp => "not an IP frame",
            OffloadError::WrongProtocol => "protocol does not match the GSO type",
            OffloadError::Malformed => "malformed header",
            OffloadError::ScratchTooSmall => "scratch buffer too small for a segment",
        })
    }
}

impl std::error::Error for OffloadError {}

/// Fills in the L4 checksum of a `NEEDS_CSUM` frame in place, so it can leave
/// through a port without checksum offload.
///
/// The field at `csum_start + csum_offset` must hold the (folded, not
/// complemented) pseudo-header sum, as Linux leaves it; the one's complement
/// of the sum over `csum_start..` is written there, with a result of 0 sent as
/// 0xffff like the kernel's `skb_checksum_help` (required for UDP, where 0
/// means "no checksum"; equivalent for TCP). The sum stops at the end of the
/// IP packet when the frame parses as IP, so Ethernet padding is not summed.
///
/// Does nothing if the frame does not have `NEEDS_CSUM`. Errors (bounds) are
/// returned, never panics. The caller clears `NEEDS_CSUM` in its own copy of
/// the metadata if it forwards the header on.
pub fn complete_checksum(frame: &mut [u8], off: &Offload) -> Result<(), OffloadError> {
    if !off.needs_csum() {
        return Ok(());
    }
    let start = usize::from(off.csum_start);
    let field = start + usize::from(off.csum_offset);
    if !off.csum_offset.is_multiple_of(2) || field + 2 > frame.len() {
        return Err(OffloadError::ChecksumOutOfBounds);
    }
    let end = match parse_ip(frame) {
        Ok(ip) if ip.end >= field + 2 => ip.end,
        _ => frame.len(),
    };
    let sum = Sum16BitWords::new()
        .add_slice(&frame[start..end])
        .to_ones_complement_with_no_zero();
    // The sum was taken over the bytes as they lie in memory, so its native
    // byte representation is already the wire order.
    frame[field..field + 2].copy_from_slice(&sum.to_ne_bytes());
    Ok(())
}

/// Cuts a GSO super-frame into wire frames and hands each to `emit`, so a
/// frame from an offloading tap can leave through a port that takes only
/// MTU-sized, fully checksummed frames.
///
/// Each segment is the frame's headers (Ethernet, VLAN tags, IP, TCP/UDP),
/// re-written for the segment, followed by up to `gso_size` payload bytes: at
/// most `headers + gso_size` bytes, where `headers` is recomputed from the
/// parsed headers (`hdr_len` is only a hint and is not trusted). Per segment:
/// IPv4 total length, identification (`id + i`) and header checksum, or IPv6
/// payload length; for TCP the sequence number advances by the payload
/// already sent, FIN and PSH stay only on the last segment and CWR only on
/// the first; for UDP (USO) the UDP length. The L4 checksum is always
/// recomputed in full over pseudo-header and segment, so it does not matter
/// whether the super-frame had `NEEDS_CSUM`.
///
/// Supported: `GSO_TCPV4`, `GSO_TCPV6` and `GSO_UDP_L4`, over up to two VLAN
/// tags. Legacy UFO, IPv6 extension headers and IP fragments are
/// [`OffloadError::Unsupported`]. A frame whose payload fits in one segment is
/// emitted as one frame. A frame that is not GSO is copied to `scratch`, its
/// checksum completed if it has `NEEDS_CSUM`, and emitted once, so callers can
/// route every non-plain frame through here.
///
/// `scratch` is the caller's reusable buffer: 65535 + 22 bytes (the largest
/// IP packet behind an Ethernet header with two VLAN tags) is always enough,
/// 65535 + 18 for at most one tag. Every emitted slice borrows it and is only
/// valid during `emit`.
/// Nothing is allocated. Returns the number of segments emitted; on error
/// nothing has been emitted.
pub fn segment(
    frame: &[u8],
    off: &Offload,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    // Not even an Ethernet header: there is nothing to put on a wire.
    if frame.len() < 14 {
        return Err(OffloadError::Truncated);
    }
    if !off.is_gso() {
        let out = scratch
            .get_mut(..frame.len())
            .ok_or(OffloadError::ScratchTooSmall)?;
        out.copy_from_slice(frame);
        complete_checksum(out, off)?;
        emit(out);
        return Ok(1);
    }

    let (want_v6, proto) = match off.gso_type & !Offload::GSO_ECN {
        Offload::GSO_TCPV4 => (Some(false), IPPROTO_TCP),
        Offload::GSO_TCPV6 => (Some(true), IPPROTO_TCP),
        Offload::GSO_UDP_L4 => (None, IPPROTO_UDP),
        _ => return Err(OffloadError::Unsupported),
    };
    if off.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }

    let ip = parse_ip(frame)?;
    if want_v6.is_some_and(|v6| v6 != ip.v6) || ip.proto != proto {
        return Err(OffloadError::WrongProtocol);
    }
    let l4 = ip.l4;
    let l4_hlen = match proto {
        IPPROTO_TCP => tcp_header_len(frame, l4, ip.end)?,
        _ => {
            if l4 + UDP_HLEN > ip.end {
                return Err(OffloadError::Truncated);
            }
            UDP_HLEN
        }
    };
    let hdrs = l4 + l4_hlen;
    let payload = &frame[hdrs..ip.end];
    let mss = usize::from(off.gso_size);
    let max_seg = hdrs + mss.min(payload.len());
    if max_seg - ip.l3 > usize::from(u16::MAX) {
        // The IPv4 total length, IPv6 payload length or UDP length of a
        // segment would not fit in 16 bits.
        return Err(OffloadError::Unsupported);
    }
    if scratch.len() < max_seg {
        return Err(OffloadError::ScratchTooSmall);
    }

    let l3 = ip.l3;
    scratch[..hdrs].copy_from_slice(&frame[..hdrs]);
    let ipv4_id = be16(frame, l3 + 4);
    // Both fields lie inside the TCP header, whose length was checked above.
    let (tcp_seq, tcp_flags) = if proto == IPPROTO_TCP {
        (be32(frame, l4 + 4), frame[l4 + 13])
    } else {
        (0, 0)
    };
    let csum_at = l4 + if proto == IPPROTO_TCP { 16 } else { 6 };

    let count = payload.len().div_ceil(mss).max(1);
    for (i, start) in (0..count).map(|i| (i, i * mss)) {
        let chunk = &payload[start..payload.len().min(start + mss)];
        let seg_len = hdrs + chunk.len();
        scratch[hdrs..seg_len].copy_from_slice(chunk);
        let seg = &mut scratch[..seg_len];

        // Lengths below were bounded by the u16::MAX check above.
        if ip.v6 {
            put16(seg, l3 + 4, (seg_len - l3 - IPV6_HLEN) as u16);
        } else {
            put16(seg, l3 + 2, (seg_len - l3) as u16);
            put16(seg, l3 + 4, ipv4_id.wrapping_add(i as u16));
            put16(seg, l3 + 10, 0);
            let sum = Sum16BitWords::new()
                .add_slice(&seg[l3..l4])
                .ones_complement();
            seg[l3 + 10..l3 + 12].copy_from_slice(&sum.to_ne_bytes());
        }

        let l4_len = seg_len - l4;
        if proto == IPPROTO_TCP {
            put32(seg, l4 + 4, tcp_seq.wrapping_add(start as u32));
            let mut flags = tcp_flags;
            if i + 1 != count {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i != 0 {
                flags &= !TCP_CWR;
            }
            seg[l4 + 13] = flags;
        } else {
            put16(seg, l4 + 4, l4_len as u16);
        }
        put16(seg, csum_at, 0);
        let sum = pseudo_header_sum(seg, &ip, l4_len).add_slice(&seg[l4..]);
        let sum = if proto == IPPROTO_TCP {
            sum.ones_complement()
        } else {
            sum.to_ones_complement_with_no_zero()
        };
        seg[csum_at..csum_at + 2].copy_from_slice(&sum.to_ne_bytes());

        emit(seg);
    }
    Ok(count)
}

/// Where the IP packet lies in a frame.
struct IpLayout {
    /// Offset of the IP header.
    l3: usize,
    v6: bool,
    /// Offset of the L4 header.
    l4: usize,
    /// IPv4 protocol / IPv6 next header.
    proto: u8,
    /// End of the IP packet (before any Ethernet padding).
    end: usize,
}

/// Finds the IP header behind the Ethernet header and up to two VLAN tags,
/// and where the IP packet ends according to its own length field (a length
/// of 0, used for "too big to say", means "to the end of the frame").
fn parse_ip(frame: &[u8]) -> Result<IpLayout, OffloadError> {
    if frame.len() < ETH_HLEN {
        return Err(OffloadError::Truncated);
    }
    let mut ethertype = be16(frame, 12);
    let mut l3 = ETH_HLEN;
    let mut tags = 0;
    while ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ {
        if tags == MAX_VLAN_TAGS {
            return Err(OffloadError::Unsupported);
        }
        if frame.len() < l3 + 4 {
            return Err(OffloadError::Truncated);
        }
        ethertype = be16(frame, l3 + 2);
        l3 += 4;
        tags += 1;
    }
    match ethertype {
        ETHERTYPE_IPV4 => {
            let h = frame
                .get(l3..l3 + IPV4_MIN_HLEN)
                .ok_or(OffloadError::Truncated)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            if h[0] >> 4 != 4 || ihl < IPV4_MIN_HLEN {
                return Err(OffloadError::Malformed);
            }
            if be16(h, 6) & 0x3fff != 0 {
                // More-fragments set or a fragment offset: not a whole packet.
                return Err(OffloadError::Unsupported);
            }
            let total = usize::from(be16(h, 2));
            if total != 0 && total < ihl {
                return Err(OffloadError::Malformed);
            }
            let end = if total == 0 { frame.len() } else { l3 + total };
            if end > frame.len() || l3 + ihl > end {
                return Err(OffloadError::Truncated);
            }
            Ok(IpLayout {
                l3,
                v6: false,
                l4: l3 + ihl,
                proto: h[9],
                end,
            })
        }
        ETHERTYPE_IPV6 => {
            let h = frame
                .get(l3..l3 + IPV6_HLEN)
                .ok_or(OffloadError::Truncated)?;
            if h[0] >> 4 != 6 {
                return Err(OffloadError::Malformed);
            }
            let payload = usize::from(be16(h, 4));
            let end = if payload == 0 {
                frame.len()
            } else {
                l3 + IPV6_HLEN + payload
            };
            if end > frame.len() {
                return Err(OffloadError::Truncated);
            }
            Ok(IpLayout {
                l3,
                v6: true,
                l4: l3 + IPV6_HLEN,
                proto: h[6],
                end,
            })
        }
        _ => Err(OffloadError::NotIp),
    }
}

/// The TCP header length from its data offset, checked against the packet.
fn tcp_header_len(frame: &[u8], l4: usize, end: usize) -> Result<usize, OffloadError> {
    if l4 + TCP_MIN_HLEN > end {
        return Err(OffloadError::Truncated);
    }
    let len = usize::from(frame[l4 + 12] >> 4) * 4;
    if len < TCP_MIN_HLEN {
        return Err(OffloadError::Malformed);
    }
    if l4 + len > end {
        return Err(OffloadError::Truncated);
    }
    Ok(len)
}

/// The one's-complement sum of the TCP/UDP pseudo-header of a segment whose
/// L4 header and payload are `l4_len` bytes long.
fn pseudo_header_sum(seg: &[u8], ip: &IpLayout, l4_len: usize) -> Sum16BitWords {
    if ip.v6 {
        // Source and destination addresses are contiguous at offset 8.
        Sum16BitWords::new()
            .add_slice(&seg[ip.l3 + 8..ip.l3 + 40])
            .add_slice(&(l4_len as u32).to_be_bytes())
            .add_2bytes([0, ip.proto])
    } else {
        // Source and destination addresses are contiguous at offset 12.
        Sum16BitWords::new()
            .add_slice(&seg[ip.l3 + 12..ip.l3 + 20])
            .add_2bytes([0, ip.proto])
            .add_2bytes((l4_len as u16).to_be_bytes())
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{
        IpHeaders, IpNumber, Ipv4Header, NetSlice, PacketBuilder, PacketBuilderStep, SlicedPacket,
        TcpOptionElement, TransportSlice, VlanId,
    };
    use proptest::prelude::*;

    const SCRATCH: usize = 65535 + 18;
    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xa];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb];
    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 2];
    const IPV4_ID: u16 = 0xfff8; // wraps within a 14-segment frame
    const TCP_SEQ: u32 = 0xffff_e000; // wraps within a 20 000-byte frame

    /// A payload pattern that does not repeat at any segment-sized period.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Reference folded one's-complement sum of big-endian 16-bit words,
    /// written independently of the code under test. Every part but the last
    /// must have even length.
    fn ref_sum(parts: &[&[u8]]) -> u16 {
        let mut s: u32 = 0;
        for p in parts {
            for c in p.chunks(2) {
                s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    fn ip_step(v6: bool, vlan: bool) -> PacketBuilderStep<IpHeaders> {
        let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
        match (vlan, v6) {
            (false, false) => eth.ipv4(SRC4, DST4, 64),
            (false, true) => eth.ipv6(SRC6, DST6, 64),
            (true, false) => eth
                .single_vlan(VlanId::try_new(42).unwrap())
                .ipv4(SRC4, DST4, 64),
            (true, true) => eth
                .single_vlan(VlanId::try_new(42).unwrap())
                .ipv6(SRC6, DST6, 64),
        }
    }

    /// A built frame and where its parts are.
    struct Built {
        frame: Vec<u8>,
        off: Offload,
        l3: usize,
        l4: usize,
        v6: bool,
    }

    /// Overwrites the L4 checksum with the pseudo-header sum, as a kernel
    /// leaves it for NEEDS_CSUM, and returns the metadata for it.
    fn set_partial_csum(b: &mut Built, proto: u8, gso_type: u8, gso_size: u16) {
        let l4_len = b.frame.len() - b.l4;
        let csum_offset: usize = if proto == IPPROTO_TCP { 16 } else { 6 };
        let (l3, f) = (b.l3, &b.frame);
        let pseudo = if b.v6 {
            ref_sum(&[
                &f[l3 + 8..l3 + 40],
                &(l4_len as u32).to_be_bytes(),
                &[0, 0, 0, proto],
            ])
        } else {
            ref_sum(&[
                &f[l3 + 12..l3 + 20],
                &[0, proto],
                &(l4_len as u16).to_be_bytes(),
            ])
        };
        let at = b.l4 + csum_offset;
        b.frame[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        let hdrs = b.l4 + if proto == IPPROTO_TCP { 32 } else { 8 };
        b.off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            gso_type,
            hdr_len: hdrs as u16,
            gso_size,
            csum_start: b.l4 as u16,
            csum_offset: csum_offset as u16,
        };
    }

    /// Wraps a frame built by etherparse, noting where its L3 and L4 headers
    /// start, and gives an IPv4 header the test's identification.
    fn built(mut frame: Vec<u8>, v6: bool, vlan: bool) -> Built {
        let l3 = if vlan { 18 } else { 14 };
        let l4 = l3 + if v6 { 40 } else { 20 };
        if !v6 {
            frame[l3 + 4..l3 + 6].copy_from_slice(&IPV4_ID.to_be_bytes());
        }
        Built {
            frame,
            off: Offload::default(),
            l3,
            l4,
            v6,
        }
    }

    /// A TCP super-frame with FIN|PSH|CWR|ECE|ACK and timestamp options (a
    /// 32-byte TCP header, as Linux sends), NEEDS_CSUM, ready to segment.
    fn tcp_super(v6: bool, vlan: bool, payload: &[u8], gso_size: u16) -> Built {
        let builder = ip_step(v6, vlan)
            .tcp(40000, 443, TCP_SEQ, 501)
            .ack(0x1234_5678)
            .fin()
            .psh()
            .cwr()
            .ece()
            .options(&[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(11, 22),
            ])
            .unwrap();
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut frame, payload).unwrap();
        let mut b = built(frame, v6, vlan);
        let gso = if v6 {
            Offload::GSO_TCPV6
        } else {
            Offload::GSO_TCPV4
        };
        set_partial_csum(&mut b, IPPROTO_TCP, gso, gso_size);
        b
    }

    /// A UDP super-frame (USO), NEEDS_CSUM, ready to segment.
    fn udp_super(v6: bool, vlan: bool, payload: &[u8], gso_size: u16) -> Built {
        let builder = ip_step(v6, vlan).udp(5000, 6000);
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut frame, payload).unwrap();
        let mut b = built(frame, v6, vlan);
        set_partial_csum(&mut b, IPPROTO_UDP, Offload::GSO_UDP_L4, gso_size);
        b
    }

    fn run(frame: &[u8], off: &Offload) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; SCRATCH];
        let mut segs = Vec::new();
        let n = segment(frame, off, &mut scratch, |s| segs.push(s.to_vec()))?;
        assert_eq!(n, segs.len());
        Ok(segs)
    }

    /// Checks the IP layer of segment `i` and returns the L4 checksum that
    /// etherparse computes for it, and the one stored.
    fn check_ip(b: &Built, seg: &[u8], i: usize, p: &SlicedPacket<'_>) {
        match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => {
                assert!(!b.v6);
                let h = ip.header();
                assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                assert_eq!(h.identification(), IPV4_ID.wrapping_add(i as u16));
                assert_eq!(usize::from(h.total_len()), seg.len() - b.l3);
            }
            NetSlice::Ipv6(ip) => {
                assert!(b.v6);
                let h = ip.header();
                assert_eq!(usize::from(h.payload_length()), seg.len() - b.l3 - 40);
            }
            NetSlice::Arp(_) => panic!("not IP"),
        }
    }

    fn addrs(p: &SlicedPacket<'_>) -> (Vec<u8>, Vec<u8>) {
        match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => (
                ip.header().source().into(),
                ip.header().destination().into(),
            ),
            NetSlice::Ipv6(ip) => (
                ip.header().source().into(),
                ip.header().destination().into(),
            ),
            NetSlice::Arp(_) => panic!("not IP"),
        }
    }

    /// Segments a TCP super-frame and checks every rule on every segment.
    fn check_tcp(b: &Built, payload: &[u8]) -> Vec<Vec<u8>> {
        let segs = run(&b.frame, &b.off).unwrap();
        let mss = usize::from(b.off.gso_size);
        assert_eq!(segs.len(), payload.len().div_ceil(mss).max(1));
        let orig = SlicedPacket::from_ethernet(&b.frame).unwrap();
        let Some(TransportSlice::Tcp(otcp)) = &orig.transport else {
            panic!("not TCP")
        };
        let mut joined = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == segs.len());
            assert!(seg.len() <= usize::from(b.off.hdr_len) + mss);
            let p = SlicedPacket::from_ethernet(seg).unwrap();
            assert_eq!(p.vlan_ids(), orig.vlan_ids());
            check_ip(b, seg, i, &p);
            let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                panic!("not TCP")
            };
            let (src, dst) = addrs(&p);
            let want = if b.v6 {
                tcp.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap())
            } else {
                tcp.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
            };
            assert_eq!(want.unwrap(), tcp.checksum(), "segment {i}");
            assert_eq!(
                tcp.sequence_number(),
                TCP_SEQ.wrapping_add(joined.len() as u32)
            );
            assert_eq!(tcp.fin(), last && otcp.fin());
            assert_eq!(tcp.psh(), last && otcp.psh());
            assert_eq!(tcp.cwr(), first && otcp.cwr());
            assert_eq!(tcp.ece(), otcp.ece());
            assert_eq!(tcp.ack(), otcp.ack());
            assert_eq!(tcp.acknowledgment_number(), otcp.acknowledgment_number());
            assert_eq!(tcp.options(), otcp.options());
            assert_eq!(
                (tcp.source_port(), tcp.destination_port(), tcp.window_size()),
                (
                    otcp.source_port(),
                    otcp.destination_port(),
                    otcp.window_size()
                )
            );
            assert!(last || tcp.payload().len() == mss);
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, payload);
        segs
    }

    /// Segments a UDP super-frame and checks every rule on every segment.
    fn check_udp(b: &Built, payload: &[u8]) -> Vec<Vec<u8>> {
        let segs = run(&b.frame, &b.off).unwrap();
        let mss = usize::from(b.off.gso_size);
        assert_eq!(segs.len(), payload.len().div_ceil(mss).max(1));
        let mut joined = Vec::new();
        for (i, seg) in segs.iter().enumerate() {
            assert!(seg.len() <= usize::from(b.off.hdr_len) + mss);
            let p = SlicedPacket::from_ethernet(seg).unwrap();
            check_ip(b, seg, i, &p);
            let Some(TransportSlice::Udp(udp)) = &p.transport else {
                panic!("not UDP")
            };
            assert_eq!(usize::from(udp.length()), seg.len() - b.l4);
            assert_eq!((udp.source_port(), udp.destination_port()), (5000, 6000));
            let (src, dst) = addrs(&p);
            let h = udp.to_header();
            let want = if b.v6 {
                h.calc_checksum_ipv6_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    udp.payload(),
                )
            } else {
                h.calc_checksum_ipv4_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    udp.payload(),
                )
            };
            assert_eq!(want.unwrap(), udp.checksum(), "segment {i}");
            assert_ne!(udp.checksum(), 0);
            joined.extend_from_slice(udp.payload());
        }
        assert_eq!(joined, payload);
        segs
    }

    // ---- Offload header ----

    #[test]
    fn header_parses_little_endian_and_round_trips() {
        let bytes = [1u8, 0x81, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];
        let off = Offload::parse(&bytes).unwrap();
        assert_eq!(
            off,
            Offload {
                flags: 1,
                gso_type: 0x81,
                hdr_len: 0x42,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        let mut out = [0u8; 10];
        off.write(&mut out);
        assert_eq!(out, bytes);
        assert!(Offload::parse(&bytes[..9]).is_none());
        // Extra bytes (num_buffers of the mrg_rxbuf header) are ignored.
        assert_eq!(
            Offload::parse(&[bytes.as_slice(), &[7, 7]].concat()),
            Some(off)
        );
    }

    #[test]
    fn header_predicates() {
        let mut off = Offload::default();
        assert!(off.is_plain() && !off.is_gso() && !off.needs_csum());
        off.gso_type = Offload::GSO_ECN;
        assert!(off.is_plain() && !off.is_gso());
        off.flags = Offload::F_DATA_VALID;
        assert!(off.is_plain());
        off.flags |= Offload::F_NEEDS_CSUM;
        assert!(off.needs_csum() && !off.is_plain());
        let gso = Offload {
            gso_type: Offload::GSO_TCPV6 | Offload::GSO_ECN,
            ..Offload::default()
        };
        assert!(gso.is_gso() && !gso.is_plain());
    }

    // ---- segmentation ----

    #[test]
    fn tcpv4_super_frame_is_segmented() {
        let payload = pattern(20_000);
        let b = tcp_super(false, false, &payload, 1448);
        let segs = check_tcp(&b, &payload);
        assert_eq!(segs.len(), 14);
        assert_eq!(segs[0].len(), 14 + 20 + 32 + 1448);
    }

    #[test]
    fn tcpv6_super_frame_is_segmented() {
        let payload = pattern(20_000);
        let b = tcp_super(true, false, &payload, 1448);
        assert_eq!(check_tcp(&b, &payload).len(), 14);
    }

    #[test]
    fn vlan_tagged_super_frames_are_segmented() {
        let payload = pattern(20_000);
        check_tcp(&tcp_super(false, true, &payload, 1448), &payload);
        check_tcp(&tcp_super(true, true, &payload, 1448), &payload);
        check_udp(&udp_super(false, true, &payload, 1400), &payload);
    }

    #[test]
    fn uso_super_frames_are_segmented() {
        let payload = pattern(20_000);
        assert_eq!(
            check_udp(&udp_super(false, false, &payload, 1400), &payload).len(),
            15
        );
        assert_eq!(
            check_udp(&udp_super(true, false, &payload, 1400), &payload).len(),
            15
        );
        let odd = pattern(4001);
        check_udp(&udp_super(true, false, &odd, 999), &odd);
    }

    #[test]
    fn ecn_bit_with_tcp_gso_is_segmented() {
        let payload = pattern(5000);
        let mut b = tcp_super(false, false, &payload, 1448);
        b.off.gso_type |= Offload::GSO_ECN;
        check_tcp(&b, &payload);
    }

    #[test]
    fn small_exact_and_empty_payloads() {
        for len in [0, 1, 1000, 1448, 1449, 3 * 1448] {
            let payload = pattern(len);
            let segs = check_tcp(&tcp_super(false, false, &payload, 1448), &payload);
            assert_eq!(segs.len(), len.div_ceil(1448).max(1), "len {len}");
            check_udp(&udp_super(true, false, &payload, 1448), &payload);
        }
    }

    #[test]
    fn single_segment_keeps_all_flags() {
        let payload = pattern(100);
        let segs = check_tcp(&tcp_super(true, false, &payload, 1448), &payload);
        let p = SlicedPacket::from_ethernet(&segs[0]).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
            panic!("not TCP")
        };
        assert!(tcp.fin() && tcp.psh() && tcp.cwr() && tcp.ece());
    }

    #[test]
    fn checksum_field_content_and_hdr_len_do_not_matter() {
        let payload = pattern(7000);
        let good = tcp_super(false, false, &payload, 1448);
        let want = run(&good.frame, &good.off).unwrap();
        let mut b = tcp_super(false, false, &payload, 1448);
        b.frame[b.l4 + 16] ^= 0x5a; // garbage checksum, and no NEEDS_CSUM
        for (flags, hdr_len) in [(0, 0), (0, 9000), (1, 14), (Offload::F_DATA_VALID, 66)] {
            let off = Offload {
                flags,
                hdr_len,
                ..b.off
            };
            assert_eq!(
                run(&b.frame, &off).unwrap(),
                want,
                "flags {flags} hdr_len {hdr_len}"
            );
        }
    }

    #[test]
    fn ethernet_padding_after_the_ip_packet_is_dropped() {
        let payload = pattern(3000);
        let b = tcp_super(false, false, &payload, 1448);
        let want = run(&b.frame, &b.off).unwrap();
        let mut padded = b.frame.clone();
        padded.extend_from_slice(&[0xee; 7]);
        assert_eq!(run(&padded, &b.off).unwrap(), want);
    }

    #[test]
    fn ipv4_options_are_copied_to_every_segment() {
        let mut ip = Ipv4Header::new(0, 64, IpNumber::TCP, SRC4, DST4).unwrap();
        ip.options = [1u8, 1, 1, 0].into(); // NOP NOP NOP EOL
        let payload = pattern(5000);
        let builder = PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ip(IpHeaders::Ipv4(ip, Default::default()))
            .tcp(1, 2, TCP_SEQ, 100)
            .ack(9)
            .psh();
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        frame[18..20].copy_from_slice(&IPV4_ID.to_be_bytes());
        let mut b = Built {
            frame,
            off: Offload::default(),
            l3: 14,
            l4: 38,
            v6: false,
        };
        set_partial_csum(&mut b, IPPROTO_TCP, Offload::GSO_TCPV4, 1000);
        b.off.hdr_len = 38 + 20;
        for seg in check_tcp(&b, &payload) {
            assert_eq!(seg[14], 0x46);
            assert_eq!(&seg[34..38], &[1, 1, 1, 0]);
        }
    }

    #[test]
    fn non_gso_frames_pass_through_segment() {
        // NEEDS_CSUM only: one completed frame.
        let payload = pattern(300);
        let b = tcp_super(false, false, &payload, 1448);
        let mut off = b.off;
        off.gso_type = Offload::GSO_NONE;
        let segs = run(&b.frame, &off).unwrap();
        assert_eq!(segs.len(), 1);
        let mut done = b.frame.clone();
        complete_checksum(&mut done, &off).unwrap();
        assert_eq!(segs[0], done);
        assert_ne!(done, b.frame);
        // Plain: emitted untouched, even if not IP.
        let arp = [0xffu8; 42];
        assert_eq!(run(&arp, &Offload::default()).unwrap(), vec![arp.to_vec()]);
    }

    // ---- complete_checksum ----

    /// Builds a correct frame, replaces its checksum with the pseudo-header
    /// sum, completes it, and expects the original bytes back.
    fn round_trip_checksum(built: Vec<u8>, b: &mut Built, proto: u8, pad: usize) {
        b.frame = built.clone();
        set_partial_csum(b, proto, Offload::GSO_NONE, 0);
        let mut frame = b.frame.clone();
        assert_ne!(
            frame, built,
            "the partial checksum must differ from the full one"
        );
        frame.extend(std::iter::repeat_n(0xee, pad));
        complete_checksum(&mut frame, &b.off).unwrap();
        assert_eq!(&frame[..built.len()], &built[..]);
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let (src, dst) = addrs(&p);
        match p.transport.unwrap() {
            TransportSlice::Tcp(tcp) => {
                let want = if b.v6 {
                    tcp.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap())
                } else {
                    tcp.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
                };
                assert_eq!(want.unwrap(), tcp.checksum());
            }
            TransportSlice::Udp(udp) => {
                let h = udp.to_header();
                let want = if b.v6 {
                    h.calc_checksum_ipv6_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        udp.payload(),
                    )
                } else {
                    h.calc_checksum_ipv4_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        udp.payload(),
                    )
                };
                assert_eq!(want.unwrap(), udp.checksum());
            }
            _ => panic!("unexpected transport"),
        }
    }

    fn blank(l3: usize, v6: bool) -> Built {
        Built {
            frame: Vec::new(),
            off: Offload::default(),
            l3,
            l4: l3 + if v6 { 40 } else { 20 },
            v6,
        }
    }

    #[test]
    fn complete_checksum_tcp() {
        for (v6, len) in [(false, 1200), (true, 777), (false, 0)] {
            let builder = ip_step(v6, false).tcp(1, 2, 3, 4).ack(5).psh();
            let mut f = Vec::new();
            builder.write(&mut f, &pattern(len)).unwrap();
            // The builder writes the 20-byte TCP header; set_partial_csum
            // only reads the checksum position from the protocol.
            round_trip_checksum(f, &mut blank(14, v6), IPPROTO_TCP, 0);
        }
    }

    #[test]
    fn complete_checksum_udp_with_vlan_and_odd_length() {
        for (v6, vlan, len) in [(false, false, 501), (true, true, 1001), (false, true, 64)] {
            let mut f = Vec::new();
            ip_step(v6, vlan)
                .udp(53, 5353)
                .write(&mut f, &pattern(len))
                .unwrap();
            round_trip_checksum(
                f,
                &mut blank(if vlan { 18 } else { 14 }, v6),
                IPPROTO_UDP,
                0,
            );
        }
    }

    #[test]
    fn complete_checksum_ignores_ethernet_padding() {
        // 14 + 20 + 8 + 4 = 46 bytes, padded to the 60-byte minimum with
        // non-zero bytes that must not enter the sum.
        let mut f = Vec::new();
        ip_step(false, false)
            .udp(1, 2)
            .write(&mut f, &[1, 2, 3, 4])
            .unwrap();
        round_trip_checksum(f, &mut blank(14, false), IPPROTO_UDP, 14);
    }

    /// Picks the last two payload bytes of a single-datagram UDP frame so its
    /// checksum computes to 0, which must go out as 0xffff (0 means "no
    /// checksum" in UDP).
    fn udp_summing_to_zero(v6: bool) -> Built {
        let mut payload = pattern(1000);
        payload[998..].fill(0);
        let mut b = udp_super(v6, false, &payload, 1000);
        let (l3, l4, f) = (b.l3, b.l4, &b.frame);
        let len = (f.len() - l4) as u32;
        let mut udp_hdr = f[l4..l4 + 8].to_vec();
        udp_hdr[6..8].fill(0);
        let addrs = if v6 {
            &f[l3 + 8..l3 + 40]
        } else {
            &f[l3 + 12..l3 + 20]
        };
        let s = ref_sum(&[
            addrs,
            &len.to_be_bytes(),
            &[0, 0, 0, IPPROTO_UDP],
            &udp_hdr,
            &f[l4 + 8..],
        ]);
        let end = b.frame.len();
        b.frame[end - 2..].copy_from_slice(&(!s).to_be_bytes());
        // The pseudo-header sum in the checksum field is unaffected.
        b
    }

    #[test]
    fn udp_checksum_of_zero_is_sent_as_ffff() {
        for v6 in [false, true] {
            let b = udp_summing_to_zero(v6);
            let payload = b.frame[b.l4 + 8..].to_vec();
            let segs = check_udp(&b, &payload);
            assert_eq!(&segs[0][b.l4 + 6..b.l4 + 8], &[0xff, 0xff]);
            let mut f = b.frame.clone();
            complete_checksum(&mut f, &b.off).unwrap();
            // (The IPv4 header checksum differs: the builder's one was made
            // stale by patching the identification.)
            assert_eq!(f[b.l4..], segs[0][b.l4..]);
        }
    }

    #[test]
    fn complete_checksum_without_needs_csum_is_a_no_op() {
        let mut f = vec![0xabu8; 80];
        let off = Offload {
            csum_start: 34,
            csum_offset: 16,
            ..Offload::default()
        };
        complete_checksum(&mut f, &off).unwrap();
        assert_eq!(f, vec![0xab; 80]);
    }

    #[test]
    fn complete_checksum_bounds() {
        let mut f = vec![0u8; 60];
        let at = |csum_start, csum_offset| Offload {
            flags: Offload::F_NEEDS_CSUM,
            csum_start,
            csum_offset,
            ..Offload::default()
        };
        let e = Err(OffloadError::ChecksumOutOfBounds);
        assert_eq!(complete_checksum(&mut f, &at(61, 0)), e);
        assert_eq!(complete_checksum(&mut f, &at(60, 0)), e);
        assert_eq!(complete_checksum(&mut f, &at(50, 10)), e);
        assert_eq!(complete_checksum(&mut f, &at(34, 17)), e);
        assert_eq!(complete_checksum(&mut f, &at(u16::MAX, u16::MAX)), e);
        assert_eq!(f, vec![0; 60]);
        assert_eq!(complete_checksum(&mut f, &at(50, 8)), Ok(()));
        assert_eq!(complete_checksum(&mut [], &at(0, 0)), e);
    }

    // ---- bad input ----

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let payload = pattern(4000);
        for b in [
            tcp_super(false, true, &payload, 1448),
            tcp_super(true, false, &payload, 1448),
            udp_super(false, false, &payload, 1448),
        ] {
            for cut in 0..b.frame.len() {
                let r = run(&b.frame[..cut], &b.off);
                assert_eq!(r, Err(OffloadError::Truncated), "cut at {cut}");
            }
        }
    }

    #[test]
    fn malformed_and_unsupported_inputs_are_errors() {
        let payload = pattern(3000);
        let b = tcp_super(false, false, &payload, 1448);
        let with = |f: &dyn Fn(&mut Vec<u8>, &mut Offload)| {
            let (mut frame, mut off) = (b.frame.clone(), b.off);
            f(&mut frame, &mut off);
            run(&frame, &off)
        };
        use OffloadError::*;
        assert_eq!(with(&|_, o| o.gso_size = 0), Err(ZeroGsoSize));
        assert_eq!(
            with(&|_, o| o.gso_type = Offload::GSO_UDP),
            Err(Unsupported)
        );
        assert_eq!(with(&|_, o| o.gso_type = 2), Err(Unsupported));
        assert_eq!(with(&|_, o| o.gso_type = 0x7f), Err(Unsupported));
        assert_eq!(
            with(&|_, o| o.gso_type = Offload::GSO_TCPV6),
            Err(WrongProtocol)
        );
        assert_eq!(
            with(&|_, o| o.gso_type = Offload::GSO_UDP_L4),
            Err(WrongProtocol)
        );
        assert_eq!(
            with(&|f, _| f[12..14].copy_from_slice(&[0x08, 0x06])),
            Err(NotIp)
        );
        assert_eq!(
            with(&|f, _| f[12..14].copy_from_slice(&[0x86, 0xdd])),
            Err(Malformed)
        );
        assert_eq!(with(&|f, _| f[14] = 0x44), Err(Malformed)); // IHL 4
        assert_eq!(with(&|f, _| f[14] = 0x65), Err(Malformed)); // version 6
        assert_eq!(with(&|f, _| f[20] |= 0x20), Err(Unsupported)); // MF
        assert_eq!(with(&|f, _| f[21] = 1), Err(Unsupported)); // fragment offset
        assert_eq!(with(&|f, _| f[23] = IPPROTO_UDP), Err(WrongProtocol));
        assert_eq!(with(&|f, _| f[34 + 12] = 0x40), Err(Malformed)); // doff 4
        let short = tcp_super(false, false, &payload[..20], 1448);
        let mut f = short.frame.clone();
        f[34 + 12] = 0xf0; // a 60-byte TCP header in a 52-byte segment
        assert_eq!(run(&f, &short.off), Err(Truncated));
        assert_eq!(
            with(&|f, _| f[16..18].copy_from_slice(&[0, 10])),
            Err(Malformed)
        );
        let mut scratch = [0u8; 1000];
        assert_eq!(
            segment(&b.frame, &b.off, &mut scratch, |_| ()),
            Err(ScratchTooSmall)
        );
        assert_eq!(
            segment(&b.frame, &Offload::default(), &mut scratch, |_| ()),
            Err(ScratchTooSmall)
        );
        // Three VLAN tags.
        let mut tagged = b.frame[..12].to_vec();
        for _ in 0..3 {
            tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        }
        tagged.extend_from_slice(&b.frame[12..]);
        assert_eq!(run(&tagged, &b.off), Err(Unsupported));
        // IPv6 extension header (hop-by-hop) instead of TCP.
        let v6 = tcp_super(true, false, &payload, 1448);
        let mut f = v6.frame.clone();
        f[14 + 6] = 0;
        assert_eq!(run(&f, &v6.off), Err(WrongProtocol));
    }

    #[test]
    fn segmentation_does_not_allocate() {
        let payload = pattern(20_000);
        let tcp = tcp_super(true, true, &payload, 1448);
        let udp = udp_super(false, false, &payload, 1400);
        let mut scratch = vec![0u8; SCRATCH];
        let mut plain = tcp.frame.clone();
        let before = alloc_count::allocations();
        let mut bytes = 0;
        for b in [&tcp, &udp] {
            bytes += segment(&b.frame, &b.off, &mut scratch, |s| bytes += s.len()).unwrap();
        }
        let mut off = tcp.off;
        off.gso_type = 0;
        complete_checksum(&mut plain, &off).unwrap();
        assert_eq!(alloc_count::allocations(), before);
        assert!(bytes > 40_000);
    }

    /// Counts this thread's heap allocations, to prove the fast path makes
    /// none.
    mod alloc_count {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static COUNT: Cell<usize> = const { Cell::new(0) };
        }

        struct Counting;

        // SAFETY: forwards to the system allocator, only counting calls.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                // SAFETY: the caller's contract is passed on unchanged.
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                // SAFETY: the caller's contract is passed on unchanged.
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
                // SAFETY: the caller's contract is passed on unchanged.
                unsafe { System.realloc(ptr, layout, new) }
            }
        }

        #[global_allocator]
        static ALLOC: Counting = Counting;

        pub(super) fn allocations() -> usize {
            COUNT.with(|c| c.get())
        }
    }

    // ---- properties ----

    fn any_offload() -> impl Strategy<Value = Offload> {
        (
            any::<u8>(),
            prop_oneof![
                Just(0u8),
                Just(1),
                Just(3),
                Just(4),
                Just(5),
                Just(0x81),
                Just(0x84),
                any::<u8>()
            ],
            any::<u16>(),
            prop_oneof![Just(0u16), 1..64u16, 1..2000u16, any::<u16>()],
            prop_oneof![0..120u16, any::<u16>()],
            prop_oneof![0..40u16, any::<u16>()],
        )
            .prop_map(
                |(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)| Offload {
                    flags,
                    gso_type,
                    hdr_len,
                    gso_size,
                    csum_start,
                    csum_offset,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_bytes_never_panic(mut frame in proptest::collection::vec(any::<u8>(), 0..400),
                                    off in any_offload(),
                                    ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), any::<u16>()],
                                    version in any::<bool>()) {
            // Steer a good share of the inputs past the ethertype check.
            if frame.len() >= 15 {
                frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
                frame[14] = if version { 0x45 } else { 0x60 };
            }
            let mut scratch = vec![0u8; SCRATCH];
            if let Ok(n) = segment(&frame, &off, &mut scratch, |s| assert!(!s.is_empty() || frame.is_empty())) {
                prop_assert!(n >= 1);
            }
            let _ = complete_checksum(&mut frame, &off);
        }

        #[test]
        fn mutated_super_frames_never_panic(v6 in any::<bool>(), udp in any::<bool>(),
                                            len in prop_oneof![0..16usize, 0..3000usize],
                                            flips in proptest::collection::vec((0..90usize, any::<u8>()), 0..6),
                                            cut in proptest::option::of(any::<prop::sample::Index>()),
                                            off in any_offload(), keep_off in any::<bool>()) {
            let payload = pattern(len);
            let b = if udp { udp_super(v6, false, &payload, 500) } else { tcp_super(v6, true, &payload, 500) };
            let mut frame = b.frame.clone();
            for (at, v) in flips {
                if at < frame.len() {
                    frame[at] = v;
                }
            }
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            let off = if keep_off { b.off } else { off };
            let mut scratch = vec![0u8; SCRATCH];
            let mut total = 0;
            if segment(&frame, &off, &mut scratch, |s| total += s.len()).is_ok() {
                prop_assert!(total > 0);
            }
            let _ = complete_checksum(&mut frame, &off);
        }

        #[test]
        fn tcp_segmentation_holds_for_any_sizes(v6 in any::<bool>(), vlan in any::<bool>(),
                                                len in 0..9000usize, mss in 1..3000u16) {
            let payload = pattern(len);
            check_tcp(&tcp_super(v6, vlan, &payload, mss), &payload);
        }

        #[test]
        fn udp_segmentation_holds_for_any_sizes(v6 in any::<bool>(), vlan in any::<bool>(),
                                                len in 0..9000usize, mss in 1..3000u16) {
            let payload = pattern(len);
            check_udp(&udp_super(v6, vlan, &payload, mss), &payload);
        }
    }
}
