//! Password guessing and login floods. A password check runs Argon2id, which costs 19 MiB and
//! tens of milliseconds by design; unbounded, a flood of wrong logins from anyone on the network
//! takes the server's memory (every hash in flight holds its own block, and the allocator keeps
//! the high-water mark). So:
//!
//! - checks run on `auth.max_concurrent_hashes` threads of their own, never on the shared
//!   blocking pool: the allocator keeps each thread's 19 MiB after the first check (glibc raises
//!   its mmap threshold after freeing a large block, and keeps the next one in the thread's
//!   arena), so the number of threads that ever hash is what bounds memory; a login that waits
//!   longer than `auth.hash_queue_secs` for its turn is answered `unavailable` without hashing;
//! - failed logins are counted over `auth.failure_window_secs` three ways: per user name and
//!   address (`auth.failures_per_user_and_address`), per address (`auth.failures_per_address`),
//!   and per user name from addresses the user has never logged in from
//!   (`auth.failures_per_user`). Past a limit, further logins of that kind are answered
//!   `too_many_attempts` (429, `Retry-After`) before any hashing, whether the password would
//!   have been right or not, so guessing gets nowhere; each time the same key reaches its limit
//!   again, its lock-out doubles, up to `auth.max_lockout_secs`;
//! - an address from which a user logged in within [`KNOWN_FOR`] is *known* for that user and
//!   escapes the per-user limit: a flood of wrong passwords for a user name from anywhere else
//!   cannot keep its owner out (the attacker's own addresses are locked out per user and
//!   address and per address), while a guesser spread over many addresses still gets at most
//!   `auth.failures_per_user` tries per window in all;
//! - the counters themselves are bounded (`MAX_TRACKED` keys each): when full, the entry whose
//!   window is oldest gives way.
//!
//! An address is counted as its network: an IPv4 address as itself, an IPv6 address as its /64
//! (one host is commonly given a whole /64, so counting single IPv6 addresses would give it 2^64
//! budgets); an IPv4-mapped IPv6 address counts as the IPv4 one ([`network_of`]).
//!
//! Counters are per server process and forgotten on restart: with `n` replicas an attacker gets
//! `n` times the budget.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::{Semaphore, oneshot};

use super::error::AppError;
use crate::config::AuthConfig;

/// How many keys each counter tracks at most, and how many users have known addresses.
const MAX_TRACKED: usize = 50_000;

/// How long an address stays known for a user after a successful login from it.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How many known addresses are kept per user (the oldest gives way).
const KNOWN_PER_USER: usize = 8;

/// The network a login's source is counted as: IPv4 addresses as they are, IPv6 addresses as
/// their /64 (the rest zeroed), IPv4-mapped IPv6 addresses as the IPv4 address.
pub fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// Failures of one key within the current window, and its lock-out.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    /// How many times this key reached its limit (the next lock-out is `window · 2^strikes`).
    strikes: u32,
    /// Refused until then.
    locked_until: Option<Instant>,
}

impl Window {
    /// Whether the entry still matters at `now`: its window runs, it is locked, or its strikes
    /// are recent enough to double the next lock-out.
    fn live(&self, window: Duration, max_lockout: Duration, now: Instant) -> bool {
        let last = self.locked_until.unwrap_or(self.started + window);
        last > now || (self.strikes > 0 && last + max_lockout > now)
    }
}

/// Failure counts by key, bounded in size.
#[derive(Debug)]
struct Counters<K> {
    windows: HashMap<K, Window>,
    limit: u32,
}

impl<K: Eq + Hash + Clone> Counters<K> {
    fn new(limit: u32) -> Self {
        Self { windows: HashMap::new(), limit }
    }

    /// How long `key` must still wait, if it is locked out.
    fn blocked_for<Q: Eq + Hash + ?Sized>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
    {
        let until = self.windows.get(key)?.locked_until?;
        (until > now).then(|| until - now)
    }

    fn record_failure(&mut self, key: K, window: Duration, max_lockout: Duration, now: Instant) {
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_TRACKED {
            self.windows.retain(|_, w| w.live(window, max_lockout, now));
            if self.windows.len() >= MAX_TRACKED {
                // Still full of live windows: the oldest gives way (an attacker spraying keys
                // from many addresses can push an entry out, but not grow memory).
                if let Some(oldest) =
                    self.windows.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| k.clone())
                {
                    self.windows.remove(&oldest);
                }
            }
        }
        let entry = self.windows.entry(key).or_insert(Window {
            started: now,
            failures: 0,
            strikes: 0,
            locked_until: None,
        });
        if !entry.live(window, max_lockout, now) {
            entry.strikes = 0;
        }
        if entry.started + window <= now || entry.locked_until.is_some_and(|u| u <= now) {
            entry.started = now;
            entry.failures = 0;
            entry.locked_until = None;
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= self.limit {
            let doubled = window.saturating_mul(1u32 << entry.strikes.min(20));
            entry.locked_until = Some(now + doubled.min(max_lockout.max(window)));
            entry.strikes = entry.strikes.saturating_add(1);
        }
    }

    fn clear<Q: Eq + Hash + ?Sized>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
    {
        self.windows.remove(key);
    }
}

/// The addresses each user logged in from lately, bounded in size.
#[derive(Debug, Default)]
struct KnownAddresses {
    by_user: HashMap<String, Vec<(IpAddr, Instant)>>,
}

impl KnownAddresses {
    fn is_known(&self, username: &str, address: IpAddr, now: Instant) -> bool {
        self.by_user
            .get(username)
            .is_some_and(|seen| seen.iter().any(|&(a, at)| a == address && at + KNOWN_FOR > now))
    }

    fn remember(&mut self, username: &str, address: IpAddr, now: Instant) {
        if !self.by_user.contains_key(username) && self.by_user.len() >= MAX_TRACKED {
            self.by_user.retain(|_, seen| {
                seen.retain(|&(_, at)| at + KNOWN_FOR > now);
                !seen.is_empty()
            });
            if self.by_user.len() >= MAX_TRACKED {
                let oldest = self
                    .by_user
                    .iter()
                    .min_by_key(|(_, seen)| seen.iter().map(|&(_, at)| at).max())
                    .map(|(u, _)| u.clone());
                if let Some(oldest) = oldest {
                    self.by_user.remove(&oldest);
                }
            }
        }
        let seen = self.by_user.entry(username.to_owned()).or_default();
        seen.retain(|&(a, at)| a != address && at + KNOWN_FOR > now);
        if seen.len() >= KNOWN_PER_USER {
            seen.remove(0);
        }
        seen.push((address, now));
    }
}

#[derive(Debug)]
struct Failures {
    by_user_and_address: Counters<(String, Option<IpAddr>)>,
    /// Failures from addresses not known for the user.
    by_user: Counters<String>,
    by_address: Counters<IpAddr>,
    known: KnownAddresses,
}

/// One password to check against a stored hash, and where the answer goes.
struct Check {
    password: SecretString,
    hash: String,
    answer: oneshot::Sender<bool>,
}

/// Bounds password checking: how many run at once, and how many may fail.
pub struct LoginThrottle {
    /// One permit per hashing thread: holding one means a thread is free for the check.
    hashing: Semaphore,
    checks: std::sync::mpsc::Sender<Check>,
    queue_wait: Duration,
    window: Duration,
    max_lockout: Duration,
    failures: Mutex<Failures>,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle").field("free_hashers", &self.hashing.available_permits()).finish()
    }
}

/// Starts `n` threads that check passwords; they end when `LoginThrottle` is dropped.
fn hashing_threads(n: usize, verify: fn(&str, &str) -> bool) -> std::sync::mpsc::Sender<Check> {
    let (send, receive) = std::sync::mpsc::channel::<Check>();
    let receive = std::sync::Arc::new(Mutex::new(receive));
    for i in 0..n {
        let receive = receive.clone();
        let spawned = std::thread::Builder::new().name(format!("fedq-password-{i}")).spawn(move || {
            loop {
                let next = receive.lock().expect("not poisoned").recv();
                let Ok(check) = next else { break };
                use secrecy::ExposeSecret as _;
                let ok = verify(check.password.expose_secret(), &check.hash);
                let _ = check.answer.send(ok);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a password-checking thread");
        }
    }
    send
}

impl LoginThrottle {
    /// A throttle with the limits of `config`, checking passwords with `verify(password, hash)`.
    pub fn new(config: &AuthConfig, verify: fn(&str, &str) -> bool) -> Self {
        let threads = config.max_concurrent_hashes.max(1);
        Self {
            hashing: Semaphore::new(threads),
            checks: hashing_threads(threads, verify),
            queue_wait: Duration::from_secs(config.hash_queue_secs),
            window: Duration::from_secs(config.failure_window_secs.max(1)),
            max_lockout: Duration::from_secs(config.max_lockout_secs.max(config.failure_window_secs).max(1)),
            failures: Mutex::new(Failures {
                by_user_and_address: Counters::new(config.failures_per_user_and_address.max(1)),
                by_user: Counters::new(config.failures_per_user.max(1)),
                by_address: Counters::new(config.failures_per_address.max(1)),
                known: KnownAddresses::default(),
            }),
        }
    }

    /// Refuses a login for `username` from `source` that is over a failure limit, before any
    /// work is done.
    pub fn admit(&self, username: &str, source: Option<IpAddr>) -> Result<(), AppError> {
        self.admit_at(username, source, Instant::now())
    }

    fn admit_at(&self, username: &str, source: Option<IpAddr>, now: Instant) -> Result<(), AppError> {
        let source = source.map(network_of);
        let failures = self.failures.lock().expect("not poisoned");
        let known = source.is_some_and(|a| failures.known.is_known(username, a, now));
        let pair = failures.by_user_and_address.blocked_for(&(username.to_owned(), source), now);
        let address = source.and_then(|a| failures.by_address.blocked_for(&a, now));
        let user = if known { None } else { failures.by_user.blocked_for(username, now) };
        let (wait, which) = match (pair, address, user) {
            (None, None, None) => return Ok(()),
            (_, Some(a), _) => (a.max(pair.unwrap_or_default()), "from this address"),
            (Some(p), None, _) => (p, "for this user from this address"),
            (None, None, Some(u)) => (u, "for this user from addresses it has not logged in from"),
        };
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(AppError::too_many_attempts(format!("too many failed logins {which}; retry in {secs} s"), secs))
    }

    /// Checks `password` against `hash` on a hashing thread, once one is free (waiting at most
    /// `auth.hash_queue_secs`). The failure limits are asked again when its turn comes, so that
    /// the failures of the logins queued with it count too and a burst cannot outrun them.
    pub async fn check(
        &self,
        username: &str,
        source: Option<IpAddr>,
        password: SecretString,
        hash: String,
    ) -> Result<bool, AppError> {
        let _permit = match tokio::time::timeout(self.queue_wait, self.hashing.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(AppError::unavailable("too many logins at once; retry in a few seconds")),
        };
        self.admit(username, source)?;
        let (answer, answered) = oneshot::channel();
        self.checks.send(Check { password, hash, answer }).map_err(|_| AppError::internal())?;
        answered.await.map_err(|_| AppError::internal())
    }

    /// Counts a failed login.
    pub fn failed(&self, username: &str, source: Option<IpAddr>) {
        self.failed_at(username, source, Instant::now());
    }

    fn failed_at(&self, username: &str, source: Option<IpAddr>, now: Instant) {
        let source = source.map(network_of);
        let (window, max_lockout) = (self.window, self.max_lockout);
        let mut failures = self.failures.lock().expect("not poisoned");
        failures.by_user_and_address.record_failure((username.to_owned(), source), window, max_lockout, now);
        if let Some(a) = source {
            failures.by_address.record_failure(a, window, max_lockout, now);
        }
        if !source.is_some_and(|a| failures.known.is_known(username, a, now)) {
            failures.by_user.record_failure(username.to_owned(), window, max_lockout, now);
        }
    }

    /// A successful login makes `source` known for the user and clears the failures of the
    /// user at that address (not the address's, nor the user's from elsewhere: one right
    /// password must buy no one a new budget for guessing).
    pub fn succeeded(&self, username: &str, source: Option<IpAddr>) {
        self.succeeded_at(username, source, Instant::now());
    }

    fn succeeded_at(&self, username: &str, source: Option<IpAddr>, now: Instant) {
        let source = source.map(network_of);
        let mut failures = self.failures.lock().expect("not poisoned");
        failures.by_user_and_address.clear(&(username.to_owned(), source));
        if let Some(a) = source {
            failures.known.remember(username, a, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits per user and address, per user from unknown addresses, per address; a 60 s window
    /// and lock-outs up to 600 s.
    fn throttle(per_pair: u32, per_user: u32, per_address: u32) -> LoginThrottle {
        LoginThrottle::new(
            &AuthConfig {
                failures_per_user_and_address: per_pair,
                failures_per_user: per_user,
                failures_per_address: per_address,
                failure_window_secs: 60,
                max_lockout_secs: 600,
                ..AuthConfig::default()
            },
            |password, hash| password == hash,
        )
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    fn address(i: u32) -> Option<IpAddr> {
        Some(IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 + i)))
    }

    #[test]
    fn a_user_at_one_address_is_refused_after_its_failures_until_the_lockout_ends() {
        let t = throttle(3, 100, 100);
        let now = Instant::now();
        for _ in 0..3 {
            t.admit_at("alice", A, now).unwrap();
            t.failed_at("alice", A, now);
        }
        let e = t.admit_at("alice", A, now).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code.as_str(), e.retry_after_secs),
            (429, "too_many_attempts", Some(60))
        );
        assert!(e.message.contains("for this user from this address"), "{}", e.message);
        t.admit_at("alice", B, now).unwrap();
        t.admit_at("bob", A, now).unwrap();
        t.admit_at("alice", A, now + Duration::from_secs(61)).unwrap();
    }

    #[test]
    fn each_new_lockout_of_the_same_key_doubles_up_to_the_bound() {
        let t = throttle(2, 100, 100);
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..6 {
            t.failed_at("alice", A, now);
            t.failed_at("alice", A, now);
            let wait = t.admit_at("alice", A, now).unwrap_err().retry_after_secs.unwrap();
            waits.push(wait);
            now += Duration::from_secs(wait);
            t.admit_at("alice", A, now).unwrap();
        }
        assert_eq!(waits, [60, 120, 240, 480, 600, 600]);
        // A success forgets the strikes.
        t.succeeded_at("alice", A, now);
        t.failed_at("alice", A, now);
        t.failed_at("alice", A, now);
        assert_eq!(t.admit_at("alice", A, now).unwrap_err().retry_after_secs, Some(60));
    }

    #[test]
    fn an_address_is_refused_after_its_failures_whatever_the_user() {
        let t = throttle(100, 100, 5);
        let now = Instant::now();
        for i in 0..5 {
            t.failed_at(&format!("user-{i}"), A, now);
        }
        let e = t.admit_at("someone-else", A, now + Duration::from_secs(10)).unwrap_err();
        assert_eq!(e.retry_after_secs, Some(50));
        assert!(e.message.contains("from this address"), "{}", e.message);
        t.admit_at("someone-else", B, now).unwrap();
        t.admit_at("someone-else", None, now).unwrap();
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64_and_mapped_ones_as_ipv4() {
        let t = throttle(3, 100, 5);
        let now = Instant::now();
        let v6 =
            |last: u128| Some(IpAddr::V6(std::net::Ipv6Addr::from(0x2001_0db8_0000_0001_u128 << 64 | last)));
        // Five failures, each from another address of one /64: that network is refused, for
        // every user, and the user at any of its addresses after three.
        for i in 1..=5 {
            t.failed_at(&format!("user-{i}"), v6(i), now);
        }
        let e = t.admit_at("someone-else", v6(0xffff), now).unwrap_err();
        assert!(e.message.contains("from this address"), "{}", e.message);
        let next = Some(IpAddr::V6(std::net::Ipv6Addr::from((0x2001_0db8_0000_0002_u128 << 64) | 1)));
        t.admit_at("someone-else", next, now).unwrap();
        // An IPv4-mapped IPv6 address is its IPv4 address.
        for _ in 0..3 {
            t.failed_at("bob", A, now);
        }
        let mapped = Some(IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()));
        assert!(t.admit_at("bob", mapped, now).is_err());
    }

    #[test]
    fn a_flood_for_a_user_from_many_addresses_keeps_out_only_addresses_it_has_not_used() {
        let t = throttle(10, 20, 50);
        let now = Instant::now();
        t.succeeded_at("alice", A, now);
        // A thousand wrong passwords for alice from a hundred addresses.
        let mut refused = 0;
        for i in 0..1000 {
            match t.admit_at("alice", address(i % 100), now) {
                Ok(()) => t.failed_at("alice", address(i % 100), now),
                Err(_) => refused += 1,
            }
        }
        assert_eq!(refused, 980, "20 tries in all from addresses alice never used");
        let e = t.admit_at("alice", B, now).unwrap_err();
        assert!(e.message.contains("addresses it has not logged in from"), "{}", e.message);
        // Her own address still lets her in, and her typos there count only there.
        t.admit_at("alice", A, now).unwrap();
        t.failed_at("alice", A, now);
        t.admit_at("alice", A, now).unwrap();
        t.admit_at("bob", B, now).unwrap();
    }

    #[test]
    fn success_clears_the_user_at_its_address_but_not_the_address() {
        let t = throttle(2, 100, 3);
        let now = Instant::now();
        t.failed_at("alice", A, now);
        t.failed_at("alice", A, now);
        assert!(t.admit_at("alice", A, now).is_err());
        t.succeeded_at("alice", A, now);
        t.admit_at("alice", A, now).unwrap();
        t.failed_at("bob", A, now);
        assert!(t.admit_at("carol", A, now).is_err(), "the address has 3 failures");
    }

    #[test]
    fn an_address_is_known_for_a_bounded_time_and_number() {
        let mut known = KnownAddresses::default();
        let now = Instant::now();
        let a = A.unwrap();
        known.remember("alice", a, now);
        assert!(known.is_known("alice", a, now + KNOWN_FOR - Duration::from_secs(1)));
        assert!(!known.is_known("alice", a, now + KNOWN_FOR));
        assert!(!known.is_known("bob", a, now));
        for i in 0..KNOWN_PER_USER as u32 {
            known.remember("alice", address(i).unwrap(), now);
        }
        assert!(!known.is_known("alice", a, now), "the oldest gave way");
        assert_eq!(known.by_user["alice"].len(), KNOWN_PER_USER);
    }

    #[test]
    fn the_counters_stay_bounded() {
        let mut c: Counters<u32> = Counters::new(1);
        let now = Instant::now();
        let (window, max) = (Duration::from_secs(60), Duration::from_secs(600));
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            c.record_failure(i, window, max, now + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(c.windows.len(), MAX_TRACKED);
        assert!(c.blocked_for(&0, now).is_none(), "the oldest gave way");
        assert!(c.blocked_for(&(MAX_TRACKED as u32 + 999), now).is_some());
    }

    #[tokio::test]
    async fn a_check_waits_for_a_free_thread_and_gives_up_after_the_queue_time() {
        let config = AuthConfig { max_concurrent_hashes: 1, hash_queue_secs: 0, ..AuthConfig::default() };
        let t = LoginThrottle::new(&config, |password, hash| password == hash);
        let check = |p: &str| t.check("alice", A, SecretString::from(p.to_owned()), "right".into());
        assert!(check("right").await.unwrap());
        assert!(!check("wrong").await.unwrap());
        let busy = t.hashing.acquire().await.unwrap();
        assert_eq!(check("right").await.unwrap_err().code.as_str(), "unavailable");
        drop(busy);
        assert!(check("right").await.unwrap());
    }

    #[tokio::test]
    async fn a_queued_check_is_refused_when_the_limit_was_reached_while_it_waited() {
        let t = throttle(1, 100, 100);
        let busy = t.hashing.acquire().await.unwrap();
        t.failed("alice", A);
        drop(busy);
        let e = t.check("alice", A, SecretString::from("x".to_owned()), "x".into()).await.unwrap_err();
        assert_eq!(e.code.as_str(), "too_many_attempts");
    }
}
