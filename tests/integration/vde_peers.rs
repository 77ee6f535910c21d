//! `vde_plug2tap` peers: the path VDE2 users already have (tap -> plug ->
//! switch -> plug -> tap).

use crate::netns::{Need, Netns, Proc, TestDir, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, assert_ports_carried_traffic};
use crate::traffic::Hosts;
use std::path::PathBuf;

/// A switch in its own namespace S serving `DIR`, and hosts A and B whose
/// taps are attached to it by `vde_plug2tap` running inside A and B.
///
/// Fields drop in declaration order: the plugs and the switch stop before
/// the namespaces go, and the scratch directory goes last.
pub struct VdeTopology {
    pub plug_a: Proc,
    pub plug_b: Proc,
    pub sw: Switchboard,
    pub a: Netns,
    pub b: Netns,
    /// The switch's namespace, kept for its `Drop`.
    pub _s: Netns,
    pub subnet: u8,
    pub sock: PathBuf,
    pub dir: TestDir,
}

impl VdeTopology {
    /// Builds the topology on `10.77.<subnet>.0/24`, with addresses set and
    /// links up.
    pub fn new(tag: &str, subnet: u8) -> VdeTopology {
        let dir = TestDir::new(tag);
        let sock = dir.join("sw");
        let s = Netns::new();
        let a = Netns::new();
        let b = Netns::new();
        let sw = Switchboard::start(Some(&s), &sock, &[], &[], dir.join("switchboard.log"));
        let sock_s = sock.to_str().expect("utf-8 path");
        let (tap_a, tap_b) = (tap_name('a'), tap_name('b'));
        let plug = |ns: &Netns, tap: &str| {
            let p = Proc::spawn(
                "vde_plug2tap",
                ns.command(&["vde_plug2tap", "-s", sock_s, tap]),
                dir.join(format!("vde_plug2tap-{tap}.log")),
            );
            assert!(
                wait_until(secs(5), || ns.has_link(tap)),
                "vde_plug2tap did not create {tap}: {}",
                p.log()
            );
            p
        };
        let plug_a = plug(&a, &tap_a);
        let plug_b = plug(&b, &tap_b);
        let topo = VdeTopology {
            plug_a,
            plug_b,
            sw,
            a,
            b,
            _s: s,
            subnet,
            sock,
            dir,
        };
        topo.hosts().address(&tap_a, &tap_b);
        topo
    }

    /// The two hosts, for traffic.
    pub fn hosts(&self) -> Hosts<'_> {
        Hosts::new(&self.a, &self.b, self.subnet)
    }
}

#[test]
fn vde_plug2tap_ping_and_iperf() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_plug2tap"),
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let mut topo = VdeTopology::new("vde", 1);
    let hosts = topo.hosts();
    hosts.assert_ping(3);
    let bytes = hosts.iperf_a_to_b(3, topo.dir.path());
    assert!(bytes > 0, "iperf3 moved no bytes");
    assert!(
        topo.plug_a.running() && topo.plug_b.running(),
        "a vde_plug2tap died"
    );
    assert!(topo.sw.running(), "switchboard died:\n{}", topo.sw.log());
    let ports = topo.sw.ports();
    assert_ports_carried_traffic(&ports, "vde", 2);
}
