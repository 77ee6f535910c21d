//! The fast path: one batch from one port (or from a dgram hub, whose
//! frames each come from their own peer's port) through the engine to its
//! egress ports.
//!
//! On a segment that filters VLANs, a port may need a frame in another form
//! than it arrived (a tag pushed, rewritten or popped). Such a port's frames
//! of the batch are copied, rewritten, into a scratch batch and sent from
//! there, still in order and still in one call; every other port is sent
//! the received frames in place, so VLAN-unaware traffic costs one length
//! test per frame.

use super::dgram_hub::HubState;
use super::endpoint::Endpoint;
use super::soft_offload::SoftOffload;
use crate::switch::vlan::write_with_tag;
use crate::switch::{Egress, Engine, PortId, TagAction};
use crate::time::Instant;
use mio::{Registry, Token};
use slab::Slab;
use std::cell::RefCell;
use std::io;
use switchboard_plugs::batch::{ALL_FRAMES, BATCH_CAPACITY};
use switchboard_plugs::dgram_peer::PeerId;
use switchboard_plugs::offload::Offload;
use switchboard_plugs::{FrameBatch, RecvStatus};

/// Buffers reused for every batch, so forwarding allocates nothing once
/// every port has been seen.
pub(crate) struct Forwarder {
    batch: FrameBatch,
    /// For a batch from a dgram hub: the peer each frame came from...
    sources: [PeerId; BATCH_CAPACITY],
    /// ...and that peer's port (`None`: it has none, the frame is dropped).
    ingress: [Option<PortId>; BATCH_CAPACITY],
    fanout: Fanout,
}

/// The part of forwarding that does not care where a batch came from:
/// decisions, gathering per egress port, sending.
struct Fanout {
    egress: Egress,
    /// Per egress port (by `PortId` index): indices of this batch's frames
    /// it must send.
    pending: Vec<Vec<u16>>,
    /// Per egress port: the frames of its `pending` list that need a tag
    /// change, as (position in `pending`, action), ascending.
    rewrites: Vec<Vec<(u16, TagAction)>>,
    /// Where rewritten frames for one port are built (allocated once).
    retagged: FrameBatch,
    /// Ports with a non-empty `pending` list, in first-touched order.
    touched: Vec<PortId>,
    /// Segmentation and checksums for ports without offload support.
    soft: SoftOffload,
    /// The event loop's registry (a handle on the same epoll set), so a
    /// plug can change what it is watched for right after a receive or a
    /// send (see `Plug::refresh_interest`).
    registry: Registry,
}

impl Forwarder {
    /// A forwarder whose plugs update their registrations through
    /// `registry`, which must belong to the event loop's `Poll`.
    pub(crate) fn new(registry: Registry) -> Self {
        Forwarder {
            batch: FrameBatch::new(),
            sources: [PeerId::NONE; BATCH_CAPACITY],
            ingress: [None; BATCH_CAPACITY],
            fanout: Fanout {
                egress: Egress::with_capacity(64),
                pending: Vec::new(),
                rewrites: Vec::new(),
                retagged: FrameBatch::new(),
                touched: Vec::with_capacity(64),
                soft: SoftOffload::new(),
                registry,
            },
        }
    }

    /// Makes room for per-port state up to `bound` ports (called when a
    /// port is added, never per frame).
    pub(crate) fn reserve_ports(&mut self, bound: usize) {
        let f = &mut self.fanout;
        while f.pending.len() < bound {
            f.pending.push(Vec::with_capacity(BATCH_CAPACITY));
        }
        while f.rewrites.len() < bound {
            f.rewrites.push(Vec::with_capacity(BATCH_CAPACITY));
        }
        if f.touched.capacity() < bound {
            f.touched.reserve(bound - f.touched.len());
        }
    }

    /// Receives one batch on the port at `token` and forwards it. Returns
    /// what the plug said about its queue, or `None` if `token` is not a
    /// port.
    pub(crate) fn serve(
        &mut self,
        token: Token,
        endpoints: &mut Slab<Endpoint>,
        port_tokens: &[Option<Token>],
        engine: &mut Engine,
        now: impl FnOnce() -> Instant,
    ) -> Option<RecvStatus> {
        let Some(Endpoint::Port { port, plug, queued }) = endpoints.get_mut(token.0) else {
            return None;
        };
        *queued = false;
        let ingress = *port;
        self.batch.clear();
        let mut status = match plug.recv_batch(&mut self.batch) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(port = ingress.index(), kind = plug.kind(), error = %e, "receive failed; unplugging the port");
                RecvStatus::Closed
            }
        };
        if status != RecvStatus::Closed
            && let Err(e) = plug.refresh_interest(&self.fanout.registry, token)
        {
            // A port whose input can no longer be watched would go deaf.
            tracing::warn!(port = ingress.index(), kind = plug.kind(), error = %e, "cannot watch the port; unplugging it");
            status = RecvStatus::Closed;
        }
        if !self.batch.is_empty() {
            self.fanout.forward(
                &self.batch,
                |_| Some(ingress),
                endpoints,
                port_tokens,
                engine,
                now(),
            );
        }
        Some(status)
    }

    /// Forwards a batch that did not come from a plug (a router's output):
    /// frame `i` enters from port `ingress[i]` (`None`: dropped).
    pub(crate) fn forward_from(
        &mut self,
        batch: &FrameBatch,
        ingress: &[Option<PortId>; BATCH_CAPACITY],
        endpoints: &mut Slab<Endpoint>,
        port_tokens: &[Option<Token>],
        engine: &mut Engine,
        now: Instant,
    ) {
        self.fanout
            .forward(batch, |i| ingress[i], endpoints, port_tokens, engine, now);
    }

    /// Receives one batch from a dgram hub, noting each frame's peer. Call
    /// [`forward_hub`](Self::forward_hub) next, once every new peer has a
    /// port.
    pub(crate) fn recv_hub(&mut self, hub: &RefCell<HubState>) -> io::Result<RecvStatus> {
        self.batch.clear();
        hub.borrow_mut()
            .hub
            .recv_from_batch(&mut self.batch, &mut self.sources)
    }

    /// Forwards the batch [`recv_hub`](Self::recv_hub) received, each frame
    /// from its peer's port.
    pub(crate) fn forward_hub(
        &mut self,
        hub: &RefCell<HubState>,
        endpoints: &mut Slab<Endpoint>,
        port_tokens: &[Option<Token>],
        engine: &mut Engine,
        now: Instant,
    ) {
        let n = self.batch.len();
        if n == 0 {
            return;
        }
        // Resolved up front: sending may reach this hub's own peers, which
        // borrow it.
        hub.borrow_mut()
            .resolve(&self.sources[..n], &mut self.ingress[..n], now);
        let ingress = &self.ingress;
        self.fanout.forward(
            &self.batch,
            |i| ingress[i],
            endpoints,
            port_tokens,
            engine,
            now,
        );
    }
}

impl Fanout {
    /// Asks the engine where each frame of `batch` goes (frame `i` came in
    /// on `ingress(i)`; `None` skips it), gathers the frames per egress
    /// port, and hands each egress port its frames in one call.
    fn forward(
        &mut self,
        batch: &FrameBatch,
        mut ingress: impl FnMut(usize) -> Option<PortId>,
        endpoints: &mut Slab<Endpoint>,
        port_tokens: &[Option<Token>],
        engine: &mut Engine,
        now: Instant,
    ) {
        for i in 0..batch.len() {
            let Some(from) = ingress(i) else {
                continue;
            };
            engine.handle_sized(
                now,
                from,
                batch.frame(i),
                batch.wire_len(i),
                &mut self.egress,
            );
            let actions = self.egress.actions();
            if actions.is_empty() {
                for &out in self.egress.ports() {
                    let q = &mut self.pending[out.index()];
                    if q.is_empty() {
                        self.touched.push(out);
                    }
                    q.push(i as u16);
                }
                continue;
            }
            for (&out, &a) in self.egress.ports().iter().zip(actions) {
                let q = &mut self.pending[out.index()];
                if q.is_empty() {
                    self.touched.push(out);
                }
                if a != TagAction::Keep {
                    self.rewrites[out.index()].push((q.len() as u16, a));
                }
                q.push(i as u16);
            }
        }
        for out in self.touched.drain(..) {
            let which = &mut self.pending[out.index()];
            let token = port_tokens.get(out.index()).copied().flatten();
            let target = token.and_then(|t| endpoints.get_mut(t.0));
            let rewrites = &mut self.rewrites[out.index()];
            if let (Some(Endpoint::Port { plug, .. }), Some(token)) = (target, token) {
                let (r, unfit) = if rewrites.is_empty() {
                    (self.soft.send(plug.as_mut(), batch, which), 0)
                } else {
                    let unfit = retag_into(&mut self.retagged, batch, which, rewrites);
                    let n = self.retagged.len();
                    let r = self
                        .soft
                        .send(plug.as_mut(), &self.retagged, &ALL_FRAMES[..n]);
                    (r, unfit)
                };
                engine.record_tx(
                    out,
                    r.sent as u64,
                    r.sent_bytes as u64,
                    r.dropped_full as u64,
                    (r.dropped_error + unfit) as u64,
                );
                // A send may have started or emptied a backlog. A failure
                // leaves the old registration, which still watches what the
                // port receives; the next refresh tries again.
                if let Err(e) = plug.refresh_interest(&self.registry, token) {
                    tracing::debug!(port = out.index(), error = %e, "cannot update what the port is watched for");
                }
            }
            rewrites.clear();
            which.clear();
        }
    }
}

/// Copies frames `which` of `batch` into `out` in order, applying the tag
/// action `rewrites` names for some of them (by position in `which`), and
/// shifts each rewritten frame's offload offsets by the bytes its tag added
/// or removed, so a super-frame or a pending checksum still points at its
/// L4 header. Returns how many frames could not be rewritten (too long for
/// a slot once tagged, or offsets that would fall outside the frame);
/// those are left out.
fn retag_into(
    out: &mut FrameBatch,
    batch: &FrameBatch,
    which: &[u16],
    rewrites: &[(u16, TagAction)],
) -> usize {
    out.clear();
    let mut unfit = 0;
    let mut next = rewrites.iter().peekable();
    for (pos, &i) in which.iter().enumerate() {
        let action = match next.peek() {
            Some(&&(p, a)) if usize::from(p) == pos => {
                next.next();
                a
            }
            _ => TagAction::Keep,
        };
        let i = usize::from(i);
        if i >= batch.len() {
            continue;
        }
        let frame = batch.frame(i);
        let delta = action.len_delta(frame);
        let Some(off) = shift_offload(*batch.offload(i), delta) else {
            unfit += 1;
            continue;
        };
        let Some(slot) = out.next_slot() else {
            unfit += 1;
            continue;
        };
        match write_with_tag(frame, action, slot) {
            Some(n) => out.commit_offloaded(n, off),
            None => unfit += 1,
        }
    }
    unfit
}

/// Moves a frame's offload offsets by `delta` bytes (a tag pushed: +4,
/// popped: -4). Plain frames carry no offsets and are returned as they are.
fn shift_offload(mut off: Offload, delta: isize) -> Option<Offload> {
    if delta == 0 || off.is_plain() {
        return Some(off);
    }
    let shift = |v: u16| u16::try_from((v as isize).checked_add(delta)?).ok();
    off.csum_start = shift(off.csum_start)?;
    if off.hdr_len != 0 {
        off.hdr_len = shift(off.hdr_len)?;
    }
    Some(off)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: Option<u16>, body: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, body]);
        if let Some(t) = tag {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00, body, body]);
        f
    }

    #[test]
    fn retags_in_order_and_shifts_offload_offsets() {
        let mut batch = FrameBatch::new();
        batch.push(&frame(None, 1));
        let off = Offload {
            flags: Offload::F_NEEDS_CSUM,
            gso_type: Offload::GSO_TCPV4,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let f2 = frame(None, 2);
        batch.next_slot().unwrap()[..f2.len()].copy_from_slice(&f2);
        batch.commit_offloaded(f2.len(), off);
        batch.push(&frame(Some(0x2014), 3));
        batch.push(&frame(None, 4));

        let mut out = FrameBatch::new();
        // frame 0 as is, frame 1 tagged VLAN 10, frame 2 untagged, frame 3
        // skipped by this port
        let unfit = retag_into(
            &mut out,
            &batch,
            &[0, 1, 2],
            &[(1, TagAction::Tag(10)), (2, TagAction::Untag)],
        );
        assert_eq!(unfit, 0);
        assert_eq!(out.len(), 3);
        assert_eq!(out.frame(0), &frame(None, 1)[..]);
        assert_eq!(out.frame(1), &frame(Some(10), 2)[..]);
        assert_eq!(out.frame(2), &frame(None, 3)[..]);
        let o = out.offload(1);
        assert_eq!((o.csum_start, o.hdr_len, o.gso_size), (38, 58, 1448));
        assert_eq!(*out.offload(0), Offload::default());

        // popping the tag of an offloaded frame moves its offsets back
        let back = shift_offload(*o, -4).unwrap();
        assert_eq!(back, off);
        // an offset that would leave the frame is refused
        let bad = Offload {
            csum_start: 2,
            ..off
        };
        assert_eq!(shift_offload(bad, -4), None);
    }
}
