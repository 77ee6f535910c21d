//! Layer 2: segments of MAC-learning switches.
//!
//! # Theory of operation
//!
//! A segment is one virtual switch. Each frame that arrives on a port is
//! checked (length, a valid source address), its source is learned in the
//! segment's MAC table under (MAC, VLAN), and its destination decides where it
//! goes: a learned unicast address goes to its one port; broadcast, multicast
//! and unknown unicast are flooded to every other port of the segment. A frame
//! is never sent back out of the port it came in on. Segments share nothing:
//! a frame can only cross from one to another through a router.
//!
//! VLANs: learning is per VLAN ("independent VLAN learning"), so a station
//! that uses one MAC on several VLANs is tracked correctly. A segment with
//! only [`DEFAULT_VLAN`] switches frames transparently with their tags
//! (untagged frames are in VLAN 1, tagged ones in their tag's VLAN). Once a
//! second VLAN is created, it filters and tags per port as an 802.1Q bridge
//! does (see [`vlan`]): flooding stays inside a VLAN, and the engine tells
//! the caller per egress port whether to push, rewrite or pop the tag.
//!
//! Loops: there is no spanning tree. A segment can make its tunnel ports
//! split-horizon (`mesh`: a frame from one tunnel never goes out of
//! another, which is all a full mesh of tunnels needs), and every port has
//! a storm guard that blocks it for a while when its peer floods more than
//! the segment's limit, which breaks any other loop (see [`storm_guard`]).
//!
//! Everything here is I/O-free and deterministic: frames and times in,
//! decisions and counters out.

pub mod counters;
pub mod engine;
pub mod fdb;
pub mod frame;
pub mod port;
pub mod segment;
pub mod storm_guard;
pub mod vlan;

pub use counters::{DropCounters, DropReason, PortCounters, SegmentCounters};
pub use engine::{DEFAULT_VLAN, Egress, Engine, Forwarding, PortError};
pub use fdb::MacTable;
pub use port::{Port, PortId, PortRequest};
pub use segment::{ConfigError, MAX_MTU, MIN_MTU, Segment, SegmentConfig, SegmentId};
pub use vlan::{TagAction, VlanError};

#[cfg(test)]
mod tests;
