//! Integration tests: the `switchboard` binary against real peers (Debian
//! vde2's `vde_plug2tap` and `vde_plug`, kernel taps, ping, iperf3).
//!
//! Everything runs inside network namespaces these tests create (named
//! `sbt-<pid>-<n>`) and removes again, also when a test fails. Tests that need
//! root, `/dev/net/tun` or a missing tool print `SKIP: <reason>` and pass.

mod guest;
mod netns;
mod switchboard;
mod traffic;

mod cascade;
mod dgram_hub;
mod dhcp_dns;
mod fuzz_sockets;
mod handshake;
mod loops;
mod mgmt;
mod nat;
mod networks;
mod ns;
mod offload;
mod own_taps;
mod qemu_guest;
mod router;
mod stale_dir;
mod stream_ports;
mod tunnels;
mod uplink;
mod vde_peers;
mod vlans;
mod vxlan;
