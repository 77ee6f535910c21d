//! DHCP and DNS served by a switchboard router, checked with real clients:
//! busybox's `udhcpc` in network namespaces attached by Debian's
//! `vde_plug2tap`, `dig` for DNS, and a small upstream resolver that the test
//! runs on loopback.
//!
//! The daemon runs in the test's own namespace with VDE directories only
//! (no taps of its own), so its upstream DNS socket reaches the test's
//! resolver on 127.0.0.1, and restarting it does not take any client's
//! interface away: each client's tap belongs to its `vde_plug2tap`, which is
//! restarted with the same MAC address.
//!
//! Every assertion is on what a client received: the address, gateway, name
//! server, domain and MTU that `udhcpc` handed to its script, the records
//! `dig` printed, the replies `ping` got.

use crate::netns::{Need, Netns, Proc, Ran, TestDir, secs, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, rows, toml_path};
use crate::traffic::ping;
use serde_json::Value;
use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, ResourceRecord};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the test resolver answers for every name it answers.
pub const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

/// Names under this label get no answer from the test resolver at all.
const SILENT: &str = "silent";

/// A resolver on 127.0.0.1 that answers every A query with
/// [`UPSTREAM_ANSWER`] (TTL 300) except names starting with `silent.`, and
/// records the names it was asked.
pub struct UpstreamDns {
    pub addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UpstreamDns {
    pub fn start() -> UpstreamDns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the test resolver");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let addr = socket.local_addr().expect("resolver address");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (asked2, stop2) = (asked.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: the test never runs for 10 minutes.
            let end = Instant::now() + Duration::from_secs(600);
            let mut buf = [0u8; 1500];
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Packet::parse(&buf[..n]) else {
                    continue;
                };
                let Some(q) = query.questions.first() else {
                    continue;
                };
                let name = q.qname.to_string().to_ascii_lowercase();
                asked2.lock().unwrap().push(name.clone());
                if name.starts_with(&format!("{SILENT}.")) {
                    continue;
                }
                let qname = q.qname.clone().into_owned();
                let mut reply = query.clone().into_reply();
                reply.answers.push(ResourceRecord::new(
                    qname,
                    CLASS::IN,
                    300,
                    RData::A(A {
                        address: u32::from(UPSTREAM_ANSWER),
                    }),
                ));
                if let Ok(bytes) = reply.build_bytes_vec() {
                    let _ = socket.send_to(&bytes, from);
                }
            }
        });
        UpstreamDns {
            addr,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for UpstreamDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The script `udhcpc` runs: configures the address (and the default route
/// when a router is offered) and writes what it was given to `$SB_OUT`.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi
    {
      echo "ip=$ip"; echo "mask=$mask"; echo "router=$router"; echo "dns=$dns"
      echo "domain=$domain"; echo "lease=$lease"; echo "mtu=$mtu"; echo "serverid=$serverid"
    } > "$SB_OUT.tmp" && mv "$SB_OUT.tmp" "$SB_OUT"
    ;;
esac
exit 0
"#;

/// A client host: a namespace whose tap `vde_plug2tap` connects to a
/// segment's VDE directory.
pub struct Client {
    pub ns: Netns,
    plug: Option<Proc>,
    mac: String,
    tag: String,
}

impl Client {
    pub fn new(tag: &str, mac: &str) -> Client {
        Client {
            ns: Netns::new(),
            plug: None,
            mac: mac.into(),
            tag: tag.into(),
        }
    }

    /// (Re)attaches the tap `eth0` to the switch at `vde`, with this
    /// client's MAC address.
    pub fn attach(&mut self, vde: &Path, dir: &TestDir) {
        self.plug = None;
        // The previous tap goes with its vde_plug2tap; wait for that.
        wait_until(secs(5), || !self.ns.has_link("eth0"));
        let p = Proc::spawn(
            "vde_plug2tap",
            self.ns
                .command(&["vde_plug2tap", "-s", vde.to_str().unwrap(), "eth0"]),
            dir.join(format!("plug2tap-{}.log", self.tag)),
        );
        assert!(
            wait_until(secs(5), || self.ns.has_link("eth0")),
            "vde_plug2tap did not create eth0: {}",
            p.log()
        );
        self.ns
            .ip(&["link", "set", "dev", "eth0", "address", &self.mac]);
        self.ns.ip(&["link", "set", "dev", "eth0", "up"]);
        self.plug = Some(p);
    }

    /// Runs `udhcpc` once (as `hostname` when given) and returns what its
    /// script was handed, or the failed run.
    pub fn dhcp(
        &self,
        dir: &TestDir,
        hostname: Option<&str>,
    ) -> Result<BTreeMap<String, String>, Ran> {
        let script = dir.join("udhcpc.sh");
        if !script.exists() {
            std::fs::write(&script, UDHCPC_SCRIPT).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let out = dir.join(format!("dhcp-{}.env", self.tag));
        let _ = std::fs::remove_file(&out);
        let out_s = out.to_str().unwrap().to_string();
        let env = format!("SB_OUT={out_s}");
        let mut argv = vec![
            "env", &env, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "6", "-T", "1",
            "-A", "1", "-O", "mtu", "-s",
        ];
        let script_s = script.to_str().unwrap().to_string();
        argv.push(&script_s);
        let host_opt;
        if let Some(h) = hostname {
            host_opt = format!("hostname:{h}");
            argv.extend(["-x", &host_opt]);
        }
        let r = self.ns.exec(&argv, secs(30));
        if !r.success() {
            return Err(r);
        }
        let text = std::fs::read_to_string(&out).map_err(|_| r)?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    /// `dig` from this client; returns its output (`+short` answers, or
    /// the full text with `full`).
    pub fn dig(&self, server: &str, args: &[&str], full: bool) -> Ran {
        let at = format!("@{server}");
        let mut argv = vec!["dig", &at, "+time=3", "+tries=1"];
        if !full {
            argv.push("+short");
        }
        argv.extend_from_slice(args);
        self.ns.exec(&argv, secs(15))
    }
}

fn leases(sw: &Switchboard) -> Vec<Value> {
    let doc = sw.ctl_json(&["leases"]);
    rows(&doc, "leases").unwrap_or_else(|| panic!("ctl --json leases: no array in {doc}"))
}

fn config(dir: &Path, upstream: SocketAddr) -> String {
    format!(
        r#"control = {control}

[segments.lan]
vde = {vde}

[routers.gw.interfaces.lan]
segment = "lan"
addresses = ["10.0.5.1/24"]

[routers.gw.interfaces.lan.dhcp]
ranges = ["10.0.5.100-10.0.5.102"]
lease_secs = 600
lease_file = {leases}
mtu = 1400
hosts = [{{ mac = "52:54:00:5b:00:02", name = "vm2", ip = "10.0.5.50" }}]

[routers.gw.dns]
domain = "lab"
upstream = ["{upstream}"]
hosts = [{{ name = "db", ip = "10.0.5.9" }}]
"#,
        control = toml_path(&dir.join("sw").join("control")),
        vde = toml_path(&dir.join("lan")),
        leases = toml_path(&dir.join("lan.leases")),
    )
}

fn start(dir: &TestDir, upstream: SocketAddr) -> Switchboard {
    Switchboard::run_file(
        None,
        &dir.join("sw"),
        &config(dir.path(), upstream),
        &[],
        dir.join("switchboard.log"),
    )
}

fn in_range(ip: &str, first: u8, last: u8) -> bool {
    ip.parse::<Ipv4Addr>()
        .is_ok_and(|a| a.octets()[..3] == [10, 0, 5] && (first..=last).contains(&a.octets()[3]))
}

#[test]
fn dhcp_leases_reservations_names_and_restart() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_plug2tap"),
        Need::Tool("busybox"),
        Need::Tool("dig"),
        Need::Tool("ping")
    );
    let dir = TestDir::new("dhcp");
    let upstream = UpstreamDns::start();
    let mut sw = start(&dir, upstream.addr);
    let vde = dir.join("lan");
    let mut c1 = Client::new("c1", "52:54:00:5b:00:01");
    let mut c2 = Client::new("c2", "52:54:00:5b:00:02");
    c1.attach(&vde, &dir);
    c2.attach(&vde, &dir);

    // A client from the pool, with every option the network defines.
    let got1 = c1
        .dhcp(&dir, Some("vm1"))
        .unwrap_or_else(|r| panic!("udhcpc c1: {}\n{}", r.describe(), sw.log()));
    let ip1 = got1["ip"].clone();
    assert!(in_range(&ip1, 100, 102), "c1 got {got1:?}");
    assert_eq!(got1["mask"], "24", "{got1:?}");
    assert_eq!(got1["router"], "10.0.5.1", "{got1:?}");
    assert_eq!(got1["dns"].trim(), "10.0.5.1", "{got1:?}");
    assert_eq!(got1["domain"], "lab", "{got1:?}");
    assert_eq!(got1["lease"], "600", "{got1:?}");
    assert_eq!(got1["mtu"], "1400", "{got1:?}");
    assert_eq!(got1["serverid"], "10.0.5.1", "{got1:?}");
    // The reserved MAC gets its reserved address.
    let got2 = c2
        .dhcp(&dir, None)
        .unwrap_or_else(|r| panic!("udhcpc c2: {}\n{}", r.describe(), sw.log()));
    assert_eq!(got2["ip"], "10.0.5.50", "c2 got {got2:?}");
    // The address works: the router answers pings on it.
    let r = ping(&c1.ns, "10.0.5.1", 2, &[]);
    assert!(r.success(), "ping gw from c1: {}", r.describe());

    // Names: the DHCP client's own, the reservation's, a static host, a
    // reverse lookup, and a forwarded one the resolver answers.
    let a = c2.dig("10.0.5.1", &["vm1.lab", "A"], false);
    assert_eq!(a.stdout.trim(), ip1, "vm1.lab: {}", a.describe());
    let a = c1.dig("10.0.5.1", &["vm2.lab", "A"], false);
    assert_eq!(a.stdout.trim(), "10.0.5.50", "vm2.lab: {}", a.describe());
    let a = c1.dig("10.0.5.1", &["db.lab", "A"], false);
    assert_eq!(a.stdout.trim(), "10.0.5.9", "db.lab: {}", a.describe());
    let a = c1.dig("10.0.5.1", &["-x", "10.0.5.50"], false);
    assert_eq!(
        a.stdout.trim(),
        "vm2.lab.",
        "PTR 10.0.5.50: {}",
        a.describe()
    );
    let a = c1.dig("10.0.5.1", &["www.example.test", "A"], false);
    assert_eq!(
        a.stdout.trim(),
        UPSTREAM_ANSWER.to_string(),
        "forwarded: {}",
        a.describe()
    );
    assert!(
        upstream.asked().iter().any(|n| n == "www.example.test"),
        "the resolver never saw the query: {:?}",
        upstream.asked()
    );
    // Unknown names in the local domain are never forwarded.
    let a = c1.dig("10.0.5.1", &["nobody.lab", "A"], true);
    assert!(
        a.stdout.contains("status: NXDOMAIN"),
        "nobody.lab: {}",
        a.describe()
    );
    assert!(!upstream.asked().iter().any(|n| n.contains("nobody")));
    // An upstream that never answers: SERVFAIL, not silence.
    let a = c1.ns.exec(
        &[
            "dig",
            "@10.0.5.1",
            "+time=9",
            "+tries=1",
            "silent.example.test",
            "A",
        ],
        secs(20),
    );
    assert!(
        a.stdout.contains("status: SERVFAIL"),
        "silent upstream: {}",
        a.describe()
    );

    // The services' counters agree with what the clients did.
    let doc = sw.ctl_json(&["routers"]);
    let gw = rows(&doc, "routers").unwrap().remove(0);
    assert_eq!(gw["dhcp"][0]["iface"], "lan", "{gw:#}");
    assert!(
        gw["dhcp"][0]["counters"]["ack"].as_u64().unwrap_or(0) >= 2,
        "{gw:#}"
    );
    assert_eq!(gw["dhcp"][0]["leases"], 2, "{gw:#}");
    assert!(gw["dns"]["forwarded"].as_u64().unwrap_or(0) >= 2, "{gw:#}");
    assert!(
        gw["dns"]["local_answers"].as_u64().unwrap_or(0) >= 4,
        "{gw:#}"
    );
    assert!(gw["dns"]["servfail"].as_u64().unwrap_or(0) >= 1, "{gw:#}");

    // The leases as the control socket shows them, then a restart.
    let before = leases(&sw);
    let ips: Vec<&str> = before.iter().filter_map(|l| l["ip"].as_str()).collect();
    assert!(
        ips.contains(&ip1.as_str()) && ips.contains(&"10.0.5.50"),
        "{before:#?}"
    );
    assert!(sw.terminate(secs(10)).is_some(), "switchboard did not stop");
    let file = std::fs::read_to_string(dir.join("lan.leases")).expect("lease file");
    assert!(
        file.contains(&ip1) && file.contains("52:54:00:5b:00:01"),
        "lease file: {file}"
    );
    let sw = start(&dir, upstream.addr);
    let after = leases(&sw);
    let ips: Vec<&str> = after.iter().filter_map(|l| l["ip"].as_str()).collect();
    assert!(
        ips.contains(&ip1.as_str()),
        "leases after restart: {after:#?}"
    );
    // The client comes back to the same address (and its name with it).
    c1.attach(&vde, &dir);
    let again = c1
        .dhcp(&dir, Some("vm1"))
        .unwrap_or_else(|r| panic!("udhcpc c1 after restart: {}\n{}", r.describe(), sw.log()));
    assert_eq!(again["ip"], ip1, "c1 after restart: {again:?}");
    let a = c1.dig("10.0.5.1", &["vm1.lab", "A"], false);
    assert_eq!(
        a.stdout.trim(),
        ip1,
        "vm1.lab after restart: {}",
        a.describe()
    );
}

#[test]
fn dhcp_pool_exhaustion_is_answered_and_counted() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_plug2tap"),
        Need::Tool("busybox"),
        Need::Tool("dig")
    );
    let dir = TestDir::new("dhcpfull");
    let upstream = UpstreamDns::start();
    let sw = start(&dir, upstream.addr);
    let vde = dir.join("lan");
    // Three addresses in the pool, four clients from it.
    let mut clients: Vec<Client> = (0..4)
        .map(|i| Client::new(&format!("p{i}"), &format!("52:54:00:5b:01:0{i}")))
        .collect();
    let mut got = Vec::new();
    for c in &mut clients {
        c.attach(&vde, &dir);
        got.push(c.dhcp(&dir, None).ok().map(|m| m["ip"].clone()));
    }
    let leased: Vec<&String> = got.iter().flatten().collect();
    assert_eq!(leased.len(), 3, "pool of 3: {got:?}\n{}", sw.log());
    let mut unique = leased.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "an address was given twice: {got:?}");
    assert!(leased.iter().all(|ip| in_range(ip, 100, 102)), "{got:?}");
    assert!(got[3].is_none(), "the fourth client got {:?}", got[3]);
    assert!(
        wait_until(secs(3), || sw.log().contains("DHCP pool exhausted")),
        "no log line about the full pool:\n{}",
        sw.log()
    );
    let doc = sw.ctl_json(&["leases"]);
    let rows = rows(&doc, "leases").unwrap();
    assert_eq!(rows.len(), 3, "{doc:#}");
}
