//! Turning a recorded snapshot back into a call's result, and which `Err` values a call records
//! (`cache_errors`). Shared by the call engine and the SQL stores' transactional steps.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::call::Finished;
use crate::error::{encode_unless_idem, Error};
use crate::key::Fingerprint;
use crate::record::{Snapshot, SnapshotKind};

/// Which `Err` values a call records, and how.
pub(crate) trait ErrorPolicy<E> {
    /// The snapshot of an error to record, or `None` when this error is not recorded.
    fn encode(&self, err: &E) -> Option<Result<Vec<u8>, serde_json::Error>>;
    /// The error a snapshot holds, or `None` when this call site does not record errors.
    fn decode(&self, bytes: &[u8]) -> Option<Result<E, serde_json::Error>>;
}

/// Errors are not recorded: a failed body leaves a `failed` record that the next call retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoErrorCache;

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
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheErrorsWhen<P>(pub(crate) P);

impl<E, P> ErrorPolicy<E> for CacheErrorsWhen<P>
where
    E: Serialize + DeserializeOwned,
    P: Fn(&E) -> bool,
{
    fn encode(&self, err: &E) -> Option<Result<Vec<u8>, serde_json::Error>> {
        if !(self.0)(err) {
            return None;
        }
        encode_unless_idem(err).transpose()
    }
    fn decode(&self, bytes: &[u8]) -> Option<Result<E, serde_json::Error>> {
        Some(serde_json::from_slice(bytes))
    }
}

/// Whether a recorded fingerprint and the caller's differ (both present and unequal).
pub(crate) fn fingerprints_differ(have: Option<&Fingerprint>, want: Option<&Fingerprint>) -> bool {
    matches!((have, want), (Some(h), Some(w)) if h != w)
}

/// The error of a call whose key was used with another payload.
pub(crate) fn key_reuse(call: &Finished) -> Error {
    Error::KeyReuse {
        op: call.op.to_string(),
        key: call.key,
    }
}

/// The result a snapshot of `call` holds. idem's own errors become `E` through `from_idem`.
pub(crate) fn decode<T, E, P>(
    call: &Finished,
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
