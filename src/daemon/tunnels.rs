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
//!
//! Loop protection needs two things from here: on a `mesh` segment the
//! tunnels are split-horizon ports, and every tunnel gets a link key both
//! of its ends compute alike (from the UDP port pair, which wildcard binds
//! do not hide), so the storm guards at both ends of a looping pair of
//! cables block the same cable.

use super::event_loop::{Daemon, DaemonError};
use crate::config::UdpTunnelPlan;
use crate::switch::{PortRequest, SegmentId};
use switchboard_plugs::Plug;
use switchboard_plugs::udp_tunnel::UdpTunnel;

/// Binds one tunnel per entry of `tunnels`, attaches each to `segment` and
/// gives it its untagged VLAN if the entry names one.
pub(super) fn open_tunnels(
    d: &mut Daemon,
    segment: SegmentId,
    tunnels: &[UdpTunnelPlan],
) -> Result<(), DaemonError> {
    let mesh = d.engine.segment(segment).is_some_and(|s| s.config().mesh);
    for t in tunnels {
        let what = format!("udp tunnel {} -> {}", t.local, t.remote);
        let plug = UdpTunnel::open(t.local, t.remote, t.key.as_ref())
            .map_err(|e| DaemonError::Setup(format!("{what}: {e}")))?;
        let description = plug.description().to_string();
        let port = d
            .add_port(
                segment,
                PortRequest {
                    number: None,
                    kind: "udp",
                    description,
                    split_horizon: mesh,
                    link_key: link_key(t.local.port(), t.remote.port()),
                },
                Box::new(plug),
            )
            .map_err(|e| DaemonError::Setup(format!("{what}: {e}")))?;
        if let Some(vlan) = t.vlan {
            d.set_port_vlans(port, &what, vlan, &[])?;
        }
        match &t.key_file {
            Some(f) => {
                tracing::info!(local = %t.local, remote = %t.remote, key_file = %f.display(), "udp tunnel ready, sealed")
            }
            None => tracing::info!(local = %t.local, remote = %t.remote, "udp tunnel ready"),
        }
    }
    Ok(())
}

/// The same number at both ends of a tunnel (one end's local port is the
/// other's remote port), never 0, distinct from VXLAN ports' keys.
fn link_key(local: u16, remote: u16) -> u64 {
    let (lo, hi) = (local.min(remote), local.max(remote));
    1 << 40 | u64::from(lo) << 16 | u64::from(hi)
}

#[cfg(test)]
mod tests {
    use super::link_key;

    #[test]
    fn both_ends_share_the_link_key() {
        assert_eq!(link_key(5012, 6012), link_key(6012, 5012));
        assert_ne!(link_key(5012, 5012), link_key(5013, 5013));
        assert_ne!(link_key(0, 0), 0);
    }
}
