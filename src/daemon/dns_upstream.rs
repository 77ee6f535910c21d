//! The DNS forwarder's upstream side: ordinary host sockets.
//!
//! The forwarder core ([`crate::dns::DnsForwarder`]) decides what to ask
//! which resolver; this shell moves the bytes. UDP goes through one
//! unconnected non-blocking socket registered with the daemon's mio poll
//! (an IPv6 one is bound too, on the first IPv6 upstream only, and
//! registered under the same token). TCP, needed only to re-ask an answer
//! that came back truncated, is rare and short: each exchange runs on its
//! own short-lived thread with blocking I/O and timeouts, and hands its
//! answer back through a channel and a [`mio::Waker`], so the event loop
//! never blocks. The number of such threads is bounded.
//!
//! Responses are passed up with their source address and transport; the
//! core decides whether to believe them. Nothing here parses DNS beyond
//! TCP's two-byte length prefix (RFC 1035 4.2.2).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token, Waker};

use crate::dns::Transport;

/// TCP exchanges in flight at most; more are dropped (the core's timeout
/// then moves on), so a flood of truncated answers cannot spawn threads
/// without end.
pub const MAX_TCP_EXCHANGES: usize = 16;

/// Datagrams read per [`DnsUpstreamIo::receive`] call, so one busy socket
/// cannot starve the rest of the loop.
pub const MAX_DATAGRAMS_PER_RECEIVE: usize = 256;

/// Time allowed to connect to an upstream over TCP.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Time allowed for each read or write of a TCP exchange.
pub const TCP_IO_TIMEOUT: Duration = Duration::from_secs(4);

/// The largest DNS message (what a 16-bit length prefix can carry, and
/// the largest UDP payload).
const MAX_MESSAGE: usize = 65_535;

/// One message from an upstream resolver, for
/// [`DnsForwarder::handle_upstream`](crate::dns::DnsForwarder::handle_upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamResponse {
    /// Where it came from (for UDP, the datagram's source).
    pub server: SocketAddr,
    /// How it came.
    pub transport: Transport,
    /// The bare DNS message.
    pub payload: Vec<u8>,
}

/// Failures of the upstream shell, for logs and `ctl`: sends that fail are
/// otherwise silent (the core times out and moves on).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DnsUpstreamStats {
    /// UDP sends that failed (unreachable network, no IPv6, ...).
    pub udp_send_errors: u64,
    /// UDP receives that failed with something other than "would block".
    pub udp_recv_errors: u64,
    /// TCP exchanges not started because [`MAX_TCP_EXCHANGES`] were busy.
    pub tcp_dropped: u64,
    /// TCP exchanges that failed (connect, timeout, short or bad answer).
    pub tcp_failed: u64,
}

/// The upstream sockets of one DNS forwarder.
pub struct DnsUpstreamIo {
    registry: Registry,
    udp_token: Token,
    udp4: UdpSocket,
    udp6: Option<UdpSocket>,
    waker: Arc<Waker>,
    /// Finished TCP exchanges: an answer, or `None` for a failure.
    tcp_tx: Sender<Option<UpstreamResponse>>,
    tcp_rx: Receiver<Option<UpstreamResponse>>,
    tcp_in_flight: Arc<AtomicUsize>,
    stats: DnsUpstreamStats,
    buf: Vec<u8>,
}

impl DnsUpstreamIo {
    /// Binds an unconnected UDP socket (v4 0.0.0.0:0; a v6 one too only
    /// when needed, lazily) and registers it under `udp_token`; a
    /// `mio::Waker` under `waker_token` wakes the loop when a TCP exchange
    /// finishes. mio allows one waker per poll: the daemon must not
    /// register another.
    pub fn new(registry: &Registry, udp_token: Token, waker_token: Token) -> std::io::Result<Self> {
        let mut udp4 = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
        registry.register(&mut udp4, udp_token, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(registry, waker_token)?);
        let (tcp_tx, tcp_rx) = channel();
        Ok(DnsUpstreamIo {
            registry: registry.try_clone()?,
            udp_token,
            udp4,
            udp6: None,
            waker,
            tcp_tx,
            tcp_rx,
            tcp_in_flight: Arc::new(AtomicUsize::new(0)),
            stats: DnsUpstreamStats::default(),
            buf: vec![0; MAX_MESSAGE],
        })
    }

    /// Sends one query the core asked for. Failures are logged and
    /// counted, never returned: the core's timeout handles a lost query
    /// the same way whatever lost it.
    pub fn send(&mut self, server: SocketAddr, transport: Transport, payload: &[u8]) {
        match transport {
            Transport::Udp => self.send_udp(server, payload),
            Transport::Tcp => self.send_tcp(server, payload),
        }
    }

    fn send_udp(&mut self, server: SocketAddr, payload: &[u8]) {
        let socket = match server {
            SocketAddr::V4(_) => &self.udp4,
            SocketAddr::V6(_) => match self.udp6() {
                Ok(s) => s,
                Err(e) => {
                    self.stats.udp_send_errors += 1;
                    tracing::debug!("DNS upstream: no IPv6 socket for {server}: {e}");
                    return;
                }
            },
        };
        if let Err(e) = socket.send_to(payload, server) {
            self.stats.udp_send_errors += 1;
            tracing::debug!("DNS upstream: send to {server} failed: {e}");
        }
    }

    /// The IPv6 socket, bound and registered on first use.
    fn udp6(&mut self) -> std::io::Result<&UdpSocket> {
        if self.udp6.is_none() {
            let mut socket = UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))?;
            self.registry
                .register(&mut socket, self.udp_token, Interest::READABLE)?;
            self.udp6 = Some(socket);
        }
        self.udp6
            .as_ref()
            .ok_or_else(|| std::io::Error::other("IPv6 socket missing"))
    }

    fn send_tcp(&mut self, server: SocketAddr, payload: &[u8]) {
        let Ok(len) = u16::try_from(payload.len()) else {
            self.stats.tcp_failed += 1;
            return;
        };
        if self.tcp_in_flight.load(Ordering::Acquire) >= MAX_TCP_EXCHANGES {
            self.stats.tcp_dropped += 1;
            tracing::debug!("DNS upstream: too many TCP exchanges, dropping one to {server}");
            return;
        }
        let mut message = Vec::with_capacity(payload.len() + 2);
        message.extend_from_slice(&len.to_be_bytes());
        message.extend_from_slice(payload);
        let tx = self.tcp_tx.clone();
        let waker = Arc::clone(&self.waker);
        let in_flight = Arc::clone(&self.tcp_in_flight);
        in_flight.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new()
            .name("dns-tcp".into())
            .spawn(move || {
                let result = tcp_exchange(server, &message);
                in_flight.fetch_sub(1, Ordering::AcqRel);
                match result {
                    Ok(payload) => {
                        let _ = tx.send(Some(UpstreamResponse {
                            server,
                            transport: Transport::Tcp,
                            payload,
                        }));
                        let _ = waker.wake();
                    }
                    Err(e) => {
                        tracing::debug!("DNS upstream: TCP exchange with {server}: {e}");
                        let _ = tx.send(None);
                    }
                }
            });
        if let Err(e) = spawned {
            self.tcp_in_flight.fetch_sub(1, Ordering::AcqRel);
            self.stats.tcp_failed += 1;
            tracing::debug!("DNS upstream: cannot start a TCP exchange: {e}");
        }
    }

    /// Collects what has arrived: UDP datagrams until the sockets would
    /// block (at most [`MAX_DATAGRAMS_PER_RECEIVE`]; if that bound is hit
    /// the waker fires so the loop calls again), then finished TCP
    /// exchanges. Call it on events for either token.
    pub fn receive(&mut self, out: &mut Vec<UpstreamResponse>) {
        let mut budget = MAX_DATAGRAMS_PER_RECEIVE;
        let mut more = false;
        for socket in std::iter::once(&self.udp4).chain(self.udp6.as_ref()) {
            loop {
                if budget == 0 {
                    more = true;
                    break;
                }
                match socket.recv_from(&mut self.buf) {
                    Ok((len, server)) => {
                        budget -= 1;
                        out.push(UpstreamResponse {
                            server,
                            transport: Transport::Udp,
                            payload: self.buf[..len.min(self.buf.len())].to_vec(),
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        // ICMP errors from earlier sends surface here
                        // (e.g. connection refused); keep draining.
                        budget -= 1;
                        self.stats.udp_recv_errors += 1;
                        tracing::debug!("DNS upstream: receive failed: {e}");
                    }
                }
            }
        }
        if more && let Err(e) = self.waker.wake() {
            tracing::debug!("DNS upstream: cannot wake the loop: {e}");
        }
        while let Ok(finished) = self.tcp_rx.try_recv() {
            match finished {
                Some(response) => out.push(response),
                None => self.stats.tcp_failed += 1,
            }
        }
    }

    /// What has failed so far.
    pub fn stats(&self) -> &DnsUpstreamStats {
        &self.stats
    }

    /// Removes the UDP sockets from the poll (TCP threads finish on their
    /// own; their answers are then never collected).
    pub fn deregister(&mut self, registry: &Registry) {
        if let Err(e) = registry.deregister(&mut self.udp4) {
            tracing::debug!("DNS upstream: deregister: {e}");
        }
        if let Some(socket) = self.udp6.as_mut()
            && let Err(e) = registry.deregister(socket)
        {
            tracing::debug!("DNS upstream: deregister: {e}");
        }
    }
}

/// One blocking TCP exchange: connect, write the length-prefixed query,
/// read one length-prefixed answer.
fn tcp_exchange(server: SocketAddr, message: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&server, TCP_CONNECT_TIMEOUT)?;
    stream.set_read_timeout(Some(TCP_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(TCP_IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(message)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Err(std::io::Error::new(ErrorKind::InvalidData, "empty answer"));
    }
    let mut answer = vec![0; len];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::net::{TcpListener, UdpSocket as StdUdpSocket};
    use std::time::Instant;

    const UDP: Token = Token(1);
    const WAKE: Token = Token(2);

    /// Polls until `want` responses arrived or 5 s passed.
    fn collect(poll: &mut Poll, io: &mut DnsUpstreamIo, want: usize) -> Vec<UpstreamResponse> {
        let mut events = Events::with_capacity(8);
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < want && start.elapsed() < Duration::from_secs(5) {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            for event in events.iter() {
                assert!(event.token() == UDP || event.token() == WAKE);
            }
            io.receive(&mut got);
        }
        got
    }

    #[test]
    fn udp_and_tcp_exchanges_with_real_sockets() {
        let mut poll = Poll::new().unwrap();
        let mut io = DnsUpstreamIo::new(poll.registry(), UDP, WAKE).unwrap();

        // A UDP "resolver" that echoes each query reversed.
        let udp_server = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        udp_server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let udp_addr = udp_server.local_addr().unwrap();
        io.send(udp_addr, Transport::Udp, b"\x12\x34query");
        let mut buf = [0u8; 64];
        let (n, from) = udp_server.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"\x12\x34query");
        udp_server.send_to(b"\x12\x34answer", from).unwrap();
        let got = collect(&mut poll, &mut io, 1);
        assert_eq!(
            got,
            vec![UpstreamResponse {
                server: udp_addr,
                transport: Transport::Udp,
                payload: b"\x12\x34answer".to_vec(),
            }]
        );

        // A TCP "resolver" checking the length prefix both ways.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut len = [0u8; 2];
            conn.read_exact(&mut len).unwrap();
            let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
            conn.read_exact(&mut query).unwrap();
            let answer = vec![0xab; 3000];
            conn.write_all(&(answer.len() as u16).to_be_bytes())
                .unwrap();
            conn.write_all(&answer).unwrap();
            query
        });
        io.send(tcp_addr, Transport::Tcp, b"\x56\x78tcp-query");
        let got = collect(&mut poll, &mut io, 1);
        assert_eq!(server.join().unwrap(), b"\x56\x78tcp-query");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].server, tcp_addr);
        assert_eq!(got[0].transport, Transport::Tcp);
        assert_eq!(got[0].payload, vec![0xab; 3000]);
        assert_eq!(*io.stats(), DnsUpstreamStats::default());
        io.deregister(poll.registry());
    }

    #[test]
    fn failed_tcp_exchange_releases_its_slot() {
        let poll = Poll::new().unwrap();
        let mut io = DnsUpstreamIo::new(poll.registry(), UDP, WAKE).unwrap();
        // Nothing listens here once the listener is dropped.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        io.send(addr, Transport::Tcp, b"q");
        let start = Instant::now();
        while io.tcp_in_flight.load(Ordering::Acquire) > 0
            && start.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(io.tcp_in_flight.load(Ordering::Acquire), 0);
        let mut got = Vec::new();
        io.receive(&mut got);
        assert!(got.is_empty());
        assert_eq!(io.stats().tcp_failed, 1);
    }
}
