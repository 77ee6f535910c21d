//! End-to-end tests of the switch side: real sockets, real bytes.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::dir::tests::dead_socket;
use super::dir::with_umask_lock;
use super::request::{self, PortRequest, RequestError, RequestVersion, VdeRequest};
use super::*;
use crate::{FrameBatch, Plug, RecvStatus};

/// A switch directory with its listener, in a private temporary directory.
struct TestSwitch {
    dir: SwitchDir,
    listener: VdeListener,
    _tmp: tempfile::TempDir,
}

impl TestSwitch {
    fn new() -> TestSwitch {
        let tmp = with_umask_lock(|| tempfile::tempdir().unwrap());
        let dir = SwitchDir::open(tmp.path().join("sw"), &DirOptions::default()).unwrap();
        let listener = VdeListener::bind(&dir).unwrap();
        TestSwitch {
            dir,
            listener,
            _tmp: tmp,
        }
    }

    /// Accepts the connection a test client just made (it is already in
    /// the backlog once `connect` returned).
    fn accept(&mut self) -> PendingHandshake {
        self.listener
            .accept()
            .unwrap()
            .expect("a connection should be waiting")
    }
}

/// A hand-written VDE2 client: a bound datagram socket and a blocking
/// control connection.
struct TestClient {
    control: UnixStream,
    data: UnixDatagram,
    path: PathBuf,
}

impl TestClient {
    fn connect(switch: &TestSwitch, name: &str) -> TestClient {
        let path = switch.dir.path().join(name);
        let data = with_umask_lock(|| UnixDatagram::bind(&path).unwrap());
        let control = UnixStream::connect(switch.dir.ctl_path()).unwrap();
        control
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        data.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        TestClient {
            control,
            data,
            path,
        }
    }

    fn request(&self, port: PortRequest, description: &str) -> Vec<u8> {
        request_bytes(&self.path, port, description)
    }

    fn send_request(&mut self, port: PortRequest, description: &str) {
        let bytes = self.request(port, description);
        self.control.write_all(&bytes).unwrap();
    }

    /// Reads the switch's reply and connects the data socket to it.
    fn finish(&mut self) -> PathBuf {
        let mut reply = [0u8; request::SOCKADDR_UN_LEN];
        self.control.read_exact(&mut reply).unwrap();
        let data_path = request::decode_reply(&reply).unwrap();
        self.data.connect(&data_path).unwrap();
        data_path
    }

    /// True if the switch has closed the control connection (EOF), without
    /// waiting.
    fn sees_eof(&mut self) -> bool {
        self.control.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        let eof = matches!(self.control.read(&mut byte), Ok(0));
        self.control.set_nonblocking(false).unwrap();
        eof
    }
}

/// A v3 request naming `client_path`, as libvdeplug would send it.
fn request_bytes(client_path: &Path, port: PortRequest, description: &str) -> Vec<u8> {
    VdeRequest {
        version: RequestVersion::V3,
        port,
        client_path: client_path.to_owned(),
        description: description.into(),
        mac: None,
    }
    .encode_v3()
    .unwrap()
}

/// A frame whose bytes depend on `seed`, long enough to be a real frame.
fn frame(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_mul(17).wrapping_add(i as u8))
        .collect()
}

/// Receives until the port reports the client gone, for at most 5 s. (The
/// EOF is immediate, unless a concurrent test's fork briefly holds a copy of
/// the client's descriptor.)
fn wait_closed(port: &mut VdePort) -> bool {
    let mut batch = FrameBatch::new();
    for _ in 0..500 {
        batch.clear();
        if port.recv_batch(&mut batch).unwrap() == RecvStatus::Closed {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn ready(progress: HandshakeProgress) -> VdeRequest {
    match progress {
        HandshakeProgress::Ready(request) => request,
        other => panic!("expected a complete request, got {other:?}"),
    }
}

/// Handshake for a well-behaved test client asking for `port`.
fn plug_in(switch: &mut TestSwitch, name: &str, port: u16) -> (TestClient, VdePort) {
    let mut client = TestClient::connect(switch, name);
    client.send_request(PortRequest::Number(port), name);
    let mut pending = switch.accept();
    let request = ready(pending.read());
    let vde_port = pending.complete(&switch.dir, &request, port).unwrap();
    client.finish();
    (client, vde_port)
}

#[test]
fn full_handshake_and_frames_both_ways() {
    let mut switch = TestSwitch::new();
    let mut client = TestClient::connect(&switch, ".client-1");
    client.send_request(PortRequest::Number(5), "testdescr");

    let mut pending = switch.accept();
    assert!(pending.started() <= Instant::now());
    assert_eq!(pending.peer_uid(), Some(nix::unistd::geteuid().as_raw()));
    let request = ready(pending.read());
    assert_eq!(request.port, PortRequest::Number(5));
    assert_eq!(request.description, "testdescr");
    assert_eq!(request.client_path, client.path);

    let mut port = pending.complete(&switch.dir, &request, 5).unwrap();
    let data_path = client.finish();

    // The reply names our data socket: inside DIR, named 005.<fd>, a socket
    // with the switch's socket mode.
    assert_eq!(data_path, port.data_path());
    assert_eq!(data_path.parent().unwrap(), switch.dir.path());
    let name = data_path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with("005."), "{name}");
    let meta = std::fs::symlink_metadata(&data_path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(port.port_number(), 5);
    assert_eq!(port.requested(), PortRequest::Number(5));
    assert_eq!(port.description(), "testdescr");
    assert_eq!(port.kind(), "vde");
    assert_eq!(port.client_path(), client.path);

    // Client to switch.
    let sent = [frame(1, 60), frame(2, 1514), frame(3, 9000)];
    for f in &sent {
        client.data.send(f).unwrap();
    }
    let mut batch = FrameBatch::new();
    assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
    assert_eq!(batch.len(), 3);
    for (i, f) in sent.iter().enumerate() {
        assert_eq!(batch.frame(i), &f[..], "frame {i}");
    }

    // Switch to client, in the order of `which`.
    let mut out = FrameBatch::new();
    out.push(&frame(7, 64));
    out.push(&frame(8, 1500));
    let report = port.send_batch(&out, &[1, 0]);
    assert_eq!(report.sent, 2);
    assert_eq!(report.sent_bytes, 1564);
    let mut buf = vec![0u8; 2000];
    let n = client.data.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &frame(8, 1500)[..]);
    let n = client.data.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &frame(7, 64)[..]);

    // Unplugging: EOF on the control stream closes the port.
    batch.clear();
    assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
    drop(client.control);
    assert!(wait_closed(&mut port));
    drop(port);
    assert!(
        !data_path.exists(),
        "the data socket file is removed with the port"
    );
}

#[test]
fn port_registers_both_sockets_under_one_token() {
    let mut switch = TestSwitch::new();
    let (client, mut port) = plug_in(&mut switch, ".client-poll", 3);
    let mut poll = Poll::new().unwrap();
    let token = Token(42);
    poll.registry()
        .register(&mut port, token, Interest::READABLE)
        .unwrap();
    let mut events = Events::with_capacity(8);

    let wait_for_token = |poll: &mut Poll, events: &mut Events| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            poll.poll(events, Some(Duration::from_millis(100))).unwrap();
            if events.iter().any(|e| e.token() == token) {
                return true;
            }
        }
        false
    };

    client.data.send(&frame(4, 100)).unwrap();
    assert!(wait_for_token(&mut poll, &mut events), "data readiness");
    let mut batch = FrameBatch::new();
    assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
    assert_eq!(batch.frame(0), &frame(4, 100)[..]);

    drop(client.control);
    assert!(
        wait_for_token(&mut poll, &mut events),
        "control EOF readiness"
    );
    assert!(wait_closed(&mut port));
    poll.registry().deregister(&mut port).unwrap();
}

#[test]
fn a_full_batch_reports_more_and_keeps_the_rest() {
    let mut switch = TestSwitch::new();
    let (client, mut port) = plug_in(&mut switch, ".client-more", 9);
    let total = crate::batch::BATCH_CAPACITY + 4;
    for i in 0..total {
        client.data.send(&frame(i as u8, 60)).unwrap();
    }
    let mut batch = FrameBatch::new();
    assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::More);
    assert!(batch.is_full());
    batch.clear();
    assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
    assert_eq!(batch.len(), 4);
    assert_eq!(batch.frame(3), &frame((total - 1) as u8, 60)[..]);
}

#[test]
fn malformed_requests_fail_cleanly() {
    let mut switch = TestSwitch::new();
    let valid = request_bytes(&switch.dir.path().join(".probe"), PortRequest::Any, "x");

    let mut bad_magic = valid.clone();
    bad_magic[0] ^= 0xff;
    let mut version2 = valid.clone();
    version2[4..8].copy_from_slice(&2u32.to_ne_bytes());
    let mut oversize = valid.clone();
    oversize.resize(400, b'd');
    let mut bad_family = valid.clone();
    bad_family[12..14].copy_from_slice(&10u16.to_ne_bytes());
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();

    let cases: [(&str, Vec<u8>); 5] = [
        ("bad magic", bad_magic),
        ("version 2", version2),
        ("oversize", oversize),
        ("bad family", bad_family),
        ("garbage", garbage),
    ];
    for (what, bytes) in cases {
        let mut control = UnixStream::connect(switch.dir.ctl_path()).unwrap();
        control
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The oversize request may not fit in one write if the switch
        // stops reading, so ignore a short write.
        let _ = control.write(&bytes);
        let mut pending = switch.accept();
        match pending.read() {
            HandshakeProgress::Failed(e) => eprintln!("{what}: {e}"),
            other => panic!("{what}: expected failure, got {other:?}"),
        }
        drop(pending);
        let mut byte = [0u8; 1];
        assert!(
            matches!(control.read(&mut byte), Ok(0) | Err(_)),
            "{what}: connection must be closed"
        );
    }

    // A short request: waits for more, then fails when the client leaves.
    let mut control = UnixStream::connect(switch.dir.ctl_path()).unwrap();
    control.write_all(&valid[..50]).unwrap();
    let mut pending = switch.accept();
    assert!(matches!(pending.read(), HandshakeProgress::NeedMore));
    drop(control);
    assert!(matches!(
        pending.read(),
        HandshakeProgress::Failed(HandshakeError::Closed)
    ));

    // A request in two pieces completes.
    let mut client = TestClient::connect(&switch, ".split");
    let bytes = client.request(PortRequest::Number(2), "split");
    client.control.write_all(&bytes[..10]).unwrap();
    let mut pending = switch.accept();
    assert!(matches!(pending.read(), HandshakeProgress::NeedMore));
    client.control.write_all(&bytes[10..]).unwrap();
    let request = ready(pending.read());
    assert_eq!(request.description, "split");
    // Reading again is harmless and gives the same request.
    assert_eq!(ready(pending.read()), request);

    // The listener still serves a good client afterwards.
    let port = pending.complete(&switch.dir, &request, 2).unwrap();
    client.finish();
    client.data.send(&frame(9, 60)).unwrap();
    let mut port = port;
    let mut batch = FrameBatch::new();
    port.recv_batch(&mut batch).unwrap();
    assert_eq!(batch.frame(0), &frame(9, 60)[..]);
}

#[test]
fn version_errors_are_reported_precisely() {
    let mut switch = TestSwitch::new();
    let mut bytes = request_bytes(&switch.dir.path().join(".v"), PortRequest::Any, "");
    bytes[4..8].copy_from_slice(&2u32.to_ne_bytes());
    let mut control = UnixStream::connect(switch.dir.ctl_path()).unwrap();
    control.write_all(&bytes).unwrap();
    let mut pending = switch.accept();
    match pending.read() {
        HandshakeProgress::Failed(HandshakeError::Request(RequestError::UnsupportedVersion(2))) => {
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unusable_client_paths_fail_complete_and_the_listener_carries_on() {
    let mut switch = TestSwitch::new();
    let tmp = with_umask_lock(|| tempfile::tempdir().unwrap());

    // Each case: a client whose named path is not a socket it bound.
    let missing = tmp.path().join("missing");
    let file = tmp.path().join("file");
    with_umask_lock(|| std::fs::write(&file, b"")).unwrap();
    let real = tmp.path().join("real");
    let _real = with_umask_lock(|| UnixDatagram::bind(&real).unwrap());
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let dead = tmp.path().join("dead");
    dead_socket(&dead);

    for path in [&missing, &file, &link, &dead] {
        let mut control = UnixStream::connect(switch.dir.ctl_path()).unwrap();
        control
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let bytes = request_bytes(path, PortRequest::Any, "");
        control.write_all(&bytes).unwrap();
        let mut pending = switch.accept();
        let request = ready(pending.read());
        let err = pending.complete(&switch.dir, &request, 1).unwrap_err();
        eprintln!("{}: {err}", path.display());
        match (path, &err) {
            (
                p,
                HandshakeError::Client {
                    action: "inspect", ..
                },
            ) if p == &missing => {}
            (p, HandshakeError::ClientNotSocket(_)) if p == &file || p == &link => {}
            (
                p,
                HandshakeError::Client {
                    action: "connect to",
                    ..
                },
            ) if p == &dead => {}
            _ => panic!("{}: unexpected error {err:?}", path.display()),
        }
        let mut byte = [0u8; 1];
        assert!(matches!(control.read(&mut byte), Ok(0)), "client sees EOF");
    }
    // No data socket was left behind.
    let leftovers: Vec<_> = std::fs::read_dir(switch.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "ctl")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (mut client, mut port) = plug_in(&mut switch, ".after", 1);
    let mut out = FrameBatch::new();
    out.push(&frame(5, 80));
    assert_eq!(port.send_batch(&out, &[0]).sent, 1);
    let mut buf = [0u8; 200];
    let n = client.data.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &frame(5, 80)[..]);
    assert!(!client.sees_eof());
}

#[test]
fn stale_directory_is_reused_and_live_one_refused() {
    let tmp = with_umask_lock(|| tempfile::tempdir().unwrap());
    let path = tmp.path().join("sw");

    // A first switch, with one port, "crashes": its files stay behind.
    let dir = SwitchDir::open(&path, &DirOptions::default()).unwrap();
    let listener = VdeListener::bind(&dir).unwrap();
    std::mem::forget(dir);
    let leftover_data = path.join("004.99");
    dead_socket(&leftover_data);

    // While its listener is open, the directory is live.
    let err = SwitchDir::open(&path, &DirOptions::default()).unwrap_err();
    assert!(matches!(err, DirError::InUse(_)), "{err}");
    assert!(leftover_data.exists());

    // Once it is gone, the directory is stale and reused. (A concurrent
    // test's fork may hold the listener for a moment: retry, bounded.)
    drop(listener);
    let mut dir = None;
    for _ in 0..500 {
        match SwitchDir::open(&path, &DirOptions::default()) {
            Ok(d) => {
                dir = Some(d);
                break;
            }
            Err(DirError::InUse(_)) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    }
    let mut dir = dir.expect("the directory stays live after its listener closed");
    assert!(!leftover_data.exists(), "stale data sockets are removed");
    assert!(!path.join("ctl").exists(), "the stale ctl is removed");
    let _listener = VdeListener::bind(&dir).unwrap();
    assert!(path.join("ctl").exists());
    dir.cleanup();
    assert!(!path.join("ctl").exists());

    // A symlink to a directory is refused.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = SwitchDir::open(&link, &DirOptions::default()).unwrap_err();
    assert!(matches!(err, DirError::Symlink(_)), "{err}");
}

/// Drives a real `vde_plug` (vdeplug4) against our switch side: handshake,
/// one frame each way through its stdin/stdout stream framing, unplug.
#[test]
fn real_vde_plug_interoperates() {
    let vde_plug = Path::new("/usr/bin/vde_plug");
    if !vde_plug.exists() {
        eprintln!("skipping real_vde_plug_interoperates: /usr/bin/vde_plug is not installed");
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut switch = TestSwitch::new();
    let url = format!("vde://{}[5]", switch.dir.path().display());
    let mut child = Command::new(vde_plug)
        .args(["-D", "testdescr", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the child whatever happens below.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut child = Reap(child);

    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(16);
    const LISTENER: Token = Token(0);
    const HANDSHAKE: Token = Token(1);
    const PORT: Token = Token(2);
    poll.registry()
        .register(&mut switch.listener, LISTENER, Interest::READABLE)
        .unwrap();

    // Handshake, driven the way the daemon will drive it.
    let mut pending: Option<PendingHandshake> = None;
    let mut port: Option<VdePort> = None;
    let mut requested = None;
    while port.is_none() {
        if Instant::now() > deadline {
            let _ = child.0.kill();
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            panic!("no handshake within 10 s; vde_plug said: {err}");
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for event in events.iter() {
            match event.token() {
                LISTENER => {
                    while let Some(mut p) = switch.listener.accept().unwrap() {
                        poll.registry()
                            .register(&mut p, HANDSHAKE, Interest::READABLE)
                            .unwrap();
                        pending = Some(p);
                    }
                }
                HANDSHAKE => {}
                _ => unreachable!(),
            }
        }
        if let Some(p) = pending.as_mut() {
            match p.read() {
                HandshakeProgress::NeedMore => {}
                HandshakeProgress::Failed(e) => panic!("vde_plug's request failed: {e}"),
                HandshakeProgress::Ready(request) => {
                    let mut p = pending.take().unwrap();
                    poll.registry().deregister(&mut p).unwrap();
                    requested = Some(request.port);
                    let mut new_port = p.complete(&switch.dir, &request, 5).unwrap();
                    poll.registry()
                        .register(&mut new_port, PORT, Interest::READABLE)
                        .unwrap();
                    port = Some(new_port);
                }
            }
        }
    }
    let mut port = port.unwrap();
    assert_eq!(
        requested,
        Some(PortRequest::Number(5)),
        "vde://DIR[5] asks for port 5"
    );
    assert_eq!(port.port_number(), 5);
    eprintln!("vde_plug's description: {:?}", port.description());
    assert!(
        port.description().starts_with("testdescr"),
        "description: {:?}",
        port.description()
    );

    // vde_plug's stdin -> our port: 2-byte big-endian length, then the frame.
    let inbound = frame(0x42, 300);
    let mut framed = (inbound.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&inbound);
    stdin.write_all(&framed).unwrap();
    stdin.flush().unwrap();

    let mut batch = FrameBatch::new();
    while batch.is_empty() {
        assert!(
            Instant::now() < deadline,
            "frame from vde_plug never arrived"
        );
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        let status = port.recv_batch(&mut batch).unwrap();
        assert_ne!(status, RecvStatus::Closed, "vde_plug hung up early");
    }
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.frame(0), &inbound[..]);

    // Our port -> vde_plug's stdout, read on a helper thread so a missing
    // frame times out instead of hanging.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut header = [0u8; 2];
        let result = stdout.read_exact(&mut header).and_then(|()| {
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(header))];
            stdout.read_exact(&mut body).map(|()| (header, body))
        });
        let _ = tx.send(result);
    });
    let outbound = frame(0x17, 1514);
    let mut out = FrameBatch::new();
    out.push(&outbound);
    assert_eq!(port.send_batch(&out, &[0]).sent, 1);
    let remaining = deadline.saturating_duration_since(Instant::now());
    let (header, body) = rx
        .recv_timeout(remaining)
        .expect("frame to vde_plug never came out of its stdout")
        .unwrap();
    assert_eq!(header, [0x05, 0xea], "2-byte big-endian length of 1514");
    assert_eq!(body, outbound);

    // Closing vde_plug's stdin makes it exit and close its control stream.
    drop(stdin);
    loop {
        assert!(Instant::now() < deadline, "port never saw vde_plug leave");
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        batch.clear();
        if port.recv_batch(&mut batch).unwrap() == RecvStatus::Closed {
            break;
        }
    }
    let data_path = port.data_path().to_owned();
    poll.registry().deregister(&mut port).unwrap();
    drop(port);
    assert!(!data_path.exists());
    let _ = child.0.wait();
}
