//! NAT in switchboard's routers (`[[routers.NAME.masquerade]]`,
//! `[[routers.NAME.forwards]]`, `[routers.NAME.conntrack]`), checked against
//! real kernels in network namespaces.
//!
//! The point of NAT is what the far side sees, so every test asserts on what
//! crossed the wire: the peer address an iperf3 server reports, the source
//! of an ICMP error as ping prints it, whether a connection got an answer at
//! all. The `ctl conntrack` view and the router's counters are checked
//! against that traffic, not instead of it.
//!
//! The topology mirrors a VM host: two inside hosts (`lan1` 10.0.3.11 and
//! `lan2` 10.0.3.12) on segment `lan` behind router `gw` (10.0.3.1), one
//! outside host (`wan`, 198.51.100.2) on segment `wan` where the router is
//! 198.51.100.1. The outside host has no route to 10.0.3.0/24, exactly like
//! the internet has none to a private network, so anything that reaches it
//! from inside and gets an answer was masqueraded. As in `router.rs`, the
//! daemon runs in a namespace of its own, opens the taps there, and the taps
//! are then moved into the host namespaces.

use crate::netns::{Need, Netns, Proc, Ran, TestDir, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, rows, toml_path};
use crate::traffic::{ping, received};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const LAN1: &str = "10.0.3.11";
const LAN2: &str = "10.0.3.12";
const GW_OUTSIDE: &str = "198.51.100.1";
const WAN: &str = "198.51.100.2";
const FAR: &str = "203.0.113.2";

/// The masquerading gateway and its three hosts. Fields drop in order: the
/// daemon first, the scratch directory last.
struct NatNet {
    sw: Switchboard,
    lan1: Netns,
    lan2: Netns,
    wan: Netns,
    _s: Netns,
    dir: TestDir,
}

impl NatNet {
    /// Builds the topology. `offload` is the segments' `tap_offload`;
    /// `extra` is appended to the network file (forwards, conntrack limits).
    fn new(tag: &str, offload: bool, extra: &str) -> NatNet {
        let dir = TestDir::new(tag);
        let s = Netns::new();
        let (lan1, lan2, wan) = (Netns::new(), Netns::new(), Netns::new());
        let (tap1, tap2, tapw) = (tap_name('a'), tap_name('b'), tap_name('w'));
        let swdir = dir.join("sw");
        let config = format!(
            r#"control = {control}

[segments.lan]
taps = ["{tap1}", "{tap2}"]
tap_offload = {offload}

[segments.wan]
taps = ["{tapw}"]
tap_offload = {offload}

[routers.gw.interfaces.lan]
segment = "lan"
addresses = ["10.0.3.1/24"]

[routers.gw.interfaces.wan]
segment = "wan"
addresses = ["198.51.100.1/24"]

[[routers.gw.routes]]
to = "default"
via = "198.51.100.2"

[[routers.gw.masquerade]]
out = "wan"
sources = ["10.0.3.0/24"]
except = ["10.0.3.0/24"]
{extra}"#,
            control = toml_path(&swdir.join("control")),
        );
        let sw = Switchboard::run_file(
            Some(&s),
            &swdir,
            &config,
            &[&tap1, &tap2, &tapw],
            dir.join("switchboard.log"),
        );
        s.move_link(&tap1, &lan1);
        s.move_link(&tap2, &lan2);
        s.move_link(&tapw, &wan);
        for (ns, tap, ip) in [(&lan1, &tap1, LAN1), (&lan2, &tap2, LAN2)] {
            ns.addr_up(tap, &format!("{ip}/24"));
            ns.ip(&["route", "add", "default", "via", "10.0.3.1"]);
        }
        // Only the connected /24: no way back to 10.0.3.0/24.
        wan.addr_up(&tapw, &format!("{WAN}/24"));
        NatNet {
            sw,
            lan1,
            lan2,
            wan,
            _s: s,
            dir,
        }
    }

    /// The rows of `ctl --json conntrack gw`.
    fn conntrack(&self) -> Vec<Value> {
        let doc = self.sw.ctl_json(&["conntrack", "gw"]);
        rows(&doc, "conntrack")
            .unwrap_or_else(|| panic!("ctl --json conntrack gw: no array of flows in {doc}"))
    }

    /// Router gw's counter `field` (`counters.FIELD` of its `ctl --json
    /// routers` row), which must exist.
    fn counter(&self, field: &str) -> u64 {
        let doc = self.sw.ctl_json(&["routers"]);
        let routers = rows(&doc, "routers")
            .unwrap_or_else(|| panic!("ctl --json routers: no array in {doc}"));
        let row = routers
            .iter()
            .find(|r| r["name"].as_str() == Some("gw"))
            .unwrap_or_else(|| panic!("no router gw in ctl routers: {routers:#?}"));
        row.pointer(&format!("/counters/{field}"))
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("router gw: no counter {field:?}: {row:#}"))
    }

    /// Asserts that the daemon is still up.
    fn assert_alive(&mut self) {
        assert!(self.sw.running(), "switchboard died:\n{}", self.sw.log());
    }
}

/// Asserts that `count` pings from `ns` to `dst` are all answered, each
/// reply arriving with IP TTL `ttl` and from `dst` itself.
fn assert_pings(ns: &Netns, dst: &str, count: u32, ttl: u32) {
    let r = ping(ns, dst, count, &[]);
    assert_eq!(received(&r), count, "ping {dst}: {}", r.describe());
    let replies: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .collect();
    assert_eq!(
        replies.len(),
        count as usize,
        "ping {dst}: {}",
        r.describe()
    );
    for line in replies {
        assert!(
            line.contains(&format!(" bytes from {dst}: "))
                && line.contains(&format!(" ttl={ttl} ")),
            "ping {dst}: expected replies from {dst} with ttl={ttl}, got {line:?}: {}",
            r.describe()
        );
    }
}

/// Starts an iperf3 server in `ns` on `port` (`-1`: one test only, when
/// `once`) and waits (bounded) until it listens. Its log is `DIR/NAME.log`.
fn iperf_server(ns: &Netns, port: u16, once: bool, dir: &TestDir, name: &str) -> (Proc, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let port_s = port.to_string();
    let mut argv = vec!["iperf3", "-s", "-p", &port_s, "--forceflush"];
    if once {
        argv.push("-1");
    }
    let server = Proc::spawn(name, ns.command(&argv), log.clone());
    let filter = format!("sport = :{port}");
    let listening = wait_until(secs(5), || {
        ns.exec(&["ss", "-Hltn", &filter], secs(5))
            .stdout
            .contains(&port_s)
    });
    assert!(
        listening,
        "{name} did not listen on {port}: {}",
        server.log()
    );
    (server, log)
}

/// Parses an iperf3 client's `-J` report, panicking on anything but a
/// completed test.
fn iperf_report(r: &Ran, what: &str) -> Value {
    let doc: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("{what}: iperf3 printed no JSON ({e}): {}", r.describe()));
    if let Some(err) = doc.get("error") {
        panic!("{what}: iperf3 failed: {err}\n{}", r.describe());
    }
    doc
}

/// A number in an iperf3 report (integers may be printed as floats).
fn num(doc: &Value, pointer: &str) -> u64 {
    doc.pointer(pointer)
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
        .unwrap_or_else(|| panic!("no {pointer} in iperf3 report: {doc:#}"))
}

/// The iperf3 server log at `log`, once it shows `lines` data connections
/// ("connected to"), or as it is after a bounded wait.
fn server_log(log: &Path, lines: usize) -> String {
    let read = || std::fs::read_to_string(log).unwrap_or_default();
    wait_until(secs(10), || {
        read().matches(" connected to ").count() >= lines
    });
    read()
}

/// The peers of every data connection an iperf3 server log shows
/// ("[  5] local A port P connected to B port Q"): (B, Q).
fn server_peers(log: &str) -> Vec<(String, u16)> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" connected to ")?;
            let mut words = rest.split_whitespace();
            let addr = words.next()?.to_string();
            (words.next()? == "port").then_some(())?;
            let port = words.next()?.parse().ok()?;
            Some((addr, port))
        })
        .collect()
}

/// The peer addresses of the control connections an iperf3 server log
/// shows ("Accepted connection from A, port P").
fn server_accepted(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("Accepted connection from ")?;
            Some(rest.split(',').next()?.trim().to_string())
        })
        .collect()
}

/// A conntrack row's string field.
fn field<'a>(row: &'a Value, name: &str) -> &'a str {
    row[name]
        .as_str()
        .unwrap_or_else(|| panic!("conntrack row without a string {name:?}: {row}"))
}

/// The conntrack rows of `proto` whose inside endpoint is at `inside_ip`
/// and whose remote endpoint is `outside` ("addr:port").
fn flows<'a>(rows: &'a [Value], proto: &str, inside_ip: &str, outside: &str) -> Vec<&'a Value> {
    rows.iter()
        .filter(|r| {
            r["proto"].as_str() == Some(proto)
                && r["inside"]
                    .as_str()
                    .is_some_and(|s| s.split(':').next() == Some(inside_ip))
                && r["outside"].as_str() == Some(outside)
        })
        .collect()
}

/// The port of an "addr:port" field.
fn port_of(row: &Value, name: &str) -> u16 {
    let s = field(row, name);
    s.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{name} {s:?} is not addr:port: {row}"))
}

/// The address of an "addr:port" field.
fn addr_of<'a>(row: &'a Value, name: &str) -> &'a str {
    let s = field(row, name);
    s.rsplit_once(':')
        .map(|(a, _)| a)
        .unwrap_or_else(|| panic!("{name} {s:?} is not addr:port: {row}"))
}

/// Runs `script` with `bash -c` in `ns` under `timeout SECS`. Bash's
/// `/dev/tcp` and `/dev/udp` give single connection attempts and single
/// datagrams without any other tool.
fn bash(ns: &Netns, timeout_secs: u64, script: &str) -> Ran {
    let t = timeout_secs.to_string();
    ns.exec(
        &["timeout", &t, "bash", "-c", script],
        secs(timeout_secs + 10),
    )
}

/// `timeout`'s exit status when it had to kill the command.
const TIMED_OUT: i32 = 124;

#[test]
fn masquerade_hides_the_lan() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let mut t = NatNet::new("natmasq", false, "");

    // One hop each way: the outside host's reply leaves with TTL 64.
    assert_pings(&t.lan1, WAN, 3, 63);

    // TCP: the outside server sees only the router's outside address, for
    // the control and the data connection alike.
    let (server, log) = iperf_server(&t.wan, 5201, true, &t.dir, "iperf3-wan-tcp");
    let mut client = Proc::spawn(
        "iperf3 client",
        t.lan1.command(&[
            "iperf3",
            "--connect-timeout",
            "3000",
            "-c",
            WAN,
            "-p",
            "5201",
            "-t",
            "4",
            "-J",
        ]),
        t.dir.join("iperf3-lan1-tcp.json"),
    );
    // While the stream runs, both of its connections are tracked flows.
    let mut during = Vec::new();
    wait_until(secs(3), || {
        during = t.conntrack();
        flows(&during, "tcp", LAN1, &format!("{WAN}:5201")).len() >= 2
    });
    let tcp = flows(&during, "tcp", LAN1, &format!("{WAN}:5201"));
    assert_eq!(
        tcp.len(),
        2,
        "the iperf3 control and data connections must be two tracked TCP flows: {during:#?}"
    );
    for f in &tcp {
        assert_eq!(f["router"].as_str(), Some("gw"), "{f}");
        assert_eq!(f["kind"].as_str(), Some("masquerade"), "{f}");
        assert_eq!(addr_of(f, "translated"), GW_OUTSIDE, "{f}");
        assert_eq!(f["state"].as_str(), Some("established"), "{f}");
    }
    let status = crate::netns::wait_bounded(client.child_mut(), secs(25));
    let report = std::fs::read_to_string(t.dir.join("iperf3-lan1-tcp.json")).unwrap_or_default();
    let ran = Ran {
        status,
        stdout: report,
        stderr: String::new(),
    };
    let doc = iperf_report(&ran, "TCP lan1 -> wan");
    let bytes = num(&doc, "/end/sum_received/bytes");
    assert!(
        bytes >= 10_000_000,
        "only {bytes} bytes crossed the masquerading router in 4 s"
    );
    let text = server_log(&log, 1);
    drop(server);
    assert_eq!(
        server_accepted(&text),
        vec![GW_OUTSIDE.to_string()],
        "the outside server must see only the router's address:\n{text}"
    );
    let peers = server_peers(&text);
    assert_eq!(peers.len(), 1, "one data connection expected:\n{text}");
    assert_eq!(peers[0].0, GW_OUTSIDE, "data connection peer:\n{text}");
    // The tracked translation is the one the server saw.
    assert!(
        tcp.iter().any(|f| port_of(f, "translated") == peers[0].1),
        "the server saw port {}, which no tracked flow was translated to: {tcp:#?}",
        peers[0].1
    );

    // UDP, a few seconds at a low rate.
    let (server, log) = iperf_server(&t.wan, 5201, true, &t.dir, "iperf3-wan-udp");
    let r = t.lan1.exec(
        &[
            "iperf3",
            "--connect-timeout",
            "3000",
            "-c",
            WAN,
            "-p",
            "5201",
            "-u",
            "-b",
            "1M",
            "-l",
            "1000",
            "-t",
            "3",
            "-J",
        ],
        secs(25),
    );
    let doc = iperf_report(&r, "UDP lan1 -> wan");
    let sent = num(&doc, "/end/sum_sent/packets");
    let got = num(&doc, "/end/sum_received/packets");
    let lost = num(&doc, "/end/sum_received/lost_packets");
    assert!(sent >= 300, "iperf3 sent only {sent} datagrams: {doc:#}");
    assert!(
        got >= sent * 95 / 100 && lost * 20 <= sent,
        "UDP through NAT: {got} of {sent} datagrams arrived, {lost} lost"
    );
    let text = server_log(&log, 1);
    drop(server);
    let peers = server_peers(&text);
    assert_eq!(peers.len(), 1, "one UDP data stream expected:\n{text}");
    assert_eq!(peers[0].0, GW_OUTSIDE, "UDP peer:\n{text}");

    let after = t.conntrack();
    let udp = flows(&after, "udp", LAN1, &format!("{WAN}:5201"));
    assert_eq!(udp.len(), 1, "one tracked UDP flow expected: {after:#?}");
    let f = udp[0];
    assert_eq!(
        field(f, "translated"),
        format!("{GW_OUTSIDE}:{}", peers[0].1),
        "the UDP flow's translation must be what the server saw: {f}"
    );
    // The server's datagram back (iperf3's UDP handshake) made it a
    // two-way flow, counted both ways: at least what the server received
    // went out, and something came back.
    assert_eq!(f["state"].as_str(), Some("replied"), "{f}");
    let out_packets = f.pointer("/packets/0").and_then(Value::as_u64).unwrap_or(0);
    let back_packets = f.pointer("/packets/1").and_then(Value::as_u64).unwrap_or(0);
    assert!(out_packets >= got && back_packets >= 1, "{f}");
    let out_bytes = f.pointer("/bytes/0").and_then(Value::as_u64).unwrap_or(0);
    assert!(out_bytes >= got * 1000, "{f}");
    // Every tracked flow is lan1's, translated to the outside address.
    for f in &after {
        assert_eq!(addr_of(f, "inside"), LAN1, "{f}");
        assert_eq!(addr_of(f, "translated"), GW_OUTSIDE, "{f}");
    }
    assert!(t.counter("nat_translated") >= 10_000);
    assert_eq!(t.counter("nat_refused"), 0);
    t.assert_alive();
}

#[test]
fn same_source_port_from_two_hosts() {
    skip_unless!(Need::Netns, Need::Tool("iperf3"), Need::Tool("ss"));
    let mut t = NatNet::new("natport", false, "");
    // One server, tests one after the other: both hosts' flows end at the
    // same remote address and port, so they cannot share a translated port
    // (the second starts while the first is still tracked).
    let (server, log) = iperf_server(&t.wan, 5201, false, &t.dir, "iperf3-wan");
    for (ns, who) in [(&t.lan1, "lan1"), (&t.lan2, "lan2")] {
        let r = ns.exec(
            &[
                "iperf3",
                "--connect-timeout",
                "3000",
                "-c",
                WAN,
                "-p",
                "5201",
                "-u",
                "-b",
                "500K",
                "-l",
                "500",
                "-t",
                "2",
                "--cport",
                "40000",
                "-J",
            ],
            secs(25),
        );
        // The client only starts sending after the server's first datagram
        // came back to port 40000, so success means replies got through.
        let doc = iperf_report(&r, &format!("UDP {who} -> wan from port 40000"));
        let got = num(&doc, "/end/sum_received/packets");
        assert!(got >= 200, "{who}: only {got} datagrams reached the server");
    }
    let text = server_log(&log, 2);
    drop(server);
    let peers = server_peers(&text);
    assert_eq!(peers.len(), 2, "two UDP streams expected:\n{text}");
    assert!(
        peers.iter().all(|(a, _)| a == GW_OUTSIDE),
        "the server must see only the router's address:\n{text}"
    );
    assert_ne!(
        peers[0].1, peers[1].1,
        "both streams reached the server from the same port:\n{text}"
    );

    let all = t.conntrack();
    let outside = format!("{WAN}:5201");
    let mut translated = Vec::new();
    for (ip, (_, seen)) in [LAN1, LAN2].into_iter().zip(&peers) {
        let f = flows(&all, "udp", ip, &outside);
        assert_eq!(f.len(), 1, "one UDP flow of {ip} expected: {all:#?}");
        assert_eq!(field(f[0], "inside"), format!("{ip}:40000"), "{}", f[0]);
        assert_eq!(
            field(f[0], "translated"),
            format!("{GW_OUTSIDE}:{seen}"),
            "{ip}'s flow must be translated to what the server saw: {}",
            f[0]
        );
        translated.push(port_of(f[0], "translated"));
    }
    // The first keeps its port (nothing else used it), the second cannot.
    assert_eq!(translated[0], 40000, "{all:#?}");
    assert_ne!(translated[1], 40000, "{all:#?}");
    t.assert_alive();
}

#[test]
fn port_forward_reaches_a_lan_server() {
    skip_unless!(
        Need::Netns,
        Need::Tool("iperf3"),
        Need::Tool("ss"),
        Need::Tool("timeout"),
        Need::Tool("bash")
    );
    let forward = format!(
        r#"
[[routers.gw.forwards]]
proto = "tcp"
iface = "wan"
port = 8080
to = "{LAN1}:5201"
"#
    );
    let mut t = NatNet::new("natfwd", false, &forward);
    let (server, log) = iperf_server(&t.lan1, 5201, true, &t.dir, "iperf3-lan1");
    let r = t.wan.exec(
        &[
            "iperf3",
            "--connect-timeout",
            "3000",
            "-c",
            GW_OUTSIDE,
            "-p",
            "8080",
            "-t",
            "3",
            "-J",
        ],
        secs(25),
    );
    let doc = iperf_report(&r, "TCP wan -> 198.51.100.1:8080");
    let bytes = num(&doc, "/end/sum_received/bytes");
    assert!(
        bytes >= 10_000_000,
        "only {bytes} bytes crossed the port forward in 3 s"
    );
    // The client saw the forwarded address as its peer ...
    assert_eq!(
        doc.pointer("/start/connected/0/remote_host")
            .and_then(Value::as_str),
        Some(GW_OUTSIDE),
        "{doc:#}"
    );
    assert_eq!(
        doc.pointer("/start/connected/0/remote_port")
            .and_then(Value::as_u64),
        Some(8080),
        "{doc:#}"
    );
    // ... and the inside server the real remote: DNAT keeps the source.
    let text = server_log(&log, 1);
    drop(server);
    assert_eq!(
        server_accepted(&text),
        vec![WAN.to_string()],
        "lan1's server must see the outside host's own address:\n{text}"
    );
    let peers = server_peers(&text);
    assert_eq!(peers.len(), 1, "one data connection expected:\n{text}");
    assert_eq!(peers[0].0, WAN, "{text}");
    assert!(
        text.contains(&format!("local {LAN1} port 5201 connected to {WAN} port")),
        "the data connection is not {LAN1}:5201 <- {WAN}:\n{text}"
    );
    // Both of iperf3's connections are tracked as forwarded flows: inside
    // the server, outside the real remote, translated the forwarded address.
    let all = t.conntrack();
    let fwd: Vec<&Value> = all
        .iter()
        .filter(|f| f["proto"].as_str() == Some("tcp") && addr_of(f, "outside") == WAN)
        .collect();
    assert_eq!(fwd.len(), 2, "two forwarded TCP flows expected: {all:#?}");
    for f in &fwd {
        assert_eq!(f["kind"].as_str(), Some("forward"), "{f}");
        assert_eq!(field(f, "inside"), format!("{LAN1}:5201"), "{f}");
        assert_eq!(field(f, "translated"), format!("{GW_OUTSIDE}:8080"), "{f}");
    }
    assert!(
        fwd.iter().any(|f| port_of(f, "outside") == peers[0].1),
        "the server saw the remote port {}, no forwarded flow has it: {fwd:#?}",
        peers[0].1
    );

    // The rules as configured.
    let doc = t.sw.ctl_json(&["nat", "gw"]);
    let nat = rows(&doc, "nat").unwrap_or_else(|| panic!("ctl --json nat gw: no array in {doc}"));
    let gw = nat
        .iter()
        .find(|r| r["router"].as_str() == Some("gw"))
        .unwrap_or_else(|| panic!("no router gw in ctl nat: {doc:#}"));
    let masq = gw["masquerade"].as_array().cloned().unwrap_or_default();
    assert_eq!(masq.len(), 1, "{gw:#}");
    assert_eq!(masq[0]["out"].as_str(), Some("wan"), "{gw:#}");
    assert_eq!(
        masq[0]["sources"],
        serde_json::json!(["10.0.3.0/24"]),
        "{gw:#}"
    );
    assert_eq!(
        masq[0]["except"],
        serde_json::json!(["10.0.3.0/24"]),
        "{gw:#}"
    );
    let fwds = gw["forwards"].as_array().cloned().unwrap_or_default();
    assert_eq!(fwds.len(), 1, "{gw:#}");
    assert_eq!(fwds[0]["proto"].as_str(), Some("tcp"), "{gw:#}");
    assert_eq!(fwds[0]["iface"].as_str(), Some("wan"), "{gw:#}");
    assert!(
        matches!(fwds[0]["ports"].as_str(), Some("8080" | "8080-8080")),
        "{gw:#}"
    );
    assert_eq!(fwds[0]["to"].as_str(), Some("10.0.3.11:5201"), "{gw:#}");

    // The inside host next door reaching the forward through the outside
    // address (hairpin) is refused, not answered.
    let before = t.counter("nat_hairpin_refused");
    let r = bash(&t.lan2, 3, &format!("exec 3<>/dev/tcp/{GW_OUTSIDE}/8080"));
    assert!(
        !r.success(),
        "hairpin connection succeeded: {}",
        r.describe()
    );
    assert!(
        t.counter("nat_hairpin_refused") > before,
        "nat_hairpin_refused did not move"
    );
    t.assert_alive();
}

#[test]
fn unsolicited_inbound_is_dropped() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("timeout"),
        Need::Tool("bash")
    );
    let mut t = NatNet::new("natunsol", false, "");
    // A masqueraded flow exists (lan1's ping), so the router is not idle.
    assert_pings(&t.lan1, WAN, 1, 63);
    let before = t.counter("nat_unsolicited");
    let icmp_before = t.counter("icmp_sent");

    // TCP to the outside address on a port nothing forwards: no SYN/ACK, no
    // RST, no ICMP; the attempt can only run into the deadline.
    let started = std::time::Instant::now();
    let r = bash(&t.wan, 3, &format!("exec 3<>/dev/tcp/{GW_OUTSIDE}/5201"));
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(TIMED_OUT),
        "a connection to {GW_OUTSIDE}:5201 must get no answer at all: {}",
        r.describe()
    );
    assert!(started.elapsed() >= Duration::from_millis(2500));
    // A UDP datagram likewise (and no port unreachable comes back, which
    // would show on the next send as "Connection refused").
    let r = bash(
        &t.wan,
        5,
        &format!(
            "exec 3<>/dev/udp/{GW_OUTSIDE}/5201; echo one >&3; sleep 1; echo two >&3 && echo sent"
        ),
    );
    assert!(
        r.success() && r.stdout.contains("sent"),
        "the second datagram failed, so something answered the first: {}",
        r.describe()
    );
    let unsolicited = t.counter("nat_unsolicited") - before;
    assert!(
        unsolicited >= 3,
        "nat_unsolicited grew by {unsolicited}, expected the SYN (and its retries) and two datagrams"
    );
    assert_eq!(
        t.counter("icmp_sent"),
        icmp_before,
        "the router answered unsolicited traffic with ICMP"
    );
    // Nothing was tracked for it.
    let all = t.conntrack();
    assert!(
        all.iter().all(|f| addr_of(f, "inside") == LAN1),
        "unsolicited traffic created a flow: {all:#?}"
    );
    // The router's own address still answers ping (it is the router's, not
    // a translated flow's).
    let r = ping(&t.wan, GW_OUTSIDE, 2, &[]);
    assert_eq!(
        received(&r),
        2,
        "ping the router's outside address: {}",
        r.describe()
    );
    t.assert_alive();
}

#[test]
fn ttl_expiry_beyond_the_router_is_translated_back() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    let mut t = NatNet::new("natttl", false, "");
    // A second hop: wan routes to far over a veth pair.
    let far = Netns::new();
    let (vw, vf) = (tap_name('x'), tap_name('y'));
    t.wan.veth_to(&vw, &far, &vf);
    t.wan.addr_up(&vw, "203.0.113.1/24");
    far.addr_up(&vf, &format!("{FAR}/24"));
    far.ip(&["route", "add", "default", "via", "203.0.113.1"]);
    let r = t
        .wan
        .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"], secs(10));
    assert!(r.success(), "ip_forward in wan: {}", r.describe());

    // Two hops there and back; far only knows the way to 198.51.100.1.
    assert_pings(&t.lan1, FAR, 3, 62);

    // TTL 2: switchboard takes it to 1, wan cannot forward it and says so
    // to 198.51.100.1, quoting the translated echo request. ping only prints
    // this line if the error reached lan1 with its own echo quoted back.
    let r = ping(&t.lan1, FAR, 1, &["-t", "2"]);
    assert_eq!(received(&r), 0, "{}", r.describe());
    let want = format!("From {WAN} icmp_seq=1 Time to live exceeded");
    assert!(
        r.stdout.lines().any(|l| l.trim() == want),
        "expected the line {want:?}: {}",
        r.describe()
    );
    t.assert_alive();
    drop(far);
}

#[test]
fn conntrack_flush_and_table_cap() {
    skip_unless!(
        Need::Netns,
        Need::Tool("iperf3"),
        Need::Tool("ss"),
        Need::Tool("timeout"),
        Need::Tool("bash")
    );
    let mut t = NatNet::new("natcap", false, "\n[routers.gw.conntrack]\nmax_flows = 4\n");
    // The established flow: a slow UDP stream (plus its TCP control
    // connection) for 8 s. No ping anywhere: echo flows count too.
    let (server, log) = iperf_server(&t.wan, 5201, true, &t.dir, "iperf3-wan");
    let json = t.dir.join("iperf3-lan1.json");
    let mut client = Proc::spawn(
        "iperf3 client",
        t.lan1.command(&[
            "iperf3",
            "--connect-timeout",
            "3000",
            "-c",
            WAN,
            "-p",
            "5201",
            "-u",
            "-b",
            "200K",
            "-l",
            "500",
            "-t",
            "8",
            "-J",
        ]),
        json.clone(),
    );
    let outside = format!("{WAN}:5201");
    let mut now = Vec::new();
    let two = wait_until(secs(5), || {
        now = t.conntrack();
        flows(&now, "udp", LAN1, &outside).len() == 1
            && flows(&now, "tcp", LAN1, &outside).len() == 1
    });
    assert!(two, "the iperf3 test's two flows are not tracked: {now:#?}");
    assert_eq!(now.len(), 2, "{now:#?}");
    let refused_before = t.counter("nat_refused");

    // Six more UDP flows, one datagram each from six sockets (six source
    // ports): two fit, four are refused.
    let r = bash(
        &t.lan1,
        5,
        &format!(
            "for fd in 3 4 5 6 7 8; do eval \"exec $fd<>/dev/udp/{WAN}/9\"; done; \
             for fd in 3 4 5 6 7 8; do echo x >&$fd; done; echo sent"
        ),
    );
    assert!(r.stdout.contains("sent"), "{}", r.describe());
    let mut full = Vec::new();
    wait_until(secs(3), || {
        full = t.conntrack();
        t.counter("nat_refused") >= refused_before + 4
    });
    assert_eq!(
        full.len(),
        4,
        "max_flows = 4 must hold exactly 4 flows here: {full:#?}"
    );
    let refused = t.counter("nat_refused") - refused_before;
    assert!(refused >= 4, "nat_refused grew by {refused}, expected >= 4");
    assert_eq!(
        flows(&full, "udp", LAN1, &format!("{WAN}:9")).len(),
        2,
        "{full:#?}"
    );

    // The established stream never noticed.
    let status = crate::netns::wait_bounded(client.child_mut(), secs(25));
    let ran = Ran {
        status,
        stdout: std::fs::read_to_string(&json).unwrap_or_default(),
        stderr: String::new(),
    };
    let doc = iperf_report(&ran, "the established UDP stream");
    let sent = num(&doc, "/end/sum_sent/packets");
    let lost = num(&doc, "/end/sum_received/lost_packets");
    assert!(sent >= 300, "{doc:#}");
    assert!(
        lost * 100 <= sent,
        "the established stream lost {lost} of {sent} datagrams while the table was full"
    );
    let text = server_log(&log, 1);
    drop(server);
    assert_eq!(server_peers(&text).len(), 1, "{text}");

    let r = t.sw.ctl(&["conntrack", "flush", "gw"]);
    assert!(r.success(), "ctl conntrack flush gw: {}", r.describe());
    let empty = t.conntrack();
    assert!(empty.is_empty(), "flows left after a flush: {empty:#?}");
    t.assert_alive();
}

#[test]
fn masquerade_with_tap_offload_super_frames() {
    skip_unless!(Need::Netns, Need::Tool("iperf3"), Need::Tool("ss"));
    // Taps with offloads (the default) hand the router 64 KiB TCP
    // super-frames with partial checksums; NAT must keep them correct.
    let mut t = NatNet::new("natoff", true, "");
    for (reverse, what) in [(false, "lan1 -> wan"), (true, "wan -> lan1 (-R)")] {
        let (server, log) = iperf_server(&t.wan, 5201, true, &t.dir, "iperf3-wan");
        let mut argv = vec![
            "iperf3",
            "--connect-timeout",
            "3000",
            "-c",
            WAN,
            "-p",
            "5201",
            "-t",
            "3",
            "-J",
        ];
        if reverse {
            argv.push("-R");
        }
        let r = t.lan1.exec(&argv, secs(25));
        let doc = iperf_report(&r, what);
        let bytes = num(&doc, "/end/sum_received/bytes");
        assert!(
            bytes >= 10_000_000,
            "{what}: only {bytes} bytes crossed the router in 3 s"
        );
        let text = server_log(&log, 1);
        drop(server);
        assert_eq!(
            server_accepted(&text),
            vec![GW_OUTSIDE.to_string()],
            "{text}"
        );
    }
    t.assert_alive();
}
