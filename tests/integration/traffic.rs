//! Traffic between two test namespaces: ping and an iperf3 TCP stream, with
//! their results parsed so the tests can assert on what crossed the wire.

use crate::netns::{Netns, Proc, Ran, secs, wait_until};
use serde_json::Value;
use std::path::Path;

/// Host A and host B of a two-host topology, on a /24 unique to the test.
pub struct Hosts<'a> {
    pub a: &'a Netns,
    pub b: &'a Netns,
    pub a_ip: String,
    pub b_ip: String,
}

impl<'a> Hosts<'a> {
    /// A at `.1` and B at `.2` of `10.77.<subnet>.0/24`.
    pub fn new(a: &'a Netns, b: &'a Netns, subnet: u8) -> Hosts<'a> {
        Hosts {
            a,
            b,
            a_ip: format!("10.77.{subnet}.1"),
            b_ip: format!("10.77.{subnet}.2"),
        }
    }

    /// Gives `tap_a` in A and `tap_b` in B their addresses and brings both
    /// up.
    pub fn address(&self, tap_a: &str, tap_b: &str) {
        self.a.addr_up(tap_a, &format!("{}/24", self.a_ip));
        self.b.addr_up(tap_b, &format!("{}/24", self.b_ip));
    }

    /// `ping -c COUNT -W 2` from A to B; returns how many replies came back.
    /// Panics if ping itself could not run.
    pub fn ping_a_to_b(&self, count: u32) -> (u32, String) {
        let count_s = count.to_string();
        let deadline = (count * 2 + 4).to_string();
        let r = self.a.exec(
            &[
                "ping", "-n", "-c", &count_s, "-i", "0.2", "-W", "2", "-w", &deadline, &self.b_ip,
            ],
            secs(u64::from(count) * 2 + 10),
        );
        let out = r.describe();
        let received = r
            .stdout
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(" packets transmitted, ")?;
                rest.split_whitespace().next()?.parse::<u32>().ok()
            })
            .unwrap_or_else(|| panic!("cannot parse ping output: {out}"));
        (received, out)
    }

    /// Asserts that `count` pings from A to B all get replies.
    pub fn assert_ping(&self, count: u32) {
        let (received, out) = self.ping_a_to_b(count);
        assert_eq!(
            received, count,
            "ping {} -> {}: {out}",
            self.a_ip, self.b_ip
        );
    }

    /// Runs an iperf3 TCP stream from A (client) to B (server, `-s -1`) for
    /// `seconds` and returns the bytes the server received
    /// (`end.sum_received.bytes`). Bounded: the server must listen within
    /// 5 s and the client must finish within `seconds + 20` s.
    pub fn iperf_a_to_b(&self, seconds: u32, logdir: &Path) -> u64 {
        let server = Proc::spawn(
            "iperf3 server",
            self.b.command(&["iperf3", "-s", "-1", "-p", "5201"]),
            logdir.join(format!("iperf3-server-{}.log", self.b.name())),
        );
        let listening = wait_until(secs(5), || {
            self.b
                .exec(&["ss", "-Hltn", "sport = :5201"], secs(5))
                .stdout
                .contains("5201")
        });
        assert!(listening, "iperf3 server did not listen: {}", server.log());
        let t = seconds.to_string();
        let r = self.a.exec(
            &["iperf3", "-c", &self.b_ip, "-p", "5201", "-t", &t, "-J"],
            secs(u64::from(seconds) + 20),
        );
        let doc: Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("iperf3 client printed no JSON ({e}): {}", r.describe()));
        if let Some(err) = doc.get("error") {
            panic!("iperf3 failed: {err}; server log:\n{}", server.log());
        }
        doc.pointer("/end/sum_received/bytes")
            .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
            .unwrap_or_else(|| {
                panic!(
                    "no end.sum_received.bytes in iperf3 output: {}",
                    r.describe()
                )
            })
    }
}

/// `ping -n -c COUNT` from `ns` to `dst` with `extra` options, bounded in
/// time (ping's own deadline, and the exec's).
pub fn ping(ns: &Netns, dst: &str, count: u32, extra: &[&str]) -> Ran {
    let count_s = count.to_string();
    let deadline = (count * 2 + 3).to_string();
    let mut argv = vec![
        "ping", "-n", "-c", &count_s, "-i", "0.2", "-W", "2", "-w", &deadline,
    ];
    argv.extend_from_slice(extra);
    argv.push(dst);
    ns.exec(&argv, secs(u64::from(count) * 2 + 10))
}

/// How many echo replies ping counted ("N received"). Panics if ping did not
/// get as far as its summary.
pub fn received(r: &Ran) -> u32 {
    r.stdout
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(" packets transmitted, ")?;
            rest.split_whitespace().next()?.parse::<u32>().ok()
        })
        .unwrap_or_else(|| panic!("cannot parse ping output: {}", r.describe()))
}
