//! The router's per-packet routing decision: what `RouteTable::lookup` costs
//! on tables of realistic shape and size, and what building a large table
//! costs once.
//!
//! Run with `cargo bench --bench lpm`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipnet::Ipv4Net;
use std::hint::black_box;
use std::net::Ipv4Addr;
use switchboard::router::IfaceId;
use switchboard::router::route_table::{Route, RouteKind, RouteTable};

/// Lookups per measured iteration, so one iteration is long enough to time
/// and the per-lookup figure is the throughput.
const BATCH: usize = 1024;

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

/// A prefix length distributed roughly like a real table: mostly /16../24
/// (with /24 the commonest), some /8../15, some /25../32.
fn prefix_len(rng: &mut XorShift) -> u8 {
    match rng.below(100) {
        0..=39 => 24,
        40..=84 => 16 + rng.below(8) as u8,
        85..=92 => 8 + rng.below(8) as u8,
        _ => 25 + rng.below(8) as u8,
    }
}

/// `n` distinct random routes plus a default route.
fn routes(n: usize, seed: u64) -> Vec<Route> {
    let mut rng = XorShift(seed);
    let mut table = RouteTable::with_capacity_limit(usize::MAX);
    let mut out = Vec::with_capacity(n + 1);
    let default = Route {
        dest: Ipv4Net::default(),
        gateway: Some(Ipv4Addr::new(192, 0, 2, 1)),
        iface: IfaceId(0),
        metric: 0,
        kind: RouteKind::Static,
    };
    table.insert(default.clone()).unwrap();
    out.push(default);
    while out.len() < n + 1 {
        let addr = Ipv4Addr::from(rng.next() as u32);
        let Ok(dest) = Ipv4Net::new(addr, prefix_len(&mut rng)) else {
            continue;
        };
        let route = Route {
            dest: dest.trunc(),
            gateway: Some(Ipv4Addr::from(0x0a00_0000 | (rng.below(1 << 16) as u32))),
            iface: IfaceId(rng.below(8) as u16),
            metric: rng.below(4) as u32,
            kind: RouteKind::Static,
        };
        // Skip the rare duplicate so every run inserts exactly `n + 1`.
        if table.insert(route.clone()).is_ok() {
            out.push(route);
        }
    }
    out
}

fn build(routes: &[Route]) -> RouteTable {
    let mut t = RouteTable::new();
    for r in routes {
        t.insert(r.clone()).unwrap();
    }
    t
}

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    let addrs: Vec<Ipv4Addr> = (0..BATCH)
        .map(|_| Ipv4Addr::from(rng.next() as u32))
        .collect();
    for &n in &[1_000usize, 10_000, 100_000] {
        let table = build(&routes(n, 0x9e37_79b9_7f4a_7c15 ^ n as u64));
        g.bench_function(format!("lookup/{n}-routes"), |b| {
            b.iter(|| {
                let mut hits = 0u32;
                for &a in &addrs {
                    if let Some(r) = table.lookup(black_box(a)) {
                        hits = hits.wrapping_add(r.metric + 1);
                    }
                }
                black_box(hits)
            })
        });
    }
    // Addresses that land inside the table's most specific prefixes rather
    // than mostly on short ones: the deepest walks down the trie.
    let rs = routes(100_000, 0x9e37_79b9_7f4a_7c15 ^ 100_000);
    let table = build(&rs);
    let deep: Vec<Ipv4Addr> = (0..BATCH)
        .map(|_| {
            let r = &rs[1 + rng.below(rs.len() as u64 - 1) as usize];
            let host = rng.next() as u32 & u32::from(r.dest.hostmask());
            Ipv4Addr::from(u32::from(r.dest.network()) | host)
        })
        .collect();
    g.bench_function("lookup/100000-routes/inside-prefixes", |b| {
        b.iter(|| {
            let mut hits = 0u32;
            for &a in &deep {
                if let Some(r) = table.lookup(black_box(a)) {
                    hits = hits.wrapping_add(r.metric + 1);
                }
            }
            black_box(hits)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lpm-insert");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rs.len() as u64));
    g.bench_function("insert/100000-routes", |b| {
        b.iter_batched(
            || rs.clone(),
            |rs| {
                let mut t = RouteTable::new();
                for r in rs {
                    t.insert(r).unwrap();
                }
                t
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_lookup);
criterion_main!(benches);
