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
