//! The neighbour (ARP) cache of one router: which MAC address each next hop
//! has, and what to do with packets while that is still unknown.
//!
//! # Why it looks like this
//!
//! A router cannot send an IPv4 packet onto an Ethernet segment until it
//! knows the next hop's MAC address. Asking (an ARP request) takes a round
//! trip, so the first packets towards a new neighbour must wait somewhere,
//! and a neighbour that never answers must eventually be reported to the
//! senders (ICMP host unreachable) instead of silently eating their traffic.
//! Once known, a mapping must not be trusted forever either: hosts change
//! their addresses, and a router that keeps sending to a dead MAC black-holes
//! traffic. This module makes those decisions; it never builds or parses an
//! ARP packet: the router does that when told to.
//!
//! The states follow Linux's neighbour subsystem, simplified:
//!
//! * **Incomplete**: a broadcast request is out and packets are queued (at
//!   most `queue_per_hop`). The first request goes out when the entry is
//!   created; another follows every `retry_interval`; once `max_retries`
//!   requests in total went unanswered the entry is removed and its packets
//!   are handed back in [`ArpEvent::Failed`]. With the defaults: requests at
//!   0 s, 1 s and 2 s, failure at 3 s. There is no negative caching: the next
//!   packet to a failed hop simply starts a new resolution, as if the hop had
//!   never been seen. This costs one broadcast per `max_retries ×
//!   retry_interval` per silent hop, which is what Linux's short-lived FAILED
//!   state costs too, without a state that would need its own timer.
//! * **Reachable**: confirmed less than `reachable_time` ago; used without
//!   question.
//! * **Stale**: confirmed longer ago. Still used, but the first use moves it
//!   to **Probe** and tells the router to send a unicast request to the known
//!   MAC ([`Resolution::KnownRefresh`]); while probing, at most one such
//!   refresh is asked for per `retry_interval`. If no answer confirms the
//!   entry within `max_retries × retry_interval` of the first probe it is
//!   removed, and the next use starts a fresh broadcast resolution. A Stale
//!   entry nobody uses is removed once it is `stale_time` old (measured from
//!   the last confirmation; the default of 90 s leaves it Stale for 60 s after
//!   the 30 s reachable time, like Linux's `gc_stale_time`).
//! * **Static**: configured by hand; never aged, never evicted, never
//!   overwritten by ARP traffic.
//!
//! # Time and cost
//!
//! Whether an entry is still usable is judged from `now` on every lookup, so
//! behaviour never depends on how promptly [`ArpCache::handle_timeout`] is
//! called; the timer only reclaims memory and drives retries. Retries fire
//! exactly on time: the earliest retry deadline is tracked, and only the
//! (usually few) incomplete entries are visited when it passes. Removing
//! expired entries needs a scan of the whole table, which runs at most once
//! per second of router time, and only when some entry can have expired.
//!
//! The table is bounded: `capacity` entries, each holding at most
//! `queue_per_hop` packets. Its memory is reserved up front, so looking up a
//! known neighbour (the per-packet fast path) never allocates. When the
//! table is full, a new neighbour evicts the least recently confirmed
//! dynamic entry; incomplete entries (whose packets are waiting) and static
//! ones are never evicted. Finding the victim is a scan, so it costs
//! `O(capacity)` per new neighbour while the table is full; deciding that
//! *nothing* can be evicted is `O(1)`, so a flood of resolutions to silent
//! addresses costs a counter increment per packet once the table is full.

use super::IfaceId;
use crate::mac::MacAddr;
use crate::time::Instant;
use hashbrown::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The expiry sweep runs at most this often, so a busy table is not scanned
/// once per expiring entry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How many discarded packet buffers are kept for reuse. Small: it only
/// smooths bursts of queueing, it is not a pool.
const FREE_LIST_LEN: usize = 32;

/// Buffers larger than this are not kept for reuse (a jumbo frame's payload
/// fits), so the free list never pins much memory.
const FREE_BUFFER_MAX: usize = 9216;

/// Tunables of the cache. They exist so a lab can shorten timers (to watch
/// failover) or size the table for a large segment; the defaults are Linux's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpConfig {
    /// Most entries held at once, incomplete ones included. Bounds memory
    /// (together with `queue_per_hop`) whatever traffic arrives.
    pub capacity: usize,
    /// An entry confirmed this recently is used without question. Default
    /// 30 s (Linux `base_reachable_time`).
    pub reachable_time: Duration,
    /// An unconfirmed entry is still used (and refreshed on use) until it is
    /// this old, counted from its last confirmation; then it is removed.
    /// Default 90 s: 60 s of Stale after the 30 s of Reachable. If it is not
    /// longer than `reachable_time`, entries are removed as soon as they stop
    /// being Reachable.
    pub stale_time: Duration,
    /// Time between requests for one hop, both broadcast retries while
    /// Incomplete and unicast refreshes while probing. Default 1 s.
    pub retry_interval: Duration,
    /// Requests sent (the first one included) before a hop is given up.
    /// Default 3; 0 is treated as 1, since a resolution always sends one.
    pub max_retries: u32,
    /// Packets held per unresolved next hop; later ones are dropped. Default
    /// 8; 0 is treated as 1, so the packet that starts a resolution is kept.
    pub queue_per_hop: usize,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig {
            capacity: 1024,
            reachable_time: Duration::from_secs(30),
            stale_time: Duration::from_secs(90),
            retry_interval: Duration::from_secs(1),
            max_retries: 3,
            queue_per_hop: 8,
        }
    }
}

/// The state of one entry, as shown to operators (`ctl`, JSON status). It
/// names Linux's neighbour states so the output reads like `ip neigh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArpState {
    /// A request is out; packets are waiting.
    Incomplete,
    /// Confirmed recently; used without question.
    Reachable,
    /// Not confirmed recently; still used, refreshed on first use.
    Stale,
    /// Used while stale; a unicast refresh is out.
    Probe,
    /// Configured by hand; never changes by itself.
    Static,
}

/// What the router must do after a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Send to this MAC now.
    Known(MacAddr),
    /// Send to this MAC now, and also send a unicast ARP request to it to
    /// refresh the entry (the entry is past reachable_time; at most one such
    /// refresh per retry_interval).
    KnownRefresh(MacAddr),
    /// Unknown: the packet was queued; send a broadcast ARP request now
    /// (first packet of a new resolution).
    QueuedSendRequest,
    /// Unknown: the packet was queued behind a resolution already under way;
    /// send nothing.
    Queued,
    /// The hop's queue is full: packet dropped (counted in stats).
    QueueFull,
    /// The cache is full of entries that cannot be evicted (all incomplete
    /// with queued packets or static): packet dropped and counted.
    TableFull,
}

/// Work for the router that fell due in [`ArpCache::handle_timeout`]; the
/// cache sends nothing itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArpEvent {
    /// Send another broadcast request for this hop.
    Retry {
        /// The interface to send it on.
        iface: IfaceId,
        /// The address being resolved.
        ip: Ipv4Addr,
    },
    /// Resolution failed after max_retries: these packets (exactly as queued)
    /// must be answered with ICMP host unreachable and dropped.
    Failed {
        /// The interface the hop was on.
        iface: IfaceId,
        /// The address that did not answer.
        ip: Ipv4Addr,
        /// The packets that were waiting, oldest first.
        packets: Vec<Vec<u8>>,
    },
}

/// One entry as shown to operators; a snapshot, so showing the table never
/// holds a borrow of the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpEntryView {
    /// The interface the neighbour is on.
    pub iface: IfaceId,
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// Its MAC address; `None` while still being resolved.
    pub mac: Option<MacAddr>,
    /// The state, judged at the time the view was taken.
    pub state: ArpState,
    /// Time since last confirmed, or since the first request for an
    /// incomplete entry; zero for static entries, which are never confirmed.
    pub age: Duration,
    /// Packets waiting for resolution.
    pub queued: usize,
}

/// Counters for operators: every packet this cache drops, and every
/// resolution it gives up on, is counted here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ArpStats {
    /// Resolutions started (first broadcast requests asked for).
    pub requests_started: u64,
    /// Broadcast retries asked for.
    pub retries: u64,
    /// Resolutions given up after `max_retries` requests.
    pub failures: u64,
    /// Packets dropped because their hop's queue was full.
    pub queue_overflows: u64,
    /// Packets dropped because no entry could be made for their hop.
    pub table_full: u64,
    /// Entries evicted to make room for a new neighbour.
    pub evictions: u64,
    /// Entries removed because they aged out (Stale too long, or a probe
    /// went unanswered).
    pub expired: u64,
}

/// Why a static entry could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    /// The table is full of entries that cannot be evicted.
    Full,
}

impl fmt::Display for ArpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArpError::Full => {
                f.write_str("ARP cache is full of static or unresolved entries; raise its capacity")
            }
        }
    }
}

impl std::error::Error for ArpError {}

type Key = (IfaceId, Ipv4Addr);

/// What an entry is doing. Incomplete is the only state with a queue, so a
/// resolved entry cannot hold packets by mistake.
#[derive(Debug)]
enum Kind {
    Incomplete {
        /// Requests sent so far, the first included.
        sent: u32,
        /// When the next retry (or the failure) is due.
        deadline: Instant,
        /// Waiting packets, oldest first.
        queue: Vec<Vec<u8>>,
    },
    /// Reachable or Stale: which one is decided from the age on each lookup.
    Confirmed,
    Probe {
        /// When the first refresh was asked for; the probe window starts here.
        started: Instant,
        /// Refreshes asked for so far.
        sent: u32,
        /// When the last one was asked for.
        last: Instant,
    },
    Static,
}

#[derive(Debug)]
struct Entry {
    /// Meaningless (zero) while Incomplete.
    mac: MacAddr,
    /// Last confirmation, or the first request of an incomplete entry.
    since: Instant,
    kind: Kind,
}

/// The state of an entry at a given moment, with lazily-applied aging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Live(ArpState),
    /// Aged out but not yet swept: treated as absent.
    Dead,
}

/// The neighbour cache of one router, over all its interfaces.
#[derive(Debug)]
pub struct ArpCache {
    config: ArpConfig,
    /// `max_retries`, at least 1.
    max_tries: u32,
    /// `queue_per_hop`, at least 1.
    queue_cap: usize,
    entries: HashMap<Key, Entry>,
    /// Keys of the incomplete entries, in the order their resolutions
    /// started. Exact: every incomplete entry is here once, nothing else is.
    pending: Vec<Key>,
    /// The earliest deadline among `pending`, exactly.
    next_retry: Option<Instant>,
    /// No dynamic resolved entry can age out before this (a lower bound; the
    /// sweep recomputes it).
    next_sweep: Option<Instant>,
    statics: usize,
    free: Vec<Vec<u8>>,
    stats: ArpStats,
}

impl ArpCache {
    /// An empty cache. Memory for `capacity` entries is reserved now (twice
    /// that many slots, so removals never make the table grow); if that
    /// cannot be allocated the table grows on demand instead, still bounded
    /// by `capacity`.
    pub fn new(config: ArpConfig) -> Self {
        let mut entries = HashMap::new();
        // Failure is harmless: the bound on entries is enforced by count.
        let _ = entries.try_reserve(config.capacity.saturating_mul(2));
        ArpCache {
            max_tries: config.max_retries.max(1),
            queue_cap: config.queue_per_hop.max(1),
            config,
            entries,
            pending: Vec::new(),
            next_retry: None,
            next_sweep: None,
            statics: 0,
            free: Vec::new(),
            stats: ArpStats::default(),
        }
    }

    /// Looks up the next hop for a packet about to be sent; if unresolved,
    /// copies `packet` into the hop's queue (slow path: allocation is fine
    /// here; freed buffers are reused from a small free list).
    pub fn resolve(
        &mut self,
        now: Instant,
        iface: IfaceId,
        ip: Ipv4Addr,
        packet: &[u8],
    ) -> Resolution {
        let key = (iface, ip);
        let cfg = &self.config;
        if let Some(e) = self.entries.get_mut(&key) {
            match &mut e.kind {
                Kind::Static => return Resolution::Known(e.mac),
                Kind::Confirmed => {
                    let age = now.saturating_since(e.since);
                    if age < cfg.reachable_time {
                        return Resolution::Known(e.mac);
                    }
                    if age < cfg.stale_time {
                        e.kind = Kind::Probe {
                            started: now,
                            sent: 1,
                            last: now,
                        };
                        let end = now + probe_window(cfg, self.max_tries);
                        self.next_sweep = Some(self.next_sweep.map_or(end, |t| t.min(end)));
                        return Resolution::KnownRefresh(e.mac);
                    }
                }
                Kind::Probe {
                    started,
                    sent,
                    last,
                } => {
                    if now < *started + probe_window(cfg, self.max_tries) {
                        if *sent < self.max_tries && now >= *last + cfg.retry_interval {
                            *sent += 1;
                            *last = now;
                            return Resolution::KnownRefresh(e.mac);
                        }
                        return Resolution::Known(e.mac);
                    }
                }
                Kind::Incomplete { queue, .. } => {
                    if queue.len() >= self.queue_cap {
                        self.stats.queue_overflows += 1;
                        return Resolution::QueueFull;
                    }
                    queue.push(copy_packet(&mut self.free, packet));
                    return Resolution::Queued;
                }
            }
            // Aged out but not swept yet: start over in place.
            self.stats.expired += 1;
            *e = incomplete_entry(&mut self.free, self.config.retry_interval, now, packet);
        } else {
            if !self.make_room(now) {
                self.stats.table_full += 1;
                return Resolution::TableFull;
            }
            let e = incomplete_entry(&mut self.free, self.config.retry_interval, now, packet);
            self.entries.insert(key, e);
        }
        self.pending.push(key);
        let deadline = now + self.config.retry_interval;
        self.next_retry = Some(self.next_retry.map_or(deadline, |t| t.min(deadline)));
        self.stats.requests_started += 1;
        Resolution::QueuedSendRequest
    }

    /// Lookup without queueing (for the router's own generated packets when
    /// it prefers to drop, and for tests). Changes nothing: a stale entry is
    /// returned without asking for a refresh.
    pub fn get(&self, now: Instant, iface: IfaceId, ip: Ipv4Addr) -> Option<MacAddr> {
        let e = self.entries.get(&(iface, ip))?;
        match self.status(e, now) {
            Status::Live(ArpState::Incomplete) | Status::Dead => None,
            Status::Live(_) => Some(e.mac),
        }
    }

    /// An ARP packet from `ip` with sender `mac` arrived on `iface`.
    /// `create`: true when the packet was addressed to us (request for our
    /// address, or a reply) so an entry is created; false when we only
    /// overheard it (RFC 826 merge: update an existing entry only). Confirms
    /// the entry (Reachable, age reset). Returns the packets that were
    /// waiting for this hop, in order, to be sent now (empty Vec when none).
    ///
    /// Static entries are left alone. A sender MAC that is a group or zero
    /// address is refused (RFC 1812 §3.3.2: a router must not believe an ARP
    /// reply claiming a broadcast or multicast link address), as is a sender
    /// IP that cannot be a neighbour (`0.0.0.0` of an RFC 5227 probe,
    /// broadcast, multicast).
    pub fn learn(
        &mut self,
        now: Instant,
        iface: IfaceId,
        ip: Ipv4Addr,
        mac: MacAddr,
        create: bool,
    ) -> Vec<Vec<u8>> {
        if !mac.is_valid_source() || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Vec::new();
        }
        let key = (iface, ip);
        if !create
            && self
                .entries
                .get(&key)
                .is_some_and(|e| self.status(e, now) == Status::Dead)
        {
            // Aged out but not swept: it is gone, and overhearing must not
            // bring it back.
            self.entries.remove(&key);
            self.stats.expired += 1;
            return Vec::new();
        }
        if let Some(e) = self.entries.get_mut(&key) {
            let old = std::mem::replace(&mut e.kind, Kind::Confirmed);
            match old {
                Kind::Static => {
                    e.kind = Kind::Static;
                    Vec::new()
                }
                Kind::Incomplete { queue, .. } => {
                    e.mac = mac;
                    e.since = now;
                    self.forget_pending(key);
                    self.note_expiry(now);
                    queue
                }
                Kind::Confirmed | Kind::Probe { .. } => {
                    e.mac = mac;
                    e.since = now;
                    Vec::new()
                }
            }
        } else {
            if create && self.make_room(now) {
                self.entries.insert(
                    key,
                    Entry {
                        mac,
                        since: now,
                        kind: Kind::Confirmed,
                    },
                );
                self.note_expiry(now);
            }
            Vec::new()
        }
    }

    /// Permanent entry (never aged, never evicted) — from config or `ctl`.
    /// Replaces any dynamic entry for the hop; packets queued on it are
    /// discarded.
    pub fn insert_static(
        &mut self,
        iface: IfaceId,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), ArpError> {
        let key = (iface, ip);
        if let Some(e) = self.entries.get_mut(&key) {
            e.mac = mac;
            match std::mem::replace(&mut e.kind, Kind::Static) {
                Kind::Static => {}
                Kind::Incomplete { queue, .. } => {
                    self.statics += 1;
                    self.forget_pending(key);
                    self.recycle_queue(queue);
                }
                Kind::Confirmed | Kind::Probe { .. } => self.statics += 1,
            }
            return Ok(());
        }
        // Static entries have no time; `make_room` only needs one to judge
        // which dynamic entries are dead, and the oldest one is evicted
        // either way, so any instant gives a valid choice.
        if !self.make_room(Instant::ZERO) {
            return Err(ArpError::Full);
        }
        self.entries.insert(
            key,
            Entry {
                mac,
                since: Instant::ZERO,
                kind: Kind::Static,
            },
        );
        self.statics += 1;
        Ok(())
    }

    /// Removes one entry, static or not (`ctl`, or the router withdrawing a
    /// neighbour); packets queued on it are discarded. False if there was
    /// none.
    pub fn remove(&mut self, iface: IfaceId, ip: Ipv4Addr) -> bool {
        let key = (iface, ip);
        let Some(e) = self.entries.remove(&key) else {
            return false;
        };
        match e.kind {
            Kind::Static => self.statics -= 1,
            Kind::Incomplete { queue, .. } => {
                self.forget_pending(key);
                self.recycle_queue(queue);
            }
            Kind::Confirmed | Kind::Probe { .. } => {}
        }
        true
    }

    /// Drops every entry of an interface, static ones included (it went
    /// away); queued packets are discarded. Returns how many entries were
    /// removed.
    pub fn flush_iface(&mut self, iface: IfaceId) -> usize {
        self.remove_where(|k, _| k.0 == iface)
    }

    /// Drops every dynamic entry (incomplete ones included, their packets
    /// discarded); static entries stay. Returns how many were removed.
    pub fn flush(&mut self) -> usize {
        self.remove_where(|_, e| !matches!(e.kind, Kind::Static))
    }

    /// Earliest moment handle_timeout has work (next retry, next expiry
    /// sweep). None when nothing is pending. Retry deadlines are exact;
    /// the sweep time may be early (a sweep that finds nothing is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.next_retry, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Retries, failures, expiry of old entries. Pushes events into `events`
    /// (caller-owned Vec, reused), retries and failures in the order the
    /// resolutions started.
    pub fn handle_timeout(&mut self, now: Instant, events: &mut Vec<ArpEvent>) {
        if self.next_retry.is_some_and(|t| now >= t) {
            self.run_retries(now, events);
        }
        if self.next_sweep.is_some_and(|t| now >= t) {
            self.sweep(now);
        }
    }

    /// Every live entry, for display; order: by iface then ip. Allocates
    /// (a sorted snapshot); not for the fast path.
    pub fn entries(&self, now: Instant) -> impl Iterator<Item = ArpEntryView> + '_ {
        let mut views: Vec<ArpEntryView> = self
            .entries
            .iter()
            .filter_map(|(&(iface, ip), e)| {
                let Status::Live(state) = self.status(e, now) else {
                    return None;
                };
                let (mac, age, queued) = match &e.kind {
                    Kind::Incomplete { queue, .. } => {
                        (None, now.saturating_since(e.since), queue.len())
                    }
                    Kind::Static => (Some(e.mac), Duration::ZERO, 0),
                    Kind::Confirmed | Kind::Probe { .. } => {
                        (Some(e.mac), now.saturating_since(e.since), 0)
                    }
                };
                Some(ArpEntryView {
                    iface,
                    ip,
                    mac,
                    state,
                    age,
                    queued,
                })
            })
            .collect();
        views.sort_unstable_by_key(|v| (v.iface, v.ip));
        views.into_iter()
    }

    /// Counters since creation.
    pub fn stats(&self) -> ArpStats {
        self.stats
    }

    /// Entries held, aged-out ones included until the next sweep removes
    /// them; this is what counts against `capacity`.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Gives a packet buffer back once the router is done with it (after
    /// sending what [`ArpCache::learn`] released, or answering a
    /// [`ArpEvent::Failed`]), so the next queued packet can reuse it instead
    /// of allocating. Optional: dropping the buffer is also fine.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.free.len() < FREE_LIST_LEN && buf.capacity() <= FREE_BUFFER_MAX {
            self.free.push(buf);
        }
    }

    fn recycle_queue(&mut self, queue: Vec<Vec<u8>>) {
        for buf in queue {
            self.recycle(buf);
        }
    }

    /// The state of `e` at `now`, aging applied.
    fn status(&self, e: &Entry, now: Instant) -> Status {
        match &e.kind {
            Kind::Static => Status::Live(ArpState::Static),
            Kind::Incomplete { .. } => Status::Live(ArpState::Incomplete),
            Kind::Confirmed => {
                let age = now.saturating_since(e.since);
                if age < self.config.reachable_time {
                    Status::Live(ArpState::Reachable)
                } else if age < self.config.stale_time {
                    Status::Live(ArpState::Stale)
                } else {
                    Status::Dead
                }
            }
            Kind::Probe { started, .. } => {
                if now < *started + probe_window(&self.config, self.max_tries) {
                    Status::Live(ArpState::Probe)
                } else {
                    Status::Dead
                }
            }
        }
    }

    /// When `e` ages out, if it can.
    fn expiry(&self, e: &Entry) -> Option<Instant> {
        match &e.kind {
            Kind::Confirmed => {
                Some(e.since + self.config.reachable_time.max(self.config.stale_time))
            }
            Kind::Probe { started, .. } => {
                Some(*started + probe_window(&self.config, self.max_tries))
            }
            Kind::Static | Kind::Incomplete { .. } => None,
        }
    }

    /// A dynamic entry was confirmed at `now`: make sure a sweep is planned
    /// no later than its expiry.
    fn note_expiry(&mut self, now: Instant) {
        let end = now + self.config.reachable_time.max(self.config.stale_time);
        self.next_sweep = Some(self.next_sweep.map_or(end, |t| t.min(end)));
    }

    /// Makes room for one new entry if the table is full: removes aged-out
    /// entries, else evicts the least recently confirmed resolved dynamic
    /// entry. False when every entry is static or incomplete.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.entries.len() < self.config.capacity {
            return true;
        }
        // Every incomplete entry holds at least one packet, so the only
        // evictable entries are the resolved dynamic ones.
        if self.entries.len() <= self.pending.len() + self.statics {
            return false;
        }
        let mut oldest: Option<(Instant, Key)> = None;
        let mut dead = 0;
        let (cfg, max_tries) = (&self.config, self.max_tries);
        self.entries.retain(|&key, e| {
            let started = match e.kind {
                Kind::Confirmed => {
                    if now.saturating_since(e.since) >= cfg.reachable_time.max(cfg.stale_time) {
                        dead += 1;
                        return false;
                    }
                    e.since
                }
                Kind::Probe { started, .. } => {
                    if now >= started + probe_window(cfg, max_tries) {
                        dead += 1;
                        return false;
                    }
                    e.since
                }
                Kind::Static | Kind::Incomplete { .. } => return true,
            };
            if oldest.is_none_or(|(t, _)| started < t) {
                oldest = Some((started, key));
            }
            true
        });
        self.stats.expired += dead;
        if self.entries.len() < self.config.capacity {
            return true;
        }
        match oldest {
            Some((_, key)) => {
                self.entries.remove(&key);
                self.stats.evictions += 1;
                self.entries.len() < self.config.capacity
            }
            None => false,
        }
    }

    fn run_retries(&mut self, now: Instant, events: &mut Vec<ArpEvent>) {
        let interval = self.config.retry_interval;
        let max_tries = self.max_tries;
        let mut next: Option<Instant> = None;
        let entries = &mut self.entries;
        let stats = &mut self.stats;
        self.pending.retain(|&key| {
            let Some(e) = entries.get_mut(&key) else {
                return false;
            };
            let Kind::Incomplete {
                sent,
                deadline,
                queue,
            } = &mut e.kind
            else {
                return false;
            };
            if now >= *deadline {
                if *sent >= max_tries {
                    let packets = std::mem::take(queue);
                    entries.remove(&key);
                    stats.failures += 1;
                    events.push(ArpEvent::Failed {
                        iface: key.0,
                        ip: key.1,
                        packets,
                    });
                    return false;
                }
                *sent += 1;
                // Keep the schedule even when called a little late, but
                // never fire a burst after a long stall.
                let planned = *deadline + interval;
                *deadline = if planned > now {
                    planned
                } else {
                    now + interval
                };
                stats.retries += 1;
                events.push(ArpEvent::Retry {
                    iface: key.0,
                    ip: key.1,
                });
            }
            next = Some(next.map_or(*deadline, |t| t.min(*deadline)));
            true
        });
        self.next_retry = next;
    }

    /// Removes aged-out entries and plans the next sweep.
    fn sweep(&mut self, now: Instant) {
        let before = self.entries.len();
        let mut next: Option<Instant> = None;
        let mut kept = std::mem::take(&mut self.entries);
        kept.retain(|_, e| {
            if self.status(e, now) == Status::Dead {
                return false;
            }
            if let Some(t) = self.expiry(e) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            true
        });
        self.entries = kept;
        self.stats.expired += (before - self.entries.len()) as u64;
        self.next_sweep = next.map(|t| t.max(now + SWEEP_INTERVAL));
    }

    /// Removes `key` from the pending list and recomputes the earliest retry.
    fn forget_pending(&mut self, key: Key) {
        self.pending.retain(|k| *k != key);
        self.recompute_next_retry();
    }

    fn recompute_next_retry(&mut self) {
        self.next_retry = self
            .pending
            .iter()
            .filter_map(|k| match self.entries.get(k)?.kind {
                Kind::Incomplete { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min();
    }

    /// Removes the entries `doomed` picks, discarding their packets, and
    /// brings the timers up to date (a flush may leave nothing to wait for).
    fn remove_where(&mut self, mut doomed: impl FnMut(&Key, &Entry) -> bool) -> usize {
        let before = self.entries.len();
        let mut next_sweep: Option<Instant> = None;
        let mut entries = std::mem::take(&mut self.entries);
        entries.retain(|k, e| {
            if !doomed(k, e) {
                if let Some(t) = self.expiry(e) {
                    next_sweep = Some(next_sweep.map_or(t, |n| n.min(t)));
                }
                return true;
            }
            match std::mem::replace(&mut e.kind, Kind::Confirmed) {
                Kind::Static => self.statics -= 1,
                Kind::Incomplete { queue, .. } => self.recycle_queue(queue),
                Kind::Confirmed | Kind::Probe { .. } => {}
            }
            false
        });
        self.entries = entries;
        // Never earlier than already planned, so the once-a-second limit holds;
        // never later than the first remaining expiry unless that limit says so.
        self.next_sweep = match (self.next_sweep, next_sweep) {
            (Some(old), Some(new)) => Some(old.max(new)),
            _ => None,
        };
        let entries = &self.entries;
        self.pending.retain(|k| entries.contains_key(k));
        self.recompute_next_retry();
        before - self.entries.len()
    }
}

/// How long a probe may go unanswered: as many refreshes as a resolution
/// gets requests.
fn probe_window(cfg: &ArpConfig, max_tries: u32) -> Duration {
    cfg.retry_interval
        .checked_mul(max_tries)
        .unwrap_or(Duration::MAX)
}

/// A fresh resolution holding `packet`, its first request sent at `now`.
fn incomplete_entry(
    free: &mut Vec<Vec<u8>>,
    retry_interval: Duration,
    now: Instant,
    packet: &[u8],
) -> Entry {
    Entry {
        mac: MacAddr::default(),
        since: now,
        kind: Kind::Incomplete {
            sent: 1,
            deadline: now + retry_interval,
            queue: vec![copy_packet(free, packet)],
        },
    }
}

/// An owned copy of `packet`, in a recycled buffer when one is available.
fn copy_packet(free: &mut Vec<Vec<u8>>, packet: &[u8]) -> Vec<u8> {
    match free.pop() {
        Some(mut buf) => {
            buf.clear();
            buf.extend_from_slice(packet);
            buf
        }
        None => packet.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF0: IfaceId = IfaceId(0);
    const IF1: IfaceId = IfaceId(1);

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, last)
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    fn ms(m: u64) -> Instant {
        Instant::from_millis(m)
    }

    fn cache() -> ArpCache {
        ArpCache::new(ArpConfig::default())
    }

    fn with_capacity(capacity: usize) -> ArpCache {
        ArpCache::new(ArpConfig {
            capacity,
            ..ArpConfig::default()
        })
    }

    fn timeout(c: &mut ArpCache, now: Instant) -> Vec<ArpEvent> {
        let mut ev = Vec::new();
        c.handle_timeout(now, &mut ev);
        ev
    }

    fn view(c: &ArpCache, now: Instant, iface: IfaceId, addr: Ipv4Addr) -> Option<ArpEntryView> {
        c.entries(now).find(|v| v.iface == iface && v.ip == addr)
    }

    #[test]
    fn defaults_are_linux_like() {
        let d = ArpConfig::default();
        assert_eq!(d.capacity, 1024);
        assert_eq!(d.reachable_time, Duration::from_secs(30));
        assert_eq!(d.stale_time, Duration::from_secs(90));
        assert_eq!(d.retry_interval, Duration::from_secs(1));
        assert_eq!(d.max_retries, 3);
        assert_eq!(d.queue_per_hop, 8);
    }

    #[test]
    fn queues_until_full_and_counts_overflow() {
        let mut c = cache();
        assert_eq!(
            c.resolve(secs(0), IF0, ip(1), &[0]),
            Resolution::QueuedSendRequest
        );
        for i in 1..8u8 {
            assert_eq!(c.resolve(secs(0), IF0, ip(1), &[i]), Resolution::Queued);
        }
        assert_eq!(c.resolve(secs(0), IF0, ip(1), &[8]), Resolution::QueueFull);
        assert_eq!(c.resolve(secs(0), IF0, ip(1), &[9]), Resolution::QueueFull);
        let s = c.stats();
        assert_eq!(s.queue_overflows, 2);
        assert_eq!(s.requests_started, 1);
        assert_eq!(c.get(secs(0), IF0, ip(1)), None);
        assert_eq!(
            view(&c, ms(400), IF0, ip(1)),
            Some(ArpEntryView {
                iface: IF0,
                ip: ip(1),
                mac: None,
                state: ArpState::Incomplete,
                age: Duration::from_millis(400),
                queued: 8,
            })
        );
    }

    #[test]
    fn learn_releases_queue_in_order_then_known() {
        let mut c = cache();
        assert_eq!(
            c.resolve(secs(0), IF0, ip(1), b"first"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(
            c.resolve(ms(100), IF0, ip(1), b"second"),
            Resolution::Queued
        );
        assert_eq!(c.resolve(ms(200), IF0, ip(1), b"third"), Resolution::Queued);
        let out = c.learn(ms(300), IF0, ip(1), mac(7), true);
        assert_eq!(
            out,
            vec![b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
        );
        assert_eq!(
            c.resolve(ms(400), IF0, ip(1), b"x"),
            Resolution::Known(mac(7))
        );
        assert_eq!(c.get(ms(400), IF0, ip(1)), Some(mac(7)));
        assert_eq!(c.poll_timeout(), Some(ms(300) + Duration::from_secs(90)));
        // Nothing is waiting any more.
        assert!(c.learn(ms(500), IF0, ip(1), mac(7), true).is_empty());
        assert!(timeout(&mut c, secs(5)).is_empty());
        let v = view(&c, secs(1), IF0, ip(1)).unwrap();
        assert_eq!(
            (v.state, v.mac, v.queued),
            (ArpState::Reachable, Some(mac(7)), 0)
        );
        assert_eq!(v.age, Duration::from_millis(500));
    }

    #[test]
    fn retries_then_fails_with_packets() {
        let mut c = cache();
        assert_eq!(
            c.resolve(secs(0), IF0, ip(1), b"a"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(c.resolve(ms(10), IF0, ip(1), b"b"), Resolution::Queued);
        assert_eq!(c.poll_timeout(), Some(secs(1)));
        assert!(timeout(&mut c, ms(999)).is_empty());
        let retry = ArpEvent::Retry {
            iface: IF0,
            ip: ip(1),
        };
        assert_eq!(timeout(&mut c, secs(1)), vec![retry.clone()]);
        assert_eq!(c.poll_timeout(), Some(secs(2)));
        assert!(timeout(&mut c, ms(1999)).is_empty());
        assert_eq!(timeout(&mut c, secs(2)), vec![retry]);
        assert_eq!(c.poll_timeout(), Some(secs(3)));
        assert_eq!(c.resolve(ms(2500), IF0, ip(1), b"c"), Resolution::Queued);
        assert_eq!(
            timeout(&mut c, secs(3)),
            vec![ArpEvent::Failed {
                iface: IF0,
                ip: ip(1),
                packets: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
            }]
        );
        assert_eq!(c.poll_timeout(), None);
        assert!(c.is_empty());
        let s = c.stats();
        assert_eq!((s.requests_started, s.retries, s.failures), (1, 2, 1));
        // No negative caching: the next packet starts afresh.
        assert_eq!(
            c.resolve(secs(3), IF0, ip(1), b"d"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(c.poll_timeout(), Some(secs(4)));
    }

    #[test]
    fn late_timer_keeps_schedule_without_bursts() {
        let mut c = cache();
        c.resolve(secs(0), IF0, ip(1), b"a");
        // 300 ms late: the next retry stays on the 1 s grid.
        assert_eq!(timeout(&mut c, ms(1300)).len(), 1);
        assert_eq!(c.poll_timeout(), Some(secs(2)));
        // Stalled past a whole interval: one retry, then a fresh interval.
        assert_eq!(
            timeout(&mut c, ms(4500)),
            vec![ArpEvent::Retry {
                iface: IF0,
                ip: ip(1)
            }]
        );
        assert_eq!(c.poll_timeout(), Some(ms(5500)));
    }

    #[test]
    fn zero_max_retries_still_sends_one_request() {
        let mut c = ArpCache::new(ArpConfig {
            max_retries: 0,
            queue_per_hop: 0,
            ..ArpConfig::default()
        });
        assert_eq!(
            c.resolve(secs(0), IF0, ip(1), b"a"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(c.resolve(secs(0), IF0, ip(1), b"b"), Resolution::QueueFull);
        assert_eq!(
            timeout(&mut c, secs(1)),
            vec![ArpEvent::Failed {
                iface: IF0,
                ip: ip(1),
                packets: vec![b"a".to_vec()]
            }]
        );
    }

    #[test]
    fn stale_entry_refreshes_once_per_interval() {
        let mut c = cache();
        assert!(c.learn(secs(0), IF0, ip(1), mac(1), true).is_empty());
        assert_eq!(
            c.resolve(ms(29_999), IF0, ip(1), b""),
            Resolution::Known(mac(1))
        );
        assert_eq!(
            view(&c, secs(30), IF0, ip(1)).unwrap().state,
            ArpState::Stale
        );
        assert_eq!(
            c.resolve(secs(30), IF0, ip(1), b""),
            Resolution::KnownRefresh(mac(1))
        );
        assert_eq!(
            view(&c, secs(30), IF0, ip(1)).unwrap().state,
            ArpState::Probe
        );
        assert_eq!(
            c.resolve(ms(30_999), IF0, ip(1), b""),
            Resolution::Known(mac(1))
        );
        assert_eq!(
            c.resolve(secs(31), IF0, ip(1), b""),
            Resolution::KnownRefresh(mac(1))
        );
        assert_eq!(
            c.resolve(ms(31_500), IF0, ip(1), b""),
            Resolution::Known(mac(1))
        );
        assert_eq!(
            c.resolve(secs(32), IF0, ip(1), b""),
            Resolution::KnownRefresh(mac(1))
        );
        assert_eq!(
            c.resolve(ms(32_999), IF0, ip(1), b""),
            Resolution::Known(mac(1))
        );
        // A reply confirms it again.
        assert!(c.learn(ms(32_999), IF0, ip(1), mac(1), true).is_empty());
        assert_eq!(
            c.resolve(secs(40), IF0, ip(1), b""),
            Resolution::Known(mac(1))
        );
        assert_eq!(
            view(&c, secs(40), IF0, ip(1)).unwrap().state,
            ArpState::Reachable
        );
        assert_eq!(c.stats().requests_started, 0);
    }

    #[test]
    fn unconfirmed_probe_is_removed() {
        let mut c = cache();
        c.learn(secs(0), IF0, ip(1), mac(1), true);
        c.learn(secs(0), IF0, ip(2), mac(2), true);
        assert_eq!(
            c.resolve(secs(30), IF0, ip(1), b""),
            Resolution::KnownRefresh(mac(1))
        );
        assert_eq!(
            c.resolve(secs(30), IF0, ip(2), b""),
            Resolution::KnownRefresh(mac(2))
        );
        assert_eq!(c.poll_timeout(), Some(secs(33)));
        assert_eq!(c.get(ms(32_999), IF0, ip(1)), Some(mac(1)));
        assert_eq!(c.get(secs(33), IF0, ip(1)), None);
        assert_eq!(view(&c, secs(33), IF0, ip(1)), None);
        // Used after the window, before any sweep: a fresh resolution.
        assert_eq!(
            c.resolve(secs(33), IF0, ip(1), b"p"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(c.stats().expired, 1);
        // The sweep removes the other one.
        assert!(timeout(&mut c, secs(33)).is_empty());
        assert_eq!(c.len(), 1);
        assert_eq!(c.stats().expired, 2);
        assert_eq!(
            view(&c, secs(33), IF0, ip(1)).unwrap().state,
            ArpState::Incomplete
        );
        assert_eq!(c.poll_timeout(), Some(secs(34)));
    }

    #[test]
    fn unused_stale_entry_is_removed_at_stale_time() {
        let mut c = cache();
        c.learn(secs(0), IF0, ip(1), mac(1), true);
        c.learn(secs(10), IF0, ip(2), mac(2), true);
        assert_eq!(c.poll_timeout(), Some(secs(90)));
        assert_eq!(c.get(ms(89_999), IF0, ip(1)), Some(mac(1)));
        assert_eq!(
            view(&c, ms(89_999), IF0, ip(1)).unwrap().state,
            ArpState::Stale
        );
        assert_eq!(c.get(secs(90), IF0, ip(1)), None);
        assert!(timeout(&mut c, secs(90)).is_empty());
        assert_eq!(c.len(), 1);
        assert_eq!(c.stats().expired, 1);
        assert_eq!(c.poll_timeout(), Some(secs(100)));
        assert!(timeout(&mut c, secs(100)).is_empty());
        assert!(c.is_empty());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn sweep_runs_at_most_once_per_second() {
        let mut c = cache();
        c.learn(secs(0), IF0, ip(1), mac(1), true);
        c.learn(ms(200), IF0, ip(2), mac(2), true);
        assert_eq!(c.poll_timeout(), Some(secs(90)));
        assert!(timeout(&mut c, secs(90)).is_empty());
        assert_eq!(c.len(), 1);
        // ip(2) expires at 90.2 s, but the next sweep waits a full second.
        assert_eq!(c.poll_timeout(), Some(secs(91)));
        assert_eq!(
            c.get(ms(90_200), IF0, ip(2)),
            None,
            "judged lazily meanwhile"
        );
        assert!(timeout(&mut c, secs(91)).is_empty());
        assert!(c.is_empty());
        assert_eq!(c.stats().expired, 2);
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn overheard_arp_updates_but_does_not_create() {
        let mut c = cache();
        assert!(c.learn(secs(0), IF0, ip(1), mac(1), false).is_empty());
        assert!(c.is_empty());
        assert_eq!(c.get(secs(0), IF0, ip(1)), None);
        assert_eq!(c.poll_timeout(), None);

        c.learn(secs(0), IF0, ip(1), mac(1), true);
        c.learn(secs(10), IF0, ip(1), mac(9), false);
        assert_eq!(c.get(secs(10), IF0, ip(1)), Some(mac(9)));
        let v = view(&c, secs(35), IF0, ip(1)).unwrap();
        assert_eq!(
            (v.state, v.age),
            (ArpState::Reachable, Duration::from_secs(25))
        );

        // An aged-out entry is not brought back by overhearing.
        c.learn(secs(100), IF0, ip(1), mac(9), false);
        assert_eq!(c.get(secs(100), IF0, ip(1)), None);
        assert!(c.is_empty());
        assert_eq!(c.stats().expired, 1);

        // Overhearing the hop we are resolving completes it.
        c.resolve(secs(0), IF0, ip(2), b"q");
        assert_eq!(
            c.learn(ms(500), IF0, ip(2), mac(2), false),
            vec![b"q".to_vec()]
        );
        assert_eq!(c.poll_timeout(), Some(secs(90)));
    }

    #[test]
    fn refuses_group_macs_and_non_unicast_senders() {
        let mut c = cache();
        c.resolve(secs(0), IF0, ip(1), b"q");
        assert!(
            c.learn(secs(0), IF0, ip(1), MacAddr::BROADCAST, true)
                .is_empty()
        );
        assert!(
            c.learn(secs(0), IF0, ip(1), MacAddr([0x01, 0, 0x5e, 0, 0, 1]), true)
                .is_empty()
        );
        assert!(
            c.learn(secs(0), IF0, ip(1), MacAddr([0; 6]), true)
                .is_empty()
        );
        assert!(
            c.learn(secs(0), IF0, Ipv4Addr::UNSPECIFIED, mac(1), true)
                .is_empty()
        );
        assert!(
            c.learn(secs(0), IF0, Ipv4Addr::BROADCAST, mac(1), true)
                .is_empty()
        );
        assert!(
            c.learn(secs(0), IF0, Ipv4Addr::new(224, 0, 0, 1), mac(1), true)
                .is_empty()
        );
        assert_eq!(c.len(), 1);
        assert_eq!(view(&c, secs(0), IF0, ip(1)).unwrap().queued, 1);
    }

    #[test]
    fn full_table_evicts_least_recently_confirmed() {
        let mut c = with_capacity(3);
        c.learn(secs(0), IF0, ip(1), mac(1), true);
        c.learn(secs(1), IF0, ip(2), mac(2), true);
        c.learn(secs(2), IF0, ip(3), mac(3), true);
        // Re-confirming ip(1) makes ip(2) the oldest.
        c.learn(secs(3), IF0, ip(1), mac(1), true);
        assert_eq!(
            c.resolve(secs(4), IF0, ip(4), b"d"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.get(secs(4), IF0, ip(2)), None);
        assert_eq!(c.get(secs(4), IF0, ip(1)), Some(mac(1)));
        assert_eq!(c.get(secs(4), IF0, ip(3)), Some(mac(3)));
        // A reply for a new neighbour also evicts.
        c.learn(secs(5), IF0, ip(5), mac(5), true);
        assert_eq!(c.get(secs(5), IF0, ip(3)), None);
        assert_eq!(c.get(secs(5), IF0, ip(5)), Some(mac(5)));
        assert_eq!(c.stats().evictions, 2);
    }

    #[test]
    fn full_table_removes_aged_out_entries_before_evicting() {
        let mut c = with_capacity(2);
        c.learn(secs(0), IF0, ip(1), mac(1), true);
        c.learn(secs(50), IF0, ip(2), mac(2), true);
        assert_eq!(
            c.resolve(secs(95), IF0, ip(3), b""),
            Resolution::QueuedSendRequest
        );
        let s = c.stats();
        assert_eq!((s.expired, s.evictions), (1, 0));
        assert_eq!(c.get(secs(95), IF0, ip(2)), Some(mac(2)));
    }

    #[test]
    fn table_full_when_only_incomplete_or_static() {
        let mut c = with_capacity(2);
        assert_eq!(
            c.resolve(secs(0), IF0, ip(1), b""),
            Resolution::QueuedSendRequest
        );
        assert_eq!(
            c.resolve(secs(0), IF0, ip(2), b""),
            Resolution::QueuedSendRequest
        );
        assert_eq!(c.resolve(secs(0), IF0, ip(3), b""), Resolution::TableFull);
        assert_eq!(c.resolve(secs(0), IF0, ip(3), b""), Resolution::TableFull);
        assert_eq!(c.stats().table_full, 2);
        assert!(c.learn(secs(0), IF0, ip(3), mac(3), true).is_empty());
        assert_eq!(c.get(secs(0), IF0, ip(3)), None);
        assert_eq!(c.insert_static(IF0, ip(3), mac(3)), Err(ArpError::Full));
        // Queued packets still join their existing resolution.
        assert_eq!(c.resolve(secs(0), IF0, ip(1), b""), Resolution::Queued);

        let mut c = with_capacity(2);
        c.insert_static(IF0, ip(1), mac(1)).unwrap();
        c.resolve(secs(0), IF0, ip(2), b"");
        assert_eq!(c.resolve(secs(0), IF0, ip(3), b""), Resolution::TableFull);
        assert_eq!(c.stats().evictions, 0);

        let mut c = with_capacity(0);
        assert_eq!(c.resolve(secs(0), IF0, ip(1), b""), Resolution::TableFull);
        assert_eq!(c.insert_static(IF0, ip(1), mac(1)), Err(ArpError::Full));
    }

    #[test]
    fn static_entries_never_expire_or_change() {
        let mut c = with_capacity(2);
        c.insert_static(IF0, ip(1), mac(1)).unwrap();
        c.learn(secs(0), IF0, ip(2), mac(2), true);
        assert_eq!(c.poll_timeout(), Some(secs(90)));
        let day = secs(86_400);
        assert!(timeout(&mut c, day).is_empty());
        assert_eq!(c.len(), 1);
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.resolve(day, IF0, ip(1), b""), Resolution::Known(mac(1)));
        assert!(c.learn(day, IF0, ip(1), mac(9), true).is_empty());
        assert_eq!(c.get(day, IF0, ip(1)), Some(mac(1)));
        assert_eq!(
            c.entries(day).collect::<Vec<_>>(),
            vec![ArpEntryView {
                iface: IF0,
                ip: ip(1),
                mac: Some(mac(1)),
                state: ArpState::Static,
                age: Duration::ZERO,
                queued: 0,
            }]
        );
        // A full table of new neighbours cannot push it out.
        c.learn(day, IF0, ip(2), mac(2), true);
        c.learn(day, IF0, ip(3), mac(3), true);
        assert_eq!(c.get(day, IF0, ip(1)), Some(mac(1)));
        assert_eq!(c.get(day, IF0, ip(3)), Some(mac(3)));
        assert_eq!(c.flush(), 1);
        assert_eq!(c.get(day, IF0, ip(1)), Some(mac(1)));
        assert!(c.remove(IF0, ip(1)));
        assert!(!c.remove(IF0, ip(1)));
        assert!(c.is_empty());
    }

    #[test]
    fn static_replaces_a_pending_resolution() {
        let mut c = cache();
        c.resolve(secs(0), IF0, ip(1), b"q");
        c.resolve(ms(500), IF0, ip(2), b"q");
        c.insert_static(IF0, ip(1), mac(1)).unwrap();
        assert_eq!(c.poll_timeout(), Some(ms(1500)));
        assert_eq!(
            timeout(&mut c, ms(1500)),
            vec![ArpEvent::Retry {
                iface: IF0,
                ip: ip(2)
            }]
        );
        assert_eq!(
            c.resolve(secs(2), IF0, ip(1), b""),
            Resolution::Known(mac(1))
        );
        // Static over static just changes the address.
        c.insert_static(IF0, ip(1), mac(3)).unwrap();
        assert_eq!(c.get(secs(2), IF0, ip(1)), Some(mac(3)));
        assert!(c.remove(IF0, ip(1)));
        assert_eq!(c.len(), 1);
        // The count of static entries stays exact across re-insertion and
        // promotion, or a full table would wrongly look unevictable.
        let mut c = with_capacity(3);
        c.insert_static(IF0, ip(1), mac(1)).unwrap();
        c.insert_static(IF0, ip(1), mac(2)).unwrap();
        c.learn(secs(0), IF0, ip(2), mac(2), true);
        c.insert_static(IF0, ip(2), mac(2)).unwrap();
        assert!(c.remove(IF0, ip(2)));
        c.learn(secs(0), IF0, ip(3), mac(3), true);
        c.learn(secs(0), IF0, ip(4), mac(4), true);
        assert_eq!(
            c.resolve(secs(1), IF0, ip(5), b""),
            Resolution::QueuedSendRequest
        );
        assert_eq!(c.stats().evictions, 1);
    }

    #[test]
    fn flush_iface_drops_only_that_interface() {
        let mut c = cache();
        c.learn(secs(0), IF0, ip(1), mac(1), true);
        c.insert_static(IF0, ip(2), mac(2)).unwrap();
        c.resolve(ms(200), IF0, ip(3), b"q");
        c.learn(secs(0), IF1, ip(1), mac(4), true);
        c.resolve(ms(700), IF1, ip(3), b"q");
        assert_eq!(c.poll_timeout(), Some(ms(1200)));
        assert_eq!(c.flush_iface(IF0), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.poll_timeout(), Some(ms(1700)));
        assert_eq!(c.get(secs(1), IF1, ip(1)), Some(mac(4)));
        assert_eq!(c.get(secs(1), IF0, ip(1)), None);
        assert_eq!(
            timeout(&mut c, ms(1700)),
            vec![ArpEvent::Retry {
                iface: IF1,
                ip: ip(3)
            }]
        );
        assert_eq!(c.flush_iface(IF0), 0);
        assert_eq!(c.flush(), 2);
        assert!(c.is_empty());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn same_ip_on_two_interfaces_is_two_entries() {
        let mut c = cache();
        assert_eq!(
            c.resolve(secs(0), IF0, ip(1), b"zero"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(
            c.resolve(secs(0), IF1, ip(1), b"one"),
            Resolution::QueuedSendRequest
        );
        assert_eq!(
            c.learn(secs(0), IF1, ip(1), mac(1), true),
            vec![b"one".to_vec()]
        );
        assert_eq!(c.get(secs(0), IF0, ip(1)), None);
        assert_eq!(c.get(secs(0), IF1, ip(1)), Some(mac(1)));
        assert_eq!(
            c.learn(secs(0), IF0, ip(1), mac(2), true),
            vec![b"zero".to_vec()]
        );
        assert_eq!(
            c.resolve(secs(0), IF0, ip(1), b""),
            Resolution::Known(mac(2))
        );
        assert_eq!(
            c.resolve(secs(0), IF1, ip(1), b""),
            Resolution::Known(mac(1))
        );
        assert!(c.remove(IF0, ip(1)));
        assert_eq!(c.get(secs(0), IF1, ip(1)), Some(mac(1)));
    }

    #[test]
    fn poll_timeout_is_the_next_retry_exactly() {
        let mut c = cache();
        assert_eq!(c.poll_timeout(), None);
        c.resolve(ms(250), IF0, ip(1), b"a");
        c.resolve(ms(600), IF0, ip(2), b"b");
        assert_eq!(c.poll_timeout(), Some(ms(1250)));
        assert!(timeout(&mut c, ms(1249)).is_empty());
        assert_eq!(
            timeout(&mut c, ms(1250)),
            vec![ArpEvent::Retry {
                iface: IF0,
                ip: ip(1)
            }]
        );
        assert_eq!(c.poll_timeout(), Some(ms(1600)));
        c.learn(ms(1300), IF0, ip(2), mac(2), true);
        // ip(2)'s expiry sweep is far away; ip(1)'s next retry is next.
        assert_eq!(c.poll_timeout(), Some(ms(2250)));
        c.learn(ms(1400), IF0, ip(1), mac(1), true);
        assert_eq!(c.poll_timeout(), Some(ms(91_300)));
    }

    #[test]
    fn entries_are_ordered_by_interface_then_address() {
        let mut c = cache();
        c.learn(secs(0), IF1, ip(1), mac(1), true);
        c.learn(secs(0), IF0, ip(9), mac(2), true);
        c.resolve(secs(0), IF0, ip(3), b"");
        c.insert_static(IF1, ip(0), mac(3)).unwrap();
        let keys: Vec<_> = c.entries(secs(1)).map(|v| (v.iface, v.ip)).collect();
        assert_eq!(
            keys,
            vec![(IF0, ip(3)), (IF0, ip(9)), (IF1, ip(0)), (IF1, ip(1))]
        );
    }

    #[test]
    fn recycled_buffers_are_reused() {
        let mut c = cache();
        let buf = Vec::with_capacity(1500);
        let ptr = buf.as_ptr();
        c.recycle(buf);
        c.resolve(secs(0), IF0, ip(1), b"payload");
        let out = c.learn(secs(0), IF0, ip(1), mac(1), true);
        assert_eq!(out, vec![b"payload".to_vec()]);
        assert_eq!(out[0].as_ptr(), ptr);
        // Oversized buffers are not kept.
        c.recycle(Vec::with_capacity(FREE_BUFFER_MAX + 1));
        assert!(c.free.is_empty());
    }

    #[test]
    fn churn_never_grows_the_table() {
        let mut c = with_capacity(64);
        let cap = c.entries.capacity();
        for i in 0..64u8 {
            c.learn(secs(0), IF0, ip(i), mac(i + 1), true);
        }
        for round in 0..4u64 {
            for i in 64..128u8 {
                c.learn(secs(round + 1), IF0, ip(i), mac(i), true);
            }
        }
        assert_eq!(c.entries.capacity(), cap, "the table never grows");
        assert_eq!(c.len(), 64);
    }
}
