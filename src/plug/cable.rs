//! A cable: frames from one endpoint to the other and back, until either
//! side goes away.
//!
//! This is what `vde_plug A B`, `vde_plug2tap` and `dpipe` do, in one
//! command: `switchboard plug vde:///run/a vde:///run/b` cascades two
//! switches, `switchboard plug vde:///run/a tap://tap3` puts a tap on one,
//! and `switchboard plug vde:///run/a - = ssh host switchboard plug
//! vde:///run/b -` chains switches across hosts through any byte pipe.
//!
//! Each endpoint is a [`Plug`]; the loop receives a batch from whichever side
//! is readable and hands all of it to the other side. A side that closes ends
//! the cable (exit status 1), unless reconnecting was asked for, in which
//! case it is reopened with a growing pause. A listening stream endpoint
//! takes its next client whenever the current one leaves.

use super::url::Endpoint;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchboard_plugs::batch::ALL_FRAMES;
use switchboard_plugs::dgram_peer::{UdpCable, UnixDgramPeer};
use switchboard_plugs::framing::Framing;
use switchboard_plugs::sealed::Key;
use switchboard_plugs::stream::{StreamListener, StreamPort};
use switchboard_plugs::tap::{TapOptions, TapPlug};
use switchboard_plugs::udp_tunnel::UdpTunnel;
use switchboard_plugs::vde::VdeClient;
use switchboard_plugs::{FrameBatch, Plug, RecvStatus, TxReport};

const SIDE_TOKENS: [Token; 2] = [Token(0), Token(1)];
const SIGNALS: Token = Token(2);
const LISTENER_TOKENS: [Token; 2] = [Token(3), Token(4)];

/// How a cable runs.
#[derive(Debug, Clone)]
pub struct CableOptions {
    /// Reopen a side that goes away instead of ending, pausing this long at
    /// first (doubling up to a minute).
    pub reconnect: Option<Duration>,
    /// How the cable introduces itself to VDE switches.
    pub description: String,
    /// For `-`: run this command and use its stdin/stdout instead of ours
    /// (the `dpipe` form, `A - = COMMAND...`).
    pub pipe_command: Option<Vec<String>>,
}

/// Why the cable ended.
#[derive(Debug)]
pub enum CableError {
    /// An endpoint could not be opened.
    Open(String),
    /// A side went away and reconnecting was not asked for.
    Closed(String),
    /// The event loop failed.
    Io(io::Error),
}

impl fmt::Display for CableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CableError::Open(m) | CableError::Closed(m) => f.write_str(m),
            CableError::Io(e) => write!(f, "event loop failed: {e}"),
        }
    }
}

impl std::error::Error for CableError {}

/// One side: its address, and the plug (or listener) while open.
struct Side {
    url: Endpoint,
    label: String,
    plug: Option<Box<dyn Plug>>,
    listener: Option<StreamListener>,
    retry_at: Option<Instant>,
    pause: Duration,
    /// Frames received from this side, and the report of sending them on.
    frames_in: u64,
    tx: TxReport,
}

/// Runs a cable between `a` and `b` until a signal, or until a side goes
/// away (without `reconnect`).
pub fn run(a: Endpoint, b: Endpoint, opts: &CableOptions) -> Result<(), CableError> {
    let mut poll = Poll::new().map_err(CableError::Io)?;
    let mut signals = Signals::new([SIGINT, SIGTERM]).map_err(CableError::Io)?;
    poll.registry()
        .register(&mut signals, SIGNALS, Interest::READABLE)
        .map_err(CableError::Io)?;
    let mut child: Option<Child> = None;
    let mut sides = [a, b].map(|url| Side {
        label: describe(&url),
        url,
        plug: None,
        listener: None,
        retry_at: None,
        pause: opts.reconnect.unwrap_or(Duration::from_secs(1)),
        frames_in: 0,
        tx: TxReport::default(),
    });
    for (i, side) in sides.iter_mut().enumerate() {
        open_side(side, i, &poll, opts, &mut child)?;
    }
    let mut batch = FrameBatch::new();
    let mut events = Events::with_capacity(16);
    let mut ready = [true, true];
    let result = loop {
        let busy = ready.iter().any(|&r| r);
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            sides
                .iter()
                .filter_map(|s| s.retry_at)
                .min()
                .map(|t| t.saturating_duration_since(Instant::now()))
        };
        match poll.poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => break Err(CableError::Io(e)),
        }
        let mut stop = false;
        for ev in events.iter() {
            match ev.token() {
                SIGNALS => stop = signals.pending().next().is_some(),
                t if SIDE_TOKENS.contains(&t) => {
                    let i = t.0;
                    if ev.is_writable()
                        && let Some(p) = sides[i].plug.as_mut()
                    {
                        let _ = p.on_writable();
                    }
                    if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                        ready[i] = true;
                    }
                }
                t if LISTENER_TOKENS.contains(&t) => {
                    let i = t.0 - LISTENER_TOKENS[0].0;
                    if accept_client(&mut sides[i], i, &poll) {
                        ready[i] = true;
                    }
                }
                _ => {}
            }
        }
        if stop {
            break Ok(());
        }
        let mut ended = None;
        for (i, ready) in ready.iter_mut().enumerate() {
            if !*ready {
                continue;
            }
            let (from, to) = if i == 0 {
                let (x, y) = sides.split_at_mut(1);
                (&mut x[0], &mut y[0])
            } else {
                let (x, y) = sides.split_at_mut(1);
                (&mut y[0], &mut x[0])
            };
            let Some(plug) = from.plug.as_mut() else {
                *ready = false;
                continue;
            };
            batch.clear();
            let status = plug.recv_batch(&mut batch).unwrap_or_else(|e| {
                tracing::warn!(side = %from.label, error = %e, "receive failed");
                RecvStatus::Closed
            });
            from.frames_in += batch.len() as u64;
            if !batch.is_empty() {
                if let Some(out) = to.plug.as_mut() {
                    from.tx
                        .absorb(out.send_batch(&batch, &ALL_FRAMES[..batch.len()]));
                } else {
                    from.tx.dropped_error += batch.len();
                }
            }
            match status {
                RecvStatus::More => {}
                RecvStatus::Drained => *ready = false,
                RecvStatus::Closed => {
                    *ready = false;
                    if let Err(e) = close_side(from, i, &poll, opts) {
                        ended = Some(e);
                    }
                }
            }
        }
        if let Some(e) = ended {
            break Err(e);
        }
        for (i, side) in sides.iter_mut().enumerate() {
            if side.retry_at.is_some_and(|t| t <= Instant::now()) {
                side.retry_at = None;
                if let Err(e) = open_side(side, i, &poll, opts, &mut child) {
                    side.pause = (side.pause * 2).min(Duration::from_secs(60));
                    tracing::warn!(side = %side.label, error = %e, retry_in = ?side.pause, "reconnect failed");
                    side.retry_at = Some(Instant::now() + side.pause);
                } else {
                    side.pause = opts.reconnect.unwrap_or(Duration::from_secs(1));
                    ready[i] = true;
                }
            }
        }
    };
    for s in &sides {
        tracing::info!(
            side = %s.label,
            frames_in = s.frames_in,
            forwarded = s.tx.sent,
            dropped = s.tx.dropped_full + s.tx.dropped_error,
            "cable closed"
        );
    }
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

/// A side went away: end the cable, or schedule a reconnect. A listening
/// side simply waits for its next client.
fn close_side(
    side: &mut Side,
    i: usize,
    poll: &Poll,
    opts: &CableOptions,
) -> Result<(), CableError> {
    if let Some(mut p) = side.plug.take() {
        let _ = poll.registry().deregister(p.as_mut());
    }
    if side.listener.is_some() {
        tracing::info!(side = %side.label, "client left; waiting for the next one");
        return Ok(());
    }
    match opts.reconnect {
        Some(_) => {
            tracing::warn!(side = %side.label, retry_in = ?side.pause, "side went away; reconnecting");
            side.retry_at = Some(Instant::now() + side.pause);
            let _ = i;
            Ok(())
        }
        None => Err(CableError::Closed(format!("{} went away", side.label))),
    }
}

fn accept_client(side: &mut Side, i: usize, poll: &Poll) -> bool {
    let Some(listener) = side.listener.as_mut() else {
        return false;
    };
    let mut accepted = false;
    loop {
        match listener.accept() {
            Ok(Some(mut port)) => {
                if side.plug.is_some() {
                    // One peer at a time, as QEMU's own stream server does.
                    tracing::warn!(side = %side.label, "a second client was refused: this end takes one peer at a time");
                    continue;
                }
                if poll
                    .registry()
                    .register(
                        &mut port,
                        SIDE_TOKENS[i],
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .is_ok()
                {
                    tracing::info!(side = %side.label, peer = port.description(), "client connected");
                    side.plug = Some(Box::new(port));
                    accepted = true;
                }
            }
            Ok(None) => return accepted,
            Err(e) => {
                tracing::warn!(side = %side.label, error = %e, "accept failed");
                return accepted;
            }
        }
    }
}

fn open_side(
    side: &mut Side,
    i: usize,
    poll: &Poll,
    opts: &CableOptions,
    child: &mut Option<Child>,
) -> Result<(), CableError> {
    let err = |e: io::Error| CableError::Open(format!("{}: {e}", side.label));
    let mut plug: Box<dyn Plug> = match &side.url {
        Endpoint::Stream { path, listen: true } => {
            let l = StreamListener::bind_unix(path, Framing::Qemu).map_err(err)?;
            return listen_side(side, i, poll, l);
        }
        Endpoint::Tcp { addr, listen: true } => {
            let l = StreamListener::bind_tcp(*addr, Framing::Qemu).map_err(err)?;
            return listen_side(side, i, poll, l);
        }
        Endpoint::Tap { name } => {
            Box::new(TapPlug::open(name, &TapOptions::default()).map_err(err)?)
        }
        Endpoint::Stdio => {
            let (rx, tx) = stdio_fds(opts, child).map_err(err)?;
            Box::new(StreamPort::from_pipes(rx, tx, Framing::Vde, side.label.clone()).map_err(err)?)
        }
        url => connect_endpoint(url, &opts.description, || default_dgram_path(i)).map_err(err)?,
    };
    poll.registry()
        .register(
            plug.as_mut(),
            SIDE_TOKENS[i],
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(err)?;
    tracing::info!(side = %side.label, "connected");
    side.plug = Some(plug);
    Ok(())
}

/// Connects to an endpoint that a client reaches (a VDE switch, a stream
/// or datagram socket, a UDP peer), as `switchboard plug` and `switchboard
/// ns` both do. `dgram_local` names the local socket of a datagram
/// endpoint that gives none. Listening sockets, taps and stdio are not
/// such endpoints and are refused.
pub(crate) fn connect_endpoint(
    url: &Endpoint,
    description: &str,
    dgram_local: impl FnOnce() -> std::path::PathBuf,
) -> io::Result<Box<dyn Plug>> {
    Ok(match url {
        Endpoint::Vde { dir, port } => Box::new(VdeClient::connect(dir, *port, description)?),
        Endpoint::Stream {
            path,
            listen: false,
        } => Box::new(StreamPort::connect_unix(path, Framing::Qemu)?),
        Endpoint::Tcp {
            addr,
            listen: false,
        } => Box::new(StreamPort::connect_tcp(
            *addr,
            Framing::Qemu,
            Duration::from_secs(5),
        )?),
        Endpoint::Dgram { remote, local } => {
            let local = local.clone().unwrap_or_else(dgram_local);
            Box::new(UnixDgramPeer::connect(&local, remote)?)
        }
        Endpoint::Udp {
            local,
            remote,
            key: None,
        } => Box::new(UdpCable::connect(*local, *remote)?),
        Endpoint::Udp {
            local,
            remote,
            key: Some(file),
        } => {
            let bad = |why: String| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the key {}: {why}", file.display()),
                )
            };
            let text = std::fs::read_to_string(file).map_err(|e| bad(e.to_string()))?;
            let key = Key::from_hex(&text).map_err(|e| bad(e.to_string()))?;
            Box::new(UdpTunnel::open(*local, *remote, Some(&key))?)
        }
        Endpoint::Stream { listen: true, .. }
        | Endpoint::Tcp { listen: true, .. }
        | Endpoint::Tap { .. }
        | Endpoint::Stdio => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not an endpoint to connect to",
            ));
        }
    })
}

fn listen_side(
    side: &mut Side,
    i: usize,
    poll: &Poll,
    mut l: StreamListener,
) -> Result<(), CableError> {
    poll.registry()
        .register(&mut l, LISTENER_TOKENS[i], Interest::READABLE)
        .map_err(|e| CableError::Open(format!("{}: {e}", side.label)))?;
    tracing::info!(side = %side.label, "listening for one client at a time");
    side.listener = Some(l);
    Ok(())
}

/// Our stdin/stdout, or (the dpipe form) the pipes of a command we start.
fn stdio_fds(opts: &CableOptions, child: &mut Option<Child>) -> io::Result<(OwnedFd, OwnedFd)> {
    match &opts.pipe_command {
        None => {
            let rx = std::io::stdin().as_fd_owned()?;
            let tx = std::io::stdout().as_fd_owned()?;
            Ok((rx, tx))
        }
        Some(argv) => {
            if let Some(mut old) = child.take() {
                let _ = old.kill();
                let _ = old.wait();
            }
            let (prog, args) = argv.split_first().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "empty command after =")
            })?;
            let mut c = Command::new(prog)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let tx: OwnedFd = c.stdin.take().expect("piped stdin").into();
            let rx: OwnedFd = c.stdout.take().expect("piped stdout").into();
            *child = Some(c);
            Ok((rx, tx))
        }
    }
}

/// Duplicates a standard stream's descriptor, so the plug owns its own.
trait DupFd {
    fn as_fd_owned(&self) -> io::Result<OwnedFd>;
}

impl<T: std::os::fd::AsFd> DupFd for T {
    fn as_fd_owned(&self) -> io::Result<OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

/// Where a `dgram://` side without `?local=` binds: a per-process path in
/// the temporary directory.
fn default_dgram_path(i: usize) -> PathBuf {
    std::env::temp_dir().join(format!("switchboard-plug-{}-{i}.dgram", std::process::id()))
}

/// A short name for logs and messages.
fn describe(e: &Endpoint) -> String {
    match e {
        Endpoint::Vde { dir, port: Some(p) } => format!("vde://{}[{p}]", dir.display()),
        Endpoint::Vde { dir, port: None } => format!("vde://{}", dir.display()),
        Endpoint::Stream { path, listen } => {
            format!(
                "stream://{}{}",
                path.display(),
                if *listen { "?listen" } else { "" }
            )
        }
        Endpoint::Tcp { addr, listen } => {
            format!("tcp://{addr}{}", if *listen { "?listen" } else { "" })
        }
        Endpoint::Dgram { remote, .. } => format!("dgram://{}", remote.display()),
        Endpoint::Tap { name } => format!("tap://{name}"),
        Endpoint::Udp { local, remote, key } => match key {
            None => format!("udp://{local}->{remote}"),
            Some(k) => format!("udp://{local}->{remote}?key={}", k.display()),
        },
        Endpoint::Stdio => "-".into(),
    }
}
