//! In-memory tests of the switching core: simulated hosts, explicit times.

use super::*;
use crate::mac::MacAddr;
use crate::time::Instant;
use std::time::Duration;

fn host(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x00, 0x00, n])
}

/// An Ethernet II frame from `src` to `dst` with `payload_len` bytes of
/// payload (an EtherType reserved for local experiments).
fn frame(dst: MacAddr, src: MacAddr, payload_len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload_len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(14 + payload_len, 0xab);
    f
}

fn tagged(dst: MacAddr, src: MacAddr, vid: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x81, 0x00]);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(64, 0);
    f
}

struct Rig {
    engine: Engine,
    seg: SegmentId,
    ports: Vec<PortId>,
    out: Egress,
}

impl Rig {
    fn new(config: SegmentConfig, nports: usize) -> Rig {
        let mut engine = Engine::new();
        let seg = engine.add_segment(config).unwrap();
        let ports = (0..nports)
            .map(|_| {
                engine
                    .add_port(
                        seg,
                        PortRequest {
                            kind: "test",
                            ..Default::default()
                        },
                    )
                    .unwrap()
            })
            .collect();
        Rig {
            engine,
            seg,
            ports,
            out: Egress::default(),
        }
    }

    fn send(&mut self, at: Instant, from: usize, f: &[u8]) -> (Forwarding, Vec<usize>) {
        let fwd = self.engine.handle(at, self.ports[from], f, &mut self.out);
        let mut to: Vec<usize> = self
            .out
            .ports()
            .iter()
            .map(|p| self.ports.iter().position(|q| q == p).unwrap())
            .collect();
        to.sort();
        (fwd, to)
    }

    fn counters(&self, port: usize) -> PortCounters {
        *self.engine.port(self.ports[port]).unwrap().counters()
    }

    fn seg_counters(&self) -> SegmentCounters {
        *self.engine.segment(self.seg).unwrap().counters()
    }
}

const T0: Instant = Instant::ZERO;

#[test]
fn unknown_unicast_floods_then_learned_goes_to_one_port() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 4);
    // host 1 on port 0 talks to host 2, not yet known: flooded, not back to 0
    assert_eq!(
        r.send(T0, 0, &frame(host(2), host(1), 46)),
        (Forwarding::Flood, vec![1, 2, 3])
    );
    // host 2 answers from port 2: host 1 is known, so only port 0 gets it
    assert_eq!(
        r.send(T0, 2, &frame(host(1), host(2), 46)),
        (Forwarding::Unicast, vec![0])
    );
    // and now host 2 is known too
    assert_eq!(
        r.send(T0, 0, &frame(host(2), host(1), 46)),
        (Forwarding::Unicast, vec![2])
    );
    let s = r.seg_counters();
    assert_eq!((s.flooded_unknown, s.unicast), (1, 2));
}

#[test]
fn broadcast_and_multicast_flood_to_all_but_ingress() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 3);
    r.send(T0, 1, &frame(host(9), host(9), 46)); // nonsense but learns nothing harmful
    assert_eq!(
        r.send(T0, 1, &frame(MacAddr::BROADCAST, host(1), 46)).1,
        vec![0, 2]
    );
    let mcast = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
    assert_eq!(r.send(T0, 2, &frame(mcast, host(2), 46)).1, vec![0, 1]);
    assert_eq!(r.seg_counters().flooded_multicast, 2);
}

#[test]
fn never_sends_back_out_the_ingress_port() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 2);
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(2), 46));
    // host 1 and host 2 both behind port 0 (another switch): local traffic
    assert_eq!(
        r.send(T0, 0, &frame(host(2), host(1), 46)),
        (Forwarding::Dropped(DropReason::SamePort), vec![])
    );
    assert_eq!(r.counters(0).drops.same_port, 1);
    assert_eq!(r.counters(1).tx_frames, 0);
}

#[test]
fn mac_moves_between_ports() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 3);
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    assert_eq!(r.send(T0, 2, &frame(host(1), host(2), 46)).1, vec![0]);
    // host 1 migrates to port 1 (a VM moved)
    r.send(T0, 1, &frame(MacAddr::BROADCAST, host(1), 46));
    assert_eq!(r.send(T0, 2, &frame(host(1), host(2), 46)).1, vec![1]);
    assert_eq!(r.seg_counters().mac_moves, 1);
}

#[test]
fn aging_forgets_silent_hosts_at_the_configured_time() {
    let mut cfg = SegmentConfig::new("lan");
    cfg.mac_aging = Duration::from_secs(30);
    let mut r = Rig::new(cfg, 3);
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    let before = Instant::from_millis(29_999);
    assert_eq!(r.send(before, 2, &frame(host(1), host(2), 46)).1, vec![0]);
    // host 1 silent for 30 s: unknown again, flooded
    let after = Instant::from_secs(30);
    assert_eq!(r.send(after, 2, &frame(host(1), host(2), 46)).1, vec![0, 1]);
    // the timer sweeps it out of the table
    let deadline = r.engine.poll_timeout().expect("a sweep is scheduled");
    r.engine.handle_timeout(deadline.max(after));
    let seg = r.engine.segment(r.seg).unwrap();
    assert!(seg.mac_table().iter().all(|(m, _, _)| m != host(1)));
    assert_eq!(seg.counters().aged_out, 1);
}

#[test]
fn sweep_timer_stops_when_the_table_is_empty() {
    let mut cfg = SegmentConfig::new("lan");
    cfg.mac_aging = Duration::from_secs(5);
    let mut r = Rig::new(cfg, 2);
    assert_eq!(r.engine.poll_timeout(), None);
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    assert_eq!(r.engine.poll_timeout(), Some(Instant::from_secs(1)));
    r.engine.handle_timeout(Instant::from_secs(1));
    assert_eq!(r.engine.poll_timeout(), Some(Instant::from_secs(2)));
    r.engine.handle_timeout(Instant::from_secs(6));
    assert_eq!(r.engine.poll_timeout(), None);
}

#[test]
fn removing_a_port_flushes_its_addresses_and_frees_its_number() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 3);
    r.send(T0, 1, &frame(MacAddr::BROADCAST, host(1), 46));
    let gone = r.ports[1];
    let number = r.engine.port(gone).unwrap().number();
    r.engine.remove_port(gone).unwrap();
    let seg = r.engine.segment(r.seg).unwrap();
    assert_eq!(seg.mac_table().len(), 0);
    assert_eq!(seg.port_by_number(number), None);
    assert!(!seg.ports().contains(&gone));
    // host 1 is unknown again, flooded to the two remaining ports only
    let out = r
        .engine
        .handle(T0, r.ports[2], &frame(host(1), host(2), 46), &mut r.out);
    assert_eq!(out, Forwarding::Flood);
    assert_eq!(r.out.ports(), &[r.ports[0]]);
    // the number is handed out again
    let again = r
        .engine
        .add_port(
            r.seg,
            PortRequest {
                kind: "test",
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.engine.port(again).unwrap().number(), number);
}

#[test]
fn frames_from_a_removed_port_are_counted_not_forwarded() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 2);
    let gone = r.ports[0];
    r.engine.remove_port(gone);
    let mut out = Egress::default();
    let f = frame(MacAddr::BROADCAST, host(1), 46);
    assert_eq!(
        r.engine.handle(T0, gone, &f, &mut out),
        Forwarding::UnknownPort
    );
    assert!(out.is_empty());
    assert_eq!(r.engine.unknown_port_frames(), 1);
}

#[test]
fn hub_mode_floods_everything_and_learns_nothing() {
    let mut cfg = SegmentConfig::new("lan");
    cfg.hub = true;
    let mut r = Rig::new(cfg, 3);
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    assert_eq!(r.send(T0, 2, &frame(host(1), host(2), 46)).1, vec![0, 1]);
    assert_eq!(r.engine.segment(r.seg).unwrap().mac_table().len(), 0);
}

#[test]
fn short_long_and_invalid_frames_are_dropped_and_counted() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 2);
    assert_eq!(
        r.send(T0, 0, &[0u8; 13]).0,
        Forwarding::Dropped(DropReason::TooShort)
    );
    // 1500-byte payload plus header plus room for one tag is the limit
    assert_eq!(
        r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 1504)).0,
        Forwarding::Flood
    );
    assert_eq!(
        r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 1505)).0,
        Forwarding::Dropped(DropReason::TooLong)
    );
    let bad_src = MacAddr([0x01, 0, 0x5e, 0, 0, 1]);
    assert_eq!(
        r.send(T0, 0, &frame(MacAddr::BROADCAST, bad_src, 46)).0,
        Forwarding::Dropped(DropReason::InvalidSource)
    );
    let c = r.counters(0);
    assert_eq!(
        (c.drops.too_short, c.drops.too_long, c.drops.invalid_source),
        (1, 1, 1)
    );
    assert_eq!(c.rx_frames, 4);
    assert_eq!(c.rx_bytes, 13 + 1518 + 1519 + 60);
}

#[test]
fn jumbo_frames_pass_when_configured() {
    let mut cfg = SegmentConfig::new("jumbo");
    cfg.mtu = 9216;
    let mut r = Rig::new(cfg, 2);
    assert_eq!(
        r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 9216)).1,
        vec![1]
    );
    assert_eq!(
        r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 9221)).0,
        Forwarding::Dropped(DropReason::TooLong)
    );
}

#[test]
fn vlans_are_learned_independently() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 3);
    // the same MAC is on port 0 for VLAN 10 and on port 1 untagged
    r.send(T0, 0, &tagged(MacAddr::BROADCAST, host(1), 10));
    r.send(T0, 1, &frame(MacAddr::BROADCAST, host(1), 46));
    assert_eq!(r.send(T0, 2, &tagged(host(1), host(2), 10)).1, vec![0]);
    assert_eq!(r.send(T0, 2, &frame(host(1), host(2), 46)).1, vec![1]);
    assert_eq!(r.seg_counters().mac_moves, 0);
}

#[test]
fn a_mac_flood_is_bounded_and_traffic_keeps_flowing() {
    let mut cfg = SegmentConfig::new("lan");
    cfg.mac_table_size = 64;
    let mut r = Rig::new(cfg, 3);
    // two real hosts learned first
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    r.send(T0, 1, &frame(MacAddr::BROADCAST, host(2), 46));
    // an attacker on port 2 sends from 10 000 random source addresses
    let mut x: u32 = 0x1234_5678;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let b = x.to_be_bytes();
        let src = MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]]);
        r.send(T0, 2, &frame(MacAddr::BROADCAST, src, 46));
    }
    let seg = r.engine.segment(r.seg).unwrap();
    assert_eq!(seg.mac_table().len(), 64);
    assert_eq!(seg.counters().learn_refused_table_full, 10_000 - 62);
    // the hosts learned before the flood still reach each other directly
    assert_eq!(r.send(T0, 0, &frame(host(2), host(1), 46)).1, vec![1]);
}

#[test]
fn port_numbers_are_allocated_and_requests_honoured() {
    let mut engine = Engine::new();
    let mut cfg = SegmentConfig::new("lan");
    cfg.max_ports = 3;
    let seg = engine.add_segment(cfg).unwrap();
    let req = |n| PortRequest {
        number: n,
        kind: "test",
        description: String::new(),
        ..Default::default()
    };
    let a = engine.add_port(seg, req(Some(2))).unwrap();
    assert_eq!(engine.port(a).unwrap().number(), 2);
    assert_eq!(
        engine.add_port(seg, req(Some(2))),
        Err(PortError::NumberInUse(2))
    );
    assert!(matches!(
        engine.add_port(seg, req(Some(4))),
        Err(PortError::NumberOutOfRange {
            number: 4,
            max_ports: 3
        })
    ));
    let b = engine.add_port(seg, req(None)).unwrap();
    let c = engine.add_port(seg, req(None)).unwrap();
    assert_eq!(engine.port(b).unwrap().number(), 1);
    assert_eq!(engine.port(c).unwrap().number(), 3);
    assert!(matches!(
        engine.add_port(seg, req(None)),
        Err(PortError::SegmentFull { .. })
    ));
    // port 0 may be asked for explicitly
    let zero = engine.add_port(seg, req(Some(0))).unwrap();
    assert_eq!(engine.port(zero).unwrap().number(), 0);
}

#[test]
fn segments_are_isolated() {
    let mut engine = Engine::new();
    let a = engine.add_segment(SegmentConfig::new("a")).unwrap();
    let b = engine.add_segment(SegmentConfig::new("b")).unwrap();
    let req = || PortRequest {
        kind: "test",
        ..Default::default()
    };
    let a1 = engine.add_port(a, req()).unwrap();
    let a2 = engine.add_port(a, req()).unwrap();
    let _b1 = engine.add_port(b, req()).unwrap();
    let mut out = Egress::default();
    engine.handle(T0, a1, &frame(MacAddr::BROADCAST, host(1), 46), &mut out);
    assert_eq!(out.ports(), &[a2]);
    assert!(
        engine.add_segment(SegmentConfig::new("a")).is_err(),
        "duplicate names refused"
    );
}

#[test]
fn tx_results_are_counted_per_port() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 2);
    r.engine.record_tx(r.ports[1], 3, 180, 2, 1);
    let c = r.counters(1);
    assert_eq!((c.tx_frames, c.tx_bytes), (3, 180));
    assert_eq!((c.drops.tx_queue_full, c.drops.tx_error), (2, 1));
    r.engine.reset_counters(None);
    assert_eq!(r.counters(1), PortCounters::default());
}

#[test]
fn super_frames_are_judged_by_their_segment_size() {
    let mut r = Rig::new(SegmentConfig::new("lan"), 2);
    let big = frame(MacAddr::BROADCAST, host(1), 20_000);
    let mut out = Egress::default();
    let ok = r.engine.handle_sized(T0, r.ports[0], &big, 1514, &mut out);
    assert_eq!(ok, Forwarding::Flood);
    let too_big = r.engine.handle_sized(T0, r.ports[0], &big, 1519, &mut out);
    assert_eq!(too_big, Forwarding::Dropped(DropReason::TooLong));
    assert_eq!(r.counters(0).rx_bytes, 2 * 20_014);
}

// ---- loop protection: split horizon and the storm guard ----

impl Rig {
    /// A rig whose port `i` is split-horizon when `split[i]`.
    fn with_split(config: SegmentConfig, split: &[bool]) -> Rig {
        let mut r = Rig::new(config, 0);
        for &s in split {
            let id = r
                .engine
                .add_port(
                    r.seg,
                    PortRequest {
                        kind: "test",
                        split_horizon: s,
                        ..Default::default()
                    },
                )
                .unwrap();
            r.ports.push(id);
        }
        r
    }

    fn blocked_until(&self, port: usize) -> Option<Instant> {
        self.engine.port(self.ports[port]).unwrap().blocked_until()
    }
}

fn storm_config(limit: u32) -> SegmentConfig {
    let mut c = SegmentConfig::new("lan");
    c.storm_limit_pps = limit;
    c
}

#[test]
fn split_horizon_ports_never_pass_frames_to_each_other() {
    // ports 0 and 1 are tunnels of a mesh, 2 and 3 local hosts
    let mut r = Rig::with_split(SegmentConfig::new("lan"), &[true, true, false, false]);
    let bcast = MacAddr::BROADCAST;
    // flooding from a tunnel reaches only the local ports...
    assert_eq!(
        r.send(T0, 0, &frame(bcast, host(1), 46)),
        (Forwarding::Flood, vec![2, 3])
    );
    // ...flooding from a local port reaches every tunnel
    assert_eq!(
        r.send(T0, 2, &frame(bcast, host(3), 46)),
        (Forwarding::Flood, vec![0, 1, 3])
    );
    assert_eq!(r.send(T0, 1, &frame(bcast, host(2), 46)).1, vec![2, 3]);
    assert_eq!(r.send(T0, 3, &frame(bcast, host(4), 46)).1, vec![0, 1, 2]);
    // unknown unicast from a tunnel: local ports only
    assert_eq!(r.send(T0, 0, &frame(host(9), host(1), 46)).1, vec![2, 3]);
    // unicast from one tunnel to a station behind the other is refused
    assert_eq!(
        r.send(T0, 0, &frame(host(2), host(1), 46)),
        (Forwarding::Dropped(DropReason::SplitHorizon), vec![])
    );
    assert_eq!(r.counters(0).drops.split_horizon, 1);
    // but goes from a tunnel to a local station, and from local to a tunnel
    assert_eq!(
        r.send(T0, 0, &frame(host(3), host(1), 46)),
        (Forwarding::Unicast, vec![2])
    );
    assert_eq!(
        r.send(T0, 2, &frame(host(2), host(3), 46)),
        (Forwarding::Unicast, vec![1])
    );
    assert!(r.engine.port(r.ports[0]).unwrap().split_horizon());
    assert!(!r.engine.port(r.ports[2]).unwrap().split_horizon());
}

#[test]
fn split_horizon_flags_follow_ports_that_come_and_go() {
    let mut r = Rig::with_split(SegmentConfig::new("lan"), &[true, false, true]);
    let f = frame(MacAddr::BROADCAST, host(1), 46);
    assert_eq!(r.send(T0, 0, &f).1, vec![1]);
    // the local port leaves; a new local port takes its place at the end
    r.engine.remove_port(r.ports[1]);
    let fresh = r
        .engine
        .add_port(
            r.seg,
            PortRequest {
                kind: "test",
                ..Default::default()
            },
        )
        .unwrap();
    r.ports[1] = fresh;
    assert_eq!(r.send(T0, 0, &f).1, vec![1]);
    assert_eq!(
        r.send(T0, 1, &frame(MacAddr::BROADCAST, host(2), 46)).1,
        vec![0, 2]
    );
}

#[test]
fn a_storm_blocks_its_port_at_the_frame_over_the_limit() {
    let mut r = Rig::new(storm_config(100), 4);
    let bcast = frame(MacAddr::BROADCAST, host(1), 46);
    for k in 0..100 {
        assert_eq!(
            r.send(T0, 0, &bcast),
            (Forwarding::Flood, vec![1, 2, 3]),
            "frame {k}"
        );
    }
    assert_eq!(r.blocked_until(0), None);
    assert_eq!(
        r.send(T0, 0, &bcast),
        (Forwarding::Dropped(DropReason::StormBlocked), vec![])
    );
    assert_eq!(r.blocked_until(0), Some(Instant::from_secs(10)));
    assert_eq!(r.seg_counters().storm_blocks, 1);
    assert_eq!(r.counters(0).drops.storm_blocked, 1);
    // host 1's entry on the blocked port is forgotten
    assert_eq!(r.engine.segment(r.seg).unwrap().mac_table().len(), 0);
}

#[test]
fn twice_the_limit_trips_at_the_two_hundredth_frame() {
    // 200 frames/s against 100/s: frame k (from 0) at 5k ms finds a credit
    // of 100 - k/2 frames, so frame 199 is the first to find less than one.
    let mut r = Rig::new(storm_config(100), 2);
    let bcast = frame(MacAddr::BROADCAST, host(1), 46);
    for k in 0..199u64 {
        assert_eq!(
            r.send(Instant::from_millis(5 * k), 0, &bcast).0,
            Forwarding::Flood,
            "{k}"
        );
    }
    assert_eq!(
        r.send(Instant::from_millis(995), 0, &bcast).0,
        Forwarding::Dropped(DropReason::StormBlocked)
    );
    assert_eq!(r.blocked_until(0), Some(Instant::from_millis(10_995)));
}

#[test]
fn the_limit_itself_and_unicast_never_block() {
    let mut r = Rig::new(storm_config(100), 3);
    // 100 broadcasts a second for a minute
    for k in 0..6000u64 {
        let at = Instant::from_millis(10 * k);
        assert_eq!(
            r.send(at, 0, &frame(MacAddr::BROADCAST, host(1), 46)).0,
            Forwarding::Flood
        );
    }
    // known unicast is not metered at all
    r.send(T0, 1, &frame(MacAddr::BROADCAST, host(2), 46));
    for _ in 0..10_000 {
        assert_eq!(
            r.send(Instant::from_secs(60), 0, &frame(host(2), host(1), 46))
                .0,
            Forwarding::Unicast
        );
    }
    assert_eq!(r.seg_counters().storm_blocks, 0);
    assert_eq!(r.blocked_until(0), None);
}

#[test]
fn a_zero_limit_turns_the_guard_off() {
    let mut r = Rig::new(storm_config(0), 2);
    for _ in 0..100_000 {
        assert_eq!(
            r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46)).0,
            Forwarding::Flood
        );
    }
    assert_eq!(r.seg_counters().storm_blocks, 0);
}

#[test]
fn a_blocked_port_is_cut_off_both_ways_until_exactly_its_deadline() {
    let mut r = Rig::new(storm_config(100), 3);
    let bcast = |h| frame(MacAddr::BROADCAST, host(h), 46);
    // host 3 is learned on port 2 before the storm
    r.send(T0, 2, &bcast(3));
    for _ in 0..101 {
        r.send(T0, 0, &bcast(1));
    }
    let until = Instant::from_secs(10);
    assert_eq!(r.blocked_until(0), Some(until));
    // the sweep (1 s) comes first, then the unblock
    assert_eq!(r.engine.poll_timeout(), Some(Instant::from_secs(1)));
    r.engine.handle_timeout(Instant::from_secs(1));
    r.engine.handle_timeout(Instant::from_secs(2));
    let t = Instant::from_secs(5);
    // frames in are dropped, before learning (host 7 is not learned)
    assert_eq!(
        r.send(t, 0, &frame(host(3), host(7), 46)),
        (Forwarding::Dropped(DropReason::StormBlocked), vec![])
    );
    assert_eq!(r.counters(0).drops.storm_blocked, 2);
    assert!(
        r.engine
            .segment(r.seg)
            .unwrap()
            .mac_table()
            .iter()
            .all(|(m, _, _)| m != host(7))
    );
    // no floods out: broadcast and unknown unicast reach port 1 only
    assert_eq!(r.send(t, 2, &bcast(3)), (Forwarding::Flood, vec![1]));
    assert_eq!(
        r.send(t, 2, &frame(host(1), host(3), 46)),
        (Forwarding::Flood, vec![1])
    );
    // the deadline is announced once the table is empty of sweeps
    r.engine.reset_counters(None);
    assert!(r.engine.poll_timeout().is_some_and(|d| d <= until));
    r.engine
        .handle_timeout(Instant::from_micros(until.as_micros() - 1));
    assert_eq!(r.blocked_until(0), Some(until));
    r.engine.handle_timeout(until);
    assert_eq!(r.blocked_until(0), None);
    assert_eq!(r.send(until, 2, &bcast(3)), (Forwarding::Flood, vec![0, 1]));
    assert_eq!(r.send(until, 0, &bcast(1)), (Forwarding::Flood, vec![1, 2]));
}

#[test]
fn the_unblock_deadline_is_polled_when_nothing_else_is_due() {
    let mut c = storm_config(10);
    c.storm_block = Duration::from_secs(7);
    let mut r = Rig::new(c, 2);
    for _ in 0..11 {
        r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    }
    // the table is empty (host 1 forgotten), so only the unblock is due
    r.engine.handle_timeout(Instant::from_secs(1));
    assert_eq!(r.engine.poll_timeout(), Some(Instant::from_secs(7)));
    r.engine.handle_timeout(Instant::from_secs(7));
    assert_eq!(r.blocked_until(0), None);
    // the block also started fast aging, which ends 30 s after it
    assert_eq!(r.engine.poll_timeout(), Some(Instant::from_secs(30)));
    r.engine.handle_timeout(Instant::from_secs(30));
    assert_eq!(r.engine.poll_timeout(), None);
}

#[test]
fn flapping_addresses_make_the_table_age_fast_for_a_while() {
    let mut r = Rig::new(storm_config(0), 3);
    let seg = |r: &Rig| r.engine.segment(r.seg).unwrap().mac_table().aging();
    // host 9 sits on port 2, learned at T0
    r.send(T0, 2, &frame(MacAddr::BROADCAST, host(9), 46));
    // host 1's own frames come back round a loop: 49 moves are tolerated
    for k in 0..50u64 {
        r.send(
            Instant::from_millis(k),
            (k % 2) as usize,
            &frame(MacAddr::BROADCAST, host(1), 46),
        );
    }
    assert_eq!(r.seg_counters().mac_moves, 49);
    assert_eq!(seg(&r), Duration::from_secs(300));
    assert_eq!(r.engine.segment(r.seg).unwrap().fast_aging_until(), None);
    // the 50th within the second starts fast aging
    r.send(
        Instant::from_millis(50),
        0,
        &frame(MacAddr::BROADCAST, host(1), 46),
    );
    assert_eq!(seg(&r), Duration::from_secs(3));
    let until = Instant::from_millis(30_050);
    assert_eq!(
        r.engine.segment(r.seg).unwrap().fast_aging_until(),
        Some(until)
    );
    // host 9, silent since T0, is unknown 3 s later: flooded, not lost
    assert_eq!(
        r.send(Instant::from_secs(3), 0, &frame(host(9), host(1), 46))
            .1,
        vec![1, 2]
    );
    // the hold runs out: back to the configured aging
    r.engine.handle_timeout(Instant::from_millis(30_049));
    assert_eq!(seg(&r), Duration::from_secs(3));
    r.engine.handle_timeout(until);
    assert_eq!(seg(&r), Duration::from_secs(300));
    assert_eq!(r.engine.segment(r.seg).unwrap().fast_aging_until(), None);
}

#[test]
fn moves_spread_over_seconds_are_not_flapping() {
    let mut r = Rig::new(storm_config(0), 2);
    for k in 0..200u64 {
        r.send(
            Instant::from_millis(100 * k),
            (k % 2) as usize,
            &frame(MacAddr::BROADCAST, host(1), 46),
        );
    }
    assert_eq!(r.seg_counters().mac_moves, 199);
    assert_eq!(r.engine.segment(r.seg).unwrap().fast_aging_until(), None);
}

#[test]
fn repeat_storms_within_a_minute_double_the_block() {
    let mut r = Rig::new(storm_config(100), 2);
    let bcast = frame(MacAddr::BROADCAST, host(1), 46);
    let storm = |r: &mut Rig, at: Instant| {
        let mut n = 0;
        while r.send(at, 0, &bcast).0 == Forwarding::Flood {
            n += 1;
        }
        n
    };
    assert_eq!(storm(&mut r, T0), 100);
    assert_eq!(r.blocked_until(0), Some(Instant::from_secs(10)));
    r.engine.handle_timeout(Instant::from_secs(10));
    // the port comes back with a full bucket, storms again at once: 20 s
    assert_eq!(storm(&mut r, Instant::from_secs(10)), 100);
    assert_eq!(r.blocked_until(0), Some(Instant::from_secs(30)));
    r.engine.handle_timeout(Instant::from_secs(30));
    // again 59 s after that unblock: 40 s
    assert_eq!(storm(&mut r, Instant::from_secs(89)), 100);
    assert_eq!(r.blocked_until(0), Some(Instant::from_secs(129)));
    r.engine.handle_timeout(Instant::from_secs(129));
    // a full quiet minute later: back to 10 s
    storm(&mut r, Instant::from_secs(189));
    assert_eq!(r.blocked_until(0), Some(Instant::from_secs(199)));
    assert_eq!(r.seg_counters().storm_blocks, 4);
}

#[test]
fn blocking_one_port_refills_the_others() {
    // ports 0 and 1 are two cables of one loop: both see the storm
    let mut r = Rig::new(storm_config(100), 3);
    for _ in 0..90 {
        r.send(T0, 1, &frame(MacAddr::BROADCAST, host(2), 46));
    }
    for _ in 0..101 {
        r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    }
    assert!(r.blocked_until(0).is_some());
    // port 1 had 10 frames left; it now has a full second's worth again
    for k in 0..100 {
        assert_eq!(
            r.send(T0, 1, &frame(MacAddr::BROADCAST, host(2), 46)).0,
            Forwarding::Flood,
            "{k}"
        );
    }
    assert_eq!(r.blocked_until(1), None);
}

#[test]
fn the_link_key_adds_the_same_burst_at_both_ends() {
    let key = 5012;
    let extra = storm_guard::extra_burst(100, key);
    assert!(extra > 0 && extra < 50, "{extra}");
    for _end in 0..2 {
        let mut r = Rig::new(storm_config(100), 0);
        let p = r
            .engine
            .add_port(
                r.seg,
                PortRequest {
                    kind: "udp",
                    link_key: key,
                    ..Default::default()
                },
            )
            .unwrap();
        r.ports.push(p);
        let q = r.engine.add_port(r.seg, PortRequest::default()).unwrap();
        r.ports.push(q);
        let mut n = 0;
        while r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46)).0 == Forwarding::Flood {
            n += 1;
        }
        assert_eq!(n, 100 + extra);
    }
}

#[test]
fn counters_views_show_storm_drops_in_totals() {
    let mut r = Rig::new(storm_config(1), 2);
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    r.send(T0, 0, &frame(MacAddr::BROADCAST, host(1), 46));
    let c = r.counters(0);
    assert_eq!(
        (c.rx_frames, c.drops.storm_blocked, c.drops.total()),
        (3, 2, 2)
    );
}

mod split_horizon_property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the traffic, a frame that entered a split-horizon port
        /// never leaves through another; and flooding from one still
        /// reaches every other port that is not split-horizon.
        #[test]
        fn never_between_split_horizon_ports(
            split in proptest::collection::vec(any::<bool>(), 2..7),
            all_split in any::<bool>(),
            frames in proptest::collection::vec((0usize..7, 1u8..6, 0u8..7, 0u64..3_000), 1..200),
        ) {
            let split: Vec<bool> = split.iter().map(|&s| s || all_split).collect();
            let mut r = Rig::with_split(SegmentConfig::new("lan"), &split);
            let mut now = T0;
            for (from, src, dst, dt) in frames {
                let from = from % split.len();
                now = now + Duration::from_millis(dt);
                // dst 0 is broadcast, 6 a multicast group, else a host
                let dst = match dst {
                    0 => MacAddr::BROADCAST,
                    6 => MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                    h => host(h),
                };
                let (fwd, to) = r.send(now, from, &frame(dst, host(src), 46));
                if split[from] {
                    prop_assert!(to.iter().all(|&p| !split[p]), "{from} -> {to:?} ({split:?})");
                    if fwd == Forwarding::Flood {
                        let expect: Vec<usize> = (0..split.len()).filter(|&p| !split[p]).collect();
                        prop_assert_eq!(&to, &expect);
                    }
                }
                prop_assert!(!to.contains(&from));
            }
        }
    }
}
