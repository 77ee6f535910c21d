//! The fast path: one batch from one port through the engine to its egress
//! ports.

use super::endpoint::Endpoint;
use super::soft_offload::SoftOffload;
use crate::switch::{Egress, Engine, PortId};
use crate::time::Instant;
use mio::Token;
use slab::Slab;
use switchboard_plugs::batch::BATCH_CAPACITY;
use switchboard_plugs::{FrameBatch, RecvStatus};

/// Buffers reused for every batch, so forwarding allocates nothing once
/// every port has been seen.
pub(crate) struct Forwarder {
    batch: FrameBatch,
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
            egress: Egress::with_capacity(64),
            pending: Vec::new(),
            touched: Vec::with_capacity(64),
            soft: SoftOffload::new(),
        }
    }

    /// Makes room for per-port state up to `bound` ports (called when a
    /// port is added, never per frame).
    pub(crate) fn reserve_ports(&mut self, bound: usize) {
        while self.pending.len() < bound {
            self.pending.push(Vec::with_capacity(BATCH_CAPACITY));
        }
        if self.touched.capacity() < bound {
            self.touched.reserve(bound - self.touched.len());
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
        if self.batch.is_empty() {
            return Some(status);
        }
        let now = now();
        for i in 0..self.batch.len() {
            let wire_len = self.batch.wire_len(i);
            engine.handle_sized(
                now,
                ingress,
                self.batch.frame(i),
                wire_len,
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
                let r = self.soft.send(plug.as_mut(), &self.batch, which);
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
        Some(status)
    }
}
