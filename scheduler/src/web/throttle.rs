//! Slows password and token guessing on the sign-in form. Failed sign-ins are counted per
//! (account name, client address) pair and per client address; past a few free failures, each
//! further attempt must wait twice as long as the one before (up to a cap), and the form answers
//! 429 with `Retry-After` without checking the credentials until then.
//!
//! Why these two keys: the pair slows one host guessing one account's password; the address
//! slows one host spraying many names or tokens. Neither lets an attacker elsewhere delay a
//! user signing in from their own address, so nobody can lock a real user out; and since
//! counts are forgotten a window after the last failure, even a user who mistyped too often
//! waits at most the cap. A server behind a reverse proxy sees the proxy's address: all its
//! clients then share the address key.
//!
//! The counts live in memory in [`crate::api::AppState`], bounded in entries; they take the
//! time as a parameter (the scheduler's clock), so tests move it by hand.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// How failures turn into delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures of one account from one address before delays start (5).
    pub free_per_account: u32,
    /// Failures from one address, whatever the account, before delays start (20).
    pub free_per_address: u32,
    /// The first delay, ms (1 s); each further failure doubles it.
    pub first_delay_ms: i64,
    /// The longest delay, ms (5 min).
    pub max_delay_ms: i64,
    /// Counts are forgotten this long after their last failure, ms (15 min).
    pub window_ms: i64,
    /// Most keys held; past it, the stalest are dropped (10 000).
    pub max_entries: usize,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            free_per_account: 5,
            free_per_address: 20,
            first_delay_ms: 1000,
            max_delay_ms: 5 * 60 * 1000,
            window_ms: 15 * 60 * 1000,
            max_entries: 10_000,
        }
    }
}

/// What a count is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    /// One account name (lowercased) from one address.
    Account(String, Option<IpAddr>),
    /// One address, every account and token.
    Address(Option<IpAddr>),
}

/// Failures of one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: i64,
}

/// The sign-in form's failure counts (one per scheduler, in its `AppState`).
#[derive(Debug, Default)]
pub struct SignInThrottle {
    policy: ThrottlePolicy,
    failures: Mutex<HashMap<Key, Failures>>,
}

/// Groups IPv6 clients by their /64, which one host can fill with addresses at will.
fn client_key(address: Option<IpAddr>) -> Option<IpAddr> {
    match address? {
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & !(u128::from(u64::MAX));
            Some(IpAddr::V6(masked.into()))
        }
        v4 @ IpAddr::V4(_) => Some(v4),
    }
}

impl SignInThrottle {
    /// A throttle applying `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The keys of an attempt: the pair when a name was given (token sign-ins have none), and
    /// the address.
    fn keys(account: Option<&str>, address: Option<IpAddr>) -> Vec<Key> {
        let address = client_key(address);
        let mut keys = vec![Key::Address(address)];
        if let Some(account) = account.map(str::trim).filter(|a| !a.is_empty()) {
            keys.push(Key::Account(account.to_lowercase(), address));
        }
        keys
    }

    fn free_failures(&self, key: &Key) -> u32 {
        match key {
            Key::Account(..) => self.policy.free_per_account,
            Key::Address(_) => self.policy.free_per_address,
        }
    }

    /// The delay after `count` failures of a key allowing `free`, ms.
    fn delay_ms(&self, count: u32, free: u32) -> i64 {
        if count < free {
            return 0;
        }
        let doublings = (count - free).min(40);
        self.policy
            .first_delay_ms
            .saturating_mul(1_i64 << doublings)
            .min(self.policy.max_delay_ms)
    }

    /// How long, ms, an attempt for `account` from `address` must still wait at `now_ms`;
    /// `None` when it may go ahead.
    pub fn wait_ms(
        &self,
        account: Option<&str>,
        address: Option<IpAddr>,
        now_ms: i64,
    ) -> Option<i64> {
        let keys = Self::keys(account, address);
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|key| {
                let seen = failures.get(key)?;
                if now_ms.saturating_sub(seen.last_ms) > self.policy.window_ms {
                    return None;
                }
                let allowed_ms = seen
                    .last_ms
                    .saturating_add(self.delay_ms(seen.count, self.free_failures(key)));
                (allowed_ms > now_ms).then(|| allowed_ms - now_ms)
            })
            .max()
    }

    /// Counts a failed attempt at `now_ms`.
    pub fn record_failure(&self, account: Option<&str>, address: Option<IpAddr>, now_ms: i64) {
        let window_ms = self.policy.window_ms;
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in Self::keys(account, address) {
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                last_ms: now_ms,
            });
            if now_ms.saturating_sub(entry.last_ms) > window_ms {
                entry.count = 0;
            }
            entry.count = entry.count.saturating_add(1);
            entry.last_ms = now_ms;
        }
        if failures.len() > self.policy.max_entries {
            failures.retain(|_, seen| now_ms.saturating_sub(seen.last_ms) <= window_ms);
        }
        while failures.len() > self.policy.max_entries {
            let stalest = failures
                .iter()
                .min_by_key(|(_, seen)| seen.last_ms)
                .map(|(key, _)| key.clone());
            match stalest {
                Some(key) => failures.remove(&key),
                None => break,
            };
        }
    }

    /// Forgets the failures of `account` from `address` after it signed in; the address's
    /// count stays (one good account does not clear a spray of others).
    pub fn record_success(&self, account: Option<&str>, address: Option<IpAddr>) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in Self::keys(account, address) {
            if matches!(key, Key::Account(..)) {
                failures.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const HOST: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));
    const OTHER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 9)));

    fn fail(
        throttle: &SignInThrottle,
        account: Option<&str>,
        address: Option<IpAddr>,
        clock: &ManualClock,
        times: u32,
    ) {
        for _ in 0..times {
            throttle.record_failure(account, address, clock.now_ms());
        }
    }

    #[test]
    fn delays_double_after_the_free_failures_and_are_forgotten_after_the_window() {
        let throttle = SignInThrottle::new(ThrottlePolicy::default());
        let clock = ManualClock::new(1_000_000);
        fail(&throttle, Some("alice"), HOST, &clock, 4);
        assert_eq!(throttle.wait_ms(Some("alice"), HOST, clock.now_ms()), None);
        fail(&throttle, Some("Alice "), HOST, &clock, 1);
        assert_eq!(
            throttle.wait_ms(Some("alice"), HOST, clock.now_ms()),
            Some(1000)
        );
        clock.advance(1000);
        assert_eq!(throttle.wait_ms(Some("alice"), HOST, clock.now_ms()), None);
        fail(&throttle, Some("alice"), HOST, &clock, 1);
        assert_eq!(
            throttle.wait_ms(Some("alice"), HOST, clock.now_ms()),
            Some(2000)
        );

        // Nobody else is slowed: another account from here, alice from elsewhere.
        assert_eq!(throttle.wait_ms(Some("bob"), HOST, clock.now_ms()), None);
        assert_eq!(throttle.wait_ms(Some("alice"), OTHER, clock.now_ms()), None);

        fail(&throttle, Some("alice"), HOST, &clock, 20);
        assert_eq!(
            throttle.wait_ms(Some("alice"), HOST, clock.now_ms()),
            Some(5 * 60 * 1000),
            "capped"
        );
        assert_eq!(throttle.wait_ms(Some("alice"), OTHER, clock.now_ms()), None);

        // The window after the last failure clears it.
        clock.advance(15 * 60 * 1000 + 1);
        assert_eq!(throttle.wait_ms(Some("alice"), HOST, clock.now_ms()), None);
        fail(&throttle, Some("alice"), HOST, &clock, 1);
        assert_eq!(
            throttle.wait_ms(Some("alice"), HOST, clock.now_ms()),
            None,
            "counting anew"
        );
    }

    #[test]
    fn one_address_spraying_names_or_tokens_is_slowed_and_success_clears_only_the_pair() {
        let throttle = SignInThrottle::new(ThrottlePolicy::default());
        let clock = ManualClock::new(0);
        for n in 0..19 {
            fail(&throttle, Some(&format!("user{n}")), HOST, &clock, 1);
        }
        assert_eq!(throttle.wait_ms(None, HOST, clock.now_ms()), None);
        fail(&throttle, None, HOST, &clock, 1);
        assert_eq!(throttle.wait_ms(None, HOST, clock.now_ms()), Some(1000));
        assert_eq!(
            throttle.wait_ms(Some("carol"), HOST, clock.now_ms()),
            Some(1000)
        );
        assert_eq!(throttle.wait_ms(None, OTHER, clock.now_ms()), None);

        fail(&throttle, Some("dave"), OTHER, &clock, 5);
        assert!(
            throttle
                .wait_ms(Some("dave"), OTHER, clock.now_ms())
                .is_some()
        );
        throttle.record_success(Some("dave"), OTHER);
        assert_eq!(throttle.wait_ms(Some("dave"), OTHER, clock.now_ms()), None);
    }

    #[test]
    fn ipv6_hosts_count_by_their_64_and_entries_are_bounded() {
        let throttle = SignInThrottle::new(ThrottlePolicy {
            max_entries: 3,
            ..ThrottlePolicy::default()
        });
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        fail(&throttle, Some("erin"), Some(a), &ManualClock::new(0), 5);
        assert!(throttle.wait_ms(Some("erin"), Some(b), 0).is_some());
        for n in 0..10 {
            throttle.record_failure(Some(&format!("x{n}")), Some(a), n);
        }
        assert!(throttle.failures.lock().unwrap().len() <= 3);
    }
}
