//! The daemon's state and its loop.

use super::dgram_hub::{SharedHub, reap_gone_peers, serve_hub};
use super::endpoint::Endpoint;
use super::forward::Forwarder;
use super::router_port::{SharedRouter, drain_routers, open_router, routers_timeout};
use super::segment_lifecycle::open_segment;
use super::vde::{VdeDir, accept_clients, advance_handshake, expire_handshakes};
use crate::config::Plan;
use crate::control::server::{ConnProgress, ControlBindError, ControlListener};
use crate::control::{Request, router_views, views};
use crate::switch::{Engine, PortId, PortRequest, SegmentId};
use crate::time::MonotonicClock;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;
use switchboard_plugs::stream::{StreamListener, StreamOptions};
use switchboard_plugs::{Plug, RecvStatus};

/// How the daemon runs, beyond the network it serves.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Fork into the background once every socket is ready, like
    /// `vde_switch -d`.
    pub daemonize: bool,
    /// Write the daemon's pid here (and remove it at exit).
    pub pidfile: Option<PathBuf>,
    /// Print how to attach QEMU and taps once ready.
    pub print_attach_hints: bool,
}

/// Why the daemon could not start or had to stop.
#[derive(Debug)]
pub enum DaemonError {
    /// Setting up a socket, tap or directory failed; the message says which.
    Setup(String),
    /// The event loop itself failed.
    Io(io::Error),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::Setup(m) => f.write_str(m),
            DaemonError::Io(e) => write!(f, "event loop failed: {e}"),
        }
    }
}

impl std::error::Error for DaemonError {}

impl From<ControlBindError> for DaemonError {
    fn from(e: ControlBindError) -> Self {
        DaemonError::Setup(e.to_string())
    }
}

/// Gives a segment's QEMU socket the mode and group its VDE directory's
/// sockets get (`-m`, `--dirmode`, `-g`), so a VM run by another user (say
/// libvirt's `libvirt-qemu`) can attach the way it could to the VDE socket.
/// Without those options the socket keeps the umask's mode (only its owner
/// may connect). Symlinks are not followed.
pub(super) fn apply_socket_permissions(
    path: &std::path::Path,
    perms: Option<&crate::config::Permissions>,
) -> Result<(), DaemonError> {
    use nix::fcntl::{AT_FDCWD, AtFlags};
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat};
    let Some(p) = perms.filter(|p| p.mode.is_some() || p.dirmode.is_some() || p.group.is_some())
    else {
        return Ok(());
    };
    let fail = |what: &str, e: nix::Error| {
        DaemonError::Setup(format!("{}: cannot {what}: {e}", path.display()))
    };
    if p.mode.is_some() || p.dirmode.is_some() {
        let opts = switchboard_plugs::vde::DirOptions {
            mode: p.mode,
            dirmode: p.dirmode,
            group: p.group,
        };
        let mode = Mode::from_bits_truncate(opts.socket_mode());
        fchmodat(AT_FDCWD, path, mode, FchmodatFlags::NoFollowSymlink)
            .map_err(|e| fail("set its mode", e))?;
    }
    if let Some(gid) = p.group {
        nix::unistd::fchownat(
            AT_FDCWD,
            path,
            None,
            Some(nix::unistd::Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fail("set its group", e))?;
    }
    Ok(())
}

/// How often stalled handshakes are looked for.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);

/// The running switchboard.
pub struct Daemon {
    pub(super) poll: Poll,
    pub(super) engine: Engine,
    pub(super) clock: MonotonicClock,
    pub(super) endpoints: Slab<Endpoint>,
    /// `PortId` index -> the port's token.
    pub(super) port_tokens: Vec<Option<Token>>,
    pub(super) ready: VecDeque<Token>,
    pub(super) forwarder: Forwarder,
    /// Served switch directories, indexed by the `dir` of VDE listeners
    /// and handshakes; a closed segment's slot is emptied, not removed, so
    /// the other indices stay valid.
    pub(super) dirs: Vec<Option<VdeDir>>,
    /// Every dgram hub, to collect the peers a send found gone.
    pub(super) hubs: Vec<SharedHub>,
    /// Every router, to drain its output and run its timers.
    pub(super) routers: Vec<SharedRouter>,
    /// The plans of the running segments, against which a network started
    /// at runtime is checked.
    pub(super) segment_plans: Vec<crate::config::SegmentPlan>,
    /// Networks, running or only defined (`ctl net ...`).
    pub(super) networks: std::collections::BTreeMap<String, super::networks::NetworkEntry>,
    /// Host uplinks opened so far (each gets its own token range).
    pub(super) next_uplink: usize,
    pidfile: Option<PathBuf>,
    pub(super) stop: bool,
}

impl Daemon {
    /// Builds every segment, opens every socket and tap of `plan`. Nothing is
    /// served until [`run`](Self::run).
    pub fn new(plan: &Plan, opts: &DaemonOptions) -> Result<Daemon, DaemonError> {
        let poll = Poll::new().map_err(DaemonError::Io)?;
        let forwarder = Forwarder::new(poll.registry().try_clone().map_err(DaemonError::Io)?);
        let mut d = Daemon {
            poll,
            engine: Engine::new(),
            clock: MonotonicClock::new(),
            endpoints: Slab::new(),
            port_tokens: Vec::new(),
            ready: VecDeque::new(),
            forwarder,
            dirs: Vec::new(),
            hubs: Vec::new(),
            routers: Vec::new(),
            segment_plans: plan.segments.clone(),
            networks: super::networks::initial(&plan.networks),
            next_uplink: 0,
            pidfile: opts.pidfile.clone(),
            stop: false,
        };
        let signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(|e| DaemonError::Setup(format!("cannot install signal handlers: {e}")))?;
        d.insert(Endpoint::Signals(signals), Interest::READABLE)?;

        for seg in &plan.segments {
            open_segment(&mut d, seg)?;
        }
        for router in &plan.routers {
            open_router(&mut d, router)?;
        }
        // After the segments: the control socket may live inside a switch
        // directory, which must be created (and later removed) by its owner.
        let control = ControlListener::bind(&plan.control)?;
        d.insert(Endpoint::ControlListener(control), Interest::READABLE)?;
        tracing::info!(control = %plan.control.display(), "control socket ready");
        if let Some(mgmt) = &plan.mgmt {
            super::mgmt::open_mgmt(&mut d, plan, mgmt)?;
        }
        Ok(d)
    }

    /// Prints, for each VDE directory, the options that attach QEMU and a tap
    /// to it.
    pub fn print_attach_hints(&self, plan: &Plan) {
        const NIC: &str = "-device virtio-net-pci,netdev=net0";
        for seg in &plan.segments {
            println!("segment {:?}:", seg.config.name);
            if let Some(vde) = &seg.vde {
                let dir = vde.dir.display();
                println!("  QEMU (vde):    -netdev vde,id=net0,sock={dir} {NIC}");
                println!("  a tap:         vde_plug2tap -s {dir} TAPNAME");
            }
            if let Some(path) = &seg.stream {
                println!(
                    "  QEMU (stream): -netdev stream,id=net0,server=off,addr.type=unix,addr.path={} {NIC}",
                    path.display()
                );
            }
            if let Some(addr) = &seg.stream_tcp {
                println!(
                    "  QEMU (tcp):    -netdev stream,id=net0,server=off,addr.type=inet,addr.host={},addr.port={} {NIC}",
                    addr.ip(),
                    addr.port()
                );
            }
            if let Some(path) = &seg.dgram {
                println!(
                    "  QEMU (dgram):  -netdev dgram,id=net0,local.type=unix,local.path=/tmp/VMNAME.dgram,remote.type=unix,remote.path={} {NIC}",
                    path.display()
                );
            }
        }
        for r in &plan.routers {
            for (iface, seg) in r.interfaces.iter().zip(&r.segments) {
                let addrs: Vec<String> = iface.addresses.iter().map(|a| a.to_string()).collect();
                println!(
                    "router {:?} on segment {seg:?}: {}",
                    r.name,
                    if addrs.is_empty() {
                        "-".into()
                    } else {
                        addrs.join(", ")
                    }
                );
                if let Some((_, d)) = r.dhcp.iter().find(|(i, _)| *i == iface.name) {
                    println!("  DHCP:          {}", d.ranges.join(", "));
                }
            }
            if let Some(h) = &r.host {
                println!(
                    "  way out:       the host uplink (the host's own sockets, no privileges){}",
                    h.loopback
                        .map(|a| format!("; {a} reaches the host's 127.0.0.1"))
                        .unwrap_or_default()
                );
                for (proto, listen, to) in &h.forwards {
                    println!("  forward:       {proto:?} {listen} -> {to}");
                }
            }
            if let Some(dns) = &r.dns {
                println!(
                    "  DNS:           on the router's addresses{}",
                    dns.domain
                        .as_deref()
                        .map(|d| format!(", names in {d}"))
                        .unwrap_or_default()
                );
            }
        }
        for n in &plan.networks {
            if n.mode == "isolated" {
                println!(
                    "network {:?} is isolated: guests reach each other and the gateway, nothing beyond",
                    n.name
                );
            }
        }
        println!(
            "inspect:         switchboard ctl -c {} ports | leases | routers",
            plan.control.display()
        );
    }

    /// Forks into the background when asked, then writes the pid file.
    /// The foreground process exits only once the background one has
    /// written it, so a script that runs `switchboard switch -d -p FILE`
    /// finds FILE as soon as the command returns (as with `vde_switch`).
    pub fn detach_if_asked(&mut self, opts: &DaemonOptions) -> Result<(), DaemonError> {
        let ready = if opts.daemonize {
            Some(detach()?)
        } else {
            None
        };
        let written = match &self.pidfile {
            Some(p) => std::fs::write(p, format!("{}\n", std::process::id())).map_err(|e| {
                DaemonError::Setup(format!("cannot write pid file {}: {e}", p.display()))
            }),
            None => Ok(()),
        };
        if let Some(ready) = ready {
            // One byte says "ready"; closing without it says "failed".
            if written.is_ok() {
                let _ = nix::unistd::write(&ready, b"1");
            }
            drop(ready);
        }
        written
    }

    pub(super) fn insert(
        &mut self,
        mut ep: Endpoint,
        interest: Interest,
    ) -> Result<Token, DaemonError> {
        let entry = self.endpoints.vacant_entry();
        let token = Token(entry.key());
        let registry = self.poll.registry();
        let r = match &mut ep {
            Endpoint::Signals(s) => registry.register(s, token, interest),
            Endpoint::ControlListener(l) => registry.register(l, token, interest),
            Endpoint::ControlConn(c) => registry.register(c, token, interest),
            Endpoint::VdeListener { listener, .. } => registry.register(listener, token, interest),
            Endpoint::StreamListener { listener, .. } => {
                registry.register(listener, token, interest)
            }
            Endpoint::DgramHub { hub, .. } => {
                registry.register(&mut hub.borrow_mut().hub, token, interest)
            }
            Endpoint::Handshake { pending, .. } => registry.register(pending, token, interest),
            Endpoint::MgmtListener(l) => registry.register(l, token, interest),
            Endpoint::MgmtConn(c) => registry.register(c, token, interest),
            Endpoint::DnsUpstream(_) => Ok(()),
            Endpoint::Port { plug, .. } => registry.register(plug.as_mut(), token, interest),
        };
        r.map_err(DaemonError::Io)?;
        entry.insert(ep);
        Ok(token)
    }

    pub(super) fn remove(&mut self, token: Token) -> Option<Endpoint> {
        let mut ep = self.endpoints.try_remove(token.0)?;
        let registry = self.poll.registry();
        let _ = match &mut ep {
            Endpoint::Signals(s) => registry.deregister(s),
            Endpoint::ControlListener(l) => registry.deregister(l),
            Endpoint::ControlConn(c) => registry.deregister(c),
            Endpoint::VdeListener { listener, .. } => registry.deregister(listener),
            Endpoint::StreamListener { listener, .. } => registry.deregister(listener),
            Endpoint::DgramHub { hub, .. } => registry.deregister(&mut hub.borrow_mut().hub),
            Endpoint::Handshake { pending, .. } => registry.deregister(pending),
            Endpoint::MgmtListener(l) => registry.deregister(l),
            Endpoint::MgmtConn(c) => registry.deregister(c),
            Endpoint::DnsUpstream(_) => Ok(()),
            Endpoint::Port { plug, .. } => registry.deregister(plug.as_mut()),
        };
        Some(ep)
    }

    /// Gives a port just added its configured 802.1Q VLANs (its untagged
    /// VLAN and the ones it carries tagged), for every kind of port the
    /// configuration can place in a VLAN; `what` names the port in errors.
    pub(super) fn set_port_vlans(
        &mut self,
        port: PortId,
        what: &str,
        untagged: u16,
        tagged: &[u16],
    ) -> Result<(), DaemonError> {
        let vlan_err =
            |e: crate::switch::VlanError| DaemonError::Setup(format!("{what}: VLANs: {e}"));
        self.engine
            .set_untagged_vlan(port, untagged)
            .map_err(vlan_err)?;
        for &t in tagged {
            self.engine.add_tagged_vlan(port, t).map_err(vlan_err)?;
        }
        Ok(())
    }

    /// Attaches a plug to a segment as a new port and starts serving it.
    pub(super) fn add_port(
        &mut self,
        segment: SegmentId,
        req: PortRequest,
        plug: Box<dyn Plug>,
    ) -> Result<PortId, String> {
        let id = self
            .engine
            .add_port(segment, req)
            .map_err(|e| e.to_string())?;
        let ep = Endpoint::Port {
            port: id,
            plug,
            queued: true,
        };
        let token = match self.insert(ep, Interest::READABLE | Interest::WRITABLE) {
            Ok(t) => t,
            Err(e) => {
                self.engine.remove_port(id);
                return Err(e.to_string());
            }
        };
        let bound = self.engine.port_index_bound();
        if self.port_tokens.len() < bound {
            self.port_tokens.resize(bound, None);
        }
        self.port_tokens[id.index()] = Some(token);
        self.forwarder.reserve_ports(bound);
        // Frames may already be waiting; serve the port once without
        // waiting for an edge.
        self.ready.push_back(token);
        if let Some(p) = self.engine.port(id) {
            let seg = self
                .engine
                .segment(segment)
                .map(|s| s.name())
                .unwrap_or("?");
            tracing::info!(
                segment = seg,
                port = p.number(),
                kind = p.kind(),
                description = p.description(),
                "port attached"
            );
        }
        Ok(id)
    }

    pub(super) fn remove_port(&mut self, token: Token) {
        if let Some(Endpoint::Port { port, plug, .. }) = self.remove(token) {
            if let Some(slot) = self.port_tokens.get_mut(port.index()) {
                *slot = None;
            }
            if let Some(p) = self.engine.remove_port(port) {
                let seg = self
                    .engine
                    .segment(p.segment())
                    .map(|s| s.name())
                    .unwrap_or("?");
                tracing::info!(
                    segment = seg,
                    port = p.number(),
                    kind = plug.kind(),
                    description = p.description(),
                    rx = p.counters().rx_frames,
                    tx = p.counters().tx_frames,
                    "port detached"
                );
            }
        }
    }

    pub(super) fn add_stream_listener(
        &mut self,
        segment: SegmentId,
        listener: StreamListener,
        max_frame: usize,
    ) -> Result<(), DaemonError> {
        let options = StreamOptions {
            max_frame,
            ..StreamOptions::default()
        };
        let listener = listener.with_options(options);
        tracing::info!(socket = listener.label(), "QEMU stream socket ready");
        self.insert(
            Endpoint::StreamListener { segment, listener },
            Interest::READABLE,
        )?;
        Ok(())
    }

    fn accept_stream_clients(&mut self, token: Token) {
        loop {
            let Some(Endpoint::StreamListener { segment, listener }) =
                self.endpoints.get_mut(token.0)
            else {
                return;
            };
            let segment = *segment;
            let port = match listener.accept() {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "stream accept failed");
                    return;
                }
            };
            let req = PortRequest {
                number: None,
                kind: "stream",
                description: port.description().to_string(),
                ..Default::default()
            };
            if let Err(e) = self.add_port(segment, req, Box::new(port)) {
                tracing::warn!(error = %e, "stream client refused; connection closed");
            }
        }
    }

    /// Unplugs ports whose peer left without the event loop noticing.
    fn remove_dead_ports(&mut self) {
        let dead: Vec<Token> = self
            .endpoints
            .iter_mut()
            .filter_map(|(k, ep)| match ep {
                Endpoint::Port { plug, .. } => (!plug.check_alive()).then_some(Token(k)),
                _ => None,
            })
            .collect();
        for t in dead {
            self.remove_port(t);
        }
    }

    /// Serves until SIGINT or SIGTERM.
    pub fn run(&mut self) -> Result<(), DaemonError> {
        let mut events = Events::with_capacity(256);
        let mut next_housekeeping = self.clock.now() + HOUSEKEEPING_INTERVAL;
        while !self.stop {
            let now = self.clock.now();
            let mut deadline = next_housekeeping;
            if let Some(t) = self.engine.poll_timeout() {
                deadline = deadline.min(t);
            }
            for r in &self.routers {
                if let Some(t) = r.borrow().router.poll_timeout() {
                    deadline = deadline.min(t);
                }
            }
            if let Some(t) = super::router_port::uplinks_timeout(self) {
                deadline = deadline.min(t);
            }
            let timeout = if self.ready.is_empty() {
                deadline.saturating_since(now)
            } else {
                Duration::ZERO
            };
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DaemonError::Io(e)),
            }
            for ev in events.iter() {
                self.dispatch(
                    ev.token(),
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable(),
                );
            }
            drain_routers(self);
            self.serve_ready_ports();
            reap_gone_peers(self);
            let now = self.clock.now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            routers_timeout(self);
            drain_routers(self);
            super::router_port::service_uplinks(self);
            super::router_services::flush_services(self);
            if now >= next_housekeeping {
                expire_handshakes(self);
                self.remove_dead_ports();
                next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            }
        }
        tracing::info!("shutting down");
        Ok(())
    }

    fn dispatch(&mut self, token: Token, readable: bool, writable: bool) {
        if token.0 >= super::router_port::UPLINK_TOKEN_BASE {
            super::router_port::uplink_ready(self, token, readable, writable);
            return;
        }
        let Some(ep) = self.endpoints.get_mut(token.0) else {
            return;
        };
        match ep {
            Endpoint::Port { plug, queued, .. } => {
                if writable {
                    if let Err(e) = plug.on_writable() {
                        tracing::warn!(error = %e, "port write failed");
                    }
                    // The flush may have emptied a backlog: stop watching
                    // for room (a failure leaves the old registration,
                    // tried again on the next refresh).
                    if let Err(e) = plug.refresh_interest(self.poll.registry(), token) {
                        tracing::debug!(error = %e, "cannot update what the port is watched for");
                    }
                }
                if readable && !*queued {
                    *queued = true;
                    self.ready.push_back(token);
                }
            }
            Endpoint::DgramHub { queued, .. } => {
                if readable && !*queued {
                    *queued = true;
                    self.ready.push_back(token);
                }
            }
            Endpoint::Signals(signals) => {
                for sig in signals.pending() {
                    match sig {
                        SIGHUP => tracing::info!(
                            "SIGHUP ignored (configuration reload is not supported yet)"
                        ),
                        _ => {
                            tracing::info!(signal = sig, "stop requested");
                            self.stop = true;
                        }
                    }
                }
            }
            Endpoint::ControlListener(_) => self.accept_control(),
            Endpoint::ControlConn(conn) => {
                let progress = conn.progress();
                self.control_progress(token, progress);
            }
            Endpoint::VdeListener { .. } => accept_clients(self, token),
            Endpoint::StreamListener { .. } => self.accept_stream_clients(token),
            Endpoint::Handshake { .. } => advance_handshake(self, token),
            Endpoint::MgmtListener(_) => super::mgmt::accept_mgmt(self, token),
            Endpoint::MgmtConn(_) => super::mgmt::serve_mgmt(self, token),
            Endpoint::DnsUpstream(host) => {
                let host = host.clone();
                super::router_services::serve_dns_upstream(self, &host);
            }
        }
    }

    fn serve_ready_ports(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(token) = self.ready.pop_front() else {
                break;
            };
            let clock = self.clock;
            let status = match self.endpoints.get(token.0) {
                Some(Endpoint::DgramHub { .. }) => serve_hub(self, token),
                _ => self.forwarder.serve(
                    token,
                    &mut self.endpoints,
                    &self.port_tokens,
                    &mut self.engine,
                    || clock.now(),
                ),
            };
            drain_routers(self);
            match status {
                Some(RecvStatus::More) => {
                    if let Some(Endpoint::Port { queued, .. } | Endpoint::DgramHub { queued, .. }) =
                        self.endpoints.get_mut(token.0)
                    {
                        *queued = true;
                    }
                    self.ready.push_back(token);
                }
                Some(RecvStatus::Closed) => self.remove_port(token),
                Some(RecvStatus::Drained) | None => {}
            }
        }
    }

    fn accept_control(&mut self) {
        loop {
            let accepted = match self.endpoints.iter_mut().find_map(|(_, ep)| match ep {
                Endpoint::ControlListener(l) => Some(l.accept()),
                _ => None,
            }) {
                Some(Ok(Some(conn))) => conn,
                Some(Ok(None)) | None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "control accept failed");
                    return;
                }
            };
            if let Err(e) = self.insert(
                Endpoint::ControlConn(accepted),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                tracing::warn!(error = %e, "cannot register control client");
            }
        }
    }

    fn control_progress(&mut self, token: Token, progress: ConnProgress) {
        match progress {
            ConnProgress::Waiting => {}
            ConnProgress::Finished => {
                self.remove(token);
            }
            ConnProgress::Request(req) => {
                let doc = match req {
                    Ok(r) => self.answer(&r),
                    Err(e) => Err(e.0),
                };
                let doc = match doc {
                    Ok(result) => json!({ "ok": true, "result": result }),
                    Err(error) => json!({ "ok": false, "error": error }),
                };
                let next = match self.endpoints.get_mut(token.0) {
                    Some(Endpoint::ControlConn(conn)) => conn.reply(&doc),
                    _ => return,
                };
                if let ConnProgress::Finished = next {
                    self.remove(token);
                }
            }
        }
    }

    fn answer(&mut self, req: &Request) -> Result<serde_json::Value, String> {
        let now = self.clock.now();
        let value = match req {
            Request::Ports => {
                serde_json::to_value(views::ports(&self.engine, &|p| self.plug_stats(p)))
            }
            Request::Macs { segment } => {
                let rows = views::macs(&self.engine, segment.as_deref(), now).ok_or_else(|| {
                    format!("no segment named {:?}", segment.as_deref().unwrap_or(""))
                })?;
                serde_json::to_value(rows)
            }
            Request::Vlans { segment } => {
                let rows = views::vlans(&self.engine, segment.as_deref()).ok_or_else(|| {
                    format!("no segment named {:?}", segment.as_deref().unwrap_or(""))
                })?;
                serde_json::to_value(rows)
            }
            Request::Stats => {
                serde_json::to_value(views::stats(&self.engine, now, &|p| self.plug_stats(p)))
            }
            Request::ResetCounters => {
                self.engine.reset_counters(None);
                Ok(serde_json::Value::Null)
            }
            Request::Routers => {
                let rows: Vec<_> = self
                    .routers
                    .iter()
                    .map(|r| {
                        let h = r.borrow();
                        let mut view =
                            router_views::router(&h.router, h.outbox.ports(), &self.engine);
                        view.uplink = h
                            .uplink
                            .as_ref()
                            .and_then(|u| serde_json::to_value(u.counters()).ok());
                        view
                    })
                    .collect();
                serde_json::to_value(rows)
            }
            Request::Routes { router } => {
                let mut rows = Vec::new();
                for h in self.routers_named(router.as_deref())? {
                    router_views::routes(&h.borrow().router, &mut rows);
                }
                serde_json::to_value(rows)
            }
            Request::Arp { router } => {
                let mut rows = Vec::new();
                for h in self.routers_named(router.as_deref())? {
                    router_views::arp(&h.borrow().router, now, &mut rows);
                }
                serde_json::to_value(rows)
            }
            Request::Nat { router } => {
                let rows: Vec<_> = self
                    .routers_named(router.as_deref())?
                    .iter()
                    .filter_map(|h| router_views::nat(&h.borrow().router))
                    .collect();
                serde_json::to_value(rows)
            }
            Request::Conntrack { router } => {
                let mut rows = Vec::new();
                for h in self.routers_named(router.as_deref())? {
                    let h = h.borrow();
                    router_views::conntrack(&h.router, now, &mut rows);
                    if let Some(u) = &h.uplink {
                        router_views::uplink_conntrack(h.router.name(), &u.flows(now), &mut rows);
                    }
                }
                serde_json::to_value(rows)
            }
            Request::NetList => serde_json::to_value(super::networks::list(self)),
            Request::NetInfo { name } => serde_json::to_value(super::networks::info(self, name)?),
            Request::NetDefine { path } => {
                let names = super::networks::define(self, path)?;
                Ok(serde_json::json!({ "defined": names }))
            }
            Request::NetStart { name } => {
                super::networks::start(self, name)?;
                Ok(serde_json::Value::Null)
            }
            Request::NetDestroy { name } => {
                super::networks::destroy(self, name)?;
                Ok(serde_json::Value::Null)
            }
            Request::NetUndefine { name } => {
                super::networks::undefine(self, name)?;
                Ok(serde_json::Value::Null)
            }
            Request::Leases { router } => {
                let mut rows = Vec::new();
                for h in self.routers_named(router.as_deref())? {
                    router_views::leases(&h.borrow().router, now, &mut rows);
                }
                serde_json::to_value(rows)
            }
            Request::ConntrackFlush { router } => {
                let mut flushed = 0;
                for h in self.routers_named(router.as_deref())? {
                    flushed += h.borrow_mut().router.flush_conntrack();
                }
                tracing::info!(flows = flushed, "connection tracking flushed");
                Ok(serde_json::json!({ "flushed": flushed }))
            }
            Request::RouteAdd { router, route } => {
                let host = self.routers_named(Some(router))?.remove(0);
                host.borrow_mut()
                    .router
                    .add_route(route.clone())
                    .map_err(|e| e.to_string())?;
                tracing::info!(router = %router, route = %req.to_line(), "route added");
                Ok(serde_json::Value::Null)
            }
            Request::RouteDel {
                router,
                dest,
                gateway,
                dev,
                metric,
            } => {
                let host = self.routers_named(Some(router))?.remove(0);
                host.borrow_mut()
                    .router
                    .remove_route(*dest, *gateway, dev.as_deref(), *metric)
                    .map_err(|e| e.to_string())?;
                tracing::info!(router = %router, route = %req.to_line(), "route removed");
                Ok(serde_json::Value::Null)
            }
        };
        value.map_err(|e| e.to_string())
    }
}

impl Daemon {
    /// A port's plug counters (empty for a port without a plug of its
    /// own).
    fn plug_stats(&self, port: PortId) -> Vec<(&'static str, u64)> {
        match self
            .port_tokens
            .get(port.index())
            .copied()
            .flatten()
            .and_then(|t| self.endpoints.get(t.0))
        {
            Some(Endpoint::Port { plug, .. }) => plug.stats(),
            _ => Vec::new(),
        }
    }

    /// The router called `name`, or every router for `None`; an error
    /// naming the known routers when there is none by that name.
    fn routers_named(&self, name: Option<&str>) -> Result<Vec<SharedRouter>, String> {
        let found: Vec<SharedRouter> = self
            .routers
            .iter()
            .filter(|r| name.is_none_or(|n| r.borrow().router.name() == n))
            .cloned()
            .collect();
        match name {
            Some(n) if found.is_empty() => {
                let known: Vec<String> = self
                    .routers
                    .iter()
                    .map(|r| r.borrow().router.name().to_string())
                    .collect();
                Err(if known.is_empty() {
                    format!("no router named {n:?}: this switchboard runs no routers")
                } else {
                    format!("no router named {n:?}; known: {}", known.join(", "))
                })
            }
            _ => Ok(found),
        }
    }
}

#[cfg(test)]
impl Daemon {
    /// One turn of the loop, waiting at most `timeout` for events, for
    /// tests that drive a daemon step by step instead of [`run`](Self::run).
    pub(super) fn turn(&mut self, timeout: Duration) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        match self.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            self.dispatch(
                ev.token(),
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_writable(),
            );
        }
        drain_routers(self);
        self.serve_ready_ports();
        reap_gone_peers(self);
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Ports first (their data sockets live inside the switch
        // directories), then listeners and directories.
        let tokens: Vec<usize> = self.endpoints.iter().map(|(k, _)| k).collect();
        for k in tokens {
            self.remove(Token(k));
        }
        // The last references to the dgram hubs: their socket files go.
        self.hubs.clear();
        self.dirs.clear();
        if let Some(p) = &self.pidfile {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Forks; the foreground process waits for the background one to say it is
/// ready (or to fail) and exits accordingly, and never returns. The
/// background process starts a new session, puts /dev/null on its standard
/// streams, keeps the working directory (paths in the plan may be
/// relative), and gets the pipe end to report readiness on.
fn detach() -> Result<std::os::fd::OwnedFd, DaemonError> {
    use nix::unistd::{ForkResult, fork, pipe, setsid};
    let fail =
        |what: &str, e: nix::Error| DaemonError::Setup(format!("cannot daemonize: {what}: {e}"));
    let (rx, tx) = pipe().map_err(|e| fail("pipe", e))?;
    // SAFETY: the daemon is single-threaded at this point (signal-hook's
    // mio source uses a self-pipe, not a thread), so the child may run
    // arbitrary code after fork.
    match unsafe { fork() }.map_err(|e| fail("fork", e))? {
        ForkResult::Parent { .. } => {
            drop(tx);
            let mut byte = [0u8; 1];
            let ok = matches!(nix::unistd::read(&rx, &mut byte), Ok(1));
            std::process::exit(if ok { 0 } else { 1 });
        }
        ForkResult::Child => {
            drop(rx);
            setsid().map_err(|e| fail("setsid", e))?;
            let null = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map_err(|e| DaemonError::Setup(format!("cannot daemonize: /dev/null: {e}")))?;
            for fd in 0..=2 {
                // SAFETY: dup2 onto the standard descriptors, which this
                // process owns; `null` stays open for the call.
                if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
                    return Err(fail("dup2", nix::Error::last()));
                }
            }
            Ok(tx)
        }
    }
}
