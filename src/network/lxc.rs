//! Importing LXC's `lxcbr0` network from `/etc/default/lxc-net`.
//!
//! `lxc-net` builds one nat network from a handful of shell variables: a
//! host bridge with `LXC_ADDR`/`LXC_NETMASK`, dnsmasq serving
//! `LXC_DHCP_RANGE` with at most `LXC_DHCP_MAX` leases, and an iptables
//! masquerade of `LXC_NETWORK`. Reading those variables gives the same
//! network as a block. The file is shell, but in practice plain
//! assignments, quoted or not, with comments; that is what is read here.
//! Nothing is ever run, so a value built by shell expansion is refused
//! rather than guessed at. Unset variables take `lxc-net`'s own defaults
//! (10.0.3.1/24, pool 10.0.3.2 to 10.0.3.254, 253 leases).

use super::definition::{NetworkDhcp, NetworkMode, NetworkSection};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Files longer than this are refused: `lxc-net`'s is a dozen lines.
pub const MAX_LXC_NET_BYTES: usize = 64 * 1024;

/// Reads `/etc/default/lxc-net` into a nat network block named after
/// `LXC_BRIDGE`; returns the name, the block, and a warning for every
/// setting that did not carry over. Refuses a file that turns the bridge
/// off (`USE_LXC_BRIDGE="false"`), since there is then no network to
/// import.
pub fn from_lxc_net(text: &str) -> Result<(String, NetworkSection, Vec<String>), String> {
    if text.len() > MAX_LXC_NET_BYTES {
        return Err(format!(
            "the file is {} bytes; lxc-net's settings are far smaller (at most {MAX_LXC_NET_BYTES})",
            text.len()
        ));
    }
    let mut warnings = Vec::new();
    let vars = assignments(text, &mut warnings)?;
    let get = |k: &str| vars.get(k).map(|(_, v)| v.as_str());
    let line = |k: &str| vars.get(k).map(|(l, _)| *l).unwrap_or(0);

    if let Some(v) = get("USE_LXC_BRIDGE")
        && v != "true"
    {
        return Err(format!(
            "line {}: USE_LXC_BRIDGE=\"{v}\": lxc-net sets up no bridge, so there is no network to import",
            line("USE_LXC_BRIDGE")
        ));
    }
    let name = get("LXC_BRIDGE").unwrap_or("lxcbr0").to_string();
    if name.is_empty() {
        return Err(format!("line {}: LXC_BRIDGE is empty", line("LXC_BRIDGE")));
    }
    let addr_s = get("LXC_ADDR").unwrap_or("10.0.3.1");
    let addr: Ipv4Addr = addr_s.parse().map_err(|_| {
        format!(
            "line {}: LXC_ADDR={addr_s:?} is not an IPv4 address",
            line("LXC_ADDR")
        )
    })?;
    let mask_s = get("LXC_NETMASK").unwrap_or("255.255.255.0");
    let address = mask_s
        .parse::<Ipv4Addr>()
        .ok()
        .and_then(|m| Ipv4Net::with_netmask(addr, m).ok())
        .ok_or_else(|| {
            format!(
                "line {}: LXC_NETMASK={mask_s:?} is not an IPv4 netmask",
                line("LXC_NETMASK")
            )
        })?;
    if let Some(n) = get("LXC_NETWORK") {
        let network: Ipv4Net = n.parse().map_err(|_| {
            format!(
                "line {}: LXC_NETWORK={n:?} is not a network like 10.0.3.0/24",
                line("LXC_NETWORK")
            )
        })?;
        if network.trunc() != address.trunc() {
            warnings.push(format!(
                "LXC_NETWORK={n} differs from LXC_ADDR/LXC_NETMASK ({}); the network is taken from LXC_ADDR and LXC_NETMASK, and that is what is masqueraded",
                address.trunc()
            ));
        }
    }
    let range_s = get("LXC_DHCP_RANGE").unwrap_or("10.0.3.2,10.0.3.254");
    let range = match range_s.split_once(',') {
        Some((a, b))
            if a.trim().parse::<Ipv4Addr>().is_ok() && b.trim().parse::<Ipv4Addr>().is_ok() =>
        {
            format!("{}-{}", a.trim(), b.trim())
        }
        _ => {
            return Err(format!(
                "line {}: LXC_DHCP_RANGE={range_s:?} is not FIRST,LAST (like \"10.0.3.2,10.0.3.254\")",
                line("LXC_DHCP_RANGE")
            ));
        }
    };
    let max_s = get("LXC_DHCP_MAX").unwrap_or("253");
    let max_leases: usize = max_s.parse().map_err(|_| {
        format!(
            "line {}: LXC_DHCP_MAX={max_s:?} is not a number",
            line("LXC_DHCP_MAX")
        )
    })?;
    let domain = get("LXC_DOMAIN")
        .filter(|d| !d.is_empty())
        .map(str::to_string);

    let mut notes: Vec<(usize, String)> = Vec::new();
    for (key, (l, value)) in &vars {
        let note = match key.as_str() {
            "USE_LXC_BRIDGE" | "LXC_BRIDGE" | "LXC_ADDR" | "LXC_NETMASK" | "LXC_NETWORK"
            | "LXC_DHCP_RANGE" | "LXC_DHCP_MAX" | "LXC_DOMAIN" => continue,
            _ if value.is_empty() => continue,
            "LXC_DHCP_CONFILE" => format!(
                "line {l}: LXC_DHCP_CONFILE={value} is not imported: carry its dnsmasq settings over by hand"
            ),
            k if k.starts_with("LXC_IPV6_") => {
                format!("line {l}: {k} is not imported: switchboard routes IPv4 only")
            }
            k => format!("line {l}: {k} is not imported"),
        };
        notes.push((*l, note));
    }
    notes.sort();
    warnings.extend(notes.into_iter().map(|(_, n)| n));
    warnings.push(format!(
        "{name} was a host bridge: switchboard serves the network on its own segment; give containers a tap on it (or a VDE/stream socket)"
    ));
    warnings.push(format!(
        "nat needs an uplink (lxc-net used the host's default route): add [networks.{name}.uplink] with `segment` or `tap`, `address` and `gateway`"
    ));
    let net = NetworkSection {
        mode: NetworkMode::Nat,
        address: Some(address),
        domain,
        dhcp: Some(NetworkDhcp {
            range: Some(range),
            max_leases: Some(max_leases),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok((name, net, warnings))
}

/// The file's `KEY=VALUE` lines, by key, with the line number each was
/// (last) set on; later assignments win, as in the shell.
fn assignments(
    text: &str,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, (usize, String)>, String> {
    let mut vars = BTreeMap::new();
    for (n, raw) in text.lines().enumerate() {
        let l = n + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line
            .strip_prefix("export ")
            .map(str::trim_start)
            .unwrap_or(line);
        let Some((key, rest)) = line.split_once('=') else {
            warnings.push(format!("line {l}: {line:?} is not an assignment; skipped"));
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            warnings.push(format!("line {l}: {line:?} is not an assignment; skipped"));
            continue;
        }
        let value = shell_value(rest).map_err(|e| format!("line {l}: {key}: {e}"))?;
        vars.insert(key.to_string(), (l, value));
    }
    Ok(vars)
}

/// One shell word, quoted or bare, followed by nothing but a comment.
/// Expansions (`$`, backquotes) outside single quotes are refused: the
/// importer does not run the shell.
fn shell_value(rest: &str) -> Result<String, String> {
    let (value, after) = if let Some(r) = rest.strip_prefix('"') {
        let end = r.find('"').ok_or("the double quote is not closed")?;
        let v = &r[..end];
        if v.contains(['$', '`', '\\']) {
            return Err(format!(
                "{v:?} uses shell expansion or escapes, which the importer does not run; write the value out"
            ));
        }
        (v, &r[end + 1..])
    } else if let Some(r) = rest.strip_prefix('\'') {
        let end = r.find('\'').ok_or("the single quote is not closed")?;
        (&r[..end], &r[end + 1..])
    } else {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let v = &rest[..end];
        if v.contains(['$', '`', '\\', '"', '\'']) {
            return Err(format!(
                "{v:?} uses shell expansion or quoting the importer does not run; write the value out"
            ));
        }
        (v, &rest[end..])
    };
    let after = after.trim_start();
    if !after.is_empty() && !after.starts_with('#') {
        return Err(format!(
            "{after:?} follows the value; the importer reads one plain assignment per line"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::definition::{from_toml, to_toml};
    use crate::network::expand::expand;
    use std::path::Path;

    /// The file Debian and Ubuntu ship, with the optional settings
    /// commented out.
    const DEBIAN: &str = r#"# This file is auto-generated by lxc.postinst if it does not
# exist.  Customizations will not be overridden.
# Leave USE_LXC_BRIDGE as "true" if you want to use lxcbr0 for your
# containers.  Set to "false" if you'll use virbr0 or another existing
# bridge, or mavlan to your host's NIC.
USE_LXC_BRIDGE="true"

# If you change the LXC_BRIDGE to something other than lxcbr0, then
# you will also need to update your /etc/lxc/default.conf as well as the
# configuration (/var/lib/lxc/<container>/config) for any containers
# already created using the default config to reflect the new bridge
# name.
# If you have the dnsmasq daemon installed, you'll also have to update
# /etc/dnsmasq.d/lxc and restart the system wide dnsmasq daemon.
LXC_BRIDGE="lxcbr0"
LXC_ADDR="10.0.3.1"
LXC_NETMASK="255.255.255.0"
LXC_NETWORK="10.0.3.0/24"
LXC_DHCP_RANGE="10.0.3.2,10.0.3.254"
LXC_DHCP_MAX="253"
# Uncomment the next line if you'd like to use a conf-file for the lxcbr0
# dnsmasq.  For instance, you can use 'dhcp-host=mail1,10.0.3.100' to have
# container 'mail1' always get ip address 10.0.3.100.
#LXC_DHCP_CONFILE=/etc/lxc/dnsmasq.conf

# Uncomment the next line if you want lxcbr0's dnsmasq to resolve the .lxc
# domain.  You can then add "server=/lxc/10.0.3.1' (or your actual $LXC_ADDR)
# to your system dnsmasq configuration file (normally /etc/dnsmasq.conf,
# or /etc/NetworkManager/dnsmasq.d/lxc.conf on systems that use NetworkManager).
# Once these changes are made, restart the lxc-net and network-manager services.
# 'container1.lxc' will then resolve on your host.
#LXC_DOMAIN="lxc"
"#;

    fn expected_default() -> NetworkSection {
        NetworkSection {
            mode: NetworkMode::Nat,
            address: Some("10.0.3.1/24".parse().unwrap()),
            dhcp: Some(NetworkDhcp {
                range: Some("10.0.3.2-10.0.3.254".into()),
                max_leases: Some(253),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn debians_file_gives_lxcbr0() {
        let (name, net, warnings) = from_lxc_net(DEBIAN).unwrap();
        assert_eq!(name, "lxcbr0");
        assert_eq!(net, expected_default());
        assert_eq!(
            warnings,
            vec![
                "lxcbr0 was a host bridge: switchboard serves the network on its own segment; give containers a tap on it (or a VDE/stream socket)".to_string(),
                "nat needs an uplink (lxc-net used the host's default route): add [networks.lxcbr0.uplink] with `segment` or `tap`, `address` and `gateway`".to_string(),
            ]
        );
        let text = to_toml(&name, &net);
        assert_eq!(from_toml(&text).unwrap()["lxcbr0"], net);
    }

    #[test]
    fn an_empty_file_takes_lxc_nets_defaults() {
        let (name, net, warnings) = from_lxc_net("").unwrap();
        assert_eq!(name, "lxcbr0");
        assert_eq!(net, expected_default());
        assert_eq!(warnings.len(), 2);
    }

    #[test]
    fn customised_file_maps_every_setting_and_warns_about_the_rest() {
        let text = "\
export USE_LXC_BRIDGE=true
LXC_BRIDGE=lxcbr1   # a second bridge
LXC_ADDR='10.0.4.1'
LXC_NETMASK=\"255.255.0.0\"
LXC_NETWORK=\"10.0.0.0/16\"
LXC_DHCP_RANGE=\"10.0.4.10, 10.0.4.99\"
LXC_DHCP_MAX=\"90\"
LXC_DOMAIN=\"lxc\"
LXC_DHCP_CONFILE=/etc/lxc/dnsmasq.conf
LXC_IPV6_ADDR=\"fc11::1\"
LXC_DHCP_PING=\"true\"
LXC_IPV6_NAT=\"\"
not an assignment
";
        let (name, net, warnings) = from_lxc_net(text).unwrap();
        assert_eq!(name, "lxcbr1");
        assert_eq!(
            net,
            NetworkSection {
                mode: NetworkMode::Nat,
                address: Some("10.0.4.1/16".parse().unwrap()),
                domain: Some("lxc".into()),
                dhcp: Some(NetworkDhcp {
                    range: Some("10.0.4.10-10.0.4.99".into()),
                    max_leases: Some(90),
                    ..Default::default()
                }),
                ..Default::default()
            }
        );
        let want = [
            "line 13: \"not an assignment\" is not an assignment; skipped",
            "line 9: LXC_DHCP_CONFILE=/etc/lxc/dnsmasq.conf is not imported",
            "line 10: LXC_IPV6_ADDR is not imported: switchboard routes IPv4 only",
            "line 11: LXC_DHCP_PING is not imported",
            "lxcbr1 was a host bridge",
            "nat needs an uplink (lxc-net used the host's default route): add [networks.lxcbr1.uplink]",
        ];
        assert_eq!(warnings.len(), want.len(), "{warnings:#?}");
        for (w, want) in warnings.iter().zip(want) {
            assert!(w.starts_with(want), "want {want:?}, got {w:?}");
        }
        // With an uplink it expands and passes the configuration's checks.
        let mut net = net;
        net.uplink = Some(crate::network::Uplink {
            segment: Some("wan".into()),
            address: Some("192.0.2.2/24".parse().unwrap()),
            gateway: Some("192.0.2.1".parse().unwrap()),
            ..Default::default()
        });
        let x = expand(&name, &net, Path::new("/run/sb")).unwrap();
        let r = &x.routers[0].1;
        assert_eq!(r.masquerade[0].sources, vec!["10.0.0.0/16".to_string()]);
        assert_eq!(
            r.interfaces["lan"].dhcp.as_ref().unwrap().max_leases,
            Some(90)
        );
        assert_eq!(r.dns.as_ref().unwrap().domain.as_deref(), Some("lxc"));
        let mut segments: BTreeMap<_, _> = x.segments.into_iter().collect();
        segments.insert("wan".into(), Default::default());
        crate::config::ConfigFile {
            segments,
            routers: x.routers.into_iter().collect(),
            ..Default::default()
        }
        .into_plan()
        .unwrap();
    }

    #[test]
    fn a_network_that_disagrees_with_the_address_is_warned() {
        let (_, net, warnings) = from_lxc_net(
            "LXC_ADDR=10.0.5.1\nLXC_NETWORK=10.0.3.0/24\nLXC_DHCP_RANGE=10.0.5.2,10.0.5.254\n",
        )
        .unwrap();
        assert_eq!(net.address, Some("10.0.5.1/24".parse().unwrap()));
        assert!(
            warnings[0].starts_with(
                "LXC_NETWORK=10.0.3.0/24 differs from LXC_ADDR/LXC_NETMASK (10.0.5.0/24)"
            ),
            "{warnings:?}"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let cases = [
            (
                "USE_LXC_BRIDGE=\"false\"\n",
                "line 1: USE_LXC_BRIDGE=\"false\": lxc-net sets up no bridge",
            ),
            (
                "\nLXC_ADDR=\"10.0.3.300\"\n",
                "line 2: LXC_ADDR=\"10.0.3.300\" is not an IPv4 address",
            ),
            (
                "LXC_NETMASK=255.0.255.0\n",
                "line 1: LXC_NETMASK=\"255.0.255.0\" is not an IPv4 netmask",
            ),
            (
                "LXC_NETWORK=10.0.3.0\n",
                "line 1: LXC_NETWORK=\"10.0.3.0\" is not a network",
            ),
            (
                "LXC_DHCP_RANGE=\"10.0.3.2-10.0.3.9\"\n",
                "line 1: LXC_DHCP_RANGE=\"10.0.3.2-10.0.3.9\" is not FIRST,LAST",
            ),
            (
                "LXC_DHCP_MAX=lots\n",
                "line 1: LXC_DHCP_MAX=\"lots\" is not a number",
            ),
            ("LXC_BRIDGE=\"\"\n", "line 1: LXC_BRIDGE is empty"),
            (
                "LXC_ADDR=\"$BASE.1\"\n",
                "line 1: LXC_ADDR: \"$BASE.1\" uses shell expansion",
            ),
            (
                "LXC_ADDR=`hostname -i`\n",
                "line 1: LXC_ADDR: \"`hostname\" uses shell expansion",
            ),
            (
                "LXC_ADDR=\"10.0.3.1\n",
                "line 1: LXC_ADDR: the double quote is not closed",
            ),
            (
                "LXC_ADDR='10.0.3.1\n",
                "line 1: LXC_ADDR: the single quote is not closed",
            ),
            (
                "LXC_ADDR=10.0.3.1 LXC_MASK=x\n",
                "line 1: LXC_ADDR: \"LXC_MASK=x\" follows the value",
            ),
        ];
        for (text, want) in cases {
            let e = from_lxc_net(text).unwrap_err();
            assert!(e.starts_with(want), "want {want:?}, got {e:?}");
        }
        let e = from_lxc_net(&"#\n".repeat(MAX_LXC_NET_BYTES)).unwrap_err();
        assert!(e.contains("bytes"), "{e}");
    }

    #[test]
    fn single_quotes_keep_dollars_literally_and_later_lines_win() {
        let (name, _, _) = from_lxc_net("LXC_BRIDGE='br$0'\nLXC_BRIDGE=lxcbr9\n").unwrap();
        assert_eq!(name, "lxcbr9");
        let (name, _, _) = from_lxc_net("LXC_BRIDGE='br$0'\n").unwrap();
        assert_eq!(name, "br$0");
    }
}
