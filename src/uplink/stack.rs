//! The uplink's userspace TCP stack: one smoltcp interface that accepts
//! segments to *any* address, with one socket per spliced connection.
//!
//! smoltcp normally answers only for its own addresses. With AnyIP on and
//! a default route via its own address it takes every destination, so a
//! listening socket bound to exactly (destination, port) can impersonate
//! the remote host the guest dialled. Segments are only fed to the stack
//! for flows the uplink knows, so its habit of resetting unknown
//! connections never fires for a flow that is still connecting.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv4Cidr};

use super::device::QueueDevice;
use crate::time::Instant;

/// Bytes of buffer each way per connection: the window a flow can keep in
/// flight, which must cover a fast loopback path's bandwidth-delay product
/// (at 256 KiB, 10 Gbit/s transfers stalled on it). The OS commits the
/// pages only as a busy flow touches them, so idle flows cost little; a
/// flow moving data at full speed holds up to 2 MiB.
pub const SOCKET_BUFFER: usize = 1024 * 1024;

/// Packets the transmit queue holds before smoltcp is told to wait.
pub const TX_QUEUE_CAP: usize = 1024;

/// Converts the core clock to smoltcp's.
pub fn smol_now(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(now.as_micros()).unwrap_or(i64::MAX))
}

/// Converts smoltcp's clock back to the core's.
pub fn core_instant(at: smoltcp::time::Instant) -> Instant {
    Instant::from_micros(u64::try_from(at.total_micros()).unwrap_or(0))
}

/// Why a socket could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackError {
    /// smoltcp refused the endpoint.
    Endpoint,
}

/// The interface, its device and its sockets.
pub struct TcpStack {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
}

impl TcpStack {
    /// A stack for IP packets of `mtu` bytes. `own` is an address for the
    /// interface itself (any unicast address; it anchors the default
    /// route AnyIP needs); `seed` randomizes initial sequence numbers.
    pub fn new(mtu: usize, own: Ipv4Addr, now: Instant, seed: u64) -> Self {
        let mut device = QueueDevice::new(mtu, TX_QUEUE_CAP);
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, smol_now(now));
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(own, 32)));
        });
        let _ = iface.routes_mut().add_default_ipv4_route(own);
        iface.set_any_ip(true);
        TcpStack {
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
        }
    }

    /// A socket with the uplink's buffer sizes and options, for callers
    /// (tests, a guest model) that need a matching peer.
    pub fn new_socket() -> tcp::Socket<'static> {
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
            tcp::SocketBuffer::new(vec![0u8; SOCKET_BUFFER]),
        );
        // The host side has its own Nagle; delaying again here only adds
        // latency to interactive sessions.
        socket.set_nagle_enabled(false);
        socket
    }

    /// Accepts the guest's held `syn` to `dst`: a socket listening on
    /// exactly `dst` takes it in at once, before any other socket could
    /// listen on the same endpoint and steal it.
    pub fn accept(
        &mut self,
        now: Instant,
        dst: SocketAddrV4,
        syn: Vec<u8>,
    ) -> Result<SocketHandle, StackError> {
        let mut socket = Self::new_socket();
        socket
            .listen(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(*dst.ip())),
                port: dst.port(),
            })
            .map_err(|_| StackError::Endpoint)?;
        let handle = self.sockets.add(socket);
        self.device.push_rx(syn);
        self.poll(now);
        Ok(handle)
    }

    /// Opens a connection from `local` to the guest at `remote` (an
    /// inbound forward).
    pub fn connect(
        &mut self,
        now: Instant,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<SocketHandle, StackError> {
        let mut socket = Self::new_socket();
        socket
            .connect(
                self.iface.context(),
                IpEndpoint::new(IpAddress::Ipv4(*remote.ip()), remote.port()),
                IpListenEndpoint {
                    addr: Some(IpAddress::Ipv4(*local.ip())),
                    port: local.port(),
                },
            )
            .map_err(|_| StackError::Endpoint)?;
        let handle = self.sockets.add(socket);
        self.poll(now);
        Ok(handle)
    }

    /// Adds a socket set up by the caller (a listener in a guest model).
    pub fn add_socket(&mut self, socket: tcp::Socket<'static>) -> SocketHandle {
        self.sockets.add(socket)
    }

    /// Queues a guest segment for a known flow.
    pub fn push(&mut self, packet: Vec<u8>) {
        self.device.push_rx(packet);
    }

    /// Runs the stack: takes in queued segments, emits what the sockets
    /// have to send, runs timers.
    pub fn poll(&mut self, now: Instant) {
        // A bounded number of rounds: each takes in what is queued and
        // emits what it can; more would only spin on a full queue.
        for _ in 0..4 {
            let changed = self
                .iface
                .poll(smol_now(now), &mut self.device, &mut self.sockets);
            if matches!(changed, smoltcp::iface::PollResult::None) && self.device.rx_len() == 0 {
                break;
            }
        }
    }

    /// When smoltcp next needs [`poll`](Self::poll) for its timers.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        self.iface
            .poll_at(smol_now(now), &self.sockets)
            .map(core_instant)
    }

    /// The socket behind `handle`.
    pub fn socket(&mut self, handle: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(handle)
    }

    /// The socket behind `handle`, read-only.
    pub fn socket_ref(&self, handle: SocketHandle) -> &tcp::Socket<'static> {
        self.sockets.get::<tcp::Socket>(handle)
    }

    /// Drops a socket (after its flow ended).
    pub fn remove(&mut self, handle: SocketHandle) {
        self.sockets.remove(handle);
    }

    /// The packet queues, for the uplink's own packets and for draining.
    pub fn device(&mut self) -> &mut QueueDevice {
        &mut self.device
    }

    /// The packet queues, read-only.
    pub fn device_ref(&self) -> &QueueDevice {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::socket::tcp::State;

    /// A guest: a plain smoltcp interface on 10.0.2.15.
    struct Guest {
        iface: Interface,
        device: QueueDevice,
        sockets: SocketSet<'static>,
    }

    impl Guest {
        fn new() -> Self {
            let mut device = QueueDevice::new(1500, 4096);
            let mut iface = Interface::new(
                Config::new(HardwareAddress::Ip),
                &mut device,
                smol_now(Instant::ZERO),
            );
            iface.update_ip_addrs(|a| {
                let _ = a.push(IpCidr::Ipv4(Ipv4Cidr::new(Ipv4Addr::new(10, 0, 2, 15), 24)));
            });
            let _ = iface
                .routes_mut()
                .add_default_ipv4_route(Ipv4Addr::new(10, 0, 2, 2));
            Guest {
                iface,
                device,
                sockets: SocketSet::new(Vec::new()),
            }
        }
        fn poll(&mut self, now: Instant) {
            self.iface
                .poll(smol_now(now), &mut self.device, &mut self.sockets);
        }
    }

    #[test]
    fn any_address_is_accepted_and_data_flows() {
        let now = Instant::from_secs(1);
        let mut stack = TcpStack::new(1500, Ipv4Addr::new(10, 0, 2, 2), now, 1);
        let mut guest = Guest::new();
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        );
        s.connect(
            guest.iface.context(),
            (IpAddress::v4(93, 184, 216, 34), 80),
            40000,
        )
        .unwrap();
        let gh = guest.sockets.add(s);
        guest.poll(now);
        let syn = guest.device.pop_tx().expect("guest sends a SYN");
        assert!(guest.device.pop_tx().is_none());
        // The SYN is held; the stack never sees it until accept.
        let dst: SocketAddrV4 = "93.184.216.34:80".parse().unwrap();
        let h = stack.accept(now, dst, syn).unwrap();
        assert_eq!(stack.socket(h).state(), State::SynReceived);
        let mut moved = 0;
        for _ in 0..20 {
            while let Some(p) = stack.device().pop_tx() {
                // Answers come from the address the guest dialled.
                assert_eq!(&p[12..16], &[93, 184, 216, 34]);
                guest.device.push_rx(p);
                moved += 1;
            }
            guest.poll(now);
            while let Some(p) = guest.device.pop_tx() {
                stack.push(p);
            }
            stack.poll(now);
            if guest.sockets.get::<tcp::Socket>(gh).state() == State::Established
                && stack.socket(h).state() == State::Established
            {
                break;
            }
        }
        assert!(moved > 0);
        assert_eq!(stack.socket(h).state(), State::Established);
        assert_eq!(
            stack.socket(h).remote_endpoint(),
            Some(IpEndpoint::new(IpAddress::v4(10, 0, 2, 15), 40000))
        );
        guest
            .sockets
            .get_mut::<tcp::Socket>(gh)
            .send_slice(b"GET /")
            .unwrap();
        for _ in 0..10 {
            guest.poll(now);
            while let Some(p) = guest.device.pop_tx() {
                stack.push(p);
            }
            stack.poll(now);
        }
        let mut buf = [0u8; 16];
        let n = stack.socket(h).recv_slice(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"GET /");
    }

    #[test]
    fn mss_follows_the_mtu() {
        let now = Instant::ZERO;
        let mut stack = TcpStack::new(9000, Ipv4Addr::new(10, 0, 2, 2), now, 1);
        let h = stack
            .connect(
                now,
                "10.0.2.2:49152".parse().unwrap(),
                "10.0.2.15:22".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(stack.socket(h).state(), State::SynSent);
        let syn = stack.device().pop_tx().unwrap();
        let ip = smoltcp::wire::Ipv4Packet::new_checked(&syn[..]).unwrap();
        let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        let repr = smoltcp::wire::TcpRepr::parse(
            &tcp,
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr()),
            &smoltcp::phy::ChecksumCapabilities::default(),
        )
        .unwrap();
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(repr.src_port, 49152);
        assert_eq!(repr.max_seg_size, Some(9000 - 40));
        assert!(
            repr.window_scale.is_some_and(|s| s >= 3),
            "{:?}",
            repr.window_scale
        );
    }
}
