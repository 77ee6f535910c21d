//! Network blocks (`[networks.NAME]`) end to end: a NAT network declared in
//! a few lines gives a namespace an address, a name server and a way out;
//! networks are defined, started, destroyed and undefined at runtime with
//! `switchboard ctl net ...` while another segment's hosts keep talking.
//!
//! As in `dhcp_dns.rs`, the daemon runs in the test's namespace with VDE
//! directories only and hosts attach with `vde_plug2tap`, so the daemon's
//! upstream resolver can be a socket of the test on 127.0.0.1.

use crate::dhcp_dns::{Client, UPSTREAM_ANSWER, UpstreamDns};
use crate::netns::{Need, Netns, Proc, TestDir, secs, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, ctl, rows, toml_path};
use crate::traffic::ping;
use serde_json::Value;
use std::path::Path;

/// A host with a fixed address on a segment, attached by `vde_plug2tap`.
fn static_host(vde: &Path, dir: &TestDir, tag: &str, cidr: &str) -> (Netns, Proc) {
    let ns = Netns::new();
    let p = Proc::spawn(
        "vde_plug2tap",
        ns.command(&["vde_plug2tap", "-s", vde.to_str().unwrap(), "eth0"]),
        dir.join(format!("plug2tap-{tag}.log")),
    );
    assert!(
        wait_until(secs(5), || ns.has_link("eth0")),
        "vde_plug2tap did not create eth0: {}",
        p.log()
    );
    ns.addr_up("eth0", cidr);
    (ns, p)
}

#[test]
fn a_nat_network_in_ten_lines() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_plug2tap"),
        Need::Tool("busybox"),
        Need::Tool("dig"),
        Need::Tool("ping")
    );
    let dir = TestDir::new("natnet");
    let upstream = UpstreamDns::start();
    let config = format!(
        r#"control = {control}
[segments.wan]
vde = {wan}

[networks.lab]
mode = "nat"
address = "10.0.7.1/24"
vde = {lab}
dhcp = {{ range = "10.0.7.100-10.0.7.150", lease_file = {leases} }}
dns_options = {{ upstream = ["{upstream}"] }}
uplink = {{ segment = "wan", address = "198.51.100.1/24", gateway = "198.51.100.2" }}
"#,
        control = toml_path(&dir.join("sw").join("control")),
        wan = toml_path(&dir.join("wan")),
        lab = toml_path(&dir.join("lab")),
        leases = toml_path(&dir.join("lab.leases")),
        upstream = upstream.addr,
    );
    let sw = Switchboard::run_file(
        None,
        &dir.join("sw"),
        &config,
        &[],
        dir.join("switchboard.log"),
    );
    // The outside host knows only its own /24: no way back to 10.0.7.0/24.
    let (wan, _wan_plug) = static_host(&dir.join("wan"), &dir, "wan", "198.51.100.2/24");
    let mut c = Client::new("lab", "52:54:00:7a:00:01");
    c.attach(&dir.join("lab"), &dir);
    let got = c
        .dhcp(&dir, Some("box"))
        .unwrap_or_else(|r| panic!("udhcpc: {}\n{}", r.describe(), sw.log()));
    let ip: std::net::Ipv4Addr = got["ip"].parse().unwrap();
    assert_eq!(ip.octets()[..3], [10, 0, 7], "{got:?}");
    assert!((100..=150).contains(&ip.octets()[3]), "{got:?}");
    assert_eq!(got["router"], "10.0.7.1", "{got:?}");
    assert_eq!(got["dns"].trim(), "10.0.7.1", "{got:?}");

    // Out through masquerade: the outside host answers an address it has
    // no route to only because it saw the router's.
    let r = ping(&c.ns, "198.51.100.2", 3, &[]);
    assert!(r.success(), "ping out: {}\n{}", r.describe(), sw.log());
    let doc = sw.ctl_json(&["conntrack", "lab"]);
    let flows = rows(&doc, "conntrack").unwrap();
    assert!(
        flows.iter().any(|f| f["proto"] == "icmp"
            && f["inside"]
                .as_str()
                .is_some_and(|s| s.starts_with(&got["ip"]))
            && f["translated"]
                .as_str()
                .is_some_and(|s| s.starts_with("198.51.100.1"))),
        "no masqueraded ICMP flow: {flows:#?}"
    );
    // The name server: its own guests by name, the rest forwarded.
    let a = c.dig("10.0.7.1", &["box", "A"], false);
    assert_eq!(a.stdout.trim(), got["ip"], "box: {}", a.describe());
    let a = c.dig("10.0.7.1", &["www.example.test", "A"], false);
    assert_eq!(
        a.stdout.trim(),
        UPSTREAM_ANSWER.to_string(),
        "forwarded: {}",
        a.describe()
    );
    // No way in uninvited.
    let r = ping(&wan, &got["ip"], 1, &["-W", "1"]);
    assert!(
        !r.success(),
        "the outside reached a guest: {}",
        r.describe()
    );
    // The network as the control socket shows it.
    let doc = sw.ctl_json(&["net", "list"]);
    let nets = rows(&doc, "networks").unwrap();
    assert_eq!(nets.len(), 1, "{doc:#}");
    assert_eq!(nets[0]["name"], "lab");
    assert_eq!(nets[0]["mode"], "nat");
    assert_eq!(nets[0]["active"], true);
}

/// Who is plugged where: port number, kind, description.
fn who(ports: &[Value]) -> Vec<(u64, String, String)> {
    ports
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap_or(0),
                p["kind"].as_str().unwrap_or("").to_string(),
                p["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn net_rows(sw: &Switchboard) -> Vec<Value> {
    let doc = sw.ctl_json(&["net", "list"]);
    rows(&doc, "networks").unwrap_or_else(|| panic!("net list: {doc:#}"))
}

fn ports_of(sw: &Switchboard, segment: &str) -> Vec<Value> {
    sw.ports()
        .into_iter()
        .filter(|p| p["segment"] == segment)
        .collect()
}

#[test]
fn networks_are_defined_started_and_destroyed_at_runtime() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_plug2tap"),
        Need::Tool("busybox"),
        Need::Tool("ping")
    );
    let dir = TestDir::new("netrt");
    let config = format!(
        "control = {}\n[segments.base]\nvde = {}\n",
        toml_path(&dir.join("sw").join("control")),
        toml_path(&dir.join("base")),
    );
    let sw = Switchboard::run_file(
        None,
        &dir.join("sw"),
        &config,
        &[],
        dir.join("switchboard.log"),
    );
    // Two hosts on the segment that is there from the start.
    let (b1, _p1) = static_host(&dir.join("base"), &dir, "b1", "192.0.2.1/24");
    let (_b2, _p2) = static_host(&dir.join("base"), &dir, "b2", "192.0.2.2/24");
    let r = ping(&b1, "192.0.2.2", 2, &[]);
    assert!(r.success(), "base before: {}", r.describe());
    let base_before = ports_of(&sw, "base");
    assert!(net_rows(&sw).is_empty());

    let iso_dir = dir.join("iso");
    let file = dir.join("iso.toml");
    std::fs::write(
        &file,
        format!(
            "[networks.iso]\nmode = \"isolated\"\naddress = \"10.0.8.1/24\"\nvde = {}\n\
             dhcp = {{ range = \"10.0.8.10-10.0.8.20\", lease_file = {} }}\n",
            toml_path(&iso_dir),
            toml_path(&dir.join("iso.leases")),
        ),
    )
    .unwrap();
    let r = ctl(&dir.join("sw"), &["net", "define", file.to_str().unwrap()]);
    assert!(r.success(), "net define: {}", r.describe());
    let nets = net_rows(&sw);
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0]["active"], false, "{nets:#?}");
    assert!(!iso_dir.exists(), "defined is not started");

    let r = ctl(&dir.join("sw"), &["net", "start", "iso"]);
    assert!(r.success(), "net start: {}\n{}", r.describe(), sw.log());
    assert!(iso_dir.join("ctl").exists(), "the network's VDE directory");
    let info = sw.ctl_json(&["net", "info", "iso"]);
    let expansion = info["expansion"].as_str().unwrap_or_default();
    assert!(
        expansion.contains("[routers.iso.interfaces.lan]") && expansion.contains("10.0.8.1/24"),
        "net info: {info:#}"
    );
    let mut c = Client::new("iso", "52:54:00:8a:00:01");
    c.attach(&iso_dir, &dir);
    let got = c
        .dhcp(&dir, None)
        .unwrap_or_else(|r| panic!("udhcpc: {}\n{}", r.describe(), sw.log()));
    assert!(got["ip"].starts_with("10.0.8."), "{got:?}");
    // Isolated: no gateway offered.
    assert_eq!(got.get("router").map(String::as_str), Some(""), "{got:?}");
    let doc = sw.ctl_json(&["leases", "iso"]);
    let leases = rows(&doc, "leases").unwrap();
    assert_eq!(leases.len(), 1, "{doc:#}");
    assert_eq!(leases[0]["ip"], got["ip"].as_str());

    // Destroying it closes its sockets and its clients' ports, and nothing
    // else: the base hosts keep their ports and keep talking.
    let r = ctl(&dir.join("sw"), &["net", "destroy", "iso"]);
    assert!(r.success(), "net destroy: {}\n{}", r.describe(), sw.log());
    assert!(!iso_dir.exists(), "the VDE directory is removed");
    assert!(
        wait_until(secs(5), || !c.ns.has_link("eth0")),
        "the client's vde_plug2tap should see its switch go"
    );
    assert_eq!(
        who(&ports_of(&sw, "base")),
        who(&base_before),
        "the base segment's ports changed"
    );
    let r = ping(&b1, "192.0.2.2", 2, &[]);
    assert!(r.success(), "base after destroy: {}", r.describe());
    assert!(sw.ports().iter().all(|p| p["segment"] == "base"));

    // Started again, the client gets its lease back from the lease file.
    let r = ctl(&dir.join("sw"), &["net", "start", "iso"]);
    assert!(
        r.success(),
        "net start again: {}\n{}",
        r.describe(),
        sw.log()
    );
    c.attach(&iso_dir, &dir);
    let again = c
        .dhcp(&dir, None)
        .unwrap_or_else(|r| panic!("udhcpc: {}", r.describe()));
    assert_eq!(again["ip"], got["ip"], "{again:?}");

    // Undefining a running network keeps it running until destroyed.
    let r = ctl(&dir.join("sw"), &["net", "undefine", "iso"]);
    assert!(r.success(), "net undefine: {}", r.describe());
    let nets = net_rows(&sw);
    assert_eq!(nets[0]["persistent"], false, "{nets:#?}");
    assert_eq!(nets[0]["active"], true, "{nets:#?}");
    let r = ctl(&dir.join("sw"), &["net", "destroy", "iso"]);
    assert!(r.success(), "net destroy: {}", r.describe());
    assert!(net_rows(&sw).is_empty());
    // An unknown network is a clear error.
    let r = ctl(&dir.join("sw"), &["net", "start", "nope"]);
    assert!(!r.success());
    assert!(
        r.stderr.contains("no network named \"nope\""),
        "{}",
        r.describe()
    );
}

/// `switchboard import` turns libvirt's default network and LXC's lxc-net
/// settings into network blocks that switchboard runs as they are.
#[test]
fn imported_networks_run() {
    let dir = TestDir::new("import");
    let xml = dir.join("default.xml");
    std::fs::write(
        &xml,
        "<network>\n  <name>default</name>\n  <bridge name='virbr0'/>\n  <forward/>\n  \
         <ip address='192.168.122.1' netmask='255.255.255.0'>\n    <dhcp>\n      \
         <range start='192.168.122.2' end='192.168.122.254'/>\n    </dhcp>\n  </ip>\n</network>\n",
    )
    .unwrap();
    let r = crate::netns::run(
        std::process::Command::new(crate::switchboard::BIN)
            .args(["import", "libvirt"])
            .arg(&xml),
        secs(10),
    );
    assert!(r.success(), "{}", r.describe());
    assert!(r.stdout.contains("[networks.default]"), "{}", r.describe());
    assert!(r.stdout.contains("mode = \"nat\""), "{}", r.describe());
    assert!(
        r.stdout.contains("address = \"192.168.122.1/24\""),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("192.168.122.2-192.168.122.254"),
        "{}",
        r.describe()
    );
    // libvirt's nat leaves the way out to the host's routing; switchboard
    // says it must be given.
    assert!(r.stderr.contains("uplink"), "{}", r.describe());

    let lxc = dir.join("lxc-net");
    std::fs::write(
        &lxc,
        "USE_LXC_BRIDGE=\"true\"\nLXC_BRIDGE=\"lxcbr0\"\nLXC_ADDR=\"10.0.3.1\"\n\
         LXC_NETMASK=\"255.255.255.0\"\nLXC_NETWORK=\"10.0.3.0/24\"\n\
         LXC_DHCP_RANGE=\"10.0.3.2,10.0.3.254\"\nLXC_DHCP_MAX=\"253\"\n",
    )
    .unwrap();
    let r = crate::netns::run(
        std::process::Command::new(crate::switchboard::BIN)
            .args(["import", "lxc"])
            .arg(&lxc),
        secs(10),
    );
    assert!(r.success(), "{}", r.describe());
    let block = r.stdout.clone();
    assert!(block.contains("[networks.lxcbr0]"), "{block}");
    assert!(block.contains("max_leases = 253"), "{block}");
    // The block runs once given a way out: the host uplink.
    let file = dir.join("lxc.toml");
    std::fs::write(
        &file,
        format!(
            "control = {}\n{}\n[networks.lxcbr0.uplink]\nhost = true\n",
            toml_path(&dir.join("sw").join("control")),
            block
                .lines()
                .filter(|l| !l.starts_with("vde")
                    && !l.starts_with("stream")
                    && !l.starts_with("dgram"))
                .collect::<Vec<_>>()
                .join("\n")
                .replace(
                    "[networks.lxcbr0]",
                    &format!("[networks.lxcbr0]\nvde = {}", toml_path(&dir.join("lxc")))
                )
                .replace(
                    "[networks.lxcbr0.dhcp]",
                    &format!(
                        "[networks.lxcbr0.dhcp]\nlease_file = {}",
                        toml_path(&dir.join("lxc.leases"))
                    )
                )
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("lease_file"), "{text}");
    let sw = Switchboard::run_file(None, &dir.join("sw"), &text, &[], dir.join("sw.log"));
    let nets = net_rows(&sw);
    assert_eq!(nets[0]["name"], "lxcbr0", "{nets:#?}");
    assert_eq!(nets[0]["mode"], "nat", "{nets:#?}");
}
