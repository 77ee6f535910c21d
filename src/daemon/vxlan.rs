//! Opening a segment's VXLAN ports.
//!
//! A VXLAN port is an ordinary port of its segment: one plug, one socket,
//! served by the event loop like a tap. What makes it special (many remote
//! VTEPs behind one port, head-end replication, learning inner MACs) lives
//! in the plug, so this module only binds the sockets at start-up, where a
//! configuration error (an address not on this host, a port in use, say by
//! a kernel vxlan device) stops the daemon with a message naming the port.

use super::event_loop::{Daemon, DaemonError};
use crate::config::VxlanPortPlan;
use crate::switch::{PortRequest, SegmentId};
use switchboard_plugs::Plug;
use switchboard_plugs::vxlan::VxlanPlug;

/// Binds one VXLAN port per entry of `ports`, attaches each to `segment`
/// and, when the entry names a VLAN, makes that its untagged VLAN, so only
/// that VLAN of the segment crosses the VNI.
pub(super) fn open_vxlan_ports(
    d: &mut Daemon,
    segment: SegmentId,
    ports: &[VxlanPortPlan],
) -> Result<(), DaemonError> {
    let mesh = d.engine.segment(segment).is_some_and(|s| s.config().mesh);
    for p in ports {
        let c = &p.config;
        let what = format!("vxlan vni {} on {}", c.vni, c.local);
        let plug = VxlanPlug::open(c).map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                " (a kernel vxlan device with the same dstport in this namespace holds it)"
            } else {
                ""
            };
            DaemonError::Setup(format!("{what}: {e}{hint}"))
        })?;
        let description = plug.description().to_string();
        let port = d
            .add_port(
                segment,
                PortRequest {
                    number: None,
                    kind: "vxlan",
                    description,
                    split_horizon: mesh,
                    link_key: 2 << 40 | u64::from(c.vni.get()) << 16 | u64::from(c.port),
                },
                Box::new(plug),
            )
            .map_err(|e| DaemonError::Setup(format!("{what}: {e}")))?;
        if let Some(vlan) = p.vlan {
            d.set_port_vlans(port, &what, vlan, &[])?;
        }
        tracing::info!(vni = %c.vni, local = %c.local, port = c.port, "vxlan port ready");
    }
    Ok(())
}
