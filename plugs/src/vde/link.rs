//! What every VDE2 attachment is after the handshake, on either side: a
//! control stream whose end means "unplugged", and a connected datagram
//! socket carrying one frame per datagram.

use std::io::{self, Read};

use mio::event::Source;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use crate::dgram::BatchedDgram;
use crate::{FrameBatch, RecvStatus, TxReport};

/// How many reads of stray control bytes one receive call makes before
/// handing control back to the event loop.
const CONTROL_READS_PER_CALL: usize = 4;

/// The two sockets of a plugged-in VDE2 port, switch side ([`VdePort`]) or
/// client side ([`VdeClientPort`]), registered under one token.
///
/// The control stream is always watched for reading (its EOF is the
/// unplug). The data socket is watched for what the event loop asked,
/// except while the link is busy (see
/// [`refresh_interest`](Self::refresh_interest)): a watch is not free for
/// the peer, since while the socket is registered every datagram the peer
/// sends us runs our epoll callback inside the peer's `send` (about 15 % of
/// a 64-byte `send` on the 2-vCPU test machine). While the last receive
/// filled the batch, the event loop comes back on its own, so the socket is
/// not watched for reading then.
///
/// [`VdePort`]: super::VdePort
/// [`VdeClientPort`]: super::VdeClientPort
#[derive(Debug)]
pub(crate) struct VdeLink {
    pub(crate) control: UnixStream,
    pub(crate) data: BatchedDgram,
    /// What the data socket is registered for now; `None` when it is not
    /// registered (before `register`, or while busy with no backlog).
    watching: Option<Interest>,
    /// What the event loop registered the link for.
    asked: Interest,
    /// The last receive filled the batch, so the event loop will call again
    /// without waiting for readiness.
    busy: bool,
}

impl VdeLink {
    /// Joins the two sockets of a finished handshake. The data socket
    /// keeps frames a slow peer refuses (see [`BatchedDgram::with_backlog`]).
    pub(crate) fn new(control: UnixStream, data: BatchedDgram) -> VdeLink {
        VdeLink {
            control,
            data: data.with_backlog(),
            watching: None,
            asked: Interest::READABLE,
            busy: false,
        }
    }

    /// What the data socket should be watched for now: what the event loop
    /// asked, but while busy only for room, and that only while the backlog
    /// has frames to send.
    ///
    /// Watching for room only while a backlog waits, when not busy, would
    /// also spare the event loop a wake-up per frame the peer reads, and
    /// that did shorten ping-pong round trips; but it cost 5-10 % of the
    /// 1500-byte frame rate in `vdeblast` on the 2-vCPU machine, so it is
    /// not done.
    fn wanted(&self) -> Option<Interest> {
        if !self.busy {
            return Some(self.asked);
        }
        if self.data.backlog_len() == 0 {
            return None;
        }
        self.asked.remove(Interest::READABLE)
    }

    /// Registers, re-registers or deregisters the data socket so it is
    /// watched for [`wanted`](Self::wanted); no system call when that has
    /// not changed. On error the recorded state is left as it was, so the
    /// next call tries again.
    pub(crate) fn refresh_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let want = self.wanted();
        if want == self.watching {
            return Ok(());
        }
        match (self.watching, want) {
            (Some(_), None) => self.data.deregister(registry)?,
            (None, Some(i)) => self.data.register(registry, token, i)?,
            (Some(_), Some(i)) => self.data.reregister(registry, token, i)?,
            (None, None) => {}
        }
        self.watching = want;
        Ok(())
    }

    /// Reads and discards anything on the control stream (neither side
    /// sends anything after the handshake). Reports whether the other side
    /// hung up, or whether it is still talking and we should come back.
    fn poll_control(&mut self) -> Option<RecvStatus> {
        let mut scratch = [0u8; 64];
        for _ in 0..CONTROL_READS_PER_CALL {
            match self.control.read(&mut scratch) {
                Ok(0) => return Some(RecvStatus::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset or any other failure: the other side is gone.
                Err(_) => return Some(RecvStatus::Closed),
            }
        }
        Some(RecvStatus::More)
    }

    /// Receives data frames. The control stream is read only when a wake-up
    /// brought no data, since that is the only event its EOF can cause on
    /// its own: busy ports pay no extra syscall per batch. An EOF that
    /// arrives together with data is caught by [`check_alive`](Self::check_alive),
    /// which the daemon calls periodically.
    pub(crate) fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        if batch.is_full() {
            return Ok(RecvStatus::More);
        }
        self.busy = false;
        let received = match self.data.recv_into(batch) {
            Ok(n) => n,
            // A stale error left by the other socket going away; the
            // control stream is what decides the port's fate.
            Err(e)
                if e.kind() == io::ErrorKind::ConnectionReset
                    || e.kind() == io::ErrorKind::ConnectionRefused =>
            {
                0
            }
            Err(e) => return Err(e),
        };
        if batch.is_full() {
            self.busy = true;
            return Ok(RecvStatus::More);
        }
        if received > 0 {
            // recvmmsg stopped short: the queue was empty, and the next
            // datagram will raise a new edge.
            return Ok(RecvStatus::Drained);
        }
        Ok(self.poll_control().unwrap_or(RecvStatus::Drained))
    }

    /// Sends frames on the data socket.
    pub(crate) fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        self.data.send_from(batch, which)
    }

    /// Sends what the peer's full queue held back (see
    /// [`BatchedDgram::with_backlog`]).
    pub(crate) fn on_writable(&mut self) {
        self.data.flush_backlog();
    }

    /// False once the control stream has ended.
    pub(crate) fn check_alive(&mut self) -> bool {
        !matches!(self.poll_control(), Some(RecvStatus::Closed))
    }
}

impl Source for VdeLink {
    /// Registers both sockets under `token`: the control stream for reading
    /// (its EOF), the data socket with `interests` (except while busy, see
    /// [`refresh_interest`](VdeLink::refresh_interest)).
    fn register(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.control.register(registry, token, Interest::READABLE)?;
        if let Err(e) = self.data.register(registry, token, interests) {
            let _ = self.control.deregister(registry);
            return Err(e);
        }
        self.watching = Some(interests);
        self.asked = interests;
        Ok(())
    }

    fn reregister(
        &mut self,
        registry: &Registry,
        token: Token,
        interests: Interest,
    ) -> io::Result<()> {
        self.control
            .reregister(registry, token, Interest::READABLE)?;
        match self.watching {
            Some(_) => self.data.reregister(registry, token, interests)?,
            None => self.data.register(registry, token, interests)?,
        }
        self.watching = Some(interests);
        self.asked = interests;
        Ok(())
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        let control = self.control.deregister(registry);
        let data = match self.watching.take() {
            Some(_) => self.data.deregister(registry),
            None => Ok(()),
        };
        control.and(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{ALL_FRAMES, BATCH_CAPACITY};
    use mio::net::UnixDatagram;
    use mio::{Events, Poll};
    use std::time::{Duration, Instant};

    const T: Token = Token(7);

    /// A frame carrying `seq`, so order and loss show.
    fn frame(seq: u32, len: usize) -> Vec<u8> {
        let mut f = vec![0x5a; len];
        f[..4].copy_from_slice(&seq.to_be_bytes());
        f
    }

    fn seq(f: &[u8]) -> u32 {
        u32::from_be_bytes(f[..4].try_into().unwrap())
    }

    /// The events for `T` within `wait`, as (readable, writable); returns
    /// as soon as one arrived (or, with `want_readable`, a readable one).
    fn events_for(poll: &mut Poll, wait: Duration, want_readable: bool) -> (bool, bool) {
        let mut events = Events::with_capacity(8);
        let (mut r, mut w) = (false, false);
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            poll.poll(&mut events, Some(left)).unwrap();
            for e in events.iter().filter(|e| e.token() == T) {
                r |= e.is_readable();
                w |= e.is_writable();
            }
            let got = if want_readable { r } else { r || w };
            if got || left.is_zero() {
                return (r, w);
            }
        }
    }

    /// A link whose data socket is one end of a datagram pair (the other
    /// end is the peer), registered as the daemon registers ports.
    fn registered() -> (VdeLink, UnixDatagram, UnixStream, Poll) {
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let (control, far) = UnixStream::pair().unwrap();
        let mut l = VdeLink::new(control, BatchedDgram::new(ours));
        let mut poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut l, T, Interest::READABLE | Interest::WRITABLE)
            .unwrap();
        l.refresh_interest(poll.registry(), T).unwrap();
        // Whatever the registration itself reported.
        events_for(&mut poll, Duration::from_millis(20), false);
        (l, theirs, far, poll)
    }

    /// Receives once and returns the sequence numbers.
    fn recv(l: &mut VdeLink, want: RecvStatus) -> Vec<u32> {
        let mut batch = FrameBatch::new();
        assert_eq!(l.recv_batch(&mut batch).unwrap(), want);
        (0..batch.len()).map(|i| seq(batch.frame(i))).collect()
    }

    /// While the event loop keeps coming back on its own (the last receive
    /// filled the batch), the peer's datagrams raise no events; once a
    /// receive drains the socket, they do again, and nothing is lost.
    #[test]
    fn a_busy_link_is_not_watched_until_a_receive_drains_it() {
        let (mut l, theirs, _far, mut poll) = registered();
        let burst = BATCH_CAPACITY as u32 + 3;
        for i in 0..burst {
            theirs.send(&frame(i, 64)).unwrap();
        }
        assert!(events_for(&mut poll, Duration::from_secs(2), true).0);
        let mut got = recv(&mut l, RecvStatus::More);
        l.refresh_interest(poll.registry(), T).unwrap();

        // Busy: a datagram now wakes nobody.
        theirs.send(&frame(burst, 64)).unwrap();
        assert_eq!(
            events_for(&mut poll, Duration::from_millis(100), false),
            (false, false),
            "a busy link's data socket must not be watched"
        );

        got.extend(recv(&mut l, RecvStatus::Drained));
        l.refresh_interest(poll.registry(), T).unwrap();
        assert_eq!(got, (0..=burst).collect::<Vec<_>>());

        // Drained: watched again.
        events_for(&mut poll, Duration::from_millis(20), false);
        theirs.send(&frame(99, 64)).unwrap();
        assert!(
            events_for(&mut poll, Duration::from_secs(2), true).0,
            "a drained link must be watched for reading again"
        );
        assert_eq!(recv(&mut l, RecvStatus::Drained), vec![99]);
    }

    /// A busy link whose backlog holds frames is watched for room, and only
    /// for room: the peer's reads wake the loop, which flushes the backlog
    /// in order, while the peer's own datagrams wait for the loop to come
    /// back.
    #[test]
    fn a_busy_link_with_a_backlog_is_watched_for_room_only() {
        let (mut l, theirs, _far, mut poll) = registered();
        let mut sent = 0u32;
        // Fill the peer's queue until the backlog takes frames (bounded).
        for _ in 0..100 {
            let mut batch = FrameBatch::new();
            for _ in 0..BATCH_CAPACITY {
                batch.push(&frame(sent, 1400));
                sent += 1;
            }
            let r = l.send_batch(&batch, &ALL_FRAMES);
            assert_eq!(r.sent, BATCH_CAPACITY, "the backlog must absorb, not drop");
            if l.data.backlog_len() > 0 {
                break;
            }
        }
        assert!(l.data.backlog_len() > 0, "the peer never refused a frame");

        // The peer sends a batch and a bit: the link is busy.
        let burst = BATCH_CAPACITY as u32 + 1;
        for i in 0..burst {
            theirs.send(&frame(10_000 + i, 64)).unwrap();
        }
        let mut input = recv(&mut l, RecvStatus::More);
        l.refresh_interest(poll.registry(), T).unwrap();
        events_for(&mut poll, Duration::from_millis(20), false);
        theirs.send(&frame(10_000 + burst, 64)).unwrap();
        assert_eq!(
            events_for(&mut poll, Duration::from_millis(100), false),
            (false, false),
            "a busy link must not be watched for reading"
        );

        // The peer drains; each time there is room the loop hears of it.
        let mut got = Vec::new();
        let mut buf = vec![0u8; 2048];
        let mut wakeups = 0;
        while got.len() < sent as usize {
            while let Ok(n) = theirs.recv(&mut buf) {
                got.push(seq(&buf[..n]));
            }
            if l.data.backlog_len() == 0 {
                continue;
            }
            let (readable, writable) = events_for(&mut poll, Duration::from_secs(2), false);
            assert!(
                writable,
                "room in the peer's queue must wake a link with a backlog"
            );
            assert!(!readable, "a busy link must not be watched for reading");
            wakeups += 1;
            l.on_writable();
            l.refresh_interest(poll.registry(), T).unwrap();
        }
        assert!(wakeups > 0);
        assert_eq!(got, (0..sent).collect::<Vec<_>>());

        // The loop comes back for the input: nothing was lost meanwhile.
        input.extend(recv(&mut l, RecvStatus::Drained));
        assert_eq!(input, (10_000..=10_000 + burst).collect::<Vec<_>>());
    }

    /// Deregistering works in every state, including while the data socket
    /// is not registered at all, and the link can be registered again.
    #[test]
    fn deregister_in_any_state() {
        let (mut l, theirs, _far, poll) = registered();
        for i in 0..BATCH_CAPACITY as u32 {
            theirs.send(&frame(i, 64)).unwrap();
        }
        recv(&mut l, RecvStatus::More);
        l.refresh_interest(poll.registry(), T).unwrap();
        poll.registry().deregister(&mut l).unwrap();
        poll.registry()
            .register(&mut l, T, Interest::READABLE)
            .unwrap();
        poll.registry().deregister(&mut l).unwrap();
    }
}
