//! The MAC table (forwarding database) of one segment.
//!
//! Keys are (MAC, VLAN) pairs, so a station that appears on several VLANs (a
//! router on a stick) is tracked once per VLAN. The table is bounded: its
//! memory is reserved up front for `capacity` entries and never grows, so a
//! MAC flood cannot exhaust memory. When the table is full, expired entries
//! are swept first (at most once per second of switch time, so a flood cannot
//! turn every frame into a full scan); if it is still full, the new address is
//! simply not learned and the refusal is counted. Frames to unlearned
//! addresses are flooded, so a full table degrades to hub behaviour rather than
//! losing connectivity.

use crate::mac::MacAddr;
use crate::time::Instant;
use hashbrown::HashMap;
use std::time::Duration;

/// An opaque port handle, as the table sees it.
pub type PortKey = u32;

/// One learned address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The port the address was last seen on.
    pub port: PortKey,
    /// When it was last seen there.
    pub last_seen: Instant,
}

/// The result of learning one source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// A new entry was created.
    New,
    /// An existing entry was refreshed on the same port.
    Refreshed,
    /// The address moved here from another port.
    Moved {
        /// The port it was on before.
        from: PortKey,
    },
    /// The table was full; the address was not learned.
    Refused,
}

/// A bounded MAC table with aging.
#[derive(Debug)]
pub struct MacTable {
    entries: HashMap<(MacAddr, u16), FdbEntry>,
    capacity: usize,
    aging: Duration,
    last_full_sweep: Option<Instant>,
}

impl MacTable {
    /// A table holding at most `capacity` entries, each forgotten `aging`
    /// after it was last seen. Memory for all entries is reserved now: twice
    /// `capacity`, because hashbrown rehashes in place (instead of growing)
    /// only while at most half its slots are in use, and removals leave
    /// tombstones that would otherwise make it grow under churn.
    pub fn new(capacity: usize, aging: Duration) -> Self {
        MacTable {
            entries: HashMap::with_capacity(capacity.saturating_mul(2)),
            capacity,
            aging,
            last_full_sweep: None,
        }
    }

    /// The maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long an entry lives without being refreshed.
    pub fn aging(&self) -> Duration {
        self.aging
    }

    /// Changes the aging time; existing entries are judged by the new value.
    pub fn set_aging(&mut self, aging: Duration) {
        self.aging = aging;
    }

    /// Entries currently held (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn is_live(&self, e: &FdbEntry, now: Instant) -> bool {
        now.saturating_since(e.last_seen) < self.aging
    }

    /// Records that `mac` on `vlan` was seen on `port` at `now`. Returns
    /// what changed and how many expired entries a sweep removed to make room.
    pub fn learn(
        &mut self,
        mac: MacAddr,
        vlan: u16,
        port: PortKey,
        now: Instant,
    ) -> (Learned, u64) {
        if let Some(e) = self.entries.get_mut(&(mac, vlan)) {
            let from = e.port;
            e.port = port;
            e.last_seen = now;
            let learned = if from == port {
                Learned::Refreshed
            } else {
                Learned::Moved { from }
            };
            return (learned, 0);
        }
        let mut swept = 0;
        if self.entries.len() >= self.capacity {
            let recently = self
                .last_full_sweep
                .is_some_and(|t| now.saturating_since(t) < Duration::from_secs(1));
            if !recently {
                self.last_full_sweep = Some(now);
                swept = self.expire(now);
            }
            if self.entries.len() >= self.capacity {
                return (Learned::Refused, swept);
            }
        }
        self.entries.insert(
            (mac, vlan),
            FdbEntry {
                port,
                last_seen: now,
            },
        );
        (Learned::New, swept)
    }

    /// The port `mac` on `vlan` was learned on, if it is known and fresh.
    pub fn lookup(&self, mac: MacAddr, vlan: u16, now: Instant) -> Option<PortKey> {
        self.entries
            .get(&(mac, vlan))
            .filter(|e| self.is_live(e, now))
            .map(|e| e.port)
    }

    /// Removes every entry older than the aging time; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let before = self.entries.len();
        let aging = self.aging;
        self.entries
            .retain(|_, e| now.saturating_since(e.last_seen) < aging);
        (before - self.entries.len()) as u64
    }

    /// Forgets everything learned on `port` (it went away, or was reset).
    pub fn flush_port(&mut self, port: PortKey) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.port != port);
        before - self.entries.len()
    }

    /// Forgets what was learned on `port` in `vlan` (the port left that
    /// VLAN, so frames of it can no longer reach those stations there).
    pub fn flush_port_vlan(&mut self, port: PortKey, vlan: u16) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|&(_, v), e| !(e.port == port && v == vlan));
        before - self.entries.len()
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// All entries, in no particular order, for display.
    pub fn iter(&self) -> impl Iterator<Item = (MacAddr, u16, FdbEntry)> + '_ {
        self.entries.iter().map(|(&(m, v), &e)| (m, v, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    const AGING: Duration = Duration::from_secs(300);

    #[test]
    fn learns_looks_up_and_moves() {
        let mut t = MacTable::new(16, AGING);
        let now = Instant::from_secs(1);
        assert_eq!(t.learn(mac(1), 0, 7, now).0, Learned::New);
        assert_eq!(t.lookup(mac(1), 0, now), Some(7));
        assert_eq!(t.lookup(mac(1), 5, now), None, "VLANs are learned apart");
        assert_eq!(t.learn(mac(1), 0, 7, now).0, Learned::Refreshed);
        assert_eq!(t.learn(mac(1), 0, 9, now).0, Learned::Moved { from: 7 });
        assert_eq!(t.lookup(mac(1), 0, now), Some(9));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn entries_age_out_at_exactly_the_aging_time() {
        let mut t = MacTable::new(16, Duration::from_secs(10));
        t.learn(mac(1), 0, 1, Instant::from_secs(100));
        assert_eq!(t.lookup(mac(1), 0, Instant::from_millis(109_999)), Some(1));
        assert_eq!(t.lookup(mac(1), 0, Instant::from_secs(110)), None);
        assert_eq!(t.expire(Instant::from_secs(109)), 0);
        assert_eq!(t.expire(Instant::from_secs(110)), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn refresh_extends_life() {
        let mut t = MacTable::new(16, Duration::from_secs(10));
        t.learn(mac(1), 0, 1, Instant::from_secs(0));
        t.learn(mac(1), 0, 1, Instant::from_secs(8));
        assert_eq!(t.lookup(mac(1), 0, Instant::from_secs(15)), Some(1));
    }

    #[test]
    fn full_table_refuses_then_reclaims_expired() {
        let mut t = MacTable::new(4, Duration::from_secs(10));
        for i in 0..4 {
            assert_eq!(t.learn(mac(i), 0, 1, Instant::from_secs(0)).0, Learned::New);
        }
        assert_eq!(
            t.learn(mac(99), 0, 1, Instant::from_secs(1)).0,
            Learned::Refused
        );
        assert_eq!(t.len(), 4);
        // once the old entries expire, a sweep makes room
        let (l, swept) = t.learn(mac(99), 0, 1, Instant::from_secs(20));
        assert_eq!((l, swept), (Learned::New, 4));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn sweeps_on_a_full_table_are_rate_limited() {
        let mut t = MacTable::new(2, Duration::from_secs(10));
        t.learn(mac(1), 0, 1, Instant::from_secs(0));
        t.learn(mac(2), 0, 1, Instant::from_secs(9));
        // full; a sweep at t=10.0 removes mac(1)
        assert_eq!(
            t.learn(mac(3), 0, 1, Instant::from_secs(10)),
            (Learned::New, 1)
        );
        // full again; mac(2) expires at 19, but the last sweep was 0.5 s ago
        t.learn(mac(4), 0, 1, Instant::from_millis(10_100));
        assert_eq!(
            t.learn(mac(5), 0, 1, Instant::from_millis(10_500)).0,
            Learned::Refused
        );
    }

    #[test]
    fn flush_port_removes_only_that_port() {
        let mut t = MacTable::new(16, AGING);
        let now = Instant::ZERO;
        t.learn(mac(1), 0, 1, now);
        t.learn(mac(2), 0, 2, now);
        t.learn(mac(3), 7, 1, now);
        assert_eq!(t.flush_port(1), 2);
        assert_eq!(t.lookup(mac(2), 0, now), Some(2));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_flood_of_random_macs_never_exceeds_capacity_or_reallocates() {
        // A short aging time makes entries expire and get swept during the
        // flood, so the table churns (removals leave tombstones) as well as
        // filling up.
        let mut t = MacTable::new(1024, Duration::from_secs(2));
        let cap_before = t.entries.capacity();
        let mut x: u32 = 12345;
        let mut refused = 0;
        for i in 0..300_000u64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if t.learn(mac(x), (x % 3) as u16, x % 8, Instant::from_millis(i / 4))
                .0
                == Learned::Refused
            {
                refused += 1;
            }
            assert!(t.len() <= 1024);
            if i % 7_000 == 0 {
                t.expire(Instant::from_millis(i / 4));
            }
        }
        assert!(refused > 0, "the flood must have hit the cap");
        // capacity() is items + growth_left; tombstones lower growth_left, so
        // it may dip below the start, but any growth would raise it.
        assert!(
            t.entries.capacity() <= cap_before,
            "the table grew: {} > {cap_before}",
            t.entries.capacity()
        );
    }
}
