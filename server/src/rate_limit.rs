//! An optional per-caller rate limit: a token bucket per caller, refilled at `rate` per second up
//! to `burst`. Over the limit, the request is answered 429 with `Retry-After`.
//!
//! Callers are keyed by [`caller_key`]: an authenticated caller by the identity its audit events
//! record, an anonymous one by its client address (anonymous callers do not share one bucket).
//!
//! The buckets live in [`SHARDS`] independently locked maps chosen by a hash of the key, so
//! callers rarely wait for each other and no operation scans every caller under one lock. Memory
//! is bounded: a shard keeps at most [`MAX_CALLERS`] / [`SHARDS`] buckets; when one is full, the
//! buckets of that shard that are full again (idle callers) are dropped, and if none is, that
//! shard starts over. The cost of that clean-up is one shard's buckets, paid by one caller.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::auth::{AuthMethod, Principal};

/// Most callers tracked at once.
pub const MAX_CALLERS: usize = 100_000;
/// Independently locked maps.
pub const SHARDS: usize = 64;

/// Whom a rate limit applies to. The single place that decides it: audit events and the rate
/// limiter name callers the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallerKey {
    /// An authenticated caller: (source, subject) as [`crate::auth::CallerKey`] writes it, so
    /// alice of one issuer never shares a bucket with alice of another.
    Identity(String),
    /// An anonymous caller, by client address (`unknown` when there is none).
    Address(String),
}

/// The key of `principal`'s bucket; `client` is the request's client address.
pub fn caller_key(principal: &Principal, client: Option<&str>) -> CallerKey {
    if principal.method == AuthMethod::Anonymous {
        return CallerKey::Address(client.unwrap_or("unknown").to_owned());
    }
    match principal.caller_key() {
        Some(key) => CallerKey::Identity(key.as_str().to_owned()),
        None => CallerKey::Address(client.unwrap_or("unknown").to_owned()),
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by caller.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<CallerKey, Bucket>>>,
}

impl RateLimiter {
    /// `rate` requests per second per caller (0 disables the limit), `burst` above it.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: rate.into(),
            burst: f64::from(rate.max(1)) + f64::from(burst),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Whether the limit is on.
    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one request from `caller`'s bucket at time `now`: `Ok` or `Err(seconds to wait)`.
    pub fn check(&self, caller: &CallerKey, now: Instant) -> Result<(), u64> {
        if !self.enabled() {
            return Ok(());
        }
        let shard = (self.hasher.hash_one(caller) % SHARDS as u64) as usize;
        let mut buckets = self.shards[shard].lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_CALLERS / SHARDS && !buckets.contains_key(caller) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < burst);
            if buckets.len() >= MAX_CALLERS / SHARDS {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(caller.clone()).or_insert(Bucket {
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

    /// Callers tracked now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_crds::Identity;
    use std::time::Duration;

    fn who(name: &str) -> CallerKey {
        CallerKey::Identity(name.to_owned())
    }

    #[test]
    fn bursts_then_limits_then_refills() {
        let limiter = RateLimiter::new(2, 3);
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check(&who("alice"), start), Ok(()));
        }
        assert_eq!(limiter.check(&who("alice"), start), Err(1));
        assert_eq!(
            limiter.check(&who("bob"), start),
            Ok(()),
            "callers have their own buckets"
        );
        assert_eq!(limiter.check(&who("alice"), start + Duration::from_millis(500)), Ok(()));
    }

    #[test]
    fn zero_disables_the_limit() {
        let limiter = RateLimiter::new(0, 0);
        for _ in 0..1000 {
            assert_eq!(limiter.check(&who("alice"), Instant::now()), Ok(()));
        }
    }

    #[test]
    fn anonymous_callers_are_limited_per_address() {
        let anonymous = Principal {
            identity: Identity::anonymous(),
            method: AuthMethod::Anonymous,
            issuer: None,
            expires_at: None,
        };
        let a = caller_key(&anonymous, Some("10.0.0.1"));
        let b = caller_key(&anonymous, Some("10.0.0.2"));
        assert_eq!(a, CallerKey::Address("10.0.0.1".into()));
        let limiter = RateLimiter::new(1, 0);
        let now = Instant::now();
        assert_eq!(limiter.check(&a, now), Ok(()));
        assert_eq!(limiter.check(&a, now), Err(1));
        assert_eq!(limiter.check(&b, now), Ok(()), "another address has its own bucket");
        // An authenticated subject that happens to spell an address is another caller.
        assert_eq!(limiter.check(&who("10.0.0.1"), now), Ok(()));
    }

    #[test]
    fn memory_stays_bounded_without_a_global_scan() {
        let limiter = RateLimiter::new(1, 0);
        let now = Instant::now();
        for i in 0..(MAX_CALLERS + 5_000) {
            let _ = limiter.check(&who(&format!("caller-{i}")), now);
        }
        assert!(limiter.tracked() <= MAX_CALLERS, "{}", limiter.tracked());
    }
}
