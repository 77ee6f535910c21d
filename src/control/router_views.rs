//! JSON views of the routers: interfaces, routes, ARP caches, counters.
//! Built by the server, rendered by the CLI.

use crate::router::{Router, RouterCounters};
use crate::switch::{Engine, PortId};
use crate::time::Instant;
use serde::{Deserialize, Serialize};

/// One row of `ctl routes`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteView {
    /// The router (VRF) the route belongs to.
    pub router: String,
    /// Destination network.
    pub dest: String,
    /// Next hop, if not on the link.
    pub gateway: Option<String>,
    /// Interface name.
    pub iface: String,
    /// Preference: lower wins.
    pub metric: u32,
    /// `connected` or `static`.
    pub kind: String,
}

/// One row of `ctl arp`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArpView {
    /// The router.
    pub router: String,
    /// Interface name.
    pub iface: String,
    /// The neighbour's address.
    pub ip: String,
    /// Its MAC, once resolved.
    pub mac: Option<String>,
    /// Resolution state (`incomplete`, `reachable`, `stale`, ...).
    pub state: String,
    /// Seconds since last confirmed (or since the first request).
    pub age_secs: f64,
    /// Packets waiting for resolution.
    pub queued: usize,
}

/// One interface in `ctl routers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceView {
    /// Interface name.
    pub name: String,
    /// The segment it is a port of.
    pub segment: String,
    /// Its port number on that segment.
    pub port: Option<u16>,
    /// Its MAC.
    pub mac: String,
    /// Its addresses with prefix.
    pub addresses: Vec<String>,
    /// Whether it answers ARP for hosts behind other interfaces.
    pub proxy_arp: bool,
    /// Its IP MTU.
    pub mtu: u16,
}

/// One router in `ctl routers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouterView {
    /// The router's name.
    pub name: String,
    /// Its interfaces.
    pub interfaces: Vec<InterfaceView>,
    /// Routes in its table.
    pub routes: usize,
    /// What it did with packets.
    pub counters: RouterCounters,
    /// Neighbour cache statistics.
    pub arp: serde_json::Value,
}

/// Builds `ctl routers`; `ports[i]` is the port of interface `i`.
pub fn router(router: &Router, ports: &[Option<PortId>], engine: &Engine) -> RouterView {
    let interfaces = router
        .interfaces()
        .iter()
        .enumerate()
        .map(|(i, iface)| {
            let port = ports.get(i).copied().flatten().and_then(|p| engine.port(p));
            InterfaceView {
                name: iface.name.clone(),
                segment: port
                    .and_then(|p| engine.segment(p.segment()))
                    .map(|s| s.name().to_string())
                    .unwrap_or_default(),
                port: port.map(|p| p.number()),
                mac: iface.mac.to_string(),
                addresses: iface.addresses.iter().map(|a| a.to_string()).collect(),
                proxy_arp: iface.proxy_arp,
                mtu: iface.mtu,
            }
        })
        .collect();
    RouterView {
        name: router.name().to_string(),
        interfaces,
        routes: router.routes().count(),
        counters: router.counters(),
        arp: serde_json::to_value(router.arp_stats()).unwrap_or_default(),
    }
}

/// Appends one router's routes, in table order.
pub fn routes(router: &Router, rows: &mut Vec<RouteView>) {
    for r in router.routes() {
        rows.push(RouteView {
            router: router.name().to_string(),
            dest: r.dest.to_string(),
            gateway: r.gateway.map(|g| g.to_string()),
            iface: router.interfaces()[r.iface.index()].name.clone(),
            metric: r.metric,
            kind: serde_json::to_value(r.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
        });
    }
}

/// Appends one router's ARP entries.
pub fn arp(router: &Router, now: Instant, rows: &mut Vec<ArpView>) {
    for e in router.arp_entries(now) {
        rows.push(ArpView {
            router: router.name().to_string(),
            iface: router.interfaces()[e.iface.index()].name.clone(),
            ip: e.ip.to_string(),
            mac: e.mac.map(|m| m.to_string()),
            state: serde_json::to_value(e.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            age_secs: (e.age.as_secs_f64() * 10.0).round() / 10.0,
            queued: e.queued,
        });
    }
}
