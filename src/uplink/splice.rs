//! Moving bytes between a terminated guest connection (a smoltcp socket)
//! and a host stream, with backpressure both ways and no copy buffer of
//! its own.
//!
//! Host bytes are read straight into the free space of the socket's send
//! buffer, so the uplink never reads more than the guest's side can hold;
//! guest bytes are written to the host straight out of the socket's
//! receive buffer and only what the host accepted is dequeued, so a slow
//! host shrinks the window the guest sees. Both buffers are rings, so a
//! pass may take two slices.

use std::io::{self, ErrorKind, Read, Write};

use smoltcp::socket::tcp;

/// What one pass in one direction achieved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pumped {
    /// Bytes moved.
    pub bytes: usize,
    /// The host stream would block: wait for its next readiness event.
    pub blocked: bool,
    /// The host stream reached end of file (host to guest only).
    pub eof: bool,
}

/// Slices one pass may take: a ring gives at most two contiguous slices,
/// more would only repeat a `WouldBlock`.
const MAX_SLICES: usize = 4;

/// What a pass that moved nothing without an error means.
#[derive(Clone, Copy)]
enum Zero {
    /// A read of zero bytes: the host stream ended.
    Eof,
    /// A write of zero bytes: the host took nothing, as good as blocked
    /// (wait for writability).
    Blocked,
}

/// Runs `pass` (one host read or write through one socket buffer slice,
/// `None` once the socket has no room or bytes) until the socket or the
/// host stream stops it, so both directions stop and fail alike.
fn pump(zero: Zero, mut pass: impl FnMut() -> Option<io::Result<usize>>) -> io::Result<Pumped> {
    let mut out = Pumped::default();
    for _ in 0..MAX_SLICES {
        match pass() {
            None => break,
            Some(Ok(0)) => {
                match zero {
                    Zero::Eof => out.eof = true,
                    Zero::Blocked => out.blocked = true,
                }
                break;
            }
            Some(Ok(n)) => out.bytes += n,
            Some(Err(e)) if e.kind() == ErrorKind::WouldBlock => {
                out.blocked = true;
                break;
            }
            Some(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(out)
}

/// Reads from `host` into the socket's send buffer while both have room
/// and bytes. An error other than `WouldBlock`/`Interrupted` is returned
/// (the connection is then aborted by the caller).
pub fn host_to_guest(socket: &mut tcp::Socket<'_>, host: &mut impl Read) -> io::Result<Pumped> {
    pump(Zero::Eof, || {
        if !socket.can_send() {
            return None;
        }
        // `can_send` was just checked; a refused send means closed.
        socket
            .send(|buf| match host.read(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            })
            .ok()
    })
}

/// Writes what the socket has received to `host`, dequeuing only what the
/// host accepted.
pub fn guest_to_host(socket: &mut tcp::Socket<'_>, host: &mut impl Write) -> io::Result<Pumped> {
    pump(Zero::Blocked, || {
        if !socket.can_recv() {
            return None;
        }
        socket
            .recv(|buf| match host.write(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            })
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Instant;
    use crate::uplink::stack::TcpStack;
    use smoltcp::iface::SocketHandle;
    use std::net::Ipv4Addr;

    /// A host stream that accepts/yields a limited number of bytes and
    /// then blocks.
    struct Trickle {
        input: Vec<u8>,
        budget_in: usize,
        output: Vec<u8>,
        budget_out: usize,
        eof: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() && self.eof {
                return Ok(0);
            }
            let n = buf.len().min(self.input.len()).min(self.budget_in);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            self.budget_in -= n;
            Ok(n)
        }
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.budget_out);
            if n == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            self.output.extend_from_slice(&buf[..n]);
            self.budget_out -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An established pair: a socket in the uplink stack and its peer in
    /// a second stack playing the guest.
    fn pair() -> (TcpStack, SocketHandle, TcpStack, SocketHandle) {
        let now = Instant::ZERO;
        let mut uplink = TcpStack::new(1500, Ipv4Addr::new(10, 0, 2, 2), now, 1);
        let mut guest = TcpStack::new(1500, Ipv4Addr::new(10, 0, 2, 15), now, 2);
        let gh = guest
            .connect(
                now,
                "10.0.2.15:40000".parse().unwrap(),
                "10.9.9.9:7".parse().unwrap(),
            )
            .unwrap();
        let syn = guest.device().pop_tx().unwrap();
        let uh = uplink
            .accept(now, "10.9.9.9:7".parse().unwrap(), syn)
            .unwrap();
        shuttle(&mut uplink, &mut guest);
        assert_eq!(uplink.socket(uh).state(), tcp::State::Established);
        (uplink, uh, guest, gh)
    }

    fn shuttle(a: &mut TcpStack, b: &mut TcpStack) {
        a.poll(Instant::ZERO);
        for _ in 0..50 {
            let mut moved = false;
            while let Some(p) = a.device().pop_tx() {
                b.push(p);
                moved = true;
            }
            b.poll(Instant::ZERO);
            while let Some(p) = b.device().pop_tx() {
                a.push(p);
                moved = true;
            }
            a.poll(Instant::ZERO);
            if !moved {
                break;
            }
        }
    }

    #[test]
    fn host_reads_stop_at_the_send_buffer_and_report_eof() {
        let (mut up, uh, _guest, _gh) = pair();
        let total = crate::uplink::stack::SOCKET_BUFFER + 40_000;
        let data: Vec<u8> = (0..total as u32).map(|i| i as u8).collect();
        let mut host = Trickle {
            input: data.clone(),
            budget_in: usize::MAX,
            output: Vec::new(),
            budget_out: 0,
            eof: true,
        };
        let p = host_to_guest(up.socket(uh), &mut host).unwrap();
        // Only as much as the send buffer holds was read.
        assert_eq!(p.bytes, crate::uplink::stack::SOCKET_BUFFER);
        assert!(!p.blocked && !p.eof);
        assert_eq!(host.input.len(), 40_000);
    }

    #[test]
    fn guest_bytes_are_dequeued_only_as_the_host_takes_them() {
        let (mut up, uh, mut guest, gh) = pair();
        guest.socket(gh).send_slice(b"0123456789").unwrap();
        guest.poll(Instant::ZERO);
        shuttle(&mut up, &mut guest);
        let mut host = Trickle {
            input: Vec::new(),
            budget_in: 0,
            output: Vec::new(),
            budget_out: 4,
            eof: false,
        };
        let p = guest_to_host(up.socket(uh), &mut host).unwrap();
        assert_eq!(
            p,
            Pumped {
                bytes: 4,
                blocked: true,
                eof: false
            }
        );
        assert_eq!(host.output, b"0123");
        assert_eq!(up.socket(uh).recv_queue(), 6);
        host.budget_out = 100;
        let p = guest_to_host(up.socket(uh), &mut host).unwrap();
        assert_eq!(p.bytes, 6);
        assert_eq!(host.output, b"0123456789");

        // Host to guest: a trickle of 3 bytes, then WouldBlock, then EOF.
        host.input = b"abcdef".to_vec();
        host.budget_in = 3;
        host.eof = true;
        let p = host_to_guest(up.socket(uh), &mut host).unwrap();
        assert_eq!(
            p,
            Pumped {
                bytes: 3,
                blocked: true,
                eof: false
            }
        );
        host.budget_in = 100;
        let p = host_to_guest(up.socket(uh), &mut host).unwrap();
        assert_eq!(
            p,
            Pumped {
                bytes: 3,
                blocked: false,
                eof: true
            }
        );
        shuttle(&mut up, &mut guest);
        let mut buf = [0u8; 16];
        let n = guest.socket(gh).recv_slice(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"abcdef");
    }

    #[test]
    fn host_errors_are_returned() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(ErrorKind::ConnectionReset.into())
            }
        }
        let (mut up, uh, _g, _gh) = pair();
        let err = host_to_guest(up.socket(uh), &mut Broken).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    }
}
