//! Reconnect delays: exponential backoff with full jitter.
//!
//! Each delay is drawn uniformly from `[0, min(cap, base * 2^attempt)]`. The randomness matters more
//! than the growth: when a coordinator restarts, every agent loses its stream at the same instant, and
//! without jitter they would all come back at the same instant too.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: StdRng,
}

impl Backoff {
    /// 0.5 s doubling to a 30 s cap.
    pub fn standard() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(30), StdRng::from_os_rng())
    }

    /// A backoff with its own random source (tests pass a seeded one).
    pub fn new(base: Duration, cap: Duration, rng: StdRng) -> Self {
        Backoff { base, cap: cap.max(base), attempt: 0, rng }
    }

    /// The upper bound of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt; each call doubles the ceiling until the cap.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(self.rng.random_range(0..=millis))
    }

    /// Back to the base delay, after a healthy connection.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeded(seed: u64) -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30), StdRng::seed_from_u64(seed))
    }

    #[test]
    fn delays_stay_within_a_doubling_ceiling_up_to_the_cap() {
        let mut backoff = seeded(1);
        let ceilings: Vec<u64> = (0..10)
            .map(|_| {
                let ceiling = backoff.ceiling();
                let delay = backoff.next_delay();
                assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
                u64::try_from(ceiling.as_millis()).unwrap()
            })
            .collect();
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        for _ in 0..100 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }

    #[test]
    fn delays_are_jittered_across_agents() {
        // A thousand agents losing the coordinator at once must not all come back together.
        let firsts: Vec<Duration> = (0..1000).map(|seed| seeded(seed).next_delay()).collect();
        let distinct: std::collections::HashSet<_> = firsts.iter().collect();
        assert!(distinct.len() > 300, "only {} distinct first delays", distinct.len());
        let early = firsts.iter().filter(|d| **d < Duration::from_millis(250)).count();
        assert!((300..700).contains(&early), "{early} of 1000 in the first half: not uniform");
    }

    #[test]
    fn reset_returns_to_the_base_ceiling() {
        let mut backoff = seeded(7);
        for _ in 0..8 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(30));
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(500));
        assert!(backoff.next_delay() <= Duration::from_millis(500));
    }
}
