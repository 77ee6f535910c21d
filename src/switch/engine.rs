//! The engine: every segment and port, driven by frames and time.
//!
//! The daemon calls [`Engine::handle`] once per received frame with the
//! current time; the engine learns, decides, counts, and fills an [`Egress`]
//! list with the ports the frame must go out of. It never touches a file
//! descriptor or a clock, so every behaviour is testable in memory.
//! Periodic work (MAC aging) happens in [`Engine::handle_timeout`], at the
//! deadline [`Engine::poll_timeout`] announces.

use super::counters::{DropReason, SegmentCounters};
use super::fdb::Learned;
use super::frame::{ETHERNET_HEADER_LEN, FrameHeader};
use super::port::{Port, PortId, PortRequest};
use super::segment::{ConfigError, Segment, SegmentConfig, SegmentId};
use crate::time::Instant;
use std::fmt;
use std::time::Duration;

/// The VLAN an untagged frame belongs to (802.1Q's default port VLAN).
pub const DEFAULT_VLAN: u16 = 1;

/// How often expired MAC entries are swept out.
const AGING_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Where a frame goes: the egress ports for one frame. Owned by the caller
/// and reused for every frame, so deciding allocates nothing once it has
/// grown to the largest segment.
#[derive(Debug, Default)]
pub struct Egress {
    ports: Vec<PortId>,
}

impl Egress {
    /// An empty list with room for `n` ports.
    pub fn with_capacity(n: usize) -> Self {
        Egress {
            ports: Vec::with_capacity(n),
        }
    }

    /// The ports to send the frame out of.
    pub fn ports(&self) -> &[PortId] {
        &self.ports
    }

    /// True when the frame goes nowhere.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

/// What the engine did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// Sent to the one port its destination was learned on.
    Unicast,
    /// Sent to every other port of the segment.
    Flood,
    /// Not sent anywhere, for this reason (counted on the ingress port).
    Dropped(DropReason),
    /// The ingress port does not exist (a caller bug; counted globally).
    UnknownPort,
}

/// Why a port could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    /// No segment has this handle.
    NoSuchSegment,
    /// Every port number is taken.
    SegmentFull {
        /// The segment's name.
        segment: String,
        /// Its port limit.
        max_ports: u16,
    },
    /// The requested number is above the segment's limit.
    NumberOutOfRange {
        /// The number asked for.
        number: u16,
        /// The segment's limit.
        max_ports: u16,
    },
    /// The requested number is in use.
    NumberInUse(u16),
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::NoSuchSegment => write!(f, "no such segment"),
            PortError::SegmentFull { segment, max_ports } => {
                write!(f, "segment {segment:?} has all {max_ports} ports in use")
            }
            PortError::NumberOutOfRange { number, max_ports } => {
                write!(
                    f,
                    "port {number} is above the segment's limit of {max_ports}"
                )
            }
            PortError::NumberInUse(n) => write!(f, "port {n} is in use"),
        }
    }
}

impl std::error::Error for PortError {}

/// All segments and ports.
#[derive(Debug, Default)]
pub struct Engine {
    segments: Vec<Segment>,
    ports: Vec<Option<Port>>,
    free_ids: Vec<u32>,
    next_sweep: Option<Instant>,
    unknown_port_frames: u64,
}

impl Engine {
    /// An engine with no segments.
    pub fn new() -> Self {
        Engine::default()
    }

    /// Adds a segment. Names must be unique.
    pub fn add_segment(&mut self, config: SegmentConfig) -> Result<SegmentId, ConfigError> {
        config.validate()?;
        if self.segment_by_name(&config.name).is_some() {
            return Err(ConfigError(format!(
                "segment {:?} is defined twice",
                config.name
            )));
        }
        let id = SegmentId(self.segments.len() as u32);
        self.segments.push(Segment::new(config));
        Ok(id)
    }

    /// Finds a segment by name.
    pub fn segment_by_name(&self, name: &str) -> Option<SegmentId> {
        self.segments
            .iter()
            .position(|s| s.config.name == name)
            .map(|i| SegmentId(i as u32))
    }

    /// A segment's state.
    pub fn segment(&self, id: SegmentId) -> Option<&Segment> {
        self.segments.get(id.index())
    }

    /// All segments with their handles.
    pub fn segments(&self) -> impl Iterator<Item = (SegmentId, &Segment)> {
        self.segments
            .iter()
            .enumerate()
            .map(|(i, s)| (SegmentId(i as u32), s))
    }

    /// The number a new port on `segment` would get: `requested` if it is
    /// in range and free, else the lowest free number from 1. Lets a caller
    /// that must announce the number before the port exists (the VDE2
    /// handshake names its data socket after it) check it first.
    pub fn pick_port_number(
        &self,
        segment: SegmentId,
        requested: Option<u16>,
    ) -> Result<u16, PortError> {
        let seg = self
            .segments
            .get(segment.index())
            .ok_or(PortError::NoSuchSegment)?;
        let max_ports = seg.config.max_ports;
        match requested {
            Some(n) if n > max_ports => Err(PortError::NumberOutOfRange {
                number: n,
                max_ports,
            }),
            Some(n) if seg.by_number[usize::from(n)].is_some() => Err(PortError::NumberInUse(n)),
            Some(n) => Ok(n),
            None => (1..=max_ports)
                .find(|&n| seg.by_number[usize::from(n)].is_none())
                .ok_or_else(|| PortError::SegmentFull {
                    segment: seg.config.name.clone(),
                    max_ports,
                }),
        }
    }

    /// Attaches a new port to a segment.
    pub fn add_port(&mut self, segment: SegmentId, req: PortRequest) -> Result<PortId, PortError> {
        let number = self.pick_port_number(segment, req.number)?;
        let seg = &mut self.segments[segment.index()];
        let port = Port {
            segment,
            number,
            kind: req.kind,
            description: req.description,
            counters: Default::default(),
        };
        let id = match self.free_ids.pop() {
            Some(i) => {
                self.ports[i as usize] = Some(port);
                PortId(i)
            }
            None => {
                self.ports.push(Some(port));
                PortId((self.ports.len() - 1) as u32)
            }
        };
        seg.by_number[usize::from(number)] = Some(id);
        seg.members.push(id);
        Ok(id)
    }

    /// Detaches a port: forgets the addresses learned on it and frees its
    /// number. Returns the port's final state (for logs), or `None` if it did
    /// not exist.
    pub fn remove_port(&mut self, id: PortId) -> Option<Port> {
        let port = self.ports.get_mut(id.index())?.take()?;
        let seg = &mut self.segments[port.segment.index()];
        seg.fdb.flush_port(id.0);
        seg.members.retain(|&p| p != id);
        seg.by_number[usize::from(port.number)] = None;
        self.free_ids.push(id.0);
        Some(port)
    }

    /// A port's state.
    pub fn port(&self, id: PortId) -> Option<&Port> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    /// All live ports with their handles.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &Port)> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (PortId(i as u32), p)))
    }

    /// One more than the largest port index ever handed out: the length a
    /// caller's per-port array needs.
    pub fn port_index_bound(&self) -> usize {
        self.ports.len()
    }

    /// Frames handed to [`handle`](Self::handle) for a port that did not
    /// exist.
    pub fn unknown_port_frames(&self) -> u64 {
        self.unknown_port_frames
    }

    /// Decides where `frame`, received on `ingress` at `now`, goes. Fills
    /// `out` with the egress ports (empty when dropped) and counts the frame.
    pub fn handle(
        &mut self,
        now: Instant,
        ingress: PortId,
        frame: &[u8],
        out: &mut Egress,
    ) -> Forwarding {
        self.handle_sized(now, ingress, frame, frame.len(), out)
    }

    /// Like [`handle`](Self::handle), for a frame whose size on a wire is
    /// not its length: a TCP super-frame from an offloading tap is one
    /// frame here but many MTU-sized frames on any wire, and the MTU check
    /// applies to `wire_len`, the largest of those.
    pub fn handle_sized(
        &mut self,
        now: Instant,
        ingress: PortId,
        frame: &[u8],
        wire_len: usize,
        out: &mut Egress,
    ) -> Forwarding {
        out.ports.clear();
        let Some(port) = self.ports.get_mut(ingress.index()).and_then(Option::as_mut) else {
            self.unknown_port_frames += 1;
            return Forwarding::UnknownPort;
        };
        port.counters.rx_frames += 1;
        port.counters.rx_bytes += frame.len() as u64;
        let seg = &mut self.segments[port.segment.index()];

        let verdict = decide(seg, now, ingress, frame, wire_len);
        if self.next_sweep.is_none() && !seg.fdb.is_empty() {
            self.next_sweep = Some(now + AGING_SWEEP_INTERVAL);
        }
        match verdict {
            Decision::Drop(reason) => {
                port.counters.drops.add(reason, 1);
                return Forwarding::Dropped(reason);
            }
            Decision::To(p) => {
                seg.counters.unicast += 1;
                out.ports.push(p);
                return Forwarding::Unicast;
            }
            Decision::Flood => {}
        }
        out.ports
            .extend(seg.members.iter().copied().filter(|&p| p != ingress));
        Forwarding::Flood
    }

    /// Records what the plug of `port` did with the frames it was given:
    /// `sent` frames (`sent_bytes` bytes) went out, the rest were dropped
    /// because its queue was full or for another error.
    pub fn record_tx(
        &mut self,
        port: PortId,
        sent: u64,
        sent_bytes: u64,
        dropped_full: u64,
        dropped_error: u64,
    ) {
        if let Some(p) = self.ports.get_mut(port.index()).and_then(Option::as_mut) {
            p.counters.tx_frames += sent;
            p.counters.tx_bytes += sent_bytes;
            p.counters.drops.add(DropReason::TxQueueFull, dropped_full);
            p.counters.drops.add(DropReason::TxError, dropped_error);
        }
    }

    /// Zeroes the counters of one port, or of every port and segment.
    pub fn reset_counters(&mut self, port: Option<PortId>) {
        match port {
            Some(id) => {
                if let Some(p) = self.ports.get_mut(id.index()).and_then(Option::as_mut) {
                    p.counters = Default::default();
                }
            }
            None => {
                self.ports
                    .iter_mut()
                    .flatten()
                    .for_each(|p| p.counters = Default::default());
                self.segments
                    .iter_mut()
                    .for_each(|s| s.counters = SegmentCounters::default());
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_sweep
    }

    /// Does the periodic work due at `now`: sweeps expired MAC entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_sweep.is_some_and(|t| t > now) {
            return;
        }
        let mut any_left = false;
        for seg in &mut self.segments {
            seg.counters.aged_out += seg.fdb.expire(now);
            any_left |= !seg.fdb.is_empty();
        }
        self.next_sweep = any_left.then(|| now + AGING_SWEEP_INTERVAL);
    }
}

/// The switching decision for one frame, before counting.
enum Decision {
    Drop(DropReason),
    To(PortId),
    Flood,
}

fn decide(
    seg: &mut Segment,
    now: Instant,
    ingress: PortId,
    frame: &[u8],
    wire_len: usize,
) -> Decision {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Decision::Drop(DropReason::TooShort);
    }
    if wire_len > seg.max_frame_len {
        return Decision::Drop(DropReason::TooLong);
    }
    let Some(hdr) = FrameHeader::parse(frame) else {
        return Decision::Drop(DropReason::TooShort);
    };
    if !hdr.src.is_valid_source() {
        return Decision::Drop(DropReason::InvalidSource);
    }
    if seg.config.hub {
        seg.counters.flooded_unknown += 1;
        return Decision::Flood;
    }
    let vlan = hdr.tag.unwrap_or(DEFAULT_VLAN);
    let (learned, swept) = seg.fdb.learn(hdr.src, vlan, ingress.0, now);
    seg.counters.aged_out += swept;
    match learned {
        Learned::Refused => seg.counters.learn_refused_table_full += 1,
        Learned::Moved { from } => {
            seg.counters.mac_moves += 1;
            tracing::debug!(segment = %seg.config.name, mac = %hdr.src, vlan, from, to = ingress.0, "MAC moved between ports");
        }
        Learned::New | Learned::Refreshed => {}
    }
    if hdr.dst.is_multicast() {
        seg.counters.flooded_multicast += 1;
        return Decision::Flood;
    }
    match seg.fdb.lookup(hdr.dst, vlan, now) {
        Some(p) if p == ingress.0 => Decision::Drop(DropReason::SamePort),
        Some(p) => Decision::To(PortId(p)),
        None => {
            seg.counters.flooded_unknown += 1;
            Decision::Flood
        }
    }
}
