//! switchboard: a userspace virtual switch and router.
//!
//! The crate has two halves:
//!
//! * an **I/O-free core** ([`switch`], [`mac`], [`time`]): state machines fed
//!   with frames and times, producing decisions and counters, testable in
//!   memory without a single file descriptor;
//! * the **daemon** ([`daemon`], [`config`], [`control`], [`cli`]): a mio event
//!   loop that moves frames between plugs (the `switchboard-plugs` crate) and
//!   the core, the TOML configuration, the control socket and the command
//!   line.
//!
//! Only the daemon half touches the operating system.

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dhcp;
pub mod dns;
pub mod mac;
pub mod network;
pub mod ns;
pub mod plug;
pub mod router;
pub mod switch;
pub mod time;
pub mod uplink;
