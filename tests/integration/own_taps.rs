//! Taps opened by switchboard itself (`-t`), as `vde_switch -t` does: no
//! plug processes in the path.

use crate::netns::{Need, Netns, TestDir, tap_name};
use crate::skip_unless;
use crate::switchboard::{Switchboard, assert_ports_carried_traffic, counter, ports_of_kind};
use crate::traffic::Hosts;
use serde_json::Value;

/// A switchboard in namespace `s` that opened two taps itself, then moved
/// them into namespaces `a` and `b` (the switch keeps its descriptors when
/// the taps change namespace).
struct OwnTaps {
    sw: Switchboard,
    /// The switch's namespace: bind it (not `..`), or it is deleted at once.
    switch_ns: Netns,
    a: Netns,
    b: Netns,
    tap1: String,
    tap2: String,
}

impl OwnTaps {
    /// Starts `switchboard switch -t TAP1 -t TAP2 EXTRA...`, taps named
    /// with `letter`.
    fn start(dir: &TestDir, letter: char, extra: &[&str]) -> OwnTaps {
        let (s, a, b) = (Netns::new(), Netns::new(), Netns::new());
        let (tap1, tap2) = (tap_name(letter), tap_name(letter));
        let mut args = vec!["-t", &tap1, "-t", &tap2];
        args.extend_from_slice(extra);
        let sw = Switchboard::start(
            Some(&s),
            &dir.join("sw"),
            &args,
            &[&tap1, &tap2],
            dir.join("switchboard.log"),
        );
        s.move_link(&tap1, &a);
        s.move_link(&tap2, &b);
        OwnTaps {
            sw,
            switch_ns: s,
            a,
            b,
            tap1,
            tap2,
        }
    }
}

#[test]
fn own_taps_ping_and_iperf() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let dir = TestDir::new("taps");
    let OwnTaps {
        mut sw,
        a,
        b,
        tap1,
        tap2,
        switch_ns: _switch_ns,
    } = OwnTaps::start(&dir, 't', &[]);
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
    let OwnTaps {
        mut sw,
        a,
        b,
        tap1,
        tap2,
        switch_ns: _switch_ns,
    } = OwnTaps::start(&dir, 'n', &["--napi-thread", "--no-offload"]);
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
