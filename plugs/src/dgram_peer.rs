//! Raw frames over datagram sockets, one Ethernet frame per datagram and no
//! header: QEMU `-netdev dgram` (Unix paths or UDP), QEMU `-netdev
//! socket,udp=`, libvirt `<interface type='udp'>` and vdeplug4 `udp://`
//! cables are all the same thing on the wire.
//!
//! * [`UdpCable`]: a connected UDP socket, `local -> remote`. The kernel
//!   only delivers datagrams from `remote` to a connected socket, so a
//!   stranger cannot inject frames from another address.
//! * [`UnixDgramPeer`]: our own bound Unix datagram socket connected to one
//!   remote path, as the other end of a QEMU `-netdev
//!   dgram,local.path=Q,remote.path=OURS`. It (re)connects whenever the
//!   remote appears or comes back, so start order does not matter.
//! * [`DgramHub`]: one bound Unix datagram socket that serves many QEMUs at
//!   once (`-netdev dgram,local.path=Q,remote.path=HUB`). Every distinct
//!   source path is a peer, and the daemon makes a port of each. The hub is
//!   not a [`Plug`]: a plug is one port, the hub is many.
//!
//! All three use `recvmmsg`/`sendmmsg` through [`crate::dgram`], so a batch
//! costs one syscall each way and nothing is allocated per frame.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UdpSocket, UnixDatagram};
use nix::sys::socket::{SockType, sockopt};

use crate::batch::BATCH_CAPACITY;
use crate::dgram::{self, BatchedDgram, Destination, RecvNames};
use crate::stream::{BoundPath, claim_socket_path, in_use_error};
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

/// Socket buffer size asked for, both directions, as for VDE data sockets:
/// bursts queue instead of dropping. The kernel caps it at
/// `net.core.{r,w}mem_max`.
const SOCKET_BUFFER: usize = 1 << 20;

/// How often a disconnected [`UnixDgramPeer`] retries `connect`.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);

/// How many receive syscalls one call may spend on datagrams it has to
/// throw away (strays, unnamed or refused sources) before yielding to the
/// event loop.
const DISCARD_ROUNDS: usize = 8;

/// The default most peers one [`DgramHub`] serves.
pub const DEFAULT_MAX_PEERS: usize = 256;

/// Asks for large socket buffers; a smaller one only means earlier drops.
fn set_buffers(fd: &impl std::os::fd::AsFd) {
    let _ = nix::sys::socket::setsockopt(fd, sockopt::SndBuf, &SOCKET_BUFFER);
    let _ = nix::sys::socket::setsockopt(fd, sockopt::RcvBuf, &SOCKET_BUFFER);
}

/// True for the errors a datagram socket reports about an earlier send to
/// a peer that is not there (ICMP port unreachable, a closed Unix socket):
/// stale news, not a failure of this call.
fn is_stale_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// Receives with `recv_into`, skipping stale peer errors (a few times at
/// most). Returns frames appended.
fn recv_skipping_stale<S: dgram::DgramSocket>(
    data: &mut BatchedDgram<S>,
    batch: &mut FrameBatch,
) -> io::Result<usize> {
    for _ in 0..3 {
        match data.recv_into(batch) {
            Ok(n) => return Ok(n),
            Err(e) if is_stale_peer_error(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(0)
}

/// The status after a receive that appended frames to `batch`.
fn status_after(batch: &FrameBatch) -> RecvStatus {
    if batch.is_full() {
        RecvStatus::More
    } else {
        // recvmmsg stopped short or found nothing: the queue is empty, and
        // the next datagram raises a new edge.
        RecvStatus::Drained
    }
}

/// A point-to-point UDP cable: raw Ethernet frames, one per datagram, from
/// a local address to one remote address (vdeplug4 `udp://`, QEMU `-netdev
/// dgram` over inet or `-netdev socket,udp=`). There is no handshake and no
/// liveness: the cable is "up" for as long as it exists.
#[derive(Debug)]
pub struct UdpCable {
    data: BatchedDgram<UdpSocket>,
    local: SocketAddr,
    remote: SocketAddr,
    description: String,
}

impl UdpCable {
    /// Binds `local` (port 0 picks one) and connects to `remote`.
    pub fn connect(local: SocketAddr, remote: SocketAddr) -> io::Result<UdpCable> {
        let socket = std::net::UdpSocket::bind(local)?;
        socket.connect(remote)?;
        UdpCable::from_std(socket)
    }

    /// Wraps a bound and connected UDP socket (one inherited from a
    /// supervisor, say). Fails if it is not connected.
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpCable> {
        let remote = socket.peer_addr()?;
        let local = socket.local_addr()?;
        socket.set_nonblocking(true)?;
        set_buffers(&socket);
        Ok(UdpCable {
            data: BatchedDgram::new(UdpSocket::from_std(socket)),
            local,
            remote,
            description: format!("udp {local} -> {remote}"),
        })
    }

    /// The bound local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }
}

impl Plug for UdpCable {
    /// Receives a batch with one `recvmmsg`. An ICMP "port unreachable"
    /// left by an earlier send (the far end is not up yet) is skipped.
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        if batch.is_full() {
            return Ok(RecvStatus::More);
        }
        recv_skipping_stale(&mut self.data, batch)?;
        Ok(status_after(batch))
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        self.data.send_from(batch, which)
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "udp"
    }
}

crate::delegate_source!(UdpCable, data);

/// Binds a non-blocking Unix datagram socket at `path`, replacing a stale
/// socket file and refusing a live one or a non-socket.
fn bind_dgram(path: &Path) -> io::Result<(UnixDatagram, BoundPath)> {
    claim_socket_path(path, SockType::Datagram)?;
    let socket = std::os::unix::net::UnixDatagram::bind(path).map_err(|e| in_use_error(e, path))?;
    let bound = BoundPath::new(path)?;
    socket.set_nonblocking(true)?;
    set_buffers(&socket);
    Ok((UnixDatagram::from_std(socket), bound))
}

/// The client end of a Unix datagram cable: our socket bound at `local`,
/// connected to `remote` (QEMU `-netdev dgram,local.path=REMOTE,
/// remote.path=LOCAL` is the other end; so is another switchboard).
///
/// The remote need not exist yet: until it does, frames to it are dropped
/// (as errors) and datagrams from anyone are discarded, and `connect` is
/// retried on sends, on receives and in [`Plug::check_alive`] (at most every
/// 100 ms). When the remote goes away and comes back (a restarted QEMU binds
/// a new socket at the same path), the first send fails with
/// `ECONNREFUSED`, the kernel disconnects us, and we reconnect to the new
/// socket. Once connected, the kernel refuses datagrams from any other
/// sender. Dropping the peer removes `local`.
#[derive(Debug)]
pub struct UnixDgramPeer {
    data: BatchedDgram,
    local: BoundPath,
    remote: PathBuf,
    connected: bool,
    next_attempt: Instant,
    strays: u64,
    description: String,
}

impl UnixDgramPeer {
    /// Binds `local` (a stale socket file there is replaced, a live one is
    /// an "in use" error) and connects to `remote` if it is there.
    pub fn connect(local: impl AsRef<Path>, remote: impl AsRef<Path>) -> io::Result<UnixDgramPeer> {
        let local = std::path::absolute(local.as_ref())?;
        let remote = std::path::absolute(remote.as_ref())?;
        let (socket, bound) = bind_dgram(&local)?;
        let mut peer = UnixDgramPeer {
            data: BatchedDgram::new(socket),
            description: format!(
                "dgram unix:{} -> unix:{}",
                local.display(),
                remote.display()
            ),
            local: bound,
            remote,
            connected: false,
            next_attempt: Instant::now(),
            strays: 0,
        };
        peer.try_connect(true);
        Ok(peer)
    }

    /// Our socket's path.
    pub fn local_path(&self) -> &Path {
        &self.local.path
    }

    /// The remote socket's path.
    pub fn remote_path(&self) -> &Path {
        &self.remote
    }

    /// Whether the socket is connected to the remote now.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Datagrams discarded because they arrived while we were not connected
    /// (so their sender could not be checked).
    pub fn strays(&self) -> u64 {
        self.strays
    }

    /// Connects if not connected and an attempt is due (or `now_anyway`).
    fn try_connect(&mut self, now_anyway: bool) -> bool {
        if self.connected {
            return true;
        }
        let now = Instant::now();
        if !now_anyway && now < self.next_attempt {
            return false;
        }
        self.next_attempt = now + RECONNECT_INTERVAL;
        match self.data.get_ref().connect(&self.remote) {
            Ok(()) => {
                tracing::debug!(port = %self.description, "connected");
                self.connected = true;
            }
            Err(e) => {
                tracing::trace!(port = %self.description, error = %e, "remote not there yet");
            }
        }
        self.connected
    }

    /// Reads and throws away datagrams from unverified senders. Reports
    /// whether more may be waiting.
    fn discard_strays(&mut self) -> RecvStatus {
        let mut scratch = [0u8; 1];
        for _ in 0..DISCARD_ROUNDS * BATCH_CAPACITY {
            match self.data.get_ref().recv(&mut scratch) {
                Ok(_) => self.strays += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return RecvStatus::Drained,
            }
        }
        RecvStatus::More
    }
}

impl Plug for UnixDgramPeer {
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        if batch.is_full() {
            return Ok(RecvStatus::More);
        }
        // A datagram arriving is a good moment to look for the remote: the
        // QEMU that sent it has bound its socket.
        if !self.try_connect(true) {
            return Ok(self.discard_strays());
        }
        recv_skipping_stale(&mut self.data, batch)?;
        Ok(status_after(batch))
    }

    /// Sends to the remote; while it is not there, frames are dropped as
    /// errors. A send that finds the remote gone disconnects, and the next
    /// send (or `check_alive`) reconnects.
    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        if !self.try_connect(false) {
            return TxReport {
                dropped_error: which.len(),
                ..TxReport::default()
            };
        }
        let (report, error) = self.data.try_send_from(batch, which);
        if let Some(e) = error
            && (is_stale_peer_error(&e) || e.kind() == io::ErrorKind::NotConnected)
        {
            tracing::debug!(port = %self.description, error = %e, "remote gone; will reconnect");
            // The kernel already dropped the association on ECONNREFUSED.
            self.connected = false;
            self.next_attempt = Instant::now();
        }
        report
    }

    /// Always alive (a datagram cable has no session); retries the
    /// connection while the remote is missing.
    fn check_alive(&mut self) -> bool {
        self.try_connect(false);
        true
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "dgram"
    }
}

crate::delegate_source!(UnixDgramPeer, data);

/// One peer of a [`DgramHub`]. Ids are not reused while the daemon may
/// still hold them: a slot freed by a departed peer gets a new generation,
/// so a stale id sends nowhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId {
    index: u32,
    generation: u32,
}

impl PeerId {
    /// No peer: the placeholder for the daemon's per-frame array.
    pub const NONE: PeerId = PeerId {
        index: u32::MAX,
        generation: 0,
    };
}

impl Default for PeerId {
    fn default() -> Self {
        PeerId::NONE
    }
}

/// Limits of a [`DgramHub`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubOptions {
    /// The most peers served at once; datagrams from further sources are
    /// dropped and counted in [`HubStats::refused`].
    pub max_peers: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            max_peers: DEFAULT_MAX_PEERS,
        }
    }
}

/// What a [`DgramHub`] dropped on receive, for the daemon's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Datagrams from sockets with no path (unbound or abstract): there is
    /// no address to answer, so they cannot be a port.
    pub unnamed: u64,
    /// Datagrams from new sources while the peer table was full.
    pub refused: u64,
}

/// A known peer.
#[derive(Debug)]
struct Peer {
    addr: libc::sockaddr_un,
    addr_len: libc::socklen_t,
    path: PathBuf,
    /// Whether the daemon has been told about it (so its departure must be
    /// reported too).
    announced: bool,
}

/// A slot of the peer table.
#[derive(Debug)]
struct Slot {
    generation: u32,
    peer: Option<Peer>,
}

/// A Unix datagram socket bound at a path that serves many peers, each
/// source path a separate switch port (QEMU `-netdev dgram,local.path=Q,
/// remote.path=HUB`, one `Q` per VM).
///
/// The daemon, after registering the hub (readable) with mio:
///
/// 1. on readiness, calls [`recv_from_batch`](Self::recv_from_batch) until
///    it returns [`RecvStatus::Drained`];
/// 2. after each call, calls [`take_new_peers`](Self::take_new_peers) and
///    creates a port for each new peer *before* forwarding the frames, which
///    may already come from them;
/// 3. sends a port's frames with [`send_to`](Self::send_to);
/// 4. after sending, calls [`take_gone_peers`](Self::take_gone_peers) and
///    removes their ports (a send found their socket gone);
/// 5. calls [`forget`](Self::forget) when it removes a port for its own
///    reasons.
///
/// A peer that stops sending is only found gone when a send to it fails.
/// Dropping the hub removes its socket file.
#[derive(Debug)]
pub struct DgramHub {
    socket: UnixDatagram,
    bound: BoundPath,
    max_peers: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_path: HashMap<Box<[u8]>, u32>,
    live: usize,
    new_peers: VecDeque<PeerId>,
    gone: VecDeque<(PeerId, PathBuf)>,
    names: Box<RecvNames>,
    stats: HubStats,
}

impl DgramHub {
    /// Binds the hub at `path` (a stale socket file is replaced, a live one
    /// is an "in use" error).
    pub fn bind(path: impl AsRef<Path>, options: HubOptions) -> io::Result<DgramHub> {
        let path = std::path::absolute(path.as_ref())?;
        let (socket, bound) = bind_dgram(&path)?;
        Ok(DgramHub {
            socket,
            bound,
            max_peers: options.max_peers.min(u32::MAX as usize - 1),
            slots: Vec::new(),
            free: Vec::new(),
            by_path: HashMap::new(),
            live: 0,
            new_peers: VecDeque::new(),
            gone: VecDeque::new(),
            names: Box::new(RecvNames::new()),
            stats: HubStats::default(),
        })
    }

    /// The hub's socket path (what QEMU's `remote.path` names).
    pub fn path(&self) -> &Path {
        &self.bound.path
    }

    /// Peers currently known.
    pub fn peer_count(&self) -> usize {
        self.live
    }

    /// Drop counters.
    pub fn stats(&self) -> HubStats {
        self.stats
    }

    /// The source path of a known peer.
    pub fn peer_path(&self, peer: PeerId) -> Option<&Path> {
        self.peer(peer).map(|p| p.path.as_path())
    }

    /// Receives datagrams into the free slots of `batch`.
    ///
    /// Each frame appended at batch index `i` came from `peers[i]` (entries
    /// for frames already in the batch are left alone). Datagrams from
    /// sources with no path, and from new sources beyond
    /// [`HubOptions::max_peers`], are dropped and counted in
    /// [`stats`](Self::stats). A new source becomes a peer at once; fetch it
    /// with [`take_new_peers`](Self::take_new_peers).
    ///
    /// Returns [`RecvStatus::More`] when the batch filled or the call
    /// stopped early to stay fair, [`RecvStatus::Drained`] when the socket
    /// is empty. (A frame count could not say that: a call that dropped
    /// every datagram appends nothing yet leaves more to read.)
    pub fn recv_from_batch(
        &mut self,
        batch: &mut FrameBatch,
        peers: &mut [PeerId; BATCH_CAPACITY],
    ) -> io::Result<RecvStatus> {
        for _ in 0..DISCARD_ROUNDS {
            let free = batch.remaining();
            if free == 0 {
                return Ok(RecvStatus::More);
            }
            let base = batch.len();
            let mut lens = [0usize; BATCH_CAPACITY];
            let received =
                match dgram::recv_mmsg(&self.socket, batch, Some(&mut self.names), &mut lens) {
                    Ok(n) => n,
                    // News about an earlier send, not about this receive.
                    Err(e) if is_stale_peer_error(&e) => continue,
                    Err(e) => return Err(e),
                };
            let mut kept = 0;
            for (i, &len) in lens.iter().enumerate().take(received) {
                let Some(id) = self.peer_for(i) else {
                    continue;
                };
                // After a dropped datagram, this one moves down a slot.
                batch.commit_from(i - kept, len);
                peers[base + kept] = id;
                kept += 1;
            }
            if received < free {
                return Ok(RecvStatus::Drained);
            }
        }
        Ok(RecvStatus::More)
    }

    /// Sends the frames of `batch` listed in `which` to `peer`, with one
    /// `sendmmsg` per [`BATCH_CAPACITY`] frames, dropping (and counting)
    /// what a full peer refuses. An unknown or stale id drops everything as
    /// errors. A send that finds the peer's socket gone (`ENOENT`,
    /// `ECONNREFUSED`) removes the peer and reports it through
    /// [`take_gone_peers`](Self::take_gone_peers).
    pub fn send_to(&mut self, peer: PeerId, batch: &FrameBatch, which: &[u16]) -> TxReport {
        let Some(p) = self.peer(peer) else {
            return TxReport {
                dropped_error: which.len(),
                ..TxReport::default()
            };
        };
        let dest = Destination {
            addr: &p.addr,
            len: p.addr_len,
        };
        let (report, error) = dgram::send_mmsg(&self.socket, batch, which, Some(dest), None);
        if let Some(e) = error
            && matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTSOCK | libc::EPROTOTYPE)
            )
        {
            tracing::debug!(path = %p.path.display(), error = %e, "dgram hub peer gone");
            if let Some((path, announced)) = self.remove(peer)
                && announced
            {
                self.gone.push_back((peer, path));
            }
        }
        report
    }

    /// Peers seen for the first time since the last call, with their
    /// source paths. Create a port for each.
    pub fn take_new_peers(&mut self) -> impl Iterator<Item = (PeerId, PathBuf)> + '_ {
        let DgramHub {
            new_peers, slots, ..
        } = self;
        new_peers.drain(..).filter_map(|id| {
            let slot = slots.get_mut(id.index as usize)?;
            if slot.generation != id.generation {
                return None;
            }
            let peer = slot.peer.as_mut()?;
            peer.announced = true;
            Some((id, peer.path.clone()))
        })
    }

    /// Peers found gone by a send since the last call (their ids are
    /// already stale). Remove their ports.
    pub fn take_gone_peers(&mut self) -> impl Iterator<Item = (PeerId, PathBuf)> + '_ {
        self.gone.drain(..)
    }

    /// Forgets `peer` (the daemon removed its port). Its next datagram, if
    /// any, makes it a new peer. Returns its path if it was known.
    pub fn forget(&mut self, peer: PeerId) -> Option<PathBuf> {
        self.remove(peer).map(|(path, _)| path)
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        let slot = self.slots.get(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.peer.as_ref()
    }

    /// Removes a peer, returning its path and whether it was announced.
    fn remove(&mut self, id: PeerId) -> Option<(PathBuf, bool)> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let peer = slot.peer.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.live -= 1;
        self.by_path.remove(peer.path.as_os_str().as_bytes());
        Some((peer.path, peer.announced))
    }

    /// The peer that sent the `i`th datagram of the last receive, learning
    /// it if new. `None` (and counted) if the datagram must be dropped.
    fn peer_for(&mut self, i: usize) -> Option<PeerId> {
        let addr = &self.names.addrs[i];
        let Some(path) = sun_path(addr, self.names.lens[i]) else {
            self.stats.unnamed += 1;
            return None;
        };
        if let Some(&index) = self.by_path.get(path) {
            return Some(PeerId {
                index,
                generation: self.slots[index as usize].generation,
            });
        }
        if self.live >= self.max_peers {
            self.stats.refused += 1;
            return None;
        }
        let path_len = path.len();
        let key: Box<[u8]> = path.into();
        let mut peer = Peer {
            addr: *addr,
            // The family, the path and its NUL.
            addr_len: (std::mem::offset_of!(libc::sockaddr_un, sun_path) + path_len + 1)
                as libc::socklen_t,
            path: PathBuf::from(OsStr::from_bytes(&key)),
            announced: false,
        };
        // Make the stored address exactly the path and NULs, whatever the
        // kernel left after it.
        for b in peer.addr.sun_path[path_len..].iter_mut() {
            *b = 0;
        }
        tracing::debug!(path = %peer.path.display(), "new dgram hub peer");
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index as usize].peer = Some(peer);
                index
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    peer: Some(peer),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let id = PeerId {
            index,
            generation: self.slots[index as usize].generation,
        };
        self.by_path.insert(key, index);
        self.live += 1;
        self.new_peers.push_back(id);
        Some(id)
    }
}

/// The filesystem path in a received `sockaddr_un`, or `None` for an
/// unnamed or abstract source (or a non-Unix family).
fn sun_path(addr: &libc::sockaddr_un, len: libc::socklen_t) -> Option<&[u8]> {
    let offset = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = (len as usize).min(std::mem::size_of::<libc::sockaddr_un>());
    if addr.sun_family != libc::AF_UNIX as libc::sa_family_t || len <= offset {
        return None;
    }
    // SAFETY: `sun_path` is an array of `c_char`, which has the size and
    // alignment of `u8`; the slice stays inside it.
    let raw: &[u8] =
        unsafe { std::slice::from_raw_parts(addr.sun_path.as_ptr().cast(), len - offset) };
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    // An abstract name starts with NUL: no path.
    if end == 0 { None } else { Some(&raw[..end]) }
}

crate::delegate_source!(DgramHub, socket);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::recv_frames;
    use std::os::unix::net::UnixDatagram as StdUnixDatagram;

    use crate::vde::dir::tests::dead_socket;
    use crate::vde::dir::with_umask_lock;

    const WAIT: Duration = Duration::from_secs(10);

    fn frame(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_mul(29).wrapping_add(i as u8))
            .collect()
    }

    fn tempdir() -> tempfile::TempDir {
        with_umask_lock(|| tempfile::tempdir().unwrap())
    }

    /// A bound test socket, blocking with a timeout.
    fn client(path: &Path) -> StdUnixDatagram {
        let s = with_umask_lock(|| StdUnixDatagram::bind(path)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }

    /// Receives on the hub until `want` frames arrived; returns each with
    /// its peer.
    fn hub_recv(hub: &mut DgramHub, want: usize) -> Vec<(PeerId, Vec<u8>)> {
        let deadline = Instant::now() + WAIT;
        let mut batch = FrameBatch::new();
        let mut peers = [PeerId::NONE; BATCH_CAPACITY];
        let mut got = Vec::new();
        while got.len() < want {
            assert!(
                Instant::now() < deadline,
                "only {} of {want} frames",
                got.len()
            );
            batch.clear();
            hub.recv_from_batch(&mut batch, &mut peers).unwrap();
            got.extend((0..batch.len()).map(|i| (peers[i], batch.frame(i).to_vec())));
            if got.len() < want {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        got
    }

    fn one(frame: &[u8]) -> FrameBatch {
        let mut b = FrameBatch::new();
        b.push(frame);
        b
    }

    #[test]
    fn udp_cables_exchange_frames_and_ignore_strangers() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        b.connect(a.local_addr().unwrap()).unwrap();
        let mut a = UdpCable::from_std(a).unwrap();
        let mut b = UdpCable::from_std(b).unwrap();
        assert_eq!(a.remote_addr(), b.local_addr());
        assert_eq!(a.kind(), "udp");

        let sizes = [14usize, 60, 1514, 9000, 60000];
        let mut out = FrameBatch::new();
        for (i, &len) in sizes.iter().enumerate() {
            out.push(&frame(i as u8, len));
        }
        let report = a.send_batch(&out, &[0, 1, 2, 3, 4]);
        assert_eq!(report.sent, 5);
        assert_eq!(report.sent_bytes, sizes.iter().sum::<usize>());
        let got = recv_frames(&mut b, 5);
        for (i, &len) in sizes.iter().enumerate() {
            assert_eq!(got[i], frame(i as u8, len), "frame {i}");
        }

        // A third socket writes to b's port: the connected socket never
        // sees it. a's frame, sent after, is the next one b gets.
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger
            .send_to(b"injected frame!", b.local_addr())
            .unwrap();
        assert_eq!(a.send_batch(&one(&frame(9, 100)), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut b, 1), vec![frame(9, 100)]);
        let mut batch = FrameBatch::new();
        assert_eq!(b.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
        assert!(batch.is_empty());

        // And back.
        assert_eq!(b.send_batch(&one(&frame(7, 1514)), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut a, 1), vec![frame(7, 1514)]);
    }

    #[test]
    fn udp_cable_to_a_missing_peer_survives_port_unreachable() {
        // Reserve a port, then free it: nobody listens there.
        let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let remote = gone.local_addr().unwrap();
        drop(gone);
        let mut cable = UdpCable::connect("127.0.0.1:0".parse().unwrap(), remote).unwrap();
        let out = one(&frame(1, 100));
        for _ in 0..3 {
            let r = cable.send_batch(&out, &[0]);
            assert_eq!(r.sent + r.dropped_error, 1);
            std::thread::sleep(Duration::from_millis(5));
        }
        // The ICMP errors are consumed without failing the receive.
        let mut batch = FrameBatch::new();
        assert_eq!(cable.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
        assert!(batch.is_empty());
    }

    #[test]
    fn unix_dgram_peers_connect_in_any_order_and_reconnect() {
        let tmp = tempdir();
        let pa = tmp.path().join("a.sock");
        let pb = tmp.path().join("b.sock");
        // `a` starts first: its remote is not there yet.
        let mut a = with_umask_lock(|| UnixDgramPeer::connect(&pa, &pb)).unwrap();
        assert!(!a.is_connected());
        let r = a.send_batch(&one(&frame(1, 60)), &[0]);
        assert_eq!(r.dropped_error, 1);

        let mut b = with_umask_lock(|| UnixDgramPeer::connect(&pb, &pa)).unwrap();
        assert!(b.is_connected());
        assert_eq!(b.kind(), "dgram");
        // b's frame arrives; a connects on receive and takes it.
        assert_eq!(b.send_batch(&one(&frame(2, 1514)), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut a, 1), vec![frame(2, 1514)]);
        assert!(a.is_connected());
        assert_eq!(a.send_batch(&one(&frame(3, 9000)), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut b, 1), vec![frame(3, 9000)]);

        // b restarts: a new socket at the same path. a finds out on a
        // send, reconnects, and frames flow again. (Bounded retries: a
        // concurrent test's fork may briefly keep the old socket alive.)
        drop(b);
        assert!(!pb.exists(), "dropping a peer removes its socket");
        let mut b = with_umask_lock(|| UnixDgramPeer::connect(&pb, &pa)).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut batch = FrameBatch::new();
        loop {
            assert!(Instant::now() < deadline, "a never reached the new b");
            a.send_batch(&one(&frame(4, 100)), &[0]);
            a.check_alive();
            batch.clear();
            b.recv_batch(&mut batch).unwrap();
            if !batch.is_empty() {
                assert_eq!(batch.frame(0), &frame(4, 100)[..]);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn unix_dgram_peer_refuses_a_live_path_and_replaces_a_dead_one() {
        let tmp = tempdir();
        let live = tmp.path().join("live");
        let _holder = client(&live);
        let err = UnixDgramPeer::connect(&live, tmp.path().join("x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        let dead = tmp.path().join("dead");
        dead_socket(&dead);
        let peer = with_umask_lock(|| UnixDgramPeer::connect(&dead, tmp.path().join("x"))).unwrap();
        assert_eq!(peer.local_path(), dead);
    }

    #[test]
    fn hub_gives_each_source_its_own_peer_and_routes_replies() {
        let tmp = tempdir();
        let mut hub =
            with_umask_lock(|| DgramHub::bind(tmp.path().join("hub"), HubOptions::default()))
                .unwrap();
        let c1 = client(&tmp.path().join("vm1"));
        let c2 = client(&tmp.path().join("vm2"));
        c1.send_to(&frame(1, 100), hub.path()).unwrap();
        c2.send_to(&frame(2, 200), hub.path()).unwrap();
        c1.send_to(&frame(3, 1514), hub.path()).unwrap();

        let got = hub_recv(&mut hub, 3);
        let new: Vec<(PeerId, PathBuf)> = hub.take_new_peers().collect();
        assert_eq!(new.len(), 2);
        assert_eq!(new[0].1, tmp.path().join("vm1"));
        assert_eq!(new[1].1, tmp.path().join("vm2"));
        let (id1, id2) = (new[0].0, new[1].0);
        assert_ne!(id1, id2);
        assert_eq!(
            got,
            vec![
                (id1, frame(1, 100)),
                (id2, frame(2, 200)),
                (id1, frame(3, 1514))
            ]
        );
        assert_eq!(hub.take_new_peers().count(), 0, "announced once");
        assert_eq!(hub.peer_count(), 2);

        // Replies go to the right VM only.
        let mut out = FrameBatch::new();
        out.push(&frame(10, 60));
        out.push(&frame(11, 9000));
        assert_eq!(hub.send_to(id2, &out, &[1, 0]).sent, 2);
        assert_eq!(hub.send_to(id1, &out, &[0]).sent, 1);
        let mut buf = vec![0u8; 70000];
        let n = c2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &frame(11, 9000)[..]);
        let n = c2.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &frame(10, 60)[..]);
        let (n, from) = c1.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &frame(10, 60)[..]);
        assert_eq!(from.as_pathname(), Some(hub.path()));
        c1.set_nonblocking(true).unwrap();
        c2.set_nonblocking(true).unwrap();
        assert!(c1.recv(&mut buf).is_err(), "nothing else for vm1");
        assert!(c2.recv(&mut buf).is_err(), "nothing else for vm2");
    }

    #[test]
    fn hub_drops_unnamed_and_excess_sources_and_keeps_slots_aligned() {
        let tmp = tempdir();
        let mut hub =
            with_umask_lock(|| DgramHub::bind(tmp.path().join("hub"), HubOptions { max_peers: 2 }))
                .unwrap();
        let c1 = client(&tmp.path().join("vm1"));
        let c2 = client(&tmp.path().join("vm2"));
        let c3 = client(&tmp.path().join("vm3"));
        let unnamed = StdUnixDatagram::unbound().unwrap();
        // Drops land between kept frames, so kept ones must be moved down.
        unnamed.send_to(&frame(0, 50), hub.path()).unwrap();
        c1.send_to(&frame(1, 100), hub.path()).unwrap();
        unnamed.send_to(&frame(0, 50), hub.path()).unwrap();
        c2.send_to(&frame(2, 200), hub.path()).unwrap();
        c3.send_to(&frame(3, 300), hub.path()).unwrap();
        c1.send_to(&frame(4, 400), hub.path()).unwrap();

        let mut batch = FrameBatch::new();
        batch.push(b"already in the batch");
        let mut peers = [PeerId::NONE; BATCH_CAPACITY];
        let deadline = Instant::now() + WAIT;
        while batch.len() < 4 {
            assert!(Instant::now() < deadline);
            hub.recv_from_batch(&mut batch, &mut peers).unwrap();
        }
        assert_eq!(batch.len(), 4);
        assert_eq!(peers[0], PeerId::NONE, "earlier frames are left alone");
        assert_eq!(batch.frame(0), b"already in the batch");
        assert_eq!(batch.frame(1), &frame(1, 100)[..]);
        assert_eq!(batch.frame(2), &frame(2, 200)[..]);
        assert_eq!(batch.frame(3), &frame(4, 400)[..]);
        assert_eq!(peers[1], peers[3]);
        assert_ne!(peers[1], peers[2]);
        assert_eq!(
            hub.stats(),
            HubStats {
                unnamed: 2,
                refused: 1
            }
        );
        assert_eq!(hub.peer_count(), 2);
        let mut more = FrameBatch::new();
        assert_eq!(
            hub.recv_from_batch(&mut more, &mut peers).unwrap(),
            RecvStatus::Drained
        );
    }

    #[test]
    fn hub_reports_vanished_peers_and_forgets_them() {
        let tmp = tempdir();
        let mut hub =
            with_umask_lock(|| DgramHub::bind(tmp.path().join("hub"), HubOptions::default()))
                .unwrap();
        let p1 = tmp.path().join("vm1");
        let p2 = tmp.path().join("vm2");
        let c1 = client(&p1);
        let c2 = client(&p2);
        c1.send_to(&frame(1, 60), hub.path()).unwrap();
        c2.send_to(&frame(2, 60), hub.path()).unwrap();
        hub_recv(&mut hub, 2);
        let new: Vec<(PeerId, PathBuf)> = hub.take_new_peers().collect();
        let (id1, id2) = (new[0].0, new[1].0);

        // vm2's socket file is removed: ENOENT.
        drop(c2);
        std::fs::remove_file(&p2).unwrap();
        let out = one(&frame(9, 60));
        let r = hub.send_to(id2, &out, &[0, 0]);
        assert_eq!(r.sent, 0);
        assert_eq!(r.dropped_error, 2);
        assert_eq!(
            hub.take_gone_peers().collect::<Vec<_>>(),
            vec![(id2, p2.clone())]
        );
        assert_eq!(hub.peer_path(id2), None);
        assert_eq!(hub.send_to(id2, &out, &[0]).dropped_error, 1, "stale id");
        assert_eq!(hub.take_gone_peers().count(), 0, "reported once");

        // vm1's file is left by a crash (nobody bound to it): ECONNREFUSED.
        drop(c1);
        std::fs::remove_file(&p1).unwrap();
        dead_socket(&p1);
        assert_eq!(hub.send_to(id1, &out, &[0]).dropped_error, 1);
        assert_eq!(
            hub.take_gone_peers().collect::<Vec<_>>(),
            vec![(id1, p1.clone())]
        );
        assert_eq!(hub.peer_count(), 0);

        // A restarted VM at the same path is a new peer with a new id.
        std::fs::remove_file(&p1).unwrap();
        let c1 = client(&p1);
        c1.send_to(&frame(3, 60), hub.path()).unwrap();
        let got = hub_recv(&mut hub, 1);
        let new: Vec<(PeerId, PathBuf)> = hub.take_new_peers().collect();
        assert_eq!(new.len(), 1);
        assert_ne!(new[0].0, id1, "slot reused under a new generation");
        assert_eq!(got[0].0, new[0].0);

        // The daemon forgets it: no gone report, and it is stale.
        assert_eq!(hub.forget(new[0].0), Some(p1.clone()));
        assert_eq!(hub.forget(new[0].0), None);
        assert_eq!(hub.send_to(new[0].0, &out, &[0]).dropped_error, 1);
        assert_eq!(hub.take_gone_peers().count(), 0);

        let hub_path = hub.path().to_owned();
        drop(hub);
        assert!(!hub_path.exists());
    }

    #[test]
    fn unix_dgram_peer_talks_to_a_hub() {
        let tmp = tempdir();
        let mut hub =
            with_umask_lock(|| DgramHub::bind(tmp.path().join("hub"), HubOptions::default()))
                .unwrap();
        let mut peer =
            with_umask_lock(|| UnixDgramPeer::connect(tmp.path().join("p"), hub.path())).unwrap();
        assert!(peer.is_connected());
        assert_eq!(peer.send_batch(&one(&frame(1, 1514)), &[0]).sent, 1);
        let got = hub_recv(&mut hub, 1);
        let (id, path) = hub.take_new_peers().next().unwrap();
        assert_eq!(path, tmp.path().join("p"));
        assert_eq!(got, vec![(id, frame(1, 1514))]);
        assert_eq!(hub.send_to(id, &one(&frame(2, 64)), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut peer, 1), vec![frame(2, 64)]);
    }
}
