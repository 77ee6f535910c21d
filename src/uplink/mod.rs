//! The unprivileged host uplink: a router's host interface that reaches the
//! outside world through ordinary host sockets, the way slirp4netns, passt
//! and QEMU's user networking do.
//!
//! # Theory of operation
//!
//! The router routes guests' IPv4 packets (no Ethernet) out of its host
//! interface. Nothing privileged can put those packets on a real network,
//! so the uplink *terminates* them instead and redoes each conversation
//! with a socket of its own:
//!
//! * **TCP** is terminated by a userspace TCP stack (smoltcp, see
//!   [`stack`]) that accepts connections to any address. A guest's SYN is
//!   held until the host `connect()` to the same destination succeeds, so
//!   a refused or unreachable destination looks to the guest exactly like
//!   one on a real network (RST, ICMP unreachable) instead of a connection
//!   that opens and then dies. The two byte streams are then spliced
//!   ([`splice`]) with backpressure both ways.
//! * **UDP** datagrams are sent from a connected host socket per flow and
//!   the answers rebuilt into IPv4 packets ([`packet`]).
//! * **ICMP echo** goes through unprivileged ping sockets; when the host
//!   forbids them the guest is told so (administratively prohibited)
//!   rather than left waiting.
//!
//! This half of the uplink is I/O-free: packet parsing and building, the
//! flow bookkeeping ([`table`]), the smoltcp device glue ([`device`]) and
//! the stack wrapper. The daemon's `host_uplink` shell owns the sockets.

pub mod device;
pub mod packet;
pub mod splice;
pub mod stack;
pub mod table;

use std::net::{SocketAddr, SocketAddrV4};

use serde::{Deserialize, Serialize};

/// The protocols the uplink carries; its own type (not NAT's) so flow
/// views can be read back from JSON by `switchboard ctl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkProto {
    /// A TCP connection, terminated and spliced onto a host stream.
    Tcp,
    /// A UDP flow, relayed through a host datagram socket.
    Udp,
    /// An ICMP echo flow, relayed through a ping socket.
    Icmp,
}

/// An inbound forward: a host address that accepts connections (TCP) or
/// datagrams (UDP) and hands them to a guest, like `slirp4netns`'s
/// `add_hostfwd` or pasta's `-t`/`-u`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostForward {
    /// TCP or UDP (ICMP forwards do not exist and are refused).
    pub proto: crate::router::nat::Proto,
    /// The host address to listen on.
    pub listen: SocketAddr,
    /// The guest address and port connections are handed to.
    pub guest: SocketAddrV4,
}

/// One flow as `switchboard ctl conntrack` shows it, so an operator can
/// see what the guests have open through the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkFlowView {
    /// Protocol of the flow.
    pub proto: UplinkProto,
    /// True for flows a host forward opened toward a guest.
    pub inbound: bool,
    /// The guest's end (for ICMP the port is the guest's echo identifier).
    pub guest: SocketAddrV4,
    /// The address the guest sees as the other end.
    pub remote_seen: SocketAddrV4,
    /// The host-side peer the uplink's socket talks to.
    pub remote: SocketAddr,
    /// Connection state (TCP states in RFC 793 spelling, "connecting",
    /// "unreplied"/"replied" for datagram flows).
    pub state: String,
    /// Seconds since the flow was opened.
    pub age_secs: u64,
    /// Seconds since the flow last carried a packet.
    pub idle_secs: u64,
    /// Seconds until an idle flow is removed, for flows that expire on idleness.
    pub expires_in_secs: Option<u64>,
    /// Payload bytes carried from the guest to the host.
    pub bytes_to_host: u64,
    /// Payload bytes carried from the host to the guest.
    pub bytes_to_guest: u64,
}

/// What the uplink did and refused, so a misbehaving guest or a host that
/// forbids ping sockets shows up in `ctl` instead of as silence.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UplinkCounters {
    /// IPv4 packets taken from the router.
    pub packets_from_guests: u64,
    /// IPv4 packets handed back to the router.
    pub packets_to_guests: u64,
    /// Payload bytes written to host sockets.
    pub bytes_to_host: u64,
    /// Payload bytes read from host sockets.
    pub bytes_to_guest: u64,
    /// TCP flows opened (outbound and inbound).
    pub tcp_opened: u64,
    /// TCP flows removed.
    pub tcp_closed: u64,
    /// UDP flows opened.
    pub udp_opened: u64,
    /// UDP flows removed.
    pub udp_closed: u64,
    /// ICMP echo flows opened.
    pub icmp_opened: u64,
    /// ICMP echo flows removed.
    pub icmp_closed: u64,
    /// New TCP flows refused because the TCP table was full.
    pub refused_tcp_full: u64,
    /// New UDP flows refused because the UDP table was full.
    pub refused_udp_full: u64,
    /// New ICMP flows refused because the ICMP table was full.
    pub refused_icmp_full: u64,
    /// New TCP flows refused because too many host connects were pending.
    pub refused_pending_full: u64,
    /// Host connects refused (answered with a TCP reset).
    pub connect_refused: u64,
    /// Host connects that found the network or host unreachable.
    pub connect_unreachable: u64,
    /// Host connects that did not complete within the connect timeout.
    pub connect_timeout: u64,
    /// Host connects that failed for another reason (answered with a reset).
    pub connect_failed: u64,
    /// TCP segments for no known flow (answered with a reset).
    pub tcp_no_flow: u64,
    /// Echo requests answered with "administratively prohibited" because
    /// the host forbids unprivileged ping sockets.
    pub icmp_prohibited: u64,
    /// IPv4 fragments refused (the uplink does not reassemble).
    pub fragments_dropped: u64,
    /// Packets refused as malformed (short, bad checksum, bad lengths).
    pub malformed: u64,
    /// Packets of a protocol or ICMP type the uplink does not relay.
    pub unsupported: u64,
    /// Datagrams to a broadcast or multicast address, dropped.
    pub broadcast_dropped: u64,
    /// Datagrams a host socket would not take (buffer full or error).
    pub send_failed: u64,
    /// Host datagrams too large for the guest MTU, dropped.
    pub oversize_dropped: u64,
    /// Inbound forward connections the guest refused or never answered.
    pub forward_refused: u64,
}
