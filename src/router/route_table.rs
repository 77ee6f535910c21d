//! The routing table: which interface, and which next hop, a destination
//! address leaves through.
//!
//! A router forwards every packet by asking one question: of all the routes
//! whose destination prefix contains this address, which is the most
//! specific? That is the longest-prefix match of RFC 1812 section 5.2.4.3.
//! When several routes share that longest prefix (two gateways to the same
//! network, say, a primary and a backup), the one with the lowest metric
//! wins, and among equal metrics the one configured first, so that the
//! choice is deterministic and does not flap as unrelated routes come and go.
//! Equal-cost multipath is deliberately not done: one answer per address
//! keeps the forwarding path simple and its behaviour easy to reason about.
//!
//! # Data structure
//!
//! The routes live in a [`prefix_trie::PrefixMap`] keyed by the (normalised)
//! destination prefix. Its value is the small list of routes for exactly that
//! prefix, kept sorted by metric, stable in insertion order, and never empty:
//! a prefix whose last route goes away is taken out of the map. A lookup is
//! then one `get_lpm` down the trie to find the longest matching prefix, plus
//! reading the first element of its list, which is already the winner.
//!
//! `PrefixMap` was chosen over a hand-written trie because it is already the
//! right shape: a tree-bitmap trie with five bits per node, so an IPv4 lookup
//! visits at most seven nodes kept in compact arrays, and it allocates nothing
//! while searching. Measured with `benches/lpm.rs` on a table of 100,000
//! random routes shaped like a real one (mostly /16 to /24, some shorter and
//! longer prefixes, one default route), a lookup costs 35 to 45 ns for a
//! random address (22 to 29 million lookups a second) and 65 to 70 ns for
//! addresses inside the table's prefixes, which walk deepest, on a shared
//! two-core development machine. That is far inside the per-packet budget,
//! so nothing is layered on top of it. Insertion and removal touch the trie
//! and one short list; they are the slow, control-plane path and may
//! allocate (building the 100,000-route table takes 20 to 25 ms).
//!
//! The table is bounded ([`RouteTable::with_capacity_limit`], one million
//! routes by default) so that a runaway configuration or control client gets
//! a clear [`RouteError::Full`] instead of exhausting memory.

use super::IfaceId;
use ipnet::Ipv4Net;
use prefix_trie::PrefixMap;
use std::fmt;
use std::net::Ipv4Addr;

/// Where a route came from.
///
/// Connected routes appear and disappear with an interface's addresses, while
/// static routes are the operator's; keeping the origin lets the router drop
/// exactly the routes an address change invalidates and lets `ctl routes`
/// show why a route exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteKind {
    /// The destination is a subnet an interface is directly attached to.
    Connected,
    /// Configured by the operator.
    Static,
}

/// One way to reach a destination prefix: the unit the table stores and a
/// lookup answers with, carrying everything the forwarding path needs to send
/// the packet on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination prefix; stored with its host bits cleared.
    pub dest: Ipv4Net,
    /// The next hop to resolve with ARP, or `None` when the destination is
    /// on the link itself and the packet's own destination is resolved.
    pub gateway: Option<Ipv4Addr>,
    /// The interface the packet leaves through.
    pub iface: IfaceId,
    /// Preference among routes for the same prefix: lower wins.
    pub metric: u32,
    /// Where the route came from.
    pub kind: RouteKind,
}

/// Why the table refused a change, so that the control socket can tell the
/// operator what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// A route with the same destination, gateway and interface is already
    /// present; change it by removing it first.
    Exists,
    /// No route matches the destination and filters given.
    NotFound,
    /// This many routes match; a removal must name exactly one.
    Ambiguous(usize),
    /// The table already holds its limit of routes.
    Full {
        /// The limit the table was created with.
        capacity: usize,
    },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::Exists => f.write_str(
                "a route to this destination through the same gateway and interface already exists",
            ),
            RouteError::NotFound => f.write_str("no route matches this destination and filter"),
            RouteError::Ambiguous(n) => write!(
                f,
                "{n} routes match this destination; name the gateway, interface or metric to pick one"
            ),
            RouteError::Full { capacity } => {
                write!(f, "the routing table is full ({capacity} routes)")
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// The default bound on the number of routes: far more than a lab or even a
/// full Internet table needs, small enough to stop a runaway client.
const DEFAULT_CAPACITY: usize = 1_000_000;

/// The routes of one router (one VRF), answering longest-prefix-match
/// lookups for the forwarding path and edits from configuration and the
/// control socket.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Routes per normalised destination prefix; each list is non-empty and
    /// sorted by metric, ties in insertion order.
    map: PrefixMap<Ipv4Net, Vec<Route>>,
    /// Total number of routes across all lists.
    len: usize,
    /// Most routes `insert` accepts.
    limit: usize,
}

impl Default for RouteTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteTable {
    /// An empty table bounded at one million routes, the bound a router
    /// uses unless configured otherwise.
    pub fn new() -> Self {
        Self::with_capacity_limit(DEFAULT_CAPACITY)
    }

    /// An empty table that refuses to grow beyond `limit` routes, for
    /// routers configured with a smaller (or larger) budget and for tests.
    pub fn with_capacity_limit(limit: usize) -> Self {
        RouteTable {
            map: PrefixMap::new(),
            len: 0,
            limit,
        }
    }

    /// The bound this table was created with, for reporting alongside
    /// [`RouteError::Full`].
    pub fn capacity_limit(&self) -> usize {
        self.limit
    }

    /// Adds a route, so that configuration, connected subnets and the control
    /// socket all go through one place that keeps the table consistent.
    ///
    /// `dest` is normalised (host bits cleared: 10.0.0.5/24 becomes
    /// 10.0.0.0/24). A route with the same destination, gateway and interface
    /// as an existing one is refused with [`RouteError::Exists`] whatever its
    /// metric: changing a metric is a removal and an insertion. A full table
    /// refuses with [`RouteError::Full`].
    pub fn insert(&mut self, mut route: Route) -> Result<(), RouteError> {
        route.dest = route.dest.trunc();
        if let Some(list) = self.map.get(&route.dest)
            && list
                .iter()
                .any(|r| r.gateway == route.gateway && r.iface == route.iface)
        {
            return Err(RouteError::Exists);
        }
        if self.len >= self.limit {
            return Err(RouteError::Full {
                capacity: self.limit,
            });
        }
        let list = self.map.entry(route.dest).or_default();
        // After every route with a metric <= ours: lowest metric first, and
        // among equals the earlier insertion stays in front.
        let at = list.partition_point(|r| r.metric <= route.metric);
        list.insert(at, route);
        self.len += 1;
        Ok(())
    }

    /// Removes the route for `dest` (normalised like [`insert`](Self::insert))
    /// that matches the filters, each `None` meaning "any", so that an
    /// operator can name a route by as little as makes it unique.
    ///
    /// Exactly one route must match: none is [`RouteError::NotFound`], more
    /// than one is [`RouteError::Ambiguous`] with the count, and nothing is
    /// removed in either case.
    pub fn remove(
        &mut self,
        dest: Ipv4Net,
        gateway: Option<Ipv4Addr>,
        iface: Option<IfaceId>,
        metric: Option<u32>,
    ) -> Result<Route, RouteError> {
        let dest = dest.trunc();
        let list = self.map.get_mut(&dest).ok_or(RouteError::NotFound)?;
        let matches = |r: &Route| {
            gateway.is_none_or(|g| r.gateway == Some(g))
                && iface.is_none_or(|i| r.iface == i)
                && metric.is_none_or(|m| r.metric == m)
        };
        let mut found = None;
        let mut count = 0;
        for (i, r) in list.iter().enumerate() {
            if matches(r) {
                found.get_or_insert(i);
                count += 1;
            }
        }
        let at = match (found, count) {
            (Some(at), 1) => at,
            (None, _) => return Err(RouteError::NotFound),
            (_, n) => return Err(RouteError::Ambiguous(n)),
        };
        let route = list.remove(at);
        if list.is_empty() {
            self.map.remove(&dest);
        }
        self.len -= 1;
        Ok(route)
    }

    /// Removes every route for which `pred` is true and returns how many, so
    /// that a whole class of routes can go at once: the connected and static
    /// routes through an interface whose address was removed or which was
    /// deleted.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&Route) -> bool) -> usize {
        let mut removed = 0;
        let mut emptied = false;
        for (_, list) in self.map.iter_mut() {
            let before = list.len();
            list.retain(|r| !pred(r));
            removed += before - list.len();
            emptied |= list.is_empty();
        }
        if emptied {
            self.map.retain(|_, list| !list.is_empty());
        }
        self.len -= removed;
        removed
    }

    /// The route a packet to `addr` takes: the longest prefix containing
    /// `addr`, and among routes for that prefix the lowest metric (ties: the
    /// one inserted first). `None` means the destination is unreachable.
    ///
    /// This is the per-packet path: it allocates nothing.
    pub fn lookup(&self, addr: Ipv4Addr) -> Option<&Route> {
        let (_, list) = self.map.get_lpm(&Ipv4Net::from(addr))?;
        list.first()
    }

    /// Every route, ordered by destination address, then prefix length, then
    /// metric (ties in insertion order), so that `ctl routes` prints a stable,
    /// readable table.
    pub fn iter(&self) -> impl Iterator<Item = &Route> + '_ {
        // The trie iterates in lexicographic order of the prefix bits, which
        // for prefixes is exactly (network address, prefix length): an
        // enclosing prefix comes before the ones it contains and starts at
        // an address no greater than theirs.
        self.map.iter().flat_map(|(_, list)| list.iter())
    }

    /// How many routes the table holds, counting each route to a shared
    /// prefix separately.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no route at all, in which case every lookup
    /// fails.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn route(dest: &str, gateway: Option<&str>, iface: u16, metric: u32) -> Route {
        Route {
            dest: net(dest),
            gateway: gateway.map(ip),
            iface: IfaceId(iface),
            metric,
            kind: RouteKind::Static,
        }
    }

    #[test]
    fn empty_table_finds_nothing() {
        let t = RouteTable::new();
        assert!(t.is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.capacity_limit(), 1_000_000);
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
        assert_eq!(t.iter().count(), 0);
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::new();
        let default = route("0.0.0.0/0", Some("192.0.2.1"), 0, 0);
        let net24 = Route {
            kind: RouteKind::Connected,
            ..route("10.1.2.0/24", None, 1, 0)
        };
        let net16 = route("10.1.0.0/16", Some("10.9.9.9"), 2, 0);
        let host = route("10.1.2.3/32", Some("10.1.2.254"), 3, 0);
        for r in [&default, &net24, &host, &net16] {
            t.insert(r.clone()).unwrap();
        }
        assert_eq!(t.len(), 4);
        assert!(!t.is_empty());
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&host));
        assert_eq!(t.lookup(ip("10.1.2.4")), Some(&net24));
        assert_eq!(t.lookup(ip("10.1.2.0")), Some(&net24));
        assert_eq!(t.lookup(ip("10.1.2.255")), Some(&net24));
        assert_eq!(t.lookup(ip("10.1.3.0")), Some(&net16));
        assert_eq!(t.lookup(ip("10.2.0.0")), Some(&default));
        assert_eq!(t.lookup(ip("255.255.255.255")), Some(&default));
        assert_eq!(t.lookup(ip("0.0.0.0")), Some(&default));
    }

    #[test]
    fn without_default_unmatched_addresses_are_unreachable() {
        let mut t = RouteTable::new();
        t.insert(route("192.168.0.0/16", None, 0, 0)).unwrap();
        assert_eq!(t.lookup(ip("192.169.0.1")), None);
        assert_eq!(t.lookup(ip("192.167.255.255")), None);
        assert_eq!(t.lookup(ip("192.168.255.255")).unwrap().iface, IfaceId(0));
    }

    #[test]
    fn lowest_metric_then_first_inserted_wins() {
        let mut t = RouteTable::new();
        let a = route("10.0.0.0/8", Some("10.0.0.1"), 0, 20);
        let b = route("10.0.0.0/8", Some("10.0.0.2"), 0, 10);
        let c = route("10.0.0.0/8", Some("10.0.0.3"), 0, 10);
        let d = route("10.0.0.0/8", Some("10.0.0.4"), 0, 5);
        t.insert(a.clone()).unwrap();
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(&a));
        t.insert(b.clone()).unwrap();
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(&b));
        // Same metric as b but later: b stays.
        t.insert(c.clone()).unwrap();
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(&b));
        t.insert(d.clone()).unwrap();
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(&d));
        assert_eq!(t.remove(d.dest, d.gateway, None, None), Ok(d.clone()));
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(&b));
        assert_eq!(t.remove(b.dest, b.gateway, None, None), Ok(b.clone()));
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(&c));
        // Re-inserting b puts it behind c, its equal that is now older.
        t.insert(b.clone()).unwrap();
        assert_eq!(t.lookup(ip("10.1.1.1")), Some(&c));
        let order: Vec<_> = t.iter().map(|r| r.gateway.unwrap()).collect();
        assert_eq!(order, [ip("10.0.0.3"), ip("10.0.0.2"), ip("10.0.0.1")]);
    }

    #[test]
    fn a_more_specific_prefix_beats_a_better_metric() {
        let mut t = RouteTable::new();
        t.insert(route("10.0.0.0/8", None, 0, 0)).unwrap();
        t.insert(route("10.1.0.0/16", None, 1, 1000)).unwrap();
        assert_eq!(t.lookup(ip("10.1.0.1")).unwrap().iface, IfaceId(1));
    }

    #[test]
    fn duplicates_are_refused_whatever_the_metric() {
        let mut t = RouteTable::new();
        t.insert(route("10.0.0.0/24", Some("10.0.0.1"), 1, 5))
            .unwrap();
        assert_eq!(
            t.insert(route("10.0.0.0/24", Some("10.0.0.1"), 1, 7)),
            Err(RouteError::Exists)
        );
        // Same destination once normalised.
        assert_eq!(
            t.insert(route("10.0.0.77/24", Some("10.0.0.1"), 1, 5)),
            Err(RouteError::Exists)
        );
        // A different gateway, interface or prefix length is a different route.
        t.insert(route("10.0.0.0/24", Some("10.0.0.2"), 1, 5))
            .unwrap();
        t.insert(route("10.0.0.0/24", Some("10.0.0.1"), 2, 5))
            .unwrap();
        t.insert(route("10.0.0.0/24", None, 1, 5)).unwrap();
        t.insert(route("10.0.0.0/25", Some("10.0.0.1"), 1, 5))
            .unwrap();
        assert_eq!(t.len(), 5);
    }

    #[test]
    fn destinations_are_normalised() {
        let mut t = RouteTable::new();
        t.insert(route("10.0.0.5/24", Some("10.0.0.1"), 1, 0))
            .unwrap();
        t.insert(route("192.0.2.77/0", Some("10.0.0.1"), 1, 0))
            .unwrap();
        let dests: Vec<String> = t.iter().map(|r| r.dest.to_string()).collect();
        assert_eq!(dests, ["0.0.0.0/0", "10.0.0.0/24"]);
        assert_eq!(t.lookup(ip("10.0.0.200")).unwrap().dest, net("10.0.0.0/24"));
        // Removal normalises its argument too.
        let r = t.remove(net("10.0.0.9/24"), None, None, None).unwrap();
        assert_eq!(r.dest, net("10.0.0.0/24"));
        assert_eq!(r.dest.addr(), ip("10.0.0.0"));
        assert_eq!(t.lookup(ip("10.0.0.200")).unwrap().dest, net("0.0.0.0/0"));
    }

    #[test]
    fn remove_needs_exactly_one_match() {
        let mut t = RouteTable::new();
        let a = route("10.0.0.0/24", Some("10.0.0.1"), 1, 5);
        let b = route("10.0.0.0/24", Some("10.0.0.2"), 1, 5);
        let c = route("10.0.0.0/24", Some("10.0.0.1"), 2, 9);
        for r in [&a, &b, &c] {
            t.insert(r.clone()).unwrap();
        }
        let d = net("10.0.0.0/24");
        assert_eq!(t.remove(d, None, None, None), Err(RouteError::Ambiguous(3)));
        assert_eq!(
            t.remove(d, Some(ip("10.0.0.1")), None, None),
            Err(RouteError::Ambiguous(2))
        );
        assert_eq!(
            t.remove(d, None, Some(IfaceId(1)), Some(5)),
            Err(RouteError::Ambiguous(2))
        );
        assert_eq!(
            t.remove(d, Some(ip("10.0.0.3")), None, None),
            Err(RouteError::NotFound)
        );
        assert_eq!(t.remove(d, None, None, Some(6)), Err(RouteError::NotFound));
        assert_eq!(
            t.remove(net("10.0.0.0/25"), None, None, None),
            Err(RouteError::NotFound)
        );
        assert_eq!(
            t.remove(net("10.0.1.0/24"), None, None, None),
            Err(RouteError::NotFound)
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.remove(d, None, None, Some(9)), Ok(c.clone()));
        assert_eq!(
            t.remove(d, Some(ip("10.0.0.2")), Some(IfaceId(1)), Some(5)),
            Ok(b.clone())
        );
        assert_eq!(t.remove(d, None, None, None), Ok(a.clone()));
        assert_eq!(t.remove(d, None, None, None), Err(RouteError::NotFound));
        assert!(t.is_empty());
        assert_eq!(t.lookup(ip("10.0.0.1")), None);
    }

    #[test]
    fn remove_where_drops_an_interfaces_routes() {
        let mut t = RouteTable::new();
        let keep = route("0.0.0.0/0", Some("192.0.2.1"), 0, 0);
        t.insert(keep.clone()).unwrap();
        t.insert(Route {
            kind: RouteKind::Connected,
            ..route("10.0.0.0/24", None, 1, 0)
        })
        .unwrap();
        t.insert(route("10.0.0.0/24", Some("192.0.2.9"), 0, 50))
            .unwrap();
        t.insert(route("172.16.0.0/12", Some("10.0.0.1"), 1, 0))
            .unwrap();
        let n = t.remove_where(|r| r.iface == IfaceId(1) && r.kind == RouteKind::Connected);
        assert_eq!(n, 1);
        assert_eq!(t.len(), 3);
        assert_eq!(
            t.lookup(ip("10.0.0.5")).unwrap().gateway,
            Some(ip("192.0.2.9"))
        );
        let n = t.remove_where(|r| r.iface == IfaceId(1));
        assert_eq!(n, 1);
        assert_eq!(t.lookup(ip("172.16.0.1")), Some(&keep));
        assert_eq!(t.remove_where(|_| false), 0);
        assert_eq!(t.remove_where(|r| r.iface == IfaceId(7)), 0);
        assert_eq!(t.remove_where(|_| true), 2);
        assert!(t.is_empty());
        assert_eq!(t.iter().count(), 0);
        assert_eq!(t.lookup(ip("172.16.0.1")), None);
    }

    #[test]
    fn iter_orders_by_address_then_length_then_metric() {
        let mut t = RouteTable::new();
        for (d, g, m) in [
            ("192.168.1.0/24", "10.0.0.1", 0),
            ("10.0.0.0/16", "10.0.0.1", 0),
            ("10.0.0.0/8", "10.0.0.2", 7),
            ("10.0.0.0/8", "10.0.0.1", 3),
            ("9.255.255.255/32", "10.0.0.1", 0),
            ("10.0.0.0/24", "10.0.0.1", 0),
            ("10.1.0.0/16", "10.0.0.1", 0),
            ("0.0.0.0/0", "10.0.0.1", 0),
            ("128.0.0.0/1", "10.0.0.1", 0),
            ("10.0.128.0/17", "10.0.0.1", 0),
        ] {
            t.insert(route(d, Some(g), 0, m)).unwrap();
        }
        let got: Vec<String> = t
            .iter()
            .map(|r| format!("{} m{}", r.dest, r.metric))
            .collect();
        assert_eq!(
            got,
            [
                "0.0.0.0/0 m0",
                "9.255.255.255/32 m0",
                "10.0.0.0/8 m3",
                "10.0.0.0/8 m7",
                "10.0.0.0/16 m0",
                "10.0.0.0/24 m0",
                "10.0.128.0/17 m0",
                "10.1.0.0/16 m0",
                "128.0.0.0/1 m0",
                "192.168.1.0/24 m0",
            ]
        );
    }

    #[test]
    fn a_full_table_refuses_new_routes() {
        let mut t = RouteTable::with_capacity_limit(2);
        assert_eq!(t.capacity_limit(), 2);
        t.insert(route("10.0.0.0/8", None, 0, 0)).unwrap();
        t.insert(route("10.0.0.0/8", None, 1, 0)).unwrap();
        let third = route("10.0.0.0/16", None, 0, 0);
        assert_eq!(
            t.insert(third.clone()),
            Err(RouteError::Full { capacity: 2 })
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(ip("10.0.0.1")).unwrap().dest, net("10.0.0.0/8"));
        // A duplicate is still reported as such, not as Full.
        assert_eq!(
            t.insert(route("10.0.0.0/8", None, 0, 9)),
            Err(RouteError::Exists)
        );
        t.remove(net("10.0.0.0/8"), None, Some(IfaceId(1)), None)
            .unwrap();
        t.insert(third).unwrap();
        assert_eq!(t.lookup(ip("10.0.0.1")).unwrap().dest, net("10.0.0.0/16"));
        assert!(
            RouteTable::with_capacity_limit(0)
                .insert(route("0.0.0.0/0", None, 0, 0))
                .is_err()
        );
    }

    #[test]
    fn errors_read_as_sentences() {
        assert_eq!(
            RouteError::Ambiguous(3).to_string(),
            "3 routes match this destination; name the gateway, interface or metric to pick one"
        );
        assert_eq!(
            RouteError::Full { capacity: 5 }.to_string(),
            "the routing table is full (5 routes)"
        );
        assert_eq!(
            RouteError::NotFound.to_string(),
            "no route matches this destination and filter"
        );
        assert!(RouteError::Exists.to_string().contains("already exists"));
    }

    #[test]
    fn kind_serialises_lowercase() {
        // serde_json is a regular dependency of the crate.
        assert_eq!(
            serde_json::to_string(&RouteKind::Connected).unwrap(),
            "\"connected\""
        );
        assert_eq!(
            serde_json::to_string(&RouteKind::Static).unwrap(),
            "\"static\""
        );
    }

    // ---- model-based property test ----

    /// The obvious, slow table the real one must agree with: a list in
    /// insertion order, searched linearly.
    #[derive(Default)]
    struct Model {
        routes: Vec<Route>,
        limit: usize,
    }

    impl Model {
        fn insert(&mut self, mut r: Route) -> Result<(), RouteError> {
            r.dest = r.dest.trunc();
            if self
                .routes
                .iter()
                .any(|x| x.dest == r.dest && x.gateway == r.gateway && x.iface == r.iface)
            {
                return Err(RouteError::Exists);
            }
            if self.routes.len() >= self.limit {
                return Err(RouteError::Full {
                    capacity: self.limit,
                });
            }
            self.routes.push(r);
            Ok(())
        }

        fn remove(
            &mut self,
            dest: Ipv4Net,
            gateway: Option<Ipv4Addr>,
            iface: Option<IfaceId>,
            metric: Option<u32>,
        ) -> Result<Route, RouteError> {
            let dest = dest.trunc();
            let hits: Vec<usize> = (0..self.routes.len())
                .filter(|&i| {
                    let r = &self.routes[i];
                    r.dest == dest
                        && gateway.is_none_or(|g| r.gateway == Some(g))
                        && iface.is_none_or(|x| r.iface == x)
                        && metric.is_none_or(|m| r.metric == m)
                })
                .collect();
            match hits[..] {
                [] => Err(RouteError::NotFound),
                [i] => Ok(self.routes.remove(i)),
                _ => Err(RouteError::Ambiguous(hits.len())),
            }
        }

        fn lookup(&self, addr: Ipv4Addr) -> Option<&Route> {
            let mut best: Option<&Route> = None;
            // Scanning in insertion order and replacing only on strictly
            // better keeps the earliest of equals.
            for r in &self.routes {
                if !r.dest.contains(&addr) {
                    continue;
                }
                best = match best {
                    Some(b)
                        if b.dest.prefix_len() > r.dest.prefix_len()
                            || (b.dest.prefix_len() == r.dest.prefix_len()
                                && b.metric <= r.metric) =>
                    {
                        Some(b)
                    }
                    _ => Some(r),
                };
            }
            best
        }

        fn sorted(&self) -> Vec<Route> {
            let mut v = self.routes.clone();
            // A stable sort keeps insertion order among equal keys.
            v.sort_by_key(|r| (r.dest.network(), r.dest.prefix_len(), r.metric));
            v
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Route),
        Remove {
            dest: Ipv4Net,
            gateway: Option<Ipv4Addr>,
            iface: Option<IfaceId>,
            metric: Option<u32>,
        },
        /// Remove the existing route with this index (modulo the count) by
        /// its destination and metric alone, so removals actually hit.
        RemoveExisting(usize),
        RemoveIface(u16),
        Lookup(Ipv4Addr),
        /// Look up an address inside the existing route with this index,
        /// with these host bits.
        LookupInside(usize, u32),
    }

    /// Addresses that collide and nest often: either anywhere, or from a
    /// small corner of 10/8 so prefixes overlap and share destinations.
    fn addr() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            (0u32..32).prop_map(|x| 0x0a00_0000 | (x << 19)),
            (0u32..8, any::<u32>()).prop_map(|(x, low)| 0x0a00_0000 | (x << 21) | (low & 0xff)),
        ]
    }

    fn dest() -> impl Strategy<Value = Ipv4Net> {
        (addr(), 0u8..=32).prop_map(|(a, len)| Ipv4Net::new(Ipv4Addr::from(a), len).unwrap())
    }

    fn gateway() -> impl Strategy<Value = Option<Ipv4Addr>> {
        prop_oneof![
            Just(None),
            (1u8..4).prop_map(|x| Some(Ipv4Addr::new(192, 0, 2, x))),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (dest(), gateway(), 0u16..3, 0u32..4, any::<bool>()).prop_map(
                |(dest, gateway, iface, metric, connected)| Op::Insert(Route {
                    dest,
                    gateway,
                    iface: IfaceId(iface),
                    metric,
                    kind: if connected { RouteKind::Connected } else { RouteKind::Static },
                })
            ),
            1 => (
                dest(),
                gateway(),
                proptest::option::of(0u16..3),
                proptest::option::of(0u32..4)
            )
                .prop_map(|(dest, gateway, iface, metric)| Op::Remove {
                    dest,
                    gateway,
                    iface: iface.map(IfaceId),
                    metric,
                }),
            2 => any::<usize>().prop_map(Op::RemoveExisting),
            1 => (0u16..4).prop_map(Op::RemoveIface),
            4 => addr().prop_map(|a| Op::Lookup(Ipv4Addr::from(a))),
            6 => (any::<usize>(), any::<u32>()).prop_map(|(i, h)| Op::LookupInside(i, h)),
        ]
    }

    fn check_same(t: &RouteTable, m: &Model) -> Result<(), TestCaseError> {
        prop_assert_eq!(t.len(), m.routes.len());
        prop_assert_eq!(t.is_empty(), m.routes.is_empty());
        let got: Vec<Route> = t.iter().cloned().collect();
        prop_assert_eq!(got, m.sorted());
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn lookup_agrees_with_a_linear_scan(
            ops in proptest::collection::vec(op(), 1..200),
            limit in prop_oneof![Just(usize::MAX), 5usize..40],
        ) {
            let mut t = RouteTable::with_capacity_limit(limit);
            let mut m = Model { limit, ..Model::default() };
            for op in ops {
                match op {
                    Op::Insert(r) => {
                        prop_assert_eq!(t.insert(r.clone()), m.insert(r));
                    }
                    Op::Remove { dest, gateway, iface, metric } => {
                        prop_assert_eq!(
                            t.remove(dest, gateway, iface, metric),
                            m.remove(dest, gateway, iface, metric)
                        );
                    }
                    Op::RemoveExisting(i) => {
                        if !m.routes.is_empty() {
                            let r = m.routes[i % m.routes.len()].clone();
                            prop_assert_eq!(
                                t.remove(r.dest, None, None, Some(r.metric)),
                                m.remove(r.dest, None, None, Some(r.metric))
                            );
                        }
                    }
                    Op::RemoveIface(i) => {
                        let before = m.routes.len();
                        m.routes.retain(|r| r.iface != IfaceId(i));
                        let n = t.remove_where(|r| r.iface == IfaceId(i));
                        prop_assert_eq!(n, before - m.routes.len());
                    }
                    Op::Lookup(a) => {
                        prop_assert_eq!(t.lookup(a), m.lookup(a));
                    }
                    Op::LookupInside(i, host) => {
                        if !m.routes.is_empty() {
                            let d = m.routes[i % m.routes.len()].dest;
                            let a = u32::from(d.network()) | (host & u32::from(d.hostmask()));
                            let a = Ipv4Addr::from(a);
                            prop_assert!(d.contains(&a));
                            let hit = t.lookup(a);
                            prop_assert!(hit.is_some());
                            prop_assert_eq!(hit, m.lookup(a));
                        }
                    }
                }
                check_same(&t, &m)?;
            }
        }
    }
}
