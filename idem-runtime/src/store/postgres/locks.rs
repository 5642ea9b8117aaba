//! Lock waits on idem's own connections: bounded, so a claim blocked behind an open
//! transactional step gives its connection back and waits like any other caller.
//!
//! The pools the store creates set the session's `lock_timeout` ([`LOCK_TIMEOUT`], a startup
//! parameter: no statement, no round trip). A transactional step holds its record's row lock
//! (its claim inserted or updated the row, uncommitted) until it commits; without a bound,
//! every other claim of the key would wait inside its statement for as long, each on a pool
//! connection, and a few slow steps would exhaust the pool for every key. With it:
//!
//! - a claim statement that times out means "an attempt is under way" (a step, or a claimer or
//!   completion committing right now): `Claim::Running` with attempt 0 (the row is uncommitted,
//!   its attempt cannot be read), and the engine waits, or refuses, per the call's options. The
//!   store remembers the key ([`Blocked`]): its next claims first ask, without waiting, whether a
//!   step holds the key ([`STEP_HELD`]), so a waiter that polls holds a connection for one
//!   round trip per look, not for the timeout.
//! - the other statements (completion, renew, release, forget, purge, journal appends) wait
//!   only on short autocommit statements, or on a step that took over an expired attempt: they
//!   retry ([`LockRetry`]) for about two seconds, then fail as any store error does.
//! - a step's claim statements take the key's advisory lock first, without waiting, in the same
//!   statement (`sql.rs`: `claim_step`, `claim_new_step`), so it never waits on another step's
//!   row; then they turn the timeout off for its own transaction (`set_config(.., true)`),
//!   because a statement error there would abort the step, the caller's writes with it (see
//!   `claim_with`).
//!
//! Why 50 ms (the default; `PostgresStoreBuilder::lock_timeout`, `idem_lock_timeout_ms`): an
//! ordinary claim waits on a row only for another autocommit statement's commit (one WAL
//! flush, a millisecond or a few), so 50 ms is rarely reached by anything but a step, and a
//! blocked claim costs its connection at most that long, once per key and process while the
//! step lasts. When something else does reach it (a commit stalled on a slow disk), the claim
//! says `running` a little early: the row was being written by an attempt, and the caller looks
//! again within its `wait`.
//!
//! Why a session setting, not a statement's: `lock_timeout` in the startup packet costs
//! nothing per statement, where `SET LOCAL` would need a transaction and a round trip on the
//! claim's hot path. Why not the advisory lock for every claim: that is one more function call
//! (and lock-manager entry) in every ordinary claim, for the rare claim that meets a step.
//!
//! Pools an application hands in (`from_pool`) are left as they are: their claims still wait
//! in their statement for a step of the same key.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::key::Key;

/// The `lock_timeout` of the store's own connections.
pub(super) const LOCK_TIMEOUT: Duration = Duration::from_millis(50);

/// $1 the step lock's id. Whether a transactional step holds the key: a shared advisory
/// lock, tried without waiting and released at the end of the statement (autocommit).
pub(super) const STEP_HELD: &str = "SELECT NOT pg_try_advisory_xact_lock_shared($1)";

/// The advisory lock id of a key: its first 8 bytes (a BLAKE3 hash, so spread evenly).
pub(super) fn step_lock_id(key: &Key) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&key.0[..8]);
    i64::from_le_bytes(first)
}

/// Whether `e` is a lock wait cut short by `lock_timeout` (SQLSTATE 55P03).
pub(super) fn lock_timed_out(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// Keys whose last claim timed out on a lock: their next claim first asks whether a step holds
/// them. Empty almost always: the claim's hot path reads one atomic.
#[derive(Debug, Default)]
pub(super) struct Blocked {
    any: AtomicBool,
    keys: Mutex<HashSet<Key>>,
}

impl Blocked {
    pub(super) fn contains(&self, key: &Key) -> bool {
        self.any.load(Ordering::Relaxed) && self.keys.lock().is_ok_and(|keys| keys.contains(key))
    }

    pub(super) fn insert(&self, key: &Key) {
        if let Ok(mut keys) = self.keys.lock() {
            // Bounded: a forgotten entry only costs its key one more round trip per claim.
            if keys.len() >= 10_000 {
                keys.clear();
            }
            keys.insert(*key);
            self.any.store(true, Ordering::Relaxed);
        }
    }

    pub(super) fn remove(&self, key: &Key) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.remove(key);
            if keys.is_empty() {
                self.any.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// Retries a statement whose lock wait timed out: 20 more tries, pauses from 1 ms doubling to
/// 100 ms (with the tries' own waits, about 2.5 s in all), then the error stands.
#[derive(Debug)]
pub(super) struct LockRetry {
    pause: Duration,
    tries: u32,
}

impl LockRetry {
    pub(super) fn new() -> Self {
        Self {
            pause: Duration::from_millis(1),
            tries: 0,
        }
    }

    /// After `result` of one try: whether to try again (after the pause).
    pub(super) async fn again<T>(&mut self, result: &Result<T, sqlx::Error>) -> bool {
        self.again_if(matches!(result, Err(e) if lock_timed_out(e)))
            .await
    }

    /// After a try that `timed_out` on a lock (or not): whether to try again (after the pause).
    pub(super) async fn again_if(&mut self, timed_out: bool) -> bool {
        if !timed_out || self.tries >= 20 {
            return false;
        }
        self.tries += 1;
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(100));
        true
    }
}
