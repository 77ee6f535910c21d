//! `switchboard ns URL [-- COMMAND...]`: a command (by default a shell) in
//! a new network namespace whose only interface is plugged into a
//! switchboard segment, without root, like vdeplug4's `vdens`.
//!
//! Labs and tests want "a host on that segment" more often than a VM, and a
//! namespace is the cheapest host there is. Setting one up by hand takes
//! root (`ip netns`, a tap, `vde_plug2tap`, `udhcpc`, a resolv.conf); this
//! takes one command as an ordinary user where the host allows
//! unprivileged user namespaces:
//!
//! 1. outside, the segment (URL, as `switchboard plug` takes it) is
//!    connected first, so an unreachable switch is reported before anything
//!    else happens;
//! 2. a child process enters new user, network and mount namespaces
//!    ([`userns`]), creates the tap and brings it and `lo` up ([`netif`]),
//!    and passes the tap's descriptor out ([`fdpass`]);
//! 3. outside, the original process moves frames between the tap and the
//!    segment ([`parent`]), forwards SIGINT/SIGTERM/SIGHUP to the child, and
//!    exits with the command's status once it ends, tearing the cable down;
//! 4. inside, the address comes from the segment's DHCP server
//!    ([`dhcp_client`] over a packet socket, [`dhcp_frame`], [`packet`]) or
//!    from `--ip/--gw`; the name servers go into a private
//!    `/etc/resolv.conf` ([`resolv`]); one line on stderr says what was
//!    configured, and the command is executed with `SWITCHBOARD_NS=1`.
//!
//! The inside takes one lease and then becomes the command, so it tells
//! the outside the lease first ([`lease_msg`]) and the outside renews it
//! for as long as the command runs ([`renew`]), with frames it injects
//! into the cable. If the server refuses or the lease runs out anyway, a
//! warning says so; the namespace keeps its address.
//!
//! Exit status: the command's (128 + N when killed by signal N); 125 when
//! the namespace could not be set up (no user namespaces, segment
//! unreachable, no DHCP answer), 126/127 when the command could not be
//! executed or found, as `env` and the shells use.

mod child;
pub mod dhcp_client;
pub mod dhcp_frame;
pub mod fdpass;
pub mod lease_msg;
pub mod netif;
pub mod packet;
mod parent;
pub mod renew;
pub mod resolv;
pub mod userns;

use crate::cli::NsArgs;
use crate::plug::url::Endpoint;
use std::net::Ipv4Addr;
use std::time::Duration;
use switchboard_plugs::tap::{MAX_TAP_MTU, MIN_TAP_MTU};

/// The exit status when the namespace could not be set up.
pub const SETUP_FAILED: i32 = 125;

/// How long the inside waits for a DHCP lease.
pub const DHCP_TIMEOUT: Duration = dhcp_client::DEFAULT_TIMEOUT;

/// How the interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    /// From the segment's DHCP server.
    Dhcp,
    /// Fixed by `--ip` (and `--gw`).
    Static {
        /// The address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix_len: u8,
        /// The default gateway, if any.
        gateway: Option<Ipv4Addr>,
    },
}

/// `switchboard ns`'s arguments, checked: what both processes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsPlan {
    /// The segment to plug into.
    pub url: Endpoint,
    /// The URL as given, for messages.
    pub url_text: String,
    /// The interface name inside.
    pub ifname: String,
    /// Address configuration.
    pub addressing: Addressing,
    /// Name servers from `--dns` (they replace DHCP's).
    pub dns: Vec<Ipv4Addr>,
    /// MTU from `--mtu` (it replaces DHCP's option 26).
    pub mtu: Option<u16>,
    /// The command and its arguments.
    pub command: Vec<String>,
}

impl NsPlan {
    /// Checks the arguments; the default command is `$SHELL`, or `/bin/sh`.
    ///
    /// # Errors
    ///
    /// A message naming the argument at fault.
    pub fn from_args(args: &NsArgs, shell: Option<String>) -> Result<NsPlan, String> {
        let url: Endpoint = args
            .url
            .parse()
            .map_err(|e: crate::plug::url::UrlError| e.0)?;
        match &url {
            Endpoint::Stream { listen: true, .. } | Endpoint::Tcp { listen: true, .. } => {
                return Err(format!(
                    "{}: ?listen is not for ns: the namespace joins a segment that is already there",
                    args.url
                ));
            }
            Endpoint::Tap { .. } => {
                return Err(format!(
                    "{}: a tap is not a segment (ns makes its own tap); give the switch's vde:// directory",
                    args.url
                ));
            }
            Endpoint::Stdio => {
                return Err(
                    "- is not for ns: standard input and output belong to the command".into(),
                );
            }
            _ => {}
        }
        netif::check_name(&args.name).map_err(|e| e.to_string())?;
        if let Some(mtu) = args.mtu
            && !(MIN_TAP_MTU..=MAX_TAP_MTU).contains(&mtu)
        {
            return Err(format!(
                "--mtu {mtu} is out of range ({MIN_TAP_MTU}..={MAX_TAP_MTU})"
            ));
        }
        let addressing = match (args.ip, args.gw) {
            (None, None) => Addressing::Dhcp,
            (None, Some(_)) => {
                return Err("--gw needs --ip (without --ip, DHCP gives the gateway)".into());
            }
            (Some(net), gw) => {
                let address = net.addr();
                if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
                    return Err(format!("--ip {net}: not a host address"));
                }
                if let Some(g) = gw
                    && !net.contains(&g)
                {
                    return Err(format!(
                        "--gw {g} is not on {}: the gateway must be reachable on the interface",
                        net.trunc()
                    ));
                }
                Addressing::Static {
                    address,
                    prefix_len: net.prefix_len(),
                    gateway: gw,
                }
            }
        };
        let command = if args.command.is_empty() {
            vec![
                shell
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "/bin/sh".into()),
            ]
        } else {
            args.command.clone()
        };
        Ok(NsPlan {
            url,
            url_text: args.url.clone(),
            ifname: args.name.clone(),
            addressing,
            dns: args.dns.clone(),
            mtu: args.mtu,
            command,
        })
    }
}

/// What ended up configured, for the one line on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    /// The interface.
    pub ifname: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The name servers written to resolv.conf (none: the host's file was
    /// left in place).
    pub dns: Vec<Ipv4Addr>,
    /// The MTU set, if any.
    pub mtu: Option<u16>,
}

impl Configured {
    /// `switchboard ns: eth0 10.0.2.15/24 via 10.0.2.2, dns 10.0.2.2`: what
    /// a person (or a script) needs to know about the namespace.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "switchboard ns: {} {}/{}",
            self.ifname, self.address, self.prefix_len
        );
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if self.dns.is_empty() {
            s.push_str(", dns unchanged");
        } else {
            let list: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
            s.push_str(&format!(", dns {}", list.join(" ")));
        }
        if let Some(m) = self.mtu {
            s.push_str(&format!(", mtu {m}"));
        }
        s
    }
}

/// Runs `switchboard ns`; returns the exit status.
pub fn run(args: &NsArgs) -> i32 {
    let plan = match NsPlan::from_args(args, std::env::var("SHELL").ok()) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let inherited = open_fds();
    let uplink = match parent::connect(&plan.url) {
        Ok(p) => p,
        Err(e) => return fail(&format!("cannot reach the segment {}: {e}", plan.url_text)),
    };
    let (inside, outside) = match nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    ) {
        Ok(p) => p,
        Err(e) => return fail(&format!("socketpair: {e}")),
    };
    // SAFETY: the process is single-threaded here (the command line runs
    // on the main thread and nothing before this spawned threads), so the
    // child may run ordinary code; it never returns from `child::run`.
    match unsafe { nix::unistd::fork() } {
        Err(e) => fail(&format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(outside);
            child::run(&plan, inside, &inherited)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(inside);
            parent::run(child, outside, uplink, &plan.url_text)
        }
    }
}

/// The descriptors open before `ns` opened any of its own: the command
/// inherits these (and only these) from us.
fn open_fds() -> Vec<i32> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_else(|_| vec![0, 1, 2]);
    // The listing's own descriptor is closed by now: keep only the ones
    // still open, or its number could later be taken for one of ours.
    listed
        .into_iter()
        // SAFETY: F_GETFD on a descriptor number reads flags only.
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .collect()
}

fn fail(msg: &str) -> i32 {
    eprintln!("switchboard ns: {msg}");
    SETUP_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(argv: &[&str]) -> Result<NsArgs, clap::Error> {
        let cli = Cli::try_parse_from(argv)?;
        match cli.command {
            Some(Command::Ns(a)) => Ok(a),
            other => panic!("not ns: {other:?}"),
        }
    }

    fn plan(argv: &[&str]) -> Result<NsPlan, String> {
        NsPlan::from_args(&parse(argv).unwrap(), Some("/bin/bash".into()))
    }

    #[test]
    fn defaults_are_dhcp_eth0_and_the_users_shell() {
        let p = plan(&["switchboard", "ns", "vde:///run/sw"]).unwrap();
        assert_eq!(
            p,
            NsPlan {
                url: Endpoint::Vde {
                    dir: "/run/sw".into(),
                    port: None
                },
                url_text: "vde:///run/sw".into(),
                ifname: "eth0".into(),
                addressing: Addressing::Dhcp,
                dns: vec![],
                mtu: None,
                command: vec!["/bin/bash".into()],
            }
        );
        let a = parse(&["switchboard", "ns", "/run/sw"]).unwrap();
        assert_eq!(
            NsPlan::from_args(&a, None).unwrap().command,
            vec!["/bin/sh"]
        );
        assert_eq!(
            NsPlan::from_args(&a, Some(String::new())).unwrap().command,
            vec!["/bin/sh"]
        );
    }

    #[test]
    fn everything_after_the_double_dash_is_the_command() {
        let p = plan(&[
            "switchboard",
            "ns",
            "vde:///run/sw",
            "--ip",
            "10.9.0.5/24",
            "--gw",
            "10.9.0.1",
            "--dns",
            "10.9.0.53",
            "--dns",
            "1.1.1.1",
            "--mtu",
            "1400",
            "--name",
            "lab0",
            "--",
            "sh",
            "-c",
            "ip addr; echo --ip",
        ])
        .unwrap();
        assert_eq!(
            p.addressing,
            Addressing::Static {
                address: Ipv4Addr::new(10, 9, 0, 5),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 9, 0, 1)),
            }
        );
        assert_eq!(
            p.dns,
            vec![Ipv4Addr::new(10, 9, 0, 53), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(p.mtu, Some(1400));
        assert_eq!(p.ifname, "lab0");
        assert_eq!(p.command, vec!["sh", "-c", "ip addr; echo --ip"]);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_reason() {
        let e = plan(&["switchboard", "ns", "/run/sw", "--gw", "10.0.0.1"]).unwrap_err();
        assert!(e.contains("--gw needs --ip"), "{e}");
        let e = plan(&[
            "switchboard",
            "ns",
            "/run/sw",
            "--ip",
            "10.9.0.5/24",
            "--gw",
            "10.8.0.1",
        ])
        .unwrap_err();
        assert!(e.contains("--gw 10.8.0.1 is not on 10.9.0.0/24"), "{e}");
        let e = plan(&["switchboard", "ns", "/run/sw", "--mtu", "20"]).unwrap_err();
        assert!(e.contains("--mtu 20 is out of range"), "{e}");
        let e = plan(&["switchboard", "ns", "/run/sw", "--name", "a/b"]).unwrap_err();
        assert!(e.contains("interface name \"a/b\""), "{e}");
        let e = plan(&["switchboard", "ns", "tap://tap0"]).unwrap_err();
        assert!(e.contains("a tap is not a segment"), "{e}");
        let e = plan(&["switchboard", "ns", "stream:///run/s?listen"]).unwrap_err();
        assert!(e.contains("?listen is not for ns"), "{e}");
        let e = plan(&["switchboard", "ns", "-"]).unwrap_err();
        assert!(e.contains("standard input"), "{e}");
        let e = plan(&["switchboard", "ns", "/run/sw", "--ip", "0.0.0.0/0"]).unwrap_err();
        assert!(e.contains("not a host address"), "{e}");
        assert!(parse(&["switchboard", "ns", "/run/sw", "--ip", "10.9.0.5"]).is_err());
        assert!(parse(&["switchboard", "ns"]).is_err());
    }

    #[test]
    fn the_summary_line() {
        let mut c = Configured {
            ifname: "eth0".into(),
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 2)],
            mtu: None,
        };
        assert_eq!(
            c.summary(),
            "switchboard ns: eth0 10.0.2.15/24 via 10.0.2.2, dns 10.0.2.2"
        );
        c.gateway = None;
        c.dns.clear();
        c.mtu = Some(1400);
        assert_eq!(
            c.summary(),
            "switchboard ns: eth0 10.0.2.15/24, dns unchanged, mtu 1400"
        );
    }
}
