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
//! | [`FAILURES`] `idem_failures_total` | counter | `op`, `reason` = `error` \| `panic` | bodies that returned an unrecorded `Err` (or an unencodable / oversized result) or panicked; the record is `failed` and the next call runs again |
//! | [`UNRECORDED`] `idem_unrecorded_total` | counter | `op` | completions that could not be written even after retries (store down): the side effect happened but is not recorded; after the lease a later call may run it again. Alert on this |
//! | [`IN_PROGRESS`] `idem_in_progress_total` | counter | `op` | calls that gave up on a running attempt (`on_conflict = error`, or the wait ran out): `Error::InProgress` |
//! | [`KEY_REUSE`] `idem_key_reuse_total` | counter | `op` | calls refused because the key was used with a different payload (`verify`) |
//! | [`CLAIM_FAILURES`] `idem_claim_failures_total` | counter | `backend` | claims that failed (store unreachable): the call failed closed, the body did not run |
//! | [`CLAIM_DURATION`] `idem_claim_duration_seconds` | histogram | `backend` | the latency of one claim round trip (replays from the cache make none) |
//!
//! Label values are static strings (`backend` is `memory`, `sqlite` or `postgres`) except `op`,
//! the operation name, which is a `&'static str` for every `#[idempotent]` function (no
//! allocation); an operation named at run time with a `String` costs one copy per event.
//!
//! Useful ratios: the **replay ratio** `sum(idem_replays_total) / (sum(idem_replays_total) +
//! sum(idem_executions_total))` (also what `idem stats --metrics URL` prints), the takeover rate
//! (crashed workers), and any non-zero `idem_unrecorded_total` or `idem_fenced_total`.
//! Call [`describe`] once after installing a recorder to give each metric its help text.

use std::borrow::Cow;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, SharedString, Unit};

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
/// Completions that could not be recorded even after retries.
pub const UNRECORDED: &str = "idem_unrecorded_total";
/// Calls that returned `Error::InProgress`.
pub const IN_PROGRESS: &str = "idem_in_progress_total";
/// Calls refused with `Error::KeyReuse`.
pub const KEY_REUSE: &str = "idem_key_reuse_total";
/// Claims that failed because the store did (the call failed closed).
pub const CLAIM_FAILURES: &str = "idem_claim_failures_total";
/// The latency of one claim, in seconds.
pub const CLAIM_DURATION: &str = "idem_claim_duration_seconds";

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
        "Completions that could not be recorded: the side effect may repeat"
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

/// Counts one outcome of a call, named as in the `outcome` field of its tracing span.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
pub(crate) fn outcome(op: &Cow<'static, str>, name: &'static str) {
    let op = op_label(op);
    match name {
        "executed" => counter!(EXECUTIONS, LABEL_OP => op, "kind" => "new").increment(1),
        "taken_over" => {
            counter!(EXECUTIONS, LABEL_OP => op.clone(), "kind" => "takeover").increment(1);
            counter!(TAKEOVERS, LABEL_OP => op).increment(1);
        }
        "replayed" => counter!(REPLAYS, LABEL_OP => op, "source" => "store").increment(1),
        "waited" => {
            counter!(REPLAYS, LABEL_OP => op.clone(), "source" => "wait").increment(1);
            counter!(WAITS, LABEL_OP => op).increment(1);
        }
        "fenced" => counter!(FENCED, LABEL_OP => op).increment(1),
        "failed" => counter!(FAILURES, LABEL_OP => op, "reason" => "error").increment(1),
        "panicked" => counter!(FAILURES, LABEL_OP => op, "reason" => "panic").increment(1),
        "unrecorded" => counter!(UNRECORDED, LABEL_OP => op).increment(1),
        "in_progress" => counter!(IN_PROGRESS, LABEL_OP => op).increment(1),
        "key_reuse" => counter!(KEY_REUSE, LABEL_OP => op).increment(1),
        _ => {}
    }
}

/// Counts a replay from this process's snapshot cache.
#[allow(clippy::ptr_arg)] // a borrowed `Cow` (a `&'static str`) labels without allocating
pub(crate) fn cache_replay(op: &Cow<'static, str>) {
    counter!(REPLAYS, LABEL_OP => op_label(op), "source" => "cache").increment(1);
}

/// Records one claim round trip.
pub(crate) fn claim(backend: &'static str, elapsed: Duration, ok: bool) {
    histogram!(CLAIM_DURATION, "backend" => backend).record(elapsed.as_secs_f64());
    if !ok {
        counter!(CLAIM_FAILURES, "backend" => backend).increment(1);
    }
}
