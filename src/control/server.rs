//! The daemon side of the control socket: a listener and per-client
//! connections that never block the event loop.

use super::request::{BadRequest, MAX_REQUEST_LEN, Request};
use mio::net::{UnixListener, UnixStream};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Mode of the control socket: owner only, since it can change the network.
const CONTROL_SOCKET_MODE: u32 = 0o600;

/// The listening control socket. Removes its path when dropped.
pub struct ControlListener {
    listener: UnixListener,
    path: PathBuf,
}

/// Why the control socket could not be opened.
#[derive(Debug)]
pub enum ControlBindError {
    /// Another live switchboard answers on this path.
    InUse(PathBuf),
    /// Something that is not a socket sits at the path.
    NotASocket(PathBuf),
    /// The OS refused.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for ControlBindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlBindError::InUse(p) => write!(
                f,
                "control socket {} is in use by a running switchboard",
                p.display()
            ),
            ControlBindError::NotASocket(p) => write!(
                f,
                "{} exists and is not a socket; refusing to replace it",
                p.display()
            ),
            ControlBindError::Io(p, e) => write!(f, "control socket {}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ControlBindError {}

impl ControlListener {
    /// Binds the control socket at `path`, creating its parent directory
    /// (mode 0755 for root, 0700 otherwise) if needed. A socket left behind by
    /// a dead process is replaced; one a live process answers on is not.
    pub fn bind(path: &Path) -> Result<ControlListener, ControlBindError> {
        let io_err = |e| ControlBindError::Io(path.to_path_buf(), e);
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.exists()
        {
            let mode = if nix::unistd::geteuid().is_root() {
                0o755
            } else {
                0o700
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(parent)
                .map_err(io_err)?;
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            check_private_dir(parent).map_err(io_err)?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(ControlBindError::InUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Ok(_) => return Err(ControlBindError::NotASocket(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // The socket file gets its mode at creation through the umask, so
        // there is no window in which it is more open than intended and no
        // chmod that could follow a planted symlink. The daemon is single
        // threaded, so changing the process umask briefly is safe.
        let mask = nix::sys::stat::Mode::from_bits_truncate(0o777 & !CONTROL_SOCKET_MODE);
        let old = nix::sys::stat::umask(mask);
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        Ok(ControlListener {
            listener: bound.map_err(io_err)?,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one waiting client, or `None` when none is waiting.
    pub fn accept(&mut self) -> io::Result<Option<ControlConn>> {
        match self.listener.accept() {
            Ok((stream, _)) => Ok(Some(ControlConn::new(stream))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

use std::os::unix::fs::{DirBuilderExt, MetadataExt};

/// Refuses a directory someone else could tamper with: one owned by
/// another user, or reached through a symlink another user owns (a fallback
/// runtime directory under /tmp can be planted by anyone). Root's
/// directories and symlinks (`/var/run` -> `/run`) are trusted.
fn check_private_dir(dir: &Path) -> io::Result<()> {
    let euid = nix::unistd::geteuid().as_raw();
    let trusted = |uid: u32| uid == euid || uid == 0;
    let link = std::fs::symlink_metadata(dir)?;
    if link.file_type().is_symlink() && !trusted(link.uid()) {
        return Err(io::Error::other(format!(
            "{} is a symlink owned by uid {}; refusing to use it",
            dir.display(),
            link.uid()
        )));
    }
    let m = std::fs::metadata(dir)?;
    if !m.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if !trusted(m.uid()) {
        return Err(io::Error::other(format!(
            "{} belongs to uid {}, not to us (uid {euid}); refusing to use it",
            dir.display(),
            m.uid()
        )));
    }
    Ok(())
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

switchboard_plugs::delegate_source!(ControlListener, listener);

/// One control client: reads a request line, writes a reply, closes.
pub struct ControlConn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    written: usize,
    state: ConnState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Reading,
    Replying,
    Done,
}

/// What a connection needs after it was readable or writable.
#[derive(Debug)]
pub enum ConnProgress {
    /// Nothing to do until the next event.
    Waiting,
    /// A complete request arrived; answer it with [`ControlConn::reply`].
    Request(Result<Request, BadRequest>),
    /// The exchange is over (or the client vanished): drop the connection.
    Finished,
}

impl ControlConn {
    fn new(stream: UnixStream) -> Self {
        ControlConn {
            stream,
            inbuf: Vec::with_capacity(256),
            outbuf: Vec::new(),
            written: 0,
            state: ConnState::Reading,
        }
    }

    /// Advances the exchange after a readiness event.
    pub fn progress(&mut self) -> ConnProgress {
        match self.state {
            ConnState::Reading => self.read_request(),
            ConnState::Replying => self.flush(),
            ConnState::Done => ConnProgress::Finished,
        }
    }

    fn read_request(&mut self) -> ConnProgress {
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    // EOF: a request without a trailing newline still counts.
                    if self.inbuf.is_empty() {
                        self.state = ConnState::Done;
                        return ConnProgress::Finished;
                    }
                    return self.complete_request();
                }
                Ok(n) => {
                    self.inbuf.extend_from_slice(&chunk[..n]);
                    if self.inbuf.contains(&b'\n') {
                        return self.complete_request();
                    }
                    if self.inbuf.len() > MAX_REQUEST_LEN {
                        self.state = ConnState::Replying;
                        return ConnProgress::Request(Err(BadRequest(format!(
                            "request longer than {MAX_REQUEST_LEN} bytes"
                        ))));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ConnProgress::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.state = ConnState::Done;
                    return ConnProgress::Finished;
                }
            }
        }
    }

    fn complete_request(&mut self) -> ConnProgress {
        self.state = ConnState::Replying;
        let end = self
            .inbuf
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(self.inbuf.len());
        let parsed = match std::str::from_utf8(&self.inbuf[..end]) {
            Ok(line) => Request::parse(line.trim()),
            Err(_) => Err(BadRequest("request is not UTF-8".into())),
        };
        ConnProgress::Request(parsed)
    }

    /// Queues the reply document and starts sending it.
    pub fn reply(&mut self, doc: &serde_json::Value) -> ConnProgress {
        self.outbuf = serde_json::to_vec(doc).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        self.outbuf.push(b'\n');
        self.written = 0;
        self.state = ConnState::Replying;
        self.flush()
    }

    fn flush(&mut self) -> ConnProgress {
        while self.written < self.outbuf.len() {
            match self.stream.write(&self.outbuf[self.written..]) {
                Ok(0) => break,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ConnProgress::Waiting,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.state = ConnState::Done;
        ConnProgress::Finished
    }
}

switchboard_plugs::delegate_source!(ControlConn, stream);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_check_refuses_other_users_directories() {
        let base = std::env::temp_dir().join(format!("sb-ctl-test-{}", std::process::id()));
        let own = base.join("own");
        std::fs::create_dir_all(&own).unwrap();
        assert!(check_private_dir(&own).is_ok());
        let link = base.join("link");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        assert!(check_private_dir(&link).is_ok(), "our own symlink is fine");
        if nix::unistd::geteuid().is_root() {
            let theirs = base.join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
            let e = check_private_dir(&theirs).unwrap_err().to_string();
            assert!(e.contains("belongs to uid 65534"), "{e}");
            // a socket there is refused before anything is created
            let r = ControlListener::bind(&theirs.join("control"));
            assert!(r.is_err());
            assert!(!theirs.join("control").exists());
        } else {
            eprintln!("SKIP (part): not root, cannot make a directory owned by another user");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn live_control_socket_is_refused_and_stale_one_replaced() {
        let base = std::env::temp_dir().join(format!("sb-ctl-live-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("control");
        let first = ControlListener::bind(&path).unwrap();
        assert!(matches!(
            ControlListener::bind(&path),
            Err(ControlBindError::InUse(_))
        ));
        // leave a stale socket file behind: a listener that is gone
        std::mem::forget(first);
        let stale = std::os::unix::net::UnixListener::bind(base.join("other")).unwrap();
        drop(stale);
        let again = ControlListener::bind(&base.join("other"));
        assert!(again.is_ok(), "a stale socket is replaced");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
