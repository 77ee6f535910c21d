//! The DHCPv4 server state machine of one router interface (RFC 2131).
//!
//! Sans-IO: the router hands it the UDP payload of each datagram for port
//! 67 with the time, and gets back at most one reply plus where to send it;
//! the router writes the IP and UDP headers. Timers are exposed as
//! `poll_timeout`/`handle_timeout`. The wire format is smoltcp's
//! (`DhcpPacket`/`DhcpRepr`); only the options smoltcp's repr does not
//! surface (12 host name, raw 61 client identifier) are read from the option
//! iterator.
//!
//! The server is authoritative for its subnet, as libvirt and LXC run
//! dnsmasq: a client asking for an address that is not its own is NAKed at
//! once instead of waiting for a timeout. A client asking for a free valid
//! address it does not hold a lease on (INIT-REBOOT or RENEWING after the
//! lease file was lost) gets it, as dnsmasq does, so restarting without
//! leases does not renumber running guests.
//!
//! Not supported: relay agents (giaddr set: counted and dropped), option
//! overload (52), and a 7-byte client identifier whose type byte is not 1,
//! which smoltcp's repr refuses (counted as malformed).

use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::wire::{
    DHCP_MAX_DNS_SERVER_COUNT, DhcpMessageType, DhcpOpCode, DhcpOption, DhcpPacket, DhcpRepr,
};

use super::config::DhcpConfig;
use super::counters::DhcpCounters;
use super::lease_file::{PersistedLease, hex_colon};
use super::pool::{
    Client, ClientKey, DECLINE_QUARANTINE, LeaseEvent, LeaseState, LeaseView, OFFER_HOLD, Pool,
};
use crate::mac::MacAddr;
use crate::time::Instant;

/// BOOTP's minimum message size (RFC 1542 §3.3): replies are padded to it
/// because some old clients drop shorter ones.
const MIN_REPLY_LEN: usize = 300;

const OPT_HOST_NAME: u8 = 12;
const OPT_DOMAIN_NAME: u8 = 15;
const OPT_INTERFACE_MTU: u8 = 26;
const OPT_BROADCAST_ADDRESS: u8 = 28;
const OPT_MESSAGE: u8 = 56;
const OPT_RENEWAL_TIME: u8 = 58;
const OPT_REBINDING_TIME: u8 = 59;
const OPT_CLIENT_ID: u8 = 61;

/// The longest host name kept: one DNS label.
const MAX_HOSTNAME: usize = 63;

/// A reply for the router to send from port 67 to port 68.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpReply {
    /// The DHCP message (the UDP payload).
    pub payload: Vec<u8>,
    /// Its Ethernet and IP destination.
    pub to: ReplyTo,
}

/// Where a reply goes, chosen by RFC 2131 §4.1: a client without an address
/// cannot answer ARP, so unicasts name the MAC to send to directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTo {
    /// To 255.255.255.255 and ff:ff:ff:ff:ff:ff.
    Broadcast,
    /// To `ip` at `mac`, without ARP.
    Unicast {
        /// IP destination.
        ip: Ipv4Addr,
        /// Ethernet destination.
        mac: MacAddr,
    },
}

/// A DHCPv4 server for one interface: the lease table, its configuration
/// and counters.
#[derive(Debug)]
pub struct DhcpServer {
    config: DhcpConfig,
    pool: Pool,
    counters: DhcpCounters,
}

/// A parsed client message with the raw options the repr leaves out.
struct Incoming<'a> {
    repr: DhcpRepr<'a>,
    client: Client,
    client_id: Option<&'a [u8]>,
    hostname: Option<String>,
}

impl DhcpServer {
    /// A server with no leases, refusing an invalid configuration.
    pub fn new(config: DhcpConfig) -> Result<DhcpServer, String> {
        config.validate()?;
        let mut config = config;
        config.subnet = config.subnet.trunc();
        Ok(DhcpServer {
            pool: Pool::new(&config),
            config,
            counters: DhcpCounters::default(),
        })
    }

    /// One DHCP message (the UDP payload) that arrived from Ethernet source
    /// `src_mac`, IP source `src_ip`. Returns the reply to send, if any.
    ///
    /// The addresses in the message are what the protocol trusts; `src_ip`
    /// only addresses the reply to an INFORM that left ciaddr empty, and
    /// `src_mac` is not used (without relays chaddr is the sender).
    pub fn handle(
        &mut self,
        now: Instant,
        _src_mac: MacAddr,
        src_ip: Ipv4Addr,
        payload: &[u8],
    ) -> Option<DhcpReply> {
        self.pool.expire(now);
        let Ok(packet) = DhcpPacket::new_checked(payload) else {
            self.counters.malformed += 1;
            return None;
        };
        let Some(msg) = self.parse(&packet) else {
            self.counters.malformed += 1;
            return None;
        };
        match msg.repr.message_type {
            DhcpMessageType::Discover => self.counters.discover += 1,
            DhcpMessageType::Request => self.counters.request += 1,
            DhcpMessageType::Release => self.counters.release += 1,
            DhcpMessageType::Decline => self.counters.decline += 1,
            DhcpMessageType::Inform => self.counters.inform += 1,
            _ => {
                self.counters.malformed += 1;
                return None;
            }
        }
        if !msg.repr.relay_agent_ip.is_unspecified() {
            self.counters.ignored += 1;
            return None;
        }
        let reply = match msg.repr.message_type {
            DhcpMessageType::Discover => self.discover(now, &msg),
            DhcpMessageType::Request => self.request(now, &msg),
            DhcpMessageType::Release => {
                self.release(&msg);
                None
            }
            DhcpMessageType::Decline => {
                self.decline(now, &msg);
                None
            }
            _ => self.inform(&msg, src_ip),
        };
        self.counters.events_dropped = self.pool.events_dropped;
        reply
    }

    /// The next lease, offer or quarantine deadline, for the daemon's timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pool.next_deadline()
    }

    /// Ends the leases, offers and quarantines due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pool.expire(now);
        self.counters.events_dropped = self.pool.events_dropped;
    }

    /// Leases and offers held (expired ones go at the next timeout), for
    /// the control socket's summary.
    pub fn lease_count(&self) -> usize {
        self.pool.len()
    }

    /// Active leases by address, for the control socket.
    pub fn leases(&self, now: Instant) -> Vec<LeaseView> {
        self.pool
            .iter_sorted()
            .into_iter()
            .filter(|(_, l)| l.expires > now)
            .map(|(ip, l)| LeaseView {
                ip,
                mac: l.mac,
                hostname: l.hostname.clone(),
                client_id: l.client_id().map(hex_colon),
                expires_in: Some(l.expires.saturating_since(now)),
                state: l.state,
                reserved: self.pool.reserved_ip_of(l.mac) == Some(ip),
            })
            .collect()
    }

    /// Bound leases that started, ended or changed name since the last call:
    /// DNS names for the forwarder, and a nudge to save the lease file.
    pub fn take_events(&mut self) -> Vec<LeaseEvent> {
        self.pool.take_events()
    }

    /// True when bound leases changed since [`DhcpServer::mark_saved`], so
    /// the daemon rewrites the lease file only when needed.
    pub fn is_dirty(&self) -> bool {
        self.pool.dirty
    }

    /// The daemon saved [`DhcpServer::export`]'s leases.
    pub fn mark_saved(&mut self) {
        self.pool.dirty = false;
    }

    /// Bound leases with absolute Unix expiry (rounded up to the second), by
    /// address: what the lease file holds. `now_unix` is the wall clock at
    /// `now`.
    pub fn export(&self, now: Instant, now_unix: u64) -> Vec<PersistedLease> {
        self.pool
            .iter_sorted()
            .into_iter()
            .filter(|(_, l)| l.state == LeaseState::Bound && l.expires > now)
            .map(|(ip, l)| {
                let left = l.expires.saturating_since(now);
                let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
                PersistedLease {
                    expiry_unix: now_unix.saturating_add(secs),
                    mac: l.mac,
                    ip,
                    hostname: l.hostname.clone(),
                    client_id: l.client_id().map(<[u8]>::to_vec),
                }
            })
            .collect()
    }

    /// Restores saved leases that are still running at `now_unix` and still
    /// fit the configuration (in a range, or the client's reservation; not
    /// held by another client; within the lease cap). Returns how many.
    /// Each restored lease is announced as a [`LeaseEvent::Bound`].
    pub fn import(&mut self, now: Instant, now_unix: u64, leases: &[PersistedLease]) -> usize {
        self.pool.expire(now);
        let was_dirty = self.pool.dirty;
        let mut restored = 0;
        for saved in leases {
            if saved.expiry_unix <= now_unix || !saved.mac.is_valid_source() {
                continue;
            }
            let client = Client {
                key: ClientKey::of(saved.client_id.as_deref(), saved.mac),
                mac: saved.mac,
            };
            if self.pool.current(&client.key).is_some()
                || !self.pool.available_for(&self.config, saved.ip, &client)
                || !self.pool.has_room_for(&client.key)
            {
                continue;
            }
            let left = Duration::from_secs(saved.expiry_unix - now_unix);
            let hostname = self.name_for(
                saved.mac,
                saved
                    .hostname
                    .as_deref()
                    .and_then(|h| sanitize_hostname(h.as_bytes())),
            );
            self.pool.bind(&client, saved.ip, hostname, now + left);
            restored += 1;
        }
        self.pool.dirty = was_dirty || restored != leases.len();
        self.counters.events_dropped = self.pool.events_dropped;
        restored
    }

    /// What happened so far.
    pub fn counters(&self) -> &DhcpCounters {
        &self.counters
    }

    /// What the server hands out.
    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// smoltcp's repr plus options 61 and 12; `None` for anything that is
    /// not a client's message from an Ethernet station.
    fn parse<'a>(&self, packet: &'a DhcpPacket<&'a [u8]>) -> Option<Incoming<'a>> {
        let repr = DhcpRepr::parse(packet).ok()?;
        if packet.opcode() != DhcpOpCode::Request {
            return None;
        }
        let mac = MacAddr(repr.client_hardware_address.0);
        if !mac.is_valid_source() {
            return None;
        }
        let mut client_id = None;
        let mut hostname = None;
        for opt in packet.options() {
            match opt.kind {
                OPT_CLIENT_ID if !opt.data.is_empty() => client_id = Some(opt.data),
                OPT_HOST_NAME => hostname = sanitize_hostname(opt.data),
                _ => {}
            }
        }
        Some(Incoming {
            client: Client {
                key: ClientKey::of(client_id, mac),
                mac,
            },
            repr,
            client_id,
            hostname,
        })
    }

    fn discover(&mut self, now: Instant, msg: &Incoming<'_>) -> Option<DhcpReply> {
        let Some(ip) = self
            .pool
            .choose(&self.config, &msg.client, msg.repr.requested_ip)
        else {
            self.counters.exhausted += 1;
            return None;
        };
        let name = self.name_for(msg.client.mac, msg.hostname.clone());
        self.pool.offer(now, &msg.client, ip, name, OFFER_HOLD);
        self.counters.offer += 1;
        self.reply(msg, DhcpMessageType::Offer, ip, None)
    }

    fn request(&mut self, now: Instant, msg: &Incoming<'_>) -> Option<DhcpReply> {
        let repr = &msg.repr;
        let ciaddr = repr.client_ip;
        match (repr.server_identifier, repr.requested_ip) {
            // SELECTING, and the client chose another server's offer.
            (Some(server), _) if server != self.config.server => {
                self.pool.forget_offer(&msg.client.key);
                self.counters.ignored += 1;
                None
            }
            // SELECTING our offer.
            (Some(_), requested) => {
                let wanted = requested.or((!ciaddr.is_unspecified()).then_some(ciaddr));
                let held = self.pool.current(&msg.client.key).map(|(ip, _)| ip);
                match wanted {
                    Some(ip) if held == Some(ip) => self.ack_lease(now, msg, ip),
                    _ => self.nak(msg, "address not offered"),
                }
            }
            // INIT-REBOOT: verifying a remembered address.
            (None, Some(requested)) => self.confirm(now, msg, requested),
            // RENEWING or REBINDING.
            (None, None) if !ciaddr.is_unspecified() => {
                if !self.config.subnet.contains(&ciaddr) {
                    self.counters.ignored += 1;
                    return None;
                }
                self.confirm(now, msg, ciaddr)
            }
            (None, None) => {
                self.counters.ignored += 1;
                None
            }
        }
    }

    /// ACK `ip` if it is the client's lease or free and valid for it, NAK
    /// otherwise (authoritative).
    fn confirm(&mut self, now: Instant, msg: &Incoming<'_>, ip: Ipv4Addr) -> Option<DhcpReply> {
        if !self.config.subnet.contains(&ip) {
            return self.nak(msg, "wrong network");
        }
        match self.pool.current(&msg.client.key) {
            Some((held, _)) if held == ip => return self.ack_lease(now, msg, ip),
            Some((_, lease)) if lease.state == LeaseState::Bound => {
                return self.nak(msg, "wrong address");
            }
            _ => {}
        }
        if !self.pool.available_for(&self.config, ip, &msg.client) {
            return self.nak(msg, "address not available");
        }
        if !self.pool.has_room_for(&msg.client.key) {
            self.counters.exhausted += 1;
            return None;
        }
        self.ack_lease(now, msg, ip)
    }

    fn ack_lease(&mut self, now: Instant, msg: &Incoming<'_>, ip: Ipv4Addr) -> Option<DhcpReply> {
        let name = self.name_for(msg.client.mac, msg.hostname.clone());
        self.pool
            .bind(&msg.client, ip, name, now + self.config.lease_time);
        self.counters.ack += 1;
        self.reply(msg, DhcpMessageType::Ack, ip, None)
    }

    fn nak(&mut self, msg: &Incoming<'_>, why: &str) -> Option<DhcpReply> {
        self.counters.nak += 1;
        self.reply(msg, DhcpMessageType::Nak, Ipv4Addr::UNSPECIFIED, Some(why))
    }

    fn for_another_server(&self, msg: &Incoming<'_>) -> bool {
        msg.repr
            .server_identifier
            .is_some_and(|s| s != self.config.server)
    }

    fn release(&mut self, msg: &Incoming<'_>) {
        if self.for_another_server(msg) || !self.pool.release(&msg.client.key, msg.repr.client_ip) {
            self.counters.ignored += 1;
        }
    }

    fn decline(&mut self, now: Instant, msg: &Incoming<'_>) {
        let declined = match msg.repr.requested_ip {
            Some(ip) if !self.for_another_server(msg) => {
                self.pool
                    .decline(now, &msg.client.key, ip, DECLINE_QUARANTINE)
            }
            _ => false,
        };
        if !declined {
            self.counters.ignored += 1;
        }
    }

    fn inform(&mut self, msg: &Incoming<'_>, src_ip: Ipv4Addr) -> Option<DhcpReply> {
        let ciaddr = msg.repr.client_ip;
        let addr = if ciaddr.is_unspecified() {
            src_ip
        } else {
            ciaddr
        };
        if !addr.is_unspecified() && !self.config.subnet.contains(&addr) {
            self.counters.ignored += 1;
            return None;
        }
        self.counters.ack += 1;
        let mut reply = self.reply(msg, DhcpMessageType::Ack, Ipv4Addr::UNSPECIFIED, None)?;
        if ciaddr.is_unspecified() && !addr.is_unspecified() {
            reply.to = ReplyTo::Unicast {
                ip: addr,
                mac: msg.client.mac,
            };
        }
        Some(reply)
    }

    /// The name a client's lease carries: its reservation's, else its own.
    fn name_for(&self, mac: MacAddr, own: Option<String>) -> Option<String> {
        self.config
            .reservation_for(mac)
            .and_then(|r| r.name.clone())
            .or(own)
    }

    /// Builds an OFFER, ACK or NAK for `msg` (`nak_message` only for NAK).
    fn reply(
        &self,
        msg: &Incoming<'_>,
        kind: DhcpMessageType,
        yiaddr: Ipv4Addr,
        nak_message: Option<&str>,
    ) -> Option<DhcpReply> {
        let cfg = &self.config;
        let req = &msg.repr;
        let is_nak = kind == DhcpMessageType::Nak;
        let is_inform = req.message_type == DhcpMessageType::Inform;
        let lease_secs = u32::try_from(cfg.lease_time.as_secs()).unwrap_or(u32::MAX - 1);

        let t1 = (lease_secs / 2).to_be_bytes();
        let t2 = ((u64::from(lease_secs) * 7 / 8) as u32).to_be_bytes();
        let broadcast = cfg.broadcast().octets();
        let mtu = cfg.mtu.map(u16::to_be_bytes);
        let reserved_name = cfg
            .reservation_for(msg.client.mac)
            .and_then(|r| r.name.as_deref());

        let mut extra: Vec<DhcpOption<'_>> = Vec::new();
        if is_nak {
            if let Some(text) = nak_message {
                extra.push(DhcpOption {
                    kind: OPT_MESSAGE,
                    data: text.as_bytes(),
                });
            }
        } else {
            if !is_inform {
                extra.push(DhcpOption {
                    kind: OPT_RENEWAL_TIME,
                    data: &t1,
                });
                extra.push(DhcpOption {
                    kind: OPT_REBINDING_TIME,
                    data: &t2,
                });
            }
            extra.push(DhcpOption {
                kind: OPT_BROADCAST_ADDRESS,
                data: &broadcast,
            });
            if let Some(domain) = &cfg.domain {
                extra.push(DhcpOption {
                    kind: OPT_DOMAIN_NAME,
                    data: domain.as_bytes(),
                });
            }
            if let Some(mtu) = &mtu {
                extra.push(DhcpOption {
                    kind: OPT_INTERFACE_MTU,
                    data: mtu,
                });
            }
            if let Some(name) = reserved_name
                && !is_inform
            {
                extra.push(DhcpOption {
                    kind: OPT_HOST_NAME,
                    data: name.as_bytes(),
                });
            }
        }
        // RFC 6842: echo the client identifier in every reply.
        if let Some(id) = msg.client_id
            && id.len() <= usize::from(u8::MAX)
        {
            extra.push(DhcpOption {
                kind: OPT_CLIENT_ID,
                data: id,
            });
        }

        // `take` keeps smoltcp's fixed-size list from overflowing even if an
        // unvalidated config slipped through.
        let dns_servers = (!is_nak && !cfg.dns_servers.is_empty()).then(|| {
            cfg.dns_servers
                .iter()
                .copied()
                .take(DHCP_MAX_DNS_SERVER_COUNT)
                .collect()
        });
        let repr = DhcpRepr {
            message_type: kind,
            transaction_id: req.transaction_id,
            secs: 0,
            client_hardware_address: req.client_hardware_address,
            client_ip: if kind == DhcpMessageType::Ack {
                req.client_ip
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            your_ip: yiaddr,
            server_ip: if is_nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                cfg.server
            },
            router: if is_nak { None } else { cfg.router },
            subnet_mask: (!is_nak).then(|| cfg.netmask()),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: req.broadcast,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(cfg.server),
            parameter_request_list: None,
            dns_servers,
            max_size: None,
            lease_duration: (!is_nak && !is_inform).then_some(lease_secs),
            renew_duration: None,
            rebind_duration: None,
            additional_options: &extra,
        };
        let mut payload = vec![0u8; repr.buffer_len().max(MIN_REPLY_LEN)];
        let mut packet = DhcpPacket::new_unchecked(&mut payload[..]);
        repr.emit(&mut packet).ok()?;

        let to = if is_nak {
            ReplyTo::Broadcast
        } else if !req.client_ip.is_unspecified() {
            ReplyTo::Unicast {
                ip: req.client_ip,
                mac: msg.client.mac,
            }
        } else if req.broadcast || yiaddr.is_unspecified() {
            ReplyTo::Broadcast
        } else {
            ReplyTo::Unicast {
                ip: yiaddr,
                mac: msg.client.mac,
            }
        };
        Some(DhcpReply { payload, to })
    }
}

/// A client's option 12 (or a configured name) as a DNS label: the part
/// before the first dot (clients sometimes send a FQDN) or NUL, lowercased,
/// with everything but ASCII letters, digits and '-' dropped, no leading or
/// trailing '-', at most 63 bytes. `None` when nothing is left. Names reach
/// the DNS forwarder and the lease file, so they are made safe once, here.
pub fn sanitize_hostname(raw: &[u8]) -> Option<String> {
    let label = raw.split(|&b| b == b'.' || b == 0).next().unwrap_or(&[]);
    let mut name: String = label
        .iter()
        .filter(|b| b.is_ascii_alphanumeric() || **b == b'-')
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect();
    name.truncate(MAX_HOSTNAME);
    let name = name.trim_matches('-');
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use smoltcp::wire::EthernetAddress;

    use super::*;
    use crate::dhcp::config::Reservation;
    use crate::dhcp::lease_file::{format_leases, parse_leases};

    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
    const NONE: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 122, last)
    }

    fn mac(n: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, n])
    }

    fn secs(s: u64) -> Instant {
        Instant::from_secs(s)
    }

    /// libvirt's default network with every option set.
    fn config() -> DhcpConfig {
        let mut c = DhcpConfig::new(SERVER, "192.168.122.0/24".parse().unwrap());
        c.ranges.push((ip(2), ip(254)));
        c.router = Some(SERVER);
        c.dns_servers = vec![SERVER];
        c.domain = Some("lab".into());
        c.mtu = Some(9000);
        c
    }

    fn server(c: DhcpConfig) -> DhcpServer {
        DhcpServer::new(c).unwrap()
    }

    /// A DHCP client as far as its messages go.
    #[derive(Clone)]
    struct TestClient {
        mac: MacAddr,
        xid: u32,
        client_id: Option<Vec<u8>>,
        hostname: Option<String>,
        broadcast: bool,
    }

    impl TestClient {
        fn new(n: u8) -> Self {
            TestClient {
                mac: mac(n),
                xid: 0x1000 + u32::from(n),
                client_id: None,
                hostname: None,
                broadcast: false,
            }
        }

        fn msg(
            &self,
            kind: DhcpMessageType,
            ciaddr: Ipv4Addr,
            requested: Option<Ipv4Addr>,
            server_id: Option<Ipv4Addr>,
        ) -> Vec<u8> {
            let mut extra = Vec::new();
            if let Some(id) = &self.client_id {
                extra.push(DhcpOption {
                    kind: OPT_CLIENT_ID,
                    data: id,
                });
            }
            if let Some(h) = &self.hostname {
                extra.push(DhcpOption {
                    kind: OPT_HOST_NAME,
                    data: h.as_bytes(),
                });
            }
            let repr = DhcpRepr {
                message_type: kind,
                transaction_id: self.xid,
                secs: 3,
                client_hardware_address: EthernetAddress(self.mac.0),
                client_ip: ciaddr,
                your_ip: NONE,
                server_ip: NONE,
                router: None,
                subnet_mask: None,
                relay_agent_ip: NONE,
                broadcast: self.broadcast,
                requested_ip: requested,
                client_identifier: None,
                server_identifier: server_id,
                parameter_request_list: Some(&[1, 3, 6, 15, 26, 28, 51, 58, 59]),
                dns_servers: None,
                max_size: Some(1500),
                lease_duration: None,
                renew_duration: None,
                rebind_duration: None,
                additional_options: &extra,
            };
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
                .unwrap();
            buf
        }

        fn discover(&self) -> Vec<u8> {
            self.msg(DhcpMessageType::Discover, NONE, None, None)
        }

        fn select(&self, offered: Ipv4Addr) -> Vec<u8> {
            self.msg(DhcpMessageType::Request, NONE, Some(offered), Some(SERVER))
        }

        fn init_reboot(&self, addr: Ipv4Addr) -> Vec<u8> {
            self.msg(DhcpMessageType::Request, NONE, Some(addr), None)
        }

        fn renew(&self, addr: Ipv4Addr) -> Vec<u8> {
            self.msg(DhcpMessageType::Request, addr, None, None)
        }
    }

    /// A reply taken apart for assertions.
    #[derive(Debug)]
    struct Seen {
        op: u8,
        kind: DhcpMessageType,
        xid: u32,
        chaddr: MacAddr,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        siaddr: Ipv4Addr,
        broadcast_flag: bool,
        options: BTreeMap<u8, Vec<u8>>,
        len: usize,
        to: ReplyTo,
    }

    fn seen(reply: DhcpReply) -> Seen {
        let p = DhcpPacket::new_checked(&reply.payload[..]).unwrap();
        let repr = DhcpRepr::parse(&p).unwrap();
        Seen {
            op: reply.payload[0],
            kind: repr.message_type,
            xid: repr.transaction_id,
            chaddr: MacAddr(repr.client_hardware_address.0),
            ciaddr: repr.client_ip,
            yiaddr: repr.your_ip,
            siaddr: repr.server_ip,
            broadcast_flag: repr.broadcast,
            options: p.options().map(|o| (o.kind, o.data.to_vec())).collect(),
            len: reply.payload.len(),
            to: reply.to,
        }
    }

    fn send(s: &mut DhcpServer, now: Instant, c: &TestClient, payload: &[u8]) -> Option<Seen> {
        s.handle(now, c.mac, NONE, payload).map(seen)
    }

    /// DISCOVER, OFFER, REQUEST, ACK; returns the bound address.
    fn dora(s: &mut DhcpServer, now: Instant, c: &TestClient) -> Ipv4Addr {
        let offer = send(s, now, c, &c.discover()).expect("offer");
        assert_eq!(offer.kind, DhcpMessageType::Offer);
        let ack = send(s, now, c, &c.select(offer.yiaddr)).expect("ack");
        assert_eq!(ack.kind, DhcpMessageType::Ack);
        assert_eq!(ack.yiaddr, offer.yiaddr);
        ack.yiaddr
    }

    fn be32(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    fn lease_options(kind: u8) -> BTreeMap<u8, Vec<u8>> {
        BTreeMap::from([
            (53, vec![kind]),
            (54, SERVER.octets().to_vec()),
            (51, be32(3600)),
            (58, be32(1800)),
            (59, be32(3150)),
            (1, vec![255, 255, 255, 0]),
            (3, SERVER.octets().to_vec()),
            (6, SERVER.octets().to_vec()),
            (15, b"lab".to_vec()),
            (26, 9000u16.to_be_bytes().to_vec()),
            (28, vec![192, 168, 122, 255]),
        ])
    }

    #[test]
    fn full_dora_with_every_option() {
        let mut s = server(config());
        let mut c = TestClient::new(1);
        c.hostname = Some("Web_1.example.org".into());
        let t = secs(100);

        let offer = send(&mut s, t, &c, &c.discover()).unwrap();
        assert_eq!(offer.op, 2);
        assert_eq!(offer.kind, DhcpMessageType::Offer);
        assert_eq!(offer.xid, 0x1001);
        assert_eq!(offer.chaddr, mac(1));
        assert_eq!(offer.ciaddr, NONE);
        assert_eq!(offer.yiaddr, ip(2));
        assert_eq!(offer.siaddr, SERVER);
        assert!(!offer.broadcast_flag);
        assert_eq!(offer.options, lease_options(2));
        assert!(offer.len >= MIN_REPLY_LEN);
        assert_eq!(
            offer.to,
            ReplyTo::Unicast {
                ip: ip(2),
                mac: mac(1)
            }
        );
        let offered = s.leases(t);
        assert_eq!(
            offered,
            vec![LeaseView {
                ip: ip(2),
                mac: mac(1),
                hostname: Some("web1".into()),
                client_id: None,
                expires_in: Some(Duration::from_secs(30)),
                state: LeaseState::Offered,
                reserved: false,
            }]
        );
        assert!(s.take_events().is_empty());
        assert!(!s.is_dirty());
        assert_eq!(s.poll_timeout(), Some(secs(130)));

        let ack = send(&mut s, secs(101), &c, &c.select(ip(2))).unwrap();
        assert_eq!(ack.kind, DhcpMessageType::Ack);
        assert_eq!(ack.yiaddr, ip(2));
        assert_eq!(ack.ciaddr, NONE);
        assert_eq!(ack.siaddr, SERVER);
        assert_eq!(ack.options, lease_options(5));
        assert_eq!(
            ack.to,
            ReplyTo::Unicast {
                ip: ip(2),
                mac: mac(1)
            }
        );
        let bound = s.leases(secs(101));
        assert_eq!(bound[0].state, LeaseState::Bound);
        assert_eq!(bound[0].expires_in, Some(Duration::from_secs(3600)));
        assert_eq!(
            s.take_events(),
            vec![LeaseEvent::Bound {
                ip: ip(2),
                mac: mac(1),
                hostname: Some("web1".into())
            }]
        );
        assert!(s.is_dirty());
        s.mark_saved();
        assert!(!s.is_dirty());
        assert_eq!(s.poll_timeout(), Some(secs(3701)));
        let n = s.counters();
        assert_eq!(
            (n.discover, n.offer, n.request, n.ack, n.nak, n.malformed),
            (1, 1, 1, 1, 0, 0)
        );

        // A second client with the broadcast bit gets the next address,
        // broadcast, and the flag echoed.
        let mut c2 = TestClient::new(2);
        c2.broadcast = true;
        let offer = send(&mut s, t, &c2, &c2.discover()).unwrap();
        assert_eq!(offer.yiaddr, ip(3));
        assert!(offer.broadcast_flag);
        assert_eq!(offer.to, ReplyTo::Broadcast);
    }

    #[test]
    fn minimal_config_sends_only_required_options() {
        let mut c = DhcpConfig::new(SERVER, "192.168.122.0/24".parse().unwrap());
        c.ranges.push((ip(2), ip(3)));
        c.lease_time = Duration::from_secs(600);
        let mut s = server(c);
        let offer = send(
            &mut s,
            secs(1),
            &TestClient::new(1),
            &TestClient::new(1).discover(),
        );
        assert_eq!(
            offer.unwrap().options,
            BTreeMap::from([
                (53, vec![2]),
                (54, SERVER.octets().to_vec()),
                (51, be32(600)),
                (58, be32(300)),
                (59, be32(525)),
                (1, vec![255, 255, 255, 0]),
                (28, vec![192, 168, 122, 255]),
            ])
        );
    }

    #[test]
    fn renew_and_rebind_extend_the_lease() {
        let mut s = server(config());
        let c = TestClient::new(1);
        let a = dora(&mut s, secs(0), &c);
        s.take_events();
        s.mark_saved();

        let ack = send(&mut s, secs(1800), &c, &c.renew(a)).unwrap();
        assert_eq!(ack.kind, DhcpMessageType::Ack);
        assert_eq!(ack.yiaddr, a);
        assert_eq!(ack.ciaddr, a);
        assert_eq!(ack.options, lease_options(5));
        assert_eq!(ack.to, ReplyTo::Unicast { ip: a, mac: mac(1) });
        assert_eq!(
            s.leases(secs(1800))[0].expires_in,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(s.poll_timeout(), Some(secs(5400)));
        assert!(s.is_dirty());
        assert!(s.take_events().is_empty(), "a renewal is not a new binding");

        // Rebinding (broadcast by a client whose server went quiet) looks
        // the same on the wire apart from the flag.
        let mut rebinding = c.clone();
        rebinding.broadcast = true;
        let ack = send(&mut s, secs(1800 + 3150), &rebinding, &rebinding.renew(a)).unwrap();
        assert_eq!(ack.kind, DhcpMessageType::Ack);
        assert_eq!(ack.to, ReplyTo::Unicast { ip: a, mac: mac(1) });
        assert_eq!(s.poll_timeout(), Some(secs(1800 + 3150 + 3600)));

        // Rebinding an address outside the subnet: not ours, silence.
        let outside = Ipv4Addr::new(10, 9, 9, 9);
        assert!(send(&mut s, secs(5000), &c, &c.renew(outside)).is_none());
        assert_eq!(s.counters().ignored, 1);

        // Renewing another client's address: NAK, broadcast.
        let other = TestClient::new(2);
        let nak = send(&mut s, secs(5000), &other, &other.renew(a)).unwrap();
        assert_eq!(nak.kind, DhcpMessageType::Nak);
        assert_eq!(nak.to, ReplyTo::Broadcast);
        assert_eq!(s.leases(secs(5000)).len(), 1);
    }

    #[test]
    fn lease_expiry_frees_the_address_at_the_exact_time() {
        let mut c = config();
        c.ranges = vec![(ip(2), ip(2))];
        let mut s = server(c);
        let first = TestClient::new(1);
        assert_eq!(dora(&mut s, secs(10), &first), ip(2));
        s.take_events();
        let end = secs(10 + 3600);
        assert_eq!(s.poll_timeout(), Some(end));

        let second = TestClient::new(2);
        let just_before = Instant::from_micros(end.as_micros() - 1);
        s.handle_timeout(just_before);
        assert_eq!(s.leases(just_before).len(), 1);
        assert!(send(&mut s, just_before, &second, &second.discover()).is_none());
        assert_eq!(s.counters().exhausted, 1);

        s.handle_timeout(end);
        assert!(s.leases(end).is_empty());
        assert_eq!(
            s.take_events(),
            vec![LeaseEvent::Gone {
                ip: ip(2),
                hostname: None
            }]
        );
        assert!(s.is_dirty());
        let offer = send(&mut s, end, &second, &second.discover()).unwrap();
        assert_eq!(offer.yiaddr, ip(2));
    }

    #[test]
    fn expiry_also_happens_inside_handle() {
        let mut c = config();
        c.ranges = vec![(ip(2), ip(2))];
        let mut s = server(c);
        dora(&mut s, secs(0), &TestClient::new(1));
        let second = TestClient::new(2);
        // No handle_timeout call: the lease is still over at 3600 s.
        let offer = send(&mut s, secs(3600), &second, &second.discover()).unwrap();
        assert_eq!(offer.yiaddr, ip(2));
    }

    fn reserved_config() -> DhcpConfig {
        let mut c = config();
        c.ranges = vec![(ip(100), ip(101))];
        c.reservations.push(Reservation {
            mac: mac(9),
            name: Some("db".into()),
            ip: Some(ip(100)),
        });
        c
    }

    #[test]
    fn reservation_gets_its_address_and_name() {
        let mut s = server(reserved_config());
        let mut c = TestClient::new(9);
        c.hostname = Some("localhost".into());
        let offer = send(&mut s, secs(0), &c, &c.discover()).unwrap();
        assert_eq!(offer.yiaddr, ip(100));
        assert_eq!(offer.options.get(&12), Some(&b"db".to_vec()));
        let ack = send(&mut s, secs(0), &c, &c.select(ip(100))).unwrap();
        assert_eq!(ack.options.get(&12), Some(&b"db".to_vec()));
        assert_eq!(
            s.take_events(),
            vec![LeaseEvent::Bound {
                ip: ip(100),
                mac: mac(9),
                hostname: Some("db".into())
            }]
        );
        let view = &s.leases(secs(0))[0];
        assert!(view.reserved);
        assert_eq!(view.hostname.as_deref(), Some("db"));

        // It may not wander off its reservation.
        let nak = send(&mut s, secs(1), &c, &c.init_reboot(ip(101))).unwrap();
        assert_eq!(nak.kind, DhcpMessageType::Nak);
    }

    #[test]
    fn reserved_address_is_never_given_to_another_mac() {
        let mut s = server(reserved_config());
        let one = TestClient::new(1);
        let two = TestClient::new(2);
        // Asking for it does not help.
        let asks = one.msg(DhcpMessageType::Discover, NONE, Some(ip(100)), None);
        let offer = send(&mut s, secs(0), &one, &asks).unwrap();
        assert_eq!(offer.yiaddr, ip(101));
        send(&mut s, secs(0), &one, &one.select(ip(101))).unwrap();
        // .100 is free but reserved: no offer for a third machine.
        assert!(send(&mut s, secs(0), &two, &two.discover()).is_none());
        assert_eq!(s.counters().exhausted, 1);
        let nak = send(&mut s, secs(0), &two, &two.init_reboot(ip(100))).unwrap();
        assert_eq!(nak.kind, DhcpMessageType::Nak);
        let nak = send(&mut s, secs(0), &two, &two.renew(ip(100))).unwrap();
        assert_eq!(nak.kind, DhcpMessageType::Nak);
        assert_eq!(s.leases(secs(0)).len(), 1);
    }

    #[test]
    fn exhaustion_with_a_two_address_pool() {
        let mut c = config();
        c.ranges = vec![(ip(10), ip(11))];
        let mut s = server(c);
        let offers: Vec<_> = (1..=2)
            .map(|n| {
                let c = TestClient::new(n);
                send(&mut s, secs(0), &c, &c.discover()).unwrap().yiaddr
            })
            .collect();
        assert_eq!(offers, vec![ip(10), ip(11)]);
        let third = TestClient::new(3);
        assert!(send(&mut s, secs(1), &third, &third.discover()).is_none());
        assert_eq!(s.counters().exhausted, 1);
        assert_eq!(s.counters().offer, 2);
        // Offers are held 30 s; then the third client gets one.
        let offer = send(&mut s, secs(30), &third, &third.discover()).unwrap();
        assert_eq!(offer.yiaddr, ip(10));
    }

    #[test]
    fn max_leases_caps_clients() {
        let mut c = config();
        c.max_leases = Some(2);
        let mut s = server(c);
        let one = TestClient::new(1);
        let a = dora(&mut s, secs(0), &one);
        dora(&mut s, secs(0), &TestClient::new(2));
        let third = TestClient::new(3);
        assert!(send(&mut s, secs(0), &third, &third.discover()).is_none());
        assert!(send(&mut s, secs(0), &third, &third.init_reboot(ip(50))).is_none());
        assert_eq!(s.counters().exhausted, 2);
        // Existing clients still renew.
        assert_eq!(
            send(&mut s, secs(1), &one, &one.renew(a)).unwrap().kind,
            DhcpMessageType::Ack
        );
        let release = one.msg(DhcpMessageType::Release, a, None, Some(SERVER));
        assert!(send(&mut s, secs(2), &one, &release).is_none());
        assert_eq!(
            send(&mut s, secs(2), &third, &third.discover())
                .unwrap()
                .yiaddr,
            ip(4)
        );
    }

    #[test]
    fn init_reboot_naks_wrong_addresses_and_acks_free_ones() {
        let mut s = server(config());
        let one = TestClient::new(1);
        let two = TestClient::new(2);
        let a = dora(&mut s, secs(0), &one);

        let nak = send(&mut s, secs(5), &two, &two.init_reboot(a)).unwrap();
        assert_eq!(nak.op, 2);
        assert_eq!(nak.kind, DhcpMessageType::Nak);
        assert_eq!(nak.yiaddr, NONE);
        assert_eq!(nak.siaddr, NONE);
        assert_eq!(nak.xid, two.xid);
        assert_eq!(
            nak.options,
            BTreeMap::from([
                (53, vec![6]),
                (54, SERVER.octets().to_vec()),
                (56, b"address not available".to_vec()),
            ])
        );
        assert_eq!(nak.to, ReplyTo::Broadcast);

        let wrong_net = send(
            &mut s,
            secs(5),
            &two,
            &two.init_reboot(Ipv4Addr::new(10, 0, 0, 5)),
        );
        assert_eq!(
            wrong_net.unwrap().options.get(&56),
            Some(&b"wrong network".to_vec())
        );
        // Outside the range, inside the subnet (and the server's own).
        let nak = send(&mut s, secs(5), &two, &two.init_reboot(SERVER)).unwrap();
        assert_eq!(nak.kind, DhcpMessageType::Nak);
        assert_eq!(s.counters().nak, 3);

        // Its own lease: ACK. A free, valid address after a lost lease file:
        // ACK too.
        let ack = send(&mut s, secs(6), &one, &one.init_reboot(a)).unwrap();
        assert_eq!((ack.kind, ack.yiaddr), (DhcpMessageType::Ack, a));
        let ack = send(&mut s, secs(6), &two, &two.init_reboot(ip(77))).unwrap();
        assert_eq!((ack.kind, ack.yiaddr), (DhcpMessageType::Ack, ip(77)));
        // Bound on .77, it cannot claim .78 as well.
        let nak = send(&mut s, secs(7), &two, &two.init_reboot(ip(78))).unwrap();
        assert_eq!(nak.options.get(&56), Some(&b"wrong address".to_vec()));
    }

    #[test]
    fn selecting_a_different_address_is_naked() {
        let mut s = server(config());
        let c = TestClient::new(1);
        send(&mut s, secs(0), &c, &c.discover()).unwrap();
        let nak = send(&mut s, secs(0), &c, &c.select(ip(9))).unwrap();
        assert_eq!(nak.kind, DhcpMessageType::Nak);
        assert_eq!(nak.options.get(&56), Some(&b"address not offered".to_vec()));
    }

    #[test]
    fn request_for_another_server_clears_the_offer() {
        let mut s = server(config());
        let one = TestClient::new(1);
        assert_eq!(
            send(&mut s, secs(0), &one, &one.discover()).unwrap().yiaddr,
            ip(2)
        );
        let elsewhere = one.msg(
            DhcpMessageType::Request,
            NONE,
            Some(Ipv4Addr::new(192, 168, 122, 250)),
            Some(Ipv4Addr::new(192, 168, 122, 254)),
        );
        assert!(send(&mut s, secs(1), &one, &elsewhere).is_none());
        assert_eq!(s.counters().ignored, 1);
        assert!(s.leases(secs(1)).is_empty());
        assert_eq!(s.poll_timeout(), None);
        let two = TestClient::new(2);
        assert_eq!(
            send(&mut s, secs(1), &two, &two.discover()).unwrap().yiaddr,
            ip(2)
        );
    }

    #[test]
    fn release_then_rediscover_gets_the_same_address() {
        let mut s = server(config());
        let one = TestClient::new(1);
        let a = dora(&mut s, secs(0), &one);
        s.take_events();
        let release = one.msg(DhcpMessageType::Release, a, None, Some(SERVER));
        assert!(send(&mut s, secs(10), &one, &release).is_none());
        assert_eq!(s.counters().release, 1);
        assert!(s.leases(secs(10)).is_empty());
        assert_eq!(
            s.take_events(),
            vec![LeaseEvent::Gone {
                ip: a,
                hostname: None
            }]
        );
        // A newcomer does not take the departed client's address...
        let two = TestClient::new(2);
        assert_eq!(dora(&mut s, secs(11), &two), ip(3));
        // ...which it gets back.
        assert_eq!(dora(&mut s, secs(12), &one), a);
        // Releasing what it does not hold is ignored.
        let bogus = two.msg(DhcpMessageType::Release, a, None, Some(SERVER));
        assert!(send(&mut s, secs(13), &two, &bogus).is_none());
        assert_eq!(s.counters().ignored, 1);
        assert_eq!(s.leases(secs(13)).len(), 2);
    }

    #[test]
    fn declined_addresses_are_quarantined() {
        let mut s = server(config());
        let one = TestClient::new(1);
        let a = dora(&mut s, secs(0), &one);
        assert_eq!(a, ip(2));
        // Someone else cannot decline it for us.
        let two = TestClient::new(2);
        let bogus = two.msg(DhcpMessageType::Decline, NONE, Some(a), Some(SERVER));
        assert!(send(&mut s, secs(1), &two, &bogus).is_none());
        assert_eq!(s.counters().ignored, 1);
        assert_eq!(s.leases(secs(1)).len(), 1);

        let decline = one.msg(DhcpMessageType::Decline, NONE, Some(a), Some(SERVER));
        assert!(send(&mut s, secs(1), &one, &decline).is_none());
        assert_eq!(s.counters().decline, 2);
        assert!(s.leases(secs(1)).is_empty());
        assert_eq!(s.poll_timeout(), Some(secs(601)));
        // Nobody gets .2 during the quarantine, not even by asking.
        assert_eq!(dora(&mut s, secs(2), &one), ip(3));
        let asks = two.msg(DhcpMessageType::Discover, NONE, Some(a), None);
        assert_eq!(send(&mut s, secs(2), &two, &asks).unwrap().yiaddr, ip(4));
        let three = TestClient::new(3);
        assert_eq!(
            send(&mut s, secs(2), &three, &three.init_reboot(a))
                .unwrap()
                .kind,
            DhcpMessageType::Nak
        );
        s.handle_timeout(Instant::from_micros(secs(601).as_micros() - 1));
        // Two's offer of .4 ran out long ago; .2 is still quarantined.
        assert_eq!(
            send(&mut s, secs(600), &three, &three.discover())
                .unwrap()
                .yiaddr,
            ip(4)
        );
        s.handle_timeout(secs(601));
        let four = TestClient::new(4);
        assert_eq!(
            send(&mut s, secs(601), &four, &four.discover())
                .unwrap()
                .yiaddr,
            a
        );
    }

    #[test]
    fn inform_gets_options_without_a_lease() {
        let mut s = server(config());
        let c = TestClient::new(1);
        let inform = c.msg(DhcpMessageType::Inform, ip(50), None, None);
        let ack = send(&mut s, secs(0), &c, &inform).unwrap();
        assert_eq!(ack.kind, DhcpMessageType::Ack);
        assert_eq!(ack.yiaddr, NONE);
        assert_eq!(ack.ciaddr, ip(50));
        let mut expected = lease_options(5);
        for no_lease in [51, 58, 59] {
            expected.remove(&no_lease);
        }
        assert_eq!(ack.options, expected);
        assert_eq!(
            ack.to,
            ReplyTo::Unicast {
                ip: ip(50),
                mac: mac(1)
            }
        );
        assert!(s.leases(secs(0)).is_empty());
        assert_eq!((s.counters().inform, s.counters().ack), (1, 1));
        // From outside the subnet: not ours to configure.
        let far = c.msg(
            DhcpMessageType::Inform,
            Ipv4Addr::new(10, 1, 1, 1),
            None,
            None,
        );
        assert!(send(&mut s, secs(0), &c, &far).is_none());
        // ciaddr left empty: answered to the IP source address.
        let empty = c.msg(DhcpMessageType::Inform, NONE, None, None);
        let reply = s.handle(secs(0), mac(1), ip(60), &empty).unwrap();
        assert_eq!(
            reply.to,
            ReplyTo::Unicast {
                ip: ip(60),
                mac: mac(1)
            }
        );
    }

    #[test]
    fn clients_are_keyed_by_client_identifier() {
        let mut s = server(config());
        let mut a = TestClient::new(1);
        a.client_id = Some(vec![0xff, 0, 0, 0, 1, 0, 1, 0, 1, 0x2a]);
        let mut b = a.clone();
        b.client_id = Some(vec![0xff, 0, 0, 0, 2]);
        let plain = TestClient::new(1);

        let offer = send(&mut s, secs(0), &a, &a.discover()).unwrap();
        assert_eq!(offer.options.get(&61), a.client_id.as_ref());
        assert_eq!(dora(&mut s, secs(0), &a), ip(2));
        assert_eq!(dora(&mut s, secs(0), &b), ip(3));
        assert_eq!(dora(&mut s, secs(0), &plain), ip(4));
        let views = s.leases(secs(0));
        assert_eq!(
            views[0].client_id.as_deref(),
            Some("ff:00:00:00:01:00:01:00:01:2a")
        );
        assert_eq!(views[1].client_id.as_deref(), Some("ff:00:00:00:02"));
        assert_eq!(views[2].client_id, None);
        assert!(views.iter().all(|v| v.mac == mac(1)));
        // Same MAC, same identifier: same lease.
        assert_eq!(dora(&mut s, secs(1), &a), ip(2));
        // The identifier, not the MAC, owns the lease: b cannot renew a's.
        assert_eq!(
            send(&mut s, secs(1), &b, &b.renew(ip(2))).unwrap().kind,
            DhcpMessageType::Nak
        );
    }

    #[test]
    fn reservation_follows_the_mac_across_client_identifiers() {
        let mut s = server(reserved_config());
        let mut firmware = TestClient::new(9);
        firmware.client_id = Some(vec![1, 0x52, 0x54, 0, 0, 0, 9]);
        let mut os = firmware.clone();
        os.client_id = Some(vec![0xff, 1, 2, 3, 4]);
        assert_eq!(dora(&mut s, secs(0), &firmware), ip(100));
        assert_eq!(dora(&mut s, secs(1), &os), ip(100));
        assert_eq!(s.leases(secs(1)).len(), 1);
    }

    #[test]
    fn export_import_round_trip_across_a_restart() {
        let mut c = reserved_config();
        c.ranges = vec![(ip(100), ip(110))];
        let mut s = server(c.clone());
        let mut one = TestClient::new(1);
        one.client_id = Some(vec![1, 0x52, 0x54, 0, 0, 0, 1]);
        one.hostname = Some("alpha".into());
        let a = dora(&mut s, secs(100), &one);
        assert_eq!(a, ip(101));
        let db = TestClient::new(9);
        assert_eq!(dora(&mut s, secs(200), &db), ip(100));
        // An offer is not persisted.
        let two = TestClient::new(2);
        send(&mut s, secs(400), &two, &two.discover()).unwrap();

        let saved = s.export(secs(400), 1_000_300);
        assert_eq!(
            saved,
            vec![
                PersistedLease {
                    expiry_unix: 1_000_300 + 3400,
                    mac: mac(9),
                    ip: ip(100),
                    hostname: Some("db".into()),
                    client_id: None,
                },
                PersistedLease {
                    expiry_unix: 1_000_300 + 3300,
                    mac: mac(1),
                    ip: a,
                    hostname: Some("alpha".into()),
                    client_id: one.client_id.clone(),
                },
            ]
        );
        let text = format_leases(&saved);
        let mut parsed = parse_leases(&text);
        assert_eq!(parsed.leases, saved);

        // Leases that no longer fit are not restored.
        parsed.leases.push(PersistedLease {
            expiry_unix: 1_000_900,
            mac: mac(3),
            ip: ip(105),
            hostname: None,
            client_id: None,
        });
        parsed.leases.push(PersistedLease {
            expiry_unix: 1_009_000,
            mac: mac(4),
            ip: ip(200),
            hostname: None,
            client_id: None,
        });
        parsed.leases.push(PersistedLease {
            expiry_unix: 1_009_000,
            mac: mac(5),
            ip: ip(101),
            hostname: None,
            client_id: None,
        });

        // Restart: a new epoch, 700 s of wall clock later.
        let mut s2 = server(c);
        let now = secs(5);
        assert_eq!(s2.import(now, 1_001_000, &parsed.leases), 2);
        assert!(s2.is_dirty());
        let views = s2.leases(now);
        assert_eq!(views.len(), 2);
        assert_eq!(views[1].ip, a);
        assert_eq!(views[1].expires_in, Some(Duration::from_secs(2600)));
        assert_eq!(views[1].hostname.as_deref(), Some("alpha"));
        assert_eq!(views[0].expires_in, Some(Duration::from_secs(2700)));
        assert_eq!(s2.poll_timeout(), Some(secs(5 + 2600)));
        assert_eq!(
            s2.take_events(),
            vec![
                LeaseEvent::Bound {
                    ip: ip(100),
                    mac: mac(9),
                    hostname: Some("db".into())
                },
                LeaseEvent::Bound {
                    ip: a,
                    mac: mac(1),
                    hostname: Some("alpha".into())
                },
            ]
        );

        // The client reboots and asks for its address: ACK.
        let ack = send(&mut s2, secs(6), &one, &one.init_reboot(a)).unwrap();
        assert_eq!((ack.kind, ack.yiaddr), (DhcpMessageType::Ack, a));
        // A DISCOVER would have offered the same one.
        assert_eq!(
            send(&mut s2, secs(7), &one, &one.discover())
                .unwrap()
                .yiaddr,
            a
        );

        // Importing everything that was exported leaves nothing to save.
        let mut smaller = reserved_config();
        smaller.ranges = vec![(ip(102), ip(110))];
        let mut s3 = server(smaller);
        let mut all = reserved_config();
        all.ranges = vec![(ip(100), ip(110))];
        let mut s3b = server(all);
        assert_eq!(s3b.import(secs(0), 1_000_300, &saved), 2);
        assert!(!s3b.is_dirty());
        // A smaller pool drops what no longer fits, and says so.
        assert_eq!(s3.import(secs(0), 1_000_300, &saved), 1);
        assert!(s3.is_dirty());
    }

    #[test]
    fn malformed_messages_are_counted_and_dropped() {
        let mut s = server(config());
        let c = TestClient::new(1);
        let good = c.discover();

        assert!(s.handle(secs(0), mac(1), NONE, &[]).is_none());
        assert!(s.handle(secs(0), mac(1), NONE, &good[..239]).is_none());

        let mut bootreply = good.clone();
        bootreply[0] = 2;
        assert!(s.handle(secs(0), mac(1), NONE, &bootreply).is_none());
        // An OFFER from another server on the segment: BOOTREPLY too.
        let mut offer = c.clone();
        offer.xid = 7;
        let from_server = offer.msg(DhcpMessageType::Offer, NONE, None, None);
        assert!(s.handle(secs(0), mac(1), NONE, &from_server).is_none());

        let mut htype = good.clone();
        htype[1] = 6;
        assert!(s.handle(secs(0), mac(1), NONE, &htype).is_none());
        let mut hlen = good.clone();
        hlen[2] = 16;
        assert!(s.handle(secs(0), mac(1), NONE, &hlen).is_none());
        let mut magic = good.clone();
        magic[236] ^= 0xff;
        assert!(s.handle(secs(0), mac(1), NONE, &magic).is_none());
        // Option 53 is emitted first: pad it out.
        let mut no_type = good.clone();
        assert_eq!(&no_type[240..242], &[53, 1]);
        no_type[240..243].fill(0);
        assert!(s.handle(secs(0), mac(1), NONE, &no_type).is_none());
        let group = TestClient {
            mac: MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
            ..c.clone()
        };
        assert!(s.handle(secs(0), mac(1), NONE, &group.discover()).is_none());

        assert_eq!(s.counters().malformed, 9);
        assert_eq!(s.counters().discover, 0);
        assert!(s.leases(secs(0)).is_empty());
        // The untouched message still works.
        assert!(s.handle(secs(0), mac(1), NONE, &good).is_some());
    }

    #[test]
    fn relayed_messages_are_ignored() {
        let mut s = server(config());
        let c = TestClient::new(1);
        let mut relayed = c.discover();
        relayed[24..28].copy_from_slice(&[10, 0, 0, 1]);
        assert!(s.handle(secs(0), mac(1), NONE, &relayed).is_none());
        assert_eq!((s.counters().discover, s.counters().ignored), (1, 1));
        assert!(s.leases(secs(0)).is_empty());
    }

    #[test]
    fn hostnames_are_sanitised() {
        assert_eq!(sanitize_hostname(b"Web-01"), Some("web-01".into()));
        assert_eq!(sanitize_hostname(b"vm.example.org"), Some("vm".into()));
        assert_eq!(
            sanitize_hostname(b"my_host name\0junk"),
            Some("myhostname".into())
        );
        assert_eq!(sanitize_hostname(b"-edge-"), Some("edge".into()));
        assert_eq!(sanitize_hostname(&[0xc3, 0xa9, b'a']), Some("a".into()));
        assert_eq!(sanitize_hostname(b"..."), None);
        assert_eq!(sanitize_hostname(b"___"), None);
        assert_eq!(sanitize_hostname(&[b'x'; 100]).map(|s| s.len()), Some(63));
    }

    #[test]
    fn hostname_changes_are_announced() {
        let mut s = server(config());
        let mut c = TestClient::new(1);
        c.hostname = Some("one".into());
        let a = dora(&mut s, secs(0), &c);
        s.take_events();
        // A renewal without option 12 keeps the name.
        let mut quiet = c.clone();
        quiet.hostname = None;
        send(&mut s, secs(10), &quiet, &quiet.renew(a)).unwrap();
        assert!(s.take_events().is_empty());
        c.hostname = Some("two".into());
        send(&mut s, secs(20), &c, &c.renew(a)).unwrap();
        assert_eq!(
            s.take_events(),
            vec![
                LeaseEvent::Gone {
                    ip: a,
                    hostname: Some("one".into())
                },
                LeaseEvent::Bound {
                    ip: a,
                    mac: mac(1),
                    hostname: Some("two".into())
                },
            ]
        );
    }

    #[test]
    fn invalid_config_is_refused() {
        let mut c = config();
        c.ranges = vec![(ip(1), ip(5))];
        assert!(
            DhcpServer::new(c)
                .unwrap_err()
                .contains("server's own address")
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        fn small_config() -> DhcpConfig {
            let mut c = config();
            c.ranges = vec![(ip(10), ip(13))];
            c.max_leases = Some(4);
            c.lease_time = Duration::from_secs(60);
            c.reservations.push(Reservation {
                mac: mac(5),
                name: Some("fixed".into()),
                ip: Some(ip(20)),
            });
            c
        }

        fn client(n: u8) -> TestClient {
            let mut c = TestClient::new(n % 6);
            if n >= 6 {
                c.client_id = Some(vec![0xff, n]);
            }
            c
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn garbage_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..700)) {
                let mut s = server(config());
                let _ = s.handle(secs(0), mac(1), NONE, &payload);
                let n = s.counters();
                prop_assert_eq!(n.offer + n.ack + n.nak, 0);
            }

            #[test]
            fn mutated_messages_never_panic(
                kind in 0usize..4,
                edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..12),
                cut in 0usize..400,
            ) {
                let c = client(7);
                let mut payload = match kind {
                    0 => c.discover(),
                    1 => c.select(ip(10)),
                    2 => c.renew(ip(10)),
                    _ => c.msg(DhcpMessageType::Inform, ip(40), None, None),
                };
                for (at, byte) in edits {
                    if let Some(b) = payload.get_mut(at) {
                        *b = byte;
                    }
                }
                payload.truncate(cut.max(1));
                let mut s = server(small_config());
                dora(&mut s, secs(0), &client(1));
                if let Some(reply) = s.handle(secs(1), c.mac, ip(40), &payload) {
                    prop_assert!(DhcpPacket::new_checked(&reply.payload[..]).is_ok());
                }
                s.pool.check_invariants(&s.config);
            }

            #[test]
            fn leases_never_share_an_address(
                steps in proptest::collection::vec((0u8..12, 0u8..7, 0u64..40, 0u8..24), 1..120),
            ) {
                let cfg = small_config();
                let mut s = server(cfg.clone());
                let mut now = secs(1000);
                for (who, op, wait, addr) in steps {
                    now = now + Duration::from_secs(wait);
                    let c = client(who);
                    let a = ip(addr);
                    let msg = match op {
                        0 => c.discover(),
                        1 => c.select(a),
                        2 => c.init_reboot(a),
                        3 => c.renew(a),
                        4 => c.msg(DhcpMessageType::Release, a, None, Some(SERVER)),
                        5 => c.msg(DhcpMessageType::Decline, NONE, Some(a), Some(SERVER)),
                        _ => {
                            s.handle_timeout(now);
                            continue;
                        }
                    };
                    if let Some(reply) = s.handle(now, c.mac, NONE, &msg) {
                        let r = seen(reply);
                        if r.kind == DhcpMessageType::Offer || r.kind == DhcpMessageType::Ack {
                            let held = s.leases(now);
                            prop_assert!(held.iter().any(|v| v.ip == r.yiaddr && v.mac == c.mac));
                        }
                    }
                    s.pool.check_invariants(&cfg);
                    let views = s.leases(now);
                    let mut ips: Vec<_> = views.iter().map(|v| v.ip).collect();
                    ips.dedup();
                    prop_assert_eq!(ips.len(), views.len());
                    prop_assert!(views.len() <= 4);
                    for v in &views {
                        prop_assert!(cfg.in_ranges(v.ip) || (v.ip == ip(20) && v.mac == mac(5)));
                    }
                }
            }
        }
    }
}
