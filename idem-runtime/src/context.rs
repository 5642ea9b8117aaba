//! What a running body can ask about its own call: `current()`.

use std::borrow::Cow;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::key::Key;
use crate::lease::LeaseSignal;
use crate::record::Costs;
use crate::store::ParentLink;

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
    /// The call whose body made this one, and this call's position among its steps, if it was
    /// made inside another idempotent call's body (on the same task).
    pub parent: Option<ParentLink>,
    pub(crate) lease: LeaseSignal,
    /// What this attempt's body counted so far: its steps and its cost.
    pub(crate) body: Arc<BodyState>,
}

/// What one attempt's body counts while it runs (shared by its `CallInfo` clones and the
/// attempt that records its outcome).
#[derive(Debug, Default)]
pub(crate) struct BodyState {
    /// How many steps this body has started: the next one's position.
    steps: AtomicU32,
    /// What the body reported it cost.
    costs: parking_lot::Mutex<Costs>,
}

impl BodyState {
    /// The cost reported so far, if any.
    pub(crate) fn costs(&self) -> Option<Costs> {
        let costs = self.costs.lock();
        (!costs.is_empty()).then(|| costs.clone())
    }
}

/// Two `CallInfo`s are equal when they describe the same attempt (op, key, attempt).
impl PartialEq for CallInfo {
    fn eq(&self, other: &Self) -> bool {
        (&self.op, &self.key, self.attempt) == (&other.op, &other.key, other.attempt)
    }
}

impl Eq for CallInfo {}

impl CallInfo {
    /// What a body knows about its call, before the body starts.
    pub(crate) fn new(
        op: Cow<'static, str>,
        key: Key,
        attempt: u64,
        parent: Option<ParentLink>,
        lease: LeaseSignal,
        body: Arc<BodyState>,
    ) -> Self {
        Self {
            op,
            key,
            attempt,
            parent,
            lease,
            body,
        }
    }

    /// Reports that this attempt cost `amount` of `unit` (`"tokens"`, `"usd"`, ...); call it as
    /// often as the body pays (amounts add up). The attempt's log line keeps the total, whatever
    /// its outcome; every replay of its recorded outcome counts it as avoided. Metrics
    /// `idem_cost_spent` and `idem_cost_avoided`, `idem stats` and [`crate::Idem::costs`] show
    /// both. Amounts that are not finite numbers are ignored (with a warning).
    ///
    /// ```
    /// # use idem_runtime::{Call, Idem, Error};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let idem = Idem::memory();
    /// for _ in 0..3 {
    ///     let _: String = idem
    ///         .call(Call::new("draft").key(&"rust tips"), || async {
    ///             if let Some(call) = idem_runtime::current() {
    ///                 call.add_cost("tokens", 1_200.0);
    ///                 call.add_cost("usd", 0.0036);
    ///             }
    ///             Ok::<_, Error>("a draft".to_owned())
    ///         })
    ///         .await?;
    /// }
    /// let ledger = idem.costs(Some("draft")).await?;
    /// let tokens = ledger.iter().find(|l| l.unit == "tokens").map(|l| (l.spent, l.avoided));
    /// assert_eq!(tokens, Some((1_200.0, 2_400.0))); // paid once, replayed twice
    /// # Ok(()) }
    /// ```
    pub fn add_cost(&self, unit: &str, amount: f64) {
        if !amount.is_finite() {
            tracing::warn!(
                unit,
                amount,
                "idem: a cost that is not a finite number is ignored"
            );
            return;
        }
        self.body.costs.lock().add(unit, amount);
    }

    /// The link a step made now inside this body records: this call's key and the step's
    /// position. Positions count the steps started by this attempt of the body, in the order
    /// they start (first poll), from 0; a re-run of the body counts again from 0.
    pub(crate) fn next_step(&self) -> ParentLink {
        ParentLink {
            key: self.key,
            position: self.body.steps.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// A stable key for a downstream API's idempotency header (Stripe's and Adyen's
    /// `Idempotency-Key`, PayPal's `PayPal-Request-Id`), one per `name`: the same across every
    /// retry, takeover and restart of this call's key, different for each name and key. It is
    /// shaped like a UUID (36 characters of hex and dashes), which every such header accepts.
    ///
    /// ```
    /// # use idem_runtime::{Call, Idem, Error};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
    /// let idem = Idem::memory();
    /// let header: String = idem
    ///     .call(Call::new("refund").key(&"order-7"), || async {
    ///         let info = idem_runtime::current().ok_or(Error::Config("no call".into()))?;
    ///         Ok::<_, Error>(info.sub_key("payments.refund"))
    ///     })
    ///     .await?;
    /// assert_eq!(header.len(), 36);
    /// # Ok(()) }
    /// ```
    pub fn sub_key(&self, name: &str) -> String {
        let mut hasher = blake3::Hasher::new_derive_key(SUB_KEY_CONTEXT);
        hasher.update(&self.key.0);
        hasher.update(name.as_bytes());
        let hex = blake3::Hash::from(*hasher.finalize().as_bytes()).to_hex();
        let h = hex.as_str();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
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

/// blake3 `derive_key` context of [`CallInfo::sub_key`].
const SUB_KEY_CONTEXT: &str = "idem 2026-11 downstream sub-key v1";

/// The call whose body is running on this task, if any: its operation, key and attempt. Pass
/// `current().unwrap().key` as an `Idempotency-Key` to an external API that honours one, so even
/// a taken-over attempt does not make the provider do the work twice.
pub fn current() -> Option<CallInfo> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The link a call made now would record: the running body's call and the next position in
/// it (`None` outside any body).
pub(crate) fn next_step() -> Option<ParentLink> {
    CURRENT.try_with(CallInfo::next_step).ok()
}

pub(crate) async fn with_current<F: Future>(info: CallInfo, body: F) -> F::Output {
    CURRENT.scope(info, body).await
}
