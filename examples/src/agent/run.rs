//! The agent loop: ask the model, run the tools it asks for, give it their results, until it
//! answers. With idem the whole run is one idempotent call keyed by the run id and every model
//! turn and tool call is a step inside it, so a restarted agent replays the finished steps from
//! their records and resumes at the first unfinished one.

use idem_runtime::idempotent;
use serde::{Deserialize, Serialize};

use super::ledger;
use super::messages::Message;
use super::model;
use super::steps::{self, AgentError, Ctx};

/// The longest conversation the loop allows (a model that never answers is an error).
const MAX_TURNS: u64 = 1_000;

/// What a finished run returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// The model's final answer.
    pub(crate) answer: String,
    /// Model turns in the conversation.
    pub(crate) model_turns: u64,
    /// Tool calls in the conversation.
    pub(crate) tool_calls: u64,
    /// The run's idem key in hex (for `idem show KEY --tree`), with idem.
    pub(crate) run_key: Option<String>,
}

/// The run, once per run id: a restart after a crash takes it over when its lease (1 s) runs
/// out, and the body's steps replay up to where the dead process stopped.
#[idempotent(key = (run_id), name = "agent::run", lease = "1s")]
pub(crate) async fn agent_run(
    ctx: &Ctx,
    run_id: &str,
    topic: &str,
    tool_calls: u64,
) -> Result<Outcome, AgentError> {
    agent_loop(ctx, topic, tool_calls).await
}

/// The loop itself, the same with and without idem (`steps` picks the form of each step).
pub(crate) async fn agent_loop(
    ctx: &Ctx,
    topic: &str,
    tool_calls: u64,
) -> Result<Outcome, AgentError> {
    let mut messages = vec![
        Message::text("system", "You are a research agent. Use the tools."),
        Message::text("user", model::task(topic, tool_calls)),
    ];
    let mut step = 0;
    let mut calls = 0;
    for turn in 1..=MAX_TURNS {
        ctx.crash.enter(step);
        step += 1;
        let answer = match &ctx.idem {
            Some(_) => steps::model_turn(ctx, &messages).await?,
            None => steps::model_turn_body(ctx, &messages).await?,
        };
        let asked = answer.message.tool_calls.clone();
        messages.push(answer.message);
        if asked.is_empty() {
            let answer = messages
                .last()
                .map(|m| m.content.clone())
                .unwrap_or_default();
            return Ok(Outcome {
                answer,
                model_turns: turn,
                tool_calls: calls,
                run_key: idem_runtime::current().map(|c| c.key.to_hex()),
            });
        }
        for call in &asked {
            ctx.crash.enter(step);
            step += 1;
            calls += 1;
            let result = steps::run_tool(ctx, call).await?;
            messages.push(Message::tool_result(call, &result));
        }
        // Replays counted what they avoided in this process; write it down before a crash
        // can lose it.
        if let Some(idem) = &ctx.idem {
            ledger::flush(idem).await?;
        }
    }
    Err(AgentError(format!(
        "the model gave no answer in {MAX_TURNS} turns"
    )))
}
