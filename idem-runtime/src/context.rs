//! What a running body can ask about its own call: `current()`.

use std::borrow::Cow;
use std::future::Future;

use crate::key::Key;
use crate::lease::LeaseSignal;

tokio::task_local! {
    static CURRENT: CallInfo;
}

/// What a running body can know about its own call, from [`current()`].
#[derive(Debug, Clone)]
pub struct CallInfo {
    /// The operation name.
    pub op: Cow<'static, str>,
    /// The key.
    pub key: Key,
    /// This attempt's number (the fencing token): 1 for the first execution, higher after a
    /// failure or a takeover.
    pub attempt: u64,
    pub(crate) lease: LeaseSignal,
}

/// Two `CallInfo`s are equal when they describe the same attempt (op, key, attempt).
impl PartialEq for CallInfo {
    fn eq(&self, other: &Self) -> bool {
        (&self.op, &self.key, self.attempt) == (&other.op, &other.key, other.attempt)
    }
}

impl Eq for CallInfo {}

impl CallInfo {
    /// Whether this attempt has lost its lease: another attempt took the key over (this one
    /// stalled past its lease), or an operator released it. Its completion will be fenced; a
    /// body with side effects still ahead should stop. Needs the heartbeat (on by default).
    pub fn lease_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Completes when this attempt loses its lease (see [`CallInfo::lease_lost`]); never, while
    /// it keeps it. Race it against the remaining work with `tokio::select!`, or let idem drop
    /// the body for you with `abort_on_lease_loss`.
    pub fn on_lease_lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.lease.lost()
    }

    /// A value for an external API's `Idempotency-Key` header: the key, plus the attempt when a
    /// retry must not be deduplicated by the provider. Most providers want just the key.
    pub fn idempotency_key(&self) -> String {
        self.key.to_hex()
    }
}

/// The call whose body is running on this task, if any: its operation, key and attempt. Pass
/// `current().unwrap().key` as an `Idempotency-Key` to an external API that honours one, so even
/// a taken-over attempt does not make the provider do the work twice.
pub fn current() -> Option<CallInfo> {
    CURRENT.try_with(Clone::clone).ok()
}

pub(crate) async fn with_current<F: Future>(info: CallInfo, body: F) -> F::Output {
    CURRENT.scope(info, body).await
}
