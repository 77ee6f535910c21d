//! The services a router offers on its own addresses: DHCP on the
//! interfaces that have a server, and a DNS forwarder on all of them.
//!
//! This is the dnsmasq of a libvirt or LXC network, inside the router so
//! that it stays sans-IO like the rest of it: datagrams to UDP ports 67
//! and 53 arrive here from [`Router`](super::Router)'s frame handling,
//! answers leave through the router's transmit path, and the only I/O the
//! forwarder needs (talking to upstream resolvers) is queued as
//! [`UpstreamQuery`] values for the daemon to carry out and fed back with
//! [`Router::handle_dns_upstream`](super::Router::handle_dns_upstream).
//! DHCP leases and DNS names meet here: a client that gets a lease with a
//! host name becomes resolvable in the network's domain, and stops being
//! so when its lease goes.

use super::IfaceId;
use crate::dhcp::{DhcpConfig, DhcpReply, DhcpServer, LeaseEvent};
use crate::dns::{DnsConfig, DnsForwarder, DnsOutput, Transport};
use crate::mac::MacAddr;
use crate::time::Instant;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

/// The UDP port DHCP servers listen on.
pub const DHCP_SERVER_PORT: u16 = 67;
/// The UDP port DHCP clients listen on.
pub const DHCP_CLIENT_PORT: u16 = 68;
/// The DNS port.
pub const DNS_PORT: u16 = 53;

/// Upstream queries the forwarder may have waiting for the daemon before
/// further ones are dropped (the forwarder then times them out and answers
/// SERVFAIL, so nothing hangs).
const UPSTREAM_QUEUE: usize = 1024;

/// What a router serves, as configured: a DHCP server per interface (by
/// interface name) and at most one DNS forwarder.
#[derive(Debug, Clone, Default)]
pub struct ServicesConfig {
    /// DHCP servers, keyed by the interface they serve.
    pub dhcp: Vec<(String, DhcpConfig)>,
    /// The DNS forwarder answering on every address of the router.
    pub dns: Option<DnsConfig>,
}

impl ServicesConfig {
    /// Whether the router serves anything at all (most routers do not, and
    /// then pay nothing for this module).
    pub fn is_empty(&self) -> bool {
        self.dhcp.is_empty() && self.dns.is_none()
    }
}

/// A query the forwarder wants sent to an upstream resolver through the
/// host's own sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamQuery {
    /// The resolver.
    pub server: SocketAddr,
    /// UDP, or TCP after a truncated UDP answer.
    pub transport: Transport,
    /// The DNS message (no TCP length prefix).
    pub payload: Vec<u8>,
}

/// A datagram a service wants sent from the router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceSend {
    /// The interface it leaves by; `None`: wherever the route to `dst` says.
    pub iface: Option<IfaceId>,
    /// The router's address and port it comes from.
    pub src: SocketAddrV4,
    /// Where it goes.
    pub dst: SocketAddrV4,
    /// The Ethernet destination when it must not be resolved by ARP (a
    /// DHCP client that has no address yet, or a broadcast).
    pub dst_mac: Option<MacAddr>,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// The running services of one router.
pub struct Services {
    dhcp: Vec<(IfaceId, DhcpServer)>,
    dns: Option<DnsForwarder>,
    /// Scratch for the forwarder's outputs (reused).
    dns_out: Vec<DnsOutput>,
    /// Queries for the daemon to send.
    upstream: Vec<UpstreamQuery>,
    /// Upstream queries dropped because the daemon did not collect them.
    upstream_dropped: u64,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services")
            .field("dhcp", &self.dhcp.len())
            .field("dns", &self.dns.is_some())
            .finish_non_exhaustive()
    }
}

impl Services {
    /// Builds the servers; `iface` resolves an interface name.
    pub(super) fn new(
        config: ServicesConfig,
        iface: impl Fn(&str) -> Option<IfaceId>,
    ) -> Result<Services, String> {
        let mut dhcp = Vec::new();
        for (name, c) in config.dhcp {
            let id = iface(&name).ok_or_else(|| format!("dhcp: no interface {name:?}"))?;
            if dhcp.iter().any(|(i, _)| *i == id) {
                return Err(format!("dhcp: interface {name:?} has two servers"));
            }
            let server = DhcpServer::new(c).map_err(|e| format!("dhcp on {name}: {e}"))?;
            dhcp.push((id, server));
        }
        let dns = config
            .dns
            .map(DnsForwarder::new)
            .transpose()
            .map_err(|e| format!("dns: {e}"))?;
        Ok(Services {
            dhcp,
            dns,
            dns_out: Vec::new(),
            upstream: Vec::new(),
            upstream_dropped: 0,
        })
    }

    /// Whether a DHCP server runs on `iface`.
    pub(super) fn serves_dhcp(&self, iface: IfaceId) -> bool {
        self.dhcp.iter().any(|(i, _)| *i == iface)
    }

    /// Whether the DNS forwarder runs.
    pub(super) fn serves_dns(&self) -> bool {
        self.dns.is_some()
    }

    /// A DHCP message from a client on `iface`, to the server there.
    /// `server_addr`: the interface address the answer comes from.
    pub(super) fn dhcp_message(
        &mut self,
        now: Instant,
        iface: IfaceId,
        src_mac: MacAddr,
        src_ip: Ipv4Addr,
        payload: &[u8],
        out: &mut Vec<ServiceSend>,
    ) {
        let Some((_, server)) = self.dhcp.iter_mut().find(|(i, _)| *i == iface) else {
            return;
        };
        let server_addr = server.config().server;
        if let Some(DhcpReply { payload, to }) = server.handle(now, src_mac, src_ip, payload) {
            let (dst, dst_mac) = match to {
                crate::dhcp::ReplyTo::Broadcast => (Ipv4Addr::BROADCAST, MacAddr::BROADCAST),
                crate::dhcp::ReplyTo::Unicast { ip, mac } => (ip, mac),
            };
            out.push(ServiceSend {
                iface: Some(iface),
                src: SocketAddrV4::new(server_addr, DHCP_SERVER_PORT),
                dst: SocketAddrV4::new(dst, DHCP_CLIENT_PORT),
                dst_mac: Some(dst_mac),
                payload,
            });
        }
        self.sync_names();
    }

    /// A DNS query to one of the router's addresses (`local`).
    pub(super) fn dns_query(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        client: SocketAddrV4,
        payload: &[u8],
        out: &mut Vec<ServiceSend>,
    ) {
        let Some(dns) = &mut self.dns else {
            return;
        };
        self.dns_out.clear();
        dns.handle_query(now, client, payload, &mut self.dns_out);
        self.dispatch_dns(Some(local.ip()), out);
    }

    /// An upstream resolver's answer, handed back by the daemon.
    pub(super) fn dns_upstream(
        &mut self,
        now: Instant,
        server: SocketAddr,
        transport: Transport,
        payload: &[u8],
        out: &mut Vec<ServiceSend>,
    ) {
        let Some(dns) = &mut self.dns else {
            return;
        };
        self.dns_out.clear();
        dns.handle_upstream(now, server, transport, payload, &mut self.dns_out);
        self.dispatch_dns(None, out);
    }

    /// Turns the forwarder's outputs into datagrams to clients and queued
    /// upstream queries. Answers come from `local` when known (the address
    /// the query went to, as a client checks), else from the router's
    /// address on the route back (filled in by the router).
    fn dispatch_dns(&mut self, local: Option<&Ipv4Addr>, out: &mut Vec<ServiceSend>) {
        for o in self.dns_out.drain(..) {
            match o {
                DnsOutput::Reply { client, payload } => out.push(ServiceSend {
                    iface: None,
                    src: SocketAddrV4::new(
                        local.copied().unwrap_or(Ipv4Addr::UNSPECIFIED),
                        DNS_PORT,
                    ),
                    dst: client,
                    dst_mac: None,
                    payload,
                }),
                DnsOutput::Upstream {
                    server,
                    transport,
                    payload,
                } => {
                    if self.upstream.len() >= UPSTREAM_QUEUE {
                        self.upstream_dropped += 1;
                    } else {
                        self.upstream.push(UpstreamQuery {
                            server,
                            transport,
                            payload,
                        });
                    }
                }
            }
        }
    }

    /// Publishes DHCP clients' names in DNS as their leases come and go.
    fn sync_names(&mut self) {
        for (_, server) in &mut self.dhcp {
            for event in server.take_events() {
                let Some(dns) = &mut self.dns else {
                    continue;
                };
                match event {
                    LeaseEvent::Bound {
                        ip,
                        hostname: Some(name),
                        ..
                    } => dns.add_dynamic_host(&name, ip),
                    LeaseEvent::Gone {
                        ip,
                        hostname: Some(name),
                    } => dns.remove_dynamic_host(&name, ip),
                    _ => {}
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has work.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        let dhcp = self.dhcp.iter().filter_map(|(_, s)| s.poll_timeout()).min();
        let dns = self.dns.as_ref().and_then(DnsForwarder::poll_timeout);
        match (dhcp, dns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lease expiry and upstream timeouts (answered with SERVFAIL).
    pub(super) fn handle_timeout(&mut self, now: Instant, out: &mut Vec<ServiceSend>) {
        for (_, server) in &mut self.dhcp {
            if server.poll_timeout().is_some_and(|t| t <= now) {
                server.handle_timeout(now);
            }
        }
        self.sync_names();
        if let Some(dns) = &mut self.dns
            && dns.poll_timeout().is_some_and(|t| t <= now)
        {
            self.dns_out.clear();
            dns.handle_timeout(now, &mut self.dns_out);
            self.dispatch_dns(None, out);
        }
    }

    /// Moves the queued upstream queries into `out`.
    pub(super) fn take_upstream(&mut self, out: &mut Vec<UpstreamQuery>) {
        out.append(&mut self.upstream);
    }

    /// The DHCP servers with the interface each serves.
    pub fn dhcp_servers(&self) -> impl Iterator<Item = (IfaceId, &DhcpServer)> + '_ {
        self.dhcp.iter().map(|(i, s)| (*i, s))
    }

    /// The DHCP servers, to restore and save their leases.
    pub fn dhcp_servers_mut(&mut self) -> impl Iterator<Item = (IfaceId, &mut DhcpServer)> + '_ {
        self.dhcp.iter_mut().map(|(i, s)| (*i, s))
    }

    /// Publishes the names of leases restored from a lease file.
    pub fn publish_restored_names(&mut self) {
        self.sync_names();
    }

    /// The DNS forwarder, for its counters.
    pub fn dns(&self) -> Option<&DnsForwarder> {
        self.dns.as_ref()
    }

    /// Upstream queries dropped because too many were waiting.
    pub fn upstream_dropped(&self) -> u64 {
        self.upstream_dropped
    }
}
