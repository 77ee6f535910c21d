//! Batched tap reads and writes through an io_uring.
//!
//! A tap moves one frame per `read` or `write`, so a loaded tap port costs
//! two system calls per forwarded frame, and with plain 1500-byte frames
//! the event loop spends much of its time entering and leaving the kernel.
//! There is no `recvmmsg` for a character device, but an io_uring is one:
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
//! That inline completion is a property of the kernel's tap driver (it
//! supports `RWF_NOWAIT` since Linux 5.x; older kernels refuse the flag), so
//! [`TapRing::new`] checks it on the tap itself before anyone relies on it,
//! and refuses (the caller then keeps plain system calls) where the kernel,
//! a seccomp filter or `kernel.io_uring_disabled` says no.

use std::io;
use std::os::fd::RawFd;

use io_uring::{IoUring, opcode, squeue, types};

use crate::batch::{BATCH_CAPACITY, FrameBatch, MAX_FRAME_SLOT};
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
    fd: types::Fd,
    /// Whether requests carry a virtio-net header before the frame.
    offload: bool,
    /// How many reads to submit next: grows while every read finds a frame,
    /// shrinks to what the last submission found.
    reads: usize,
    hdrs: Box<[[u8; Offload::HEADER_LEN]; BATCH_CAPACITY]>,
    iovs: Box<[[libc::iovec; 2]; BATCH_CAPACITY]>,
    /// Results of the last submission, indexed by request.
    results: [i32; BATCH_CAPACITY],
}

// SAFETY: the iovecs hold raw pointers only for the duration of one
// `submit_and_wait`, on the thread that owns the ring; between calls they
// are dead values.
unsafe impl Send for TapRing {}

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
    /// Probes the tap with one `RWF_NOWAIT` read, which may consume a frame
    /// queued before the port was attached; such a frame is dropped, as if
    /// it had arrived a moment earlier.
    ///
    /// The descriptor is not registered with the ring as a fixed file:
    /// that would keep the tap open until the ring's deferred teardown, so
    /// a tap deleted with its port could not be created again at once.
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
        let mut tr = TapRing {
            ring,
            fd: types::Fd(fd),
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
        };
        tr.probe()?;
        Ok(tr)
    }

    /// One read, submitted without waiting: its completion must already be
    /// there when the submission returns, or the ring is unusable here.
    fn probe(&mut self) -> io::Result<()> {
        let mut scratch = vec![0u8; MAX_FRAME_SLOT];
        let sqe = opcode::Read::new(self.fd, scratch.as_mut_ptr(), scratch.len() as u32)
            .rw_flags(NOWAIT)
            .build()
            .user_data(PROBE);
        // SAFETY: `scratch` outlives the request, which completes inside
        // `submit` or is cancelled and waited for below.
        unsafe { self.ring.submission().push(&sqe) }.map_err(io::Error::other)?;
        self.ring.submit()?;
        let Some(cqe) = self.ring.completion().next() else {
            // The request is in flight, waiting for a frame: cancel it, and
            // wait for both completions before `scratch` goes away.
            let cancel = opcode::AsyncCancel::new(PROBE).build().user_data(0);
            // SAFETY: a cancel request points at no buffer.
            unsafe { self.ring.submission().push(&cancel) }.map_err(io::Error::other)?;
            self.ring.submit_and_wait(2)?;
            self.ring.completion().for_each(drop);
            return Err(io::Error::other(
                "the tap driver does not complete RWF_NOWAIT reads inline",
            ));
        };
        match cqe.result() {
            n if n >= 0 => Ok(()),
            e if e == -libc::EAGAIN => Ok(()),
            e => Err(io::Error::from_raw_os_error(-e)),
        }
    }

    /// The read request for the `i`th free slot of `batch` (slot and header
    /// `i` of this ring).
    fn read_sqe(&mut self, batch: &mut FrameBatch, i: usize) -> squeue::Entry {
        let slot = batch
            .free_slots()
            .nth(i)
            .expect("read_sqe: caller checked the batch has room");
        let (ptr, len) = (slot.as_mut_ptr(), slot.len());
        let entry = if self.offload {
            self.iovs[i] = [
                libc::iovec {
                    iov_base: self.hdrs[i].as_mut_ptr().cast(),
                    iov_len: Offload::HEADER_LEN,
                },
                libc::iovec {
                    iov_base: ptr.cast(),
                    iov_len: len,
                },
            ];
            opcode::Readv::new(self.fd, self.iovs[i].as_ptr(), 2)
                .rw_flags(NOWAIT)
                .build()
        } else {
            opcode::Read::new(self.fd, ptr, len as u32)
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
    /// few reads per system call.
    ///
    /// # Errors
    ///
    /// A read failed for a reason other than "empty" or "gone", or the ring
    /// itself failed; frames read before the failure stay in the batch.
    pub fn recv(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        loop {
            let want = self.reads.min(batch.remaining());
            if want == 0 {
                return Ok(RecvStatus::More);
            }
            for i in 0..want {
                let sqe = self.read_sqe(batch, i);
                // SAFETY: slot, header and iovec `i` stay in place until
                // `submit_and_wait` returns, and every request completes
                // inside it (RWF_NOWAIT, checked by the probe).
                unsafe { self.ring.submission().push(&sqe) }.map_err(io::Error::other)?;
            }
            self.submit_all(want)?;
            let mut found = 0;
            let mut skip = 0;
            let mut status = None;
            for i in 0..want {
                match self.results[i] {
                    n if n > 0 => {
                        self.commit_read(batch, i, skip, n as usize);
                        found += 1;
                    }
                    // A tap never returns 0 for a non-empty buffer while the
                    // device exists; treat it as end of file.
                    0 => {
                        status.get_or_insert(Ok(RecvStatus::Closed));
                        skip += 1;
                    }
                    e => {
                        skip += 1;
                        let err = io::Error::from_raw_os_error(-e);
                        match err.kind() {
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => {
                                status.get_or_insert(Ok(RecvStatus::Drained));
                            }
                            _ if crate::tap::is_gone(&err) => {
                                status.get_or_insert(Ok(RecvStatus::Closed));
                            }
                            _ => {
                                status.get_or_insert(Err(err));
                            }
                        }
                    }
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
    /// ring's worth, and reports what the tap took.
    pub fn send(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        let mut report = TxReport::default();
        for chunk in which.chunks(BATCH_CAPACITY) {
            let mut queued = 0;
            let mut lens = [0usize; BATCH_CAPACITY];
            for &i in chunk {
                let i = usize::from(i);
                if i >= batch.len() {
                    report.dropped_error += 1;
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
                // `submit_and_wait` returns; writes to a tap complete inline.
                if unsafe { self.ring.submission().push(&sqe) }.is_err() {
                    report.dropped_error += 1;
                    continue;
                }
                queued += 1;
            }
            if queued == 0 {
                continue;
            }
            if self.submit_all(queued).is_err() {
                report.dropped_error += queued;
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
    /// `self.results`, by request index.
    fn submit_all(&mut self, n: usize) -> io::Result<()> {
        let mut done = 0;
        let mut attempts = 0;
        while done < n {
            attempts += 1;
            match self.ring.submit_and_wait(n - done) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted && attempts < 8 => continue,
                Err(e) => {
                    // Requests may still be in flight with pointers into
                    // the caller's buffers; wait them out before returning.
                    self.drain_in_flight(n - done);
                    return Err(e);
                }
            }
            for cqe in self.ring.completion() {
                if let Some(r) = self.results.get_mut(cqe.user_data() as usize) {
                    *r = cqe.result();
                    done += 1;
                }
            }
        }
        Ok(())
    }

    /// Last resort after a failed `io_uring_enter`: cancels whatever is
    /// still queued or in flight and waits for it, so no request outlives
    /// the buffers it points at.
    fn drain_in_flight(&mut self, outstanding: usize) {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(PROBE);
        // SAFETY: a cancel request points at no buffer.
        let _ = unsafe { self.ring.submission().push(&cancel) };
        let _ = self.ring.submit_and_wait(outstanding + 1);
        self.ring.completion().for_each(drop);
    }
}
