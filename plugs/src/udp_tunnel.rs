//! UDP tunnels: a segment cabled to a segment on another host, one
//! Ethernet frame per UDP datagram, optionally sealed with a pre-shared key.
//!
//! A plain tunnel is the format vdeplug4's `udp://`, QEMU's `-netdev dgram`
//! over inet and `-netdev socket,udp=` all speak (raw frames, no header),
//! so one end may be any of them. A sealed tunnel ([`crate::sealed`]) puts
//! each frame in a ChaCha20-Poly1305 envelope 29 bytes larger; both ends
//! must be switchboards with the same key.
//!
//! Both kinds use one connected UDP socket (`local -> remote`): the kernel
//! delivers only the remote's datagrams to it, and a batch costs one
//! `recvmmsg` and one `sendmmsg`, as for every datagram plug
//! ([`crate::dgram`]). Sealing allocates nothing per frame either: frames
//! are sealed into a second batch the tunnel keeps, and opened in place in
//! the slots `recvmmsg` filled, refused datagrams leaving no gap.
//!
//! A remote that stops answering costs nothing but its own frames: sends
//! never block, an ICMP "port unreachable" it causes is skipped on the next
//! receive, and the port's counters show frames going out and none coming
//! in. There is no keepalive: like a cable, the tunnel is up for as long as
//! it exists.
//!
//! Refused datagrams (forged, replayed, truncated) are counted per tunnel
//! ([`UdpTunnel::seal_stats`]) and logged as totals at most every five
//! seconds while they grow: from the receive path when a batch had
//! refusals, and from [`Plug::check_alive`] (which the daemon calls twice
//! a second) so the last totals show up too. A flood of forgeries costs
//! one tag check each and no log line each.
//!
//! The UDP datagram of a full-size frame (1514 bytes, 1543 sealed) exceeds
//! a 1500-byte underlay MTU, so the kernel fragments it. That works, at a
//! cost; lower the segment's MTU or raise the underlay's to avoid it.

use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket;
use nix::sys::socket::sockopt;

use crate::batch::{ALL_FRAMES, BATCH_CAPACITY, MAX_FRAME_SLOT};
use crate::dgram::{self, BatchedDgram};
use crate::sealed::{Key, OVERHEAD, Opener, Reject, SealStats, Sealer};
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

/// Socket buffer size asked for, both directions, as for the other
/// datagram plugs: bursts queue instead of dropping.
const SOCKET_BUFFER: usize = 1 << 20;

/// How many `recvmmsg` calls one receive may spend when refused datagrams
/// leave the batch short, before yielding to the event loop.
const RECV_ROUNDS: usize = 8;

/// Least time between two log lines about refused datagrams.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Least time between two session renewals (see
/// [`Reject::Reflected`]): someone reflecting our datagrams cannot make us
/// churn sessions faster than this.
const RENEW_INTERVAL: Duration = Duration::from_secs(10);

/// A point-to-point UDP tunnel port, plain or sealed.
pub struct UdpTunnel {
    data: BatchedDgram<UdpSocket>,
    local: SocketAddr,
    remote: SocketAddr,
    /// Boxed: the sealed state holds a whole scratch batch.
    seal: Option<Box<SealedState>>,
    description: String,
}

/// Everything an encrypted tunnel needs beyond the socket.
struct SealedState {
    sealer: Sealer,
    opener: Opener,
    /// Sealed datagrams of the frames being sent, reused for every send.
    out: FrameBatch,
    stats: SealStats,
    /// The totals last logged, and when.
    logged: SealStats,
    last_log: Option<Instant>,
    /// A datagram with our own session id came back: draw a new one.
    renew_wanted: bool,
    last_renewal: Option<Instant>,
}

impl std::fmt::Debug for UdpTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpTunnel")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("sealed", &self.seal.is_some())
            .finish_non_exhaustive()
    }
}

/// Four bytes from the OS's random source, for a session id.
fn random_session() -> io::Result<[u8; 4]> {
    let mut id = [0u8; 4];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut id))
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read /dev/urandom: {e}")))?;
    Ok(id)
}

/// The wall clock in nanoseconds since the Unix epoch: where a new
/// session's counter starts (see [`crate::sealed`]).
fn clock_counter() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX / 2))
}

/// A session id as printed in logs.
fn session_hex(id: [u8; 4]) -> String {
    format!("{:08x}", u32::from_be_bytes(id))
}

impl UdpTunnel {
    /// Binds `local` (port 0 picks one), connects to `remote`, and seals
    /// every datagram with `key` if one is given. A sealed tunnel starts a
    /// new session: a random id from `/dev/urandom`, its counter at the
    /// wall clock.
    pub fn open(local: SocketAddr, remote: SocketAddr, key: Option<&Key>) -> io::Result<UdpTunnel> {
        let socket = std::net::UdpSocket::bind(local)?;
        socket.connect(remote)?;
        UdpTunnel::from_std(socket, key)
    }

    /// Wraps a bound and connected UDP socket (one inherited from a
    /// supervisor, say). Fails if it is not connected.
    pub fn from_std(socket: std::net::UdpSocket, key: Option<&Key>) -> io::Result<UdpTunnel> {
        let session = match key {
            Some(_) => random_session()?,
            None => [0; 4],
        };
        UdpTunnel::with_session(socket, key.map(|k| (k, session, clock_counter())))
    }

    /// Like [`from_std`](Self::from_std) with the session chosen by the
    /// caller (`key`, session id, first counter): for tests that need to
    /// know the bytes on the wire.
    pub fn with_session(
        socket: std::net::UdpSocket,
        seal: Option<(&Key, [u8; 4], u64)>,
    ) -> io::Result<UdpTunnel> {
        let remote = socket.peer_addr()?;
        let local = socket.local_addr()?;
        socket.set_nonblocking(true)?;
        let _ = nix::sys::socket::setsockopt(&socket, sockopt::SndBuf, &SOCKET_BUFFER);
        let _ = nix::sys::socket::setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
        let seal = seal.map(|(key, session, first)| {
            Box::new(SealedState {
                sealer: Sealer::new(key, session, first),
                opener: Opener::new(key, session),
                out: FrameBatch::new(),
                stats: SealStats::default(),
                logged: SealStats::default(),
                last_log: None,
                renew_wanted: false,
                last_renewal: None,
            })
        });
        let description = match &seal {
            Some(_) => format!("udp {local} -> {remote} sealed"),
            None => format!("udp {local} -> {remote}"),
        };
        Ok(UdpTunnel {
            data: BatchedDgram::new(UdpSocket::from_std(socket)),
            local,
            remote,
            seal,
            description,
        })
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The remote's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Whether datagrams are sealed.
    pub fn is_sealed(&self) -> bool {
        self.seal.is_some()
    }

    /// The session id this end seals under now (`None` for a plain
    /// tunnel); it changes only on a renewal.
    pub fn session(&self) -> Option<[u8; 4]> {
        self.seal.as_ref().map(|s| s.sealer.session())
    }

    /// Datagrams refused so far (all zero for a plain tunnel, which cannot
    /// tell a forgery from a frame).
    pub fn seal_stats(&self) -> SealStats {
        self.seal.as_ref().map(|s| s.stats).unwrap_or_default()
    }

    /// Receives and opens sealed datagrams until the batch is full, the
    /// socket is drained, or [`RECV_ROUNDS`] calls were spent.
    fn recv_sealed(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        let Some(s) = self.seal.as_deref_mut() else {
            return Ok(RecvStatus::Drained);
        };
        for _ in 0..RECV_ROUNDS {
            let free = batch.remaining();
            if free == 0 {
                return Ok(RecvStatus::More);
            }
            let mut lens = [0usize; BATCH_CAPACITY];
            let n = recv_skipping_stale(self.data.get_ref(), batch, &mut lens)?;
            if n == 0 {
                return Ok(RecvStatus::Drained);
            }
            s.open_received(batch, &lens[..n], &self.description);
            if s.stats != s.logged || s.renew_wanted {
                // Rate-limited inside; also serves hosts that never call
                // check_alive (`switchboard plug`).
                s.housekeeping(&self.description, Instant::now());
            }
            if batch.is_full() {
                return Ok(RecvStatus::More);
            }
            if n < free {
                // recvmmsg stopped short: the queue is empty, and the next
                // datagram raises a new edge.
                return Ok(RecvStatus::Drained);
            }
        }
        // Still datagrams waiting, all refused so far: come back later.
        Ok(RecvStatus::More)
    }

    /// Seals the listed frames into the scratch batch, a chunk at a time,
    /// and sends each chunk with one `sendmmsg`.
    fn send_sealed(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        let mut report = TxReport::default();
        let Some(s) = self.seal.as_deref_mut() else {
            return report;
        };
        for chunk in which.chunks(BATCH_CAPACITY) {
            s.out.clear();
            for &i in chunk {
                let i = usize::from(i);
                let sealed = match (i < batch.len(), s.out.next_slot()) {
                    (true, Some(slot)) => s.sealer.seal(batch.frame(i), slot),
                    _ => None,
                };
                match sealed {
                    Some(len) => s.out.commit(len),
                    // Outside the batch, or too large to seal into a slot.
                    None => report.dropped_error += 1,
                }
            }
            let mut r = self.data.send_from(&s.out, &ALL_FRAMES[..s.out.len()]);
            // Count the frames' bytes, as every other port does.
            r.sent_bytes = r.sent_bytes.saturating_sub(r.sent * OVERHEAD);
            report.absorb(r);
        }
        report
    }
}

/// `recvmmsg` into the batch's free slots (not committed), skipping the
/// stale "connection refused" a dead remote's ICMP error leaves (a few
/// times at most).
fn recv_skipping_stale(
    socket: &UdpSocket,
    batch: &mut FrameBatch,
    lens: &mut [usize; BATCH_CAPACITY],
) -> io::Result<usize> {
    for _ in 0..3 {
        match dgram::recv_mmsg(socket, batch, None, lens) {
            Ok(n) => return Ok(n),
            Err(e) if is_stale_peer_error(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

/// True for the errors a UDP socket reports about an earlier send to a
/// remote that is not there: stale news, not a failure of this call.
fn is_stale_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

impl SealedState {
    /// Opens the datagrams `recvmmsg` just put in the batch's free slots
    /// (datagram `i` in free slot `i`, `lens[i]` long) and commits each
    /// authentic frame, in order, at the next free slot: a refused datagram
    /// leaves no gap. Counts every refusal.
    fn open_received(&mut self, batch: &mut FrameBatch, lens: &[usize], label: &str) {
        let mut kept = 0;
        for (i, &len) in lens.iter().enumerate() {
            // The first free slot is where the next kept frame goes; the
            // datagram itself sits `i - kept` slots further on.
            let opened = {
                let mut slots = batch.free_slots();
                let Some(dst) = slots.next() else {
                    return;
                };
                if len >= MAX_FRAME_SLOT {
                    // Clipped to the slot by the receive: cut short.
                    Err(Reject::Truncated)
                } else if i == kept {
                    self.opener.open(&mut dst[..len]).map(|o| {
                        dst.copy_within(o.frame.clone(), 0);
                        (o.frame.len(), o.new_session)
                    })
                } else {
                    let Some(src) = slots.nth(i - kept - 1) else {
                        return;
                    };
                    self.opener.open(&mut src[..len]).map(|o| {
                        dst[..o.frame.len()].copy_from_slice(&src[o.frame.clone()]);
                        (o.frame.len(), o.new_session)
                    })
                }
            };
            match opened {
                Ok((frame_len, new_session)) => {
                    if new_session {
                        let peer = self.opener.peer_session().unwrap_or_default();
                        tracing::info!(tunnel = label, session = %session_hex(peer), "tunnel peer session started");
                    }
                    batch.commit(frame_len);
                    kept += 1;
                }
                Err(r) => {
                    if r == Reject::Reflected {
                        self.renew_wanted = true;
                    }
                    self.stats.count(r);
                }
            }
        }
    }

    /// The slow-path chores: a session renewal if one is due, and a log
    /// line if refusals grew since the last one (rate-limited).
    fn housekeeping(&mut self, label: &str, now: Instant) {
        let due = |last: Option<Instant>, every: Duration| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= every)
        };
        if self.renew_wanted && due(self.last_renewal, RENEW_INTERVAL) {
            self.renew_wanted = false;
            match random_session() {
                Ok(id) => {
                    self.sealer.renew_session(id);
                    self.opener.add_own_session(id);
                    self.last_renewal = Some(now);
                    tracing::warn!(
                        tunnel = label,
                        session = %session_hex(id),
                        "tunnel received its own datagrams back (reflected, or the peer drew the same session id); sealing under a new session id"
                    );
                }
                Err(e) => {
                    tracing::warn!(tunnel = label, error = %e, "cannot renew the tunnel session")
                }
            }
        }
        if self.stats != self.logged && due(self.last_log, LOG_INTERVAL) {
            self.logged = self.stats;
            self.last_log = Some(now);
            tracing::warn!(
                tunnel = label,
                forged = self.stats.forged,
                replayed = self.stats.replayed,
                truncated = self.stats.truncated,
                "tunnel refused datagrams (totals): forged = wrong key or altered, replayed = seen before or an old session, truncated = cut short"
            );
        }
    }
}

impl Plug for UdpTunnel {
    /// Receives a batch with one `recvmmsg` (a sealed tunnel may need a
    /// few when it refuses datagrams). An ICMP "port unreachable" left by
    /// an earlier send (the far end is not up) is skipped.
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        if batch.is_full() {
            return Ok(RecvStatus::More);
        }
        if self.seal.is_some() {
            return self.recv_sealed(batch);
        }
        let mut lens = [0usize; BATCH_CAPACITY];
        let n = recv_skipping_stale(self.data.get_ref(), batch, &mut lens)?;
        for &len in &lens[..n] {
            batch.commit(len);
        }
        Ok(if batch.is_full() {
            RecvStatus::More
        } else {
            RecvStatus::Drained
        })
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        if self.seal.is_some() {
            self.send_sealed(batch, which)
        } else {
            self.data.send_from(batch, which)
        }
    }

    /// Never reports the tunnel dead (a silent remote is not a reason to
    /// unplug it); renews the session and logs refusals when due.
    fn check_alive(&mut self) -> bool {
        if let Some(s) = self.seal.as_deref_mut() {
            s.housekeeping(&self.description, Instant::now());
        }
        true
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "udp"
    }

    /// The datagrams a sealed tunnel refused, by reason (none for a plain
    /// one, which cannot tell).
    fn stats(&self) -> Vec<(&'static str, u64)> {
        if !self.is_sealed() {
            return Vec::new();
        }
        let s = self.seal_stats();
        vec![
            ("refused_forged", s.forged),
            ("refused_replayed", s.replayed),
            ("refused_truncated", s.truncated),
        ]
    }
}

crate::delegate_source!(UdpTunnel, data);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::recv_frames;

    const KEY: [u8; 32] = [0x42; 32];
    const SA: [u8; 4] = [0xaa, 0, 0, 1];
    const SB: [u8; 4] = [0xbb, 0, 0, 2];
    const T0: u64 = 1_750_000_000_000_000_000;

    fn frame(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
            .collect()
    }

    fn one(f: &[u8]) -> FrameBatch {
        let mut b = FrameBatch::new();
        b.push(f);
        b
    }

    /// Two connected loopback sockets.
    fn socket_pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        (a, b)
    }

    /// A sealed tunnel `a` and, as its remote, a raw socket the test
    /// drives byte by byte (blocking, with a timeout).
    fn sealed_and_raw() -> (UdpTunnel, std::net::UdpSocket) {
        let (a, raw) = socket_pair();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = UdpTunnel::with_session(a, Some((&Key::from_bytes(KEY), SA, T0))).unwrap();
        (t, raw)
    }

    fn sealed(s: &mut Sealer, f: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; f.len() + OVERHEAD];
        let n = s.seal(f, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Receives until the socket is drained (the datagrams were sent
    /// before, on loopback, so they are queued already).
    fn recv_all(t: &mut UdpTunnel) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut batch = FrameBatch::new();
        for _ in 0..100 {
            batch.clear();
            let st = t.recv_batch(&mut batch).unwrap();
            got.extend((0..batch.len()).map(|i| batch.frame(i).to_vec()));
            if st == RecvStatus::Drained {
                break;
            }
        }
        got
    }

    #[test]
    fn sealed_tunnels_exchange_frames_and_count_frame_bytes() {
        let (a, b) = socket_pair();
        let key = Key::from_bytes(KEY);
        let mut a = UdpTunnel::with_session(a, Some((&key, SA, T0))).unwrap();
        let mut b = UdpTunnel::from_std(b, Some(&key)).unwrap();
        assert!(a.is_sealed() && b.is_sealed());
        assert_eq!(a.kind(), "udp");
        assert!(a.description().ends_with(" sealed"), "{}", a.description());
        assert_ne!(b.session(), Some(SA));

        let sizes = [14usize, 60, 1514, 9000, 60000];
        let mut out = FrameBatch::new();
        for (i, &len) in sizes.iter().enumerate() {
            out.push(&frame(i as u8, len));
        }
        let r = a.send_batch(&out, &[0, 1, 2, 3, 4]);
        assert_eq!(r.sent, 5);
        assert_eq!(r.sent_bytes, sizes.iter().sum::<usize>());
        let got = recv_frames(&mut b, 5);
        for (i, &len) in sizes.iter().enumerate() {
            assert_eq!(got[i], frame(i as u8, len), "frame {i}");
        }
        assert_eq!(b.send_batch(&one(&frame(9, 100)), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut a, 1), vec![frame(9, 100)]);
        assert_eq!(a.seal_stats(), SealStats::default());
        assert_eq!(b.seal_stats(), SealStats::default());
    }

    #[test]
    fn the_wire_carries_the_sealed_format() {
        let (mut t, raw) = sealed_and_raw();
        let f = frame(3, 80);
        assert_eq!(t.send_batch(&one(&f), &[0]).sent, 1);
        let mut buf = [0u8; 2000];
        let n = raw.recv(&mut buf).unwrap();
        assert_eq!(n, 80 + OVERHEAD);
        assert_eq!(buf[0], crate::sealed::VERSION);
        assert_eq!(&buf[1..5], &SA);
        assert_eq!(&buf[5..13], &T0.to_be_bytes());
        let mut o = Opener::new(&Key::from_bytes(KEY), SB);
        let opened = o.open(&mut buf[..n]).unwrap();
        assert_eq!(&buf[opened.frame], &f[..]);
    }

    #[test]
    fn forged_replayed_and_truncated_datagrams_never_come_out() {
        let (mut t, raw) = sealed_and_raw();
        let key = Key::from_bytes(KEY);
        let mut peer = Sealer::new(&key, SB, T0 + 7);
        let mut wrong = Sealer::new(&Key::from_bytes([1; 32]), SB, T0 + 1000);
        let good: Vec<Vec<u8>> = (0..40).map(|i| frame(i, 60 + usize::from(i))).collect();
        let mut sent = Vec::new();
        // More than one batch, refusals between kept frames everywhere.
        for (i, f) in good.iter().enumerate() {
            let d = sealed(&mut peer, f);
            raw.send(&d).unwrap();
            match i % 4 {
                0 => raw.send(&sealed(&mut wrong, f)).unwrap(),
                1 => raw.send(&d).unwrap(), // replay
                2 => raw.send(&d[..20]).unwrap(),
                // A plain frame, as a vdeplug4 udp:// end would send.
                _ => raw.send(&[0x02; 60]).unwrap(),
            };
            sent.push(f.clone());
        }
        let got = recv_all(&mut t);
        assert_eq!(got, sent);
        assert_eq!(
            t.seal_stats(),
            SealStats {
                forged: 20,
                replayed: 10,
                truncated: 10
            }
        );
    }

    #[test]
    fn frames_already_in_the_batch_stay_and_a_full_batch_says_more() {
        let (mut t, raw) = sealed_and_raw();
        let mut peer = Sealer::new(&Key::from_bytes(KEY), SB, T0);
        raw.send(b"junk").unwrap();
        for i in 0..BATCH_CAPACITY as u8 {
            raw.send(&sealed(&mut peer, &frame(i, 64))).unwrap();
        }
        let mut batch = FrameBatch::new();
        batch.push(b"already here");
        assert_eq!(t.recv_batch(&mut batch).unwrap(), RecvStatus::More);
        assert!(batch.is_full());
        assert_eq!(batch.frame(0), b"already here");
        for i in 1..BATCH_CAPACITY {
            assert_eq!(batch.frame(i), &frame(i as u8 - 1, 64)[..], "slot {i}");
        }
        batch.clear();
        assert_eq!(t.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.frame(0), &frame(BATCH_CAPACITY as u8 - 1, 64)[..]);
        assert_eq!(t.seal_stats().truncated, 1);
    }

    #[test]
    fn a_flood_of_forgeries_yields_after_a_bounded_number_of_rounds() {
        let (mut t, raw) = sealed_and_raw();
        let mut wrong = Sealer::new(&Key::from_bytes([1; 32]), SB, T0);
        let n = BATCH_CAPACITY * RECV_ROUNDS + 5;
        for i in 0..n {
            raw.send(&sealed(&mut wrong, &frame(i as u8, 60))).unwrap();
        }
        let mut batch = FrameBatch::new();
        assert_eq!(t.recv_batch(&mut batch).unwrap(), RecvStatus::More);
        assert!(batch.is_empty());
        assert_eq!(t.seal_stats().forged, (BATCH_CAPACITY * RECV_ROUNDS) as u64);
        assert_eq!(t.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
        assert_eq!(t.seal_stats().forged, n as u64);
    }

    #[test]
    fn reflected_datagrams_renew_the_session_and_the_peer_follows() {
        let (a, b) = socket_pair();
        let key = Key::from_bytes(KEY);
        let b_addr = b.local_addr().unwrap();
        let mut a = UdpTunnel::with_session(a, Some((&key, SA, T0))).unwrap();
        // A reflector between a and b: b's socket echoes a's datagram back.
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(a.send_batch(&one(&frame(1, 60)), &[0]).sent, 1);
        let mut buf = [0u8; 200];
        let n = b.recv(&mut buf).unwrap();
        b.send(&buf[..n]).unwrap();
        assert!(recv_all(&mut a).is_empty());
        assert_eq!(a.seal_stats().replayed, 1);
        // Renewed at once (the receive path does its chores when it
        // refused something).
        let renewed = a.session().unwrap();
        assert_ne!(renewed, SA);
        a.check_alive();
        assert_eq!(a.session(), Some(renewed));
        // The counter ran on: the peer accepts the new session at once.
        let mut b = UdpTunnel::with_session(b, Some((&key, SB, T0))).unwrap();
        assert_eq!(b.remote_addr(), a.local_addr());
        assert_eq!(a.local_addr().port(), b.remote_addr().port());
        assert_eq!(b.local_addr(), b_addr);
        assert_eq!(a.send_batch(&one(&frame(2, 60)), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut b, 1), vec![frame(2, 60)]);
        // The old session's datagram, reflected late, is still refused.
        // (Only b's address reaches a, so it goes out of b's socket.)
        let mut old = Sealer::new(&key, SA, T0 + 50);
        let d = sealed(&mut old, &frame(3, 60));
        b.data.get_ref().send(&d).unwrap();
        assert!(recv_all(&mut a).is_empty());
        assert_eq!(a.seal_stats().replayed, 2);
        // A second reflection within RENEW_INTERVAL does not renew again.
        assert_eq!(a.session(), Some(renewed));
        a.check_alive();
        assert_eq!(a.session(), Some(renewed));
    }

    #[test]
    fn oversized_frames_and_bad_indices_are_dropped_as_errors() {
        let (mut t, raw) = sealed_and_raw();
        let mut out = FrameBatch::new();
        out.push(&frame(1, MAX_FRAME_SLOT - OVERHEAD + 1));
        out.push(&frame(2, 100));
        let r = t.send_batch(&out, &[0, 1, 9]);
        assert_eq!(r.sent, 1);
        assert_eq!(r.sent_bytes, 100);
        assert_eq!(r.dropped_error, 2);
        let mut buf = [0u8; 300];
        assert_eq!(raw.recv(&mut buf).unwrap(), 100 + OVERHEAD);
    }

    #[test]
    fn plain_tunnels_carry_raw_frames() {
        let (a, raw) = socket_pair();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut t = UdpTunnel::from_std(a, None).unwrap();
        assert!(!t.is_sealed());
        assert_eq!(t.session(), None);
        assert_eq!(
            t.description(),
            format!("udp {} -> {}", t.local_addr(), t.remote_addr())
        );
        let f = frame(5, 1514);
        assert_eq!(t.send_batch(&one(&f), &[0]).sent_bytes, 1514);
        let mut buf = [0u8; 2000];
        let n = raw.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &f[..]);
        raw.send(&frame(6, 60)).unwrap();
        assert_eq!(recv_frames(&mut t, 1), vec![frame(6, 60)]);
        assert!(t.check_alive());
    }

    #[test]
    fn a_silent_remote_costs_only_its_own_frames() {
        // Reserve a port, then free it: nobody listens there.
        let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let remote = gone.local_addr().unwrap();
        drop(gone);
        let key = Key::from_bytes(KEY);
        let mut t = UdpTunnel::open("127.0.0.1:0".parse().unwrap(), remote, Some(&key)).unwrap();
        let out = one(&frame(1, 100));
        let mut total = TxReport::default();
        for _ in 0..5 {
            total.absorb(t.send_batch(&out, &[0, 0]));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(total.sent + total.dropped_error, 10);
        // The ICMP errors are consumed without failing the receive.
        let mut batch = FrameBatch::new();
        assert_eq!(t.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
        assert!(batch.is_empty());
        assert!(t.check_alive());
        assert_eq!(t.seal_stats(), SealStats::default());
    }
}
