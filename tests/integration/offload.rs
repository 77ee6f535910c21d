//! A tap with offloads (super-frames, checksums left to the receiver) on the
//! same segment as a port that takes only wire frames (a VDE2 socket): the
//! switch must segment and checksum in software, or TCP cannot work.

use crate::netns::{Need, Netns, Proc, TestDir, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, counter, ports_of_kind};
use crate::traffic::Hosts;

#[test]
fn offloading_tap_and_vde_plug_carry_tcp_both_ways() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_plug2tap"),
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let dir = TestDir::new("offload");
    let sock = dir.join("sw");
    let (s, a, b) = (Netns::new(), Netns::new(), Netns::new());
    let (tap_a, tap_b) = (tap_name('o'), tap_name('p'));
    // A: a tap the switch opens itself, with offloads (the default).
    let mut sw = Switchboard::start(
        Some(&s),
        &sock,
        &["-t", &tap_a],
        &[&tap_a],
        dir.join("switchboard.log"),
    );
    s.move_link(&tap_a, &a);
    // B: Debian's vde_plug2tap, which knows nothing of offloads.
    let sock_s = sock.to_str().expect("utf-8 path");
    let mut plug = Proc::spawn(
        "vde_plug2tap",
        b.command(&["vde_plug2tap", "-s", sock_s, &tap_b]),
        dir.join("vde_plug2tap.log"),
    );
    assert!(
        wait_until(secs(5), || b.has_link(&tap_b)),
        "vde_plug2tap did not create {tap_b}: {}",
        plug.log()
    );
    let a_to_b = Hosts::new(&a, &b, 5);
    a_to_b.address(&tap_a, &tap_b);
    a_to_b.assert_ping(3);

    // A -> B: super-frames from A must be cut into wire frames for B.
    let bytes = a_to_b.iperf_a_to_b(3, dir.path());
    assert!(bytes > 10_000_000, "A -> B moved only {bytes} bytes");

    let ports = sw.ports();
    let tap = ports_of_kind(&ports, "tap")[0].clone();
    let vde = ports_of_kind(&ports, "vde")[0].clone();
    // The tap delivered super-frames; the VDE port was sent more frames than
    // the tap delivered: the segments.
    assert!(
        counter(&tap, "rx_bytes") / counter(&tap, "rx_frames").max(1) > 3000,
        "no super-frames from the tap: {tap}"
    );
    assert!(
        counter(&vde, "tx_frames") > counter(&tap, "rx_frames"),
        "the VDE port got no segments: tap {tap}, vde {vde}"
    );
    assert!(plug.running(), "vde_plug2tap died: {}", plug.log());
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
}
