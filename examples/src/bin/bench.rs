//! The benchmark driver: idem against a hand-written SQL baseline, in the same run.
//!
//! `cargo run --release -p idem-examples --bin bench -- --store sqlite://bench.db --mode miss
//!  --calls 5000 --concurrency 1 --cache off`
//!
//! The last stdout line is one JSON object: `store, mode, calls, concurrency, cache,
//! executions, seconds, calls_per_s, mean_us, p50_us, p99_us`, and, where the store has SQL,
//! `baseline` (the same fields for the hand-written SQL) and `ratio_mean`, `ratio_p50`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use idem_examples::baseline::sqlite::SqliteBaseline;
use idem_examples::baseline::Baseline;
use idem_examples::workload::{baseline_key, drive, Draft, Stats};
use idem_runtime::{Call, Error, Idem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Every call has a fresh key: claim, trivial body, complete.
    Miss,
    /// Every call replays a completed key.
    Hit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

/// Measure idem's per-call cost against the same SQL written by hand.
#[derive(Debug, Parser)]
struct Args {
    /// Store URL: `memory:`, `sqlite://path`, `postgres://...`.
    #[arg(long, default_value = "sqlite://target/idem-bench.db")]
    store: String,
    /// Fresh keys (miss) or replays (hit).
    #[arg(long, value_enum, default_value = "miss")]
    mode: Mode,
    /// Number of measured calls.
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// Concurrent callers.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// The process-local snapshot cache.
    #[arg(long, value_enum, default_value = "on")]
    cache: Switch,
    /// Also run the hand-written SQL baseline (SQL stores only).
    #[arg(long, value_enum, default_value = "on")]
    baseline: Switch,
}

enum AnyBaseline {
    Sqlite(SqliteBaseline),
}

impl AnyBaseline {
    async fn open(url: &str) -> Result<Option<Self>, sqlx::Error> {
        if url.starts_with("sqlite:") {
            return Ok(Some(AnyBaseline::Sqlite(SqliteBaseline::open(url).await?)));
        }
        Ok(None)
    }

    async fn miss(&self, key: &[u8; 32], snapshot: &[u8]) -> Result<(), sqlx::Error> {
        match self {
            AnyBaseline::Sqlite(b) => b.miss(key, snapshot).await,
        }
    }

    async fn hit(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, sqlx::Error> {
        match self {
            AnyBaseline::Sqlite(b) => b.hit(key).await,
        }
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("bench: {what}: {e}");
    std::process::exit(1)
}

async fn run_idem(args: &Args, idem: Idem, run: Arc<str>) -> (Stats, u64) {
    let executions = Arc::new(AtomicU64::new(0));
    let op = if args.mode == Mode::Hit {
        "bench.hit"
    } else {
        "bench.miss"
    };
    let call = move |idem: Idem, run: Arc<str>, executions: Arc<AtomicU64>, i: u64| async move {
        let draft: Result<Draft, Error> = idem
            .call(Call::new(op).key(&(&*run, i)), || async {
                executions.fetch_add(1, Ordering::Relaxed);
                Ok(Draft::for_call(i))
            })
            .await;
        if let Err(e) = draft {
            fail("idem call", e);
        }
    };
    if args.mode == Mode::Hit {
        for i in 0..args.calls as u64 {
            call(idem.clone(), run.clone(), executions.clone(), i).await;
        }
    }
    let before = executions.load(Ordering::Relaxed);
    let counter = executions.clone();
    let stats = drive(args.calls, args.concurrency, move |i| {
        call(idem.clone(), run.clone(), counter.clone(), i)
    })
    .await;
    (stats, executions.load(Ordering::Relaxed) - before)
}

async fn run_baseline(args: &Args, baseline: Arc<AnyBaseline>, run: Arc<str>) -> Stats {
    let snapshot = |i| serde_json::to_vec(&Draft::for_call(i)).unwrap_or_default();
    if args.mode == Mode::Hit {
        for i in 0..args.calls as u64 {
            if let Err(e) = baseline.miss(&baseline_key(&run, i), &snapshot(i)).await {
                fail("baseline setup", e);
            }
        }
    }
    let mode = args.mode;
    drive(args.calls, args.concurrency, move |i| {
        let (baseline, run) = (baseline.clone(), run.clone());
        async move {
            let key = baseline_key(&run, i);
            let r = match mode {
                Mode::Miss => baseline.miss(&key, &snapshot(i)).await,
                Mode::Hit => match baseline.hit(&key).await {
                    Ok(Some(bytes)) => serde_json::from_slice::<Draft>(&bytes)
                        .map(drop)
                        .map_err(|e| sqlx::Error::Decode(Box::new(e))),
                    Ok(None) => Err(sqlx::Error::RowNotFound),
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = r {
                fail("baseline call", e);
            }
        }
    })
    .await
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let store = idem_runtime::store::open(&args.store)
        .await
        .unwrap_or_else(|e| fail("open store", e));
    let idem = Idem::builder(store)
        .cache_capacity(if args.cache == Switch::On {
            1_000_000
        } else {
            0
        })
        .build();
    let baseline = if args.baseline == Switch::On {
        AnyBaseline::open(&args.store)
            .await
            .unwrap_or_else(|e| fail("open baseline", e))
            .map(Arc::new)
    } else {
        None
    };
    let run: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();

    // Warm up both sides (connections, statement caches), then measure them back to back.
    let warm = Args {
        calls: (args.calls / 10).clamp(10, 500),
        ..Args::parse()
    };
    let _ = run_idem(&warm, idem.clone(), format!("warm-{run}").into()).await;
    if let Some(b) = &baseline {
        let _ = run_baseline(&warm, b.clone(), format!("warm-{run}").into()).await;
    }
    let (stats, executions) = run_idem(&args, idem, run.clone()).await;
    let base = match &baseline {
        Some(b) => Some(run_baseline(&args, b.clone(), run).await),
        None => None,
    };

    let mode = match args.mode {
        Mode::Miss => "miss",
        Mode::Hit => "hit",
    };
    println!(
        "idem     {mode} x{} c{}: {:>10.0} calls/s  mean {:>8.1} us  p50 {:>8.1} us  p99 {:>8.1} us",
        args.calls, args.concurrency, stats.calls_per_s, stats.mean_us, stats.p50_us, stats.p99_us
    );
    let mut json = serde_json::json!({
        "store": args.store.split(':').next().unwrap_or_default(),
        "mode": mode,
        "calls": args.calls,
        "concurrency": args.concurrency,
        "cache": args.cache == Switch::On,
        "executions": executions,
        "seconds": stats.seconds,
        "calls_per_s": stats.calls_per_s,
        "mean_us": stats.mean_us,
        "p50_us": stats.p50_us,
        "p99_us": stats.p99_us,
    });
    if let Some(b) = base {
        println!(
            "baseline {mode} x{} c{}: {:>10.0} calls/s  mean {:>8.1} us  p50 {:>8.1} us  p99 {:>8.1} us",
            args.calls, args.concurrency, b.calls_per_s, b.mean_us, b.p50_us, b.p99_us
        );
        json["baseline"] = serde_json::to_value(b).unwrap_or_default();
        json["ratio_mean"] = (stats.mean_us / b.mean_us).into();
        json["ratio_p50"] = (stats.p50_us / b.p50_us).into();
        json["throughput_ratio"] = (stats.calls_per_s / b.calls_per_s).into();
    }
    println!("{json}");
}
