//! VXLAN interop: a Linux kernel vxlan device and a switchboard VXLAN port
//! carry one segment between them, in both directions.
//!
//! Three namespaces: `a` holds the kernel's vxlan device `vx0`
//! (10.42.0.1/24) over a veth link to `b`, where `switchboard run` serves a
//! segment whose VXLAN port points back at `a`; the segment's tap is moved
//! into `c` (10.42.0.2/24). Everything `c` and `a` exchange, ARP broadcasts
//! included, crossed our encapsulation one way and our decapsulation the
//! other, so a ping that works proves the header, the port, the VNI and the
//! head-end replication right, and the kernel's own counters on `vx0` show
//! it saw the datagrams.

use crate::netns::{Need, Netns, Ran, TestDir, run, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, counter, ports_of_kind, toml_path};
use crate::traffic::Hosts;
use serde_json::Value;
use std::process::Command;

/// The underlay: `a` and `b` on a veth link.
const A_UNDERLAY: &str = "10.200.0.1";
const B_UNDERLAY: &str = "10.200.0.2";
/// The overlay: the kernel device in `a` and the tap in `c`.
const A_OVERLAY: &str = "10.42.0.1";
const C_OVERLAY: &str = "10.42.0.2";
/// The second tap's address in the VLAN test, on the same subnet.
const D_OVERLAY: &str = "10.42.0.3";

/// Whether this kernel can make vxlan devices (the module may be missing).
fn vxlan_unavailable() -> Option<String> {
    let ns = Netns::new();
    let r = run(
        Command::new("ip").args([
            "-n",
            ns.name(),
            "link",
            "add",
            "sbtvxprobe",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "4789",
        ]),
        secs(10),
    );
    (!r.success()).then(|| format!("no vxlan devices here: {}", r.stderr.trim()))
}

/// `ip -s -j link show DEV` in `ns`: (rx packets, tx packets).
fn link_packets(ns: &Netns, dev: &str) -> (u64, u64) {
    let r = run(
        Command::new("ip").args(["-s", "-j", "-n", ns.name(), "link", "show", "dev", dev]),
        secs(10),
    );
    let doc: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("ip -s -j link show {dev}: {e}: {}", r.describe()));
    let get = |dir: &str| {
        doc.pointer(&format!("/0/stats64/{dir}/packets"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {dir} packets for {dev}: {doc}"))
    };
    (get("rx"), get("tx"))
}

/// `ip -d -j link show DEV` in `ns`: the vxlan device's `dstport`.
fn vxlan_dstport(ns: &Netns, dev: &str) -> u64 {
    let r = run(
        Command::new("ip").args(["-d", "-j", "-n", ns.name(), "link", "show", "dev", dev]),
        secs(10),
    );
    let doc: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("ip -d -j link show {dev}: {e}: {}", r.describe()));
    doc.pointer("/0/linkinfo/info_data/port")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no vxlan port for {dev}: {doc}"))
}

/// `ping -c COUNT` from `ns` to `dst`; how many replies came back.
fn ping(ns: &Netns, dst: &str, count: u32) -> (u32, Ran) {
    let count_s = count.to_string();
    let deadline = (count * 2 + 4).to_string();
    let r = ns.exec(
        &[
            "ping", "-n", "-c", &count_s, "-i", "0.2", "-W", "2", "-w", &deadline, dst,
        ],
        secs(u64::from(count) * 2 + 10),
    );
    let got = r
        .stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .unwrap_or_else(|| panic!("cannot parse ping output: {}", r.describe()));
    (got, r)
}

/// The switchboard's one VXLAN port row.
fn vxlan_port(sw: &Switchboard) -> Value {
    let ports = sw.ports();
    let v = ports_of_kind(&ports, "vxlan");
    assert_eq!(v.len(), 1, "expected one vxlan port: {ports:#?}");
    v[0].clone()
}

/// The kernel device in `a`, switchboard in `b`, the tap in `c`, and in
/// the VLAN test a second tap in `d` (its namespace and tap name). Fields
/// drop in order: the daemon first, the scratch directory last.
struct Rig {
    sw: Switchboard,
    a: Netns,
    _b: Netns,
    c: Netns,
    tap: String,
    d: Option<(Netns, String)>,
    dir: TestDir,
}

impl Rig {
    /// Builds the rig: `kernel` are the `ip link add vx0 type vxlan id 42`
    /// options beyond the local address and device, `vxlan` is the
    /// segment's `vxlan` TOML value.
    fn new(tag: &str, kernel: &[&str], vxlan: &str) -> Rig {
        Rig::build(tag, kernel, vxlan, None)
    }

    /// As [`Rig::new`]; with `vlan`, the segment gets that VLAN, `c`'s tap
    /// is its untagged member, and a second tap, left in the default VLAN,
    /// goes into a fourth namespace `d` at [`D_OVERLAY`].
    fn build(tag: &str, kernel: &[&str], vxlan: &str, vlan: Option<u16>) -> Rig {
        let dir = TestDir::new(tag);
        let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
        a.veth_to("va", &b, "vb");
        a.addr_up("va", &format!("{A_UNDERLAY}/24"));
        b.addr_up("vb", &format!("{B_UNDERLAY}/24"));
        // A veth hands its peer packets with checksums still to be filled
        // in (the peer kernel trusts them): the inner TCP checksum of a
        // kernel vxlan datagram would reach our userspace socket unfilled
        // and c would drop the segment. A real NIC fills it; here the
        // kernel must, in software, before the veth.
        if crate::netns::which("ethtool").is_some() {
            a.exec(&["ethtool", "-K", "va", "tx", "off"], secs(10));
        }

        let mut add = vec!["link", "add", "vx0", "type", "vxlan", "id", "42"];
        add.extend_from_slice(kernel);
        add.extend_from_slice(&["local", A_UNDERLAY, "dev", "va"]);
        a.ip(&add);
        a.addr_up("vx0", &format!("{A_OVERLAY}/24"));

        let tap = tap_name('x');
        let d_tap = vlan.map(|_| tap_name('y'));
        let taps = match (vlan, &d_tap) {
            (Some(v), Some(d)) => format!(
                r#"vlans = [{v}]
taps = [{{ name = "{tap}", vlan = {v} }}, "{d}"]"#
            ),
            _ => format!(r#"taps = ["{tap}"]"#),
        };
        let swdir = dir.join("sw");
        let config = format!(
            r#"control = {control}

[segments.overlay]
{taps}
mtu = 1450
vxlan = {vxlan}
"#,
            control = toml_path(&swdir.join("control")),
        );
        let mut tap_list = vec![tap.as_str()];
        tap_list.extend(d_tap.as_deref());
        let sw = Switchboard::run_file(
            Some(&b),
            &swdir,
            &config,
            &tap_list,
            dir.join("switchboard.log"),
        );
        b.move_link(&tap, &c);
        c.addr_up(&tap, &format!("{C_OVERLAY}/24"));
        let d = d_tap.map(|d_tap| {
            let d = Netns::new();
            b.move_link(&d_tap, &d);
            d.addr_up(&d_tap, &format!("{D_OVERLAY}/24"));
            (d, d_tap)
        });
        Rig {
            sw,
            a,
            _b: b,
            c,
            tap,
            d,
            dir,
        }
    }

    /// Pings both ways (ARP broadcast crosses first, each way), and checks
    /// that the kernel device counted datagrams both ways.
    fn assert_pings_both_ways(&self) {
        let before = link_packets(&self.a, "vx0");
        let (got, r) = ping(&self.c, A_OVERLAY, 3);
        assert_eq!(got, 3, "c -> kernel vxlan: {}", r.describe());
        let (got, r) = ping(&self.a, C_OVERLAY, 3);
        assert_eq!(got, 3, "kernel vxlan -> c: {}", r.describe());
        let after = link_packets(&self.a, "vx0");
        assert!(
            after.0 >= before.0 + 6 && after.1 >= before.1 + 6,
            "vx0 counters must grow by the pings both ways: {before:?} -> {after:?}"
        );
        let row = vxlan_port(&self.sw);
        assert!(
            counter(&row, "rx_frames") >= 6 && counter(&row, "tx_frames") >= 6,
            "the vxlan port must count the frames: {row}"
        );
    }
}

#[test]
fn kernel_vxlan_and_switchboard_exchange_traffic() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss"),
        Need::Tool("ethtool")
    );
    if let Some(why) = vxlan_unavailable() {
        eprintln!("SKIP: {why}");
        return;
    }
    let rig = Rig::new(
        "vxlan",
        &["dstport", "4789", "remote", B_UNDERLAY],
        &format!(r#"[{{ vni = 42, local = "{B_UNDERLAY}:4789", remotes = ["{A_UNDERLAY}"] }}]"#),
    );
    rig.assert_pings_both_ways();
    let row = vxlan_port(&rig.sw);
    let description = row["description"].as_str().unwrap_or_default();
    assert_eq!(
        description,
        format!("vxlan vni 42 {B_UNDERLAY}:4789 -> {A_UNDERLAY}:4789"),
        "{row}"
    );

    // TCP both ways, through the kernel's decapsulation and ours.
    for (from, to, from_ip, to_ip) in [
        (&rig.c, &rig.a, C_OVERLAY, A_OVERLAY),
        (&rig.a, &rig.c, A_OVERLAY, C_OVERLAY),
    ] {
        let hosts = Hosts {
            a: from,
            b: to,
            a_ip: from_ip.into(),
            b_ip: to_ip.into(),
        };
        let bytes = hosts.iperf_a_to_b(3, rig.dir.path());
        assert!(
            bytes >= 10_000_000,
            "iperf3 {from_ip} -> {to_ip} moved only {bytes} bytes in 3 s"
        );
    }

    // A kernel device for VNI 43 sends to the same port: its ARP requests
    // are dropped and counted by our port, and nothing reaches c.
    rig.a.ip(&[
        "link", "add", "vx1", "type", "vxlan", "id", "43", "dstport", "4789", "remote", B_UNDERLAY,
        "local", A_UNDERLAY, "dev", "va",
    ]);
    rig.a.addr_up("vx1", "10.43.0.1/24");
    let c_before = link_packets(&rig.c, &rig.tap);
    let port_before = counter(&vxlan_port(&rig.sw), "rx_frames");
    let (_, tx_before) = link_packets(&rig.a, "vx1");
    let (got, _) = ping(&rig.a, "10.43.0.2", 2);
    assert_eq!(got, 0, "nothing answers on VNI 43");
    let (_, tx_after) = link_packets(&rig.a, "vx1");
    assert!(
        tx_after > tx_before,
        "the kernel must have sent on VNI 43 ({tx_before} -> {tx_after})"
    );
    let logged = wait_until(secs(5), || {
        wrong_vni_logged(&rig.sw.log()).is_some_and(|n| n >= 1)
    });
    assert!(
        logged,
        "the wrong-VNI drops must be counted in the log:\n{}",
        rig.sw.log()
    );
    assert_eq!(
        link_packets(&rig.c, &rig.tap).0,
        c_before.0,
        "a VNI 43 frame reached c"
    );
    assert_eq!(
        counter(&vxlan_port(&rig.sw), "rx_frames"),
        port_before,
        "a VNI 43 frame entered the segment"
    );
}

/// The largest `wrong_vni=N` count in the daemon's log, if any.
fn wrong_vni_logged(log: &str) -> Option<u64> {
    log.lines()
        .filter(|l| l.contains("vxlan datagrams dropped"))
        .filter_map(|l| {
            let (_, rest) = l.split_once("wrong_vni=")?;
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
}

#[test]
fn linux_default_port_8472_works_when_both_sides_use_it() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    if let Some(why) = vxlan_unavailable() {
        eprintln!("SKIP: {why}");
        return;
    }
    // No dstport: the kernel's default.
    let rig = Rig::new(
        "vxlan8472",
        &["remote", B_UNDERLAY],
        &format!(
            r#"[{{ vni = 42, local = "{B_UNDERLAY}:8472", remotes = ["{A_UNDERLAY}"], port = 8472 }}]"#
        ),
    );
    assert_eq!(vxlan_dstport(&rig.a, "vx0"), 8472);
    rig.assert_pings_both_ways();
}

#[test]
fn multicast_group_carries_broadcasts() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    if let Some(why) = vxlan_unavailable() {
        eprintln!("SKIP: {why}");
        return;
    }
    // No static remotes on either side: ARP goes through the group, the
    // replies are unicast to the learned VTEP.
    let rig = Rig::new(
        "vxlanmc",
        &["dstport", "4789", "group", "239.1.1.1"],
        &format!(r#"[{{ vni = 42, local = "{B_UNDERLAY}:4789", group = "239.1.1.1" }}]"#),
    );
    rig.assert_pings_both_ways();
}

#[test]
fn only_the_mapped_vlan_crosses_the_vni() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    if let Some(why) = vxlan_unavailable() {
        eprintln!("SKIP: {why}");
        return;
    }
    // VLAN 10 of the segment is VNI 42, untagged on the wire (the kernel
    // device knows nothing of VLANs); c is in VLAN 10, d in VLAN 1.
    let rig = Rig::build(
        "vxlanvlan",
        &["dstport", "4789", "remote", B_UNDERLAY],
        &format!(
            r#"[{{ vni = 42, local = "{B_UNDERLAY}:4789", remotes = ["{A_UNDERLAY}"], vlan = 10 }}]"#
        ),
        Some(10),
    );
    rig.assert_pings_both_ways();
    let (d, d_tap) = rig.d.as_ref().expect("the rig has d");

    // d's ARP requests stay in VLAN 1, which does not cross the VNI.
    let port_before = counter(&vxlan_port(&rig.sw), "tx_frames");
    let (got, r) = ping(d, A_OVERLAY, 2);
    assert_eq!(
        got,
        0,
        "d is in VLAN 1 and must not reach the kernel side: {}",
        r.describe()
    );
    assert_eq!(
        counter(&vxlan_port(&rig.sw), "tx_frames"),
        port_before,
        "a frame of VLAN 1 left through the vxlan port"
    );

    // The kernel side's ARP requests for d's address enter VLAN 10 only:
    // d receives nothing at all.
    let d_before = link_packets(d, d_tap);
    let (_, a_tx_before) = link_packets(&rig.a, "vx0");
    let (got, r) = ping(&rig.a, D_OVERLAY, 2);
    assert_eq!(got, 0, "kernel side -> d must fail: {}", r.describe());
    let (_, a_tx_after) = link_packets(&rig.a, "vx0");
    assert!(
        a_tx_after > a_tx_before,
        "the kernel must have sent its ARP requests ({a_tx_before} -> {a_tx_after})"
    );
    assert_eq!(
        link_packets(d, d_tap).0,
        d_before.0,
        "d received frames from the kernel side"
    );

    // c is still reachable afterwards: its VLAN was untouched.
    let (got, r) = ping(&rig.c, A_OVERLAY, 1);
    assert_eq!(got, 1, "c -> kernel vxlan again: {}", r.describe());
}
