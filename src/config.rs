//! The network description: a TOML file, the quick-mode command line, or the
//! embedded default network, all turned into one [`Plan`] the daemon runs.
//!
//! ```toml
//! # where `switchboard ctl` finds this process (optional)
//! control = "/run/switchboard/control"
//! # vde_switch's management console (vdecmd, unixterm), like vde_switch -M;
//! # with several segments it starts on the first (`segment NAME` switches)
//! mgmt = "/run/switchboard/mgmt"
//! mgmt_mode = "0600"             # like --mgmtmode
//! mgmt_group = "kvm"             # like --mgmtgroup
//!
//! [segments.lan]
//! vde = "/run/switchboard/lan"   # a VDE2 switch directory (QEMU -netdev vde,sock=...)
//! taps = ["tap0"]                # taps to open and plug in; a table sets 802.1Q VLANs:
//! # taps = ["tap0", { name = "tap1", vlan = 10, tagged = [20, 30] }] (vlan: the
//! # untagged VLAN, default 1; tagged: a trunk's VLANs)
//! vlans = [10, 20, 30]           # VLANs besides the default (1); any makes the segment filter
//! tap_offload = true             # 64 KiB super-frames between taps (TSO)
//! tap_napi_thread = false        # frames written to the taps are delivered by a
//! # kernel thread (threaded NAPI): about 2x throughput on plain taps, ~30 us
//! # more per round trip when idle; needs CAP_NET_ADMIN
//! stream = "/run/switchboard/lan.stream"  # QEMU -netdev stream (4-byte framing)
//! stream_tcp = "127.0.0.1:5555"  # the same over TCP
//! dgram = "/run/switchboard/lan.dgram"    # QEMU -netdev dgram (unix), a port per VM
//! mtu = 1500                     # payload bytes; up to 65520 (VDE2 clients carry at most 9216)
//! hub = false                    # flood everything, like vde_switch -x
//! max_ports = 32                 # like vde_switch -n
//! mac_table_size = 4096          # MAC table bound
//! mac_aging_secs = 300           # forget silent stations after this long
//! # Loops (there is no spanning tree): `mesh` makes the udp and vxlan ports
//! # split-horizon (nothing is relayed from one tunnel to another), for a full
//! # mesh of tunnels; a port whose peer floods (broadcast, multicast, unknown
//! # unicast) more than `storm_limit_pps` frames per second (0: never) is
//! # blocked for `storm_block_secs`, doubling on repeats within a minute up to
//! # 5 minutes, which breaks any other loop
//! mesh = false
//! storm_limit_pps = 20000
//! storm_block_secs = 10
//! mode = "0660"                  # socket permissions, like vde_switch -m
//! dirmode = "2770"               # directory permissions, like --dirmode
//! group = "kvm"                  # group of the directory and sockets, like -g
//! # VXLAN (RFC 7348) ports, one per VNI: the bound address (port 4789 if left
//! # out), static remote VTEPs that get broadcast and unknown unicast, the UDP
//! # port they listen on (default 4789; a Linux vxlan device without `dstport`
//! # uses 8472), an optional multicast group, and its TTL (default 1); `vlan`
//! # (one of `vlans`) carries only that VLAN of the segment, untagged, in the VNI
//! vxlan = [{ vni = 42, local = "0.0.0.0:4789", remotes = ["192.0.2.2"], port = 4789, group = "239.1.1.1", vlan = 10 }]
//! # UDP tunnels to switchboards (or vdeplug4 udp://, QEMU -netdev dgram) on
//! # other hosts, one frame per datagram. `local` defaults to the remote's
//! # port on every address; with `key_file` (64 hex digits, made with
//! # `openssl rand -hex 32`, the same file on both ends) every datagram is
//! # sealed with ChaCha20-Poly1305, and forged or replayed ones are dropped;
//! # `vlan`, as for vxlan, carries only that VLAN, untagged
//! udp = [{ local = "0.0.0.0:5000", remote = "192.0.2.2:5000", key_file = "/etc/switchboard/lab.key", vlan = 20 }]
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
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TOML file as written.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Path of the control socket.
    pub control: Option<PathBuf>,
    /// Path of the `vde_switch` management console socket.
    pub mgmt: Option<PathBuf>,
    /// Its mode, octal.
    pub mgmt_mode: Option<String>,
    /// Its group.
    pub mgmt_group: Option<String>,
    /// Segments by name.
    #[serde(default)]
    pub segments: BTreeMap<String, SegmentSection>,
    /// Routers by name.
    #[serde(default)]
    pub routers: BTreeMap<String, RouterSection>,
    /// Networks by name: libvirt-style blocks that expand into segments
    /// and routers (see `crate::network`).
    #[serde(default)]
    pub networks: BTreeMap<String, crate::network::NetworkSection>,
}

/// One `[routers.NAME]` table.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
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
    /// The DNS forwarder on the router's addresses.
    pub dns: Option<DnsSection>,
    /// An interface named `host` to the unprivileged host uplink.
    pub host: Option<HostSection>,
}

/// `[routers.NAME.host]`: the router's way out through the host's own
/// sockets, needing no privileges (what slirp4netns and pasta do). It adds
/// an interface named `host`; route to it with `dev = "host"`.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// One of the router's addresses whose TCP and UDP reach the host's
    /// 127.0.0.1 (slirp's 10.0.2.2); none by default.
    pub loopback: Option<Ipv4Addr>,
    /// Host ports forwarded into the network.
    #[serde(default)]
    pub forwards: Vec<HostForwardSection>,
    /// Flow table bounds (defaults 4096, 4096, 256).
    pub max_tcp: Option<usize>,
    /// UDP flows at most.
    pub max_udp: Option<usize>,
    /// ICMP echo flows at most.
    pub max_icmp: Option<usize>,
}

/// One host port forwarded into the network, like `slirp4netns`'s
/// `add_hostfwd` or pasta's `-t`/`-u`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostForwardSection {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The host address and port to listen on, like `127.0.0.1:2222`.
    pub listen: String,
    /// The guest's address and port, like `10.0.2.15:22`.
    pub to: String,
}

/// `[routers.NAME.dns]`: a DNS forwarder answering on the router's
/// addresses, what dnsmasq does for a libvirt or LXC network.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// The local domain: DHCP clients' names and `hosts` resolve in it.
    pub domain: Option<String>,
    /// Upstream resolvers (`ADDR` or `ADDR:PORT`); default: the
    /// nameservers of `/etc/resolv.conf`.
    #[serde(default)]
    pub upstream: Vec<String>,
    /// Static names, like libvirt's `<dns><host>`.
    #[serde(default)]
    pub hosts: Vec<DnsHostSection>,
    /// Answer only local names, never forward (libvirt's `<dns enable>`
    /// with no forwarders, dnsmasq's `--no-resolv`).
    #[serde(default)]
    pub local_only: bool,
    /// Cached answers at most.
    pub cache_size: Option<usize>,
}

/// One static DNS name.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DnsHostSection {
    /// The name, bare (in the domain) or fully qualified.
    pub name: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// `[routers.NAME.interfaces.IF.dhcp]`: a DHCPv4 server on the interface.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DhcpSection {
    /// Address pools, each `"FIRST-LAST"` inside the interface's subnet.
    #[serde(default)]
    pub ranges: Vec<String>,
    /// Lease time in seconds (default 3600).
    pub lease_secs: Option<u64>,
    /// Leases handed out at most (LXC's `LXC_DHCP_MAX`); default: the pool size.
    pub max_leases: Option<usize>,
    /// Where leases are kept across restarts; default: under the runtime
    /// directory, named after the router and interface.
    pub lease_file: Option<PathBuf>,
    /// Reservations by MAC, like libvirt's `<host mac name ip>`.
    #[serde(default)]
    pub hosts: Vec<DhcpHostSection>,
    /// Option 3: `true` (default) offers the interface's address as the
    /// default gateway; `false` offers none, as libvirt's isolated networks do.
    pub gateway: Option<bool>,
    /// Option 6; default: the interface's address when the router has a
    /// DNS forwarder, else none.
    #[serde(default)]
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15; default: the router's DNS domain.
    pub domain: Option<String>,
    /// Option 26; default: the interface's MTU when it is not 1500.
    pub mtu: Option<u16>,
}

/// One DHCP reservation.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DhcpHostSection {
    /// The client's MAC address.
    pub mac: String,
    /// Its name (also published in DNS).
    pub name: Option<String>,
    /// Its address.
    pub ip: Option<Ipv4Addr>,
}

/// One `[[routers.NAME.masquerade]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConntrackSection {
    /// Most flows tracked at once.
    pub max_flows: Option<usize>,
    /// Ports masqueraded flows may get, `FIRST-LAST`.
    pub port_range: Option<String>,
}

/// One `[routers.NAME.interfaces.IFACE]` table.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
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
    /// A DHCP server on this interface.
    pub dhcp: Option<DhcpSection>,
}

/// One `[[routers.NAME.routes]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
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
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SegmentSection {
    /// VDE2 switch directory served for this segment.
    pub vde: Option<PathBuf>,
    /// Taps plugged into this segment.
    #[serde(default)]
    pub taps: Vec<TapEntry>,
    /// 802.1Q VLANs created at start, besides the default VLAN 1.
    #[serde(default)]
    pub vlans: Vec<u16>,
    /// Open taps with virtio-net headers and TSO/checksum offload (default
    /// true).
    pub tap_offload: Option<bool>,
    /// Open taps with `IFF_NAPI` and a kernel thread that delivers what is
    /// written to them (default false): the receiving hosts' stacks then
    /// run beside the event loop, not inside its writes. Throughput for
    /// latency; see `switchboard_plugs::tap_napi`.
    pub tap_napi_thread: Option<bool>,
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
    /// The tunnels form a full mesh: make them split-horizon.
    #[serde(default)]
    pub mesh: bool,
    /// Flooded frames per second a port may send before it is blocked.
    pub storm_limit_pps: Option<u32>,
    /// The first block of a storming port, seconds.
    pub storm_block_secs: Option<u64>,
    /// Socket mode, octal.
    pub mode: Option<String>,
    /// Directory mode, octal.
    pub dirmode: Option<String>,
    /// Group name or number for the directory and sockets.
    pub group: Option<String>,
    /// VXLAN ports.
    #[serde(default)]
    pub vxlan: Vec<VxlanSection>,
    /// UDP tunnels to other hosts.
    #[serde(default)]
    pub udp: Vec<UdpSection>,
}

/// One entry of a segment's `taps` list: a name, or a table with VLAN
/// settings, so the common case stays a plain list of names.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TapEntry {
    /// A tap in the default VLAN only.
    Name(String),
    /// A tap with VLAN settings.
    Table(TapTable),
}

impl TapEntry {
    /// The tap's interface name.
    pub fn name(&self) -> &str {
        match self {
            TapEntry::Name(n) => n,
            TapEntry::Table(t) => &t.name,
        }
    }
}

/// A tap with VLAN settings, as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TapTable {
    /// The interface name.
    pub name: String,
    /// Its untagged VLAN (default 1).
    pub vlan: Option<u16>,
    /// The VLANs it carries tagged.
    #[serde(default)]
    pub tagged: Vec<u16>,
}

/// A tap's checked VLAN settings, applied after the tap is plugged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapVlans {
    /// The tap's interface name.
    pub tap: String,
    /// Its untagged VLAN.
    pub untagged: u16,
    /// The VLANs it carries tagged.
    pub tagged: Vec<u16>,
}

/// One entry of a segment's `udp` list, as written: a point-to-point UDP
/// tunnel. Addresses stay strings until checked, so errors can name the
/// entry.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UdpSection {
    /// `ADDRESS[:PORT]` to bind; every address, at the remote's port, by
    /// default.
    pub local: Option<String>,
    /// `ADDRESS:PORT` of the other end (required).
    pub remote: Option<String>,
    /// A file holding the tunnel's 32-byte key as 64 hex digits; without
    /// it, frames travel in the clear.
    pub key_file: Option<PathBuf>,
    /// The tunnel's untagged VLAN (default 1): the one VLAN of the segment
    /// it carries.
    pub vlan: Option<u16>,
}

/// One entry of a segment's `vxlan` list: a VXLAN port carrying the segment
/// as one VNI.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct VxlanSection {
    /// The VNI, 0 to 16777215.
    pub vni: u32,
    /// `ADDRESS[:PORT]` to bind; `0.0.0.0:4789` by default.
    pub local: Option<String>,
    /// Static remote VTEPs (IPv4 addresses).
    #[serde(default)]
    pub remotes: Vec<String>,
    /// The UDP port the remotes listen on.
    pub port: Option<u16>,
    /// A multicast group for broadcast and unknown unicast.
    pub group: Option<String>,
    /// TTL of datagrams to the group.
    pub ttl: Option<u32>,
    /// The port's untagged VLAN (default 1): the one VLAN of the segment
    /// mapped to the VNI.
    pub vlan: Option<u16>,
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
    /// VLANs to create besides the default one.
    pub vlans: Vec<u16>,
    /// VLAN settings of the taps that have any.
    pub tap_vlans: Vec<TapVlans>,
    /// Open them with offloads (super-frames between taps).
    pub tap_offload: bool,
    /// Open them with a NAPI thread (see [`SegmentSection::tap_napi_thread`]).
    pub tap_napi_thread: bool,
    /// QEMU stream socket (Unix) to listen on.
    pub stream: Option<PathBuf>,
    /// QEMU stream socket (TCP) to listen on.
    pub stream_tcp: Option<std::net::SocketAddr>,
    /// QEMU dgram hub socket (Unix) to bind: a port per sending path.
    pub dgram: Option<PathBuf>,
    /// VXLAN ports to open, one per VNI.
    pub vxlan: Vec<VxlanPortPlan>,
    /// UDP tunnels to open.
    pub udp: Vec<UdpTunnelPlan>,
}

/// A checked VXLAN port: the plug's settings plus what the switch does
/// with the port, which the plug need not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPortPlan {
    /// How the plug binds and where it sends.
    pub config: switchboard_plugs::vxlan::VxlanConfig,
    /// Its untagged VLAN, when not the default: the one VLAN of the segment
    /// that crosses the VNI.
    pub vlan: Option<u16>,
}

/// A checked UDP tunnel: what the daemon binds, where it sends, and the key
/// it seals with, read from its file when the configuration was loaded, so
/// a missing or malformed key stops start-up with the entry named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpTunnelPlan {
    /// The address to bind.
    pub local: std::net::SocketAddr,
    /// The other end.
    pub remote: std::net::SocketAddr,
    /// Where the key came from, for messages.
    pub key_file: Option<PathBuf>,
    /// The key (its `Debug` output is redacted); `None` for a plain tunnel.
    pub key: Option<switchboard_plugs::sealed::Key>,
    /// Its untagged VLAN, when not the default: the one VLAN of the segment
    /// the tunnel carries.
    pub vlan: Option<u16>,
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
    /// DHCP servers: the interface each serves and its table as written.
    pub dhcp: Vec<(String, DhcpSection)>,
    /// Where each DHCP server keeps its leases, by interface name.
    pub lease_files: Vec<(String, PathBuf)>,
    /// The DNS forwarder, as written.
    pub dns: Option<DnsSection>,
    /// The host uplink, checked.
    pub host: Option<HostPlan>,
}

/// A router's host uplink, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// The loopback alias.
    pub loopback: Option<Ipv4Addr>,
    /// Forwards: protocol, host address, guest address.
    pub forwards: Vec<(
        crate::router::nat::Proto,
        std::net::SocketAddr,
        std::net::SocketAddrV4,
    )>,
    /// TCP, UDP and ICMP flow bounds.
    pub max_flows: (usize, usize, usize),
}

/// The name of a router's host interface.
pub const HOST_INTERFACE: &str = "host";

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
    /// The `vde_switch` management console, if one is served.
    pub mgmt: Option<MgmtPlan>,
    /// The network blocks, already expanded into `segments` and `routers`.
    pub networks: Vec<NetworkPlan>,
}

/// `vde_switch`'s management console socket (`-M`, `--mgmtmode`,
/// `--mgmtgroup`), which test rigs drive with `vdecmd` and `unixterm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MgmtPlan {
    /// Where the socket goes.
    pub path: PathBuf,
    /// Its mode (`vde_switch`'s default is 0600: the console can shut the
    /// switch down).
    pub mode: u32,
    /// The group owning it, if set.
    pub group: Option<u32>,
}

impl MgmtPlan {
    /// `vde_switch`'s console socket mode when `--mgmtmode` is not given.
    pub const DEFAULT_MODE: u32 = 0o600;

    /// Checks the options as `vde_switch` takes them: an octal mode and a
    /// group name (or number). Mode or group without a path is an error,
    /// since it would silently do nothing.
    pub fn from_options(
        path: Option<&Path>,
        mode: Option<&str>,
        group: Option<&str>,
    ) -> Result<Option<MgmtPlan>, ConfigError> {
        let Some(path) = path else {
            if mode.is_some() || group.is_some() {
                return Err(ConfigError(
                    "a management console mode or group needs its path (mgmt, -M)".into(),
                ));
            }
            return Ok(None);
        };
        Ok(Some(MgmtPlan {
            path: path.to_path_buf(),
            mode: mode
                .map(parse_mode)
                .transpose()?
                .unwrap_or(Self::DEFAULT_MODE),
            group: group.map(resolve_group).transpose()?,
        }))
    }
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
    let net = default_network();
    let file = ConfigFile {
        networks: BTreeMap::from([("default".to_string(), net)]),
        ..ConfigFile::default()
    };
    match file.into_plan() {
        Ok(plan) => plan,
        // A unit test expands this very network, so this cannot happen in a
        // release; say what broke rather than panic.
        Err(e) => {
            tracing::error!(error = %e, "the embedded default network is invalid");
            Plan {
                control: default_control_path(),
                segments: Vec::new(),
                routers: Vec::new(),
                mgmt: None,
                networks: Vec::new(),
            }
        }
    }
}

/// The embedded default network, like libvirt's `default` and QEMU's user
/// networking at once: a segment served as a VDE directory and QEMU stream
/// and datagram sockets under the runtime directory, with a gateway at
/// 10.0.2.2 (QEMU's numbers, so guests configured for slirp feel at home)
/// handing out 10.0.2.15 onwards by DHCP, answering DNS for the guests'
/// names in `default.internal` and forwarding the rest, and a way out
/// through the host uplink, which needs no privileges; 10.0.2.2 also
/// reaches the host's own 127.0.0.1, as in QEMU.
pub fn default_network() -> crate::network::NetworkSection {
    crate::network::NetworkSection {
        mode: crate::network::NetworkMode::Nat,
        address: Some(ipnet::Ipv4Net::new(Ipv4Addr::new(10, 0, 2, 2), 24).unwrap_or_default()),
        domain: Some("default.internal".into()),
        dhcp: Some(crate::network::NetworkDhcp {
            range: Some("10.0.2.15-10.0.2.254".into()),
            ..Default::default()
        }),
        dns: Some(true),
        uplink: Some(crate::network::Uplink {
            host: true,
            loopback: true,
            ..Default::default()
        }),
        ..Default::default()
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
        if self.segments.is_empty() && self.networks.is_empty() {
            return Err(ConfigError(
                "the configuration defines no segments: add a [segments.NAME] or a [networks.NAME] table"
                    .into(),
            ));
        }
        let (mut segment_sections, mut router_sections) = (self.segments, self.routers);
        let mut networks = Vec::new();
        for (name, net) in self.networks {
            let (plan, expansion) = NetworkPlan::expand(&name, &net)?;
            for (s, section) in expansion.segments {
                if segment_sections.insert(s.clone(), section).is_some() {
                    return Err(ConfigError(format!(
                        "networks.{name}: it creates segment {s:?}, which is defined elsewhere too"
                    )));
                }
            }
            for (r, section) in expansion.routers {
                if router_sections.insert(r.clone(), section).is_some() {
                    return Err(ConfigError(format!(
                        "networks.{name}: it creates router {r:?}, which is defined elsewhere too"
                    )));
                }
            }
            networks.push(plan);
        }
        let (segments, routers) = plan_parts(segment_sections, router_sections, &[])?;
        let mgmt = MgmtPlan::from_options(
            self.mgmt.as_deref(),
            self.mgmt_mode.as_deref(),
            self.mgmt_group.as_deref(),
        )?;
        Ok(Plan {
            control: self.control.unwrap_or_else(default_control_path),
            segments,
            routers,
            mgmt,
            networks,
        })
    }
}

/// A network block as the daemon keeps it: its definition (so `ctl net
/// info` can show it and `ctl net start` can expand it again) and the
/// segments and routers it expanded into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Its name.
    pub name: String,
    /// `isolated`, `routed`, `nat` or `bridge`.
    pub mode: String,
    /// The `[networks.NAME]` block, as TOML.
    pub definition: String,
    /// The segments it created (not one it joined).
    pub segments: Vec<String>,
    /// The routers it created.
    pub routers: Vec<String>,
}

impl NetworkPlan {
    /// Expands a network block into the sections it stands for.
    pub fn expand(
        name: &str,
        net: &crate::network::NetworkSection,
    ) -> Result<(NetworkPlan, crate::network::Expansion), ConfigError> {
        let expansion = crate::network::expand(name, net, &runtime_dir()).map_err(ConfigError)?;
        let plan = NetworkPlan {
            name: name.to_string(),
            mode: net.mode.as_str().to_string(),
            definition: crate::network::to_toml(name, net),
            segments: expansion.segments.iter().map(|(s, _)| s.clone()).collect(),
            routers: expansion.routers.iter().map(|(r, _)| r.clone()).collect(),
        };
        Ok((plan, expansion))
    }

    /// The sections it expands into, as TOML: what `ctl net info` shows.
    pub fn expansion_toml(&self) -> Result<String, ConfigError> {
        let nets = crate::network::from_toml(&self.definition).map_err(ConfigError)?;
        let net = nets.get(&self.name).ok_or_else(|| {
            ConfigError(format!(
                "network {:?}: its definition is missing",
                self.name
            ))
        })?;
        let expansion =
            crate::network::expand(&self.name, net, &runtime_dir()).map_err(ConfigError)?;
        #[derive(Serialize)]
        struct Sections {
            segments: BTreeMap<String, SegmentSection>,
            routers: BTreeMap<String, RouterSection>,
        }
        let sections = Sections {
            segments: expansion.segments.into_iter().collect(),
            routers: expansion.routers.into_iter().collect(),
        };
        toml::to_string(&sections).map_err(|e| ConfigError(format!("network {:?}: {e}", self.name)))
    }
}

/// Checks segment and router tables and turns them into plans. `existing`
/// are segments already planned (and running, for a network started at
/// runtime): new segments must not reuse their names, directories, taps or
/// sockets, and new routers may have interfaces on them.
pub fn plan_parts(
    segment_sections: BTreeMap<String, SegmentSection>,
    router_sections: BTreeMap<String, RouterSection>,
    existing: &[SegmentPlan],
) -> Result<(Vec<SegmentPlan>, Vec<RouterPlan>), ConfigError> {
    let mut segments = Vec::new();
    let mut dirs: Vec<PathBuf> = existing
        .iter()
        .filter_map(|s| s.vde.as_ref().map(|v| v.dir.clone()))
        .collect();
    let mut taps: Vec<String> = existing.iter().flat_map(|s| s.taps.clone()).collect();
    let mut sockets: Vec<PathBuf> = existing
        .iter()
        .flat_map(|s| s.stream.iter().chain(s.dgram.iter()).cloned())
        .collect();
    let mut vxlan_locals: Vec<std::net::SocketAddrV4> = Vec::new();
    let mut udp_locals: Vec<std::net::SocketAddr> = Vec::new();
    for (name, s) in segment_sections {
        if existing.iter().any(|e| e.config.name == name) {
            return Err(ConfigError(format!(
                "segments.{name}: a segment of that name already exists"
            )));
        }
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
        config.mesh = s.mesh;
        if let Some(v) = s.storm_limit_pps {
            config.storm_limit_pps = v;
        }
        if let Some(v) = s.storm_block_secs {
            config.storm_block = Duration::from_secs(v);
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
        let vlans = vlan_list(&name, &s.vlans)?;
        let mut tap_vlans = Vec::new();
        for entry in &s.taps {
            if let TapEntry::Table(t) = entry
                && let Some(v) = tap_vlan_plan(&name, t, &vlans)?
            {
                tap_vlans.push(v);
            }
        }
        let tap_names: Vec<String> = s.taps.iter().map(|t| t.name().to_string()).collect();
        for t in &tap_names {
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
        let vxlan = vxlan_plans(&name, &s.vxlan, &vlans, &mut vxlan_locals)?;
        let udp = udp_plans(&name, &s.udp, &vlans, &mut udp_locals)?;
        segments.push(SegmentPlan {
            config,
            vde,
            taps: tap_names,
            vlans,
            tap_vlans,
            tap_offload: s.tap_offload.unwrap_or(true),
            tap_napi_thread: s.tap_napi_thread.unwrap_or(false),
            stream: s.stream,
            stream_tcp: s.stream_tcp,
            dgram: s.dgram,
            vxlan,
            udp,
        });
    }
    let mut all: Vec<SegmentPlan> = existing.to_vec();
    all.extend(segments.iter().cloned());
    let mut routers = Vec::new();
    for (name, r) in router_sections {
        routers.push(router_plan(&name, r, &all)?);
    }
    Ok((segments, routers))
}

/// Checks a segment's `vlans` list: ids in 1..=4094, none twice. The
/// default VLAN may be listed; it exists anyway.
fn vlan_list(segment: &str, vlans: &[u16]) -> Result<Vec<u16>, ConfigError> {
    let mut out: Vec<u16> = Vec::new();
    for &v in vlans {
        if !(1..=crate::switch::vlan::MAX_VID).contains(&v) {
            return Err(ConfigError(format!(
                "segments.{segment}.vlans: {v} is outside 1..=4094"
            )));
        }
        if out.contains(&v) {
            return Err(ConfigError(format!(
                "segments.{segment}.vlans: {v} appears twice"
            )));
        }
        if v != crate::switch::DEFAULT_VLAN {
            out.push(v);
        }
    }
    Ok(out)
}

/// Checks one tap's VLAN settings against the segment's VLANs; `None` when
/// it has none beyond the defaults.
fn tap_vlan_plan(
    segment: &str,
    t: &TapTable,
    vlans: &[u16],
) -> Result<Option<TapVlans>, ConfigError> {
    let known = |v: u16| v == crate::switch::DEFAULT_VLAN || vlans.contains(&v);
    let bad = |what: String| {
        Err(ConfigError(format!(
            "segments.{segment}.taps: tap {:?}: {what}",
            t.name
        )))
    };
    let untagged = t.vlan.unwrap_or(crate::switch::DEFAULT_VLAN);
    if !known(untagged) {
        return bad(format!(
            "vlan {untagged} is not in the segment's vlans list"
        ));
    }
    let mut tagged: Vec<u16> = Vec::new();
    for &v in &t.tagged {
        if !known(v) {
            return bad(format!(
                "tagged VLAN {v} is not in the segment's vlans list"
            ));
        }
        if v == untagged || tagged.contains(&v) {
            return bad(format!("VLAN {v} is given twice"));
        }
        tagged.push(v);
    }
    tagged.sort_unstable();
    if untagged == crate::switch::DEFAULT_VLAN && tagged.is_empty() {
        return Ok(None);
    }
    Ok(Some(TapVlans {
        tap: t.name.clone(),
        untagged,
        tagged,
    }))
}

/// Checks a tunnel's (a vxlan or udp entry's) `vlan` against the segment's
/// VLANs, the way a tap's is checked; `None` for the default VLAN, which
/// every port is in anyway.
fn tunnel_vlan(at: &str, vlan: Option<u16>, vlans: &[u16]) -> Result<Option<u16>, ConfigError> {
    match vlan {
        None => Ok(None),
        Some(crate::switch::DEFAULT_VLAN) => Ok(None),
        Some(v) if vlans.contains(&v) => Ok(Some(v)),
        Some(v) => Err(ConfigError(format!(
            "{at}.vlan: vlan {v} is not in the segment's vlans list"
        ))),
    }
}

/// Checks a segment's `vxlan` entries and turns them into port settings.
/// `locals` holds the addresses already taken by other VXLAN ports: one
/// UDP socket carries one VNI here, so two ports may not share a port
/// number on overlapping addresses.
fn vxlan_plans(
    segment: &str,
    list: &[VxlanSection],
    vlans: &[u16],
    locals: &mut Vec<std::net::SocketAddrV4>,
) -> Result<Vec<VxlanPortPlan>, ConfigError> {
    use std::net::SocketAddrV4;
    use switchboard_plugs::vxlan::{IANA_PORT, Vni, VxlanConfig};
    let mut out = Vec::new();
    for (n, v) in list.iter().enumerate() {
        let at = format!("segments.{segment}.vxlan[{n}]");
        let vlan = tunnel_vlan(&at, v.vlan, vlans)?;
        let vni = Vni::new(v.vni).ok_or_else(|| {
            ConfigError(format!(
                "{at}.vni: {} does not fit in 24 bits (0 to {})",
                v.vni,
                Vni::MAX
            ))
        })?;
        let local = match v.local.as_deref() {
            None => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, IANA_PORT),
            Some(l) => match (l.parse::<SocketAddrV4>(), l.parse::<Ipv4Addr>()) {
                (Ok(a), _) => a,
                (_, Ok(ip)) => SocketAddrV4::new(ip, IANA_PORT),
                _ => {
                    return Err(ConfigError(format!(
                        "{at}.local: {l:?} is not an IPv4 ADDRESS or ADDRESS:PORT (like \"0.0.0.0:4789\")"
                    )));
                }
            },
        };
        if local.port() == 0 {
            return Err(ConfigError(format!(
                "{at}.local: give a port other than 0: remote VTEPs must know where to send"
            )));
        }
        let group_given = v.group.is_some();
        // With a group the socket binds the wildcard address (see the plug).
        let bound = if group_given {
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, local.port())
        } else {
            local
        };
        if let Some(other) = locals.iter().find(|o| {
            o.port() == local.port()
                && (o.ip() == bound.ip() || o.ip().is_unspecified() || bound.ip().is_unspecified())
        }) {
            return Err(ConfigError(format!(
                "{at}.local: {local} overlaps {other}, used by another vxlan port (one UDP port carries one VNI)"
            )));
        }
        locals.push(bound);
        let mut remotes = Vec::new();
        for r in &v.remotes {
            let ip: Ipv4Addr = r
                .parse()
                .map_err(|_| ConfigError(format!("{at}.remotes: {r:?} is not an IPv4 address")))?;
            if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                return Err(ConfigError(format!(
                    "{at}.remotes: {ip} is not a unicast address (a multicast group goes in `group`)"
                )));
            }
            if remotes.contains(&ip) {
                return Err(ConfigError(format!("{at}.remotes: {ip} appears twice")));
            }
            remotes.push(ip);
        }
        let port = v.port.unwrap_or(IANA_PORT);
        if port == 0 {
            return Err(ConfigError(format!("{at}.port: 0 is not a UDP port")));
        }
        let group = match v.group.as_deref() {
            None => None,
            Some(g) => match g.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_multicast() => Some(ip),
                _ => {
                    return Err(ConfigError(format!(
                        "{at}.group: {g:?} is not an IPv4 multicast group (224.0.0.0/4)"
                    )));
                }
            },
        };
        if v.ttl.is_some() && group.is_none() {
            return Err(ConfigError(format!(
                "{at}.ttl: applies to a multicast group, but none is given"
            )));
        }
        if let Some(t) = v.ttl
            && !(1..=255).contains(&t)
        {
            return Err(ConfigError(format!(
                "{at}.ttl: {t} is not between 1 and 255"
            )));
        }
        if remotes.is_empty() && group.is_none() {
            return Err(ConfigError(format!(
                "{at}: give `remotes` or a `group`, or broadcast (ARP) has nowhere to go"
            )));
        }
        let mut c = VxlanConfig::new(vni, local);
        c.remotes = remotes;
        c.port = port;
        c.group = group;
        if let Some(t) = v.ttl {
            c.multicast_ttl = t;
        }
        out.push(VxlanPortPlan { config: c, vlan });
    }
    Ok(out)
}

/// Reads `ADDRESS:PORT` (`[v6]:PORT` for IPv6), or a bare address
/// (`[v6]` or `v6`) with `default_port`.
fn parse_udp_addr(text: &str, default_port: u16) -> Option<std::net::SocketAddr> {
    use std::net::{IpAddr, SocketAddr};
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    text.parse::<SocketAddr>().ok().or_else(|| {
        bare.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, default_port))
    })
}

/// Checks a segment's `udp` entries and reads their keys. `locals` holds
/// the addresses other tunnels bound already: two tunnels cannot share a
/// local port on overlapping addresses.
fn udp_plans(
    segment: &str,
    list: &[UdpSection],
    vlans: &[u16],
    locals: &mut Vec<std::net::SocketAddr>,
) -> Result<Vec<UdpTunnelPlan>, ConfigError> {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    let mut out = Vec::new();
    for (n, u) in list.iter().enumerate() {
        let at = format!("segments.{segment}.udp[{n}]");
        let vlan = tunnel_vlan(&at, u.vlan, vlans)?;
        let Some(remote_s) = u.remote.as_deref() else {
            return Err(ConfigError(format!(
                "{at}.remote: missing; a tunnel needs the other end's ADDRESS:PORT (like \"192.0.2.2:5000\")"
            )));
        };
        let remote: SocketAddr = remote_s.parse().map_err(|_| {
            ConfigError(format!(
                "{at}.remote: {remote_s:?} is not ADDRESS:PORT (like \"192.0.2.2:5000\" or \"[2001:db8::2]:5000\")"
            ))
        })?;
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return Err(ConfigError(format!(
                "{at}.remote: {remote} is not one host's address and port; a tunnel is point to point"
            )));
        }
        let local = match u.local.as_deref() {
            None => {
                let any = match remote.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                };
                SocketAddr::new(any, remote.port())
            }
            Some(l) => parse_udp_addr(l, remote.port()).ok_or_else(|| {
                ConfigError(format!(
                    "{at}.local: {l:?} is not an ADDRESS or ADDRESS:PORT (like \"0.0.0.0:5000\")"
                ))
            })?,
        };
        if local.port() == 0 {
            return Err(ConfigError(format!(
                "{at}.local: give a port other than 0: the other end must know where to send"
            )));
        }
        if local.is_ipv4() != remote.is_ipv4() {
            return Err(ConfigError(format!(
                "{at}: local {local} and remote {remote} are not of the same address family"
            )));
        }
        if let Some(other) = locals.iter().find(|o| {
            o.port() == local.port()
                && o.is_ipv4() == local.is_ipv4()
                && (o.ip() == local.ip() || o.ip().is_unspecified() || local.ip().is_unspecified())
        }) {
            return Err(ConfigError(format!(
                "{at}.local: {local} overlaps {other}, bound by another udp tunnel; give each tunnel its own port"
            )));
        }
        locals.push(local);
        let key = match &u.key_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError(format!(
                        "{at}.key_file: cannot read the key {}: {e}",
                        path.display()
                    ))
                })?;
                let key = switchboard_plugs::sealed::Key::from_hex(&text).map_err(|e| {
                    ConfigError(format!("{at}.key_file: the key {}: {e}", path.display()))
                })?;
                Some(key)
            }
        };
        out.push(UdpTunnelPlan {
            local,
            remote,
            key_file: u.key_file.clone(),
            key,
            vlan,
        });
    }
    Ok(out)
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
    let mut dhcp = Vec::new();
    for (iname, i) in r.interfaces {
        if let Some(d) = i.dhcp {
            dhcp.push((iname.clone(), d));
        }
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
    let mut lease_files = Vec::new();
    for (iname, d) in &dhcp {
        let path = d
            .lease_file
            .clone()
            .unwrap_or_else(|| runtime_dir().join(format!("{name}-{iname}.leases")));
        lease_files.push((iname.clone(), path));
    }
    if let Some(dns) = &r.dns {
        for u in &dns.upstream {
            parse_upstream(u)
                .map_err(|e| ConfigError(format!("routers.{name}.dns.upstream: {e}")))?;
        }
    }
    let host = r.host.as_ref().map(|h| host_plan(name, h)).transpose()?;
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
        dhcp,
        lease_files,
        dns: r.dns,
        host,
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
        let services = self.services().map_err(crate::router::RouterError)?;
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
            services,
            host: self
                .host
                .as_ref()
                .map(|h| crate::router::HostInterfaceConfig {
                    name: HOST_INTERFACE.into(),
                    mtu: 65520,
                    loopback: h.loopback,
                }),
        })
    }

    /// Turns the DHCP and DNS tables into the services' configurations,
    /// filling in what a network needs by default: the interface's address
    /// as gateway and name server, the router's domain, the link's MTU.
    fn services(&self) -> Result<crate::router::ServicesConfig, String> {
        let mut config = crate::router::ServicesConfig::default();
        let domain = self.dns.as_ref().and_then(|d| d.domain.clone());
        for (iname, d) in &self.dhcp {
            let at = format!("interfaces.{iname}.dhcp");
            let Some(iface) = self.interfaces.iter().find(|i| &i.name == iname) else {
                return Err(format!("{at}: no interface {iname:?}"));
            };
            let Some(net) = iface.addresses.first() else {
                return Err(format!(
                    "{at}: the interface needs an address to serve DHCP"
                ));
            };
            let mut ranges = Vec::new();
            for r in &d.ranges {
                ranges.push(parse_address_range(r).map_err(|e| format!("{at}.ranges: {e}"))?);
            }
            let mut reservations = Vec::new();
            for h in &d.hosts {
                let mac: MacAddr = h
                    .mac
                    .parse()
                    .map_err(|e| format!("{at}.hosts: {:?}: {e}", h.mac))?;
                if h.name.is_none() && h.ip.is_none() {
                    return Err(format!("{at}.hosts: {mac}: give a name, an ip or both"));
                }
                reservations.push(crate::dhcp::Reservation {
                    mac,
                    name: h.name.clone(),
                    ip: h.ip,
                });
            }
            let dns_servers = if !d.dns_servers.is_empty() {
                d.dns_servers.clone()
            } else if self.dns.is_some() {
                vec![net.addr()]
            } else {
                Vec::new()
            };
            config.dhcp.push((
                iname.clone(),
                crate::dhcp::DhcpConfig {
                    server: net.addr(),
                    subnet: net.trunc(),
                    ranges,
                    lease_time: Duration::from_secs(d.lease_secs.unwrap_or(3600)),
                    max_leases: d.max_leases,
                    reservations,
                    router: d.gateway.unwrap_or(true).then_some(net.addr()),
                    dns_servers,
                    domain: d.domain.clone().or_else(|| domain.clone()),
                    mtu: d.mtu.or((iface.mtu != 1500).then_some(iface.mtu)),
                },
            ));
        }
        if let Some(dns) = &self.dns {
            let upstreams = if dns.upstream.is_empty() {
                crate::dns::system_upstreams()
            } else {
                dns.upstream
                    .iter()
                    .map(|u| parse_upstream(u))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("dns.upstream: {e}"))?
            };
            let mut hosts = Vec::new();
            for (_, d) in &self.dhcp {
                for h in &d.hosts {
                    if let (Some(name), Some(ip)) = (&h.name, h.ip) {
                        hosts.push((name.clone(), ip));
                    }
                }
            }
            hosts.extend(dns.hosts.iter().map(|h| (h.name.clone(), h.ip)));
            config.dns = Some(crate::dns::DnsConfig {
                domain: dns.domain.clone(),
                upstreams,
                hosts,
                local_only: dns.local_only,
                cache_size: dns.cache_size.unwrap_or(1024),
                local_subnets: self
                    .interfaces
                    .iter()
                    .flat_map(|i| i.addresses.iter().map(|a| a.trunc()))
                    .collect(),
                seed: random_seed(),
            });
        }
        Ok(config)
    }
}

/// Checks a `[routers.NAME.host]` table.
fn host_plan(name: &str, h: &HostSection) -> Result<HostPlan, ConfigError> {
    let at = format!("routers.{name}.host");
    let mut forwards = Vec::new();
    for (n, f) in h.forwards.iter().enumerate() {
        let proto = match f.proto.as_str() {
            "tcp" => crate::router::nat::Proto::Tcp,
            "udp" => crate::router::nat::Proto::Udp,
            p => {
                return Err(ConfigError(format!(
                    "{at}.forwards[{n}].proto: {p:?}; host forwards are \"tcp\" or \"udp\""
                )));
            }
        };
        let listen: std::net::SocketAddr = f.listen.parse().map_err(|_| {
            ConfigError(format!(
                "{at}.forwards[{n}].listen: {:?} is not ADDRESS:PORT (like 127.0.0.1:2222)",
                f.listen
            ))
        })?;
        let to: std::net::SocketAddrV4 = f.to.parse().map_err(|_| {
            ConfigError(format!(
                "{at}.forwards[{n}].to: {:?} is not ADDRESS:PORT (like 10.0.2.15:22)",
                f.to
            ))
        })?;
        if forwards.iter().any(|(p, l, _)| *p == proto && *l == listen) {
            return Err(ConfigError(format!(
                "{at}.forwards[{n}]: {} {listen} is forwarded twice",
                f.proto
            )));
        }
        forwards.push((proto, listen, to));
    }
    for (key, v) in [
        ("max_tcp", h.max_tcp),
        ("max_udp", h.max_udp),
        ("max_icmp", h.max_icmp),
    ] {
        if v == Some(0) {
            return Err(ConfigError(format!("{at}.{key}: must be at least 1")));
        }
    }
    Ok(HostPlan {
        loopback: h.loopback,
        forwards,
        max_flows: (
            h.max_tcp.unwrap_or(4096),
            h.max_udp.unwrap_or(4096),
            h.max_icmp.unwrap_or(256),
        ),
    })
}

/// Reads `"FIRST-LAST"` as an inclusive address range.
fn parse_address_range(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let bad = || format!("{s:?} is not a range like \"10.0.3.100-10.0.3.200\"");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let b: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
    if u32::from(a) > u32::from(b) {
        return Err(format!("{s:?}: the first address is above the last"));
    }
    Ok((a, b))
}

/// Reads an upstream resolver: `ADDR` (port 53) or `ADDR:PORT`
/// (`[V6]:PORT` for IPv6).
pub fn parse_upstream(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, 53));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not an address or ADDRESS:PORT"))
}

/// An unpredictable number for the DNS forwarder's query ids, from the
/// standard library's per-process random hashing keys (no extra crate).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, ConfigError> {
        ConfigFile::parse(text, "test.toml")?.into_plan()
    }

    #[test]
    fn mgmt_console_keys() {
        let p = plan(
            "mgmt = \"/srv/switchboard-test/mgmt\"\nmgmt_mode = \"0660\"\nmgmt_group = \"0\"\n[segments.a]\n",
        )
        .unwrap();
        assert_eq!(
            p.mgmt,
            Some(MgmtPlan {
                path: PathBuf::from("/srv/switchboard-test/mgmt"),
                mode: 0o660,
                group: Some(0),
            })
        );
        let p = plan("mgmt = \"/srv/switchboard-test/mgmt\"\n[segments.a]\n").unwrap();
        assert_eq!(p.mgmt.map(|m| (m.mode, m.group)), Some((0o600, None)));
        assert_eq!(plan("[segments.a]\n").unwrap().mgmt, None);
        let e = plan("mgmt_mode = \"0660\"\n[segments.a]\n").unwrap_err().0;
        assert!(e.contains("needs its path"), "{e}");
        let e = plan("mgmt = \"/x\"\nmgmt_mode = \"999\"\n[segments.a]\n")
            .unwrap_err()
            .0;
        assert!(e.contains("invalid mode"), "{e}");
    }

    #[test]
    fn full_example_parses() {
        let p = plan(
            r#"
control = "/srv/switchboard-test/control"
[segments.lan]
vde = "/srv/switchboard-test/lan"
taps = ["tap0", "tap1"]
mtu = 9000
hub = true
max_ports = 64
mac_table_size = 100
mac_aging_secs = 60
mode = "0660"
dirmode = "2770"
group = "0"
stream = "/srv/switchboard-test/lan.stream"
stream_tcp = "127.0.0.1:5555"
dgram = "/srv/switchboard-test/lan.dgram"
[segments.wan]
taps = ["tap2"]
"#,
        )
        .unwrap();
        assert_eq!(p.control, PathBuf::from("/srv/switchboard-test/control"));
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
        assert_eq!(
            lan.stream.as_deref(),
            Some(Path::new("/srv/switchboard-test/lan.stream"))
        );
        assert_eq!(lan.stream_tcp, Some("127.0.0.1:5555".parse().unwrap()));
        assert_eq!(
            lan.dgram.as_deref(),
            Some(Path::new("/srv/switchboard-test/lan.dgram"))
        );
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
        let e = plan("[segments.lan]\nmtu = 65521\n").unwrap_err().0;
        assert!(e.contains("lan") && e.contains("mtu 65521"), "{e}");
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
    fn loop_protection_keys_parse_and_are_checked() {
        let p = plan("[segments.a]\n[segments.b]\nmesh = true\nstorm_limit_pps = 500\nstorm_block_secs = 30\n[segments.c]\nstorm_limit_pps = 0\n").unwrap();
        let (a, b, c) = (
            &p.segments[0].config,
            &p.segments[1].config,
            &p.segments[2].config,
        );
        assert_eq!(
            (a.mesh, a.storm_limit_pps, a.storm_block),
            (false, 20_000, Duration::from_secs(10))
        );
        assert_eq!(
            (b.mesh, b.storm_limit_pps, b.storm_block),
            (true, 500, Duration::from_secs(30))
        );
        assert_eq!(c.storm_limit_pps, 0);
        let e = plan("[segments.a]\nstorm_block_secs = 0\n").unwrap_err().0;
        assert!(
            e.contains("segments.a") && e.contains("storm block 0 s"),
            "{e}"
        );
        let e = plan("[segments.a]\nstorm_limit_pps = 20000000\n")
            .unwrap_err()
            .0;
        assert!(e.contains("storm_limit_pps 20000000"), "{e}");
        let e = plan("[segments.a]\nstorm_limit_pps = -1\n").unwrap_err().0;
        assert!(e.contains("storm_limit_pps"), "{e}");
    }

    #[test]
    fn vxlan_ports_parse_with_defaults() {
        let p = plan(
            r#"
[segments.a]
vxlan = [
  { vni = 42, local = "0.0.0.0:4790", remotes = ["192.0.2.2", "192.0.2.3"] },
  { vni = 7, local = "10.0.0.1:8472", port = 8472, group = "239.1.1.1", ttl = 4 },
]
[segments.b]
vxlan = [{ vni = 16777215, local = "10.0.0.2", remotes = ["192.0.2.9"] }]
"#,
        )
        .unwrap();
        let a: Vec<_> = p.segments[0].vxlan.iter().map(|v| &v.config).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].vni.get(), 42);
        assert_eq!(a[0].local, "0.0.0.0:4790".parse().unwrap());
        assert_eq!(
            a[0].remotes,
            vec![Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)]
        );
        assert_eq!((a[0].port, a[0].group, a[0].multicast_ttl), (4789, None, 1));
        assert_eq!(a[1].local, "10.0.0.1:8472".parse().unwrap());
        assert_eq!(a[1].port, 8472);
        assert_eq!(a[1].group, Some(Ipv4Addr::new(239, 1, 1, 1)));
        assert_eq!(a[1].multicast_ttl, 4);
        let b = &p.segments[1].vxlan[0].config;
        assert!(p.segments[0].vxlan.iter().all(|v| v.vlan.is_none()));
        assert_eq!(b.vni.get(), 0xFF_FFFF);
        assert_eq!(b.local, "10.0.0.2:4789".parse().unwrap());
        assert_eq!(b.remotes, vec![Ipv4Addr::new(192, 0, 2, 9)]);
        assert!(p.segments[1].vde.is_none());
    }

    #[test]
    fn bad_vxlan_entries_are_refused_clearly() {
        let err = |body: &str| {
            plan(&format!("[segments.s]\nvxlan = [{body}]\n"))
                .unwrap_err()
                .0
        };
        let e = err(r#"{ vni = 16777216, remotes = ["192.0.2.2"] }"#);
        assert!(
            e.contains("segments.s.vxlan[0].vni") && e.contains("24 bits"),
            "{e}"
        );
        let e = err(r#"{ vni = 1, remotes = ["192.0.2.300"] }"#);
        assert!(
            e.contains("vxlan[0].remotes") && e.contains("not an IPv4"),
            "{e}"
        );
        let e = err(r#"{ vni = 1, remotes = ["239.1.1.1"] }"#);
        assert!(e.contains("not a unicast address"), "{e}");
        let e = err(r#"{ vni = 1, group = "192.0.2.1" }"#);
        assert!(
            e.contains("vxlan[0].group") && e.contains("multicast"),
            "{e}"
        );
        let e = err(r#"{ vni = 1 }"#);
        assert!(e.contains("give `remotes` or a `group`"), "{e}");
        let e = err(r#"{ vni = 1, local = "nowhere", group = "239.1.1.1" }"#);
        assert!(e.contains("vxlan[0].local"), "{e}");
        let e = err(r#"{ vni = 1, local = "0.0.0.0:0", group = "239.1.1.1" }"#);
        assert!(e.contains("other than 0"), "{e}");
        let e = err(r#"{ vni = 1, port = 0, group = "239.1.1.1" }"#);
        assert!(e.contains("vxlan[0].port"), "{e}");
        let e = err(r#"{ vni = 1, remotes = ["192.0.2.2"], ttl = 3 }"#);
        assert!(e.contains("none is given"), "{e}");
        let e = err(r#"{ vni = 1, remotes = ["192.0.2.2"], vlan = 3 }"#);
        assert!(
            e.contains("segments.s.vxlan[0].vlan: vlan 3 is not in the segment's vlans list"),
            "{e}"
        );
        let e = err(
            r#"{ vni = 1, remotes = ["192.0.2.2"] }, { vni = 2, local = "10.0.0.1:4789", remotes = ["192.0.2.2"] }"#,
        );
        assert!(
            e.contains("vxlan[1].local") && e.contains("overlaps"),
            "{e}"
        );
    }

    #[test]
    fn udp_tunnels_parse_with_defaults_and_read_their_keys() {
        let dir = ScratchDir::new("keys");
        let key_path = dir.0.join("lab.key");
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
        std::fs::write(&key_path, format!("{hex}\n")).unwrap();
        let p = plan(&format!(
            r#"
[segments.a]
udp = [
  {{ local = "10.0.0.1:5000", remote = "10.0.0.2:5001", key_file = {key:?} }},
  {{ remote = "192.0.2.3:6000" }},
  {{ local = "10.0.0.1", remote = "[2001:db8::1]:7000" }},
]
"#,
            key = key_path.to_str().unwrap()
        ));
        // The last entry mixes families: refused, naming it.
        let e = p.unwrap_err().0;
        assert!(
            e.contains("segments.a.udp[2]") && e.contains("family"),
            "{e}"
        );
        let p = plan(&format!(
            r#"
[segments.a]
udp = [
  {{ local = "10.0.0.1:5000", remote = "10.0.0.2:5001", key_file = {key:?} }},
  {{ remote = "192.0.2.3:6000" }},
]
[segments.b]
udp = [{{ local = "[::1]", remote = "[2001:db8::1]:7000" }}]
"#,
            key = key_path.to_str().unwrap()
        ))
        .unwrap();
        let a = &p.segments[0].udp;
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].local, "10.0.0.1:5000".parse().unwrap());
        assert_eq!(a[0].remote, "10.0.0.2:5001".parse().unwrap());
        assert_eq!(a[0].key_file.as_deref(), Some(key_path.as_path()));
        let want: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(
            a[0].key,
            Some(switchboard_plugs::sealed::Key::from_bytes(want))
        );
        assert_eq!(a[1].local, "0.0.0.0:6000".parse().unwrap());
        assert_eq!(a[1].key, None);
        let b = &p.segments[1].udp[0];
        assert_eq!(b.local, "[::1]:7000".parse().unwrap());
        assert!(p.segments[0].vxlan.is_empty());
        // The key never shows in debug output.
        assert!(!format!("{p:?}").contains("0102030405"), "{p:?}");
    }

    /// A directory for key files, removed on drop.
    struct ScratchDir(PathBuf);

    impl ScratchDir {
        fn new(tag: &str) -> ScratchDir {
            let p = std::env::temp_dir().join(format!("sb-config-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            ScratchDir(p)
        }
    }

    impl Drop for ScratchDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn bad_udp_tunnels_are_refused_naming_the_entry_and_the_key() {
        let dir = ScratchDir::new("badkeys");
        let short = dir.0.join("short.key");
        std::fs::write(&short, "abcdef\n").unwrap();
        let bad = dir.0.join("bad.key");
        std::fs::write(&bad, "z".repeat(64)).unwrap();
        let err = |body: &str| {
            plan(&format!("[segments.s]\nudp = [{body}]\n"))
                .unwrap_err()
                .0
        };
        let e = err(r#"{ local = "0.0.0.0:5000" }"#);
        assert!(
            e.contains("segments.s.udp[0].remote") && e.contains("missing"),
            "{e}"
        );
        let e = err(r#"{ remote = "host.example:5000" }"#);
        assert!(
            e.contains("udp[0].remote") && e.contains("not ADDRESS:PORT"),
            "{e}"
        );
        let e = err(r#"{ remote = "192.0.2.2:0" }"#);
        assert!(e.contains("point to point"), "{e}");
        let e = err(r#"{ remote = "239.1.1.1:5000" }"#);
        assert!(e.contains("point to point"), "{e}");
        let e = err(r#"{ local = "here", remote = "192.0.2.2:5000" }"#);
        assert!(e.contains("udp[0].local"), "{e}");
        let e = err(r#"{ local = "0.0.0.0:0", remote = "192.0.2.2:5000" }"#);
        assert!(e.contains("other than 0"), "{e}");
        let e = err(
            r#"{ remote = "192.0.2.2:5000" }, { local = "10.0.0.1:5000", remote = "192.0.2.3:5000" }"#,
        );
        assert!(e.contains("udp[1].local") && e.contains("overlaps"), "{e}");
        let e = err(r#"{ remote = "192.0.2.2:5000", key = "x" }"#);
        assert!(e.contains("key"), "{e}");
        let missing = dir.0.join("missing.key");
        let e = err(&format!(
            r#"{{ remote = "192.0.2.2:5000", key_file = {:?} }}"#,
            missing.to_str().unwrap()
        ));
        assert!(
            e.contains("udp[0].key_file")
                && e.contains("cannot read the key")
                && e.contains("missing.key"),
            "{e}"
        );
        let e = err(&format!(
            r#"{{ remote = "192.0.2.2:5000", key_file = {:?} }}"#,
            short.to_str().unwrap()
        ));
        assert!(
            e.contains("short.key") && e.contains("64 hex digits") && e.contains("found 6"),
            "{e}"
        );
        let e = err(&format!(
            r#"{{ remote = "192.0.2.2:5000", key_file = {:?} }}"#,
            bad.to_str().unwrap()
        ));
        assert!(
            e.contains("bad.key") && e.contains("not a hex digit"),
            "{e}"
        );
    }

    #[test]
    fn tunnels_take_one_vlan_of_the_segment() {
        let p = plan(
            r#"
[segments.a]
vlans = [10, 20]
vxlan = [
  { vni = 42, local = "0.0.0.0:4790", remotes = ["192.0.2.2"], vlan = 10 },
  { vni = 43, local = "0.0.0.0:4791", remotes = ["192.0.2.2"], vlan = 1 },
  { vni = 44, local = "0.0.0.0:4792", remotes = ["192.0.2.2"] },
]
udp = [
  { remote = "192.0.2.3:6000", vlan = 20 },
  { remote = "192.0.2.3:6001" },
]
"#,
        )
        .unwrap();
        let a = &p.segments[0];
        let vx: Vec<_> = a
            .vxlan
            .iter()
            .map(|v| (v.config.vni.get(), v.vlan))
            .collect();
        // The default VLAN needs nothing applied: every port starts in it.
        assert_eq!(vx, vec![(42, Some(10)), (43, None), (44, None)]);
        let udp: Vec<_> = a.udp.iter().map(|u| (u.remote.port(), u.vlan)).collect();
        assert_eq!(udp, vec![(6000, Some(20)), (6001, None)]);

        let err = |body: &str| plan(body).unwrap_err().0;
        let e = err(
            "[segments.a]\nvlans = [10]\nvxlan = [{ vni = 1, remotes = [\"192.0.2.2\"], vlan = 20 }]\n",
        );
        assert_eq!(
            e,
            "segments.a.vxlan[0].vlan: vlan 20 is not in the segment's vlans list"
        );
        let e = err(
            "[segments.a]\nudp = [{ remote = \"192.0.2.3:6000\" }, { remote = \"192.0.2.3:6001\", vlan = 10 }]\n",
        );
        assert_eq!(
            e,
            "segments.a.udp[1].vlan: vlan 10 is not in the segment's vlans list"
        );
        let e = err(
            "[segments.a]\nvlans = [10]\nudp = [{ remote = \"192.0.2.3:6000\", vlan = 4095 }]\n",
        );
        assert!(e.contains("segments.a.udp[0].vlan: vlan 4095"), "{e}");
        let e = err("[segments.a]\nudp = [{ remote = \"192.0.2.3:6000\", vlan = -1 }]\n");
        assert!(e.contains("vlan"), "{e}");
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

    #[test]
    fn vlans_and_tap_tables() {
        let p = plan(
            r#"
[segments.lan]
vlans = [10, 20, 30]
taps = ["tap0", { name = "tap1", vlan = 10, tagged = [30, 20] }, { name = "tap2" }]
"#,
        )
        .unwrap();
        let lan = &p.segments[0];
        assert_eq!(lan.taps, vec!["tap0", "tap1", "tap2"]);
        assert_eq!(lan.vlans, vec![10, 20, 30]);
        assert_eq!(
            lan.tap_vlans,
            vec![TapVlans {
                tap: "tap1".into(),
                untagged: 10,
                tagged: vec![20, 30],
            }]
        );
        let err = |text: &str| plan(text).unwrap_err().to_string();
        let e = err("[segments.lan]\nvlans = [10]\ntaps = [{ name = \"t\", vlan = 20 }]\n");
        assert!(
            e.contains("vlan 20 is not in the segment's vlans list"),
            "{e}"
        );
        let e = err(
            "[segments.lan]\nvlans = [10]\ntaps = [{ name = \"t\", vlan = 10, tagged = [10] }]\n",
        );
        assert!(e.contains("VLAN 10 is given twice"), "{e}");
        let e = err("[segments.lan]\nvlans = [4095]\n");
        assert!(e.contains("4095 is outside 1..=4094"), "{e}");
        let e = err("[segments.lan]\nvlans = [7, 7]\n");
        assert!(e.contains("7 appears twice"), "{e}");
    }
}
