//! The listening `ctl` socket of a switch directory.

use std::io;
use std::path::{Path, PathBuf};

use mio::net::UnixListener;

use super::dir::{CTL_NAME, SwitchDir};
use super::handshake::PendingHandshake;

/// The switch's `ctl` stream socket, where VDE2 clients ask for ports.
///
/// Accepting only yields a [`PendingHandshake`]: the request may not have
/// arrived yet, and a slow or silent client must not hold up the event loop.
/// The socket file is removed by the [`SwitchDir`] it was bound in.
#[derive(Debug)]
pub struct VdeListener {
    listener: UnixListener,
    path: PathBuf,
}

impl VdeListener {
    /// Binds and listens on `ctl` inside `dir`, created with the directory's
    /// socket mode and group. Fails with `EADDRINUSE` if `ctl` exists (which
    /// [`SwitchDir::open`] rules out unless something raced us).
    pub fn bind(dir: &SwitchDir) -> io::Result<VdeListener> {
        let listener = dir.bind_socket(CTL_NAME, dir.socket_mode(), None, |path| {
            UnixListener::bind(path)
        })?;
        dir.mark_ctl_bound();
        Ok(VdeListener {
            listener,
            path: dir.ctl_path(),
        })
    }

    /// Accepts one waiting connection, without blocking.
    ///
    /// Returns `Ok(None)` when no connection is waiting. The listener is
    /// edge-triggered under mio: on a readiness event, call this until it
    /// returns `Ok(None)`. Connections the client abandoned before we got to
    /// them are skipped. Other errors (such as running out of descriptors)
    /// are returned; the listener stays usable.
    pub fn accept(&mut self) -> io::Result<Option<PendingHandshake>> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return Ok(Some(PendingHandshake::new(stream))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The path of the `ctl` socket, for logs.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

crate::delegate_source!(VdeListener, listener);
