//! DNS for routed networks: what dnsmasq does for a libvirt or LXC network.
//!
//! A router answers DNS on its own addresses. Guests' names (static ones
//! from the configuration, dynamic ones from DHCP leases) resolve locally,
//! both ways, inside the network's domain; anything else is answered from
//! a bounded cache or forwarded to upstream resolvers (configured, or the
//! host's `/etc/resolv.conf`).
//!
//! Like the rest of the core this module is I/O-free: [`DnsForwarder`]
//! takes query bytes, response bytes and times, and returns replies and
//! upstream queries as [`DnsOutput`]s. The router delivers client queries
//! and sends the replies; the daemon's `dns_upstream` shell talks to the
//! upstream resolvers over host sockets. All DNS wire handling goes through
//! the `simple_dns` crate. The one exception to "no I/O" is
//! [`system_upstreams`], a convenience the daemon calls once at start.

mod cache;
mod config;
mod forwarder;
mod local_names;
mod message;
mod resolv_conf;

pub use config::{DEFAULT_CACHE_SIZE, DnsConfig};
pub use forwarder::{
    DnsCounters, DnsForwarder, DnsOutput, LOCAL_TTL, MAX_PENDING, TCP_TIMEOUT, TOTAL_TIMEOUT,
    Transport, UDP_TRY_TIMEOUT,
};
pub use local_names::MAX_DYNAMIC_NAMES;
pub use resolv_conf::{MAX_NAMESERVERS, parse_resolv_conf, system_upstreams};
