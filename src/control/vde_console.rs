//! `vde_switch`'s management console, spoken over `switchboard switch -M PATH`.
//!
//! Test rigs (openQA, the NixOS test driver) and years of shell scripts drive
//! `vde_switch` through this console with `vdecmd` (`unixcmd`), `unixterm`
//! or a plain socket: one command per line (`port/print`, `hash/print`, ...)
//! and a reply in a fixed shape. They only keep working if that shape is
//! byte for byte what `vde_switch` writes, so this module reproduces it:
//!
//! * On connect: a two-line banner, then the prompt `"\nvde$ "`.
//! * A command that prints something: `0000 DATA END WITH '.'`, its lines,
//!   a line holding `.`, then the status line.
//! * The status line: `1000 Success`, or `1000+errno` and the C library's
//!   text for that errno (`1022 Invalid argument`, `1038 Function not
//!   implemented` for an unknown command), then the prompt again.
//! * `logout` and `shutdown` answer `9999 END OF SESSION` (no newline) and
//!   the connection closes.
//! * An empty line, or one starting with `#`, gets only the prompt.
//!
//! This module is pure: it parses a line and builds the reply from the
//! [`Engine`], so every byte is unit-tested without sockets. What only the
//! daemon can do (closing the connection, stopping, unplugging a port) comes
//! back as an [`Action`].
//!
//! Differences from `vde_switch`, all deliberate:
//!
//! * The command is the first word of the line, matched exactly
//!   (`vde_switch` matches by prefix, so `port/printfoo` ran `port/print`).
//! * Numbers must be decimal numbers: `port/print x` is `1022 Invalid
//!   argument` (`vde_switch` read it as port 0 and said `1006`).
//! * Ports exist only while something is plugged in, so `port/remove N`
//!   unplugs the client on port N (`vde_switch` refuses with `1098 Address
//!   already in use` while a port is active, and has `port/epclose N ID` for
//!   that, which works here too). `port/print` and `port/allprint` show the
//!   same ports. Router interfaces cannot be removed (`1001`).
//! * `hash/find` prints the port the address is on (`vde_switch` prints one
//!   more than that).
//! * The user and group columns say `NONE`: switchboard does not track who
//!   plugged a port in.
//! * VLANs: `vde_switch` calls the default untagged VLAN 0, switchboard
//!   (like 802.1Q) calls it [`DEFAULT_VLAN`] (1). The console shows and
//!   accepts 0 for it, so `port/setvlan 3 0` moves port 3 back to the
//!   default VLAN; `vlan/create 1` is refused with `1017 File exists`, as
//!   `vlan/create` of any existing VLAN is (and `vlan/remove 1` with
//!   `1098 Address already in use`: the default VLAN always exists). VLAN
//!   numbers above 4094 are `1022 Invalid argument` (`vde_switch` took 4095
//!   in `port/setvlan` to mean "no untagged VLAN"; 802.1Q reserves it).
//!   All ports are shown `status=Forwarding`: there is no spanning tree.
//! * Our own command `segment [NAME]`: `switchboard run` may serve several
//!   segments through one console. It starts on the first one (in the order
//!   of the network file); `segment` lists them, `segment NAME` switches
//!   this connection to another. `showinfo` names the current one.
//! * Commands this switch has no counterpart for (`port/setnumports`,
//!   `hash/setsize`, `fstp/*`, `plugin/*`, `debug/*`, `load`, ...) answer
//!   `1038 Function not implemented`, as unknown ones do, and are not in
//!   `help`.

use crate::mac::MacAddr;
use crate::switch::{DEFAULT_VLAN, Engine, Port, PortId, SegmentId, VlanError};
use crate::time::Instant;
use std::fmt::Write as _;

/// The `vde_switch` release whose console this one reproduces; shown in the
/// banner, where clients that check a version look for it.
pub const VDE_VERSION: &str = "2.3.2";

/// What `vde_switch` writes after every reply, and after the banner: clients
/// (`vdecmd`'s parse machine) wait for its `$ ` before sending a command.
pub const PROMPT: &str = "\nvde$ ";

/// The last words of a session that `logout` or `shutdown` ends.
pub const END_OF_SESSION: &str = "9999 END OF SESSION";

/// The longest command line accepted, newline excluded. `vde_switch` reads
/// 128 bytes at a time; real commands are far shorter than this, and a
/// longer line is refused (see [`overlong_reply`]) rather than buffered.
pub const MAX_LINE_LEN: usize = 1024;

/// The header of a reply that carries lines of output.
const DATA_START: &str = "0000 DATA END WITH '.'\n";

/// An error number from Linux's `errno.h`: the console reports failures as
/// `1000 + errno` and the C library's message, and scripts test for those
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// EPERM: the port cannot be removed (a router interface).
    NotPermitted = 1,
    /// ENXIO: no such port, VLAN or segment.
    NoSuchDeviceOrAddress = 6,
    /// E2BIG: the command line is too long.
    ArgumentListTooLong = 7,
    /// EEXIST: the VLAN exists.
    FileExists = 17,
    /// ENODEV: `hash/find` found nothing.
    NoSuchDevice = 19,
    /// EINVAL: an argument is missing or malformed.
    InvalidArgument = 22,
    /// ENOSYS: unknown or unsupported command.
    NotImplemented = 38,
    /// EADDRINUSE: the VLAN still has ports.
    AddressInUse = 98,
}

impl Errno {
    /// The errno value.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// glibc's `strerror` text, which follows the number on the status line.
    pub fn message(self) -> &'static str {
        match self {
            Errno::NotPermitted => "Operation not permitted",
            Errno::NoSuchDeviceOrAddress => "No such device or address",
            Errno::ArgumentListTooLong => "Argument list too long",
            Errno::FileExists => "File exists",
            Errno::NoSuchDevice => "No such device",
            Errno::InvalidArgument => "Invalid argument",
            Errno::NotImplemented => "Function not implemented",
            Errno::AddressInUse => "Address already in use",
        }
    }
}

/// What the daemon must do after sending a reply: the parts of a command
/// that reach beyond the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Close this connection once the reply is sent (`logout`).
    Logout,
    /// Close this connection and stop the daemon (`shutdown`).
    Shutdown,
    /// Unplug this port (`port/remove`, `port/epclose`).
    RemovePort(PortId),
}

/// The bytes to send for one line, and what to do after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Everything to write, prompt (or end of session) included.
    pub text: String,
    /// Work for the daemon once `text` is on its way.
    pub action: Option<Action>,
}

/// Facts about the daemon the console reports that the engine does not
/// know; fixed once the daemon has started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleInfo {
    /// The console socket's path, for `showinfo`.
    pub mgmt_path: String,
    /// Its permissions, for `showinfo`.
    pub mgmt_mode: u32,
    /// Per segment (by [`SegmentId::index`]): its VDE2 directory and the
    /// mode of its sockets, for `ds/showinfo`.
    pub data_sockets: Vec<Option<(String, u32)>>,
}

/// Per-connection state: which segment the commands act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    segment: SegmentId,
}

impl Session {
    /// A new session, acting on the first segment.
    pub fn new(engine: &Engine) -> Session {
        let segment = engine
            .segments()
            .next()
            .map(|(id, _)| id)
            .unwrap_or(SegmentId(0));
        Session { segment }
    }

    /// The segment commands act on.
    pub fn segment(&self) -> SegmentId {
        self.segment
    }
}

/// Everything a command may read or change.
pub struct Context<'a> {
    /// The switch.
    pub engine: &'a mut Engine,
    /// Fixed facts about the daemon.
    pub info: &'a ConsoleInfo,
    /// The current time on the engine's clock (its epoch is the daemon's
    /// start, so it is also the uptime).
    pub now: Instant,
    /// The daemon's process id, for `showinfo`.
    pub pid: u32,
}

/// What a new connection is sent before its first command.
pub fn banner() -> String {
    format!(
        "VDE switch V.{VDE_VERSION}\n(switchboard {}, a vde_switch-compatible console)\n{PROMPT}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The reply to a line longer than [`MAX_LINE_LEN`], which is not run.
pub fn overlong_reply() -> String {
    status(Err(Errno::ArgumentListTooLong)) + PROMPT
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Nothing to do: an empty line or a `#` comment.
    Nothing,
    /// `help [PREFIX]`.
    Help(&'a str),
    /// `logout`.
    Logout,
    /// `shutdown`.
    Shutdown,
    /// `showinfo`.
    ShowInfo,
    /// `segment [NAME]` (switchboard's own).
    Segment(Option<&'a str>),
    /// `ds/showinfo`.
    DsShowInfo,
    /// `port/showinfo`.
    PortShowInfo,
    /// `port/print [N]` and `port/allprint [N]`.
    PortPrint(Option<u16>),
    /// `port/resetcounter [N]`.
    PortResetCounter(Option<u16>),
    /// `port/remove N`.
    PortRemove(u16),
    /// `port/epclose N ID`.
    PortEpClose(u16, u32),
    /// `hash/showinfo`.
    HashShowInfo,
    /// `hash/print`.
    HashPrint,
    /// `hash/find MAC [VLAN]`.
    HashFind(MacAddr, u16),
    /// A VLAN command (`port/setvlan`, `vlan/...`), with its arguments.
    Vlan(VlanCommand),
}

/// The VLAN commands, with VLAN numbers as the console writes them (0 is the
/// default VLAN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanCommand {
    /// `port/setvlan PORT VLAN`: the port's untagged VLAN.
    SetUntagged {
        /// Port number.
        port: u16,
        /// VLAN.
        vlan: u16,
    },
    /// `vlan/create VLAN`.
    Create(u16),
    /// `vlan/remove VLAN`.
    Remove(u16),
    /// `vlan/addport VLAN PORT`: a tagged membership.
    AddPort {
        /// VLAN.
        vlan: u16,
        /// Port number.
        port: u16,
    },
    /// `vlan/delport VLAN PORT`.
    DelPort {
        /// VLAN.
        vlan: u16,
        /// Port number.
        port: u16,
    },
    /// `vlan/print [VLAN]` and `vlan/allprint [VLAN]`.
    Print(Option<u16>),
}

/// The commands `help` lists: path, syntax, help text, as `vde_switch`
/// words them. Menu lines have `============` as syntax.
const HELP: &[(&str, &str, &str)] = &[
    ("ds", "============", "DATA SOCKET MENU"),
    ("ds/showinfo", "", "show ds info"),
    ("help", "[arg]", "Help (limited to arg when specified)"),
    ("logout", "", "logout from this mgmt terminal"),
    ("shutdown", "", "shutdown of the switch"),
    ("showinfo", "", "show switch version and info"),
    ("segment", "[name]", "list segments, or act on segment name"),
    ("hash", "============", "HASH TABLE MENU"),
    ("hash/showinfo", "", "show hash info"),
    ("hash/print", "", "print the hash table"),
    ("hash/find", "MAC [VLAN]", "MAC lookup"),
    ("port", "============", "PORT STATUS MENU"),
    ("port/showinfo", "", "show port info"),
    ("port/setvlan", "N VLAN", "set port VLAN (untagged)"),
    ("port/remove", "N", "remove the port N"),
    ("port/epclose", "N ID", "remove the endpoint port N/id ID"),
    ("port/resetcounter", "[N]", "reset the port (N) counters"),
    ("port/print", "[N]", "print the port/endpoint table"),
    (
        "port/allprint",
        "[N]",
        "print the port/endpoint table (including inactive port)",
    ),
    ("vlan", "============", "VLAN MANAGEMENT MENU"),
    ("vlan/create", "N", "create the VLAN with tag N"),
    ("vlan/remove", "N", "remove the VLAN with tag N"),
    ("vlan/addport", "N PORT", "add port to the vlan N (tagged)"),
    (
        "vlan/delport",
        "N PORT",
        "remove port from the vlan N (tagged)",
    ),
    ("vlan/print", "[N]", "print the list of defined vlan"),
    (
        "vlan/allprint",
        "[N]",
        "print the list of defined vlan (including inactive port)",
    ),
];

/// Commands whose reply is a data block (`0000 DATA ...`) even when they
/// fail, as in `vde_switch`.
fn prints_data(cmd: &str) -> bool {
    matches!(
        cmd,
        "help"
            | "showinfo"
            | "segment"
            | "ds/showinfo"
            | "port/showinfo"
            | "port/print"
            | "port/allprint"
            | "hash/showinfo"
            | "hash/print"
            | "hash/find"
            | "vlan/print"
            | "vlan/allprint"
    )
}

/// A decimal number, nothing else.
fn number<T: std::str::FromStr>(word: Option<&str>) -> Result<T, Errno> {
    let w = word.ok_or(Errno::InvalidArgument)?;
    if w.is_empty() || !w.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Errno::InvalidArgument);
    }
    w.parse().map_err(|_| Errno::InvalidArgument)
}

/// An optional decimal number: absent is `None`, malformed is an error.
fn optional_number<T: std::str::FromStr>(word: Option<&str>) -> Result<Option<T>, Errno> {
    word.map(|w| number(Some(w))).transpose()
}

/// A MAC address as `vde_switch` reads one: six groups of one or two hex
/// digits, separated by `:` or by `.`.
fn parse_mac(word: &str) -> Option<MacAddr> {
    let sep = if word.contains(':') { ':' } else { '.' };
    let mut out = [0u8; 6];
    let mut groups = word.split(sep);
    for byte in &mut out {
        let g = groups.next()?;
        if g.is_empty() || g.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(g, 16).ok()?;
    }
    groups.next().is_none().then_some(MacAddr(out))
}

/// Parses one line (without its newline). `Err` is the errno to answer,
/// together with the command word when the reply must be a data block.
pub fn parse(line: &str) -> Result<Command<'_>, (Errno, &str)> {
    let line = line.trim_matches(|c: char| c == ' ' || c == '\t' || c == '\r');
    if line.is_empty() || line.starts_with('#') {
        return Ok(Command::Nothing);
    }
    let mut words = line.split_ascii_whitespace();
    let cmd = words.next().unwrap_or("");
    let a = words.next();
    let b = words.next();
    let e = |errno| (errno, cmd);
    let parsed = match cmd {
        "help" => Command::Help(a.unwrap_or("")),
        "logout" => Command::Logout,
        "shutdown" => Command::Shutdown,
        "showinfo" => Command::ShowInfo,
        "segment" => Command::Segment(a),
        "ds/showinfo" => Command::DsShowInfo,
        "port/showinfo" => Command::PortShowInfo,
        "port/print" | "port/allprint" => Command::PortPrint(optional_number(a).map_err(e)?),
        "port/resetcounter" => Command::PortResetCounter(optional_number(a).map_err(e)?),
        "port/remove" => Command::PortRemove(number(a).map_err(e)?),
        "port/epclose" => Command::PortEpClose(number(a).map_err(e)?, number(b).map_err(e)?),
        "hash/showinfo" => Command::HashShowInfo,
        "hash/print" => Command::HashPrint,
        "hash/find" => {
            let mac = a.and_then(parse_mac).ok_or((Errno::InvalidArgument, cmd))?;
            Command::HashFind(mac, optional_number(b).map_err(e)?.unwrap_or(0))
        }
        "port/setvlan" => Command::Vlan(VlanCommand::SetUntagged {
            port: number(a).map_err(e)?,
            vlan: number(b).map_err(e)?,
        }),
        "vlan/create" => Command::Vlan(VlanCommand::Create(number(a).map_err(e)?)),
        "vlan/remove" => Command::Vlan(VlanCommand::Remove(number(a).map_err(e)?)),
        "vlan/addport" => Command::Vlan(VlanCommand::AddPort {
            vlan: number(a).map_err(e)?,
            port: number(b).map_err(e)?,
        }),
        "vlan/delport" => Command::Vlan(VlanCommand::DelPort {
            vlan: number(a).map_err(e)?,
            port: number(b).map_err(e)?,
        }),
        "vlan/print" | "vlan/allprint" => {
            Command::Vlan(VlanCommand::Print(optional_number(a).map_err(e)?))
        }
        _ => return Err((Errno::NotImplemented, "")),
    };
    Ok(parsed)
}

/// The status line.
fn status(result: Result<(), Errno>) -> String {
    match result {
        Ok(()) => "1000 Success\n".to_string(),
        Err(e) => format!("1{:03} {}\n", e.code(), e.message()),
    }
}

/// Runs one line and builds its reply. `line` is what came before the
/// newline; bytes that are not UTF-8 make an unknown command.
pub fn run_line(ctx: &mut Context<'_>, session: &mut Session, line: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(line);
    let cmd = match parse(&text) {
        Ok(Command::Nothing) => {
            return Reply {
                text: PROMPT.to_string(),
                action: None,
            };
        }
        Ok(Command::Logout) => {
            return Reply {
                text: END_OF_SESSION.to_string(),
                action: Some(Action::Logout),
            };
        }
        Ok(Command::Shutdown) => {
            return Reply {
                text: END_OF_SESSION.to_string(),
                action: Some(Action::Shutdown),
            };
        }
        Ok(c) => c,
        Err((errno, word)) => {
            let mut text = String::new();
            if prints_data(word) {
                text.push_str(DATA_START);
                text.push_str(".\n");
            }
            text.push_str(&status(Err(errno)));
            text.push_str(PROMPT);
            return Reply { text, action: None };
        }
    };
    let data = prints_data(&command_word(&text));
    let mut out = String::new();
    if data {
        out.push_str(DATA_START);
    }
    let mut action = None;
    let result = execute(ctx, session, &cmd, &mut out, &mut action);
    if data {
        out.push_str(".\n");
    }
    out.push_str(&status(result));
    out.push_str(PROMPT);
    Reply { text: out, action }
}

/// The first word of a line.
fn command_word(line: &str) -> String {
    line.split_ascii_whitespace()
        .next()
        .unwrap_or("")
        .to_string()
}

/// Runs a parsed command, writing its data lines into `out`.
fn execute(
    ctx: &mut Context<'_>,
    session: &mut Session,
    cmd: &Command<'_>,
    out: &mut String,
    action: &mut Option<Action>,
) -> Result<(), Errno> {
    let seg_id = session.segment;
    match *cmd {
        Command::Nothing | Command::Logout | Command::Shutdown => Ok(()),
        Command::Help(prefix) => {
            help(prefix, out);
            Ok(())
        }
        Command::ShowInfo => {
            show_info(ctx, session, out);
            Ok(())
        }
        Command::Segment(name) => segment(ctx, session, name, out),
        Command::DsShowInfo => {
            match ctx.info.data_sockets.get(seg_id.index()).cloned().flatten() {
                Some((dir, mode)) => {
                    let _ = writeln!(out, "ctl dir {dir}");
                    let _ = writeln!(out, "std mode 0{mode:03o}");
                }
                None => out.push_str("ctl dir NONE\n"),
            }
            Ok(())
        }
        Command::PortShowInfo => {
            let seg = ctx
                .engine
                .segment(seg_id)
                .ok_or(Errno::NoSuchDeviceOrAddress)?;
            let _ = writeln!(out, "Numports={}", seg.config().max_ports);
            let _ = writeln!(out, "HUB={}", seg.config().hub);
            out.push_str("counters=true\n");
            Ok(())
        }
        Command::PortPrint(None) => {
            for id in ports_by_number(ctx.engine, seg_id) {
                if let Some(p) = ctx.engine.port(id) {
                    print_port(ctx.engine, id, p, out);
                }
            }
            Ok(())
        }
        Command::PortPrint(Some(n)) => {
            let id = port_numbered(ctx.engine, seg_id, n)?;
            if let Some(p) = ctx.engine.port(id) {
                print_port(ctx.engine, id, p, out);
            }
            Ok(())
        }
        Command::PortResetCounter(None) => {
            for id in ports_by_number(ctx.engine, seg_id) {
                ctx.engine.reset_counters(Some(id));
            }
            Ok(())
        }
        Command::PortResetCounter(Some(n)) => {
            // Like vde_switch: any number in range is fine, port or not.
            match port_numbered(ctx.engine, seg_id, n) {
                Ok(id) => ctx.engine.reset_counters(Some(id)),
                Err(Errno::NoSuchDeviceOrAddress) => {}
                Err(e) => return Err(e),
            }
            Ok(())
        }
        Command::PortRemove(n) => {
            let id = port_numbered(ctx.engine, seg_id, n)?;
            removable(ctx.engine, id)?;
            *action = Some(Action::RemovePort(id));
            Ok(())
        }
        Command::PortEpClose(n, endpoint) => {
            let id = port_numbered(ctx.engine, seg_id, n)?;
            if id.index() as u64 != u64::from(endpoint) {
                return Err(Errno::NoSuchDeviceOrAddress);
            }
            removable(ctx.engine, id)?;
            *action = Some(Action::RemovePort(id));
            Ok(())
        }
        Command::HashShowInfo => {
            let seg = ctx
                .engine
                .segment(seg_id)
                .ok_or(Errno::NoSuchDeviceOrAddress)?;
            let _ = writeln!(out, "Hash size {}", seg.config().mac_table_size);
            out.push_str("GC interval 1 secs\n");
            let _ = writeln!(out, "GC expire {} secs", seg.config().mac_aging.as_secs());
            out.push_str("Min persistence 0 secs\n");
            Ok(())
        }
        Command::HashPrint => {
            let seg = ctx
                .engine
                .segment(seg_id)
                .ok_or(Errno::NoSuchDeviceOrAddress)?;
            let table = seg.mac_table();
            let mut rows: Vec<(u16, MacAddr, u32, u64)> = table
                .iter()
                .filter(|(_, _, e)| ctx.now.saturating_since(e.last_seen) < table.aging())
                .map(|(mac, vlan, e)| {
                    (
                        vlan,
                        mac,
                        e.port,
                        ctx.now.saturating_since(e.last_seen).as_secs(),
                    )
                })
                .collect();
            rows.sort_by_key(|&(vlan, mac, _, _)| (vlan, mac.0));
            let mask = seg.config().mac_table_size.next_power_of_two() - 1;
            for (vlan, mac, port, age) in rows {
                let number = ctx.engine.port(PortId(port)).map_or(0, Port::number);
                hash_line(out, mask, mac, vlan, number, age);
            }
            Ok(())
        }
        Command::HashFind(mac, vlan) => {
            let seg = ctx
                .engine
                .segment(seg_id)
                .ok_or(Errno::NoSuchDeviceOrAddress)?;
            let vid = vlan_from_console(vlan);
            let table = seg.mac_table();
            let (_, _, entry) = table
                .iter()
                .find(|&(m, v, e)| {
                    m == mac && v == vid && ctx.now.saturating_since(e.last_seen) < table.aging()
                })
                .ok_or(Errno::NoSuchDevice)?;
            let mask = seg.config().mac_table_size.next_power_of_two() - 1;
            let number = ctx.engine.port(PortId(entry.port)).map_or(0, Port::number);
            let age = ctx.now.saturating_since(entry.last_seen).as_secs();
            hash_line(out, mask, mac, vid, number, age);
            Ok(())
        }
        Command::Vlan(v) => vlan(ctx.engine, seg_id, v, out),
    }
}

/// The highest VLAN number (4095 is reserved by 802.1Q).
const MAX_VID: u16 = 4094;

/// The console's errno for a refusal of the engine's VLAN layer.
fn vlan_errno(e: &VlanError) -> Errno {
    match e {
        VlanError::NoSuchVlan | VlanError::NoSuchPort | VlanError::NoSuchSegment => {
            Errno::NoSuchDeviceOrAddress
        }
        VlanError::Exists => Errno::FileExists,
        VlanError::InUse => Errno::AddressInUse,
        VlanError::OutOfRange => Errno::InvalidArgument,
    }
}

/// The VLAN commands.
fn vlan(
    engine: &mut Engine,
    seg: SegmentId,
    cmd: VlanCommand,
    out: &mut String,
) -> Result<(), Errno> {
    let in_range = |v: u16| {
        if v > MAX_VID {
            Err(Errno::InvalidArgument)
        } else {
            Ok(v)
        }
    };
    match cmd {
        VlanCommand::SetUntagged { port, vlan } => {
            let id = port_numbered(engine, seg, port)?;
            let vid = vlan_from_console(in_range(vlan)?);
            engine
                .set_untagged_vlan(id, vid)
                .map_err(|e| vlan_errno(&e))
        }
        VlanCommand::Create(v) => {
            // As in vde_switch, 0 (the default VLAN) is not a tag one creates.
            if v == 0 {
                return Err(Errno::InvalidArgument);
            }
            engine
                .create_vlan(seg, in_range(v)?)
                .map_err(|e| vlan_errno(&e))
        }
        VlanCommand::Remove(v) => {
            if v == 0 {
                return Err(Errno::InvalidArgument);
            }
            engine
                .remove_vlan(seg, in_range(v)?)
                .map_err(|e| vlan_errno(&e))
        }
        VlanCommand::AddPort { vlan, port } => {
            let vid = vlan_from_console(in_range(vlan)?);
            let id = port_numbered(engine, seg, port)?;
            match engine.add_tagged_vlan(id, vid) {
                // vde_switch: adding a member again is fine.
                Err(VlanError::Exists) | Ok(()) => Ok(()),
                Err(e) => Err(vlan_errno(&e)),
            }
        }
        VlanCommand::DelPort { vlan, port } => {
            let vid = vlan_from_console(in_range(vlan)?);
            let id = port_numbered(engine, seg, port)?;
            if !engine.vlans(seg).contains(&vid) {
                return Err(Errno::NoSuchDeviceOrAddress);
            }
            match engine.port_vlans(id) {
                Some((untagged, _)) if untagged == vid => Err(Errno::AddressInUse),
                // vde_switch: removing a port that is not a member is fine.
                Some((_, tagged)) if !tagged.contains(&vid) => Ok(()),
                _ => engine
                    .remove_tagged_vlan(id, vid)
                    .map_err(|e| vlan_errno(&e)),
            }
        }
        VlanCommand::Print(which) => {
            let mut vids = engine.vlans(seg);
            vids.sort_by_key(|&v| vlan_to_console(v));
            if let Some(v) = which {
                let vid = vlan_from_console(in_range(v)?);
                if !vids.contains(&vid) {
                    return Err(Errno::NoSuchDeviceOrAddress);
                }
                vids = vec![vid];
            }
            let ports = ports_by_number(engine, seg);
            for vid in vids {
                let _ = writeln!(out, "VLAN {:04}", vlan_to_console(vid));
                for &id in &ports {
                    let (Some(p), Some((untagged, tagged))) =
                        (engine.port(id), engine.port_vlans(id))
                    else {
                        continue;
                    };
                    let member = untagged == vid || tagged.contains(&vid);
                    if member {
                        let _ = writeln!(
                            out,
                            " -- Port {:04} tagged={} active=1 status=Forwarding",
                            p.number(),
                            u8::from(untagged != vid)
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

/// Router interfaces belong to their router; the rest may be unplugged.
fn removable(engine: &Engine, id: PortId) -> Result<(), Errno> {
    match engine.port(id) {
        Some(p) if p.kind() == "router" => Err(Errno::NotPermitted),
        Some(_) => Ok(()),
        None => Err(Errno::NoSuchDeviceOrAddress),
    }
}

/// `help`: the table of commands whose path starts with `prefix`.
fn help(prefix: &str, out: &mut String) {
    let _ = writeln!(out, "{:<18} {:<15} HELP", "COMMAND PATH", "SYNTAX");
    let _ = writeln!(
        out,
        "{:<18} {:<15} ------------",
        "------------", "--------------"
    );
    for (path, syntax, text) in HELP {
        if path.starts_with(prefix) {
            let _ = writeln!(out, "{path:<18} {syntax:<15} {text}");
        }
    }
}

/// `showinfo`: version, process, console socket, and the segment acted on.
fn show_info(ctx: &Context<'_>, session: &Session, out: &mut String) {
    let _ = writeln!(
        out,
        "VDE switch V.{VDE_VERSION}\n(switchboard {}, a vde_switch-compatible console)\n",
        env!("CARGO_PKG_VERSION")
    );
    let name = ctx.engine.segment(session.segment).map_or("", |s| s.name());
    let _ = writeln!(
        out,
        "pid {} MAC {} uptime {}",
        ctx.pid,
        crate::router::stable_mac("switchboard", name),
        ctx.now.as_micros() / 1_000_000
    );
    let _ = writeln!(
        out,
        "mgmt {} perm 0{:03o}",
        ctx.info.mgmt_path, ctx.info.mgmt_mode
    );
    let count = ctx.engine.segments().count();
    let ordinal = ctx
        .engine
        .segments()
        .position(|(id, _)| id == session.segment)
        .map_or(0, |i| i + 1);
    let _ = writeln!(
        out,
        "segment {name} ({ordinal} of {count}: `segment` lists them)"
    );
}

/// `segment [NAME]`: lists the segments (`*` marks this session's), or
/// switches this session to NAME.
fn segment(
    ctx: &Context<'_>,
    session: &mut Session,
    name: Option<&str>,
    out: &mut String,
) -> Result<(), Errno> {
    match name {
        None => {
            for (id, s) in ctx.engine.segments() {
                let mark = if id == session.segment { '*' } else { ' ' };
                let _ = writeln!(out, "{mark} {}", s.name());
            }
            Ok(())
        }
        Some(n) => {
            session.segment = ctx
                .engine
                .segment_by_name(n)
                .ok_or(Errno::NoSuchDeviceOrAddress)?;
            Ok(())
        }
    }
}

/// The segment's ports, ordered by number.
fn ports_by_number(engine: &Engine, seg: SegmentId) -> Vec<PortId> {
    let Some(s) = engine.segment(seg) else {
        return Vec::new();
    };
    let mut ports: Vec<PortId> = s.ports().to_vec();
    ports.sort_by_key(|&id| engine.port(id).map_or(u16::MAX, Port::number));
    ports
}

/// The port numbered `n` on `seg`: `EINVAL` when `n` is beyond the
/// segment's port numbers, `ENXIO` when nothing is plugged in there.
fn port_numbered(engine: &Engine, seg: SegmentId, n: u16) -> Result<PortId, Errno> {
    let s = engine.segment(seg).ok_or(Errno::NoSuchDeviceOrAddress)?;
    if n > s.config().max_ports {
        return Err(Errno::InvalidArgument);
    }
    s.port_by_number(n).ok_or(Errno::NoSuchDeviceOrAddress)
}

/// `vde_switch`'s name for how a port is attached: its VDE2 clients are
/// `unix prog`, its taps `tuntap`; switchboard's other kinds keep their
/// names.
fn module_name(kind: &str) -> &str {
    match kind {
        "vde" => "unix prog",
        "tap" => "tuntap",
        k => k,
    }
}

/// One port's block of `port/print`.
fn print_port(engine: &Engine, id: PortId, p: &Port, out: &mut String) {
    let c = p.counters();
    let _ = writeln!(
        out,
        "Port {:04} untagged_vlan={:04} ACTIVE - Unnamed Allocatable",
        p.number(),
        vlan_to_console(engine.port_vlans(id).map_or(DEFAULT_VLAN, |(u, _)| u))
    );
    out.push_str(" Current User: NONE Access Control: (User: NONE - Group: NONE)\n");
    let _ = writeln!(
        out,
        " IN:  pkts {:>10}          bytes {:>20}",
        c.rx_frames, c.rx_bytes
    );
    let _ = writeln!(
        out,
        " OUT: pkts {:>10}          bytes {:>20}",
        c.tx_frames, c.tx_bytes
    );
    let descr = if p.description().is_empty() {
        "no endpoint description"
    } else {
        p.description()
    };
    let _ = writeln!(
        out,
        "  -- endpoint ID {:04} module {:<12}: {descr}",
        id.index(),
        module_name(p.kind())
    );
}

/// One line of `hash/print` and `hash/find`. The leading number is the
/// bucket `vde_switch` would keep the entry in (its hash of address and
/// VLAN, over a table of the segment's size rounded up to a power of two),
/// so the column means what it always did.
fn hash_line(out: &mut String, mask: usize, mac: MacAddr, vlan: u16, port: u16, age: u64) {
    let _ = writeln!(
        out,
        "Hash: {:04} Addr: {mac} VLAN {:04} to port: {port:03}  age {age} secs",
        vde_hash(mac, vlan_to_console(vlan)) & mask as u64,
        vlan_to_console(vlan)
    );
}

/// `vde_switch`'s hash of (address, VLAN): the address as a little-endian
/// 48-bit number with the VLAN above it, through the 64-bit MurmurHash3
/// finalizer.
fn vde_hash(mac: MacAddr, vlan: u16) -> u64 {
    let m = mac.0;
    let mut k = u64::from(u32::from_le_bytes([m[0], m[1], m[2], m[3]]))
        | u64::from(u16::from_le_bytes([m[4], m[5]])) << 32
        | u64::from(vlan) << 48;
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k
}

/// The console's number for an engine VLAN: the default VLAN is 0.
fn vlan_to_console(vid: u16) -> u16 {
    if vid == DEFAULT_VLAN { 0 } else { vid }
}

/// The engine's VLAN for a console number: 0 is the default VLAN.
fn vlan_from_console(v: u16) -> u16 {
    if v == 0 { DEFAULT_VLAN } else { v }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::{Egress, PortRequest, SegmentConfig};

    struct Rig {
        engine: Engine,
        info: ConsoleInfo,
        session: Session,
        now: Instant,
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x06]);
        f.resize(60, 0);
        f
    }

    /// One segment `default` with a VDE port 1 ("vm-a") and a tap port 2
    /// (no description), each of which has sent one 60-byte broadcast.
    fn rig() -> Rig {
        let mut engine = Engine::new();
        let seg = engine.add_segment(SegmentConfig::new("default")).unwrap();
        let a = engine
            .add_port(
                seg,
                PortRequest {
                    kind: "vde",
                    description: "vm-a".into(),
                    ..Default::default()
                },
            )
            .unwrap();
        let b = engine
            .add_port(
                seg,
                PortRequest {
                    kind: "tap",
                    ..Default::default()
                },
            )
            .unwrap();
        let now = Instant::from_secs(7);
        let mut out = Egress::default();
        engine.handle(now, a, &frame([0xff; 6], [2, 0, 0, 0, 0, 1]), &mut out);
        engine.handle(now, b, &frame([0xff; 6], [2, 0, 0, 0, 0, 2]), &mut out);
        engine.record_tx(b, 1, 60, 0, 0);
        let session = Session::new(&engine);
        Rig {
            engine,
            info: ConsoleInfo {
                mgmt_path: "/run/sw.mgmt".into(),
                mgmt_mode: 0o600,
                data_sockets: vec![Some(("/run/sw".into(), 0o660))],
            },
            session,
            now: Instant::from_secs(10),
        }
    }

    impl Rig {
        fn run(&mut self, line: &str) -> Reply {
            let mut ctx = Context {
                engine: &mut self.engine,
                info: &self.info,
                now: self.now,
                pid: 4242,
            };
            run_line(&mut ctx, &mut self.session, line.as_bytes())
        }

        fn text(&mut self, line: &str) -> String {
            let r = self.run(line);
            assert_eq!(r.action, None, "{line}");
            r.text
        }
    }

    fn data(lines: &str, status: &str) -> String {
        format!("0000 DATA END WITH '.'\n{lines}.\n{status}\n\nvde$ ")
    }

    #[test]
    fn banner_and_prompt_are_vde_switches() {
        let b = banner();
        assert!(b.starts_with("VDE switch V.2.3.2\n"), "{b}");
        assert!(b.ends_with("\n\nvde$ "), "{b:?}");
        assert_eq!(b.matches('\n').count(), 3);
    }

    #[test]
    fn port_print_matches_vde_switch_layout() {
        let mut r = rig();
        let port1 = "Port 0001 untagged_vlan=0000 ACTIVE - Unnamed Allocatable\n \
Current User: NONE Access Control: (User: NONE - Group: NONE)\n \
IN:  pkts          1          bytes                   60\n \
OUT: pkts          0          bytes                    0\n  \
-- endpoint ID 0000 module unix prog   : vm-a\n";
        let port2 = "Port 0002 untagged_vlan=0000 ACTIVE - Unnamed Allocatable\n \
Current User: NONE Access Control: (User: NONE - Group: NONE)\n \
IN:  pkts          1          bytes                   60\n \
OUT: pkts          1          bytes                   60\n  \
-- endpoint ID 0001 module tuntap      : no endpoint description\n";
        assert_eq!(
            r.text("port/print"),
            data(&format!("{port1}{port2}"), "1000 Success")
        );
        assert_eq!(r.text("port/allprint 2"), data(port2, "1000 Success"));
        assert_eq!(r.text("  port/print\t1  \r"), data(port1, "1000 Success"));
        assert_eq!(
            r.text("port/print 3"),
            data("", "1006 No such device or address")
        );
        assert_eq!(r.text("port/print 33"), data("", "1022 Invalid argument"));
        assert_eq!(r.text("port/print x"), data("", "1022 Invalid argument"));
        assert_eq!(r.text("port/print -1"), data("", "1022 Invalid argument"));
    }

    #[test]
    fn info_commands() {
        let mut r = rig();
        assert_eq!(
            r.text("port/showinfo"),
            data("Numports=32\nHUB=false\ncounters=true\n", "1000 Success")
        );
        assert_eq!(
            r.text("hash/showinfo"),
            data(
                "Hash size 4096\nGC interval 1 secs\nGC expire 300 secs\nMin persistence 0 secs\n",
                "1000 Success"
            )
        );
        assert_eq!(
            r.text("ds/showinfo"),
            data("ctl dir /run/sw\nstd mode 0660\n", "1000 Success")
        );
        let mac = crate::router::stable_mac("switchboard", "default");
        let expected = format!(
            "VDE switch V.2.3.2\n(switchboard {}, a vde_switch-compatible console)\n\n\
pid 4242 MAC {mac} uptime 10\nmgmt /run/sw.mgmt perm 0600\n\
segment default (1 of 1: `segment` lists them)\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(r.text("showinfo"), data(&expected, "1000 Success"));
    }

    #[test]
    fn help_is_vde_switches_table_and_filters_by_prefix() {
        let mut r = rig();
        let all = r.text("help");
        assert!(all.starts_with(
            "0000 DATA END WITH '.'\nCOMMAND PATH       SYNTAX          HELP\n\
------------       --------------  ------------\n\
ds                 ============    DATA SOCKET MENU\n"
        ));
        assert!(
            all.contains("\nport/print         [N]             print the port/endpoint table\n")
        );
        assert!(all.ends_with(".\n1000 Success\n\nvde$ "));
        let hash = r.text("help hash");
        assert_eq!(
            hash,
            data(
                "COMMAND PATH       SYNTAX          HELP\n\
------------       --------------  ------------\n\
hash               ============    HASH TABLE MENU\n\
hash/showinfo                      show hash info\n\
hash/print                         print the hash table\n\
hash/find          MAC [VLAN]      MAC lookup\n",
                "1000 Success"
            )
        );
    }

    #[test]
    fn hash_print_and_find() {
        let mut r = rig();
        // Bucket numbers as a real vde_switch (128 buckets) printed them for
        // these two addresses on VLAN 0.
        assert_eq!(vde_hash(MacAddr([2, 0, 0, 0, 0, 1]), 0) & 127, 43);
        assert_eq!(vde_hash(MacAddr([2, 0, 0, 0, 0, 2]), 0) & 127, 60);
        let b1 = vde_hash(MacAddr([2, 0, 0, 0, 0, 1]), 0) & 4095;
        let b2 = vde_hash(MacAddr([2, 0, 0, 0, 0, 2]), 0) & 4095;
        let l1 =
            format!("Hash: {b1:04} Addr: 02:00:00:00:00:01 VLAN 0000 to port: 001  age 3 secs\n");
        let l2 =
            format!("Hash: {b2:04} Addr: 02:00:00:00:00:02 VLAN 0000 to port: 002  age 3 secs\n");
        assert_eq!(
            r.text("hash/print"),
            data(&format!("{l1}{l2}"), "1000 Success")
        );
        assert_eq!(
            r.text("hash/find 02:00:00:00:00:02"),
            data(&l2, "1000 Success")
        );
        assert_eq!(r.text("hash/find 2.0.0.0.0.1 0"), data(&l1, "1000 Success"));
        assert_eq!(
            r.text("hash/find 02:00:00:00:00:01 1"),
            data(&l1, "1000 Success")
        );
        assert_eq!(
            r.text("hash/find 02:00:00:00:00:01 5"),
            data("", "1019 No such device")
        );
        assert_eq!(
            r.text("hash/find 02:00:00:00:00:09"),
            data("", "1019 No such device")
        );
        assert_eq!(r.text("hash/find zz"), data("", "1022 Invalid argument"));
        assert_eq!(r.text("hash/find"), data("", "1022 Invalid argument"));
        assert_eq!(
            r.text("hash/find 02:00:00:00:00:01:07"),
            data("", "1022 Invalid argument")
        );
        // Aged out entries are not shown.
        r.now = Instant::from_secs(7 + 300);
        assert_eq!(r.text("hash/print"), data("", "1000 Success"));
    }

    #[test]
    fn errors_unknown_commands_and_empty_lines() {
        let mut r = rig();
        let enosys = "1038 Function not implemented\n\nvde$ ";
        assert_eq!(r.text("nosuch/cmd"), enosys);
        assert_eq!(r.text("PORT/PRINT"), enosys);
        assert_eq!(r.text("port/printfoo"), enosys);
        assert_eq!(r.text("port"), enosys);
        assert_eq!(r.text("port/setnumports 64"), enosys);
        assert_eq!(r.text("hash/setsize 64"), enosys);
        assert_eq!(r.text(""), "\nvde$ ");
        assert_eq!(r.text("   "), "\nvde$ ");
        assert_eq!(r.text("# a comment"), "\nvde$ ");
        let garbage = r.run_bytes(b"\xff\xfe\x00port/print");
        assert_eq!(garbage.text, enosys);
        assert_eq!(overlong_reply(), "1007 Argument list too long\n\nvde$ ");
    }

    impl Rig {
        fn run_bytes(&mut self, line: &[u8]) -> Reply {
            let mut ctx = Context {
                engine: &mut self.engine,
                info: &self.info,
                now: self.now,
                pid: 1,
            };
            run_line(&mut ctx, &mut self.session, line)
        }
    }

    #[test]
    fn logout_shutdown_and_removal_are_actions() {
        let mut r = rig();
        assert_eq!(
            r.run("logout"),
            Reply {
                text: "9999 END OF SESSION".into(),
                action: Some(Action::Logout)
            }
        );
        assert_eq!(r.run("shutdown").action, Some(Action::Shutdown));
        assert_eq!(r.run("shutdown").text, "9999 END OF SESSION");
        let port2 = r
            .engine
            .segment(r.session.segment())
            .unwrap()
            .port_by_number(2)
            .unwrap();
        assert_eq!(
            r.run("port/remove 2"),
            Reply {
                text: "1000 Success\n\nvde$ ".into(),
                action: Some(Action::RemovePort(port2))
            }
        );
        assert_eq!(
            r.text("port/remove 9"),
            "1006 No such device or address\n\nvde$ "
        );
        assert_eq!(r.text("port/remove"), "1022 Invalid argument\n\nvde$ ");
        assert_eq!(r.text("port/remove 99"), "1022 Invalid argument\n\nvde$ ");
        assert_eq!(
            r.run("port/epclose 2 1").action,
            Some(Action::RemovePort(port2))
        );
        assert_eq!(
            r.text("port/epclose 2 7"),
            "1006 No such device or address\n\nvde$ "
        );
        assert_eq!(r.text("port/epclose 2"), "1022 Invalid argument\n\nvde$ ");
        // The console never removes by itself: the port is still there.
        assert!(r.engine.port(port2).is_some());
    }

    #[test]
    fn router_interfaces_cannot_be_removed() {
        let mut r = rig();
        let seg = r.session.segment();
        r.engine
            .add_port(
                seg,
                PortRequest {
                    number: Some(5),
                    kind: "router",
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(
            r.text("port/remove 5"),
            "1001 Operation not permitted\n\nvde$ "
        );
    }

    #[test]
    fn reset_counters_of_one_port_or_all() {
        let mut r = rig();
        assert_eq!(r.text("port/resetcounter 1"), "1000 Success\n\nvde$ ");
        let p = |r: &Rig, n| {
            let seg = r.engine.segment(r.session.segment()).unwrap();
            *r.engine
                .port(seg.port_by_number(n).unwrap())
                .unwrap()
                .counters()
        };
        assert_eq!(p(&r, 1).rx_frames, 0);
        assert_eq!(p(&r, 2).rx_frames, 1);
        assert_eq!(r.text("port/resetcounter 9"), "1000 Success\n\nvde$ ");
        assert_eq!(
            r.text("port/resetcounter x"),
            "1022 Invalid argument\n\nvde$ "
        );
        assert_eq!(r.text("port/resetcounter"), "1000 Success\n\nvde$ ");
        assert_eq!((p(&r, 2).rx_frames, p(&r, 2).tx_bytes), (0, 0));
    }

    /// The same commands, in the same order, as a session with a real
    /// `vde_switch` 2.3.2 with two clients, which gave these replies.
    #[test]
    fn vlan_commands_answer_as_vde_switch_does() {
        let mut r = rig();
        let ok = "1000 Success\n\nvde$ ";
        let err = |s: &str| format!("{s}\n\nvde$ ");
        assert_eq!(r.text("vlan/create 0"), err("1022 Invalid argument"));
        assert_eq!(r.text("vlan/create 5"), ok);
        assert_eq!(r.text("vlan/create 5"), err("1017 File exists"));
        assert_eq!(r.text("vlan/create 1"), err("1017 File exists"));
        assert_eq!(r.text("vlan/create 4095"), err("1022 Invalid argument"));
        assert_eq!(r.text("vlan/create x"), err("1022 Invalid argument"));
        assert_eq!(r.text("vlan/create"), err("1022 Invalid argument"));
        assert_eq!(r.text("vlan/addport 5 1"), ok);
        assert_eq!(r.text("vlan/addport 5 1"), ok);
        assert_eq!(
            r.text("vlan/addport 6 1"),
            err("1006 No such device or address")
        );
        assert_eq!(r.text("vlan/addport 5 40"), err("1022 Invalid argument"));
        assert_eq!(r.text("port/setvlan 2 5"), ok);
        assert_eq!(
            r.text("port/setvlan 2 7"),
            err("1006 No such device or address")
        );
        assert_eq!(
            r.text("port/setvlan 9 5"),
            err("1006 No such device or address")
        );
        let v0 = "VLAN 0000\n -- Port 0001 tagged=0 active=1 status=Forwarding\n";
        let v5 = "VLAN 0005\n -- Port 0001 tagged=1 active=1 status=Forwarding\n \
-- Port 0002 tagged=0 active=1 status=Forwarding\n";
        assert_eq!(
            r.text("vlan/print"),
            data(&format!("{v0}{v5}"), "1000 Success")
        );
        assert_eq!(r.text("vlan/print 5"), data(v5, "1000 Success"));
        assert_eq!(r.text("vlan/allprint 5"), data(v5, "1000 Success"));
        assert_eq!(
            r.text("vlan/print 6"),
            data("", "1006 No such device or address")
        );
        assert!(
            r.text("port/print 2")
                .starts_with("0000 DATA END WITH '.'\nPort 0002 untagged_vlan=0005 ACTIVE")
        );
        assert_eq!(r.text("vlan/remove 5"), err("1098 Address already in use"));
        assert_eq!(
            r.text("vlan/delport 5 2"),
            err("1098 Address already in use")
        );
        assert_eq!(r.text("vlan/delport 5 1"), ok);
        assert_eq!(r.text("vlan/delport 5 1"), ok);
        assert_eq!(r.text("port/setvlan 2 0"), ok);
        assert_eq!(r.text("vlan/remove 5"), ok);
        assert_eq!(
            r.text("vlan/remove 5"),
            err("1006 No such device or address")
        );
        // switchboard's own: the default VLAN cannot go.
        assert_eq!(r.text("vlan/remove 0"), err("1022 Invalid argument"));
        assert_eq!(r.text("vlan/remove 1"), err("1098 Address already in use"));
        let seg = r.session.segment();
        assert_eq!(r.engine.vlans(seg), vec![DEFAULT_VLAN]);
        let p2 = r.engine.segment(seg).unwrap().port_by_number(2).unwrap();
        assert_eq!(r.engine.port_vlans(p2), Some((DEFAULT_VLAN, vec![])));
    }

    #[test]
    fn addresses_are_shown_on_their_vlan() {
        let mut r = rig();
        assert_eq!(r.text("vlan/create 7"), "1000 Success\n\nvde$ ");
        assert_eq!(r.text("port/setvlan 2 7"), "1000 Success\n\nvde$ ");
        let seg = r.session.segment();
        let p2 = r.engine.segment(seg).unwrap().port_by_number(2).unwrap();
        let mut out = Egress::default();
        r.engine
            .handle(r.now, p2, &frame([0xff; 6], [2, 0, 0, 0, 0, 2]), &mut out);
        let b = vde_hash(MacAddr([2, 0, 0, 0, 0, 2]), 7) & 4095;
        let line =
            format!("Hash: {b:04} Addr: 02:00:00:00:00:02 VLAN 0007 to port: 002  age 0 secs\n");
        assert_eq!(r.text("hash/print"), data(&line, "1000 Success"));
        assert_eq!(
            r.text("hash/find 02:00:00:00:00:02 7"),
            data(&line, "1000 Success")
        );
    }

    #[test]
    fn segments_are_listed_and_selected_per_session() {
        let mut r = rig();
        r.engine.add_segment(SegmentConfig::new("wan")).unwrap();
        assert_eq!(
            r.text("segment"),
            data("* default\n  wan\n", "1000 Success")
        );
        assert_eq!(
            r.text("segment nosuch"),
            data("", "1006 No such device or address")
        );
        assert_eq!(r.text("segment wan"), data("", "1000 Success"));
        assert_eq!(
            r.text("segment"),
            data("  default\n* wan\n", "1000 Success")
        );
        assert_eq!(r.text("port/print"), data("", "1000 Success"));
        assert!(
            r.text("showinfo")
                .contains("\nsegment wan (2 of 2: `segment` lists them)\n")
        );
        assert_eq!(
            r.text("ds/showinfo"),
            data("ctl dir NONE\n", "1000 Success")
        );
    }

    #[test]
    fn parse_reads_numbers_and_macs_strictly() {
        assert_eq!(parse("port/print 007"), Ok(Command::PortPrint(Some(7))));
        assert_eq!(
            parse("port/print 70000").map_err(|e| e.0),
            Err(Errno::InvalidArgument)
        );
        assert_eq!(
            parse("port/print +1").map_err(|e| e.0),
            Err(Errno::InvalidArgument)
        );
        assert_eq!(
            parse("hash/find a:b:c:d:e:f 12"),
            Ok(Command::HashFind(
                MacAddr([0xa, 0xb, 0xc, 0xd, 0xe, 0xf]),
                12
            ))
        );
        assert_eq!(
            parse("hash/find 0a:0b:0c:0d:0e:100").map_err(|e| e.0),
            Err(Errno::InvalidArgument)
        );
        assert_eq!(
            parse("vlan/addport 5 3"),
            Ok(Command::Vlan(VlanCommand::AddPort { vlan: 5, port: 3 }))
        );
        assert_eq!(vlan_from_console(0), DEFAULT_VLAN);
        assert_eq!(vlan_to_console(DEFAULT_VLAN), 0);
        assert_eq!((vlan_from_console(7), vlan_to_console(7)), (7, 7));
    }
}
