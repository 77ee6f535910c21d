//! The control socket: how `switchboard ctl` looks into a running switchboard.
//!
//! The protocol is deliberately plain: the client sends one line of words
//! (`ports`, `macs lan`, `stats`), the server answers with one JSON document
//! and closes the connection. `{"ok": true, "result": ...}` on success,
//! `{"ok": false, "error": "..."}` otherwise. A person can drive it with
//! `socat - UNIX-CONNECT:PATH`; scripts get JSON; the CLI renders tables.
//! Later layers (routes, ARP, NAT) add their own words to [`Request`].

pub mod client;
pub mod request;
pub mod router_views;
pub mod server;
pub mod vde_console;
pub mod views;

pub use request::Request;
