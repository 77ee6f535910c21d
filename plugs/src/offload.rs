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
    if off.csum_offset % 2 != 0 || field + 2 > frame.len() {
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
/// `scratch` is the caller's reusable buffer (65535 + 18 bytes is always
/// enough); every emitted slice borrows it and is only valid during `emit`.
/// Nothing is allocated. Returns the number of segments emitted; on error
/// nothing has been emitted.
pub fn segment(
    frame: &[u8],
    off: &Offload,
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
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
    let tcp_seq = be32(frame, l4 + 4);
    let tcp_flags = frame[l4 + 13];
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
