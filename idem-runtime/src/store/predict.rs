//! Which claim statement to send first: a per-operation guess of whether the next key is new
//! (the SQL stores: PostgreSQL picks its insert or its read, SQLite whether to read first).
//!
//! A claim of a new key is cheapest as a plain `INSERT ... ON CONFLICT DO NOTHING` (as cheap as
//! hand-written SQL); a replay is cheapest as a plain read. One statement that does both pays
//! for the other's work every time (a data-modifying CTE cost replays measurably more server
//! time than a read: docs/performance.md). Operations are usually one or the other for long stretches (a pipeline
//! stage mostly sees new items; a retry storm mostly replays), so the store remembers, per
//! operation, what its recent claims found, like a branch predictor: a two-bit saturating
//! counter in one of 64 slots chosen by a hash of the operation name.
//!
//! A wrong guess costs time, never correctness: both statements decide race-free on their own.
//! Either wrong guess costs one extra round trip that decides nothing and writes nothing
//! (an insert that finds the key's record, or a read that finds none).
//!
//! On SQLite a guessed replay is read first (a pure read, which never waits for the write lock,
//! so a replay is not held up by a writer such as an open transactional step) and a guessed new
//! key goes first to a plain insert (as cheap as the hand-written one), then, if the key has a
//! record, to the claim statement; a wrong guess costs the read, or an insert that decides
//! nothing (and waits for the write lock like any write).

use std::sync::atomic::{AtomicU8, Ordering};

/// Slots (a power of two). Operations that share a slot share a guess.
const SLOTS: usize = 64;
/// Counter values 0..=3; 2 and 3 guess "new key".
const MAX: u8 = 3;
const GUESS_NEW: u8 = 2;

/// Per-operation guesses of one store.
#[derive(Debug)]
pub(crate) struct Predictor {
    slots: [AtomicU8; SLOTS],
}

impl Default for Predictor {
    fn default() -> Self {
        // A new process starts by guessing "new key": its first calls are usually work it has
        // not done yet, and one wrong guess flips a slot only half way.
        Self {
            slots: std::array::from_fn(|_| AtomicU8::new(GUESS_NEW)),
        }
    }
}

impl Predictor {
    /// Whether `op`'s next claim is probably of a key without a record.
    pub(crate) fn guess_new(&self, op: &str) -> bool {
        self.slot(op).load(Ordering::Relaxed) >= GUESS_NEW
    }

    /// Records what a claim of `op` found: `new` when the key had no record.
    pub(crate) fn learn(&self, op: &str, new: bool) {
        let slot = self.slot(op);
        let now = slot.load(Ordering::Relaxed);
        let next = if new {
            (now + 1).min(MAX)
        } else {
            now.saturating_sub(1)
        };
        if next != now {
            // A lost race between two learners only loses one step of one guess.
            slot.store(next, Ordering::Relaxed);
        }
    }

    fn slot(&self, op: &str) -> &AtomicU8 {
        // FNV-1a: a few nanoseconds for an operation name; quality barely matters here.
        let hash = op.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.slots[(hash as usize) & (SLOTS - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::Predictor;

    #[test]
    fn follows_what_claims_find_with_hysteresis() {
        let p = Predictor::default();
        assert!(p.guess_new("a"), "a new process guesses new keys");
        p.learn("a", false);
        assert!(!p.guess_new("a"), "one replay flips a fresh slot");
        p.learn("a", true);
        assert!(p.guess_new("a"));
        p.learn("a", true);
        p.learn("a", true);
        p.learn("a", false);
        assert!(
            p.guess_new("a"),
            "a saturated slot needs two replays to flip"
        );
        p.learn("a", false);
        assert!(!p.guess_new("a"));
        for _ in 0..10 {
            p.learn("a", false);
        }
        p.learn("a", true);
        assert!(!p.guess_new("a"), "and two new keys to flip back");
        p.learn("a", true);
        assert!(p.guess_new("a"));
    }
}
