//! Turning a recorded snapshot back into a call's result, and which `Err` values a call records
//! (`cache_errors`). Shared by the call engine and the SQL stores' transactional steps.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::KeyedCall;
use crate::error::{encode_unless_idem, Error};
use crate::key::Fingerprint;
use crate::record::{Snapshot, SnapshotKind};

/// Which `Err` values a call records, and how. (Public only for macro expansions, through
/// `__private`.)
pub trait ErrorPolicy<E> {
    /// The snapshot of an error to record, or `None` when this error is not recorded.
    fn encode(&self, err: &E) -> Option<Result<Vec<u8>, serde_json::Error>>;
    /// The error a snapshot holds, or `None` when this call site does not record errors.
    fn decode(&self, bytes: &[u8]) -> Option<Result<E, serde_json::Error>>;
}

/// Errors are not recorded: a failed body leaves a `failed` record that the next call retries.
#[derive(Debug, Clone, Copy)]
pub struct NoErrorCache;

impl<E> ErrorPolicy<E> for NoErrorCache {
    fn encode(&self, _: &E) -> Option<Result<Vec<u8>, serde_json::Error>> {
        None
    }
    fn decode(&self, _: &[u8]) -> Option<Result<E, serde_json::Error>> {
        None
    }
}

/// Errors the predicate calls permanent are recorded and replayed (`cache_errors`); an error
/// that carries one of idem's own errors never is, whatever the predicate says.
///
/// It holds plain function pointers made where the bounds are known to hold (`new`), so its
/// `ErrorPolicy` impl has no bounds of its own: a predicate or error type that does not fit is
/// reported once, where it is named, not again at every use.
pub struct CacheErrorsWhen<E, P> {
    predicate: P,
    accepts: fn(&P, &E) -> bool,
    encode: fn(&E) -> Result<Option<Vec<u8>>, serde_json::Error>,
    decode: fn(&[u8]) -> Result<E, serde_json::Error>,
}

impl<E, P> std::fmt::Debug for CacheErrorsWhen<E, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheErrorsWhen")
    }
}

impl<E, P> CacheErrorsWhen<E, P> {
    /// Records the errors `predicate` accepts.
    pub(crate) fn new(predicate: P) -> Self
    where
        E: Serialize + DeserializeOwned,
        P: Fn(&E) -> bool,
    {
        Self::checked(predicate, |predicate, err| predicate(err))
    }

    /// Records the errors `accepts(&predicate, err)` accepts.
    pub(crate) fn checked(predicate: P, accepts: fn(&P, &E) -> bool) -> Self
    where
        E: Serialize + DeserializeOwned,
    {
        Self {
            predicate,
            accepts,
            encode: encode_unless_idem::<E>,
            decode: |bytes| serde_json::from_slice(bytes),
        }
    }
}

impl<E, P> ErrorPolicy<E> for CacheErrorsWhen<E, P> {
    fn encode(&self, err: &E) -> Option<Result<Vec<u8>, serde_json::Error>> {
        if !(self.accepts)(&self.predicate, err) {
            return None;
        }
        (self.encode)(err).transpose()
    }
    fn decode(&self, bytes: &[u8]) -> Option<Result<E, serde_json::Error>> {
        Some((self.decode)(bytes))
    }
}

/// Whether a recorded fingerprint and the caller's differ (both present and unequal).
pub(crate) fn fingerprints_differ(have: Option<&Fingerprint>, want: Option<&Fingerprint>) -> bool {
    matches!((have, want), (Some(h), Some(w)) if h != w)
}

/// The error of a call whose key was used with another payload.
/// The error of a call whose key is live with another fingerprint: [`Error::KeyReuse`], or
/// for a step keyed by its position [`Error::Diverged`] (its fingerprint is its operation and
/// `verify` inputs, so the pipeline changed).
pub(crate) fn key_reuse(call: &KeyedCall) -> Error {
    diverged(call, None).unwrap_or_else(|| Error::KeyReuse {
        op: call.op.to_string(),
        key: call.key,
    })
}

/// [`key_reuse`], naming what the record at a diverged position was made by (one read of the
/// record, only on this error path).
pub(crate) async fn key_reuse_read(store: &dyn crate::Store, call: &KeyedCall) -> Error {
    if !call.by_position {
        return key_reuse(call);
    }
    let recorded = store.get(&call.key).await.ok().flatten().map(|r| r.op);
    diverged(call, recorded).unwrap_or_else(|| key_reuse(call))
}

fn diverged(call: &KeyedCall, recorded_op: Option<String>) -> Option<Error> {
    let parent = call.parent.filter(|_| call.by_position)?;
    let recorded = match recorded_op {
        Some(op) if op == call.op => "the same operation with different `verify` inputs".to_owned(),
        Some(op) => format!("operation `{op}`"),
        None => "another operation, or this one with different `verify` inputs".to_owned(),
    };
    Some(Error::Diverged {
        op: call.op.to_string(),
        parent: parent.key,
        position: parent.position,
        recorded,
    })
}

/// The result a snapshot of `call` holds. idem's own errors become `E` through `from_idem`.
pub(crate) fn decode<T, E, P>(
    call: &KeyedCall,
    snapshot: &Snapshot,
    policy: &P,
    from_idem: fn(Error) -> E,
) -> Result<T, E>
where
    T: DeserializeOwned,
    P: ErrorPolicy<E>,
{
    let undecodable = |source| Error::SnapshotDecode {
        op: call.op.to_string(),
        key: call.key,
        attempt: snapshot.attempt,
        source,
    };
    match snapshot.kind {
        SnapshotKind::Ok => {
            serde_json::from_slice(&snapshot.bytes).map_err(|e| from_idem(undecodable(e)))
        }
        SnapshotKind::Err => match policy.decode(&snapshot.bytes) {
            Some(Ok(err)) => Err(err),
            Some(Err(e)) => Err(from_idem(undecodable(e))),
            None => Err(from_idem(Error::Corrupt {
                op: call.op.to_string(),
                key: call.key,
                reason: "the record holds an error value, but this call site does not use \
                         `cache_errors`; forget the key or restore `cache_errors`"
                    .into(),
            })),
        },
    }
}
