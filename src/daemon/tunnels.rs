//! Opening a segment's UDP tunnels.
//!
//! A tunnel is an ordinary port of its segment: one plug, one connected UDP
//! socket, served by the event loop like a tap, so a remote that stops
//! answering affects only that port (its frames go out and nothing comes
//! back, which `ctl ports` shows). Sealing, replay protection and the
//! counting of refused datagrams live in the plug
//! (`switchboard_plugs::udp_tunnel`); this module only binds the sockets
//! at start-up, where a bad address or a port in use stops the daemon with
//! a message naming the tunnel.

use super::event_loop::{Daemon, DaemonError};
use crate::config::UdpTunnelPlan;
use crate::switch::{PortRequest, SegmentId};
use switchboard_plugs::Plug;
use switchboard_plugs::udp_tunnel::UdpTunnel;

/// Binds one tunnel per entry of `tunnels` and attaches each to `segment`.
pub(super) fn open_tunnels(
    d: &mut Daemon,
    segment: SegmentId,
    tunnels: &[UdpTunnelPlan],
) -> Result<(), DaemonError> {
    for t in tunnels {
        let what = format!("udp tunnel {} -> {}", t.local, t.remote);
        let plug = UdpTunnel::open(t.local, t.remote, t.key.as_ref())
            .map_err(|e| DaemonError::Setup(format!("{what}: {e}")))?;
        let description = plug.description().to_string();
        d.add_port(
            segment,
            PortRequest {
                number: None,
                kind: "udp",
                description,
            },
            Box::new(plug),
        )
        .map_err(|e| DaemonError::Setup(format!("{what}: {e}")))?;
        match &t.key_file {
            Some(f) => {
                tracing::info!(local = %t.local, remote = %t.remote, key_file = %f.display(), "udp tunnel ready, sealed")
            }
            None => tracing::info!(local = %t.local, remote = %t.remote, "udp tunnel ready"),
        }
    }
    Ok(())
}
