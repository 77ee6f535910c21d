//! Ports as the core sees them: a number on a segment and its counters.
//!
//! The core never knows *how* a port is attached (tap, VDE socket, stream);
//! that is the plugs crate's business. It only records a kind and a
//! description for display.

use super::counters::PortCounters;
use super::segment::SegmentId;
use serde::Serialize;

/// A port handle, unique across all segments of an engine while the port
/// exists. Handles of removed ports are reused for new ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PortId(pub(crate) u32);

impl PortId {
    /// A dense index, for callers that keep per-port arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a new port asks for.
#[derive(Debug, Clone, Default)]
pub struct PortRequest {
    /// A specific port number (VDE clients can ask for one with `sock[N]`),
    /// or `None` for the lowest free number from 1.
    pub number: Option<u16>,
    /// How the port is attached, for display: `"vde"`, `"tap"`, ...
    pub kind: &'static str,
    /// Who is attached, for display (a VDE client's own description).
    pub description: String,
}

/// A live port.
#[derive(Debug, Clone)]
pub struct Port {
    pub(crate) segment: SegmentId,
    pub(crate) number: u16,
    pub(crate) kind: &'static str,
    pub(crate) description: String,
    pub(crate) counters: PortCounters,
}

impl Port {
    /// The segment the port is on.
    pub fn segment(&self) -> SegmentId {
        self.segment
    }

    /// The port's number on its segment, as `vde_switch` numbers ports.
    pub fn number(&self) -> u16 {
        self.number
    }

    /// How the port is attached.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Who is attached.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Traffic counters.
    pub fn counters(&self) -> &PortCounters {
        &self.counters
    }
}
