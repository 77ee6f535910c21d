//! The switch side of the VDE2 protocol: what lets `vde_plug`, QEMU's
//! `-netdev vde` and every other libvdeplug client plug into switchboard as
//! if it were `vde_switch`.
//!
//! # Theory of operation
//!
//! A switch is a directory ([`SwitchDir`]). In it, a listening stream socket
//! named `ctl` ([`VdeListener`]) takes one connection per client. A client
//! first binds a datagram socket of its own somewhere it can write (usually
//! inside the switch directory, as `.PID-N`), then connects to `ctl` and
//! writes a single request: a magic number, a version, the port it wants, the
//! path of its datagram socket, and a free-text description
//! ([`request`] has the byte layout).
//!
//! The switch reads the request without ever blocking
//! ([`PendingHandshake::read`]); the daemon picks a port number and calls
//! [`PendingHandshake::complete`]. The switch then makes a datagram socket of
//! its own, *connects* it to the client's path first (the client may delete
//! that path as soon as the handshake is over), binds it in the directory as
//! `NNN.F` (port number and descriptor number, `vde_switch`'s naming), and
//! writes that socket's address back on the control connection: exactly one
//! 110-byte `sockaddr_un`. The client connects its datagram socket to the
//! address and the port ([`VdePort`]) is up.
//!
//! From then on every datagram on the pair is one whole Ethernet frame, with
//! no header. The control connection stays open and silent; when either side
//! closes it, the port is gone. There are no error replies: a switch that
//! refuses a client just closes the connection.
//!
//! # Safety of the file system side
//!
//! The directory may be group- or world-accessible (`-m`, `--dirmode`), and
//! the daemon may run as root, so file operations are written not to be
//! redirected: the directory must not be a symlink and must be ours, the
//! sockets are created by `bind` (which never follows a symlink) with their
//! final mode already set, and ownership changes do not follow symlinks. A
//! client must have bound the socket it names itself (it must be a socket,
//! owned by the connecting user unless that user is root).

pub mod client;
pub mod dir;
pub mod handshake;
mod link;
pub mod listener;
pub mod port;
pub mod request;

#[cfg(test)]
mod tests;

pub use client::{VdeClient, VdeClientPort};
pub use dir::{DirError, DirOptions, SwitchDir};
pub use handshake::{HandshakeError, HandshakeProgress, PendingHandshake};
pub use listener::VdeListener;
pub use port::VdePort;
pub use request::{PortRequest, RequestError, RequestVersion, VdeRequest};
