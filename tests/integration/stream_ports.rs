//! QEMU stream sockets (`--stream`, `--stream-tcp`) without QEMU: clients
//! speaking the 4-byte length framing, as QEMU, passt and libkrun do. Frames
//! must cross byte-exact, a client that leaves must lose its port, and one
//! that comes back (QEMU's `reconnect=`) must get a port and traffic again.

use crate::netns::{TestDir, secs, wait_until};
use crate::switchboard::{Switchboard, ports_of_kind};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;

const MAC_A: [u8; 6] = [0x02, 0x00, 0x5c, 0x00, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x00, 0x5c, 0x00, 0x00, 0x0b];

fn frame(dst: [u8; 6], src: [u8; 6], seed: u8, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((f.len()..len).map(|i| seed.wrapping_add(i as u8)));
    f
}

/// A QEMU-framed connection, Unix or TCP.
trait Conn: Read + Write {}
impl Conn for UnixStream {}
impl Conn for TcpStream {}

fn send(c: &mut dyn Conn, f: &[u8]) {
    c.write_all(&(f.len() as u32).to_be_bytes()).unwrap();
    c.write_all(f).unwrap();
}

fn recv(c: &mut dyn Conn) -> Vec<u8> {
    let mut len = [0u8; 4];
    c.read_exact(&mut len)
        .expect("a length prefix within the timeout");
    let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
    c.read_exact(&mut f).expect("the whole frame");
    f
}

fn unix(path: &Path) -> Box<dyn Conn> {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(secs(5))).unwrap();
    Box::new(s)
}

fn tcp(addr: SocketAddr) -> Box<dyn Conn> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(secs(5))).unwrap();
    Box::new(s)
}

/// A says hello to everyone, B answers A directly, both byte-exact.
fn exchange(a: &mut dyn Conn, b: &mut dyn Conn, seed: u8) {
    let hello = frame([0xff; 6], MAC_A, seed, 60);
    send(a, &hello);
    assert_eq!(recv(b), hello, "broadcast from A");
    let reply = frame(MAC_A, MAC_B, seed.wrapping_add(1), 1514);
    send(b, &reply);
    assert_eq!(recv(a), reply, "unicast from B");
}

#[test]
fn stream_clients_exchange_frames_and_reconnect() {
    let dir = TestDir::new("streams");
    let sock = dir.join("sw");
    let path = dir.join("vm.stream");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let sw = Switchboard::start(
        None,
        &sock,
        &[
            "--stream",
            path.to_str().unwrap(),
            "--stream-tcp",
            &addr.to_string(),
        ],
        &[],
        dir.join("switchboard.log"),
    );
    let streams = || ports_of_kind(&sw.ports(), "stream").len();

    // A on the Unix socket, B over TCP: both are ports of one segment.
    let mut a = unix(&path);
    let mut b = tcp(addr);
    assert!(
        wait_until(secs(5), || streams() == 2),
        "two stream ports expected"
    );
    exchange(a.as_mut(), b.as_mut(), 1);

    // A goes away (a VM stops): its port goes.
    drop(a);
    assert!(
        wait_until(secs(5), || streams() == 1),
        "A's port was not removed"
    );

    // A comes back (QEMU reconnect=): a port again, and traffic again.
    let mut a = unix(&path);
    assert!(
        wait_until(secs(5), || streams() == 2),
        "A did not get a port back"
    );
    exchange(a.as_mut(), b.as_mut(), 7);

    // A zero length closes only that connection; B's port stays.
    a.write_all(&[0, 0, 0, 0]).unwrap();
    let mut probe = [0u8; 1];
    assert!(
        matches!(a.read(&mut probe), Ok(0) | Err(_)),
        "A was not disconnected"
    );
    assert!(
        wait_until(secs(5), || streams() == 1),
        "A's port was not removed"
    );
    let mut c = unix(&path);
    exchange(c.as_mut(), b.as_mut(), 9);
}

/// `switchboard plug` as the server side of QEMU's socket netdevs: a
/// client connecting to `stream:///P?listen` (QEMU `server=off`) or to
/// `tcp://ADDR?listen`, and a QEMU-style dgram peer behind
/// `dgram:///R?local=L`, each reach a client on the switch's own stream
/// socket, and a listening plug takes the next client when one leaves.
#[test]
fn plug_serves_qemu_socket_clients() {
    use crate::netns::Proc;
    use crate::switchboard::BIN;
    use std::os::unix::net::UnixDatagram;
    use std::process::Command;

    let dir = TestDir::new("plugqemu");
    let sock = dir.join("sw");
    let sw_stream = dir.join("sw.stream");
    let _sw = Switchboard::start(
        None,
        &sock,
        &["--stream", sw_stream.to_str().unwrap()],
        &[],
        dir.join("switchboard.log"),
    );
    let vde = format!("vde://{}", sock.display());
    let cable = |args: &[&str], log: &str| {
        let mut c = Command::new(BIN);
        c.arg("plug").args(args);
        Proc::spawn("switchboard plug", c, dir.join(log))
    };
    let mut b = unix(&sw_stream);

    // stream:///P?listen, and its next client after the first leaves
    let p = dir.join("vm.sock");
    let mut c1 = cable(
        &[&vde, &format!("stream://{}?listen", p.display())],
        "c1.log",
    );
    assert!(
        wait_until(secs(5), || p.exists()),
        "no listening socket: {}",
        c1.log()
    );
    let mut a = unix(&p);
    exchange(a.as_mut(), b.as_mut(), 11);
    drop(a);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut a = unix(&p);
    exchange(a.as_mut(), b.as_mut(), 13);
    drop(a);
    assert!(c1.running(), "the listening plug exited: {}", c1.log());
    drop(c1);

    // tcp://ADDR?listen
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let c2 = cable(&[&vde, &format!("tcp://{addr}?listen")], "c2.log");
    assert!(
        wait_until(secs(5), || TcpStream::connect(addr).is_ok()),
        "tcp listener: {}",
        c2.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut a = tcp(addr);
    exchange(a.as_mut(), b.as_mut(), 17);
    drop(a);
    drop(c2);

    // dgram:///R?local=L, with the test as the QEMU dgram peer bound at R
    let r = dir.join("vm.dgram");
    let l = dir.join("plug.dgram");
    let vm = UnixDatagram::bind(&r).unwrap();
    vm.set_read_timeout(Some(secs(5))).unwrap();
    let c3 = cable(
        &[
            &vde,
            &format!("dgram://{}?local={}", r.display(), l.display()),
        ],
        "c3.log",
    );
    assert!(
        wait_until(secs(5), || l.exists()),
        "no local socket: {}",
        c3.log()
    );
    vm.connect(&l).unwrap();
    let hello = frame([0xff; 6], MAC_A, 19, 60);
    vm.send(&hello).unwrap();
    assert_eq!(recv(b.as_mut()), hello, "broadcast from the dgram peer");
    let reply = frame(MAC_A, MAC_B, 20, 1514);
    send(b.as_mut(), &reply);
    let mut buf = vec![0u8; 2048];
    let n = vm.recv(&mut buf).expect("a reply to the dgram peer");
    assert_eq!(&buf[..n], &reply[..], "unicast to the dgram peer");
}

/// `-m` and `-g` give the QEMU sockets the same mode and group as the VDE
/// sockets, so a VM run by another user can attach either way.
#[test]
fn vde_permissions_apply_to_qemu_sockets() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = TestDir::new("perms");
    let sock = dir.join("sw");
    let stream = dir.join("vm.stream");
    let dgram = dir.join("vm.dgram");
    let gid = nix::unistd::getgid().as_raw().to_string();
    let _sw = Switchboard::start(
        None,
        &sock,
        &[
            "-m",
            "0660",
            "-g",
            &gid,
            "--stream",
            stream.to_str().unwrap(),
            "--dgram",
            dgram.to_str().unwrap(),
        ],
        &[],
        dir.join("switchboard.log"),
    );
    for path in [sock.join("ctl"), stream, dgram] {
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o777,
            0o660,
            "mode of {}",
            path.display()
        );
        assert_eq!(m.gid().to_string(), gid, "group of {}", path.display());
    }
}
