//! Routers in the event loop: each interface is a port whose plug hands
//! frames to the router core, and whatever the router emits enters the
//! segments from those ports.
//!
//! A router and its output queue live in one [`RouterHost`] shared by
//! `Rc<RefCell<_>>` between the daemon and the interface plugs (the same
//! pattern as the dgram hub). The segment delivers frames to an interface
//! port through [`RouterIfacePlug::send_batch`], which runs the router on
//! them; the router writes its frames into the host's [`Outbox`], a short
//! queue of frame batches. The daemon then drains the outbox
//! ([`drain_routers`]) and forwards each batch like one received from the
//! interfaces' ports, which may feed another router, and so on, for a
//! bounded number of rounds. No borrow of a host is held while frames are
//! forwarded, so routers feeding each other never overlap their borrows.

use super::event_loop::{Daemon, DaemonError};
use crate::config::RouterPlan;
use crate::router::{ETHERNET_HEADER_LEN, IfaceId, Router, Transmit};
use crate::switch::{PortId, PortRequest};
use crate::time::MonotonicClock;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use switchboard_plugs::batch::BATCH_CAPACITY;
use switchboard_plugs::offload::Offload;
use switchboard_plugs::{FrameBatch, Plug, RecvStatus, TxReport};

/// Batches a router may have queued before its further frames are dropped
/// (and counted by the router as `tx_no_buffer`): 8 × 32 frames is far more
/// than one input batch can produce, yet bounds the memory a routing loop
/// or an ARP storm can take.
const OUTBOX_BATCHES: usize = 8;

/// Rounds of "drain every router, forward its frames" per call of
/// [`drain_routers`]. Frames bouncing between routers beyond that wait for
/// the next turn of the loop (their TTL ends a true loop anyway).
const DRAIN_ROUNDS: usize = 16;

/// A router and where its frames go.
pub(crate) struct RouterHost {
    pub(crate) router: Router,
    pub(crate) outbox: Outbox,
    pub(crate) clock: MonotonicClock,
    /// Lease files and DNS sockets of the router's services.
    pub(crate) services: super::router_services::ServiceIo,
    /// The host uplink behind the router's host interface, if it has one.
    pub(crate) uplink: Option<super::host_uplink::HostUplink>,
}

/// Tokens of host uplink sockets start here, far above the daemon's slab
/// tokens; each uplink gets its own 2^32 range above it.
pub(crate) const UPLINK_TOKEN_BASE: usize = 1 << 40;

/// Shared between the daemon and the router's interface plugs.
pub(crate) type SharedRouter = Rc<RefCell<RouterHost>>;

/// The router's frames on their way into the segments: batches, each frame
/// tagged with the port it enters from.
pub(crate) struct Outbox {
    /// Port of each interface (`IfaceId` index).
    ports: Vec<Option<PortId>>,
    /// Batches with frames, oldest first; the last one is being filled.
    queued: VecDeque<(FrameBatch, [Option<PortId>; BATCH_CAPACITY])>,
    /// Empty batches to reuse.
    spare: Vec<FrameBatch>,
    /// The offload work of the frame being handled, carried over to the
    /// router's rewrite of it.
    current: Offload,
    /// IPv4 packets the router sent out of its host interface, for the
    /// host uplink; bounded by [`HOST_QUEUE`].
    pub(crate) host_packets: VecDeque<Vec<u8>>,
    /// Emptied packet buffers to reuse.
    pub(crate) spare_packets: Vec<Vec<u8>>,
    /// Packets for the host uplink dropped because the queue was full.
    pub(crate) host_dropped: u64,
}

/// Packets the router may queue for the host uplink before further ones
/// are dropped (TCP then backs off, as on a full link).
const HOST_QUEUE: usize = 1024;

impl Outbox {
    fn new(interfaces: usize) -> Outbox {
        Outbox {
            ports: vec![None; interfaces],
            queued: VecDeque::new(),
            spare: Vec::new(),
            current: Offload::default(),
            host_packets: VecDeque::new(),
            spare_packets: Vec::new(),
            host_dropped: 0,
        }
    }

    /// The port of each interface, by `IfaceId` index.
    pub(crate) fn ports(&self) -> &[Option<PortId>] {
        &self.ports
    }

    /// Takes the oldest batch with frames, if any.
    fn pop(&mut self) -> Option<(FrameBatch, [Option<PortId>; BATCH_CAPACITY])> {
        match self.queued.front() {
            Some((b, _)) if !b.is_empty() => self.queued.pop_front(),
            _ => None,
        }
    }

    /// Returns a forwarded batch for reuse.
    fn recycle(&mut self, mut batch: FrameBatch) {
        batch.clear();
        self.spare.push(batch);
    }
}

impl Transmit for Outbox {
    fn buffer(&mut self) -> Option<&mut [u8]> {
        let need_new = match self.queued.back() {
            None => true,
            Some((b, _)) => b.is_full(),
        };
        if need_new {
            if self.queued.len() >= OUTBOX_BATCHES {
                return None;
            }
            let batch = self.spare.pop().unwrap_or_default();
            self.queued.push_back((batch, [None; BATCH_CAPACITY]));
        }
        self.queued.back_mut().and_then(|(b, _)| b.next_slot())
    }

    fn send(&mut self, iface: IfaceId, len: usize) {
        self.commit(iface, len, Offload::default());
    }

    fn send_forwarded(&mut self, iface: IfaceId, len: usize) {
        self.commit(iface, len, self.current);
    }

    /// The packet is copied out of the slot, which is not committed as a
    /// frame and is reused for the next one.
    fn send_packet(&mut self, _iface: IfaceId, len: usize) {
        if self.host_packets.len() >= HOST_QUEUE {
            self.host_dropped += 1;
            return;
        }
        let Some(slot) = self.queued.back_mut().and_then(|(b, _)| b.next_slot()) else {
            return;
        };
        let Some(packet) = slot.get(ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + len) else {
            return;
        };
        let mut p = self.spare_packets.pop().unwrap_or_default();
        p.clear();
        p.extend_from_slice(packet);
        self.host_packets.push_back(p);
    }
}

impl Outbox {
    fn commit(&mut self, iface: IfaceId, len: usize, offload: Offload) {
        let port = self.ports.get(iface.index()).copied().flatten();
        if let Some((batch, ingress)) = self.queued.back_mut() {
            let i = batch.len();
            if i < BATCH_CAPACITY {
                ingress[i] = port;
                batch.commit_offloaded(len, offload);
            }
        }
    }
}

/// One interface of a router, as the segment sees it: a port.
pub(crate) struct RouterIfacePlug {
    host: SharedRouter,
    iface: IfaceId,
    description: String,
    /// Whether super-frames may reach the router whole (not when it
    /// translates addresses: a pending checksum would need different
    /// arithmetic).
    offload: bool,
}

impl Plug for RouterIfacePlug {
    /// Nothing to read: the router's frames leave through the outbox.
    fn recv_batch(&mut self, _batch: &mut FrameBatch) -> io::Result<RecvStatus> {
        Ok(RecvStatus::Drained)
    }

    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport {
        let mut host = self.host.borrow_mut();
        let host = &mut *host;
        let now = host.clock.now();
        let mut report = TxReport::default();
        for &i in which {
            let i = usize::from(i);
            let frame = batch.frame(i);
            host.outbox.current = *batch.offload(i);
            host.router.handle_frame_sized(
                now,
                self.iface,
                frame,
                batch.wire_len(i),
                &mut host.outbox,
            );
            report.sent += 1;
            report.sent_bytes += frame.len();
        }
        host.outbox.current = Offload::default();
        report
    }

    /// Super-frames and pending checksums are routed as they are: the
    /// router rewrites only Ethernet and the IPv4 header, and the work
    /// travels on with the frame to the egress port (done there by the tap
    /// or by software segmentation). Not for a router with NAT, whose port
    /// rewrites would need a pending checksum's own arithmetic.
    fn accepts_offload(&self) -> bool {
        self.offload
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn kind(&self) -> &'static str {
        "router"
    }
}

// No descriptor of its own: the mio registration is a no-op.
switchboard_plugs::no_descriptor_source!(RouterIfacePlug);

/// Builds a router, plugs each of its interfaces into its segment, and
/// queues its gratuitous ARP.
pub(super) fn open_router(d: &mut Daemon, plan: &RouterPlan) -> Result<(), DaemonError> {
    let router = plan
        .build()
        .map_err(|e| DaemonError::Setup(format!("router {}: {e}", plan.name)))?;
    let host = Rc::new(RefCell::new(RouterHost {
        outbox: Outbox::new(plan.interfaces.len()),
        router,
        clock: d.clock,
        services: Default::default(),
        uplink: None,
    }));
    let mut added: Vec<PortId> = Vec::new();
    if let Err(e) = plug_interfaces(d, plan, &host, &mut added) {
        // Undo: a router that failed to start leaves no port behind.
        for port in added {
            if let Some(t) = d.port_tokens.get(port.index()).copied().flatten() {
                d.remove_port(t);
            }
        }
        return Err(e);
    }
    {
        let mut h = host.borrow_mut();
        let h = &mut *h;
        h.router.start(&mut h.outbox);
    }
    let addrs: Vec<String> = plan
        .interfaces
        .iter()
        .flat_map(|i| i.addresses.iter().map(|a| format!("{}={a}", i.name)))
        .collect();
    let opened = super::router_services::open_services(d, &host, &plan.lease_files)
        .and_then(|()| open_uplink(d, plan, &host));
    if let Err(e) = opened {
        let ports: Vec<PortId> = host
            .borrow()
            .outbox
            .ports
            .iter()
            .flatten()
            .copied()
            .collect();
        for port in ports {
            if let Some(t) = d.port_tokens.get(port.index()).copied().flatten() {
                d.remove_port(t);
            }
        }
        super::router_services::close_services(d, &host);
        close_uplink(d, &host);
        return Err(e);
    }
    tracing::info!(router = %plan.name, interfaces = plan.interfaces.len(), addresses = %addrs.join(" "), "router ready");
    d.routers.push(host);
    Ok(())
}

/// Plugs each interface of the router into its segment; `added` collects
/// the ports made, for the caller to undo them on failure.
fn plug_interfaces(
    d: &mut Daemon,
    plan: &RouterPlan,
    host: &SharedRouter,
    added: &mut Vec<PortId>,
) -> Result<(), DaemonError> {
    for (i, (iface, segment)) in plan.interfaces.iter().zip(&plan.segments).enumerate() {
        let seg = d.engine.segment_by_name(segment).ok_or_else(|| {
            DaemonError::Setup(format!(
                "router {}: interface {}: no segment {segment:?}",
                plan.name, iface.name
            ))
        })?;
        let description = format!("router {} {} {}", plan.name, iface.name, iface.mac);
        let plug = RouterIfacePlug {
            host: host.clone(),
            iface: IfaceId(i as u16),
            description: description.clone(),
            offload: {
                let r = &host.borrow().router;
                r.nat().is_none() && r.host_interface().is_none()
            },
        };
        let port = d
            .add_port(
                seg,
                PortRequest {
                    number: None,
                    kind: "router",
                    description,
                    ..Default::default()
                },
                Box::new(plug),
            )
            .map_err(|e| {
                DaemonError::Setup(format!(
                    "router {}: interface {}: {e}",
                    plan.name, iface.name
                ))
            })?;
        added.push(port);
        host.borrow_mut().outbox.ports[i] = Some(port);
    }
    Ok(())
}

/// Opens the host uplink of a router that has a host interface: its
/// forwarded host ports are bound here, so a taken port fails the start.
fn open_uplink(d: &mut Daemon, plan: &RouterPlan, host: &SharedRouter) -> Result<(), DaemonError> {
    let Some(hp) = &plan.host else {
        return Ok(());
    };
    let lan = plan.interfaces.iter().filter(|i| !i.addresses.is_empty());
    let mtu = lan
        .clone()
        .map(|i| usize::from(i.mtu))
        .max()
        .unwrap_or(1500);
    let source = hp
        .loopback
        .or_else(|| {
            plan.interfaces
                .iter()
                .flat_map(|i| i.addresses.first())
                .map(|a| a.addr())
                .next()
        })
        .ok_or_else(|| {
            DaemonError::Setup(format!(
                "router {}: the host uplink needs an address on the router",
                plan.name
            ))
        })?;
    let mut config = super::host_uplink::UplinkConfig::new(source);
    config.mtu = mtu;
    config.loopback = hp.loopback;
    config.forwards = hp
        .forwards
        .iter()
        .map(|(proto, listen, guest)| super::host_uplink::HostForward {
            proto: *proto,
            listen: *listen,
            guest: *guest,
        })
        .collect();
    (config.max_tcp, config.max_udp, config.max_icmp) = hp.max_flows;
    let base = UPLINK_TOKEN_BASE + (d.next_uplink << 32);
    d.next_uplink += 1;
    let uplink = super::host_uplink::HostUplink::new(config, d.poll.registry(), base)
        .map_err(|e| DaemonError::Setup(format!("router {}: host uplink: {e}", plan.name)))?;
    tracing::info!(router = %plan.name, loopback = ?hp.loopback, forwards = hp.forwards.len(), "host uplink ready");
    host.borrow_mut().uplink = Some(uplink);
    Ok(())
}

/// Closes a router's host uplink: its flows' sockets and forwarded ports.
pub(super) fn close_uplink(d: &mut Daemon, host: &SharedRouter) {
    if let Some(mut u) = host.borrow_mut().uplink.take() {
        u.close(d.poll.registry());
    }
}

/// A readiness event on a host uplink's socket.
pub(super) fn uplink_ready(d: &mut Daemon, token: mio::Token, readable: bool, writable: bool) {
    let now = d.clock.now();
    let base = UPLINK_TOKEN_BASE + (((token.0 - UPLINK_TOKEN_BASE) >> 32) << 32);
    for host in &d.routers {
        let mut h = host.borrow_mut();
        if let Some(u) = &mut h.uplink
            && u.base() == base
        {
            u.ready(now, d.poll.registry(), token, readable, writable);
            return;
        }
    }
}

/// Moves packets between routers and their host uplinks: what the routers
/// sent out of their host interfaces goes to the uplinks, what the uplinks
/// have for the guests is routed in, and the routers' output is forwarded.
pub(super) fn service_uplinks(d: &mut Daemon) {
    for r in 0..d.routers.len() {
        let host = d.routers[r].clone();
        let now = {
            let mut h = host.borrow_mut();
            let RouterHost {
                outbox,
                uplink,
                clock,
                ..
            } = &mut *h;
            let Some(uplink) = uplink else {
                continue;
            };
            let now = clock.now();
            while let Some(p) = outbox.host_packets.pop_front() {
                uplink.send(now, &p);
                outbox.spare_packets.push(p);
            }
            uplink.poll(now, d.poll.registry());
            now
        };
        // In chunks the router's outbox always has room for, forwarded
        // before the next: a window's worth of segments at once would
        // overflow it, and every drop costs the guest's TCP a timeout.
        for _ in 0..UPLINK_ROUNDS {
            let delivered = {
                let mut h = host.borrow_mut();
                let RouterHost {
                    router,
                    outbox,
                    uplink,
                    ..
                } = &mut *h;
                let Some(uplink) = uplink else {
                    break;
                };
                uplink.receive(now, UPLINK_CHUNK, &mut |p| {
                    router.handle_host_packet(now, p, outbox)
                })
            };
            drain_routers(d);
            if delivered < UPLINK_CHUNK {
                break;
            }
        }
    }
}

/// Packets taken from an uplink before the router's output is forwarded:
/// well under the outbox's [`OUTBOX_BATCHES`] × 32 frames, with room for
/// the ARP and ICMP a packet may add.
const UPLINK_CHUNK: usize = 96;

/// Chunks per uplink per turn of the loop; the rest waits for the next
/// turn (the uplink's `poll_timeout` says it is due at once).
const UPLINK_ROUNDS: usize = 16;

/// The earliest deadline of the host uplinks.
pub(super) fn uplinks_timeout(d: &Daemon) -> Option<crate::time::Instant> {
    d.routers
        .iter()
        .filter_map(|h| h.borrow().uplink.as_ref().and_then(|u| u.poll_timeout()))
        .min()
}

/// Runs the routers' timers that are due.
pub(super) fn routers_timeout(d: &mut Daemon) {
    let now = d.clock.now();
    for host in &d.routers {
        let mut h = host.borrow_mut();
        let h = &mut *h;
        if h.router.poll_timeout().is_some_and(|t| t <= now) {
            h.router.handle_timeout(now, &mut h.outbox);
        }
    }
}

/// Forwards what the routers emitted into the segments, round after round
/// while routers keep feeding each other, up to [`DRAIN_ROUNDS`].
pub(super) fn drain_routers(d: &mut Daemon) {
    for _ in 0..DRAIN_ROUNDS {
        let mut any = false;
        for r in 0..d.routers.len() {
            let popped = d.routers[r].borrow_mut().outbox.pop();
            let Some((batch, ingress)) = popped else {
                continue;
            };
            any = true;
            let now = d.clock.now();
            d.forwarder.forward_from(
                &batch,
                &ingress,
                &mut d.endpoints,
                &d.port_tokens,
                &mut d.engine,
                now,
            );
            d.routers[r].borrow_mut().outbox.recycle(batch);
        }
        if !any {
            return;
        }
    }
}
