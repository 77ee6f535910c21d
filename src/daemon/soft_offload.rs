//! Finishing offload work in software for ports that cannot take it.
//!
//! An offloading tap hands the switch TCP super-frames and frames whose
//! checksum is left to the receiver. Another offloading tap takes them as
//! they are (one syscall per super-frame is the point of offloading); every
//! other port (VDE sockets, plain taps) gets real wire frames: the
//! super-frame cut into segments, the checksum filled in.

use switchboard_plugs::batch::ALL_FRAMES;
use switchboard_plugs::offload::{self, Offload};
use switchboard_plugs::{FrameBatch, MAX_FRAME_SLOT, Plug, TxReport};

/// Buffers for software segmentation, allocated once.
pub(crate) struct SoftOffload {
    out: FrameBatch,
    scratch: Box<[u8]>,
}

impl SoftOffload {
    pub(crate) fn new() -> Self {
        SoftOffload {
            out: FrameBatch::new(),
            scratch: vec![0u8; MAX_FRAME_SLOT].into_boxed_slice(),
        }
    }

    /// Sends the frames `which` of `batch` to `plug`, finishing offload work
    /// first when the plug cannot take it. Runs of plain frames still go out
    /// in one call.
    pub(crate) fn send(
        &mut self,
        plug: &mut dyn Plug,
        batch: &FrameBatch,
        which: &[u16],
    ) -> TxReport {
        if plug.accepts_offload() {
            return plug.send_batch(batch, which);
        }
        let mut report = TxReport::default();
        let mut run_start = 0;
        for (k, &i) in which.iter().enumerate() {
            let i = usize::from(i);
            if i >= batch.len() || batch.offload(i).is_plain() {
                continue;
            }
            if run_start < k {
                report.absorb(plug.send_batch(batch, &which[run_start..k]));
            }
            run_start = k + 1;
            report.absorb(self.finish(plug, batch.frame(i), batch.offload(i)));
        }
        if run_start < which.len() {
            report.absorb(plug.send_batch(batch, &which[run_start..]));
        }
        report
    }

    /// Turns one offloaded frame into wire frames and sends them.
    fn finish(&mut self, plug: &mut dyn Plug, frame: &[u8], off: &Offload) -> TxReport {
        let mut report = TxReport::default();
        self.out.clear();
        let result = if off.is_gso() {
            let out = &mut self.out;
            offload::segment(frame, off, &mut self.scratch, |seg| {
                if out.is_full() {
                    report.absorb(plug.send_batch(out, &ALL_FRAMES[..out.len()]));
                    out.clear();
                }
                out.push(seg);
            })
            .map(|_| ())
        } else {
            self.out.push(frame);
            offload::complete_checksum(self.out.frame_mut(0), off)
        };
        match result {
            Ok(()) => {
                if !self.out.is_empty() {
                    report.absorb(plug.send_batch(&self.out, &ALL_FRAMES[..self.out.len()]));
                }
            }
            Err(e) => {
                tracing::debug!(error = ?e, "cannot finish an offloaded frame in software; dropped");
                report.dropped_error += 1;
            }
        }
        report
    }
}
