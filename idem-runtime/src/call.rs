//! `Call`: what one idempotent call is (operation, key, fingerprint) and how it behaves (options).

use std::borrow::Cow;
use std::time::Duration;

use crate::error::Error;
use crate::key::{position_key, Fingerprint, IdemKey, Key, KeyBuilder};
use crate::store::ParentLink;

/// What a caller does when another attempt holds a live lease on its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnConflict {
    /// Wait (up to [`Options::wait`]) for the owner's outcome, then replay it. The default.
    #[default]
    Wait,
    /// Return [`Error::InProgress`](crate::Error::InProgress) at once.
    Error,
}

/// How a call behaves. The defaults suit an LLM call: a 30 s lease kept alive by a heartbeat,
/// replays for 24 h, and duplicates wait up to 5 minutes for the first caller's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long a completed (or failed) record counts: at least this long (memory and SQLite
    /// exactly; PostgreSQL up to 1% longer, so most completions are HOT updates). Default 24 h.
    pub ttl: Duration,
    /// How long an attempt owns the key without a heartbeat; a crashed worker is taken over after
    /// this. Default 30 s.
    pub lease: Duration,
    /// What to do when another attempt is running. Default [`OnConflict::Wait`].
    pub on_conflict: OnConflict,
    /// The longest a caller waits for another attempt (with [`OnConflict::Wait`]). Default 5 min.
    pub wait: Duration,
    /// Renew the lease while the body runs (every third of the lease). Default on. Turn it off
    /// only for bodies that always finish well within one lease.
    pub heartbeat: bool,
    /// Drop the body the moment its attempt loses its lease (taken over after a stall, or
    /// released by an operator), and return the new owner's outcome (or
    /// [`Error::LeaseLost`](crate::Error::LeaseLost)). Default off: the body runs to its end,
    /// its completion is fenced, and it can watch
    /// [`CallInfo::on_lease_lost`](crate::CallInfo::on_lease_lost) itself. Needs the heartbeat.
    pub abort_on_lease_loss: bool,
    /// How a streamed result is journaled, limited and replayed (calls made with
    /// `Idem::stream` or `#[idempotent(stream)]`; ignored by other calls).
    pub stream: crate::stream::StreamOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            lease: Duration::from_secs(30),
            on_conflict: OnConflict::Wait,
            wait: Duration::from_secs(300),
            heartbeat: true,
            abort_on_lease_loss: false,
            stream: crate::stream::StreamOptions::default(),
        }
    }
}

/// One idempotent call: the operation, its key, its payload fingerprint, and its options.
///
/// ```
/// use idem_runtime::Call;
/// use std::time::Duration;
///
/// let a = Call::new("generate_draft").part("Rust tips").part(&"en").ttl(Duration::from_secs(3600));
/// let b = Call::new("generate_draft").key(&("Rust tips", "en"));
/// assert_eq!(a.key_value(), b.key_value()); // parts one by one or as a tuple: the same key
/// ```
#[derive(Debug)]
pub struct Call {
    pub(crate) op: Cow<'static, str>,
    pub(crate) version: u32,
    key: KeyBuilder,
    verify: Option<KeyBuilder>,
    by_position: bool,
    pub(crate) options: Options,
}

impl Call {
    /// A call of version 1 of operation `op`.
    pub fn new(op: impl Into<Cow<'static, str>>) -> Self {
        Self::versioned(op, 1)
    }

    /// A call of version `version` of operation `op`. A new version is a fresh key space: the
    /// records of other versions are never replayed to it.
    pub fn versioned(op: impl Into<Cow<'static, str>>, version: u32) -> Self {
        let op = op.into();
        Self {
            key: KeyBuilder::new(&op, version),
            verify: None,
            by_position: false,
            op,
            version,
            options: Options::default(),
        }
    }

    /// Appends one key part.
    #[must_use]
    pub fn part<T: IdemKey + ?Sized>(mut self, part: &T) -> Self {
        self.key.part(part);
        self
    }

    /// Appends key parts (a tuple appends each element, so this equals calling
    /// [`Call::part`] for each).
    #[must_use]
    pub fn key<T: IdemKey + ?Sized>(self, parts: &T) -> Self {
        self.part(parts)
    }

    /// Keys this call by its parent and its position instead of key parts (the attribute's
    /// `key = parent`): the step at position `n` of a parent call has the same key in every
    /// run of that parent, whatever its arguments (a model's tool-call JSON, floats, handles).
    /// Key parts added with [`Call::part`] are ignored; [`Call::verify`] parts still check the
    /// payload. The operation name and version are checked on replay: a record made at this
    /// position by another operation (or with other `verify` inputs) is
    /// [`Error::Diverged`](crate::Error::Diverged), never replayed. Made outside any idempotent
    /// body, the call fails with [`Error::NoParent`](crate::Error::NoParent).
    ///
    /// Safe when the parent's body starts its steps in the same order in every run: the order
    /// must depend only on the parent's own key and on the recorded results of earlier steps
    /// (which replay identically), not on clocks, randomness or unrecorded reads.
    #[must_use]
    pub fn by_position(mut self) -> Self {
        self.by_position = true;
        self
    }

    /// Appends a payload part: the same key with a different payload is
    /// [`Error::KeyReuse`](crate::Error::KeyReuse) and the body does not run.
    #[must_use]
    pub fn verify<T: IdemKey + ?Sized>(mut self, part: &T) -> Self {
        let (op, version) = (&self.op, self.version);
        self.verify
            .get_or_insert_with(|| KeyBuilder::fingerprint(op, version))
            .part(part);
        self
    }

    /// Replaces all options.
    #[must_use]
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// How long the recorded outcome replays.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// The lease of each attempt.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.options.lease = lease;
        self
    }

    /// What to do when another attempt is running.
    #[must_use]
    pub fn on_conflict(mut self, on_conflict: OnConflict) -> Self {
        self.options.on_conflict = on_conflict;
        self
    }

    /// The longest wait for another attempt's outcome.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.options.wait = wait;
        self
    }

    /// Whether a heartbeat renews the lease while the body runs.
    #[must_use]
    pub fn heartbeat(mut self, on: bool) -> Self {
        self.options.heartbeat = on;
        self
    }

    /// Whether the body is dropped the moment its attempt loses its lease (see
    /// [`Options::abort_on_lease_loss`]).
    #[must_use]
    pub fn abort_on_lease_loss(mut self, on: bool) -> Self {
        self.options.abort_on_lease_loss = on;
        self
    }

    /// How a streamed result is journaled, limited and replayed (see [`StreamOptions`](crate::StreamOptions)).
    #[must_use]
    pub fn stream_options(mut self, options: crate::stream::StreamOptions) -> Self {
        self.options.stream = options;
        self
    }

    /// The operation name.
    pub fn op(&self) -> &str {
        &self.op
    }

    /// Computes the key (without consuming the call).
    pub fn key_value(&self) -> Key {
        Key(self.key.clone().finish())
    }

    /// The call with its key and fingerprint, and its link to the call whose body makes it
    /// (which also takes the next position in that body). Fails only for a call keyed by
    /// position that has no parent.
    pub(crate) fn keyed(self) -> Result<KeyedCall, Error> {
        let parent = crate::context::next_step();
        if self.by_position {
            let Some(link) = parent else {
                return Err(Error::NoParent {
                    op: self.op.into_owned(),
                });
            };
            // The operation and version are the fingerprint's first parts, so a record made
            // at this position by another operation never replays here.
            let verify = self
                .verify
                .unwrap_or_else(|| KeyBuilder::fingerprint(&self.op, self.version));
            return Ok(KeyedCall {
                key: position_key(&link.key, link.position),
                fingerprint: Some(Fingerprint(verify.finish())),
                op: self.op,
                options: self.options,
                parent: Some(link),
                by_position: true,
            });
        }
        Ok(KeyedCall {
            key: Key(self.key.finish()),
            fingerprint: self.verify.map(|v| Fingerprint(v.finish())),
            op: self.op,
            options: self.options,
            parent,
            by_position: false,
        })
    }
}

/// A call with its key and fingerprint computed.
#[derive(Debug)]
pub(crate) struct KeyedCall {
    pub(crate) op: Cow<'static, str>,
    pub(crate) key: Key,
    pub(crate) fingerprint: Option<Fingerprint>,
    pub(crate) options: Options,
    /// The call whose body makes this one, if any.
    pub(crate) parent: Option<ParentLink>,
    /// Keyed by `parent` (see [`Call::by_position`]).
    pub(crate) by_position: bool,
}
