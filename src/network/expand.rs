//! Turning one network block into segments and a router.
//!
//! A network is shorthand: everything it means can be written with
//! `[segments]` and `[routers]` tables, and this is where the shorthand is
//! spelled out. The expansion is a pure function of the block and the
//! runtime directory, and it produces the same section types a person
//! would write, which the configuration then checks exactly like
//! hand-written ones. So this file checks only what the block itself can
//! get wrong (a key that makes no sense in the mode, a DHCP pool outside
//! the subnet, a gateway off the uplink), and says so naming the network
//! and the key, before the expanded names would make the message harder
//! to trace back.
//!
//! The shapes follow libvirt and LXC: the router is named like the
//! network, its inside interface is `lan` and its outside one `uplink`;
//! isolated networks hand out no default route (libvirt gives isolated
//! guests none) and answer only local names; nat networks masquerade the
//! subnet except towards itself, as libvirt's and lxc-net's
//! `-s NET ! -d NET -j MASQUERADE` rules do.

use super::definition::{NetworkDhcp, NetworkMode, NetworkSection, Uplink};
use crate::config::{
    DhcpSection, DnsSection, ForwardSection, InterfaceSection, MasqueradeSection, RouteSection,
    RouterSection, SegmentSection, TapEntry,
};
use crate::mac::MacAddr;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

/// The router's interface on the network's own segment; fixed so rules
/// and `switchboard ctl` output read the same for every network.
pub const LAN_IFACE: &str = "lan";

/// The router's interface towards the outside.
pub const UPLINK_IFACE: &str = "uplink";

/// What one network stands for: the sections to add to the configuration
/// before it is checked. Kept as named lists rather than maps so the
/// caller decides how to treat a name that is already taken.
#[derive(Debug, Clone, Default)]
pub struct Expansion {
    /// New segments, by name.
    pub segments: Vec<(String, SegmentSection)>,
    /// New routers, by name.
    pub routers: Vec<(String, RouterSection)>,
}

/// Spells out the network `name` as segments and a router; sockets the
/// block does not place go under `runtime_dir`. The error names the
/// network and the offending key.
pub fn expand(name: &str, net: &NetworkSection, runtime_dir: &Path) -> Result<Expansion, String> {
    check_name(name)?;
    let at = |key: &str| format!("networks.{name}.{key}");
    if net.segment.is_some() {
        for (key, given) in [
            ("vde", net.vde.is_some()),
            ("stream", net.stream.is_some()),
            ("dgram", net.dgram.is_some()),
            ("taps", !net.taps.is_empty()),
        ] {
            if given {
                return Err(format!(
                    "{}: `segment` joins an existing segment, whose sockets and taps are set in its own [segments] table; give `{key}` there or leave out `segment`",
                    at(key)
                ));
            }
        }
    }
    if let Some(d) = &net.domain {
        check_domain(d).map_err(|e| format!("{}: {e}", at("domain")))?;
    }
    match net.mode {
        NetworkMode::Bridge => expand_bridge(name, net, runtime_dir),
        NetworkMode::Isolated => expand_isolated(name, net, runtime_dir),
        NetworkMode::Routed | NetworkMode::Nat => expand_routed(name, net, runtime_dir),
    }
}

/// Bridge mode: guests and host taps share a segment and the host's LAN
/// does the rest, so anything of a gateway's is a mistake.
fn expand_bridge(
    name: &str,
    net: &NetworkSection,
    runtime_dir: &Path,
) -> Result<Expansion, String> {
    let misplaced = [
        ("address", net.address.is_some()),
        ("domain", net.domain.is_some()),
        ("dhcp", net.dhcp.is_some()),
        ("dns", net.dns == Some(true)),
        ("dns_options", net.dns_options.is_some()),
        ("uplink", net.uplink.is_some()),
        ("forwards", !net.forwards.is_empty()),
    ];
    if let Some((key, _)) = misplaced.iter().find(|(_, given)| *given) {
        return Err(format!(
            "networks.{name}.{key}: bridge mode puts the VMs on the host's LAN, whose own DHCP and router serve them; remove `{key}`, or use mode = \"nat\" or \"routed\" for a network with a gateway of its own"
        ));
    }
    if net.taps.is_empty() {
        return Err(format!(
            "networks.{name}.taps: bridge mode needs at least one tap, the host side joining the host's LAN (add it to a host bridge with `ip link set TAP master BRIDGE`)"
        ));
    }
    // The taps are the way out here, not guests: guests still get the
    // default sockets unless the block places its own.
    let defaults = net.vde.is_none() && net.stream.is_none() && net.dgram.is_none();
    Ok(Expansion {
        segments: vec![created_segment(name, net, runtime_dir, defaults)],
        routers: Vec::new(),
    })
}

/// Isolated: a segment, and a gateway serving DHCP and DNS only when the
/// block gives an address.
fn expand_isolated(
    name: &str,
    net: &NetworkSection,
    runtime_dir: &Path,
) -> Result<Expansion, String> {
    if net.uplink.is_some() {
        return Err(format!(
            "networks.{name}.uplink: an isolated network has no way out; use mode = \"routed\" or \"nat\" to give it one"
        ));
    }
    if !net.forwards.is_empty() {
        return Err(format!(
            "networks.{name}.forwards: port forwards reach a nat network from its uplink, and an isolated network has none; use mode = \"nat\""
        ));
    }
    let (lan_segment, segments) = lan_segment(name, net, runtime_dir);
    let Some(address) = net.address else {
        let needs = [
            ("dhcp", net.dhcp.is_some()),
            ("dns", net.dns == Some(true)),
            ("dns_options", net.dns_options.is_some()),
            ("domain", net.domain.is_some()),
        ];
        if let Some((key, _)) = needs.iter().find(|(_, given)| *given) {
            return Err(format!(
                "networks.{name}.{key}: needs `address`, the gateway's address the service answers on (like \"10.0.0.1/24\")"
            ));
        }
        return Ok(Expansion {
            segments,
            routers: Vec::new(),
        });
    };
    check_gateway_address(name, address)?;
    let lan = lan_interface(name, net, address, lan_segment, false)?;
    let router = RouterSection {
        interfaces: BTreeMap::from([(LAN_IFACE.to_string(), lan)]),
        dns: dns_section(name, net)?,
        ..Default::default()
    };
    Ok(Expansion {
        segments,
        routers: vec![(name.to_string(), router)],
    })
}

/// Routed and nat: a gateway with a `lan` and an `uplink` leg, a default
/// route when the uplink names a gateway, and for nat the masquerade rule
/// and port forwards.
fn expand_routed(
    name: &str,
    net: &NetworkSection,
    runtime_dir: &Path,
) -> Result<Expansion, String> {
    let mode = net.mode.as_str();
    let Some(address) = net.address else {
        return Err(format!(
            "networks.{name}.address: a {mode} network needs the gateway's address and prefix (like \"192.168.122.1/24\")"
        ));
    };
    let Some(uplink) = &net.uplink else {
        return Err(format!(
            "networks.{name}.uplink: a {mode} network needs [networks.{name}.uplink] with `segment` or `tap`, and `address`: how it reaches the outside"
        ));
    };
    if net.mode == NetworkMode::Routed && !net.forwards.is_empty() {
        return Err(format!(
            "networks.{name}.forwards: a routed network's hosts are reachable at their own addresses; port forwards need mode = \"nat\""
        ));
    }
    check_gateway_address(name, address)?;
    if uplink.host {
        return expand_host_uplink(name, net, address, uplink, runtime_dir);
    }
    if uplink.loopback || !uplink.forwards.is_empty() {
        return Err(format!(
            "networks.{name}.uplink: loopback and forwards belong to the host uplink (host = true)"
        ));
    }
    let (lan_segment, mut segments) = lan_segment(name, net, runtime_dir);
    let (uplink_segment, uplink_address) = check_uplink(name, uplink, address, &lan_segment)?;
    if let Some(tap) = &uplink.tap {
        segments.push((
            uplink_segment.clone(),
            SegmentSection {
                taps: vec![TapEntry::Name(tap.clone())],
                ..Default::default()
            },
        ));
    }
    let lan = lan_interface(name, net, address, lan_segment, true)?;
    let up = InterfaceSection {
        segment: uplink_segment,
        addresses: vec![uplink_address.to_string()],
        ..Default::default()
    };
    let routes = match uplink.gateway {
        Some(gw) => vec![RouteSection {
            to: "default".into(),
            via: Some(gw),
            dev: Some(UPLINK_IFACE.into()),
            metric: 0,
        }],
        None => Vec::new(),
    };
    let subnet = address.trunc().to_string();
    let masquerade = if net.mode == NetworkMode::Nat {
        vec![MasqueradeSection {
            out: UPLINK_IFACE.into(),
            sources: vec![subnet.clone()],
            except: vec![subnet],
        }]
    } else {
        Vec::new()
    };
    let mut forwards = Vec::new();
    for (n, f) in net.forwards.iter().enumerate() {
        let at = format!("networks.{name}.forwards[{n}]");
        if f.proto != "tcp" && f.proto != "udp" {
            return Err(format!(
                "{at}.proto: {:?}; port forwards are \"tcp\" or \"udp\"",
                f.proto
            ));
        }
        guest_target(&at, &f.to, address)?;
        if let Some(a) = f.address
            && a != uplink_address.addr()
        {
            return Err(format!(
                "{at}.address: {a} is not the uplink's address {}",
                uplink_address.addr()
            ));
        }
        forwards.push(ForwardSection {
            proto: f.proto.clone(),
            iface: UPLINK_IFACE.into(),
            address: f.address,
            port: f.port.clone(),
            to: f.to.clone(),
        });
    }
    let router = RouterSection {
        interfaces: BTreeMap::from([(LAN_IFACE.to_string(), lan), (UPLINK_IFACE.to_string(), up)]),
        routes,
        masquerade,
        forwards,
        dns: dns_section(name, net)?,
        ..Default::default()
    };
    Ok(Expansion {
        segments,
        routers: vec![(name.to_string(), router)],
    })
}

/// Routed or nat through the host uplink: the router's default route leads
/// to its `host` interface, whose flows leave through the host's own
/// sockets, so guests' addresses never appear outside and no masquerade
/// rule is needed; host ports may be forwarded in.
fn expand_host_uplink(
    name: &str,
    net: &NetworkSection,
    address: Ipv4Net,
    uplink: &Uplink,
    runtime_dir: &Path,
) -> Result<Expansion, String> {
    let at = format!("networks.{name}.uplink");
    if uplink.segment.is_some()
        || uplink.tap.is_some()
        || uplink.address.is_some()
        || uplink.gateway.is_some()
    {
        return Err(format!(
            "{at}: the host uplink (host = true) has no segment, tap, address or gateway of its own"
        ));
    }
    if !net.forwards.is_empty() {
        return Err(format!(
            "networks.{name}.forwards: with the host uplink, forward host ports with uplink.forwards = [{{ proto, listen = \"127.0.0.1:PORT\", to }}]"
        ));
    }
    for (n, f) in uplink.forwards.iter().enumerate() {
        guest_target(&format!("{at}.forwards[{n}]"), &f.to, address)?;
    }
    let (lan_segment, segments) = lan_segment(name, net, runtime_dir);
    let lan = lan_interface(name, net, address, lan_segment, true)?;
    let router = RouterSection {
        interfaces: BTreeMap::from([(LAN_IFACE.to_string(), lan)]),
        routes: vec![RouteSection {
            to: "default".into(),
            via: None,
            dev: Some(crate::config::HOST_INTERFACE.into()),
            metric: 0,
        }],
        dns: dns_section(name, net)?,
        host: Some(crate::config::HostSection {
            loopback: uplink.loopback.then_some(address.addr()),
            forwards: uplink.forwards.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(Expansion {
        segments,
        routers: vec![(name.to_string(), router)],
    })
}

/// Checks a forward's `to`: ADDRESS:PORT of a guest of the network (inside
/// its subnet, not the gateway); `at` names the forward in errors.
fn guest_target(at: &str, to: &str, address: Ipv4Net) -> Result<SocketAddrV4, String> {
    let target: SocketAddrV4 = to.parse().map_err(|_| {
        format!(
            "{at}.to: {to:?} is not ADDRESS:PORT (like \"{}:22\")",
            host_example(address)
        )
    })?;
    if !address.trunc().contains(target.ip()) || *target.ip() == address.addr() {
        return Err(format!(
            "{at}.to: {} is not a guest of the network {}; forwards lead to its hosts",
            target.ip(),
            address.trunc()
        ));
    }
    Ok(target)
}

/// The network's own segment: the name of the one joined, and the new one
/// to add unless the block joins an existing segment.
fn lan_segment(
    name: &str,
    net: &NetworkSection,
    runtime_dir: &Path,
) -> (String, Vec<(String, SegmentSection)>) {
    match &net.segment {
        Some(existing) => (existing.clone(), Vec::new()),
        None => {
            let defaults = net.vde.is_none()
                && net.stream.is_none()
                && net.dgram.is_none()
                && net.taps.is_empty();
            let seg = created_segment(name, net, runtime_dir, defaults);
            (seg.0.clone(), vec![seg])
        }
    }
}

/// The segment a network creates, named like it; with `defaults` it is
/// served the way the embedded default network is (a VDE directory and
/// stream and dgram sockets under the runtime directory), so every QEMU
/// attach mode works without naming a path.
fn created_segment(
    name: &str,
    net: &NetworkSection,
    runtime_dir: &Path,
    defaults: bool,
) -> (String, SegmentSection) {
    let mut seg = SegmentSection {
        vde: net.vde.clone(),
        stream: net.stream.clone(),
        dgram: net.dgram.clone(),
        taps: net.taps.iter().cloned().map(TapEntry::Name).collect(),
        mtu: net.mtu,
        ..Default::default()
    };
    if defaults {
        seg.vde = Some(runtime_dir.join(name));
        seg.stream = Some(runtime_dir.join(format!("{name}.stream")));
        seg.dgram = Some(runtime_dir.join(format!("{name}.dgram")));
    }
    (name.to_string(), seg)
}

/// The gateway's `lan` interface, with its DHCP server if the block has
/// one; `gateway` says whether DHCP offers a default route.
fn lan_interface(
    name: &str,
    net: &NetworkSection,
    address: Ipv4Net,
    segment: String,
    gateway: bool,
) -> Result<InterfaceSection, String> {
    let dhcp = match &net.dhcp {
        Some(d) => Some(dhcp_section(name, d, address, gateway, net.domain.clone())?),
        None => None,
    };
    Ok(InterfaceSection {
        segment,
        addresses: vec![address.to_string()],
        mtu: net.mtu,
        dhcp,
        ..Default::default()
    })
}

/// Checks the block's DHCP table against the subnet and turns it into the
/// interface's DHCP section. The DNS server option is left empty: the
/// router fills in its own address when it serves DNS.
fn dhcp_section(
    name: &str,
    d: &NetworkDhcp,
    address: Ipv4Net,
    gateway: bool,
    domain: Option<String>,
) -> Result<DhcpSection, String> {
    let at = |key: &str| format!("networks.{name}.dhcp.{key}");
    let subnet = address.trunc();
    if d.range.is_some() && !d.ranges.is_empty() {
        return Err(format!(
            "{}: give `range` or `ranges`, not both",
            at("ranges")
        ));
    }
    let (key, list): (&str, Vec<String>) = match &d.range {
        Some(r) => ("range", vec![r.clone()]),
        None => ("ranges", d.ranges.clone()),
    };
    let mut pools: Vec<(Ipv4Addr, Ipv4Addr)> = Vec::new();
    for r in &list {
        let (first, last) = parse_pool(r).ok_or_else(|| {
            format!(
                "{}: {r:?} is not FIRST-LAST (like \"{}-{}\")",
                at(key),
                host_example(address),
                subnet.broadcast().saturating_sub_one()
            )
        })?;
        if first > last {
            return Err(format!("{}: {r:?} runs backwards", at(key)));
        }
        for end in [first, last] {
            if !subnet.contains(&end) {
                return Err(format!(
                    "{}: {r:?}: {end} is outside the network {subnet}",
                    at(key)
                ));
            }
        }
        let within = |a: Ipv4Addr| first <= a && a <= last;
        if within(subnet.network()) || within(subnet.broadcast()) {
            return Err(format!(
                "{}: {r:?} takes in the network's own {} or broadcast {} address",
                at(key),
                subnet.network(),
                subnet.broadcast()
            ));
        }
        if within(address.addr()) {
            return Err(format!(
                "{}: {r:?} takes in the gateway's address {}; start the pool after it",
                at(key),
                address.addr()
            ));
        }
        if let Some((a, b)) = pools.iter().find(|(a, b)| first <= *b && *a <= last) {
            return Err(format!("{}: {r:?} overlaps {a}-{b}", at(key)));
        }
        pools.push((first, last));
    }
    let mut macs: Vec<MacAddr> = Vec::new();
    let mut ips: Vec<Ipv4Addr> = Vec::new();
    for (n, h) in d.hosts.iter().enumerate() {
        let at = format!("networks.{name}.dhcp.hosts[{n}]");
        let mac: MacAddr = h.mac.parse().map_err(|e| format!("{at}.mac: {e}"))?;
        if !mac.is_valid_source() {
            return Err(format!(
                "{at}.mac: {mac} is a group or zero address; a client has a unicast one"
            ));
        }
        if macs.contains(&mac) {
            return Err(format!("{at}.mac: {mac} is reserved twice"));
        }
        macs.push(mac);
        match h.ip {
            None if h.name.is_none() => {
                return Err(format!(
                    "{at}: a reservation gives the client an `ip`, a `name`, or both"
                ));
            }
            None => {}
            Some(ip) => {
                if !subnet.contains(&ip)
                    || ip == subnet.network()
                    || ip == subnet.broadcast()
                    || ip == address.addr()
                {
                    return Err(format!(
                        "{at}.ip: {ip} is not a guest address of the network {subnet}"
                    ));
                }
                if ips.contains(&ip) {
                    return Err(format!("{at}.ip: {ip} is reserved twice"));
                }
                ips.push(ip);
            }
        }
    }
    if pools.is_empty() && d.hosts.is_empty() {
        return Err(format!(
            "networks.{name}.dhcp: give `range` (like \"{}-{}\") or `hosts`; without either the server has nothing to hand out",
            host_example(address),
            subnet.broadcast().saturating_sub_one()
        ));
    }
    if d.max_leases == Some(0) {
        return Err(format!("{}: must be at least 1", at("max_leases")));
    }
    if d.lease_secs == Some(0) {
        return Err(format!("{}: must be at least 1", at("lease_secs")));
    }
    Ok(DhcpSection {
        ranges: list,
        lease_secs: d.lease_secs,
        max_leases: d.max_leases,
        lease_file: d.lease_file.clone(),
        hosts: d.hosts.clone(),
        gateway: Some(gateway),
        dns_servers: Vec::new(),
        domain,
        mtu: None,
    })
}

/// The router's DNS forwarder, if the block serves DNS (by default it
/// does: only blocks with an address get here).
fn dns_section(name: &str, net: &NetworkSection) -> Result<Option<DnsSection>, String> {
    let on = net.dns.unwrap_or(true);
    let Some(o) = &net.dns_options else {
        return Ok(on.then(|| DnsSection {
            domain: net.domain.clone(),
            local_only: net.mode == NetworkMode::Isolated,
            ..Default::default()
        }));
    };
    if !on {
        return Err(format!(
            "networks.{name}.dns_options: given, but dns = false turns the DNS server off"
        ));
    }
    for (n, u) in o.upstream.iter().enumerate() {
        let ok = u.parse::<std::net::IpAddr>().is_ok() || u.parse::<SocketAddr>().is_ok();
        if !ok {
            return Err(format!(
                "networks.{name}.dns_options.upstream[{n}]: {u:?} is not ADDRESS or ADDRESS:PORT"
            ));
        }
    }
    let local_only = o.local_only.unwrap_or(net.mode == NetworkMode::Isolated);
    if local_only && !o.upstream.is_empty() {
        return Err(format!(
            "networks.{name}.dns_options.upstream: a local-only DNS server never forwards{}; set local_only = false or drop upstream",
            if o.local_only.is_none() {
                " (isolated networks are local-only unless told otherwise)"
            } else {
                ""
            }
        ));
    }
    if o.cache_size == Some(0) {
        return Err(format!(
            "networks.{name}.dns_options.cache_size: must be at least 1"
        ));
    }
    Ok(Some(DnsSection {
        domain: net.domain.clone(),
        upstream: o.upstream.clone(),
        hosts: o.hosts.clone(),
        local_only,
        cache_size: o.cache_size,
    }))
}

/// Checks the uplink against the network and returns the segment the
/// `uplink` interface joins and its address.
fn check_uplink(
    name: &str,
    u: &Uplink,
    lan: Ipv4Net,
    lan_segment: &str,
) -> Result<(String, Ipv4Net), String> {
    let at = |key: &str| format!("networks.{name}.uplink.{key}");
    let segment = match (&u.segment, &u.tap) {
        (Some(_), Some(_)) => {
            return Err(format!("{}: give `segment` or `tap`, not both", at("tap")));
        }
        (None, None) => {
            return Err(format!(
                "networks.{name}.uplink: give `segment` (an existing segment) or `tap` (a host tap, put on a new segment {name}-uplink)"
            ));
        }
        (Some(s), None) => {
            if s == lan_segment {
                return Err(format!(
                    "{}: {s:?} is the network's own segment; the uplink leads elsewhere",
                    at("segment")
                ));
            }
            s.clone()
        }
        (None, Some(_)) => format!("{name}-uplink"),
    };
    let Some(address) = u.address else {
        return Err(format!(
            "{}: missing; the router needs its own address on the uplink (like \"192.0.2.10/24\")",
            at("address")
        ));
    };
    if address.prefix_len() > 31 {
        return Err(format!(
            "{}: {address} leaves no room for a neighbour on the uplink",
            at("address")
        ));
    }
    let up = address.trunc();
    if address.prefix_len() < 31
        && (address.addr() == up.network() || address.addr() == up.broadcast())
    {
        return Err(format!(
            "{}: {address} is the network or broadcast address of {up}; give the router's own address",
            at("address")
        ));
    }
    if up.contains(&lan.trunc()) || lan.trunc().contains(&up) {
        return Err(format!(
            "{}: {up} overlaps the network {}; inside and outside must differ",
            at("address"),
            lan.trunc()
        ));
    }
    if let Some(gw) = u.gateway {
        if !up.contains(&gw) {
            return Err(format!(
                "{}: {gw} is outside the uplink's subnet {up}; the next hop must be a neighbour",
                at("gateway")
            ));
        }
        if gw == address.addr()
            || (address.prefix_len() < 31 && (gw == up.network() || gw == up.broadcast()))
        {
            return Err(format!(
                "{}: {gw} is not another host on {up}",
                at("gateway")
            ));
        }
    }
    Ok((segment, address))
}

/// The gateway's address must be a host address of a subnet with room
/// for guests.
fn check_gateway_address(name: &str, address: Ipv4Net) -> Result<(), String> {
    let at = format!("networks.{name}.address");
    if address.prefix_len() > 30 {
        return Err(format!(
            "{at}: {address} leaves no room for guests; use a prefix of /30 or shorter"
        ));
    }
    let subnet = address.trunc();
    if address.addr() == subnet.network() || address.addr() == subnet.broadcast() {
        return Err(format!(
            "{at}: {address} is the network or broadcast address of {subnet}; give the gateway's own address (like \"{}/{}\")",
            host_example(address),
            address.prefix_len()
        ));
    }
    Ok(())
}

/// Network names become segment and router names and socket file names,
/// so they must be usable as a single path component.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\0'])
        || name.len() > 64
    {
        return Err(format!(
            "networks.{name:?}: a network name becomes socket file names, so it must be 1 to 64 bytes without '/' and not \".\" or \"..\""
        ));
    }
    Ok(())
}

/// A DNS domain as DHCP option 15 and the resolver take it: dot-separated
/// labels of letters, digits and hyphens.
fn check_domain(d: &str) -> Result<(), String> {
    let d0 = d.strip_suffix('.').unwrap_or(d);
    let ok = !d0.is_empty()
        && d0.len() <= 253
        && d0.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{d:?} is not a DNS domain (labels of letters, digits and '-', like \"lab.example\")"
        ))
    }
}

/// Reads `"FIRST-LAST"`.
fn parse_pool(r: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let (a, b) = r.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

/// The first host address after the gateway's, for examples in messages.
fn host_example(address: Ipv4Net) -> Ipv4Addr {
    let next = address.addr().saturating_add_one();
    if address.trunc().contains(&next) && next != address.trunc().broadcast() {
        next
    } else {
        address.trunc().network().saturating_add_one()
    }
}

/// Address arithmetic for messages, saturating at the ends of the space.
trait Step {
    /// The next address.
    fn saturating_add_one(self) -> Self;
    /// The previous address.
    fn saturating_sub_one(self) -> Self;
}

impl Step for Ipv4Addr {
    fn saturating_add_one(self) -> Self {
        Ipv4Addr::from(u32::from(self).saturating_add(1))
    }
    fn saturating_sub_one(self) -> Self {
        Ipv4Addr::from(u32::from(self).saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, DhcpHostSection, DnsHostSection};
    use crate::network::definition::{NetworkDns, NetworkForward};
    use std::path::PathBuf;

    const RT: &str = "/run/sb";

    fn net(text: &str) -> NetworkSection {
        let mut nets = crate::network::definition::from_toml(text).unwrap();
        nets.remove("n").unwrap()
    }

    fn run(text: &str) -> Result<Expansion, String> {
        expand("n", &net(text), Path::new(RT))
    }

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    fn tap_names(s: &SegmentSection) -> Vec<&str> {
        s.taps.iter().map(|t| t.name()).collect()
    }

    /// The expansion goes through the configuration's own checks, plus any
    /// hand-written segments it refers to.
    fn accepted(x: &Expansion, extra: &[(&str, SegmentSection)]) -> crate::config::Plan {
        let mut segments: BTreeMap<String, SegmentSection> = x.segments.iter().cloned().collect();
        for (n, s) in extra {
            segments.insert(n.to_string(), s.clone());
        }
        ConfigFile {
            segments,
            routers: x.routers.iter().cloned().collect(),
            ..Default::default()
        }
        .into_plan()
        .unwrap()
    }

    const NAT: &str = r#"
[networks.n]
mode = "nat"
address = "192.168.122.1/24"
domain = "default"
[networks.n.dhcp]
range = "192.168.122.2-192.168.122.254"
lease_secs = 3600
max_leases = 253
hosts = [{ mac = "52:54:00:00:00:10", name = "vm1", ip = "192.168.122.10" }]
[networks.n.dns_options]
upstream = ["192.0.2.53"]
cache_size = 500
[networks.n.uplink]
tap = "uplink0"
address = "192.0.2.10/24"
gateway = "192.0.2.1"
[[networks.n.forwards]]
proto = "tcp"
port = 2222
to = "192.168.122.10:22"
[[networks.n.forwards]]
proto = "udp"
address = "192.0.2.10"
port = "5000-5001"
to = "192.168.122.11:5000"
"#;

    #[test]
    fn nat_expands_into_segments_router_masquerade_and_forwards() {
        let x = run(NAT).unwrap();
        assert_eq!(x.segments.len(), 2);
        let (lan_name, lan) = &x.segments[0];
        assert_eq!(lan_name, "n");
        assert_eq!(lan.vde, p("/run/sb/n"));
        assert_eq!(lan.stream, p("/run/sb/n.stream"));
        assert_eq!(lan.dgram, p("/run/sb/n.dgram"));
        assert!(lan.taps.is_empty());
        assert_eq!(lan.mtu, None);
        let (up_name, up) = &x.segments[1];
        assert_eq!(up_name, "n-uplink");
        assert_eq!(tap_names(up), vec!["uplink0"]);
        assert_eq!((&up.vde, &up.stream, &up.dgram), (&None, &None, &None));

        assert_eq!(x.routers.len(), 1);
        let (rname, r) = &x.routers[0];
        assert_eq!(rname, "n");
        assert_eq!(
            r.interfaces.keys().collect::<Vec<_>>(),
            vec!["lan", "uplink"]
        );
        let li = &r.interfaces["lan"];
        assert_eq!(li.segment, "n");
        assert_eq!(li.addresses, vec!["192.168.122.1/24".to_string()]);
        assert_eq!(li.mtu, None);
        assert_eq!(li.mac, None);
        assert!(!li.proxy_arp);
        assert_eq!(
            li.dhcp,
            Some(DhcpSection {
                ranges: vec!["192.168.122.2-192.168.122.254".into()],
                lease_secs: Some(3600),
                max_leases: Some(253),
                lease_file: None,
                hosts: vec![DhcpHostSection {
                    mac: "52:54:00:00:00:10".into(),
                    name: Some("vm1".into()),
                    ip: Some(Ipv4Addr::new(192, 168, 122, 10)),
                }],
                gateway: Some(true),
                dns_servers: vec![],
                domain: Some("default".into()),
                mtu: None,
            })
        );
        let ui = &r.interfaces["uplink"];
        assert_eq!(ui.segment, "n-uplink");
        assert_eq!(ui.addresses, vec!["192.0.2.10/24".to_string()]);
        assert_eq!(ui.dhcp, None);

        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].to, "default");
        assert_eq!(r.routes[0].via, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(r.routes[0].dev.as_deref(), Some("uplink"));
        assert_eq!(r.routes[0].metric, 0);

        assert_eq!(r.masquerade.len(), 1);
        assert_eq!(r.masquerade[0].out, "uplink");
        assert_eq!(
            r.masquerade[0].sources,
            vec!["192.168.122.0/24".to_string()]
        );
        assert_eq!(r.masquerade[0].except, vec!["192.168.122.0/24".to_string()]);

        assert_eq!(r.forwards.len(), 2);
        let f = &r.forwards[0];
        assert_eq!(
            (
                f.proto.as_str(),
                f.iface.as_str(),
                f.address,
                &f.port,
                f.to.as_str()
            ),
            (
                "tcp",
                "uplink",
                None,
                &toml::Value::Integer(2222),
                "192.168.122.10:22"
            )
        );
        let f = &r.forwards[1];
        assert_eq!(
            (
                f.proto.as_str(),
                f.iface.as_str(),
                f.address,
                &f.port,
                f.to.as_str()
            ),
            (
                "udp",
                "uplink",
                Some(Ipv4Addr::new(192, 0, 2, 10)),
                &toml::Value::String("5000-5001".into()),
                "192.168.122.11:5000"
            )
        );
        assert_eq!(
            r.dns,
            Some(DnsSection {
                domain: Some("default".into()),
                upstream: vec!["192.0.2.53".into()],
                hosts: vec![],
                local_only: false,
                cache_size: Some(500),
            })
        );
        assert!(r.conntrack.is_none());
        assert!(r.arp_cache_size.is_none());

        let plan = accepted(&x, &[]);
        assert_eq!(plan.segments.len(), 2);
        let rp = &plan.routers[0];
        assert_eq!(rp.name, "n");
        assert_eq!(rp.segments, vec!["n".to_string(), "n-uplink".to_string()]);
        assert_eq!(rp.masquerade.len(), 1);
        assert_eq!(rp.forwards.len(), 2);
        assert_eq!(rp.forwards[1].ports, (5000, 5001));
    }

    #[test]
    fn routed_has_no_masquerade_and_joins_an_existing_uplink_segment() {
        let x = run(r#"
[networks.n]
mode = "routed"
address = "10.10.0.1/16"
mtu = 9000
vde = "/srv/n"
[networks.n.uplink]
segment = "wan"
address = "192.0.2.10/24"
"#)
        .unwrap();
        assert_eq!(x.segments.len(), 1);
        let (sname, s) = &x.segments[0];
        assert_eq!(sname, "n");
        // A socket given: no defaults added.
        assert_eq!((&s.vde, &s.stream, &s.dgram), (&p("/srv/n"), &None, &None));
        assert_eq!(s.mtu, Some(9000));
        let (_, r) = &x.routers[0];
        let li = &r.interfaces["lan"];
        assert_eq!(li.addresses, vec!["10.10.0.1/16".to_string()]);
        assert_eq!(li.mtu, Some(9000));
        assert_eq!(li.dhcp, None);
        let ui = &r.interfaces["uplink"];
        assert_eq!(ui.segment, "wan");
        assert_eq!(ui.addresses, vec!["192.0.2.10/24".to_string()]);
        assert!(r.routes.is_empty(), "no gateway, no default route");
        assert!(r.masquerade.is_empty());
        assert!(r.forwards.is_empty());
        assert_eq!(
            r.dns,
            Some(DnsSection {
                domain: None,
                upstream: vec![],
                hosts: vec![],
                local_only: false,
                cache_size: None,
            })
        );
        let wan = SegmentSection {
            vde: p("/srv/wan"),
            ..Default::default()
        };
        let plan = accepted(&x, &[("wan", wan)]);
        assert_eq!(
            plan.routers[0].segments,
            vec!["n".to_string(), "wan".to_string()]
        );
        assert!(plan.routers[0].masquerade.is_empty());
        assert_eq!(plan.routers[0].interfaces[0].mtu, 9000);
    }

    #[test]
    fn routed_with_gateway_and_dhcp_offers_a_default_route() {
        let x = run(r#"
[networks.n]
mode = "routed"
address = "10.1.0.1/24"
dns = false
[networks.n.dhcp]
ranges = ["10.1.0.100-10.1.0.149", "10.1.0.200-10.1.0.209"]
[networks.n.uplink]
tap = "up0"
address = "192.0.2.2/30"
gateway = "192.0.2.1"
"#)
        .unwrap();
        let (_, r) = &x.routers[0];
        let d = r.interfaces["lan"].dhcp.as_ref().unwrap();
        assert_eq!(
            d.ranges,
            vec![
                "10.1.0.100-10.1.0.149".to_string(),
                "10.1.0.200-10.1.0.209".to_string()
            ]
        );
        assert_eq!(d.gateway, Some(true));
        assert_eq!(d.domain, None);
        assert!(r.dns.is_none(), "dns = false");
        assert_eq!(r.routes[0].via, Some(Ipv4Addr::new(192, 0, 2, 1)));
        accepted(&x, &[]);
    }

    #[test]
    fn isolated_with_address_gets_dhcp_without_gateway_and_local_dns() {
        let x = run(r#"
[networks.n]
mode = "isolated"
address = "10.0.0.1/24"
domain = "lab.example"
mtu = 1400
taps = ["vm0", "vm1"]
[networks.n.dhcp]
range = "10.0.0.10-10.0.0.20"
lease_file = "/var/lib/sb/n.leases"
hosts = [{ mac = "52:54:00:aa:bb:cc", name = "db" }]
[networks.n.dns_options]
hosts = [{ name = "www", ip = "10.0.0.5" }]
"#)
        .unwrap();
        assert_eq!(x.segments.len(), 1);
        let (_, s) = &x.segments[0];
        assert_eq!(tap_names(s), vec!["vm0", "vm1"]);
        // Taps given: no default sockets.
        assert_eq!((&s.vde, &s.stream, &s.dgram), (&None, &None, &None));
        assert_eq!(s.mtu, Some(1400));
        let (rname, r) = &x.routers[0];
        assert_eq!(rname, "n");
        assert_eq!(r.interfaces.keys().collect::<Vec<_>>(), vec!["lan"]);
        let li = &r.interfaces["lan"];
        assert_eq!(li.mtu, Some(1400));
        assert_eq!(
            li.dhcp,
            Some(DhcpSection {
                ranges: vec!["10.0.0.10-10.0.0.20".into()],
                lease_secs: None,
                max_leases: None,
                lease_file: p("/var/lib/sb/n.leases"),
                hosts: vec![DhcpHostSection {
                    mac: "52:54:00:aa:bb:cc".into(),
                    name: Some("db".into()),
                    ip: None,
                }],
                gateway: Some(false),
                dns_servers: vec![],
                domain: Some("lab.example".into()),
                mtu: None,
            })
        );
        assert!(r.routes.is_empty() && r.masquerade.is_empty() && r.forwards.is_empty());
        assert_eq!(
            r.dns,
            Some(DnsSection {
                domain: Some("lab.example".into()),
                upstream: vec![],
                hosts: vec![DnsHostSection {
                    name: "www".into(),
                    ip: Ipv4Addr::new(10, 0, 0, 5),
                }],
                local_only: true,
                cache_size: None,
            })
        );
        accepted(&x, &[]);
    }

    #[test]
    fn isolated_dns_defaults_to_local_only_but_can_forward_when_told() {
        let x = run("[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\n").unwrap();
        let dns = x.routers[0].1.dns.as_ref().unwrap();
        assert!(dns.local_only);
        assert!(dns.upstream.is_empty());
        assert_eq!(x.routers[0].1.interfaces["lan"].dhcp, None);
        let x = run(
            "[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\n[networks.n.dns_options]\nlocal_only = false\nupstream = [\"192.0.2.53:5353\"]\n",
        )
        .unwrap();
        let dns = x.routers[0].1.dns.as_ref().unwrap();
        assert!(!dns.local_only);
        assert_eq!(dns.upstream, vec!["192.0.2.53:5353".to_string()]);
    }

    #[test]
    fn bare_isolated_network_is_one_segment_with_default_sockets() {
        let x = run("[networks.n]\nmode = \"isolated\"\n").unwrap();
        assert!(x.routers.is_empty());
        assert_eq!(x.segments.len(), 1);
        let (name, s) = &x.segments[0];
        assert_eq!(name, "n");
        assert_eq!(s.vde, p("/run/sb/n"));
        assert_eq!(s.stream, p("/run/sb/n.stream"));
        assert_eq!(s.dgram, p("/run/sb/n.dgram"));
        assert!(s.taps.is_empty());
        let plan = accepted(&x, &[]);
        assert_eq!(plan.segments[0].config.name, "n");
        assert!(plan.routers.is_empty());
    }

    #[test]
    fn isolated_on_an_existing_segment_adds_only_the_router() {
        let x = run(
            "[networks.n]\nmode = \"isolated\"\nsegment = \"lab\"\naddress = \"10.0.0.1/24\"\nmtu = 1400\n",
        )
        .unwrap();
        assert!(x.segments.is_empty());
        let li = &x.routers[0].1.interfaces["lan"];
        assert_eq!(li.segment, "lab");
        assert_eq!(li.mtu, Some(1400));
        let plan = accepted(&x, &[("lab", SegmentSection::default())]);
        assert_eq!(plan.routers[0].segments, vec!["lab".to_string()]);
        assert_eq!(plan.routers[0].interfaces[0].mtu, 1400);
    }

    #[test]
    fn bridge_is_a_segment_with_the_host_taps_and_guest_sockets() {
        let x = run("[networks.n]\nmode = \"bridge\"\ntaps = [\"tap-lan\"]\nmtu = 9000\n").unwrap();
        assert!(x.routers.is_empty());
        assert_eq!(x.segments.len(), 1);
        let (name, s) = &x.segments[0];
        assert_eq!(name, "n");
        assert_eq!(tap_names(s), vec!["tap-lan"]);
        assert_eq!(s.mtu, Some(9000));
        assert_eq!(s.vde, p("/run/sb/n"));
        assert_eq!(s.stream, p("/run/sb/n.stream"));
        assert_eq!(s.dgram, p("/run/sb/n.dgram"));
        accepted(&x, &[]);
        let x = run("[networks.n]\nmode = \"bridge\"\ntaps = [\"t0\"]\nstream = \"/s\"\n").unwrap();
        let s = &x.segments[0].1;
        assert_eq!((&s.vde, &s.stream, &s.dgram), (&None, &p("/s"), &None));
        accepted(&x, &[]);
    }

    #[test]
    fn the_host_uplink_routes_to_the_host_interface_without_masquerade() {
        let x = run(r#"
[networks.n]
mode = "nat"
address = "10.0.2.2/24"
[networks.n.uplink]
host = true
loopback = true
forwards = [{ proto = "tcp", listen = "127.0.0.1:2222", to = "10.0.2.15:22" }]
"#)
        .unwrap();
        let (rname, r) = &x.routers[0];
        assert_eq!(rname, "n");
        assert_eq!(r.interfaces.keys().collect::<Vec<_>>(), vec!["lan"]);
        assert_eq!(r.routes.len(), 1);
        assert_eq!(r.routes[0].to, "default");
        assert_eq!(r.routes[0].via, None);
        assert_eq!(r.routes[0].dev.as_deref(), Some("host"));
        assert!(r.masquerade.is_empty() && r.forwards.is_empty());
        let host = r.host.as_ref().unwrap();
        assert_eq!(host.loopback, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(host.forwards.len(), 1);
        assert_eq!(host.forwards[0].listen, "127.0.0.1:2222");
        let plan = accepted(&x, &[]);
        let hp = plan.routers[0].host.as_ref().unwrap();
        assert_eq!(hp.forwards[0].2, "10.0.2.15:22".parse().unwrap());
        // The router builds, with the host interface last.
        let router = plan.routers[0].build().unwrap();
        assert_eq!(router.host_interface(), Some(crate::router::IfaceId(1)));
        // No loopback: the gateway stays the router's own.
        let x = run(
            "[networks.n]\nmode = \"nat\"\naddress = \"10.0.2.2/24\"\nuplink = { host = true }\n",
        )
        .unwrap();
        assert_eq!(x.routers[0].1.host.as_ref().unwrap().loopback, None);
        // A host uplink has nothing of a segment uplink.
        let e = run("[networks.n]\nmode = \"nat\"\naddress = \"10.0.2.2/24\"\nuplink = { host = true, segment = \"wan\" }\n").unwrap_err();
        assert!(e.starts_with("networks.n.uplink: the host uplink"), "{e}");
        let e = run("[networks.n]\nmode = \"nat\"\naddress = \"10.0.2.2/24\"\nuplink = { host = true, forwards = [{ proto = \"tcp\", listen = \"127.0.0.1:1\", to = \"10.9.0.1:1\" }] }\n").unwrap_err();
        assert!(e.contains("is not a guest of the network"), "{e}");
    }

    fn err(text: &str) -> String {
        run(text).unwrap_err()
    }

    #[test]
    fn bridge_refuses_everything_of_a_gateway() {
        for (extra, key) in [
            ("address = \"10.0.0.1/24\"\n", "address"),
            ("domain = \"x\"\n", "domain"),
            ("dns = true\n", "dns"),
            ("[networks.n.dhcp]\nrange = \"10.0.0.2-10.0.0.9\"\n", "dhcp"),
            ("[networks.n.dns_options]\ncache_size = 1\n", "dns_options"),
            ("[networks.n.uplink]\ntap = \"u\"\n", "uplink"),
            (
                "[[networks.n.forwards]]\nproto = \"tcp\"\nport = 1\nto = \"10.0.0.2:1\"\n",
                "forwards",
            ),
        ] {
            let e = err(&format!(
                "[networks.n]\nmode = \"bridge\"\ntaps = [\"t\"]\n{extra}"
            ));
            assert!(
                e.starts_with(&format!(
                    "networks.n.{key}: bridge mode puts the VMs on the host's LAN, whose own DHCP"
                )),
                "{key}: {e}"
            );
        }
        // dns = false says nothing a bridge contradicts.
        run("[networks.n]\nmode = \"bridge\"\ntaps = [\"t\"]\ndns = false\n").unwrap();
        let e = err("[networks.n]\nmode = \"bridge\"\n");
        assert!(
            e.starts_with("networks.n.taps: bridge mode needs at least one tap"),
            "{e}"
        );
    }

    #[test]
    fn segment_with_sockets_or_taps_is_refused() {
        for (key, line) in [
            ("vde", "vde = \"/x\""),
            ("stream", "stream = \"/x\""),
            ("dgram", "dgram = \"/x\""),
            ("taps", "taps = [\"t\"]"),
        ] {
            for mode in ["isolated", "nat", "bridge"] {
                let e = err(&format!(
                    "[networks.n]\nmode = \"{mode}\"\nsegment = \"lab\"\n{line}\n"
                ));
                assert!(
                    e.starts_with(&format!(
                        "networks.n.{key}: `segment` joins an existing segment"
                    )),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn isolated_refuses_a_way_out_and_services_without_an_address() {
        let e = err("[networks.n]\nmode = \"isolated\"\n[networks.n.uplink]\ntap = \"u\"\n");
        assert!(
            e.starts_with("networks.n.uplink: an isolated network has no way out"),
            "{e}"
        );
        let e = err(
            "[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\n[[networks.n.forwards]]\nproto = \"tcp\"\nport = 1\nto = \"10.0.0.2:1\"\n",
        );
        assert!(
            e.starts_with("networks.n.forwards: port forwards reach a nat network"),
            "{e}"
        );
        for (extra, key) in [
            ("[networks.n.dhcp]\nrange = \"10.0.0.2-10.0.0.9\"\n", "dhcp"),
            ("dns = true\n", "dns"),
            ("[networks.n.dns_options]\ncache_size = 5\n", "dns_options"),
            ("domain = \"lab\"\n", "domain"),
        ] {
            let e = err(&format!("[networks.n]\nmode = \"isolated\"\n{extra}"));
            assert!(
                e.starts_with(&format!("networks.n.{key}: needs `address`")),
                "{e}"
            );
        }
    }

    #[test]
    fn routed_and_nat_need_address_and_uplink() {
        for mode in ["routed", "nat"] {
            let e = err(&format!(
                "[networks.n]\nmode = \"{mode}\"\n[networks.n.uplink]\ntap = \"u\"\naddress = \"192.0.2.2/24\"\n"
            ));
            assert!(
                e.starts_with(&format!(
                    "networks.n.address: a {mode} network needs the gateway's address"
                )),
                "{e}"
            );
            let e = err(&format!(
                "[networks.n]\nmode = \"{mode}\"\naddress = \"10.0.0.1/24\"\n"
            ));
            assert!(
                e.starts_with(&format!(
                    "networks.n.uplink: a {mode} network needs [networks.n.uplink]"
                )),
                "{e}"
            );
        }
        let e = err(
            "[networks.n]\nmode = \"routed\"\naddress = \"10.0.0.1/24\"\n[networks.n.uplink]\ntap = \"u\"\naddress = \"192.0.2.2/24\"\n[[networks.n.forwards]]\nproto = \"tcp\"\nport = 1\nto = \"10.0.0.2:1\"\n",
        );
        assert!(
            e.starts_with("networks.n.forwards: a routed network's hosts are reachable"),
            "{e}"
        );
    }

    fn nat_with_uplink(uplink: &str) -> String {
        format!(
            "[networks.n]\nmode = \"nat\"\naddress = \"10.0.0.1/24\"\n[networks.n.uplink]\n{uplink}"
        )
    }

    #[test]
    fn bad_uplinks_are_refused_naming_the_key() {
        let cases = [
            (
                "segment = \"wan\"\ntap = \"u\"\naddress = \"192.0.2.2/24\"\n",
                "networks.n.uplink.tap: give `segment` or `tap`, not both",
            ),
            (
                "address = \"192.0.2.2/24\"\n",
                "networks.n.uplink: give `segment` (an existing segment) or `tap`",
            ),
            (
                "segment = \"n\"\naddress = \"192.0.2.2/24\"\n",
                "networks.n.uplink.segment: \"n\" is the network's own segment",
            ),
            ("tap = \"u\"\n", "networks.n.uplink.address: missing"),
            (
                "tap = \"u\"\naddress = \"192.0.2.2/32\"\n",
                "networks.n.uplink.address: 192.0.2.2/32 leaves no room",
            ),
            (
                "tap = \"u\"\naddress = \"192.0.2.0/24\"\n",
                "networks.n.uplink.address: 192.0.2.0/24 is the network or broadcast address",
            ),
            (
                "tap = \"u\"\naddress = \"10.0.0.200/16\"\n",
                "networks.n.uplink.address: 10.0.0.0/16 overlaps the network 10.0.0.0/24",
            ),
            (
                "tap = \"u\"\naddress = \"192.0.2.2/24\"\ngateway = \"198.51.100.1\"\n",
                "networks.n.uplink.gateway: 198.51.100.1 is outside the uplink's subnet 192.0.2.0/24",
            ),
            (
                "tap = \"u\"\naddress = \"192.0.2.2/24\"\ngateway = \"192.0.2.2\"\n",
                "networks.n.uplink.gateway: 192.0.2.2 is not another host on 192.0.2.0/24",
            ),
            (
                "tap = \"u\"\naddress = \"192.0.2.2/24\"\ngateway = \"192.0.2.255\"\n",
                "networks.n.uplink.gateway: 192.0.2.255 is not another host",
            ),
        ];
        for (uplink, want) in cases {
            let e = err(&nat_with_uplink(uplink));
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
        // A point-to-point /31 uplink is fine, both ends usable.
        let x = run(&nat_with_uplink(
            "tap = \"u\"\naddress = \"192.0.2.0/31\"\ngateway = \"192.0.2.1\"\n",
        ))
        .unwrap();
        accepted(&x, &[]);
    }

    #[test]
    fn bad_gateway_addresses_are_refused() {
        let e = err("[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.0/24\"\n");
        assert!(
            e.starts_with("networks.n.address: 10.0.0.0/24 is the network or broadcast address of 10.0.0.0/24; give the gateway's own address (like \"10.0.0.1/24\")"),
            "{e}"
        );
        let e = err("[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.255/24\"\n");
        assert!(e.contains("network or broadcast"), "{e}");
        let e = err("[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/31\"\n");
        assert!(
            e.starts_with("networks.n.address: 10.0.0.1/31 leaves no room for guests"),
            "{e}"
        );
    }

    fn dhcp_err(dhcp: &str) -> String {
        err(&format!(
            "[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\n[networks.n.dhcp]\n{dhcp}"
        ))
    }

    #[test]
    fn bad_dhcp_tables_are_refused_naming_the_key() {
        let cases = [
            (
                "range = \"10.0.0.2-10.0.0.9\"\nranges = [\"10.0.0.20-10.0.0.29\"]\n",
                "networks.n.dhcp.ranges: give `range` or `ranges`, not both",
            ),
            (
                "range = \"10.0.0.2\"\n",
                "networks.n.dhcp.range: \"10.0.0.2\" is not FIRST-LAST (like \"10.0.0.2-10.0.0.254\")",
            ),
            (
                "range = \"10.0.0.9-10.0.0.2\"\n",
                "networks.n.dhcp.range: \"10.0.0.9-10.0.0.2\" runs backwards",
            ),
            (
                "range = \"10.0.0.2-10.0.1.9\"\n",
                "networks.n.dhcp.range: \"10.0.0.2-10.0.1.9\": 10.0.1.9 is outside the network 10.0.0.0/24",
            ),
            (
                "ranges = [\"192.168.1.2-192.168.1.9\"]\n",
                "networks.n.dhcp.ranges: \"192.168.1.2-192.168.1.9\": 192.168.1.2 is outside the network 10.0.0.0/24",
            ),
            (
                "range = \"10.0.0.0-10.0.0.9\"\n",
                "networks.n.dhcp.range: \"10.0.0.0-10.0.0.9\" takes in the network's own 10.0.0.0 or broadcast 10.0.0.255 address",
            ),
            (
                "range = \"10.0.0.200-10.0.0.255\"\n",
                "networks.n.dhcp.range: \"10.0.0.200-10.0.0.255\" takes in the network's own",
            ),
            (
                "range = \"10.0.0.1-10.0.0.9\"\n",
                "networks.n.dhcp.range: \"10.0.0.1-10.0.0.9\" takes in the gateway's address 10.0.0.1",
            ),
            (
                "ranges = [\"10.0.0.2-10.0.0.9\", \"10.0.0.9-10.0.0.20\"]\n",
                "networks.n.dhcp.ranges: \"10.0.0.9-10.0.0.20\" overlaps 10.0.0.2-10.0.0.9",
            ),
            (
                "lease_secs = 60\n",
                "networks.n.dhcp: give `range` (like \"10.0.0.2-10.0.0.254\") or `hosts`",
            ),
            (
                "range = \"10.0.0.2-10.0.0.9\"\nmax_leases = 0\n",
                "networks.n.dhcp.max_leases: must be at least 1",
            ),
            (
                "range = \"10.0.0.2-10.0.0.9\"\nlease_secs = 0\n",
                "networks.n.dhcp.lease_secs: must be at least 1",
            ),
            (
                "hosts = [{ mac = \"52:54:00:00:00\", ip = \"10.0.0.5\" }]\n",
                "networks.n.dhcp.hosts[0].mac: ",
            ),
            (
                "hosts = [{ mac = \"01:00:5e:00:00:01\", ip = \"10.0.0.5\" }]\n",
                "networks.n.dhcp.hosts[0].mac: 01:00:5e:00:00:01 is a group or zero address",
            ),
            (
                "hosts = [{ mac = \"52:54:00:00:00:01\", ip = \"10.0.0.5\" }, { mac = \"52:54:00:00:00:01\", ip = \"10.0.0.6\" }]\n",
                "networks.n.dhcp.hosts[1].mac: 52:54:00:00:00:01 is reserved twice",
            ),
            (
                "hosts = [{ mac = \"52:54:00:00:00:01\", ip = \"10.0.0.5\" }, { mac = \"52:54:00:00:00:02\", ip = \"10.0.0.5\" }]\n",
                "networks.n.dhcp.hosts[1].ip: 10.0.0.5 is reserved twice",
            ),
            (
                "hosts = [{ mac = \"52:54:00:00:00:01\", ip = \"10.0.1.5\" }]\n",
                "networks.n.dhcp.hosts[0].ip: 10.0.1.5 is not a guest address of the network 10.0.0.0/24",
            ),
            (
                "hosts = [{ mac = \"52:54:00:00:00:01\", ip = \"10.0.0.1\" }]\n",
                "networks.n.dhcp.hosts[0].ip: 10.0.0.1 is not a guest address",
            ),
            (
                "hosts = [{ mac = \"52:54:00:00:00:01\" }]\n",
                "networks.n.dhcp.hosts[0]: a reservation gives the client an `ip`, a `name`, or both",
            ),
        ];
        for (dhcp, want) in cases {
            let e = dhcp_err(dhcp);
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
    }

    #[test]
    fn bad_dns_settings_are_refused() {
        let e = err(
            "[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\ndns = false\n[networks.n.dns_options]\ncache_size = 5\n",
        );
        assert!(
            e.starts_with("networks.n.dns_options: given, but dns = false"),
            "{e}"
        );
        let e = err(
            "[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\n[networks.n.dns_options]\nupstream = [\"192.0.2.53\"]\n",
        );
        assert!(
            e.starts_with("networks.n.dns_options.upstream: a local-only DNS server never forwards (isolated networks"),
            "{e}"
        );
        let nat = "[networks.n]\nmode = \"nat\"\naddress = \"10.0.0.1/24\"\n[networks.n.uplink]\ntap = \"u\"\naddress = \"192.0.2.2/24\"\n[networks.n.dns_options]\n";
        let e = err(&format!(
            "{nat}local_only = true\nupstream = [\"192.0.2.53\"]\n"
        ));
        assert!(
            e.starts_with(
                "networks.n.dns_options.upstream: a local-only DNS server never forwards; set"
            ),
            "{e}"
        );
        let e = err(&format!("{nat}upstream = [\"dns.example\"]\n"));
        assert!(
            e.starts_with(
                "networks.n.dns_options.upstream[0]: \"dns.example\" is not ADDRESS or ADDRESS:PORT"
            ),
            "{e}"
        );
        let e = err(&format!("{nat}cache_size = 0\n"));
        assert!(
            e.starts_with("networks.n.dns_options.cache_size: must be at least 1"),
            "{e}"
        );
        let e = err(
            "[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\ndomain = \"bad_domain\"\n",
        );
        assert!(
            e.starts_with("networks.n.domain: \"bad_domain\" is not a DNS domain"),
            "{e}"
        );
        let e = err(
            "[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\ndomain = \"a..b\"\n",
        );
        assert!(e.starts_with("networks.n.domain:"), "{e}");
        run("[networks.n]\nmode = \"isolated\"\naddress = \"10.0.0.1/24\"\ndomain = \"lab.example.\"\n").unwrap();
    }

    #[test]
    fn bad_forwards_are_refused() {
        let base = "[networks.n]\nmode = \"nat\"\naddress = \"10.0.0.1/24\"\n[networks.n.uplink]\ntap = \"u\"\naddress = \"192.0.2.2/24\"\n[[networks.n.forwards]]\n";
        let e = err(&format!(
            "{base}proto = \"sctp\"\nport = 1\nto = \"10.0.0.2:1\"\n"
        ));
        assert!(
            e.starts_with("networks.n.forwards[0].proto: \"sctp\"; port forwards are"),
            "{e}"
        );
        let e = err(&format!(
            "{base}proto = \"tcp\"\nport = 1\nto = \"10.0.0.2\"\n"
        ));
        assert!(
            e.starts_with(
                "networks.n.forwards[0].to: \"10.0.0.2\" is not ADDRESS:PORT (like \"10.0.0.2:22\")"
            ),
            "{e}"
        );
        let e = err(&format!(
            "{base}proto = \"tcp\"\nport = 1\nto = \"192.0.2.9:1\"\n"
        ));
        assert!(
            e.starts_with(
                "networks.n.forwards[0].to: 192.0.2.9 is not a guest of the network 10.0.0.0/24"
            ),
            "{e}"
        );
        let e = err(&format!(
            "{base}proto = \"tcp\"\naddress = \"192.0.2.3\"\nport = 1\nto = \"10.0.0.2:1\"\n"
        ));
        assert!(
            e.starts_with(
                "networks.n.forwards[0].address: 192.0.2.3 is not the uplink's address 192.0.2.2"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let n = NetworkSection::default();
        for bad in ["", ".", "..", "a/b"] {
            let e = expand(bad, &n, Path::new(RT)).unwrap_err();
            assert!(e.contains("socket file names"), "{e}");
        }
        expand("lab-1.test", &n, Path::new(RT)).unwrap();
    }

    #[test]
    fn the_configuration_checks_still_apply_to_the_expansion() {
        // A forward port the network block passes through is checked by the
        // configuration, with the router (named like the network) named.
        let mut n = net(NAT);
        n.forwards = vec![NetworkForward {
            proto: "tcp".into(),
            address: None,
            port: toml::Value::Integer(0),
            to: "192.168.122.10:22".into(),
        }];
        n.dns_options = Some(NetworkDns::default());
        let x = expand("n", &n, Path::new(RT)).unwrap();
        let e = ConfigFile {
            segments: x.segments.into_iter().collect(),
            routers: x.routers.into_iter().collect(),
            ..Default::default()
        }
        .into_plan()
        .unwrap_err();
        assert!(e.0.contains("routers.n.forwards[0].port"), "{e:?}");
    }
}
