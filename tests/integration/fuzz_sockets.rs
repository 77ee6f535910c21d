//! Fuzz-style robustness: random byte streams and random datagrams thrown
//! at every socket a switch listens on must cost the sender its connection
//! (or its frames) and nothing else. The switch must not die, and two
//! established, well-behaved ports must keep exchanging frames byte-exact
//! throughout.
//!
//! Sockets fuzzed: `DIR/ctl` (VDE2 handshakes), `DIR/control` (ctl
//! requests), the QEMU stream listeners on a Unix path and on TCP
//! (loopback), the `--dgram` hub, the data socket of an established VDE
//! port (from strangers: the kernel refuses them, the socket is connected),
//! and an established VDE port sending junk frames. Everything stays on
//! loopback and in a scratch directory.
//!
//! The generator is a seeded xorshift, so a failure is reproducible: the
//! seed is printed, and `SBT_FUZZ_SEED=N` replays it.

use crate::netns::{TestDir, secs, wait_until};
use crate::switchboard::{Switchboard, rows};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use switchboard_plugs::vde::{VdeClient, VdeClientPort};
use switchboard_plugs::{FrameBatch, Plug, RecvStatus};

/// Connections and datagram bursts in all.
const ROUNDS: usize = 200;
/// Rounds between health checks.
const BATCH: usize = 20;
/// The fuzzing itself stops after this long, whatever the round.
const FUZZ_BUDGET: Duration = Duration::from_secs(20);

const MAC_A: [u8; 6] = [0x02, 0x00, 0x5b, 0xf0, 0x00, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0x00, 0x5b, 0xf0, 0x00, 0x0b];
/// Starts the payload of every frame the good ports exchange; anything
/// else they receive is fuzz traffic flooded to them, and ignored.
const MARKER: &[u8; 8] = b"SBTFUZZ!";

/// xorshift64*: small, seeded, good enough to pick lengths and bytes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `1/n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// An Ethernet frame between the good ports: EtherType 0x88b5, the marker,
/// the round, then a pattern, `len` bytes in all.
fn good_frame(dst: [u8; 6], src: [u8; 6], round: usize, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(MARKER);
    f.extend_from_slice(&(round as u32).to_be_bytes());
    f.extend((f.len()..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(round as u8)));
    f
}

fn carries_marker(f: &[u8]) -> bool {
    f.len() >= 22 && f[12..14] == [0x88, 0xb5] && &f[14..22] == MARKER
}

/// Reads and discards whatever is waiting on `port` until it has been
/// quiet for 50 ms (bounded).
fn drain(port: &mut VdeClientPort, who: &str) {
    let deadline = Instant::now() + secs(3);
    let mut quiet_since = Instant::now();
    let mut batch = FrameBatch::new();
    while Instant::now() < deadline {
        batch.clear();
        let status = port.recv_batch(&mut batch).expect("recv on a good port");
        assert_ne!(status, RecvStatus::Closed, "good port {who} was unplugged");
        if !batch.is_empty() {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_millis(50) {
            return;
        } else {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Waits (bounded) for `want` on `port`, skipping fuzz frames; a marked
/// frame that is not `want` is corruption.
fn expect_frame(port: &mut VdeClientPort, want: &[u8], who: &str, sw: &mut Switchboard) {
    let deadline = Instant::now() + secs(5);
    let mut batch = FrameBatch::new();
    let mut skipped = 0usize;
    loop {
        batch.clear();
        let status = port.recv_batch(&mut batch).expect("recv on a good port");
        for i in 0..batch.len() {
            let f = batch.frame(i);
            if f == want {
                return;
            }
            if carries_marker(f) {
                panic!(
                    "{who} got a marked frame that is not the one sent ({} bytes, want {}):\n{:02x?}",
                    f.len(),
                    want.len(),
                    &f[..f.len().min(64)]
                );
            }
            skipped += 1;
        }
        assert_ne!(status, RecvStatus::Closed, "good port {who} was unplugged");
        assert!(
            Instant::now() < deadline,
            "{who} never got its {}-byte frame (skipped {skipped} fuzz frames); switch running: {}\n{}",
            want.len(),
            sw.running(),
            sw.log()
        );
        if status == RecvStatus::Drained {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// One frame each way between the good ports, byte-exact, both sizes.
fn exchange(a: &mut VdeClientPort, b: &mut VdeClientPort, round: usize, sw: &mut Switchboard) {
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
    drain(a, "a");
    drain(b, "b");
    for (k, len) in [60usize, 1514].into_iter().enumerate() {
        let tag = round * 2 + k;
        let to_b = good_frame(MAC_B, MAC_A, tag, len);
        let to_a = good_frame(MAC_A, MAC_B, tag, len);
        let mut out = FrameBatch::new();
        out.push(&to_b);
        assert_eq!(a.send_batch(&out, &[0]).sent, 1, "a could not send");
        expect_frame(b, &to_b, "b", sw);
        out.clear();
        out.push(&to_a);
        assert_eq!(b.send_batch(&out, &[0]).sent, 1, "b could not send");
        expect_frame(a, &to_a, "a", sw);
    }
}

/// Everything the fuzzer needs to reach the switch.
struct Targets {
    ctl: PathBuf,
    control: PathBuf,
    stream: PathBuf,
    tcp: SocketAddr,
    dgram: Option<PathBuf>,
    data: PathBuf,
    scratch: PathBuf,
}

/// Connections kept open until the end of a batch: half-sent requests and
/// frames, and peers that never read.
#[derive(Default)]
struct Held {
    unix: Vec<UnixStream>,
    tcp: Vec<TcpStream>,
}

/// Counts, for the summary line.
#[derive(Default, Debug)]
struct Tally {
    ctl: usize,
    control: usize,
    stream_unix: usize,
    stream_tcp: usize,
    dgram: usize,
    data_refused: usize,
    data_accepted: usize,
    junk_frames: usize,
}

/// Writes what the peer takes (it may close on us at any point: that is
/// its right) and returns whether all of it went.
fn write_some(w: &mut impl Write, bytes: &[u8]) -> bool {
    w.write_all(bytes).is_ok()
}

/// Reads whatever arrives within `wait`; errors and EOF end it quietly.
fn read_briefly(r: &mut impl Read, wait: Duration) {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    for _ in 0..64 {
        if Instant::now() >= deadline {
            return;
        }
        match r.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A VDE2 request header (host byte order): magic, version, then a type
/// (v3) or a MAC (v1).
fn vde_header(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0xfeed_faceu32.to_ne_bytes());
    let version: u32 = match rng.below(4) {
        0 => 1,
        1 => rng.next() as u32,
        _ => 3,
    };
    v.extend_from_slice(&version.to_ne_bytes());
    if version == 1 {
        v.extend_from_slice(&rng.bytes(6));
    } else {
        let kind: u32 = if rng.one_in(3) {
            rng.next() as u32
        } else {
            rng.below(3) as u32
        };
        v.extend_from_slice(&kind.to_ne_bytes());
    }
    v
}

/// A `sockaddr_un` naming nothing that exists: either a path in the
/// scratch directory that is never created, or garbage whose first byte is
/// 0x01 (a relative name nobody has; never 0, which would be an abstract
/// address outside the test's control).
fn bogus_sockaddr(rng: &mut Rng, scratch: &Path, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(110);
    let family: u16 = if rng.one_in(4) { rng.next() as u16 } else { 1 };
    v.extend_from_slice(&family.to_ne_bytes());
    let mut path = [0u8; 108];
    if rng.one_in(2) {
        let p = scratch.join(format!("no-such-client-{n}"));
        let p = p.to_str().expect("utf-8 path").as_bytes();
        path[..p.len()].copy_from_slice(p);
        // Sometimes no NUL terminator: garbage to the end.
        if rng.one_in(3) {
            for b in &mut path[p.len()..] {
                *b = (rng.next() as u8) | 1;
            }
        }
    } else {
        path.copy_from_slice(&rng.bytes(108));
        path[0] = 0x01;
    }
    v.extend_from_slice(&path);
    v
}

/// Random bytes for `DIR/ctl`: pure garbage, or a VDE2 request that is
/// truncated, has a bad version or type, names no socket, or carries an
/// oversized description.
fn ctl_bytes(rng: &mut Rng, t: &Targets, n: usize) -> Vec<u8> {
    match rng.below(4) {
        0 => {
            let len = rng.below(600);
            rng.bytes(len)
        }
        1 => {
            let mut v = vde_header(rng);
            let len = rng.below(600);
            v.extend_from_slice(&rng.bytes(len));
            v
        }
        _ => {
            let mut v = vde_header(rng);
            v.extend_from_slice(&bogus_sockaddr(rng, &t.scratch, n));
            let len = match rng.below(4) {
                0 => 0,
                1 => 128,
                2 => 129 + rng.below(400),
                _ => rng.below(128),
            };
            v.extend_from_slice(&rng.bytes(len));
            if rng.one_in(3) {
                // Cut short: the rest never comes.
                let cut = rng.below(v.len() + 1);
                v.truncate(cut);
            }
            v
        }
    }
}

/// Random request lines for the control socket.
fn control_bytes(rng: &mut Rng) -> Vec<u8> {
    match rng.below(5) {
        0 => {
            let len = rng.below(600);
            rng.bytes(len)
        }
        1 => {
            // Known words with garbage arguments.
            let words = ["ports", "macs", "stats", "reset", "", "\t"];
            let mut v = Vec::new();
            for _ in 0..1 + rng.below(5) {
                v.extend_from_slice(words[rng.below(words.len())].as_bytes());
                v.push(b' ');
                if rng.one_in(2) {
                    let len = rng.below(40);
                    v.extend_from_slice(&rng.bytes(len));
                }
            }
            v.push(b'\n');
            v
        }
        2 => {
            // A line longer than the limit.
            let mut v = vec![b'x'; 4097 + rng.below(4000)];
            v.push(b'\n');
            v
        }
        3 => b"\n\n\r\n \n".to_vec(),
        _ => {
            let len = rng.below(200);
            let mut v = rng.bytes(len);
            v.push(b'\n');
            v.extend_from_slice(b"ports\n");
            v
        }
    }
}

/// A random QEMU-framed byte stream (4-byte big-endian lengths): zero and
/// huge lengths, frames of every size, frames cut short, raw garbage.
fn stream_bytes(rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..1 + rng.below(6) {
        match rng.below(6) {
            0 => v.extend_from_slice(&0u32.to_be_bytes()),
            1 => {
                let huge = match rng.below(3) {
                    0 => u32::MAX,
                    1 => 65536 + 14 + 4 + rng.below(1 << 20) as u32,
                    _ => rng.next() as u32 | 0x8000_0000,
                };
                v.extend_from_slice(&huge.to_be_bytes());
                let len = rng.below(300);
                v.extend_from_slice(&rng.bytes(len));
            }
            2 | 3 => {
                let len = match rng.below(8) {
                    0 => 1 + rng.below(13),
                    1 => 1515 + rng.below(9000),
                    2 => 65535,
                    _ => 14 + rng.below(1500),
                };
                v.extend_from_slice(&(len as u32).to_be_bytes());
                v.extend_from_slice(&rng.bytes(len));
            }
            4 => {
                // A frame cut short.
                let len = 14 + rng.below(1500);
                v.extend_from_slice(&(len as u32).to_be_bytes());
                let have = rng.below(len);
                v.extend_from_slice(&rng.bytes(have));
                break;
            }
            _ => {
                let len = rng.below(600);
                v.extend_from_slice(&rng.bytes(len));
            }
        }
    }
    if rng.one_in(4) {
        // Half a length prefix at the end.
        let cut = rng.below(4);
        v.extend_from_slice(&rng.bytes(cut));
    }
    v
}

/// A random datagram: empty, a runt, an Ethernet-sized frame, a jumbo or a
/// 64 KiB one.
fn datagram(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(8) {
        0 => 0,
        1 => rng.below(14),
        2 => 1515 + rng.below(8000),
        3 => 60_000 + rng.below(5536),
        _ => 14 + rng.below(1500),
    };
    let mut d = rng.bytes(len);
    if d.len() >= 6 && rng.one_in(3) {
        d[..6].copy_from_slice(&[0xff; 6]); // broadcast: flooded to everyone
    }
    d
}

/// What to do with a stream connection after writing.
fn finish<S: Read + Write>(
    rng: &mut Rng,
    mut s: S,
    shutdown: impl FnOnce(&S),
    keep: impl FnOnce(S),
) {
    match rng.below(4) {
        0 => drop(s),
        1 => {
            shutdown(&s);
            read_briefly(&mut s, Duration::from_millis(20));
        }
        2 => read_briefly(&mut s, Duration::from_millis(5)),
        _ => keep(s),
    }
}

/// One round of fuzzing against one socket kind.
fn fuzz_round(
    rng: &mut Rng,
    n: usize,
    t: &Targets,
    held: &mut Held,
    tally: &mut Tally,
    junk: &mut VdeClientPort,
    dgram_clients: &[UnixDatagram],
) {
    let connect_unix = |path: &Path| {
        let s =
            UnixStream::connect(path).unwrap_or_else(|e| panic!("connect {}: {e}", path.display()));
        s.set_write_timeout(Some(secs(1))).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        s
    };
    let shut_unix = |s: &UnixStream| {
        let _ = s.shutdown(Shutdown::Write);
    };
    match rng.below(8) {
        0 | 1 => {
            tally.ctl += 1;
            let mut s = connect_unix(&t.ctl);
            write_some(&mut s, &ctl_bytes(rng, t, n));
            finish(rng, s, shut_unix, |s| held.unix.push(s));
        }
        2 => {
            tally.control += 1;
            let mut s = connect_unix(&t.control);
            write_some(&mut s, &control_bytes(rng));
            finish(rng, s, shut_unix, |s| held.unix.push(s));
        }
        3 => {
            tally.stream_unix += 1;
            let mut s = connect_unix(&t.stream);
            write_some(&mut s, &stream_bytes(rng));
            finish(rng, s, shut_unix, |s| held.unix.push(s));
        }
        4 => {
            tally.stream_tcp += 1;
            let mut s = TcpStream::connect_timeout(&t.tcp, secs(2))
                .unwrap_or_else(|e| panic!("connect tcp {}: {e}", t.tcp));
            s.set_write_timeout(Some(secs(1))).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            write_some(&mut s, &stream_bytes(rng));
            finish(
                rng,
                s,
                |s| {
                    let _ = s.shutdown(Shutdown::Write);
                },
                |s| held.tcp.push(s),
            );
        }
        5 => {
            // Strangers writing to an established port's data socket: it is
            // connected to its client, so the kernel refuses them.
            let stranger = if rng.one_in(2) {
                UnixDatagram::unbound().unwrap()
            } else {
                let p = t.scratch.join(format!("stranger-{n}"));
                let s = UnixDatagram::bind(&p).unwrap();
                let _ = std::fs::remove_file(&p);
                s
            };
            stranger.set_write_timeout(Some(secs(1))).unwrap();
            for _ in 0..1 + rng.below(8) {
                match stranger.send_to(&datagram(rng), &t.data) {
                    Ok(_) => tally.data_accepted += 1,
                    Err(_) => tally.data_refused += 1,
                }
            }
        }
        6 => {
            // An established port that sends junk frames: empty, runts,
            // oversized, random addresses.
            let mut out = FrameBatch::new();
            for _ in 0..1 + rng.below(16) {
                let d = datagram(rng);
                out.push(&d[..d.len().min(9000 + 18)]);
            }
            let which: Vec<u16> = (0..out.len() as u16).collect();
            let report = junk.send_batch(&out, &which);
            tally.junk_frames += report.sent;
        }
        _ => match &t.dgram {
            Some(hub) => {
                tally.dgram += 1;
                // A few regular senders, a fresh one whose socket vanishes
                // right after (the hub finds it gone on its next send), or
                // an unbound one the hub cannot answer.
                let (sender, fresh) = match rng.below(4) {
                    0 => {
                        let p = t.scratch.join(format!("dg-fresh-{n}"));
                        (UnixDatagram::bind(&p).unwrap(), Some(p))
                    }
                    1 => (UnixDatagram::unbound().unwrap(), None),
                    _ => (
                        dgram_clients[rng.below(dgram_clients.len())]
                            .try_clone()
                            .unwrap(),
                        None,
                    ),
                };
                sender.set_write_timeout(Some(secs(1))).unwrap();
                for _ in 0..1 + rng.below(8) {
                    // The hub may drop, refuse or be full: all fine.
                    let _ = sender.send_to(&datagram(rng), hub);
                }
                if let Some(p) = fresh {
                    drop(sender);
                    let _ = std::fs::remove_file(p);
                }
            }
            None => {
                // TODO(dgram): once `switchboard switch --dgram PATH` exists,
                // fuzz it here with random datagrams from bound sockets.
            }
        },
    }
}

/// Finds a free TCP port on loopback.
fn free_tcp_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap()
}

/// Whether `switchboard switch` takes `--dgram`.
fn has_dgram_flag() -> bool {
    let r = crate::netns::run(
        std::process::Command::new(crate::switchboard::BIN).args(["switch", "--help"]),
        secs(10),
    );
    r.stdout.contains("--dgram")
}

/// The port rows whose description contains `needle`.
fn rows_describing<'a>(ports: &'a [Value], needle: &str) -> Vec<&'a Value> {
    ports
        .iter()
        .filter(|p| {
            p.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.contains(needle))
        })
        .collect()
}

#[test]
fn fuzz_every_socket_kind_leaves_good_ports_working() {
    let seed = std::env::var("SBT_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f00d_cafe_d00d_u64);
    eprintln!("fuzz_sockets: seed {seed} (SBT_FUZZ_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);

    let dir = TestDir::new("fuzz");
    let sock = dir.join("sw");
    let stream = sock.join("s.stream");
    let tcp = free_tcp_port();
    let dgram = has_dgram_flag().then(|| dir.join("hub.dgram"));
    let (stream_s, tcp_s) = (
        stream.to_str().expect("utf-8 path").to_string(),
        tcp.to_string(),
    );
    // Room for the fuzzers' ports: most stream connections and datagram
    // senders become ports for a while.
    let mut args = vec!["-n", "128", "--stream", &stream_s, "--stream-tcp", &tcp_s];
    let dgram_s = dgram
        .as_ref()
        .map(|p| p.to_str().expect("utf-8").to_string());
    if let Some(d) = &dgram_s {
        args.extend_from_slice(&["--dgram", d]);
    } else {
        eprintln!("fuzz_sockets: no --dgram flag yet; the datagram hub is not fuzzed");
    }
    let mut sw = Switchboard::start(None, &sock, &args, &[], dir.join("switchboard.log"));
    assert!(
        wait_until(secs(5), || UnixStream::connect(&stream).is_ok()
            && TcpStream::connect_timeout(&tcp, secs(1)).is_ok()),
        "stream listeners not up:\n{}",
        sw.log()
    );

    let mut a = VdeClient::connect(&sock, None, "sbt-fuzz-good-a").expect("good port a");
    let mut b = VdeClient::connect(&sock, None, "sbt-fuzz-good-b").expect("good port b");
    let mut junk = VdeClient::connect(&sock, None, "sbt-fuzz-junk").expect("junk port");
    exchange(&mut a, &mut b, 0, &mut sw);

    let targets = Targets {
        ctl: sock.join("ctl"),
        control: sock.join("control"),
        stream,
        tcp,
        dgram,
        data: a.data_path().to_path_buf(),
        scratch: dir.path().to_path_buf(),
    };
    let dgram_clients: Vec<UnixDatagram> = (0..4)
        .map(|i| UnixDatagram::bind(dir.join(format!("dg-{i}"))).expect("bind dgram client"))
        .collect();
    for c in &dgram_clients {
        // They never read: the hub's sends to them fill up and drop.
        c.set_nonblocking(true).unwrap();
    }

    let started = Instant::now();
    let mut tally = Tally::default();
    let mut done = 0;
    while done < ROUNDS && started.elapsed() < FUZZ_BUDGET {
        let mut held = Held::default();
        for _ in 0..BATCH {
            fuzz_round(
                &mut rng,
                done,
                &targets,
                &mut held,
                &mut tally,
                &mut junk,
                &dgram_clients,
            );
            done += 1;
        }
        assert!(
            sw.running(),
            "switchboard died after {done} rounds (seed {seed}):\n{}",
            sw.log()
        );
        // With the half-open connections still held, then without.
        exchange(&mut a, &mut b, done, &mut sw);
        drop(held);
        drain(&mut junk, "junk");
        exchange(&mut a, &mut b, done + 1, &mut sw);
    }
    eprintln!(
        "fuzz_sockets: {done} rounds in {:.1?}: {tally:?}",
        started.elapsed()
    );
    assert!(done >= BATCH, "not even one batch within {FUZZ_BUDGET:?}");
    assert_eq!(
        tally.data_accepted, 0,
        "the kernel let strangers write to a connected data socket"
    );

    assert!(sw.running(), "switchboard died:\n{}", sw.log());
    let doc = sw.ctl_json(&["ports"]);
    let ports = rows(&doc, "ports").expect("ports array");
    for name in ["sbt-fuzz-good-a", "sbt-fuzz-good-b"] {
        assert_eq!(
            rows_describing(&ports, name).len(),
            1,
            "{name} is not attached (once) after the fuzzing: {ports:#?}"
        );
    }
    exchange(&mut a, &mut b, 1_000_000, &mut sw);
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
}
