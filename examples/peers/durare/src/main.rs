//! durare's side of `examples/peers/run.sh`: the miss and replay workloads defined in that
//! script's header, as a workflow of one step whose workflow id is the key.
//!
//! `peers-durare --url postgres://... --calls N --concurrency C --warm W` prints one JSON line
//! per mode (`miss`, then `replay` of the same keys) with the fields every side prints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durare::{DurableContext, DurableEngine, PostgresProvider, Result, WorkflowOptions};
use serde::{Deserialize, Serialize};

/// The step's result: the same small JSON object on every side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Draft {
    title: String,
    tokens: u32,
}

/// How many times a step body ran (a replay must not add to it).
static EXECUTIONS: AtomicU64 = AtomicU64::new(0);

#[durare::step]
async fn draft(ctx: &DurableContext, i: u64) -> Result<Draft> {
    EXECUTIONS.fetch_add(1, Ordering::Relaxed);
    Ok(Draft {
        title: format!("draft {i}"),
        tokens: 512,
    })
}

#[durare::workflow]
async fn pipeline(ctx: DurableContext, i: u64) -> Result<Draft> {
    draft(&ctx, i).await
}

struct Args {
    url: String,
    calls: u64,
    concurrency: u64,
    warm: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        url: "postgres://postgres@127.0.0.1:5432/durare_bench?sslmode=disable".to_owned(),
        calls: 1000,
        concurrency: 1,
        warm: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .unwrap_or_else(|| fail("args", format!("{flag} needs a value")));
        let number = || value.parse().unwrap_or_else(|e| fail(&flag, e));
        match flag.as_str() {
            "--url" => args.url = value.clone(),
            "--calls" => args.calls = number(),
            "--concurrency" => args.concurrency = number(),
            "--warm" => args.warm = number(),
            _ => fail("args", format!("unknown flag {flag}")),
        }
    }
    args
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("peers-durare: {what}: {e}");
    std::process::exit(1)
}

/// One call: start (or, for a finished id, attach to) workflow `run-i` and wait for its
/// result.
async fn call(engine: &DurableEngine, run: &str, i: u64) {
    let handle = engine
        .start_with(Pipeline, i, WorkflowOptions::with_id(format!("{run}-{i}")))
        .await
        .unwrap_or_else(|e| fail("start", e));
    let got = handle.await.unwrap_or_else(|e| fail("result", e));
    if got.title != format!("draft {i}") || got.tokens != 512 {
        fail("result", format!("unexpected {got:?}"));
    }
}

/// Calls keys `range` on `concurrency` tasks; returns each call's latency and the wall time.
async fn drive(
    engine: &Arc<DurableEngine>,
    run: &Arc<str>,
    range: std::ops::Range<u64>,
    concurrency: u64,
) -> (Vec<Duration>, f64) {
    let next = Arc::new(AtomicU64::new(range.start));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (engine, run, next, end) = (engine.clone(), run.clone(), next.clone(), range.end);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return latencies;
                    }
                    let t = Instant::now();
                    call(&engine, &run, i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_else(|e| fail("task", e)));
    }
    (latencies, started.elapsed().as_secs_f64())
}

fn report(args: &Args, mode: &str, mut latencies: Vec<Duration>, seconds: f64, executions: u64) {
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let line = serde_json::json!({
        "side": "durare",
        "store": "postgres",
        "mode": mode,
        "calls": latencies.len(),
        "concurrency": args.concurrency,
        "seconds": seconds,
        "calls_per_s": latencies.len() as f64 / seconds,
        "p50_us": pct(0.50),
        "p99_us": pct(0.99),
        "executions": executions,
    });
    println!("{line}");
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    // One connection more than callers: the provider's LISTEN task holds one for its lifetime.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(args.concurrency.max(1) as u32 + 1)
        .connect(&args.url)
        .await
        .unwrap_or_else(|e| fail("connect", e));
    let provider = PostgresProvider::from_pool_with_schema(pool, "dbos")
        .unwrap_or_else(|e| fail("provider", e));
    let engine = DurableEngine::builder(Arc::new(provider))
        .build()
        .await
        .unwrap_or_else(|e| fail("engine", e));
    let engine = Arc::new(engine);
    let run: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();

    // Keys [0, warm) warm up both modes (connections, statements); the measured keys follow.
    let (warm, end) = (args.warm, args.warm + args.calls);
    drive(&engine, &run, 0..warm, args.concurrency).await;
    drive(&engine, &run, 0..warm, args.concurrency).await;

    let before = EXECUTIONS.load(Ordering::Relaxed);
    let (latencies, seconds) = drive(&engine, &run, warm..end, args.concurrency).await;
    let after_miss = EXECUTIONS.load(Ordering::Relaxed);
    report(&args, "miss", latencies, seconds, after_miss - before);

    let (latencies, seconds) = drive(&engine, &run, warm..end, args.concurrency).await;
    let after_replay = EXECUTIONS.load(Ordering::Relaxed);
    report(
        &args,
        "replay",
        latencies,
        seconds,
        after_replay - after_miss,
    );
}
