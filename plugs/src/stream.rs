//! Frames over stream sockets: QEMU `-netdev stream`, passt, libkrun,
//! socket_vmnet (4-byte prefix) and `vde_plug`/`dpipe`/ssh cables (2-byte
//! prefix), over Unix or TCP sockets, or over a pair of byte pipes (our
//! stdin/stdout, or a child process's stdout/stdin: see
//! [`StreamPort::from_pipes`]).
//!
//! [`StreamPort`] is the plug: one connected stream, one switch port. It
//! reads into a fixed buffer and decodes with a [`FrameDecoder`]; it writes
//! with vectored `sendmsg` straight from the batch while the socket keeps
//! up, and otherwise appends whole frames to a bounded output ring that
//! [`Plug::on_writable`] flushes. A frame that does not fit in the ring is
//! dropped whole and counted, never cut: a stream that lost half a frame
//! would be out of step for good.
//!
//! [`StreamListener`] accepts connections on a Unix path or a TCP address
//! and makes a port of each. Unlike QEMU's own server, which takes one peer
//! at a time, it takes any number: each connection is a port.

use std::fmt;
use std::io::{self, IoSlice, Read};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr};

use crate::batch::{BATCH_CAPACITY, MAX_FRAME_SLOT};
use crate::framing::{DEFAULT_MAX_FRAME, FrameDecoder, FrameHeader, Framing, FramingError};
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

/// Default size of a port's output ring: about 700 full-size frames of
/// backlog before frames are dropped, the same order as a socket buffer
/// plus a VDE_PQ2 queue. Pages are only touched when a backlog forms.
pub const DEFAULT_OUTPUT_BUFFER: usize = 1 << 20;

/// Bytes read per `read` call. Large enough to take many small frames, or
/// most of a 64 KiB frame, per syscall.
const READ_BUFFER: usize = 128 * 1024;

/// How long a blocking Unix `connect` may wait for room in a listener's
/// backlog before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Sizes for one stream port. The defaults suit every known peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// The longest frame accepted from the peer (a longer length prefix
    /// closes the connection) and sent to it (longer frames are dropped, so
    /// a peer with a smaller limit, such as QEMU's 69632, is not cut off).
    pub max_frame: usize,
    /// Bytes of output buffered while the peer does not read; raised to at
    /// least one maximum-size frame.
    pub output_buffer: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            max_frame: DEFAULT_MAX_FRAME,
            output_buffer: DEFAULT_OUTPUT_BUFFER,
        }
    }
}

/// The connected socket under a [`StreamPort`]: Unix, TCP, or a pair of
/// pipes. An enum rather than a type parameter so the daemon can keep all
/// stream ports in one collection.
#[derive(Debug)]
pub enum StreamSocket {
    /// A Unix stream socket (QEMU `addr.type=unix`, passt, socket_vmnet).
    Unix(UnixStream),
    /// A TCP connection (QEMU `addr.type=inet`, libvirt `server`/`client`).
    Tcp(TcpStream),
    /// Two one-way byte channels, read from `rx` and written to `tx`, both
    /// non-blocking: our stdin/stdout (`vde_plug` style, under `dpipe` or
    /// ssh), or a child's stdout/stdin. Usually pipes, but any descriptor
    /// `read`/`writev` work on will do (a socket or a tty on stdin). Both
    /// register under one token. Made by [`StreamPort::from_pipes`].
    Pipe {
        /// The descriptor frames are read from.
        rx: OwnedFd,
        /// The descriptor frames are written to.
        tx: OwnedFd,
    },
}

impl StreamSocket {
    /// Shuts both directions down, so the peer sees the end at once even if
    /// the port lingers in the daemon for a moment. For pipes only the
    /// final close (dropping the port) ends them; if they are sockets after
    /// all (stdin/stdout under inetd or a socketpair), they are shut down.
    fn shutdown(&self) {
        let _ = match self {
            StreamSocket::Unix(s) => s.shutdown(Shutdown::Both),
            StreamSocket::Tcp(s) => s.shutdown(Shutdown::Both),
            StreamSocket::Pipe { rx, tx } => {
                for fd in [rx, tx] {
                    // SAFETY: shutdown(2) on a descriptor we own; ENOTSOCK
                    // for a pipe is expected and ignored.
                    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
                }
                Ok(())
            }
        };
    }

    /// `read(2)`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamSocket::Unix(s) => s.read(buf),
            StreamSocket::Tcp(s) => s.read(buf),
            StreamSocket::Pipe { rx, .. } => {
                // SAFETY: `buf` is valid for `buf.len()` bytes of writes.
                let rc = unsafe { libc::read(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(rc as usize)
                }
            }
        }
    }

    /// A non-blocking vectored send that never raises `SIGPIPE`: `sendmsg`
    /// with `MSG_NOSIGNAL` on sockets, `writev` on pipes (Rust programs
    /// ignore `SIGPIPE`, so a vanished reader is an `EPIPE` error).
    fn send_vectored(&self, iov: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            StreamSocket::Unix(s) => s.try_io(|| sendmsg_nosignal(s.as_raw_fd(), iov)),
            StreamSocket::Tcp(s) => s.try_io(|| sendmsg_nosignal(s.as_raw_fd(), iov)),
            StreamSocket::Pipe { tx, .. } => writev(tx.as_raw_fd(), iov),
        }
    }

    /// For pipes: whether the reader of `tx` has gone (`POLLERR` on a pipe's
    /// write end), found without blocking and without writing. Sockets
    /// report their end through reads and writes alone.
    fn tx_reader_gone(&self) -> bool {
        let StreamSocket::Pipe { tx, .. } = self else {
            return false;
        };
        let mut pfd = libc::pollfd {
            fd: tx.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid `pollfd`, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & libc::POLLERR != 0
    }
}

impl From<UnixStream> for StreamSocket {
    fn from(s: UnixStream) -> Self {
        StreamSocket::Unix(s)
    }
}

impl From<TcpStream> for StreamSocket {
    fn from(s: TcpStream) -> Self {
        StreamSocket::Tcp(s)
    }
}

/// The socket's descriptor; for [`StreamSocket::Pipe`], the receive side.
impl AsRawFd for StreamSocket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            StreamSocket::Unix(s) => s.as_raw_fd(),
            StreamSocket::Tcp(s) => s.as_raw_fd(),
            StreamSocket::Pipe { rx, .. } => rx.as_raw_fd(),
        }
    }
}

/// The socket's descriptor; for [`StreamSocket::Pipe`], the receive side.
impl AsFd for StreamSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            StreamSocket::Unix(s) => s.as_fd(),
            StreamSocket::Tcp(s) => s.as_fd(),
            StreamSocket::Pipe { rx, .. } => rx.as_fd(),
        }
    }
}

impl Source for StreamSocket {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            StreamSocket::Unix(s) => s.register(registry, token, interests),
            StreamSocket::Tcp(s) => s.register(registry, token, interests),
            StreamSocket::Pipe { rx, tx } => {
                // Both under the one token, with the same interests: a
                // pipe's read end never reports writable nor its write end
                // readable, and if they are one socket twice, either event
                // is handled the same way.
                SourceFd(&rx.as_raw_fd()).register(registry, token, interests)?;
                if let Err(e) = SourceFd(&tx.as_raw_fd()).register(registry, token, interests) {
                    let _ = SourceFd(&rx.as_raw_fd()).deregister(registry);
                    return Err(e);
                }
                Ok(())
            }
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match self {
            StreamSocket::Unix(s) => s.reregister(registry, token, interests),
            StreamSocket::Tcp(s) => s.reregister(registry, token, interests),
            StreamSocket::Pipe { rx, tx } => {
                SourceFd(&rx.as_raw_fd()).reregister(registry, token, interests)?;
                SourceFd(&tx.as_raw_fd()).reregister(registry, token, interests)
            }
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match self {
            StreamSocket::Unix(s) => s.deregister(registry),
            StreamSocket::Tcp(s) => s.deregister(registry),
            StreamSocket::Pipe { rx, tx } => {
                // Both, even if the first fails.
                let first = SourceFd(&rx.as_raw_fd()).deregister(registry);
                let second = SourceFd(&tx.as_raw_fd()).deregister(registry);
                first.and(second)
            }
        }
    }
}

/// Why a stream port stopped, for the log line and the port table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection.
    Eof,
    /// The peer reset the connection (or it timed out).
    Reset(io::ErrorKind),
    /// The peer sent a length prefix we cannot accept.
    Framing(FramingError),
    /// Writing failed for good (`EPIPE`, `ECONNRESET`, ...).
    WriteFailed(io::ErrorKind),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Eof => write!(f, "peer closed the connection"),
            CloseReason::Reset(kind) => write!(f, "connection lost: {kind}"),
            CloseReason::Framing(e) => write!(f, "bad frame length from peer: {e}"),
            CloseReason::WriteFailed(kind) => write!(f, "write failed: {kind}"),
        }
    }
}

/// A bounded byte ring for output the socket has not taken yet.
#[derive(Debug)]
struct OutRing {
    buf: Box<[u8]>,
    head: usize,
    len: usize,
}

impl OutRing {
    fn new(capacity: usize) -> OutRing {
        OutRing {
            buf: vec![0u8; capacity].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn free(&self) -> usize {
        self.buf.len() - self.len
    }

    /// Appends `bytes`; the caller has checked [`free`](Self::free).
    fn push(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= self.free());
        let cap = self.buf.len();
        let tail = (self.head + self.len) % cap;
        let first = bytes.len().min(cap - tail);
        self.buf[tail..tail + first].copy_from_slice(&bytes[..first]);
        self.buf[..bytes.len() - first].copy_from_slice(&bytes[first..]);
        self.len += bytes.len();
    }

    /// The buffered bytes, oldest first, in at most two pieces.
    fn slices(&self) -> (&[u8], &[u8]) {
        let cap = self.buf.len();
        let end = self.head + self.len;
        if end <= cap {
            (&self.buf[self.head..end], &[])
        } else {
            (&self.buf[self.head..], &self.buf[..end - cap])
        }
    }

    /// Forgets the oldest `n` bytes (written out).
    fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.len -= n;
        self.head = if self.len == 0 {
            0
        } else {
            (self.head + n) % self.buf.len()
        };
    }
}

/// One stream connection as a switch port.
///
/// Register it for `READABLE | WRITABLE` (the daemon does): writable events
/// drive [`Plug::on_writable`], which drains the output ring.
#[derive(Debug)]
pub struct StreamPort {
    socket: StreamSocket,
    framing: Framing,
    decoder: FrameDecoder,
    max_frame: usize,
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    out: OutRing,
    description: String,
    closed: Option<CloseReason>,
}

impl StreamPort {
    /// Wraps a connected, non-blocking stream with default sizes. Sets
    /// `TCP_NODELAY` on TCP: frames must not wait for Nagle.
    pub fn new(
        socket: impl Into<StreamSocket>,
        framing: Framing,
        description: impl Into<String>,
    ) -> StreamPort {
        StreamPort::with_options(socket, framing, description, StreamOptions::default())
    }

    /// Like [`new`](Self::new), with explicit sizes.
    pub fn with_options(
        socket: impl Into<StreamSocket>,
        framing: Framing,
        description: impl Into<String>,
        options: StreamOptions,
    ) -> StreamPort {
        let socket = socket.into();
        if let StreamSocket::Tcp(s) = &socket
            && let Err(e) = s.set_nodelay(true)
        {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let decoder = FrameDecoder::new(framing, options.max_frame);
        let max_frame = decoder.max_frame();
        StreamPort {
            socket,
            framing,
            decoder,
            max_frame,
            rbuf: vec![0u8; READ_BUFFER].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            out: OutRing::new(
                options
                    .output_buffer
                    .max(MAX_FRAME_SLOT + framing.header_len()),
            ),
            description: description.into(),
            closed: None,
        }
    }

    /// Connects to a Unix stream socket (a passt socket, a QEMU
    /// `server=on` stream, socket_vmnet). Waits at most 5 s for room in the
    /// listener's backlog.
    pub fn connect_unix(path: &Path, framing: Framing) -> io::Result<StreamPort> {
        let stream = connect_unix_stream(path, CONNECT_TIMEOUT)?;
        let description = format!("{framing} stream to unix:{}", path.display());
        Ok(StreamPort::new(
            UnixStream::from_std(stream),
            framing,
            description,
        ))
    }

    /// Connects to a TCP listener (QEMU `-netdev stream,server=on` over
    /// inet, `-netdev socket,listen=`), waiting at most `timeout`.
    pub fn connect_tcp(
        addr: SocketAddr,
        framing: Framing,
        timeout: Duration,
    ) -> io::Result<StreamPort> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nonblocking(true)?;
        let description = format!("{framing} stream to tcp:{addr}");
        Ok(StreamPort::new(
            TcpStream::from_std(stream),
            framing,
            description,
        ))
    }

    /// A port over two byte pipes, `vde_plug`-style: frames are read from
    /// `rx` and written to `tx` (our stdin and stdout, or a child process's
    /// stdout and stdin). Both are made non-blocking here, which affects
    /// every holder of the same open file: a terminal or a pipe shared with
    /// another process sees it too. EOF on `rx` closes the port
    /// ([`CloseReason::Eof`]), and so does a vanished reader of `tx`
    /// (`EPIPE`: [`CloseReason::WriteFailed`]).
    ///
    /// `Framing::Vde` is what `vde_plug`, `dpipe` and ssh cables speak.
    pub fn from_pipes(
        rx: OwnedFd,
        tx: OwnedFd,
        framing: Framing,
        description: impl Into<String>,
    ) -> io::Result<StreamPort> {
        StreamPort::from_pipes_with_options(rx, tx, framing, description, StreamOptions::default())
    }

    /// Like [`from_pipes`](Self::from_pipes), with explicit sizes.
    pub fn from_pipes_with_options(
        rx: OwnedFd,
        tx: OwnedFd,
        framing: Framing,
        description: impl Into<String>,
        options: StreamOptions,
    ) -> io::Result<StreamPort> {
        set_nonblocking(&rx)?;
        set_nonblocking(&tx)?;
        Ok(StreamPort::with_options(
            StreamSocket::Pipe { rx, tx },
            framing,
            description,
            options,
        ))
    }

    /// The framing spoken on this connection.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The socket, for addresses and options.
    pub fn socket(&self) -> &StreamSocket {
        &self.socket
    }

    /// Bytes waiting in the output ring.
    pub fn pending_output(&self) -> usize {
        self.out.len()
    }

    /// Why the port stopped, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    /// Marks the port closed (once) and shuts the socket down.
    fn close(&mut self, reason: CloseReason) {
        if self.closed.is_some() {
            return;
        }
        match &reason {
            CloseReason::Framing(_) => {
                tracing::warn!(port = %self.description, reason = %reason, "closing stream port");
            }
            _ => tracing::debug!(port = %self.description, reason = %reason, "stream port closed"),
        }
        self.socket.shutdown();
        self.out.consume(self.out.len());
        self.closed = Some(reason);
    }

    /// Checks that frame `index` of `batch` can be sent, and makes its
    /// prefix.
    fn header_for(&self, batch: &FrameBatch, index: u16) -> Option<FrameHeader> {
        let index = usize::from(index);
        if index >= batch.len() {
            return None;
        }
        let len = batch.frame(index).len();
        if len > self.max_frame {
            return None;
        }
        self.framing.encode_header(len).ok()
    }

    /// Appends a frame to the ring if it fits whole; drops it otherwise.
    fn enqueue(&mut self, header: FrameHeader, frame: &[u8], report: &mut TxReport) {
        let header = header.as_bytes();
        if self.out.free() >= header.len() + frame.len() {
            self.out.push(header);
            self.out.push(frame);
            report.sent += 1;
            report.sent_bytes += frame.len();
        } else {
            report.dropped_full += 1;
        }
    }

    /// Writes frames straight from the batch with one `sendmsg` per
    /// [`BATCH_CAPACITY`] frames while the socket takes everything. Queues
    /// the unwritten rest of a frame the socket took only part of, and
    /// queues (or drops) the frames after it. Returns the indices not yet
    /// handled. Only called with an empty ring.
    fn write_direct<'w>(
        &mut self,
        batch: &FrameBatch,
        which: &'w [u16],
        report: &mut TxReport,
    ) -> &'w [u16] {
        let header_len = self.framing.header_len();
        let mut pos = 0;
        while pos < which.len() {
            let mut headers = [FrameHeader::default(); BATCH_CAPACITY];
            let mut indices = [0u16; BATCH_CAPACITY];
            let mut count = 0;
            while pos < which.len() && count < BATCH_CAPACITY {
                let index = which[pos];
                pos += 1;
                match self.header_for(batch, index) {
                    Some(h) => {
                        headers[count] = h;
                        indices[count] = index;
                        count += 1;
                    }
                    None => report.dropped_error += 1,
                }
            }
            if count == 0 {
                continue;
            }
            let mut iov = [IoSlice::new(&[]); 2 * BATCH_CAPACITY];
            for k in 0..count {
                iov[2 * k] = IoSlice::new(headers[k].as_bytes());
                iov[2 * k + 1] = IoSlice::new(batch.frame(usize::from(indices[k])));
            }
            let mut written = loop {
                match self.socket.send_vectored(&iov[..2 * count]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                    Err(e) => {
                        report.dropped_error += count;
                        self.close(CloseReason::WriteFailed(e.kind()));
                        return &which[pos..];
                    }
                }
            };
            let mut k = 0;
            while k < count {
                let frame = batch.frame(usize::from(indices[k]));
                let total = header_len + frame.len();
                if written >= total {
                    written -= total;
                    report.sent += 1;
                    report.sent_bytes += frame.len();
                    k += 1;
                } else {
                    break;
                }
            }
            if k == count {
                continue;
            }
            if written > 0 {
                // The socket took part of frame `k`: the rest must follow,
                // or the stream is out of step. The ring is empty and holds
                // at least one maximum-size frame, so it fits.
                let header = headers[k].as_bytes();
                let frame = batch.frame(usize::from(indices[k]));
                if written < header_len {
                    self.out.push(&header[written..]);
                    self.out.push(frame);
                } else {
                    self.out.push(&frame[written - header_len..]);
                }
                report.sent += 1;
                report.sent_bytes += frame.len();
                k += 1;
            }
            for j in k..count {
                self.enqueue(headers[j], batch.frame(usize::from(indices[j])), report);
            }
            return &which[pos..];
        }
        &[]
    }

    /// Writes as much of the ring as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            let (a, b) = self.out.slices();
            let iov = [IoSlice::new(a), IoSlice::new(b)];
            let pieces = if b.is_empty() { 1 } else { 2 };
            match self.socket.send_vectored(&iov[..pieces]) {
                Ok(0) => break,
                Ok(n) => self.out.consume(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.close(CloseReason::WriteFailed(e.kind()));
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

/// `sendmsg(fd, iov, MSG_DONTWAIT | MSG_NOSIGNAL)`.
fn sendmsg_nosignal(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: all-zero is a valid `msghdr`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is guaranteed ABI-compatible with `iovec` on Unix; sendmsg
    // only reads through the pointer.
    msg.msg_iov = iov.as_ptr().cast_mut().cast();
    msg.msg_iovlen = iov.len() as _;
    // SAFETY: `msg` points at `iov`, which outlives the call.
    let rc = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// `writev(fd, iov)`, for pipes (non-blocking by their file flag).
fn writev(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    // Callers pass at most 2 * BATCH_CAPACITY slices, far below IOV_MAX.
    let count = libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix; writev only
    // reads through the pointer, and the slices outlive the call.
    let rc = unsafe { libc::writev(fd, iov.as_ptr().cast(), count) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Sets `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: fcntl(2) F_GETFL/F_SETFL on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK == 0 {
        // SAFETY: as above.
        let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// True for read errors that mean the connection is gone.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::NotConnected
            | io::ErrorKind::TimedOut
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

impl Plug for StreamPort {
    /// Reads until the batch is full or the socket has nothing more. Frames
    /// decoded before an EOF, a reset or a bad length stay in the batch;
    /// `Closed` is returned with them and on every later call.
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        if self.closed.is_some() {
            return Ok(RecvStatus::Closed);
        }
        loop {
            if self.rpos < self.rlen {
                match self.decoder.feed(&self.rbuf[self.rpos..self.rlen], batch) {
                    Ok(n) => self.rpos += n,
                    Err(e) => {
                        self.close(CloseReason::Framing(e));
                        return Ok(RecvStatus::Closed);
                    }
                }
            }
            if batch.is_full() {
                return Ok(RecvStatus::More);
            }
            // The decoder took everything: the buffer is free again.
            self.rpos = 0;
            self.rlen = 0;
            match self.socket.read(&mut self.rbuf) {
                Ok(0) => {
                    if self.decoder.is_mid_frame() {
                        tracing::debug!(port = %self.description, "EOF in the middle of a frame");
                    }
                    self.close(CloseReason::Eof);
                    return Ok(RecvStatus::Closed);
                }
                Ok(n) => self.rlen = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(RecvStatus::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_disconnect(&e) => {
                    self.close(CloseReason::Reset(e.kind()));
                    return Ok(RecvStatus::Closed);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends directly while the socket keeps up; otherwise buffers whole
    /// frames up to the ring's size and drops the rest
    /// ([`dropped_full`](TxReport::dropped_full)). Frames longer than the
    /// port's `max_frame` or than the prefix can express, and everything
    /// after the connection failed, count as
    /// [`dropped_error`](TxReport::dropped_error).
    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        let mut report = TxReport::default();
        if !self.out.is_empty() {
            let _ = self.flush();
        }
        if self.closed.is_some() {
            report.dropped_error = which.len();
            return report;
        }
        let rest = if self.out.is_empty() {
            self.write_direct(batch, which, &mut report)
        } else {
            which
        };
        if self.closed.is_some() {
            report.dropped_error += rest.len();
            return report;
        }
        for &index in rest {
            match self.header_for(batch, index) {
                Some(header) => self.enqueue(header, batch.frame(usize::from(index)), &mut report),
                None => report.dropped_error += 1,
            }
        }
        report
    }

    fn on_writable(&mut self) -> io::Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        self.flush()
    }

    /// False once the connection has failed in any direction. For pipes,
    /// also false (and the port closed) once nobody reads `tx` any more,
    /// even before a write fails.
    fn check_alive(&mut self) -> bool {
        if self.closed.is_none() && self.socket.tx_reader_gone() {
            self.close(CloseReason::WriteFailed(io::ErrorKind::BrokenPipe));
        }
        self.closed.is_none()
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "stream"
    }
}

crate::delegate_source!(StreamPort, socket);

/// The listening socket under a [`StreamListener`].
#[derive(Debug)]
enum ListenerSocket {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// A listening Unix or TCP socket that turns each connection into a
/// [`StreamPort`] (QEMU `-netdev stream,server=off` and libkrun/passt-style
/// clients connect here).
///
/// A Unix listener removes its socket file when dropped, unless the file
/// has been replaced by someone else's since.
#[derive(Debug)]
pub struct StreamListener {
    socket: ListenerSocket,
    framing: Framing,
    options: StreamOptions,
    label: String,
    bound: Option<BoundPath>,
}

impl StreamListener {
    /// Listens on a Unix socket at `path`. A socket file nobody listens on
    /// (left by a crash) is replaced; a live one is an `AddrInUse` error
    /// ("in use"); anything that is not a socket is refused and left alone.
    pub fn bind_unix(path: impl AsRef<Path>, framing: Framing) -> io::Result<StreamListener> {
        let path = std::path::absolute(path.as_ref())?;
        claim_socket_path(&path, SockType::Stream)?;
        let listener = UnixListener::bind(&path).map_err(|e| in_use_error(e, &path))?;
        let bound = BoundPath::new(&path)?;
        Ok(StreamListener {
            socket: ListenerSocket::Unix(listener),
            framing,
            options: StreamOptions::default(),
            label: format!("unix:{}", path.display()),
            bound: Some(bound),
        })
    }

    /// Listens on a TCP address (port 0 picks a free port; see
    /// [`local_addr`](Self::local_addr)).
    pub fn bind_tcp(addr: SocketAddr, framing: Framing) -> io::Result<StreamListener> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        Ok(StreamListener {
            socket: ListenerSocket::Tcp(listener),
            framing,
            options: StreamOptions::default(),
            label: format!("tcp:{local}"),
            bound: None,
        })
    }

    /// Sets the sizes given to accepted ports.
    pub fn with_options(mut self, options: StreamOptions) -> StreamListener {
        self.options = options;
        self
    }

    /// The framing accepted ports speak.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// The bound TCP address, for listeners made by
    /// [`bind_tcp`](Self::bind_tcp).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            ListenerSocket::Tcp(l) => l.local_addr().ok(),
            ListenerSocket::Unix(_) => None,
        }
    }

    /// The socket path, for listeners made by [`bind_unix`](Self::bind_unix).
    pub fn path(&self) -> Option<&Path> {
        self.bound.as_ref().map(|b| b.path.as_path())
    }

    /// Where the listener listens, as `unix:PATH` or `tcp:ADDR`, for logs.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Accepts one waiting connection as a port, without blocking.
    ///
    /// `Ok(None)` when none is waiting: the listener is edge-triggered, so
    /// on a readiness event call this until it says so. Connections
    /// abandoned before we got to them are skipped; other errors (out of
    /// descriptors) are returned and the listener stays usable.
    pub fn accept(&mut self) -> io::Result<Option<StreamPort>> {
        loop {
            let result = match &self.socket {
                ListenerSocket::Unix(l) => l.accept().map(|(s, _)| {
                    let who = match nix::sys::socket::getsockopt(
                        &s,
                        nix::sys::socket::sockopt::PeerCredentials,
                    ) {
                        Ok(c) => format!(" pid={} uid={}", c.pid(), c.uid()),
                        Err(_) => String::new(),
                    };
                    let description = format!("{} stream on {}{who}", self.framing, self.label);
                    (StreamSocket::Unix(s), description)
                }),
                ListenerSocket::Tcp(l) => l.accept().map(|(s, peer)| {
                    let description = format!("{} stream from tcp:{peer}", self.framing);
                    (StreamSocket::Tcp(s), description)
                }),
            };
            match result {
                Ok((socket, description)) => {
                    return Ok(Some(StreamPort::with_options(
                        socket,
                        self.framing,
                        description,
                        self.options,
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Source for StreamListener {
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match &mut self.socket {
            ListenerSocket::Unix(l) => l.register(registry, token, interests),
            ListenerSocket::Tcp(l) => l.register(registry, token, interests),
        }
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        match &mut self.socket {
            ListenerSocket::Unix(l) => l.reregister(registry, token, interests),
            ListenerSocket::Tcp(l) => l.reregister(registry, token, interests),
        }
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        match &mut self.socket {
            ListenerSocket::Unix(l) => l.deregister(registry),
            ListenerSocket::Tcp(l) => l.deregister(registry),
        }
    }
}

/// A socket file we bound, removed on drop if it is still the same file.
/// Shared by every plug that binds a path.
#[derive(Debug)]
pub(crate) struct BoundPath {
    pub(crate) path: PathBuf,
    dev: u64,
    ino: u64,
}

impl BoundPath {
    /// Records the identity of the socket file just bound at `path`.
    pub(crate) fn new(path: &Path) -> io::Result<BoundPath> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(BoundPath {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }
}

impl Drop for BoundPath {
    fn drop(&mut self) {
        // Best effort; never remove a file someone put there after us.
        if let Ok(meta) = std::fs::symlink_metadata(&self.path)
            && meta.dev() == self.dev
            && meta.ino() == self.ino
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes `path` free for binding a socket of type `kind`: nothing there is
/// fine; a socket file nobody is bound to is removed; a live socket is an
/// `AddrInUse` error; anything else is refused with `AlreadyExists`.
pub(crate) fn claim_socket_path(path: &Path, kind: SockType) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    if socket_is_live(path, kind)? {
        return Err(in_use(path));
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether something is bound to the socket file at `path`, found by a
/// non-blocking connect of a socket of type `kind`.
fn socket_is_live(path: &Path, kind: SockType) -> io::Result<bool> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        kind,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
        // Accepted, queued behind a full backlog, bound by a socket of
        // another type, or a datagram socket connected to someone else:
        // somebody is there.
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS | Errno::EPROTOTYPE | Errno::EPERM) => {
            Ok(true)
        }
        Err(Errno::ECONNREFUSED | Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The error for a path a live socket holds.
fn in_use(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("{} is in use by a running process", path.display()),
    )
}

/// Rewrites a bind's `EADDRINUSE` (someone bound the path between our check
/// and our bind) into the same message as a live socket.
pub(crate) fn in_use_error(e: io::Error, path: &Path) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        in_use(path)
    } else {
        e
    }
}

/// Connects a Unix stream socket without blocking indefinitely: a listener
/// whose backlog is full makes a non-blocking connect fail with `EAGAIN`,
/// which is retried until `timeout`. Returns a non-blocking socket.
pub(crate) fn connect_unix_stream(
    path: &Path,
    timeout: Duration,
) -> io::Result<std::os::unix::net::UnixStream> {
    let deadline = Instant::now() + timeout;
    let addr = UnixAddr::new(path)?;
    loop {
        let fd = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(std::os::unix::net::UnixStream::from(fd)),
            Err(Errno::EAGAIN | Errno::EINTR) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(Errno::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not accept within {timeout:?}", path.display()),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream as StdUnixStream;

    use crate::vde::dir::tests::dead_socket;
    use crate::vde::dir::with_umask_lock;

    const WAIT: Duration = Duration::from_secs(10);

    /// A frame whose bytes encode `seed` and its length, so any mix-up,
    /// cut or shift shows.
    fn frame(seed: usize, len: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| (i * 7 + seed * 131) as u8).collect();
        // The first bytes carry the seed, for frames long enough.
        for (i, b) in (seed as u32).to_be_bytes().iter().enumerate() {
            if let Some(x) = f.get_mut(i) {
                *x = *b;
            }
        }
        f
    }

    fn seed_of(f: &[u8]) -> usize {
        u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize
    }

    fn tempdir() -> tempfile::TempDir {
        with_umask_lock(|| tempfile::tempdir().unwrap())
    }

    /// A port on one end of a socket pair, the raw other end (blocking,
    /// with a timeout) for the test to read and write bytes itself.
    fn port_and_raw(framing: Framing, options: StreamOptions) -> (StreamPort, StdUnixStream) {
        let (a, b) = StdUnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_read_timeout(Some(WAIT)).unwrap();
        b.set_write_timeout(Some(WAIT)).unwrap();
        let port = StreamPort::with_options(UnixStream::from_std(a), framing, "test", options);
        (port, b)
    }

    fn port_pair(framing: Framing, options: StreamOptions) -> (StreamPort, StreamPort) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            StreamPort::with_options(a, framing, "a", options),
            StreamPort::with_options(b, framing, "b", options),
        )
    }

    /// Receives on `port` until `want` frames arrived (or it closes),
    /// calling `between` each round (to flush the sender). Bounded by
    /// [`WAIT`].
    fn recv_frames(
        port: &mut StreamPort,
        want: usize,
        mut between: impl FnMut(),
    ) -> (Vec<Vec<u8>>, RecvStatus) {
        let deadline = Instant::now() + WAIT;
        let mut batch = FrameBatch::new();
        let mut got = Vec::new();
        loop {
            between();
            batch.clear();
            let status = port.recv_batch(&mut batch).unwrap();
            got.extend((0..batch.len()).map(|i| batch.frame(i).to_vec()));
            if got.len() >= want || status == RecvStatus::Closed {
                return (got, status);
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {want} frames within {WAIT:?}",
                got.len()
            );
            if status == RecvStatus::Drained {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn out_ring_wraps_and_keeps_order() {
        let mut ring = OutRing::new(10);
        ring.push(b"abcdefg");
        ring.consume(5);
        ring.push(b"hijkl");
        assert_eq!(ring.len(), 7);
        assert_eq!(ring.slices(), (&b"fghij"[..], &b"kl"[..]));
        assert_eq!(ring.free(), 3);
        ring.consume(6);
        assert_eq!(ring.slices(), (&b"l"[..], &b""[..]));
        ring.consume(1);
        assert!(ring.is_empty());
        assert_eq!(ring.head, 0);
    }

    #[test]
    fn bytes_on_the_wire_match_each_framing() {
        // QEMU: 4-byte length, e.g. DHCPDISCOVER = 00 00 01 ba + 442 bytes.
        let (mut port, mut raw) = port_and_raw(Framing::Qemu, StreamOptions::default());
        let mut out = FrameBatch::new();
        out.push(&frame(1, 442));
        out.push(&frame(2, 60));
        let report = port.send_batch(&out, &[0, 1]);
        assert_eq!(report.sent, 2);
        assert_eq!(report.sent_bytes, 502);
        let mut wire = vec![0u8; 4 + 442 + 4 + 60];
        raw.read_exact(&mut wire).unwrap();
        assert_eq!(&wire[..4], &[0, 0, 1, 0xba]);
        assert_eq!(&wire[4..446], &frame(1, 442)[..]);
        assert_eq!(&wire[446..450], &[0, 0, 0, 60]);
        assert_eq!(&wire[450..], &frame(2, 60)[..]);

        // VDE: 2-byte length, 1514 = 05 ea.
        let (mut port, mut raw) = port_and_raw(Framing::Vde, StreamOptions::default());
        let mut out = FrameBatch::new();
        out.push(&frame(3, 1514));
        assert_eq!(port.send_batch(&out, &[0]).sent, 1);
        let mut wire = vec![0u8; 2 + 1514];
        raw.read_exact(&mut wire).unwrap();
        assert_eq!(&wire[..2], &[0x05, 0xea]);
        assert_eq!(&wire[2..], &frame(3, 1514)[..]);

        // And the other way: raw bytes in, frames out, across odd writes.
        let mut stream = Vec::new();
        for (i, len) in [14usize, 1514, 65535].into_iter().enumerate() {
            Framing::Vde
                .encode_into(&frame(i, len), &mut stream)
                .unwrap();
        }
        for chunk in stream.chunks(1000) {
            raw.write_all(chunk).unwrap();
        }
        let (got, status) = recv_frames(&mut port, 3, || {});
        assert_ne!(status, RecvStatus::Closed);
        assert_eq!(got, vec![frame(0, 14), frame(1, 1514), frame(2, 65535)]);
    }

    #[test]
    fn frames_round_trip_between_ports_in_both_framings() {
        for framing in [Framing::Qemu, Framing::Vde] {
            let (mut a, mut b) = port_pair(framing, StreamOptions::default());
            let sizes = [1usize, 14, 60, 1514, 9000, 65535, 64];
            let mut out = FrameBatch::new();
            for (i, &len) in sizes.iter().enumerate() {
                out.push(&frame(i, len));
            }
            let which: Vec<u16> = (0..sizes.len() as u16).collect();
            let report = a.send_batch(&out, &which);
            assert_eq!(report.sent, sizes.len(), "{framing}");
            assert_eq!(report.dropped_full + report.dropped_error, 0);
            let (got, _) = recv_frames(&mut b, sizes.len(), || a.on_writable().unwrap());
            let want: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &l)| frame(i, l))
                .collect();
            assert_eq!(got, want, "{framing}");
            // And back.
            let report = b.send_batch(&out, &[3, 0]);
            assert_eq!(report.sent, 2);
            let (got, _) = recv_frames(&mut a, 2, || b.on_writable().unwrap());
            assert_eq!(got, vec![frame(3, 1514), frame(0, 1)]);
            assert_eq!(a.kind(), "stream");
        }
    }

    #[test]
    fn unsendable_frames_are_errors_not_stream_damage() {
        let options = StreamOptions {
            max_frame: 1518,
            ..StreamOptions::default()
        };
        let (mut port, mut raw) = port_and_raw(Framing::Vde, options);
        let mut out = FrameBatch::new();
        out.push(&frame(0, 1519)); // above max_frame
        out.push(&[]); // empty
        out.push(&frame(2, 100));
        let report = port.send_batch(&out, &[0, 1, 7, 2]);
        assert_eq!(report.sent, 1);
        assert_eq!(report.dropped_error, 3);
        let mut wire = [0u8; 102];
        raw.read_exact(&mut wire).unwrap();
        assert_eq!(&wire[..2], &[0, 100]);
        assert_eq!(&wire[2..], &frame(2, 100)[..]);
    }

    /// A reader that does not read: the socket buffer fills, then the
    /// output ring, then whole frames are dropped and counted. When the
    /// reader catches up, every frame that was accepted arrives intact and
    /// in order: the stream never lost step, even though the socket took
    /// frames in pieces.
    #[test]
    fn slow_reader_gets_whole_frames_and_drops_are_counted() {
        for framing in [Framing::Qemu, Framing::Vde] {
            let (a, b) = port_pair(framing, SLOW_READER_OPTIONS);
            // Sizes chosen so frames straddle both socket writes and the
            // ring's wrap point.
            assert_slow_reader_keeps_whole_frames(
                a,
                b,
                framing,
                &[100, 1514, 9000, 60001, 77, 33333],
            );
        }
    }

    /// Options for the slow-reader tests: a small ring, so it fills fast.
    const SLOW_READER_OPTIONS: StreamOptions = StreamOptions {
        max_frame: DEFAULT_MAX_FRAME,
        output_buffer: 256 * 1024,
    };

    /// Sends to `a` while `b` does not read until whole frames are dropped,
    /// then has `b` catch up: every accepted frame must arrive whole and in
    /// order, the counts must add up, and the stream must still be in step.
    fn assert_slow_reader_keeps_whole_frames(
        mut a: StreamPort,
        mut b: StreamPort,
        framing: Framing,
        sizes: &[usize],
    ) {
        let mut offered = 0usize;
        let mut total = TxReport::default();
        let mut out = FrameBatch::new();
        let mut rounds = 0;
        while total.dropped_full == 0 {
            rounds += 1;
            assert!(rounds < 1000, "{framing}: the peer never filled up");
            out.clear();
            for k in 0..8 {
                let seed = offered + k;
                out.push(&frame(seed, sizes[seed % sizes.len()]));
            }
            let report = a.send_batch(&out, &[0, 1, 2, 3, 4, 5, 6, 7]);
            assert_eq!(report.sent + report.dropped_full, 8);
            assert_eq!(report.dropped_error, 0);
            total.absorb(report);
            offered += 8;
        }
        assert!(a.pending_output() > 0);
        assert!(a.pending_output() <= SLOW_READER_OPTIONS.output_buffer);

        let (got, status) = recv_frames(&mut b, total.sent, || {
            a.on_writable().unwrap();
        });
        assert_ne!(status, RecvStatus::Closed);
        assert_eq!(got.len(), total.sent, "{framing}");
        let mut last = None;
        let mut bytes = 0;
        for f in &got {
            let seed = seed_of(f);
            assert!(last.is_none_or(|l| seed > l), "{framing}: order");
            assert_eq!(
                f,
                &frame(seed, sizes[seed % sizes.len()]),
                "{framing}: frame {seed}"
            );
            last = Some(seed);
            bytes += f.len();
        }
        assert_eq!(bytes, total.sent_bytes);
        assert_eq!(got.len() + total.dropped_full, offered);
        assert_eq!(a.pending_output(), 0);
        // The stream is still in step: a new frame goes through.
        out.clear();
        out.push(&frame(999_999, 1514));
        assert_eq!(a.send_batch(&out, &[0]).sent, 1);
        let (got, _) = recv_frames(&mut b, 1, || {});
        assert_eq!(got, vec![frame(999_999, 1514)]);
    }

    #[test]
    fn bad_lengths_close_the_connection() {
        // Oversized (QEMU framing, default limit), after one good frame.
        let (mut port, mut raw) = port_and_raw(Framing::Qemu, StreamOptions::default());
        let mut bytes = Vec::new();
        Framing::Qemu
            .encode_into(&frame(5, 60), &mut bytes)
            .unwrap();
        bytes.extend_from_slice(&70_000u32.to_be_bytes());
        bytes.extend_from_slice(&[0xaa; 100]);
        raw.write_all(&bytes).unwrap();
        let (got, status) = recv_frames(&mut port, 2, || {});
        assert_eq!(status, RecvStatus::Closed);
        assert_eq!(got, vec![frame(5, 60)]);
        assert!(matches!(
            port.close_reason(),
            Some(CloseReason::Framing(FramingError::TooLong {
                len: 70_000,
                ..
            }))
        ));
        assert!(!port.check_alive());
        // We shut the socket: the peer sees EOF.
        let mut byte = [0u8; 1];
        assert_eq!(raw.read(&mut byte).unwrap(), 0);
        // Sends after the close are errors.
        let mut out = FrameBatch::new();
        out.push(&[1; 60]);
        assert_eq!(port.send_batch(&out, &[0]).dropped_error, 1);

        // VDE framing with a small limit, and a zero length.
        let options = StreamOptions {
            max_frame: 1518,
            ..StreamOptions::default()
        };
        let (mut port, mut raw) = port_and_raw(Framing::Vde, options);
        raw.write_all(&1519u16.to_be_bytes()).unwrap();
        let (got, status) = recv_frames(&mut port, 1, || {});
        assert!(got.is_empty());
        assert_eq!(status, RecvStatus::Closed);
        let (mut port, mut raw) = port_and_raw(Framing::Vde, options);
        raw.write_all(&[0, 0]).unwrap();
        let (_, status) = recv_frames(&mut port, 1, || {});
        assert_eq!(status, RecvStatus::Closed);
        assert_eq!(
            port.close_reason(),
            Some(&CloseReason::Framing(FramingError::ZeroLength))
        );
    }

    #[test]
    fn eof_after_frames_delivers_them_then_closes() {
        let (mut port, mut raw) = port_and_raw(Framing::Qemu, StreamOptions::default());
        let mut bytes = Vec::new();
        Framing::Qemu
            .encode_into(&frame(1, 300), &mut bytes)
            .unwrap();
        Framing::Qemu
            .encode_into(&frame(2, 300), &mut bytes)
            .unwrap();
        bytes.truncate(bytes.len() - 10); // the second frame is cut short
        raw.write_all(&bytes).unwrap();
        drop(raw);
        let (got, status) = recv_frames(&mut port, 3, || {});
        assert_eq!(got, vec![frame(1, 300)]);
        assert_eq!(status, RecvStatus::Closed);
        assert_eq!(port.close_reason(), Some(&CloseReason::Eof));
        let mut batch = FrameBatch::new();
        assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Closed);
    }

    #[test]
    fn write_to_a_vanished_peer_closes_the_port() {
        let (mut port, raw) = port_and_raw(Framing::Qemu, StreamOptions::default());
        drop(raw);
        let mut out = FrameBatch::new();
        out.push(&frame(1, 100));
        let report = port.send_batch(&out, &[0, 0]);
        assert_eq!(report.sent, 0);
        assert_eq!(report.dropped_error, 2);
        assert!(matches!(
            port.close_reason(),
            Some(CloseReason::WriteFailed(_))
        ));
        assert!(!port.check_alive());
    }

    #[test]
    fn unix_listener_replaces_stale_refuses_live_and_cleans_up() {
        let tmp = tempdir();
        let path = tmp.path().join("vm.sock");

        // A crashed owner's socket file is replaced.
        dead_socket(&path);
        let mut listener =
            with_umask_lock(|| StreamListener::bind_unix(&path, Framing::Qemu)).unwrap();
        assert_eq!(listener.path(), Some(path.as_path()));

        // A client connects and exchanges frames with the accepted port.
        let mut client = StreamPort::connect_unix(&path, Framing::Qemu).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut port = loop {
            if let Some(p) = listener.accept().unwrap() {
                break p;
            }
            assert!(Instant::now() < deadline, "no connection to accept");
            std::thread::sleep(Duration::from_millis(1));
        };
        let pid = std::process::id();
        assert!(
            port.description().contains(&format!("pid={pid}")),
            "{}",
            port.description()
        );
        assert!(listener.accept().unwrap().is_none());
        let mut out = FrameBatch::new();
        out.push(&frame(7, 1514));
        assert_eq!(client.send_batch(&out, &[0]).sent, 1);
        let (got, _) = recv_frames(&mut port, 1, || {});
        assert_eq!(got, vec![frame(7, 1514)]);

        // While it listens, a second bind is refused and the file kept. The
        // liveness probe is a connection that ends at once: accepted, it
        // reads as a port that closed.
        let err = StreamListener::bind_unix(&path, Framing::Qemu).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("in use"), "{err}");
        let mut probe = listener.accept().unwrap().expect("the probe connection");
        let (got, status) = recv_frames(&mut probe, 1, || {});
        assert!(got.is_empty());
        assert_eq!(status, RecvStatus::Closed);

        // Dropping the listener removes its socket file.
        drop(listener);
        assert!(!path.exists());

        // Something that is not a socket is never replaced.
        with_umask_lock(|| std::fs::write(&path, b"data")).unwrap();
        let err = StreamListener::bind_unix(&path, Framing::Qemu).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"data");

        // A file someone else put in our place is not removed on drop.
        std::fs::remove_file(&path).unwrap();
        let listener = with_umask_lock(|| StreamListener::bind_unix(&path, Framing::Vde)).unwrap();
        std::fs::remove_file(&path).unwrap();
        with_umask_lock(|| std::fs::write(&path, b"theirs")).unwrap();
        drop(listener);
        assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
    }

    #[test]
    fn tcp_listener_accepts_with_nodelay_and_carries_frames() {
        let mut listener =
            StreamListener::bind_tcp("127.0.0.1:0".parse().unwrap(), Framing::Qemu).unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(listener.label(), format!("tcp:{addr}"));
        let mut raw = std::net::TcpStream::connect(addr).unwrap();
        raw.set_read_timeout(Some(WAIT)).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut port = loop {
            if let Some(p) = listener.accept().unwrap() {
                break p;
            }
            assert!(Instant::now() < deadline, "no connection to accept");
            std::thread::sleep(Duration::from_millis(1));
        };
        match port.socket() {
            StreamSocket::Tcp(s) => assert!(s.nodelay().unwrap(), "TCP_NODELAY"),
            other => panic!("a TCP listener made {other:?}"),
        }
        assert!(port.description().contains("tcp:127.0.0.1:"));

        let mut bytes = Vec::new();
        Framing::Qemu
            .encode_into(&frame(1, 442), &mut bytes)
            .unwrap();
        raw.write_all(&bytes).unwrap();
        let (got, _) = recv_frames(&mut port, 1, || {});
        assert_eq!(got, vec![frame(1, 442)]);

        let mut out = FrameBatch::new();
        out.push(&frame(2, 1514));
        assert_eq!(port.send_batch(&out, &[0]).sent, 1);
        let mut wire = vec![0u8; 4 + 1514];
        raw.read_exact(&mut wire).unwrap();
        assert_eq!(&wire[..4], &[0, 0, 0x05, 0xea]);
        assert_eq!(&wire[4..], &frame(2, 1514)[..]);

        // A client port made by connect_tcp sets NODELAY too.
        let client = StreamPort::connect_tcp(addr, Framing::Qemu, Duration::from_secs(5)).unwrap();
        match client.socket() {
            StreamSocket::Tcp(s) => assert!(s.nodelay().unwrap()),
            other => panic!("connect_tcp made {other:?}"),
        }
    }

    #[test]
    fn registers_with_mio_and_wakes_on_data() {
        use mio::{Events, Poll};
        let (mut port, mut raw) = port_and_raw(Framing::Qemu, StreamOptions::default());
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut port, Token(3), Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        let mut bytes = Vec::new();
        Framing::Qemu
            .encode_into(&frame(1, 64), &mut bytes)
            .unwrap();
        raw.write_all(&bytes).unwrap();
        let mut events = Events::with_capacity(4);
        let deadline = Instant::now() + WAIT;
        loop {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            if events
                .iter()
                .any(|e| e.token() == Token(3) && e.is_readable())
            {
                break;
            }
            assert!(Instant::now() < deadline, "no readable event");
        }
        let mut batch = FrameBatch::new();
        assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
        assert_eq!(batch.frame(0), &frame(1, 64)[..]);
        poll.registry().deregister(&mut port).unwrap();
    }

    /// [`StreamPort::from_pipes`]: the `vde_plug` stdin/stdout cable.
    mod pipes {
        use super::*;
        use std::fs::File;
        use std::io::Write;
        use std::process::{Child, Command, Stdio};

        use crate::vde::VdeClient;

        /// A pipe, as (read end, write end), both blocking.
        fn pipe() -> (OwnedFd, OwnedFd) {
            nix::unistd::pipe().unwrap()
        }

        fn is_nonblocking(fd: &OwnedFd) -> bool {
            // SAFETY: F_GETFL on a descriptor we own.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
            assert!(flags >= 0);
            flags & libc::O_NONBLOCK != 0
        }

        /// A port on two pipes, and the test's ends of them: `raw_w` feeds
        /// the port, `raw_r` reads what it sends. Both raw ends are
        /// non-blocking, so a test that goes wrong fails instead of
        /// hanging.
        fn port_and_pipes(framing: Framing, options: StreamOptions) -> (StreamPort, File, File) {
            let (port_rx, raw_w) = pipe();
            let (raw_r, port_tx) = pipe();
            assert!(!is_nonblocking(&port_rx) && !is_nonblocking(&port_tx));
            let port =
                StreamPort::from_pipes_with_options(port_rx, port_tx, framing, "pipes", options)
                    .unwrap();
            set_nonblocking(&raw_w).unwrap();
            set_nonblocking(&raw_r).unwrap();
            (port, File::from(raw_w), File::from(raw_r))
        }

        /// Two ports joined by two pipes, as `dpipe` joins two `vde_plug`s.
        fn pipe_port_pair(framing: Framing, options: StreamOptions) -> (StreamPort, StreamPort) {
            let (a_rx, b_tx) = pipe();
            let (b_rx, a_tx) = pipe();
            (
                StreamPort::from_pipes_with_options(a_rx, a_tx, framing, "a", options).unwrap(),
                StreamPort::from_pipes_with_options(b_rx, b_tx, framing, "b", options).unwrap(),
            )
        }

        /// Writes the next piece of `bytes[*pos..]` to `w` without blocking,
        /// at most `chunk` bytes, and advances `pos`.
        fn pump(w: &mut File, bytes: &[u8], pos: &mut usize, chunk: usize) {
            if *pos >= bytes.len() {
                return;
            }
            let end = bytes.len().min(*pos + chunk);
            match w.write(&bytes[*pos..end]) {
                Ok(n) => *pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("writing to the port's pipe: {e}"),
            }
        }

        /// Reads exactly `len` bytes from the non-blocking `r`, calling
        /// `between` (to flush the sender) while it waits. Bounded by
        /// [`WAIT`].
        fn read_bytes(r: &mut File, len: usize, mut between: impl FnMut()) -> Vec<u8> {
            let deadline = Instant::now() + WAIT;
            let mut got = vec![0u8; len];
            let mut have = 0;
            while have < len {
                assert!(
                    Instant::now() < deadline,
                    "only {have} of {len} bytes within {WAIT:?}"
                );
                between();
                match r.read(&mut got[have..]) {
                    Ok(0) => panic!("EOF after {have} of {len} bytes"),
                    Ok(n) => have += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(e) => panic!("reading the port's output: {e}"),
                }
            }
            got
        }

        const SIZES: [usize; 7] = [1, 14, 60, 1514, 9000, 65535, 64];

        fn sized_frames() -> Vec<Vec<u8>> {
            SIZES
                .iter()
                .enumerate()
                .map(|(i, &l)| frame(i, l))
                .collect()
        }

        /// What goes on the wire for `frames`, byte for byte.
        fn wire(framing: Framing, frames: &[Vec<u8>]) -> Vec<u8> {
            let mut out = Vec::new();
            for f in frames {
                framing.encode_into(f, &mut out).unwrap();
            }
            out
        }

        #[test]
        fn from_pipes_sets_nonblocking_and_reads_nothing_without_data() {
            let (mut port, _raw_w, _raw_r) = port_and_pipes(Framing::Vde, StreamOptions::default());
            match port.socket() {
                StreamSocket::Pipe { rx, tx } => {
                    assert!(is_nonblocking(rx) && is_nonblocking(tx));
                }
                other => panic!("from_pipes made {other:?}"),
            }
            let mut batch = FrameBatch::new();
            assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
            assert!(batch.is_empty());
            assert!(port.check_alive());
            assert_eq!(port.kind(), "stream");
            assert_eq!(port.description(), "pipes");
            assert_eq!(port.framing(), Framing::Vde);
        }

        /// Frames out of the port arrive on the pipe exactly as the framing
        /// says, even frames bigger than the pipe; bytes written into the
        /// pipe in odd pieces (single bytes, split prefixes, many frames in
        /// one write) come out as the same frames.
        #[test]
        fn pipes_carry_frames_byte_exact_with_partial_reads_in_both_framings() {
            for framing in [Framing::Qemu, Framing::Vde] {
                let (mut port, mut raw_w, mut raw_r) =
                    port_and_pipes(framing, StreamOptions::default());
                let frames = sized_frames();
                let want = wire(framing, &frames);

                // Port -> pipe. 65535 + prefix does not fit a 64 KiB pipe:
                // part of it waits in the ring for on_writable.
                let mut out = FrameBatch::new();
                for f in &frames {
                    out.push(f);
                }
                let which: Vec<u16> = (0..frames.len() as u16).collect();
                let report = port.send_batch(&out, &which);
                assert_eq!(report.sent, frames.len(), "{framing}");
                assert_eq!(report.dropped_full + report.dropped_error, 0);
                let got = read_bytes(&mut raw_r, want.len(), || port.on_writable().unwrap());
                assert!(got == want, "{framing}: bytes on the pipe differ");
                assert_eq!(port.pending_output(), 0);

                // Pipe -> port, in pieces of varying size.
                let pieces = [1usize, 1, 1, 2, 3, 1000, 5, 65536, 7, 4096];
                let mut pos = 0;
                let mut k = 0;
                let (got, status) = recv_frames(&mut port, frames.len(), || {
                    pump(&mut raw_w, &want, &mut pos, pieces[k % pieces.len()]);
                    k += 1;
                });
                assert_ne!(status, RecvStatus::Closed, "{framing}");
                assert_eq!(got, frames, "{framing}: frames from the pipe");
                assert_eq!(pos, want.len());
            }
        }

        /// Two ports on a pair of pipes, as `dpipe` joins two plugs.
        #[test]
        fn frames_round_trip_between_pipe_ports() {
            for framing in [Framing::Qemu, Framing::Vde] {
                let (mut a, mut b) = pipe_port_pair(framing, StreamOptions::default());
                let frames = sized_frames();
                let mut out = FrameBatch::new();
                for f in &frames {
                    out.push(f);
                }
                let which: Vec<u16> = (0..frames.len() as u16).collect();
                assert_eq!(a.send_batch(&out, &which).sent, frames.len());
                let (got, _) = recv_frames(&mut b, frames.len(), || a.on_writable().unwrap());
                assert_eq!(got, frames, "{framing}: a -> b");
                assert_eq!(b.send_batch(&out, &[5, 3, 0]).sent, 3);
                let (got, _) = recv_frames(&mut a, 3, || b.on_writable().unwrap());
                assert_eq!(
                    got,
                    vec![frames[5].clone(), frames[3].clone(), frames[0].clone()],
                    "{framing}: b -> a"
                );
            }
        }

        /// A reader that does not read: the pipe fills, then the ring, then
        /// whole frames are dropped and counted. Once it reads, every
        /// accepted frame arrives whole and in order, and the stream is
        /// still in step.
        #[test]
        fn slow_pipe_reader_drops_whole_frames_and_stays_in_sync() {
            for framing in [Framing::Qemu, Framing::Vde] {
                let (a, b) = pipe_port_pair(framing, SLOW_READER_OPTIONS);
                let sizes = [100, 1514, 9000, 60001, 77, 33333, 65535];
                assert_slow_reader_keeps_whole_frames(a, b, framing, &sizes);
            }
        }

        /// EOF on the read side delivers what was whole, then closes; a
        /// vanished reader of the write side closes the port, found by
        /// check_alive before any write, or by the write (`EPIPE`, no
        /// SIGPIPE).
        #[test]
        fn eof_and_broken_pipe_close_the_port() {
            let (mut port, mut raw_w, _raw_r) =
                port_and_pipes(Framing::Vde, StreamOptions::default());
            let mut bytes = wire(Framing::Vde, &[frame(1, 300), frame(2, 300)]);
            bytes.truncate(bytes.len() - 10);
            raw_w.write_all(&bytes).unwrap();
            drop(raw_w);
            let (got, status) = recv_frames(&mut port, 3, || {});
            assert_eq!(got, vec![frame(1, 300)]);
            assert_eq!(status, RecvStatus::Closed);
            assert_eq!(port.close_reason(), Some(&CloseReason::Eof));
            assert!(!port.check_alive());
            let mut out = FrameBatch::new();
            out.push(&frame(3, 60));
            assert_eq!(port.send_batch(&out, &[0]).dropped_error, 1);

            // Reader gone, noticed without writing.
            let (mut port, _raw_w, raw_r) = port_and_pipes(Framing::Qemu, StreamOptions::default());
            assert!(port.check_alive());
            drop(raw_r);
            assert!(!port.check_alive());
            assert_eq!(
                port.close_reason(),
                Some(&CloseReason::WriteFailed(io::ErrorKind::BrokenPipe))
            );
            let mut batch = FrameBatch::new();
            assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Closed);

            // Reader gone, noticed by the write.
            let (mut port, _raw_w, raw_r) = port_and_pipes(Framing::Qemu, StreamOptions::default());
            drop(raw_r);
            let report = port.send_batch(&out, &[0, 0]);
            assert_eq!(report.sent, 0);
            assert_eq!(report.dropped_error, 2);
            assert_eq!(
                port.close_reason(),
                Some(&CloseReason::WriteFailed(io::ErrorKind::BrokenPipe))
            );
        }

        /// Both descriptors register under the port's one token: data on
        /// the read side wakes it readable, room on the write side wakes it
        /// writable.
        #[test]
        fn both_pipes_register_under_one_token() {
            use mio::{Events, Poll};
            let (mut port, mut raw_w, mut raw_r) =
                port_and_pipes(Framing::Vde, StreamOptions::default());
            let mut poll = Poll::new().unwrap();
            poll.registry()
                .register(&mut port, Token(7), Interest::READABLE | Interest::WRITABLE)
                .unwrap();
            let mut events = Events::with_capacity(8);
            let mut wait_for = |what: &str, pred: &dyn Fn(&mio::event::Event) -> bool| {
                let deadline = Instant::now() + WAIT;
                loop {
                    poll.poll(&mut events, Some(Duration::from_millis(100)))
                        .unwrap();
                    if events.iter().any(|e| {
                        assert_eq!(e.token(), Token(7));
                        pred(e)
                    }) {
                        return;
                    }
                    assert!(Instant::now() < deadline, "no {what} event");
                }
            };

            raw_w
                .write_all(&wire(Framing::Vde, &[frame(1, 64)]))
                .unwrap();
            wait_for("readable", &|e| e.is_readable());
            let mut batch = FrameBatch::new();
            assert_eq!(port.recv_batch(&mut batch).unwrap(), RecvStatus::Drained);
            assert_eq!(batch.frame(0), &frame(1, 64)[..]);

            // Fill the pipe so output waits in the ring; draining the pipe
            // makes the write side writable.
            let mut out = FrameBatch::new();
            out.push(&frame(2, 65535));
            out.push(&frame(3, 65535));
            assert_eq!(port.send_batch(&out, &[0, 1]).sent, 2);
            assert!(port.pending_output() > 0);
            let mut sink = vec![0u8; 2 * (2 + 65535)];
            let mut have = 0;
            let deadline = Instant::now() + WAIT;
            while port.pending_output() > 0 || have < sink.len() {
                assert!(Instant::now() < deadline, "the ring never drained");
                match raw_r.read(&mut sink[have..]) {
                    Ok(n) => have += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
                if port.pending_output() > 0 {
                    wait_for("writable", &|e| e.is_writable());
                    port.on_writable().unwrap();
                }
            }
            assert!(sink == wire(Framing::Vde, &[frame(2, 65535), frame(3, 65535)]));
            poll.registry().deregister(&mut port).unwrap();
        }

        /// An Ethernet frame from `src` to `dst`, payload from `seed`.
        fn eth(dst: [u8; 6], src: [u8; 6], seed: u8, len: usize) -> Vec<u8> {
            let mut f = Vec::with_capacity(len);
            f.extend_from_slice(&dst);
            f.extend_from_slice(&src);
            f.extend_from_slice(&[0x88, 0xb5]);
            f.extend((0..len - 14).map(|i| seed.wrapping_mul(29).wrapping_add(i as u8)));
            f
        }

        /// Kills and reaps a child on drop.
        struct Reap(Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }

        /// Debian's real `vde_plug DIR` on our pipes, plugged into a real
        /// `vde_switch` beside one of our own VDE clients: frames cross
        /// both ways byte-exact, and when `vde_plug` exits our port sees
        /// the EOF.
        #[test]
        fn real_vde_plug_on_pipes_through_a_real_vde_switch() {
            for bin in ["/usr/bin/vde_plug", "/usr/bin/vde_switch"] {
                if !Path::new(bin).exists() {
                    eprintln!(
                        "skipping real_vde_plug_on_pipes_through_a_real_vde_switch: {bin} is not installed"
                    );
                    return;
                }
            }
            const BROADCAST: [u8; 6] = [0xff; 6];
            const MAC_PIPE: [u8; 6] = [0x02, 0, 0, 0, 0x0f, 0x01];
            const MAC_CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0x0f, 0x02];
            let tmp = tempdir();
            let dir = tmp.path().join("sw");
            // Without -d it reads its console on stdin and exits on EOF:
            // stdin stays piped and held until the test ends.
            let _switch = Reap(
                Command::new("/usr/bin/vde_switch")
                    .arg("-s")
                    .arg(&dir)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let deadline = Instant::now() + WAIT;
            let mut client = loop {
                match VdeClient::connect(&dir, None, "switchboard pipe test") {
                    Ok(port) => break port,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "vde_switch never came up: {e}");
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            };

            let mut plug = Reap(
                Command::new("/usr/bin/vde_plug")
                    .arg(&dir)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
            let tx: OwnedFd = plug.0.stdin.take().unwrap().into();
            let rx: OwnedFd = plug.0.stdout.take().unwrap().into();
            let mut port = StreamPort::from_pipes(rx, tx, Framing::Vde, "vde_plug").unwrap();

            // Pipe -> switch: a broadcast (vde_plug reads its stdin once
            // plugged in, so nothing is lost before) reaches our client.
            let hello = eth(BROADCAST, MAC_PIPE, 1, 100);
            let mut out = FrameBatch::new();
            out.push(&hello);
            assert_eq!(port.send_batch(&out, &[0]).sent, 1);
            let got = recv_any(&mut client, 1, || port.on_writable().unwrap());
            assert_eq!(got, vec![hello]);

            // Switch -> pipe: the reply to the learned MAC, then a burst of
            // sizes up to a full-size frame.
            let mut burst = FrameBatch::new();
            burst.push(&eth(MAC_PIPE, MAC_CLIENT, 2, 1514));
            for i in 0..20u8 {
                burst.push(&eth(MAC_PIPE, MAC_CLIENT, 10 + i, 60 + usize::from(i) * 70));
            }
            let which: Vec<u16> = (0..burst.len() as u16).collect();
            assert_eq!(client.send_batch(&burst, &which).sent, burst.len());
            let (got, status) = recv_frames(&mut port, burst.len(), || {});
            assert_ne!(status, RecvStatus::Closed);
            assert_eq!(got.len(), burst.len());
            for (i, f) in got.iter().enumerate() {
                assert_eq!(f.as_slice(), burst.frame(i), "frame {i} from the switch");
            }

            // And a burst the other way, in order.
            let mut burst = FrameBatch::new();
            for i in 0..20u8 {
                burst.push(&eth(
                    MAC_CLIENT,
                    MAC_PIPE,
                    40 + i,
                    1500 - usize::from(i) * 60,
                ));
            }
            assert_eq!(port.send_batch(&burst, &which[..20]).sent, 20);
            let got = recv_any(&mut client, 20, || port.on_writable().unwrap());
            for (i, f) in got.iter().enumerate() {
                assert_eq!(f.as_slice(), burst.frame(i), "frame {i} to the switch");
            }

            // vde_plug goes away: EOF on its stdout closes our port.
            let _ = plug.0.kill();
            let _ = plug.0.wait();
            let (_, status) = recv_frames(&mut port, usize::MAX, || {});
            assert_eq!(status, RecvStatus::Closed);
            assert!(!port.check_alive());
        }

        /// Receives `want` frames on any plug, bounded by [`WAIT`].
        fn recv_any(plug: &mut impl Plug, want: usize, mut between: impl FnMut()) -> Vec<Vec<u8>> {
            let deadline = Instant::now() + WAIT;
            let mut batch = FrameBatch::new();
            let mut got = Vec::new();
            while got.len() < want {
                assert!(
                    Instant::now() < deadline,
                    "only {} of {want} frames within {WAIT:?}",
                    got.len()
                );
                between();
                batch.clear();
                let status = plug.recv_batch(&mut batch).unwrap();
                assert_ne!(status, RecvStatus::Closed, "the plug went away");
                got.extend((0..batch.len()).map(|i| batch.frame(i).to_vec()));
                if got.len() < want {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            got
        }
    }
}
