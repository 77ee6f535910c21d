//! `switchboard switch --dgram PATH` without QEMU: plain Unix datagram
//! sockets, bound at their own paths, talk to the hub the way QEMU
//! `-netdev dgram,local.path=...,remote.path=PATH` does (one raw Ethernet
//! frame per datagram). Every source path must become its own port, and
//! frames must reach exactly the right peer, byte for byte.

use crate::netns::{TestDir, secs, wait_until};
use crate::switchboard::{Switchboard, assert_ports_carried_traffic, ports_of_kind};
use serde_json::Value;
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

const MAC_A: [u8; 6] = [0x02, 0x00, 0x5b, 0x00, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x00, 0x5b, 0x00, 0x00, 0x0b];
const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame of `len` bytes (EtherType 0x88b5, local experimental)
/// with a payload derived from `seed`.
fn frame(dst: [u8; 6], src: [u8; 6], seed: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((f.len()..len).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8)));
    f
}

/// A "VM": a datagram socket bound at `path`, blocking with a timeout.
fn vm(path: &Path) -> UnixDatagram {
    let s = UnixDatagram::bind(path).expect("bind client socket");
    s.set_read_timeout(Some(secs(5))).unwrap();
    s
}

/// Receives one datagram (bounded by the read timeout) and checks it came
/// from the hub.
fn recv_from_hub(s: &UnixDatagram, hub: &Path, what: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = s
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("{what}: nothing arrived: {e}"));
    assert_eq!(from.as_pathname(), Some(hub), "{what}: sender");
    buf.truncate(n);
    buf
}

/// Asserts nothing is waiting on `s`.
fn assert_nothing(s: &UnixDatagram, what: &str) {
    s.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 70_000];
    match s.recv(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(n) => panic!(
            "{what}: unexpected {n}-byte frame {:02x?}",
            &buf[..n.min(20)]
        ),
        Err(e) => panic!("{what}: {e}"),
    }
    s.set_nonblocking(false).unwrap();
}

fn dgram_ports(sw: &Switchboard) -> Vec<Value> {
    let ports = sw.ports();
    ports_of_kind(&ports, "dgram")
        .into_iter()
        .cloned()
        .collect()
}

#[test]
fn dgram_clients_get_their_own_ports_and_exact_frames() {
    let dir = TestDir::new("dgh");
    let hub = dir.join("hub.dgram");
    let hub_s = hub.to_str().expect("utf-8 path");
    let sw = Switchboard::start(
        None,
        &dir.join("sw"),
        &["--dgram", hub_s],
        &[],
        dir.join("switchboard.log"),
    );
    assert!(
        wait_until(secs(5), || hub.exists()),
        "no hub socket at {hub_s}:\n{}",
        sw.log()
    );
    let (path_a, path_b) = (dir.join("vm-a.dgram"), dir.join("vm-b.dgram"));
    let a = vm(&path_a);
    let b = vm(&path_b);

    // B speaks first, alone: its port appears, its broadcast reaches nobody.
    b.send_to(&frame(BROADCAST, MAC_B, 1, 60), &hub).unwrap();
    assert!(
        wait_until(secs(5), || dgram_ports(&sw).len() == 1),
        "no dgram port for B: {:#?}\n{}",
        sw.ports(),
        sw.log()
    );

    // A's broadcast floods to B, and only to B.
    let bcast = frame(BROADCAST, MAC_A, 2, 60);
    a.send_to(&bcast, &hub).unwrap();
    assert_eq!(recv_from_hub(&b, &hub, "A's broadcast at B"), bcast);

    // Unicast both ways, both learned by now; one frame a full 1514 bytes.
    let to_a = frame(MAC_A, MAC_B, 3, 1514);
    b.send_to(&to_a, &hub).unwrap();
    assert_eq!(recv_from_hub(&a, &hub, "B's unicast at A"), to_a);
    let to_b = frame(MAC_B, MAC_A, 4, 64);
    a.send_to(&to_b, &hub).unwrap();
    assert_eq!(recv_from_hub(&b, &hub, "A's unicast at B"), to_b);
    assert_nothing(&a, "A");
    assert_nothing(&b, "B");

    let ports = sw.ports();
    assert_ports_carried_traffic(&ports, "dgram", 2);
    let described = |p: &Path| {
        ports_of_kind(&ports, "dgram").iter().any(|row| {
            row.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d == format!("dgram unix:{}", p.display()))
        })
    };
    assert!(
        described(&path_a) && described(&path_b),
        "ports do not name their peers: {ports:#?}"
    );

    // A's VM goes away (its socket file with it): the next frame for A
    // finds it gone, and A's port goes.
    drop(a);
    std::fs::remove_file(&path_a).unwrap();
    b.send_to(&frame(MAC_A, MAC_B, 5, 60), &hub).unwrap();
    assert!(
        wait_until(secs(5), || dgram_ports(&sw).len() == 1),
        "A's port stayed after its socket went: {:#?}",
        sw.ports()
    );

    // A VM started again at the same path is a new port, and is reached.
    let a = vm(&path_a);
    a.send_to(&frame(BROADCAST, MAC_A, 6, 60), &hub).unwrap();
    let bcast = recv_from_hub(&b, &hub, "restarted A's broadcast at B");
    assert_eq!(bcast, frame(BROADCAST, MAC_A, 6, 60));
    let to_a = frame(MAC_A, MAC_B, 7, 100);
    b.send_to(&to_a, &hub).unwrap();
    assert_eq!(recv_from_hub(&a, &hub, "B's unicast at new A"), to_a);
    assert_eq!(dgram_ports(&sw).len(), 2);
}

#[test]
fn dgram_clients_beyond_the_port_limit_are_refused_and_harmless() {
    let dir = TestDir::new("dgf");
    let hub = dir.join("hub.dgram");
    let hub_s = hub.to_str().expect("utf-8 path");
    let sw = Switchboard::start(
        None,
        &dir.join("sw"),
        &["-n", "1", "--dgram", hub_s],
        &[],
        dir.join("switchboard.log"),
    );
    assert!(wait_until(secs(5), || hub.exists()), "{}", sw.log());
    let a = vm(&dir.join("vm-a.dgram"));
    let b = vm(&dir.join("vm-b.dgram"));
    a.send_to(&frame(BROADCAST, MAC_A, 1, 60), &hub).unwrap();
    assert!(
        wait_until(secs(5), || dgram_ports(&sw).len() == 1),
        "no port for A: {}",
        sw.log()
    );
    // B finds the segment full: no port, and its frames go nowhere, however
    // many it sends; it is warned about once.
    for i in 0..20 {
        b.send_to(&frame(MAC_A, MAC_B, i, 60), &hub).unwrap();
    }
    assert!(
        wait_until(secs(5), || sw.log().contains("refused a port")),
        "no refusal logged: {}",
        sw.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_nothing(&a, "A");
    let ports = dgram_ports(&sw);
    assert_eq!(ports.len(), 1, "{ports:#?}");
    assert_eq!(
        sw.log().matches("refused a port").count(),
        1,
        "refusals are rate-limited: {}",
        sw.log()
    );
    // A still works.
    a.send_to(&frame(BROADCAST, MAC_A, 2, 60), &hub).unwrap();
    assert!(wait_until(secs(5), || {
        dgram_ports(&sw)
            .first()
            .is_some_and(|p| crate::switchboard::counter(p, "rx_frames") == 2)
    }));
}
