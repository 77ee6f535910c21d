//! The lease, told by the inside of `switchboard ns` to the outside, so
//! that the outside can renew it.
//!
//! The inside takes its lease and then becomes the user's command, so it
//! cannot renew anything; the outside lives as long as the command and
//! carries every frame, so it can. Before executing the command the inside
//! sends one message over the socket pair that carried the tap's
//! descriptor: a fixed 22-byte record (a 4-byte tag, the address, the
//! server identifier, the lease time in seconds, the tap's MAC). Anything
//! else is refused, and the outside then simply does not renew. With
//! `--ip` no message is sent.

use crate::mac::MacAddr;
use std::net::Ipv4Addr;

/// Identifies the record and its layout; a future layout takes a new tag.
const TAG: [u8; 4] = *b"SBL1";

/// The record's exact length.
pub const LEN: usize = 22;

/// What the outside needs to renew the inside's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseMessage {
    /// The address leased (the REQUEST's ciaddr and IP source).
    pub address: Ipv4Addr,
    /// The server that granted it (option 54), if it said; 0.0.0.0 on the
    /// wire when it did not.
    pub server: Option<Ipv4Addr>,
    /// The lease time granted, in seconds (`u32::MAX`: infinite).
    pub lease_secs: u32,
    /// The tap's hardware address (the REQUEST's chaddr).
    pub mac: MacAddr,
}

impl LeaseMessage {
    /// The record as sent over the socket pair.
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&TAG);
        b[4..8].copy_from_slice(&self.address.octets());
        b[8..12].copy_from_slice(&self.server.unwrap_or(Ipv4Addr::UNSPECIFIED).octets());
        b[12..16].copy_from_slice(&self.lease_secs.to_be_bytes());
        b[16..22].copy_from_slice(&self.mac.0);
        b
    }

    /// Takes a received record apart; `None` for anything that is not
    /// exactly one well-formed record (wrong length or tag, an address
    /// that cannot be a host's, a multicast MAC).
    pub fn decode(bytes: &[u8]) -> Option<LeaseMessage> {
        let b: &[u8; LEN] = bytes.try_into().ok()?;
        if b[0..4] != TAG {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        let address = ip(4);
        if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
            return None;
        }
        let server = Some(ip(8)).filter(|s| !s.is_unspecified());
        let lease_secs = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
        let mac = MacAddr([b[16], b[17], b[18], b[19], b[20], b[21]]);
        if mac.is_multicast() {
            return None;
        }
        Some(LeaseMessage {
            address,
            server,
            lease_secs,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LeaseMessage {
        LeaseMessage {
            address: Ipv4Addr::new(10, 0, 7, 100),
            server: Some(Ipv4Addr::new(10, 0, 7, 1)),
            lease_secs: 600,
            mac: MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]),
        }
    }

    #[test]
    fn the_record_has_a_fixed_layout_and_round_trips() {
        let m = sample();
        let b = m.encode();
        assert_eq!(
            b,
            [
                b'S', b'B', b'L', b'1', 10, 0, 7, 100, 10, 0, 7, 1, 0, 0, 2, 88, 0x02, 0x11, 0x22,
                0x33, 0x44, 0x55
            ]
        );
        assert_eq!(LeaseMessage::decode(&b), Some(m));

        let no_server = LeaseMessage { server: None, ..m };
        let b = no_server.encode();
        assert_eq!(&b[8..12], &[0, 0, 0, 0]);
        assert_eq!(LeaseMessage::decode(&b), Some(no_server));
    }

    #[test]
    fn garbage_is_refused() {
        let b = sample().encode();
        for len in 0..LEN {
            assert_eq!(LeaseMessage::decode(&b[..len]), None, "length {len}");
        }
        let mut long = b.to_vec();
        long.push(0);
        assert_eq!(LeaseMessage::decode(&long), None);
        let mut tag = b;
        tag[3] = b'2';
        assert_eq!(LeaseMessage::decode(&tag), None);
        let mut zero = b;
        zero[4..8].copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(LeaseMessage::decode(&zero), None);
        let mut mcast = b;
        mcast[4] = 224;
        assert_eq!(LeaseMessage::decode(&mcast), None);
        let mut group = b;
        group[16] = 0x01;
        assert_eq!(LeaseMessage::decode(&group), None);
        assert_eq!(LeaseMessage::decode(b"eth0"), None);
    }
}
