//! The address pool and lease table of one DHCP server.
//!
//! This is the server's memory, with no knowledge of the wire: which address
//! belongs to which client and until when, which addresses are quarantined
//! after a DECLINE, and which address each departed client had, so it gets
//! the same one back (dnsmasq-style stickiness: a VM that is shut down for
//! a day and boots again keeps its address unless somebody else needed it).
//!
//! Allocation order for a client without a lease: its reservation; else the
//! address it had last time; else the address it asks for; else the lowest
//! free address of the ranges (in configuration order), first skipping
//! addresses remembered for other clients and only then taking those. The
//! lowest free address, not a hash of the MAC, keeps allocation predictable
//! in tests and in small lab networks; the remembered map is what keeps
//! addresses stable.
//!
//! Everything is bounded: an active lease always owns a distinct address
//! that is in a range or reserved for its MAC, so the table never holds more
//! entries than the pool has addresses (nor more than `max_leases`); the
//! remembered map is one entry per address and at most [`MAX_REMEMBERED`];
//! the declined set only holds addresses that were leased; and the event
//! queue drops its oldest entries past [`MAX_EVENTS`] (counted).
//!
//! Expiry is kept in ordered indexes, so a server with thousands of leases
//! finds the next deadline without a scan.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use hashbrown::HashMap;

use super::config::DhcpConfig;
use crate::mac::MacAddr;
use crate::time::Instant;

/// How long an offered address stays held for the client it was offered
/// to: long enough for a slow client's REQUEST, short enough that clients
/// that wander off do not drain a small pool.
pub const OFFER_HOLD: Duration = Duration::from_secs(30);

/// How long an address stays out of the pool after a client declined it
/// (found it in use on the wire), RFC 2131 §3.1's "mark as not available".
pub const DECLINE_QUARANTINE: Duration = Duration::from_secs(600);

/// The most departed clients whose last address is remembered; the oldest
/// memory goes first.
pub const MAX_REMEMBERED: usize = 4096;

/// The most lease events held for a consumer that does not take them.
pub const MAX_EVENTS: usize = 4096;

/// How a client is recognised across messages: option 61 when it sends one
/// (RFC 2131 §4.2: the client identifier, if present, is the key), else its
/// hardware address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    /// The raw bytes of option 61, type byte included.
    Id(Vec<u8>),
    /// chaddr.
    Mac(MacAddr),
}

impl ClientKey {
    /// The key for a client with an optional identifier and a MAC.
    pub(crate) fn of(client_id: Option<&[u8]>, mac: MacAddr) -> Self {
        match client_id {
            Some(id) if !id.is_empty() => ClientKey::Id(id.to_vec()),
            _ => ClientKey::Mac(mac),
        }
    }

    fn client_id(&self) -> Option<&[u8]> {
        match self {
            ClientKey::Id(id) => Some(id),
            ClientKey::Mac(_) => None,
        }
    }
}

/// The client a pool operation is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    /// What identifies it.
    pub(crate) key: ClientKey,
    /// Its hardware address (reservations match on it).
    pub(crate) mac: MacAddr,
}

/// Where a lease is in its life, shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Offered and held for a short while, waiting for the client's REQUEST.
    Offered,
    /// Acknowledged: the client uses the address until the lease ends.
    Bound,
}

/// One lease as an operator sees it (`switchboard ctl leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The leased address.
    pub ip: Ipv4Addr,
    /// The client's hardware address.
    pub mac: MacAddr,
    /// The name it is known by (its reservation's, else its own).
    pub hostname: Option<String>,
    /// Option 61 as colon-separated hex, when the client sent one.
    pub client_id: Option<String>,
    /// Time left; `None` is kept for leases without an end, which this
    /// server does not hand out, so today it is always `Some`.
    pub expires_in: Option<Duration>,
    /// Offered or bound.
    pub state: LeaseState,
    /// True when the address is this MAC's reservation.
    pub reserved: bool,
}

/// A change to the set of bound leases, for the DNS forwarder (names of
/// DHCP clients) and the lease-file writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// `ip` is now bound to `mac` and known as `hostname`.
    Bound {
        /// The address.
        ip: Ipv4Addr,
        /// The client.
        mac: MacAddr,
        /// Its name, if it has one.
        hostname: Option<String>,
    },
    /// The lease on `ip` ended (expired, released, declined or moved); a
    /// name it carried no longer resolves to it.
    Gone {
        /// The address.
        ip: Ipv4Addr,
        /// The name it carried.
        hostname: Option<String>,
    },
}

/// One entry of the lease table, keyed by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) key: ClientKey,
    pub(crate) mac: MacAddr,
    pub(crate) hostname: Option<String>,
    pub(crate) state: LeaseState,
    pub(crate) expires: Instant,
}

impl Lease {
    /// The client identifier bytes this lease was made for.
    pub(crate) fn client_id(&self) -> Option<&[u8]> {
        self.key.client_id()
    }
}

/// The lease table, quarantine and memory of one server.
#[derive(Debug)]
pub(crate) struct Pool {
    /// Active leases (offered or bound), by address: one address, one lease.
    leases: HashMap<Ipv4Addr, Lease>,
    /// Client -> its active lease's address (the inverse of `leases`).
    by_client: HashMap<ClientKey, Ipv4Addr>,
    /// (deadline, address) of every active lease.
    expiries: BTreeSet<(Instant, Ipv4Addr)>,
    /// Departed client -> (its last address, age stamp).
    remembered: HashMap<ClientKey, (Ipv4Addr, u64)>,
    /// Address -> the departed client remembering it (one per address).
    remembered_ip: HashMap<Ipv4Addr, ClientKey>,
    /// Age stamp -> client, oldest first, for eviction.
    remembered_order: BTreeMap<u64, ClientKey>,
    next_stamp: u64,
    /// Quarantined address -> end of quarantine.
    declined: HashMap<Ipv4Addr, Instant>,
    declined_expiries: BTreeSet<(Instant, Ipv4Addr)>,
    /// Reserved address -> the MAC it is reserved for.
    reserved_ip: HashMap<Ipv4Addr, MacAddr>,
    /// MAC with a reservation -> its reserved address, if it has one.
    reserved_mac: HashMap<MacAddr, Option<Ipv4Addr>>,
    /// Most active leases at once.
    capacity: usize,
    events: VecDeque<LeaseEvent>,
    pub(crate) events_dropped: u64,
    pub(crate) dirty: bool,
}

impl Pool {
    /// An empty table for `cfg` (which must be valid).
    pub(crate) fn new(cfg: &DhcpConfig) -> Self {
        let pool_size = usize::try_from(cfg.pool_size()).unwrap_or(usize::MAX);
        Pool {
            leases: HashMap::new(),
            by_client: HashMap::new(),
            expiries: BTreeSet::new(),
            remembered: HashMap::new(),
            remembered_ip: HashMap::new(),
            remembered_order: BTreeMap::new(),
            next_stamp: 0,
            declined: HashMap::new(),
            declined_expiries: BTreeSet::new(),
            reserved_ip: cfg
                .reservations
                .iter()
                .filter_map(|r| r.ip.map(|ip| (ip, r.mac)))
                .collect(),
            reserved_mac: cfg.reservations.iter().map(|r| (r.mac, r.ip)).collect(),
            capacity: cfg.max_leases.unwrap_or(usize::MAX).min(pool_size),
            events: VecDeque::new(),
            events_dropped: 0,
            dirty: false,
        }
    }

    /// Number of active (offered or bound) leases.
    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }

    /// The reserved address of `mac`, if its reservation has one.
    pub(crate) fn reserved_ip_of(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.reserved_mac.get(&mac).copied().flatten()
    }

    /// The client's active lease.
    pub(crate) fn current(&self, key: &ClientKey) -> Option<(Ipv4Addr, &Lease)> {
        let ip = *self.by_client.get(key)?;
        self.leases.get(&ip).map(|l| (ip, l))
    }

    /// True when `ip` is quarantined after a DECLINE.
    pub(crate) fn is_declined(&self, ip: Ipv4Addr) -> bool {
        self.declined.contains_key(&ip)
    }

    /// True when the lease cap leaves room for this client (a client that
    /// already holds a lease always has room: it never holds two).
    pub(crate) fn has_room_for(&self, key: &ClientKey) -> bool {
        self.by_client.contains_key(key) || self.leases.len() < self.capacity
    }

    /// May `ip` ever be this client's, ignoring who holds it now? A MAC
    /// with a reserved address may have only that one; anyone else may have
    /// range addresses nobody reserved.
    pub(crate) fn valid_for(&self, cfg: &DhcpConfig, ip: Ipv4Addr, mac: MacAddr) -> bool {
        match self.reserved_ip_of(mac) {
            Some(reserved) => ip == reserved,
            None => cfg.in_ranges(ip) && !self.reserved_ip.contains_key(&ip),
        }
    }

    /// May `ip` be given to this client now: valid for it, not quarantined,
    /// and free or already its own (a reserved address held by the same MAC
    /// under another client identifier counts as its own: the reservation
    /// belongs to the machine).
    pub(crate) fn available_for(&self, cfg: &DhcpConfig, ip: Ipv4Addr, client: &Client) -> bool {
        if !self.valid_for(cfg, ip, client.mac) || self.is_declined(ip) {
            return false;
        }
        match self.leases.get(&ip) {
            None => true,
            Some(l) => {
                l.key == client.key
                    || (l.mac == client.mac && self.reserved_ip_of(client.mac) == Some(ip))
            }
        }
    }

    /// The address to offer this client, or `None` when nothing is free or
    /// the lease cap is reached (see the module doc for the order).
    pub(crate) fn choose(
        &self,
        cfg: &DhcpConfig,
        client: &Client,
        requested: Option<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        if let Some((ip, _)) = self.current(&client.key)
            && self.valid_for(cfg, ip, client.mac)
        {
            return Some(ip);
        }
        if !self.has_room_for(&client.key) {
            return None;
        }
        if let Some(ip) = self.reserved_ip_of(client.mac) {
            return self.available_for(cfg, ip, client).then_some(ip);
        }
        if let Some(&(ip, _)) = self.remembered.get(&client.key)
            && self.available_for(cfg, ip, client)
        {
            return Some(ip);
        }
        if let Some(ip) = requested
            && self.available_for(cfg, ip, client)
        {
            return Some(ip);
        }
        // Every address skipped below is held, quarantined, reserved or
        // remembered, so each pass stops after at most that many addresses
        // past the last free one: bounded by the tables, not the range size.
        for spare_the_remembered in [true, false] {
            for &(first, last) in &cfg.ranges {
                for n in u32::from(first)..=u32::from(last) {
                    let ip = Ipv4Addr::from(n);
                    if spare_the_remembered
                        && self
                            .remembered_ip
                            .get(&ip)
                            .is_some_and(|k| *k != client.key)
                    {
                        continue;
                    }
                    if self.available_for(cfg, ip, client) {
                        return Some(ip);
                    }
                }
            }
        }
        None
    }

    /// Holds `ip` (which [`Pool::choose`] picked) for the client for `hold`.
    /// An address the client already has bound stays bound with its
    /// deadline: a client that DISCOVERs again has not given it up.
    pub(crate) fn offer(
        &mut self,
        now: Instant,
        client: &Client,
        ip: Ipv4Addr,
        hostname: Option<String>,
        hold: Duration,
    ) {
        self.make_room(client, ip);
        let until = now + hold;
        match self.leases.get_mut(&ip) {
            Some(l) if l.key == client.key => {
                if l.state == LeaseState::Offered && l.expires < until {
                    let old = l.expires;
                    l.expires = until;
                    self.expiries.remove(&(old, ip));
                    self.expiries.insert((until, ip));
                }
                if l.state == LeaseState::Offered && hostname.is_some() {
                    l.hostname = hostname;
                }
            }
            _ => self.insert(
                ip,
                Lease {
                    key: client.key.clone(),
                    mac: client.mac,
                    hostname,
                    state: LeaseState::Offered,
                    expires: until,
                },
            ),
        }
    }

    /// Binds `ip` to the client until `expires` (new, confirmed after an
    /// offer, renewed, or restored from the lease file). `hostname` replaces
    /// the lease's name when given. Any other lease of the client ends.
    pub(crate) fn bind(
        &mut self,
        client: &Client,
        ip: Ipv4Addr,
        hostname: Option<String>,
        expires: Instant,
    ) {
        self.make_room(client, ip);
        let previous = self.remove(ip);
        let (was_bound, old_name) = match &previous {
            Some(l) => (l.state == LeaseState::Bound, l.hostname.clone()),
            None => (false, None),
        };
        let name = hostname.or_else(|| old_name.clone());
        if was_bound && old_name != name {
            self.push_event(LeaseEvent::Gone {
                ip,
                hostname: old_name.clone(),
            });
        }
        if !was_bound || old_name != name {
            self.push_event(LeaseEvent::Bound {
                ip,
                mac: client.mac,
                hostname: name.clone(),
            });
        }
        self.insert(
            ip,
            Lease {
                key: client.key.clone(),
                mac: client.mac,
                hostname: name,
                state: LeaseState::Bound,
                expires,
            },
        );
        // The address is in use again: whoever remembered it lost it.
        self.forget_remembered_ip(ip);
        self.forget_remembered_key(&client.key);
        self.dirty = true;
    }

    /// Drops the client's pending offer (it chose another server).
    pub(crate) fn forget_offer(&mut self, key: &ClientKey) -> bool {
        match self.current(key) {
            Some((ip, l)) if l.state == LeaseState::Offered => {
                self.end(ip, false);
                true
            }
            _ => false,
        }
    }

    /// Ends the client's bound lease on `ip` at its request, remembering the
    /// address for it. False when it holds no such lease.
    pub(crate) fn release(&mut self, key: &ClientKey, ip: Ipv4Addr) -> bool {
        match self.current(key) {
            Some((cur, l)) if cur == ip && l.state == LeaseState::Bound => {
                self.end(ip, true);
                true
            }
            _ => false,
        }
    }

    /// The client found `ip` in use by someone else: ends its lease and
    /// quarantines the address until `now + quarantine`. False when the
    /// client holds no lease on `ip` (a DECLINE cannot take addresses out of
    /// the pool on behalf of others).
    pub(crate) fn decline(
        &mut self,
        now: Instant,
        key: &ClientKey,
        ip: Ipv4Addr,
        quarantine: Duration,
    ) -> bool {
        if self.by_client.get(key) != Some(&ip) {
            return false;
        }
        self.end(ip, false);
        self.forget_remembered_ip(ip);
        let until = now + quarantine;
        if let Some(old) = self.declined.insert(ip, until) {
            self.declined_expiries.remove(&(old, ip));
        }
        self.declined_expiries.insert((until, ip));
        true
    }

    /// Ends every lease and quarantine whose deadline is at or before `now`.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(at, ip)) = self.expiries.first() {
            if at > now {
                break;
            }
            let remember = self
                .leases
                .get(&ip)
                .is_some_and(|l| l.state == LeaseState::Bound);
            self.end(ip, remember);
            // `end` removed the index entry; guard against a stale one.
            self.expiries.remove(&(at, ip));
        }
        while let Some(&(at, ip)) = self.declined_expiries.first() {
            if at > now {
                break;
            }
            self.declined_expiries.remove(&(at, ip));
            self.declined.remove(&ip);
        }
    }

    /// The next lease or quarantine deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let lease = self.expiries.first().map(|&(at, _)| at);
        let quarantine = self.declined_expiries.first().map(|&(at, _)| at);
        match (lease, quarantine) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Active leases, sorted by address.
    pub(crate) fn iter_sorted(&self) -> Vec<(Ipv4Addr, &Lease)> {
        let mut all: Vec<_> = self.leases.iter().map(|(&ip, l)| (ip, l)).collect();
        all.sort_by_key(|&(ip, _)| ip);
        all
    }

    /// The events since the last call, oldest first.
    pub(crate) fn take_events(&mut self) -> Vec<LeaseEvent> {
        self.events.drain(..).collect()
    }

    /// Moves other holders out of the way of binding or offering `ip` to the
    /// client: its own lease on another address, and a lease of the same
    /// MAC under another identifier on its reserved address.
    fn make_room(&mut self, client: &Client, ip: Ipv4Addr) {
        if let Some(&cur) = self.by_client.get(&client.key)
            && cur != ip
        {
            self.end(cur, false);
        }
        if self.leases.get(&ip).is_some_and(|l| l.key != client.key) {
            self.end(ip, false);
        }
    }

    /// Removes the lease on `ip`, announcing it if it was bound and
    /// remembering the address for its client if asked.
    fn end(&mut self, ip: Ipv4Addr, remember: bool) {
        let Some(lease) = self.remove(ip) else {
            return;
        };
        if lease.state == LeaseState::Bound {
            self.push_event(LeaseEvent::Gone {
                ip,
                hostname: lease.hostname,
            });
            self.dirty = true;
        }
        if remember {
            self.remember(lease.key, ip);
        }
    }

    fn insert(&mut self, ip: Ipv4Addr, lease: Lease) {
        self.by_client.insert(lease.key.clone(), ip);
        self.expiries.insert((lease.expires, ip));
        self.leases.insert(ip, lease);
    }

    fn remove(&mut self, ip: Ipv4Addr) -> Option<Lease> {
        let lease = self.leases.remove(&ip)?;
        self.expiries.remove(&(lease.expires, ip));
        if self.by_client.get(&lease.key) == Some(&ip) {
            self.by_client.remove(&lease.key);
        }
        Some(lease)
    }

    fn remember(&mut self, key: ClientKey, ip: Ipv4Addr) {
        self.forget_remembered_key(&key);
        self.forget_remembered_ip(ip);
        while self.remembered.len() >= MAX_REMEMBERED {
            let Some((_, oldest)) = self.remembered_order.pop_first() else {
                break;
            };
            if let Some((old_ip, _)) = self.remembered.remove(&oldest) {
                self.remembered_ip.remove(&old_ip);
            }
        }
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        self.remembered_order.insert(stamp, key.clone());
        self.remembered_ip.insert(ip, key.clone());
        self.remembered.insert(key, (ip, stamp));
    }

    fn forget_remembered_key(&mut self, key: &ClientKey) {
        if let Some((ip, stamp)) = self.remembered.remove(key) {
            self.remembered_order.remove(&stamp);
            self.remembered_ip.remove(&ip);
        }
    }

    fn forget_remembered_ip(&mut self, ip: Ipv4Addr) {
        if let Some(key) = self.remembered_ip.get(&ip).cloned() {
            self.forget_remembered_key(&key);
        }
    }

    fn push_event(&mut self, event: LeaseEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Panics when the indexes disagree; the property tests call it after
    /// every step.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self, cfg: &DhcpConfig) {
        assert_eq!(self.leases.len(), self.by_client.len());
        assert_eq!(self.leases.len(), self.expiries.len());
        assert!(self.leases.len() <= self.capacity);
        for (&ip, l) in &self.leases {
            assert_eq!(self.by_client.get(&l.key), Some(&ip));
            assert!(self.expiries.contains(&(l.expires, ip)));
            assert!(
                self.valid_for(cfg, ip, l.mac),
                "{ip} not valid for {}",
                l.mac
            );
            assert!(!self.declined.contains_key(&ip));
            assert_ne!(ip, cfg.server);
        }
        assert_eq!(self.remembered.len(), self.remembered_ip.len());
        assert_eq!(self.remembered.len(), self.remembered_order.len());
        assert!(self.remembered.len() <= MAX_REMEMBERED);
        for (k, &(ip, stamp)) in &self.remembered {
            assert_eq!(self.remembered_ip.get(&ip), Some(k));
            assert_eq!(self.remembered_order.get(&stamp), Some(k));
            // A departed client may hold an offer, never a bound lease.
            assert!(
                self.current(k)
                    .is_none_or(|(_, l)| l.state == LeaseState::Offered)
            );
        }
        assert_eq!(self.declined.len(), self.declined_expiries.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::config::Reservation;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn cfg() -> DhcpConfig {
        let mut c = DhcpConfig::new(ip(1), "10.0.0.0/24".parse().unwrap());
        c.ranges.push((ip(10), ip(12)));
        c.reservations.push(Reservation {
            mac: mac(9),
            name: Some("fixed".into()),
            ip: Some(ip(11)),
        });
        c.validate().unwrap();
        c
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn client(n: u8) -> Client {
        Client {
            key: ClientKey::Mac(mac(n)),
            mac: mac(n),
        }
    }

    #[test]
    fn lowest_free_skips_reserved_and_remembered() {
        let c = cfg();
        let mut p = Pool::new(&c);
        let t = Instant::from_secs(100);
        assert_eq!(p.choose(&c, &client(1), None), Some(ip(10)));
        p.bind(&client(1), ip(10), None, t + Duration::from_secs(60));
        // .11 is reserved for mac 9.
        assert_eq!(p.choose(&c, &client(2), None), Some(ip(12)));
        assert_eq!(p.choose(&c, &client(9), None), Some(ip(11)));
        // Client 1 releases: .10 is remembered for it, so client 2 still
        // gets .12, and client 1 gets .10 back.
        assert!(p.release(&client(1).key, ip(10)));
        assert_eq!(p.choose(&c, &client(2), None), Some(ip(12)));
        p.bind(&client(2), ip(12), None, t + Duration::from_secs(60));
        // Only .10 is left: client 3 takes it after all, and client 1's
        // memory of it is gone.
        assert_eq!(p.choose(&c, &client(3), None), Some(ip(10)));
        p.bind(&client(3), ip(10), None, t + Duration::from_secs(60));
        assert!(p.remembered.is_empty());
        assert_eq!(p.choose(&c, &client(1), None), None);
        p.check_invariants(&c);
    }

    #[test]
    fn expiry_is_exact_and_announced() {
        let c = cfg();
        let mut p = Pool::new(&c);
        let end = Instant::from_secs(160);
        p.bind(&client(1), ip(10), Some("a".into()), end);
        assert_eq!(
            p.take_events(),
            vec![LeaseEvent::Bound {
                ip: ip(10),
                mac: mac(1),
                hostname: Some("a".into())
            }]
        );
        assert_eq!(p.next_deadline(), Some(end));
        p.expire(Instant::from_micros(end.as_micros() - 1));
        assert_eq!(p.len(), 1);
        p.expire(end);
        assert_eq!(p.len(), 0);
        assert_eq!(
            p.take_events(),
            vec![LeaseEvent::Gone {
                ip: ip(10),
                hostname: Some("a".into())
            }]
        );
        assert_eq!(p.remembered.get(&client(1).key).map(|r| r.0), Some(ip(10)));
        assert_eq!(p.next_deadline(), None);
        p.check_invariants(&c);
    }

    #[test]
    fn remembered_is_bounded() {
        let mut c = DhcpConfig::new(Ipv4Addr::new(10, 0, 0, 1), "10.0.0.0/16".parse().unwrap());
        c.ranges
            .push((Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 255, 254)));
        let mut p = Pool::new(&c);
        let t = Instant::from_secs(1);
        for n in 0..(MAX_REMEMBERED as u32 + 10) {
            let m = MacAddr([2, 0, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
            let cl = Client {
                key: ClientKey::Mac(m),
                mac: m,
            };
            let a = p.choose(&c, &cl, None).unwrap();
            p.bind(&cl, a, None, t);
            assert!(p.release(&cl.key, a));
        }
        assert_eq!(p.remembered.len(), MAX_REMEMBERED);
        p.check_invariants(&c);
    }

    #[test]
    fn events_are_bounded() {
        let c = cfg();
        let mut p = Pool::new(&c);
        for n in 0..(MAX_EVENTS + 5) {
            p.bind(
                &client(1),
                ip(10),
                Some(format!("n{n}")),
                Instant::from_secs(10),
            );
        }
        // Each rename after the first is a Gone and a Bound.
        assert_eq!(p.events.len(), MAX_EVENTS);
        assert_eq!(
            p.events_dropped,
            (2 * (MAX_EVENTS + 5) - 1 - MAX_EVENTS) as u64
        );
    }
}
