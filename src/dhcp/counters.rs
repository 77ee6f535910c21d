//! What a DHCP server did with the messages it saw.
//!
//! Received messages are counted by type as they arrive, replies by type as
//! they leave, and the refusals by reason, so an operator can tell "no
//! client asked" from "clients asked and the pool was empty" from "something
//! sent garbage to port 67".

use serde::{Deserialize, Serialize};

/// Per-server counters, monotonically increasing for the server's life.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhcpCounters {
    /// DHCPDISCOVER messages received.
    pub discover: u64,
    /// DHCPOFFER replies sent.
    pub offer: u64,
    /// DHCPREQUEST messages received.
    pub request: u64,
    /// DHCPACK replies sent (to REQUEST and INFORM).
    pub ack: u64,
    /// DHCPNAK replies sent.
    pub nak: u64,
    /// DHCPRELEASE messages received.
    pub release: u64,
    /// DHCPDECLINE messages received.
    pub decline: u64,
    /// DHCPINFORM messages received.
    pub inform: u64,
    /// Clients turned away because no address was free or the lease cap
    /// (`max_leases`) was reached; the caller logs these, since a full pool
    /// is a configuration problem the operator must see.
    pub exhausted: u64,
    /// Payloads that are not a client's DHCP message: short, not Ethernet,
    /// BOOTREPLY, no or unknown message type, impossible client MAC.
    pub malformed: u64,
    /// Well-formed messages that called for no reply: relayed (giaddr set,
    /// relays are not supported), meant for another server, releases and
    /// declines of addresses the client does not hold, renewals from outside
    /// the subnet.
    pub ignored: u64,
    /// Lease events dropped because nobody took them in time (the queue is
    /// bounded); non-zero means the DNS names or the lease file may be stale.
    pub events_dropped: u64,
}
