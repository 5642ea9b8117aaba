//! The showcase: an AI content pipeline (preprocess -> generate -> save -> notify) against a
//! local model server that bills per generation and misbehaves on a seeded schedule, run with
//! `#[idempotent]` steps and without, side by side.
//!
//! ```sh
//! cargo run --release -p idem-examples --bin ai_pipeline                    # both modes, SQLite
//! cargo run --release -p idem-examples --bin ai_pipeline -- --crash-after 20 # kill and resume
//! cargo run --release -p idem-examples --bin ai_pipeline -- --no-idem        # plain retries only
//! cargo run --release -p idem-examples --bin ai_pipeline -- --stream         # streamed drafts
//! cargo run --release -p idem-examples --features postgres --bin ai_pipeline -- \
//!     --store postgres://postgres@127.0.0.1/test --workers 3
//! ```
//!
//! The steps to read (and copy) are in `pipeline/steps.rs`. Every worker runs in a child process
//! of this one (so a crash is a real process death); the parent runs the model server, restarts
//! crashed workers, and prints the report. The last stdout line is one JSON object (for scripts
//! and the integration test).
//!
//! `--stream` reads each draft as a stream of tokens (server-sent events, as the real APIs send
//! them) from a model that breaks off `--stream-drop-pct` of its streams after billing what it
//! sent, and asks for `--duplicate-pct` of the `--prompts` a second time while the first stream
//! is under way. It runs in this process, without the queue, and its JSON line gains `streams`,
//! `stream_tokens_billed`, `duplicate_generations`, `duplicate_requests` and `attached_streams`.
//! The step is in `pipeline/stream_steps.rs`.

#[path = "../pipeline/mod.rs"]
mod pipeline;

use anyhow::Result;
use clap::Parser;

use pipeline::args::Args;
use pipeline::{compare, report, worker};

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if let Some(mode) = args.child {
            // Started by the parent below: run the batch as one worker.
            return worker::run(&args, mode).await;
        }
        let comparison = compare::run(&args).await?;
        report::print(&args, &comparison.results, &comparison.store);
        println!("{}", report::json_line(&args, &comparison.results));
        Ok(())
    })
}
