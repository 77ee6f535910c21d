//! The core's per-frame cost: what `Engine::handle` spends deciding where a
//! frame goes. No I/O; the daemon adds syscalls on top of this.
//!
//! Run with `cargo bench --bench forward`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use switchboard::mac::MacAddr;
use switchboard::switch::{Egress, Engine, PortId, PortRequest, SegmentConfig};
use switchboard::time::Instant;

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(len, 0);
    f
}

fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]])
}

/// A segment with `ports` ports and `hosts` stations learned, spread over
/// the ports.
fn rig(ports: usize, hosts: u32, table: usize) -> (Engine, Vec<PortId>) {
    let mut e = Engine::new();
    let mut cfg = SegmentConfig::new("bench");
    cfg.max_ports = ports as u16 + 1;
    cfg.mac_table_size = table;
    // The bench floods from one port at one instant far beyond any storm
    // limit: measure forwarding, not the guard.
    cfg.storm_limit_pps = 0;
    let seg = e.add_segment(cfg).unwrap();
    let ids: Vec<PortId> = (0..ports)
        .map(|_| {
            e.add_port(
                seg,
                PortRequest {
                    kind: "bench",
                    ..Default::default()
                },
            )
            .unwrap()
        })
        .collect();
    let mut out = Egress::default();
    for h in 0..hosts {
        let f = frame(MacAddr::BROADCAST, mac(h), 60);
        e.handle(Instant::ZERO, ids[h as usize % ports], &f, &mut out);
    }
    (e, ids)
}

fn bench_unicast(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle");
    g.throughput(Throughput::Elements(1));
    for &(hosts, table) in &[(2u32, 4096usize), (4000, 4096), (60_000, 65_536)] {
        let (mut e, ids) = rig(8, hosts, table);
        // host 0 sits on port 0; host 1 on port 1
        let f = frame(mac(1), mac(0), 1514);
        let mut out = Egress::with_capacity(16);
        let now = Instant::from_secs(1);
        g.bench_function(format!("unicast/{hosts}-macs"), |b| {
            b.iter(|| {
                e.handle(now, ids[0], black_box(&f), &mut out);
                black_box(out.ports().len())
            })
        });
    }
    let (mut e, ids) = rig(8, 2, 4096);
    let f = frame(MacAddr::BROADCAST, mac(0), 60);
    let mut out = Egress::with_capacity(16);
    g.bench_function("broadcast/8-ports", |b| {
        b.iter(|| {
            e.handle(Instant::from_secs(1), ids[0], black_box(&f), &mut out);
            black_box(out.ports().len())
        })
    });
    // A MAC flood against a full table: every frame has a new source.
    let (mut e, ids) = rig(8, 4096, 4096);
    let frames: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| frame(mac(1), mac(1_000_000 + i), 60))
        .collect();
    let mut out = Egress::with_capacity(16);
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.bench_function("mac-flood/full-table", |b| {
        b.iter_batched(
            || (),
            |_| {
                for f in &frames {
                    e.handle(Instant::from_secs(1), ids[3], black_box(f), &mut out);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_unicast);
criterion_main!(benches);
