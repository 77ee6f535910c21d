//! Per-port and per-segment counters.
//!
//! Every frame the switch refuses is counted under the reason it was refused,
//! so `switchboard ctl stats` can say *why* traffic is missing, not just that
//! it is.

use serde::{Deserialize, Serialize};

/// Why the switch dropped a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Shorter than an Ethernet header (14 bytes).
    TooShort,
    /// Longer than the segment's MTU allows.
    TooLong,
    /// The source address is a group address or all zeros.
    InvalidSource,
    /// The destination was learned on the port the frame came in on: sending
    /// it back would duplicate it on that link.
    SamePort,
    /// The egress port's queue was full (a slow reader); the frame was not
    /// sent to that port.
    TxQueueFull,
    /// The egress port refused the frame for another reason.
    TxError,
    /// The frame entered a port its storm guard has blocked (or was the
    /// flooded frame that made the guard block it).
    StormBlocked,
    /// A unicast frame from a split-horizon port to a station learned on
    /// another split-horizon port: relaying it would be a loop in a mesh.
    SplitHorizon,
    /// A tagged frame for a VLAN its ingress port is not a member of (or
    /// with a cut-short tag), on a segment that filters VLANs.
    VlanFiltered,
}

/// Drop counts by reason, for one port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounters {
    /// See [`DropReason::TooShort`].
    pub too_short: u64,
    /// See [`DropReason::TooLong`].
    pub too_long: u64,
    /// See [`DropReason::InvalidSource`].
    pub invalid_source: u64,
    /// See [`DropReason::SamePort`].
    pub same_port: u64,
    /// See [`DropReason::TxQueueFull`].
    pub tx_queue_full: u64,
    /// See [`DropReason::TxError`].
    pub tx_error: u64,
    /// See [`DropReason::StormBlocked`].
    #[serde(default)]
    pub storm_blocked: u64,
    /// See [`DropReason::SplitHorizon`].
    #[serde(default)]
    pub split_horizon: u64,
    /// See [`DropReason::VlanFiltered`].
    #[serde(default)]
    pub vlan_filtered: u64,
}

impl DropCounters {
    /// Counts `n` drops for `reason`.
    pub fn add(&mut self, reason: DropReason, n: u64) {
        let slot = match reason {
            DropReason::TooShort => &mut self.too_short,
            DropReason::TooLong => &mut self.too_long,
            DropReason::InvalidSource => &mut self.invalid_source,
            DropReason::SamePort => &mut self.same_port,
            DropReason::TxQueueFull => &mut self.tx_queue_full,
            DropReason::TxError => &mut self.tx_error,
            DropReason::StormBlocked => &mut self.storm_blocked,
            DropReason::SplitHorizon => &mut self.split_horizon,
            DropReason::VlanFiltered => &mut self.vlan_filtered,
        };
        *slot += n;
    }

    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.too_short
            + self.too_long
            + self.invalid_source
            + self.same_port
            + self.tx_queue_full
            + self.tx_error
            + self.storm_blocked
            + self.split_horizon
            + self.vlan_filtered
    }
}

/// Traffic through one port. "rx" is what the port delivered to the switch,
/// "tx" is what the switch delivered to the port's peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// Frames received from the port's peer.
    pub rx_frames: u64,
    /// Bytes in those frames.
    pub rx_bytes: u64,
    /// Frames sent to the port's peer.
    pub tx_frames: u64,
    /// Bytes in those frames.
    pub tx_bytes: u64,
    /// Frames dropped, by reason. Ingress reasons count frames received on
    /// this port; egress reasons count frames meant for it.
    pub drops: DropCounters,
}

impl PortCounters {
    /// Adds another port's counts to these (for segment totals).
    pub fn accumulate(&mut self, o: &PortCounters) {
        self.rx_frames += o.rx_frames;
        self.rx_bytes += o.rx_bytes;
        self.tx_frames += o.tx_frames;
        self.tx_bytes += o.tx_bytes;
        let d = &mut self.drops;
        d.too_short += o.drops.too_short;
        d.too_long += o.drops.too_long;
        d.invalid_source += o.drops.invalid_source;
        d.same_port += o.drops.same_port;
        d.tx_queue_full += o.drops.tx_queue_full;
        d.tx_error += o.drops.tx_error;
        d.storm_blocked += o.drops.storm_blocked;
        d.split_horizon += o.drops.split_horizon;
        d.vlan_filtered += o.drops.vlan_filtered;
    }
}

/// Events of a whole segment that belong to no single port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentCounters {
    /// Frames flooded because the destination was broadcast or multicast.
    pub flooded_multicast: u64,
    /// Frames flooded because the destination was not (or no longer) known.
    pub flooded_unknown: u64,
    /// Frames sent to exactly one learned port.
    pub unicast: u64,
    /// Source addresses not learned because the MAC table was full.
    pub learn_refused_table_full: u64,
    /// Addresses that appeared on a different port than the one learned.
    pub mac_moves: u64,
    /// Entries removed because they were not refreshed within the aging time.
    pub aged_out: u64,
    /// Times a port's storm guard blocked it.
    #[serde(default)]
    pub storm_blocks: u64,
}
