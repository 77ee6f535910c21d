//! Renewing the namespace's DHCP lease from outside it.
//!
//! The inside takes its lease and then becomes the user's command, so
//! nothing in the namespace would ever renew it, and once it expired the
//! server could give the address to a newcomer while the namespace still
//! uses it. The outside carries every frame between the tap and the
//! segment for as long as the command runs, so it renews on the inside's
//! behalf: it injects the REQUESTs toward the segment and takes the replies
//! out of the frames bound for the tap.
//!
//! The outside has no socket and no address of its own, so every REQUEST
//! is the rebinding form of RFC 2131 §4.4.5 (`ciaddr` set, no requested-IP
//! or server-identifier option), broadcast from the leased address; any
//! server that knows the lease may extend it, and answers by unicast to
//! `ciaddr` at `chaddr`. The first goes out at T1 (half the lease), then
//! one every 60 s, or half the time left when that is sooner (but not more
//! often than every 5 s), until an ACK with our transaction id arrives; the
//! next renewal is then planned from the new lease. A NAK, or the lease
//! running out unanswered, ends renewing: the namespace keeps its address
//! (nothing outside can reconfigure it), and the loss is reported once.
//!
//! Sans-IO: time and frames in, frames and a one-time report out.

use super::dhcp_frame;
use super::lease_msg::LeaseMessage;
use crate::mac::MacAddr;
use crate::time::Instant;
use smoltcp::wire::{DhcpMessageType, DhcpPacket, DhcpRepr, EthernetAddress};
use std::net::Ipv4Addr;
use std::time::Duration;

/// The longest pause between unanswered REQUESTs.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// The shortest pause between unanswered REQUESTs, however little of the
/// lease is left.
pub const RETRY_MIN: Duration = Duration::from_secs(5);

/// The lease time that means "forever" (RFC 2132 §9.2): never renewed.
const INFINITE: u32 = u32::MAX;

/// BOOTP's minimum message size, which some servers insist on.
const MIN_MESSAGE_LEN: usize = 300;

/// Why renewing stopped with the lease gone, for the one warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// A server answered our REQUEST with a NAK.
    Refused,
    /// The lease ran out without an ACK.
    Expired,
}

/// Where renewing stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bound, waiting for T1.
    Bound,
    /// REQUESTs out since `started`, waiting for an ACK.
    Renewing { started: Instant },
    /// Nothing more to do: the lease is infinite, or lost.
    Stopped,
}

/// The renewer for the namespace's one lease.
#[derive(Debug, Clone)]
pub struct Renewer {
    mac: MacAddr,
    address: Ipv4Addr,
    xid: u32,
    lease_secs: u32,
    expiry: Instant,
    /// When the next REQUEST is due (T1, or the next retry).
    next: Instant,
    state: State,
    lost: Option<Lost>,
    renewed: u64,
}

impl Renewer {
    /// A renewer for `lease`, taken (for all we know) at `now`, using
    /// transaction id `xid` (random, so that two namespaces on one segment
    /// never take each other's replies) for its first renewal and the ones
    /// after it for the next.
    pub fn new(lease: &LeaseMessage, xid: u32, now: Instant) -> Renewer {
        let mut r = Renewer {
            mac: lease.mac,
            address: lease.address,
            xid,
            lease_secs: lease.lease_secs,
            expiry: now,
            next: now,
            state: State::Stopped,
            lost: None,
            renewed: 0,
        };
        r.bind(now, lease.lease_secs);
        r
    }

    /// When [`poll`](Self::poll) next has something to do; `None` once
    /// renewing has stopped, so the caller's loop need not wake for it.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Stopped => None,
            State::Bound | State::Renewing { .. } => Some(self.next.min(self.expiry)),
        }
    }

    /// The transaction id of the current (or next) renewal, which replies
    /// must carry to be taken.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// When the lease runs out unless renewed first.
    pub fn expiry(&self) -> Instant {
        self.expiry
    }

    /// ACKs taken so far, for tests and logs.
    pub fn renewed(&self) -> u64 {
        self.renewed
    }

    /// The frame to send toward the segment at `now`, if one is due. Also
    /// notices the lease running out (see [`take_lost`](Self::take_lost)).
    pub fn poll(&mut self, now: Instant) -> Option<Vec<u8>> {
        let started = match self.state {
            State::Stopped => return None,
            State::Bound | State::Renewing { .. } if now >= self.expiry => {
                self.stop(Lost::Expired);
                return None;
            }
            _ if now < self.next => return None,
            State::Bound => now,
            State::Renewing { started } => started,
        };
        self.state = State::Renewing { started };
        let left = self.expiry.saturating_since(now);
        self.next = now + (left / 2).min(RETRY_MAX).max(RETRY_MIN);
        let secs = u16::try_from(now.saturating_since(started).as_secs()).unwrap_or(u16::MAX);
        dhcp_frame::broadcast_frame_from(self.mac, self.address, &self.request(secs))
    }

    /// Looks at a frame on its way from the segment to the tap: `true` when
    /// it is a DHCP reply to our MAC with our transaction id, which is ours
    /// to take (and must not reach the tap); `false` for everything else,
    /// which passes on untouched.
    pub fn receive(&mut self, now: Instant, frame: &[u8]) -> bool {
        let Some(payload) = dhcp_frame::reply_payload(self.mac, frame) else {
            return false;
        };
        let Ok(packet) = DhcpPacket::new_checked(payload) else {
            return false;
        };
        let Ok(repr) = DhcpRepr::parse(&packet) else {
            return false;
        };
        if repr.transaction_id != self.xid
            || repr.client_hardware_address != EthernetAddress(self.mac.0)
        {
            return false;
        }
        if matches!(self.state, State::Renewing { .. }) {
            match repr.message_type {
                DhcpMessageType::Ack if repr.your_ip == self.address => {
                    self.renewed += 1;
                    self.xid = self.xid.wrapping_add(1);
                    self.bind(now, repr.lease_duration.unwrap_or(self.lease_secs));
                }
                DhcpMessageType::Nak => self.stop(Lost::Refused),
                _ => {}
            }
        }
        true
    }

    /// Why the lease was lost, once: the first call after a NAK or the
    /// expiry returns it, every other call `None`.
    pub fn take_lost(&mut self) -> Option<Lost> {
        self.lost.take()
    }

    /// Starts a lease of `lease_secs` at `now`: the next REQUEST at T1.
    fn bind(&mut self, now: Instant, lease_secs: u32) {
        self.lease_secs = lease_secs;
        if lease_secs == INFINITE {
            self.state = State::Stopped;
            return;
        }
        let lease = Duration::from_secs(u64::from(lease_secs));
        self.expiry = now + lease;
        self.next = now + lease / 2;
        self.state = State::Bound;
    }

    fn stop(&mut self, why: Lost) {
        self.state = State::Stopped;
        self.lost = Some(why);
    }

    /// A REQUEST in the rebinding form (RFC 2131 table 5): ciaddr is our
    /// address, no requested-IP, no server identifier. The client
    /// identifier is the one the inside used, so that the server finds
    /// the same lease.
    fn request(&self, secs: u16) -> Vec<u8> {
        let mac = EthernetAddress(self.mac.0);
        let repr = DhcpRepr {
            message_type: DhcpMessageType::Request,
            transaction_id: self.xid,
            secs,
            client_hardware_address: mac,
            client_ip: self.address,
            your_ip: Ipv4Addr::UNSPECIFIED,
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: Some(mac),
            server_identifier: None,
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: None,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut buf = vec![0u8; repr.buffer_len().max(MIN_MESSAGE_LEN)];
        // Sized by the representation itself: emitting cannot run out of
        // room, and an error would leave a zeroed message servers refuse.
        let _ = repr.emit(&mut DhcpPacket::new_unchecked(&mut buf[..]));
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
        UdpPacket, UdpRepr,
    };

    const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x42]);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 7, 100);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 7, 1);
    const XID: u32 = 0x1234_5678;

    fn t(secs: u64) -> Instant {
        Instant::from_secs(secs)
    }

    fn renewer(lease_secs: u32) -> Renewer {
        let m = LeaseMessage {
            address: ADDR,
            server: Some(SERVER),
            lease_secs,
            mac: MAC,
        };
        Renewer::new(&m, XID, t(0))
    }

    /// A server's reply, 10.0.7.1:67 to ADDR:68 at `dst_mac`.
    fn reply(
        kind: DhcpMessageType,
        xid: u32,
        chaddr: MacAddr,
        dst_mac: MacAddr,
        lease: Option<u32>,
    ) -> Vec<u8> {
        let dhcp = DhcpRepr {
            message_type: kind,
            transaction_id: xid,
            secs: 0,
            client_hardware_address: EthernetAddress(chaddr.0),
            client_ip: ADDR,
            your_ip: if kind == DhcpMessageType::Nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                ADDR
            },
            server_ip: Ipv4Addr::UNSPECIFIED,
            router: None,
            subnet_mask: None,
            relay_agent_ip: Ipv4Addr::UNSPECIFIED,
            broadcast: false,
            requested_ip: None,
            client_identifier: None,
            server_identifier: Some(SERVER),
            parameter_request_list: None,
            dns_servers: None,
            max_size: None,
            lease_duration: lease,
            renew_duration: None,
            rebind_duration: None,
            additional_options: &[],
        };
        let mut payload = vec![0u8; dhcp.buffer_len()];
        dhcp.emit(&mut DhcpPacket::new_unchecked(&mut payload[..]))
            .unwrap();
        let udp = UdpRepr {
            src_port: 67,
            dst_port: 68,
        };
        let ip = Ipv4Repr {
            src_addr: SERVER,
            dst_addr: ADDR,
            next_header: IpProtocol::Udp,
            payload_len: 8 + payload.len(),
            hop_limit: 64,
        };
        let eth = EthernetRepr {
            src_addr: EthernetAddress([0x52, 0x54, 0, 0, 0, 1]),
            dst_addr: EthernetAddress(dst_mac.0),
            ethertype: EthernetProtocol::Ipv4,
        };
        let mut buf = vec![0u8; 14 + 20 + 8 + payload.len()];
        let caps = ChecksumCapabilities::default();
        let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
        eth.emit(&mut f);
        let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
        ip.emit(&mut p, &caps);
        let mut u = UdpPacket::new_unchecked(p.payload_mut());
        udp.emit(
            &mut u,
            &IpAddress::Ipv4(SERVER),
            &IpAddress::Ipv4(ADDR),
            payload.len(),
            |b| b.copy_from_slice(&payload),
            &caps,
        );
        buf
    }

    fn ack(xid: u32, lease: Option<u32>) -> Vec<u8> {
        reply(DhcpMessageType::Ack, xid, MAC, MAC, lease)
    }

    /// Takes a sent frame apart: every header field, then the DHCP fields
    /// (xid, secs).
    fn check_request(frame: &[u8], xid: u32) -> u16 {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(eth.src_addr(), EthernetAddress(MAC.0));
        assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), ADDR);
        assert_eq!(ip.dst_addr(), Ipv4Addr::BROADCAST);
        assert_eq!(ip.next_header(), IpProtocol::Udp);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((udp.src_port(), udp.dst_port()), (68, 67));
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(ADDR),
            &IpAddress::Ipv4(Ipv4Addr::BROADCAST)
        ));
        let packet = DhcpPacket::new_checked(udp.payload()).unwrap();
        let r = DhcpRepr::parse(&packet).unwrap();
        assert_eq!(r.message_type, DhcpMessageType::Request);
        assert_eq!(r.transaction_id, xid);
        assert_eq!(r.client_hardware_address, EthernetAddress(MAC.0));
        assert_eq!(r.client_ip, ADDR);
        assert_eq!(r.requested_ip, None);
        assert_eq!(r.server_identifier, None);
        assert_eq!(r.client_identifier, Some(EthernetAddress(MAC.0)));
        assert!(!r.broadcast);
        assert!(udp.payload().len() >= MIN_MESSAGE_LEN);
        r.secs
    }

    #[test]
    fn the_first_request_leaves_exactly_at_t1() {
        let mut r = renewer(600);
        assert_eq!(r.deadline(), Some(t(300)));
        assert_eq!(r.poll(t(0)), None);
        assert_eq!(r.poll(Instant::from_micros(300_000_000 - 1)), None);
        let f = r.poll(t(300)).expect("a REQUEST at T1");
        assert_eq!(check_request(&f, XID), 0);
        // Nothing more until the retry.
        assert_eq!(r.poll(t(300)), None);
        assert_eq!(r.deadline(), Some(t(360)));
    }

    #[test]
    fn retries_every_minute_then_half_the_rest_but_not_under_five_seconds() {
        let mut r = renewer(600);
        let mut sent = Vec::new();
        let mut now = t(0);
        while let Some(at) = r.deadline() {
            now = at;
            if let Some(f) = r.poll(now) {
                sent.push((now.as_micros() / 1_000_000, check_request(&f, XID)));
            }
        }
        // T1 = 300; 60 s steps while half the rest is longer; then half
        // the rest (30, 15, 7.5), then the 5 s floor (592.5 -> 597.5),
        // and the expiry at 600.
        let at: Vec<u64> = sent.iter().map(|s| s.0).collect();
        assert_eq!(at, vec![300, 360, 420, 480, 540, 570, 585, 592, 597]);
        let secs: Vec<u16> = sent.iter().map(|s| s.1).collect();
        assert_eq!(secs, vec![0, 60, 120, 180, 240, 270, 285, 292, 297]);
        assert_eq!(now, t(600));
        assert_eq!(r.take_lost(), Some(Lost::Expired));
        assert_eq!(r.take_lost(), None);
        assert_eq!(r.deadline(), None);
        assert_eq!(r.poll(t(10_000)), None);
    }

    #[test]
    fn an_ack_reschedules_from_the_new_lease_time() {
        let mut r = renewer(600);
        let f = r.poll(t(300)).unwrap();
        check_request(&f, XID);
        assert!(r.receive(t(301), &ack(XID, Some(120))));
        assert_eq!(r.renewed(), 1);
        assert_eq!(r.expiry(), t(421));
        assert_eq!(r.deadline(), Some(t(361)));
        assert_eq!(r.xid(), XID + 1);
        assert_eq!(r.poll(t(360)), None);
        let f = r.poll(t(361)).expect("the next renewal at the new T1");
        assert_eq!(check_request(&f, XID + 1), 0);
        // An ACK without a lease time keeps the last one (120 s).
        assert!(r.receive(t(362), &ack(XID + 1, None)));
        assert_eq!(r.expiry(), t(482));
        assert_eq!(r.deadline(), Some(t(422)));
        // A late duplicate of the first ACK is another transaction now.
        assert!(!r.receive(t(363), &ack(XID, Some(9999))));
        assert_eq!(r.expiry(), t(482));
        assert_eq!(r.take_lost(), None);
    }

    #[test]
    fn a_nak_stops_renewing_once() {
        let mut r = renewer(600);
        r.poll(t(300)).unwrap();
        let nak = reply(DhcpMessageType::Nak, XID, MAC, MacAddr::BROADCAST, None);
        assert!(r.receive(t(301), &nak));
        assert_eq!(r.take_lost(), Some(Lost::Refused));
        assert_eq!(r.take_lost(), None);
        assert_eq!(r.deadline(), None);
        assert_eq!(r.poll(t(360)), None);
        assert_eq!(r.poll(t(700)), None);
        assert_eq!(r.take_lost(), None);
        // Our replies are still kept from the tap, but change nothing.
        assert!(r.receive(t(302), &ack(XID, Some(600))));
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn expiry_before_any_answer_is_reported() {
        let mut r = renewer(60);
        assert_eq!(r.deadline(), Some(t(30)));
        assert!(r.poll(t(30)).is_some());
        // 30 s left: retry after 15.
        assert_eq!(r.deadline(), Some(t(45)));
        assert_eq!(r.poll(t(61)), None);
        assert_eq!(r.take_lost(), Some(Lost::Expired));
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn other_transactions_macs_and_frames_pass_through() {
        let mut r = renewer(600);
        r.poll(t(300)).unwrap();
        let other = MacAddr([0x02, 9, 9, 9, 9, 9]);
        // Another client's reply, at its MAC or at ours.
        assert!(!r.receive(
            t(301),
            &reply(DhcpMessageType::Ack, XID, other, other, Some(600))
        ));
        assert!(!r.receive(
            t(301),
            &reply(DhcpMessageType::Ack, XID, other, MAC, Some(600))
        ));
        // Our MAC but another transaction (the inside's own, say).
        assert!(!r.receive(t(301), &ack(XID ^ 1, Some(600))));
        // Not DHCP at all, or truncated.
        let a = ack(XID, Some(600));
        assert!(!r.receive(t(301), &a[..40]));
        assert!(!r.receive(t(301), &[0u8; 60]));
        assert_eq!(r.renewed(), 0);
        assert_eq!(r.expiry(), t(600));
        // Another message type under our xid is kept from the tap, but
        // is no renewal.
        let offer = reply(DhcpMessageType::Offer, XID, MAC, MAC, Some(600));
        assert!(r.receive(t(301), &offer));
        assert_eq!(r.renewed(), 0);
        assert_eq!(r.expiry(), t(600));
        assert!(r.receive(t(302), &a));
        assert_eq!(r.renewed(), 1);
    }

    #[test]
    fn an_infinite_lease_is_never_renewed() {
        let mut r = renewer(u32::MAX);
        assert_eq!(r.deadline(), None);
        assert_eq!(r.poll(t(1 << 40)), None);
        assert_eq!(r.take_lost(), None);
    }
}
