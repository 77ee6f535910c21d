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
    /// What the plug itself counts (a tunnel's refused datagrams, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plug: BTreeMap<String, u64>,
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
