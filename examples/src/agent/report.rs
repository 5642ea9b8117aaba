//! The example's report: a few lines for people and one JSON object, the last stdout line, for
//! scripts and the integration test.

use serde::Serialize;

/// What one invocation found.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// Whether the agent ran with idem.
    pub(crate) idem: bool,
    /// Agent processes started for the run (its lives: crashes + 1).
    pub(crate) runs: u64,
    /// Times the supervisor killed the agent.
    pub(crate) crashes: u64,
    /// Model turns the model server billed for the run (a turn killed before it was
    /// recorded is billed again).
    pub(crate) model_turns: u64,
    /// Tool calls in the run's final conversation.
    pub(crate) tool_calls: u64,
    /// Tool effects beyond one per tool call: extra search queries, rows and notifications.
    pub(crate) duplicate_tool_effects: u64,
    /// Of which, rows.
    pub(crate) duplicate_rows: u64,
    /// Tokens the model server billed for the run.
    pub(crate) tokens_billed: u64,
    /// Tokens billed for the uncrashed reference run.
    pub(crate) reference_tokens_billed: u64,
    /// Tokens idem's cost ledger counts as avoided by replays during the run (0 without idem).
    pub(crate) tokens_avoided: f64,
    /// Whether the run's final answer is the uncrashed reference run's.
    pub(crate) final_answer_matches: bool,
    /// Notifications the notification service sent for the run.
    pub(crate) notifications_sent: u64,
    /// Notify requests answered from their `Idempotency-Key` instead of sending again.
    pub(crate) notification_retries_deduplicated: u64,
    /// Notifications sent whose response the service dropped.
    pub(crate) notification_responses_lost: u64,
    /// Searches answered from their `Idempotency-Key` (a search repeated after a kill).
    pub(crate) search_retries_deduplicated: u64,
    /// The run's final answer.
    pub(crate) final_answer: String,
    /// The run's idem key (hex), with idem: `idem show KEY --tree --store URL` prints its steps.
    pub(crate) run_key: Option<String>,
    /// The store's URL, when it outlives the invocation (`--dir` or `--store`).
    #[serde(skip)]
    pub(crate) kept_store: Option<String>,
}

/// Prints the human lines.
pub(crate) fn print(r: &Report) {
    let mode = if r.idem {
        "with idem"
    } else {
        "without idem (--no-idem)"
    };
    println!("agent {mode}: {} lives, {} crashes", r.runs, r.crashes);
    println!(
        "  model turns billed {}, tokens billed {} (uncrashed reference {}), tokens avoided by replays {}",
        r.model_turns, r.tokens_billed, r.reference_tokens_billed, r.tokens_avoided
    );
    println!(
        "  tool calls {}, duplicate tool effects {} (rows {}), searches repeated after a kill and deduplicated by Idempotency-Key {}",
        r.tool_calls, r.duplicate_tool_effects, r.duplicate_rows, r.search_retries_deduplicated
    );
    println!(
        "  notifications sent {}, responses lost {}, retries deduplicated by Idempotency-Key {}",
        r.notifications_sent, r.notification_responses_lost, r.notification_retries_deduplicated
    );
    println!(
        "  final answer {} the uncrashed run's: {}",
        if r.final_answer_matches {
            "matches"
        } else {
            "DIFFERS from"
        },
        r.final_answer
    );
    match (&r.run_key, &r.kept_store) {
        (Some(key), Some(store)) => {
            println!("  the run's steps: idem show {key} --tree --store '{store}'")
        }
        (Some(_), None) => {
            println!("  (with --dir, the store is kept for `idem show RUN_KEY --tree`)")
        }
        _ => {}
    }
}
