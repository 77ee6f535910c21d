//! What the switch needs to know about a frame: its addresses and VLAN.
//!
//! Parsing goes through etherparse's zero-copy slices; nothing is copied
//! except the two addresses and the VLAN id.

use crate::mac::MacAddr;
use etherparse::{EtherType, Ethernet2Slice, SingleVlanSlice};

/// The smallest frame the switch accepts: a bare Ethernet II header.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// Bytes an 802.1Q tag adds to a frame.
pub const VLAN_TAG_LEN: usize = 4;

/// The switching-relevant header fields of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Where the frame is going.
    pub dst: MacAddr,
    /// Who sent it; learned by the MAC table.
    pub src: MacAddr,
    /// The VLAN id of the outer 802.1Q tag, if the frame carries one.
    pub tag: Option<u16>,
}

impl FrameHeader {
    /// Reads the header of `frame`, or `None` if it is shorter than an
    /// Ethernet header. A frame whose 802.1Q tag is cut short is treated as
    /// untagged: the switch forwards it unchanged, as a hub would.
    pub fn parse(frame: &[u8]) -> Option<FrameHeader> {
        let eth = Ethernet2Slice::from_slice_without_fcs(frame).ok()?;
        let tag = if eth.ether_type() == EtherType::VLAN_TAGGED_FRAME {
            SingleVlanSlice::from_slice(eth.payload_slice())
                .ok()
                .map(|v| v.vlan_identifier().value())
        } else {
            None
        };
        Some(FrameHeader {
            dst: MacAddr(eth.destination()),
            src: MacAddr(eth.source()),
            tag,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_untagged_and_tagged() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend_from_slice(&[0; 28]);
        let h = FrameHeader::parse(&f).unwrap();
        assert_eq!(h.dst, MacAddr::BROADCAST);
        assert_eq!(h.src, MacAddr([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(h.tag, None);

        let mut t = f[..12].to_vec();
        t.extend_from_slice(&[0x81, 0x00, 0x20, 0x0a, 0x08, 0x06]);
        t.extend_from_slice(&[0; 28]);
        assert_eq!(FrameHeader::parse(&t).unwrap().tag, Some(10));
    }

    #[test]
    fn short_frames_do_not_parse() {
        assert!(FrameHeader::parse(&[0; 13]).is_none());
        assert!(FrameHeader::parse(&[0; 14]).is_some());
        // a cut-short tag is carried as untagged
        let mut t = vec![0u8; 12];
        t.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(FrameHeader::parse(&t).unwrap().tag, None);
    }
}
