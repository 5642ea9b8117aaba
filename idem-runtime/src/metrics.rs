//! Counters and histograms of the life of a call, through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (for Prometheus, `metrics-exporter-prometheus`) and they appear.
//! With no recorder installed each one costs a relaxed atomic load.
//!
//! | name | kind | labels | counts |
//! |---|---|---|---|
//! | [`EXECUTIONS`] `idem_executions_total` | counter | `op`, `kind` = `new` \| `takeover` | bodies run: the key was claimed (fresh, after a failure, or taken over from an expired lease) |
//! | [`REPLAYS`] `idem_replays_total` | counter | `op`, `source` = `cache` \| `store` \| `wait` | calls answered with a recorded outcome; the body did not run. `cache`: this process's snapshot cache, no store round trip; `store`: the claim found the record completed; `wait`: after waiting for another attempt |
//! | [`WAITS`] `idem_waits_total` | counter | `op` | calls that found another attempt running and waited for it, then replayed its outcome |
//! | [`TAKEOVERS`] `idem_takeovers_total` | counter | `op` | claims that took over an attempt whose lease expired (a crashed or stalled worker); each is also an execution |
//! | [`FENCED`] `idem_fenced_total` | counter | `op` | completions rejected by the fence: the attempt was taken over (or released) while it ran; the caller converged on the recorded outcome |
//! | [`FAILURES`] `idem_failures_total` | counter | `op`, `reason` = `error` \| `panic` | bodies that returned an unrecorded `Err` or panicked; the record is `failed` and the next call runs again |
//! | [`UNRECORDED`] `idem_unrecorded_total` | counter | `op`, `reason` = `too_large` \| `unencodable` \| `undecodable` \| `store_unreachable` | values the body produced (and the caller received) that were not recorded: over the snapshot limit, not encodable, not decoding back (a float NaN becomes `null`), or the store unreachable even after retries. The record says why (except when the store was unreachable); the next call runs the body again. Alert on this |
//! | [`CANCELLED`] `idem_cancelled_total` | counter | `op` | calls dropped while their body ran (a timeout, a cancelled task): the claim was released at once and the attempt logged `cancelled` |
//! | [`ABORTED`] `idem_aborted_total` | counter | `op` | bodies dropped because their attempt lost its lease (`abort_on_lease_loss`); also counted in `idem_fenced_total` |
//! | [`ATTACHED`] `idem_attached_streams_total` | counter | `op` | streaming calls that followed another attempt's live stream instead of generating it again |
//! | [`IN_PROGRESS`] `idem_in_progress_total` | counter | `op` | calls that gave up on a running attempt (`on_conflict = error`, or the wait ran out): `Error::InProgress` |
//! | [`KEY_REUSE`] `idem_key_reuse_total` | counter | `op` | calls refused because the key was used with a different payload (`verify`) |
//! | [`CLAIM_FAILURES`] `idem_claim_failures_total` | counter | `backend` | claims that failed (store unreachable): the call failed closed, the body did not run |
//! | [`CLAIM_DURATION`] `idem_claim_duration_seconds` | histogram | `backend` | the latency of one claim round trip (replays from the cache make none) |
//! | [`COST_SPENT`] `idem_cost_spent` | gauge, only grows | `op`, `unit` | what attempts cost, as their bodies reported it (`CallInfo::add_cost`), whatever their outcome |
//! | [`COST_AVOIDED`] `idem_cost_avoided` | gauge, only grows | `op`, `unit` | what replays avoided: the recorded attempt's cost, once per replay (from the cache, the store, or after a wait) |
//!
//! Label values are static strings (`backend` is `memory`, `sqlite` or `postgres`) except `op`,
//! the operation name, which is a `&'static str` for every `#[idempotent]` function (no
//! allocation); an operation named at run time with a `String` costs one copy per event.
//!
//! Useful ratios: the **replay ratio** `sum(idem_replays_total) / (sum(idem_replays_total) +
//! sum(idem_executions_total))` (also what `idem stats --metrics URL` prints), the takeover rate
//! (crashed workers), and any non-zero `idem_unrecorded_total` or `idem_fenced_total`.
//! Call [`describe`] once after installing a recorder to give each metric its help text.
//!
//! The two cost metrics are gauges that only grow because costs are fractional (`usd`) and
//! `metrics` counters count whole numbers: read them as counters (`rate()`, `increase()`).

use std::borrow::Cow;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, SharedString,
    Unit,
};

/// Bodies run (label `kind`: `new` or `takeover`).
pub const EXECUTIONS: &str = "idem_executions_total";
/// Calls answered with a recorded outcome (label `source`: `cache`, `store` or `wait`).
pub const REPLAYS: &str = "idem_replays_total";
/// Calls that waited for another attempt's outcome.
pub const WAITS: &str = "idem_waits_total";
/// Claims that took over an attempt whose lease expired.
pub const TAKEOVERS: &str = "idem_takeovers_total";
/// Completions rejected by the fence (the attempt had been taken over or released).
pub const FENCED: &str = "idem_fenced_total";
/// Bodies that failed or panicked (label `reason`: `error` or `panic`).
pub const FAILURES: &str = "idem_failures_total";
/// Values the body produced that were not recorded (label `reason`: `too_large`,
/// `unencodable`, `undecodable`, `store_unreachable`); the caller still received them.
pub const UNRECORDED: &str = "idem_unrecorded_total";
/// Attempts released because their call was dropped while the body ran.
pub const CANCELLED: &str = "idem_cancelled_total";
/// Bodies dropped because their attempt lost its lease (`abort_on_lease_loss`).
pub const ABORTED: &str = "idem_aborted_total";
/// Streaming calls that followed another attempt's live stream instead of generating it again.
pub const ATTACHED: &str = "idem_attached_streams_total";
/// Calls that returned `Error::InProgress`.
pub const IN_PROGRESS: &str = "idem_in_progress_total";
/// Calls refused with `Error::KeyReuse`.
pub const KEY_REUSE: &str = "idem_key_reuse_total";
/// Claims that failed because the store did (the call failed closed).
pub const CLAIM_FAILURES: &str = "idem_claim_failures_total";
/// The latency of one claim, in seconds.
pub const CLAIM_DURATION: &str = "idem_claim_duration_seconds";

/// What attempts cost (labels `op`, `unit`), as their bodies reported it.
pub const COST_SPENT: &str = "idem_cost_spent";
/// What replays avoided (labels `op`, `unit`): the recorded attempt's cost, once per replay.
pub const COST_AVOIDED: &str = "idem_cost_avoided";

/// The operation-name label.
pub const LABEL_OP: &str = "op";

/// Registers the help text and unit of every metric with the installed recorder. Optional;
/// call it once after installing one.
pub fn describe() {
    describe_counter!(
        EXECUTIONS,
        "Bodies run by idem: new claims and takeovers of expired leases"
    );
    describe_counter!(
        REPLAYS,
        "Calls answered with a recorded outcome; the body did not run"
    );
    describe_counter!(WAITS, "Calls that waited for another attempt's outcome");
    describe_gauge!(
        COST_SPENT,
        "What attempts cost, as their bodies reported it (only grows)"
    );
    describe_gauge!(
        COST_AVOIDED,
        "What replays avoided: the recorded attempt's cost, once per replay (only grows)"
    );
    describe_counter!(
        ATTACHED,
        "Streaming calls that followed another attempt's live stream instead of generating it again"
    );
    describe_counter!(
        TAKEOVERS,
        "Claims that took over an attempt whose lease expired"
    );
    describe_counter!(
        FENCED,
        "Completions rejected by the fence (attempt taken over while running)"
    );
    describe_counter!(
        FAILURES,
        "Bodies that failed or panicked (the record is failed, retryable)"
    );
    describe_counter!(
        UNRECORDED,
        "Values the body produced that were not recorded: the side effect may repeat"
    );
    describe_counter!(
        CANCELLED,
        "Calls dropped while their body ran; their claim was released at once"
    );
    describe_counter!(
        ABORTED,
        "Bodies dropped because their attempt lost its lease"
    );
    describe_counter!(
        IN_PROGRESS,
        "Calls that gave up on a running attempt (Error::InProgress)"
    );
    describe_counter!(
        KEY_REUSE,
        "Calls refused: key reused with a different payload"
    );
    describe_counter!(
        CLAIM_FAILURES,
        "Claims that failed because the store did; the body did not run"
    );
    describe_histogram!(
        CLAIM_DURATION,
        Unit::Seconds,
        "Latency of one claim round trip"
    );
}

#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
fn op_label(op: &Cow<'static, str>) -> SharedString {
    match op {
        Cow::Borrowed(s) => SharedString::const_str(s),
        Cow::Owned(s) => SharedString::from(s.clone()),
    }
}

/// How one call ended (or, for `Executed` and `TakenOver`, began running its body): the
/// `outcome` field of its tracing span and the metric it counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    /// The claim was new (or followed a failure): the body runs.
    Executed,
    /// The claim took over an attempt whose lease expired: the body runs.
    TakenOver,
    /// The store held the outcome: replayed without running.
    Replayed,
    /// Another attempt was running: waited for it, then replayed its outcome.
    Waited,
    /// The attempt lost its lease while running; its completion was rejected.
    Fenced,
    /// The attempt lost its lease and the body was dropped (`abort_on_lease_loss`).
    Aborted,
    /// The body returned an `Err` that is not recorded; the key is retryable.
    Failed,
    /// The body panicked; the key is retryable and the panic resumes.
    Panicked,
    /// The body produced a value that was not recorded, for this reason; the caller got it.
    Unrecorded(Unrecorded),
    /// A streaming call found another attempt generating the stream and followed it live.
    Attached,
    /// Gave up on a running attempt (`Error::InProgress`).
    InProgress,
    /// The key was used with another payload (`Error::KeyReuse`).
    KeyReuse,
}

/// Why a value the body paid for was not recorded (the caller still received it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unrecorded {
    /// Its encoding is over the snapshot limit.
    TooLarge,
    /// It cannot be encoded.
    Unencodable,
    /// Its encoding does not decode back (a float NaN is encoded as `null`, say).
    Undecodable,
    /// The store could not be reached to record it, even after retries.
    StoreUnreachable,
}

impl Unrecorded {
    /// The `reason` label of [`UNRECORDED`].
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unrecorded::TooLarge => "too_large",
            Unrecorded::Unencodable => "unencodable",
            Unrecorded::Undecodable => "undecodable",
            Unrecorded::StoreUnreachable => "store_unreachable",
        }
    }
}

impl CallOutcome {
    /// The span's `outcome` field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Executed => "executed",
            CallOutcome::TakenOver => "taken_over",
            CallOutcome::Replayed => "replayed",
            CallOutcome::Waited => "waited",
            CallOutcome::Fenced => "fenced",
            CallOutcome::Aborted => "aborted",
            CallOutcome::Failed => "failed",
            CallOutcome::Panicked => "panicked",
            CallOutcome::Unrecorded(_) => "unrecorded",
            CallOutcome::Attached => "attached",
            CallOutcome::InProgress => "in_progress",
            CallOutcome::KeyReuse => "key_reuse",
        }
    }
}

/// Counts one outcome of a call.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
pub(crate) fn outcome(op: &Cow<'static, str>, outcome: CallOutcome) {
    let op = op_label(op);
    match outcome {
        CallOutcome::Executed => {
            counter!(EXECUTIONS, LABEL_OP => op, "kind" => "new").increment(1);
        }
        CallOutcome::TakenOver => {
            counter!(EXECUTIONS, LABEL_OP => op.clone(), "kind" => "takeover").increment(1);
            counter!(TAKEOVERS, LABEL_OP => op).increment(1);
        }
        CallOutcome::Replayed => {
            counter!(REPLAYS, LABEL_OP => op, "source" => "store").increment(1);
        }
        CallOutcome::Waited => {
            counter!(REPLAYS, LABEL_OP => op.clone(), "source" => "wait").increment(1);
            counter!(WAITS, LABEL_OP => op).increment(1);
        }
        CallOutcome::Fenced => counter!(FENCED, LABEL_OP => op).increment(1),
        CallOutcome::Aborted => {
            counter!(FENCED, LABEL_OP => op.clone()).increment(1);
            counter!(ABORTED, LABEL_OP => op).increment(1);
        }
        CallOutcome::Failed => {
            counter!(FAILURES, LABEL_OP => op, "reason" => "error").increment(1);
        }
        CallOutcome::Panicked => {
            counter!(FAILURES, LABEL_OP => op, "reason" => "panic").increment(1);
        }
        CallOutcome::Unrecorded(why) => {
            counter!(UNRECORDED, LABEL_OP => op, "reason" => why.as_str()).increment(1);
        }
        CallOutcome::Attached => counter!(ATTACHED, LABEL_OP => op).increment(1),
        CallOutcome::InProgress => counter!(IN_PROGRESS, LABEL_OP => op).increment(1),
        CallOutcome::KeyReuse => counter!(KEY_REUSE, LABEL_OP => op).increment(1),
    }
}

/// Counts an attempt released because its call was dropped while the body ran.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
pub(crate) fn cancelled(op: &Cow<'static, str>) {
    counter!(CANCELLED, LABEL_OP => op_label(op)).increment(1);
}

/// Counts a replay from this process's snapshot cache.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
pub(crate) fn cache_replay(op: &Cow<'static, str>) {
    counter!(REPLAYS, LABEL_OP => op_label(op), "source" => "cache").increment(1);
}

/// Counts what an attempt's body reported it cost.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
pub(crate) fn cost_spent(op: &Cow<'static, str>, cost: &crate::record::Costs) {
    for (unit, amount) in &cost.0 {
        gauge!(COST_SPENT, LABEL_OP => op_label(op), "unit" => unit.clone()).increment(*amount);
    }
}

/// Counts what a replay avoided: the recorded attempt's cost.
#[allow(clippy::ptr_arg)]
pub(crate) fn cost_avoided(op: &Cow<'static, str>, cost: &crate::record::Costs) {
    for (unit, amount) in &cost.0 {
        gauge!(COST_AVOIDED, LABEL_OP => op_label(op), "unit" => unit.clone()).increment(*amount);
    }
}

/// Records one claim round trip.
pub(crate) fn claim(backend: &'static str, elapsed: Duration, ok: bool) {
    histogram!(CLAIM_DURATION, "backend" => backend).record(elapsed.as_secs_f64());
    if !ok {
        counter!(CLAIM_FAILURES, "backend" => backend).increment(1);
    }
}
