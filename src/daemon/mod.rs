//! The daemon: one mio event loop that moves frames between plugs and the
//! core.
//!
//! # Theory of operation
//!
//! Every descriptor the daemon watches is an *endpoint* in one slab, and its
//! slab key is its mio token. Ports are endpoints that carry frames; the
//! others are listeners (VDE `ctl` sockets, the control socket), handshakes in
//! progress, control connections and the signal pipe.
//!
//! mio is edge-triggered, so a readable port goes on a ready queue and stays
//! there until its plug reports it drained. (Taps are registered
//! level-triggered instead, so that an idle tap can be read one frame per
//! poll; see `switchboard_plugs::tap`.) Each turn of the loop serves every
//! queued port once, one batch each, which keeps one busy port from starving
//! the others. Serving a port means: receive a batch (one `recvmmsg` on
//! datagram sockets, one `io_uring_enter` on a loaded tap), ask the engine where each frame goes, gather the frames
//! per egress port, and hand each egress port its frames in one call (one
//! `sendmmsg`, or one `io_uring_enter` for a tap). Nothing on that path allocates. Timers come from the engine's
//! next deadline. SIGINT and SIGTERM end the loop; dropping the endpoints
//! removes every socket file the daemon created.
//!
//! A QEMU `-netdev dgram` hub is one socket for many ports: the hub endpoint
//! sits on the ready queue like a port and receives one batch per turn,
//! attaches a port for each new source path first, then forwards each frame
//! from its own peer's port. The peers' ports send through the hub socket,
//! and are removed when a send finds their socket gone or when the peer has
//! sent nothing for five minutes (`dgram_hub::HUB_PEER_IDLE_TIMEOUT`); see
//! the `dgram_hub` module.

mod dgram_hub;
pub mod dns_upstream;
mod endpoint;
mod event_loop;
mod fd_limit;
mod forward;
pub(crate) mod host_uplink;
mod mgmt;
mod networks;
mod router_port;
mod router_services;
#[cfg(test)]
mod scratch;
mod segment_lifecycle;
mod soft_offload;
mod tunnels;
mod vde;
mod vxlan;

pub use event_loop::{Daemon, DaemonError, DaemonOptions};

use crate::config::Plan;

/// Builds the daemon for `plan` (binding every socket and opening every tap,
/// so configuration errors surface before anything is detached) and runs it
/// until a signal asks it to stop.
pub fn run(plan: Plan, opts: DaemonOptions) -> Result<(), DaemonError> {
    fd_limit::raise_fd_limit();
    let mut daemon = Daemon::new(&plan, &opts)?;
    if opts.print_attach_hints {
        daemon.print_attach_hints(&plan);
    }
    daemon.detach_if_asked(&opts)?;
    daemon.run()
}
