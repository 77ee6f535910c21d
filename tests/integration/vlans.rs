//! 802.1Q VLANs inside one segment, against the kernel's own VLAN devices:
//! tap A untagged in VLAN 10, tap B untagged in VLAN 20, tap C a trunk
//! carrying both tagged, with `ip link ... type vlan` devices on it.

use crate::netns::{Need, Netns, Ran, TestDir, secs, tap_name};
use crate::skip_unless;
use crate::switchboard::{Switchboard, counter, rows, toml_path};
use serde_json::Value;

/// `ping -n -c COUNT` from `ns` to `dst`, bounded.
fn ping(ns: &Netns, dst: &str, count: u32) -> Ran {
    let c = count.to_string();
    let deadline = (count * 2 + 3).to_string();
    ns.exec(
        &[
            "ping", "-n", "-c", &c, "-i", "0.2", "-W", "1", "-w", &deadline, dst,
        ],
        secs(u64::from(count) * 2 + 10),
    )
}

/// Packets `dev` in `ns` has received, from `ip -s link`.
fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    let r = ns.exec(&["ip", "-s", "link", "show", dev], secs(5));
    assert!(r.success(), "ip -s link show {dev}: {}", r.describe());
    // "    RX:  bytes packets errors ..." then the numbers on the next line
    let mut lines = r.stdout.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with("RX:") {
            let nums = lines.next().unwrap_or_default();
            return nums
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cannot parse ip -s link: {}", r.stdout));
        }
    }
    panic!("no RX line in ip -s link: {}", r.stdout)
}

/// Turns IPv6 off in `ns`, so only the test's own IPv4 traffic moves.
fn no_ipv6(ns: &Netns) {
    for key in ["all", "default"] {
        ns.exec(
            &[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
            ],
            secs(5),
        );
    }
}

fn port_by_tap<'a>(ports: &'a [Value], tap: &str) -> &'a Value {
    ports
        .iter()
        .find(|p| {
            p.get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| d.ends_with(tap))
        })
        .unwrap_or_else(|| panic!("no port for {tap} in {ports:?}"))
}

/// Sends an ARP request tagged with VLAN `vid` out of `ifname` and waits
/// up to 3 s for the answer, which must come back tagged with the same
/// VLAN (seen in the packet socket's auxdata when the kernel moved the tag
/// out of the frame). Exits 0 when answered, 1 when not. Arguments:
/// ifname vid sender-ip target-ip.
const TAGGED_ARP: &str = r#"
import socket, struct, sys, time
ifn, vid, src, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((ifn, 0))
s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
mac = bytes([2, 0, 0, 0xc0, 0xff, vid & 0xff])
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, socket.inet_aton(src), bytes(6), socket.inet_aton(dst))
frame = (b"\xff" * 6 + mac + struct.pack("!HH", 0x8100, vid) + b"\x08\x06" + arp).ljust(64, b"\0")
s.settimeout(0.2)
end = time.time() + 3
while time.time() < end:
    s.send(frame)
    stop = time.time() + 0.5
    while time.time() < stop:
        try:
            data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(32))
        except socket.timeout:
            break
        tci = None
        for lvl, typ, val in anc:
            if lvl == 263 and typ == 8 and len(val) >= 20:
                status, _, _, _, _, t = struct.unpack("=IIIHHH", val[:18])
                if status & 0x10:
                    tci = t
        body = data[12:]
        if body[:2] == b"\x81\x00":
            tci = struct.unpack("!H", body[2:4])[0]
            body = body[4:]
        if data[:6] != mac or body[:2] != b"\x08\x06":
            continue
        op, spa = struct.unpack("!H", body[8:10])[0], body[16:20]
        if op == 2 and spa == socket.inet_aton(dst):
            if tci is None or tci & 0xfff != vid:
                print("answer in the wrong form, tci", tci)
                sys.exit(2)
            print("answered, tci", tci)
            sys.exit(0)
print("no answer")
sys.exit(1)
"#;

#[test]
fn tagged_and_untagged_ports() {
    skip_unless!(
        Need::Netns,
        Need::Tool("ping"),
        Need::Tool("sysctl"),
        Need::Tool("python3")
    );
    let dir = TestDir::new("vlans");
    let (s, a, b, c) = (Netns::new(), Netns::new(), Netns::new(), Netns::new());
    for ns in [&a, &b, &c] {
        no_ipv6(ns);
    }
    let (ta, tb, tc) = (tap_name('a'), tap_name('b'), tap_name('c'));
    let swdir = dir.join("sw");
    let config = format!(
        "control = {control}\n\n[segments.lan]\nvlans = [10, 20]\ntaps = [{{ name = \"{ta}\", vlan = 10 }}, {{ name = \"{tb}\", vlan = 20 }}, {{ name = \"{tc}\", tagged = [10, 20] }}]\n",
        control = toml_path(&swdir.join("control")),
    );
    let mut sw = Switchboard::run_file(
        Some(&s),
        &swdir,
        &config,
        &[&ta, &tb, &tc],
        dir.join("switchboard.log"),
    );
    s.move_link(&ta, &a);
    s.move_link(&tb, &b);
    s.move_link(&tc, &c);
    a.addr_up(&ta, "10.10.0.1/24");
    b.addr_up(&tb, "10.20.0.2/24");
    c.ip(&["link", "set", &tc, "up"]);
    let kernel_vlans = c
        .exec(
            &[
                "ip", "link", "add", "link", &tc, "name", "v10", "type", "vlan", "id", "10",
            ],
            secs(5),
        )
        .success();
    if kernel_vlans {
        c.addr_up("v10", "10.10.0.3/24");
        c.ip(&[
            "link", "add", "link", &tc, "name", "v20", "type", "vlan", "id", "20",
        ]);
        c.addr_up("v20", "10.20.0.3/24");
    } else {
        // A kernel without 802.1Q devices: C speaks tagged ARP itself.
        eprintln!("note: no kernel VLAN devices; the trunk side uses a raw socket");
    }

    // What the switch reports.
    let doc = sw.ctl_json(&["vlans"]);
    let vlans = rows(&doc, "vlans").expect("ctl --json vlans rows");
    let ids: Vec<u64> = vlans.iter().map(|v| counter(v, "vlan")).collect();
    assert_eq!(ids, vec![1, 10, 20], "{doc}");
    for v in &vlans[1..] {
        assert_eq!(v["untagged"].as_array().map(Vec::len), Some(1), "{v}");
        assert_eq!(v["tagged"].as_array().map(Vec::len), Some(1), "{v}");
    }
    let ports = sw.ports();
    assert_eq!(counter(port_by_tap(&ports, &ta), "untagged_vlan"), 10);
    assert_eq!(counter(port_by_tap(&ports, &tb), "untagged_vlan"), 20);
    let trunk = port_by_tap(&ports, &tc);
    assert_eq!(counter(trunk, "untagged_vlan"), 1);
    assert_eq!(trunk["tagged_vlans"], serde_json::json!([10, 20]));

    if kernel_vlans {
        // Untagged A reaches the trunk's VLAN 10 device, B its VLAN 20 one.
        let r = ping(&a, "10.10.0.3", 3);
        assert!(r.success(), "A -> C.10: {}\n{}", r.describe(), sw.log());
        let r = ping(&b, "10.20.0.3", 3);
        assert!(r.success(), "B -> C.20: {}\n{}", r.describe(), sw.log());
    } else {
        // A tagged ARP request from the trunk reaches A (untagged) in VLAN
        // 10 and B in VLAN 20, and each answer comes back tagged with its
        // own VLAN; asked in the wrong VLAN, neither answers.
        for (vid, target, answers) in [
            ("10", "10.10.0.1", true),
            ("20", "10.20.0.2", true),
            ("20", "10.10.0.1", false),
            ("10", "10.20.0.2", false),
        ] {
            let r = c.exec(
                &["python3", "-c", TAGGED_ARP, &tc, vid, "10.99.0.3", target],
                secs(15),
            );
            // 0: answered in the right form; 1: no answer at all
            let code = r.status.and_then(|s| s.code());
            assert_eq!(
                code,
                Some(if answers { 0 } else { 1 }),
                "tagged ARP in VLAN {vid} for {target}: {}\n{}",
                r.describe(),
                sw.log()
            );
            if answers {
                eprintln!("VLAN {vid}: {}", r.stdout.trim());
            }
        }
    }

    // A and B in one subnet but different VLANs: nothing crosses, and
    // B's tap sees none of A's ARP broadcasts.
    b.ip(&["addr", "add", "10.10.0.2/24", "dev", &tb]);
    let before_b = rx_packets(&b, &tb);
    let before_c = rx_packets(&c, &tc);
    let r = ping(&a, "10.10.0.2", 3);
    assert!(!r.success(), "A reached B across VLANs: {}", r.describe());
    let after_b = rx_packets(&b, &tb);
    let after_c = rx_packets(&c, &tc);
    assert_eq!(
        after_b, before_b,
        "B's tap received frames while A looked for it"
    );
    assert!(
        after_c >= before_c + 2,
        "A's ARP broadcasts did not reach the trunk ({before_c} -> {after_c})"
    );
    assert!(sw.running(), "switchboard died:\n{}", sw.log());
}
