//! What a router did with the packets it saw, counted by outcome.
//!
//! Every frame that reaches a router ends in exactly one of these buckets
//! (or in a forwarded/delivered count), so an operator can tell "nothing
//! arrived" from "arrived and was refused, and why".

use serde::{Deserialize, Serialize};

/// Per-router counters, monotonically increasing until reset.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterCounters {
    /// Frames handed to the router by its segments.
    pub received: u64,
    /// IPv4 packets sent on towards another host.
    pub forwarded: u64,
    /// IPv4 packets addressed to the router itself and consumed by it.
    pub delivered: u64,
    /// ARP packets consumed.
    pub arp_in: u64,
    /// ARP requests and replies the router sent.
    pub arp_out: u64,
    /// Frames whose destination MAC is neither the interface nor broadcast
    /// (flooded unicast meant for someone else): ignored.
    pub not_for_us: u64,
    /// Frames of a type the router does not route (IPv6, VLAN-tagged, ...).
    pub unsupported: u64,
    /// Truncated or inconsistent headers, bad IPv4 checksums or versions.
    pub dropped_malformed: u64,
    /// Impossible source addresses (multicast, broadcast, loopback, ...).
    pub dropped_martian: u64,
    /// Broadcast and multicast IPv4, which a router does not forward.
    pub dropped_broadcast: u64,
    /// Datagrams taken by the router's own services (DHCP, DNS).
    pub service_datagrams: u64,
    /// Datagrams the services sent (DHCP and DNS answers).
    pub service_replies: u64,
    /// No route to the destination (an ICMP net unreachable was due).
    pub dropped_no_route: u64,
    /// TTL ran out here (an ICMP time exceeded was due).
    pub ttl_exceeded: u64,
    /// Packets dropped because their next hop did not answer ARP.
    pub arp_failed: u64,
    /// Packets dropped because too many already waited for their next hop.
    pub arp_queue_full: u64,
    /// Packets dropped because the ARP cache was full of unresolved hops.
    pub arp_table_full: u64,
    /// Fragments addressed to the router itself (it does not reassemble).
    pub dropped_fragment: u64,
    /// Packets split into fragments to fit the egress MTU.
    pub fragmented: u64,
    /// Packets too big for the egress MTU with DF set (ICMP due).
    pub frag_needed: u64,
    /// ICMP messages the router sent (errors and echo replies).
    pub icmp_sent: u64,
    /// ICMP errors suppressed by the rate limit.
    pub icmp_rate_limited: u64,
    /// Frames dropped because the output queue had no room.
    pub tx_no_buffer: u64,
    /// Packets rewritten by NAT (both directions, ICMP errors included).
    pub nat_translated: u64,
    /// Unsolicited TCP/UDP at an outside address: no flow, no forward.
    pub nat_unsolicited: u64,
    /// New flows refused: the table is full or no port was free.
    pub nat_refused: u64,
    /// Packets a masquerade rule applies to that NAT cannot track (other
    /// protocols, ICMP errors about unknown flows): dropped rather than
    /// leaking an inside address.
    pub nat_untrackable: u64,
    /// Non-first fragments whose first fragment opened no tracked series.
    pub nat_fragments_dropped: u64,
    /// Inside hosts reaching a port forward through the outside address
    /// (hairpin), which is refused.
    pub nat_hairpin_refused: u64,
}
