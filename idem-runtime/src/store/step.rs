//! What the SQL stores' transactional steps share: what a claim made inside a step's
//! transaction means for its caller (run, replay, wait), and the snapshot its commit records.
//! Each store opens and commits its own kind of transaction around these.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{AttemptRef, Claim, Fence, Outcome};
use crate::call::KeyedCall;
use crate::error::Error;
use crate::record::SnapshotKind;
use crate::replay::{decode, fingerprints_differ, key_reuse, NoErrorCache};
use crate::wait::{Patience, POLL_CAP};

/// What to do after a claim made inside a step's transaction.
#[derive(Debug)]
pub(crate) enum Next<T> {
    /// The caller owns this attempt: hand it the open transaction. (Only PostgreSQL's steps
    /// read the attempt here; SQLite's take theirs from the claim made in the transaction.)
    Run(#[cfg_attr(not(feature = "postgres"), allow(dead_code))] u64),
    /// The key has a recorded outcome: drop the transaction, return this.
    Replay(T),
    /// Another attempt is running: drop the transaction, sleep this long, claim again.
    Sleep(Duration),
}

/// The waiting state of one `begin_step` (polling backs off like [`crate::Idem::call`]'s).
#[derive(Debug)]
pub(crate) struct StepWait(Patience);

impl StepWait {
    pub(crate) fn new() -> Self {
        Self(Patience::new(POLL_CAP))
    }

    /// What `claim` means for the step of `call`.
    pub(crate) fn next<T: DeserializeOwned>(
        &mut self,
        call: &KeyedCall,
        claim: Claim,
    ) -> Result<Next<T>, Error> {
        match claim {
            Claim::Acquired { attempt, .. } => Ok(Next::Run(attempt)),
            Claim::Completed(snapshot) => {
                if fingerprints_differ(snapshot.fingerprint.as_ref(), call.fingerprint.as_ref()) {
                    return Err(key_reuse(call));
                }
                decode(call, &snapshot, &NoErrorCache, std::convert::identity).map(Next::Replay)
            }
            Claim::KeyReuse => Err(key_reuse(call)),
            Claim::Running {
                attempt,
                lease_left,
            } => Ok(Next::Sleep(self.0.pause(call, attempt, lease_left)?)),
        }
    }
}

/// The snapshot a step's commit records, and the completion that writes it.
#[derive(Debug)]
pub(crate) struct StepSnapshot {
    bytes: Vec<u8>,
}

impl StepSnapshot {
    /// The snapshot of `value`, the step's result.
    pub(crate) fn of<T: Serialize>(call: &KeyedCall, value: &T) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(value).map_err(|source| Error::SnapshotEncode {
            op: call.op.to_string(),
            key: call.key,
            source,
        })?;
        Ok(Self { bytes })
    }

    /// The fenced completion of `attempt` of `call` that records it.
    pub(crate) fn completion<'a>(
        &'a self,
        call: &'a KeyedCall,
        attempt: u64,
    ) -> (AttemptRef<'a>, Outcome<'a>) {
        let attempt = AttemptRef {
            op: &call.op,
            key: &call.key,
            attempt,
        };
        let outcome = Outcome::Snapshot {
            kind: SnapshotKind::Ok,
            bytes: &self.bytes,
            ttl: call.options.ttl,
            cost: None,
        };
        (attempt, outcome)
    }
}

/// A step's completion inside its own transaction must own the record: the transaction holds
/// the record's lock from the claim on, so nobody can take it over. Checked anyway.
pub(crate) fn still_owned(fence: Fence, call: &KeyedCall) -> Result<(), Error> {
    match fence {
        Fence::Owned => Ok(()),
        Fence::Lost => Err(Error::store(
            "complete",
            &call.op,
            &call.key,
            "the step's claim was lost inside its own transaction",
        )),
    }
}
