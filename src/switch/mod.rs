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
//! VLANs: untagged frames belong to [`DEFAULT_VLAN`], tagged frames to their
//! tag's VLAN id, and learning is per VLAN ("independent VLAN learning"), so a
//! station that uses one MAC on several VLANs is tracked correctly. Frames
//! are forwarded transparently with their tags; VLAN membership and filtering
//! per port are a separate layer on top of this.
//!
//! Everything here is I/O-free and deterministic: frames and times in,
//! decisions and counters out.

pub mod counters;
pub mod engine;
pub mod fdb;
pub mod frame;
pub mod port;
pub mod segment;

pub use counters::{DropCounters, DropReason, PortCounters, SegmentCounters};
pub use engine::{DEFAULT_VLAN, Egress, Engine, Forwarding, PortError};
pub use fdb::MacTable;
pub use port::{Port, PortId, PortRequest};
pub use segment::{ConfigError, MAX_MTU, MIN_MTU, Segment, SegmentConfig, SegmentId};

#[cfg(test)]
mod tests;
