//! A segment: one MAC-learning switch (one broadcast domain per VLAN).

use super::counters::SegmentCounters;
use super::fdb::MacTable;
use super::frame::{ETHERNET_HEADER_LEN, VLAN_TAG_LEN};
use super::port::PortId;
use super::vlan::{PortVlans, SegmentVlans};
use crate::time::Instant;
use std::fmt;
use std::time::Duration;

/// A segment handle: a small index, valid while the segment exists. Once
/// the segment is removed, a later segment may get the same handle (see
/// [`Engine`](super::Engine)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub(crate) u32);

impl SegmentId {
    /// A dense index, for callers that keep per-segment arrays.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The smallest MTU accepted: IPv4's minimum.
pub const MIN_MTU: usize = 68;
/// The largest MTU accepted: what a tap (and the Linux stack behind it)
/// takes at most, as slirp4netns and pasta use on virtual links. Up to the
/// usual jumbo limit of 9216 every kind of port carries it; VDE2 clients
/// (vdeplug4's `VDE_MAXMTU`) take no more than that, so larger MTUs are for
/// segments of taps, stream sockets, `switchboard ns` and routers.
pub const MAX_MTU: usize = 65520;

/// The default storm limit, flooded broadcast and multicast frames per
/// second per port.
pub const DEFAULT_STORM_LIMIT_PPS: u32 = 20_000;
/// The default first block of a storming port.
pub const DEFAULT_STORM_BLOCK: Duration = Duration::from_secs(10);
/// The highest storm limit accepted: above this the guard could never trip
/// on a real host, so a typo is more likely than intent.
pub const MAX_STORM_LIMIT_PPS: u32 = 10_000_000;
/// The longest first block accepted.
pub const MAX_STORM_BLOCK: Duration = Duration::from_secs(3600);

/// How a segment behaves. Defaults match a Linux bridge (300 s aging) with
/// `vde_switch`'s port count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentConfig {
    /// The segment's name, unique within the engine.
    pub name: String,
    /// The highest port number (ports are numbered 1..=max_ports, as
    /// `vde_switch -n`; number 0 may be requested explicitly).
    pub max_ports: u16,
    /// Flood every frame to every other port and learn nothing, like
    /// `vde_switch -x`.
    pub hub: bool,
    /// The largest payload carried, in bytes. Frames may be this plus an
    /// Ethernet header plus one 802.1Q tag long.
    pub mtu: usize,
    /// How many (MAC, VLAN) entries the MAC table holds at most.
    pub mac_table_size: usize,
    /// How long a learned address lives without being seen again.
    pub mac_aging: Duration,
    /// The segment's tunnels form a full mesh: its UDP tunnel and VXLAN
    /// ports are made split-horizon, so a frame from one tunnel is never
    /// relayed into another and the mesh cannot loop. Off by default,
    /// because a line of hosts (h1 - h2 - h3) relies on h2 relaying
    /// between its two tunnels. The daemon applies it when it opens those
    /// ports; the core only sees each port's flag.
    pub mesh: bool,
    /// Flooded frames (broadcast, multicast, unknown unicast) per second a
    /// port may send before its storm guard blocks it; 0 turns the guard
    /// off. The default, 20 000, is far above what ARP and neighbour
    /// discovery need and far below what a loop produces.
    pub storm_limit_pps: u32,
    /// How long a port is blocked the first time; repeat offences within a
    /// minute double it, up to five minutes.
    pub storm_block: Duration,
}

impl SegmentConfig {
    /// A segment with the defaults.
    pub fn new(name: impl Into<String>) -> Self {
        SegmentConfig {
            name: name.into(),
            max_ports: 32,
            hub: false,
            mtu: 1500,
            mac_table_size: 4096,
            mac_aging: Duration::from_secs(300),
            mesh: false,
            storm_limit_pps: DEFAULT_STORM_LIMIT_PPS,
            storm_block: DEFAULT_STORM_BLOCK,
        }
    }

    /// The longest frame this segment carries.
    pub fn max_frame_len(&self) -> usize {
        self.mtu + ETHERNET_HEADER_LEN + VLAN_TAG_LEN
    }

    /// Checks the values are usable, with a message naming the bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: String| Err(ConfigError(format!("segment {:?}: {what}", self.name)));
        if self.name.is_empty() {
            return bad("the name must not be empty".into());
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return bad(format!("mtu {} is outside {MIN_MTU}..={MAX_MTU}", self.mtu));
        }
        if self.max_ports == 0 {
            return bad("max_ports must be at least 1".into());
        }
        if self.mac_table_size == 0 || self.mac_table_size > 1 << 20 {
            return bad(format!(
                "mac_table_size {} is outside 1..={}",
                self.mac_table_size,
                1 << 20
            ));
        }
        if self.mac_aging.is_zero() {
            return bad("mac aging must be at least one second".into());
        }
        if self.storm_limit_pps > MAX_STORM_LIMIT_PPS {
            return bad(format!(
                "storm_limit_pps {} is above {MAX_STORM_LIMIT_PPS} (0 turns the guard off)",
                self.storm_limit_pps
            ));
        }
        if self.storm_block < Duration::from_secs(1) || self.storm_block > MAX_STORM_BLOCK {
            return bad(format!(
                "storm block {} s is outside 1..={} s",
                self.storm_block.as_secs(),
                MAX_STORM_BLOCK.as_secs()
            ));
        }
        Ok(())
    }
}

/// A configuration value the engine cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// One switch's state.
#[derive(Debug)]
pub struct Segment {
    pub(crate) config: SegmentConfig,
    pub(crate) max_frame_len: usize,
    pub(crate) fdb: MacTable,
    /// Live ports, in the order they joined: the flood list.
    pub(crate) members: Vec<PortId>,
    /// What flooding must know of each member, in `members` order.
    pub(crate) member_flags: Vec<MemberFlags>,
    /// Each member's VLAN memberships, in `members` order.
    pub(crate) member_vlans: Vec<PortVlans>,
    /// The segment's VLANs and whether it filters by them.
    pub(crate) vlans: SegmentVlans,
    /// No member is split-horizon or blocked: flooding copies `members`
    /// without looking at the flags (the common case).
    pub(crate) plain_flood: bool,
    /// Watches for addresses flapping between ports, a loop's symptom.
    pub(crate) flaps: FlapWatch,
    /// Port number -> port, for numbers 0..=max_ports.
    pub(crate) by_number: Vec<Option<PortId>>,
    pub(crate) counters: SegmentCounters,
}

impl Segment {
    pub(crate) fn new(config: SegmentConfig) -> Self {
        Segment {
            max_frame_len: config.max_frame_len(),
            fdb: MacTable::new(config.mac_table_size, config.mac_aging),
            members: Vec::with_capacity(usize::from(config.max_ports) + 1),
            member_flags: Vec::with_capacity(usize::from(config.max_ports) + 1),
            member_vlans: Vec::with_capacity(usize::from(config.max_ports) + 1),
            vlans: SegmentVlans::default(),
            plain_flood: true,
            flaps: FlapWatch::default(),
            by_number: vec![None; usize::from(config.max_ports) + 1],
            counters: SegmentCounters::default(),
            config,
        }
    }

    /// The configuration the segment runs with.
    pub fn config(&self) -> &SegmentConfig {
        &self.config
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The MAC table.
    pub fn mac_table(&self) -> &MacTable {
        &self.fdb
    }

    /// Segment-wide counters.
    pub fn counters(&self) -> &SegmentCounters {
        &self.counters
    }

    /// The live ports, in the order they joined.
    pub fn ports(&self) -> &[PortId] {
        &self.members
    }

    /// The port with this number, if one is attached.
    pub fn port_by_number(&self, number: u16) -> Option<PortId> {
        self.by_number.get(usize::from(number)).copied().flatten()
    }

    /// Where `id` sits in `members`, if it is a member.
    pub(crate) fn member_index(&self, id: PortId) -> Option<usize> {
        self.members.iter().position(|&p| p == id)
    }

    /// Until when the MAC table ages entries fast after a loop was
    /// suspected, if it does (see [`FAST_AGING`]).
    pub fn fast_aging_until(&self) -> Option<Instant> {
        self.flaps.fast_until
    }

    /// Notes that an address moved between ports at `now`. Returns true
    /// when this starts fast aging (so the caller can say so once).
    pub(crate) fn note_move(&mut self, now: Instant) -> bool {
        let w = &mut self.flaps;
        if now.saturating_since(w.window_start) >= Duration::from_secs(1) {
            w.window_start = now;
            w.moves = 0;
        }
        w.moves += 1;
        if w.moves < FLAP_THRESHOLD {
            return false;
        }
        self.age_fast(now)
    }

    /// Ages the MAC table in [`FAST_AGING`] until [`FAST_AGING_HOLD`] from
    /// `now`: what a loop taught the table (stations behind the wrong
    /// ports) is forgotten within seconds once the loop is cut, instead of
    /// black-holing traffic to those stations for the whole aging time.
    /// Returns true if fast aging was not already on.
    pub(crate) fn age_fast(&mut self, now: Instant) -> bool {
        let started = self.flaps.fast_until.is_none();
        self.flaps.fast_until = Some(now + FAST_AGING_HOLD);
        self.fdb.set_aging(self.config.mac_aging.min(FAST_AGING));
        started
    }

    /// Ends fast aging if its hold has run out by `now`; returns whether it
    /// did.
    pub(crate) fn end_fast_aging_if_due(&mut self, now: Instant) -> bool {
        match self.flaps.fast_until {
            Some(t) if t <= now => {
                self.flaps.fast_until = None;
                self.fdb.set_aging(self.config.mac_aging);
                true
            }
            _ => false,
        }
    }

    /// Updates a member's flags and whether flooding may skip them.
    pub(crate) fn set_member_flags(&mut self, id: PortId, f: impl FnOnce(&mut MemberFlags)) {
        if let Some(i) = self.members.iter().position(|&p| p == id) {
            f(&mut self.member_flags[i]);
        }
        self.plain_flood = self
            .member_flags
            .iter()
            .all(|m| !m.split_horizon && !m.blocked);
    }
}

/// Address moves within one second that count as flapping: a station
/// that really moves (a migrated VM) moves once; a loop moves every station
/// it carries thousands of times a second.
pub const FLAP_THRESHOLD: u32 = 50;
/// The aging time while a loop is suspected, as 802.1D shortens aging
/// after a topology change.
pub const FAST_AGING: Duration = Duration::from_secs(3);
/// How long fast aging lasts after the last sign of a loop (flapping, or a
/// port blocked by its storm guard).
pub const FAST_AGING_HOLD: Duration = Duration::from_secs(30);

/// The flap detector's window, and fast aging's end.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FlapWatch {
    window_start: Instant,
    moves: u32,
    fast_until: Option<Instant>,
}

/// A member port's loop-protection state, kept beside the flood list so
/// flooding need not visit every port's record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemberFlags {
    /// A split-horizon port.
    pub(crate) split_horizon: bool,
    /// Blocked by its storm guard.
    pub(crate) blocked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_limits() {
        let mut c = SegmentConfig::new("lan");
        assert!(c.validate().is_ok());
        assert_eq!(c.max_frame_len(), 1518);
        c.mtu = 9216;
        assert!(c.validate().is_ok());
        assert_eq!(c.max_frame_len(), 9234);
        c.mtu = 65520;
        assert!(c.validate().is_ok());
        assert_eq!(c.max_frame_len(), 65538);
        c.mtu = 65521;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("mtu 65521"), "{e}");
        c.mtu = 1500;
        c.mac_table_size = 0;
        assert!(c.validate().is_err());
        c.mac_table_size = 4096;
        assert_eq!(c.storm_limit_pps, 20_000);
        assert_eq!(c.storm_block, Duration::from_secs(10));
        c.storm_limit_pps = 0;
        assert!(c.validate().is_ok());
        c.storm_limit_pps = 10_000_001;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storm_limit_pps")
        );
        c.storm_limit_pps = 100;
        c.storm_block = Duration::ZERO;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storm block")
        );
    }
}
