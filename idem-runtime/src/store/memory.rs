//! The in-process store (`memory:`): for tests and single processes; nothing survives the process.
//!
//! It is also the reference semantics of [`Store`]: the SQL backends implement the same decisions
//! in one statement each.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{millis, AttemptRef, Claim, ClaimRequest, Fence, ListFilter, Outcome, Store};
use crate::error::Error;
use crate::key::Key;
use crate::record::{
    now_millis, AttemptLog, AttemptOutcome, Millis, Record, Snapshot, SnapshotKind, Status,
};

/// How long a released record is kept before purge may delete it.
const RELEASED_TTL: Duration = Duration::from_secs(24 * 3600);

/// An in-memory [`Store`]. Cheap to create; share it through `Idem` (which is `Clone`).
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<Key, Entry>,
    /// The highest attempt number ever deleted (by purge or forget): new records start above it,
    /// so fencing tokens never go backwards.
    attempt_floor: u64,
}

#[derive(Debug)]
struct Entry {
    record: Record,
    attempts: Vec<AttemptLog>,
}

impl Entry {
    fn log_mut(&mut self, attempt: u64) -> Option<&mut AttemptLog> {
        self.attempts
            .iter_mut()
            .rev()
            .find(|a| a.attempt == attempt)
    }

    fn end_attempt(
        &mut self,
        attempt: u64,
        outcome: AttemptOutcome,
        error: Option<&str>,
        now: Millis,
    ) {
        if let Some(log) = self.log_mut(attempt) {
            log.outcome = outcome;
            log.ended_at = Some(now);
            log.error = error.map(str::to_owned);
        }
    }
}

impl MemoryStore {
    /// A new, empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

/// A record as listings return it: everything but the snapshot, which is never copied.
fn without_snapshot(r: &Record) -> Record {
    Record {
        key: r.key,
        op: r.op.clone(),
        status: r.status,
        attempt: r.attempt,
        fingerprint: r.fingerprint,
        snapshot: None,
        snapshot_kind: r.snapshot_kind,
        error: r.error.clone(),
        lease_until: r.lease_until,
        worker: r.worker.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        expires_at: r.expires_at,
    }
}

fn is_expired(r: &Record, now: Millis) -> bool {
    r.expires_at.is_some_and(|e| e <= now)
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn claim(&self, req: &ClaimRequest<'_>) -> Result<Claim, Error> {
        let now = now_millis();
        let lease_until = now.saturating_add(millis(req.lease));
        let mut state = self.state.lock();
        let floor = state.attempt_floor;
        let log = |attempt| AttemptLog {
            attempt,
            worker: req.worker.to_owned(),
            started_at: now,
            ended_at: None,
            outcome: AttemptOutcome::Running,
            error: None,
        };
        let Some(entry) = state.entries.get_mut(req.key) else {
            let attempt = floor + 1;
            state.entries.insert(
                *req.key,
                Entry {
                    record: Record {
                        key: *req.key,
                        op: req.op.to_owned(),
                        status: Status::Running,
                        attempt,
                        fingerprint: req.fingerprint.copied(),
                        snapshot: None,
                        snapshot_kind: None,
                        error: None,
                        lease_until: Some(lease_until),
                        worker: Some(req.worker.to_owned()),
                        created_at: now,
                        updated_at: now,
                        expires_at: None,
                    },
                    attempts: vec![log(attempt)],
                },
            );
            return Ok(Claim::Acquired {
                attempt,
                took_over: None,
            });
        };

        let r = &entry.record;
        let live_completed = r.status == Status::Completed && !is_expired(r, now);
        let live_running = r.status == Status::Running && r.lease_until.is_some_and(|l| l > now);
        if live_completed || live_running {
            if let (Some(have), Some(want)) = (r.fingerprint, req.fingerprint) {
                if have != *want {
                    return Ok(Claim::KeyReuse);
                }
            }
        }
        if live_completed {
            let (Some(bytes), Some(kind)) = (r.snapshot.clone(), r.snapshot_kind) else {
                return Err(Error::Corrupt {
                    op: r.op.clone(),
                    key: r.key,
                    reason: "completed record without a snapshot".into(),
                });
            };
            return Ok(Claim::Completed(Snapshot {
                attempt: r.attempt,
                kind,
                bytes,
                expires_at: r.expires_at.unwrap_or(Millis::MAX),
                fingerprint: r.fingerprint,
            }));
        }
        if live_running {
            let left = r.lease_until.unwrap_or(now).saturating_sub(now);
            return Ok(Claim::Running {
                attempt: r.attempt,
                lease_left: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
            });
        }

        let took_over = (r.status == Status::Running).then_some(r.attempt);
        let attempt = r.attempt.max(floor) + 1;
        if let Some(old) = took_over {
            entry.end_attempt(old, AttemptOutcome::Abandoned, None, now);
        }
        let r = &mut entry.record;
        r.op = req.op.to_owned();
        r.status = Status::Running;
        r.attempt = attempt;
        r.fingerprint = req.fingerprint.copied();
        r.snapshot = None;
        r.snapshot_kind = None;
        r.error = None;
        r.lease_until = Some(lease_until);
        r.worker = Some(req.worker.to_owned());
        r.updated_at = now;
        r.expires_at = None;
        entry.attempts.push(log(attempt));
        Ok(Claim::Acquired { attempt, took_over })
    }

    async fn renew(&self, a: &AttemptRef<'_>, lease: Duration) -> Result<Fence, Error> {
        let now = now_millis();
        let mut state = self.state.lock();
        match state.entries.get_mut(a.key) {
            Some(e) if e.record.status == Status::Running && e.record.attempt == a.attempt => {
                e.record.lease_until = Some(now.saturating_add(millis(lease)));
                Ok(Fence::Owned)
            }
            _ => Ok(Fence::Lost),
        }
    }

    async fn complete(&self, a: &AttemptRef<'_>, outcome: Outcome<'_>) -> Result<Fence, Error> {
        let now = now_millis();
        let fence = {
            let mut state = self.state.lock();
            match state.entries.get_mut(a.key) {
                Some(e) if e.record.status == Status::Running && e.record.attempt == a.attempt => {
                    let r = &mut e.record;
                    r.lease_until = None;
                    r.updated_at = now;
                    match outcome {
                        Outcome::Snapshot { kind, bytes, ttl } => {
                            r.status = Status::Completed;
                            r.snapshot = Some(bytes.to_vec());
                            r.snapshot_kind = Some(kind);
                            r.expires_at = Some(now.saturating_add(millis(ttl)));
                            let logged = match kind {
                                SnapshotKind::Ok => AttemptOutcome::Completed,
                                SnapshotKind::Err => AttemptOutcome::Failed,
                            };
                            e.end_attempt(a.attempt, logged, None, now);
                        }
                        Outcome::Failed { error, ttl } => {
                            r.status = Status::Failed;
                            r.error = Some(error.to_owned());
                            r.expires_at = Some(now.saturating_add(millis(ttl)));
                            e.end_attempt(a.attempt, AttemptOutcome::Failed, Some(error), now);
                        }
                    }
                    Fence::Owned
                }
                Some(e) => {
                    e.end_attempt(a.attempt, AttemptOutcome::Fenced, outcome.error(), now);
                    Fence::Lost
                }
                None => Fence::Lost,
            }
        };
        self.changed.notify_waiters();
        Ok(fence)
    }

    async fn wait_for_change(&self, _key: &Key, max: Duration) {
        let _ = tokio::time::timeout(max, self.changed.notified()).await;
    }

    async fn get(&self, key: &Key) -> Result<Option<Record>, Error> {
        Ok(self.state.lock().entries.get(key).map(|e| e.record.clone()))
    }

    async fn attempts(&self, key: &Key) -> Result<Vec<AttemptLog>, Error> {
        Ok(self
            .state
            .lock()
            .entries
            .get(key)
            .map(|e| e.attempts.clone())
            .unwrap_or_default())
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Record>, Error> {
        let state = self.state.lock();
        let mut out: Vec<Record> = state
            .entries
            .values()
            .map(|e| &e.record)
            .filter(|r| filter.op.as_deref().is_none_or(|op| r.op == op))
            .filter(|r| filter.status.is_none_or(|s| r.status == s))
            .filter(|r| filter.updated_before.is_none_or(|t| r.updated_at < t))
            .map(without_snapshot)
            .collect();
        out.sort_by(|a, b| b.updated_at.cmp(&a.updated_at).then(a.key.cmp(&b.key)));
        out.truncate(filter.limit.unwrap_or(1000) as usize);
        Ok(out)
    }

    async fn forget(&self, key: &Key, force: bool) -> Result<bool, Error> {
        let now = now_millis();
        let removed = {
            let mut state = self.state.lock();
            // Checked and removed under one lock: one decision.
            if let Some(e) = state.entries.get(key) {
                let r = &e.record;
                if !force && r.status == Status::Running && r.lease_until.is_some_and(|l| l > now) {
                    return Err(Error::Running {
                        op: r.op.clone(),
                        key: *key,
                        attempt: r.attempt,
                    });
                }
            }
            match state.entries.remove(key) {
                Some(e) => {
                    state.attempt_floor = state.attempt_floor.max(e.record.attempt);
                    true
                }
                None => false,
            }
        };
        self.changed.notify_waiters();
        Ok(removed)
    }

    async fn release(&self, key: &Key) -> Result<bool, Error> {
        let now = now_millis();
        let released = {
            let mut state = self.state.lock();
            match state.entries.get_mut(key) {
                Some(e) if e.record.status == Status::Running => {
                    let attempt = e.record.attempt;
                    let r = &mut e.record;
                    r.status = Status::Failed;
                    r.error = Some("released by an operator".into());
                    r.lease_until = None;
                    r.updated_at = now;
                    r.expires_at = Some(now.saturating_add(millis(RELEASED_TTL)));
                    e.end_attempt(attempt, AttemptOutcome::Released, None, now);
                    true
                }
                _ => false,
            }
        };
        self.changed.notify_waiters();
        Ok(released)
    }

    async fn purge_expired(&self, batch: u32, abandoned_after: Duration) -> Result<u64, Error> {
        let now = now_millis();
        let abandoned_before = now.saturating_sub(millis(abandoned_after));
        let mut state = self.state.lock();
        let doomed: Vec<Key> = state
            .entries
            .values()
            .map(|e| &e.record)
            .filter(|r| {
                is_expired(r, now)
                    || (r.status == Status::Running
                        && r.lease_until.is_some_and(|l| l <= abandoned_before))
            })
            .take(batch as usize)
            .map(|r| r.key)
            .collect();
        for key in &doomed {
            if let Some(e) = state.entries.remove(key) {
                state.attempt_floor = state.attempt_floor.max(e.record.attempt);
            }
        }
        Ok(doomed.len() as u64)
    }
}
