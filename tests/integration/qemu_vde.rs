//! A real VM's NIC on a switchboard segment: QEMU's `-netdev vde` (through
//! libvdeplug) and a namespace attached by Debian's `vde_plug2tap` ping each
//! other.

use crate::guest::{self, BOOT_TIMEOUT};
use crate::netns::{Need, Netns, Proc, TestDir, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, counter, ports_of_kind};
use serde_json::Value;

#[test]
fn qemu_vde_guest_pings_namespace() {
    skip_unless!(Need::Netns, Need::Tool("vde_plug2tap"), Need::Tool("ping"));
    let Some(img) = guest::image_or_skip() else {
        return;
    };
    let dir = TestDir::new("qvde");
    let sock = dir.join("sw");
    let sock_s = sock.to_str().expect("utf-8 path");
    let s = Netns::new();
    let h = Netns::new();
    let sw = Switchboard::start(Some(&s), &sock, &[], &[], dir.join("switchboard.log"));
    let tap = tap_name('q');
    let mut plug = Proc::spawn(
        "vde_plug2tap",
        h.command(&["vde_plug2tap", "-s", sock_s, &tap]),
        dir.join("vde_plug2tap.log"),
    );
    assert!(
        wait_until(secs(5), || h.has_link(&tap)),
        "vde_plug2tap did not create {tap}: {}",
        plug.log()
    );
    h.addr_up(&tap, "10.80.0.1/24");

    // Declared last, so QEMU is killed first.
    let mut vm = guest::boot(
        &img,
        &format!("vde,id=n0,sock={sock_s}"),
        "52:54:00:80:00:02",
        "10.80.0.2/24",
        "10.80.0.1",
        30,
    );

    // The guest's own check: it pinged the namespace through the switch.
    let result = vm.wait_for_marker(BOOT_TIMEOUT);
    eprintln!(
        "guest result after {:.1}s: {result:?}",
        vm.elapsed().as_secs_f64()
    );
    let result = result.unwrap_or_else(|| {
        panic!(
            "no {} from the guest within {BOOT_TIMEOUT:?}:\n{}",
            guest::RESULT_MARKER,
            vm.logs()
        )
    });
    assert!(
        result.starts_with("ok"),
        "guest could not ping 10.80.0.1: {result}\n{}",
        vm.logs()
    );

    // And the other way, while the guest waits.
    let r = h.exec(
        &[
            "ping",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-w",
            "10",
            "10.80.0.2",
        ],
        secs(20),
    );
    assert!(
        r.success() && r.stdout.contains(" 3 received"),
        "namespace could not ping the guest: {}\n{}",
        r.describe(),
        vm.logs()
    );

    assert!(vm.running(), "QEMU exited early:\n{}", vm.logs());
    assert!(plug.running(), "vde_plug2tap died: {}", plug.log());
    let ports = sw.ports();
    let vde = ports_of_kind(&ports, "vde");
    let qemu: Vec<&&Value> = vde
        .iter()
        .filter(|p| {
            p.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.starts_with("QEMU"))
        })
        .collect();
    assert_eq!(qemu.len(), 1, "expected one QEMU vde port: {ports:#?}");
    assert!(
        counter(qemu[0], "rx_frames") > 0 && counter(qemu[0], "tx_frames") > 0,
        "QEMU port carried no traffic: {}",
        qemu[0]
    );
    eprintln!(
        "qemu_vde_guest_pings_namespace: done after {:.1}s",
        vm.elapsed().as_secs_f64()
    );
}
