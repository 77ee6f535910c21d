//! Loop protection between switchboards on different "hosts": there is no
//! spanning tree, so a redundant cabling must be survived by the storm
//! guard, and a full mesh of tunnels by split horizon (`mesh = true`).
//!
//! Double cable, two hosts joined by two UDP tunnels over one veth link (a
//! loop: every broadcast would circulate round the two tunnels for ever):
//!
//! ```text
//!  vm1                 vm2          VM namespaces, 10.76.0.N/24
//!   | tap               | tap
//!  h1 ==== 5201 ====== h2          host namespaces, each running
//!     ==== 5202 ======             its own `switchboard run`
//!       (10.77.12.0/24)
//! ```
//!
//! Full mesh, three hosts each with a tunnel to both others (a triangle),
//! on a `mesh = true` segment: frames from one tunnel are never relayed
//! into another, so nothing circulates and no storm block is needed.

use crate::netns::{Need, Netns, Ran, TestDir, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, counter, ports_of_kind, toml_path};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The underlay address of host `h` on the link to host `peer`.
fn underlay(h: u8, peer: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 10 * h.min(peer) + h.max(peer), h)
}

/// The VM address of vm `n`.
fn vm_ip(n: u8) -> String {
    format!("10.76.0.{n}")
}

/// Hosts with one VM each, joined by tunnels. Fields drop in order: the
/// daemons first, the scratch directory last.
struct Lab {
    sw: Vec<Switchboard>,
    vms: Vec<Netns>,
    _hosts: Vec<Netns>,
    _dir: TestDir,
}

impl Lab {
    /// `n` hosts; `links` are the veth links between them, `tunnels` the
    /// UDP tunnels as (host, host, port) over those links; `segment_keys`
    /// go into each host's `[segments.lan]`.
    fn new(
        tag: &str,
        n: u8,
        links: &[(u8, u8)],
        tunnels: &[(u8, u8, u16)],
        segment_keys: &str,
    ) -> Lab {
        let dir = TestDir::new(tag);
        let hosts: Vec<Netns> = (0..n).map(|_| Netns::new()).collect();
        let vms: Vec<Netns> = (0..n).map(|_| Netns::new()).collect();
        for &(a, b) in links {
            let (na, nb) = (&hosts[usize::from(a - 1)], &hosts[usize::from(b - 1)]);
            let (ia, ib) = (format!("to{b}"), format!("to{a}"));
            na.veth_to(&ia, nb, &ib);
            na.addr_up(&ia, &format!("{}/24", underlay(a, b)));
            nb.addr_up(&ib, &format!("{}/24", underlay(b, a)));
        }
        let mut sw = Vec::new();
        for h in 1..=n {
            let tap = tap_name('l');
            let swdir = dir.join(format!("h{h}"));
            let udp: Vec<String> = tunnels
                .iter()
                .filter_map(|&(a, b, port)| {
                    let peer = if a == h {
                        b
                    } else if b == h {
                        a
                    } else {
                        return None;
                    };
                    Some(format!(
                        "{{ local = \"{}:{port}\", remote = \"{}:{port}\" }}",
                        underlay(h, peer),
                        underlay(peer, h)
                    ))
                })
                .collect();
            let config = format!(
                "control = {control}\n\n[segments.lan]\ntaps = [\"{tap}\"]\nudp = [{udp}]\n{segment_keys}\n",
                control = toml_path(&swdir.join("control")),
                udp = udp.join(", "),
            );
            let host = &hosts[usize::from(h - 1)];
            let vm = &vms[usize::from(h - 1)];
            let s = Switchboard::run_file(
                Some(host),
                &swdir,
                &config,
                &[&tap],
                dir.join(format!("h{h}.log")),
            );
            host.move_link(&tap, vm);
            vm.addr_up(&tap, &format!("{}/24", vm_ip(h)));
            sw.push(s);
        }
        Lab {
            sw,
            vms,
            _hosts: hosts,
            _dir: dir,
        }
    }

    fn vm(&self, n: u8) -> &Netns {
        &self.vms[usize::from(n - 1)]
    }

    /// Frames in and out of every tunnel port of every switchboard.
    fn tunnel_frames(&self) -> u64 {
        self.sw
            .iter()
            .flat_map(|s| {
                ports_of_kind(&s.ports(), "udp")
                    .into_iter()
                    .map(|p| counter(p, "rx_frames") + counter(p, "tx_frames"))
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Every switchboard's port rows and MAC table, for messages.
    fn tunnel_rows(&self) -> String {
        self.sw
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let rows: Vec<String> = s.ports().iter().map(Value::to_string).collect();
                let macs = s.ctl_json(&["macs"]);
                format!(
                    "h{}: {}
    macs: {macs}",
                    i + 1,
                    rows.join("\n    ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Storm blocks counted by each switchboard's segment `lan`.
    fn storm_blocks(&self) -> Vec<u64> {
        self.sw
            .iter()
            .map(|s| {
                let doc = s.ctl_json(&["stats"]);
                let stats = doc.get("result").unwrap_or(&doc);
                stats["segments"]
                    .as_array()
                    .and_then(|segs| segs.iter().find(|g| g["segment"] == "lan"))
                    .map(|g| counter(&g["counters"], "storm_blocks"))
                    .unwrap_or_else(|| panic!("no segment lan in ctl stats: {stats}"))
            })
            .collect()
    }

    /// Tunnel ports shown as blocked, over all switchboards.
    fn blocked_ports(&self) -> usize {
        self.sw
            .iter()
            .map(|s| {
                ports_of_kind(&s.ports(), "udp")
                    .into_iter()
                    .filter(|p| p["blocked_until_secs"].is_u64())
                    .count()
            })
            .sum()
    }

    /// CPU seconds the switchboards used so far.
    fn cpu_secs(&self) -> f64 {
        self.sw.iter().map(|s| cpu_secs(s.pid())).sum()
    }

    fn logs(&self) -> String {
        self.sw
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- h{} ---\n{}", i + 1, s.log()))
            .collect()
    }
}

/// User plus system CPU time of process `pid`, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces, in parentheses):
    // utime and stime are the 12th and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf with a constant argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// `ping -c COUNT` from `ns` to `dst`, bounded.
fn ping(ns: &Netns, dst: &str, count: u32) -> Ran {
    let count_s = count.to_string();
    let deadline = (count * 2 + 3).to_string();
    ns.exec(
        &[
            "ping", "-n", "-c", &count_s, "-i", "0.2", "-W", "1", "-w", &deadline, dst,
        ],
        secs(u64::from(count) * 2 + 10),
    )
}

/// The replies ping counted.
fn received(r: &Ran) -> u32 {
    r.stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .unwrap_or(0)
}

/// Pings until one reply comes back, for at most `within`.
fn first_reply(ns: &Netns, dst: &str, within: Duration) -> bool {
    wait_until(within, || received(&ping(ns, dst, 1)) == 1)
}

/// Frames on the tunnels over three idle seconds, and the CPU seconds the
/// daemons spent meanwhile.
fn idle_window(lab: &Lab) -> (u64, f64) {
    let (f0, c0) = (lab.tunnel_frames(), lab.cpu_secs());
    std::thread::sleep(secs(3));
    (lab.tunnel_frames() - f0, lab.cpu_secs() - c0)
}

#[test]
fn a_double_cable_storms_until_the_guard_cuts_one_and_unicast_flows() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    // A low limit, so that even one circulating broadcast trips it at once;
    // a long block, so that no unblock (and new storm) falls in the test.
    let lab = Lab::new(
        "loopdouble",
        2,
        &[(1, 2)],
        &[(1, 2, 5201), (1, 2, 5202)],
        "storm_limit_pps = 2000\nstorm_block_secs = 120\n",
    );
    // vm1's first ARP request starts the storm; replies may be lost in it
    // until a tunnel is blocked.
    assert!(
        first_reply(lab.vm(1), &vm_ip(2), secs(20)),
        "vm1 never reached vm2 over the looped tunnels:\n{}\n{}",
        lab.tunnel_rows(),
        lab.logs()
    );
    let blocks = lab.storm_blocks();
    assert!(
        blocks.iter().sum::<u64>() > 0 && lab.blocked_ports() > 0,
        "no storm block, yet the loop is quiet? blocks {blocks:?}\n{}",
        lab.tunnel_rows()
    );
    // Quiet now: the loop is cut, nothing circulates.
    let (frames, cpu) = idle_window(&lab);
    assert!(
        frames < 1000,
        "{frames} frames crossed the tunnels in 3 idle seconds:\n{}",
        lab.tunnel_rows()
    );
    assert!(
        cpu < 1.0,
        "the switchboards spun: {cpu:.2} CPU s in 3 idle s"
    );
    // Unicast flows both ways over the cable that is left.
    let r = ping(lab.vm(1), &vm_ip(2), 5);
    assert_eq!(received(&r), 5, "vm1 -> vm2: {}", r.describe());
    let r = ping(lab.vm(2), &vm_ip(1), 3);
    assert_eq!(received(&r), 3, "vm2 -> vm1: {}", r.describe());
    // A fresh broadcast (ARP, after flushing the caches) stays bounded.
    for n in [1, 2] {
        lab.vm(n).ip(&["neigh", "flush", "all"]);
    }
    let before = lab.tunnel_frames();
    let r = ping(lab.vm(2), &vm_ip(1), 2);
    assert_eq!(
        received(&r),
        2,
        "vm2 -> vm1 after a flush: {}",
        r.describe()
    );
    std::thread::sleep(secs(1));
    let during = lab.tunnel_frames() - before;
    assert!(during < 200, "{during} frames for two pings and an ARP");
    let log = lab.logs();
    assert!(
        log.contains("blocking the port") && log.contains("rate_pps"),
        "no warning names the blocked port:\n{log}"
    );
}

#[test]
fn a_full_mesh_with_split_horizon_never_storms() {
    skip_unless!(Need::Netns, Need::Tool("ping"));
    let lab = Lab::new(
        "loopmesh",
        3,
        &[(1, 2), (1, 3), (2, 3)],
        &[(1, 2, 5212), (1, 3, 5213), (2, 3, 5223)],
        "mesh = true\n",
    );
    for (a, b) in [(1, 2), (1, 3), (2, 3), (3, 1)] {
        let r = ping(lab.vm(a), &vm_ip(b), 3);
        assert_eq!(
            received(&r),
            3,
            "vm{a} -> vm{b} in the mesh: {}\n{}",
            r.describe(),
            lab.tunnel_rows()
        );
    }
    let (frames, cpu) = idle_window(&lab);
    assert!(
        frames < 100,
        "{frames} frames crossed the mesh in 3 idle seconds:\n{}",
        lab.tunnel_rows()
    );
    assert!(
        cpu < 1.0,
        "the switchboards spun: {cpu:.2} CPU s in 3 idle s"
    );
    assert_eq!(
        lab.storm_blocks(),
        vec![0, 0, 0],
        "split horizon alone should do"
    );
    assert_eq!(lab.blocked_ports(), 0);
    // Every tunnel is split-horizon, as `ctl ports` shows.
    for s in &lab.sw {
        for p in ports_of_kind(&s.ports(), "udp") {
            assert_eq!(p["split_horizon"], true, "{p}");
        }
    }
    // ARP broadcasts from all three VMs at once cross each tunnel a bounded
    // number of times.
    for n in 1..=3 {
        lab.vm(n).ip(&["neigh", "flush", "all"]);
    }
    let before = lab.tunnel_frames();
    for (a, b) in [(1, 2), (2, 3), (3, 1)] {
        let r = ping(lab.vm(a), &vm_ip(b), 1);
        assert_eq!(
            received(&r),
            1,
            "vm{a} -> vm{b} after a flush: {}",
            r.describe()
        );
    }
    std::thread::sleep(secs(1));
    let during = lab.tunnel_frames() - before;
    assert!(
        during < 200,
        "{during} tunnel frames for three ARPs and pings"
    );
}
