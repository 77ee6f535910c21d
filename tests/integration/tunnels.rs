//! UDP tunnels (`udp = [...]` on a segment) between switchboards on three
//! "hosts", plain and sealed with a pre-shared key.
//!
//! Topology, a line so that there is no loop:
//!
//! ```text
//!  vm1            vm2            vm3          VM namespaces, 10.79.0.N/24
//!   | tap          | tap          | tap
//!  h1 ==========  h2 ==========  h3          host namespaces, each running
//!     10.78.12.0/24   10.78.23.0/24          its own `switchboard run`
//!     (veth; tunnel   (veth; tunnel
//!      port 5012)      port 5023)
//! ```
//!
//! Each host's segment `lan` has a tap (created by its switchboard, then
//! moved into the VM namespace; the daemon keeps its descriptor) and UDP
//! tunnels to its neighbours over a veth link, so vm1's frames to vm3 cross
//! two tunnels and h2's switch. The veth links keep the default 1500-byte
//! MTU: full-size frames become fragmented datagrams, which must work too.
//!
//! Datagrams with a forged source (to test what a sealed tunnel refuses)
//! are sent from a raw socket opened inside h1's namespace by a thread of
//! the test that joined it with `setns`.

use crate::netns::{Need, Netns, TestDir, run, secs, tap_name, wait_until};
use crate::skip_unless;
use crate::switchboard::{Switchboard, counter, ports_of_kind, rows, toml_path};
use crate::traffic::Hosts;
use crate::traffic::{ping, received};
use serde_json::Value;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use switchboard_plugs::sealed::{Key, Sealer};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// The underlay address of host `h` (1..=3) on the link to host `peer`.
fn underlay(h: u8, peer: u8) -> Ipv4Addr {
    let link = 10 * h.min(peer) + h.max(peer);
    Ipv4Addr::new(10, 78, link, h)
}

/// The tunnel's UDP port on the link between `a` and `b`.
fn tunnel_port(a: u8, b: u8) -> u16 {
    5000 + 10 * u16::from(a.min(b)) + u16::from(a.max(b))
}

/// The VM address of vm `n`.
fn vm_ip(n: u8) -> String {
    format!("10.79.0.{n}")
}

/// Three hosts in a line, each with a VM. Fields drop in order: the
/// daemons first, the scratch directory last.
struct Line {
    sw: Vec<Option<Switchboard>>,
    vms: Vec<Netns>,
    hosts: Vec<Netns>,
    dir: TestDir,
}

impl Line {
    /// Builds the line; with `sealed`, each link gets its own key file.
    fn new(tag: &str, sealed: bool) -> Line {
        let dir = TestDir::new(tag);
        let hosts: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
        let vms: Vec<Netns> = (0..3).map(|_| Netns::new()).collect();
        // veth h1-h2 and h2-h3, created straight into the namespaces.
        for (a, b) in [(1u8, 2u8), (2, 3)] {
            let (na, nb) = (&hosts[usize::from(a - 1)], &hosts[usize::from(b - 1)]);
            let (ia, ib) = (format!("to{b}"), format!("to{a}"));
            na.veth_to(&ia, nb, &ib);
            na.addr_up(&ia, &format!("{}/24", underlay(a, b)));
            nb.addr_up(&ib, &format!("{}/24", underlay(b, a)));
        }
        for (a, b) in [(1u8, 2u8), (2, 3)] {
            let key = format!("{:02x}", a * 16 + b).repeat(32);
            std::fs::write(dir.join(format!("link{a}{b}.key")), format!("{key}\n"))
                .expect("write key file");
        }
        let mut sw = Vec::new();
        for h in 1..=3u8 {
            let tap = tap_name('u');
            let swdir = dir.join(format!("h{h}"));
            let mut tunnels = Vec::new();
            for peer in [h - 1, h + 1].into_iter().filter(|p| (1..=3).contains(p)) {
                let port = tunnel_port(h, peer);
                let key = if sealed {
                    let f = dir.join(format!("link{}{}.key", h.min(peer), h.max(peer)));
                    format!(", key_file = {}", toml_path(&f))
                } else {
                    String::new()
                };
                tunnels.push(format!(
                    "{{ local = \"{}:{port}\", remote = \"{}:{port}\"{key} }}",
                    underlay(h, peer),
                    underlay(peer, h)
                ));
            }
            let config = format!(
                "control = {control}\n\n[segments.lan]\ntaps = [\"{tap}\"]\nudp = [{tunnels}]\n",
                control = toml_path(&swdir.join("control")),
                tunnels = tunnels.join(", "),
            );
            let host = &hosts[usize::from(h - 1)];
            let vm = &vms[usize::from(h - 1)];
            let s = Switchboard::run_file(
                Some(host),
                &swdir,
                &config,
                &[&tap],
                dir.join(format!("h{h}.log")),
            );
            host.move_link(&tap, vm);
            vm.addr_up(&tap, &format!("{}/24", vm_ip(h)));
            sw.push(Some(s));
        }
        Line {
            sw,
            vms,
            hosts,
            dir,
        }
    }

    /// Host `h`'s switchboard (1-based).
    fn sw(&self, h: u8) -> &Switchboard {
        self.sw[usize::from(h - 1)]
            .as_ref()
            .expect("that switchboard was stopped")
    }

    /// VM `n`'s namespace (1-based).
    fn vm(&self, n: u8) -> &Netns {
        &self.vms[usize::from(n - 1)]
    }

    /// Hosts for ping and iperf3 from vm `a` to vm `b`.
    fn vms(&self, a: u8, b: u8) -> Hosts<'_> {
        Hosts {
            a: self.vm(a),
            b: self.vm(b),
            a_ip: vm_ip(a),
            b_ip: vm_ip(b),
        }
    }

    /// Host `h`'s tunnel port row towards host `peer`.
    fn tunnel_row(&self, h: u8, peer: u8) -> Value {
        let remote = format!("{}:{}", underlay(peer, h), tunnel_port(h, peer));
        let ports = self.sw(h).ports();
        ports_of_kind(&ports, "udp")
            .into_iter()
            .find(|p| {
                p["description"]
                    .as_str()
                    .is_some_and(|d| d.contains(&format!("-> {remote}")))
            })
            .cloned()
            .unwrap_or_else(|| panic!("h{h} has no udp port to {remote}: {ports:#?}"))
    }
}

/// vm1 reaches vm3 across both tunnels: pings, full-size pings (1514-byte
/// frames, fragmented datagrams on the 1500-byte underlay) and an iperf3
/// TCP stream; h2's two tunnel ports both carried traffic.
fn assert_line_carries_traffic(t: &Line) {
    let r = ping(t.vm(1), &vm_ip(3), 5, &[]);
    assert_eq!(received(&r), 5, "vm1 -> vm3: {}", r.describe());
    let r = ping(t.vm(1), &vm_ip(3), 3, &["-s", "1472", "-M", "do"]);
    assert_eq!(
        received(&r),
        3,
        "full-size frames vm1 -> vm3: {}",
        r.describe()
    );
    let r = ping(t.vm(2), &vm_ip(1), 2, &[]);
    assert_eq!(received(&r), 2, "vm2 -> vm1: {}", r.describe());
    let bytes = t.vms(1, 3).iperf_a_to_b(3, t.dir.path());
    assert!(
        bytes >= 5_000_000,
        "iperf3 moved only {bytes} bytes over two tunnels in 3 s"
    );
    for peer in [1, 3] {
        let row = t.tunnel_row(2, peer);
        assert!(
            counter(&row, "rx_frames") > 1000 && counter(&row, "tx_frames") > 1000,
            "h2's tunnel to h{peer} carried too little: {row}"
        );
    }
}

#[test]
fn plain_tunnels_join_three_hosts_and_a_silent_remote_harms_no_one() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let mut t = Line::new("tunplain", false);
    assert_line_carries_traffic(&t);
    assert!(
        t.sw(2).ports()[0]["description"].is_string(),
        "ports have descriptions"
    );

    // h3's switchboard stops: its tunnel end goes silent (the host answers
    // with ICMP port unreachable).
    let mut h3 = t.sw[2].take().expect("running");
    h3.terminate(secs(5))
        .expect("h3's switchboard stops on SIGTERM");
    let before = t.tunnel_row(2, 3);
    // vm1 still tries vm3 (h2 still knows its MAC behind the tunnel)...
    let r = ping(t.vm(1), &vm_ip(3), 3, &[]);
    assert_eq!(
        received(&r),
        0,
        "vm3 answered with h3 down: {}",
        r.describe()
    );
    // ...and the rest of the segment does not notice.
    let r = ping(t.vm(1), &vm_ip(2), 5, &[]);
    assert_eq!(received(&r), 5, "vm1 -> vm2 with h3 down: {}", r.describe());
    let r = ping(t.vm(2), &vm_ip(1), 3, &["-s", "1472"]);
    assert_eq!(received(&r), 3, "vm2 -> vm1 with h3 down: {}", r.describe());
    // The counters of h2's tunnel to h3 tell the story: out, nothing in.
    let after = t.tunnel_row(2, 3);
    assert!(
        counter(&after, "tx_frames") >= counter(&before, "tx_frames") + 3,
        "h2 sent nothing towards the silent h3: {before} then {after}"
    );
    assert_eq!(
        counter(&after, "rx_frames"),
        counter(&before, "rx_frames"),
        "frames came from a stopped switchboard: {before} then {after}"
    );
    // h2 is still running with both tunnel ports.
    assert_eq!(ports_of_kind(&t.sw(2).ports(), "udp").len(), 2);
    let log = t.sw(2).log();
    assert!(!log.contains("unplugging"), "h2 unplugged a port:\n{log}");
    drop(h3);
}

/// An Ethernet frame: an ARP request from `mac` (10.79.0.99) for vm2, so
/// that if it ever reached h2's segment, h2 would learn `mac`.
fn arp_probe(mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[10, 79, 0, 99]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 79, 0, 2]);
    f.resize(60, 0);
    f
}

/// `frame` sealed under `key` in a session of the test's own, its counter
/// at the wall clock (as a freshly started switchboard's would be).
fn seal_with(key: &Key, frame: &[u8], session: [u8; 4]) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let mut s = Sealer::new(key, session, now);
    let mut out = vec![0u8; frame.len() + switchboard_plugs::sealed::OVERHEAD];
    let n = s.seal(frame, &mut out).expect("room");
    out.truncate(n);
    out
}

/// Sends `payloads` as UDP datagrams from `src` to `dst`, from inside
/// `ns`, with a raw socket: the source address and port may belong to a
/// socket that is bound there already (a tunnel's), which is the point.
fn send_spoofed(ns: &Netns, src: SocketAddrV4, dst: SocketAddrV4, payloads: &[Vec<u8>]) {
    let path = format!("/run/netns/{}", ns.name());
    let payloads = payloads.to_vec();
    let result = std::thread::spawn(move || -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let nsfile = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: setns(2) on a namespace file we opened; it changes only
        // this (short-lived) thread's network namespace.
        if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            return Err(format!("raw socket: {}", std::io::Error::last_os_error()));
        }
        let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        to.sin_family = libc::AF_INET as libc::sa_family_t;
        to.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
        let mut outcome = Ok(());
        for p in &payloads {
            // IPv4 header (the kernel fills in the checksum), then UDP with
            // no checksum (allowed over IPv4).
            let total = 20 + 8 + p.len();
            let mut pkt = Vec::with_capacity(total);
            pkt.extend_from_slice(&[0x45, 0]);
            pkt.extend_from_slice(&(total as u16).to_be_bytes());
            pkt.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
            pkt.extend_from_slice(&src.ip().octets());
            pkt.extend_from_slice(&dst.ip().octets());
            pkt.extend_from_slice(&src.port().to_be_bytes());
            pkt.extend_from_slice(&dst.port().to_be_bytes());
            pkt.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
            pkt.extend_from_slice(&[0, 0]);
            pkt.extend_from_slice(p);
            // SAFETY: `pkt` and `to` are live for the call.
            let rc = unsafe {
                libc::sendto(
                    fd,
                    pkt.as_ptr().cast(),
                    pkt.len(),
                    0,
                    std::ptr::from_ref(&to).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                outcome = Err(format!("sendto: {}", std::io::Error::last_os_error()));
                break;
            }
        }
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(fd) };
        outcome
    })
    .join()
    .expect("injecting thread panicked");
    result.unwrap_or_else(|e| panic!("cannot inject datagrams in {}: {e}", ns.name()));
}

/// Whether host `h`'s segment learned `mac`.
fn learned(t: &Line, h: u8, mac: &str) -> bool {
    let doc = t.sw(h).ctl_json(&["macs"]);
    rows(&doc, "macs")
        .unwrap_or_default()
        .iter()
        .any(|r| r["mac"].as_str() == Some(mac))
}

#[test]
fn sealed_tunnels_carry_traffic_and_drop_what_the_key_did_not_make() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("iperf3"),
        Need::Tool("ss")
    );
    let t = Line::new("tunseal", true);
    assert_line_carries_traffic(&t);
    let row = t.tunnel_row(2, 1);
    assert!(
        row["description"]
            .as_str()
            .is_some_and(|d| d.ends_with("sealed")),
        "{row}"
    );
    for h in 1..=3 {
        let log = t.sw(h).log();
        assert!(
            !log.contains("tunnel refused datagrams"),
            "h{h} refused datagrams of its honest peers:\n{log}"
        );
    }

    // Datagrams "from h1's tunnel" sealed with the wrong key: h2 counts
    // them as forged, and their frame (an ARP request) never reaches the
    // segment, so its source MAC is never learned.
    let src = SocketAddrV4::new(underlay(1, 2), tunnel_port(1, 2));
    let dst = SocketAddrV4::new(underlay(2, 1), tunnel_port(1, 2));
    let mac = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    let mac_s = "02:de:ad:be:ef:01";
    let frame = arp_probe(mac);
    let wrong = Key::from_bytes([0x66; 32]);
    let rx_before = counter(&t.tunnel_row(2, 1), "rx_frames");
    let forged: Vec<Vec<u8>> = (0..50u8)
        .map(|i| seal_with(&wrong, &frame, [0x7e, 0x57, 0, i]))
        .collect();
    send_spoofed(&t.hosts[0], src, dst, &forged);
    // The totals are logged at most every 5 s: the first line may show
    // part of them.
    let counted = wait_until(secs(12), || t.sw(2).log().contains("forged=50 "));
    assert!(
        counted,
        "h2 did not report 50 forged datagrams:\n{}",
        t.sw(2).log()
    );
    assert!(
        !learned(&t, 2, mac_s),
        "a forged frame reached h2's segment"
    );
    // Received frames did not grow by the forgeries (a stray neighbour
    // probe from vm1 may have crossed meanwhile).
    let rx_after = counter(&t.tunnel_row(2, 1), "rx_frames");
    assert!(
        rx_after < rx_before + 10,
        "forged datagrams counted as received frames: {rx_before} then {rx_after}"
    );
    // Traffic over the tunnel is unharmed.
    let r = ping(t.vm(1), &vm_ip(3), 3, &[]);
    assert_eq!(
        received(&r),
        3,
        "vm1 -> vm3 after forgeries: {}",
        r.describe()
    );

    // The same frame sealed with the right key does get in, which shows
    // the injection itself works. (It starts a session of its own that h2
    // then follows, so this comes last.)
    let text = std::fs::read_to_string(t.dir.join("link12.key")).expect("key file");
    let right = Key::from_hex(&text).expect("key");
    send_spoofed(
        &t.hosts[0],
        src,
        dst,
        &[seal_with(&right, &frame, [0x7e, 0x57, 1, 0])],
    );
    assert!(
        wait_until(secs(5), || learned(&t, 2, mac_s)),
        "an authentic datagram from h1's address did not reach h2's segment"
    );
}

#[test]
fn a_bad_key_file_stops_start_up_naming_it() {
    let dir = TestDir::new("tunkey");
    let key = dir.join("short.key");
    std::fs::write(&key, "0123456789abcdef\n").expect("write key");
    let config = format!(
        "control = {}\n[segments.lan]\nudp = [{{ local = \"127.0.0.1:0\", remote = \"127.0.0.1:5999\", key_file = {} }}]\n",
        toml_path(&dir.join("control")),
        toml_path(&key)
    );
    let file = dir.join("sb.toml");
    std::fs::write(&file, config).expect("write config");
    let r = run(Command::new(BIN).arg("run").arg(&file), secs(10));
    assert!(!r.success(), "started with a bad key: {}", r.describe());
    let text = format!("{}{}", r.stdout, r.stderr);
    // The local port 0 is refused first; fix it and the key is next.
    assert!(text.contains("segments.lan.udp[0]"), "{}", r.describe());
    let config = std::fs::read_to_string(&file)
        .unwrap()
        .replace("127.0.0.1:0", "127.0.0.1:5998");
    std::fs::write(&file, config).expect("write config");
    let r = run(Command::new(BIN).arg("run").arg(&file), secs(10));
    assert!(!r.success(), "started with a bad key: {}", r.describe());
    let text = format!("{}{}", r.stdout, r.stderr);
    assert!(
        text.contains("segments.lan.udp[0].key_file")
            && text.contains("short.key")
            && text.contains("64 hex digits"),
        "{}",
        r.describe()
    );
}
