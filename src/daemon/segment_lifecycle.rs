//! Segments and routers that come and go while the daemon runs.
//!
//! At start the daemon opens every segment of its plan; later, `switchboard
//! ctl net start|destroy` opens and closes whole networks without touching
//! the others. Both go through here, so a segment opened at runtime is
//! served exactly like one opened at start, and closing one undoes all of
//! it: its ports are unplugged (each logged, as when a client leaves), its
//! listeners, pending VDE handshakes and dgram hub are closed, its socket
//! files and VDE2 switch directory removed the way shutdown removes them
//! (by dropping their owners), and only then is it taken out of the engine,
//! which refuses to drop a segment that still has ports.
//!
//! Handles stay valid across all of this: endpoints are keyed by slab
//! token, switch directories by their slot in `Daemon::dirs`, segments by
//! their engine slot, and none of these shift when one entry goes. A freed
//! slot may be reused by the next segment, so everything that remembers a
//! segment (endpoints, the console's sessions) is cleared here before the
//! segment is removed.
//!
//! A router is closed by name: its interface ports are unplugged and it is
//! dropped from the daemon's list. A segment with a router interface on it
//! is not closed: the router would keep handing frames to the segment
//! under a port handle that a new port may later reuse, so the caller
//! closes the router first.

use super::dgram_hub::open_dgram_hub;
use super::endpoint::Endpoint;
use super::event_loop::{Daemon, DaemonError, apply_socket_permissions};
use super::vde::open_vde_dir;
use crate::config::SegmentPlan;
use crate::switch::{PortId, PortRequest, SegmentId};
use mio::Token;
use std::rc::Rc;
use switchboard_plugs::Plug;
use switchboard_plugs::framing::Framing;
use switchboard_plugs::stream::StreamListener;
use switchboard_plugs::tap::{TapOptions, TapPlug};

/// Creates the segment `seg` describes and opens everything that serves
/// it (VDE2 directory, stream and dgram sockets, taps, VXLAN and UDP
/// tunnel ports). If any of it fails, what was opened is closed again and
/// the segment removed, so a failed `net start` leaves nothing behind.
pub(super) fn open_segment(d: &mut Daemon, seg: &SegmentPlan) -> Result<SegmentId, DaemonError> {
    let id = d
        .engine
        .add_segment(seg.config.clone())
        .map_err(|e| DaemonError::Setup(e.to_string()))?;
    if let Err(e) = attach_all(d, id, seg) {
        if let Err(why) = close_segment(d, id) {
            tracing::warn!(segment = %seg.config.name, error = %why, "cannot undo a segment that failed to open");
        }
        return Err(e);
    }
    super::mgmt::segment_opened(d, id, seg);
    tracing::info!(segment = %seg.config.name, mtu = seg.config.mtu, hub = seg.config.hub, "segment ready");
    Ok(id)
}

/// Everything of `seg` that serves segment `id`.
fn attach_all(d: &mut Daemon, id: SegmentId, seg: &SegmentPlan) -> Result<(), DaemonError> {
    for &vid in &seg.vlans {
        d.engine.create_vlan(id, vid).map_err(|e| {
            DaemonError::Setup(format!("segment {}: vlan {vid}: {e}", seg.config.name))
        })?;
    }
    if let Some(vde) = &seg.vde {
        open_vde_dir(d, id, vde)?;
    }
    let max_frame = seg.config.max_frame_len();
    let perms = seg.vde.as_ref().map(|v| &v.perms);
    if let Some(path) = &seg.stream {
        let listener = StreamListener::bind_unix(path, Framing::Qemu)
            .map_err(|e| DaemonError::Setup(format!("stream socket {}: {e}", path.display())))?;
        apply_socket_permissions(path, perms)?;
        d.add_stream_listener(id, listener, max_frame)?;
    }
    if let Some(addr) = seg.stream_tcp {
        let listener = StreamListener::bind_tcp(addr, Framing::Qemu)
            .map_err(|e| DaemonError::Setup(format!("stream socket tcp:{addr}: {e}")))?;
        d.add_stream_listener(id, listener, max_frame)?;
    }
    if let Some(path) = &seg.dgram {
        open_dgram_hub(d, id, path, seg.config.max_ports)?;
        apply_socket_permissions(path, perms)?;
    }
    for tap in &seg.taps {
        let opts = TapOptions {
            mtu: (seg.config.mtu != 1500).then_some(seg.config.mtu as u16),
            offload: seg.tap_offload,
            napi_thread: seg.tap_napi_thread,
        };
        let plug = TapPlug::open(tap, &opts).map_err(|e| DaemonError::Setup(e.to_string()))?;
        let description = plug.description().to_string();
        let port = d
            .add_port(
                id,
                PortRequest {
                    number: None,
                    kind: "tap",
                    description,
                    ..Default::default()
                },
                Box::new(plug),
            )
            .map_err(|e| DaemonError::Setup(format!("tap {tap}: {e}")))?;
        if let Some(v) = seg.tap_vlans.iter().find(|v| &v.tap == tap) {
            d.set_port_vlans(port, &format!("tap {tap}"), v.untagged, &v.tagged)?;
        }
    }
    super::vxlan::open_vxlan_ports(d, id, &seg.vxlan)?;
    super::tunnels::open_tunnels(d, id, &seg.udp)?;
    Ok(())
}

/// Closes segment `id` and everything serving it (see the [module
/// documentation](self)); the other segments' ports and flows are not
/// touched. Refused, with nothing changed, for an unknown segment or one a
/// router still has an interface on.
pub(super) fn close_segment(d: &mut Daemon, id: SegmentId) -> Result<(), String> {
    let Some(seg) = d.engine.segment(id) else {
        return Err(format!("no segment with handle {}", id.index()));
    };
    let name = seg.name().to_string();
    let ports: Vec<PortId> = seg.ports().to_vec();
    for r in &d.routers {
        let h = r.borrow();
        if h.outbox.ports().iter().flatten().any(|p| ports.contains(p)) {
            return Err(format!(
                "segment {name:?}: router {:?} has an interface on it; close the router first",
                h.router.name()
            ));
        }
    }
    let mut gone: Vec<Token> = Vec::new();
    // Ports first: VDE data sockets live inside the switch directory,
    // which can only go once they are closed (as at shutdown).
    for port in ports {
        gone.extend(unplug(d, port));
    }
    let serving: Vec<Token> = d
        .endpoints
        .iter()
        .filter_map(|(k, ep)| match ep {
            Endpoint::VdeListener { segment, .. }
            | Endpoint::StreamListener { segment, .. }
            | Endpoint::DgramHub { segment, .. }
            | Endpoint::Handshake { segment, .. }
                if *segment == id =>
            {
                Some(Token(k))
            }
            _ => None,
        })
        .collect();
    let mut dirs = Vec::new();
    for &token in &serving {
        // Dropping a listener removes its socket file.
        match d.remove(token) {
            Some(Endpoint::VdeListener { dir, .. }) => dirs.push(dir),
            Some(Endpoint::DgramHub { hub, .. }) => {
                // The daemon's copy is the last one (the peers' plugs went
                // with their ports): dropping it removes the socket file.
                d.hubs.retain(|h| !Rc::ptr_eq(h, &hub));
            }
            _ => {}
        }
    }
    gone.extend(serving);
    // Dropping a switch directory removes `ctl`, leftover data sockets and
    // the directory itself if the daemon created it.
    for i in dirs {
        if let Some(slot) = d.dirs.get_mut(i) {
            *slot = None;
        }
    }
    // A removed token may be handed out again; it must not be served on
    // the strength of its predecessor's readiness.
    d.ready.retain(|t| !gone.contains(t));
    d.engine.remove_segment(id).map_err(|e| e.to_string())?;
    super::mgmt::segment_closed(d, id);
    tracing::info!(segment = %name, "segment closed");
    Ok(())
}

/// Closes the router called `name`: unplugs its interface ports and stops
/// running its timers. False if there is no such router.
#[allow(dead_code)] // until `ctl net destroy` calls it
pub(super) fn close_router(d: &mut Daemon, name: &str) -> bool {
    let Some(i) = d
        .routers
        .iter()
        .position(|r| r.borrow().router.name() == name)
    else {
        return false;
    };
    let host = d.routers.remove(i);
    let ports: Vec<PortId> = host
        .borrow()
        .outbox
        .ports()
        .iter()
        .flatten()
        .copied()
        .collect();
    let mut gone = Vec::new();
    for port in ports {
        gone.extend(unplug(d, port));
    }
    d.ready.retain(|t| !gone.contains(t));
    // Its DNS forwarder's sockets hold the last references to it.
    super::router_services::close_services(d, &host);
    super::router_port::close_uplink(d, &host);
    tracing::info!(router = name, "router closed");
    true
}

/// Unplugs `port`, through its endpoint when it has one (which closes the
/// plug and logs); returns the endpoint's token.
fn unplug(d: &mut Daemon, port: PortId) -> Option<Token> {
    match d.port_tokens.get(port.index()).copied().flatten() {
        Some(t) => {
            d.remove_port(t);
            Some(t)
        }
        None => {
            d.engine.remove_port(port);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigFile, Plan};
    use crate::daemon::DaemonOptions;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use crate::daemon::scratch::Scratch;

    /// Segments a and b, each with a VDE2 directory, a stream socket and a
    /// dgram socket under `dir`.
    fn plan(dir: &Path) -> Plan {
        let p = dir.display();
        let text = format!(
            "control = \"{p}/control\"\n\
             [segments.a]\nvde = \"{p}/a.vde\"\nstream = \"{p}/a.stream\"\ndgram = \"{p}/a.dgram\"\n\
             [segments.b]\nvde = \"{p}/b.vde\"\nstream = \"{p}/b.stream\"\ndgram = \"{p}/b.dgram\"\n\
             mtu = 9000\n"
        );
        ConfigFile::parse(&text, "t").unwrap().into_plan().unwrap()
    }

    /// Turns the loop until `done` holds, for at most two seconds.
    fn drive(d: &mut Daemon, mut done: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !done(d) {
            assert!(Instant::now() < deadline, "the daemon never got there");
            d.turn(Duration::from_millis(20)).unwrap();
        }
    }

    fn stream_ports(d: &Daemon, seg: SegmentId) -> usize {
        d.engine
            .ports()
            .filter(|(_, p)| p.segment() == seg && p.kind() == "stream")
            .count()
    }

    /// A broadcast frame in QEMU stream framing.
    fn framed(src: u8) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[0x52, 0x54, 0, 0, 0, src]);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(60, src);
        let mut out = (f.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&f);
        out
    }

    #[test]
    fn closing_a_segment_removes_it_and_spares_the_other() {
        let dir = Scratch::new("close");
        let plan = plan(&dir.0);
        let mut d = Daemon::new(&plan, &DaemonOptions::default()).unwrap();
        let a = d.engine.segment_by_name("a").unwrap();
        let b = d.engine.segment_by_name("b").unwrap();
        let [b_dir, b_stream, b_dgram] = ["b.vde", "b.stream", "b.dgram"].map(|f| dir.0.join(f));
        assert!(b_dir.join("ctl").exists() && b_stream.exists() && b_dgram.exists());

        let connect = |p: &str| {
            let s = UnixStream::connect(dir.0.join(p)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        };
        let (mut a1, mut a2) = (connect("a.stream"), connect("a.stream"));
        let mut b1 = connect("b.stream");
        // A VDE client still handshaking on b when it closes.
        let pending = UnixStream::connect(b_dir.join("ctl")).unwrap();
        drive(&mut d, |d| {
            stream_ports(d, a) == 2 && stream_ports(d, b) == 1
        });
        drive(&mut d, |d| {
            d.endpoints
                .iter()
                .any(|(_, e)| matches!(e, Endpoint::Handshake { segment, .. } if *segment == b))
        });
        let a_ports: Vec<PortId> = d.engine.segment(a).unwrap().ports().to_vec();

        close_segment(&mut d, b).unwrap();

        assert_eq!(d.engine.segment_by_name("b"), None);
        assert!(d.engine.segment(b).is_none());
        assert_eq!(
            d.engine.ports().filter(|(_, p)| p.segment() == b).count(),
            0
        );
        assert!(!b_stream.exists(), "stream socket left behind");
        assert!(!b_dgram.exists(), "dgram socket left behind");
        assert!(!b_dir.exists(), "switch directory left behind");
        assert_eq!(d.hubs.len(), 1);
        assert_eq!(d.dirs.iter().filter(|x| x.is_some()).count(), 1);
        let serving_b = d.endpoints.iter().any(|(_, e)| match e {
            Endpoint::VdeListener { segment, .. }
            | Endpoint::StreamListener { segment, .. }
            | Endpoint::DgramHub { segment, .. }
            | Endpoint::Handshake { segment, .. } => *segment == b,
            _ => false,
        });
        assert!(!serving_b);
        let mut buf = [0u8; 64];
        assert_eq!(b1.read(&mut buf).unwrap(), 0, "b's client must see EOF");
        drop(pending);

        // a is untouched: same ports, and frames still cross it.
        assert_eq!(d.engine.segment(a).unwrap().ports(), a_ports.as_slice());
        assert!(dir.0.join("a.vde/ctl").exists() && dir.0.join("a.stream").exists());
        let frame = framed(7);
        a1.write_all(&frame).unwrap();
        let mut got = vec![0u8; frame.len()];
        let mut have = 0;
        drive(&mut d, |_| {
            a2.set_nonblocking(true).unwrap();
            if let Ok(n) = a2.read(&mut got[have..]) {
                have += n;
            }
            have == got.len()
        });
        assert_eq!(got, frame);

        // b can be started again on the same paths, as a fresh segment.
        let b_plan = plan.segments.iter().find(|s| s.config.name == "b").unwrap();
        let b2 = open_segment(&mut d, b_plan).unwrap();
        assert_eq!(d.engine.segment_by_name("b"), Some(b2));
        assert_eq!(d.engine.segment(b2).unwrap().config().mtu, 9000);
        assert!(b_dir.join("ctl").exists() && b_stream.exists() && b_dgram.exists());
        let _b3 = connect("b.stream");
        drive(&mut d, |d| stream_ports(d, b2) == 1);
        assert_eq!(stream_ports(&d, a), 2);
    }

    #[test]
    fn a_segment_that_fails_to_open_leaves_nothing() {
        let dir = Scratch::new("fail");
        let plan = plan(&dir.0);
        let mut d = Daemon::new(&plan, &DaemonOptions::default()).unwrap();
        // A new name and stream socket, but a's dgram socket, which is
        // live: opening fails after the segment and its stream socket.
        let mut c = plan.segments[0].clone();
        c.config.name = "c".into();
        c.vde = None;
        c.stream = Some(dir.0.join("c.stream"));
        let err = open_segment(&mut d, &c).unwrap_err().to_string();
        assert!(err.contains("a.dgram"), "{err}");
        assert_eq!(d.engine.segment_by_name("c"), None);
        assert!(
            !dir.0.join("c.stream").exists(),
            "half-opened segment left its socket"
        );
        assert_eq!(d.engine.segments().count(), 2);
        assert!(dir.0.join("a.dgram").exists(), "a's socket was disturbed");
    }

    #[test]
    fn closing_a_router_unplugs_its_interfaces_and_frees_the_segment() {
        let dir = Scratch::new("router");
        let p = dir.0.display();
        let text = format!(
            "control = \"{p}/control\"\n\
             [segments.a]\nstream = \"{p}/a.stream\"\n\
             [segments.b]\nstream = \"{p}/b.stream\"\n\
             [routers.r.interfaces.x]\nsegment = \"a\"\naddresses = [\"10.0.0.1/24\"]\n\
             [routers.r.interfaces.y]\nsegment = \"b\"\naddresses = [\"10.0.1.1/24\"]\n"
        );
        let plan = ConfigFile::parse(&text, "t").unwrap().into_plan().unwrap();
        let mut d = Daemon::new(&plan, &DaemonOptions::default()).unwrap();
        let b = d.engine.segment_by_name("b").unwrap();
        let routed = |d: &Daemon| {
            d.engine
                .ports()
                .filter(|(_, p)| p.kind() == "router")
                .count()
        };
        assert_eq!(routed(&d), 2);
        let err = close_segment(&mut d, b).unwrap_err();
        assert_eq!(
            err,
            "segment \"b\": router \"r\" has an interface on it; close the router first"
        );
        assert!(dir.0.join("b.stream").exists());

        assert!(!close_router(&mut d, "nope"));
        assert!(close_router(&mut d, "r"));
        assert_eq!(routed(&d), 0);
        assert!(d.routers.is_empty());
        assert!(d.port_tokens.iter().all(Option::is_none));
        close_segment(&mut d, b).unwrap();
        assert!(!dir.0.join("b.stream").exists());
        assert_eq!(
            close_segment(&mut d, b).unwrap_err(),
            format!("no segment with handle {}", b.index())
        );
    }

    /// Sends `line` to the console and returns its reply, prompt included.
    fn console(d: &mut Daemon, s: &mut UnixStream, line: &str) -> String {
        s.write_all(line.as_bytes()).unwrap();
        s.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        drive(d, |_| {
            let mut buf = [0u8; 4096];
            if let Ok(n) = s.read(&mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            got.ends_with(b"vde$ ")
        });
        String::from_utf8(got).unwrap()
    }

    #[test]
    fn console_sessions_leave_a_closed_segment_and_see_a_new_one() {
        let dir = Scratch::new("console");
        let mut plan = plan(&dir.0);
        plan.mgmt = Some(crate::config::MgmtPlan {
            path: dir.0.join("mgmt"),
            mode: 0o600,
            group: None,
        });
        let mut d = Daemon::new(&plan, &DaemonOptions::default()).unwrap();
        let b = d.engine.segment_by_name("b").unwrap();
        let mut s = UnixStream::connect(dir.0.join("mgmt")).unwrap();
        let banner = console(&mut d, &mut s, "");
        assert!(banner.starts_with("VDE switch"), "{banner}");
        console(&mut d, &mut s, "segment b\n");
        assert_eq!(
            console(&mut d, &mut s, "segment\n"),
            "0000 DATA END WITH '.'\n  a\n* b\n.\n1000 Success\n\nvde$ "
        );

        close_segment(&mut d, b).unwrap();
        // c takes b's slot; the session must not slide onto it.
        let mut c = plan.segments[1].clone();
        c.config.name = "c".into();
        c.vde = Some(crate::config::VdePlan {
            dir: dir.0.join("c.vde"),
            perms: Default::default(),
        });
        c.stream = None;
        c.dgram = None;
        assert_eq!(open_segment(&mut d, &c).unwrap(), b);
        assert_eq!(
            console(&mut d, &mut s, "segment\n"),
            "0000 DATA END WITH '.'\n* a\n  c\n.\n1000 Success\n\nvde$ "
        );
        console(&mut d, &mut s, "segment c\n");
        let info = console(&mut d, &mut s, "ds/showinfo\n");
        let want = format!("ctl dir {}/c.vde\n", dir.0.display());
        assert!(info.contains(&want), "{info}");
    }
}
