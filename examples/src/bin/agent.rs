//! The agent example: an agent loop against a local model whose answers ask for tool calls (a
//! search, a row write, a notification). The run is `#[idempotent(key = (run_id))]`; each model
//! turn and tool call inside it is a step keyed by its position (`key = parent`), because its
//! inputs are a conversation and a model's tool-call JSON.
//!
//! ```sh
//! cargo run --release -p idem-examples --bin agent                   # one uncrashed run
//! cargo run --release -p idem-examples --bin agent -- --crashes 20   # killed 20 times
//! cargo run --release -p idem-examples --bin agent -- --no-idem --crashes 3
//! cargo run --release -p idem-examples --bin agent -- --crashes 5 \
//!     --store postgres://postgres@127.0.0.1/test
//! ```
//!
//! This process runs the services (model, search, notifications) and supervises the agent,
//! which runs in child processes: first an uncrashed reference run, then the run that is
//! SIGKILLed `--crashes` times at seeded steps and restarted until it answers. The steps to
//! read are in `agent/steps.rs` and `agent/run.rs`. The last stdout line is one JSON object.

#[path = "../agent/mod.rs"]
mod agent;

use anyhow::Result;
use clap::Parser;

use agent::args::Args;

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if args.child {
            return agent::child::run(&args).await;
        }
        let report = match agent::invocation::run(&args).await {
            Ok(report) => report,
            Err(e) if e.is::<agent::invocation::Unreachable>() => {
                eprintln!("agent: {e}");
                std::process::exit(agent::invocation::EXIT_UNREACHABLE);
            }
            Err(e) => return Err(e),
        };
        agent::report::print(&report);
        println!("{}", serde_json::to_string(&report)?);
        Ok(())
    })
}
