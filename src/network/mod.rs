//! Networks: the way people already think about virtual networks.
//!
//! libvirt users know `isolated`, `route`, `nat` and `bridge` networks and
//! LXC users know `lxcbr0`; neither thinks in segments, interfaces and
//! masquerade rules. A `[networks.NAME]` block says what such a network is
//! in those terms, and [`expand`] spells it out as the `[segments]` and
//! `[routers]` tables the configuration already has, which are then checked
//! exactly like hand-written ones. The importers read a libvirt network XML
//! ([`from_libvirt_xml`]) or `/etc/default/lxc-net` ([`from_lxc_net`]) into
//! a block, and [`to_toml`] writes it out for a person to keep and edit.
//!
//! Each mode, and what it becomes (`RUNTIME` is the runtime directory):
//!
//! ```toml
//! # isolated: guests talk among themselves and to the gateway's DHCP and
//! # DNS, and nothing else. Becomes segment "lab" (served at RUNTIME/lab,
//! # RUNTIME/lab.stream, RUNTIME/lab.dgram) and router "lab" with interface
//! # "lan"; DHCP offers no default route and DNS answers local names only.
//! # Leave out `address` for a bare segment.
//! [networks.lab]
//! mode = "isolated"
//! address = "10.0.0.1/24"
//! domain = "lab"
//! [networks.lab.dhcp]
//! range = "10.0.0.10-10.0.0.99"
//!
//! # routed: the gateway routes to an uplink without translation; the
//! # outside must route 10.1.0.0/24 back to 192.0.2.10. Becomes segment
//! # "dmz", router "dmz" with "lan" on it and "uplink" on the existing
//! # segment "wan", and a default route via 192.0.2.1.
//! [networks.dmz]
//! mode = "routed"
//! address = "10.1.0.1/24"
//! [networks.dmz.dhcp]
//! range = "10.1.0.100-10.1.0.199"
//! [networks.dmz.uplink]
//! segment = "wan"
//! address = "192.0.2.10/24"
//! gateway = "192.0.2.1"
//!
//! # nat: libvirt's "default" network. As routed, plus masquerade of
//! # 192.168.122.0/24 out of "uplink" (except towards itself) and port
//! # forwards arriving at the uplink's address. The uplink here is a host
//! # tap, put on a new segment "default-uplink".
//! [networks.default]
//! mode = "nat"
//! address = "192.168.122.1/24"
//! domain = "default"
//! [networks.default.dhcp]
//! range = "192.168.122.2-192.168.122.254"
//! hosts = [{ mac = "52:54:00:00:00:10", name = "vm1", ip = "192.168.122.10" }]
//! [networks.default.dns_options]
//! upstream = ["192.0.2.53"]
//! [networks.default.uplink]
//! tap = "uplink0"
//! address = "192.0.2.10/24"
//! gateway = "192.0.2.1"
//! [[networks.default.forwards]]
//! proto = "tcp"
//! port = 2222
//! to = "192.168.122.10:22"
//!
//! # bridge: guests share a segment with a host tap that the host puts on
//! # its LAN bridge (`ip link set tap-lan master br0`); the LAN's own DHCP
//! # and router serve them. Becomes segment "lan" with the tap, served to
//! # guests at the default sockets unless vde/stream/dgram are given.
//! [networks.lan]
//! mode = "bridge"
//! taps = ["tap-lan"]
//! ```
//!
//! Every mode also takes `mtu`; `segment = "NAME"` joins an existing
//! segment instead of creating one (its sockets and taps are then set in
//! its own table), and `vde`, `stream`, `dgram` and `taps` place the
//! created segment's sockets (given any, the defaults are not added).

pub mod definition;
pub mod expand;
pub mod libvirt;
pub mod lxc;

pub use definition::{
    NetworkDhcp, NetworkDns, NetworkForward, NetworkMode, NetworkSection, Uplink, from_toml,
    to_toml,
};
pub use expand::{Expansion, expand};
pub use libvirt::from_libvirt_xml;
pub use lxc::from_lxc_net;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, SegmentSection};
    use std::collections::BTreeMap;
    use std::path::Path;

    /// The TOML block of this module's documentation, so the example
    /// cannot drift from what is accepted.
    fn doc_example() -> String {
        let src = include_str!("mod.rs");
        src.lines()
            .filter_map(|l| l.strip_prefix("//!"))
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .skip_while(|l| *l != "```toml")
            .skip(1)
            .take_while(|l| *l != "```")
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_documented_example_expands_and_passes_the_checks() {
        let nets = from_toml(&doc_example()).unwrap();
        assert_eq!(
            nets.keys().collect::<Vec<_>>(),
            vec!["default", "dmz", "lab", "lan"]
        );
        let mut segments: BTreeMap<String, SegmentSection> =
            BTreeMap::from([("wan".to_string(), SegmentSection::default())]);
        let mut routers = BTreeMap::new();
        for (name, net) in &nets {
            let x = expand(name, net, Path::new("/run/sb")).unwrap();
            segments.extend(x.segments);
            routers.extend(x.routers);
        }
        assert_eq!(
            segments.keys().collect::<Vec<_>>(),
            vec!["default", "default-uplink", "dmz", "lab", "lan", "wan"]
        );
        assert_eq!(
            routers.keys().collect::<Vec<_>>(),
            vec!["default", "dmz", "lab"]
        );
        let plan = ConfigFile {
            segments,
            routers,
            ..Default::default()
        }
        .into_plan()
        .unwrap();
        assert_eq!(plan.segments.len(), 6);
        assert_eq!(plan.routers.len(), 3);
    }
}
