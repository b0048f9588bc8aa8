//! An optional per-caller rate limit: a token bucket per subject (or API key id), refilled at
//! `rate` per second up to `burst`. Over the limit, the request is answered 429 with
//! `Retry-After`.
//!
//! Memory is bounded: at most [`MAX_CALLERS`] buckets are kept; when full, buckets that are full
//! again (idle callers) are dropped first, and if none is, the table starts over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Most callers tracked at once.
pub const MAX_CALLERS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by caller.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate` requests per second per caller (0 disables the limit), `burst` above it.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate.into(),
            burst: f64::from(rate.max(1)) + f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the limit is on.
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one request from `caller`'s bucket at time `now`: `Ok` or `Err(seconds to wait)`.
    pub fn check(&self, caller: &str, now: Instant) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() >= MAX_CALLERS && !buckets.contains_key(caller) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_CALLERS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(caller.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - bucket.tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_limits_then_refills() {
        let limiter = RateLimiter::new(2, 3);
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check("alice", start), Ok(()));
        }
        assert_eq!(limiter.check("alice", start), Err(1));
        assert_eq!(limiter.check("bob", start), Ok(()), "callers have their own buckets");
        assert_eq!(limiter.check("alice", start + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn zero_disables_the_limit() {
        let limiter = RateLimiter::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(limiter.check("alice", Instant::now()), Ok(()));
        }
    }
}
