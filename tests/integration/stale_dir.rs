//! A switch directory in use must be refused; one left behind by a killed
//! switch (stale sockets) must be taken over.

use crate::netns::{Need, Proc, TestDir, run, secs, wait_until};
use crate::skip_unless;
use crate::switchboard::{BIN, Switchboard, ports_of_kind};
use serde_json::Value;
use std::process::Command;

#[test]
fn stale_dir_reused_and_live_dir_refused() {
    skip_unless!(Need::Tool("vde_plug"));
    let dir = TestDir::new("stale");
    let sock = dir.join("sw");
    let mut first = Switchboard::start(None, &sock, &[], &[], dir.join("first.log"));

    // A second switch on the same directory must refuse, not steal it.
    let second = run(
        Command::new(BIN).arg("switch").arg("-s").arg(&sock),
        secs(10),
    );
    assert!(
        second.status.is_some_and(|s| !s.success()),
        "a second switch on a live directory must exit non-zero: {}",
        second.describe()
    );
    assert!(
        second.stderr.to_lowercase().contains("in use"),
        "the refusal must say the directory is in use: {}",
        second.describe()
    );
    assert!(first.running(), "the first switch died:\n{}", first.log());
    first.ports(); // still answering on its control socket

    // kill -9 leaves its sockets behind.
    first.kill9();
    assert!(
        sock.join("ctl").exists(),
        "SIGKILL should have left a stale ctl socket"
    );

    let mut third = Switchboard::start(None, &sock, &[], &[], dir.join("third.log"));
    assert!(
        ports_of_kind(&third.ports(), "vde").is_empty(),
        "a fresh switch has no vde ports"
    );

    // A real VDE2 client can attach to the reused directory.
    let url = format!("vde://{}", sock.display());
    let plug = Proc::spawn(
        "vde_plug",
        {
            let mut c = Command::new("vde_plug");
            c.args(["-D", "sbt-stale-probe", &url, "null://"]);
            c
        },
        dir.join("vde_plug.log"),
    );
    let attached = wait_until(secs(5), || {
        ports_of_kind(&third.ports(), "vde").iter().any(|p| {
            p.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.contains("sbt-stale-probe"))
        })
    });
    assert!(
        attached,
        "vde_plug did not show up as a port: {:#?}",
        third.ports()
    );

    // A clean shutdown removes the sockets, so nothing stale is left.
    drop(plug);
    let status = third.terminate(secs(5));
    assert!(
        status.is_some(),
        "switchboard ignored SIGTERM:\n{}",
        third.log()
    );
    assert!(
        !sock.join("ctl").exists(),
        "SIGTERM should remove DIR/ctl:\n{}",
        third.log()
    );
}

/// `-d -p FILE`, as scripts start vde_switch: the command returns once the
/// switch is ready in the background, the pid file names it, and SIGTERM
/// leaves nothing behind: no sockets, no pid file, no directory it made.
#[test]
fn daemon_mode_writes_pidfile_and_cleans_up() {
    let dir = TestDir::new("daemon");
    let sock = dir.join("sw");
    let pidfile = dir.join("sw.pid");
    let r = run(
        Command::new(BIN)
            .arg("switch")
            .arg("-s")
            .arg(&sock)
            .arg("-d")
            .arg("-p")
            .arg(&pidfile),
        secs(10),
    );
    assert!(r.success(), "switch -d failed: {}", r.describe());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("a pid");
    let alive = |pid: i32| unsafe { libc::kill(pid, 0) } == 0;
    assert!(alive(pid), "the daemon is not running");
    assert!(sock.join("ctl").exists() && sock.join("control").exists());
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert!(
        wait_until(secs(5), || !alive(pid)),
        "the daemon ignored SIGTERM"
    );
    assert!(!pidfile.exists(), "pid file left behind");
    assert!(!sock.exists(), "switch directory left behind");
}
