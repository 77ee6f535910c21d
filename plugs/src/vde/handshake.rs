//! One client's handshake, from accepted connection to port.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use mio::net::{UnixDatagram, UnixStream};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use nix::sys::stat::SFlag;
use nix::unistd::AccessFlags;

use super::dir::{SwitchDir, data_socket_name};
use super::port::VdePort;
use super::request::{self, MAX_REQUEST_LEN, RequestError, VdeRequest};
use crate::dgram::BatchedDgram;

/// Socket buffer size asked for on data sockets, both directions. Bursts of
/// full-size frames from a fast guest should queue, not drop; the kernel caps
/// the request at `net.core.{r,w}mem_max`.
const DATA_SOCKET_BUFFER: usize = 1 << 20;

/// Where a handshake stands after reading what the client has sent so far.
#[derive(Debug)]
pub enum HandshakeProgress {
    /// The request is incomplete; wait for the next readiness event.
    NeedMore,
    /// The request is complete and valid: pick a port and call
    /// [`PendingHandshake::complete`].
    Ready(VdeRequest),
    /// The client sent something unusable or went away; drop the handshake
    /// (which closes the connection, as `vde_switch` does).
    Failed(HandshakeError),
}

/// Why a client could not be given a port.
#[derive(Debug)]
pub enum HandshakeError {
    /// The request bytes were malformed.
    Request(RequestError),
    /// The client closed the connection before a complete request.
    Closed,
    /// Reading the request failed.
    Read(io::Error),
    /// The client's path is not a socket (a symlink, a file, ...); we only
    /// connect to what the client itself bound.
    ClientNotSocket(PathBuf),
    /// The client's socket belongs to someone other than the connected user,
    /// who must not be able to point the switch at other people's sockets.
    ClientNotOwned {
        /// The client's socket.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The uid on the other end of the control connection.
        peer: u32,
    },
    /// Checking or connecting to the client's socket failed.
    Client {
        /// What we were doing.
        action: &'static str,
        /// The client's socket.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Creating or binding our data socket failed.
    DataSocket {
        /// What we were doing.
        action: &'static str,
        /// The error.
        source: io::Error,
    },
    /// Our data socket's path cannot be encoded in the reply.
    Reply(RequestError),
    /// Writing the 110-byte reply failed or was cut short.
    WriteReply(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Request(e) => write!(f, "bad request: {e}"),
            HandshakeError::Closed => write!(f, "client closed the connection mid-request"),
            HandshakeError::Read(e) => write!(f, "reading the request: {e}"),
            HandshakeError::ClientNotSocket(p) => {
                write!(f, "client path {} is not a socket", p.display())
            }
            HandshakeError::ClientNotOwned { path, owner, peer } => write!(
                f,
                "client socket {} belongs to uid {owner}, but the client is uid {peer}",
                path.display()
            ),
            HandshakeError::Client {
                action,
                path,
                source,
            } => write!(
                f,
                "cannot {action} client socket {}: {source}",
                path.display()
            ),
            HandshakeError::DataSocket { action, source } => {
                write!(f, "cannot {action} the data socket: {source}")
            }
            HandshakeError::Reply(e) => write!(f, "cannot encode the reply: {e}"),
            HandshakeError::WriteReply(e) => write!(f, "writing the reply: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Request(e) | HandshakeError::Reply(e) => Some(e),
            HandshakeError::Read(e) | HandshakeError::WriteReply(e) => Some(e),
            HandshakeError::Client { source, .. } | HandshakeError::DataSocket { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

impl From<RequestError> for HandshakeError {
    fn from(e: RequestError) -> Self {
        HandshakeError::Request(e)
    }
}

/// An accepted control connection whose request is still being read.
///
/// The daemon registers it (readable) under its own token, calls
/// [`read`](Self::read) on each event, and drops it if
/// [`started`](Self::started) is too long ago. Reading accumulates at most
/// [`MAX_REQUEST_LEN`] bytes in a fixed buffer.
#[derive(Debug)]
pub struct PendingHandshake {
    stream: UnixStream,
    buf: [u8; MAX_REQUEST_LEN],
    len: usize,
    started: Instant,
    peer_uid: Option<u32>,
}

impl PendingHandshake {
    /// Wraps a freshly accepted connection and notes who is on the other end.
    pub(crate) fn new(stream: UnixStream) -> Self {
        let peer_uid = nix::sys::socket::getsockopt(&stream, sockopt::PeerCredentials)
            .ok()
            .map(|cred| cred.uid());
        PendingHandshake {
            stream,
            buf: [0; MAX_REQUEST_LEN],
            len: 0,
            started: Instant::now(),
            peer_uid,
        }
    }

    /// When the connection was accepted, so the daemon can expire clients
    /// that never finish their request.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The uid of the connecting process, from `SO_PEERCRED`.
    pub fn peer_uid(&self) -> Option<u32> {
        self.peer_uid
    }

    /// Reads what the client has sent and says whether the request is
    /// complete.
    ///
    /// A request is complete when its fixed part (122 bytes for v3) has
    /// arrived and the socket has nothing more for now, or when
    /// [`MAX_REQUEST_LEN`] bytes have arrived (then it is too long and
    /// fails). Clients write the request in one `send`, so the description
    /// comes with the fixed part. Safe to call again after `Ready`: the same
    /// request is returned.
    pub fn read(&mut self) -> HandshakeProgress {
        while self.len < MAX_REQUEST_LEN {
            match self.stream.read(&mut self.buf[self.len..]) {
                Ok(0) => return HandshakeProgress::Failed(HandshakeError::Closed),
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return HandshakeProgress::Failed(HandshakeError::Read(e)),
            }
        }
        let received = &self.buf[..self.len];
        match request::fixed_len(received) {
            Err(e) => HandshakeProgress::Failed(e.into()),
            Ok(Some(need)) if received.len() >= need => match VdeRequest::parse(received) {
                Ok(request) => HandshakeProgress::Ready(request),
                Err(e) => HandshakeProgress::Failed(e.into()),
            },
            Ok(_) => HandshakeProgress::NeedMore,
        }
    }

    /// Creates the client's port: connects a new datagram socket to the
    /// client's socket, binds it in `dir` as `NNN.F` (port number, descriptor
    /// number), and writes its address back as the reply.
    ///
    /// `request` is what [`read`](Self::read) returned and `port_number` the
    /// port the daemon granted. Deregister this handshake from the poll
    /// registry first: the returned port registers the same control
    /// descriptor again. On error the connection is closed (the client sees
    /// EOF, as with `vde_switch`) and anything created is removed.
    ///
    /// When the switch runs as root, the data socket is handed to the owner
    /// of the client's socket with the group bits of the mode cleared, as
    /// `vde_switch` does.
    pub fn complete(
        self,
        dir: &SwitchDir,
        request: &VdeRequest,
        port_number: u16,
    ) -> Result<VdePort, HandshakeError> {
        let client_owner = check_client_socket(&request.client_path, self.peer_uid)?;
        let data = new_data_socket()?;
        connect_to_client(&data, &request.client_path)?;

        let name = data_socket_name(port_number, data.as_raw_fd());
        let (mode, owner) = if nix::unistd::geteuid().is_root() {
            (dir.socket_mode() & 0o700, Some(client_owner))
        } else {
            (dir.socket_mode(), None)
        };
        dir.bind_socket(&name, mode, owner, |path| {
            let addr = UnixAddr::new(path)?;
            nix::sys::socket::bind(data.as_raw_fd(), &addr)?;
            Ok(())
        })
        .map_err(|source| HandshakeError::DataSocket {
            action: "bind",
            source,
        })?;
        let data_path = dir.path().join(&name);

        let reply = request::encode_reply(&data_path);
        let data = BatchedDgram::new(UnixDatagram::from_std(
            std::os::unix::net::UnixDatagram::from(data),
        ));
        // From here on, dropping `port` removes the data socket file.
        let port = VdePort::new(
            self.stream,
            data,
            port_number,
            request,
            data_path,
            self.peer_uid,
        );
        let reply = reply.map_err(HandshakeError::Reply)?;
        match port.control().write(&reply) {
            Ok(n) if n == reply.len() => Ok(port),
            Ok(n) => Err(HandshakeError::WriteReply(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("wrote {n} of {} bytes", reply.len()),
            ))),
            Err(e) => Err(HandshakeError::WriteReply(e)),
        }
    }
}

crate::delegate_source!(PendingHandshake, stream);

/// Checks that `path` is a socket (not a symlink) owned by the connecting
/// user (unless that user is root) and that we may read and write it.
/// Returns its owner.
fn check_client_socket(path: &Path, peer_uid: Option<u32>) -> Result<u32, HandshakeError> {
    let client_err = |action, e: nix::Error| HandshakeError::Client {
        action,
        path: path.to_owned(),
        source: e.into(),
    };
    let stat = nix::sys::stat::lstat(path).map_err(|e| client_err("inspect", e))?;
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFSOCK {
        return Err(HandshakeError::ClientNotSocket(path.to_owned()));
    }
    if let Some(peer) = peer_uid
        && peer != 0
        && stat.st_uid != peer
    {
        return Err(HandshakeError::ClientNotOwned {
            path: path.to_owned(),
            owner: stat.st_uid,
            peer,
        });
    }
    nix::unistd::access(path, AccessFlags::R_OK | AccessFlags::W_OK)
        .map_err(|e| client_err("access", e))?;
    Ok(stat.st_uid)
}

/// A fresh non-blocking datagram socket with large buffers.
fn new_data_socket() -> Result<OwnedFd, HandshakeError> {
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| HandshakeError::DataSocket {
        action: "create",
        source: e.into(),
    })?;
    // Best effort: a smaller buffer only means earlier drops.
    let _ = nix::sys::socket::setsockopt(&fd, sockopt::SndBuf, &DATA_SOCKET_BUFFER);
    let _ = nix::sys::socket::setsockopt(&fd, sockopt::RcvBuf, &DATA_SOCKET_BUFFER);
    Ok(fd)
}

/// Connects the data socket to the client's before binding it, as
/// `vde_switch` does: the client may unlink its path as soon as it has the
/// reply.
fn connect_to_client(data: &OwnedFd, path: &Path) -> Result<(), HandshakeError> {
    let client_err = |e: nix::Error| HandshakeError::Client {
        action: "connect to",
        path: path.to_owned(),
        source: e.into(),
    };
    let addr = UnixAddr::new(path).map_err(client_err)?;
    nix::sys::socket::connect(data.as_raw_fd(), &addr).map_err(client_err)
}
