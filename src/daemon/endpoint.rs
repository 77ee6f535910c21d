//! Everything the event loop watches, under one type.

use super::dgram_hub::SharedHub;
use super::mgmt::{MgmtConn, MgmtListener};
use crate::control::server::{ControlConn, ControlListener};
use crate::switch::{PortId, SegmentId};
use signal_hook_mio::v1_0::Signals;
use switchboard_plugs::Plug;
use switchboard_plugs::stream::StreamListener;
use switchboard_plugs::vde::{PendingHandshake, VdeListener};

/// One watched descriptor (or group of descriptors sharing a token).
pub(crate) enum Endpoint {
    /// SIGINT/SIGTERM/SIGHUP delivered as readiness.
    Signals(Signals),
    /// The control socket's listener.
    ControlListener(ControlListener),
    /// One `switchboard ctl` client.
    ControlConn(ControlConn),
    /// A VDE2 `ctl` listener serving a segment.
    VdeListener {
        /// The segment new ports join.
        segment: SegmentId,
        /// Index of the switch directory in the daemon's list.
        dir: usize,
        /// The listener.
        listener: VdeListener,
    },
    /// A stream socket (QEMU framing) accepting clients for a segment.
    StreamListener {
        /// The segment new ports join.
        segment: SegmentId,
        /// The listener.
        listener: StreamListener,
    },
    /// A Unix datagram socket for QEMU `-netdev dgram` clients: every
    /// source path is a peer with its own [`Endpoint::Port`] (whose plug
    /// sends through this socket); this endpoint receives for all of them.
    DgramHub {
        /// The segment the peers' ports join.
        segment: SegmentId,
        /// The socket and the peer table, shared with the peers' plugs.
        hub: SharedHub,
        /// Whether the hub sits on the ready queue.
        queued: bool,
    },
    /// A VDE2 client whose request has not fully arrived.
    Handshake {
        /// The segment the port will join.
        segment: SegmentId,
        /// Index of the switch directory.
        dir: usize,
        /// The connection (boxed: it holds the request buffer, and every
        /// endpoint in the slab would otherwise be that large).
        pending: Box<PendingHandshake>,
    },
    /// The `vde_switch` console socket (`-M PATH`).
    MgmtListener(MgmtListener),
    /// One console client.
    MgmtConn(MgmtConn),
    /// A router's DNS forwarder's host sockets (its UDP socket and the
    /// waker of its TCP exchanges: two entries, registered by the sockets'
    /// owner, not by the loop).
    DnsUpstream(super::router_port::SharedRouter),
    /// A port: frames in and out.
    Port {
        /// The core's handle.
        port: PortId,
        /// The frame endpoint.
        plug: Box<dyn Plug>,
        /// Whether the port sits on the ready queue.
        queued: bool,
    },
}
