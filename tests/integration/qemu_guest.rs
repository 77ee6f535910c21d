//! A real VM's NIC on a switchboard segment, attached each way QEMU offers
//! (`-netdev vde` through libvdeplug, `-netdev stream`, `-netdev dgram`),
//! and a namespace attached by Debian's `vde_plug2tap`: they ping each
//! other.

use crate::guest::{self, BOOT_TIMEOUT};
use crate::netns::{Need, Netns, Proc, TestDir, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, counter, ports_of_kind};
use serde_json::Value;

/// How the guest attaches.
enum Attach {
    Vde,
    Stream,
    Dgram,
}

#[test]
fn qemu_vde_guest_pings_namespace() {
    guest_and_namespace_ping(Attach::Vde, "qvde", 80);
}

#[test]
fn qemu_stream_guest_pings_namespace() {
    guest_and_namespace_ping(Attach::Stream, "qstr", 81);
}

#[test]
fn qemu_dgram_guest_pings_namespace() {
    guest_and_namespace_ping(Attach::Dgram, "qdgr", 82);
}

/// Boots a guest attached by `attach` on `10.<subnet>.0.2`, with a
/// namespace on `.1` attached by vde_plug2tap; both must ping each other
/// and the guest's port must show in `ctl ports` with traffic.
fn guest_and_namespace_ping(attach: Attach, tag: &str, subnet: u8) {
    skip_unless!(Need::Netns, Need::Tool("vde_plug2tap"), Need::Tool("ping"));
    let Some(img) = guest::image_or_skip() else {
        return;
    };
    let dir = TestDir::new(tag);
    let sock = dir.join("sw");
    let sock_s = sock.to_str().expect("utf-8 path");
    let stream = dir.join("vm.stream");
    let stream_s = stream.to_str().expect("utf-8 path");
    let hub = dir.join("hub.dgram");
    let hub_s = hub.to_str().expect("utf-8 path");
    let vm_sock = dir.join("vm.dgram");
    let vm_sock_s = vm_sock.to_str().expect("utf-8 path");
    let s = Netns::new();
    let h = Netns::new();
    let sw = Switchboard::start(
        Some(&s),
        &sock,
        &["--stream", stream_s, "--dgram", hub_s],
        &[],
        dir.join("switchboard.log"),
    );
    let (host_ip, guest_ip) = (format!("10.{subnet}.0.1"), format!("10.{subnet}.0.2"));
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
    h.addr_up(&tap, &format!("{host_ip}/24"));

    let (netdev, kind, descr) = match attach {
        Attach::Vde => (
            format!("vde,id=n0,sock={sock_s}"),
            "vde",
            "QEMU".to_string(),
        ),
        Attach::Stream => (
            format!("stream,id=n0,server=off,addr.type=unix,addr.path={stream_s}"),
            "stream",
            "qemu stream".to_string(),
        ),
        Attach::Dgram => (
            format!(
                "dgram,id=n0,local.type=unix,local.path={vm_sock_s},remote.type=unix,remote.path={hub_s}"
            ),
            "dgram",
            format!("dgram unix:{vm_sock_s}"),
        ),
    };
    // Declared last, so QEMU is killed first.
    let mut vm = guest::boot(
        &img,
        &netdev,
        &format!("52:54:00:{subnet:02x}:00:02"),
        &format!("{guest_ip}/24"),
        &host_ip,
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
        "guest could not ping {host_ip}: {result}\n{}",
        vm.logs()
    );

    // And the other way, while the guest waits.
    let r = h.exec(
        &[
            "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-w", "10", &guest_ip,
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
    let of_kind = ports_of_kind(&ports, kind);
    let qemu: Vec<&&Value> = of_kind
        .iter()
        .filter(|p| {
            p.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.starts_with(&descr))
        })
        .collect();
    assert_eq!(qemu.len(), 1, "expected one QEMU {kind} port: {ports:#?}");
    assert!(
        counter(qemu[0], "rx_frames") > 0 && counter(qemu[0], "tx_frames") > 0,
        "QEMU port carried no traffic: {}",
        qemu[0]
    );
    eprintln!(
        "{tag}: guest and namespace pinged each other; done after {:.1}s",
        vm.elapsed().as_secs_f64()
    );
}

/// A VM on a network with DHCP: the guest asks for its address with
/// udhcpc, gets its reservation, and pings the gateway; the lease shows the
/// name the guest gave.
#[test]
fn qemu_guest_gets_its_address_by_dhcp() {
    skip_unless!(Need::Tool("vde_plug"));
    let Some(img) = guest::image_or_skip() else {
        return;
    };
    let dir = TestDir::new("qdhcp");
    let vde = dir.join("vm");
    let config = format!(
        r#"control = {control}
[networks.vm]
mode = "isolated"
address = "10.83.0.1/24"
vde = {vde}
dhcp = {{ range = "10.83.0.50-10.83.0.60", lease_file = {leases}, hosts = [{{ mac = "52:54:00:83:00:02", ip = "10.83.0.77" }}] }}
"#,
        control = crate::switchboard::toml_path(&dir.join("sw").join("control")),
        vde = crate::switchboard::toml_path(&vde),
        leases = crate::switchboard::toml_path(&dir.join("vm.leases")),
    );
    let sw = Switchboard::run_file(None, &dir.join("sw"), &config, &[], dir.join("sw.log"));
    let vde_s = vde.to_str().expect("utf-8 path");
    let mut vm = guest::boot(
        &img,
        &format!("vde,id=n0,sock={vde_s}"),
        "52:54:00:83:00:02",
        "dhcp",
        "10.83.0.1",
        10,
    );
    let result = vm.wait_for_marker(BOOT_TIMEOUT).unwrap_or_else(|| {
        panic!(
            "no {} from the guest within {BOOT_TIMEOUT:?}:\n{}\n{}",
            guest::RESULT_MARKER,
            vm.logs(),
            sw.log()
        )
    });
    let dhcp = vm
        .marker_line("SBGUEST-DHCP")
        .unwrap_or_else(|| panic!("the guest got no DHCP lease:\n{}\n{}", vm.logs(), sw.log()));
    assert!(
        dhcp.starts_with("ip=10.83.0.77 mask=24"),
        "guest DHCP: {dhcp}"
    );
    assert!(
        result.starts_with("ok"),
        "guest could not ping its gateway: {result}\n{}",
        vm.logs()
    );
    let doc = sw.ctl_json(&["leases", "vm"]);
    let leases = crate::switchboard::rows(&doc, "leases").unwrap();
    assert_eq!(leases.len(), 1, "{doc:#}");
    assert_eq!(leases[0]["ip"], "10.83.0.77");
    assert_eq!(leases[0]["mac"], "52:54:00:83:00:02");
    assert_eq!(leases[0]["hostname"], "sbguest");
    assert_eq!(leases[0]["reserved"], true);
}
