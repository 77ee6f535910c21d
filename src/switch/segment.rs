//! A segment: one MAC-learning switch (one broadcast domain per VLAN).

use super::counters::SegmentCounters;
use super::fdb::MacTable;
use super::frame::{ETHERNET_HEADER_LEN, VLAN_TAG_LEN};
use super::port::PortId;
use std::fmt;
use std::time::Duration;

/// A segment handle, dense and stable for the engine's life.
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
/// The largest MTU accepted: the usual jumbo-frame payload limit, and what
/// VDE clients (vdeplug4's `VDE_MAXMTU`) can carry.
pub const MAX_MTU: usize = 9216;

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
        c.mtu = 9217;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("mtu 9217"), "{e}");
        c.mtu = 1500;
        c.mac_table_size = 0;
        assert!(c.validate().is_err());
    }
}
