//! What NAT adds to forwarding one packet: classifying it and rewriting its
//! addresses in place (checksums patched incrementally, so a 1500-byte
//! packet should cost the same as a 64-byte one), and the whole per-packet
//! path against a connection-tracking table of 100 000 flows: classify,
//! look the flow up, account the packet, rewrite.
//!
//! Run with `cargo bench --bench nat`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use etherparse::PacketBuilder;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use switchboard::router::nat::conntrack::{Conntrack, ConntrackConfig};
use switchboard::router::nat::rewrite::{Classified, classify, rewrite};
use switchboard::router::nat::{FlowKey, Proto};
use switchboard::time::Instant;

/// Packets per measured iteration in the table benchmark, drawn from random
/// flows so the lookups miss the cache the way real traffic does.
const BATCH: usize = 1024;

/// Flows in the table.
const FLOWS: usize = 100_000;

/// A tiny deterministic PRNG (xorshift64), so runs compare like for like
/// without a `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A TCP (ACK) packet of exactly `len` bytes for `key`.
fn tcp_packet(key: &FlowKey, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    PacketBuilder::ipv4(key.src.ip().octets(), key.dst.ip().octets(), 64)
        .tcp(key.src.port(), key.dst.port(), 1, 65535)
        .ack(1)
        .write(&mut out, &vec![0x42; len - 40])
        .unwrap();
    out
}

/// A UDP packet of exactly `len` bytes for `key`.
fn udp_packet(key: &FlowKey, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    PacketBuilder::ipv4(key.src.ip().octets(), key.dst.ip().octets(), 64)
        .udp(key.src.port(), key.dst.port())
        .write(&mut out, &vec![0x42; len - 28])
        .unwrap();
    out
}

/// A packet of `len` bytes for `key`: TCP for TCP keys, UDP otherwise.
fn packet(key: &FlowKey, len: usize) -> Vec<u8> {
    match key.proto {
        Proto::Tcp => tcp_packet(key, len),
        Proto::Udp | Proto::Icmp => udp_packet(key, len),
    }
}

/// `classify` + `rewrite` alone: each iteration translates the packet out
/// and back again, so the buffer returns to where it started.
fn bench_rewrite(c: &mut Criterion) {
    let mut g = c.benchmark_group("nat-rewrite");
    g.throughput(Throughput::Elements(2));
    let inside = FlowKey {
        proto: Proto::Tcp,
        src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 40000),
        dst: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 443),
    };
    let outside = (
        SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 1), 61000),
        inside.dst,
    );
    for (name, proto, len) in [("tcp-1500", Proto::Tcp, 1500), ("udp-64", Proto::Udp, 64)] {
        let key = FlowKey { proto, ..inside };
        let mut buf = packet(&key, len);
        assert_eq!(buf.len(), len);
        g.bench_function(name, |b| {
            b.iter(|| {
                for _ in 0..2 {
                    let (src, dst) = match classify(black_box(&buf)) {
                        Classified::Flow { key: k, .. } if k.src == key.src => outside,
                        _ => (key.src, key.dst),
                    };
                    rewrite(&mut buf, src, dst).unwrap();
                }
            })
        });
    }
    g.finish();
}

/// The router's per-packet NAT path against a table of [`FLOWS`] flows:
/// half TCP, half UDP, 64-byte packets, half of them in the original
/// direction and half replies.
fn bench_conntrack(c: &mut Criterion) {
    let mut rng = XorShift(0x5eed_4a7c_0ffe_e001);
    let outside = Ipv4Addr::new(203, 0, 113, 1);
    let now = Instant::from_secs(1);
    let mut table = Conntrack::new(ConntrackConfig {
        max_flows: FLOWS * 2,
        ..ConntrackConfig::default()
    });
    let mut ids = Vec::with_capacity(FLOWS);
    while ids.len() < FLOWS {
        let proto = if ids.len() % 2 == 0 {
            Proto::Tcp
        } else {
            Proto::Udp
        };
        let key = FlowKey {
            proto,
            src: SocketAddrV4::new(
                Ipv4Addr::from(0x0a00_0000 | (rng.below(1 << 16) as u32)),
                1024 + rng.below(64_000) as u16,
            ),
            dst: SocketAddrV4::new(
                Ipv4Addr::from(0xc633_6400 | (rng.below(256) as u32)),
                [53, 80, 443, 123][rng.below(4) as usize],
            ),
        };
        if table.lookup(&key).is_some() {
            continue;
        }
        ids.push(table.create_snat(now, key, outside).unwrap());
    }
    assert_eq!(table.len(), FLOWS);

    let packets: Vec<Vec<u8>> = (0..BATCH)
        .map(|i| {
            let flow = table.get(ids[rng.below(FLOWS as u64) as usize]).unwrap();
            let key = if i % 2 == 0 {
                flow.original
            } else {
                flow.reply
            };
            packet(&key, 64)
        })
        .collect();

    // The per-packet path as the router runs it; returns whether the
    // packet was translated.
    let process = |table: &mut Conntrack, pkt: &mut Vec<u8>| -> bool {
        let Classified::Flow { key, tcp_flags, .. } = classify(pkt) else {
            return false;
        };
        let Some((id, dir)) = table.lookup(&key) else {
            return false;
        };
        let Some(flow) = table.get(id) else {
            return false;
        };
        let (src, dst) = flow.translate(dir);
        table.update(now, id, dir, pkt.len(), tcp_flags);
        rewrite(pkt, src, dst).is_ok()
    };
    {
        let mut check = packets.clone();
        assert!(
            check.iter_mut().all(|p| process(&mut table, p)),
            "every packet hits"
        );
    }

    let mut g = c.benchmark_group("nat-conntrack");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function("lookup-update-rewrite/100000-flows", |b| {
        b.iter_batched_ref(
            || packets.clone(),
            |batch| {
                let mut done = 0u32;
                for p in batch.iter_mut() {
                    done += u32::from(process(&mut table, p));
                }
                black_box(done)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_rewrite, bench_conntrack);
criterion_main!(benches);
