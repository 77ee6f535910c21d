//! Running the `switchboard` binary under test, and asking it questions
//! through `switchboard ctl`.

use crate::netns::{self, Netns, Proc, Ran, secs, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// How long a switch may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `switchboard switch` process. Its [`Proc`] guard stops it on drop
/// (SIGTERM first, so it removes its sockets, then SIGKILL) and prints its
/// log if the test is failing.
pub struct Switchboard {
    proc: Proc,
    dir: PathBuf,
}

impl Switchboard {
    /// Starts `switchboard switch -s DIR ARGS...`, inside `ns` when given
    /// (taps it creates then appear there), and waits until it is ready:
    /// `DIR/ctl` accepts connections and every tap in `taps` exists. Panics with the
    /// switch's log if it exits or is not ready within [`READY_TIMEOUT`].
    pub fn start(
        ns: Option<&Netns>,
        dir: &Path,
        args: &[&str],
        taps: &[&str],
        log: PathBuf,
    ) -> Switchboard {
        let mut sw = Switchboard::spawn(ns, dir, args, log);
        // "Exists" is not enough: a stale socket left by a killed switch
        // exists too. Ready means this process listens on DIR/ctl.
        let pid = sw.proc.pid();
        let ready = wait_until(READY_TIMEOUT, || {
            !sw.proc.running()
                || (listens(pid, &dir.join("ctl"))
                    && taps.iter().all(|t| ns.is_none_or(|n| n.has_link(t))))
        });
        assert!(
            sw.proc.running(),
            "switchboard exited during start-up:\n{}",
            sw.proc.log()
        );
        assert!(
            ready,
            "switchboard not ready within {READY_TIMEOUT:?} ({}/ctl, taps {taps:?}):\n{}",
            dir.display(),
            sw.proc.log()
        );
        // The control socket may come up a moment after the VDE one; the
        // ctl calls below assert on it, so only wait here.
        wait_until(secs(2), || listens(pid, &dir.join("control")));
        sw
    }

    /// Spawns without waiting (for tests that expect it to fail).
    pub fn spawn(ns: Option<&Netns>, dir: &Path, args: &[&str], log: PathBuf) -> Switchboard {
        let dir_s = dir.to_str().expect("utf-8 path");
        let mut argv = vec![BIN, "switch", "-s", dir_s];
        argv.extend_from_slice(args);
        let cmd = match ns {
            Some(ns) => ns.command(&argv),
            None => {
                let mut c = Command::new(BIN);
                c.args(&argv[1..]);
                c
            }
        };
        Switchboard {
            proc: Proc::spawn("switchboard", cmd, log),
            dir: dir.to_path_buf(),
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Kills it with SIGKILL (no cleanup, leaving stale sockets) and reaps it.
    pub fn kill9(&mut self) {
        let child = self.proc.child_mut();
        let _ = child.kill();
        netns::wait_bounded(child, secs(5));
    }

    /// Sends SIGTERM and waits (bounded) for it to exit; `None` if it did
    /// not.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        netns::signal(self.proc.child_mut(), libc::SIGTERM);
        netns::wait_bounded(self.proc.child_mut(), timeout)
    }

    /// `switchboard ctl -c DIR --json ARGS...`, parsed. Panics with the
    /// command's output if it fails or prints something that is not JSON.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let mut argv = vec!["--json"];
        argv.extend_from_slice(args);
        let r = ctl(&self.dir, &argv);
        assert!(r.success(), "switchboard ctl {args:?}: {}", r.describe());
        serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("ctl {args:?} printed no JSON ({e}): {}", r.describe()))
    }

    /// The rows of `ctl --json ports`.
    pub fn ports(&self) -> Vec<Value> {
        let doc = self.ctl_json(&["ports"]);
        rows(&doc, "ports")
            .unwrap_or_else(|| panic!("ctl --json ports: no array of ports in {doc}"))
    }
}

/// Whether process `pid` has a listening Unix socket bound at `path`, from
/// `/proc/PID/net/unix` (which shows the process's own network namespace).
/// Unlike a test connection, this leaves no trace in the switch's log.
pub fn listens(pid: u32, path: &Path) -> bool {
    const SO_ACCEPTCON: &str = "00010000";
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) else {
        return false;
    };
    let path = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8 && fields[3] == SO_ACCEPTCON && fields[7] == path
    })
}

/// Runs `switchboard ctl -c DIR ARGS...`, bounded.
pub fn ctl(dir: &Path, args: &[&str]) -> Ran {
    netns::run(
        Command::new(BIN).arg("ctl").arg("-c").arg(dir).args(args),
        secs(10),
    )
}

/// The array in a ctl document: the document itself, or under `result`, or
/// under `key`. Tolerant of either wrapping.
pub fn rows(doc: &Value, key: &str) -> Option<Vec<Value>> {
    match doc {
        Value::Array(a) => Some(a.clone()),
        Value::Object(o) => o
            .get("result")
            .and_then(|r| rows(r, key))
            .or_else(|| o.get(key).and_then(|r| rows(r, key))),
        _ => None,
    }
}

/// A counter field of a port row (0 if missing or not a number).
pub fn counter(row: &Value, field: &str) -> u64 {
    row.get(field).and_then(Value::as_u64).unwrap_or(0)
}

/// The port rows of one kind (`"vde"`, `"tap"`).
pub fn ports_of_kind<'a>(ports: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ports
        .iter()
        .filter(|p| p.get("kind").and_then(Value::as_str) == Some(kind))
        .collect()
}

/// Asserts that exactly `n` ports of `kind` exist and that each has both
/// received and sent frames.
pub fn assert_ports_carried_traffic(ports: &[Value], kind: &str, n: usize) {
    let of_kind = ports_of_kind(ports, kind);
    assert_eq!(
        of_kind.len(),
        n,
        "expected {n} {kind} ports, got {ports:#?}"
    );
    for p in of_kind {
        assert!(
            counter(p, "rx_frames") > 0 && counter(p, "tx_frames") > 0,
            "{kind} port carried no traffic: {p}"
        );
    }
}

/// The name of the network file [`Switchboard::run_file`] writes into its
/// directory.
pub const CONFIG_FILE: &str = "switchboard.toml";

impl Switchboard {
    /// Starts `switchboard run DIR/switchboard.toml` with `config` as the
    /// file's text, inside `ns` when given, and waits until it is ready: it
    /// listens on `DIR/control` (so `config` must say
    /// `control = "DIR/control"`) and every tap in `taps` exists. Panics with
    /// its log if it exits or is not ready within [`READY_TIMEOUT`]. The
    /// `ctl` helpers then reach it through DIR, as for `switch -s DIR`.
    pub fn run_file(
        ns: Option<&Netns>,
        dir: &Path,
        config: &str,
        taps: &[&str],
        log: PathBuf,
    ) -> Switchboard {
        std::fs::create_dir_all(dir).expect("create switchboard dir");
        let file = dir.join(CONFIG_FILE);
        std::fs::write(&file, config).expect("write network file");
        let file_s = file.to_str().expect("utf-8 path");
        let argv = [BIN, "run", file_s];
        let cmd = match ns {
            Some(ns) => ns.command(&argv),
            None => {
                let mut c = Command::new(BIN);
                c.args(&argv[1..]);
                c
            }
        };
        let mut sw = Switchboard {
            proc: Proc::spawn("switchboard run", cmd, log),
            dir: dir.to_path_buf(),
        };
        let pid = sw.proc.pid();
        let ready = wait_until(READY_TIMEOUT, || {
            !sw.proc.running()
                || (listens(pid, &dir.join("control"))
                    && taps.iter().all(|t| ns.is_none_or(|n| n.has_link(t))))
        });
        assert!(
            sw.proc.running(),
            "switchboard run exited during start-up:\n{}\n--- {CONFIG_FILE} ---\n{config}",
            sw.proc.log()
        );
        assert!(
            ready,
            "switchboard run not ready within {READY_TIMEOUT:?} ({}/control, taps {taps:?}):\n{}",
            dir.display(),
            sw.proc.log()
        );
        sw
    }

    /// Its process id (with `ip netns exec`, which execs, its own).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `switchboard ctl -c DIR ARGS...`, bounded, whatever its outcome (for
    /// commands whose failure the test expects).
    pub fn ctl(&self, args: &[&str]) -> Ran {
        ctl(&self.dir, args)
    }
}

/// A path as a TOML basic string, for network files the tests write: test
/// paths are plain ASCII under the temporary directory, so Rust's quoting
/// is TOML's.
pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("utf-8 path"))
}
