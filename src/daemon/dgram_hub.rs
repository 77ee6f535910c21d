//! QEMU `-netdev dgram` clients on a segment: one bound Unix datagram
//! socket (a [`DgramHub`]) that every VM sends to, and a port per source
//! path.
//!
//! The hub is one endpoint (one token, on the ready queue like a port); each
//! of its peers is an ordinary [`Endpoint::Port`] whose plug is a
//! [`HubPeerPlug`]: a handle that sends through the shared hub socket and
//! never receives (the hub endpoint receives for all of them). The hub, its
//! peer table and each peer's last-heard time live in one [`HubState`]
//! shared by `Rc<RefCell<_>>`; nothing keeps a borrow across a call into
//! another endpoint, so the borrows never overlap.
//!
//! Peers come and go like this:
//!
//! * a datagram from a new path makes the hub learn a peer; the daemon
//!   attaches a port for it before forwarding that datagram;
//! * a send that finds the peer's socket gone (`ENOENT`, `ECONNREFUSED`)
//!   makes the hub drop the peer; the daemon removes its port at the end of
//!   the turn ([`reap_gone_peers`]);
//! * a peer that sent nothing for [`HUB_PEER_IDLE_TIMEOUT`] is presumed gone
//!   (a VM killed without a trace leaves no socket error if nobody sends to
//!   it): its plug reports itself dead to the daemon's housekeeping, which
//!   removes the port. If the VM was only quiet, its next frame attaches it
//!   again, as a new port;
//! * whenever a port is removed, for any reason, dropping its plug makes the
//!   hub forget the peer, so the peer's next datagram starts over.
//!
//! A peer refused a port (the segment is full) is forgotten at once and
//! retried on its next datagram; its frames are dropped meanwhile.

use super::endpoint::Endpoint;
use super::event_loop::{Daemon, DaemonError};
use crate::switch::{PortId, PortRequest, SegmentId};
use crate::time::{Instant, MonotonicClock};
use hashbrown::HashMap;
use mio::{Interest, Token};
use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
use switchboard_plugs::batch::BATCH_CAPACITY;
use switchboard_plugs::dgram_peer::{DgramHub, HubOptions, PeerId};
use switchboard_plugs::{FrameBatch, Plug, RecvStatus, TxReport};

/// A hub peer that sent nothing for this long loses its port.
pub(crate) const HUB_PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// At most one warning this often about peers refused a port.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A hub and the daemon's view of its peers, shared by the hub endpoint and
/// the plugs of its peers' ports.
pub(crate) type SharedHub = Rc<RefCell<HubState>>;

/// A peer with a port.
#[derive(Debug, Clone, Copy)]
struct HubPeer {
    port: PortId,
    last_heard: Instant,
}

/// See the [module documentation](self).
pub(crate) struct HubState {
    pub(super) hub: DgramHub,
    peers: HashMap<PeerId, HubPeer>,
    clock: MonotonicClock,
    idle_timeout: Duration,
    /// Frames dropped because their peer has no port, since the last
    /// refusal warning.
    unattached_frames: u64,
    /// Peers refused since the last refusal warning.
    refused: u64,
    last_refusal_log: Option<Instant>,
}

impl HubState {
    pub(crate) fn new(hub: DgramHub, clock: MonotonicClock, idle_timeout: Duration) -> SharedHub {
        Rc::new(RefCell::new(HubState {
            hub,
            peers: HashMap::new(),
            clock,
            idle_timeout,
            unattached_frames: 0,
            refused: 0,
            last_refusal_log: None,
        }))
    }

    /// Sets `ingress[i]` to the port of `sources[i]` (`None` for a peer
    /// without one) and marks each peer heard at `now`. Frames of a batch
    /// mostly come in runs from one peer, so each run costs one lookup.
    pub(crate) fn resolve(
        &mut self,
        sources: &[PeerId],
        ingress: &mut [Option<PortId>],
        now: Instant,
    ) {
        let mut last: Option<(PeerId, Option<PortId>)> = None;
        for (&src, out) in sources.iter().zip(ingress.iter_mut()) {
            let port = match last {
                Some((p, port)) if p == src => port,
                _ => {
                    let port = self.peers.get_mut(&src).map(|e| {
                        e.last_heard = now;
                        e.port
                    });
                    last = Some((src, port));
                    port
                }
            };
            if port.is_none() {
                self.unattached_frames += 1;
            }
            *out = port;
        }
    }

    /// The port of `peer`, if it has one.
    #[cfg(test)]
    fn port_of(&self, peer: PeerId) -> Option<PortId> {
        self.peers.get(&peer).map(|e| e.port)
    }

    /// Records that `peer` got `port`.
    fn attach(&mut self, peer: PeerId, port: PortId, now: Instant) {
        self.peers.insert(
            peer,
            HubPeer {
                port,
                last_heard: now,
            },
        );
    }

    /// Forgets `peer` everywhere (its port is going away).
    fn detach(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
        self.hub.forget(peer);
    }

    /// Whether `peer` is still served: the hub knows it and it sent
    /// something within the idle timeout.
    fn is_live(&self, peer: PeerId, now: Instant) -> bool {
        self.hub.peer_path(peer).is_some()
            && self
                .peers
                .get(&peer)
                .is_some_and(|e| now.saturating_since(e.last_heard) < self.idle_timeout)
    }

    /// The ports of peers a send found gone since the last call.
    fn take_gone_ports(&mut self) -> Vec<PortId> {
        let HubState { hub, peers, .. } = self;
        hub.take_gone_peers()
            .filter_map(|(id, path)| {
                tracing::debug!(peer = %path.display(), "dgram peer's socket is gone");
                peers.get(&id).map(|e| e.port)
            })
            .collect()
    }

    /// Notes a peer refused a port; warns at most every
    /// [`REFUSAL_LOG_INTERVAL`].
    fn note_refusal(&mut self, path: &Path, error: &str, now: Instant) {
        self.refused += 1;
        let due = self
            .last_refusal_log
            .is_none_or(|t| now.saturating_since(t) >= REFUSAL_LOG_INTERVAL);
        if due {
            tracing::warn!(
                hub = %self.hub.path().display(),
                peer = %path.display(),
                error,
                refused = self.refused,
                dropped_frames = self.unattached_frames,
                "dgram client refused a port; its frames are dropped until one is free"
            );
            self.last_refusal_log = Some(now);
            self.refused = 0;
            self.unattached_frames = 0;
        } else {
            tracing::debug!(peer = %path.display(), error, "dgram client refused a port");
        }
    }
}

/// The plug of one hub peer's port: sends go through the hub socket to the
/// peer's path; receiving is the hub endpoint's job, so
/// [`recv_batch`](Plug::recv_batch) finds nothing. Dropping it (the port is
/// removed) makes the hub forget the peer.
pub(crate) struct HubPeerPlug {
    hub: SharedHub,
    peer: PeerId,
    description: String,
}

impl HubPeerPlug {
    pub(crate) fn new(hub: SharedHub, peer: PeerId, path: &Path) -> HubPeerPlug {
        HubPeerPlug {
            hub,
            peer,
            description: peer_description(path),
        }
    }
}

/// How a hub peer shows in the port table.
fn peer_description(path: &Path) -> String {
    format!("dgram unix:{}", path.display())
}

impl Plug for HubPeerPlug {
    fn recv_batch(&mut self, _batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        Ok(RecvStatus::Drained)
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        self.hub.borrow_mut().hub.send_to(self.peer, batch, which)
    }

    /// False once the hub dropped the peer or the peer has been silent for
    /// the idle timeout.
    fn check_alive(&mut self) -> bool {
        let st = self.hub.borrow();
        st.is_live(self.peer, st.clock.now())
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "dgram"
    }
}

impl Drop for HubPeerPlug {
    fn drop(&mut self) {
        match self.hub.try_borrow_mut() {
            Ok(mut st) => st.detach(self.peer),
            // Only if a plug were dropped while the hub is borrowed, which
            // the daemon never does; the peer then lingers until idle.
            Err(_) => {
                tracing::error!(peer = %self.description, "dgram hub busy; peer not forgotten")
            }
        }
    }
}

// No descriptor of its own: the mio registration is a no-op.
switchboard_plugs::no_descriptor_source!(HubPeerPlug);

/// Binds the hub at `path` and starts serving it for `segment`.
pub(super) fn open_dgram_hub(
    d: &mut Daemon,
    segment: SegmentId,
    path: &Path,
    max_ports: u16,
) -> Result<(), DaemonError> {
    let options = HubOptions {
        // Every peer needs a port, and one refused a port is forgotten at
        // once, so the table never holds more than the segment's ports plus
        // one batch of newcomers. The daemon refuses the rest (and says so);
        // the hub's own refusals would be silent.
        max_peers: usize::from(max_ports) + BATCH_CAPACITY,
    };
    let hub = DgramHub::bind(path, options)
        .map_err(|e| DaemonError::Setup(format!("dgram socket {}: {e}", path.display())))?;
    let hub = HubState::new(hub, d.clock, HUB_PEER_IDLE_TIMEOUT);
    d.insert(
        Endpoint::DgramHub {
            segment,
            hub: Rc::clone(&hub),
            queued: false,
        },
        Interest::READABLE,
    )?;
    tracing::info!(socket = %path.display(), "QEMU dgram socket ready");
    d.hubs.push(hub);
    Ok(())
}

/// Serves the hub at `token` once: receives one batch, attaches ports for
/// new peers, forwards the frames. Returns whether more may be waiting, or
/// `None` if `token` is not a hub.
pub(super) fn serve_hub(d: &mut Daemon, token: Token) -> Option<RecvStatus> {
    let Some(Endpoint::DgramHub {
        segment,
        hub,
        queued,
    }) = d.endpoints.get_mut(token.0)
    else {
        return None;
    };
    *queued = false;
    let (segment, hub) = (*segment, Rc::clone(hub));
    let status = match d.forwarder.recv_hub(&hub) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(hub = %hub.borrow().hub.path().display(), error = %e, "dgram receive failed");
            RecvStatus::Drained
        }
    };
    let now = d.clock.now();
    attach_new_peers(d, segment, &hub, now);
    d.forwarder
        .forward_hub(&hub, &mut d.endpoints, &d.port_tokens, &mut d.engine, now);
    Some(status)
}

/// Gives each peer the hub learned a port of `segment`.
fn attach_new_peers(d: &mut Daemon, segment: SegmentId, hub: &SharedHub, now: Instant) {
    // Empty (and not allocated) unless someone new arrived.
    let new: Vec<(PeerId, PathBuf)> = hub.borrow_mut().hub.take_new_peers().collect();
    for (peer, path) in new {
        let plug = HubPeerPlug::new(Rc::clone(hub), peer, &path);
        let req = PortRequest {
            number: None,
            kind: "dgram",
            description: plug.description.clone(),
            ..Default::default()
        };
        // On failure the plug is dropped, which forgets the peer.
        match d.add_port(segment, req, Box::new(plug)) {
            Ok(port) => hub.borrow_mut().attach(peer, port, now),
            Err(e) => hub.borrow_mut().note_refusal(&path, &e, now),
        }
    }
}

/// Removes the ports of peers whose socket a send found gone.
pub(super) fn reap_gone_peers(d: &mut Daemon) {
    for i in 0..d.hubs.len() {
        let gone = d.hubs[i].borrow_mut().take_gone_ports();
        for port in gone {
            if let Some(token) = d.port_tokens.get(port.index()).copied().flatten() {
                d.remove_port(token);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn port(i: u32) -> PortId {
        PortId(i)
    }

    use crate::daemon::scratch::Scratch;

    /// A hub in a fresh directory, with `n` client sockets that each sent
    /// one frame and were attached as ports 0..n.
    fn hub_with_clients(
        n: usize,
        idle: Duration,
    ) -> (Scratch, SharedHub, Vec<(PeerId, UnixDatagram)>) {
        let tmp = Scratch::new("hub");
        let hub = DgramHub::bind(tmp.path().join("hub"), HubOptions::default()).unwrap();
        let clock = MonotonicClock::new();
        let shared = HubState::new(hub, clock, idle);
        let hub_path = shared.borrow().hub.path().to_owned();
        let mut clients = Vec::new();
        for i in 0..n {
            let c = UnixDatagram::bind(tmp.path().join(format!("vm{i}"))).unwrap();
            c.send_to(&[i as u8; 60], &hub_path).unwrap();
            clients.push(c);
        }
        let mut batch = FrameBatch::new();
        let mut sources = [PeerId::NONE; BATCH_CAPACITY];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while batch.len() < n {
            assert!(std::time::Instant::now() < deadline);
            shared
                .borrow_mut()
                .hub
                .recv_from_batch(&mut batch, &mut sources)
                .unwrap();
        }
        let new: Vec<(PeerId, PathBuf)> = shared.borrow_mut().hub.take_new_peers().collect();
        assert_eq!(new.len(), n);
        let now = clock.now();
        let with_ids = new
            .iter()
            .zip(clients)
            .enumerate()
            .map(|(i, ((id, _), c))| {
                shared.borrow_mut().attach(*id, port(i as u32), now);
                (*id, c)
            })
            .collect();
        (tmp, shared, with_ids)
    }

    #[test]
    fn resolve_maps_runs_of_sources_to_ports() {
        let (_tmp, shared, clients) = hub_with_clients(2, HUB_PEER_IDLE_TIMEOUT);
        let (a, b) = (clients[0].0, clients[1].0);
        let sources = [a, a, b, PeerId::NONE, b, a];
        let mut ingress = [None; 6];
        shared
            .borrow_mut()
            .resolve(&sources, &mut ingress, Instant::from_secs(1));
        assert_eq!(
            ingress,
            [
                Some(port(0)),
                Some(port(0)),
                Some(port(1)),
                None,
                Some(port(1)),
                Some(port(0))
            ]
        );
        assert_eq!(shared.borrow().unattached_frames, 1);
        assert_eq!(shared.borrow().port_of(b), Some(port(1)));
    }

    #[test]
    fn peer_plug_sends_to_its_peer_only_and_forgets_it_when_dropped() {
        let (_tmp, shared, clients) = hub_with_clients(2, HUB_PEER_IDLE_TIMEOUT);
        let mut plug = HubPeerPlug::new(Rc::clone(&shared), clients[1].0, Path::new("/x/vm1"));
        assert_eq!(plug.kind(), "dgram");
        assert_eq!(plug.description(), "dgram unix:/x/vm1");
        let mut batch = FrameBatch::new();
        assert_eq!(plug.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
        assert!(batch.is_empty());
        batch.push(&[7u8; 100]);
        batch.push(&[8u8; 1514]);
        assert_eq!(plug.send_batch(&batch, &[1, 0]).sent, 2);
        let c1 = &clients[1].1;
        c1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let n = c1.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[8u8; 1514][..]);
        let n = c1.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[7u8; 100][..]);
        clients[0].1.set_nonblocking(true).unwrap();
        assert!(clients[0].1.recv(&mut buf).is_err(), "nothing for vm0");
        assert!(plug.check_alive());

        drop(plug);
        let st = shared.borrow();
        assert_eq!(st.port_of(clients[1].0), None);
        assert_eq!(st.hub.peer_path(clients[1].0), None, "hub forgot it");
        assert_eq!(st.hub.peer_count(), 1);
    }

    #[test]
    fn silent_or_vanished_peers_are_not_alive() {
        let (tmp, shared, clients) = hub_with_clients(2, Duration::from_millis(200));
        let mut quiet = HubPeerPlug::new(Rc::clone(&shared), clients[0].0, Path::new("q"));
        let mut gone = HubPeerPlug::new(Rc::clone(&shared), clients[1].0, Path::new("g"));
        assert!(quiet.check_alive() && gone.check_alive());

        // vm1's socket disappears: the next send finds it gone.
        drop(clients.into_iter().nth(1));
        std::fs::remove_file(tmp.path().join("vm1")).unwrap();
        let mut batch = FrameBatch::new();
        batch.push(&[1u8; 60]);
        assert_eq!(gone.send_batch(&batch, &[0]).dropped_error, 1);
        assert_eq!(shared.borrow_mut().take_gone_ports(), vec![port(1)]);
        assert!(!gone.check_alive());
        assert!(quiet.check_alive());

        // vm0 stays silent past the idle timeout.
        std::thread::sleep(Duration::from_millis(250));
        assert!(!quiet.check_alive());
    }
}
