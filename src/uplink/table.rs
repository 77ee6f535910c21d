//! Flow bookkeeping shared by the uplink's protocols: how long an idle
//! flow lives, how many flows of each kind may exist, and which local
//! ports the inbound forwards may use.
//!
//! The limits are what keeps a guest from turning the uplink into a file
//! descriptor or memory sink: every flow holds a host socket, so every
//! table is capped and every idle flow expires, with UDP following the
//! conntrack convention (short until the far side has answered).

use std::hash::Hash;
use std::time::Duration;

use hashbrown::HashMap;

use crate::time::Instant;

/// How long a host `connect()` may take before the guest is told the host
/// is unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle lifetime of a UDP flow whose far side has not answered yet.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle lifetime of a UDP flow once the far side has answered.
pub const UDP_REPLIED_TIMEOUT: Duration = Duration::from_secs(180);
/// Idle lifetime of an ICMP echo flow.
pub const ICMP_TIMEOUT: Duration = Duration::from_secs(30);

/// The per-protocol caps: beyond them new flows are refused and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TCP flows (connecting, open and closing).
    pub max_tcp: usize,
    /// UDP flows.
    pub max_udp: usize,
    /// ICMP echo flows.
    pub max_icmp: usize,
    /// Host connects in progress at once.
    pub max_pending_connects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tcp: 4096,
            max_udp: 4096,
            max_icmp: 256,
            max_pending_connects: 64,
        }
    }
}

/// Which idle rule a flow follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleRule {
    /// No idle expiry: the TCP state machine decides when the flow ends.
    Never,
    /// UDP: [`UDP_TIMEOUT`], [`UDP_REPLIED_TIMEOUT`] once answered.
    Udp,
    /// ICMP echo: [`ICMP_TIMEOUT`].
    Icmp,
}

/// A flow's clock and byte counts: when it started, when it last carried
/// something, whether the host side ever answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// When the flow was opened.
    pub created: Instant,
    /// When a packet last crossed it either way.
    pub last: Instant,
    /// Whether the side that did not open the flow has answered: the host
    /// for a guest's flow, the guest for a forwarded host port's.
    pub replied: bool,
    /// Whether a host peer opened the flow (a forwarded port).
    pub inbound: bool,
    /// Payload bytes from the guest to the host.
    pub bytes_to_host: u64,
    /// Payload bytes from the host to the guest.
    pub bytes_to_guest: u64,
    /// The idle rule.
    pub rule: IdleRule,
}

impl Activity {
    /// A flow opened at `now`.
    pub fn new(now: Instant, rule: IdleRule) -> Self {
        Activity {
            created: now,
            last: now,
            replied: false,
            inbound: false,
            bytes_to_host: 0,
            bytes_to_guest: 0,
            rule,
        }
    }

    /// A flow a host peer opened at `now` through a forwarded port: it
    /// counts as answered once the guest replies.
    pub fn new_inbound(now: Instant, rule: IdleRule) -> Self {
        Activity {
            inbound: true,
            ..Activity::new(now, rule)
        }
    }

    /// The guest sent `bytes` of payload.
    pub fn to_host(&mut self, now: Instant, bytes: usize) {
        self.last = self.last.max(now);
        self.replied |= self.inbound;
        self.bytes_to_host = self.bytes_to_host.saturating_add(bytes as u64);
    }

    /// The host side sent `bytes` of payload.
    pub fn to_guest(&mut self, now: Instant, bytes: usize) {
        self.last = self.last.max(now);
        self.replied |= !self.inbound;
        self.bytes_to_guest = self.bytes_to_guest.saturating_add(bytes as u64);
    }

    /// When the flow expires if nothing more crosses it.
    pub fn expires_at(&self) -> Option<Instant> {
        match self.rule {
            IdleRule::Never => None,
            IdleRule::Udp if self.replied => Some(self.last + UDP_REPLIED_TIMEOUT),
            IdleRule::Udp => Some(self.last + UDP_TIMEOUT),
            IdleRule::Icmp => Some(self.last + ICMP_TIMEOUT),
        }
    }

    /// Whether the flow has expired at `now` (at the exact deadline, it has).
    pub fn expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|at| now >= at)
    }
}

/// A capped index from a flow key to the slot holding the flow.
#[derive(Debug)]
pub struct FlowIndex<K> {
    cap: usize,
    slots: HashMap<K, usize>,
}

/// The index is at its cap; the new flow is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl<K: Hash + Eq + Copy> FlowIndex<K> {
    /// An empty index admitting at most `cap` flows.
    pub fn new(cap: usize) -> Self {
        FlowIndex {
            cap,
            slots: HashMap::new(),
        }
    }

    /// The slot of `key`'s flow.
    pub fn get(&self, key: &K) -> Option<usize> {
        self.slots.get(key).copied()
    }

    /// Whether one more flow would be admitted.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.cap
    }

    /// Records `key` at `slot`, unless the index is full (replacing an
    /// existing key never counts against the cap).
    pub fn insert(&mut self, key: K, slot: usize) -> Result<(), Full> {
        if !self.slots.contains_key(&key) && !self.has_room() {
            return Err(Full);
        }
        self.slots.insert(key, slot);
        Ok(())
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) -> Option<usize> {
        self.slots.remove(key)
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no flows.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// First port of the range inbound forwards use as their local ports.
pub const EPHEMERAL_FIRST: u16 = 49152;

/// Hands out local ports for inbound forward flows, round robin over the
/// IANA ephemeral range, so a port just released is not reused at once
/// (the guest may still hold its TIME-WAIT).
#[derive(Debug, Clone)]
pub struct PortAllocator {
    next: u16,
}

impl Default for PortAllocator {
    fn default() -> Self {
        PortAllocator {
            next: EPHEMERAL_FIRST,
        }
    }
}

impl PortAllocator {
    /// The next port for which `in_use` is false, or `None` if the whole
    /// range is taken.
    pub fn allocate(&mut self, mut in_use: impl FnMut(u16) -> bool) -> Option<u16> {
        let range = u32::from(u16::MAX - EPHEMERAL_FIRST) + 1;
        for _ in 0..range {
            let port = self.next;
            self.next = if self.next == u16::MAX {
                EPHEMERAL_FIRST
            } else {
                self.next + 1
            };
            if !in_use(port) {
                return Some(port);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inbound_flow_is_answered_by_the_guest_not_by_its_opener() {
        let t0 = Instant::from_secs(100);
        let mut a = Activity::new_inbound(t0, IdleRule::Udp);
        a.to_guest(Instant::from_secs(101), 10);
        assert!(!a.replied);
        assert_eq!(a.expires_at(), Some(Instant::from_secs(131)));
        a.to_host(Instant::from_secs(102), 10);
        assert!(a.replied);
        assert_eq!(a.expires_at(), Some(Instant::from_secs(282)));
    }

    #[test]
    fn udp_expires_at_30s_then_180s_once_replied() {
        let t0 = Instant::from_secs(100);
        let mut a = Activity::new(t0, IdleRule::Udp);
        assert_eq!(a.expires_at(), Some(Instant::from_secs(130)));
        assert!(!a.expired(Instant::from_micros(129_999_999)));
        assert!(a.expired(Instant::from_secs(130)));
        a.to_host(Instant::from_secs(110), 40);
        assert_eq!(a.expires_at(), Some(Instant::from_secs(140)));
        a.to_guest(Instant::from_secs(120), 60);
        assert_eq!(a.expires_at(), Some(Instant::from_secs(300)));
        assert!(!a.expired(Instant::from_micros(299_999_999)));
        assert!(a.expired(Instant::from_secs(300)));
        assert_eq!((a.bytes_to_host, a.bytes_to_guest), (40, 60));
        // An older timestamp never moves the clock back.
        a.to_host(Instant::from_secs(1), 0);
        assert_eq!(a.last, Instant::from_secs(120));
    }

    #[test]
    fn icmp_expires_at_30s_and_tcp_never() {
        let mut a = Activity::new(Instant::from_secs(5), IdleRule::Icmp);
        a.to_guest(Instant::from_secs(6), 56);
        assert_eq!(a.expires_at(), Some(Instant::from_secs(36)));
        let t = Activity::new(Instant::ZERO, IdleRule::Never);
        assert_eq!(t.expires_at(), None);
        assert!(!t.expired(Instant::from_secs(1_000_000)));
    }

    #[test]
    fn index_refuses_beyond_its_cap() {
        let mut idx = FlowIndex::new(2);
        assert_eq!(idx.insert(1u32, 10), Ok(()));
        assert_eq!(idx.insert(2, 20), Ok(()));
        assert_eq!(idx.insert(3, 30), Err(Full));
        assert_eq!(idx.insert(2, 21), Ok(()), "replacing is not a new flow");
        assert_eq!(idx.get(&2), Some(21));
        assert_eq!(idx.get(&3), None);
        assert_eq!(idx.remove(&1), Some(10));
        assert_eq!(idx.insert(3, 30), Ok(()));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn ports_skip_used_ones_and_wrap() {
        let mut p = PortAllocator::default();
        assert_eq!(p.allocate(|_| false), Some(49152));
        assert_eq!(p.allocate(|port| port == 49153), Some(49154));
        let mut p = PortAllocator { next: u16::MAX };
        assert_eq!(p.allocate(|_| false), Some(u16::MAX));
        assert_eq!(p.allocate(|_| false), Some(EPHEMERAL_FIRST));
        assert_eq!(p.allocate(|_| true), None);
    }
}
