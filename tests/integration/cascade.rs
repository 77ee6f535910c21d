//! Cables between switches: Debian's `vde_switch` and switchboard joined by
//! `switchboard plug`, with a namespace on each switch.

use crate::netns::{Need, Netns, Proc, TestDir, secs, tap_name, wait_bounded, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, listens, ports_of_kind};
use crate::traffic::Hosts;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// `vde_switch` serving `dir`, ready when it listens on `dir/ctl`.
fn vde_switch(dir: &Path, log: std::path::PathBuf) -> Proc {
    let mut cmd = Command::new("vde_switch");
    cmd.arg("-s").arg(dir);
    let mut p = Proc::spawn("vde_switch", cmd, log);
    let pid = p.pid();
    assert!(
        wait_until(secs(5), || listens(pid, &dir.join("ctl"))),
        "vde_switch not ready: {}",
        p.log()
    );
    assert!(p.running());
    p
}

/// A namespace attached to the switch at `dir` by Debian's vde_plug2tap.
fn plug2tap(ns: &Netns, dir: &Path, tap: &str, log: std::path::PathBuf) -> Proc {
    let p = Proc::spawn(
        "vde_plug2tap",
        ns.command(&["vde_plug2tap", "-s", dir.to_str().unwrap(), tap]),
        log,
    );
    assert!(
        wait_until(secs(5), || ns.has_link(tap)),
        "vde_plug2tap did not create {tap}: {}",
        p.log()
    );
    p
}

fn plug(args: &[&str], log: std::path::PathBuf) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.arg("plug").args(args);
    Proc::spawn("switchboard plug", cmd, log)
}

#[test]
fn plug_cascades_vde_switch_and_switchboard() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_switch"),
        Need::Tool("vde_plug2tap"),
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let dir = TestDir::new("cascade");
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    let (a, b) = (Netns::new(), Netns::new());
    let mut vde = vde_switch(&v1, dir.join("vde_switch.log"));
    let mut sw = Switchboard::start(None, &v2, &[], &[], dir.join("switchboard.log"));
    let url1 = format!("vde://{}", v1.display());
    let url2 = format!("vde://{}", v2.display());
    let mut cable = plug(&[&url1, &url2], dir.join("plug.log"));
    let (ta, tb) = (tap_name('c'), tap_name('d'));
    let _pa = plug2tap(&a, &v1, &ta, dir.join("p2t-a.log"));
    let _pb = plug2tap(&b, &v2, &tb, dir.join("p2t-b.log"));
    let hosts = Hosts::new(&a, &b, 6);
    hosts.address(&ta, &tb);
    hosts.assert_ping(3);
    let bytes = hosts.iperf_a_to_b(2, dir.path());
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed the cascade");

    // The cable is a port on switchboard, described as such.
    let ports = sw.ports();
    let cable_port = ports_of_kind(&ports, "vde")
        .into_iter()
        .find(|p| p["description"].as_str() == Some("switchboard plug"))
        .unwrap_or_else(|| panic!("no cable port: {ports:#?}"));
    assert!(cable_port["rx_frames"].as_u64().unwrap_or(0) > 100);

    // Without --reconnect, the cable ends with an error when a side goes.
    drop(vde.child_mut().kill());
    let status = wait_bounded(cable.child_mut(), secs(10)).expect("plug did not exit");
    assert!(
        !status.success(),
        "plug exited successfully after losing a side"
    );
    assert!(
        cable.log().contains("went away"),
        "no clear message: {}",
        cable.log()
    );
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
}

#[test]
fn plug_reconnects_when_asked() {
    skip_unless!(Need::Netns, Need::Tool("vde_switch"));
    let dir = TestDir::new("reconn");
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    let mut vde = vde_switch(&v1, dir.join("vde_switch-1.log"));
    let sw = Switchboard::start(None, &v2, &[], &[], dir.join("switchboard.log"));
    let url1 = format!("vde://{}", v1.display());
    let url2 = format!("vde://{}", v2.display());
    let mut cable = plug(&["--reconnect", "1", &url1, &url2], dir.join("plug.log"));
    let on_switchboard = || {
        sw.ports()
            .iter()
            .any(|p| p["description"].as_str() == Some("switchboard plug"))
    };
    assert!(
        wait_until(secs(5), on_switchboard),
        "cable never attached: {}",
        cable.log()
    );
    // The vde_switch restarts; the cable must come back to it by itself.
    drop(vde.child_mut().kill());
    let _ = wait_bounded(vde.child_mut(), secs(5));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _vde2 = vde_switch(&v1, dir.join("vde_switch-2.log"));
    let back = wait_until(secs(15), || {
        cable.log().matches("connected side=vde://").count() >= 3
    });
    assert!(back, "the cable did not reconnect: {}", cable.log());
    assert!(
        cable.running(),
        "plug exited despite --reconnect: {}",
        cable.log()
    );
    assert!(on_switchboard(), "the switchboard side was lost");
}

/// A vde_switch (`v1`) and a switchboard (`v2`), each with a namespace on
/// it, joined by the cable `cable(v1, v2)` returns; the namespaces must
/// ping each other through it.
fn ping_across_cable(tag: &str, subnet: u8, cable: impl FnOnce(&str, &str) -> Command) {
    let dir = TestDir::new(tag);
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    let (a, b) = (Netns::new(), Netns::new());
    let _vde = vde_switch(&v1, dir.join("vde_switch.log"));
    let mut sw = Switchboard::start(None, &v2, &[], &[], dir.join("switchboard.log"));
    let mut cable = Proc::spawn(
        "cable",
        cable(v1.to_str().unwrap(), v2.to_str().unwrap()),
        dir.join("cable.log"),
    );
    let (ta, tb) = (tap_name('e'), tap_name('f'));
    let _pa = plug2tap(&a, &v1, &ta, dir.join("p2t-a.log"));
    let _pb = plug2tap(&b, &v2, &tb, dir.join("p2t-b.log"));
    let hosts = Hosts::new(&a, &b, subnet);
    hosts.address(&ta, &tb);
    hosts.assert_ping(3);
    assert!(cable.running(), "the cable died: {}", cable.log());
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
}

/// Debian's dpipe joins Debian's vde_plug (stdin/stdout, 2-byte framing) to
/// `switchboard plug ... -`.
#[test]
fn dpipe_joins_vde_plug_and_switchboard_plug() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_switch"),
        Need::Tool("vde_plug"),
        Need::Tool("dpipe"),
        Need::Tool("vde_plug2tap"),
        Need::Tool("ping")
    );
    ping_across_cable("dpipe", 7, |v1, v2| {
        let mut c = Command::new("dpipe");
        c.args([
            "vde_plug",
            v1,
            "=",
            BIN,
            "plug",
            &format!("vde://{v2}"),
            "-",
        ]);
        c
    });
}

/// switchboard's own `= COMMAND` form runs Debian's vde_plug at the far end.
#[test]
fn plug_pipe_form_drives_vde_plug() {
    skip_unless!(
        Need::Netns,
        Need::Tool("vde_switch"),
        Need::Tool("vde_plug"),
        Need::Tool("vde_plug2tap"),
        Need::Tool("ping")
    );
    ping_across_cable("pipeform", 8, |v1, v2| {
        let mut c = Command::new(BIN);
        c.args(["plug", &format!("vde://{v2}"), "-", "=", "vde_plug", v1]);
        c
    });
}

/// A free UDP port on 127.0.0.1 (bound, then released).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free UDP port")
}

/// Two switchboards joined over UDP by two cables (`vde://` <-> `udp://`),
/// as vdeplug4's udp:// chains switches across hosts.
#[test]
fn udp_cables_join_two_switchboards() {
    skip_unless!(Need::Netns, Need::Tool("vde_plug2tap"), Need::Tool("ping"));
    let dir = TestDir::new("udpcable");
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    let (a, b) = (Netns::new(), Netns::new());
    let sw1 = Switchboard::start(None, &v1, &[], &[], dir.join("sw1.log"));
    let sw2 = Switchboard::start(None, &v2, &[], &[], dir.join("sw2.log"));
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let mut c1 = plug(
        &[
            &format!("vde://{}", v1.display()),
            &format!("udp://127.0.0.1:{p1}->127.0.0.1:{p2}"),
        ],
        dir.join("cable1.log"),
    );
    let mut c2 = plug(
        &[
            &format!("vde://{}", v2.display()),
            &format!("udp://127.0.0.1:{p2}->127.0.0.1:{p1}"),
        ],
        dir.join("cable2.log"),
    );
    let (ta, tb) = (tap_name('g'), tap_name('h'));
    let _pa = plug2tap(&a, &v1, &ta, dir.join("p2t-a.log"));
    let _pb = plug2tap(&b, &v2, &tb, dir.join("p2t-b.log"));
    let hosts = Hosts::new(&a, &b, 9);
    hosts.address(&ta, &tb);
    hosts.assert_ping(3);
    assert!(
        c1.running() && c2.running(),
        "a cable died: {}\n{}",
        c1.log(),
        c2.log()
    );
    for sw in [&sw1, &sw2] {
        assert!(
            sw.ports()
                .iter()
                .any(|p| p["description"].as_str() == Some("switchboard plug")
                    && p["rx_frames"].as_u64().unwrap_or(0) > 0),
            "no cable port with traffic"
        );
    }
}

/// `switchboard plug vde://DIR tap://NAME`, like vde_plug2tap, run inside
/// a namespace: the tap it creates there reaches a host on the switch.
#[test]
fn plug_puts_a_tap_on_a_switch() {
    skip_unless!(Need::Netns, Need::Tool("vde_plug2tap"), Need::Tool("ping"));
    let dir = TestDir::new("plugtap");
    let v1 = dir.join("v1");
    let (a, b) = (Netns::new(), Netns::new());
    let _sw = Switchboard::start(None, &v1, &[], &[], dir.join("sw.log"));
    let (ta, tb) = (tap_name('i'), tap_name('j'));
    let _pa = plug2tap(&a, &v1, &ta, dir.join("p2t-a.log"));
    let url = format!("vde://{}", v1.display());
    let tap_url = format!("tap://{tb}");
    let mut cable = Proc::spawn(
        "switchboard plug",
        b.command(&[BIN, "plug", &url, &tap_url]),
        dir.join("plug.log"),
    );
    assert!(
        wait_until(secs(5), || b.has_link(&tb)),
        "the plug did not create {tb}: {}",
        cable.log()
    );
    let hosts = Hosts::new(&a, &b, 10);
    hosts.address(&ta, &tb);
    hosts.assert_ping(3);
    assert!(cable.running(), "the plug died: {}", cable.log());
}
