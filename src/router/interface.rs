//! A router's interfaces: where it meets a segment.
//!
//! An interface is the router's side of one port: a MAC address of its own,
//! the IPv4 addresses it answers for, the largest packet it sends, and
//! whether it answers ARP on behalf of hosts it routes to (proxy ARP).

use crate::mac::MacAddr;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Everything a router needs to know about one of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The name people use for it in the config and in `ctl`.
    pub name: String,
    /// The interface's own Ethernet address: frames to it are the router's.
    pub mac: MacAddr,
    /// Its addresses with their prefixes; each one also gives a connected
    /// route.
    pub addresses: Vec<Ipv4Net>,
    /// The largest IPv4 packet (header included) it sends unfragmented.
    pub mtu: u16,
    /// Answer ARP requests arriving here for addresses routed out of
    /// another interface, so hosts that believe they share one subnet with
    /// hosts behind the router reach them through it.
    pub proxy_arp: bool,
}

impl InterfaceConfig {
    /// The address to speak from when talking to `peer` out of this
    /// interface: one whose subnet holds `peer`, else the first one.
    pub fn source_for(&self, peer: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find(|net| net.contains(&peer))
            .or_else(|| self.addresses.first())
            .map(|net| net.addr())
    }

    /// True when `addr` is the directed broadcast address of one of this
    /// interface's subnets (a /31 or /32 has none). Such packets are not
    /// forwarded, as on Linux by default.
    pub fn is_directed_broadcast(&self, addr: Ipv4Addr) -> bool {
        self.addresses
            .iter()
            .any(|net| net.prefix_len() < 31 && net.broadcast() == addr)
    }
}

/// A MAC address derived from the router's and the interface's names, so
/// an interface keeps its address across restarts (hosts' ARP caches stay
/// right) without anyone choosing one. Locally administered and unicast.
pub fn stable_mac(router: &str, iface: &str) -> MacAddr {
    // FNV-1a over both names with a separator that cannot occur in either
    // position ambiguity ("ab"+"c" vs "a"+"bc").
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"switchboard-router\0"
        .iter()
        .chain(router.as_bytes())
        .chain(b"\0")
        .chain(iface.as_bytes())
    {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let h = hash.to_be_bytes();
    MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_macs_are_local_unicast_and_differ_by_name() {
        let a = stable_mac("gw", "left");
        assert_eq!(a, stable_mac("gw", "left"));
        assert_ne!(a, stable_mac("gw", "right"));
        assert_ne!(stable_mac("a", "bc"), stable_mac("ab", "c"));
        assert_eq!(a.0[0], 0x02);
        assert!(a.is_valid_source());
    }

    #[test]
    fn source_address_prefers_the_peer_subnet() {
        let iface = InterfaceConfig {
            name: "x".into(),
            mac: stable_mac("r", "x"),
            addresses: vec![
                "10.0.0.1/24".parse().unwrap(),
                "10.9.0.1/24".parse().unwrap(),
            ],
            mtu: 1500,
            proxy_arp: false,
        };
        assert_eq!(
            iface.source_for("10.9.0.7".parse().unwrap()),
            Some("10.9.0.1".parse().unwrap())
        );
        assert_eq!(
            iface.source_for("172.16.0.1".parse().unwrap()),
            Some("10.0.0.1".parse().unwrap())
        );
        assert!(iface.is_directed_broadcast("10.9.0.255".parse().unwrap()));
        assert!(!iface.is_directed_broadcast("10.9.0.254".parse().unwrap()));
    }
}
