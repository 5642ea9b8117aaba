//! The in-process store (`memory:`): for tests and single processes; nothing survives the process.
//!
//! It is also the reference semantics of [`Store`]: the SQL backends implement the same decisions
//! in one statement each.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{
    millis, AttemptRef, AvoidedCost, Claim, ClaimRequest, CostLine, Fence, ListFilter, Outcome,
    Store, StoredChunk, CANCELLED, RELEASED_TTL,
};
use crate::error::Error;
use crate::key::Key;
use crate::record::{
    now_millis, AttemptLog, AttemptOutcome, Costs, Millis, Record, Snapshot, SnapshotKind, Status,
};

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
    /// When records stop counting, soonest first: every claim drops the records that expired,
    /// so a long-lived process's memory follows its live keys, not every key it ever saw. An
    /// entry whose record changed since (claimed again, forgotten) is skipped when it comes up.
    expiries: BinaryHeap<Reverse<(Millis, Key)>>,
    /// Cost avoided by replays, by operation and unit: (amount, replays).
    avoided: BTreeMap<(String, String), (f64, u64)>,
}

impl State {
    /// Drops every record that expired by `now` (completed or failed past `expires_at`).
    fn drop_expired(&mut self, now: Millis) {
        while let Some(Reverse((at, key))) = self.expiries.peek().copied() {
            if at > now {
                return;
            }
            self.expiries.pop();
            let expired = self.entries.get(&key).is_some_and(|e| {
                e.record.status != Status::Running && e.record.expires_at == Some(at)
            });
            if let Some(e) = expired.then(|| self.entries.remove(&key)).flatten() {
                self.attempt_floor = self.attempt_floor.max(e.record.attempt);
            }
        }
    }

    /// Sets a finished record's expiry (and remembers it for [`State::drop_expired`]).
    fn expire_at(&mut self, key: Key, at: Millis) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.record.expires_at = Some(at);
            self.expiries.push(Reverse((at, key)));
        }
        // Entries of records claimed again or forgotten wait in the heap until their time: when
        // they outnumber the records, rebuild it from the records.
        if self.expiries.len() > 2 * self.entries.len() + 64 {
            self.expiries = self
                .entries
                .iter()
                .filter(|(_, e)| e.record.status != Status::Running)
                .filter_map(|(key, e)| e.record.expires_at.map(|at| Reverse((at, *key))))
                .collect();
        }
    }
}

#[derive(Debug)]
struct Entry {
    record: Record,
    attempts: Vec<AttemptLog>,
    /// The stream journal of attempt `chunks_attempt` (the latest that streamed).
    chunks: Vec<StoredChunk>,
    chunks_attempt: u64,
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
        cost: Option<&Costs>,
        now: Millis,
    ) {
        if let Some(log) = self.log_mut(attempt) {
            log.outcome = outcome;
            log.ended_at = Some(now);
            log.error = error.map(str::to_owned);
            log.cost = cost.filter(|c| !c.is_empty()).cloned();
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
        parent: r.parent,
        cost: r.cost.clone(),
    }
}

/// The line of `(op, unit)`, made on first use.
fn cost_line<'a>(
    lines: &'a mut BTreeMap<(String, String), CostLine>,
    op: &str,
    unit: &str,
) -> &'a mut CostLine {
    lines
        .entry((op.to_owned(), unit.to_owned()))
        .or_insert_with(|| CostLine::new(op, unit))
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
        state.drop_expired(now);
        let floor = state.attempt_floor;
        let log = |attempt| AttemptLog {
            attempt,
            worker: req.worker.to_owned(),
            started_at: now,
            ended_at: None,
            outcome: AttemptOutcome::Running,
            error: None,
            cost: None,
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
                        parent: req.parent,
                        cost: None,
                    },
                    attempts: vec![log(attempt)],
                    chunks: Vec::new(),
                    chunks_attempt: 0,
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
                cost: r.cost.clone(),
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
            entry.end_attempt(old, AttemptOutcome::Abandoned, None, None, now);
        }
        let r = &mut entry.record;
        r.op = req.op.to_owned();
        r.status = Status::Running;
        r.attempt = attempt;
        r.fingerprint = req.fingerprint.copied();
        r.snapshot = None;
        r.snapshot_kind = None;
        r.error = None;
        r.cost = None;
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
            let fence = match state.entries.get_mut(a.key) {
                Some(e) if e.record.status == Status::Running && e.record.attempt == a.attempt => {
                    let r = &mut e.record;
                    r.lease_until = None;
                    r.updated_at = now;
                    let cost = outcome.cost().filter(|c| !c.is_empty());
                    r.cost = cost.cloned();
                    let (logged, error, ttl) = match outcome {
                        Outcome::Snapshot {
                            kind, bytes, ttl, ..
                        } => {
                            r.status = Status::Completed;
                            r.snapshot = Some(bytes.to_vec());
                            r.snapshot_kind = Some(kind);
                            let logged = match kind {
                                SnapshotKind::Ok => AttemptOutcome::Completed,
                                SnapshotKind::Err => AttemptOutcome::Failed,
                            };
                            (logged, None, ttl)
                        }
                        Outcome::Failed { error, ttl, .. } => {
                            (AttemptOutcome::Failed, Some(error), ttl)
                        }
                        Outcome::Cancelled { ttl, .. } => {
                            (AttemptOutcome::Cancelled, Some(CANCELLED), ttl)
                        }
                    };
                    if let Some(error) = error {
                        r.status = Status::Failed;
                        r.error = Some(error.to_owned());
                    }
                    e.end_attempt(a.attempt, logged, error, cost, now);
                    Some(now.saturating_add(millis(ttl)))
                }
                Some(e) => {
                    let cost = outcome.cost();
                    e.end_attempt(
                        a.attempt,
                        AttemptOutcome::Fenced,
                        outcome.error(),
                        cost,
                        now,
                    );
                    None
                }
                None => None,
            };
            match fence {
                Some(expires_at) => {
                    state.expire_at(*a.key, expires_at);
                    Fence::Owned
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

    async fn children(&self, parent: &Key) -> Result<Vec<Record>, Error> {
        let state = self.state.lock();
        let mut out: Vec<Record> = state
            .entries
            .values()
            .map(|e| &e.record)
            .filter(|r| r.parent.is_some_and(|p| p.key == *parent))
            .map(without_snapshot)
            .collect();
        out.sort_by_key(|r| (r.parent.map(|p| p.position), r.created_at, r.key));
        Ok(out)
    }

    async fn add_avoided(&self, avoided: &[AvoidedCost]) -> Result<(), Error> {
        let mut state = self.state.lock();
        for a in avoided {
            let line = state
                .avoided
                .entry((a.op.clone(), a.unit.clone()))
                .or_insert((0.0, 0));
            line.0 += a.amount;
            line.1 += a.replays;
        }
        Ok(())
    }

    async fn costs(&self, op: Option<&str>) -> Result<Vec<CostLine>, Error> {
        let state = self.state.lock();
        let mut lines: BTreeMap<(String, String), CostLine> = BTreeMap::new();
        let wanted = |o: &str| op.is_none_or(|op| op == o);
        for e in state.entries.values().filter(|e| wanted(&e.record.op)) {
            for log in &e.attempts {
                for (unit, amount) in log.cost.iter().flat_map(|c| &c.0) {
                    cost_line(&mut lines, &e.record.op, unit).spent += amount;
                }
            }
        }
        for ((o, unit), (amount, replays)) in state.avoided.iter().filter(|((o, _), _)| wanted(o)) {
            let line = cost_line(&mut lines, o, unit);
            line.avoided += amount;
            line.replays += replays;
        }
        Ok(lines.into_values().collect())
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

    async fn append_chunks(
        &self,
        a: &AttemptRef<'_>,
        first: u64,
        chunks: &[StoredChunk],
    ) -> Result<Fence, Error> {
        {
            let mut state = self.state.lock();
            let Some(e) = state
                .entries
                .get_mut(a.key)
                .filter(|e| e.record.status == Status::Running && e.record.attempt == a.attempt)
            else {
                return Ok(Fence::Lost);
            };
            if e.chunks_attempt != a.attempt {
                e.chunks.clear();
                e.chunks_attempt = a.attempt;
            }
            // Chunk numbers already journaled keep their first copy; a gap cannot be filled.
            let have = e.chunks.len() as u64;
            let skip = usize::try_from(have.saturating_sub(first)).unwrap_or(usize::MAX);
            if first <= have {
                e.chunks.extend(chunks.iter().skip(skip).cloned());
            }
        }
        self.changed.notify_waiters();
        Ok(Fence::Owned)
    }

    async fn read_chunks(
        &self,
        key: &Key,
        attempt: u64,
        from: u64,
        limit: u32,
    ) -> Result<Vec<StoredChunk>, Error> {
        let state = self.state.lock();
        Ok(match state.entries.get(key) {
            Some(e) if e.chunks_attempt == attempt => {
                let from = usize::try_from(from).unwrap_or(usize::MAX);
                e.chunks
                    .iter()
                    .skip(from)
                    .take(limit as usize)
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        })
    }

    async fn count_chunks(&self, key: &Key, attempt: u64) -> Result<u64, Error> {
        let state = self.state.lock();
        Ok(match state.entries.get(key) {
            Some(e) if e.chunks_attempt == attempt => e.chunks.len() as u64,
            _ => 0,
        })
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
                    e.end_attempt(attempt, AttemptOutcome::Released, None, None, now);
                    state.expire_at(*key, now.saturating_add(millis(RELEASED_TTL)));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::SnapshotKind;

    fn request<'a>(key: &'a Key, ttl: Duration) -> ClaimRequest<'a> {
        ClaimRequest {
            op: "op",
            key,
            fingerprint: None,
            lease: Duration::from_secs(30),
            ttl,
            worker: "w",
            parent: None,
        }
    }

    async fn complete(store: &MemoryStore, key: &Key, ttl: Duration) {
        let Claim::Acquired { attempt, .. } = store.claim(&request(key, ttl)).await.unwrap() else {
            unreachable!("a fresh key is acquired")
        };
        let a = AttemptRef {
            op: "op",
            key,
            attempt,
        };
        let outcome = Outcome::Snapshot {
            kind: SnapshotKind::Ok,
            bytes: b"1",
            ttl,
            cost: None,
        };
        assert_eq!(store.complete(&a, outcome).await.unwrap(), Fence::Owned);
    }

    #[tokio::test]
    async fn expired_records_are_dropped_without_a_purge() {
        let store = MemoryStore::new();
        for i in 0..100u8 {
            complete(&store, &Key([i; 32]), Duration::from_millis(1)).await;
        }
        complete(&store, &Key([255; 32]), Duration::from_secs(3600)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Any later claim drops what expired, and only that.
        complete(&store, &Key([254; 32]), Duration::from_secs(3600)).await;
        let state = store.state.lock();
        assert_eq!(state.entries.len(), 2);
        assert!(
            state.attempt_floor >= 1,
            "fencing tokens still never go back"
        );
        assert!(state.expiries.len() <= 2);
    }

    #[tokio::test]
    async fn the_expiry_heap_stays_proportional_to_the_records() {
        let store = MemoryStore::new();
        let key = Key([1; 32]);
        for _ in 0..1_000 {
            let req = request(&key, Duration::from_secs(3600));
            let Claim::Acquired { attempt, .. } = store.claim(&req).await.unwrap() else {
                unreachable!("a failed key is claimed again")
            };
            let a = AttemptRef {
                op: "op",
                key: &key,
                attempt,
            };
            let failed = Outcome::Failed {
                error: "e",
                ttl: Duration::from_secs(3600),
                cost: None,
            };
            store.complete(&a, failed).await.unwrap();
        }
        // One record: the heap is rebuilt whenever it passes 2 x 1 + 64 entries.
        assert!(store.state.lock().expiries.len() <= 67);
    }
}
