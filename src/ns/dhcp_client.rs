//! A DHCP client that takes one lease (RFC 2131 §4.4.1: DISCOVER, OFFER,
//! REQUEST, ACK), for `switchboard ns`.
//!
//! A shell in a fresh namespace should come up configured the way a VM on
//! the same segment would, from the segment's own DHCP server, without
//! needing `dhclient` or `udhcpc` installed or a script to apply what they
//! learn. This is the smallest client that does that: it selects the first
//! acceptable offer, requests it, and reports the lease; it never renews
//! (the command usually lives shorter than a lease, and a renewal would need
//! a process in the namespace after `exec`).
//!
//! Like the server in [`crate::dhcp`], it is sans-IO: [`DhcpClient::poll`]
//! says what to send or until when to wait, [`DhcpClient::receive`] takes
//! the UDP payload of a datagram for port 68, and the caller owns the clock
//! and the socket ([`super::dhcp_frame`] wraps payloads in
//! Ethernet/IPv4/UDP). Everything it accepts from the wire is checked
//! before use: replies for another transaction or hardware address, of the
//! wrong type for the state, or offering an unusable address are refused
//! and counted, and a domain name that could not safely go into
//! `resolv.conf` is dropped.

use crate::mac::MacAddr;
use crate::time::Instant;
use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress};
use std::net::Ipv4Addr;
use std::time::Duration;

/// How long [`DhcpClient`] tries, by default, before giving up: a local
/// server answers in milliseconds, and a person waiting for a shell should
/// hear "no answer" soon.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// REQUESTs sent for one offer before starting over with a DISCOVER: the
/// server that offered may have gone, or handed the address to someone else.
pub const MAX_REQUESTS: u32 = 3;

/// DNS servers kept from option 6: the C library's resolver reads at most
/// three `nameserver` lines (`MAXNS`).
pub const MAX_DNS_SERVERS: usize = 3;

/// The options asked for (option 55): subnet mask, router, DNS servers,
/// domain name, interface MTU, lease time, server identifier.
const PARAMETERS: [u8; 7] = [1, 3, 6, 15, 26, 51, 54];

/// BOOTP's minimum message size (RFC 1542 §2.1): some servers drop
/// shorter requests, so ours are padded to it.
const MIN_MESSAGE_LEN: usize = 300;

/// What a server handed out, checked and ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address (`yiaddr` of the ACK).
    pub address: Ipv4Addr,
    /// The prefix length from the subnet mask (option 1), or the address
    /// class's when the server sent none or a non-contiguous one.
    pub prefix_len: u8,
    /// The default gateway (the first address of option 3).
    pub router: Option<Ipv4Addr>,
    /// Name servers (option 6), at most [`MAX_DNS_SERVERS`].
    pub dns_servers: Vec<Ipv4Addr>,
    /// The search domain (option 15), when it is a plain DNS name.
    pub domain: Option<String>,
    /// The interface MTU (option 26), when within 68..=65535.
    pub mtu: Option<u16>,
    /// The lease time in seconds (option 51).
    pub lease_secs: Option<u32>,
    /// The server that granted it (option 54).
    pub server: Option<Ipv4Addr>,
}

/// What the caller should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Broadcast this DHCP message (the UDP payload, port 68 to 67), then
    /// poll again.
    Send(Vec<u8>),
    /// Wait for a reply until this time, then poll again.
    WaitUntil(Instant),
    /// Done: a lease was granted.
    Bound(Lease),
    /// Done: no acceptable lease within the timeout.
    GaveUp,
}

/// Why a received message was not taken, for tests and the debug log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a parseable DHCP reply.
    Malformed,
    /// Another transaction's, or another client's (`chaddr`).
    NotOurs,
    /// A message type the current state does not expect (an ACK while
    /// selecting, a second OFFER while requesting, anything once done), or
    /// a NAK/ACK from a server other than the one requested from.
    Unexpected,
    /// An offer or ACK of an address no host can use (unspecified,
    /// broadcast, multicast, loopback).
    BadAddress,
}

/// Where the exchange stands.
#[derive(Debug, Clone)]
enum State {
    /// DISCOVERs out, waiting for an OFFER.
    Selecting,
    /// REQUEST for this offer out, waiting for the ACK.
    Requesting {
        /// The address offered.
        address: Ipv4Addr,
        /// The offering server's identifier (option 54), if it sent one.
        server: Option<Ipv4Addr>,
    },
    Bound(Lease),
    GaveUp,
}

/// The client for one interface and one lease.
#[derive(Debug, Clone)]
pub struct DhcpClient {
    mac: MacAddr,
    xid: u32,
    started: Instant,
    deadline: Instant,
    state: State,
    /// When the current message is (re)sent.
    next_send: Instant,
    /// Messages sent in the current state.
    sent: u32,
    refused: u64,
}

impl DhcpClient {
    /// A client for the interface with hardware address `mac`, starting at
    /// `now` with transaction id `xid` (random, so that two namespaces
    /// starting together do not take each other's replies), giving up
    /// `timeout` later.
    pub fn new(mac: MacAddr, xid: u32, now: Instant, timeout: Duration) -> DhcpClient {
        DhcpClient {
            mac,
            xid,
            started: now,
            deadline: now + timeout,
            state: State::Selecting,
            next_send: now,
            sent: 0,
            refused: 0,
        }
    }

    /// The transaction id in use (it changes when the exchange starts
    /// over).
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Received messages not taken, so a silent failure can say "the
    /// server answered, but not usefully".
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// What to do at `now`: send a message, wait, or stop.
    pub fn poll(&mut self, now: Instant) -> Step {
        match &self.state {
            State::Bound(lease) => return Step::Bound(lease.clone()),
            State::GaveUp => return Step::GaveUp,
            State::Selecting | State::Requesting { .. } => {}
        }
        if now >= self.deadline {
            self.state = State::GaveUp;
            return Step::GaveUp;
        }
        if now < self.next_send {
            return Step::WaitUntil(self.next_send.min(self.deadline));
        }
        if matches!(self.state, State::Requesting { .. }) && self.sent >= MAX_REQUESTS {
            self.restart(now);
        }
        self.sent += 1;
        self.next_send = now + backoff(self.sent);
        let secs = u16::try_from(now.saturating_since(self.started).as_secs()).unwrap_or(u16::MAX);
        let message = match self.state {
            State::Requesting { address, server } => {
                self.message(DhcpMessageType::Request, secs, Some(address), server)
            }
            _ => self.message(DhcpMessageType::Discover, secs, None, None),
        };
        Step::Send(message)
    }

    /// Takes the UDP payload of a datagram that arrived for port 68.
    ///
    /// # Errors
    ///
    /// Why the message was not taken (it is counted in
    /// [`refused`](Self::refused)); the exchange goes on.
    pub fn receive(&mut self, now: Instant, payload: &[u8]) -> Result<(), Refused> {
        let r = self.take(now, payload);
        if r.is_err() {
            self.refused += 1;
        }
        r
    }

    fn take(&mut self, now: Instant, payload: &[u8]) -> Result<(), Refused> {
        let packet = DhcpPacket::new_checked(payload).map_err(|_| Refused::Malformed)?;
        let repr = DhcpRepr::parse(&packet).map_err(|_| Refused::Malformed)?;
        if repr.transaction_id != self.xid
            || repr.client_hardware_address != EthernetAddress(self.mac.0)
        {
            return Err(Refused::NotOurs);
        }
        match (&self.state, repr.message_type) {
            (State::Selecting, DhcpMessageType::Offer) => {
                usable(repr.your_ip)?;
                self.state = State::Requesting {
                    address: repr.your_ip,
                    server: repr.server_identifier,
                };
                self.sent = 0;
                self.next_send = now;
                Ok(())
            }
            (State::Requesting { server, .. }, DhcpMessageType::Ack)
                if same_server(*server, repr.server_identifier) =>
            {
                usable(repr.your_ip)?;
                let lease = lease_from(&packet, &repr);
                self.state = State::Bound(lease);
                Ok(())
            }
            (State::Requesting { server, .. }, DhcpMessageType::Nak)
                if same_server(*server, repr.server_identifier) =>
            {
                self.restart(now);
                Ok(())
            }
            _ => Err(Refused::Unexpected),
        }
    }

    /// Back to DISCOVER with a new transaction id, so late replies to the
    /// old one are not mistaken for answers.
    fn restart(&mut self, now: Instant) {
        self.state = State::Selecting;
        self.xid = self.xid.wrapping_add(1);
        self.sent = 0;
        self.next_send = now;
    }

    fn message(
        &self,
        message_type: DhcpMessageType,
        secs: u16,
        requested_ip: Option<Ipv4Addr>,
        server_identifier: Option<Ipv4Addr>,
    ) -> Vec<u8> {
        let mac = EthernetAddress(self.mac.0);
        let repr = DhcpRepr {
            message_type,
            transaction_id: self.xid,
            secs,
            client_hardware_address: mac,
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip,
            client_identifier: Some(mac),
            server_identifier,
            parameter_request_list: Some(&PARAMETERS),
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut buf = vec![0u8; repr.buffer_len().max(MIN_MESSAGE_LEN)];
        // The buffer is sized by the representation itself, so emitting
        // cannot run out of room; an error would leave a zeroed message
        // that every server refuses, never a panic.
        let _ = repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]));
        buf
    }
}

/// Retransmission pause after the `n`th message (1-based): 1, 2, then 4
/// seconds. RFC 2131 §4.1 starts at 4 s; with a local server and a person
/// waiting, the first retry comes sooner.
fn backoff(n: u32) -> Duration {
    Duration::from_secs(match n {
        0 | 1 => 1,
        2 => 2,
        _ => 4,
    })
}

/// An ACK or NAK must come from the server the REQUEST named, when both
/// sides gave an identifier (other servers see our broadcast REQUEST too
/// and may NAK it).
fn same_server(requested: Option<Ipv4Addr>, replied: Option<Ipv4Addr>) -> bool {
    match (requested, replied) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

fn usable(ip: Ipv4Addr) -> Result<(), Refused> {
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        Err(Refused::BadAddress)
    } else {
        Ok(())
    }
}

/// The lease an ACK describes, with the options smoltcp does not parse
/// (15, 26) read from the raw option list.
fn lease_from(packet: &DhcpPacket<&[u8]>, repr: &DhcpRepr<'_>) -> Lease {
    let mut domain = None;
    let mut mtu = None;
    for option in packet.options() {
        match (option.kind, option.data) {
            (15, data) => domain = parse_domain(data),
            (26, &[hi, lo]) => {
                let v = u16::from_be_bytes([hi, lo]);
                mtu = (v >= 68).then_some(v);
            }
            _ => {}
        }
    }
    let dns_servers = repr
        .dns_servers
        .iter()
        .flat_map(|v| v.iter().copied())
        .filter(|ip| !ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast())
        .take(MAX_DNS_SERVERS)
        .collect();
    Lease {
        address: repr.your_ip,
        prefix_len: repr
            .subnet_mask
            .and_then(mask_prefix)
            .unwrap_or_else(|| class_prefix(repr.your_ip)),
        router: repr
            .router
            .filter(|r| !r.is_unspecified() && !r.is_broadcast() && !r.is_multicast()),
        dns_servers,
        domain,
        mtu,
        lease_secs: repr.lease_duration,
        server: repr.server_identifier,
    }
}

/// The prefix length of a contiguous netmask; `None` for masks like
/// 255.0.255.0 that no interface can have.
fn mask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let ones = m.leading_ones();
    (m.count_ones() == ones).then_some(ones as u8)
}

/// RFC 2131 §3.3's fallback when no mask is given: the address class's.
fn class_prefix(ip: Ipv4Addr) -> u8 {
    match ip.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// Option 15 as a name fit for a `search` line: ASCII letters, digits,
/// `-`, `_` and dots, 1..=253 bytes, trailing NULs (some servers count
/// one) and a trailing dot removed. Anything else (spaces, newlines, which
/// would add lines to `resolv.conf`) drops the option.
fn parse_domain(data: &[u8]) -> Option<String> {
    let mut end = data.len();
    while end > 0 && data[end - 1] == 0 {
        end -= 1;
    }
    let name = std::str::from_utf8(data.get(..end)?).ok()?;
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::DhcpOption;

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x42]);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    const OFFERED: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn client() -> DhcpClient {
        DhcpClient::new(MAC, 0x1234_5678, t(0), DEFAULT_TIMEOUT)
    }

    fn sent(step: Step) -> Vec<u8> {
        match step {
            Step::Send(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// A server reply, built with smoltcp as a server would.
    fn reply(
        kind: DhcpMessageType,
        xid: u32,
        mac: MacAddr,
        yiaddr: Ipv4Addr,
        extra: &[DhcpOption<'_>],
    ) -> Vec<u8> {
        let repr = DhcpRepr {
            message_type: kind,
            transaction_id: xid,
            secs: 0,
            client_hardware_address: EthernetAddress(mac.0),
            client_ip: Ipv4Addr::UNSPECIFIED,
            your_ip: yiaddr,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: Some(SERVER),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(SERVER),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: Some(3600),
            renew_duration: None,
            rebind_duration: None,
            additional_options: extra,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        buf
    }

    /// The fields of a message we sent that the tests look at.
    #[derive(Debug)]
    struct Sent {
        message_type: DhcpMessageType,
        transaction_id: u32,
        requested_ip: Option<Ipv4Addr>,
        server_identifier: Option<Ipv4Addr>,
        client_ip: Ipv4Addr,
    }

    fn parse(msg: &[u8]) -> Sent {
        let packet = DhcpPacket::new_checked(msg).unwrap();
        let r = DhcpRepr::parse(&packet).unwrap();
        Sent {
            message_type: r.message_type,
            transaction_id: r.transaction_id,
            requested_ip: r.requested_ip,
            server_identifier: r.server_identifier,
            client_ip: r.client_ip,
        }
    }

    #[test]
    fn discover_is_a_broadcastable_request_for_our_mac() {
        let mut c = client();
        let msg = sent(c.poll(t(0)));
        assert!(msg.len() >= MIN_MESSAGE_LEN);
        let packet = DhcpPacket::new_checked(&msg[..]).unwrap();
        let r = DhcpRepr::parse(&packet).unwrap();
        assert_eq!(r.message_type, DhcpMessageType::Discover);
        assert_eq!(r.transaction_id, 0x1234_5678);
        assert_eq!(r.client_hardware_address, EthernetAddress(MAC.0));
        assert_eq!(r.client_identifier, Some(EthernetAddress(MAC.0)));
        assert_eq!(r.client_ip, Ipv4Addr::UNSPECIFIED);
        assert_eq!(r.requested_ip, None);
        assert_eq!(r.server_identifier, None);
        assert_eq!(r.parameter_request_list, Some(&PARAMETERS[..]));
        // op = BOOTREQUEST, htype = Ethernet, hlen = 6.
        assert_eq!(&msg[..3], &[1, 1, 6]);
    }

    #[test]
    fn offer_then_ack_binds_with_every_option() {
        let mut c = client();
        sent(c.poll(t(0)));
        assert_eq!(c.poll(t(10)), Step::WaitUntil(t(1000)));
        let offer = reply(DhcpMessageType::Offer, c.xid(), MAC, OFFERED, &[]);
        assert_eq!(c.receive(t(20), &offer), Ok(()));

        let req = sent(c.poll(t(20)));
        let r = parse(&req);
        assert_eq!(r.message_type, DhcpMessageType::Request);
        assert_eq!(r.transaction_id, 0x1234_5678);
        assert_eq!(r.requested_ip, Some(OFFERED));
        assert_eq!(r.server_identifier, Some(SERVER));
        assert_eq!(r.client_ip, Ipv4Addr::UNSPECIFIED);

        let dns = [10, 0, 2, 2, 1, 1, 1, 1];
        let ack = reply(
            DhcpMessageType::Ack,
            c.xid(),
            MAC,
            OFFERED,
            &[
                DhcpOption {
                    kind: 6,
                    data: &dns,
                },
                DhcpOption {
                    kind: 15,
                    data: b"Lab.example\0",
                },
                DhcpOption {
                    kind: 26,
                    data: &1400u16.to_be_bytes(),
                },
            ],
        );
        assert_eq!(c.receive(t(30), &ack), Ok(()));
        let lease = Lease {
            address: OFFERED,
            prefix_len: 24,
            router: Some(SERVER),
            dns_servers: vec![SERVER, Ipv4Addr::new(1, 1, 1, 1)],
            domain: Some("lab.example".into()),
            mtu: Some(1400),
            lease_secs: Some(3600),
            server: Some(SERVER),
        };
        assert_eq!(c.poll(t(30)), Step::Bound(lease.clone()));
        // Bound is final: later messages are refused, the lease stays.
        assert_eq!(c.receive(t(40), &ack), Err(Refused::Unexpected));
        assert_eq!(c.poll(t(20_000)), Step::Bound(lease));
        assert_eq!(c.refused(), 1);
    }

    #[test]
    fn replies_for_others_are_refused_and_counted() {
        let mut c = client();
        sent(c.poll(t(0)));
        let other_xid = reply(DhcpMessageType::Offer, 7, MAC, OFFERED, &[]);
        assert_eq!(c.receive(t(1), &other_xid), Err(Refused::NotOurs));
        let other_mac = reply(
            DhcpMessageType::Offer,
            c.xid(),
            MacAddr([2; 6]),
            OFFERED,
            &[],
        );
        assert_eq!(c.receive(t(1), &other_mac), Err(Refused::NotOurs));
        let early_ack = reply(DhcpMessageType::Ack, c.xid(), MAC, OFFERED, &[]);
        assert_eq!(c.receive(t(1), &early_ack), Err(Refused::Unexpected));
        let bad = reply(
            DhcpMessageType::Offer,
            c.xid(),
            MAC,
            Ipv4Addr::BROADCAST,
            &[],
        );
        assert_eq!(c.receive(t(1), &bad), Err(Refused::BadAddress));
        assert_eq!(c.receive(t(1), &[1, 2, 3]), Err(Refused::Malformed));
        let mut truncated = reply(DhcpMessageType::Offer, c.xid(), MAC, OFFERED, &[]);
        truncated.truncate(200);
        assert_eq!(c.receive(t(1), &truncated), Err(Refused::Malformed));
        assert_eq!(c.refused(), 6);
        // Still selecting: the next poll at the retry time is a DISCOVER.
        let again = sent(c.poll(t(1000)));
        assert_eq!(parse(&again).message_type, DhcpMessageType::Discover);
    }

    #[test]
    fn retransmits_with_backoff_then_gives_up_at_the_deadline() {
        let mut c = client();
        let mut sends = Vec::new();
        let mut now = t(0);
        for _ in 0..100 {
            match c.poll(now) {
                Step::Send(m) => {
                    assert_eq!(parse(&m).message_type, DhcpMessageType::Discover);
                    sends.push(now.as_micros() / 1000);
                }
                Step::WaitUntil(at) => {
                    assert!(at > now);
                    now = at;
                }
                Step::GaveUp => break,
                Step::Bound(l) => panic!("bound without a server: {l:?}"),
            }
        }
        assert_eq!(sends, vec![0, 1000, 3000, 7000]);
        assert_eq!(now, t(10_000));
        assert_eq!(c.poll(t(10_001)), Step::GaveUp);
    }

    #[test]
    fn unanswered_requests_and_naks_start_over_with_a_new_xid() {
        let mut c = client();
        sent(c.poll(t(0)));
        let offer = reply(DhcpMessageType::Offer, c.xid(), MAC, OFFERED, &[]);
        c.receive(t(0), &offer).unwrap();
        let xid = c.xid();
        assert_eq!(
            parse(&sent(c.poll(t(0)))).message_type,
            DhcpMessageType::Request
        );
        assert_eq!(
            parse(&sent(c.poll(t(1000)))).message_type,
            DhcpMessageType::Request
        );
        assert_eq!(
            parse(&sent(c.poll(t(3000)))).message_type,
            DhcpMessageType::Request
        );
        let d = sent(c.poll(t(7000)));
        assert_eq!(parse(&d).message_type, DhcpMessageType::Discover);
        assert_eq!(parse(&d).transaction_id, xid.wrapping_add(1));

        // A NAK from the server we asked restarts at once.
        let offer = reply(DhcpMessageType::Offer, c.xid(), MAC, OFFERED, &[]);
        c.receive(t(7100), &offer).unwrap();
        sent(c.poll(t(7100)));
        let nak = reply(
            DhcpMessageType::Nak,
            c.xid(),
            MAC,
            Ipv4Addr::UNSPECIFIED,
            &[],
        );
        assert_eq!(c.receive(t(7200), &nak), Ok(()));
        let d = sent(c.poll(t(7200)));
        assert_eq!(parse(&d).message_type, DhcpMessageType::Discover);
        assert_eq!(parse(&d).transaction_id, xid.wrapping_add(2));
    }

    #[test]
    fn an_ack_from_another_server_is_refused() {
        let mut c = client();
        sent(c.poll(t(0)));
        let offer = reply(DhcpMessageType::Offer, c.xid(), MAC, OFFERED, &[]);
        c.receive(t(0), &offer).unwrap();
        sent(c.poll(t(0)));
        let other = [10, 0, 2, 3];
        let mut ack = reply(DhcpMessageType::Ack, c.xid(), MAC, OFFERED, &[]);
        // Rewrite option 54's value (emitted by smoltcp) to another server.
        let at = ack
            .windows(6)
            .position(|w| w == [54, 4, 10, 0, 2, 2])
            .unwrap();
        ack[at + 2..at + 6].copy_from_slice(&other);
        assert_eq!(c.receive(t(1), &ack), Err(Refused::Unexpected));
        assert!(matches!(c.poll(t(1)), Step::WaitUntil(_)));
    }

    #[test]
    fn masks_domains_and_mtus_are_checked() {
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(mask_prefix(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
        assert_eq!(mask_prefix(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(class_prefix(Ipv4Addr::new(10, 1, 2, 3)), 8);
        assert_eq!(class_prefix(Ipv4Addr::new(172, 16, 0, 1)), 16);
        assert_eq!(class_prefix(Ipv4Addr::new(192, 168, 1, 1)), 24);
        assert_eq!(parse_domain(b"lab."), Some("lab".into()));
        assert_eq!(parse_domain(b"a.b-c_d"), Some("a.b-c_d".into()));
        assert_eq!(parse_domain(b"lab\nnameserver 6.6.6.6"), None);
        assert_eq!(parse_domain(b"a b"), None);
        assert_eq!(parse_domain(b"a..b"), None);
        assert_eq!(parse_domain(b""), None);
        assert_eq!(parse_domain(b"\0"), None);
        assert_eq!(parse_domain(&[0xff, 0xfe]), None);

        let mut c = client();
        sent(c.poll(t(0)));
        c.receive(
            t(0),
            &reply(DhcpMessageType::Offer, c.xid(), MAC, OFFERED, &[]),
        )
        .unwrap();
        sent(c.poll(t(0)));
        let ack = reply(
            DhcpMessageType::Ack,
            c.xid(),
            MAC,
            OFFERED,
            &[
                DhcpOption {
                    kind: 26,
                    data: &[0, 20],
                },
                DhcpOption {
                    kind: 15,
                    data: b"bad name",
                },
            ],
        );
        c.receive(t(0), &ack).unwrap();
        let Step::Bound(lease) = c.poll(t(0)) else {
            panic!("not bound");
        };
        assert_eq!(lease.mtu, None);
        assert_eq!(lease.domain, None);
        assert_eq!(lease.dns_servers, Vec::<Ipv4Addr>::new());
    }
}
