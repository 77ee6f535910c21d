//! Ports as the core sees them: a number on a segment and its counters.
//!
//! The core never knows *how* a port is attached (tap, VDE socket, stream);
//! that is the plugs crate's business. It only records a kind and a
//! description for display, plus the two things loop protection needs to
//! know about a port: whether it is a split-horizon port, and its storm
//! guard.

use super::counters::PortCounters;
use super::segment::SegmentId;
use super::storm_guard::StormGuard;
use crate::time::Instant;
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
    /// A split-horizon port: frames that entered one are never sent out of
    /// another on the same segment. For full meshes of tunnels, where every
    /// switch reaches every other directly, so relaying between two
    /// tunnels is never needed and only ever makes a loop.
    pub split_horizon: bool,
    /// A number both ends of this port's link compute alike (0: none), so
    /// that when a loop storms, the storm guards at both ends block the
    /// same link instead of cutting the two switches off each other (see
    /// [`storm_guard`](super::storm_guard)).
    pub link_key: u64,
}

/// A live port.
#[derive(Debug, Clone)]
pub struct Port {
    pub(crate) segment: SegmentId,
    pub(crate) number: u16,
    pub(crate) kind: &'static str,
    pub(crate) description: String,
    pub(crate) counters: PortCounters,
    pub(crate) split_horizon: bool,
    pub(crate) storm: StormGuard,
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

    /// Whether the port is a split-horizon port (see
    /// [`PortRequest::split_horizon`]).
    pub fn split_horizon(&self) -> bool {
        self.split_horizon
    }

    /// Until when the storm guard blocks the port, if it does: shown by
    /// `ctl ports` so an operator sees which cable of a loop is cut.
    pub fn blocked_until(&self) -> Option<Instant> {
        self.storm.blocked_until()
    }

    /// The port's storm guard.
    pub fn storm_guard(&self) -> &StormGuard {
        &self.storm
    }
}
