//! JSON views of the routers: interfaces, routes, ARP caches, counters.
//! Built by the server, rendered by the CLI.

use crate::router::nat::Direction;
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
    /// DHCP servers' counters, by interface.
    #[serde(default)]
    pub dhcp: Vec<DhcpServerView>,
    /// The DNS forwarder's counters, if it runs.
    #[serde(default)]
    pub dns: Option<serde_json::Value>,
    /// The host uplink's counters, if the router has one.
    #[serde(default)]
    pub uplink: Option<serde_json::Value>,
}

/// One DHCP server in `ctl routers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DhcpServerView {
    /// The interface it serves.
    pub iface: String,
    /// Leases and offers held now.
    pub leases: usize,
    /// Messages by kind, exhaustion and drops.
    pub counters: crate::dhcp::DhcpCounters,
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
        dhcp: router
            .services()
            .map(|s| {
                s.dhcp_servers()
                    .map(|(i, server)| DhcpServerView {
                        iface: router
                            .interfaces()
                            .get(i.index())
                            .map(|i| i.name.clone())
                            .unwrap_or_default(),
                        leases: server.lease_count(),
                        counters: *server.counters(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        dns: router
            .services()
            .and_then(|s| s.dns())
            .and_then(|d| serde_json::to_value(d.counters()).ok()),
        uplink: None,
    }
}

/// Appends the flows of a router's host uplink: `inside` is the guest,
/// `outside` the address it dialled, `translated` the host socket's peer
/// (127.0.0.1 for the loopback alias); kind `host` (outbound) or
/// `host-forward` (a forwarded host port). Packets are not counted there.
pub fn uplink_conntrack(
    router: &str,
    flows: &[crate::uplink::UplinkFlowView],
    rows: &mut Vec<ConntrackView>,
) {
    for f in flows {
        rows.push(ConntrackView {
            router: router.to_string(),
            proto: format!("{:?}", f.proto).to_ascii_lowercase(),
            inside: f.guest.to_string(),
            outside: f.remote_seen.to_string(),
            translated: f.remote.to_string(),
            kind: if f.inbound { "host-forward" } else { "host" }.into(),
            state: f.state.to_ascii_lowercase(),
            age_secs: f.age_secs,
            expires_in_secs: f.expires_in_secs.unwrap_or(0),
            packets: [0, 0],
            bytes: [f.bytes_to_host, f.bytes_to_guest],
        });
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

/// One masquerade rule in `ctl nat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MasqueradeView {
    /// The outside interface.
    pub out: String,
    /// Source networks (empty: all).
    pub sources: Vec<String>,
    /// Destinations left alone.
    pub except: Vec<String>,
}

/// One port forward in `ctl nat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForwardView {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The outside interface.
    pub iface: String,
    /// Its address the forward is bound to (none: all of them).
    pub address: Option<String>,
    /// `FIRST-LAST` outside ports.
    pub ports: String,
    /// Inside `ADDRESS:PORT` of the first port.
    pub to: String,
}

/// One router in `ctl nat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NatView {
    /// The router.
    pub router: String,
    /// Its masquerade rules.
    pub masquerade: Vec<MasqueradeView>,
    /// Its port forwards.
    pub forwards: Vec<ForwardView>,
    /// Flows tracked now.
    pub flows: usize,
    /// The table's bound.
    pub max_flows: usize,
    /// Table statistics.
    pub stats: serde_json::Value,
}

/// One flow in `ctl conntrack`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConntrackView {
    /// The router.
    pub router: String,
    /// `tcp`, `udp` or `icmp`.
    pub proto: String,
    /// The inside host's address and port, as it sent.
    pub inside: String,
    /// The remote end's address and port.
    pub outside: String,
    /// The router's address and port standing in for the inside host (or,
    /// for a port forward, the outside address it was reached at).
    pub translated: String,
    /// `masquerade` or `forward`.
    pub kind: String,
    /// Connection state.
    pub state: String,
    /// Seconds since the first packet.
    pub age_secs: u64,
    /// Seconds of silence left before it expires.
    pub expires_in_secs: u64,
    /// Packets from the initiator, and back.
    pub packets: [u64; 2],
    /// Bytes from the initiator, and back.
    pub bytes: [u64; 2],
}

fn name_of(router: &Router, i: crate::router::IfaceId) -> String {
    router
        .interfaces()
        .get(i.index())
        .map(|x| x.name.clone())
        .unwrap_or_default()
}

fn lower(v: impl Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Builds one router's `ctl nat` entry; `None` when it has no NAT.
pub fn nat(router: &Router) -> Option<NatView> {
    let nat = router.nat()?;
    let rules = nat.rules();
    Some(NatView {
        router: router.name().to_string(),
        masquerade: rules
            .masquerade
            .iter()
            .map(|m| MasqueradeView {
                out: name_of(router, m.out),
                sources: m.sources.iter().map(|n| n.to_string()).collect(),
                except: m.except.iter().map(|n| n.to_string()).collect(),
            })
            .collect(),
        forwards: rules
            .forwards
            .iter()
            .map(|f| ForwardView {
                proto: lower(f.proto),
                iface: name_of(router, f.iface),
                address: f.outside.map(|a| a.to_string()),
                ports: format!("{}-{}", f.ports.0, f.ports.1),
                to: format!("{}:{}", f.inside, f.inside_port),
            })
            .collect(),
        flows: nat.table().len(),
        max_flows: nat.table().config().max_flows,
        stats: serde_json::to_value(nat.stats()).unwrap_or_default(),
    })
}

/// Appends one router's tracked flows.
pub fn conntrack(router: &Router, now: Instant, rows: &mut Vec<ConntrackView>) {
    let Some(nat) = router.nat() else {
        return;
    };
    let table = nat.table();
    for (_, f) in table.flows() {
        let (inside, outside, translated) = if f.dnat {
            (f.reply.src, f.original.src, f.original.dst)
        } else {
            (f.original.src, f.original.dst, f.reply.dst)
        };
        rows.push(ConntrackView {
            router: router.name().to_string(),
            proto: lower(f.original.proto),
            inside: inside.to_string(),
            outside: outside.to_string(),
            translated: translated.to_string(),
            kind: if f.dnat { "forward" } else { "masquerade" }.into(),
            state: lower(f.state),
            age_secs: now.saturating_since(f.created).as_secs(),
            expires_in_secs: table.expires_at(f).saturating_since(now).as_secs(),
            packets: [
                f.packets[Direction::Original.index()],
                f.packets[Direction::Reply.index()],
            ],
            bytes: [
                f.bytes[Direction::Original.index()],
                f.bytes[Direction::Reply.index()],
            ],
        });
    }
    rows.sort_by(|a, b| (&a.proto, &a.inside, &a.outside).cmp(&(&b.proto, &b.inside, &b.outside)));
}

/// One row of `ctl leases`: a DHCP lease (or an outstanding offer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseView {
    /// The router serving it (a network's router has the network's name).
    pub router: String,
    /// The interface it was given on.
    pub iface: String,
    /// The address.
    pub ip: String,
    /// The client's MAC.
    pub mac: String,
    /// The client's name, when it gave one or its reservation has one.
    pub hostname: Option<String>,
    /// `bound` or `offered`.
    pub state: String,
    /// Seconds until it expires; `None` for one that never does.
    pub expires_in_secs: Option<u64>,
    /// Whether the address is a reservation for this MAC.
    pub reserved: bool,
}

/// Appends the DHCP leases of `router`.
pub fn leases(router: &Router, now: Instant, rows: &mut Vec<LeaseView>) {
    let Some(services) = router.services() else {
        return;
    };
    for (iface, server) in services.dhcp_servers() {
        let iface = router
            .interfaces()
            .get(iface.index())
            .map(|i| i.name.clone())
            .unwrap_or_default();
        for l in server.leases(now) {
            rows.push(LeaseView {
                router: router.name().to_string(),
                iface: iface.clone(),
                ip: l.ip.to_string(),
                mac: l.mac.to_string(),
                hostname: l.hostname.clone(),
                state: format!("{:?}", l.state).to_ascii_lowercase(),
                expires_in_secs: l.expires_in.map(|d| d.as_secs()),
                reserved: l.reserved,
            });
        }
    }
}
