//! Port-to-port frame rate through a running switchboard over QEMU's socket
//! kinds: stream (4-byte framing) and dgram (a frame per datagram). VDE2
//! sockets are measured by `../shared/bench/vdeblast.rs` (the `blast`
//! scenario of `peers.sh`), beside vde_switch. One sender pushes 64-byte
//! unicast frames to one sink for a few seconds; the sink counts what
//! arrives. The switch runs as its own process (the release binary), so this
//! measures what a VM or plug would see, syscalls included.
//!
//! Run with `cargo bench --bench ports` (`PORTS_BENCH_SECS` sets the
//! duration, default 3). Numbers from shared 2-core machines are noisy:
//! compare kinds within one run.

use std::io::{Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FRAME_LEN: usize = 64;
const SINK: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const SOURCE: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_LEN];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f
}

/// One end of a port: send a frame, receive frames (counting them).
trait End: Send {
    fn send(&mut self, f: &[u8]) -> bool;
    fn recv_count(&mut self, buf: &mut [u8]) -> Option<usize>;
}

struct Stream(UnixStream);
impl End for Stream {
    fn send(&mut self, f: &[u8]) -> bool {
        let mut msg = (f.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(f);
        self.0.write_all(&msg).is_ok()
    }
    fn recv_count(&mut self, buf: &mut [u8]) -> Option<usize> {
        // Count whole frames in the byte stream (all frames are FRAME_LEN).
        match self.0.read(buf) {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        }
    }
}

struct Dgram(UnixDatagram);
impl End for Dgram {
    fn send(&mut self, f: &[u8]) -> bool {
        loop {
            match self.0.send(f) {
                Ok(_) => return true,
                // A full queue: a VM would wait for room too.
                Err(e)
                    if e.raw_os_error() == Some(libc::EAGAIN)
                        || e.raw_os_error() == Some(libc::ENOBUFS) =>
                {
                    std::thread::sleep(Duration::from_micros(20))
                }
                Err(_) => return false,
            }
        }
    }
    fn recv_count(&mut self, buf: &mut [u8]) -> Option<usize> {
        match self.0.recv(buf) {
            Ok(n) => Some(n),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Some(0)
            }
            Err(_) => None,
        }
    }
}

/// Runs the sender for `secs` and returns (frames sent, frames received).
fn measure(
    mut tx: Box<dyn End>,
    mut rx: Box<dyn End>,
    stream_bytes: bool,
    secs: u64,
) -> (u64, u64) {
    // The sink announces itself so the switch learns where it is.
    rx.send(&frame([0xff; 6], SINK));
    std::thread::sleep(Duration::from_millis(200));
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut bytes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match rx.recv_count(&mut buf) {
                    Some(n) if stream_bytes => {
                        bytes += n as u64;
                        received.store(bytes / (4 + FRAME_LEN as u64), Ordering::Relaxed);
                    }
                    Some(n) if n > 0 => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        })
    };
    let f = frame(SINK, SOURCE);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for _ in 0..64 {
            if !tx.send(&f) {
                break;
            }
            sent += 1;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let got = received.load(Ordering::Relaxed);
    drop(tx);
    let _ = counter.join();
    (sent, got)
}

struct Switch {
    child: Child,
    dir: PathBuf,
}

impl Drop for Switch {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_switch() -> Switch {
    let dir = std::env::temp_dir().join(format!("sb-bench-ports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("switch")
        .arg("-s")
        .arg(dir.join("sw"))
        .arg("--stream")
        .arg(dir.join("s.stream"))
        .arg("--dgram")
        .arg(dir.join("hub.dgram"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchboard");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("hub.dgram").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Switch { child, dir }
}

fn stream_end(path: &Path) -> Box<dyn End> {
    let s = UnixStream::connect(path).expect("connect stream");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    Box::new(Stream(s))
}

fn dgram_end(dir: &Path, name: &str) -> Box<dyn End> {
    let path = dir.join(name);
    let s = UnixDatagram::bind(&path).expect("bind dgram");
    s.connect(dir.join("hub.dgram")).expect("connect hub");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    Box::new(Dgram(s))
}

/// Opens the two ends of one run.
type MakeEnds<'a> = dyn Fn() -> (Box<dyn End>, Box<dyn End>) + 'a;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = std::env::var("PORTS_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let sw = start_switch();
    println!("port-to-port, {FRAME_LEN}-byte frames, {secs} s each");
    println!(
        "{:<8} {:>12} {:>12} {:>8}",
        "kind", "sent kpps", "recv kpps", "loss %"
    );
    let runs: Vec<(&str, Box<MakeEnds<'_>>, bool)> = vec![
        (
            "stream",
            Box::new(|| {
                (
                    stream_end(&sw.dir.join("s.stream")),
                    stream_end(&sw.dir.join("s.stream")),
                )
            }),
            true,
        ),
        (
            "dgram",
            Box::new(|| (dgram_end(&sw.dir, "a.dgram"), dgram_end(&sw.dir, "b.dgram"))),
            false,
        ),
    ];
    for (kind, make, bytes) in runs {
        let (tx, rx) = make();
        let (sent, got) = measure(tx, rx, bytes, secs);
        let loss = if sent == 0 {
            0.0
        } else {
            100.0 * (sent.saturating_sub(got)) as f64 / sent as f64
        };
        println!(
            "{kind:<8} {:>12.1} {:>12.1} {:>8.2}",
            sent as f64 / secs as f64 / 1000.0,
            got as f64 / secs as f64 / 1000.0,
            loss
        );
    }
}
