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
