//! The `vde_switch` management console socket (`-M PATH`) on the event loop.
//!
//! A Unix stream listener at PATH, with `vde_switch`'s permissions
//! (`--mgmtmode`, default 0600; `--mgmtgroup`), and one endpoint per
//! connected client. What is said on a connection is
//! [`vde_console`](crate::control::vde_console)'s business; this module
//! moves the bytes and carries out what only the daemon can: closing the
//! connection (`logout`), stopping (`shutdown`), unplugging a port.
//!
//! A console client is not trusted to behave. Input is cut into lines in a
//! buffer that never holds more than one line limit plus one read; a longer
//! line is answered with `1007 Argument list too long` and dropped up to
//! its newline without being kept. A connection makes one reply at a time
//! and reads nothing more until the reply is sent, so a client that sends
//! commands without reading the answers stalls itself (the kernel's socket
//! buffers fill) and nobody else. A client that sends many commands gets
//! [`LINES_PER_TURN`] of them served per turn of the loop, then waits for
//! the next turn, so it cannot starve the ports.

use super::endpoint::Endpoint;
use super::event_loop::{Daemon, DaemonError};
use crate::config::{MgmtPlan, Plan, SegmentPlan};
use crate::control::vde_console::{
    Action, ConsoleInfo, Context, MAX_LINE_LEN, Session, banner, overlong_reply, run_line,
};
use crate::switch::SegmentId;
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Token};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Command lines served on one connection before the others get a turn.
const LINES_PER_TURN: usize = 64;

/// How much is read from a client at a time.
const READ_CHUNK: usize = 1024;

/// The console's listening socket. Removes its path when dropped.
pub(crate) struct MgmtListener {
    listener: UnixListener,
    path: PathBuf,
    info: Rc<ConsoleInfo>,
}

switchboard_plugs::delegate_source!(MgmtListener, listener);

impl Drop for MgmtListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One console client.
pub(crate) struct MgmtConn {
    stream: UnixStream,
    /// Bytes received and not yet run: at most one line limit plus a read.
    inbuf: Vec<u8>,
    /// Dropping an overlong line up to its newline.
    discarding: bool,
    /// The reply being sent, and how much of it is gone.
    out: Vec<u8>,
    written: usize,
    /// Close once `out` is sent (`logout`, `shutdown`).
    closing: bool,
    session: Session,
    info: Rc<ConsoleInfo>,
}

switchboard_plugs::delegate_source!(MgmtConn, stream);

/// What reading found.
enum Fill {
    /// Bytes arrived.
    Data,
    /// Nothing more for now.
    WouldBlock,
    /// The client is gone.
    Closed,
}

/// The next thing to answer in the input.
enum Next {
    /// A complete line, newline removed.
    Line(Vec<u8>),
    /// A line over the limit (already dropped).
    Overlong,
}

impl MgmtConn {
    fn new(stream: UnixStream, session: Session, info: Rc<ConsoleInfo>) -> MgmtConn {
        MgmtConn {
            stream,
            inbuf: Vec::with_capacity(MAX_LINE_LEN + READ_CHUNK),
            discarding: false,
            out: banner().into_bytes(),
            written: 0,
            closing: false,
            session,
            info,
        }
    }

    /// Sends what is pending. `Ok(true)` when all of it is gone.
    fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(true)
    }

    fn queue(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
    }

    /// Takes the next line (or overlong line) out of the input, if one is
    /// complete.
    fn next(&mut self) -> Option<Next> {
        match self.inbuf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let mut line: Vec<u8> = self.inbuf.drain(..=i).collect();
                line.pop();
                if line.len() > MAX_LINE_LEN {
                    Some(Next::Overlong)
                } else {
                    Some(Next::Line(line))
                }
            }
            None if self.inbuf.len() > MAX_LINE_LEN => {
                self.inbuf.clear();
                self.discarding = true;
                Some(Next::Overlong)
            }
            None => None,
        }
    }

    /// Reads once into the input buffer, dropping the rest of an overlong
    /// line.
    fn fill(&mut self) -> Fill {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Fill::Closed,
                Ok(n) => {
                    let mut got = &chunk[..n];
                    if self.discarding {
                        match got.iter().position(|&b| b == b'\n') {
                            Some(i) => {
                                self.discarding = false;
                                got = &got[i + 1..];
                            }
                            None => continue,
                        }
                    }
                    self.inbuf.extend_from_slice(got);
                    return Fill::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Fill::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Fill::Closed,
            }
        }
    }
}

/// Binds the console socket of `mgmt` and starts accepting clients. A
/// socket a live process answers on is not taken over; one left by a dead
/// process is replaced; anything else at the path is refused.
pub(super) fn open_mgmt(d: &mut Daemon, plan: &Plan, mgmt: &MgmtPlan) -> Result<(), DaemonError> {
    let path = &mgmt.path;
    let fail =
        |what: String| DaemonError::Setup(format!("console socket {}: {what}", path.display()));
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(fail("in use by a running switch".into()));
            }
            std::fs::remove_file(path).map_err(|e| fail(e.to_string()))?;
        }
        Ok(_) => {
            return Err(fail(
                "exists and is not a socket; refusing to replace it".into(),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let listener = bind_with_mode(path, mgmt.mode).map_err(|e| fail(e.to_string()))?;
    if let Some(gid) = mgmt.group {
        use nix::fcntl::{AT_FDCWD, AtFlags};
        nix::unistd::fchownat(
            AT_FDCWD,
            path,
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fail(format!("cannot set its group: {e}")))?;
    }
    let data_sockets = plan.segments.iter().map(data_socket).collect();
    let info = Rc::new(ConsoleInfo {
        mgmt_path: path.display().to_string(),
        mgmt_mode: mgmt.mode,
        data_sockets,
    });
    d.insert(
        Endpoint::MgmtListener(MgmtListener {
            listener,
            path: path.clone(),
            info,
        }),
        Interest::READABLE,
    )?;
    tracing::info!(mgmt = %path.display(), mode = format!("{:04o}", mgmt.mode), "vde_switch console ready");
    Ok(())
}

/// What `ds/showinfo` reports for a segment: its VDE2 directory and the
/// mode of its sockets, if it serves one.
fn data_socket(seg: &SegmentPlan) -> Option<(String, u32)> {
    seg.vde.as_ref().map(|v| {
        let opts = switchboard_plugs::vde::DirOptions {
            mode: v.perms.mode,
            dirmode: v.perms.dirmode,
            group: v.perms.group,
        };
        (v.dir.display().to_string(), opts.socket_mode())
    })
}

/// Tells the console about a segment opened while the daemon runs, so
/// `ds/showinfo` on it names its directory. (Segments opened at start are
/// known to [`open_mgmt`] from the plan; the console does not exist yet
/// when they open.)
pub(super) fn segment_opened(d: &mut Daemon, id: SegmentId, seg: &SegmentPlan) {
    set_data_socket(d, id, data_socket(seg));
}

/// Tells the console a segment was closed: its directory is forgotten, and
/// sessions acting on it move to the first segment left rather than keep a
/// handle a new segment may reuse.
pub(super) fn segment_closed(d: &mut Daemon, id: SegmentId) {
    set_data_socket(d, id, None);
    let fresh = Session::new(&d.engine);
    for (_, ep) in d.endpoints.iter_mut() {
        if let Endpoint::MgmtConn(c) = ep
            && c.session.segment() == id
        {
            c.session = fresh;
        }
    }
}

/// Replaces the console's facts with ones where segment `id` has `value`
/// as its directory, for the listener and every connection.
fn set_data_socket(d: &mut Daemon, id: SegmentId, value: Option<(String, u32)>) {
    let Some(info) = d.endpoints.iter().find_map(|(_, ep)| match ep {
        Endpoint::MgmtListener(l) => Some(&l.info),
        _ => None,
    }) else {
        return;
    };
    let mut info = ConsoleInfo::clone(info);
    let i = id.index();
    if info.data_sockets.len() <= i {
        if value.is_none() {
            return;
        }
        info.data_sockets.resize(i + 1, None);
    }
    if let Some(slot) = info.data_sockets.get_mut(i) {
        *slot = value;
    }
    let info = Rc::new(info);
    for (_, ep) in d.endpoints.iter_mut() {
        match ep {
            Endpoint::MgmtListener(l) => l.info = Rc::clone(&info),
            Endpoint::MgmtConn(c) => c.info = Rc::clone(&info),
            _ => {}
        }
    }
}

/// Binds with the socket file created at `mode` (through the umask, so it
/// is never more open than asked, and no chmod can follow a planted
/// symlink). The daemon is single threaded, so the brief umask change is
/// safe.
fn bind_with_mode(path: &Path, mode: u32) -> io::Result<UnixListener> {
    let mask = nix::sys::stat::Mode::from_bits_truncate(0o777 & !mode);
    let old = nix::sys::stat::umask(mask);
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    bound
}

/// Accepts every waiting console client and greets it.
pub(super) fn accept_mgmt(d: &mut Daemon, token: Token) {
    loop {
        let Some(Endpoint::MgmtListener(l)) = d.endpoints.get_mut(token.0) else {
            return;
        };
        let info = Rc::clone(&l.info);
        let stream = match l.listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "console accept failed");
                return;
            }
        };
        let conn = MgmtConn::new(stream, Session::new(&d.engine), info);
        match d.insert(
            Endpoint::MgmtConn(conn),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            Ok(t) => serve_mgmt(d, t),
            Err(e) => tracing::warn!(error = %e, "cannot register console client"),
        }
    }
}

/// Advances a console connection: sends what is pending, runs the lines
/// that have arrived, reads more.
pub(super) fn serve_mgmt(d: &mut Daemon, token: Token) {
    let mut lines = 0;
    loop {
        let Some(Endpoint::MgmtConn(conn)) = d.endpoints.get_mut(token.0) else {
            return;
        };
        match conn.flush() {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                d.remove(token);
                return;
            }
        }
        if conn.closing {
            d.remove(token);
            return;
        }
        match conn.next() {
            Some(Next::Overlong) => {
                tracing::debug!("console: overlong line refused");
                conn.queue(&overlong_reply());
                continue;
            }
            Some(Next::Line(line)) => {
                if lines == LINES_PER_TURN {
                    // Put it back and ask for another event: re-registering
                    // an edge-triggered socket reports its current
                    // readiness (it is writable) on the next poll.
                    let mut rest = line;
                    rest.push(b'\n');
                    rest.extend_from_slice(&conn.inbuf);
                    conn.inbuf = rest;
                    let _ = d.poll.registry().reregister(
                        conn,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    return;
                }
                lines += 1;
                let info = Rc::clone(&conn.info);
                let mut ctx = Context {
                    engine: &mut d.engine,
                    info: &info,
                    now: d.clock.now(),
                    pid: std::process::id(),
                };
                let reply = run_line(&mut ctx, &mut conn.session, &line);
                conn.queue(&reply.text);
                match reply.action {
                    None => {}
                    Some(Action::Logout) => conn.closing = true,
                    Some(Action::Shutdown) => {
                        conn.closing = true;
                        tracing::warn!("shutdown from the console");
                        d.stop = true;
                    }
                    Some(Action::RemovePort(id)) => {
                        tracing::info!(
                            port = d.engine.port(id).map(|p| p.number()),
                            "console: port/remove"
                        );
                        match d.port_tokens.get(id.index()).copied().flatten() {
                            Some(t) => d.remove_port(t),
                            None => {
                                d.engine.remove_port(id);
                            }
                        }
                    }
                }
                continue;
            }
            None => {}
        }
        match conn.fill() {
            Fill::Data => {}
            Fill::WouldBlock => return,
            Fill::Closed => {
                d.remove(token);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (MgmtConn, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let engine = crate::switch::Engine::new();
        let conn = MgmtConn::new(
            UnixStream::from_std(a),
            Session::new(&engine),
            Rc::new(ConsoleInfo::default()),
        );
        (conn, b)
    }

    #[test]
    fn new_connection_is_greeted_with_the_banner() {
        let (mut conn, mut peer) = pair();
        assert!(conn.flush().unwrap());
        let mut got = vec![0u8; 4096];
        let n = peer.read(&mut got).unwrap();
        assert_eq!(&got[..n], banner().as_bytes());
    }

    #[test]
    fn lines_are_split_and_overlong_ones_dropped_without_buffering() {
        let (mut conn, mut peer) = pair();
        peer.write_all(b"port/print\nhelp").unwrap();
        assert!(matches!(conn.fill(), Fill::Data));
        assert!(matches!(conn.next(), Some(Next::Line(l)) if l == b"port/print"));
        assert!(conn.next().is_none(), "an unfinished line waits");
        assert_eq!(conn.inbuf, b"help");
        peer.write_all(b" port\n").unwrap();
        assert!(matches!(conn.fill(), Fill::Data));
        assert!(matches!(conn.next(), Some(Next::Line(l)) if l == b"help port"));

        // A megabyte without a newline, then a good line.
        let big = vec![b'a'; 1 << 20];
        let writer = std::thread::spawn(move || {
            peer.write_all(&big).unwrap();
            peer.write_all(b"x\nshowinfo\n").unwrap();
            peer
        });
        let mut overlong = 0;
        let mut lines = Vec::new();
        let mut peak = 0;
        for _ in 0..1_000_000 {
            match conn.fill() {
                Fill::Data => {}
                Fill::WouldBlock => {
                    if writer.is_finished() && conn.inbuf.is_empty() && !lines.is_empty() {
                        break;
                    }
                    std::thread::yield_now();
                }
                Fill::Closed => break,
            }
            peak = peak.max(conn.inbuf.len());
            while let Some(n) = conn.next() {
                match n {
                    Next::Overlong => overlong += 1,
                    Next::Line(l) => lines.push(l),
                }
            }
        }
        let _peer = writer.join().unwrap();
        assert_eq!(overlong, 1, "one error for one overlong line");
        assert_eq!(lines, vec![b"showinfo".to_vec()]);
        assert!(peak <= MAX_LINE_LEN + READ_CHUNK, "buffer grew to {peak}");
    }

    #[test]
    fn overlong_line_arriving_whole_is_refused() {
        let (mut conn, mut peer) = pair();
        let mut line = vec![b'b'; MAX_LINE_LEN + 1];
        line.push(b'\n');
        // Arrives in pieces no larger than a read; each piece is kept until
        // the limit is passed.
        peer.write_all(&line[..MAX_LINE_LEN - 10]).unwrap();
        assert!(matches!(conn.fill(), Fill::Data));
        assert!(conn.next().is_none());
        peer.write_all(&line[MAX_LINE_LEN - 10..]).unwrap();
        assert!(matches!(conn.fill(), Fill::Data));
        assert!(matches!(conn.next(), Some(Next::Overlong)));
        assert!(conn.inbuf.is_empty());
        assert!(!conn.discarding);
    }
}
