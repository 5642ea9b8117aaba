//! An HTTP API that honours `Idempotency-Key`: `POST /drafts` generates a draft with the local
//! model server (which bills per generation), behind `idem_runtime::http::IdempotencyLayer`.
//!
//! ```sh
//! cargo run --release -p idem-examples --bin api                      # serve + drive, one JSON line
//! cargo run --release -p idem-examples --bin api -- --store postgres://postgres@127.0.0.1/test
//! cargo run --release -p idem-examples --bin api -- --serve 127.0.0.1:8080 --threads 1
//! ```
//!
//! By default it serves on an ephemeral loopback port and drives itself with reqwest: retries
//! after lost responses, concurrent duplicates, changed bodies under used keys and requests
//! without a key. The last stdout line is one JSON object: `requests`, `executions`, `replays`,
//! `conflicts_409`, `mismatches_422`, `missing_400`, `duplicate_executions` (0), and what else
//! the client saw. `--serve ADDR` only serves (the benchmark's load generator runs in another
//! process); `/bench/layered` and `/bench/bare` are the benchmark's endpoints.

#[path = "../api/mod.rs"]
mod api;
// The example reuses the pipeline's model server and its client; the rest of the pipeline is
// the `ai_pipeline` example's.
#[allow(dead_code)]
#[path = "../pipeline/mod.rs"]
mod pipeline;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use idem_runtime::Idem;

use pipeline::model_client::ModelClient;
use pipeline::model_server::ModelServer;

#[derive(Debug, Parser)]
#[command(about = "An axum API behind the Idempotency-Key layer, driven by its own client")]
struct Args {
    /// The store (`sqlite://path`, `postgres://...`, `memory:`); default a fresh SQLite file.
    #[arg(long)]
    store: Option<String>,
    /// Only serve, on this address.
    #[arg(long)]
    serve: Option<std::net::SocketAddr>,
    /// Tokio worker threads of the server.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Draft scenarios the client runs.
    #[arg(long, default_value_t = 40)]
    drafts: usize,
    /// Scenarios in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The model server's seed.
    #[arg(long, default_value_t = 17)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("api.db").display()));
    let idem = Idem::open(&url).await.context("open the store")?;
    let model = ModelServer::start(args.seed, false, 0, 0, 0).await?;
    let drafts = api::Drafts::new(ModelClient::new(&model.url(), Duration::from_secs(10))?);
    let app = api::router(&idem, drafts.clone());
    let listener = tokio::net::TcpListener::bind(args.serve.unwrap_or(([127, 0, 0, 1], 0).into()))
        .await
        .context("bind")?;
    let base = format!("http://{}", listener.local_addr()?);
    eprintln!(
        "api: serving on {base} (store {})",
        idem_runtime::store::redact_url(&url)
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    if args.serve.is_some() {
        server.await??;
        return Ok(());
    }
    let tally = Arc::new(api::client::Tally::default());
    let client = api::client::Client::new(&base, tally.clone())?;
    client.run(args.drafts, args.concurrency).await;
    // Lost responses: the server finishes what their clients gave up on before counting.
    model.settle().await;
    let (executions, duplicates) = drafts.executions();
    let billed = model.meter.calls.load(std::sync::atomic::Ordering::SeqCst);
    let report = tally.report(executions, duplicates, billed);
    eprintln!(
        "api: {} requests, {} executions, {} replays, {} x 409, {} x 422, {} x 400, {} duplicate executions",
        report.requests,
        report.executions,
        report.replays,
        report.conflicts_409,
        report.mismatches_422,
        report.missing_400,
        report.duplicate_executions
    );
    println!("{}", serde_json::to_string(&report)?);
    server.abort();
    Ok(())
}
