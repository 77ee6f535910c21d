//! Test scaffolding: network namespaces, bounded commands, background
//! processes and scratch directories, each a guard that cleans up in `Drop`
//! so that a failing (panicking) test leaves nothing behind.
//!
//! Every wait in here is bounded in time and in iterations. Every namespace
//! is named `sbt-<pid>-<n>`, every tap `sbt<pid><letter><n>`, so parallel
//! tests and parallel runs never collide, and a leftover is easy to spot.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number unique within this test process.
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A tap name unique to this test run: `sbt<pid><letter><n>`, at most 15
/// bytes (Linux's limit) for any pid up to 2^22 and n below 1000.
pub fn tap_name(letter: char) -> String {
    let name = format!("sbt{}{letter}{}", std::process::id(), unique() % 1000);
    assert!(name.len() <= 15, "tap name {name} too long");
    name
}

/// What a test needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Root, `/dev/net/tun`, and a working `ip netns add`.
    Netns,
    /// An executable on `PATH`.
    Tool(&'static str),
}

/// Why a test cannot run here, or `None` when it can.
pub fn skip_reason(needs: &[Need]) -> Option<String> {
    for need in needs {
        match *need {
            Need::Netns => {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    return Some("not root (network namespaces and taps need root)".into());
                }
                if !Path::new("/dev/net/tun").exists() {
                    return Some("/dev/net/tun is missing".into());
                }
                if which("ip").is_none() {
                    return Some("`ip` (iproute2) is not installed".into());
                }
                let probe = format!("sbt-{}-probe{}", std::process::id(), unique());
                let add = run(Command::new("ip").args(["netns", "add", &probe]), secs(10));
                if !add.success() {
                    return Some(format!("`ip netns add` fails: {}", add.stderr.trim()));
                }
                run(Command::new("ip").args(["netns", "del", &probe]), secs(10));
            }
            Need::Tool(tool) => {
                if which(tool).is_none() {
                    return Some(format!(
                        "`{tool}` is not installed (apt-get install iproute2 vde2 iperf3 iputils-ping)"
                    ));
                }
            }
        }
    }
    None
}

/// Returns from the calling test, printing `SKIP: <reason>`, unless the
/// machine has everything listed.
#[macro_export]
macro_rules! skip_unless {
    ($($need:expr),* $(,)?) => {
        if let Some(reason) = $crate::netns::skip_reason(&[$($need),*]) {
            eprintln!("SKIP: {reason}");
            return;
        }
    };
}

/// Shorthand for a duration in seconds.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The full path of `tool` on `PATH`.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes. Bounded in
/// time and in iterations.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let max_iters = timeout.as_millis() / 50 + 2;
    for _ in 0..max_iters {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// The outcome of a bounded command.
#[derive(Debug)]
pub struct Ran {
    /// Exit status, or `None` if it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
}

impl Ran {
    /// Exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// For assertion messages.
    pub fn describe(&self) -> String {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed at the deadline".to_string(),
        };
        format!(
            "{status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs `cmd` to completion, killing it if it outlives `timeout`. Output is
/// drained by threads so a chatty command cannot block on a full pipe.
pub fn run(cmd: &mut Command, timeout: Duration) -> Ran {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Ran {
                status: None,
                stdout: String::new(),
                stderr: format!("cannot spawn {cmd:?}: {e}"),
            };
        }
    };
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let status = wait_bounded(&mut child, timeout);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Ran {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Waits for `child` to exit, at most `timeout`.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    let max_iters = timeout.as_millis() / 10 + 2;
    for _ in 0..max_iters {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(_) => return None,
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.try_wait().ok().flatten()
}

/// Sends `signal` to a child we spawned (by its pid, never by name).
pub fn signal(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the pid of a child we have not yet reaped, so
        // the pid cannot have been recycled.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Stops a child: SIGTERM, a bounded grace period, then SIGKILL; reaps it.
pub fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    signal(child, libc::SIGTERM);
    if let Some(status) = wait_bounded(child, grace) {
        return Some(status);
    }
    let _ = child.kill();
    wait_bounded(child, secs(5))
}

/// A scratch directory, removed (recursively) on drop. Kept short because
/// Unix socket paths are limited to 107 bytes.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates `/tmp/sbt-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> TestDir {
        let path =
            std::env::temp_dir().join(format!("sbt-{}-{}-{tag}", std::process::id(), unique()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The last `max` bytes of a log file, for failure messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// A network namespace made for one test, deleted on drop (after killing
/// anything still running inside it, all of which this test started).
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `sbt-<pid>-<n>` with loopback up and IPv6 off (no router
    /// solicitations or DAD chatter on the test links).
    pub fn new() -> Netns {
        let name = format!("sbt-{}-{}", std::process::id(), unique());
        let add = run(Command::new("ip").args(["netns", "add", &name]), secs(10));
        assert!(add.success(), "ip netns add {name}: {}", add.describe());
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.exec(
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
            secs(10),
        );
        ns
    }

    /// The namespace's name, for `ip -n` and `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `argv` inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs `argv` inside the namespace, bounded.
    pub fn exec(&self, argv: &[&str], timeout: Duration) -> Ran {
        run(&mut self.command(argv), timeout)
    }

    /// `ip -n NS ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let r = run(
            Command::new("ip").arg("-n").arg(&self.name).args(args),
            secs(10),
        );
        assert!(
            r.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            r.describe()
        );
    }

    /// Whether interface `dev` exists in the namespace.
    pub fn has_link(&self, dev: &str) -> bool {
        run(
            Command::new("ip").args(["-n", &self.name, "link", "show", dev]),
            secs(5),
        )
        .success()
    }

    /// Gives `dev` the address `cidr` and brings it up.
    pub fn addr_up(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
        self.ip(&["link", "set", dev, "up"]);
    }

    /// Moves `dev` from this namespace into `to`.
    pub fn move_link(&self, dev: &str, to: &Netns) {
        self.ip(&["link", "set", dev, "netns", &to.name]);
    }

    /// A veth cable: `here` in this namespace, its peer `there` in `peer`.
    pub fn veth_to(&self, here: &str, peer: &Netns, there: &str) {
        self.ip(&[
            "link", "add", here, "type", "veth", "peer", "name", there, "netns", &peer.name,
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Safety net: the process guards normally stopped everything already.
        let pids = run(
            Command::new("ip").args(["netns", "pids", &self.name]),
            secs(5),
        );
        for pid in pids
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill(2); these processes live in a namespace this test
            // created and started every process in.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        run(
            Command::new("ip").args(["netns", "del", &self.name]),
            secs(10),
        );
    }
}

/// A background process (a peer such as `vde_plug2tap` or an `iperf3`
/// server), stopped on drop. Its output goes to a log file that is shown if
/// the test fails.
pub struct Proc {
    child: Child,
    label: String,
    log: PathBuf,
    // Held open so a peer that exits on stdin EOF (as VDE tools do in the
    // foreground) keeps running.
    _stdin: Option<ChildStdin>,
}

impl Proc {
    /// Spawns `cmd` with stdin an open pipe and output to `log`.
    pub fn spawn(label: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).expect("create log");
        let err = out.try_clone().expect("dup log");
        cmd.stdin(Stdio::piped()).stdout(out).stderr(err);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label} ({cmd:?}): {e}"));
        let stdin = child.stdin.take();
        Proc {
            child,
            label: label.to_string(),
            log,
            _stdin: stdin,
        }
    }

    /// Its process id (with `ip netns exec`, which execs, the command's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        log_tail(&self.log, 4000)
    }

    /// The child, for signals.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        stop(&mut self.child, secs(3));
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.label, self.log());
        }
    }
}
