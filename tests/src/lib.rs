//! Shared test support: the store conformance suite, backends to run it on, and helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod backends;
pub mod brokers;
pub mod conformance;
pub mod costs;
pub mod effects;
pub mod http_layer;
pub mod lifecycle;
pub mod operator;
pub mod pipelines;
pub mod redis_server;
pub mod resume;
pub mod stream_journal;
pub mod streams;
pub mod takeover;
pub mod wrapped;

/// A fresh operation name, so tests sharing a database never share keys.
pub fn unique_op(what: &str) -> String {
    format!("test::{what}::{}", uuid::Uuid::new_v4().simple())
}

/// A key's attempts log as `(attempt, outcome)` pairs, oldest first.
pub async fn logged_outcomes(
    idem: &idem_runtime::Idem,
    key: &idem_runtime::Key,
) -> Vec<(u64, idem_runtime::record::AttemptOutcome)> {
    let log = idem.attempts(key).await.expect("the attempts log");
    log.iter().map(|a| (a.attempt, a.outcome)).collect()
}

/// Whether a server-backed test must fail (CI) rather than skip when its server is missing.
pub fn servers_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs the whole conformance suite against one backend: `conformance_suite!(factory)`
/// expands to one `#[tokio::test]` per scenario; `factory` is an async expression returning
/// `Option<Backend>` (`None` skips, loudly, when the server is unreachable outside CI).
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@tests $factory; conformance;
            one_key_64_tasks_runs_once,
            replay_returns_recorded_value,
            stalled_attempt_is_taken_over_and_fenced,
            live_body_outlasting_lease_is_never_taken_over,
            crashed_attempt_is_taken_over_and_logged_abandoned,
            body_error_is_retried,
            cache_errors_replays_the_error,
            fingerprint_mismatch_is_key_reuse,
            ttl_expiry_runs_again,
            purge_deletes_in_batches_and_attempts_never_go_back,
            forget_runs_again_with_a_higher_attempt,
            wrong_type_snapshot_is_a_typed_error,
            panic_releases_the_claim_and_resumes,
            on_conflict_error_returns_in_progress,
            bounded_wait_gives_up_with_in_progress,
            waiter_replays_the_owners_outcome,
            release_lets_the_next_call_run,
            current_tells_the_body_its_key_and_attempt,
            list_filters_by_op_and_status,
            cached_replay_skips_the_store,
        );
        $crate::conformance_suite!(@tests $factory; lifecycle;
            dropped_call_releases_its_claim_at_once,
            dropped_during_the_write_still_records,
            fenced_caller_returns_right_after_the_new_owner,
            lost_lease_is_visible_to_the_body,
            lost_lease_can_abort_the_body,
            blocking_body_keeps_its_lease,
            cache_errors_keeps_only_permanent_errors,
            try_call_keeps_body_and_idem_errors_apart,
            unrecordable_results_still_reach_the_caller,
        );
        $crate::conformance_suite!(@tests $factory; operator;
            forget_refuses_a_running_key_unless_forced,
            forget_racing_a_claim_does_not_recache_the_old_snapshot,
            listings_carry_no_snapshots,
            counts_by_operation_and_status,
        );
        $crate::conformance_suite!(@tests $factory; streams;
            stream_runs_once_and_replays_in_order,
            duplicate_follows_a_live_stream,
            error_mid_stream_fails_and_keeps_its_chunks,
            cache_errors_replays_chunks_then_the_error,
            dropped_stream_cancels_the_attempt,
            follower_of_a_dead_attempt_is_interrupted,
            bad_chunks_end_the_stream_with_typed_errors,
            replay_can_keep_the_original_pacing,
        );
        $crate::conformance_suite!(@tests $factory; pipelines;
            steps_record_their_parent_and_position,
            rerun_replays_finished_steps_by_position,
            changed_pipeline_is_a_divergence,
            position_key_outside_a_body_is_an_error,
        );
        $crate::conformance_suite!(@tests $factory; costs;
            costs_are_logged_and_replays_count_them_avoided,
            calls_without_cost_leave_the_ledger_alone,
        );
        $crate::conformance_suite!(@tests $factory; stream_journal;
            chunks_append_and_read_in_order_and_pages,
            chunks_append_is_fenced,
            chunks_retried_append_is_harmless,
            chunks_new_attempt_drops_the_old_stream,
            chunks_forget_deletes_the_stream,
            chunks_purge_deletes_expired_streams,
        );
    };
    (@tests $factory:expr; $module:ident; $($scenario:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $scenario() {
            let Some(backend) = $factory.await else { return };
            $crate::$module::$scenario(&backend).await;
        }
    )+};
}
