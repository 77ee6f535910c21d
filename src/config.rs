//! The network description: a TOML file, the quick-mode command line, or the
//! embedded default network, all turned into one [`Plan`] the daemon runs.
//!
//! ```toml
//! # where `switchboard ctl` finds this process (optional)
//! control = "/run/switchboard/control"
//!
//! [segments.lan]
//! vde = "/run/switchboard/lan"   # a VDE2 switch directory (QEMU -netdev vde,sock=...)
//! taps = ["tap0"]                # taps to open and plug in
//! tap_offload = true             # 64 KiB super-frames between taps (TSO)
//! stream = "/run/switchboard/lan.stream"  # QEMU -netdev stream (4-byte framing)
//! stream_tcp = "127.0.0.1:5555"  # the same over TCP
//! dgram = "/run/switchboard/lan.dgram"    # QEMU -netdev dgram (unix), a port per VM
//! mtu = 1500                     # payload bytes; up to 9216 for jumbo frames
//! hub = false                    # flood everything, like vde_switch -x
//! max_ports = 32                 # like vde_switch -n
//! mac_table_size = 4096          # MAC table bound
//! mac_aging_secs = 300           # forget silent stations after this long
//! mode = "0660"                  # socket permissions, like vde_switch -m
//! dirmode = "2770"               # directory permissions, like --dirmode
//! group = "kvm"                  # group of the directory and sockets, like -g
//!
//! [routers.gw]                   # a router: its own routing table and ARP cache (a VRF)
//! arp_cache_size = 1024          # neighbour entries, resolved or not
//! [routers.gw.interfaces.lan]    # an interface, named by the key
//! segment = "lan"                # the segment it is a port of
//! addresses = ["10.0.3.1/24"]    # its IPv4 addresses; each gives a connected route
//! mac = "02:00:00:00:00:01"      # default: derived from the router and interface names
//! proxy_arp = false              # answer ARP for hosts routed out of other interfaces
//! mtu = 1500                     # default: the segment's
//! [[routers.gw.routes]]
//! to = "default"                 # a network, a bare address (/32) or "default"
//! via = "10.0.3.254"             # the gateway; or leave it out and name the interface:
//! dev = "lan"                    # optional when via is on a connected network
//! metric = 0                     # lower wins among routes to the same network
//! [[routers.gw.masquerade]]      # iptables ... -s 10.0.3.0/24 ! -d 10.0.3.0/24 -o wan -j MASQUERADE
//! out = "wan"                    # the outside interface (its address is used)
//! sources = ["10.0.3.0/24"]      # default: every source
//! except = ["10.0.3.0/24"]       # destinations left alone
//! [[routers.gw.forwards]]        # a port forward (DNAT)
//! proto = "tcp"                  # or "udp"
//! iface = "wan"                  # arriving at this interface's address(es)
//! port = 8080                    # or "8080-8089"
//! to = "10.0.3.10:80"            # the inside host (a range maps one to one)
//! [routers.gw.conntrack]
//! max_flows = 65536              # new flows are refused (and counted) beyond this
//! port_range = "1024-65535"      # ports masqueraded flows may get
//! ```
//!
//! Unknown keys are errors, and every error names the line and the key, so a
//! typo never silently changes the network.

use crate::mac::MacAddr;
use crate::router::{InterfaceConfig, StaticRoute, stable_mac};
use crate::switch::SegmentConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TOML file as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Path of the control socket.
    pub control: Option<PathBuf>,
    /// Segments by name.
    #[serde(default)]
    pub segments: BTreeMap<String, SegmentSection>,
    /// Routers by name.
    #[serde(default)]
    pub routers: BTreeMap<String, RouterSection>,
}

/// One `[routers.NAME]` table.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouterSection {
    /// Interfaces by name.
    #[serde(default)]
    pub interfaces: BTreeMap<String, InterfaceSection>,
    /// Static routes.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// Bound on the neighbour cache.
    pub arp_cache_size: Option<usize>,
    /// Masquerade rules.
    #[serde(default)]
    pub masquerade: Vec<MasqueradeSection>,
    /// Port forwards.
    #[serde(default)]
    pub forwards: Vec<ForwardSection>,
    /// Connection tracking limits.
    pub conntrack: Option<ConntrackSection>,
}

/// One `[[routers.NAME.masquerade]]` entry.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MasqueradeSection {
    /// The outside interface.
    pub out: String,
    /// Source networks (default: all).
    #[serde(default)]
    pub sources: Vec<String>,
    /// Destinations left untranslated.
    #[serde(default)]
    pub except: Vec<String>,
}

/// One `[[routers.NAME.forwards]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The outside interface.
    pub iface: String,
    /// One of its addresses only.
    pub address: Option<Ipv4Addr>,
    /// Port or `FIRST-LAST`.
    pub port: toml::Value,
    /// Inside `ADDRESS:PORT`.
    pub to: String,
}

/// `[routers.NAME.conntrack]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConntrackSection {
    /// Most flows tracked at once.
    pub max_flows: Option<usize>,
    /// Ports masqueraded flows may get, `FIRST-LAST`.
    pub port_range: Option<String>,
}

/// One `[routers.NAME.interfaces.IFACE]` table.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InterfaceSection {
    /// The segment the interface is a port of.
    pub segment: String,
    /// IPv4 addresses with prefix length.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Its MAC address, if not the derived one.
    pub mac: Option<String>,
    /// Answer ARP for hosts routed out of other interfaces.
    #[serde(default)]
    pub proxy_arp: bool,
    /// IP MTU; the segment's by default.
    pub mtu: Option<usize>,
}

/// One `[[routers.NAME.routes]]` entry.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    /// Destination: a network, a bare address, or `default`.
    pub to: String,
    /// Gateway.
    pub via: Option<Ipv4Addr>,
    /// Interface name.
    pub dev: Option<String>,
    /// Preference: lower wins.
    #[serde(default)]
    pub metric: u32,
}

/// One `[segments.NAME]` table.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SegmentSection {
    /// VDE2 switch directory served for this segment.
    pub vde: Option<PathBuf>,
    /// Taps plugged into this segment.
    #[serde(default)]
    pub taps: Vec<String>,
    /// Open taps with virtio-net headers and TSO/checksum offload (default
    /// true).
    pub tap_offload: Option<bool>,
    /// A Unix stream socket for QEMU `-netdev stream` clients (and passt,
    /// libkrun, socket_vmnet): 4-byte length framing, a port per connection.
    pub stream: Option<PathBuf>,
    /// The same over TCP, on this address.
    pub stream_tcp: Option<std::net::SocketAddr>,
    /// A Unix datagram socket for QEMU `-netdev dgram` clients (one frame
    /// per datagram, no header): every source path is a port, removed when
    /// its socket is gone or after five minutes without a frame from it.
    pub dgram: Option<PathBuf>,
    /// Hub mode.
    #[serde(default)]
    pub hub: bool,
    /// Payload MTU.
    pub mtu: Option<usize>,
    /// Highest port number.
    pub max_ports: Option<u16>,
    /// MAC table bound.
    pub mac_table_size: Option<usize>,
    /// MAC aging, seconds.
    pub mac_aging_secs: Option<u64>,
    /// Socket mode, octal.
    pub mode: Option<String>,
    /// Directory mode, octal.
    pub dirmode: Option<String>,
    /// Group name or number for the directory and sockets.
    pub group: Option<String>,
}

/// Permissions of a VDE switch directory and its sockets, as `vde_switch`'s
/// `-m`, `--dirmode` and `-g` set them. `None` means `vde_switch`'s default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Mode of the `ctl` and data sockets.
    pub mode: Option<u32>,
    /// Mode of the directory.
    pub dirmode: Option<u32>,
    /// Group id of the directory and sockets.
    pub group: Option<u32>,
}

/// A VDE switch directory to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdePlan {
    /// The directory (`DIR/ctl` is the control socket clients connect to).
    pub dir: PathBuf,
    /// Its permissions.
    pub perms: Permissions,
}

/// One segment, with everything attached to it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPlan {
    /// How the segment switches.
    pub config: SegmentConfig,
    /// Its VDE2 directory, if it serves one.
    pub vde: Option<VdePlan>,
    /// Taps to open.
    pub taps: Vec<String>,
    /// Open them with offloads (super-frames between taps).
    pub tap_offload: bool,
    /// QEMU stream socket (Unix) to listen on.
    pub stream: Option<PathBuf>,
    /// QEMU stream socket (TCP) to listen on.
    pub stream_tcp: Option<std::net::SocketAddr>,
    /// QEMU dgram hub socket (Unix) to bind: a port per sending path.
    pub dgram: Option<PathBuf>,
}

/// One router, with the segment of each of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPlan {
    /// Its name.
    pub name: String,
    /// Its interfaces, in `IfaceId` order.
    pub interfaces: Vec<InterfaceConfig>,
    /// For each interface, the name of the segment it joins.
    pub segments: Vec<String>,
    /// Static routes.
    pub routes: Vec<StaticRoute>,
    /// Neighbour cache bound, if not the default.
    pub arp_cache_size: Option<usize>,
    /// Masquerade rules.
    pub masquerade: Vec<crate::router::nat::rules::MasqueradeConfig>,
    /// Port forwards.
    pub forwards: Vec<crate::router::nat::rules::ForwardConfig>,
    /// Flow table bound, if not the default.
    pub conntrack_max: Option<usize>,
    /// Masquerade port range, if not the default.
    pub port_range: Option<(u16, u16)>,
}

/// Reads `1234` or `"1000-2000"` as a port range.
fn parse_port_range(v: &str) -> Result<(u16, u16), String> {
    let (a, b) = match v.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (v.trim(), v.trim()),
    };
    let a: u16 = a
        .parse()
        .map_err(|_| format!("{v:?} is not a port or FIRST-LAST range"))?;
    let b: u16 = b
        .parse()
        .map_err(|_| format!("{v:?} is not a port or FIRST-LAST range"))?;
    if a == 0 || a > b {
        return Err(format!("{v:?}: ports run from 1 to 65535, first <= last"));
    }
    Ok((a, b))
}

fn parse_nets(list: &[String], at: &str) -> Result<Vec<ipnet::Ipv4Net>, ConfigError> {
    list.iter()
        .map(|n| StaticRoute::parse_destination(n).map_err(|e| ConfigError(format!("{at}: {e}"))))
        .collect()
}

/// What the daemon runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Where the control socket goes.
    pub control: PathBuf,
    /// The segments.
    pub segments: Vec<SegmentPlan>,
    /// The routers joining them.
    pub routers: Vec<RouterPlan>,
}

/// A configuration problem, said so a person can fix it: the same type the
/// engine uses for values it cannot run with.
pub use crate::switch::ConfigError;

/// The directory switchboard keeps its sockets in by default:
/// `$XDG_RUNTIME_DIR/switchboard` for users, `/run/switchboard` for root.
pub fn runtime_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/switchboard");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("switchboard"),
        _ => std::env::temp_dir().join(format!("switchboard-{}", nix::unistd::geteuid())),
    }
}

/// The default control socket path.
pub fn default_control_path() -> PathBuf {
    runtime_dir().join("control")
}

/// The embedded default network: one segment named `default`, served under
/// the runtime directory as a VDE2 switch directory and as QEMU stream and
/// datagram sockets, so every QEMU attach mode works out of the box.
pub fn default_plan() -> Plan {
    let dir = runtime_dir();
    Plan {
        control: dir.join("control"),
        segments: vec![SegmentPlan {
            config: SegmentConfig::new("default"),
            vde: Some(VdePlan {
                dir: dir.join("default"),
                perms: Permissions::default(),
            }),
            taps: Vec::new(),
            tap_offload: true,
            stream: Some(dir.join("default.stream")),
            stream_tcp: None,
            dgram: Some(dir.join("default.dgram")),
        }],
        routers: Vec::new(),
    }
}

/// Parses an octal permission string such as `"0660"` or `"660"`.
pub fn parse_mode(s: &str) -> Result<u32, ConfigError> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(ConfigError(format!(
            "invalid mode {s:?}: expected octal permissions like 0660"
        ))),
    }
}

/// Resolves a group name (or a numeric id) to a group id.
pub fn resolve_group(s: &str) -> Result<u32, ConfigError> {
    if let Ok(gid) = s.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(s) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(ConfigError(format!("no such group {s:?}"))),
        Err(e) => Err(ConfigError(format!("cannot look up group {s:?}: {e}"))),
    }
}

impl ConfigFile {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<ConfigFile, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("{origin}: {e}")))
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        ConfigFile::parse(&text, &path.display().to_string())
    }

    /// Checks everything the parser cannot (values, references, duplicates)
    /// and produces the plan.
    pub fn into_plan(self) -> Result<Plan, ConfigError> {
        if self.segments.is_empty() {
            return Err(ConfigError(
                "the configuration defines no segments: add a [segments.NAME] table".into(),
            ));
        }
        let mut segments = Vec::new();
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut taps: Vec<String> = Vec::new();
        let mut sockets: Vec<PathBuf> = Vec::new();
        for (name, s) in self.segments {
            let ctx = |e: ConfigError| ConfigError(format!("segments.{name}: {}", e.0));
            let mut config = SegmentConfig::new(name.clone());
            config.hub = s.hub;
            if let Some(v) = s.mtu {
                config.mtu = v;
            }
            if let Some(v) = s.max_ports {
                config.max_ports = v;
            }
            if let Some(v) = s.mac_table_size {
                config.mac_table_size = v;
            }
            if let Some(v) = s.mac_aging_secs {
                config.mac_aging = Duration::from_secs(v);
            }
            config
                .validate()
                .map_err(|e| ConfigError(format!("segments.{name}: {e}")))?;
            let perms = Permissions {
                mode: s.mode.as_deref().map(parse_mode).transpose().map_err(ctx)?,
                dirmode: s
                    .dirmode
                    .as_deref()
                    .map(parse_mode)
                    .transpose()
                    .map_err(ctx)?,
                group: s
                    .group
                    .as_deref()
                    .map(resolve_group)
                    .transpose()
                    .map_err(ctx)?,
            };
            let vde = match s.vde {
                Some(dir) => {
                    if dirs.contains(&dir) {
                        return Err(ConfigError(format!(
                            "segments.{name}.vde: directory {} is used by another segment",
                            dir.display()
                        )));
                    }
                    dirs.push(dir.clone());
                    Some(VdePlan { dir, perms })
                }
                None if perms != Permissions::default() => {
                    return Err(ConfigError(format!(
                        "segments.{name}: mode, dirmode and group apply to a vde directory, but none is given"
                    )));
                }
                None => None,
            };
            for t in &s.taps {
                if t.is_empty() || t.len() > 15 {
                    return Err(ConfigError(format!(
                        "segments.{name}.taps: {t:?} is not a valid interface name (1 to 15 bytes)"
                    )));
                }
                if taps.contains(t) {
                    return Err(ConfigError(format!(
                        "segments.{name}.taps: tap {t:?} appears twice"
                    )));
                }
                taps.push(t.clone());
            }
            for (key, path) in [("stream", &s.stream), ("dgram", &s.dgram)] {
                let Some(path) = path else { continue };
                if sockets.contains(path) {
                    return Err(ConfigError(format!(
                        "segments.{name}.{key}: socket {} is used twice",
                        path.display()
                    )));
                }
                sockets.push(path.clone());
            }
            segments.push(SegmentPlan {
                config,
                vde,
                taps: s.taps,
                tap_offload: s.tap_offload.unwrap_or(true),
                stream: s.stream,
                stream_tcp: s.stream_tcp,
                dgram: s.dgram,
            });
        }
        let mut routers = Vec::new();
        for (name, r) in self.routers {
            routers.push(router_plan(&name, r, &segments)?);
        }
        Ok(Plan {
            control: self.control.unwrap_or_else(default_control_path),
            segments,
            routers,
        })
    }
}

/// Checks one router table against the segments and turns it into a plan;
/// the router itself is built once here too, so route errors surface at
/// load time with the file's names.
fn router_plan(
    name: &str,
    r: RouterSection,
    segments: &[SegmentPlan],
) -> Result<RouterPlan, ConfigError> {
    if r.interfaces.is_empty() {
        return Err(ConfigError(format!(
            "routers.{name}: a router needs at least one [routers.{name}.interfaces.NAME] table"
        )));
    }
    let mut interfaces = Vec::new();
    let mut segment_names = Vec::new();
    for (iname, i) in r.interfaces {
        let at = format!("routers.{name}.interfaces.{iname}");
        let Some(segment) = segments.iter().find(|s| s.config.name == i.segment) else {
            return Err(ConfigError(format!(
                "{at}.segment: there is no segment {:?}",
                i.segment
            )));
        };
        if segment_names.contains(&i.segment) {
            return Err(ConfigError(format!(
                "{at}.segment: router {name:?} already has an interface on segment {:?}",
                i.segment
            )));
        }
        let mut addresses = Vec::new();
        for a in &i.addresses {
            let net: ipnet::Ipv4Net = a.parse().map_err(|_| {
                ConfigError(format!(
                    "{at}.addresses: {a:?} is not an IPv4 address with a prefix (like \"10.0.3.1/24\")"
                ))
            })?;
            addresses.push(net);
        }
        let mac = match &i.mac {
            Some(m) => {
                let mac: MacAddr = m
                    .parse()
                    .map_err(|e| ConfigError(format!("{at}.mac: {e}")))?;
                if !mac.is_valid_source() {
                    return Err(ConfigError(format!(
                        "{at}.mac: {mac} is a group or zero address; an interface needs a unicast one"
                    )));
                }
                mac
            }
            None => stable_mac(name, &iname),
        };
        let mtu = i.mtu.unwrap_or(segment.config.mtu);
        if !(68..=segment.config.mtu).contains(&mtu) {
            return Err(ConfigError(format!(
                "{at}.mtu: {mtu} must be between 68 and the segment's mtu ({})",
                segment.config.mtu
            )));
        }
        interfaces.push(InterfaceConfig {
            name: iname,
            mac,
            addresses,
            mtu: mtu as u16,
            proxy_arp: i.proxy_arp,
        });
        segment_names.push(i.segment);
    }
    let mut routes = Vec::new();
    for (n, route) in r.routes.into_iter().enumerate() {
        let dest = StaticRoute::parse_destination(&route.to)
            .map_err(|e| ConfigError(format!("routers.{name}.routes[{n}].to: {e}")))?;
        routes.push(StaticRoute {
            dest,
            gateway: route.via,
            iface: route.dev,
            metric: route.metric,
        });
    }
    let mut masquerade = Vec::new();
    for (n, m) in r.masquerade.into_iter().enumerate() {
        let at = format!("routers.{name}.masquerade[{n}]");
        masquerade.push(crate::router::nat::rules::MasqueradeConfig {
            out: m.out,
            sources: parse_nets(&m.sources, &format!("{at}.sources"))?,
            except: parse_nets(&m.except, &format!("{at}.except"))?,
        });
    }
    let mut forwards = Vec::new();
    for (n, f) in r.forwards.into_iter().enumerate() {
        let at = format!("routers.{name}.forwards[{n}]");
        let proto = match f.proto.as_str() {
            "tcp" => crate::router::nat::Proto::Tcp,
            "udp" => crate::router::nat::Proto::Udp,
            p => {
                return Err(ConfigError(format!(
                    "{at}.proto: {p:?}; port forwards are \"tcp\" or \"udp\""
                )));
            }
        };
        let ports = match &f.port {
            toml::Value::Integer(p) => u16::try_from(*p)
                .ok()
                .filter(|p| *p > 0)
                .map(|p| (p, p))
                .ok_or_else(|| ConfigError(format!("{at}.port: {p} is not a port")))?,
            toml::Value::String(s) => {
                parse_port_range(s).map_err(|e| ConfigError(format!("{at}.port: {e}")))?
            }
            other => {
                return Err(ConfigError(format!(
                    "{at}.port: {other} is not a port or \"FIRST-LAST\""
                )));
            }
        };
        let to: std::net::SocketAddrV4 =
            f.to.parse()
                .map_err(|_| ConfigError(format!("{at}.to: {:?} is not ADDRESS:PORT", f.to)))?;
        forwards.push(crate::router::nat::rules::ForwardConfig {
            proto,
            iface: f.iface,
            outside: f.address,
            ports,
            to,
        });
    }
    let (conntrack_max, port_range) = match r.conntrack {
        None => (None, None),
        Some(c) => {
            if c.max_flows == Some(0) {
                return Err(ConfigError(format!(
                    "routers.{name}.conntrack.max_flows: must be at least 1"
                )));
            }
            let range = c
                .port_range
                .as_deref()
                .map(parse_port_range)
                .transpose()
                .map_err(|e| ConfigError(format!("routers.{name}.conntrack.port_range: {e}")))?;
            (c.max_flows, range)
        }
    };
    if r.arp_cache_size == Some(0) {
        return Err(ConfigError(format!(
            "routers.{name}.arp_cache_size: must be at least 1"
        )));
    }
    let plan = RouterPlan {
        name: name.to_string(),
        interfaces,
        segments: segment_names,
        routes,
        arp_cache_size: r.arp_cache_size,
        masquerade,
        forwards,
        conntrack_max,
        port_range,
    };
    plan.build()
        .map_err(|e| ConfigError(format!("routers.{name}: {e}")))?;
    Ok(plan)
}

impl RouterPlan {
    /// Builds the router this plan describes.
    pub fn build(&self) -> Result<crate::router::Router, crate::router::RouterError> {
        let mut arp = crate::router::ArpConfig::default();
        if let Some(n) = self.arp_cache_size {
            arp.capacity = n;
        }
        let mut conntrack = crate::router::nat::conntrack::ConntrackConfig::default();
        if let Some(n) = self.conntrack_max {
            conntrack.max_flows = n;
        }
        if let Some(r) = self.port_range {
            conntrack.port_range = r;
        }
        crate::router::Router::new(crate::router::RouterConfig {
            name: self.name.clone(),
            interfaces: self.interfaces.clone(),
            routes: self.routes.clone(),
            arp,
            nat: crate::router::NatConfig {
                masquerade: self.masquerade.clone(),
                forwards: self.forwards.clone(),
                conntrack,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, ConfigError> {
        ConfigFile::parse(text, "test.toml")?.into_plan()
    }

    #[test]
    fn full_example_parses() {
        let p = plan(
            r#"
control = "/tmp/sb/control"
[segments.lan]
vde = "/tmp/sb/lan"
taps = ["tap0", "tap1"]
mtu = 9000
hub = true
max_ports = 64
mac_table_size = 100
mac_aging_secs = 60
mode = "0660"
dirmode = "2770"
group = "0"
stream = "/tmp/sb/lan.stream"
stream_tcp = "127.0.0.1:5555"
dgram = "/tmp/sb/lan.dgram"
[segments.wan]
taps = ["tap2"]
"#,
        )
        .unwrap();
        assert_eq!(p.control, PathBuf::from("/tmp/sb/control"));
        assert_eq!(p.segments.len(), 2);
        let lan = &p.segments[0];
        assert_eq!(lan.config.name, "lan");
        assert_eq!(lan.config.mtu, 9000);
        assert!(lan.config.hub);
        assert_eq!(lan.config.max_ports, 64);
        assert_eq!(lan.config.mac_aging, Duration::from_secs(60));
        let vde = lan.vde.as_ref().unwrap();
        assert_eq!(vde.perms.mode, Some(0o660));
        assert_eq!(vde.perms.dirmode, Some(0o2770));
        assert_eq!(vde.perms.group, Some(0));
        assert_eq!(lan.taps, vec!["tap0", "tap1"]);
        assert_eq!(lan.stream.as_deref(), Some(Path::new("/tmp/sb/lan.stream")));
        assert_eq!(lan.stream_tcp, Some("127.0.0.1:5555".parse().unwrap()));
        assert_eq!(lan.dgram.as_deref(), Some(Path::new("/tmp/sb/lan.dgram")));
        assert!(p.segments[1].vde.is_none());
        assert!(p.segments[1].dgram.is_none());
    }

    #[test]
    fn unknown_keys_name_the_line_and_key() {
        let e = plan("[segments.lan]\nvde = \"/tmp/x\"\nmtuu = 1500\n")
            .unwrap_err()
            .0;
        assert!(e.contains("test.toml"), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("mtuu"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_the_segment_named() {
        let e = plan("[segments.lan]\nmtu = 10000\n").unwrap_err().0;
        assert!(e.contains("lan") && e.contains("mtu 10000"), "{e}");
        let e = plan("[segments.lan]\nvde = \"/x\"\nmode = \"0999\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("invalid mode"), "{e}");
        let e = plan("[segments.a]\nvde = \"/x\"\n[segments.b]\nvde = \"/x\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("used by another segment"), "{e}");
        let e = plan("[segments.a]\ntaps = [\"t\"]\n[segments.b]\ntaps = [\"t\"]\n")
            .unwrap_err()
            .0;
        assert!(e.contains("appears twice"), "{e}");
        let e = plan("[segments.a]\ntaps = [\"averyveryverylongname\"]\n")
            .unwrap_err()
            .0;
        assert!(e.contains("not a valid interface name"), "{e}");
        let e = plan("control = \"/x\"\n").unwrap_err().0;
        assert!(e.contains("no segments"), "{e}");
        let e = plan("[segments.a]\nmode = \"0660\"\n").unwrap_err().0;
        assert!(e.contains("none is given"), "{e}");
        let e = plan("[segments.a]\ndgram = \"/x\"\n[segments.b]\ndgram = \"/x\"\n")
            .unwrap_err()
            .0;
        assert!(
            e.contains("segments.b.dgram") && e.contains("used twice"),
            "{e}"
        );
        let e = plan("[segments.a]\nstream = \"/x\"\ndgram = \"/x\"\n")
            .unwrap_err()
            .0;
        assert!(e.contains("used twice"), "{e}");
    }

    #[test]
    fn modes_parse_as_octal() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("660").unwrap(), 0o660);
        assert_eq!(parse_mode("02770").unwrap(), 0o2770);
        assert!(parse_mode("8").is_err());
        assert!(parse_mode("77777").is_err());
    }

    #[test]
    fn default_plan_has_one_segment_with_a_vde_dir() {
        let p = default_plan();
        assert_eq!(p.segments.len(), 1);
        assert_eq!(p.segments[0].config.name, "default");
        assert!(
            p.segments[0]
                .vde
                .as_ref()
                .unwrap()
                .dir
                .ends_with("switchboard/default")
        );
    }
}
