//! The one error type of idem: every message names the operation and, where there is one, the key.

use std::time::Duration;

use crate::key::Key;

/// A boxed source error from a store backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in idem. The annotated function's own error type must implement
/// `From<idem_runtime::Error>`, so these reach its caller as that type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No store was configured for this call: no `store = ...`, no enclosing `Idem::scope`, and no
    /// process-wide default.
    #[error(
        "idem: no store for operation `{op}`: pass `store = <expr>` in the attribute, run the call \
         inside `Idem::scope`, or install a process-wide default with `Idem::set_default`"
    )]
    NoStore {
        /// The operation.
        op: String,
    },

    /// Another attempt holds a live lease on this key, and waiting was not allowed or ran out.
    #[error("idem: operation `{op}` key {key} is in progress (attempt {attempt}) after waiting {waited:?}")]
    InProgress {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The attempt that holds the lease.
        attempt: u64,
        /// How long this caller waited before giving up.
        waited: Duration,
    },

    /// The key was used before with a different payload fingerprint (`verify = ...`); the body
    /// did not run.
    #[error(
        "idem: operation `{op}` key {key} was already used with a different payload \
         (the `verify` arguments differ); the body did not run. Use a new key for a new request"
    )]
    KeyReuse {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
    },

    /// A `forget` was refused: the key's attempt still holds a live lease, so forgetting it
    /// would let a second attempt run beside the live one. Nothing was deleted.
    #[error(
        "idem: forget of operation `{op}` key {key} refused: attempt {attempt} is running with a \
         live lease, and forgetting it would let a second attempt run beside it. Wait for it to \
         finish, `release` it first (`idem release {key}`), or force the forget \
         (`Idem::force_forget`, `idem forget --force {key}`)"
    )]
    Running {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The attempt that holds the lease.
        attempt: u64,
    },

    /// The store failed or could not be reached. Fail closed: when this comes from a claim, the
    /// body did not run.
    #[error("idem: store {action} failed for operation `{op}` key {key}: {source}")]
    Store {
        /// What the store was doing: `claim`, `complete`, `renew`, ...
        action: &'static str,
        /// The operation (empty for store-wide actions).
        op: String,
        /// The key (all zeroes for store-wide actions).
        key: Key,
        /// The backend's error.
        #[source]
        source: BoxError,
    },

    /// The store could not be opened or migrated.
    #[error("idem: cannot open store `{url}`: {reason}")]
    Open {
        /// The URL, with any password removed.
        url: String,
        /// Why.
        reason: String,
        /// The backend's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A recorded snapshot could not be decoded as the function's return type (the type changed,
    /// or the row is corrupt). The body did not run again.
    #[error(
        "idem: the recorded result of operation `{op}` key {key} (attempt {attempt}) cannot be \
         decoded: {source}. If the return type changed on purpose, bump `version`; to re-run this \
         key, forget it (`idem forget {key}`)"
    )]
    SnapshotDecode {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The attempt that recorded the snapshot.
        attempt: u64,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// The result could not be encoded as a snapshot; the record is marked failed.
    #[error(
        "idem: the result of operation `{op}` key {key} cannot be encoded as a snapshot: {source}"
    )]
    SnapshotEncode {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// The encoded result is larger than the configured limit; the record is marked failed.
    #[error(
        "idem: the result of operation `{op}` key {key} is {size} bytes, over the snapshot limit \
         of {limit} bytes (raise it with `IdemBuilder::max_snapshot_bytes`)"
    )]
    SnapshotTooLarge {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A row in the store breaks the documented record format.
    #[error("idem: corrupt record for operation `{op}` key {key}: {reason}")]
    Corrupt {
        /// The operation (as far as it could be read).
        op: String,
        /// The key.
        key: Key,
        /// What is wrong.
        reason: String,
    },

    /// A configuration value is invalid.
    #[error("idem: invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// Builds [`Error::Store`] from a backend error.
    pub fn store(action: &'static str, op: &str, key: &Key, source: impl Into<BoxError>) -> Self {
        Error::Store {
            action,
            op: op.to_owned(),
            key: *key,
            source: source.into(),
        }
    }

    /// True for [`Error::Store`]: the store could not be reached or failed.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, Error::Store { .. })
    }
}
