//! The command line: `switchboard switch`, `switchboard run`,
//! `switchboard ctl`.

use crate::config::{
    self, ConfigError, ConfigFile, MgmtPlan, Permissions, Plan, SegmentPlan, VdePlan, parse_mode,
    resolve_group,
};
use crate::control::router_views::{
    ArpView, ConntrackView, LeaseView, NatView, RouteView, RouterView,
};
use crate::control::views::{MacView, PortView, StatsView, VlanView};
use crate::control::views::{NetworkInfoView, NetworkView};
use crate::control::{Request, client};
use crate::daemon::{self, DaemonOptions};
use crate::plug::cable::CableOptions;
use crate::plug::url::Endpoint;
use crate::switch::SegmentConfig;
use clap::{Args, Parser, Subcommand};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A userspace virtual switch and router for VMs, containers and lab
/// namespaces.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand, `run` the embedded default
    /// network.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one switch segment, taking vde_switch's options with the same
    /// meaning (a drop-in for scripts that start vde_switch).
    Switch(Box<SwitchArgs>),
    /// Run the networks described in a TOML file, or the embedded default
    /// network when no file is given.
    Run(RunArgs),
    /// Show the state of a running switchboard.
    Ctl(CtlArgs),
    /// Join two endpoints with a cable, like vde_plug and dpipe:
    /// `plug vde:///run/a vde:///run/b`, `plug vde:///run/a tap://tap3`,
    /// `plug vde:///run/a - = ssh host switchboard plug vde:///run/b -`.
    Plug(PlugArgs),
    /// Print a libvirt network (XML) or LXC's lxc-net settings as a
    /// switchboard `[networks.NAME]` block, warnings on stderr.
    Import(ImportArgs),
    /// Run a command (default: your shell) in a new network namespace
    /// plugged into a segment, without root, like vdeplug4's vdens:
    /// `ns vde:///run/sw -- ping -c1 10.0.2.2`.
    Ns(NsArgs),
}

/// `switchboard ns`.
#[derive(Debug, Args)]
pub struct NsArgs {
    /// The segment to join, as `plug` takes it: vde:///DIR (a switch
    /// directory), stream:///PATH, tcp://HOST:PORT, dgram:///PATH or
    /// udp://[ADDR:]PORT->ADDR:PORT.
    #[arg(value_name = "URL")]
    pub url: String,
    /// A fixed address instead of DHCP.
    #[arg(long, value_name = "ADDR/PREFIX")]
    pub ip: Option<ipnet::Ipv4Net>,
    /// The default gateway, with --ip.
    #[arg(long, value_name = "ADDR")]
    pub gw: Option<std::net::Ipv4Addr>,
    /// A name server for the namespace's resolv.conf (repeat for more);
    /// replaces the ones DHCP gives.
    #[arg(long, value_name = "ADDR")]
    pub dns: Vec<std::net::Ipv4Addr>,
    /// The interface MTU; replaces the one DHCP gives.
    #[arg(long, value_name = "N")]
    pub mtu: Option<u16>,
    /// The interface name inside the namespace.
    #[arg(long, value_name = "IFNAME", default_value = "eth0")]
    pub name: String,
    /// The command to run, after `--` (default: $SHELL, or /bin/sh). Exits
    /// with its status; 125 when the namespace could not be set up.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `switchboard plug`.
#[derive(Debug, Args)]
pub struct PlugArgs {
    /// Reopen a side that goes away, first after this many seconds
    /// (doubling up to a minute), instead of exiting.
    #[arg(long, value_name = "SECS")]
    pub reconnect: Option<u64>,
    /// How the cable introduces itself to VDE switches (shown by
    /// `ctl ports` and vde_switch's port/print).
    #[arg(short = 'D', long, default_value = "switchboard plug")]
    pub description: String,
    /// Two endpoints (vde:///DIR[N], stream:///PATH[?listen],
    /// tcp://HOST:PORT[?listen], dgram:///PATH[?local=PATH], tap://NAME,
    /// udp://[ADDR:]PORT->ADDR:PORT, or - for stdin/stdout with VDE stream
    /// framing), optionally followed by `= COMMAND...` to run COMMAND and
    /// use its stdin/stdout for `-`.
    #[arg(required = true, num_args = 2.., trailing_var_arg = true, allow_hyphen_values = true, value_name = "ENDPOINT")]
    pub args: Vec<String>,
}

impl PlugArgs {
    /// Splits the arguments into the two endpoints and the options.
    pub fn to_cable(&self) -> Result<(Endpoint, Endpoint, CableOptions), String> {
        let (ends, command) = match self.args.iter().position(|a| a == "=") {
            Some(i) => (&self.args[..i], Some(self.args[i + 1..].to_vec())),
            None => (&self.args[..], None),
        };
        let [a, b] = ends else {
            return Err(format!(
                "expected two endpoints, got {}: {ends:?}",
                ends.len()
            ));
        };
        let a: Endpoint = a.parse().map_err(|e: crate::plug::url::UrlError| e.0)?;
        let b: Endpoint = b.parse().map_err(|e: crate::plug::url::UrlError| e.0)?;
        if let Some(cmd) = &command {
            if cmd.is_empty() {
                return Err(
                    "nothing after =: expected a command whose stdin/stdout carry the cable".into(),
                );
            }
            if !(a == Endpoint::Stdio || b == Endpoint::Stdio) {
                return Err(
                    "`= COMMAND` needs one endpoint to be - (the command's stdin/stdout)".into(),
                );
            }
        }
        if a == Endpoint::Stdio && b == Endpoint::Stdio {
            return Err("only one side can be -".into());
        }
        Ok((
            a,
            b,
            CableOptions {
                reconnect: self.reconnect.map(Duration::from_secs),
                description: self.description.clone(),
                pipe_command: command,
            },
        ))
    }
}

/// `switchboard switch`: vde_switch's options.
#[derive(Debug, Args)]
pub struct SwitchArgs {
    /// The switch directory (VDE2 control socket at DIR/ctl). Defaults to
    /// vde_switch's: /var/run/vde.ctl as root, /tmp/vde.ctl otherwise.
    #[arg(
        short = 's',
        long = "sock",
        alias = "vdesock",
        alias = "unix",
        value_name = "DIR"
    )]
    pub sock: Option<PathBuf>,
    /// A tap to open and plug in (repeat, or separate with commas).
    #[arg(short = 't', long = "tap", value_name = "TAP", value_delimiter = ',')]
    pub taps: Vec<String>,
    /// Permissions of the sockets (octal), like vde_switch -m.
    #[arg(short = 'm', long = "mode", value_name = "MODE")]
    pub mode: Option<String>,
    /// Permissions of the directory (octal), like vde_switch --dirmode.
    #[arg(long = "dirmode", value_name = "MODE")]
    pub dirmode: Option<String>,
    /// Group owning the directory and sockets, like vde_switch -g.
    #[arg(short = 'g', long = "group", value_name = "GROUP")]
    pub group: Option<String>,
    /// Hub mode: flood every frame, learn nothing.
    #[arg(short = 'x', long = "hub")]
    pub hub: bool,
    /// Number of ports.
    #[arg(
        short = 'n',
        long = "numports",
        value_name = "PORTS",
        default_value_t = 32
    )]
    pub numports: u16,
    /// Detach into the background once ready.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Write the process id to this file.
    #[arg(short = 'p', long = "pidfile", value_name = "PIDFILE")]
    pub pidfile: Option<PathBuf>,
    /// Payload MTU; up to 65520 (VDE2 clients carry at most 9216).
    #[arg(long = "mtu", default_value_t = 1500)]
    pub mtu: usize,
    /// Maximum entries in the MAC table.
    #[arg(long = "mac-table-size", default_value_t = 4096)]
    pub mac_table_size: usize,
    /// Seconds a silent station stays in the MAC table.
    #[arg(long = "mac-aging", value_name = "SECS", default_value_t = 300)]
    pub mac_aging: u64,
    /// Open taps without virtio-net headers and offloads: every frame is
    /// MTU-sized, as with vde_switch.
    #[arg(long = "no-offload")]
    pub no_offload: bool,
    /// Have a kernel thread deliver the frames written to the taps
    /// (threaded NAPI): about twice the throughput with plain frames on
    /// two cores, about 30 µs more per round trip on an idle path.
    #[arg(long = "napi-thread")]
    pub napi_thread: bool,
    /// Also listen for QEMU `-netdev stream` clients on this Unix socket.
    #[arg(long = "stream", value_name = "PATH")]
    pub stream: Option<PathBuf>,
    /// Also listen for QEMU stream clients over TCP on this address.
    #[arg(long = "stream-tcp", value_name = "ADDR:PORT")]
    pub stream_tcp: Option<std::net::SocketAddr>,
    /// Also bind this Unix datagram socket for QEMU `-netdev dgram` clients
    /// (remote.path=PATH): each client's own socket path becomes a port.
    #[arg(long = "dgram", value_name = "PATH")]
    pub dgram: Option<PathBuf>,
    /// Control socket path (default: DIR/control).
    #[arg(long = "control", value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve vde_switch's management console here (vdecmd, unixterm), like
    /// vde_switch -M.
    #[arg(short = 'M', long = "mgmt", value_name = "PATH")]
    pub mgmt: Option<PathBuf>,
    /// Permissions of the console socket (octal, default 0600), like
    /// vde_switch --mgmtmode.
    #[arg(long = "mgmtmode", value_name = "MODE")]
    pub mgmtmode: Option<String>,
    /// Group owning the console socket, like vde_switch --mgmtgroup.
    #[arg(long = "mgmtgroup", value_name = "GROUP")]
    pub mgmtgroup: Option<String>,
}

/// `switchboard run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The network file; without it, the embedded default network.
    pub file: Option<PathBuf>,
    /// Detach into the background once ready.
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Write the process id to this file.
    #[arg(short = 'p', long = "pidfile", value_name = "PIDFILE")]
    pub pidfile: Option<PathBuf>,
}

/// `switchboard ctl`.
#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control socket, or a switch directory (its DIR/control socket).
    #[arg(short = 'c', long = "control", value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to show.
    #[command(subcommand)]
    pub what: CtlCommand,
}

/// What `switchboard ctl` can show.
#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Ports: segment, number, kind, who is attached, counters.
    Ports,
    /// The MAC table of one segment, or of all.
    Macs {
        /// The segment.
        segment: Option<String>,
    },
    /// The 802.1Q VLANs of one segment, or of all, with their ports.
    Vlans {
        /// The segment.
        segment: Option<String>,
    },
    /// Counters of every segment and port.
    Stats {
        /// Zero all counters instead of showing them.
        #[arg(long)]
        reset: bool,
    },
    /// Routers: interfaces, addresses, MACs, counters.
    Routers,
    /// The routing table of one router, or of all.
    Routes {
        /// The router.
        router: Option<String>,
    },
    /// The ARP cache of one router, or of all.
    Arp {
        /// The router.
        router: Option<String>,
    },
    /// NAT rules (masquerade, port forwards) and flow table use.
    Nat {
        /// The router.
        router: Option<String>,
    },
    /// Tracked flows, or `conntrack flush [ROUTER]` to forget them.
    Conntrack {
        /// `flush`, or the router.
        words: Vec<String>,
    },
    /// Networks, like virsh net-*: `net list`, `net info NAME`, `net define
    /// FILE`, `net start|destroy|undefine NAME`.
    #[command(subcommand)]
    Net(NetCommand),
    /// DHCP leases of one router (a network's router is named like the
    /// network), or of all.
    Leases {
        /// The router or network.
        router: Option<String>,
    },
    /// Change a routing table: `route add|del ROUTER DEST [via GATEWAY]
    /// [dev INTERFACE] [metric N]`; DEST is a network, an address or
    /// `default`.
    Route {
        /// `add` or `del`.
        #[arg(value_parser = ["add", "del"])]
        op: String,
        /// The router.
        router: String,
        /// Destination and options.
        #[arg(num_args = 1.., allow_hyphen_values = true)]
        words: Vec<String>,
    },
}

/// `switchboard ctl net ...`.
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Every network, running or only defined.
    List,
    /// A network's definition and the segments and routers it expands into.
    Info {
        /// The network.
        name: String,
    },
    /// Define the `[networks.NAME]` blocks of a file (not started).
    Define {
        /// The file.
        file: PathBuf,
    },
    /// Start a defined network.
    Start {
        /// The network.
        name: String,
    },
    /// Stop a running network (its definition stays).
    Destroy {
        /// The network.
        name: String,
    },
    /// Forget a network (a running one keeps running until destroyed).
    Undefine {
        /// The network.
        name: String,
    },
}

/// `switchboard import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What the file is: a libvirt network XML file (`virsh net-dumpxml`),
    /// or LXC's `/etc/default/lxc-net`.
    #[arg(value_parser = ["libvirt", "lxc"])]
    pub format: String,
    /// The file (for lxc, default /etc/default/lxc-net).
    pub file: Option<PathBuf>,
}

/// vde_switch's default switch directory.
fn vde_default_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/run/vde.ctl")
    } else {
        PathBuf::from("/tmp/vde.ctl")
    }
}

impl SwitchArgs {
    /// The plan for one segment named `default`.
    pub fn to_plan(&self) -> Result<Plan, ConfigError> {
        let dir = self.sock.clone().unwrap_or_else(vde_default_dir);
        let mut config = SegmentConfig::new("default");
        config.hub = self.hub;
        config.max_ports = self.numports;
        config.mtu = self.mtu;
        config.mac_table_size = self.mac_table_size;
        config.mac_aging = Duration::from_secs(self.mac_aging);
        config.validate()?;
        let perms = Permissions {
            mode: self.mode.as_deref().map(parse_mode).transpose()?,
            dirmode: self.dirmode.as_deref().map(parse_mode).transpose()?,
            group: self.group.as_deref().map(resolve_group).transpose()?,
        };
        let taps: Vec<String> = self
            .taps
            .iter()
            .filter(|t| !t.is_empty())
            .cloned()
            .collect();
        for t in &taps {
            if t.len() > 15 {
                return Err(ConfigError(format!(
                    "tap name {t:?} is longer than 15 bytes"
                )));
            }
        }
        Ok(Plan {
            control: self.control.clone().unwrap_or_else(|| dir.join("control")),
            segments: vec![SegmentPlan {
                config,
                vde: Some(VdePlan { dir, perms }),
                taps,
                vlans: Vec::new(),
                tap_vlans: Vec::new(),
                tap_offload: !self.no_offload,
                tap_napi_thread: self.napi_thread,
                stream: self.stream.clone(),
                stream_tcp: self.stream_tcp,
                dgram: self.dgram.clone(),
                vxlan: Vec::new(),
                udp: Vec::new(),
            }],
            routers: Vec::new(),
            mgmt: MgmtPlan::from_options(
                self.mgmt.as_deref(),
                self.mgmtmode.as_deref(),
                self.mgmtgroup.as_deref(),
            )?,
            networks: Vec::new(),
        })
    }
}

/// Runs the command line; returns the process exit status.
pub fn main_with(cli: Cli) -> i32 {
    let command = cli.command.unwrap_or(Command::Run(RunArgs {
        file: None,
        daemon: false,
        pidfile: None,
    }));
    match command {
        Command::Switch(args) => {
            let plan = match args.to_plan() {
                Ok(p) => p,
                Err(e) => return fail(&e.to_string()),
            };
            serve(
                plan,
                DaemonOptions {
                    daemonize: args.daemon,
                    pidfile: args.pidfile,
                    print_attach_hints: false,
                },
            )
        }
        Command::Run(args) => {
            let (plan, hints) = match &args.file {
                Some(f) => match ConfigFile::load(f).and_then(ConfigFile::into_plan) {
                    Ok(p) => (p, false),
                    Err(e) => return fail(&e.to_string()),
                },
                None => {
                    // The default network lives in the runtime directory,
                    // which a fresh login (or a fresh /run) does not have.
                    let dir = config::runtime_dir();
                    if let Err(e) = std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&dir)
                    {
                        return fail(&format!("cannot create {}: {e}", dir.display()));
                    }
                    (config::default_plan(), true)
                }
            };
            serve(
                plan,
                DaemonOptions {
                    daemonize: args.daemon,
                    pidfile: args.pidfile,
                    print_attach_hints: hints,
                },
            )
        }
        Command::Ctl(args) => ctl(args),
        Command::Import(args) => import(&args),
        Command::Ns(args) => crate::ns::run(&args),
        Command::Plug(args) => match args.to_cable() {
            Err(e) => fail(&e),
            Ok((a, b, opts)) => match crate::plug::cable::run(a, b, &opts) {
                Ok(()) => 0,
                Err(e) => fail(&e.to_string()),
            },
        },
    }
}

/// `switchboard import`: prints the network block, warnings on stderr.
fn import(args: &ImportArgs) -> i32 {
    let path = match (&args.file, args.format.as_str()) {
        (Some(f), _) => f.clone(),
        (None, "lxc") => PathBuf::from("/etc/default/lxc-net"),
        (None, _) => {
            return fail("import libvirt needs the XML file (virsh net-dumpxml NAME > FILE)");
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return fail(&format!("cannot read {}: {e}", path.display())),
    };
    let imported = if args.format == "lxc" {
        crate::network::from_lxc_net(&text)
    } else {
        crate::network::from_libvirt_xml(&text)
    };
    match imported {
        Ok((name, net, warnings)) => {
            for w in warnings {
                eprintln!("switchboard: {}: {w}", path.display());
            }
            print!("{}", crate::network::to_toml(&name, &net));
            0
        }
        Err(e) => fail(&format!("{}: {e}", path.display())),
    }
}

fn fail(msg: &str) -> i32 {
    eprintln!("switchboard: {msg}");
    1
}

fn serve(plan: Plan, opts: DaemonOptions) -> i32 {
    match daemon::run(plan, opts) {
        Ok(()) => 0,
        Err(e) => fail(&e.to_string()),
    }
}

/// The control socket named by `-c`: a socket path, or a switch directory.
fn control_path(arg: Option<&Path>) -> PathBuf {
    match arg {
        Some(p) if p.is_dir() => p.join("control"),
        Some(p) => p.to_path_buf(),
        None => config::default_control_path(),
    }
}

fn ctl(args: CtlArgs) -> i32 {
    let socket = control_path(args.control.as_deref());
    let req = match &args.what {
        CtlCommand::Ports => Request::Ports,
        CtlCommand::Macs { segment } => Request::Macs {
            segment: segment.clone(),
        },
        CtlCommand::Vlans { segment } => Request::Vlans {
            segment: segment.clone(),
        },
        CtlCommand::Stats { reset: false } => Request::Stats,
        CtlCommand::Stats { reset: true } => Request::ResetCounters,
        CtlCommand::Routers => Request::Routers,
        CtlCommand::Routes { router } => Request::Routes {
            router: router.clone(),
        },
        CtlCommand::Arp { router } => Request::Arp {
            router: router.clone(),
        },
        CtlCommand::Nat { router } => Request::Nat {
            router: router.clone(),
        },
        CtlCommand::Net(n) => match n {
            NetCommand::List => Request::NetList,
            NetCommand::Info { name } => Request::NetInfo { name: name.clone() },
            NetCommand::Define { file } => match std::path::absolute(file) {
                Ok(path) => Request::NetDefine { path },
                Err(e) => return fail(&format!("{}: {e}", file.display())),
            },
            NetCommand::Start { name } => Request::NetStart { name: name.clone() },
            NetCommand::Destroy { name } => Request::NetDestroy { name: name.clone() },
            NetCommand::Undefine { name } => Request::NetUndefine { name: name.clone() },
        },
        CtlCommand::Leases { router } => Request::Leases {
            router: router.clone(),
        },
        CtlCommand::Conntrack { words } => {
            match Request::parse(&format!("conntrack {}", words.join(" "))) {
                Ok(r) => r,
                Err(e) => return fail(&e.0),
            }
        }
        CtlCommand::Route { op, router, words } => {
            match Request::parse(&format!("route {op} {router} {}", words.join(" "))) {
                Ok(r) => r,
                Err(e) => return fail(&e.0),
            }
        }
    };
    let result = match client::call(&socket, &req) {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&result).unwrap_or_default()
        );
        return 0;
    }
    let text = match req {
        Request::Ports => {
            serde_json::from_value::<Vec<PortView>>(result).map(|rows| render_ports(&rows))
        }
        Request::Macs { .. } => {
            serde_json::from_value::<Vec<MacView>>(result).map(|rows| render_macs(&rows))
        }
        Request::Vlans { .. } => {
            serde_json::from_value::<Vec<VlanView>>(result).map(|rows| render_vlans(&rows))
        }
        Request::Stats => serde_json::from_value::<StatsView>(result).map(|s| render_stats(&s)),
        Request::ResetCounters => Ok("counters reset\n".to_string()),
        Request::Routers => {
            serde_json::from_value::<Vec<RouterView>>(result).map(|r| render_routers(&r))
        }
        Request::Routes { .. } => {
            serde_json::from_value::<Vec<RouteView>>(result).map(|r| render_routes(&r))
        }
        Request::Arp { .. } => {
            serde_json::from_value::<Vec<ArpView>>(result).map(|r| render_arp(&r))
        }
        Request::Nat { .. } => {
            serde_json::from_value::<Vec<NatView>>(result).map(|r| render_nat(&r))
        }
        Request::Conntrack { .. } => {
            serde_json::from_value::<Vec<ConntrackView>>(result).map(|r| render_conntrack(&r))
        }
        Request::Leases { .. } => {
            serde_json::from_value::<Vec<LeaseView>>(result).map(|r| render_leases(&r))
        }
        Request::NetList => {
            serde_json::from_value::<Vec<NetworkView>>(result).map(|r| render_networks(&r))
        }
        Request::NetInfo { .. } => serde_json::from_value::<NetworkInfoView>(result).map(|i| {
            format!(
                "{}\n# definition\n{}\n# expands into\n{}",
                render_networks(std::slice::from_ref(&i.network)),
                i.definition.trim_end(),
                i.expansion
            )
        }),
        Request::NetDefine { .. } => Ok(format!(
            "defined: {}\n",
            result
                .get("defined")
                .and_then(|v| v.as_array())
                .map(|a| a
                    .iter()
                    .filter_map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        )),
        Request::NetStart { name } => Ok(format!("network {name} started\n")),
        Request::NetDestroy { name } => Ok(format!("network {name} destroyed\n")),
        Request::NetUndefine { name } => Ok(format!("network {name} undefined\n")),
        Request::ConntrackFlush { .. } => Ok(format!(
            "{} flows forgotten\n",
            result.get("flushed").and_then(|v| v.as_u64()).unwrap_or(0)
        )),
        Request::RouteAdd { .. } => Ok("route added\n".to_string()),
        Request::RouteDel { .. } => Ok("route removed\n".to_string()),
    };
    match text {
        Ok(t) => {
            print!("{t}");
            0
        }
        Err(e) => fail(&format!("unexpected reply from switchboard: {e}")),
    }
}

/// Renders rows as left-aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
        let mut s = String::new();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&format!("{:<w$}", c, w = widths[i]));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied(), &mut out);
    for r in rows {
        line(&mut r.iter().map(String::as_str), &mut out);
    }
    out
}

fn render_ports(rows: &[PortView]) -> String {
    if rows.is_empty() {
        return "no ports\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|p| {
            vec![
                p.segment.clone(),
                p.port.to_string(),
                p.kind.clone(),
                p.rx_frames.to_string(),
                p.rx_bytes.to_string(),
                p.tx_frames.to_string(),
                p.tx_bytes.to_string(),
                p.drops.total().to_string(),
                port_state(p),
                describe_port(p),
            ]
        })
        .collect();
    table(
        &[
            "SEGMENT",
            "PORT",
            "KIND",
            "RX-FRAMES",
            "RX-BYTES",
            "TX-FRAMES",
            "TX-BYTES",
            "DROPS",
            "STATE",
            "DESCRIPTION",
        ],
        &rows,
    )
}

fn render_routers(routers: &[RouterView]) -> String {
    if routers.is_empty() {
        return "no routers\n".into();
    }
    let mut out = String::new();
    for r in routers {
        let c = &r.counters;
        out.push_str(&format!(
            "router {}: {} routes; forwarded {}, delivered {}, no route {}, ttl exceeded {}, \
             arp failed {}, malformed {}, icmp sent {} (rate-limited {})\n",
            r.name,
            r.routes,
            c.forwarded,
            c.delivered,
            c.dropped_no_route,
            c.ttl_exceeded,
            c.arp_failed,
            c.dropped_malformed,
            c.icmp_sent,
            c.icmp_rate_limited
        ));
        for d in &r.dhcp {
            let k = &d.counters;
            out.push_str(&format!(
                "  dhcp on {}: {} leases; discover {}, offer {}, request {}, ack {}, nak {}, \
                 release {}, decline {}, inform {}, pool exhausted {}, malformed {}\n",
                d.iface,
                d.leases,
                k.discover,
                k.offer,
                k.request,
                k.ack,
                k.nak,
                k.release,
                k.decline,
                k.inform,
                k.exhausted,
                k.malformed
            ));
        }
        if let Some(dns) = &r.dns {
            let n = |k: &str| dns.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            out.push_str(&format!(
                "  dns: queries {}, local {}, cached {}, forwarded {}, servfail {}, upstream timeouts {}, malformed {}\n",
                n("queries"),
                n("local_answers"),
                n("cache_hits"),
                n("forwarded"),
                n("servfail"),
                n("upstream_timeouts"),
                n("malformed")
            ));
        }
        let rows: Vec<Vec<String>> = r
            .interfaces
            .iter()
            .map(|i| {
                vec![
                    format!("  {}", i.name),
                    i.segment.clone(),
                    i.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    i.mac.clone(),
                    i.mtu.to_string(),
                    if i.proxy_arp { "yes" } else { "no" }.into(),
                    i.addresses.join(" "),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "  IFACE",
                "SEGMENT",
                "PORT",
                "MAC",
                "MTU",
                "PROXY-ARP",
                "ADDRESSES",
            ],
            &rows,
        ));
    }
    out
}

fn render_nat(rows: &[NatView]) -> String {
    if rows.is_empty() {
        return "no router has NAT rules\n".into();
    }
    let mut out = String::new();
    for n in rows {
        out.push_str(&format!(
            "router {}: {} of {} flows tracked\n",
            n.router, n.flows, n.max_flows
        ));
        for m in &n.masquerade {
            let from = if m.sources.is_empty() {
                "any".to_string()
            } else {
                m.sources.join(",")
            };
            let except = if m.except.is_empty() {
                String::new()
            } else {
                format!(" except to {}", m.except.join(","))
            };
            out.push_str(&format!("  masquerade from {from} out {}{except}\n", m.out));
        }
        for f in &n.forwards {
            out.push_str(&format!(
                "  forward {} {}:{} -> {}\n",
                f.proto,
                f.address.clone().unwrap_or_else(|| f.iface.clone()),
                f.ports,
                f.to
            ));
        }
    }
    out
}

fn render_networks(rows: &[NetworkView]) -> String {
    if rows.is_empty() {
        return "no networks\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|n| {
            vec![
                n.name.clone(),
                n.mode.clone(),
                if n.active { "active" } else { "inactive" }.into(),
                if n.persistent { "yes" } else { "no" }.into(),
                n.segments.join(","),
                n.routers.join(","),
            ]
        })
        .collect();
    table(
        &["NAME", "MODE", "STATE", "PERSISTENT", "SEGMENTS", "ROUTERS"],
        &rows,
    )
}

fn render_leases(rows: &[LeaseView]) -> String {
    if rows.is_empty() {
        return "no leases\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|l| {
            vec![
                l.router.clone(),
                l.iface.clone(),
                l.ip.clone(),
                l.mac.clone(),
                l.hostname.clone().unwrap_or_else(|| "-".into()),
                l.state.clone(),
                l.expires_in_secs
                    .map_or_else(|| "never".into(), |s| format!("{s}s")),
                if l.reserved { "yes" } else { "-" }.into(),
            ]
        })
        .collect();
    table(
        &[
            "ROUTER", "IFACE", "IP", "MAC", "HOSTNAME", "STATE", "EXPIRES", "RESERVED",
        ],
        &rows,
    )
}

fn render_conntrack(rows: &[ConntrackView]) -> String {
    if rows.is_empty() {
        return "no flows\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                c.router.clone(),
                c.proto.clone(),
                c.inside.clone(),
                c.outside.clone(),
                c.translated.clone(),
                c.state.clone(),
                format!("{}s", c.age_secs),
                format!("{}s", c.expires_in_secs),
                format!("{}/{}", c.packets[0], c.packets[1]),
                format!("{}/{}", c.bytes[0], c.bytes[1]),
            ]
        })
        .collect();
    table(
        &[
            "ROUTER",
            "PROTO",
            "INSIDE",
            "REMOTE",
            "TRANSLATED",
            "STATE",
            "AGE",
            "EXPIRES",
            "PACKETS",
            "BYTES",
        ],
        &rows,
    )
}

fn render_routes(rows: &[RouteView]) -> String {
    if rows.is_empty() {
        return "no routes\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.router.clone(),
                r.dest.clone(),
                r.gateway.clone().unwrap_or_else(|| "-".into()),
                r.iface.clone(),
                r.metric.to_string(),
                r.kind.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ROUTER",
            "DESTINATION",
            "GATEWAY",
            "IFACE",
            "METRIC",
            "KIND",
        ],
        &rows,
    )
}

fn render_arp(rows: &[ArpView]) -> String {
    if rows.is_empty() {
        return "no neighbours\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|a| {
            vec![
                a.router.clone(),
                a.iface.clone(),
                a.ip.clone(),
                a.mac.clone().unwrap_or_else(|| "-".into()),
                a.state.clone(),
                format!("{:.1}s", a.age_secs),
                a.queued.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ROUTER", "IFACE", "ADDRESS", "MAC", "STATE", "AGE", "QUEUED",
        ],
        &rows,
    )
}

/// Whether a port forwards: `blocked<Ns` (until N seconds of uptime) while
/// the storm guard blocks it, `split` for a split-horizon port, else `fwd`.
fn port_state(p: &PortView) -> String {
    match (p.blocked_until_secs, p.split_horizon) {
        (Some(t), _) => format!("blocked<{t}s"),
        (None, true) => "split".into(),
        (None, false) => "fwd".into(),
    }
}

/// A port's description, with the plug's own non-zero counters after it.
fn describe_port(p: &PortView) -> String {
    let extra: Vec<String> = p
        .plug
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if extra.is_empty() {
        p.description.clone()
    } else {
        format!("{} [{}]", p.description, extra.join(" "))
    }
}

fn render_macs(rows: &[MacView]) -> String {
    if rows.is_empty() {
        return "no addresses learned\n".into();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|m| {
            vec![
                m.segment.clone(),
                m.vlan.to_string(),
                m.mac.clone(),
                m.port.to_string(),
                format!("{}s", m.age_secs),
            ]
        })
        .collect();
    table(&["SEGMENT", "VLAN", "MAC", "PORT", "AGE"], &rows)
}

fn render_vlans(rows: &[VlanView]) -> String {
    let list = |ports: &[u16]| {
        if ports.is_empty() {
            "-".to_string()
        } else {
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|v| {
            vec![
                v.segment.clone(),
                v.vlan.to_string(),
                list(&v.untagged),
                list(&v.tagged),
            ]
        })
        .collect();
    table(&["SEGMENT", "VLAN", "UNTAGGED", "TAGGED"], &rows)
}

fn render_stats(s: &StatsView) -> String {
    let mut out = format!("uptime {}s\n\n", s.uptime_secs);
    let rows: Vec<Vec<String>> = s
        .segments
        .iter()
        .map(|g| {
            vec![
                g.segment.clone(),
                if g.hub { "hub" } else { "switch" }.into(),
                g.mtu.to_string(),
                format!("{}/{}", g.ports, g.max_ports),
                format!("{}/{}", g.macs, g.mac_table_size),
                g.totals.rx_frames.to_string(),
                g.totals.tx_frames.to_string(),
                g.counters.unicast.to_string(),
                (g.counters.flooded_unknown + g.counters.flooded_multicast).to_string(),
                g.counters.learn_refused_table_full.to_string(),
                g.counters.mac_moves.to_string(),
                g.counters.storm_blocks.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SEGMENT",
            "MODE",
            "MTU",
            "PORTS",
            "MACS",
            "RX",
            "TX",
            "UNICAST",
            "FLOODED",
            "LEARN-REFUSED",
            "MOVES",
            "STORM-BLOCKS",
        ],
        &rows,
    ));
    out.push('\n');
    let drops: Vec<Vec<String>> = s
        .ports
        .iter()
        .map(|p| {
            let d = &p.drops;
            vec![
                p.segment.clone(),
                p.port.to_string(),
                d.too_short.to_string(),
                d.too_long.to_string(),
                d.invalid_source.to_string(),
                d.same_port.to_string(),
                d.tx_queue_full.to_string(),
                d.tx_error.to_string(),
                d.storm_blocked.to_string(),
                d.split_horizon.to_string(),
            ]
        })
        .collect();
    if !drops.is_empty() {
        out.push_str("drops by reason:\n");
        out.push_str(&table(
            &[
                "SEGMENT",
                "PORT",
                "TOO-SHORT",
                "TOO-LONG",
                "BAD-SOURCE",
                "SAME-PORT",
                "TX-FULL",
                "TX-ERROR",
                "STORM",
                "SPLIT",
            ],
            &drops,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn vde_switch_flags_map_to_a_plan() {
        let cli = Cli::try_parse_from([
            "switchboard",
            "switch",
            "-s",
            "/tmp/sw",
            "-t",
            "tap0,tap1",
            "-t",
            "tap2",
            "-m",
            "0660",
            "-x",
            "-n",
            "64",
            "--mtu",
            "9000",
        ])
        .unwrap();
        let Some(Command::Switch(args)) = cli.command else {
            panic!("not switch")
        };
        let plan = args.to_plan().unwrap();
        assert_eq!(plan.control, PathBuf::from("/tmp/sw/control"));
        let seg = &plan.segments[0];
        assert_eq!(seg.taps, vec!["tap0", "tap1", "tap2"]);
        assert!(seg.config.hub);
        assert_eq!(seg.config.max_ports, 64);
        assert_eq!(seg.config.mtu, 9000);
        let vde = seg.vde.as_ref().unwrap();
        assert_eq!(vde.dir, PathBuf::from("/tmp/sw"));
        assert_eq!(vde.perms.mode, Some(0o660));
    }

    #[test]
    fn vde_switch_console_flags_map_to_a_plan() {
        let plan = |args: &[&str]| {
            let mut argv = vec!["switchboard", "switch", "-s", "/tmp/sw"];
            argv.extend_from_slice(args);
            let Some(Command::Switch(a)) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not switch")
            };
            a.to_plan()
        };
        let p = plan(&[
            "-M",
            "/tmp/sw.mgmt",
            "--mgmtmode",
            "0660",
            "--mgmtgroup",
            "0",
        ])
        .unwrap();
        assert_eq!(
            p.mgmt,
            Some(MgmtPlan {
                path: PathBuf::from("/tmp/sw.mgmt"),
                mode: 0o660,
                group: Some(0)
            })
        );
        let p = plan(&["--mgmt", "/tmp/sw.mgmt"]).unwrap();
        assert_eq!(p.mgmt.map(|m| m.mode), Some(0o600));
        assert_eq!(plan(&[]).unwrap().mgmt, None);
        assert!(plan(&["--mgmtmode", "0660"]).is_err());
        assert!(plan(&["-M", "/x", "--mgmtgroup", "no-such-group-here"]).is_err());
    }

    #[test]
    fn bad_switch_values_are_refused() {
        let cli = Cli::try_parse_from(["switchboard", "switch", "-s", "/tmp/x", "--mtu", "70000"])
            .unwrap();
        let Some(Command::Switch(args)) = cli.command else {
            panic!()
        };
        assert!(args.to_plan().unwrap_err().0.contains("mtu 70000"));
    }

    #[test]
    fn plug_arguments_split_into_ends_and_a_command() {
        let cli = Cli::try_parse_from([
            "switchboard",
            "plug",
            "--reconnect",
            "2",
            "vde:///run/a",
            "-",
            "=",
            "ssh",
            "host",
            "switchboard",
            "plug",
            "vde:///run/b",
            "-",
        ])
        .unwrap();
        let Some(Command::Plug(args)) = cli.command else {
            panic!("not plug")
        };
        let (a, b, opts) = args.to_cable().unwrap();
        assert_eq!(
            a,
            Endpoint::Vde {
                dir: "/run/a".into(),
                port: None
            }
        );
        assert_eq!(b, Endpoint::Stdio);
        assert_eq!(opts.reconnect, Some(Duration::from_secs(2)));
        assert_eq!(
            opts.pipe_command.unwrap(),
            ["ssh", "host", "switchboard", "plug", "vde:///run/b", "-"]
        );
        let bad = |v: &[&str]| {
            let mut argv = vec!["switchboard", "plug"];
            argv.extend_from_slice(v);
            match Cli::try_parse_from(argv) {
                Ok(Cli {
                    command: Some(Command::Plug(a)),
                }) => a.to_cable().err(),
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            }
        };
        assert!(bad(&["vde:///a"]).is_some());
        assert!(
            bad(&["vde:///a", "vde:///b", "vde:///c"])
                .unwrap()
                .contains("two endpoints")
        );
        assert!(
            bad(&["vde:///a", "vde:///b", "=", "cat"])
                .unwrap()
                .contains("needs one endpoint")
        );
        assert!(bad(&["-", "-"]).unwrap().contains("only one side"));
        assert!(
            bad(&["vde:///a", "-", "="])
                .unwrap()
                .contains("nothing after")
        );
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
