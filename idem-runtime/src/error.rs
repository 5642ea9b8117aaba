//! The one error type of idem: every message names the operation and, where there is one, the key.

use std::borrow::Cow;
use std::cell::Cell;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
         inside `Idem::scope`, or install a process-wide default with `Idem::set_default`. A task \
         started with `tokio::spawn` does not inherit the scope of the task that spawned it: \
         wrap the spawned future in `idem.scope(...)` too"
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

    /// A step keyed by its position in its parent (`key = parent`) met a record made by a
    /// different operation, or with different `verify` inputs: the pipeline changed since that
    /// run recorded it, and replaying the recorded snapshot would hand this step another
    /// step's result. Nothing ran.
    #[error(
        "idem: step {position} of parent {parent} diverged: operation `{op}` meets a record made \
         by {recorded}; the pipeline changed since this run recorded its steps. \
         Forget the run (`idem forget {parent}` and its steps) to start it afresh, or key the \
         changed step by its arguments (`key = (...)`) instead of its position"
    )]
    Diverged {
        /// The operation called at this position now.
        op: String,
        /// The parent call's key (the step's own is derived from it and the position).
        parent: Key,
        /// The step's position in its parent, from 0.
        position: u32,
        /// What the record says ran there: "operation `x`", or "the same operation with
        /// different `verify` inputs" (or "another operation or other inputs" when the record
        /// could not be read).
        recorded: String,
    },

    /// A call keyed by its parent (`key = parent`) was made outside the body of any idempotent
    /// call, so it has no position to be keyed by. Nothing ran.
    #[error(
        "idem: operation `{op}` is keyed by its parent (`key = parent`) but was called outside \
         any idempotent call's body (or in a task spawned from one, which does not inherit it); \
         call it from its pipeline's body, or give it a key of its own"
    )]
    NoParent {
        /// The operation.
        op: String,
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

    /// The attempt lost its lease while its body ran (taken over after a stall, or released by
    /// an operator), the call asked to abort the body then (`abort_on_lease_loss`), and the key
    /// has no recorded outcome to converge on.
    #[error(
        "idem: operation `{op}` key {key}: attempt {attempt} lost its lease while its body ran \
         and was aborted; the key has no recorded outcome yet, call again"
    )]
    LeaseLost {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The attempt that lost its lease.
        attempt: u64,
    },

    /// A chunk of a streamed result could not be encoded. The stream ends with this error; the
    /// chunks journaled before it are kept and the record is marked failed.
    #[error(
        "idem: chunk {chunk} of the stream of operation `{op}` key {key} cannot be encoded: {source}"
    )]
    ChunkEncode {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The chunk's number (from 0).
        chunk: u64,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// A chunk of a streamed result is over the chunk size limit. The stream ends with this
    /// error; the chunks journaled before it are kept and the record is marked failed.
    #[error(
        "idem: chunk {chunk} of the stream of operation `{op}` key {key} is {size} bytes, over          the chunk limit of {limit} bytes (raise `StreamOptions::max_chunk_bytes`)"
    )]
    ChunkTooLarge {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The chunk's number (from 0).
        chunk: u64,
        /// Its encoded size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    /// A streamed result grew past the configured maximum number of chunks or bytes. The stream
    /// ends with this error; the chunks journaled before it are kept and the record is marked
    /// failed.
    #[error(
        "idem: the stream of operation `{op}` key {key} is longer than its limit of {limit}          (raise `StreamOptions::max_chunks` or `max_bytes`)"
    )]
    StreamTooLong {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// Which limit, e.g. `1000000 chunks` or `268435456 bytes`.
        limit: String,
    },

    /// A journaled chunk could not be decoded as the stream's chunk type (the type changed, or
    /// the row is corrupt). The stream ends with this error.
    #[error(
        "idem: chunk {chunk} of the recorded stream of operation `{op}` key {key} (attempt          {attempt}) cannot be decoded: {source}. If the chunk type changed on purpose, bump          `version`; to re-run this key, forget it (`idem forget {key}`)"
    )]
    ChunkDecode {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The attempt that journaled it.
        attempt: u64,
        /// The chunk's number (from 0).
        chunk: u64,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },

    /// This call followed a stream that another attempt was generating, and that attempt ended
    /// without completing it (its body failed, its caller dropped it, an operator released it, or
    /// its worker died and its lease ran out). The chunks it journaled were delivered; the
    /// stream ends with this error. Call again: the next call starts a new generation.
    #[error(
        "idem: the stream of operation `{op}` key {key} that this call followed (attempt          {attempt}) ended without completing after {chunks} chunks; call again to generate it anew"
    )]
    StreamInterrupted {
        /// The operation.
        op: String,
        /// The key.
        key: Key,
        /// The attempt that was generating it.
        attempt: u64,
        /// How many chunks this call received before it ended.
        chunks: u64,
    },

    /// A database error from the caller's own statements in a step (`?` on a `sqlx::Error` in
    /// a body whose error type is `idem_runtime::Error`), with its source kept.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("idem: database error: {0}")]
    Database(#[from] sqlx::Error),

    /// A queue message that cannot be handled as it is: it has no message id and the consumer
    /// has no key function, or its payload does not decode. It is never retried: the consumer
    /// dead-letters it (with this error's text) and acks it only once the dead letter is
    /// published.
    #[error("idem: message {message} on `{source_name}` for operation `{op}` cannot be handled: {reason}")]
    BadMessage {
        /// The operation the consumer runs.
        op: String,
        /// The stream or queue it came from.
        source_name: String,
        /// What identifies the message there (its id, or its broker sequence / delivery tag).
        message: String,
        /// Why it cannot be handled.
        reason: String,
    },

    /// The message broker failed or could not be reached (connect, pull, ack, publish). Nothing
    /// was acked that was not recorded: an unacked message is delivered again.
    #[error("idem: broker {action} failed on `{target}` for operation `{op}`: {source}")]
    Broker {
        /// What the consumer or relay was doing: `connect`, `pull`, `ack`, `publish`, ...
        action: &'static str,
        /// The operation (empty where there is none, like a connect).
        op: String,
        /// The stream, subject, queue or URL (without its password).
        target: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },

    /// An idem error read back from its serialized form (an error type that carries
    /// `idem_runtime::Error` and derives `Deserialize`). idem never records its own errors as
    /// outcomes, so this appears only where an application deserializes one itself.
    #[error("{message}")]
    Decoded {
        /// The kind of the original error (`in_progress`, `store`, ...: see [`Error::kind`]).
        kind: String,
        /// Its message.
        message: String,
    },
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

    /// Builds [`Error::Broker`] from a broker client's error.
    pub fn broker(
        action: &'static str,
        op: &str,
        target: &str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Broker {
            action,
            op: op.to_owned(),
            target: crate::store::redact_url(target),
            source: source.into(),
        }
    }

    /// True for [`Error::Store`]: the store could not be reached or failed.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, Error::Store { .. })
    }

    /// A short, stable name of the variant (`no_store`, `in_progress`, `key_reuse`,
    /// `diverged`, `no_parent`, `store`,
    /// `open`, `snapshot_decode`, `snapshot_encode`, `snapshot_too_large`, `corrupt`, `config`,
    /// `lease_lost`, `running`, `chunk_encode`, `chunk_too_large`, `stream_too_long`,
    /// `chunk_decode`, `stream_interrupted`, `bad_message`, `broker`), as it appears in the serialized form.
    pub fn kind(&self) -> &str {
        match self {
            Error::NoStore { .. } => "no_store",
            Error::InProgress { .. } => "in_progress",
            Error::KeyReuse { .. } => "key_reuse",
            Error::Diverged { .. } => "diverged",
            Error::NoParent { .. } => "no_parent",
            Error::Store { .. } => "store",
            Error::Open { .. } => "open",
            Error::SnapshotDecode { .. } => "snapshot_decode",
            Error::SnapshotEncode { .. } => "snapshot_encode",
            Error::SnapshotTooLarge { .. } => "snapshot_too_large",
            Error::Corrupt { .. } => "corrupt",
            Error::Config(_) => "config",
            Error::LeaseLost { .. } => "lease_lost",
            Error::Running { .. } => "running",
            Error::ChunkEncode { .. } => "chunk_encode",
            Error::ChunkTooLarge { .. } => "chunk_too_large",
            Error::StreamTooLong { .. } => "stream_too_long",
            Error::ChunkDecode { .. } => "chunk_decode",
            Error::StreamInterrupted { .. } => "stream_interrupted",
            Error::BadMessage { .. } => "bad_message",
            Error::Broker { .. } => "broker",
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Error::Database(_) => "database",
            Error::Decoded { kind, .. } => kind,
        }
    }
}

thread_local! {
    /// Set when an [`Error`] is serialized on this thread: how the engine tells that an `Err`
    /// value it was about to record carries one of idem's own errors.
    static SERIALIZED: Cell<bool> = const { Cell::new(false) };
}

/// The serialized form of an [`Error`]: its kind and its message. Sources are not kept (they
/// are backend errors that do not serialize); the message includes their text.
#[derive(Serialize, Deserialize)]
struct Repr<'a> {
    kind: Cow<'a, str>,
    message: Cow<'a, str>,
}

impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SERIALIZED.set(true);
        Repr {
            kind: Cow::Borrowed(self.kind()),
            message: Cow::Owned(self.to_string()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = Repr::deserialize(deserializer)?;
        Ok(Error::Decoded {
            kind: repr.kind.into_owned(),
            message: repr.message.into_owned(),
        })
    }
}

/// Encodes an `Err` value to record, or `Ok(None)` when it carries one of idem's own errors
/// (an `InProgress` or a store failure that reached the body's error type through `From`):
/// those describe this moment, not the operation, and are never recorded as outcomes.
pub(crate) fn encode_unless_idem<E: Serialize + ?Sized>(
    err: &E,
) -> Result<Option<Vec<u8>>, serde_json::Error> {
    SERIALIZED.set(false);
    let bytes = serde_json::to_vec(err);
    if SERIALIZED.replace(false) {
        return Ok(None);
    }
    bytes.map(Some)
}
