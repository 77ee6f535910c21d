//! A bounded cache of upstream answers.
//!
//! Guests ask the same few names again and again; answering them from
//! memory saves a round trip to the upstream resolver. Entries are whole
//! upstream responses keyed by question, stored with the time they arrived
//! and the time they expire; the forwarder rewrites id and TTLs when it
//! serves one. The cache never holds more than its configured number of
//! entries: when full, the entry closest to expiry makes room (it had the
//! least life left to offer), and an expired entry is never served.

use std::collections::BTreeMap;
use std::time::Duration;

use hashbrown::HashMap;

use crate::time::Instant;

/// What answers are cached under: the question, with the name in
/// canonical (lower case) form so `Example.COM` and `example.com` share an
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Canonical question name.
    pub name: String,
    /// Question type, numeric.
    pub qtype: u16,
    /// Question class, numeric.
    pub qclass: u16,
}

/// One cached response.
#[derive(Debug, Clone)]
struct Entry {
    response: Vec<u8>,
    stored: Instant,
    expires: Instant,
    seq: u64,
}

/// A cached response as served: the bytes as the upstream sent them and
/// how long ago they arrived (TTLs must be decreased by that much).
#[derive(Debug, Clone, Copy)]
pub struct CacheHit<'a> {
    /// The upstream response, id and TTLs as received.
    pub response: &'a [u8],
    /// Time since the response arrived.
    pub age: Duration,
}

/// The answer cache of one forwarder.
#[derive(Debug, Clone)]
pub struct AnswerCache {
    capacity: usize,
    entries: HashMap<CacheKey, Entry>,
    by_expiry: BTreeMap<(Instant, u64), CacheKey>,
    next_seq: u64,
}

impl AnswerCache {
    /// An empty cache holding at most `capacity` answers (0: caches
    /// nothing).
    pub fn new(capacity: usize) -> Self {
        AnswerCache {
            capacity,
            entries: HashMap::new(),
            by_expiry: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Entries held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The response for `key` if it is still fresh at `now`.
    pub fn get(&self, now: Instant, key: &CacheKey) -> Option<CacheHit<'_>> {
        let entry = self.entries.get(key)?;
        if now >= entry.expires {
            return None;
        }
        Some(CacheHit {
            response: &entry.response,
            age: now.saturating_since(entry.stored),
        })
    }

    /// Stores `response` for `ttl` from `now`, replacing any previous
    /// answer to the same question; evicts the soonest-expiring entry when
    /// full.
    pub fn insert(&mut self, now: Instant, key: CacheKey, response: Vec<u8>, ttl: Duration) {
        if self.capacity == 0 || ttl.is_zero() {
            return;
        }
        self.purge_expired(now);
        if let Some(old) = self.entries.remove(&key) {
            self.by_expiry.remove(&(old.expires, old.seq));
        }
        while self.entries.len() >= self.capacity {
            let Some((_, victim)) = self.by_expiry.pop_first() else {
                break;
            };
            self.entries.remove(&victim);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let expires = now + ttl;
        self.by_expiry.insert((expires, seq), key.clone());
        self.entries.insert(
            key,
            Entry {
                response,
                stored: now,
                expires,
                seq,
            },
        );
    }

    /// Drops every entry expired at `now`.
    pub fn purge_expired(&mut self, now: Instant) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> CacheKey {
        CacheKey {
            name: name.into(),
            qtype: 1,
            qclass: 1,
        }
    }

    #[test]
    fn fresh_until_exactly_the_expiry() {
        let mut c = AnswerCache::new(4);
        c.insert(
            Instant::from_secs(10),
            key("a"),
            vec![1, 2],
            Duration::from_secs(30),
        );
        let hit = c.get(Instant::from_millis(39_999), &key("a")).unwrap();
        assert_eq!(hit.response, &[1, 2]);
        assert_eq!(hit.age, Duration::from_millis(29_999));
        assert!(c.get(Instant::from_secs(40), &key("a")).is_none());
        assert!(c.get(Instant::from_secs(11), &key("b")).is_none());
        assert_eq!(c.len(), 1);
        c.purge_expired(Instant::from_secs(40));
        assert!(c.is_empty());
    }

    #[test]
    fn full_cache_evicts_the_soonest_expiry() {
        let mut c = AnswerCache::new(2);
        let t = Instant::from_secs(1);
        c.insert(t, key("long"), vec![1], Duration::from_secs(100));
        c.insert(t, key("short"), vec![2], Duration::from_secs(5));
        c.insert(t, key("new"), vec![3], Duration::from_secs(50));
        assert_eq!(c.len(), 2);
        assert!(c.get(t, &key("short")).is_none());
        assert_eq!(c.get(t, &key("long")).unwrap().response, &[1]);
        assert_eq!(c.get(t, &key("new")).unwrap().response, &[3]);
    }

    #[test]
    fn replacing_keeps_one_entry_and_zero_capacity_or_ttl_stores_nothing() {
        let mut c = AnswerCache::new(2);
        let t = Instant::from_secs(1);
        c.insert(t, key("a"), vec![1], Duration::from_secs(5));
        c.insert(t, key("a"), vec![2], Duration::from_secs(50));
        assert_eq!(c.len(), 1);
        assert_eq!(
            c.get(Instant::from_secs(20), &key("a")).unwrap().response,
            &[2]
        );
        c.insert(t, key("z"), vec![1], Duration::ZERO);
        assert_eq!(c.len(), 1);
        let mut none = AnswerCache::new(0);
        none.insert(t, key("a"), vec![1], Duration::from_secs(5));
        assert!(none.is_empty());
    }
}
