//! `switchboard ns` as an unprivileged user: a command in a new network
//! namespace plugged into a segment, addressed by the segment's DHCP server
//! or by `--ip`, resolving through the network's DNS, reaching the gateway
//! and other namespaces.
//!
//! The tests run as root only to drop to uid/gid 65534 with `setpriv`, so
//! what is exercised is the unprivileged path (user namespace, id maps, tap
//! created inside, descriptor handed out). Where `/dev/net/tun` is not
//! world-accessible (Debian makes it 0666; some containers 0600), each
//! command runs in a private mount namespace with an accessible copy of the
//! device node bind-mounted over it, so the host is never changed.

use crate::netns::{Need, Proc, Ran, TestDir, run, secs, wait_until, which};
use crate::skip_unless;
use crate::switchboard::{BIN, Switchboard, rows, toml_path};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

pub const NOBODY: &str = "65534";

/// Why unprivileged namespaces cannot be tested here, or `None`.
pub fn unprivileged_skip() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (the test drops to uid 65534 with setpriv)".into());
    }
    for tool in ["setpriv", "unshare", "mknod"] {
        if which(tool).is_none() {
            return Some(format!(
                "`{tool}` (util-linux / coreutils) is not installed"
            ));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    let probe = run(
        Command::new("setpriv").args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            "unshare",
            "-Urn",
            "true",
        ]),
        secs(10),
    );
    if !probe.success() {
        return Some(format!(
            "unprivileged user namespaces are unavailable here: {}",
            probe.stderr.trim()
        ));
    }
    None
}

/// `switchboard ns ARGS...` as uid/gid 65534.
pub fn ns_command(dir: &Path, args: &[&str]) -> Command {
    let mut argv: Vec<String> = [
        "setpriv",
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        BIN,
        "ns",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(args.iter().map(|s| s.to_string()));
    let world_rw = std::fs::metadata("/dev/net/tun")
        .map(|m| m.permissions().mode() & 0o006 == 0o006)
        .unwrap_or(false);
    if world_rw {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        return c;
    }
    let node = dir.join("tun");
    let script = format!(
        "[ -e {n} ] || mknod {n} c 10 200 && chmod 0666 {n} && mount --bind {n} /dev/net/tun && exec \"$@\"",
        n = node.to_str().unwrap()
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "sh", "-c", &script, "sh"]).args(&argv);
    c
}

/// The test directory, traversable by uid 65534 (the segment's sockets are
/// made world-accessible by the configuration).
pub fn open_dir(tag: &str) -> TestDir {
    let dir = TestDir::new(tag);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn summary_line(r: &Ran) -> String {
    r.stderr
        .lines()
        .find(|l| l.starts_with("switchboard ns: eth0 "))
        .unwrap_or_else(|| panic!("no summary line: {}", r.describe()))
        .to_string()
}

#[test]
fn a_namespace_takes_a_lease_resolves_through_the_gateway_and_pings_it() {
    skip_unless!(Need::Tool("ip"), Need::Tool("ping"));
    if let Some(reason) = unprivileged_skip() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = open_dir("ns-dhcp");
    let config = format!(
        r#"control = {control}

[segments.lan]
vde = {vde}
mode = "0666"
dirmode = "0777"

[routers.gw.interfaces.lan]
segment = "lan"
addresses = ["10.0.7.1/24"]

[routers.gw.interfaces.lan.dhcp]
ranges = ["10.0.7.100-10.0.7.120"]
lease_secs = 600
lease_file = {leases}
mtu = 1400

[routers.gw.dns]
domain = "lab"
"#,
        control = toml_path(&dir.join("sw").join("control")),
        vde = toml_path(&dir.join("lan")),
        leases = toml_path(&dir.join("lan.leases")),
    );
    let _sw = Switchboard::run_file(None, &dir.join("sw"), &config, &[], dir.join("sw.log"));

    let url = format!("vde://{}", dir.join("lan").display());
    let r = run(
        &mut ns_command(
            dir.path(),
            &[
                &url,
                "--",
                "sh",
                "-c",
                "echo uid=$(id -u) ns=$SWITCHBOARD_NS; ip -4 addr show eth0; echo ---; \
                 cat /etc/resolv.conf; echo ---; ping -c1 -W2 10.0.7.1 && echo PING-OK",
            ],
        ),
        secs(40),
    );
    assert!(r.success(), "switchboard ns failed: {}", r.describe());

    // The one line on stderr, with an address from the range.
    let line = summary_line(&r);
    let addr = line
        .strip_prefix("switchboard ns: eth0 ")
        .and_then(|rest| rest.split_once('/'))
        .map(|(a, _)| a.to_string())
        .unwrap();
    let host: u8 = addr
        .strip_prefix("10.0.7.")
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("address {addr} is not in 10.0.7.0/24: {line}"));
    assert!((100..=120).contains(&host), "{addr} outside the DHCP range");
    assert_eq!(
        line,
        format!("switchboard ns: eth0 {addr}/24 via 10.0.7.1, dns 10.0.7.1, mtu 1400")
    );

    // What the command saw: root inside, the marker, the address and MTU on
    // eth0, the private resolv.conf, the gateway answering.
    assert!(r.stdout.contains("uid=0 ns=1"), "{}", r.describe());
    assert!(
        r.stdout.contains(&format!("inet {addr}/24")),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("mtu 1400"), "{}", r.describe());
    let resolv = r.stdout.split("---").nth(1).unwrap_or_default();
    assert_eq!(
        resolv.trim(),
        "# written by switchboard ns for this namespace only\nnameserver 10.0.7.1\nsearch lab",
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("PING-OK"), "{}", r.describe());

    // The host's own resolv.conf is untouched.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!host_resolv.contains("written by switchboard ns"));
}

#[test]
fn fixed_addresses_without_dhcp_reach_each_other_and_signals_reach_the_command() {
    skip_unless!(Need::Tool("ip"), Need::Tool("ping"));
    if let Some(reason) = unprivileged_skip() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = open_dir("ns-static");
    let sw_dir = dir.join("sw");
    let _sw = Switchboard::start(
        None,
        &sw_dir,
        &["-m", "0666", "--dirmode", "0777"],
        &[],
        dir.join("sw.log"),
    );
    let url = format!("vde://{}", sw_dir.display());

    // A first namespace that just stays up.
    let mut a = Proc::spawn(
        "switchboard ns (a)",
        ns_command(
            dir.path(),
            &[&url, "--ip", "10.9.0.6/24", "--", "sleep", "60"],
        ),
        dir.join("ns-a.log"),
    );
    assert!(
        wait_until(secs(10), || std::fs::read_to_string(dir.join("ns-a.log"))
            .is_ok_and(|t| t.contains("switchboard ns: eth0 10.9.0.6/24"))),
        "namespace a did not come up: {}",
        a.log()
    );

    // A second one, configured from the command line only: no DHCP wait.
    let started = std::time::Instant::now();
    let r = run(
        &mut ns_command(
            dir.path(),
            &[
                &url,
                "--ip",
                "10.9.0.5/24",
                "--gw",
                "10.9.0.1",
                "--dns",
                "10.9.0.53",
                "--",
                "sh",
                "-c",
                "ip -4 addr show eth0; ip -4 route; cat /etc/resolv.conf; \
                 ping -c1 -W2 10.9.0.6 && echo PING-OK",
            ],
        ),
        secs(30),
    );
    assert!(r.success(), "switchboard ns failed: {}", r.describe());
    assert!(started.elapsed() < secs(8), "took {:?}", started.elapsed());
    assert_eq!(
        summary_line(&r),
        "switchboard ns: eth0 10.9.0.5/24 via 10.9.0.1, dns 10.9.0.53"
    );
    assert!(r.stdout.contains("inet 10.9.0.5/24"), "{}", r.describe());
    assert!(
        r.stdout.contains("default via 10.9.0.1 dev eth0"),
        "{}",
        r.describe()
    );
    assert!(
        r.stdout.contains("\nnameserver 10.9.0.53\n"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("PING-OK"), "{}", r.describe());

    // SIGTERM to the outside process reaches the command, and the outside
    // exits with the command's status (128 + 15).
    crate::netns::signal(a.child_mut(), libc::SIGTERM);
    let status = crate::netns::wait_bounded(a.child_mut(), secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(143),
        "namespace a: {status:?}: {}",
        a.log()
    );

    // The command's own exit status comes through; a failed exec is 127.
    let r = run(
        &mut ns_command(
            dir.path(),
            &[&url, "--ip", "10.9.0.7/24", "--", "sh", "-c", "exit 7"],
        ),
        secs(30),
    );
    assert_eq!(r.status.and_then(|s| s.code()), Some(7), "{}", r.describe());
    let r = run(
        &mut ns_command(
            dir.path(),
            &[&url, "--ip", "10.9.0.7/24", "--", "/nonexistent/cmd"],
        ),
        secs(30),
    );
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(127),
        "{}",
        r.describe()
    );
}

#[test]
fn no_dhcp_server_and_no_switch_are_reported_without_running_the_command() {
    if let Some(reason) = unprivileged_skip() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = open_dir("ns-fail");
    let sw_dir = dir.join("sw");
    let _sw = Switchboard::start(
        None,
        &sw_dir,
        &["-m", "0666", "--dirmode", "0777"],
        &[],
        dir.join("sw.log"),
    );
    let url = format!("vde://{}", sw_dir.display());
    let r = run(
        &mut ns_command(dir.path(), &[&url, "--", "sh", "-c", "echo RAN"]),
        secs(30),
    );
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(125),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("RAN"), "{}", r.describe());
    assert!(
        r.stderr
            .contains(&format!("no DHCP lease on {url} within 10 s")),
        "{}",
        r.describe()
    );

    let missing = format!("vde://{}", dir.join("nothere").display());
    let r = run(
        &mut ns_command(dir.path(), &[&missing, "--", "sh", "-c", "echo RAN"]),
        secs(10),
    );
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(125),
        "{}",
        r.describe()
    );
    assert!(!r.stdout.contains("RAN"), "{}", r.describe());
    assert!(
        r.stderr.contains(&format!(
            "cannot reach the segment {missing}: no VDE switch"
        )),
        "{}",
        r.describe()
    );
}

#[test]
fn the_outside_renews_the_lease_while_the_command_runs() {
    if let Some(reason) = unprivileged_skip() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = open_dir("ns-renew");
    // 60 s is the server's shortest lease: renewal is due at 30 s.
    let config = format!(
        r#"control = {control}

[segments.lan]
vde = {vde}
mode = "0666"
dirmode = "0777"

[routers.gw.interfaces.lan]
segment = "lan"
addresses = ["10.0.8.1/24"]

[routers.gw.interfaces.lan.dhcp]
ranges = ["10.0.8.100-10.0.8.120"]
lease_secs = 60
lease_file = {leases}
"#,
        control = toml_path(&dir.join("sw").join("control")),
        vde = toml_path(&dir.join("lan")),
        leases = toml_path(&dir.join("lan.leases")),
    );
    let sw = Switchboard::run_file(None, &dir.join("sw"), &config, &[], dir.join("sw.log"));

    let url = format!("vde://{}", dir.join("lan").display());
    let r = run(
        &mut ns_command(dir.path(), &[&url, "--", "sleep", "50"]),
        secs(65),
    );
    assert!(r.success(), "switchboard ns failed: {}", r.describe());
    let line = summary_line(&r);
    let addr = line
        .strip_prefix("switchboard ns: eth0 ")
        .and_then(|rest| rest.split_once('/'))
        .map(|(a, _)| a.to_string())
        .unwrap_or_else(|| panic!("no address in {line}"));
    assert!(
        !r.stderr.contains("lease was lost"),
        "the renewal failed: {}",
        r.describe()
    );

    // Taken ~50 s ago: unrenewed it would have under 15 s left; renewed at
    // ~30 s, about 40.
    let doc = sw.ctl_json(&["leases"]);
    let rows = rows(&doc, "leases").unwrap_or_else(|| panic!("no leases in {doc}"));
    let lease = rows
        .iter()
        .find(|l| l.get("ip").and_then(serde_json::Value::as_str) == Some(addr.as_str()))
        .unwrap_or_else(|| panic!("no lease for {addr} in {doc:#}"));
    assert_eq!(lease["state"], "bound", "{lease:#}");
    let left = lease["expires_in_secs"]
        .as_u64()
        .unwrap_or_else(|| panic!("no expiry: {lease:#}"));
    assert!(
        left > 25,
        "the lease has {left} s left: not renewed? {lease:#}\n{}",
        r.describe()
    );
}
