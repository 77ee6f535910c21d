//! Importing a libvirt network definition.
//!
//! Someone moving from libvirt has networks defined as XML (`virsh
//! net-dumpxml NAME`, or `/etc/libvirt/qemu/networks/*.xml`), and the
//! quickest way to the same network here is to read that XML into a
//! network block. The mapping is the one libvirt documents for
//! `<network>`: no `<forward>` is an isolated network, `<forward/>` or
//! `mode='nat'` is nat, `route` and `open` are routed, and `bridge` joins
//! the host's LAN. The gateway, DHCP and DNS come from `<ip>`, `<dhcp>`,
//! `<domain>` and `<dns>`.
//!
//! What cannot be carried over is never dropped silently: every element
//! or attribute the importer does not map becomes a warning, and libvirt
//! features switchboard has no equivalent for (macvtap and hostdev
//! forwarding) are refused. libvirt finds the way out through the host's
//! routing table; a userspace router must be told, so nat and routed
//! networks come back without an uplink and a warning saying to add one.

use super::definition::{NetworkDhcp, NetworkDns, NetworkMode, NetworkSection};
use crate::config::{DhcpHostSection, DnsHostSection};
use ipnet::Ipv4Net;
use roxmltree::{Document, Node};
use std::net::Ipv4Addr;

/// Network XML larger than this is refused: libvirt's own definitions are
/// a few kilobytes, and the parser keeps the whole tree in memory.
pub const MAX_XML_BYTES: usize = 1 << 20;

/// Reads a libvirt `<network>` definition into a network block; returns
/// the network's name, the block, and a warning for everything that did
/// not carry over. Refuses documents that are not a `<network>` or use
/// forwarding modes switchboard has no counterpart for.
pub fn from_libvirt_xml(xml: &str) -> Result<(String, NetworkSection, Vec<String>), String> {
    if xml.len() > MAX_XML_BYTES {
        return Err(format!(
            "the network XML is {} bytes; libvirt network definitions are far smaller (at most {MAX_XML_BYTES})",
            xml.len()
        ));
    }
    let doc = Document::parse(xml).map_err(|e| format!("not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "network" {
        return Err(format!(
            "the document is a <{}>, not a libvirt <network> definition",
            root.tag_name().name()
        ));
    }
    let mut warnings = Vec::new();
    let name = child(root, "name")
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or("the <network> has no <name>")?
        .to_string();
    let mut net = NetworkSection::default();

    let forward = child(root, "forward");
    net.mode = match forward {
        None => NetworkMode::Isolated,
        Some(f) => forward_mode(f, &mut warnings)?,
    };

    for el in root.children().filter(Node::is_element) {
        match el.tag_name().name() {
            "name" | "uuid" | "forward" | "ip" | "dns" | "domain" | "bridge" | "mtu" => {}
            // The host bridge's MAC: switchboard derives the gateway's own.
            "mac" => {}
            "route" => warnings.push(format!(
                "<route address='{}'> is not imported: add a [[routers.{name}.routes]] entry to the expanded router by hand",
                el.attribute("address").unwrap_or("?")
            )),
            other => warnings.push(format!("<{other}> is not imported")),
        }
    }

    if let Some(b) = child(root, "bridge") {
        let bridge = b.attribute("name");
        match (net.mode, bridge) {
            (NetworkMode::Bridge, Some(bridge)) => {
                net.taps = vec![bridge.to_string()];
                warnings.push(format!(
                    "<bridge name='{bridge}'>: switchboard plugs a tap, not a host bridge: create tap {bridge:?} and add it to the host's bridge (or rename the tap in `taps`)"
                ));
            }
            (_, Some(bridge)) => warnings.push(format!(
                "<bridge name='{bridge}'> is not used: switchboard serves the network on its own segment (VDE, stream and dgram sockets), not on a host bridge"
            )),
            (_, None) => {}
        }
    }
    if net.mode == NetworkMode::Bridge && net.taps.is_empty() {
        return Err(
            "<forward mode='bridge'> without <bridge name> forwards through macvtap, which switchboard has no counterpart for; give a <bridge name>, or define a bridge network with a tap by hand"
                .into(),
        );
    }

    if let Some(m) = child(root, "mtu") {
        let size = m.attribute("size").unwrap_or("");
        net.mtu = Some(
            size.parse()
                .map_err(|_| format!("<mtu size='{size}'> is not a number"))?,
        );
    }
    if let Some(d) = child(root, "domain") {
        if let Some(domain) = d.attribute("name") {
            net.domain = Some(domain.to_string());
        }
        if d.attribute("register").is_some() {
            warnings.push(
                "<domain register> is not imported: switchboard's DNS is not registered with the host's resolver".into(),
            );
        }
    }

    let mut ipv4_seen = false;
    for ip in children(root, "ip") {
        let family = ip.attribute("family").unwrap_or("ipv4");
        let addr = ip.attribute("address").unwrap_or("");
        if family == "ipv6" || addr.contains(':') {
            warnings.push(format!(
                "<ip family='ipv6' address='{addr}'> is skipped: switchboard routes IPv4 only"
            ));
            continue;
        }
        if ipv4_seen {
            warnings.push(format!(
                "a second IPv4 <ip address='{addr}'> is skipped: a network has one gateway address"
            ));
            continue;
        }
        ipv4_seen = true;
        if net.mode == NetworkMode::Bridge {
            warnings.push(format!(
                "<ip address='{addr}'> is skipped: in bridge mode the host's LAN gives the addresses"
            ));
            continue;
        }
        let address = ip_address(ip)?;
        net.address = Some(address);
        if let Some(d) = child(ip, "dhcp") {
            net.dhcp = Some(dhcp(d, &mut warnings)?);
        }
        for el in ip.children().filter(Node::is_element) {
            match el.tag_name().name() {
                "dhcp" => {}
                "tftp" => {
                    warnings.push("<tftp> is not imported: switchboard serves no TFTP".into())
                }
                other => warnings.push(format!("<ip><{other}> is not imported")),
            }
        }
    }

    if let Some(d) = child(root, "dns") {
        dns(d, &mut net, &mut warnings)?;
    }
    let dns_on = net.dns != Some(false) && net.address.is_some();
    if net.mode == NetworkMode::Isolated && dns_on {
        let forwards = net
            .dns_options
            .as_ref()
            .is_some_and(|o| !o.upstream.is_empty());
        if !forwards {
            warnings.push(
                "isolated: switchboard's DNS answers only local names on an isolated network, where libvirt's dnsmasq also forwards to the host's resolvers; set dns_options.local_only = false to forward"
                    .into(),
            );
        }
    }

    if matches!(net.mode, NetworkMode::Nat | NetworkMode::Routed) {
        let dev = forward
            .and_then(|f| f.attribute("dev"))
            .map(|d| format!(" (libvirt used the host's {d})"))
            .unwrap_or_default();
        warnings.push(format!(
            "{} needs an uplink{dev}: add [networks.{name}.uplink] with `segment` or `tap`, `address` and `gateway`",
            net.mode.as_str()
        ));
    }
    Ok((name, net, warnings))
}

/// The element's first child with this tag.
fn child<'a, 'i>(n: Node<'a, 'i>, tag: &str) -> Option<Node<'a, 'i>> {
    n.children()
        .find(|c| c.is_element() && c.tag_name().name() == tag)
}

/// The element's children with this tag.
fn children<'a, 'i: 'a>(n: Node<'a, 'i>, tag: &'a str) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == tag)
}

/// Maps `<forward mode>`, noting what of `<forward>` does not carry over.
fn forward_mode(f: Node, warnings: &mut Vec<String>) -> Result<NetworkMode, String> {
    let mode = match f.attribute("mode").unwrap_or("nat") {
        "nat" => NetworkMode::Nat,
        "route" => NetworkMode::Routed,
        "open" => {
            warnings.push(
                "<forward mode='open'> becomes routed: switchboard's routed networks add no firewall rules either".into(),
            );
            NetworkMode::Routed
        }
        "bridge" => NetworkMode::Bridge,
        other => {
            return Err(format!(
                "<forward mode='{other}'> hands guests host devices directly (macvtap or PCI passthrough), which switchboard has no counterpart for"
            ));
        }
    };
    for el in f.children().filter(Node::is_element) {
        match el.tag_name().name() {
            "nat" => {
                for n in el.children().filter(Node::is_element) {
                    match n.tag_name().name() {
                        "address" => warnings.push(
                            "<nat><address> is not imported: switchboard masquerades to the uplink's address".into(),
                        ),
                        "port" => warnings.push(format!(
                            "<nat><port start='{}' end='{}'> is not imported: set [routers.NAME.conntrack] port_range by hand",
                            n.attribute("start").unwrap_or("?"),
                            n.attribute("end").unwrap_or("?")
                        )),
                        other => warnings.push(format!("<nat><{other}> is not imported")),
                    }
                }
                if el.attribute("ipv6") == Some("yes") {
                    warnings.push(
                        "<nat ipv6='yes'> is not imported: switchboard routes IPv4 only".into(),
                    );
                }
            }
            other => warnings.push(format!("<forward><{other}> is not imported")),
        }
    }
    Ok(mode)
}

/// `<ip address netmask|prefix>` as the gateway's address and prefix.
fn ip_address(ip: Node) -> Result<Ipv4Net, String> {
    let a = ip.attribute("address").unwrap_or("");
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("<ip address='{a}'> is not an IPv4 address"))?;
    match (ip.attribute("netmask"), ip.attribute("prefix")) {
        (Some(m), _) => {
            let mask: Ipv4Addr = m
                .parse()
                .map_err(|_| format!("<ip netmask='{m}'> is not an IPv4 netmask"))?;
            Ipv4Net::with_netmask(addr, mask)
                .map_err(|_| format!("<ip netmask='{m}'> is not a contiguous netmask"))
        }
        (None, Some(p)) => p
            .parse::<u8>()
            .ok()
            .and_then(|p| Ipv4Net::new(addr, p).ok())
            .ok_or_else(|| format!("<ip prefix='{p}'> is not a prefix length (0 to 32)")),
        (None, None) => Err(format!(
            "<ip address='{a}'> has neither netmask nor prefix; give one so the subnet is known"
        )),
    }
}

/// `<dhcp>`: its ranges, reservations and lease time.
fn dhcp(d: Node, warnings: &mut Vec<String>) -> Result<NetworkDhcp, String> {
    let mut out = NetworkDhcp::default();
    let mut ranges = Vec::new();
    for el in d.children().filter(Node::is_element) {
        match el.tag_name().name() {
            "range" => {
                let (Some(start), Some(end)) = (el.attribute("start"), el.attribute("end")) else {
                    return Err("<dhcp><range> needs start and end".into());
                };
                ranges.push(format!("{start}-{end}"));
                if let Some(l) = child(el, "lease") {
                    match lease_secs(l)? {
                        None => warnings.push(format!(
                            "<range start='{start}'><lease expiry='0'> (never expiring) is not imported: leases use the default time"
                        )),
                        Some(s) => match out.lease_secs {
                            Some(prev) if prev != s => warnings.push(format!(
                                "<range start='{start}'><lease>: switchboard has one lease time per network; keeping {prev} s, not {s} s"
                            )),
                            _ => out.lease_secs = Some(s),
                        },
                    }
                }
            }
            "host" => {
                let Some(mac) = el.attribute("mac") else {
                    warnings.push(format!(
                        "<dhcp><host id='{}'> without mac is skipped: it is a DHCPv6 reservation",
                        el.attribute("id").unwrap_or("?")
                    ));
                    continue;
                };
                let ip = match el.attribute("ip") {
                    None => None,
                    Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                        format!("<dhcp><host mac='{mac}' ip='{ip}'>: not an IPv4 address")
                    })?),
                };
                if child(el, "lease").is_some() {
                    warnings.push(format!(
                        "<host mac='{mac}'><lease> is not imported: reservations use the network's lease time"
                    ));
                }
                out.hosts.push(DhcpHostSection {
                    mac: mac.to_string(),
                    name: el.attribute("name").map(str::to_string),
                    ip,
                });
            }
            "bootp" => warnings.push(format!(
                "<bootp file='{}'> is not imported: switchboard's DHCP offers no network boot",
                el.attribute("file").unwrap_or("?")
            )),
            other => warnings.push(format!("<dhcp><{other}> is not imported")),
        }
    }
    if ranges.len() == 1 {
        out.range = ranges.pop();
    } else {
        out.ranges = ranges;
    }
    Ok(out)
}

/// `<lease expiry unit>` in seconds; `None` for libvirt's `expiry='0'`,
/// a lease that never ends. libvirt's unit defaults to minutes.
fn lease_secs(l: Node) -> Result<Option<u64>, String> {
    let e = l.attribute("expiry").unwrap_or("");
    let expiry: u64 = e
        .parse()
        .map_err(|_| format!("<lease expiry='{e}'> is not a number"))?;
    let unit = match l.attribute("unit").unwrap_or("minutes") {
        "seconds" => 1,
        "minutes" => 60,
        "hours" => 3600,
        other => {
            return Err(format!(
                "<lease unit='{other}'>: libvirt's units are seconds, minutes and hours"
            ));
        }
    };
    if expiry == 0 {
        return Ok(None);
    }
    expiry
        .checked_mul(unit)
        .map(Some)
        .ok_or_else(|| format!("<lease expiry='{e}'> is too long"))
}

/// `<dns>`: on or off, forwarders and static names.
fn dns(d: Node, net: &mut NetworkSection, warnings: &mut Vec<String>) -> Result<(), String> {
    if d.attribute("enable") == Some("no") {
        net.dns = Some(false);
        return Ok(());
    }
    if d.attribute("forwardPlainNames") == Some("no") {
        warnings.push(
            "<dns forwardPlainNames='no'> is not imported: names without a dot are forwarded"
                .into(),
        );
    }
    let mut opts = NetworkDns::default();
    for el in d.children().filter(Node::is_element) {
        match el.tag_name().name() {
            "forwarder" => match (el.attribute("addr"), el.attribute("domain")) {
                (Some(addr), None) => opts.upstream.push(addr.to_string()),
                (addr, Some(domain)) => warnings.push(format!(
                    "<forwarder domain='{domain}' addr='{}'> is not imported: switchboard forwards every name to the same upstreams",
                    addr.unwrap_or("")
                )),
                (None, None) => {}
            },
            "host" => {
                let ip_s = el.attribute("ip").unwrap_or("");
                let Ok(ip) = ip_s.parse::<Ipv4Addr>() else {
                    warnings.push(format!(
                        "<dns><host ip='{ip_s}'> is skipped: not an IPv4 address"
                    ));
                    continue;
                };
                for h in children(el, "hostname") {
                    if let Some(name) = h.text().map(str::trim).filter(|t| !t.is_empty()) {
                        opts.hosts.push(DnsHostSection {
                            name: name.to_string(),
                            ip,
                        });
                    }
                }
            }
            other => warnings.push(format!(
                "<dns><{other}> is not imported: switchboard's DNS serves A records only"
            )),
        }
    }
    if net.mode == NetworkMode::Isolated && !opts.upstream.is_empty() {
        // libvirt forwards from isolated networks too; keep doing so.
        opts.local_only = Some(false);
    }
    if opts != NetworkDns::default() {
        net.dns_options = Some(opts);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::definition::{from_toml, to_toml};
    use crate::network::expand::expand;
    use std::path::Path;

    /// libvirt's own `default.xml`, as shipped in
    /// `/usr/share/libvirt/networks/default.xml`.
    const DEFAULT_XML: &str = "<network>\n  <name>default</name>\n  <bridge name='virbr0'/>\n  <forward/>\n  <ip address='192.168.122.1' netmask='255.255.255.0'>\n    <dhcp>\n      <range start='192.168.122.2' end='192.168.122.254'/>\n    </dhcp>\n  </ip>\n</network>\n";

    #[test]
    fn libvirt_default_network_is_nat_with_its_pool() {
        let (name, net, warnings) = from_libvirt_xml(DEFAULT_XML).unwrap();
        assert_eq!(name, "default");
        assert_eq!(
            net,
            NetworkSection {
                mode: NetworkMode::Nat,
                address: Some("192.168.122.1/24".parse().unwrap()),
                dhcp: Some(NetworkDhcp {
                    range: Some("192.168.122.2-192.168.122.254".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        );
        assert_eq!(
            warnings,
            vec![
                "<bridge name='virbr0'> is not used: switchboard serves the network on its own segment (VDE, stream and dgram sockets), not on a host bridge".to_string(),
                "nat needs an uplink: add [networks.default.uplink] with `segment` or `tap`, `address` and `gateway`".to_string(),
            ]
        );
        // With the uplink added, it expands and passes the checks.
        let mut net = net;
        net.uplink = Some(crate::network::Uplink {
            tap: Some("up0".into()),
            address: Some("192.0.2.2/24".parse().unwrap()),
            gateway: Some("192.0.2.1".parse().unwrap()),
            ..Default::default()
        });
        let x = expand(&name, &net, Path::new("/run/sb")).unwrap();
        let r = &x.routers[0].1;
        assert_eq!(
            r.masquerade[0].sources,
            vec!["192.168.122.0/24".to_string()]
        );
        assert_eq!(
            r.interfaces["lan"].dhcp.as_ref().unwrap().ranges,
            vec!["192.168.122.2-192.168.122.254".to_string()]
        );
        crate::config::ConfigFile {
            segments: x.segments.into_iter().collect(),
            routers: x.routers.into_iter().collect(),
            ..Default::default()
        }
        .into_plan()
        .unwrap();
    }

    const RICH_XML: &str = r#"<?xml version="1.0"?>
<network connections='2'>
  <name>lab</name>
  <uuid>1d3a9b5e-0000-4000-8000-000000000001</uuid>
  <forward mode='route' dev='eth1'/>
  <bridge name='virbr7' stp='on' delay='0'/>
  <mac address='52:54:00:0a:0b:0c'/>
  <mtu size='9000'/>
  <domain name='lab.example' localOnly='yes'/>
  <dns>
    <forwarder addr='192.0.2.53'/>
    <forwarder domain='corp.example' addr='10.9.9.9'/>
    <host ip='10.20.0.5'>
      <hostname>files</hostname>
      <hostname>nas</hostname>
    </host>
    <host ip='fd00::5'><hostname>v6only</hostname></host>
    <txt name='example' value='example value'/>
  </dns>
  <ip address='10.20.0.1' prefix='24'>
    <dhcp>
      <range start='10.20.0.100' end='10.20.0.149'>
        <lease expiry='2' unit='hours'/>
      </range>
      <range start='10.20.0.200' end='10.20.0.209'/>
      <host mac='52:54:00:00:00:10' name='vm1' ip='10.20.0.10'/>
      <host mac='52:54:00:00:00:11' name='vm2'/>
      <host id='0:1:0:1:18:aa' name='v6host'/>
    </dhcp>
    <tftp root='/srv/tftp'/>
  </ip>
  <ip family='ipv6' address='fd00::1' prefix='64'/>
  <route address='10.30.0.0' prefix='24' gateway='10.20.0.254'/>
</network>"#;

    #[test]
    fn a_richer_routed_network_maps_every_supported_element() {
        let (name, net, warnings) = from_libvirt_xml(RICH_XML).unwrap();
        assert_eq!(name, "lab");
        assert_eq!(net.mode, NetworkMode::Routed);
        assert_eq!(net.address, Some("10.20.0.1/24".parse().unwrap()));
        assert_eq!(net.mtu, Some(9000));
        assert_eq!(net.domain.as_deref(), Some("lab.example"));
        assert_eq!(net.dns, None);
        assert!(net.taps.is_empty() && net.uplink.is_none());
        assert_eq!(
            net.dhcp,
            Some(NetworkDhcp {
                range: None,
                ranges: vec![
                    "10.20.0.100-10.20.0.149".into(),
                    "10.20.0.200-10.20.0.209".into()
                ],
                lease_secs: Some(7200),
                max_leases: None,
                lease_file: None,
                hosts: vec![
                    DhcpHostSection {
                        mac: "52:54:00:00:00:10".into(),
                        name: Some("vm1".into()),
                        ip: Some(Ipv4Addr::new(10, 20, 0, 10)),
                    },
                    DhcpHostSection {
                        mac: "52:54:00:00:00:11".into(),
                        name: Some("vm2".into()),
                        ip: None,
                    },
                ],
            })
        );
        assert_eq!(
            net.dns_options,
            Some(NetworkDns {
                upstream: vec!["192.0.2.53".into()],
                hosts: vec![
                    DnsHostSection {
                        name: "files".into(),
                        ip: Ipv4Addr::new(10, 20, 0, 5)
                    },
                    DnsHostSection {
                        name: "nas".into(),
                        ip: Ipv4Addr::new(10, 20, 0, 5)
                    },
                ],
                local_only: None,
                cache_size: None,
            })
        );
        let want = [
            "<route address='10.30.0.0'> is not imported",
            "<bridge name='virbr7'> is not used",
            "<dhcp><host id='0:1:0:1:18:aa'> without mac is skipped",
            "<tftp> is not imported",
            "<ip family='ipv6' address='fd00::1'> is skipped",
            "<forwarder domain='corp.example' addr='10.9.9.9'> is not imported",
            "<dns><host ip='fd00::5'> is skipped",
            "<dns><txt> is not imported",
            "routed needs an uplink (libvirt used the host's eth1): add [networks.lab.uplink]",
        ];
        assert_eq!(warnings.len(), want.len(), "{warnings:#?}");
        for (w, want) in warnings.iter().zip(want) {
            assert!(w.starts_with(want), "want {want:?}, got {w:?}");
        }
        // The import survives being written out and read back.
        let text = to_toml(&name, &net);
        assert_eq!(from_toml(&text).unwrap()["lab"], net);
    }

    #[test]
    fn isolated_bridge_and_open_networks() {
        let (_, net, warnings) = from_libvirt_xml(
            "<network><name>iso</name><ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.9'/></dhcp></ip></network>",
        )
        .unwrap();
        assert_eq!(net.mode, NetworkMode::Isolated);
        assert_eq!(net.address, Some("10.0.0.1/24".parse().unwrap()));
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("isolated: switchboard's DNS answers only local names"),
            "{warnings:?}"
        );
        // Forwarders on an isolated network keep forwarding, as in libvirt.
        let (_, net, warnings) = from_libvirt_xml(
            "<network><name>iso</name><dns><forwarder addr='192.0.2.53'/></dns><ip address='10.0.0.1' prefix='24'/></network>",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let o = net.dns_options.as_ref().unwrap();
        assert_eq!(
            (o.local_only, o.upstream.clone()),
            (Some(false), vec!["192.0.2.53".to_string()])
        );
        expand("iso", &net, Path::new("/run/sb")).unwrap();
        // No <ip>: a bare segment, no DNS warning.
        let (_, net, warnings) = from_libvirt_xml("<network><name>bare</name></network>").unwrap();
        assert_eq!(net, NetworkSection::default());
        assert!(warnings.is_empty());
        // dns enable='no'
        let (_, net, warnings) = from_libvirt_xml(
            "<network><name>q</name><dns enable='no'/><ip address='10.0.0.1' prefix='24'/></network>",
        )
        .unwrap();
        assert_eq!(net.dns, Some(false));
        assert!(warnings.is_empty(), "{warnings:?}");
        let x = expand("q", &net, Path::new("/run/sb")).unwrap();
        assert!(x.routers[0].1.dns.is_none());

        let (name, net, warnings) = from_libvirt_xml(
            "<network><name>host-lan</name><forward mode='bridge'/><bridge name='br0'/><ip address='192.168.1.5' prefix='24'/></network>",
        )
        .unwrap();
        assert_eq!(name, "host-lan");
        assert_eq!(net.mode, NetworkMode::Bridge);
        assert_eq!(net.taps, vec!["br0".to_string()]);
        assert_eq!(net.address, None);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0]
                .starts_with("<bridge name='br0'>: switchboard plugs a tap, not a host bridge"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("<ip address='192.168.1.5'> is skipped: in bridge mode"),
            "{warnings:?}"
        );
        let x = expand(&name, &net, Path::new("/run/sb")).unwrap();
        assert_eq!(x.segments[0].1.taps[0].name(), "br0");

        let (_, net, warnings) = from_libvirt_xml(
            "<network><name>o</name><forward mode='open'/><ip address='10.0.0.1' netmask='255.255.0.0'/></network>",
        )
        .unwrap();
        assert_eq!(net.mode, NetworkMode::Routed);
        assert_eq!(net.address, Some("10.0.0.1/16".parse().unwrap()));
        assert!(
            warnings[0].starts_with("<forward mode='open'> becomes routed"),
            "{warnings:?}"
        );
    }

    #[test]
    fn nat_details_and_bootp_are_warned() {
        let (_, net, warnings) = from_libvirt_xml(
            "<network><name>n</name><forward mode='nat'><nat><address start='192.0.2.1' end='192.0.2.10'/><port start='1024' end='65535'/></nat></forward><ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.9'><lease expiry='0'/></range><bootp file='pxelinux.0'/></dhcp></ip></network>",
        )
        .unwrap();
        assert_eq!(net.mode, NetworkMode::Nat);
        assert_eq!(net.dhcp.as_ref().unwrap().lease_secs, None);
        let want = [
            "<nat><address> is not imported",
            "<nat><port start='1024' end='65535'> is not imported",
            "<range start='10.0.0.2'><lease expiry='0'> (never expiring) is not imported",
            "<bootp file='pxelinux.0'> is not imported",
            "nat needs an uplink: add",
        ];
        assert_eq!(warnings.len(), want.len(), "{warnings:#?}");
        for (w, want) in warnings.iter().zip(want) {
            assert!(w.starts_with(want), "want {want:?}, got {w:?}");
        }
        // Lease units: minutes by default, seconds when said.
        let (_, net, _) = from_libvirt_xml(
            "<network><name>n</name><ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.9'><lease expiry='30'/></range><range start='10.0.0.20' end='10.0.0.29'><lease expiry='1800' unit='seconds'/></range></dhcp></ip></network>",
        )
        .unwrap();
        assert_eq!(net.dhcp.unwrap().lease_secs, Some(1800));
    }

    #[test]
    fn unusable_documents_are_refused() {
        let cases = [
            ("<network", "not well-formed XML"),
            (
                "<domain><name>vm</name></domain>",
                "the document is a <domain>, not a libvirt <network>",
            ),
            (
                "<network><uuid>x</uuid></network>",
                "the <network> has no <name>",
            ),
            (
                "<network><name>m</name><forward mode='bridge'><interface dev='eth0'/></forward></network>",
                "<forward mode='bridge'> without <bridge name> forwards through macvtap",
            ),
            (
                "<network><name>m</name><forward mode='passthrough'/></network>",
                "<forward mode='passthrough'> hands guests host devices",
            ),
            (
                "<network><name>m</name><ip address='10.0.0.1'/></network>",
                "<ip address='10.0.0.1'> has neither netmask nor prefix",
            ),
            (
                "<network><name>m</name><ip address='10.0.0.1' netmask='255.0.255.0'/></network>",
                "<ip netmask='255.0.255.0'> is not a contiguous netmask",
            ),
            (
                "<network><name>m</name><ip address='10.0.0.1' prefix='33'/></network>",
                "<ip prefix='33'> is not a prefix length",
            ),
            (
                "<network><name>m</name><ip address='host' prefix='24'/></network>",
                "<ip address='host'> is not an IPv4 address",
            ),
            (
                "<network><name>m</name><mtu size='big'/></network>",
                "<mtu size='big'> is not a number",
            ),
            (
                "<network><name>m</name><ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2'/></dhcp></ip></network>",
                "<dhcp><range> needs start and end",
            ),
            (
                "<network><name>m</name><ip address='10.0.0.1' prefix='24'><dhcp><range start='10.0.0.2' end='10.0.0.3'><lease expiry='1' unit='days'/></range></dhcp></ip></network>",
                "<lease unit='days'>",
            ),
            (
                "<network><name>m</name><ip address='10.0.0.1' prefix='24'><dhcp><host mac='52:54:00:00:00:01' ip='fd00::1'/></dhcp></ip></network>",
                "<dhcp><host mac='52:54:00:00:00:01' ip='fd00::1'>: not an IPv4 address",
            ),
        ];
        for (xml, want) in cases {
            let e = from_libvirt_xml(xml).unwrap_err();
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
        let huge = format!(
            "<network><name>x</name><!--{}--></network>",
            "a".repeat(MAX_XML_BYTES)
        );
        assert!(from_libvirt_xml(&huge).unwrap_err().contains("bytes"));
    }
}
