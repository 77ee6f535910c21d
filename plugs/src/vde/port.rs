//! A connected VDE2 client: one switch port.

use std::io;
use std::path::{Path, PathBuf};

use mio::net::UnixStream;

use super::link::VdeLink;
use super::request::{PortRequest, VdeRequest};
use crate::dgram::BatchedDgram;
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

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
    link: VdeLink,
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
            link: VdeLink::new(control, data),
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
        &self.link.control
    }
}

impl Plug for VdePort {
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        self.link.recv_batch(batch)
    }

    fn check_alive(&mut self) -> bool {
        self.link.check_alive()
    }

    fn on_writable(&mut self) -> io::Result<()> {
        self.link.on_writable();
        Ok(())
    }

    fn refresh_interest(&mut self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        self.link.refresh_interest(registry, token)
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        self.link.send_batch(batch, which)
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "vde"
    }
}

crate::delegate_source!(VdePort, link);

impl Drop for VdePort {
    fn drop(&mut self) {
        // Best effort, like vde_switch: the file is useless once closed.
        let _ = std::fs::remove_file(&self.data_path);
    }
}
