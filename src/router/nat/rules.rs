//! Which new flows a router translates, and to what.
//!
//! Two kinds of rule, the two lines every VM and container network copies:
//!
//! * **masquerade**, `iptables -t nat -A POSTROUTING -s NET ! -d NET -o IF
//!   -j MASQUERADE`: a new flow from one of `sources`, leaving by interface
//!   `out`, to a destination outside `except`, gets the source address of
//!   `out` (the address the router would speak from towards that
//!   destination);
//! * **port forward**, `-j DNAT --to-destination`: a new flow arriving at the
//!   router's outside address on a forwarded port goes to an inside host,
//!   port ranges mapping one to one.
//!
//! Rules are only consulted for a packet that belongs to no tracked flow;
//! once a flow exists its translation is fixed until it expires.

use super::{FlowKey, Proto};
use crate::router::IfaceId;
use ipnet::Ipv4Net;
use std::net::{Ipv4Addr, SocketAddrV4};

/// A masquerade rule as configured: the interface by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeConfig {
    /// Name of the outside interface.
    pub out: String,
    /// Source networks; empty means every source.
    pub sources: Vec<Ipv4Net>,
    /// Destinations not translated.
    pub except: Vec<Ipv4Net>,
}

/// A port forward as configured: the interface by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// TCP or UDP.
    pub proto: Proto,
    /// Name of the outside interface.
    pub iface: String,
    /// One of its addresses only, if given.
    pub outside: Option<Ipv4Addr>,
    /// First and last outside port.
    pub ports: (u16, u16),
    /// The inside host and the port the first outside port maps to.
    pub to: SocketAddrV4,
}

/// One masquerade rule, with the interface resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeRule {
    /// The interface whose address replaces the source.
    pub out: IfaceId,
    /// Source networks it applies to; empty means every source.
    pub sources: Vec<Ipv4Net>,
    /// Destinations left alone (`! -d`), such as the inside network itself.
    pub except: Vec<Ipv4Net>,
}

impl MasqueradeRule {
    /// Whether a new flow from `src` to `dst` leaving by `out` is
    /// translated by this rule.
    pub fn matches(&self, src: Ipv4Addr, dst: Ipv4Addr, out: IfaceId) -> bool {
        out == self.out
            && (self.sources.is_empty() || self.sources.iter().any(|n| n.contains(&src)))
            && !self.except.iter().any(|n| n.contains(&dst))
    }
}

/// One port forward, with the interface resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForward {
    /// TCP or UDP.
    pub proto: Proto,
    /// The interface whose addresses receive the forwarded ports.
    pub iface: IfaceId,
    /// One of its addresses only; `None` means any of them.
    pub outside: Option<Ipv4Addr>,
    /// First and last forwarded port.
    pub ports: (u16, u16),
    /// The inside host.
    pub inside: Ipv4Addr,
    /// The inside port of the first forwarded port (the range maps one to
    /// one from there).
    pub inside_port: u16,
}

impl PortForward {
    /// Where a new flow arriving at `key.dst` (an address of `iface`, as
    /// the caller checked) goes, if this forward covers it.
    pub fn target(&self, key: &FlowKey, iface: IfaceId) -> Option<SocketAddrV4> {
        let port = key.dst.port();
        let covered = key.proto == self.proto
            && iface == self.iface
            && self.outside.is_none_or(|a| a == *key.dst.ip())
            && (self.ports.0..=self.ports.1).contains(&port);
        covered.then(|| {
            let offset = port - self.ports.0;
            SocketAddrV4::new(self.inside, self.inside_port.wrapping_add(offset))
        })
    }
}

/// All NAT rules of one router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatRules {
    /// Masquerade rules, first match wins.
    pub masquerade: Vec<MasqueradeRule>,
    /// Port forwards, first match wins.
    pub forwards: Vec<PortForward>,
}

impl NatRules {
    /// True when there is nothing to translate.
    pub fn is_empty(&self) -> bool {
        self.masquerade.is_empty() && self.forwards.is_empty()
    }

    /// The masquerade rule for a new flow, if any.
    pub fn masquerade_for(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        out: IfaceId,
    ) -> Option<&MasqueradeRule> {
        self.masquerade.iter().find(|r| r.matches(src, dst, out))
    }

    /// The inside target of a new inbound flow, if a forward covers it.
    pub fn forward_for(&self, key: &FlowKey, iface: IfaceId) -> Option<SocketAddrV4> {
        self.forwards.iter().find_map(|f| f.target(key, iface))
    }

    /// Whether interface `iface` is an outside interface (masqueraded or
    /// forwarded to): unsolicited traffic to its addresses is refused.
    pub fn is_outside(&self, iface: IfaceId) -> bool {
        self.masquerade.iter().any(|r| r.out == iface)
            || self.forwards.iter().any(|f| f.iface == iface)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn key(proto: Proto, src: &str, dst: &str) -> FlowKey {
        FlowKey {
            proto,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    #[test]
    fn masquerade_matches_source_interface_and_skips_excluded_destinations() {
        let rule = MasqueradeRule {
            out: IfaceId(1),
            sources: vec![net("10.0.3.0/24")],
            except: vec![net("10.0.3.0/24")],
        };
        let inside = "10.0.3.7".parse().unwrap();
        assert!(rule.matches(inside, "8.8.8.8".parse().unwrap(), IfaceId(1)));
        assert!(!rule.matches(inside, "8.8.8.8".parse().unwrap(), IfaceId(0)));
        assert!(!rule.matches(inside, "10.0.3.9".parse().unwrap(), IfaceId(1)));
        assert!(!rule.matches(
            "10.0.4.1".parse().unwrap(),
            "8.8.8.8".parse().unwrap(),
            IfaceId(1)
        ));
        let any = MasqueradeRule {
            out: IfaceId(1),
            sources: vec![],
            except: vec![],
        };
        assert!(any.matches(
            "172.16.0.1".parse().unwrap(),
            "1.1.1.1".parse().unwrap(),
            IfaceId(1)
        ));
    }

    #[test]
    fn port_ranges_map_one_to_one() {
        let fwd = PortForward {
            proto: Proto::Tcp,
            iface: IfaceId(1),
            outside: None,
            ports: (8080, 8089),
            inside: "10.0.3.10".parse().unwrap(),
            inside_port: 80,
        };
        let rules = NatRules {
            masquerade: vec![],
            forwards: vec![fwd],
        };
        let k = key(Proto::Tcp, "192.0.2.9:5555", "198.51.100.1:8083");
        assert_eq!(
            rules.forward_for(&k, IfaceId(1)),
            Some("10.0.3.10:83".parse().unwrap())
        );
        assert_eq!(rules.forward_for(&k, IfaceId(0)), None);
        let udp = key(Proto::Udp, "192.0.2.9:5555", "198.51.100.1:8083");
        assert_eq!(rules.forward_for(&udp, IfaceId(1)), None);
        let outside = key(Proto::Tcp, "192.0.2.9:5555", "198.51.100.1:8090");
        assert_eq!(rules.forward_for(&outside, IfaceId(1)), None);
        assert!(rules.is_outside(IfaceId(1)));
        assert!(!rules.is_outside(IfaceId(0)));
    }
}
