//! A DHCPv4 server for router interfaces (RFC 2131/2132), what dnsmasq does
//! for libvirt's and LXC's networks: guests plugged into a segment get an
//! address, a gateway, DNS servers and a domain without any other daemon.
//!
//! Like the router, it is sans-IO: [`DhcpServer::handle`] takes the UDP
//! payload of a datagram for port 67 and the time, and returns the reply
//! and its destination; the router wraps it in IP/UDP and Ethernet. Timers
//! go through [`DhcpServer::poll_timeout`] / [`DhcpServer::handle_timeout`],
//! and the lease file through [`DhcpServer::export`] / [`DhcpServer::import`]
//! with the pure text format of [`lease_file`].
//!
//! * [`config`]: what the server hands out, validated up front;
//! * [`pool`]: the lease table, quarantine and per-client memory;
//! * [`server`]: the message state machine and reply building;
//! * [`lease_file`]: dnsmasq's lease-file format;
//! * [`counters`]: what happened, by message type and by refusal.

pub mod config;
pub mod counters;
pub mod lease_file;
pub mod pool;
pub mod server;

pub use config::{DEFAULT_LEASE_TIME, DhcpConfig, Reservation};
pub use counters::DhcpCounters;
pub use lease_file::{ParsedLeases, PersistedLease, format_leases, parse_leases};
pub use pool::{LeaseEvent, LeaseState, LeaseView};
pub use server::{DhcpReply, DhcpServer, ReplyTo, sanitize_hostname};
