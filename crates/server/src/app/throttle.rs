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
//! - failed logins are counted per user name and per source address over
//!   `auth.failure_window_secs`; past `auth.failures_per_user` or `auth.failures_per_address`
//!   further logins are answered `too_many_attempts` (429, `Retry-After`) before any hashing,
//!   whether the password would have been right or not, so guessing gets nowhere;
//! - the counters themselves are bounded (`MAX_TRACKED` keys each): when full, the entry whose
//!   window is oldest gives way.
//!
//! Counters are per server process: with `n` replicas an attacker gets `n` times the budget.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::SecretString;
use tokio::sync::{Semaphore, oneshot};

use super::error::AppError;
use crate::server::config::AuthConfig;

/// How many user names and how many addresses are tracked at most.
const MAX_TRACKED: usize = 50_000;

/// Failures of one key within the current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
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

    /// How long `key` must still wait, if it is over its limit.
    fn blocked_for<Q: Eq + Hash + ?Sized>(&self, key: &Q, window: Duration, now: Instant) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
    {
        let w = self.windows.get(key)?;
        let ends = w.started + window;
        (w.failures >= self.limit && ends > now).then(|| ends - now)
    }

    fn record_failure(&mut self, key: K, window: Duration, now: Instant) {
        if !self.windows.contains_key(&key) && self.windows.len() >= MAX_TRACKED {
            self.windows.retain(|_, w| w.started + window > now);
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
        let entry = self.windows.entry(key).or_insert(Window { started: now, failures: 0 });
        if entry.started + window <= now {
            *entry = Window { started: now, failures: 0 };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    fn clear<Q: Eq + Hash + ?Sized>(&mut self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
    {
        self.windows.remove(key);
    }
}

#[derive(Debug)]
struct Failures {
    by_user: Counters<String>,
    by_address: Counters<IpAddr>,
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
            failures: Mutex::new(Failures {
                by_user: Counters::new(config.failures_per_user.max(1)),
                by_address: Counters::new(config.failures_per_address.max(1)),
            }),
        }
    }

    /// Refuses a login for `username` from `source` that is over a failure limit, before any
    /// work is done.
    pub fn admit(&self, username: &str, source: Option<IpAddr>) -> Result<(), AppError> {
        self.admit_at(username, source, Instant::now())
    }

    fn admit_at(&self, username: &str, source: Option<IpAddr>, now: Instant) -> Result<(), AppError> {
        let failures = self.failures.lock().expect("not poisoned");
        let user = failures.by_user.blocked_for(username, self.window, now);
        let address = source.and_then(|a| failures.by_address.blocked_for(&a, self.window, now));
        match (user, address) {
            (None, None) => Ok(()),
            (u, a) => {
                let wait = u.unwrap_or_default().max(a.unwrap_or_default());
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let which = if a.is_some() { "from this address" } else { "for this user" };
                Err(AppError::too_many_attempts(
                    format!("too many failed logins {which}; retry in {secs} s"),
                    secs,
                ))
            }
        }
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
        let mut failures = self.failures.lock().expect("not poisoned");
        failures.by_user.record_failure(username.to_owned(), self.window, now);
        if let Some(a) = source {
            failures.by_address.record_failure(a, self.window, now);
        }
    }

    /// A successful login clears its user name's failures (not its address's: one right
    /// password must not buy an address a new budget for guessing other users).
    pub fn succeeded(&self, username: &str) {
        self.failures.lock().expect("not poisoned").by_user.clear(username);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_user: u32, per_address: u32) -> LoginThrottle {
        LoginThrottle::new(
            &AuthConfig {
                failures_per_user: per_user,
                failures_per_address: per_address,
                failure_window_secs: 60,
                ..AuthConfig::default()
            },
            |password, hash| password == hash,
        )
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));

    #[test]
    fn a_user_is_refused_after_its_failures_until_the_window_ends() {
        let t = throttle(3, 100);
        let now = Instant::now();
        for _ in 0..3 {
            t.admit_at("alice", A, now).unwrap();
            t.failed_at("alice", A, now);
        }
        let e = t.admit_at("alice", B, now).unwrap_err();
        assert_eq!(
            (e.status().as_u16(), e.code.as_str(), e.retry_after_secs),
            (429, "too_many_attempts", Some(60))
        );
        assert!(e.message.contains("for this user"), "{}", e.message);
        t.admit_at("bob", A, now).unwrap();
        t.admit_at("alice", A, now + Duration::from_secs(61)).unwrap();
    }

    #[test]
    fn an_address_is_refused_after_its_failures_whatever_the_user() {
        let t = throttle(100, 5);
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
    fn success_clears_the_user_but_not_the_address() {
        let t = throttle(2, 3);
        let now = Instant::now();
        t.failed_at("alice", A, now);
        t.failed_at("alice", A, now);
        assert!(t.admit_at("alice", B, now).is_err());
        t.succeeded("alice");
        t.admit_at("alice", B, now).unwrap();
        t.failed_at("bob", A, now);
        assert!(t.admit_at("carol", A, now).is_err(), "the address has 3 failures");
    }

    #[test]
    fn the_counters_stay_bounded() {
        let mut c: Counters<u32> = Counters::new(1);
        let now = Instant::now();
        let window = Duration::from_secs(60);
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            c.record_failure(i, window, now + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(c.windows.len(), MAX_TRACKED);
        assert!(c.blocked_for(&0, window, now).is_none(), "the oldest gave way");
        assert!(c.blocked_for(&(MAX_TRACKED as u32 + 999), window, now).is_some());
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
        let t = throttle(1, 100);
        let busy = t.hashing.acquire().await.unwrap();
        t.failed("alice", A);
        drop(busy);
        let e = t.check("alice", A, SecretString::from("x".to_owned()), "x".into()).await.unwrap_err();
        assert_eq!(e.code.as_str(), "too_many_attempts");
    }
}
