//! The fast path: one batch from one port (or from a dgram hub, whose
//! frames each come from their own peer's port) through the engine to its
//! egress ports.

use super::dgram_hub::HubState;
use super::endpoint::Endpoint;
use super::soft_offload::SoftOffload;
use crate::switch::{Egress, Engine, PortId};
use crate::time::Instant;
use mio::Token;
use slab::Slab;
use std::cell::RefCell;
use std::io;
use switchboard_plugs::batch::BATCH_CAPACITY;
use switchboard_plugs::dgram_peer::PeerId;
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
    /// Ports with a non-empty `pending` list, in first-touched order.
    touched: Vec<PortId>,
    /// Segmentation and checksums for ports without offload support.
    soft: SoftOffload,
}

impl Forwarder {
    pub(crate) fn new() -> Self {
        Forwarder {
            batch: FrameBatch::new(),
            sources: [PeerId::NONE; BATCH_CAPACITY],
            ingress: [None; BATCH_CAPACITY],
            fanout: Fanout {
                egress: Egress::with_capacity(64),
                pending: Vec::new(),
                touched: Vec::with_capacity(64),
                soft: SoftOffload::new(),
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
        let status = match plug.recv_batch(&mut self.batch) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(port = ingress.index(), kind = plug.kind(), error = %e, "receive failed; unplugging the port");
                RecvStatus::Closed
            }
        };
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
            for &out in self.egress.ports() {
                let q = &mut self.pending[out.index()];
                if q.is_empty() {
                    self.touched.push(out);
                }
                q.push(i as u16);
            }
        }
        for out in self.touched.drain(..) {
            let which = &mut self.pending[out.index()];
            let target = port_tokens
                .get(out.index())
                .copied()
                .flatten()
                .and_then(|t| endpoints.get_mut(t.0));
            if let Some(Endpoint::Port { plug, .. }) = target {
                let r = self.soft.send(plug.as_mut(), batch, which);
                engine.record_tx(
                    out,
                    r.sent as u64,
                    r.sent_bytes as u64,
                    r.dropped_full as u64,
                    r.dropped_error as u64,
                );
            }
            which.clear();
        }
    }
}
