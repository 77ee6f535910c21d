//! JSON views of the engine's tables, shared by the server (which builds
//! them) and the CLI (which renders them).

use crate::switch::{DropCounters, Engine, PortCounters, PortId, SegmentCounters};
use crate::time::Instant;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One row of `ctl ports`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortView {
    /// Segment name.
    pub segment: String,
    /// Port number on the segment.
    pub port: u16,
    /// How it is attached.
    pub kind: String,
    /// Who is attached.
    pub description: String,
    /// Frames from the port's peer.
    pub rx_frames: u64,
    /// Bytes from the port's peer.
    pub rx_bytes: u64,
    /// Frames to the port's peer.
    pub tx_frames: u64,
    /// Bytes to the port's peer.
    pub tx_bytes: u64,
    /// Drops by reason.
    pub drops: DropCounters,
    /// A split-horizon port (a tunnel of a `mesh` segment).
    #[serde(default)]
    pub split_horizon: bool,
    /// While the storm guard blocks the port: when the block ends, in
    /// seconds since the daemon started (the clock of `uptime_secs` in
    /// `ctl stats`), rounded up. `null` when the port forwards.
    #[serde(default)]
    pub blocked_until_secs: Option<u64>,
    /// The port's untagged VLAN (its PVID).
    #[serde(default = "default_vlan")]
    pub untagged_vlan: u16,
    /// The VLANs the port carries tagged, ascending.
    #[serde(default)]
    pub tagged_vlans: Vec<u16>,
    /// What the plug itself counts (a tunnel's refused datagrams, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plug: BTreeMap<String, u64>,
}

/// What an older daemon, which knew no VLANs, had every port in.
fn default_vlan() -> u16 {
    crate::switch::DEFAULT_VLAN
}

/// One row of `ctl vlans`: a VLAN of a segment and who is in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VlanView {
    /// Segment name.
    pub segment: String,
    /// The VLAN id.
    pub vlan: u16,
    /// Numbers of the ports that carry it untagged (their PVID).
    pub untagged: Vec<u16>,
    /// Numbers of the ports that carry it tagged.
    pub tagged: Vec<u16>,
}

/// Builds the VLAN rows of one segment (or all), ordered by segment and
/// VLAN, member port numbers ascending. `None` when the named segment
/// does not exist.
pub fn vlans(engine: &Engine, segment: Option<&str>) -> Option<Vec<VlanView>> {
    if let Some(name) = segment {
        engine.segment_by_name(name)?;
    }
    let mut rows = Vec::new();
    for (sid, seg) in engine.segments() {
        if segment.is_some_and(|n| n != seg.name()) {
            continue;
        }
        let members: Vec<(u16, u16, Vec<u16>)> = seg
            .ports()
            .iter()
            .filter_map(|&p| {
                let (u, t) = engine.port_vlans(p)?;
                Some((engine.port(p)?.number(), u, t))
            })
            .collect();
        for vlan in engine.vlans(sid) {
            let mut untagged: Vec<u16> = members
                .iter()
                .filter(|m| m.1 == vlan)
                .map(|m| m.0)
                .collect();
            let mut tagged: Vec<u16> = members
                .iter()
                .filter(|m| m.2.contains(&vlan))
                .map(|m| m.0)
                .collect();
            untagged.sort_unstable();
            tagged.sort_unstable();
            rows.push(VlanView {
                segment: seg.name().to_string(),
                vlan,
                untagged,
                tagged,
            });
        }
    }
    rows.sort_by(|a, b| (&a.segment, a.vlan).cmp(&(&b.segment, b.vlan)));
    Some(rows)
}

/// One row of `ctl macs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MacView {
    /// Segment name.
    pub segment: String,
    /// The station's address.
    pub mac: String,
    /// The VLAN it was learned on.
    pub vlan: u16,
    /// The port number it was learned on.
    pub port: u16,
    /// Seconds since it was last seen.
    pub age_secs: u64,
}

/// One segment in `ctl stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentStatsView {
    /// Segment name.
    pub segment: String,
    /// Hub mode.
    pub hub: bool,
    /// Payload MTU.
    pub mtu: usize,
    /// Ports attached.
    pub ports: usize,
    /// Port limit.
    pub max_ports: u16,
    /// MAC entries held.
    pub macs: usize,
    /// MAC table bound.
    pub mac_table_size: usize,
    /// Aging, seconds.
    pub mac_aging_secs: u64,
    /// Tunnels are split-horizon.
    #[serde(default)]
    pub mesh: bool,
    /// Storm guard limit, flooded frames per second per port (0: off).
    #[serde(default)]
    pub storm_limit_pps: u32,
    /// Segment events.
    pub counters: SegmentCounters,
    /// The sum of the segment's port counters.
    pub totals: PortCounters,
}

/// The whole of `ctl stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsView {
    /// Seconds the daemon has run.
    pub uptime_secs: u64,
    /// Per segment.
    pub segments: Vec<SegmentStatsView>,
    /// Per port.
    pub ports: Vec<PortView>,
}

/// Builds the port rows, ordered by segment then number; `plug_stats`
/// gives each port's own plug counters.
pub fn ports(
    engine: &Engine,
    plug_stats: &dyn Fn(PortId) -> Vec<(&'static str, u64)>,
) -> Vec<PortView> {
    let mut rows: Vec<PortView> = engine
        .ports()
        .map(|(id, p)| {
            let c = p.counters();
            let vlans = engine
                .port_vlans(id)
                .unwrap_or((crate::switch::DEFAULT_VLAN, Vec::new()));
            PortView {
                segment: engine
                    .segment(p.segment())
                    .map(|s| s.name().to_string())
                    .unwrap_or_default(),
                port: p.number(),
                kind: p.kind().to_string(),
                description: p.description().to_string(),
                rx_frames: c.rx_frames,
                rx_bytes: c.rx_bytes,
                tx_frames: c.tx_frames,
                tx_bytes: c.tx_bytes,
                drops: c.drops,
                split_horizon: p.split_horizon(),
                blocked_until_secs: p.blocked_until().map(|t| t.as_micros().div_ceil(1_000_000)),
                untagged_vlan: vlans.0,
                tagged_vlans: vlans.1,
                plug: plug_stats(id)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.segment, a.port).cmp(&(&b.segment, b.port)));
    rows
}

/// Builds the MAC rows of one segment (or all), ordered by segment, VLAN,
/// address. `None` when the named segment does not exist.
pub fn macs(engine: &Engine, segment: Option<&str>, now: Instant) -> Option<Vec<MacView>> {
    if let Some(name) = segment {
        engine.segment_by_name(name)?;
    }
    let mut rows = Vec::new();
    for (_, seg) in engine.segments() {
        if segment.is_some_and(|n| n != seg.name()) {
            continue;
        }
        for (mac, vlan, e) in seg.mac_table().iter() {
            if now.saturating_since(e.last_seen) >= seg.mac_table().aging() {
                continue;
            }
            let port = engine
                .port(crate::switch::PortId(e.port))
                .map(|p| p.number())
                .unwrap_or(u16::MAX);
            rows.push(MacView {
                segment: seg.name().to_string(),
                mac: mac.to_string(),
                vlan,
                port,
                age_secs: now.saturating_since(e.last_seen).as_secs(),
            });
        }
    }
    rows.sort_by(|a, b| (&a.segment, a.vlan, &a.mac).cmp(&(&b.segment, b.vlan, &b.mac)));
    Some(rows)
}

/// Builds `ctl stats`.
pub fn stats(
    engine: &Engine,
    now: Instant,
    plug_stats: &dyn Fn(PortId) -> Vec<(&'static str, u64)>,
) -> StatsView {
    let segments = engine
        .segments()
        .map(|(_, s)| {
            let mut totals = PortCounters::default();
            for port in s.ports().iter().filter_map(|&p| engine.port(p)) {
                totals.accumulate(port.counters());
            }
            let cfg = s.config();
            SegmentStatsView {
                segment: s.name().to_string(),
                hub: cfg.hub,
                mtu: cfg.mtu,
                ports: s.ports().len(),
                max_ports: cfg.max_ports,
                macs: s.mac_table().len(),
                mac_table_size: cfg.mac_table_size,
                mac_aging_secs: cfg.mac_aging.as_secs(),
                mesh: cfg.mesh,
                storm_limit_pps: cfg.storm_limit_pps,
                counters: *s.counters(),
                totals,
            }
        })
        .collect();
    StatsView {
        uptime_secs: now.as_micros() / 1_000_000,
        segments,
        ports: ports(engine, plug_stats),
    }
}

/// One row of `ctl net list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkView {
    /// The network's name (its router has the same name).
    pub name: String,
    /// `isolated`, `routed`, `nat` or `bridge`.
    pub mode: String,
    /// Whether it is running.
    pub active: bool,
    /// False for a network undefined while running (it goes when destroyed).
    pub persistent: bool,
    /// The segments it created.
    pub segments: Vec<String>,
    /// The routers it created.
    pub routers: Vec<String>,
}

/// `ctl net info NAME`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkInfoView {
    /// The summary row.
    pub network: NetworkView,
    /// The `[networks.NAME]` block.
    pub definition: String,
    /// The segment and router sections it expands into, as TOML.
    pub expansion: String,
}
