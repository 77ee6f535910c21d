//! The host uplink as an unprivileged user: switchboard and `switchboard
//! ns` both run as uid 65534, and a namespace on a network whose way out is
//! the host uplink gets a DHCP lease, resolves names through the network's
//! DNS forwarder, talks TCP (1 MiB each way) and UDP to servers this test
//! runs on the host's loopback (reached at the gateway, 10.0.2.2, as in
//! QEMU's user networking), sees a refused connection as refused, makes
//! many short connections without the daemon leaking descriptors, and
//! serves a host port forwarded into it.
//!
//! The daemon runs in a network namespace of the test's own, whose
//! loopback is "the host": the servers are threads of this test that enter
//! that namespace before binding 127.0.0.1, and an address on its loopback
//! (192.0.2.99) stands for a remote host to ping, so nothing leaves the
//! machine. Ping sockets are allowed there first (the ICMP echo relay), then
//! forbidden (echo requests answered "administratively prohibited"). The
//! commands inside the guest namespace are bash's /dev/tcp and /dev/udp,
//! busybox's nc and nslookup, and ping.

use crate::dhcp_dns::{UPSTREAM_ANSWER, UpstreamDns};
use crate::netns::{Need, Netns, Proc, secs, wait_until};
use crate::ns::{NOBODY, ns_command, open_dir, unprivileged_skip};
use crate::skip_unless;
use crate::switchboard::{BIN, ctl, listens, rows, toml_path};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Test servers on 127.0.0.1, stopped when dropped.
struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Reads 1 MiB, then writes 1 MiB of 'b' and closes.
    bulk: u16,
    /// Reads whatever comes, then closes.
    short: u16,
    /// Echoes datagrams.
    udp: u16,
    /// A port nobody listens on.
    closed: u16,
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    serve: fn(TcpStream),
) -> std::thread::JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(300);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    std::thread::spawn(move || serve(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

impl Servers {
    fn start() -> Servers {
        let stop = Arc::new(AtomicBool::new(false));
        let bulk = TcpListener::bind("127.0.0.1:0").unwrap();
        let short = TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        let ports = (
            bulk.local_addr().unwrap().port(),
            short.local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
        );
        let mut threads = vec![
            accept_loop(bulk, stop.clone(), |mut s| {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0;
                while got < MIB {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                let out = vec![b'b'; MIB];
                let _ = s.write_all(&out);
            }),
            accept_loop(short, stop.clone(), |mut s| {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf);
            }),
        ];
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop2 = stop.clone();
        threads.push(std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(300);
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                if let Ok((n, from)) = udp.recv_from(&mut buf) {
                    let mut reply = b"echo:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = udp.send_to(&reply, from);
                }
            }
        }));
        Servers {
            stop,
            threads,
            bulk: ports.0,
            short: ports.1,
            udp: ports.2,
            closed: closed_port,
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Runs `f` on a thread that first enters network namespace `ns`, so the
/// sockets it binds (and the threads it starts) live there.
fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{}", ns.name());
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("thread in the namespace")
}

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The rest of the first line of `text` that starts with `tag `.
fn tagged<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(tag)?.strip_prefix(' '))
}

#[test]
fn an_unprivileged_namespace_reaches_the_host_through_the_uplink() {
    skip_unless!(Need::Tool("busybox"), Need::Tool("bash"), Need::Tool("ip"));
    if let Some(reason) = unprivileged_skip() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = open_dir("uplink");
    let swdir = dir.join("sw");
    std::fs::create_dir_all(&swdir).unwrap();
    std::fs::set_permissions(&swdir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // "The host": a namespace with only loopback, where ping sockets are
    // allowed for now and 192.0.2.99 answers pings.
    let host = Netns::new();
    host.ip(&["addr", "add", "192.0.2.99/32", "dev", "lo"]);
    let allow_ping = |range: &str| {
        let r = host.exec(
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.ping_group_range={range}"),
            ],
            secs(10),
        );
        assert!(r.success(), "sysctl: {}", r.describe());
    };
    allow_ping("0 2147483647");
    let upstream = in_netns(&host, UpstreamDns::start);
    let servers = in_netns(&host, Servers::start);
    let forward_port = in_netns(&host, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let config = format!(
        r#"control = {control}

[segments.lan]
vde = {vde}
mode = "0666"
dirmode = "0777"

[networks.lab]
mode = "nat"
segment = "lan"
address = "10.0.2.2/24"
domain = "lab"
dhcp = {{ range = "10.0.2.15-10.0.2.30", lease_file = {leases} }}
dns_options = {{ upstream = ["{upstream}"] }}
uplink = {{ host = true, loopback = true, forwards = [{{ proto = "tcp", listen = "127.0.0.1:{forward_port}", to = "10.0.2.15:8022" }}] }}
"#,
        control = toml_path(&swdir.join("control")),
        vde = toml_path(&swdir.join("lan")),
        leases = toml_path(&swdir.join("lab.leases")),
        upstream = upstream.addr,
    );
    let file = dir.join("net.toml");
    std::fs::write(&file, &config).unwrap();
    // The daemon as uid 65534 too, in the host namespace.
    let file_s = file.to_str().unwrap();
    let cmd = host.command(&[
        "setpriv",
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        BIN,
        "run",
        file_s,
    ]);
    let mut sw = Proc::spawn("switchboard run (uid 65534)", cmd, dir.join("sw.log"));
    let pid = sw.pid();
    assert!(
        wait_until(secs(10), || !sw.running()
            || listens(pid, &swdir.join("control"))),
        "switchboard did not start: {}",
        sw.log()
    );
    assert!(sw.running(), "switchboard exited: {}", sw.log());
    let fds_before = fd_count(pid);

    let script = format!(
        r#"
echo "ADDR $(ip -4 -o addr show eth0 | awk '{{print $4}}')"
echo "DNS $(busybox nslookup www.example.test 2>&1 | grep -A1 'Name:' | tail -n1 | awk '{{print $2}}')"
exec 3<>/dev/tcp/10.0.2.2/{bulk} && {{ head -c {MIB} /dev/zero >&3; echo "TCP $(cat <&3 | tr -d '\n' | wc -c) $(cat /dev/null)"; exec 3<&-; }}
if exec 4<>/dev/tcp/10.0.2.2/{closed}; then echo "REFUSED no"; else echo "REFUSED yes"; fi 2>/dev/null
exec 5<>/dev/udp/10.0.2.2/{udp} && {{ echo hello-udp >&5; echo "UDP $(timeout 5 head -c 15 <&5)"; exec 5<&-; }}
i=0; ok=0
while [ $i -lt 100 ]; do
  if exec 6<>/dev/tcp/10.0.2.2/{short}; then echo x >&6; cat <&6 >/dev/null; exec 6<&-; ok=$((ok+1)); fi
  i=$((i+1))
done
echo "SHORT $ok"
ping -c1 -W3 192.0.2.99 >/dev/null 2>&1 && echo "PING ok" || echo "PING failed"
echo from-guest | busybox nc -l -p 8022 &
echo LISTENING
wait
echo DONE
"#,
        bulk = servers.bulk,
        closed = servers.closed,
        udp = servers.udp,
        short = servers.short,
    );
    let url = format!("vde://{}", swdir.join("lan").display());
    let log = dir.join("ns.log");
    let mut inside = Proc::spawn(
        "switchboard ns (uid 65534)",
        ns_command(dir.path(), &[&url, "--", "bash", "-c", &script]),
        log.clone(),
    );
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(secs(90), || read_log().contains("LISTENING")
            || !inside.running()),
        "the namespace's script did not get to its server: {}\n{}",
        read_log(),
        sw.log()
    );
    // The forwarded host port reaches the server inside the namespace (it
    // may need a moment to listen: a refused attempt closes at once).
    let got = in_netns(&host, move || {
        let mut got = String::new();
        let end = Instant::now() + secs(10);
        while Instant::now() < end && !got.contains("from-guest") {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", forward_port)) {
                s.set_read_timeout(Some(secs(3))).unwrap();
                let _ = s.read_to_string(&mut got);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        got
    });
    assert!(
        wait_until(secs(15), || !inside.running()),
        "the namespace did not finish: {}",
        read_log()
    );
    let out = read_log();
    assert_eq!(
        got.trim(),
        "from-guest",
        "host forward: {out}\n{}",
        sw.log()
    );
    assert!(out.contains("DONE"), "{out}");

    // Addressed by DHCP, first in the range.
    assert_eq!(tagged(&out, "ADDR"), Some("10.0.2.15/24"), "{out}");
    // A name resolved by the network's forwarder, answered upstream.
    assert_eq!(
        tagged(&out, "DNS"),
        Some(UPSTREAM_ANSWER.to_string().as_str()),
        "{out}"
    );
    // 1 MiB out, 1 MiB back.
    assert_eq!(
        tagged(&out, "TCP").map(str::trim),
        Some(MIB.to_string().as_str()),
        "{out}\n{}",
        sw.log()
    );
    assert_eq!(tagged(&out, "REFUSED"), Some("yes"), "{out}");
    assert_eq!(tagged(&out, "UDP"), Some("echo:hello-udp"), "{out}");
    assert_eq!(tagged(&out, "SHORT"), Some("100"), "{out}");
    // ICMP echo relayed through a ping socket.
    assert_eq!(tagged(&out, "PING"), Some("ok"), "{out}\n{}", sw.log());

    // Where ping sockets are forbidden, the guest is told so at once.
    allow_ping("1 0");
    let r = crate::netns::run(
        &mut ns_command(
            dir.path(),
            &[&url, "--", "ping", "-n", "-c1", "-W3", "192.0.2.99"],
        ),
        secs(30),
    );
    assert!(!r.success(), "ping should fail: {}", r.describe());
    assert!(
        r.stdout.contains("Packet filtered") || r.stdout.contains("Prohibited"),
        "ping should report the prohibition: {}",
        r.describe()
    );

    // The flows show in conntrack, and the daemon holds no extra sockets
    // once they are over.
    let r = ctl(&swdir, &["--json", "routers"]);
    assert!(r.success(), "{}", r.describe());
    let doc: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let lab = rows(&doc, "routers").unwrap().remove(0);
    let opened = lab["uplink"]["tcp_opened"].as_u64().unwrap_or(0);
    assert!(opened >= 101, "uplink counters: {lab:#}");
    assert!(
        lab["uplink"]["icmp_prohibited"].as_u64().unwrap_or(0) >= 1,
        "{lab:#}"
    );
    let settled = wait_until(secs(10), || fd_count(pid) <= fds_before + 4);
    assert!(
        settled,
        "descriptors: {fds_before} before, {} after",
        fd_count(pid)
    );
    // The UDP flow is still tracked (30 s): the guest, what it dialled and
    // the host socket's peer, the loopback.
    let r = ctl(&swdir, &["--json", "conntrack", "lab"]);
    assert!(r.success(), "{}", r.describe());
    let doc: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let flows = rows(&doc, "conntrack").unwrap();
    assert!(
        flows.iter().any(|f| f["proto"] == "udp"
            && f["kind"] == "host"
            && f["inside"]
                .as_str()
                .is_some_and(|a| a.starts_with("10.0.2.15:"))
            && f["outside"] == format!("10.0.2.2:{}", servers.udp).as_str()
            && f["translated"] == format!("127.0.0.1:{}", servers.udp).as_str()),
        "no uplink UDP flow in conntrack: {flows:#?}"
    );
    drop(sw);
    drop(host);
}

/// `switchboard run` with no file, as an ordinary user: the embedded
/// default network gives a namespace an address by DHCP and a way out to
/// the host's loopback at 10.0.2.2.
#[test]
fn the_default_network_needs_no_root() {
    skip_unless!(Need::Tool("bash"), Need::Tool("ip"));
    if let Some(reason) = unprivileged_skip() {
        eprintln!("SKIP: {reason}");
        return;
    }
    let dir = open_dir("uplinkdef");
    let runtime = dir.join("rt");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o777)).unwrap();
    let host = Netns::new();
    let servers = in_netns(&host, Servers::start);
    let xdg = format!("XDG_RUNTIME_DIR={}", runtime.display());
    let cmd = host.command(&[
        "setpriv",
        "--reuid",
        NOBODY,
        "--regid",
        NOBODY,
        "--clear-groups",
        "env",
        &xdg,
        BIN,
        "run",
    ]);
    let mut sw = Proc::spawn("switchboard run (default)", cmd, dir.join("sw.log"));
    let base = runtime.join("switchboard");
    let pid = sw.pid();
    assert!(
        wait_until(secs(10), || !sw.running()
            || listens(pid, &base.join("control"))),
        "switchboard did not start: {}",
        sw.log()
    );
    assert!(sw.running(), "switchboard exited: {}", sw.log());
    // It says how to attach QEMU, and where the network leads.
    let log = sw.log();
    assert!(log.contains("-netdev vde,id=net0,sock="), "{log}");
    assert!(log.contains("the host uplink"), "{log}");
    let url = format!("vde://{}", base.join("default").display());
    let script = format!(
        "echo \"ADDR $(ip -4 -o addr show eth0 | awk '{{print $4}}')\"; \
         exec 3<>/dev/tcp/10.0.2.2/{short} && echo x >&3 && cat <&3 >/dev/null && echo TCP-OK",
        short = servers.short
    );
    let r = crate::netns::run(
        &mut ns_command(dir.path(), &[&url, "--", "bash", "-c", &script]),
        secs(40),
    );
    assert!(r.success(), "{}\n{}", r.describe(), sw.log());
    assert_eq!(
        tagged(&r.stdout, "ADDR"),
        Some("10.0.2.15/24"),
        "{}",
        r.describe()
    );
    assert!(r.stdout.contains("TCP-OK"), "{}", r.describe());
    assert!(
        r.stderr.contains("via 10.0.2.2, dns 10.0.2.2"),
        "{}",
        r.describe()
    );
    drop(sw);
    drop(host);
}
