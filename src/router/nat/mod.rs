//! Network address translation: masquerade (source NAT) and port forwards
//! (destination NAT) with connection tracking, in the router.
//!
//! # Theory of operation
//!
//! A router with NAT rules keeps a [`conntrack::Conntrack`] table of flows.
//! A flow is known by two keys, the way its packets look on the wire in
//! each direction: the *original* key (the first packet as it arrived) and
//! the *reply* key (what an answer looks like when it arrives, addressed to
//! the translated side). Every forwarded packet is classified
//! ([`rewrite::classify`]); if its key names a flow, the packet is
//! rewritten to the other direction's addresses ([`rewrite::rewrite`]),
//! checksums updated incrementally. A packet that starts no flow and hits
//! no rule passes untranslated; one that arrives at the outside address
//! unasked is dropped and counted. ICMP errors quoting a translated packet
//! are translated back by their quoted contents
//! ([`rewrite::rewrite_icmp_error`]). The rules themselves
//! ([`rules`]) say which new flows are translated and how.

pub mod conntrack;
pub mod rewrite;
pub mod rules;
pub mod translator;

#[cfg(test)]
mod router_tests;

use std::net::SocketAddrV4;

/// The transport protocols NAT tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP, tracked through its connection states.
    Tcp,
    /// UDP, tracked as request/reply pairs.
    Udp,
    /// ICMP echo, its query identifier standing in for both ports.
    Icmp,
}

impl Proto {
    /// The IPv4 protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }
}

/// One direction of a flow as it appears on the wire. For ICMP echo both
/// ports carry the query identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Transport protocol.
    pub proto: Proto,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
}

impl FlowKey {
    /// The same flow seen from the other end: what an answer looks like.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }
}

/// Which way a packet travels within its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The way the first packet went.
    Original,
    /// Back towards the flow's initiator.
    Reply,
}

impl Direction {
    /// Index for per-direction counters: 0 original, 1 reply.
    pub fn index(self) -> usize {
        match self {
            Direction::Original => 0,
            Direction::Reply => 1,
        }
    }
}
