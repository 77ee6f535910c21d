//! The `[networks.NAME]` table as a person writes it.
//!
//! These types carry only what someone who thinks in libvirt or LXC
//! networks would say: a mode, the gateway's address, DHCP and DNS, and
//! how the network reaches the outside. Nothing here is checked beyond what
//! the parser can see; [`crate::network::expand`] checks the meaning and
//! turns a network into the segments and routers the rest of the
//! configuration already knows, so a network block can never do anything a
//! hand-written configuration could not.
//!
//! Addresses are typed (an [`Ipv4Net`] or [`Ipv4Addr`]), so a malformed one
//! is refused by the TOML parser with its line and key; ranges and forward
//! targets stay strings, as in the sections they expand into, and are
//! checked by the expansion where the error can name the network.

use crate::config::{DhcpHostSection, DnsHostSection};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// How a network relates to the outside, in libvirt's terms, because
/// that is the vocabulary people arriving from libvirt and LXC already use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Guests reach each other (and the gateway's DHCP and DNS) only.
    #[default]
    Isolated,
    /// The gateway routes to an uplink without translating addresses; the
    /// outside must route the network's subnet back.
    Routed,
    /// As routed, with the network masqueraded behind the uplink address,
    /// what libvirt's `default` network and `lxcbr0` do.
    Nat,
    /// Guests share a segment with host taps joining the host's LAN; no
    /// gateway of ours.
    Bridge,
}

impl NetworkMode {
    /// The word used in the TOML, for messages that quote the mode back.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Isolated => "isolated",
            NetworkMode::Routed => "routed",
            NetworkMode::Nat => "nat",
            NetworkMode::Bridge => "bridge",
        }
    }
}

/// One `[networks.NAME]` table: a whole virtual network in a few keys, so
/// the common setups need neither a segment nor a router written out.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Required: what the network is for decides what it expands into.
    pub mode: NetworkMode,
    /// The gateway's address with the network's prefix; isolated networks
    /// may leave it out to get a bare segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Net>,
    /// The DNS domain guests' names live in, also handed out by DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Payload MTU of the created segment and of the gateway interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<usize>,
    /// Join an existing `[segments.NAME]` instead of creating one, for
    /// segments with settings a network block does not expose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// The created segment's VDE2 directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vde: Option<PathBuf>,
    /// The created segment's QEMU stream socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<PathBuf>,
    /// The created segment's QEMU dgram socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dgram: Option<PathBuf>,
    /// Taps plugged into the created segment; in bridge mode, the host
    /// side that joins the host's LAN.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taps: Vec<String>,
    /// Serve DNS on the gateway address; defaults to on whenever there is
    /// an address, as libvirt does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<bool>,
    /// A DHCP server on the gateway interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp: Option<NetworkDhcp>,
    /// Settings of the DNS forwarder beyond on and off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_options: Option<NetworkDns>,
    /// How a routed or nat network reaches the outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Uplink>,
    /// Port forwards into a nat network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<NetworkForward>,
}

/// `[networks.NAME.dhcp]`: the DHCP server, said the way libvirt's
/// `<dhcp>` and LXC's `LXC_DHCP_*` say it; the gateway, DNS server and
/// domain options follow from the network, so they are not repeated here.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkDhcp {
    /// One pool, `"FIRST-LAST"`, for the usual single-range case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Several pools, each `"FIRST-LAST"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<String>,
    /// Lease time in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
    /// Leases handed out at most (LXC's `LXC_DHCP_MAX`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_leases: Option<usize>,
    /// Where leases survive restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_file: Option<PathBuf>,
    /// Reservations by MAC, like libvirt's `<host mac name ip>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<DhcpHostSection>,
}

/// `[networks.NAME.dns_options]`: what the DNS forwarder needs besides
/// being on; the domain is the network's.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkDns {
    /// Upstream resolvers (`ADDR` or `ADDR:PORT`), like libvirt's
    /// `<forwarder addr>`; default: the host's `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<String>,
    /// Static names, like libvirt's `<dns><host>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<DnsHostSection>,
    /// Never forward; isolated networks default to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_only: Option<bool>,
    /// Cached answers at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_size: Option<usize>,
}

/// `[networks.NAME.uplink]`: the router's outside leg, which libvirt
/// leaves to the host's routing table but a userspace router must be told.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// An existing segment the uplink joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Or a host tap, put on a new segment named `NAME-uplink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap: Option<String>,
    /// The router's address and prefix on the uplink (required: masquerade
    /// and the default route need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Net>,
    /// The next hop of the default route; without it the router knows only
    /// the uplink's own subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// Or the host uplink: out through the host's own sockets, no
    /// privileges, no segment or address of its own (what slirp4netns and
    /// pasta do).
    #[serde(default, skip_serializing_if = "is_false")]
    pub host: bool,
    /// With `host`: the gateway's address also reaches the host's
    /// 127.0.0.1 (TCP and UDP), QEMU user networking's 10.0.2.2.
    #[serde(default, skip_serializing_if = "is_false")]
    pub loopback: bool,
    /// With `host`: host ports forwarded to guests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<crate::config::HostForwardSection>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One `[[networks.NAME.forwards]]` entry: a router port forward whose
/// outside interface is always the uplink, so it is not written.
///
/// No `Default`: a forward without a protocol, port and target means
/// nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkForward {
    /// `tcp` or `udp`.
    pub proto: String,
    /// One of the uplink's addresses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// A port, or `"FIRST-LAST"`.
    pub port: toml::Value,
    /// The inside `ADDRESS:PORT`.
    pub to: String,
}

/// The document [`to_toml`] writes: `networks` alone at the top, so the
/// block can be pasted into a configuration file as it is.
#[derive(Serialize, Deserialize)]
struct NetworksDoc {
    networks: BTreeMap<String, NetworkSection>,
}

/// Writes a network as a `[networks.NAME]` block, so an imported libvirt
/// or LXC network becomes configuration a person can read and edit.
/// Reading the block back gives the same value.
pub fn to_toml(name: &str, net: &NetworkSection) -> String {
    let doc = NetworksDoc {
        networks: BTreeMap::from([(name.to_string(), net.clone())]),
    };
    // Every field is a string, number, bool, table or array of them, so
    // serialisation cannot fail; an empty string would be the only
    // fallback, and it would fail loudly when parsed back.
    toml::to_string(&doc).unwrap_or_default()
}

/// Reads the blocks [`to_toml`] writes; for tests and for tools that
/// import a network and then check it.
pub fn from_toml(text: &str) -> Result<BTreeMap<String, NetworkSection>, String> {
    toml::from_str::<NetworksDoc>(text)
        .map(|d| d.networks)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rich() -> NetworkSection {
        NetworkSection {
            mode: NetworkMode::Nat,
            address: Some("192.168.122.1/24".parse().unwrap()),
            domain: Some("default".into()),
            mtu: Some(9000),
            segment: None,
            vde: Some("/run/sb/default".into()),
            stream: Some("/run/sb/default.stream".into()),
            dgram: None,
            taps: vec!["tap0".into(), "tap1".into()],
            dns: Some(true),
            dhcp: Some(NetworkDhcp {
                range: Some("192.168.122.2-192.168.122.254".into()),
                ranges: vec!["192.168.122.2-192.168.122.9".into()],
                lease_secs: Some(600),
                max_leases: Some(10),
                lease_file: Some("/var/lib/sb/leases".into()),
                hosts: vec![DhcpHostSection {
                    mac: "52:54:00:00:00:10".into(),
                    name: Some("vm1".into()),
                    ip: Some(Ipv4Addr::new(192, 168, 122, 10)),
                }],
            }),
            dns_options: Some(NetworkDns {
                upstream: vec!["192.0.2.53".into(), "192.0.2.54:5353".into()],
                hosts: vec![DnsHostSection {
                    name: "files".into(),
                    ip: Ipv4Addr::new(192, 168, 122, 5),
                }],
                local_only: Some(false),
                cache_size: Some(100),
            }),
            uplink: Some(Uplink {
                segment: None,
                tap: Some("uplink0".into()),
                address: Some("192.0.2.10/24".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
                ..Default::default()
            }),
            forwards: vec![
                NetworkForward {
                    proto: "tcp".into(),
                    address: None,
                    port: toml::Value::Integer(2222),
                    to: "192.168.122.10:22".into(),
                },
                NetworkForward {
                    proto: "udp".into(),
                    address: Some(Ipv4Addr::new(192, 0, 2, 10)),
                    port: toml::Value::String("5000-5009".into()),
                    to: "192.168.122.11:5000".into(),
                },
            ],
        }
    }

    #[test]
    fn the_documented_example_parses_field_by_field() {
        let text = r#"
[networks.default]
mode = "nat"
address = "192.168.122.1/24"
domain = "default"
mtu = 1500
taps = ["tap0"]
dns = true
[networks.default.dhcp]
range = "192.168.122.2-192.168.122.254"
lease_secs = 3600
max_leases = 253
hosts = [{ mac = "52:54:00:00:00:10", name = "vm1", ip = "192.168.122.10" }]
[networks.default.dns_options]
upstream = ["192.0.2.53"]
[networks.default.uplink]
tap = "uplink0"
address = "192.0.2.10/24"
gateway = "192.0.2.1"
[[networks.default.forwards]]
proto = "tcp"
port = 2222
to = "192.168.122.10:22"
"#;
        let nets = from_toml(text).unwrap();
        let n = &nets["default"];
        assert_eq!(n.mode, NetworkMode::Nat);
        assert_eq!(n.address, Some("192.168.122.1/24".parse().unwrap()));
        assert_eq!(n.domain.as_deref(), Some("default"));
        assert_eq!(n.mtu, Some(1500));
        assert_eq!(n.taps, vec!["tap0".to_string()]);
        assert_eq!(n.dns, Some(true));
        let d = n.dhcp.as_ref().unwrap();
        assert_eq!(d.range.as_deref(), Some("192.168.122.2-192.168.122.254"));
        assert!(d.ranges.is_empty());
        assert_eq!((d.lease_secs, d.max_leases), (Some(3600), Some(253)));
        assert_eq!(
            d.hosts,
            vec![DhcpHostSection {
                mac: "52:54:00:00:00:10".into(),
                name: Some("vm1".into()),
                ip: Some(Ipv4Addr::new(192, 168, 122, 10)),
            }]
        );
        let o = n.dns_options.as_ref().unwrap();
        assert_eq!(o.upstream, vec!["192.0.2.53".to_string()]);
        assert_eq!(o.local_only, None);
        let u = n.uplink.as_ref().unwrap();
        assert_eq!(u.tap.as_deref(), Some("uplink0"));
        assert_eq!(u.segment, None);
        assert_eq!(u.gateway, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(n.forwards.len(), 1);
        assert_eq!(n.forwards[0].port, toml::Value::Integer(2222));
        assert_eq!(n.forwards[0].to, "192.168.122.10:22");
    }

    #[test]
    fn mode_is_required_and_unknown_keys_are_refused() {
        let e = from_toml("[networks.a]\naddress = \"10.0.0.1/24\"\n").unwrap_err();
        assert!(e.contains("mode"), "{e}");
        let e = from_toml("[networks.a]\nmode = \"nat\"\nadress = \"10.0.0.1/24\"\n").unwrap_err();
        assert!(e.contains("adress"), "{e}");
        let e = from_toml("[networks.a]\nmode = \"bridged\"\n").unwrap_err();
        assert!(e.contains("bridged"), "{e}");
        let e = from_toml(
            "[networks.a]\nmode = \"nat\"\n[networks.a.uplink]\ntap = \"t\"\niface = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("iface"), "{e}");
        let e =
            from_toml("[networks.a]\nmode = \"nat\"\naddress = \"10.0.0.300/24\"\n").unwrap_err();
        assert!(e.contains("address"), "{e}");
    }

    #[test]
    fn toml_round_trip_keeps_every_field() {
        let net = rich();
        let text = to_toml("default", &net);
        assert!(text.contains("[networks.default]"), "{text}");
        assert!(text.contains("mode = \"nat\""), "{text}");
        let back = from_toml(&text).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back["default"], net, "{text}");
    }

    #[test]
    fn toml_round_trip_of_a_minimal_network_writes_no_empty_keys() {
        let net = NetworkSection {
            mode: NetworkMode::Bridge,
            taps: vec!["eth-tap".into()],
            ..Default::default()
        };
        let text = to_toml("lan", &net);
        assert_eq!(
            text.trim(),
            "[networks.lan]\nmode = \"bridge\"\ntaps = [\"eth-tap\"]"
        );
        assert_eq!(from_toml(&text).unwrap()["lan"], net);
    }

    #[test]
    fn names_needing_quotes_survive_the_round_trip() {
        let net = NetworkSection::default();
        let text = to_toml("my net.1", &net);
        let back = from_toml(&text).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), vec!["my net.1"]);
        assert_eq!(back["my net.1"].mode, NetworkMode::Isolated);
    }
}
