//! What a DNS forwarder is told at start.
//!
//! The fields mirror what libvirt and LXC hand dnsmasq for one network:
//! a local domain (`local=/domain/`, `expand-hosts`), static names
//! (`<dns><host>`), upstream resolvers (or `/etc/resolv.conf`'s), and
//! whether to forward at all. The daemon fills it from the TOML
//! `[routers.NAME.dns]` section; the core never reads files itself.

use std::net::{Ipv4Addr, SocketAddr};

/// The cache size when the configuration names none: dnsmasq's default
/// `cache-size`, large enough for a small network's working set.
pub const DEFAULT_CACHE_SIZE: usize = 1024;

/// Settings of one [`DnsForwarder`](super::DnsForwarder); plain data so the
/// configuration layer and tests can build it field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The local domain: bare static names and DHCP names also resolve as
    /// `name.domain`, and unknown names inside it are answered NXDOMAIN
    /// instead of leaking upstream. `None` leaves only bare names local.
    pub domain: Option<String>,
    /// Resolvers to forward to, tried in order (the first is the primary,
    /// as in `/etc/resolv.conf`).
    pub upstreams: Vec<SocketAddr>,
    /// Static names (bare, meaning "in the domain", or fully qualified);
    /// they win over names learned from DHCP leases.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// Answer local names only and refuse everything else, for isolated
    /// networks that must not reach the outside resolvers.
    pub local_only: bool,
    /// Upper bound on cached answers, so a client cannot grow memory by
    /// asking for many names; 0 disables the cache.
    pub cache_size: usize,
    /// Subnets whose reverse (`in-addr.arpa`) names are answered here only:
    /// an unknown address inside them is NXDOMAIN, never asked upstream,
    /// which would only leak private addresses.
    pub local_subnets: Vec<ipnet::Ipv4Net>,
    /// Seed for the upstream query ids; the daemon passes a random value so
    /// ids cannot be predicted by an off-path spoofer, tests pass a fixed
    /// one.
    pub seed: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: None,
            upstreams: Vec::new(),
            hosts: Vec::new(),
            local_only: false,
            cache_size: DEFAULT_CACHE_SIZE,
            local_subnets: Vec::new(),
            seed: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_dnsmasq() {
        let c = DnsConfig::default();
        assert_eq!(c.cache_size, 1024);
        assert!(!c.local_only);
        assert!(c.upstreams.is_empty() && c.hosts.is_empty() && c.domain.is_none());
    }
}
