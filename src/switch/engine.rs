//! The engine: every segment and port, driven by frames and time.
//!
//! The daemon calls [`Engine::handle`] once per received frame with the
//! current time; the engine learns, decides, counts, and fills an [`Egress`]
//! list with the ports the frame must go out of. It never touches a file
//! descriptor or a clock, so every behaviour is testable in memory.
//! Periodic work (MAC aging, lifting storm blocks) happens in
//! [`Engine::handle_timeout`], at the deadline [`Engine::poll_timeout`]
//! announces.
//!
//! Loop protection lives here too, because it is a forwarding decision:
//! a frame that entered a split-horizon port is never sent out of another
//! (flooded or unicast), and every flooded broadcast or multicast frame is
//! metered against its
//! ingress port's [`StormGuard`](super::storm_guard::StormGuard). A blocked
//! port is cut off both ways: frames entering it are dropped before
//! learning, it gets no flooded frames, and the addresses learned on it are
//! forgotten when it is blocked, so unicast to them floods to the other
//! ports instead (a loop taught the switch wrong places for them anyway).
//! As the entries are gone and a blocked port learns nothing, no unicast is
//! ever sent to a blocked port.
//!
//! The switch at the other end of the cut cable does not know: a loop
//! taught it wrong ports for stations (their own broadcasts came back
//! through the cables), and unicast to them would be lost until they spoke
//! again or aged out. So a segment that sees addresses flapping between
//! ports, or blocks a port, ages its MAC table in seconds for a while, as
//! 802.1D does after a topology change (see
//! [`FAST_AGING`](super::segment::FAST_AGING)).
//!
//! VLANs are a forwarding decision too: on a segment that filters (see
//! [`vlan`](super::vlan)), a frame is classified into a VLAN at ingress,
//! learned and looked up under it, and only goes to ports in it; the
//! [`Egress`] then carries, per port, whether the tag must be pushed,
//! rewritten or popped. The decision is compiled twice, with and without
//! filtering, so a segment with no VLANs runs the code it always ran.

use super::counters::{DropReason, SegmentCounters};
use super::fdb::Learned;
use super::frame::{ETHERNET_HEADER_LEN, FrameHeader};
use super::port::{Port, PortId, PortRequest};
use super::segment::{ConfigError, MemberFlags, Segment, SegmentConfig, SegmentId};
use super::storm_guard::{Meter, StormGuard};
use super::vlan::{self, PortVlans, TagAction, VlanError, check_vid};
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
    /// Empty when every port gets the frame as it arrived (always, on a
    /// segment that does not filter VLANs); else one action per port.
    actions: Vec<TagAction>,
}

impl Egress {
    /// An empty list with room for `n` ports.
    pub fn with_capacity(n: usize) -> Self {
        Egress {
            ports: Vec::with_capacity(n),
            actions: Vec::with_capacity(n),
        }
    }

    /// What each port must do to the frame's VLAN tag, parallel to
    /// [`ports`](Self::ports); empty means [`TagAction::Keep`] for all, so
    /// callers test one length on the fast path.
    pub fn actions(&self) -> &[TagAction] {
        &self.actions
    }

    /// The tag action for the `i`th egress port.
    pub fn action(&self, i: usize) -> TagAction {
        self.actions.get(i).copied().unwrap_or(TagAction::Keep)
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

/// Why a segment could not be removed. Removal is refused rather than
/// done by force because every port belongs to a plug the caller owns (a
/// socket, a tap, a router interface): the engine cannot close those, so
/// dropping the ports behind the caller's back would leave plugs feeding
/// frames to ports that no longer exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveSegmentError {
    /// No segment has this handle (never had, or already removed).
    NoSuchSegment,
    /// Ports are still attached; the caller must remove them first.
    PortsRemain {
        /// The segment's name.
        segment: String,
        /// How many ports it still has.
        ports: usize,
    },
}

impl fmt::Display for RemoveSegmentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveSegmentError::NoSuchSegment => write!(f, "no such segment"),
            RemoveSegmentError::PortsRemain { segment, ports } => write!(
                f,
                "segment {segment:?} still has {ports} port(s); remove them first"
            ),
        }
    }
}

impl std::error::Error for RemoveSegmentError {}

/// All segments and ports.
///
/// Segments live in slots: removing one empties its slot, so the handles of
/// the others stay valid, and the next segment added takes the lowest empty
/// slot, so starting and destroying segments forever does not grow the
/// table. A removed segment's handle may thus come to name a new segment;
/// whoever keeps handles must forget a segment's when it is removed (the
/// daemon closes everything that served it first).
#[derive(Debug, Default)]
pub struct Engine {
    segments: Vec<Option<Segment>>,
    ports: Vec<Option<Port>>,
    free_ids: Vec<u32>,
    next_sweep: Option<Instant>,
    /// The earliest end of a storm block, if any port is blocked.
    next_unblock: Option<Instant>,
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
        let segment = Some(Segment::new(config));
        let id = match self.segments.iter().position(Option::is_none) {
            Some(i) => {
                self.segments[i] = segment;
                i
            }
            None => {
                self.segments.push(segment);
                self.segments.len() - 1
            }
        };
        Ok(SegmentId(id as u32))
    }

    /// Removes a segment that has no ports left, with its MAC table, VLANs
    /// and counters; returns its final state (for logs and for starting it
    /// again with the same configuration). Its name is free at once, and
    /// every other segment and port keeps its handle. Refused while ports
    /// remain (see [`RemoveSegmentError`]).
    pub fn remove_segment(&mut self, id: SegmentId) -> Result<Segment, RemoveSegmentError> {
        let seg = slot_mut(&mut self.segments, id).ok_or(RemoveSegmentError::NoSuchSegment)?;
        if !seg.members.is_empty() {
            return Err(RemoveSegmentError::PortsRemain {
                segment: seg.config.name.clone(),
                ports: seg.members.len(),
            });
        }
        let removed = self
            .segments
            .get_mut(id.index())
            .and_then(Option::take)
            .ok_or(RemoveSegmentError::NoSuchSegment)?;
        // Trailing empty slots are given back, so the table shrinks when
        // the newest segments go.
        while self.segments.last().is_some_and(Option::is_none) {
            self.segments.pop();
        }
        Ok(removed)
    }

    /// Finds a segment by name.
    pub fn segment_by_name(&self, name: &str) -> Option<SegmentId> {
        self.segments()
            .find(|(_, s)| s.config.name == name)
            .map(|(id, _)| id)
    }

    /// A segment's state.
    pub fn segment(&self, id: SegmentId) -> Option<&Segment> {
        self.segments.get(id.index()).and_then(Option::as_ref)
    }

    /// All segments with their handles, by handle.
    pub fn segments(&self) -> impl Iterator<Item = (SegmentId, &Segment)> {
        self.segments
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (SegmentId(i as u32), s)))
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
        let seg = self.segment(segment).ok_or(PortError::NoSuchSegment)?;
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
        let seg = slot_mut(&mut self.segments, segment).ok_or(PortError::NoSuchSegment)?;
        let port = Port {
            segment,
            number,
            kind: req.kind,
            description: req.description,
            counters: Default::default(),
            split_horizon: req.split_horizon,
            storm: StormGuard::new(seg.config.storm_limit_pps, req.link_key),
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
        seg.member_flags.push(MemberFlags::default());
        seg.member_vlans.push(PortVlans::default());
        seg.set_member_flags(id, |f| f.split_horizon = req.split_horizon);
        Ok(id)
    }

    /// Detaches a port: forgets the addresses learned on it and frees its
    /// number. Returns the port's final state (for logs), or `None` if it did
    /// not exist.
    pub fn remove_port(&mut self, id: PortId) -> Option<Port> {
        let port = self.ports.get_mut(id.index())?.take()?;
        self.free_ids.push(id.0);
        // A port's segment outlives it (removing a segment with ports is
        // refused), so the slot is always there.
        let Some(seg) = slot_mut(&mut self.segments, port.segment) else {
            return Some(port);
        };
        seg.fdb.flush_port(id.0);
        if let Some(i) = seg.members.iter().position(|&p| p == id) {
            seg.members.remove(i);
            seg.member_flags.remove(i);
            seg.member_vlans.remove(i);
        }
        seg.set_member_flags(id, |_| {});
        if let Some(slot) = seg.by_number.get_mut(usize::from(port.number)) {
            *slot = None;
        }
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

    /// Creates VLAN `vid` on a segment. The first VLAN besides the
    /// default turns filtering on for the segment (see [`vlan`]): what was
    /// learned transparently is forgotten, since it was learned under the
    /// frames' tags rather than the ports' VLANs.
    pub fn create_vlan(&mut self, seg: SegmentId, vid: u16) -> Result<(), VlanError> {
        check_vid(vid)?;
        let s = slot_mut(&mut self.segments, seg).ok_or(VlanError::NoSuchSegment)?;
        if !s.vlans.created.insert(vid) {
            return Err(VlanError::Exists);
        }
        if !s.vlans.filtering {
            s.vlans.filtering = true;
            s.fdb.clear();
        }
        Ok(())
    }

    /// Removes VLAN `vid` from a segment. Refused while any port is in it
    /// (untagged or tagged), and always for the default VLAN. Removing the
    /// last VLAN besides the default turns filtering off again.
    pub fn remove_vlan(&mut self, seg: SegmentId, vid: u16) -> Result<(), VlanError> {
        check_vid(vid)?;
        let s = slot_mut(&mut self.segments, seg).ok_or(VlanError::NoSuchSegment)?;
        if !s.vlans.created.contains(vid) {
            return Err(VlanError::NoSuchVlan);
        }
        if vid == DEFAULT_VLAN || s.member_vlans.iter().any(|v| v.is_member(vid)) {
            return Err(VlanError::InUse);
        }
        s.vlans.created.remove(vid);
        let only_default = s.vlans.created.iter().eq([DEFAULT_VLAN]);
        if only_default && s.member_vlans.iter().all(PortVlans::is_default) {
            s.vlans.filtering = false;
            s.fdb.clear();
        }
        Ok(())
    }

    /// The VLANs of a segment, ascending (the default VLAN included).
    pub fn vlans(&self, seg: SegmentId) -> Vec<u16> {
        self.segment(seg)
            .map(|s| s.vlans.created.iter().collect())
            .unwrap_or_default()
    }

    /// A port's untagged VLAN and its tagged VLANs (ascending), or `None`
    /// if the port does not exist.
    pub fn port_vlans(&self, port: PortId) -> Option<(u16, Vec<u16>)> {
        let p = self.port(port)?;
        let s = self.segment(p.segment)?;
        let v = &s.member_vlans[s.member_index(port)?];
        Some((v.untagged, v.tagged.iter().collect()))
    }

    /// Sets a port's untagged VLAN (its PVID): untagged and priority-tagged
    /// frames it receives belong to `vid`, and frames of `vid` leave it
    /// untagged. If it also carried `vid` tagged, that membership becomes
    /// this one.
    pub fn set_untagged_vlan(&mut self, port: PortId, vid: u16) -> Result<(), VlanError> {
        self.change_vlans(port, vid, |v| {
            let old = v.untagged;
            v.untagged = vid;
            v.tagged.remove(vid);
            (old != vid).then_some(old)
        })
    }

    /// Makes a port a tagged member of `vid` (a trunk port carries many).
    /// A port is in a VLAN one way only: if `vid` is already its untagged
    /// VLAN, or already tagged, this is refused as [`VlanError::Exists`].
    pub fn add_tagged_vlan(&mut self, port: PortId, vid: u16) -> Result<(), VlanError> {
        let mut exists = false;
        self.change_vlans(port, vid, |v| {
            exists = v.untagged == vid || !v.tagged.insert(vid);
            None
        })?;
        if exists {
            return Err(VlanError::Exists);
        }
        Ok(())
    }

    /// Ends a port's tagged membership of `vid`; what it learned there is
    /// forgotten.
    pub fn remove_tagged_vlan(&mut self, port: PortId, vid: u16) -> Result<(), VlanError> {
        let mut had = true;
        self.change_vlans(port, vid, |v| {
            had = v.tagged.remove(vid);
            had.then_some(vid)
        })?;
        if !had {
            return Err(VlanError::NoSuchVlan);
        }
        Ok(())
    }

    /// Applies `f` to `port`'s memberships after checking `vid` exists on
    /// its segment; `f` returns a VLAN the port may have left, whose
    /// entries for the port are flushed if it is no longer a member.
    fn change_vlans(
        &mut self,
        port: PortId,
        vid: u16,
        f: impl FnOnce(&mut PortVlans) -> Option<u16>,
    ) -> Result<(), VlanError> {
        check_vid(vid)?;
        let seg = self.port(port).ok_or(VlanError::NoSuchPort)?.segment;
        let s = slot_mut(&mut self.segments, seg).ok_or(VlanError::NoSuchSegment)?;
        if !s.vlans.created.contains(vid) {
            return Err(VlanError::NoSuchVlan);
        }
        let i = s.member_index(port).ok_or(VlanError::NoSuchPort)?;
        let v = &mut s.member_vlans[i];
        if let Some(left) = f(v)
            && !v.is_member(left)
        {
            s.fdb.flush_port_vlan(port.0, left);
        }
        Ok(())
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
        out.actions.clear();
        let Some(port) = self.ports.get_mut(ingress.index()).and_then(Option::as_mut) else {
            self.unknown_port_frames += 1;
            return Forwarding::UnknownPort;
        };
        port.counters.rx_frames += 1;
        port.counters.rx_bytes += frame.len() as u64;
        if port.storm.is_blocked() {
            // Before learning: what a storming port says is not believed.
            port.counters.drops.add(DropReason::StormBlocked, 1);
            return Forwarding::Dropped(DropReason::StormBlocked);
        }
        let from_split = port.split_horizon;
        let Some(seg) = slot_mut(&mut self.segments, port.segment) else {
            // Cannot happen (a segment with ports is never removed).
            self.unknown_port_frames += 1;
            return Forwarding::UnknownPort;
        };

        let mut class = None;
        let verdict = if seg.vlans.filtering {
            decide::<true>(seg, now, ingress, frame, wire_len, &mut class)
        } else {
            decide::<false>(seg, now, ingress, frame, wire_len, &mut class)
        };
        if self.next_sweep.is_none() && !seg.fdb.is_empty() {
            self.next_sweep = Some(now + AGING_SWEEP_INTERVAL);
        }
        match verdict {
            Decision::Drop(reason) => {
                port.counters.drops.add(reason, 1);
                return Forwarding::Dropped(reason);
            }
            Decision::To(p) => {
                // Only split-horizon ingress pays for the egress lookup.
                if from_split
                    && self
                        .ports
                        .get(p.index())
                        .and_then(Option::as_ref)
                        .is_some_and(|e| e.split_horizon)
                {
                    return self.drop_on(ingress, DropReason::SplitHorizon);
                }
                seg.counters.unicast += 1;
                out.ports.push(p);
                if let Some(c) = class {
                    // decide() checked that `p` is in the VLAN
                    let a = seg
                        .member_index(p)
                        .and_then(|i| seg.member_vlans[i].egress(c.vid, c.tci))
                        .unwrap_or(TagAction::Keep);
                    out.actions.push(a);
                }
                return Forwarding::Unicast;
            }
            Decision::Flood => {}
        }
        // Only group-addressed frames are metered: they are what a loop
        // multiplies, while a fast one-way stream to a station that has
        // gone quiet (unknown unicast, flooded) is legitimate traffic.
        let group = frame.first().is_some_and(|b| b & 0x01 != 0);
        if group && let Meter::Trip { rate_pps } = port.storm.meter(now) {
            self.block(ingress, now, rate_pps);
            return Forwarding::Dropped(DropReason::StormBlocked);
        }
        if let Some(c) = class {
            // Flooding within the frame's VLAN, each port in its own form.
            let members = seg.members.iter().zip(&seg.member_flags);
            for ((&p, f), v) in members.zip(&seg.member_vlans) {
                if p == ingress || f.blocked || (from_split && f.split_horizon) {
                    continue;
                }
                if let Some(a) = v.egress(c.vid, c.tci) {
                    out.ports.push(p);
                    out.actions.push(a);
                }
            }
        } else if seg.plain_flood {
            out.ports
                .extend(seg.members.iter().copied().filter(|&p| p != ingress));
        } else {
            out.ports.extend(
                seg.members
                    .iter()
                    .zip(&seg.member_flags)
                    .filter(|&(&p, f)| {
                        p != ingress && !f.blocked && !(from_split && f.split_horizon)
                    })
                    .map(|(&p, _)| p),
            );
        }
        Forwarding::Flood
    }

    /// Counts a drop on `port` and says so.
    fn drop_on(&mut self, port: PortId, reason: DropReason) -> Forwarding {
        if let Some(p) = self.ports.get_mut(port.index()).and_then(Option::as_mut) {
            p.counters.drops.add(reason, 1);
        }
        Forwarding::Dropped(reason)
    }

    /// Blocks `id`, whose storm guard just tripped on a flooded frame (which
    /// is dropped and counted): no frames in, no floods out, its addresses
    /// forgotten; the other ports of its segment get full buckets, so the
    /// tail of the storm still in flight does not block them too.
    fn block(&mut self, id: PortId, now: Instant, rate_pps: u64) {
        let Some(port) = self.ports.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        let Some(seg) = slot_mut(&mut self.segments, port.segment) else {
            return;
        };
        let len = port.storm.block(now, seg.config.storm_block);
        port.counters.drops.add(DropReason::StormBlocked, 1);
        seg.counters.storm_blocks += 1;
        let forgotten = seg.fdb.flush_port(id.0);
        seg.age_fast(now);
        seg.set_member_flags(id, |f| f.blocked = true);
        tracing::warn!(
            segment = %seg.config.name,
            port = port.number,
            kind = port.kind,
            description = %port.description,
            rate_pps,
            limit_pps = seg.config.storm_limit_pps,
            block_secs = len.as_secs(),
            forgotten_macs = forgotten,
            "flood storm (a loop?): blocking the port"
        );
        let until = now + len;
        self.next_unblock = Some(self.next_unblock.map_or(until, |t| t.min(until)));
        for &m in &seg.members {
            if m != id
                && let Some(p) = self.ports.get_mut(m.index()).and_then(Option::as_mut)
            {
                p.storm.refill(now);
            }
        }
    }

    /// Lifts the storm blocks that end by `now` and finds the next end.
    fn unblock_due(&mut self, now: Instant) {
        let mut next: Option<Instant> = None;
        for (i, slot) in self.ports.iter_mut().enumerate() {
            let Some(port) = slot.as_mut() else { continue };
            if port.storm.unblock_if_due(now) {
                let Some(seg) = slot_mut(&mut self.segments, port.segment) else {
                    continue;
                };
                seg.set_member_flags(PortId(i as u32), |f| f.blocked = false);
                tracing::info!(
                    segment = %seg.config.name,
                    port = port.number,
                    kind = port.kind,
                    description = %port.description,
                    "storm block over: the port forwards again"
                );
            } else if let Some(t) = port.storm.blocked_until() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        self.next_unblock = next;
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
                    .flatten()
                    .for_each(|s| s.counters = SegmentCounters::default());
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let fast_end = self
            .segments
            .iter()
            .flatten()
            .filter_map(Segment::fast_aging_until)
            .min();
        [self.next_sweep, self.next_unblock, fast_end]
            .into_iter()
            .flatten()
            .min()
    }

    /// Does the periodic work due at `now`: lifts storm blocks that have
    /// run their time, sweeps expired MAC entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_unblock.is_some_and(|t| t <= now) {
            self.unblock_due(now);
        }
        for seg in self.segments.iter_mut().flatten() {
            if seg.end_fast_aging_if_due(now) {
                tracing::info!(segment = %seg.config.name, aging_secs = seg.config.mac_aging.as_secs(), "no more flapping: MAC aging back to normal");
            }
        }
        if self.next_sweep.is_some_and(|t| t > now) {
            return;
        }
        let mut any_left = false;
        for seg in self.segments.iter_mut().flatten() {
            seg.counters.aged_out += seg.fdb.expire(now);
            any_left |= !seg.fdb.is_empty();
        }
        self.next_sweep = any_left.then(|| now + AGING_SWEEP_INTERVAL);
    }
}

/// The live segment in `id`'s slot: a free function over the table alone,
/// so callers can hold a port (from `Engine::ports`) at the same time.
fn slot_mut(segments: &mut [Option<Segment>], id: SegmentId) -> Option<&mut Segment> {
    segments.get_mut(id.index()).and_then(Option::as_mut)
}

/// The switching decision for one frame, before counting.
enum Decision {
    Drop(DropReason),
    To(PortId),
    Flood,
}

/// The VLAN a frame was classified into on a filtering segment, and the
/// tag it arrived with.
#[derive(Clone, Copy)]
struct Class {
    vid: u16,
    /// The tag control information it arrived with (`None`: untagged).
    tci: Option<u16>,
}

/// Ingress filtering: the VLAN `frame` belongs to on a port with
/// memberships `pv`, or `None` if the port must refuse it.
fn classify(pv: &PortVlans, frame: &[u8]) -> Option<Class> {
    let tci = vlan::tci(frame);
    let vid = match tci {
        // 0x8100 with no room for the tag: not a frame to guess about
        None if frame.get(12..14) == Some(&[0x81, 0x00]) => return None,
        None => pv.untagged,
        Some(t) if t & 0x0fff == 0 => pv.untagged,
        Some(t) if pv.is_member(t & 0x0fff) => t & 0x0fff,
        Some(_) => return None,
    };
    Some(Class { vid, tci })
}

/// Decides one frame. `FILTER` is the segment's VLAN filtering flag, made a
/// constant so the VLAN-unaware instance (the default) compiles to the
/// same code as before VLANs existed; with it, the frame's classification
/// is left in `class`.
fn decide<const FILTER: bool>(
    seg: &mut Segment,
    now: Instant,
    ingress: PortId,
    frame: &[u8],
    wire_len: usize,
    class: &mut Option<Class>,
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
    if FILTER {
        *class = seg
            .member_index(ingress)
            .and_then(|i| classify(&seg.member_vlans[i], frame));
        if class.is_none() {
            return Decision::Drop(DropReason::VlanFiltered);
        }
    }
    if seg.config.hub {
        // A hub learns nothing; on a filtering segment it still floods
        // only within the frame's VLAN.
        seg.counters.flooded_unknown += 1;
        return Decision::Flood;
    }
    let vlan = match class {
        Some(c) if FILTER => c.vid,
        _ => hdr.tag.unwrap_or(DEFAULT_VLAN),
    };
    let (learned, swept) = seg.fdb.learn(hdr.src, vlan, ingress.0, now);
    seg.counters.aged_out += swept;
    match learned {
        Learned::Refused => seg.counters.learn_refused_table_full += 1,
        Learned::Moved { from } => {
            seg.counters.mac_moves += 1;
            tracing::debug!(segment = %seg.config.name, mac = %hdr.src, vlan, from, to = ingress.0, "MAC moved between ports");
            if seg.note_move(now) {
                tracing::warn!(
                    segment = %seg.config.name,
                    aging_secs = seg.fdb.aging().as_secs(),
                    "MAC addresses flapping between ports (a loop?): aging them fast for a while"
                );
            }
        }
        Learned::New | Learned::Refreshed => {}
    }
    if hdr.dst.is_multicast() {
        seg.counters.flooded_multicast += 1;
        return Decision::Flood;
    }
    match seg.fdb.lookup(hdr.dst, vlan, now) {
        Some(p) if p == ingress.0 => Decision::Drop(DropReason::SamePort),
        // Membership changes flush what a port learned in VLANs it left,
        // so this is only a safety net: never unicast out of the VLAN.
        Some(p)
            if FILTER
                && !seg
                    .member_index(PortId(p))
                    .is_some_and(|i| seg.member_vlans[i].is_member(vlan)) =>
        {
            seg.counters.flooded_unknown += 1;
            Decision::Flood
        }
        Some(p) => Decision::To(PortId(p)),
        None => {
            seg.counters.flooded_unknown += 1;
            Decision::Flood
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(60, 0);
        f
    }

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

    fn port(e: &mut Engine, seg: SegmentId) -> PortId {
        e.add_port(
            seg,
            PortRequest {
                kind: "test",
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Segments a, b, c; two ports on a, one on c, none on b.
    fn three() -> (Engine, [SegmentId; 3], Vec<PortId>) {
        let mut e = Engine::new();
        let ids = ["a", "b", "c"].map(|n| e.add_segment(SegmentConfig::new(n)).unwrap());
        let ports = vec![
            port(&mut e, ids[0]),
            port(&mut e, ids[0]),
            port(&mut e, ids[2]),
        ];
        (e, ids, ports)
    }

    #[test]
    fn removal_is_refused_while_ports_remain_and_changes_nothing() {
        let (mut e, [a, ..], ports) = three();
        assert_eq!(
            e.remove_segment(a).unwrap_err(),
            RemoveSegmentError::PortsRemain {
                segment: "a".into(),
                ports: 2
            }
        );
        assert_eq!(e.segment_by_name("a"), Some(a));
        assert_eq!(e.port(ports[0]).map(Port::segment), Some(a));
        e.remove_port(ports[0]).unwrap();
        assert_eq!(
            e.remove_segment(a).unwrap_err().to_string(),
            "segment \"a\" still has 1 port(s); remove them first"
        );
        e.remove_port(ports[1]).unwrap();
        assert_eq!(e.remove_segment(a).unwrap().name(), "a");
        assert_eq!(
            e.remove_segment(a).unwrap_err(),
            RemoveSegmentError::NoSuchSegment
        );
        assert_eq!(
            e.remove_segment(SegmentId(99)).unwrap_err(),
            RemoveSegmentError::NoSuchSegment
        );
    }

    #[test]
    fn removal_keeps_other_handles_and_forwarding() {
        let (mut e, [a, b, c], ports) = three();
        let removed = e.remove_segment(b).unwrap();
        assert_eq!(removed.config(), &SegmentConfig::new("b"));
        assert_eq!(e.segment(b).map(Segment::name), None);
        assert_eq!(e.segment_by_name("b"), None);
        let listed: Vec<(SegmentId, &str)> = e.segments().map(|(i, s)| (i, s.name())).collect();
        assert_eq!(listed, vec![(a, "a"), (c, "c")]);
        assert_eq!(e.segment_by_name("c"), Some(c));
        assert_eq!(e.port(ports[2]).map(Port::segment), Some(c));
        assert_eq!(e.segment(c).unwrap().ports(), &[ports[2]]);

        // Segment a still learns and forwards between its two ports.
        let mut out = Egress::default();
        let t = Instant::from_secs(1);
        assert_eq!(
            e.handle(t, ports[0], &frame(B, A), &mut out),
            Forwarding::Flood
        );
        assert_eq!(out.ports(), &[ports[1]]);
        assert_eq!(
            e.handle(t, ports[1], &frame(A, B), &mut out),
            Forwarding::Unicast
        );
        assert_eq!(out.ports(), &[ports[0]]);
        // Timers run over the hole.
        let due = e.poll_timeout().unwrap();
        e.handle_timeout(due);
        e.reset_counters(None);
        assert_eq!(e.segment(a).unwrap().counters().unicast, 0);
        // Ports added to a removed segment are refused.
        assert_eq!(
            e.add_port(b, PortRequest::default()),
            Err(PortError::NoSuchSegment)
        );
        assert_eq!(e.pick_port_number(b, None), Err(PortError::NoSuchSegment));
        assert_eq!(e.create_vlan(b, 10), Err(VlanError::NoSuchSegment));
        assert_eq!(e.vlans(b), Vec::<u16>::new());
    }

    #[test]
    fn a_segment_of_the_same_name_starts_fresh_in_the_freed_slot() {
        let mut e = Engine::new();
        let a = e.add_segment(SegmentConfig::new("a")).unwrap();
        let b = e.add_segment(SegmentConfig::new("b")).unwrap();
        let c = e.add_segment(SegmentConfig::new("c")).unwrap();
        e.create_vlan(b, 10).unwrap();
        let (p, q) = (port(&mut e, b), port(&mut e, b));
        let mut out = Egress::default();
        let t = Instant::from_secs(1);
        e.handle(t, p, &frame(B, A), &mut out);
        e.handle(t, q, &frame(A, B), &mut out);
        assert_eq!(e.segment(b).unwrap().mac_table().len(), 2);
        e.remove_port(p).unwrap();
        e.remove_port(q).unwrap();
        let old = e.remove_segment(b).unwrap();
        assert_eq!(old.counters().unicast, 1);
        assert_eq!(old.counters().flooded_unknown, 1);

        let mut config = SegmentConfig::new("b");
        config.max_ports = 4;
        let b2 = e.add_segment(config.clone()).unwrap();
        assert_eq!(b2, b, "the lowest free slot is reused");
        let s = e.segment(b2).unwrap();
        assert_eq!(s.config(), &config);
        assert_eq!(s.mac_table().len(), 0);
        assert_eq!(s.counters(), &SegmentCounters::default());
        assert_eq!(e.vlans(b2), vec![DEFAULT_VLAN]);
        assert_eq!(e.segment_by_name("b"), Some(b2));
        // Port numbers start over, within the new limit.
        let r = port(&mut e, b2);
        assert_eq!(e.port(r).unwrap().number(), 1);
        assert_eq!(
            e.pick_port_number(b2, Some(5)),
            Err(PortError::NumberOutOfRange {
                number: 5,
                max_ports: 4
            })
        );
        assert_eq!(e.segment_by_name("a"), Some(a));
        assert_eq!(e.segment_by_name("c"), Some(c));
    }

    #[test]
    fn removing_the_newest_segments_shrinks_the_table() {
        let mut e = Engine::new();
        let ids: Vec<SegmentId> = (0..4)
            .map(|i| e.add_segment(SegmentConfig::new(format!("s{i}"))).unwrap())
            .collect();
        e.remove_segment(ids[1]).unwrap();
        e.remove_segment(ids[3]).unwrap();
        e.remove_segment(ids[2]).unwrap();
        assert_eq!(e.segments.len(), 1);
        // Start and destroy many times: the table does not grow.
        for round in 0..100 {
            let id = e
                .add_segment(SegmentConfig::new(format!("n{round}")))
                .unwrap();
            assert_eq!(id.index(), 1);
            e.remove_segment(id).unwrap();
        }
        assert_eq!(e.segments.len(), 1);
        assert_eq!(e.segments().count(), 1);
    }
}
