//! Routers (`[routers.NAME]` in the network file): namespaces on different
//! segments reach each other only through switchboard's IPv4 routers, so
//! every ping, TTL and ICMP error asserted here crossed the router core, and
//! the `ctl` views (routes, ARP, routers) are checked against what the
//! namespaces themselves report (their MACs, their neighbour tables).
//!
//! Topologies are built as in `own_taps.rs`: `switchboard run FILE` starts
//! in a namespace of its own, opens the taps there, and the taps are then
//! moved into the host namespaces (the daemon keeps its descriptors).

use crate::netns::{Need, Netns, Proc, Ran, TestDir, run, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, listens, ports_of_kind, rows, toml_path};
use crate::traffic::Hosts;
use crate::traffic::{ping, received};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The TTL of every echo reply line ("64 bytes from ...: icmp_seq=1 ttl=63").
fn reply_ttls(r: &Ran) -> Vec<u32> {
    r.stdout
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| {
            let (_, rest) = l.split_once(" ttl=")?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .collect()
}

/// Asserts that `count` pings from `ns` to `dst` all get replies, each with
/// IP TTL `ttl` (the hop count the reply crossed).
fn assert_pings(ns: &Netns, dst: &str, count: u32, ttl: u32) {
    let r = ping(ns, dst, count, &[]);
    assert_eq!(received(&r), count, "ping {dst}: {}", r.describe());
    let ttls = reply_ttls(&r);
    assert_eq!(
        ttls,
        vec![ttl; count as usize],
        "ping {dst}: replies must arrive with ttl={ttl}: {}",
        r.describe()
    );
}

/// Asserts that one ping from `ns` to `dst` (with `extra` options) is
/// answered by an ICMP error from `from` that ping describes as `what`.
fn assert_icmp_error(ns: &Netns, dst: &str, extra: &[&str], from: &str, what: &str) {
    let r = ping(ns, dst, 1, extra);
    assert_eq!(received(&r), 0, "ping {dst} {extra:?}: {}", r.describe());
    let want = format!("From {from} icmp_seq=1 {what}");
    assert!(
        r.stdout.lines().any(|l| l.trim() == want),
        "ping {dst} {extra:?}: expected the line {want:?}: {}",
        r.describe()
    );
}

/// The MAC address of `dev` in `ns`, from `ip -j link`.
fn link_mac(ns: &Netns, dev: &str) -> String {
    let r = run(
        Command::new("ip").args(["-j", "-n", ns.name(), "link", "show", "dev", dev]),
        secs(10),
    );
    let doc: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("ip -j link show {dev}: {e}: {}", r.describe()));
    doc.pointer("/0/address")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no address for {dev}: {doc}"))
        .to_string()
}

/// The link-layer address `ns` has for neighbour `ip`, from `ip -j neigh`
/// (`None` if it has no entry or an incomplete one).
fn neighbour_mac(ns: &Netns, ip: &str) -> Option<String> {
    let r = run(
        Command::new("ip").args(["-j", "-n", ns.name(), "neigh", "show", ip]),
        secs(10),
    );
    let doc: Value = serde_json::from_str(&r.stdout).ok()?;
    doc.as_array()?
        .iter()
        .find(|n| n["dst"].as_str() == Some(ip))?
        .get("lladdr")?
        .as_str()
        .map(str::to_string)
}

/// The rows of `ctl --json VIEW ARGS...` (VIEW is also the key of the array).
fn ctl_rows(sw: &Switchboard, view: &str, args: &[&str]) -> Vec<Value> {
    let mut argv = vec![view];
    argv.extend_from_slice(args);
    let doc = sw.ctl_json(&argv);
    rows(&doc, view).unwrap_or_else(|| panic!("ctl --json {argv:?}: no array {view:?} in {doc}"))
}

/// The route of `router` to `dest` in `routes`, if there is one.
fn route<'a>(routes: &'a [Value], router: &str, dest: &str) -> Option<&'a Value> {
    routes
        .iter()
        .find(|r| r["router"].as_str() == Some(router) && r["dest"].as_str() == Some(dest))
}

/// Router `name`'s row of `ctl --json routers`.
fn router_row(sw: &Switchboard, name: &str) -> Value {
    let routers = ctl_rows(sw, "routers", &[]);
    routers
        .iter()
        .find(|r| r["name"].as_str() == Some(name))
        .cloned()
        .unwrap_or_else(|| panic!("no router {name:?} in ctl routers: {routers:#?}"))
}

/// The MAC of interface `iface` of router `name`, from `ctl --json routers`.
fn router_mac(sw: &Switchboard, name: &str, iface: &str) -> String {
    let row = router_row(sw, name);
    row["interfaces"]
        .as_array()
        .and_then(|ifs| ifs.iter().find(|i| i["name"].as_str() == Some(iface)))
        .and_then(|i| i["mac"].as_str())
        .unwrap_or_else(|| panic!("router {name}: no interface {iface:?} with a mac: {row:#}"))
        .to_string()
}

/// A counter of router `name` (`counters.FIELD`), which must exist.
fn router_counter(sw: &Switchboard, name: &str, field: &str) -> u64 {
    let row = router_row(sw, name);
    row.pointer(&format!("/counters/{field}"))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("router {name}: no counter {field:?}: {row:#}"))
}

/// Topology "a": router `gw` between segment `left` (client 10.0.100.1/24,
/// default via the router's 10.0.100.254) and segment `right` (server
/// 192.168.100.1/24, default via 192.168.100.254), on plain taps.
/// Fields drop in order: the daemon first, the scratch directory last.
struct TwoSegments {
    sw: Switchboard,
    client: Netns,
    server: Netns,
    _s: Netns,
    tap_l: String,
    tap_r: String,
    dir: TestDir,
}

impl TwoSegments {
    fn new(tag: &str) -> TwoSegments {
        let dir = TestDir::new(tag);
        let (s, client, server) = (Netns::new(), Netns::new(), Netns::new());
        let (tap_l, tap_r) = (tap_name('l'), tap_name('r'));
        let swdir = dir.join("sw");
        let config = format!(
            r#"control = {control}

[segments.left]
taps = ["{tap_l}"]
tap_offload = false

[segments.right]
taps = ["{tap_r}"]
tap_offload = false

[routers.gw]
[routers.gw.interfaces.left]
segment = "left"
addresses = ["10.0.100.254/24"]

[routers.gw.interfaces.right]
segment = "right"
addresses = ["192.168.100.254/24"]
"#,
            control = toml_path(&swdir.join("control")),
        );
        let sw = Switchboard::run_file(
            Some(&s),
            &swdir,
            &config,
            &[&tap_l, &tap_r],
            dir.join("switchboard.log"),
        );
        s.move_link(&tap_l, &client);
        s.move_link(&tap_r, &server);
        client.addr_up(&tap_l, "10.0.100.1/24");
        client.ip(&["route", "add", "default", "via", "10.0.100.254"]);
        server.addr_up(&tap_r, "192.168.100.1/24");
        server.ip(&["route", "add", "default", "via", "192.168.100.254"]);
        TwoSegments {
            sw,
            client,
            server,
            _s: s,
            tap_l,
            tap_r,
            dir,
        }
    }
}

#[test]
fn routes_between_two_segments() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let mut t = TwoSegments::new("rt2seg");

    // One hop: the server's replies leave it with TTL 64 and the router
    // takes one off.
    assert_pings(&t.client, "192.168.100.1", 3, 63);

    let hosts = Hosts {
        a: &t.client,
        b: &t.server,
        a_ip: "10.0.100.1".into(),
        b_ip: "192.168.100.1".into(),
    };
    let bytes = hosts.iperf_a_to_b(3, t.dir.path());
    assert!(
        bytes >= 10_000_000,
        "iperf3 moved only {bytes} bytes through the router in 3 s"
    );

    // Both connected routes, each on its own interface.
    let routes = ctl_rows(&t.sw, "routes", &["gw"]);
    for (dest, iface) in [("10.0.100.0/24", "left"), ("192.168.100.0/24", "right")] {
        let r = route(&routes, "gw", dest)
            .unwrap_or_else(|| panic!("no route to {dest} in {routes:#?}"));
        assert_eq!(r["iface"].as_str(), Some(iface), "{r}");
        assert_eq!(r["kind"].as_str(), Some("connected"), "{r}");
        assert!(
            r["gateway"].is_null(),
            "a connected route has no gateway: {r}"
        );
        assert_eq!(r["metric"].as_u64(), Some(0), "{r}");
    }

    // The router resolved both hosts to the MACs their taps really have.
    let arp = ctl_rows(&t.sw, "arp", &["gw"]);
    for (ip, iface, ns, dev) in [
        ("10.0.100.1", "left", &t.client, &t.tap_l),
        ("192.168.100.1", "right", &t.server, &t.tap_r),
    ] {
        let mac = link_mac(ns, dev);
        let e = arp
            .iter()
            .find(|e| e["ip"].as_str() == Some(ip))
            .unwrap_or_else(|| panic!("no ARP entry for {ip}: {arp:#?}"));
        assert_eq!(e["router"].as_str(), Some("gw"), "{e}");
        assert_eq!(e["iface"].as_str(), Some(iface), "{e}");
        assert_eq!(
            e["mac"].as_str().map(str::to_ascii_lowercase),
            Some(mac.to_ascii_lowercase()),
            "ARP entry for {ip} vs {dev}'s real MAC: {e}"
        );
        assert_eq!(e["state"].as_str(), Some("reachable"), "{e}");
    }

    // TTL 1 expires at the router, which says so from its address on the
    // client's side.
    assert_icmp_error(
        &t.client,
        "192.168.100.1",
        &["-t", "1"],
        "10.0.100.254",
        "Time to live exceeded",
    );
    // No route: the router answers "net unreachable".
    assert_icmp_error(
        &t.client,
        "172.31.0.1",
        &[],
        "10.0.100.254",
        "Destination Net Unreachable",
    );
    // The router's own address on the far side answers (no hop crossed:
    // the router replies itself).
    let r = ping(&t.client, "192.168.100.254", 3, &[]);
    assert_eq!(
        received(&r),
        3,
        "ping the router's far address: {}",
        r.describe()
    );

    // Its counters saw the same.
    assert!(router_counter(&t.sw, "gw", "forwarded") > 1000);
    assert!(router_counter(&t.sw, "gw", "ttl_exceeded") >= 1);
    assert!(router_counter(&t.sw, "gw", "dropped_no_route") >= 1);
    assert!(router_counter(&t.sw, "gw", "icmp_sent") >= 2);
    assert!(router_counter(&t.sw, "gw", "delivered") >= 3);

    // Each interface is a port of kind "router" on its segment.
    let ports = t.sw.ports();
    assert_eq!(
        ports_of_kind(&ports, "router").len(),
        2,
        "expected two router ports: {ports:#?}"
    );
    assert!(t.sw.running(), "switchboard died:\n{}", t.sw.log());
}

#[test]
fn route_add_and_del_at_runtime() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    let mut t = TwoSegments::new("rtadd");
    // The server also answers for 172.31.0.1, once a route leads there.
    t.server.ip(&["addr", "add", "172.31.0.1/32", "dev", "lo"]);
    assert_pings(&t.client, "192.168.100.1", 1, 63);
    assert_icmp_error(
        &t.client,
        "172.31.0.1",
        &[],
        "10.0.100.254",
        "Destination Net Unreachable",
    );

    let add = t.sw.ctl(&[
        "route",
        "add",
        "gw",
        "172.31.0.0/24",
        "via",
        "192.168.100.1",
    ]);
    assert!(add.success(), "route add: {}", add.describe());
    let routes = ctl_rows(&t.sw, "routes", &["gw"]);
    let r = route(&routes, "gw", "172.31.0.0/24")
        .unwrap_or_else(|| panic!("the added route is not listed: {routes:#?}"));
    assert_eq!(r["gateway"].as_str(), Some("192.168.100.1"), "{r}");
    assert_ne!(r["kind"].as_str(), Some("connected"), "{r}");
    assert!(
        r["iface"].is_null() || r["iface"].as_str() == Some("right"),
        "the gateway is on `right`: {r}"
    );
    assert_eq!(r["metric"].as_u64(), Some(0), "{r}");
    // Traffic follows it: to the server (one hop) and back.
    assert_pings(&t.client, "172.31.0.1", 2, 63);

    let del = t.sw.ctl(&[
        "route",
        "del",
        "gw",
        "172.31.0.0/24",
        "via",
        "192.168.100.1",
    ]);
    assert!(del.success(), "route del: {}", del.describe());
    let routes = ctl_rows(&t.sw, "routes", &["gw"]);
    assert!(
        route(&routes, "gw", "172.31.0.0/24").is_none(),
        "the deleted route is still listed: {routes:#?}"
    );
    assert_icmp_error(
        &t.client,
        "172.31.0.1",
        &[],
        "10.0.100.254",
        "Destination Net Unreachable",
    );

    // Refused: a gateway on no connected network, and an unknown interface.
    for bad in [
        &["route", "add", "gw", "172.30.0.0/24", "via", "10.99.99.1"][..],
        &["route", "add", "gw", "172.30.0.0/24", "dev", "nosuch"][..],
    ] {
        let r = t.sw.ctl(bad);
        assert!(
            r.status.is_some_and(|s| !s.success()),
            "{bad:?} must fail with a non-zero exit: {}",
            r.describe()
        );
        assert!(
            !(r.stderr.trim().is_empty() && r.stdout.trim().is_empty()),
            "{bad:?} failed without a message: {}",
            r.describe()
        );
    }
    let routes = ctl_rows(&t.sw, "routes", &["gw"]);
    assert!(
        route(&routes, "gw", "172.30.0.0/24").is_none(),
        "a refused route was added: {routes:#?}"
    );
    assert!(t.sw.running(), "switchboard died:\n{}", t.sw.log());
}

/// Waits (bounded) until the iperf3 server log at `log` shows a finished
/// connection, and returns it.
fn server_log(log: &Path) -> String {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    wait_until(secs(10), || read().contains("connected to"));
    read()
}

#[test]
fn routed_vm_network_keeps_addresses() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let dir = TestDir::new("rtvms");
    let (s, vm, host2) = (Netns::new(), Netns::new(), Netns::new());
    let (tap_vm, tap_lan) = (tap_name('v'), tap_name('n'));
    let swdir = dir.join("sw");
    // tap_offload is left at its default (on): the router must cope with
    // what the segment hands it.
    let config = format!(
        r#"control = {control}

[segments.vms]
taps = ["{tap_vm}"]

[segments.lan]
taps = ["{tap_lan}"]

[routers.edge.interfaces.vms]
segment = "vms"
addresses = ["10.20.0.1/24"]

[routers.edge.interfaces.lan]
segment = "lan"
addresses = ["192.168.50.1/24"]
"#,
        control = toml_path(&swdir.join("control")),
    );
    let mut sw = Switchboard::run_file(
        Some(&s),
        &swdir,
        &config,
        &[&tap_vm, &tap_lan],
        dir.join("switchboard.log"),
    );
    s.move_link(&tap_vm, &vm);
    s.move_link(&tap_lan, &host2);
    vm.addr_up(&tap_vm, "10.20.0.10/24");
    vm.ip(&["route", "add", "default", "via", "10.20.0.1"]);
    host2.addr_up(&tap_lan, "192.168.50.2/24");
    host2.ip(&["route", "add", "10.20.0.0/24", "via", "192.168.50.1"]);

    assert_pings(&host2, "10.20.0.10", 3, 63);

    // The VM's server sees the LAN host's own address: routed, not NATed.
    let log = dir.join("iperf3-server-vm.log");
    let server = Proc::spawn(
        "iperf3 server",
        vm.command(&["iperf3", "-s", "-1", "-p", "5201", "--forceflush"]),
        log.clone(),
    );
    let listening = wait_until(secs(5), || {
        vm.exec(&["ss", "-Hltn", "sport = :5201"], secs(5))
            .stdout
            .contains("5201")
    });
    assert!(listening, "iperf3 server did not listen: {}", server.log());
    let r = host2.exec(
        &["iperf3", "-c", "10.20.0.10", "-p", "5201", "-t", "2", "-J"],
        secs(25),
    );
    let doc: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("iperf3 client printed no JSON ({e}): {}", r.describe()));
    assert!(
        doc.get("error").is_none(),
        "iperf3 failed: {}",
        r.describe()
    );
    let bytes = doc
        .pointer("/end/sum_received/bytes")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    assert!(bytes >= 1_000_000, "only {bytes} bytes reached the VM");
    let text = server_log(&log);
    assert!(
        text.contains("Accepted connection from 192.168.50.2,"),
        "the VM's server did not see 192.168.50.2 as its peer:\n{text}"
    );
    assert!(
        text.contains("local 10.20.0.10 port 5201 connected to 192.168.50.2 port"),
        "the data connection is not 10.20.0.10 <- 192.168.50.2:\n{text}"
    );
    drop(server);
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
}

/// One switchboard of the proxy-ARP test: a VM segment with one tap, an
/// uplink segment served as a VDE directory, and a router joining them.
struct Half {
    sw: Switchboard,
    vde: std::path::PathBuf,
}

/// Starts half `n` (1 or 2) inside `ns`. `vm_seg`/`up_seg` name its
/// segments, `router` its router; `vm_addr` and `up_addr` are the router's
/// addresses, `vm_ip` the VM's, `peer_up` the other router's uplink
/// address.
#[allow(clippy::too_many_arguments)]
fn half(
    ns: &Netns,
    dir: &TestDir,
    tap: &str,
    router: &str,
    (vm_seg, up_seg): (&str, &str),
    (vm_addr, up_addr): (&str, &str),
    vm_ip: &str,
    peer_up: &str,
) -> Half {
    let swdir = dir.join(router);
    let vde = dir.join(format!("{up_seg}.vde"));
    let config = format!(
        r#"control = {control}

[segments.{vm_seg}]
taps = ["{tap}"]
tap_offload = false

[segments.{up_seg}]
vde = {vde}

[routers.{router}.interfaces.{vm_seg}]
segment = "{vm_seg}"
addresses = ["{vm_addr}"]
proxy_arp = true

[routers.{router}.interfaces.{up_seg}]
segment = "{up_seg}"
addresses = ["{up_addr}"]

[[routers.{router}.routes]]
to = "{vm_ip}/32"
dev = "{vm_seg}"

[[routers.{router}.routes]]
to = "10.30.0.0/24"
via = "{peer_up}"
"#,
        control = toml_path(&swdir.join("control")),
        vde = toml_path(&vde),
    );
    let sw = Switchboard::run_file(
        Some(ns),
        &swdir,
        &config,
        &[tap],
        dir.join(format!("{router}.log")),
    );
    let pid = sw.pid();
    assert!(
        wait_until(secs(5), || listens(pid, &vde.join("ctl"))),
        "{router}: no VDE switch at {}:\n{}",
        vde.display(),
        sw.log()
    );
    Half { sw, vde }
}

#[test]
fn proxy_arp_joins_one_subnet_across_two_instances() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    let dir = TestDir::new("rtparp");
    let (s1, s2, vm_a, vm_b) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    let (tap_a, tap_b) = (tap_name('a'), tap_name('b'));
    let mut h1 = half(
        &s1,
        &dir,
        &tap_a,
        "r1",
        ("vm1", "shared"),
        ("10.30.0.1/32", "192.168.60.1/24"),
        "10.30.0.11",
        "192.168.60.2",
    );
    let mut h2 = half(
        &s2,
        &dir,
        &tap_b,
        "r2",
        ("vm2", "uplink"),
        ("10.30.0.2/32", "192.168.60.2/24"),
        "10.30.0.12",
        "192.168.60.1",
    );
    // The cable between the two uplink segments.
    let mut cable = Proc::spawn(
        "switchboard plug",
        {
            let mut c = Command::new(BIN);
            c.arg("plug")
                .arg(format!("vde://{}", h1.vde.display()))
                .arg(format!("vde://{}", h2.vde.display()));
            c
        },
        dir.join("plug.log"),
    );
    let attached = |sw: &Switchboard| {
        sw.ports()
            .iter()
            .any(|p| p["description"].as_str() == Some("switchboard plug"))
    };
    assert!(
        wait_until(secs(5), || attached(&h1.sw) && attached(&h2.sw)),
        "the cable never attached to both: {}",
        cable.log()
    );

    s1.move_link(&tap_a, &vm_a);
    s2.move_link(&tap_b, &vm_b);
    // One flat /24 as far as the VMs know: no gateway at all.
    vm_a.addr_up(&tap_a, "10.30.0.11/24");
    vm_b.addr_up(&tap_b, "10.30.0.12/24");

    // Two router hops: vmB's replies leave with TTL 64, arrive with 62.
    assert_pings(&vm_a, "10.30.0.12", 3, 62);

    // Each VM resolved the other to its own router's MAC (proxy ARP).
    for (vm, peer, sw, router, iface) in [
        (&vm_a, "10.30.0.12", &h1.sw, "r1", "vm1"),
        (&vm_b, "10.30.0.11", &h2.sw, "r2", "vm2"),
    ] {
        let want = router_mac(sw, router, iface);
        assert_eq!(
            neighbour_mac(vm, peer).map(|m| m.to_ascii_lowercase()),
            Some(want.to_ascii_lowercase()),
            "{} neighbour {peer} must be {router}'s {iface} MAC",
            vm.name()
        );
        assert!(router_counter(sw, router, "forwarded") >= 3);
    }
    assert!(cable.running(), "the cable died: {}", cable.log());
    assert!(h1.sw.running(), "r1's switchboard died:\n{}", h1.sw.log());
    assert!(h2.sw.running(), "r2's switchboard died:\n{}", h2.sw.log());
}
