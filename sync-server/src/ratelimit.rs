//! Token buckets, kept in memory per relay process: with several processes behind a load balancer
//! each enforces the limit on its own share, which is what a rate limit needs (protection from a
//! runaway device or a flood), not an exact global count.
//!
//! Two limits use them (`api::Caller`): requests per device token (100/s, burst 200 by default), and
//! failed authentications per client address (1/s, burst 20), so a flood of unknown tokens costs
//! the database nothing once its address is out of tokens, and never slows down devices elsewhere.
//!
//! Hand-written rather than the `governor` crate: the failed-authentication limit must look at an
//! address's bucket without taking from it (`exhausted`, `check_known`: an unknown token is refused
//! before the database is asked, and only a failure costs a token), and governor has no such peek
//! (boinkor-net/governor issue 15; the pull request adding one, 211, is still open).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    last: Instant,
}

pub struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

/// Buckets kept before idle (full) ones are dropped.
const PRUNE_AT: usize = 50_000;

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(rate: f64, burst: f64) -> Self {
        RateLimiter {
            rate: rate.max(0.001),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`, making its bucket when it has none. `Err(wait)` says when to retry:
    /// exactly when the bucket holds a token again (at 100/s, 10 ms), not a whole second.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.with_bucket(key, true, take).unwrap_or(Ok(()))
    }

    /// Like [`check`](Self::check) for a key that has a bucket; `None` (nothing taken) for one that
    /// has none.
    pub fn check_known(&self, key: &K) -> Option<Result<(), Duration>> {
        self.with_bucket(key, false, take)
    }

    /// `Some(wait)` when `key`'s bucket is empty now (nothing is taken).
    pub fn exhausted(&self, key: &K) -> Option<Duration> {
        self.with_bucket(key, false, |b, rate| wait(b, rate))
            .flatten()
    }

    /// Runs `f` on `key`'s bucket, refilled to now; `create` makes a full bucket when there is none.
    /// `None` when there is no bucket (or the lock is poisoned: a limiter never fails a request).
    fn with_bucket<T>(
        &self,
        key: &K,
        create: bool,
        f: impl FnOnce(&mut Bucket, f64) -> T,
    ) -> Option<T> {
        let now = Instant::now();
        let mut map = self.buckets.lock().ok()?;
        let (rate, burst) = (self.rate, self.burst);
        if create && map.len() >= PRUNE_AT {
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
        }
        let b = if create {
            map.entry(key.clone()).or_insert(Bucket {
                tokens: burst,
                last: now,
            })
        } else {
            map.get_mut(key)?
        };
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        Some(f(b, rate))
    }
}

fn take(b: &mut Bucket, rate: f64) -> Result<(), Duration> {
    match wait(b, rate) {
        None => {
            b.tokens -= 1.0;
            Ok(())
        }
        Some(wait) => Err(wait),
    }
}

/// How long until the bucket holds a token again (at least a millisecond, rounded up to whole
/// milliseconds), `None` when it holds one now.
fn wait(b: &Bucket, rate: f64) -> Option<Duration> {
    (b.tokens < 1.0).then(|| {
        let ms = ((1.0 - b.tokens) / rate * 1000.0).ceil().max(1.0);
        Duration::from_millis(ms.min(u64::MAX as f64) as u64)
    })
}

/// `Retry-After` in whole seconds (HTTP's unit; at least 1), for clients that read only that header.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_millis().div_ceil(1000).max(1) as u64
}

/// The address a failed authentication is counted against: IPv4 addresses as they are, IPv6 by their
/// /64 network (one host usually holds a whole /64, so counting single addresses would not limit it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_says_when_to_retry() {
        let l = RateLimiter::new(1.0, 3.0);
        assert_eq!(l.check_known(&1), None);
        assert_eq!(l.exhausted(&1), None);
        for _ in 0..3 {
            assert_eq!(l.check(&1), Ok(()));
        }
        // Empty: a token is back in a second at this rate (give or take the test's own run time).
        let wait = l.check(&1).unwrap_err();
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(l.exhausted(&1).is_some());
        assert!(matches!(l.check_known(&1), Some(Err(_))));
        // Another key has its own bucket.
        assert_eq!(l.check(&2), Ok(()));
        assert_eq!(l.exhausted(&2), None);
    }

    #[test]
    fn the_wait_is_as_long_as_the_refill_not_a_whole_second() {
        // 100/s: an empty bucket holds a token again within 10 ms. Saying "1 s" (Retry-After's unit)
        // made a throttled device sleep 100 times too long.
        let l = RateLimiter::new(100.0, 2.0);
        assert_eq!(l.check(&1), Ok(()));
        assert_eq!(l.check(&1), Ok(()));
        let wait = l.check(&1).unwrap_err();
        assert!(wait <= Duration::from_millis(10), "{wait:?}");
        assert!(wait >= Duration::from_millis(1), "{wait:?}");
        assert_eq!(whole_seconds(wait), 1);
        std::thread::sleep(wait);
        assert_eq!(l.check(&1), Ok(()), "a token is back after the wait said");
        assert_eq!(whole_seconds(Duration::from_millis(2_001)), 3);
        assert_eq!(whole_seconds(Duration::from_millis(2_000)), 2);
    }

    #[test]
    fn ipv6_hosts_are_counted_by_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(client_key(mapped), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(
            client_key("127.0.0.1".parse().unwrap()),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
