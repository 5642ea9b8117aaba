//! The showcase: an AI content pipeline (preprocess -> generate -> save -> notify) against a
//! local model server that bills per generation and misbehaves on a seeded schedule, run with
//! `#[idempotent]` steps and without, side by side.
//!
//! ```sh
//! cargo run --release -p idem-examples --bin ai_pipeline                    # both modes, SQLite
//! cargo run --release -p idem-examples --bin ai_pipeline -- --crash-after 20 # kill and resume
//! cargo run --release -p idem-examples --bin ai_pipeline -- --no-idem        # plain retries only
//! cargo run --release -p idem-examples --features postgres --bin ai_pipeline -- \
//!     --store postgres://postgres@127.0.0.1/test --workers 3
//! ```
//!
//! Every worker runs in a child process of this one (so a crash is a real process death); the
//! parent runs the model server, restarts crashed workers, and prints the report. The last
//! stdout line is one JSON object (for scripts and the integration test).

#[path = "../pipeline/mod.rs"]
mod pipeline;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use idem_runtime::record::AttemptOutcome;
use idem_runtime::store::ListFilter;
use idem_runtime::Idem;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncReadExt;

use pipeline::model_client::ModelClient;
use pipeline::model_server::ModelServer;
use pipeline::steps::{run_worker, Ctx, WorkerSummary};

/// An AI pipeline with and without idem, under the same seeded faults.
#[derive(Debug, Parser)]
#[command(name = "ai_pipeline", about)]
struct Args {
    /// Inputs in the batch.
    #[arg(long, default_value_t = 24)]
    inputs: usize,
    /// Seed of the fault schedule (the same seed gives the same faults).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// The idem store (default: a SQLite file in the run directory). `postgres://...` needs the
    /// `postgres` feature.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Worker processes; each runs the whole batch (a duplicate-heavy queue): with idem every
    /// input is still processed once overall.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Kill worker 0 in the middle of a step once this many steps have finished, then restart it.
    #[arg(long, value_name = "N")]
    crash_after: Option<u64>,
    /// Run only the plain pipeline (retries, no idem).
    #[arg(long)]
    no_idem: bool,
    /// Keep the databases here (default: a temporary directory, deleted at the end).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Make the model server deduplicate by `Idempotency-Key` (most providers do not).
    #[arg(long)]
    provider_dedup: bool,
    /// Percent of model requests that bill, then drop the connection.
    #[arg(long, default_value_t = 15)]
    drop_pct: u64,
    /// Percent of model requests slower than the client's timeout (they still bill).
    #[arg(long, default_value_t = 8)]
    slow_pct: u64,
    /// Percent of notify attempts that fail transiently (the whole task is retried).
    #[arg(long, default_value_t = 20)]
    notify_fail_pct: u64,
    /// Percent of tasks the queue delivers twice (the ack was lost).
    #[arg(long, default_value_t = 25)]
    redeliver_pct: u64,
    /// Inputs in flight per worker.
    #[arg(long, default_value_t = 6)]
    concurrency: usize,
    /// Serve the runtime's metrics for Prometheus on this address (from the first idem worker).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// With `--metrics`: keep serving this many seconds after the work is done.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    linger: u64,

    // ---- internal: how the parent starts a worker ----
    #[arg(long, hide = true)]
    child: Option<Mode>,
    #[arg(long, hide = true)]
    model: Option<String>,
    #[arg(long, hide = true)]
    batch: Option<String>,
    #[arg(long, hide = true)]
    app_db: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 0)]
    worker_index: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Idem,
    Plain,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Idem => "idem",
            Mode::Plain => "plain",
        }
    }
}

/// One mode's figures.
#[derive(Debug, Clone, Default)]
struct Figures {
    model_calls: u64,
    tokens_billed: u64,
    dropped: u64,
    slow: u64,
    rows: i64,
    duplicate_rows: i64,
    notifications: i64,
    duplicate_notifications: i64,
    finished: i64,
    retries: u64,
    redeliveries: u64,
    crashes: u64,
    failed: u64,
    wall: Duration,
    attempts: Vec<AttemptRow>,
    attempts_total: usize,
    keys_total: usize,
}

#[derive(Debug, Clone)]
struct AttemptRow {
    op: String,
    key: String,
    attempt: u64,
    worker: String,
    outcome: AttemptOutcome,
    duration: Option<i64>,
    error: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match args.child {
        Some(mode) => runtime.block_on(child(&args, mode)),
        None => runtime.block_on(parent(&args)),
    }
}

// ---------------------------------------------------------------- the worker (a child process)

async fn child(args: &Args, mode: Mode) -> Result<()> {
    let app_db = args.app_db.as_deref().context("--app-db")?;
    let db = pipeline::open_app_db(app_db).await?;
    let worker = format!("w{}/pid{}", args.worker_index, std::process::id());
    if let Some(addr) = &args.metrics {
        let addr: std::net::SocketAddr =
            addr.parse().with_context(|| format!("--metrics {addr}"))?;
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serving metrics on {addr}"))?;
        idem_runtime::metrics::describe();
    }
    if mode == Mode::Idem {
        let url = args.store.as_deref().context("--store")?;
        let store = idem_runtime::store::open(url).await?;
        Idem::builder(store)
            .worker(worker.clone())
            .build()
            .set_default();
    }
    let tx_store = if mode == Mode::Idem {
        Some(idem_runtime::store::sqlite::SqliteStore::from_pool(db.clone()).await?)
    } else {
        None
    };
    let ctx = Arc::new(Ctx {
        db,
        tx_store,
        llm: ModelClient::new(
            args.model.as_deref().context("--model")?,
            Duration::from_millis(250),
        )?,
        batch: args.batch.clone().context("--batch")?,
        seed: args.seed,
        worker,
        crash_after: args.crash_after,
        notify_fail_pct: args.notify_fail_pct,
        redeliver_pct: args.redeliver_pct,
        steps_done: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        redeliveries: AtomicU64::new(0),
    });
    let offset = args.worker_index * args.inputs / args.workers.max(1);
    let summary = run_worker(
        ctx,
        pipeline::batch(args.inputs),
        mode == Mode::Idem,
        offset,
        args.concurrency,
    )
    .await;
    println!("{}", serde_json::to_string(&summary)?);
    if args.metrics.is_some() && args.linger > 0 {
        eprintln!("serving metrics for {} more seconds", args.linger);
        tokio::time::sleep(Duration::from_secs(args.linger)).await;
    }
    Ok(())
}

// ---------------------------------------------------------------- the orchestrator

async fn parent(args: &Args) -> Result<()> {
    if args.inputs == 0 || args.workers == 0 {
        bail!("--inputs and --workers must be at least 1");
    }
    let temp;
    let dir: &Path = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => {
            temp = tempfile::tempdir()?;
            temp.path()
        }
    };
    let idem_store = match &args.store {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", dir.join("idem.db").display()),
    };
    let modes: &[Mode] = if args.no_idem {
        &[Mode::Plain]
    } else {
        &[Mode::Idem, Mode::Plain]
    };
    let batch_id = format!(
        "batch-{}-{}",
        args.seed,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );

    eprintln!(
        "ai_pipeline: {} inputs, seed {}, {} worker(s){}; idem store {}; databases in {}",
        args.inputs,
        args.seed,
        args.workers,
        args.crash_after
            .map(|n| format!(", crash after {n} steps"))
            .unwrap_or_default(),
        if args.no_idem { "-" } else { &idem_store },
        dir.display()
    );
    let mut results = Vec::new();
    for &mode in modes {
        let figures = run_mode(args, mode, dir, &idem_store, &batch_id).await?;
        results.push((mode, figures));
    }

    print_report(args, &results, &idem_store);
    let (first_mode, first) = &results[0];
    let mut line = figures_json(first);
    line["idem"] = json!(*first_mode == Mode::Idem);
    line["inputs"] = json!(args.inputs);
    line["seed"] = json!(args.seed);
    line["workers"] = json!(args.workers);
    if let Some((_, plain)) = results
        .iter()
        .find(|(m, _)| *m == Mode::Plain && *first_mode == Mode::Idem)
    {
        line["without_idem"] = figures_json(plain);
    }
    println!("{line}");
    Ok(())
}

fn figures_json(f: &Figures) -> serde_json::Value {
    json!({
        "model_calls": f.model_calls,
        "tokens_billed": f.tokens_billed,
        "rows": f.rows,
        "duplicate_rows": f.duplicate_rows,
        "notifications": f.notifications,
        "duplicate_notifications": f.duplicate_notifications,
        "finished": f.finished,
        "retries": f.retries,
        "redeliveries": f.redeliveries,
        "crashes": f.crashes,
        "failed_inputs": f.failed,
        "wall_ms": u64::try_from(f.wall.as_millis()).unwrap_or(u64::MAX),
    })
}

async fn run_mode(
    args: &Args,
    mode: Mode,
    dir: &Path,
    idem_store: &str,
    batch: &str,
) -> Result<Figures> {
    let server =
        ModelServer::start(args.seed, args.provider_dedup, args.drop_pct, args.slow_pct).await?;
    let app_db = dir.join(format!("app-{}.db", mode.as_str()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", app_db.display()));
    }
    let db = pipeline::open_app_db(&app_db).await?;
    if mode == Mode::Idem {
        // Create the store's tables once, before several workers race to.
        idem_runtime::store::open(idem_store)
            .await
            .with_context(|| format!("opening {idem_store}"))?;
    }

    let bar = ProgressBar::with_draw_target(Some(args.inputs as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:32}] {pos}/{len} inputs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(if mode == Mode::Idem {
        "with idem"
    } else {
        "no idem"
    });

    let started = Instant::now();
    let since = idem_runtime::record::now_millis();
    let mut handles = Vec::new();
    for index in 0..args.workers {
        let spawn = WorkerSpawn {
            args,
            mode,
            index,
            model: server.url(),
            batch: batch.to_owned(),
            app_db: app_db.clone(),
            store: idem_store.to_owned(),
        };
        handles.push(tokio::spawn(spawn.run_to_completion(bar.clone())));
    }
    let mut summary = WorkerSummary::default();
    let mut crashes = 0;
    let mut pending = handles;
    while !pending.is_empty() {
        if let Ok(t) = pipeline::tally(&db).await {
            bar.set_position(u64::try_from(t.finished).unwrap_or(0));
            bar.set_message(format!(
                "{} model calls, {} rows",
                server.meter.calls.load(Ordering::SeqCst),
                t.rows
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut still = Vec::new();
        for h in pending {
            if h.is_finished() {
                let (s, c) = h.await??;
                summary.retries += s.retries;
                summary.redeliveries += s.redeliveries;
                summary.failed += s.failed;
                crashes += c;
            } else {
                still.push(h);
            }
        }
        pending = still;
    }
    let wall = started.elapsed();
    server.settle().await;
    let tally = pipeline::tally(&db).await?;
    bar.set_position(u64::try_from(tally.finished).unwrap_or(0));
    bar.finish_and_clear();

    let mut figures = Figures {
        model_calls: server.meter.calls.load(Ordering::SeqCst),
        tokens_billed: server.meter.tokens.load(Ordering::SeqCst),
        dropped: server.meter.dropped.load(Ordering::SeqCst),
        slow: server.meter.slow.load(Ordering::SeqCst),
        rows: tally.rows,
        duplicate_rows: tally.duplicate_rows,
        notifications: tally.notifications,
        duplicate_notifications: tally.duplicate_notifications,
        finished: tally.finished,
        retries: summary.retries,
        redeliveries: summary.redeliveries,
        crashes,
        failed: summary.failed,
        wall,
        ..Figures::default()
    };
    if mode == Mode::Idem {
        read_attempts(idem_store, since, &mut figures).await?;
    }
    db.close().await;
    Ok(figures)
}

struct WorkerSpawn<'a> {
    args: &'a Args,
    mode: Mode,
    index: usize,
    model: String,
    batch: String,
    app_db: PathBuf,
    store: String,
}

impl WorkerSpawn<'_> {
    /// Runs one worker process; if it crashes (only worker 0 may, with `--crash-after`),
    /// restarts it without the crash. Returns its summary and how many times it crashed.
    fn run_to_completion(
        self,
        bar: ProgressBar,
    ) -> impl std::future::Future<Output = Result<(WorkerSummary, u64)>> + 'static {
        let exe = std::env::current_exe();
        let a = self.args;
        let mut base: Vec<String> = vec![
            "--child".into(),
            self.mode.as_str().into(),
            "--model".into(),
            self.model,
            "--batch".into(),
            self.batch,
            "--app-db".into(),
            self.app_db.display().to_string(),
            "--worker-index".into(),
            self.index.to_string(),
            "--workers".into(),
            a.workers.to_string(),
            "--inputs".into(),
            a.inputs.to_string(),
            "--seed".into(),
            a.seed.to_string(),
            "--notify-fail-pct".into(),
            a.notify_fail_pct.to_string(),
            "--redeliver-pct".into(),
            a.redeliver_pct.to_string(),
            "--concurrency".into(),
            a.concurrency.to_string(),
            "--store".into(),
            self.store,
        ];
        if let (Some(m), Mode::Idem, 0) = (&a.metrics, self.mode, self.index) {
            base.extend([
                "--metrics".into(),
                m.clone(),
                "--linger".into(),
                a.linger.to_string(),
            ]);
        }
        let crash = a.crash_after.filter(|_| self.index == 0);
        async move {
            let exe = exe?;
            let mut crashes = 0;
            let mut crash_next = crash;
            loop {
                let mut cmd = tokio::process::Command::new(&exe);
                cmd.args(&base)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .kill_on_drop(true);
                if let Some(n) = crash_next {
                    cmd.args(["--crash-after", &n.to_string()]);
                }
                let mut child = cmd.spawn().context("starting a worker process")?;
                let mut out = String::new();
                if let Some(mut stdout) = child.stdout.take() {
                    stdout.read_to_string(&mut out).await?;
                }
                let status = child.wait().await?;
                if status.success() {
                    let line = out.lines().next_back().unwrap_or_default();
                    let summary: WorkerSummary = serde_json::from_str(line)
                        .with_context(|| format!("a worker printed no summary: {out:?}"))?;
                    return Ok((summary, crashes));
                }
                if crash_next.is_none() {
                    bail!("a worker process failed: {status}");
                }
                crashes += 1;
                crash_next = None;
                bar.suspend(|| {
                    eprintln!(
                        "worker {} died ({status}); restarting it: finished steps replay from the store",
                        base[9]
                    );
                });
            }
        }
    }
}

async fn read_attempts(url: &str, since: i64, figures: &mut Figures) -> Result<()> {
    let store = idem_runtime::store::open(url).await?;
    let records = store
        .list(&ListFilter {
            limit: Some(100_000),
            ..ListFilter::default()
        })
        .await?;
    for record in records
        .iter()
        .filter(|r| r.op.starts_with("ai_pipeline::") && r.created_at >= since)
    {
        let attempts = store.attempts(&record.key).await?;
        figures.keys_total += 1;
        figures.attempts_total += attempts.len();
        let interesting = attempts.len() > 1
            || attempts
                .iter()
                .any(|a| a.outcome != AttemptOutcome::Completed);
        if !interesting {
            continue;
        }
        for a in attempts {
            figures.attempts.push(AttemptRow {
                op: record.op.trim_start_matches("ai_pipeline::").to_owned(),
                key: record.key.short().to_string(),
                attempt: a.attempt,
                worker: a.worker,
                outcome: a.outcome,
                duration: a.ended_at.map(|e| e - a.started_at),
                error: a.error.unwrap_or_default(),
            });
        }
    }
    figures
        .attempts
        .sort_by(|a, b| (&a.op, &a.key, a.attempt).cmp(&(&b.op, &b.key, b.attempt)));
    Ok(())
}

fn print_report(args: &Args, results: &[(Mode, Figures)], store: &str) {
    let get = |m: Mode| results.iter().find(|(mode, _)| *mode == m).map(|(_, f)| f);
    let (with, without) = (get(Mode::Idem), get(Mode::Plain));
    println!();
    println!(
        "ai_pipeline: {} inputs, seed {}, {} worker(s){}{}",
        args.inputs,
        args.seed,
        args.workers,
        args.crash_after
            .map(|n| format!(", crash after {n} steps"))
            .unwrap_or_default(),
        if args.provider_dedup {
            ", provider dedups Idempotency-Key"
        } else {
            ""
        }
    );
    println!(
        "faults: model drops the connection after billing {}%, slow {}%; notify fails {}%; queue redelivers {}%",
        args.drop_pct, args.slow_pct, args.notify_fail_pct, args.redeliver_pct
    );
    println!();
    type Row = (&'static str, fn(&Figures) -> String);
    let rows: [Row; 11] = [
        ("model calls (billed)", |f| f.model_calls.to_string()),
        ("tokens billed", |f| f.tokens_billed.to_string()),
        ("  dropped after billing", |f| f.dropped.to_string()),
        ("  slower than the timeout", |f| f.slow.to_string()),
        ("rows saved", |f| f.rows.to_string()),
        ("duplicate rows", |f| f.duplicate_rows.to_string()),
        ("notifications", |f| f.notifications.to_string()),
        ("duplicate notifications", |f| {
            f.duplicate_notifications.to_string()
        }),
        ("task retries / redeliveries", |f| {
            format!("{} / {}", f.retries, f.redeliveries)
        }),
        ("worker crashes", |f| f.crashes.to_string()),
        ("wall time", |f| format!("{:.2}s", f.wall.as_secs_f64())),
    ];
    let cell = |f: Option<&Figures>, r: &Row| f.map_or_else(|| "-".to_owned(), |f| (r.1)(f));
    println!("{:<28} {:>12} {:>12}", "", "with idem", "without idem");
    println!("{:-<28} {:->12} {:->12}", "", "", "");
    for r in &rows {
        println!("{:<28} {:>12} {:>12}", r.0, cell(with, r), cell(without, r));
    }
    if let Some(f) = with {
        println!();
        println!(
            "attempts log from the idem store ({store}): {} keys, {} attempts; keys with more than one attempt or an unfinished one:",
            f.keys_total, f.attempts_total
        );
        if f.attempts.is_empty() {
            println!("  (none: every key ran exactly once)");
        } else {
            println!(
                "{:<15} {:<13} {:>7}  {:<13} {:<10} {:>8}  error",
                "op", "key", "attempt", "worker", "outcome", "duration"
            );
            for a in &f.attempts {
                println!(
                    "{:<15} {:<13} {:>7}  {:<13} {:<10} {:>8}  {}",
                    a.op,
                    a.key,
                    a.attempt,
                    a.worker,
                    a.outcome,
                    a.duration
                        .map_or_else(|| "-".to_owned(), |d| format!("{d}ms")),
                    a.error
                );
            }
        }
        println!(
            "inspect it: cargo run -p idem-cli -- --store {} list   (pass --dir to keep a SQLite store)",
            store
        );
    }
    println!();
}
