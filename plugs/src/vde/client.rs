//! The client side of VDE2: what `vde_plug` and QEMU's `-netdev vde` do,
//! so switchboard can plug into a `vde_switch`, into another switchboard,
//! or into anything else that serves the VDE2 `ctl` protocol.
//!
//! The handshake mirrors libvdeplug4's `vde_vde_open`
//! (`libvdeplug4/libvdeplug_vde.c`): connect to `DIR/ctl`; bind a datagram
//! socket of our own, in the switch directory as `.PPPPP-NNNNN` (pid,
//! counter) or, if that directory is not writable, in `/var/run`,
//! `/var/tmp` or `/tmp` as `vde.PPPPP-NNNNN`; give it a mode the switch can
//! use; send one v3 request naming it; read the 110-byte `sockaddr_un`
//! reply; connect our socket to the switch's data socket it names; and
//! unlink our socket file, which is no longer needed once both sides are
//! connected. The control connection stays open and silent for the life of
//! the port: its EOF means the switch is gone (or dropped us).
//!
//! The handshake blocks, bounded by a timeout (5 s by default): it runs
//! once per cable, when the daemon sets the cable up. Afterwards both
//! sockets are non-blocking.

use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::link::VdeLink;
use mio::net::{UnixDatagram, UnixStream};
use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::sys::socket::sockopt;
use nix::sys::stat::{FchmodatFlags, Mode};
use nix::unistd::Gid;

use super::dir::CTL_NAME;
use super::request::{
    self, MAX_DESCRIPTION_LEN, PortRequest, RequestVersion, SOCKADDR_UN_LEN, SUN_PATH_LEN,
    VdeRequest,
};
use crate::dgram::BatchedDgram;
use crate::stream::connect_unix_stream;
use crate::{FrameBatch, Plug, RecvStatus, TxReport};

/// How long the whole handshake may take by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// libvdeplug's default mode for the client socket (QEMU's `mode=` default
/// too): only the owner, which is enough when the switch runs as the same
/// user or as root.
pub const DEFAULT_CLIENT_MODE: u32 = 0o700;

/// Fallback directories for our socket when the switch directory is not
/// writable, in libvdeplug's order.
const FALLBACK_DIRS: [&str; 3] = ["/var/run", "/var/tmp", "/tmp"];

/// Names to try per directory before moving on (`EADDRINUSE` only).
const NAME_ATTEMPTS: usize = 64;

/// Socket buffer size asked for on the data socket, as on the switch side.
const DATA_SOCKET_BUFFER: usize = 1 << 20;

/// Numbers our socket names, like libvdeplug's per-process counter, so
/// several cables from one process never collide.
static SOCKET_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How to plug into a switch. [`VdeClient::connect`] uses the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VdeClient {
    /// Bound on the whole handshake.
    pub timeout: Duration,
    /// Permission bits for our socket (libvdeplug's `mode=`), so the switch
    /// can connect back to it. With no group or other bits, and a switch
    /// owned by another non-root user, group (and, failing that, other)
    /// bits are added as libvdeplug does.
    pub mode: u32,
    /// A group for our socket (libvdeplug's `group=`), as a gid.
    pub group: Option<u32>,
}

impl Default for VdeClient {
    fn default() -> Self {
        VdeClient {
            timeout: HANDSHAKE_TIMEOUT,
            mode: DEFAULT_CLIENT_MODE,
            group: None,
        }
    }
}

impl VdeClient {
    /// Plugs into the switch whose directory is `dir`, with default
    /// options. `port`: `None` for any free port, `Some(0)` for the special
    /// port 0 (`REQ_NEW_PORT0`), `Some(n)` for port `n`. `description` is
    /// what the switch shows for the port (cut to 128 bytes).
    pub fn connect(dir: &Path, port: Option<u16>, description: &str) -> io::Result<VdeClientPort> {
        VdeClient::default().open(dir, port, description)
    }

    /// Like [`connect`](Self::connect), with these options.
    ///
    /// Errors: `NotFound` or `ConnectionRefused` when no switch listens on
    /// `DIR/ctl`; `ConnectionRefused` when the switch closed the connection
    /// instead of replying (it refused the port: taken, not allocatable, not
    /// permitted); `TimedOut` when it did not answer within the timeout;
    /// `InvalidData` for a reply that is not a socket address.
    pub fn open(
        &self,
        dir: &Path,
        port: Option<u16>,
        description: &str,
    ) -> io::Result<VdeClientPort> {
        let deadline = Instant::now() + self.timeout;
        let remaining = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        // Like libvdeplug's realpath: the switch gets absolute paths.
        let dir = std::fs::canonicalize(dir).map_err(|e| {
            io::Error::new(e.kind(), format!("no VDE switch at {}: {e}", dir.display()))
        })?;
        let ctl_path = dir.join(CTL_NAME);

        let mut control = connect_unix_stream(&ctl_path, self.timeout).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("no VDE switch listening on {}: {e}", ctl_path.display()),
            )
        })?;
        control.set_nonblocking(false)?;

        let (data, own) = bind_own_socket(&dir)?;
        self.set_permissions(&own, &ctl_path);

        let request = VdeRequest {
            version: RequestVersion::V3,
            port: match port {
                None => PortRequest::Any,
                Some(0) => PortRequest::Zero,
                Some(n) => PortRequest::Number(n),
            },
            client_path: own.path.clone(),
            description: truncate(description, MAX_DESCRIPTION_LEN).to_owned(),
            mac: None,
        }
        .encode_v3()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        control.set_write_timeout(Some(remaining()))?;
        control
            .write_all(&request)
            .map_err(|e| handshake_error(e, "sending the request"))?;

        let mut reply = [0u8; SOCKADDR_UN_LEN];
        control.set_read_timeout(Some(remaining()))?;
        control.read_exact(&mut reply).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("the switch at {} refused the port", dir.display()),
                )
            } else {
                handshake_error(e, "waiting for the reply")
            }
        })?;
        let data_path = request::decode_reply(&reply)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad reply: {e}")))?;
        data.connect(&data_path)?;
        // Both ends are connected: our file has served its purpose.
        drop(own);

        data.set_nonblocking(true)?;
        control.set_nonblocking(true)?;
        let _ = nix::sys::socket::setsockopt(&data, sockopt::SndBuf, &DATA_SOCKET_BUFFER);
        let _ = nix::sys::socket::setsockopt(&data, sockopt::RcvBuf, &DATA_SOCKET_BUFFER);
        let port_number = port_from_data_path(&data_path);
        let label = match port_number {
            Some(n) => format!("vde://{}[{n}]", dir.display()),
            None => format!("vde://{}", dir.display()),
        };
        tracing::debug!(switch = %label, data = %data_path.display(), "plugged into a VDE switch");
        Ok(VdeClientPort {
            link: VdeLink::new(
                UnixStream::from_std(control),
                BatchedDgram::new(UnixDatagram::from_std(data)),
            ),
            switch_dir: dir,
            data_path,
            port_number,
            label,
        })
    }

    /// Gives our socket a mode (and group) the switch can use, as
    /// libvdeplug does. Best effort: failing leaves the socket usable by a
    /// switch running as us or as root. Never follows a symlink someone
    /// put in our socket's place.
    fn set_permissions(&self, own: &OwnSocket, ctl_path: &Path) {
        let mut mode = self.mode & 0o777;
        let chgrp = |gid: u32| {
            nix::unistd::fchownat(
                AT_FDCWD,
                &own.path,
                None,
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
        };
        if let Some(gid) = self.group {
            if let Err(e) = chgrp(gid) {
                tracing::warn!(path = %own.path.display(), gid, error = %e, "cannot set the group of the VDE client socket");
            }
        } else if mode & 0o077 == 0
            && let Ok(ctl) = std::fs::metadata(ctl_path)
            && ctl.uid() != 0
            && ctl.uid() != nix::unistd::geteuid().as_raw()
        {
            // The switch runs as someone else: share through its group if
            // we can, else open the socket to everyone.
            mode |= if chgrp(ctl.gid()).is_ok() {
                0o070
            } else {
                0o077
            };
        }
        if let Err(e) = nix::sys::stat::fchmodat(
            AT_FDCWD,
            &own.path,
            Mode::from_bits_truncate(mode),
            FchmodatFlags::NoFollowSymlink,
        ) {
            tracing::debug!(path = %own.path.display(), error = %e, "cannot set the mode of the VDE client socket");
        }
    }
}

/// Adds what we were doing to a handshake I/O error, keeping its kind (a
/// timeout reads as `WouldBlock` or `TimedOut` depending on the call).
fn handshake_error(e: io::Error, doing: &str) -> io::Error {
    let kind = match e.kind() {
        io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut,
        kind => kind,
    };
    io::Error::new(kind, format!("VDE handshake failed {doing}: {e}"))
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The port number in a `vde_switch`-style data socket name (`NNN.F`).
fn port_from_data_path(path: &Path) -> Option<u16> {
    let name = path.file_name()?.to_str()?;
    let (port, fd) = name.split_once('.')?;
    if port.len() < 3 || fd.is_empty() || !fd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Our socket file during the handshake; removed when dropped.
#[derive(Debug)]
struct OwnSocket {
    path: PathBuf,
}

impl Drop for OwnSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds our datagram socket, in the switch directory if we may write
/// there, else in a fallback directory.
fn bind_own_socket(dir: &Path) -> io::Result<(std::os::unix::net::UnixDatagram, OwnSocket)> {
    let pid = std::process::id();
    let mut last_error = None;
    let candidates =
        std::iter::once((dir, ".")).chain(FALLBACK_DIRS.iter().map(|d| (Path::new(*d), "vde.")));
    for (place, prefix) in candidates {
        for _ in 0..NAME_ATTEMPTS {
            let n = SOCKET_COUNTER.fetch_add(1, Ordering::Relaxed) % 100_000;
            let path = place.join(format!("{prefix}{pid:05}-{n:05}"));
            if path.as_os_str().len() >= SUN_PATH_LEN {
                last_error = Some(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is too long for a socket address", path.display()),
                ));
                break;
            }
            match std::os::unix::net::UnixDatagram::bind(&path) {
                Ok(socket) => return Ok((socket, OwnSocket { path })),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            "no free name for the VDE client socket",
        )
    }))
}

/// A port on a VDE switch, as seen from the client side.
///
/// Frames travel over the connected datagram socket, one per datagram; the
/// control stream stays open and silent, and its EOF means the switch let
/// go. Both descriptors register under the daemon's one token for the
/// port. Dropping the port closes both, which unplugs it from the switch.
#[derive(Debug)]
pub struct VdeClientPort {
    link: VdeLink,
    switch_dir: PathBuf,
    data_path: PathBuf,
    port_number: Option<u16>,
    label: String,
}

impl VdeClientPort {
    /// The switch directory we are plugged into (canonical).
    pub fn switch_dir(&self) -> &Path {
        &self.switch_dir
    }

    /// The switch's data socket for this port.
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// The port number the switch gave us, read from its data socket's name
    /// (`NNN.F`, the naming of `vde_switch` and switchboard); `None` for a
    /// switch that names its sockets otherwise.
    pub fn port_number(&self) -> Option<u16> {
        self.port_number
    }
}

impl Plug for VdeClientPort {
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        self.link.recv_batch(batch)
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        self.link.send_batch(batch, which)
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

    /// `vde://DIR[PORT]`: where this cable is plugged in.
    fn description(&self) -> &str {
        &self.label
    }

    fn kind(&self) -> &'static str {
        "vde-client"
    }
}

crate::delegate_source!(VdeClientPort, link);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::recv_frames;
    use std::os::unix::net::UnixListener;
    use std::process::{Command, Stdio};

    use crate::vde::dir::with_umask_lock;
    use crate::vde::{DirOptions, HandshakeProgress, SwitchDir, VdeListener, VdePort};

    const WAIT: Duration = Duration::from_secs(10);

    fn tempdir() -> tempfile::TempDir {
        with_umask_lock(|| tempfile::tempdir().unwrap())
    }

    /// An Ethernet frame from `src` to `dst` with a recognisable payload.
    fn eth(dst: [u8; 6], src: [u8; 6], seed: u8, len: usize) -> Vec<u8> {
        let mut f = Vec::with_capacity(len);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        f.extend((0..len - 14).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8)));
        f
    }

    const BROADCAST: [u8; 6] = [0xff; 6];
    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// Waits until `plug` reports the switch gone.
    fn wait_closed(plug: &mut impl Plug) {
        let deadline = Instant::now() + WAIT;
        let mut batch = FrameBatch::new();
        loop {
            batch.clear();
            if plug.recv_batch(&mut batch).unwrap() == RecvStatus::Closed {
                break;
            }
            assert!(Instant::now() < deadline, "never saw the switch go");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!plug.check_alive());
    }

    fn one(frame: &[u8]) -> FrameBatch {
        let mut b = FrameBatch::new();
        b.push(frame);
        b
    }

    /// Names of hidden files (our client sockets are `.PID-N`) in `dir`.
    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn helpers() {
        assert_eq!(port_from_data_path(Path::new("/x/005.9")), Some(5));
        assert_eq!(port_from_data_path(Path::new("/x/1234.12")), Some(1234));
        assert_eq!(port_from_data_path(Path::new("/x/fd9")), None);
        assert_eq!(port_from_data_path(Path::new("/x/05.9")), None);
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 128), "abc");
    }

    /// Two of our clients on Debian's real `vde_switch`: a broadcast from
    /// one reaches the other, the learned unicast reply comes back, both
    /// byte-exact; our socket files are gone after the handshake; killing
    /// the switch closes both ports.
    #[test]
    fn two_clients_talk_through_a_real_vde_switch() {
        let bin = Path::new("/usr/bin/vde_switch");
        if !bin.exists() {
            eprintln!(
                "skipping two_clients_talk_through_a_real_vde_switch: /usr/bin/vde_switch is not installed"
            );
            return;
        }
        let tmp = tempdir();
        let dir = tmp.path().join("sw");
        // No -d: the switch reads its console on stdin and would exit on
        // EOF, so stdin stays open (piped and held) until the test ends.
        let child = Command::new(bin)
            .arg("-s")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = Reap(child);

        let deadline = Instant::now() + WAIT;
        let mut a = loop {
            match VdeClient::connect(&dir, None, "switchboard test a") {
                Ok(port) => break port,
                Err(e) => {
                    assert!(Instant::now() < deadline, "vde_switch never came up: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let mut b = VdeClient::connect(&dir, Some(5), "switchboard test b").unwrap();
        assert_eq!(b.port_number(), Some(5));
        assert!(
            a.port_number().is_some_and(|n| n != 5),
            "{:?}",
            a.port_number()
        );
        assert_eq!(a.kind(), "vde-client");
        assert!(b.description().ends_with("[5]"), "{}", b.description());
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));

        // A broadcast from a is flooded to b.
        let hello = eth(BROADCAST, MAC_A, 1, 100);
        assert_eq!(a.send_batch(&one(&hello), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut b, 1), vec![hello]);
        // b answers a's learned MAC.
        let reply = eth(MAC_A, MAC_B, 2, 1514);
        assert_eq!(b.send_batch(&one(&reply), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut a, 1), vec![reply]);
        // A burst, in order.
        let mut burst = FrameBatch::new();
        for i in 0..20u8 {
            burst.push(&eth(MAC_B, MAC_A, 10 + i, 60 + usize::from(i) * 70));
        }
        let which: Vec<u16> = (0..20).collect();
        assert_eq!(a.send_batch(&burst, &which).sent, 20);
        let got = recv_frames(&mut b, 20);
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f.as_slice(), burst.frame(i), "burst frame {i}");
        }

        let _ = child.0.kill();
        let _ = child.0.wait();
        wait_closed(&mut a);
        wait_closed(&mut b);
    }

    /// Our client against our own switch side, driven in-process the way
    /// the daemon drives it.
    #[test]
    fn plugs_into_our_own_switch_side() {
        let tmp = tempdir();
        let dir = SwitchDir::open(tmp.path().join("sw"), &DirOptions::default()).unwrap();
        let mut listener = VdeListener::bind(&dir).unwrap();
        let dir_path = dir.path().to_owned();
        let client =
            std::thread::spawn(move || VdeClient::connect(&dir_path, Some(7), "switchboard test"));

        let deadline = Instant::now() + WAIT;
        let mut pending = None;
        let (request, mut port): (_, VdePort) = loop {
            assert!(Instant::now() < deadline, "no handshake within {WAIT:?}");
            if pending.is_none() {
                pending = listener.accept().unwrap();
            }
            if let Some(p) = pending.as_mut() {
                match p.read() {
                    HandshakeProgress::NeedMore => {}
                    HandshakeProgress::Failed(e) => panic!("our client's request failed: {e}"),
                    HandshakeProgress::Ready(request) => {
                        let port = pending.take().unwrap().complete(&dir, &request, 7).unwrap();
                        break (request, port);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_eq!(request.version, RequestVersion::V3);
        assert_eq!(request.port, PortRequest::Number(7));
        assert_eq!(request.description, "switchboard test");
        assert!(request.client_path.starts_with(dir.path()));
        let mut client = client.join().unwrap().unwrap();
        assert!(
            !request.client_path.exists(),
            "the client removes its socket after connecting"
        );
        assert_eq!(client.port_number(), Some(7));
        assert_eq!(client.data_path(), port.data_path());
        assert_eq!(port.description(), "switchboard test");

        let down = eth(MAC_A, MAC_B, 3, 9000);
        assert_eq!(port.send_batch(&one(&down), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut client, 1), vec![down]);
        let up = eth(BROADCAST, MAC_A, 4, 64);
        assert_eq!(client.send_batch(&one(&up), &[0]).sent, 1);
        assert_eq!(recv_frames(&mut port, 1), vec![up]);

        // The switch drops the port: the client sees its control EOF.
        drop(port);
        wait_closed(&mut client);
    }

    #[test]
    fn no_switch_is_a_clear_error() {
        let tmp = tempdir();
        let err = VdeClient::connect(&tmp.path().join("nope"), None, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(err.to_string().contains("no VDE switch"), "{err}");
        let err = VdeClient::connect(tmp.path(), None, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(leftovers(tmp.path()).is_empty());
    }

    #[test]
    fn a_switch_that_hangs_up_refuses_the_port() {
        let tmp = tempdir();
        let listener = with_umask_lock(|| UnixListener::bind(tmp.path().join("ctl"))).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(WAIT)).unwrap();
            let mut request = [0u8; 256];
            let n = conn.read(&mut request).unwrap();
            request[..n].to_vec()
            // Dropping `conn` closes it without a reply.
        });
        let err = VdeClient::connect(tmp.path(), Some(3), "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        let request = server.join().unwrap();
        let parsed = VdeRequest::parse(&request).unwrap();
        assert_eq!(parsed.port, PortRequest::Number(3));
        assert!(leftovers(tmp.path()).is_empty(), "our socket was removed");
    }

    #[test]
    fn a_silent_switch_times_out() {
        let tmp = tempdir();
        // Listening but never accepting: connect and write succeed, the
        // reply never comes.
        let _listener = with_umask_lock(|| UnixListener::bind(tmp.path().join("ctl"))).unwrap();
        let client = VdeClient {
            timeout: Duration::from_millis(300),
            ..VdeClient::default()
        };
        let start = Instant::now();
        let err = client.open(tmp.path(), None, "x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(start.elapsed() < Duration::from_secs(3));
        assert!(leftovers(tmp.path()).is_empty());
    }
}
