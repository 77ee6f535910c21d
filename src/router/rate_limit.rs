//! A token bucket that caps how many ICMP errors one router sends.
//!
//! Every dropped packet can provoke an error, so without a cap a flood of
//! packets with TTL 1 or to an unroutable network turns the router into an
//! amplifier aimed at whatever source address the flood carries (often
//! spoofed), and burns its own time building messages nobody reads.
//! RFC 1812 §4.3.2.8 asks routers to limit the rate of ICMP errors.
//!
//! The default follows Linux's global ICMP limit: `net.ipv4.icmp_msgs_per_sec
//! = 1000` with `net.ipv4.icmp_msgs_burst = 50`. That is generous enough for
//! traceroute and path MTU discovery from many hosts at once, yet bounds a
//! flood's reflection to a small fraction of a link. (Linux additionally
//! limits per destination host; a virtual router's handful of peers gains
//! little from that, so only the global bucket is provided.)
//!
//! Echo replies are not errors and do not pass through here: whether to
//! limit them is the router's decision.
//!
//! The bucket counts in millionths of a token so that refill at any rate is
//! exact in integer arithmetic over microsecond [`Instant`]s: one
//! microsecond at `per_second` tokens per second adds `per_second`
//! millionths.

use crate::time::Instant;

/// Millionths of a token per token: one token's worth of credit.
const TOKEN: u64 = 1_000_000;

/// Token bucket for the ICMP errors one router generates: up to `burst`
/// errors at once, refilled at `per_second`. Exists so a flood of
/// undeliverable packets cannot make the router flood the network with
/// errors in return. Starts full.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Refill rate, tokens per second.
    per_second: u32,
    /// Capacity, in millionths of a token.
    capacity: u64,
    /// Current credit, in millionths of a token; never above `capacity`.
    credit: u64,
    /// When `credit` was last brought up to date.
    last: Instant,
    /// Refusals so far.
    suppressed: u64,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `per_second` tokens per
    /// second. `burst` 0 refuses everything (errors disabled); `per_second` 0
    /// allows `burst` errors in the router's lifetime.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let capacity = u64::from(burst) * TOKEN;
        RateLimiter {
            per_second,
            capacity,
            credit: capacity,
            last: Instant::ZERO,
            suppressed: 0,
        }
    }

    /// Whether an error may be sent at `now`; takes a token if so, counts a
    /// suppression if not. Call it only once the error is otherwise allowed
    /// and about to be built, so refused candidates do not spend tokens.
    /// A `now` earlier than a previous call adds no credit.
    pub fn allow(&mut self, now: Instant) -> bool {
        if now > self.last {
            let elapsed =
                u64::try_from(now.saturating_since(self.last).as_micros()).unwrap_or(u64::MAX);
            let refill = elapsed.saturating_mul(u64::from(self.per_second));
            self.credit = self.credit.saturating_add(refill).min(self.capacity);
            self.last = now;
        }
        if self.credit >= TOKEN {
            self.credit -= TOKEN;
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            false
        }
    }

    /// How many errors [`allow`](Self::allow) has refused, for the router's
    /// counters: a rising number means errors are being lost to the limit.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

impl Default for RateLimiter {
    /// Linux's defaults: 1000 errors per second, bursts of 50.
    fn default() -> Self {
        RateLimiter::new(1000, 50)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn allowed(limiter: &mut RateLimiter, now: Instant, tries: usize) -> usize {
        (0..tries).filter(|_| limiter.allow(now)).count()
    }

    #[test]
    fn burst_then_refusals_then_refill() {
        let mut limiter = RateLimiter::new(10, 5);
        let t0 = Instant::from_secs(100);
        assert_eq!(allowed(&mut limiter, t0, 5), 5);
        assert!(!limiter.allow(t0));
        assert!(!limiter.allow(t0));
        assert_eq!(limiter.suppressed(), 2);

        // 10 per second: one token every 100 ms, not before.
        let almost = t0 + Duration::from_micros(99_999);
        assert!(!limiter.allow(almost));
        assert_eq!(limiter.suppressed(), 3);
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.allow(t1));
        assert!(!limiter.allow(t1));
        assert_eq!(limiter.suppressed(), 4);

        // Partial credit is kept across calls: 50 ms + 50 ms make a token.
        assert!(!limiter.allow(t1 + Duration::from_millis(50)));
        assert!(limiter.allow(t1 + Duration::from_millis(100)));

        // A long pause refills to the burst size and no further.
        let later = t1 + Duration::from_secs(3600);
        assert_eq!(allowed(&mut limiter, later, 20), 5);
        assert_eq!(limiter.suppressed(), 5 + 15);
    }

    #[test]
    fn default_is_linux_1000_per_second_burst_50() {
        let mut limiter = RateLimiter::default();
        let t0 = Instant::from_secs(1);
        assert_eq!(allowed(&mut limiter, t0, 100), 50);
        assert_eq!(limiter.suppressed(), 50);
        // One token per millisecond.
        assert_eq!(allowed(&mut limiter, t0 + Duration::from_micros(999), 3), 0);
        assert_eq!(allowed(&mut limiter, t0 + Duration::from_millis(1), 3), 1);
        assert_eq!(
            allowed(&mut limiter, t0 + Duration::from_millis(11), 100),
            10
        );
    }

    #[test]
    fn time_going_backwards_adds_nothing() {
        let mut limiter = RateLimiter::new(1000, 1);
        let t0 = Instant::from_secs(10);
        assert!(limiter.allow(t0));
        assert!(!limiter.allow(Instant::from_secs(5)));
        assert!(!limiter.allow(t0));
        assert!(limiter.allow(t0 + Duration::from_millis(1)));
    }

    #[test]
    fn zero_burst_refuses_and_zero_rate_never_refills() {
        let mut none = RateLimiter::new(1000, 0);
        assert!(!none.allow(Instant::from_secs(1000)));
        assert_eq!(none.suppressed(), 1);

        let mut once = RateLimiter::new(0, 2);
        assert_eq!(allowed(&mut once, Instant::ZERO, 3), 2);
        assert!(!once.allow(Instant::from_micros(u64::MAX)));
        assert_eq!(once.suppressed(), 2);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut limiter = RateLimiter::new(u32::MAX, u32::MAX);
        assert!(limiter.allow(Instant::from_micros(u64::MAX)));
        assert!(limiter.allow(Instant::from_micros(u64::MAX)));
    }
}
