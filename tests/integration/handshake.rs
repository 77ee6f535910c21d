//! Malformed VDE2 handshakes on `DIR/ctl` must cost the sender its
//! connection and nothing else: established ports keep forwarding.

use crate::netns::{Need, secs};
use crate::skip_unless;
use crate::switchboard::ports_of_kind;
use crate::vde_peers::VdeTopology;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A v3 request header: magic, version, type (host byte order).
fn header(magic: u32, version: u32, kind: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(256);
    v.extend_from_slice(&magic.to_ne_bytes());
    v.extend_from_slice(&version.to_ne_bytes());
    v.extend_from_slice(&kind.to_ne_bytes());
    v
}

/// A complete v3 request (`REQ_NEW_CONTROL`) naming `client_path` as the
/// client's data socket, with a description.
fn full_request(version: u32, client_path: &str) -> Vec<u8> {
    let mut v = header(0xfeed_face, version, 0);
    v.extend_from_slice(&1u16.to_ne_bytes()); // AF_UNIX
    let mut path = [0u8; 108];
    path[..client_path.len()].copy_from_slice(client_path.as_bytes());
    v.extend_from_slice(&path);
    v.extend_from_slice(b"sbt malformed handshake test");
    v
}

/// Reads until EOF or `deadline`; returns what was read and whether the
/// switch closed the connection (EOF or reset).
fn read_until_closed(stream: &mut UnixStream, deadline: Instant) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(10))))
            .ok();
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("reading from ctl: {e}"),
        }
    }
    (got, false)
}

#[test]
fn malformed_handshake_keeps_established_port() {
    skip_unless!(Need::Netns, Need::Tool("vde_plug2tap"), Need::Tool("ping"));
    let mut topo = VdeTopology::new("hs", 3);
    topo.hosts().assert_ping(3);

    let ctl = topo.sock.join("ctl");
    let missing_client = topo.dir.join("no-such-client-socket");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"GET / HTTP/1.0\r\n\r\nthis is not a vde request at all".to_vec(),
        ),
        ("short request", header(0xfeed_face, 3, 0)[..10].to_vec()),
        ("wrong version 2", full_request(2, "/tmp/x")),
        ("wrong version 99", full_request(99, "/tmp/x")),
        (
            "client socket does not exist",
            full_request(3, missing_client.to_str().expect("utf-8 path")),
        ),
    ];
    // All connections at once, so the wait is the slowest close, not the sum.
    let mut conns: Vec<(&str, UnixStream)> = cases
        .into_iter()
        .map(|(what, bytes)| {
            let mut s = connect(&ctl);
            s.write_all(&bytes)
                .unwrap_or_else(|e| panic!("{what}: write: {e}"));
            (what, s)
        })
        .collect();
    let deadline = Instant::now() + secs(8);
    for (what, stream) in &mut conns {
        let (reply, closed) = read_until_closed(stream, deadline);
        assert!(
            closed,
            "switchboard kept the connection open after a {what} (got {} bytes)",
            reply.len()
        );
        assert_ne!(
            reply.len(),
            110,
            "{what} got a port (a 110-byte sockaddr_un reply)"
        );
    }

    assert!(topo.sw.running(), "switchboard died:\n{}", topo.sw.log());
    topo.hosts().assert_ping(3);
    let ports = topo.sw.ports();
    assert_eq!(
        ports_of_kind(&ports, "vde").len(),
        2,
        "the malformed requests must not have added ports: {ports:#?}"
    );
    assert!(topo.sw.running(), "switchboard died:\n{}", topo.sw.log());
}

fn connect(path: &Path) -> UnixStream {
    UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()))
}
