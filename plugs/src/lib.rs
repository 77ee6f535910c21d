//! Frame endpoints for switchboard.
//!
//! A *plug* is anything that carries whole Ethernet frames in and out of the
//! switch: a tap device, a VDE2 data socket, (later) a QEMU stream socket or a
//! UDP tunnel. Every plug owns its file descriptors, is non-blocking, registers
//! itself with a [`mio::Registry`], and moves frames in batches through the
//! [`Plug`] trait. Plugs make no forwarding decisions: the I/O-free core in the
//! `switchboard` crate decides where a frame goes, and the daemon's event loop
//! hands the frames to plugs.
//!
//! Listening endpoints that create plugs (the VDE2 `ctl` socket) live beside
//! the plugs they create, in their own module, and are not plugs themselves.

/// Implements [`mio::event::Source`] for a type by handing all three calls
/// to one of its fields: most plugs and listeners own exactly one
/// registrable socket.
#[macro_export]
macro_rules! delegate_source {
    ($ty:ty, $($field:ident).+) => {
        impl ::mio::event::Source for $ty {
            fn register(
                &mut self,
                registry: &::mio::Registry,
                token: ::mio::Token,
                interests: ::mio::Interest,
            ) -> ::std::io::Result<()> {
                self.$($field).+.register(registry, token, interests)
            }

            fn reregister(
                &mut self,
                registry: &::mio::Registry,
                token: ::mio::Token,
                interests: ::mio::Interest,
            ) -> ::std::io::Result<()> {
                self.$($field).+.reregister(registry, token, interests)
            }

            fn deregister(&mut self, registry: &::mio::Registry) -> ::std::io::Result<()> {
                self.$($field).+.deregister(registry)
            }
        }
    };
}

/// Implements [`mio::event::Source`] as "nothing to register" for a plug
/// without a descriptor of its own: one that sends through a socket another
/// endpoint owns and registers (a dgram hub's peer), or that hands frames
/// straight to code in the same process (a router interface).
#[macro_export]
macro_rules! no_descriptor_source {
    ($ty:ty) => {
        impl ::mio::event::Source for $ty {
            fn register(
                &mut self,
                _: &::mio::Registry,
                _: ::mio::Token,
                _: ::mio::Interest,
            ) -> ::std::io::Result<()> {
                Ok(())
            }

            fn reregister(
                &mut self,
                _: &::mio::Registry,
                _: ::mio::Token,
                _: ::mio::Interest,
            ) -> ::std::io::Result<()> {
                Ok(())
            }

            fn deregister(&mut self, _: &::mio::Registry) -> ::std::io::Result<()> {
                Ok(())
            }
        }
    };
}

pub mod batch;
pub mod dgram;
pub mod dgram_peer;
pub mod framing;
pub mod offload;
pub mod sealed;
pub mod stream;
pub mod tap;
pub mod tap_napi;
pub mod tap_uring;
#[cfg(test)]
mod test_util;
pub mod udp_tunnel;
pub mod vde;
pub mod vxlan;

pub use batch::{FrameBatch, MAX_FRAME_SLOT};

use std::io;

/// What a plug reports after trying to fill a receive batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecvStatus {
    /// The batch was filled to capacity; more frames may be waiting, so the
    /// caller should come back to this plug after serving the others.
    More,
    /// The plug's queue is empty for now (the OS said "would block"); the next
    /// readiness event will say when there is more.
    Drained,
    /// The peer went away (EOF on a control connection, a tap that vanished).
    /// Frames already in the batch are still valid; the port should be
    /// removed after they are forwarded.
    Closed,
}

/// The outcome of handing frames to a plug for sending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxReport {
    /// Frames the OS accepted.
    pub sent: usize,
    /// Bytes in the frames the OS accepted.
    pub sent_bytes: usize,
    /// Frames dropped because the peer's queue was full. A switch never blocks
    /// on a slow port: like `vde_switch`, it drops and counts.
    pub dropped_full: usize,
    /// Frames dropped for any other error (peer gone, frame refused).
    pub dropped_error: usize,
}

impl TxReport {
    /// Adds another report's counts to this one.
    pub fn absorb(&mut self, other: TxReport) {
        self.sent += other.sent;
        self.sent_bytes += other.sent_bytes;
        self.dropped_full += other.dropped_full;
        self.dropped_error += other.dropped_error;
    }
}

/// A frame endpoint driven by the daemon's event loop.
///
/// The contract keeps the fast path free of allocation and lets each plug use
/// the cheapest syscalls its kind of descriptor allows (`recvmmsg`/`sendmmsg`
/// on datagram sockets, plain `read`/`write` on taps).
pub trait Plug: mio::event::Source {
    /// Appends received frames to `batch` until it is full or the plug has no
    /// more. Never blocks. A frame longer than a batch slot is stored
    /// truncated to the slot size, so the caller's length check drops it.
    fn recv_batch(&mut self, batch: &mut FrameBatch) -> io::Result<RecvStatus>;

    /// Sends the frames of `batch` whose indices are listed in `which`, in
    /// order. Never blocks: frames the OS will not take now are dropped and
    /// counted in the report.
    fn send_batch(&mut self, batch: &FrameBatch, which: &[u16]) -> TxReport;

    /// Called when the plug's descriptors become writable. Plugs that buffer
    /// output (stream sockets) flush here; datagram plugs and taps need not.
    fn on_writable(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Brings what the event loop watches the plug's descriptors for in
    /// line with what the plug waits for now, using the registry and token
    /// the plug was registered with. The event loop calls it after every
    /// receive from the plug, every send to it and every
    /// [`on_writable`](Self::on_writable); it must cost next to nothing when
    /// nothing changed.
    ///
    /// It exists because a registration costs the peer, too: every datagram
    /// the peer sends us runs our epoll callback inside the peer's system
    /// call. A plug that the event loop serves from its ready queue anyway
    /// need not make the peer pay for readiness it would ignore. An error
    /// means the registration may be out of date; the event loop unplugs a
    /// port whose receive side it can no longer watch.
    ///
    /// The default keeps the registration the event loop made.
    fn refresh_interest(
        &mut self,
        _registry: &mio::Registry,
        _token: mio::Token,
    ) -> io::Result<()> {
        Ok(())
    }

    /// Checks, without blocking, whether the peer is still there. The daemon
    /// calls this a few times a second, to catch a departure whose event was
    /// consumed together with data. Plugs whose departure always shows up in
    /// [`recv_batch`](Self::recv_batch) keep the default.
    fn check_alive(&mut self) -> bool {
        true
    }

    /// Whether the plug takes frames with pending offload work as they are
    /// (super-frames, unfilled checksums): a tap with virtio-net headers
    /// does. For every other plug the daemon segments and checksums in
    /// software first.
    fn accepts_offload(&self) -> bool {
        false
    }

    /// A short human-readable label for the port table: what is attached and
    /// how (for a VDE2 client, its own description string).
    fn description(&self) -> &str;

    /// The kind of attachment, for display: `"vde"`, `"tap"`, ...
    fn kind(&self) -> &'static str;

    /// Counts the plug keeps beyond the switch's per-port counters, which
    /// only the plug can see (a VXLAN port's datagrams for another VNI, a
    /// tunnel's forged datagrams), as name/value pairs for `ctl ports`.
    /// Asked for only when someone looks, so it may allocate.
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
