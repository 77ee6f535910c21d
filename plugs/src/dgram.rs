//! Batched datagram sockets.
//!
//! A connected `AF_UNIX SOCK_DGRAM` socket carries one Ethernet frame per
//! datagram (the VDE2 data plane, QEMU's `-netdev dgram`), and so does a
//! connected UDP socket (vdeplug4 `udp://` cables, QEMU's `-netdev dgram`
//! over inet). [`BatchedDgram`] moves a whole [`FrameBatch`] per syscall:
//! one `recvmmsg` fills every free slot of the batch, one `sendmmsg` sends
//! every selected frame. It is generic over the socket ([`DgramSocket`]:
//! mio's `UnixDatagram`, the default, and `UdpSocket`).
//!
//! The `mmsghdr`/`iovec` arrays the kernel needs are built on the stack for
//! each call (about 2.5 KiB for [`BATCH_CAPACITY`] messages), so the data path
//! never touches the heap and the type holds no raw pointers between calls.
//! The frames themselves are never copied: each `iovec` points straight into
//! the batch's slot.
//!
//! The same syscall code serves unconnected Unix sockets that talk to many
//! peers (the dgram hub): `recv_mmsg` can also collect each datagram's
//! source address, and `send_mmsg` can address every message to one
//! destination.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::ptr;

use mio::event::Source;
use mio::net::{UdpSocket, UnixDatagram};
use mio::{Interest, Registry, Token};

use crate::TxReport;
use crate::batch::{BATCH_CAPACITY, FrameBatch, MAX_FRAME_SLOT};

mod sealed {
    /// Keeps [`DgramSocket`](super::DgramSocket) implementable only here:
    /// the mmsg code relies on one-datagram-per-message semantics.
    pub trait Sealed {}
    impl Sealed for mio::net::UnixDatagram {}
    impl Sealed for mio::net::UdpSocket {}
}

/// A non-blocking datagram socket [`BatchedDgram`] can drive: mio's
/// `UnixDatagram` and `UdpSocket`. Sealed, because the batching code relies
/// on every message being exactly one datagram.
pub trait DgramSocket: Source + AsRawFd + AsFd + fmt::Debug + sealed::Sealed {
    /// Runs one raw I/O call the way mio wants it run (`try_io`), so
    /// readiness tracking stays correct on every platform.
    fn try_io<F, T>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> io::Result<T>;
}

impl DgramSocket for UnixDatagram {
    fn try_io<F, T>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> io::Result<T>,
    {
        UnixDatagram::try_io(self, f)
    }
}

impl DgramSocket for UdpSocket {
    fn try_io<F, T>(&self, f: F) -> io::Result<T>
    where
        F: FnOnce() -> io::Result<T>,
    {
        UdpSocket::try_io(self, f)
    }
}

/// A non-blocking, connected datagram socket that receives and sends frames
/// in batches.
///
/// It exists so every datagram plug shares one careful implementation of the
/// mmsg syscalls, truncation detection and the drop-don't-block send policy.
/// `S` is the socket type: Unix datagram sockets unless stated otherwise.
#[derive(Debug)]
pub struct BatchedDgram<S: DgramSocket = UnixDatagram> {
    socket: S,
    backlog: Option<Backlog>,
}

/// Frames a slow peer's socket refused, kept (in order) until it drains.
///
/// A Unix datagram socket accepts only `net.unix.max_dgram_qlen` (10 by
/// default) datagrams before its reader catches up, so a batch of 32 sent
/// at once would otherwise lose most of its tail on every burst, although
/// the reader is only briefly behind. Bounded in frames and bytes; buffers
/// are recycled, so a congested port allocates only until its pool is warm.
#[derive(Debug)]
pub(crate) struct Backlog {
    frames: std::collections::VecDeque<Vec<u8>>,
    pool: Vec<Vec<u8>>,
    bytes: usize,
}

/// Most frames a backlog holds (as `vde_switch`'s optional packet queue).
pub const BACKLOG_FRAMES: usize = 128;
/// Most bytes a backlog holds.
pub const BACKLOG_BYTES: usize = 1 << 20;

impl Backlog {
    fn new() -> Backlog {
        Backlog {
            frames: std::collections::VecDeque::with_capacity(BACKLOG_FRAMES),
            pool: Vec::new(),
            bytes: 0,
        }
    }

    /// Queues a copy of `frame`; false (the frame is dropped) when full.
    fn push(&mut self, frame: &[u8]) -> bool {
        if self.frames.len() >= BACKLOG_FRAMES || self.bytes + frame.len() > BACKLOG_BYTES {
            return false;
        }
        let mut buf = self.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(frame);
        self.bytes += frame.len();
        self.frames.push_back(buf);
        true
    }

    /// Queues each frame the chunk could not send, counting it as sent (it
    /// will be) or as dropped when the backlog is full.
    fn absorb(
        &mut self,
        frames: impl Iterator<Item = usize>,
        batch: &FrameBatch,
        report: &mut TxReport,
    ) {
        for i in frames {
            let frame = batch.frame(i);
            if self.push(frame) {
                report.sent += 1;
                report.sent_bytes += frame.len();
            } else {
                report.dropped_full += 1;
            }
        }
    }
}

/// How a batch send ended, so the caller knows whether to keep trying.
#[derive(Debug)]
enum SendEnd {
    /// Every frame of the chunk was accepted (or dropped on its own merit).
    Complete,
    /// The peer's queue is full: later frames would be refused too.
    Full,
    /// The socket failed: later frames would fail too.
    Failed(io::Error),
}

/// Where every message of one `sendmmsg` goes, for unconnected sockets.
#[derive(Clone, Copy)]
pub(crate) struct Destination<'a> {
    /// The peer's address.
    pub(crate) addr: &'a libc::sockaddr_un,
    /// The meaningful length of `addr`.
    pub(crate) len: libc::socklen_t,
}

/// The source addresses of the datagrams one [`recv_mmsg`] call received,
/// indexed like the lengths it returns. About 3.5 KiB: meant for the stack
/// or to be kept by the socket's owner.
pub(crate) struct RecvNames {
    /// Each datagram's source, as the kernel wrote it.
    pub(crate) addrs: [libc::sockaddr_un; BATCH_CAPACITY],
    /// How many bytes of each address the kernel filled in.
    pub(crate) lens: [libc::socklen_t; BATCH_CAPACITY],
}

impl fmt::Debug for RecvNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvNames").finish_non_exhaustive()
    }
}

impl RecvNames {
    /// All-zero addresses, ready for a receive.
    pub(crate) fn new() -> RecvNames {
        // SAFETY: `sockaddr_un` is a plain C struct; all zero bytes is a
        // valid (unnamed, AF_UNSPEC) value.
        RecvNames {
            addrs: unsafe { mem::zeroed() },
            lens: [0; BATCH_CAPACITY],
        }
    }
}

impl<S: DgramSocket> BatchedDgram<S> {
    /// Wraps a socket that is already connected and non-blocking (every mio
    /// socket is non-blocking). The peer address is fixed by `connect`, so
    /// sends carry no address.
    pub fn new(socket: S) -> Self {
        BatchedDgram {
            socket,
            backlog: None,
        }
    }

    /// Keeps frames the peer's queue refuses (up to [`BACKLOG_FRAMES`] and
    /// [`BACKLOG_BYTES`]) instead of dropping them at once, and sends them
    /// first when the socket has room again: on the next send, or from
    /// [`flush_backlog`](Self::flush_backlog) when the socket reports it is
    /// writable. Queued frames count as sent.
    pub fn with_backlog(mut self) -> Self {
        self.backlog = Some(Backlog::new());
        self
    }

    /// Frames waiting in the backlog.
    pub fn backlog_len(&self) -> usize {
        self.backlog.as_ref().map_or(0, |b| b.frames.len())
    }

    /// Sends queued frames until the peer's queue is full again. Returns
    /// whether the backlog is now empty; frames the peer refuses for good
    /// (it is gone) are discarded.
    pub fn flush_backlog(&mut self) -> bool {
        let Some(b) = self.backlog.as_mut() else {
            return true;
        };
        let fd = self.socket.as_raw_fd();
        while let Some(frame) = b.frames.front() {
            let result = self.socket.try_io(|| {
                // SAFETY: `frame` is a live buffer of `frame.len()` bytes.
                let rc = unsafe {
                    libc::send(
                        fd,
                        frame.as_ptr().cast(),
                        frame.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                };
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match result {
                Err(e) if is_queue_full(&e) => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Sent, or refused for good: either way it leaves the queue.
                _ => {
                    let done = b.frames.pop_front().expect("front exists");
                    b.bytes -= done.len();
                    b.pool.push(done);
                }
            }
        }
        true
    }

    /// The wrapped socket, for address queries and socket options.
    pub fn get_ref(&self) -> &S {
        &self.socket
    }

    /// Gives the socket back.
    pub fn into_inner(self) -> S {
        self.socket
    }

    /// Receives as many datagrams as `batch` has free slots, with one
    /// `recvmmsg`, appending each as a frame.
    ///
    /// Returns the number of frames appended. `Ok(0)` means the socket had
    /// nothing to read (would block), or that `batch` had no free slot (then
    /// no syscall is made). Fewer frames than free slots means the queue was
    /// empty when the kernel stopped.
    ///
    /// A datagram longer than [`MAX_FRAME_SLOT`] is stored truncated, with
    /// its length clamped to the slot size, so the caller's length check
    /// drops it as oversized instead of forwarding a silently cut frame.
    pub fn recv_into(&mut self, batch: &mut FrameBatch) -> io::Result<usize> {
        let mut lens = [0usize; BATCH_CAPACITY];
        let received = recv_mmsg(&self.socket, batch, None, &mut lens)?;
        for &len in &lens[..received] {
            batch.commit(len);
        }
        Ok(received)
    }

    /// Sends the frames of `batch` listed in `which`, in order, with one
    /// `sendmmsg` per [`BATCH_CAPACITY`] frames. Never blocks.
    ///
    /// Like `vde_switch`, a full peer loses frames rather than stalling the
    /// switch: when the kernel takes only part of a batch, the remainder is
    /// retried once, and whatever is still refused is dropped. `EAGAIN` and
    /// `ENOBUFS` count as [`dropped_full`](TxReport::dropped_full); a frame
    /// too big for the socket, an index outside the batch, a vanished peer
    /// (`ECONNREFUSED`, `EPIPE`) or any other error count as
    /// [`dropped_error`](TxReport::dropped_error).
    pub fn send_from(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        self.try_send_from(batch, which).0
    }

    /// Like [`send_from`](Self::send_from), and also returns the error that
    /// made it give up on the remaining frames (not "queue full", which is
    /// only counted), so plugs can tell a vanished peer (`ECONNREFUSED`,
    /// `ENOTCONN`) from a slow one and reconnect.
    pub fn try_send_from(
        &mut self,
        batch: &FrameBatch,
        which: &[u16],
    ) -> (TxReport, Option<io::Error>) {
        if self.backlog.is_some() && !self.flush_backlog() {
            // Still congested: queue behind what is waiting, keeping order.
            let mut report = TxReport::default();
            let b = self.backlog.as_mut().expect("checked");
            let valid = which
                .iter()
                .map(|&i| usize::from(i))
                .filter(|&i| i < batch.len());
            b.absorb(valid, batch, &mut report);
            report.dropped_error += which
                .iter()
                .filter(|&&i| usize::from(i) >= batch.len())
                .count();
            return (report, None);
        }
        send_mmsg(&self.socket, batch, which, None, self.backlog.as_mut())
    }
}

impl BatchedDgram<UnixDatagram> {
    /// A connected pair, for tests and in-process plumbing.
    pub fn pair() -> io::Result<(BatchedDgram, BatchedDgram)> {
        let (a, b) = UnixDatagram::pair()?;
        Ok((BatchedDgram::new(a), BatchedDgram::new(b)))
    }
}

/// One non-blocking `recvmmsg` over prepared headers. `MSG_TRUNC` makes
/// the kernel report each datagram's real length, not the stored one, so a
/// datagram larger than its buffer is recognised.
///
/// # Safety
///
/// Every header in `hdrs` must point at `iovec`s, buffers and address
/// storage that are valid, distinct from each other, and untouched by
/// anything else until the call returns.
pub(crate) unsafe fn recvmmsg_raw(fd: RawFd, hdrs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // SAFETY: the caller vouches for the headers; the count is theirs.
    let rc = unsafe {
        libc::recvmmsg(
            fd,
            hdrs.as_mut_ptr(),
            hdrs.len() as libc::c_uint,
            (libc::MSG_DONTWAIT | libc::MSG_TRUNC) as _,
            ptr::null_mut(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Receives up to `batch.remaining()` datagrams with one `recvmmsg` into the
/// batch's free slots, without committing them: the length of the `i`th
/// datagram (clamped to mark truncation, see
/// [`BatchedDgram::recv_into`]) is stored in `lens[i]`, and with `names` its
/// source address in `names.addrs[i]`. The caller commits the frames it
/// keeps, in slot order. Returns how many datagrams arrived; `Ok(0)` when
/// none was waiting or the batch is full.
pub(crate) fn recv_mmsg<S: DgramSocket>(
    socket: &S,
    batch: &mut FrameBatch,
    mut names: Option<&mut RecvNames>,
    lens: &mut [usize; BATCH_CAPACITY],
) -> io::Result<usize> {
    let free = batch.remaining();
    if free == 0 {
        return Ok(0);
    }
    // SAFETY: `iovec` and `mmsghdr` are plain C structs for which all
    // zero bytes (null pointers, zero lengths) is a valid value.
    let mut iovs: [libc::iovec; BATCH_CAPACITY] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH_CAPACITY] = unsafe { mem::zeroed() };
    for (iov, slot) in iovs.iter_mut().zip(batch.free_slots()) {
        iov.iov_base = slot.as_mut_ptr().cast();
        iov.iov_len = slot.len();
    }
    for (i, (hdr, iov)) in hdrs.iter_mut().zip(iovs.iter_mut()).take(free).enumerate() {
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        if let Some(names) = names.as_deref_mut() {
            hdr.msg_hdr.msg_name = ptr::from_mut(&mut names.addrs[i]).cast();
            hdr.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        }
    }

    let fd = socket.as_raw_fd();
    let received = loop {
        // SAFETY: `hdrs[..free]` each point at one `iovec` in `iovs`, which
        // point at distinct free slots of `batch`, and (with `names`) at
        // distinct address buffers; all of them outlive the call, and
        // nothing else touches them until it returns.
        let result = socket.try_io(|| unsafe { recvmmsg_raw(fd, &mut hdrs[..free]) });
        match result {
            Ok(n) => break n.min(free),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };

    for (i, hdr) in hdrs[..received].iter().enumerate() {
        let mut len = hdr.msg_len as usize;
        // Kernels before 3.4 ignore MSG_TRUNC on Unix sockets and report
        // the stored length; the flag still says the datagram was cut.
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            len = len.max(MAX_FRAME_SLOT);
        }
        lens[i] = len;
        if let Some(names) = names.as_deref_mut() {
            names.lens[i] = hdr.msg_hdr.msg_namelen;
        }
    }
    Ok(received)
}

/// Sends the frames of `batch` listed in `which` with `sendmmsg`, see
/// [`BatchedDgram::send_from`]; with `dest`, every message is addressed to
/// it (for unconnected sockets). Also returns the error that ended the send
/// early, if it was not a full queue.
pub(crate) fn send_mmsg<S: DgramSocket>(
    socket: &S,
    batch: &FrameBatch,
    which: &[u16],
    dest: Option<Destination<'_>>,
    mut backlog: Option<&mut Backlog>,
) -> (TxReport, Option<io::Error>) {
    let mut report = TxReport::default();
    let mut chunks = which.chunks(BATCH_CAPACITY);
    for chunk in chunks.by_ref() {
        match send_chunk(
            socket,
            batch,
            chunk,
            dest,
            &mut report,
            backlog.as_deref_mut(),
        ) {
            SendEnd::Complete => {}
            SendEnd::Full => {
                let rest = chunks.flatten().map(|&i| usize::from(i));
                match backlog {
                    Some(b) => b.absorb(rest.filter(|&i| i < batch.len()), batch, &mut report),
                    None => report.dropped_full += rest.count(),
                }
                break;
            }
            SendEnd::Failed(e) => {
                report.dropped_error += chunks.map(<[u16]>::len).sum::<usize>();
                return (report, Some(e));
            }
        }
    }
    (report, None)
}

/// Sends up to [`BATCH_CAPACITY`] frames; adds every one of them to
/// `report` exactly once.
fn send_chunk<S: DgramSocket>(
    socket: &S,
    batch: &FrameBatch,
    chunk: &[u16],
    dest: Option<Destination<'_>>,
    report: &mut TxReport,
    mut backlog: Option<&mut Backlog>,
) -> SendEnd {
    // SAFETY: all-zero `iovec`/`mmsghdr` values are valid (see recv_mmsg).
    let mut iovs: [libc::iovec; BATCH_CAPACITY] = unsafe { mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH_CAPACITY] = unsafe { mem::zeroed() };
    let mut count = 0;
    // Batch index of each message, to queue exactly the refused ones.
    let mut indices = [0usize; BATCH_CAPACITY];
    for &index in chunk.iter().take(BATCH_CAPACITY) {
        let index = usize::from(index);
        if index >= batch.len() {
            report.dropped_error += 1;
            continue;
        }
        indices[count] = index;
        let frame = batch.frame(index);
        // sendmmsg only reads through the pointer; the cast to *mut is
        // what the C struct demands.
        iovs[count].iov_base = frame.as_ptr().cast_mut().cast();
        iovs[count].iov_len = frame.len();
        count += 1;
    }
    for (hdr, iov) in hdrs.iter_mut().zip(iovs.iter_mut()).take(count) {
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        if let Some(dest) = dest {
            // sendmmsg only reads the address.
            hdr.msg_hdr.msg_name = ptr::from_ref(dest.addr).cast_mut().cast();
            hdr.msg_hdr.msg_namelen = dest.len;
        }
    }

    let fd = socket.as_raw_fd();
    let mut start = 0;
    let mut retried = false;
    // The peer's queue is full from message `start` on: queue or drop the
    // rest.
    let mut full = |start: usize, report: &mut TxReport| match backlog.as_deref_mut() {
        Some(b) => {
            b.absorb(indices[start..count].iter().copied(), batch, report);
            SendEnd::Full
        }
        None => {
            report.dropped_full += count - start;
            SendEnd::Full
        }
    };
    while start < count {
        let pending = &mut hdrs[start..count];
        let result = socket.try_io(|| {
            // SAFETY: `pending` holds headers pointing at `iovs`, which
            // point at frames borrowed from `batch`, and at `dest`; all
            // outlive the call.
            let rc = unsafe {
                libc::sendmmsg(
                    fd,
                    pending.as_mut_ptr(),
                    pending.len() as libc::c_uint,
                    (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as _,
                )
            };
            if rc < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(rc as usize)
            }
        });
        match result {
            Ok(sent) if sent > 0 => {
                let sent = sent.min(pending.len());
                for hdr in &pending[..sent] {
                    report.sent += 1;
                    report.sent_bytes += hdr.msg_len as usize;
                }
                start += sent;
                if start < count {
                    // The kernel stopped early: the next frame would have
                    // failed. One retry, then queue or drop.
                    if retried {
                        return full(start, report);
                    }
                    retried = true;
                }
            }
            Ok(_) => return full(start, report),
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                // Only this frame is at fault; carry on with the rest.
                report.dropped_error += 1;
                start += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !retried => {
                retried = true;
            }
            Err(e) if is_queue_full(&e) => return full(start, report),
            Err(e) => {
                report.dropped_error += count - start;
                return SendEnd::Failed(e);
            }
        }
    }
    SendEnd::Complete
}

/// True for the errors that mean "the peer is slow", as opposed to "the
/// peer is gone or the frame is bad".
fn is_queue_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

impl<S: DgramSocket> AsRawFd for BatchedDgram<S> {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl<S: DgramSocket> AsFd for BatchedDgram<S> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }
}

impl<S: DgramSocket> Source for BatchedDgram<S> {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.socket.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        self.socket.deregister(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame whose bytes encode its index and length, so any mix-up shows.
    fn test_frame(index: usize, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + index * 31) as u8).collect()
    }

    #[test]
    fn batch_round_trips_exactly() {
        let (mut a, mut b) = BatchedDgram::pair().unwrap();
        let sizes = [
            14,
            60,
            64,
            1500,
            1514,
            1518,
            4000,
            9000,
            MAX_FRAME_SLOT - 1,
            0,
        ];
        let mut out = FrameBatch::new();
        for (i, &len) in sizes.iter().enumerate() {
            assert!(out.push(&test_frame(i, len)));
        }
        let which: Vec<u16> = (0..sizes.len() as u16).collect();
        let report = a.send_from(&out, &which);
        assert_eq!(report.sent, sizes.len());
        assert_eq!(report.sent_bytes, sizes.iter().sum::<usize>());
        assert_eq!(report.dropped_full + report.dropped_error, 0);

        let mut inb = FrameBatch::new();
        assert_eq!(b.recv_into(&mut inb).unwrap(), sizes.len());
        assert_eq!(inb.len(), sizes.len());
        for (i, &len) in sizes.iter().enumerate() {
            assert_eq!(inb.frame(i), &test_frame(i, len)[..], "frame {i}");
        }
        // Drained: the next receive would block.
        assert_eq!(b.recv_into(&mut inb).unwrap(), 0);
    }

    #[test]
    fn send_follows_which_order_and_repeats() {
        let (mut a, mut b) = BatchedDgram::pair().unwrap();
        let mut out = FrameBatch::new();
        for i in 0..3 {
            out.push(&test_frame(i, 100 + i));
        }
        let report = a.send_from(&out, &[2, 0, 2]);
        assert_eq!(report.sent, 3);
        let mut inb = FrameBatch::new();
        assert_eq!(b.recv_into(&mut inb).unwrap(), 3);
        assert_eq!(inb.frame(0), &test_frame(2, 102)[..]);
        assert_eq!(inb.frame(1), &test_frame(0, 100)[..]);
        assert_eq!(inb.frame(2), &test_frame(2, 102)[..]);
    }

    #[test]
    fn receive_appends_after_existing_frames_and_stops_when_full() {
        let (a, mut b) = BatchedDgram::pair().unwrap();
        for i in 0..BATCH_CAPACITY + 5 {
            a.get_ref().send(&test_frame(i, 60 + i)).unwrap();
        }
        let mut inb = FrameBatch::new();
        inb.push(b"already here");
        assert_eq!(b.recv_into(&mut inb).unwrap(), BATCH_CAPACITY - 1);
        assert!(inb.is_full());
        assert_eq!(inb.frame(0), b"already here");
        assert_eq!(inb.frame(1), &test_frame(0, 60)[..]);
        // Full batch: nothing received, nothing lost.
        assert_eq!(b.recv_into(&mut inb).unwrap(), 0);
        inb.clear();
        assert_eq!(b.recv_into(&mut inb).unwrap(), 6);
        assert_eq!(
            inb.frame(0),
            &test_frame(BATCH_CAPACITY - 1, 60 + BATCH_CAPACITY - 1)[..]
        );
    }

    #[test]
    fn oversized_datagram_is_clamped_to_the_slot() {
        let (a, mut b) = BatchedDgram::pair().unwrap();
        let big = test_frame(1, MAX_FRAME_SLOT + 500);
        a.get_ref().send(&big).unwrap();
        a.get_ref().send(&test_frame(2, 64)).unwrap();
        let mut inb = FrameBatch::new();
        assert_eq!(b.recv_into(&mut inb).unwrap(), 2);
        assert_eq!(inb.frame(0).len(), MAX_FRAME_SLOT);
        assert_eq!(inb.frame(0), &big[..MAX_FRAME_SLOT]);
        // The next slot is intact: truncation did not spill.
        assert_eq!(inb.frame(1), &test_frame(2, 64)[..]);
    }

    #[test]
    fn full_receiver_drops_instead_of_blocking() {
        let (mut a, _b) = BatchedDgram::pair().unwrap();
        let mut out = FrameBatch::new();
        for i in 0..BATCH_CAPACITY {
            out.push(&test_frame(i, 1500));
        }
        let which: Vec<u16> = (0..BATCH_CAPACITY as u16).collect();
        let mut total = TxReport::default();
        // The default socket buffers hold well under 100 batches of 1500-byte
        // frames; the bound keeps a regression from looping forever.
        for _ in 0..1000 {
            total.absorb(a.send_from(&out, &which));
            if total.dropped_full > 0 {
                break;
            }
        }
        assert!(total.sent > 0, "some frames must get through first");
        assert!(total.dropped_full > 0, "a full peer must cause drops");
        assert_eq!(total.dropped_error, 0);
        // Every frame handed over is accounted for exactly once.
        assert_eq!((total.sent + total.dropped_full) % BATCH_CAPACITY, 0);
        assert_eq!(total.sent_bytes, total.sent * 1500);
    }

    #[test]
    fn vanished_peer_counts_as_error_and_bad_index_is_dropped() {
        let (mut a, b) = BatchedDgram::pair().unwrap();
        let mut out = FrameBatch::new();
        out.push(&[1; 60]);
        let report = a.send_from(&out, &[0, 7]);
        assert_eq!(report.sent, 1);
        assert_eq!(report.dropped_error, 1, "index 7 is outside the batch");
        // The peer stops receiving (EPIPE). Dropping it would also do
        // (ECONNREFUSED), unless a concurrent test's fork briefly holds a
        // copy of its descriptor.
        b.get_ref().shutdown(std::net::Shutdown::Read).unwrap();
        let report = a.send_from(&out, &[0, 0]);
        assert_eq!(report.sent, 0);
        assert_eq!(report.dropped_error, 2);
        assert_eq!(report.dropped_full, 0);
    }

    #[test]
    fn large_which_lists_are_sent_in_chunks() {
        let (mut a, mut b) = BatchedDgram::pair().unwrap();
        let mut out = FrameBatch::new();
        out.push(&test_frame(0, 80));
        let which = vec![0u16; BATCH_CAPACITY + 3];
        let report = a.send_from(&out, &which);
        assert_eq!(report.sent, BATCH_CAPACITY + 3);
        let mut inb = FrameBatch::new();
        assert_eq!(b.recv_into(&mut inb).unwrap(), BATCH_CAPACITY);
        inb.clear();
        assert_eq!(b.recv_into(&mut inb).unwrap(), 3);
    }
}

#[cfg(test)]
mod backlog_tests {
    use super::*;
    use crate::batch::ALL_FRAMES;

    fn frame(seq: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0u8; len];
        f[..4].copy_from_slice(&seq.to_be_bytes());
        f
    }

    /// A reader that is briefly behind loses nothing: what its full queue
    /// refused arrives later, in order.
    #[test]
    fn refused_frames_arrive_later_in_order() {
        let (a, b) = BatchedDgram::pair().unwrap();
        let mut a = a.with_backlog();
        let mut b = b;
        let mut sent = 0u32;
        let mut report = TxReport::default();
        // Send until the peer's queue first refuses (bounded), so the
        // backlog holds something but has not overflowed.
        for _ in 0..200 {
            let mut batch = FrameBatch::new();
            for _ in 0..BATCH_CAPACITY {
                batch.push(&frame(sent, 1400));
                sent += 1;
            }
            report.absorb(a.send_from(&batch, &ALL_FRAMES));
            if a.backlog_len() > 0 {
                break;
            }
        }
        assert!(a.backlog_len() > 0, "the peer never refused a frame");
        assert_eq!(report.sent, sent as usize);
        assert_eq!(report.dropped_full, 0);
        // the reader catches up, the writer flushes, until all arrived
        let mut got = Vec::new();
        for _ in 0..10_000 {
            let mut rx = FrameBatch::new();
            b.recv_into(&mut rx).unwrap();
            got.extend(
                (0..rx.len()).map(|i| u32::from_be_bytes(rx.frame(i)[..4].try_into().unwrap())),
            );
            a.flush_backlog();
            if got.len() == sent as usize {
                break;
            }
        }
        assert_eq!(got, (0..sent).collect::<Vec<u32>>());
        assert_eq!(a.backlog_len(), 0);
    }

    /// The backlog is bounded: past it, frames are dropped and counted.
    #[test]
    fn backlog_overflow_is_counted() {
        let (a, _b) = BatchedDgram::pair().unwrap();
        let mut a = a.with_backlog();
        let mut report = TxReport::default();
        for _ in 0..20 {
            let mut batch = FrameBatch::new();
            for i in 0..BATCH_CAPACITY {
                batch.push(&frame(i as u32, 100));
            }
            report.absorb(a.send_from(&batch, &ALL_FRAMES));
        }
        assert_eq!(report.sent + report.dropped_full, 640);
        assert!(report.dropped_full > 0);
        assert_eq!(a.backlog_len(), BACKLOG_FRAMES);
    }
}
