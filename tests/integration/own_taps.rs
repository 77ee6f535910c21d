//! Taps opened by switchboard itself (`-t`), as `vde_switch -t` does: no
//! plug processes in the path.

use crate::netns::{Need, Netns, TestDir, tap_name};
use crate::skip_unless;
use crate::switchboard::{Switchboard, assert_ports_carried_traffic, counter, ports_of_kind};
use crate::traffic::Hosts;
use serde_json::Value;

#[test]
fn own_taps_ping_and_iperf() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let dir = TestDir::new("taps");
    let (s, a, b) = (Netns::new(), Netns::new(), Netns::new());
    let (tap1, tap2) = (tap_name('t'), tap_name('t'));
    let mut sw = Switchboard::start(
        Some(&s),
        &dir.join("sw"),
        &["-t", &tap1, "-t", &tap2],
        &[&tap1, &tap2],
        dir.join("switchboard.log"),
    );
    // The switch keeps its descriptors when the taps change namespace.
    s.move_link(&tap1, &a);
    s.move_link(&tap2, &b);
    let hosts = Hosts::new(&a, &b, 2);
    hosts.address(&tap1, &tap2);
    hosts.assert_ping(3);
    let bytes = hosts.iperf_a_to_b(3, dir.path());
    assert!(bytes > 0, "iperf3 moved no bytes");
    assert!(sw.running(), "switchboard died:\n{}", sw.log());

    let ports = sw.ports();
    assert_ports_carried_traffic(&ports, "tap", 2);
    let descriptions: Vec<&str> = ports_of_kind(&ports, "tap")
        .iter()
        .filter_map(|p| p.get("description").and_then(Value::as_str))
        .collect();
    for tap in [&tap1, &tap2] {
        assert!(
            descriptions.iter().any(|d| d.contains(tap.as_str())),
            "no port describes {tap}: {descriptions:?}"
        );
    }
    // Offload is on by default: the sender's TCP stream crossed the switch as
    // super-frames, so its port averaged far more than one MTU per frame.
    let sender = ports_of_kind(&ports, "tap")
        .into_iter()
        .find(|p| {
            p.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.ends_with(tap1.as_str()))
        })
        .expect("the sender's tap port");
    let per_frame = counter(sender, "rx_bytes") / counter(sender, "rx_frames").max(1);
    assert!(
        per_frame > 3000,
        "TCP did not cross as super-frames: {per_frame} bytes per frame"
    );
}

/// `--napi-thread`: the kernel delivers what switchboard writes to each tap
/// from a NAPI thread of its own. The taps must say so (`threaded` is 1 in
/// the namespaces they were moved to) and still carry pings and a TCP
/// stream both ways, with plain frames.
#[test]
fn own_taps_with_a_napi_thread_carry_traffic() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let dir = TestDir::new("napi");
    let (s, a, b) = (Netns::new(), Netns::new(), Netns::new());
    let (tap1, tap2) = (tap_name('n'), tap_name('n'));
    let mut sw = Switchboard::start(
        Some(&s),
        &dir.join("sw"),
        &["-t", &tap1, "-t", &tap2, "--napi-thread", "--no-offload"],
        &[&tap1, &tap2],
        dir.join("switchboard.log"),
    );
    s.move_link(&tap1, &a);
    s.move_link(&tap2, &b);
    for (ns, tap) in [(&a, &tap1), (&b, &tap2)] {
        let path = format!("/sys/class/net/{tap}/threaded");
        let ran = ns.exec(&["cat", &path], crate::netns::secs(5));
        assert!(ran.success(), "cannot read {path}: {}", ran.describe());
        assert_eq!(ran.stdout.trim(), "1", "{tap} has no NAPI thread");
    }
    let hosts = Hosts::new(&a, &b, 2);
    hosts.address(&tap1, &tap2);
    hosts.assert_ping(3);
    let bytes = hosts.iperf_a_to_b(3, dir.path());
    assert!(bytes > 0, "iperf3 moved no bytes");
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
    let ports = sw.ports();
    assert_ports_carried_traffic(&ports, "tap", 2);
    // Plain taps: no frame larger than an Ethernet frame crossed.
    for p in ports_of_kind(&ports, "tap") {
        let per_frame = counter(p, "rx_bytes") / counter(p, "rx_frames").max(1);
        assert!(
            per_frame <= 1518,
            "a plain tap received {per_frame} bytes per frame"
        );
    }
    assert!(
        !sw.log().contains("cannot give the tap a NAPI thread"),
        "switchboard could not set up the NAPI thread:\n{}",
        sw.log()
    );
}
