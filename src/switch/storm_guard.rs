//! Storm guard: the per-port meter that blocks a port flooding the segment.
//!
//! # Why
//!
//! Two switches cabled twice (or three in a triangle) form a loop, and a
//! learning switch has no defence against one: every broadcast is flooded
//! round the loop in both directions for ever, at whatever rate the CPUs
//! allow, and the copies coming back teach the switches that local hosts
//! live behind the cables. switchboard does not run a spanning tree. It
//! offers split horizon for full tunnel meshes (see [`Port`]) and, for every
//! other loop, this guard: a port whose peer sends more broadcast and
//! multicast frames (what a loop multiplies; unknown unicast is not
//! metered, as a fast stream to a quiet station is legitimate) than the
//! segment's
//! `storm_limit_pps` is blocked for a while. Blocking one port of a loop
//! breaks it; the copies in flight die at the blocked port, and the segment
//! lives on through the remaining cables.
//!
//! # How
//!
//! A token bucket per port, in integer units so tests are exact: it holds
//! one second's worth of frames at the limit and refills at the limit, so a
//! burst of up to a second's worth passes and a sustained rate above the
//! limit empties it. The flooded frame that finds it empty is dropped and
//! blocks the port for `storm_block` (10 s by default); a port that offends
//! again within a minute of being unblocked is blocked for twice as long as
//! the previous time, up to five minutes (or `storm_block`, if that is
//! longer). A minute without an offence forgets the history.
//!
//! # Which port of a loop
//!
//! Every port of a loop sees the same storm, so their buckets empty at
//! nearly the same moment. If the two switches at the ends of a double cable
//! blocked *different* cables, they would cut each other off. To make both
//! ends pick the same cable, each port's bucket holds a little more than the
//! limit (up to half again) by an amount derived from its `link_key`, a
//! number both ends of one link compute alike (tunnels derive it from their
//! UDP port pair). The link with the smallest bucket trips first at both
//! ends; and when a port is blocked the buckets of the other ports of its
//! segment are refilled, so the same switch does not block its second cable
//! while the last copies of the storm drain away.
//!
//! [`Port`]: super::Port

use crate::time::Instant;
use std::time::Duration;

/// Credit units per frame: at `limit` frames per second the bucket refills
/// `limit` units per microsecond, so every amount is an exact integer.
const UNIT: u64 = 1_000_000;

/// Repeat offences within this long of the last unblock double the block.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// The longest block doubling reaches (unless the configured block is
/// longer).
pub const MAX_BLOCK: Duration = Duration::from_secs(300);

/// The window the rate in log lines is measured over.
const RATE_WINDOW_MICROS: u64 = 1_000_000;

/// The extra burst a port's bucket holds beyond the limit, for `link_key`:
/// between 0 and just under half the limit, the same for both ends of a
/// link, none for key 0.
pub fn extra_burst(limit_pps: u32, link_key: u64) -> u64 {
    if link_key == 0 {
        return 0;
    }
    // splitmix64's finaliser: spreads nearby keys (port numbers) apart.
    let mut z = link_key.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    u64::from(limit_pps) * (z % 1024) / 2048
}

/// What metering one flooded frame decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meter {
    /// Within the limit: flood it.
    Pass,
    /// The bucket was empty: the port must be blocked. Carries the flooded
    /// frames per second measured over the current window, for the log.
    Trip {
        /// The measured rate.
        rate_pps: u64,
    },
}

/// One port's flood meter and block state.
#[derive(Debug, Clone)]
pub struct StormGuard {
    /// Refill rate, frames per second (= units per microsecond); 0 = off.
    limit_pps: u64,
    /// Bucket size in units.
    capacity: u64,
    /// Credit in units.
    credit: u64,
    /// When the credit was last brought up to date.
    last: Instant,
    /// Start and count of the window the logged rate is measured over.
    window_start: Instant,
    window_frames: u64,
    /// Blocked until this instant.
    blocked_until: Option<Instant>,
    /// The length of the latest block, for doubling.
    last_block: Duration,
    /// When the latest block ended.
    last_unblock: Option<Instant>,
    /// Blocks so far.
    blocks: u64,
}

impl StormGuard {
    /// A guard for a port of a segment limited to `limit_pps` flooded frames
    /// per second (0: never blocks), on a link identified by `link_key`.
    pub fn new(limit_pps: u32, link_key: u64) -> Self {
        let capacity = (u64::from(limit_pps) + extra_burst(limit_pps, link_key)) * UNIT;
        StormGuard {
            limit_pps: u64::from(limit_pps),
            capacity,
            credit: capacity,
            last: Instant::ZERO,
            window_start: Instant::ZERO,
            window_frames: 0,
            blocked_until: None,
            last_block: Duration::ZERO,
            last_unblock: None,
            blocks: 0,
        }
    }

    /// How many flooded frames a burst at one instant may hold before the
    /// port trips, from full.
    pub fn burst(&self) -> u64 {
        self.capacity / UNIT
    }

    /// Until when the port is blocked, if it is.
    pub fn blocked_until(&self) -> Option<Instant> {
        self.blocked_until
    }

    /// True while the port is blocked.
    pub fn is_blocked(&self) -> bool {
        self.blocked_until.is_some()
    }

    /// How often the port has been blocked.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Meters one flooded frame at `now`.
    pub fn meter(&mut self, now: Instant) -> Meter {
        if self.limit_pps == 0 {
            return Meter::Pass;
        }
        // A full second refills any bucket, so longer gaps need no more
        // arithmetic (and cannot overflow it).
        let elapsed = now.as_micros().saturating_sub(self.last.as_micros());
        self.credit = self
            .credit
            .saturating_add(elapsed.min(UNIT) * self.limit_pps)
            .min(self.capacity);
        self.last = self.last.max(now);
        if now
            .as_micros()
            .saturating_sub(self.window_start.as_micros())
            >= RATE_WINDOW_MICROS
        {
            self.window_start = now;
            self.window_frames = 0;
        }
        self.window_frames += 1;
        if self.credit >= UNIT {
            self.credit -= UNIT;
            return Meter::Pass;
        }
        // Measured over at least a millisecond, so a burst at one instant
        // does not report an infinite rate.
        let over = now
            .as_micros()
            .saturating_sub(self.window_start.as_micros())
            .max(1000);
        Meter::Trip {
            rate_pps: self.window_frames.saturating_mul(UNIT) / over,
        }
    }

    /// Blocks the port at `now` for `base`, or for twice the previous block
    /// if that ended less than [`REPEAT_WINDOW`] ago (at most
    /// [`MAX_BLOCK`], or `base` if longer). Returns how long.
    pub fn block(&mut self, now: Instant, base: Duration) -> Duration {
        let repeat = self
            .last_unblock
            .is_some_and(|t| now.saturating_since(t) < REPEAT_WINDOW);
        let len = if repeat {
            (self.last_block * 2).min(MAX_BLOCK.max(base))
        } else {
            base
        };
        self.last_block = len;
        self.blocked_until = Some(now + len);
        self.blocks += 1;
        len
    }

    /// Lifts the block if it ends by `now`; returns whether it did. The
    /// bucket starts full again.
    pub fn unblock_if_due(&mut self, now: Instant) -> bool {
        match self.blocked_until {
            Some(t) if t <= now => {
                self.blocked_until = None;
                self.last_unblock = Some(t);
                self.refill(now);
                true
            }
            _ => false,
        }
    }

    /// Fills the bucket: the port gets a full second's allowance from `now`.
    pub fn refill(&mut self, now: Instant) {
        self.credit = self.capacity;
        self.last = self.last.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_exactly_the_limit_passes_and_the_next_frame_trips() {
        let mut g = StormGuard::new(100, 0);
        assert_eq!(g.burst(), 100);
        for _ in 0..100 {
            assert_eq!(g.meter(Instant::ZERO), Meter::Pass);
        }
        // 101 frames within the 1 ms floor of the rate window
        assert_eq!(g.meter(Instant::ZERO), Meter::Trip { rate_pps: 101_000 });
    }

    #[test]
    fn the_limit_sustained_for_a_long_time_never_trips() {
        let mut g = StormGuard::new(100, 0);
        for k in 0..100_000u64 {
            assert_eq!(g.meter(Instant::from_millis(10 * k)), Meter::Pass, "{k}");
        }
    }

    #[test]
    fn twice_the_limit_trips_at_the_two_hundredth_frame() {
        // 200 frames/s against a 100 frames/s bucket of 100: each frame
        // costs 1 and refills 0.5, so frame k (from 0) finds 100 - k/2.
        // (The logged rate: 200 frames over 995 ms.)
        let mut g = StormGuard::new(100, 0);
        for k in 0..199u64 {
            assert_eq!(g.meter(Instant::from_millis(5 * k)), Meter::Pass, "{k}");
        }
        assert_eq!(
            g.meter(Instant::from_millis(995)),
            Meter::Trip { rate_pps: 201 }
        );
    }

    #[test]
    fn off_never_trips() {
        let mut g = StormGuard::new(0, 7);
        for _ in 0..1_000_000 {
            assert_eq!(g.meter(Instant::ZERO), Meter::Pass);
        }
    }

    #[test]
    fn blocks_double_within_a_minute_up_to_five_minutes() {
        let mut g = StormGuard::new(100, 0);
        let base = Duration::from_secs(10);
        let mut now = Instant::from_secs(1);
        let mut lens = Vec::new();
        for _ in 0..7 {
            let len = g.block(now, base);
            lens.push(len.as_secs());
            assert_eq!(g.blocked_until(), Some(now + len));
            assert!(!g.unblock_if_due(now + (len - Duration::from_micros(1))));
            assert!(g.unblock_if_due(now + len));
            // offends again 59 s after the unblock
            now = now + len + Duration::from_secs(59);
        }
        assert_eq!(lens, [10, 20, 40, 80, 160, 300, 300]);
        // a quiet minute forgets
        now = now + Duration::from_secs(1);
        assert_eq!(g.block(now, base), base);
        assert_eq!(g.blocks(), 8);
    }

    #[test]
    fn a_base_longer_than_the_cap_is_kept() {
        let mut g = StormGuard::new(100, 0);
        let base = Duration::from_secs(600);
        assert_eq!(g.block(Instant::ZERO, base), base);
        assert!(g.unblock_if_due(Instant::from_secs(600)));
        assert_eq!(g.block(Instant::from_secs(601), base), base);
    }

    #[test]
    fn both_ends_of_a_link_get_the_same_extra_burst() {
        assert_eq!(extra_burst(2000, 0), 0);
        let a = extra_burst(2000, 5012);
        assert_eq!(a, extra_burst(2000, 5012));
        assert!(a < 1000, "{a}");
        // neighbouring keys land apart
        let spread: Vec<u64> = (5000..5010).map(|k| extra_burst(2000, k)).collect();
        let mut dedup = spread.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), spread.len(), "{spread:?}");
    }

    #[test]
    fn an_unblocked_port_starts_with_a_full_bucket() {
        let mut g = StormGuard::new(10, 0);
        for _ in 0..10 {
            g.meter(Instant::ZERO);
        }
        assert!(matches!(g.meter(Instant::ZERO), Meter::Trip { .. }));
        g.block(Instant::ZERO, Duration::from_secs(10));
        assert!(g.unblock_if_due(Instant::from_secs(10)));
        let t = Instant::from_secs(10);
        for _ in 0..10 {
            assert_eq!(g.meter(t), Meter::Pass);
        }
        assert!(matches!(g.meter(t), Meter::Trip { .. }));
    }
}
