//! `switchboard switch -M PATH`: vde_switch's management console, driven by
//! the real clients test rigs use (Debian vde2's `unixcmd`, which is
//! `vdecmd`, and `unixterm`), and by a misbehaving raw client.
//!
//! Debian ships `vdecmd` as `unixcmd` with its parse machine in
//! `/etc/vde2/vdecmd`. That file ends in `EXITATOI`, a step its `unixcmd`
//! does not know, so it exits 255 whatever the switch answers (a real
//! `vde_switch` included): with it, only the output is checked. The exit
//! status (0, or the errno of a `1000+errno` reply) is checked with the
//! same machine spelled with the steps `unixcmd` does know (`RVATOI`,
//! `EXITRV`), as upstream intends it.

use crate::netns::{Need, Ran, TestDir, run, secs, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, listens, ports_of_kind};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's parse machine for `vdecmd`.
const DEBIAN_VDECMD_RC: &str = "/etc/vde2/vdecmd";

/// The same machine, with an exit status `unixcmd` can produce.
const VDECMD_RC: &str = "TIMEOUT 1000
1 IN '$ ' 100
3 SEND '$*\\n'
5 THROW
6 IN '\\n' 100
7 IF '0000 DATA END WITH \\'.\\'' 10
8 IF '10' 20
9 GOTO 100
10 THROW
11 IN '\\n' 100
12 IF '.\\n' 5
13 COPY
14 GOTO 10
20 SKIP 2
21 RVATOI
22 SEND 'logout\\n'
23 EXITRV
100 EXIT -1
";

/// A switch serving a console at `mgmt`, with its scratch directory.
struct Rig {
    sw: Switchboard,
    mgmt: PathBuf,
    sock: PathBuf,
    rc: PathBuf,
    dir: TestDir,
}

impl Rig {
    fn new(tag: &str, extra: &[&str]) -> Rig {
        let dir = TestDir::new(tag);
        let sock = dir.join("sw");
        let mgmt = dir.join("sw.mgmt");
        let rc = dir.join("vdecmd.rc");
        std::fs::write(&rc, VDECMD_RC).expect("write vdecmd rc");
        let mut args = vec!["-M", mgmt.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        let sw = Switchboard::start(None, &sock, &args, &[], dir.join("switchboard.log"));
        let pid = sw.pid();
        assert!(
            wait_until(secs(5), || listens(pid, &mgmt)),
            "no console at {}:\n{}",
            mgmt.display(),
            sw.log()
        );
        Rig {
            sw,
            mgmt,
            sock,
            rc,
            dir,
        }
    }

    /// `vdecmd -s MGMT ARGS...` with the machine in `rc`.
    fn vdecmd_with(&self, rc: &Path, args: &[&str]) -> Ran {
        let mut r = run(
            Command::new("unixcmd")
                .arg("-f")
                .arg(rc)
                .arg("-s")
                .arg(&self.mgmt)
                .args(args),
            secs(10),
        );
        // unixcmd copies each line with its terminating NUL.
        r.stdout = r.stdout.replace('\0', "");
        r
    }

    /// `vdecmd` whose exit status is the reply's errno.
    fn vdecmd(&self, args: &[&str]) -> Ran {
        self.vdecmd_with(&self.rc.clone(), args)
    }

    /// A raw console connection, past the banner.
    fn connect(&self) -> Console {
        let stream = UnixStream::connect(&self.mgmt)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.mgmt.display()));
        let mut c = Console { stream };
        let banner = c.read_until(b"\nvde$ ", secs(5));
        assert!(
            banner.starts_with("VDE switch V.2.3.2\n"),
            "banner: {banner:?}"
        );
        c
    }
}

/// A raw client of the console.
struct Console {
    stream: UnixStream,
}

impl Console {
    /// Reads until `end` arrives (or EOF, or the deadline); returns all of it.
    fn read_until(&mut self, end: &[u8], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(end) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.stream.set_read_timeout(Some(left)).ok();
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Sends `line` and returns the reply, up to and including the prompt.
    fn ask(&mut self, line: &[u8]) -> String {
        self.stream.write_all(line).expect("write to console");
        self.read_until(b"\nvde$ ", secs(5))
    }
}

/// A `vde_plug` attached to the switch whose stdin we write frames to (VDE
/// stream framing: a 2-byte big-endian length, then the frame). Killed on
/// drop.
struct Plug {
    child: Child,
    stdin: ChildStdin,
}

impl Plug {
    fn attach(sock: &Path, description: &str) -> Plug {
        let mut child = Command::new("vde_plug")
            .arg("-D")
            .arg(description)
            .arg(format!("vde://{}", sock.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vde_plug");
        let stdin = child.stdin.take().expect("vde_plug stdin");
        Plug { child, stdin }
    }

    /// Sends one 60-byte broadcast from `src`.
    fn send_broadcast(&mut self, src: [u8; 6]) {
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&[0x08, 0x06]);
        frame.resize(60, 0);
        let mut msg = (frame.len() as u16).to_be_bytes().to_vec();
        msg.extend_from_slice(&frame);
        self.stdin
            .write_all(&msg)
            .expect("write a frame to vde_plug");
        self.stdin.flush().ok();
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Plug {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn vdecmd_lists_ports_and_macs_and_removes_a_port() {
    skip_unless!(Need::Tool("vde_plug"), Need::Tool("unixcmd"));
    let rig = Rig::new("mgmt", &[]);
    // One after the other, so alpha is port 1 and bravo port 2.
    let mut a = Plug::attach(&rig.sock, "sbt-mgmt-alpha");
    assert!(
        wait_until(secs(5), || ports_of_kind(&rig.sw.ports(), "vde").len() == 1),
        "the first plug did not attach: {:#?}",
        rig.sw.ports()
    );
    let mut b = Plug::attach(&rig.sock, "sbt-mgmt-bravo");
    assert!(
        wait_until(secs(5), || ports_of_kind(&rig.sw.ports(), "vde").len() == 2),
        "the plugs did not attach: {:#?}",
        rig.sw.ports()
    );
    a.send_broadcast([2, 0x5b, 0, 0, 0, 0xa]);
    b.send_broadcast([2, 0x5b, 0, 0, 0, 0xb]);

    // Debian's own vdecmd machine: the output is the data block.
    let r = rig.vdecmd_with(Path::new(DEBIAN_VDECMD_RC), &["port/print"]);
    for (n, who) in [(1, "sbt-mgmt-alpha"), (2, "sbt-mgmt-bravo")] {
        assert!(
            r.stdout.contains(&format!(
                "Port {n:04} untagged_vlan=0000 ACTIVE - Unnamed Allocatable\n"
            )),
            "port {n} missing: {}",
            r.describe()
        );
        assert!(
            r.stdout.contains(&format!("module unix prog   : {who}")),
            "{who} missing: {}",
            r.describe()
        );
    }
    assert!(!r.stdout.contains("0000 DATA"), "{}", r.describe());

    let r = rig.vdecmd(&["port/print"]);
    assert!(r.success(), "port/print: {}", r.describe());
    assert_eq!(
        r.stdout.matches("\nPort 000").count() + 1,
        2,
        "{}",
        r.describe()
    );

    // Learned addresses, once the frames have crossed.
    let mut hash = String::new();
    let learned = wait_until(secs(5), || {
        hash = rig.vdecmd(&["hash/print"]).stdout;
        hash.contains("Addr: 02:5b:00:00:00:0a VLAN 0000 to port: 001  age ")
            && hash.contains("Addr: 02:5b:00:00:00:0b VLAN 0000 to port: 002  age ")
    });
    assert!(learned, "hash/print: {hash:?}");
    let r = rig.vdecmd(&["hash/find", "02:5b:00:00:00:0b"]);
    assert!(
        r.success() && r.stdout.contains("to port: 002"),
        "{}",
        r.describe()
    );
    let r = rig.vdecmd(&["port/print", "1"]);
    assert!(
        r.stdout
            .contains(" IN:  pkts          1          bytes                   60\n"),
        "{}",
        r.describe()
    );

    // Errors: the errno is the exit status.
    let r = rig.vdecmd(&["nosuch/cmd"]);
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(38),
        "{}",
        r.describe()
    );
    let r = rig.vdecmd(&["port/print", "9"]);
    assert_eq!(r.status.and_then(|s| s.code()), Some(6), "{}", r.describe());
    let r = rig.vdecmd(&["hash/find", "not-a-mac"]);
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(22),
        "{}",
        r.describe()
    );

    // port/remove unplugs the client on that port.
    let r = rig.vdecmd(&["port/remove", "2"]);
    assert!(r.success(), "port/remove: {}", r.describe());
    assert!(
        wait_until(secs(5), || b.exited()),
        "vde_plug on the removed port is still running"
    );
    let ports = rig.sw.ports();
    let vde = ports_of_kind(&ports, "vde");
    assert_eq!(vde.len(), 1, "{ports:#?}");
    assert_eq!(vde[0]["port"], 1, "{ports:#?}");
    let r = rig.vdecmd(&["port/print"]);
    assert!(
        r.stdout.contains("sbt-mgmt-alpha") && !r.stdout.contains("sbt-mgmt-bravo"),
        "{}",
        r.describe()
    );
    assert!(!a.exited(), "the other plug must stay attached");
}

#[test]
fn console_socket_mode_and_shutdown() {
    skip_unless!(Need::Tool("unixcmd"));
    let rig = Rig::new("mgmtmode", &["--mgmtmode", "0640"]);
    let mode = std::fs::symlink_metadata(&rig.mgmt)
        .expect("stat console socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640, "console socket mode {mode:o}");
    let r = rig.vdecmd(&["showinfo"]);
    assert!(
        r.success()
            && r.stdout
                .contains(&format!("mgmt {} perm 0640\n", rig.mgmt.display())),
        "{}",
        r.describe()
    );
    let r = rig.vdecmd(&["ds/showinfo"]);
    assert!(
        r.stdout
            .contains(&format!("ctl dir {}\nstd mode 0600\n", rig.sock.display())),
        "{}",
        r.describe()
    );

    // The default is vde_switch's 0600.
    let other = Rig::new("mgmtmode-default", &[]);
    let mode = std::fs::symlink_metadata(&other.mgmt)
        .expect("stat console socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600, "default console socket mode {mode:o}");

    // shutdown: the session ends and the switch stops, removing its sockets.
    let mut sw = rig.sw;
    let mut c = Console {
        stream: UnixStream::connect(&rig.mgmt).expect("connect"),
    };
    c.read_until(b"\nvde$ ", secs(5));
    c.stream.write_all(b"shutdown\n").expect("write");
    let end = c.read_until(b"\0never", secs(5));
    assert_eq!(end, "9999 END OF SESSION");
    let status = sw.terminate(secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "switchboard did not stop cleanly: {status:?}\n{}",
        sw.log()
    );
    assert!(!rig.mgmt.exists(), "the console socket was left behind");
    drop(rig.dir);
}

#[test]
fn unixterm_runs_commands_from_stdin() {
    skip_unless!(Need::Tool("unixterm"));
    let rig = Rig::new("mgmt-unixterm", &[]);
    let mut child = Command::new("unixterm")
        .arg(&rig.mgmt)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn unixterm");
    let mut stdin = child.stdin.take().expect("stdin");
    // unixterm reads its socket and stdin in turn; it quits at stdin's end,
    // so the commands go in slowly and stdin closes after the answers.
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"port/showinfo\n").expect("write");
    std::thread::sleep(Duration::from_millis(300));
    stdin.write_all(b"hash/showinfo\n").expect("write");
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let deadline = Instant::now() + secs(5);
    while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .ok();
    let _ = child.wait();
    assert!(out.starts_with("VDE switch V.2.3.2\n"), "{out:?}");
    assert!(
        out.contains("\nvde$ 0000 DATA END WITH '.'\nNumports=32\nHUB=false\ncounters=true\n.\n1000 Success\n"),
        "{out:?}"
    );
    assert!(
        out.contains("Hash size 4096\nGC interval 1 secs\nGC expire 300 secs\n"),
        "{out:?}"
    );
}

#[test]
fn garbage_and_overlong_lines_get_errors_not_a_crash() {
    let mut rig = Rig::new("mgmt-garbage", &[]);
    let mut c = rig.connect();
    assert_eq!(
        c.ask(b"\xff\xfe\x00\x01garbage\n"),
        "1038 Function not implemented\n\nvde$ "
    );
    assert_eq!(
        c.ask(b"port/print 1 2 3 x\n"),
        "0000 DATA END WITH '.'\n.\n1006 No such device or address\n\nvde$ "
    );
    // A megabyte without a newline: one error, nothing kept, and the next
    // command is served.
    let writer = {
        let mut s = c.stream.try_clone().expect("clone");
        std::thread::spawn(move || {
            s.write_all(&vec![b'z'; 1 << 20]).expect("write 1 MB");
            s.write_all(b"\nport/showinfo\n").expect("write");
        })
    };
    let reply = c.read_until(b"counters=true\n.\n1000 Success\n\nvde$ ", secs(10));
    writer.join().expect("writer");
    assert_eq!(
        reply,
        "1007 Argument list too long\n\nvde$ 0000 DATA END WITH '.'\nNumports=32\nHUB=false\ncounters=true\n.\n1000 Success\n\nvde$ "
    );
    // Comments and blank lines only get a prompt; logout ends the session.
    assert_eq!(c.ask(b"# nothing\n"), "\nvde$ ");
    c.stream.write_all(b"logout\n").expect("write");
    assert_eq!(c.read_until(b"\0never", secs(5)), "9999 END OF SESSION");
    assert!(rig.sw.running(), "switchboard died:\n{}", rig.sw.log());
    // Another client is served after all that.
    let mut d = rig.connect();
    assert!(d.ask(b"port/showinfo\n").contains("Numports=32"));
}

#[test]
fn vdecmd_configures_vlans() {
    skip_unless!(Need::Tool("vde_plug"), Need::Tool("unixcmd"));
    let rig = Rig::new("mgmt-vlan", &[]);
    let _a = Plug::attach(&rig.sock, "sbt-mgmt-vlan");
    assert!(
        wait_until(secs(5), || ports_of_kind(&rig.sw.ports(), "vde").len() == 1),
        "the plug did not attach: {:#?}",
        rig.sw.ports()
    );
    let ok = |args: &[&str]| {
        let r = rig.vdecmd(args);
        assert!(r.success(), "{args:?}: {}", r.describe());
        r.stdout
    };
    ok(&["vlan/create", "10"]);
    ok(&["vlan/create", "20"]);
    ok(&["port/setvlan", "1", "10"]);
    ok(&["vlan/addport", "20", "1"]);
    assert_eq!(
        ok(&["vlan/print"]),
        "VLAN 0000\nVLAN 0010\n -- Port 0001 tagged=0 active=1 status=Forwarding\n\
VLAN 0020\n -- Port 0001 tagged=1 active=1 status=Forwarding\n"
    );
    assert!(ok(&["port/print", "1"]).starts_with("Port 0001 untagged_vlan=0010 ACTIVE"));
    let r = rig.vdecmd(&["vlan/create", "1"]);
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(17),
        "{}",
        r.describe()
    );
    let r = rig.vdecmd(&["vlan/remove", "10"]);
    assert_eq!(
        r.status.and_then(|s| s.code()),
        Some(98),
        "{}",
        r.describe()
    );
    ok(&["port/setvlan", "1", "0"]);
    ok(&["vlan/delport", "20", "1"]);
    ok(&["vlan/remove", "10"]);
    assert_eq!(
        ok(&["vlan/allprint"]),
        "VLAN 0000\n -- Port 0001 tagged=0 active=1 status=Forwarding\nVLAN 0020\n"
    );
}
