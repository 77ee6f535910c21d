//! IPv4 fragmentation: cutting a packet that is too big for the next link
//! into pieces the destination reassembles.
//!
//! A router joins links with different MTUs (a 9000-byte bridge, a 1500-byte
//! LAN, a 1280-byte tunnel). When a packet is larger than the outgoing MTU
//! and its sender allows it (DF clear), RFC 791 says the router cuts it
//! rather than drop it. When DF is set the router must drop it and send
//! Fragmentation Needed instead, see [`icmp`](super::icmp); that is not this
//! module's business, so [`Fragmenter::new`] simply refuses such packets.
//!
//! The rules from RFC 791 §3.2 and RFC 1812 §4.2.2.7:
//!
//! * every fragment but the last carries a multiple of 8 payload bytes,
//!   because the fragment offset field counts 8-byte units;
//! * the first fragment carries all the options; later fragments carry only
//!   the options whose "copied" flag (bit 7 of the option type) is set, such
//!   as source routes and security labels, padded with End of Option List
//!   to a multiple of 4 bytes;
//! * a packet that is itself a fragment (a router upstream already cut it) is
//!   cut again: offsets are relative to the original datagram, and the last
//!   piece keeps the More Fragments flag the packet came with;
//! * identification, TTL, protocol and addresses are kept, so the pieces
//!   reassemble with their siblings; each piece gets its own header checksum.
//!
//! Fragments are produced one at a time into a caller buffer, so the router
//! can send each straight away and nothing is allocated.

use smoltcp::wire::Ipv4Packet;

/// The fixed part of an IPv4 header.
const FIXED_HEADER_LEN: usize = 20;
/// The most option bytes an IPv4 header holds (a 15-word header).
const MAX_OPTIONS_LEN: usize = 40;
/// The largest byte offset the 13-bit fragment offset field can express,
/// plus one unit: no fragment may start at or beyond it.
const OFFSET_LIMIT: usize = 8 << 13;

/// Option type End of Option List: nothing after it is an option.
const OPTION_END: u8 = 0;
/// Option type No Operation: a single padding byte.
const OPTION_NOP: u8 = 1;
/// Bit of the option type saying "copy this option into every fragment".
const OPTION_COPIED: u8 = 0x80;

/// Cuts one IPv4 packet with DF clear into fragments that fit an IP MTU,
/// producing them one at a time with [`next_into`](Self::next_into). Exists
/// so the router can forward oversized packets between links of different
/// MTUs without allocating.
///
/// A packet that already fits yields exactly one fragment: itself, with a
/// freshly computed header checksum.
#[derive(Debug, Clone)]
pub struct Fragmenter<'a> {
    /// The original packet, cut to its total length (no link-layer padding).
    packet: &'a [u8],
    /// Header length of the original, and of the first fragment.
    header_len: usize,
    /// The options later fragments carry, padded with zeros (End of Option
    /// List) to a multiple of 4.
    later_options: [u8; MAX_OPTIONS_LEN],
    /// How many bytes of `later_options` are used, padding included.
    later_options_len: usize,
    /// The IP MTU the fragments must fit.
    mtu: usize,
    /// The original's own fragment offset in bytes (non-zero when it is
    /// itself a later fragment).
    base_offset: usize,
    /// The original's More Fragments flag, inherited by the last fragment.
    more_fragments: bool,
    /// Where in the original's payload the next fragment starts.
    next: usize,
    /// No more fragments will be produced.
    done: bool,
    /// How many fragments the packet yields in all.
    count: usize,
}

impl<'a> Fragmenter<'a> {
    /// Prepares to fragment `packet` (an IPv4 packet without Ethernet header;
    /// bytes past its total length are ignored) for a link with IP MTU `mtu`
    /// (header plus payload).
    ///
    /// None when the packet is malformed (short, not version 4, header or
    /// total length inconsistent, options that overrun the header, an offset
    /// that would not fit the 13-bit field), has DF set, or `mtu` cannot carry
    /// its header plus 8 payload bytes (68, the IPv4 minimum MTU, always can).
    /// The header checksum is not checked: the router has validated it on
    /// receipt and then changed the TTL.
    pub fn new(packet: &'a [u8], mtu: usize) -> Option<Fragmenter<'a>> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        if ip.version() != 4 || ip.dont_frag() {
            return None;
        }
        let header_len = usize::from(ip.header_len());
        let total_len = usize::from(ip.total_len());
        let packet = packet.get(..total_len)?;
        let payload_len = total_len - header_len;
        let base_offset = usize::from(ip.frag_offset());
        if base_offset + payload_len > OFFSET_LIMIT {
            return None;
        }
        if mtu < header_len + 8 {
            return None;
        }
        let (later_options, later_options_len) =
            copied_options(packet.get(FIXED_HEADER_LEN..header_len)?)?;

        let mut fragmenter = Fragmenter {
            packet,
            header_len,
            later_options,
            later_options_len,
            mtu,
            base_offset,
            more_fragments: ip.more_frags(),
            next: 0,
            done: false,
            count: 0,
        };
        fragmenter.count = fragmenter.total_count(payload_len);
        Some(fragmenter)
    }

    /// Writes the next fragment into `out` and returns its length; None once
    /// every fragment has been produced.
    ///
    /// Also None when `out` is too small for the next fragment (it needs up
    /// to `mtu` bytes). That ends the sequence: the remaining fragments are
    /// not produced, because a datagram missing a piece is useless to the
    /// receiver anyway, and the caller gets a definite end rather than a
    /// loop that never progresses.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.done {
            return None;
        }
        let first = self.next == 0;
        let header_len = if first {
            self.header_len
        } else {
            FIXED_HEADER_LEN + self.later_options_len
        };
        let payload = self.packet.get(self.header_len..)?;
        let remaining = payload.len() - self.next;
        let room = self.mtu - header_len;
        let (chunk, last) = if remaining <= room {
            (remaining, true)
        } else {
            (room & !7, false)
        };
        let total_len = header_len + chunk;
        let Some(out) = out.get_mut(..total_len) else {
            self.done = true;
            return None;
        };

        let (header, body) = out.split_at_mut(header_len);
        if first {
            header.copy_from_slice(&self.packet[..header_len]);
        } else {
            header[..FIXED_HEADER_LEN].copy_from_slice(&self.packet[..FIXED_HEADER_LEN]);
            header[FIXED_HEADER_LEN..]
                .copy_from_slice(&self.later_options[..self.later_options_len]);
        }
        body.copy_from_slice(&payload[self.next..self.next + chunk]);

        let mut ip = Ipv4Packet::new_unchecked(&mut *out);
        // Both fit: the header is at most 60 bytes and the fragment is no
        // longer than the original, whose length came from a u16.
        ip.set_header_len(header_len as u8);
        ip.set_total_len(total_len as u16);
        ip.set_more_frags(!last || self.more_fragments);
        // Below OFFSET_LIMIT, checked in `new`.
        ip.set_frag_offset((self.base_offset + self.next) as u16);
        ip.fill_checksum();

        self.next += chunk;
        self.done = last;
        Some(total_len)
    }

    /// How many fragments the packet yields in all (including ones already
    /// produced), so the router can check queue room or count before
    /// sending the first.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The number of fragments `next_into` produces for `payload_len`
    /// payload bytes: the first takes what fits after the full header, the
    /// rest what fits after the shorter header of copied options; every
    /// piece but the last is rounded down to 8 bytes.
    fn total_count(&self, payload_len: usize) -> usize {
        let first_room = self.mtu - self.header_len;
        if payload_len <= first_room {
            return 1;
        }
        let rest = payload_len - (first_room & !7);
        let later_room = self.mtu - FIXED_HEADER_LEN - self.later_options_len;
        if rest <= later_room {
            2
        } else {
            2 + (rest - later_room).div_ceil(later_room & !7)
        }
    }
}

/// The options of `options` (the header bytes after the fixed 20) whose
/// copied flag is set, in order, padded with zeros to a multiple of 4, with
/// the used length. None when an option's length is missing, below 2, or
/// runs past the header.
fn copied_options(options: &[u8]) -> Option<([u8; MAX_OPTIONS_LEN], usize)> {
    let mut copied = [0u8; MAX_OPTIONS_LEN];
    let mut len = 0;
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            OPTION_END => break,
            OPTION_NOP => i += 1,
            _ => {
                let option_len = usize::from(*options.get(i + 1)?);
                let option = options.get(i..i.checked_add(option_len)?)?;
                if option_len < 2 {
                    return None;
                }
                if kind & OPTION_COPIED != 0 {
                    copied
                        .get_mut(len..len + option_len)?
                        .copy_from_slice(option);
                    len += option_len;
                }
                i += option_len;
            }
        }
    }
    Some((copied, len.next_multiple_of(4)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use smoltcp::wire::IpProtocol;
    use std::net::Ipv4Addr;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);

    /// An IPv4 packet with the given options (already a multiple of 4),
    /// flags/offset word and payload; TOS 0x28, TTL 57, protocol UDP,
    /// identification 0xabcd.
    fn packet(options: &[u8], flags_offset: u16, payload: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let header_len = 20 + options.len();
        let mut p = vec![0u8; header_len + payload.len()];
        p[0] = 0x40 | (header_len / 4) as u8;
        p[1] = 0x28;
        let len = u16::try_from(p.len()).unwrap();
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p[4..6].copy_from_slice(&0xabcdu16.to_be_bytes());
        p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
        p[8] = 57;
        p[9] = 17;
        p[12..16].copy_from_slice(&SRC.octets());
        p[16..20].copy_from_slice(&DST.octets());
        p[20..header_len].copy_from_slice(options);
        p[header_len..].copy_from_slice(payload);
        Ipv4Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Runs the fragmenter to the end with a buffer of exactly `mtu` bytes,
    /// checking that `count` matches what it produces.
    fn fragments(packet: &[u8], mtu: usize) -> Vec<Vec<u8>> {
        let mut f = Fragmenter::new(packet, mtu).expect("fragmentable");
        let expected = f.count();
        let mut out = vec![0u8; mtu];
        let mut all = Vec::new();
        while let Some(n) = f.next_into(&mut out) {
            all.push(out[..n].to_vec());
        }
        assert_eq!(all.len(), expected, "count() disagrees with next_into");
        assert_eq!(f.next_into(&mut out), None, "stays done");
        all
    }

    /// Test-only reassembler: checks each fragment's header against the
    /// original's invariant fields, then puts payloads back by offset.
    /// Returns (payload starting at the original's offset, MF of the piece
    /// that ends it).
    fn reassemble(original: &[u8], frags: &[Vec<u8>], mtu: usize) -> (Vec<u8>, bool) {
        let orig = Ipv4Packet::new_checked(original).unwrap();
        let base = usize::from(orig.frag_offset());
        let mut payload =
            vec![None; usize::from(orig.total_len()) - usize::from(orig.header_len())];
        let mut end_mf = None;
        for (i, frag) in frags.iter().enumerate() {
            assert!(frag.len() <= mtu, "fragment {i} is {} > {mtu}", frag.len());
            let ip = Ipv4Packet::new_checked(&frag[..]).unwrap();
            assert_eq!(usize::from(ip.total_len()), frag.len());
            assert!(ip.verify_checksum(), "fragment {i} checksum");
            assert_eq!(ip.version(), 4);
            assert_eq!(frag[1], original[1], "TOS");
            assert_eq!(ip.ident(), orig.ident());
            assert!(!ip.dont_frag());
            assert_eq!(frag[6] & 0x80, 0, "reserved flag");
            assert_eq!(ip.hop_limit(), orig.hop_limit());
            assert_eq!(ip.next_header(), IpProtocol::Udp);
            assert_eq!(ip.src_addr(), SRC);
            assert_eq!(ip.dst_addr(), DST);
            let offset = usize::from(ip.frag_offset());
            assert_eq!(offset % 8, 0);
            let data = ip.payload();
            let last = i + 1 == frags.len();
            if !last {
                assert!(ip.more_frags(), "fragment {i} must have MF");
                assert_eq!(data.len() % 8, 0, "fragment {i} payload");
            } else {
                end_mf = Some(ip.more_frags());
            }
            for (j, &b) in data.iter().enumerate() {
                let slot = &mut payload[offset - base + j];
                assert!(slot.is_none(), "overlap at {}", offset + j);
                *slot = Some(b);
            }
        }
        let payload = payload.into_iter().map(|b| b.expect("hole")).collect();
        (payload, end_mf.unwrap())
    }

    #[test]
    fn full_size_packet_at_576() {
        let data = pattern(1480);
        let original = packet(&[], 0, &data);
        assert_eq!(original.len(), 1500);
        let frags = fragments(&original, 576);
        // 556 bytes of room round down to 552.
        let sizes: Vec<_> = frags.iter().map(Vec::len).collect();
        assert_eq!(sizes, [572, 572, 396]);
        let offsets: Vec<_> = frags
            .iter()
            .map(|f| u16::from_be_bytes([f[6], f[7]]))
            .collect();
        assert_eq!(offsets, [0x2000, 0x2000 | 69, 138]);
        let (payload, end_mf) = reassemble(&original, &frags, 576);
        assert_eq!(payload, data);
        assert!(!end_mf);
    }

    #[test]
    fn full_size_packet_at_1280() {
        let data = pattern(1480);
        let original = packet(&[], 0, &data);
        let frags = fragments(&original, 1280);
        let sizes: Vec<_> = frags.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1276, 244]);
        assert_eq!(&frags[1][6..8], &(1256u16 / 8).to_be_bytes());
        let (payload, end_mf) = reassemble(&original, &frags, 1280);
        assert_eq!(payload, data);
        assert!(!end_mf);
    }

    #[test]
    fn a_packet_that_fits_is_its_own_single_fragment() {
        let original = packet(&[], 0, &pattern(100));
        let frags = fragments(&original, 576);
        assert_eq!(frags, std::slice::from_ref(&original));
        // Exactly at the MTU still fits.
        assert_eq!(fragments(&original, original.len()), [original]);
    }

    #[test]
    fn link_layer_padding_is_not_fragmented() {
        let original = packet(&[], 0, &pattern(30));
        let mut padded = original.clone();
        padded.extend_from_slice(&[0xee; 16]);
        assert_eq!(fragments(&padded, 576), [original]);
    }

    #[test]
    fn only_copied_options_go_into_later_fragments() {
        let options = [
            OPTION_NOP, // padding
            0x83, 7, 4, 10, 0, 0, 1, // loose source route: copied
            0x07, 7, 4, 0, 0, 0, 0, // record route: not copied
            0x94, 4, 0, 0, // router alert: copied
            OPTION_END, 0, 0, 0, 0,
        ];
        assert_eq!(options.len(), 24);
        let data = pattern(1000);
        let original = packet(&options, 0, &data);
        let f = Fragmenter::new(&original, 576).unwrap();
        assert_eq!(f.later_options_len, 12);
        let frags = fragments(&original, 576);
        assert_eq!(frags.len(), 2);

        // First: the whole original header, options included.
        assert_eq!(frags[0][0], 0x4b);
        assert_eq!(&frags[0][20..44], &options);
        assert_eq!(frags[0].len(), 44 + 528); // 576 - 44 = 532, rounded to 528
        // Later: only the copied options, padded to 12 bytes.
        assert_eq!(frags[1][0], 0x48);
        assert_eq!(
            &frags[1][20..32],
            &[0x83, 7, 4, 10, 0, 0, 1, 0x94, 4, 0, 0, 0]
        );
        assert_eq!(frags[1].len(), 32 + 1000 - 528);

        let (payload, _) = reassemble(&original, &frags, 576);
        assert_eq!(payload, data);
    }

    #[test]
    fn later_fragments_without_copied_options_have_a_bare_header() {
        let options = [0x07, 7, 4, 0, 0, 0, 0, OPTION_END];
        let data = pattern(1200);
        let original = packet(&options, 0, &data);
        let frags = fragments(&original, 576);
        assert_eq!(frags[0][0], 0x47);
        for later in &frags[1..] {
            assert_eq!(later[0], 0x45);
        }
        // The first has 576-28 = 548 -> 544 bytes; the rest 556 -> 552.
        let sizes: Vec<_> = frags.iter().map(Vec::len).collect();
        assert_eq!(sizes, [28 + 544, 20 + 552, 20 + 104]);
        assert_eq!(reassemble(&original, &frags, 576).0, data);
    }

    #[test]
    fn refragmenting_a_middle_fragment_keeps_offsets_and_mf() {
        // Offset 1480 (185 units), MF set: a piece from the middle of a
        // larger datagram.
        let data = pattern(1480);
        let original = packet(&[], 0x2000 | 185, &data);
        let frags = fragments(&original, 576);
        let words: Vec<_> = frags
            .iter()
            .map(|f| u16::from_be_bytes([f[6], f[7]]))
            .collect();
        assert_eq!(words, [0x2000 | 185, 0x2000 | 254, 0x2000 | 323]);
        let (payload, end_mf) = reassemble(&original, &frags, 576);
        assert_eq!(payload, data);
        assert!(end_mf, "the last piece of a middle fragment keeps MF");
    }

    #[test]
    fn refragmenting_a_last_fragment_clears_mf_only_at_the_end() {
        let data = pattern(1200);
        let original = packet(&[], 185, &data);
        let frags = fragments(&original, 576);
        let words: Vec<_> = frags
            .iter()
            .map(|f| u16::from_be_bytes([f[6], f[7]]))
            .collect();
        assert_eq!(words, [0x2000 | 185, 0x2000 | 254, 323]);
        assert!(!reassemble(&original, &frags, 576).1);
    }

    #[test]
    fn dont_fragment_is_refused() {
        let original = packet(&[], 0x4000, &pattern(1480));
        assert!(Fragmenter::new(&original, 576).is_none());
        let small = packet(&[], 0x4000, &pattern(10));
        assert!(Fragmenter::new(&small, 576).is_none());
    }

    #[test]
    fn mtu_must_carry_the_header_and_eight_bytes() {
        let original = packet(&[], 0, &pattern(100));
        assert!(Fragmenter::new(&original, 27).is_none());
        assert_eq!(Fragmenter::new(&original, 28).unwrap().count(), 13);
        let with_options = packet(&[0x83, 7, 4, 1, 2, 3, 4, 0], 0, &pattern(100));
        assert!(Fragmenter::new(&with_options, 35).is_none());
        assert!(Fragmenter::new(&with_options, 36).is_some());
        let max_header = packet(&[OPTION_NOP; 40], 0, &pattern(100));
        assert!(Fragmenter::new(&max_header, 67).is_none());
        let at_minimum = fragments(&max_header, 68);
        assert_eq!(at_minimum.len(), 3); // 8 bytes, then 48, then 44
        assert_eq!(reassemble(&max_header, &at_minimum, 68).0, pattern(100));
    }

    #[test]
    fn malformed_packets_are_refused() {
        let good = packet(&[0x83, 7, 4, 1, 2, 3, 4, 0], 0, &pattern(100));
        assert!(Fragmenter::new(&good, 576).is_some());
        assert!(Fragmenter::new(&good[..good.len() - 1], 576).is_none());
        assert!(Fragmenter::new(&[], 576).is_none());
        let mut v6 = good.clone();
        v6[0] = 0x67;
        assert!(Fragmenter::new(&v6, 576).is_none());
        let mut overrun = good.clone();
        overrun[21] = 9; // option length past the 28-byte header
        assert!(Fragmenter::new(&overrun, 576).is_none());
        let mut zero_len = good.clone();
        zero_len[21] = 0;
        assert!(Fragmenter::new(&zero_len, 576).is_none());
        let mut missing_len = good.clone();
        missing_len[20..28].copy_from_slice(&[1, 1, 1, 1, 1, 1, 1, 0x83]);
        assert!(Fragmenter::new(&missing_len, 576).is_none());
        // Offset 65528 with more than 8 payload bytes would overflow the field.
        let overflow = packet(&[], 0x1fff, &pattern(16));
        assert!(Fragmenter::new(&overflow, 576).is_none());
        let at_limit = packet(&[], 0x1fff, &pattern(8));
        assert!(Fragmenter::new(&at_limit, 576).is_some());
    }

    #[test]
    fn a_short_output_buffer_ends_the_sequence() {
        let original = packet(&[], 0, &pattern(1480));
        let mut f = Fragmenter::new(&original, 576).unwrap();
        let mut out = [0u8; 576];
        assert_eq!(f.next_into(&mut out), Some(572));
        assert_eq!(f.next_into(&mut out[..571]), None);
        assert_eq!(f.next_into(&mut out), None);
        assert_eq!(f.count(), 3);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200),
                                    mtu in 0usize..300,
                                    out_len in 0usize..300) {
            if let Some(mut f) = Fragmenter::new(&bytes, mtu) {
                let mut out = vec![0u8; out_len];
                let mut produced = 0;
                while let Some(n) = f.next_into(&mut out) {
                    prop_assert!(n <= mtu);
                    produced += 1;
                    prop_assert!(produced <= f.count());
                }
            }
        }

        #[test]
        fn random_headers_never_panic(ihl in 5u8..16,
                                      flags_offset in any::<u16>(),
                                      total_len in any::<u16>(),
                                      rest in proptest::collection::vec(any::<u8>(), 0..300),
                                      mtu in 0usize..2000) {
            let mut p = vec![0u8; 20];
            p[0] = 0x40 | ihl;
            p[2..4].copy_from_slice(&total_len.to_be_bytes());
            p[6..8].copy_from_slice(&flags_offset.to_be_bytes());
            p.extend_from_slice(&rest);
            if let Some(mut f) = Fragmenter::new(&p, mtu) {
                let mut out = vec![0u8; mtu.min(4000)];
                let mut produced = 0;
                while f.next_into(&mut out).is_some() {
                    produced += 1;
                }
                prop_assert_eq!(produced, f.count());
            }
        }

        #[test]
        fn fragments_reassemble(len in 0usize..3000,
                                mtu in 68usize..1600,
                                copied_source_route in any::<bool>(),
                                offset_units in 0u16..1000,
                                more in any::<bool>()) {
            let options: &[u8] = if copied_source_route {
                &[0x83, 11, 4, 1, 2, 3, 4, 5, 6, 7, 8, 0]
            } else {
                &[]
            };
            let data = pattern(len);
            let flags_offset = offset_units | if more { 0x2000 } else { 0 };
            let original = packet(options, flags_offset, &data);
            let frags = fragments(&original, mtu);
            let (payload, end_mf) = reassemble(&original, &frags, mtu);
            prop_assert_eq!(payload, data);
            prop_assert_eq!(end_mf, more);
        }
    }
}
