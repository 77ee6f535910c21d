//! Layer 3: IPv4 routers that join segments.
//!
//! # Theory of operation
//!
//! A router owns interfaces; each interface is an ordinary port on one
//! segment, with its own MAC address and IPv4 addresses. Frames the segment
//! delivers to that port enter [`Router::handle_frame`]; frames the router
//! emits leave through a [`Transmit`] sink and enter the segment from the
//! interface's port, exactly as if a separate box were plugged in. A router
//! has its own [`RouteTable`] and [`ArpCache`], so several routers in one
//! process are independent VRFs: overlapping address space is fine.
//!
//! Like the switch core, everything here is I/O-free: frames and times in,
//! frames and counters out.

pub mod arp_cache;
pub mod counters;
pub mod fragment;
pub mod icmp;
pub mod interface;
pub mod nat;
pub mod rate_limit;
pub mod route_table;
#[allow(clippy::module_inception)]
mod router;
pub mod services;

pub use arp_cache::{ArpCache, ArpConfig};
pub use counters::RouterCounters;
pub use interface::{InterfaceConfig, stable_mac};
pub use route_table::{Route, RouteError, RouteKind, RouteTable};
pub use router::{
    ETHERNET_HEADER_LEN, HostInterfaceConfig, NatConfig, Router, RouterConfig, RouterError,
    StaticRoute, Transmit,
};
pub use services::{Services, ServicesConfig, UpstreamQuery};

#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod services_tests;
#[cfg(test)]
mod tests;

/// An interface of one router: an index into its interface list. Small and
/// `Copy` so route entries and ARP keys stay compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IfaceId(pub u16);

impl IfaceId {
    /// The index as a `usize`, for indexing the router's interface list.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}
