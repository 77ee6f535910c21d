//! A connected VDE2 client: one switch port.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use mio::event::Source;
use mio::net::UnixStream;
use mio::{Interest, Registry, Token};

use super::request::{PortRequest, VdeRequest};
use crate::dgram::BatchedDgram;
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

/// How many reads of stray control bytes one receive call makes before
/// handing control back to the event loop.
const CONTROL_READS_PER_CALL: usize = 4;

/// A VDE2 client attached to the switch.
///
/// Frames travel over the connected datagram socket, one per datagram. The
/// control stream carries nothing after the handshake; it stays open for as
/// long as the client is plugged in, and its EOF is how the switch learns the
/// client left (datagram sockets have no such signal). Both descriptors are
/// registered under the daemon's one token for the port.
///
/// Dropping the port closes both sockets and removes the data socket file.
#[derive(Debug)]
pub struct VdePort {
    control: UnixStream,
    data: BatchedDgram,
    port_number: u16,
    requested: PortRequest,
    client_path: PathBuf,
    data_path: PathBuf,
    description: String,
    client_uid: Option<u32>,
}

impl VdePort {
    /// Assembles a port from a finished handshake; see
    /// [`PendingHandshake::complete`](super::PendingHandshake::complete).
    pub(crate) fn new(
        control: UnixStream,
        data: BatchedDgram,
        port_number: u16,
        request: &VdeRequest,
        data_path: PathBuf,
        client_uid: Option<u32>,
    ) -> VdePort {
        VdePort {
            control,
            data,
            port_number,
            requested: request.port,
            client_path: request.client_path.clone(),
            data_path,
            description: request.description.clone(),
            client_uid,
        }
    }

    /// The switch port number granted to the client.
    pub fn port_number(&self) -> u16 {
        self.port_number
    }

    /// The port the client asked for, for the port table.
    pub fn requested(&self) -> PortRequest {
        self.requested
    }

    /// Where the client's datagram socket was bound (clients usually unlink
    /// it right after the handshake; shown for diagnostics).
    pub fn client_path(&self) -> &Path {
        &self.client_path
    }

    /// Our data socket, inside the switch directory.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// The uid of the client process (`SO_PEERCRED`), for access control.
    pub fn client_uid(&self) -> Option<u32> {
        self.client_uid
    }

    /// The control stream, for writing the handshake reply.
    pub(crate) fn control(&self) -> &UnixStream {
        &self.control
    }

    /// Reads and discards anything on the control stream. Reports whether
    /// the client hung up, or whether it is still talking and we should come
    /// back.
    fn poll_control(&mut self) -> Option<RecvStatus> {
        let mut scratch = [0u8; 64];
        for _ in 0..CONTROL_READS_PER_CALL {
            match self.control.read(&mut scratch) {
                Ok(0) => return Some(RecvStatus::Closed),
                // VDE2 clients send nothing after the request; ignore it.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // A reset or any other failure: the client is gone.
                Err(_) => return Some(RecvStatus::Closed),
            }
        }
        Some(RecvStatus::More)
    }
}

impl Plug for VdePort {
    /// Receives data frames. The control stream is read only when a wake-up
    /// brought no data, since that is the only event its EOF can cause on
    /// its own: busy ports pay no extra syscall per batch. An EOF that
    /// arrives together with data is caught by [`Plug::check_alive`], which
    /// the daemon calls periodically.
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        if batch.is_full() {
            return Ok(RecvStatus::More);
        }
        let received = match self.data.recv_into(batch) {
            Ok(n) => n,
            // A stale error left by the peer's socket going away; the
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

    fn check_alive(&mut self) -> bool {
        !matches!(self.poll_control(), Some(RecvStatus::Closed))
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        self.data.send_from(batch, which)
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "vde"
    }
}

impl Source for VdePort {
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

impl Drop for VdePort {
    fn drop(&mut self) {
        // Best effort, like vde_switch: the file is useless once closed.
        let _ = std::fs::remove_file(&self.data_path);
    }
}
