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
/// [`VdePort`]: super::VdePort
/// [`VdeClientPort`]: super::VdeClientPort
#[derive(Debug)]
pub(crate) struct VdeLink {
    pub(crate) control: UnixStream,
    pub(crate) data: BatchedDgram,
}

impl VdeLink {
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
    /// Registers both sockets under `token`: the data socket with
    /// `interests`, the control stream for reading (its EOF).
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
        self.data.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        let control = self.control.deregister(registry);
        let data = self.data.deregister(registry);
        control.and(data)
    }
}
