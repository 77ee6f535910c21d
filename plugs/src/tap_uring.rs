//! Batched tap reads and writes through an io_uring.
//!
//! A tap moves one frame per `read` or `write`, so a loaded tap port costs
//! two system calls per forwarded frame, and with plain 1500-byte frames
//! the event loop spends much of its time entering and leaving the kernel.
//! A character device has no `recvmmsg`; an io_uring does that job for it:
//! a batch of reads (or writes) is queued in shared memory and handed to
//! the kernel with a single `io_uring_enter`.
//!
//! The ring is used synchronously, as a system-call batcher, not as an
//! asynchronous I/O engine. Every request carries `RWF_NOWAIT`: a read of
//! an empty tap fails at once with `EAGAIN` instead of waiting for a frame,
//! and every request completes inside the `io_uring_enter` that submitted
//! it. So the batch's slots are never lent to the kernel beyond one call,
//! readiness still comes from the event loop's epoll registration of the
//! tap, and a plug can fall back to plain system calls at any time.
//!
//! That inline completion is a property of the kernel's tap driver, which
//! accepts `RWF_NOWAIT` since Linux 6.4 (older kernels refuse the flag), so
//! [`TapRing::new`] checks the flag on the tap itself before anyone relies
//! on it, and refuses where the kernel, a seccomp filter or
//! `kernel.io_uring_disabled` says no. The caller then keeps plain system
//! calls. A ring that fails later (the kernel refuses an `io_uring_enter`)
//! reports itself broken, and the caller drops it: requests it had queued
//! but not submitted are discarded with it, never run against buffers that
//! have moved on.

use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, opcode, squeue, types};

use crate::batch::{BATCH_CAPACITY, FrameBatch};
use crate::offload::Offload;
use crate::{RecvStatus, TxReport};

/// Requests in flight at most: one batch.
const RING_ENTRIES: u32 = BATCH_CAPACITY as u32;

/// Reads per submission when the tap's backlog is unknown; the number
/// adapts to what the previous submission found.
const FIRST_READS: usize = 4;

/// `RWF_NOWAIT`: fail with `EAGAIN` rather than wait.
const NOWAIT: i32 = libc::RWF_NOWAIT;

/// A user-data value no request uses, for the probe.
const PROBE: u64 = u64::MAX;

/// One tap's io_uring, with the per-request scratch that must stay put
/// while a submission is in the kernel (virtio-net headers and iovecs).
pub struct TapRing {
    ring: IoUring,
    /// The tap, registered with the ring as its only fixed file, so a
    /// request skips the descriptor table (see [`Drop`] for why that
    /// reference is given back before the ring goes).
    fd: types::Fixed,
    /// Whether requests carry a virtio-net header before the frame.
    offload: bool,
    /// How many reads to submit next: grows while every read finds a frame,
    /// shrinks to what the last submission found.
    reads: usize,
    hdrs: Box<[[u8; Offload::HEADER_LEN]; BATCH_CAPACITY]>,
    iovs: Box<[[libc::iovec; 2]; BATCH_CAPACITY]>,
    /// Results of the last submission, indexed by request.
    results: [i32; BATCH_CAPACITY],
    /// Set when an `io_uring_enter` failed with requests queued.
    broken: bool,
}

// SAFETY: the iovecs hold raw pointers only for the duration of one
// `submit_and_wait`, on the thread that owns the ring; between calls they
// are dead values.
unsafe impl Send for TapRing {}

/// Unregisters the tap before the ring is closed: the kernel tears a
/// closed ring down later, from a work queue, and a tap it still held would
/// outlive its port (a created tap would linger, and could not be created
/// again at once). Unregistering is synchronous, and no request is in
/// flight between calls.
impl Drop for TapRing {
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_files();
    }
}

impl std::fmt::Debug for TapRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapRing")
            .field("offload", &self.offload)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

impl TapRing {
    /// Sets up a ring for the tap `fd` (non-blocking, `IFF_NO_PI`, with a
    /// virtio-net header on every frame when `offload`).
    ///
    /// Registers the tap as the ring's fixed file and probes it with one
    /// zero-length `RWF_NOWAIT` read, which consumes no frame.
    ///
    /// # Errors
    ///
    /// io_uring is unavailable (old kernel, `kernel.io_uring_disabled`, a
    /// container's seccomp filter), or the tap driver does not complete a
    /// `RWF_NOWAIT` read inline. The caller uses plain system calls then.
    pub fn new(fd: RawFd, offload: bool) -> io::Result<TapRing> {
        let ring = IoUring::builder()
            // Keep submitting past a request that fails at preparation, so
            // every request of a batch gets a completion.
            .setup_submit_all()
            .build(RING_ENTRIES)?;
        ring.submitter().register_files(&[fd])?;
        let mut tr = TapRing {
            ring,
            fd: types::Fixed(0),
            offload,
            reads: FIRST_READS,
            hdrs: Box::new([[0; Offload::HEADER_LEN]; BATCH_CAPACITY]),
            iovs: Box::new(
                [[libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                }; 2]; BATCH_CAPACITY],
            ),
            results: [0; BATCH_CAPACITY],
            broken: false,
        };
        tr.probe()?;
        Ok(tr)
    }

    /// One zero-length read with `RWF_NOWAIT`, submitted without waiting:
    /// the tap driver answers it before looking at its queue (so no frame
    /// is consumed), and a driver without `RWF_NOWAIT` support refuses it
    /// with `EOPNOTSUPP`. Its completion must be there when the submission
    /// returns, or the ring is unusable here.
    fn probe(&mut self) -> io::Result<()> {
        // Never read into (the length is 0), but kept valid for as long as
        // the request could be in flight: if it does not complete inline,
        // the buffer is leaked rather than freed under it.
        let scratch: &'static mut [u8; 1] = Box::leak(Box::new([0u8; 1]));
        let sqe = opcode::Read::new(self.fd, scratch.as_mut_ptr(), 0)
            .rw_flags(NOWAIT)
            .build()
            .user_data(PROBE);
        // SAFETY: `scratch` is leaked, so it outlives the request whatever
        // happens to it; the length is 0 anyway.
        unsafe { self.ring.submission().push(&sqe) }.map_err(io::Error::other)?;
        self.ring.submit()?;
        let Some(cqe) = self.ring.completion().next() else {
            return Err(io::Error::other(
                "the tap driver does not complete RWF_NOWAIT reads inline",
            ));
        };
        // SAFETY: the request completed; nothing refers to `scratch` now.
        drop(unsafe { Box::from_raw(std::ptr::from_mut(scratch)) });
        match cqe.result() {
            0 => Ok(()),
            n if n > 0 => Err(io::Error::other(format!(
                "a zero-length read of the tap returned {n} bytes"
            ))),
            e => Err(io::Error::from_raw_os_error(-e)),
        }
    }

    /// Whether an `io_uring_enter` failed: the ring must be dropped (see
    /// the module documentation), and the tap served with plain calls.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Makes the ring behave as after a failed `io_uring_enter`, so tests
    /// can check that its owner falls back to plain system calls.
    #[cfg(test)]
    pub(crate) fn break_for_test(&mut self) {
        self.broken = true;
    }

    /// The request reading into `slot`, with header and iovec `i` of this
    /// ring when the tap has virtio-net headers. Raw pointers only: the
    /// caller hands out every slot of one submission from a single borrow
    /// of the batch.
    fn read_sqe(&mut self, i: usize, slot: *mut u8, len: usize) -> squeue::Entry {
        let entry = if self.offload {
            self.iovs[i] = [
                libc::iovec {
                    iov_base: self.hdrs[i].as_mut_ptr().cast(),
                    iov_len: Offload::HEADER_LEN,
                },
                libc::iovec {
                    iov_base: slot.cast(),
                    iov_len: len,
                },
            ];
            opcode::Readv::new(self.fd, self.iovs[i].as_ptr(), 2)
                .rw_flags(NOWAIT)
                .build()
        } else {
            opcode::Read::new(self.fd, slot, len as u32)
                .rw_flags(NOWAIT)
                .build()
        };
        entry.user_data(i as u64)
    }

    /// Records a read of `n` bytes into free slot `i`, which `skip` failed
    /// reads before it left behind the batch's next slot.
    fn commit_read(&self, batch: &mut FrameBatch, i: usize, skip: usize, n: usize) {
        if self.offload {
            let frame_len = n.saturating_sub(Offload::HEADER_LEN);
            let meta = Offload::parse(&self.hdrs[i]).unwrap_or_default();
            batch.commit_offloaded_from(skip, frame_len, meta);
        } else {
            batch.commit_from(skip, n);
        }
    }

    /// Reads frames into `batch` until it is full or the tap is empty, a
    /// few reads per system call. Every read of a submission runs, so a
    /// read that fails does not stop the ones after it; their frames are
    /// kept, and the status reports the worst outcome (an error, then the
    /// tap's end, then "empty").
    ///
    /// # Errors
    ///
    /// A read failed for a reason other than "empty" or "gone", or the ring
    /// itself failed ([`is_broken`](Self::is_broken) then says so, and no
    /// frame of that submission was read).
    pub fn recv(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        if self.broken {
            return Err(io::Error::other("the io_uring has failed before"));
        }
        loop {
            let want = self.reads.min(batch.remaining());
            if want == 0 {
                return Ok(RecvStatus::More);
            }
            for (i, slot) in batch.free_slots().take(want).enumerate() {
                let sqe = self.read_sqe(i, slot.as_mut_ptr(), slot.len());
                // SAFETY: slot, header and iovec `i` stay in place until
                // `submit_all` returns, and every request completes inside
                // it (RWF_NOWAIT); if it fails, the ring is dropped with
                // the requests unsubmitted.
                if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                    self.broken = true;
                    return Err(io::Error::other("io_uring submission queue full"));
                }
            }
            self.submit_all(want)?;
            let mut found = 0;
            let mut skip = 0;
            let mut status: Option<io::Result<RecvStatus>> = None;
            for i in 0..want {
                let outcome = match self.results[i] {
                    n if n > 0 => {
                        self.commit_read(batch, i, skip, n as usize);
                        found += 1;
                        continue;
                    }
                    // A tap never returns 0 for a non-empty buffer while the
                    // device exists; treat it as end of file.
                    0 => Ok(RecvStatus::Closed),
                    e => {
                        let err = io::Error::from_raw_os_error(-e);
                        match err.kind() {
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {
                                Ok(RecvStatus::Drained)
                            }
                            _ if crate::tap::is_gone(&err) => Ok(RecvStatus::Closed),
                            _ => Err(err),
                        }
                    }
                };
                skip += 1;
                if severity(&outcome) > status.as_ref().map_or(0, severity) {
                    status = Some(outcome);
                }
            }
            // Next time, ask for what this one found plus a little, or
            // twice as much when every read found a frame.
            self.reads = if found == want {
                (want * 2).min(BATCH_CAPACITY)
            } else {
                (found + 2).clamp(2, BATCH_CAPACITY)
            };
            if let Some(status) = status {
                return status;
            }
        }
    }

    /// Writes the frames of `batch` listed in `which`, one system call per
    /// ring's worth, and reports what the tap took. Frames of a submission
    /// the ring could not make are counted as dropped for an error, and
    /// [`is_broken`](Self::is_broken) says so.
    pub fn send(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        let mut report = TxReport::default();
        for chunk in which.chunks(BATCH_CAPACITY) {
            if self.broken {
                report.dropped_error += chunk.len();
                continue;
            }
            let mut queued = 0;
            let mut out_of_range = 0;
            let mut lens = [0usize; BATCH_CAPACITY];
            for &i in chunk {
                let i = usize::from(i);
                if i >= batch.len() {
                    out_of_range += 1;
                    continue;
                }
                let frame = batch.frame(i);
                lens[queued] = frame.len();
                let entry = if self.offload {
                    batch.offload(i).write(&mut self.hdrs[queued]);
                    self.iovs[queued] = [
                        libc::iovec {
                            iov_base: self.hdrs[queued].as_mut_ptr().cast(),
                            iov_len: Offload::HEADER_LEN,
                        },
                        libc::iovec {
                            iov_base: frame.as_ptr().cast_mut().cast(),
                            iov_len: frame.len(),
                        },
                    ];
                    opcode::Writev::new(self.fd, self.iovs[queued].as_ptr(), 2)
                        .rw_flags(NOWAIT)
                        .build()
                } else {
                    opcode::Write::new(self.fd, frame.as_ptr(), frame.len() as u32)
                        .rw_flags(NOWAIT)
                        .build()
                };
                let sqe = entry.user_data(queued as u64);
                // SAFETY: the frame, header and iovec stay in place until
                // `submit_all` returns; writes to a tap complete inline, and
                // if the submission fails the ring is dropped with them.
                if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                    self.broken = true;
                    break;
                }
                queued += 1;
            }
            report.dropped_error += out_of_range;
            if self.broken || self.submit_all(queued).is_err() {
                // nothing of this chunk was written
                report.dropped_error += chunk.len() - out_of_range;
                continue;
            }
            for (i, &len) in lens.iter().enumerate().take(queued) {
                match self.results[i] {
                    n if n >= 0 => {
                        report.sent += 1;
                        report.sent_bytes += len;
                    }
                    e if e == -libc::EAGAIN => report.dropped_full += 1,
                    _ => report.dropped_error += 1,
                }
            }
        }
        report
    }

    /// Submits the `n` queued requests and collects their results into
    /// `self.results`, by request index. A completion for an index outside
    /// the submission, or seen twice, is ignored.
    ///
    /// # Errors
    ///
    /// `io_uring_enter` failed. It fails only when it submitted nothing, so
    /// the requests are still queued; the ring is marked broken, for the
    /// caller to drop it with them.
    fn submit_all(&mut self, n: usize) -> io::Result<()> {
        let mut seen: u64 = 0;
        let mut done = 0;
        let mut interrupted = 0;
        while done < n {
            match self.ring.submit_and_wait(n - done) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 8 => {
                    interrupted += 1;
                    continue;
                }
                Err(e) => {
                    self.broken = true;
                    return Err(e);
                }
            }
            for cqe in self.ring.completion() {
                let i = cqe.user_data() as usize;
                if i < n && seen & (1 << i) == 0 {
                    seen |= 1 << i;
                    self.results[i] = cqe.result();
                    done += 1;
                }
            }
        }
        Ok(())
    }
}

/// How bad a read outcome is, to report the worst of a submission.
fn severity(outcome: &io::Result<RecvStatus>) -> u8 {
    match outcome {
        Ok(RecvStatus::More) => 0,
        Ok(RecvStatus::Drained) => 1,
        Ok(RecvStatus::Closed) => 2,
        Err(_) => 3,
    }
}
