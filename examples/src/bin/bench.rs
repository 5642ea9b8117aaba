//! The benchmark driver: idem against a hand-written SQL baseline, in the same run.
//!
//! `cargo run --release -p idem-examples --bin bench -- --store sqlite://bench.db --mode miss
//!  --calls 5000 --concurrency 1 --cache off`
//!
//! The last stdout line is one JSON object: `store, mode, calls, concurrency, cache,
//! executions, seconds, calls_per_s, mean_us, p50_us, p99_us, client_cpu_us, machine_cpu_us`
//! (this process's, and the whole machine's, CPU time per call), and, where the store has SQL,
//! `baseline` (the same fields for the hand-written SQL) and `ratio_mean`, `ratio_p50`,
//! `throughput_ratio`; with `--pgbench on` (PostgreSQL), also `pgbench` (`calls`,
//! `calls_per_s`, `mean_us` of `pgbench -M prepared` running the same statements in the same
//! rounds), `pgbench_throughput_ratio` and `pgbench_ratio_mean`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use clap::{Parser, ValueEnum};
use idem_examples::baseline::sqlite::SqliteBaseline;
use idem_examples::baseline::Baseline;
use idem_examples::stream_bench;
use idem_examples::workload::{baseline_key, drive, Draft, Sample, Stats};
use idem_runtime::{Call, Error, Idem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Every call has a fresh key: claim, trivial body, complete.
    Miss,
    /// Every call replays a completed key.
    Hit,
    /// Every call is a transactional step on a fresh key (`begin_step`, `commit`): claim and
    /// snapshot in one transaction (SQL stores).
    Step,
    /// Streamed results: what journaling adds per chunk, replay speed, and the delay a
    /// duplicate following a live stream sees (see `--chunks`).
    Stream,
    /// Steps inside steps: a step in a parent's body (keyed by arguments, and by position)
    /// and a call reporting a cost, each against a top-level call, one at a time.
    Nested,
    /// The `Idempotency-Key` layer against a bare axum handler: the `api` example serving on
    /// one core, `wrk` loading it from another process (see `--seconds`, `--connections`).
    Http,
    /// A purge of a prefilled store's expired records (`--prefill`, `--expired-pct`,
    /// `--purge-batch`), with misses beside it: rows/s, and the misses' p99 against misses
    /// before the purge.
    Purge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Switch {
    On,
    Off,
}

/// Measure idem's per-call cost against the same SQL written by hand.
#[derive(Debug, Parser)]
struct Args {
    /// Store URL: `memory:`, `sqlite://path`, `postgres://...`, `redis://...`.
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
    /// Alternating rounds of idem and baseline calls.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Connection pool size of both sides (PostgreSQL).
    #[arg(long, default_value_t = 16)]
    pool: u32,
    /// Also run the hand-written SQL baseline (SQL stores only).
    #[arg(long, value_enum, default_value = "on")]
    baseline: Switch,
    /// Also run `pgbench -M prepared` with the same statements, in the same rounds
    /// (PostgreSQL only; needs `psql` and `pgbench` on PATH).
    #[arg(long, value_enum, default_value = "off")]
    pgbench: Switch,
    /// Also run `redis-benchmark` with the store's claim script (`EVALSHA`), in the same
    /// rounds (Redis only; needs `redis-benchmark` on PATH).
    #[arg(long, value_enum, default_value = "off")]
    redis_benchmark: Switch,
    /// Empty idem's tables and the baseline's first (PostgreSQL), so both sides start from the
    /// same empty state instead of tables grown by earlier runs (a table past shared_buffers
    /// costs every statement more). Deletes every record of the store's schema.
    #[arg(long, value_enum, default_value = "off")]
    fresh: Switch,
    /// Chunks per stream (`--mode stream`).
    #[arg(long, default_value_t = 10_000)]
    chunks: u64,
    /// Seconds per kind and round (`--mode http`).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// wrk's connections (`--mode http`).
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Fill a second store (PostgreSQL: schema `bench_prefilled`; SQLite: the file with
    /// `.prefilled` appended) to this many records by bulk SQL, and compare `miss` or `hit`
    /// there with an empty store (`bench_empty`, `.empty`) in alternating rounds. A store
    /// already filled is reused. `--mode purge` fills `bench_purge` (`.purge`).
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// Percent of the prefilled records that are expired (completed, past `expires_at`).
    #[arg(long, default_value_t = 15)]
    expired_pct: u32,
    /// Percent of the prefilled records that are abandoned (running, lease ended 2 h ago).
    #[arg(long, default_value_t = 5)]
    running_pct: u32,
    /// Rows per purge batch (`--mode purge`).
    #[arg(long, default_value_t = 1000)]
    purge_batch: u32,
    /// Follow the attach-lag stream of this key and print each chunk's delay (the other
    /// process of `--mode stream`).
    #[arg(long, hide = true)]
    follow: Option<String>,
}

enum AnyBaseline {
    Sqlite(SqliteBaseline),
    #[cfg(feature = "postgres")]
    Postgres(idem_examples::baseline::postgres::PostgresBaseline),
}

impl AnyBaseline {
    async fn open(url: &str, pool: u32) -> Result<Option<Self>, sqlx::Error> {
        let _ = pool;
        if url.starts_with("sqlite:") {
            return Ok(Some(AnyBaseline::Sqlite(SqliteBaseline::open(url).await?)));
        }
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres") {
            let b = idem_examples::baseline::postgres::PostgresBaseline::open(url, pool).await?;
            return Ok(Some(AnyBaseline::Postgres(b)));
        }
        Ok(None)
    }

    async fn miss(&self, key: &[u8; 32], snapshot: &[u8]) -> Result<(), sqlx::Error> {
        match self {
            AnyBaseline::Sqlite(b) => b.miss(key, snapshot).await,
            #[cfg(feature = "postgres")]
            AnyBaseline::Postgres(b) => b.miss(key, snapshot).await,
        }
    }

    async fn step(&self, key: &[u8; 32], snapshot: &[u8]) -> Result<(), sqlx::Error> {
        match self {
            AnyBaseline::Sqlite(b) => b.step(key, snapshot).await,
            #[cfg(feature = "postgres")]
            AnyBaseline::Postgres(b) => b.step(key, snapshot).await,
        }
    }

    async fn hit(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, sqlx::Error> {
        match self {
            AnyBaseline::Sqlite(b) => b.hit(key).await,
            #[cfg(feature = "postgres")]
            AnyBaseline::Postgres(b) => b.hit(key).await,
        }
    }
}

/// `--mode stream`, `nested` and `http` return before the call modes' report.
fn unreachable_mode() -> ! {
    fail(
        "--mode stream/nested/http",
        "reached the call modes' report",
    )
}

/// `--mode stream`: one JSON line of [`stream_bench::StreamReport`], with the store's name.
async fn stream_mode(args: &Args, store: Arc<dyn idem_runtime::Store>) {
    let url = args.store.clone();
    // A duplicate in another process, for stores other processes can open.
    let spawn = move |key: &str| {
        std::process::Command::new(std::env::current_exe().unwrap_or_else(|e| fail("exe", e)))
            .args(["--store", &url, "--follow", key])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail("spawn the follower", e))
    };
    let cross: Option<&(dyn Fn(&str) -> std::process::Child + Sync)> =
        (!args.store.starts_with("memory")).then_some(&spawn);
    let report = stream_bench::run(store, args.chunks, args.rounds, cross)
        .await
        .unwrap_or_else(|e| fail("stream", e));
    println!(
        "stream x{} ({} rounds): append +{:.2} us/chunk p50 (plain {:.2}), end {:.1} ms, replay {:.0} chunks/s (cache {}), attach lag p50 {:.1} ms p99 {:.1} ms",
        report.chunks,
        report.rounds,
        report.append_p50_us,
        report.plain_p50_us,
        report.end_ms,
        report.replay_chunks_per_s,
        report
            .cache_replay_chunks_per_s
            .map_or_else(|| "off".to_owned(), |r| format!("{r:.0}")),
        report.attach_lag_p50_ms,
        report.attach_lag_p99_ms,
    );
    let mut json = serde_json::to_value(&report).unwrap_or_default();
    json["store"] = args.store.split(':').next().unwrap_or_default().into();
    json["mode"] = "stream".into();
    println!("{json}");
}

/// `--prefill N`: `miss` or `hit` on a prefilled store against an empty one, or `--mode purge`
/// (see `prefill_bench`). One JSON line.
async fn prefill_mode(args: &Args, url: String) {
    use idem_examples::prefill_bench::{self, Kind, Options};
    let kind = match args.mode {
        Mode::Miss => Kind::Miss,
        Mode::Hit => Kind::Hit,
        Mode::Purge => Kind::Purge,
        _ => fail("--prefill", "only with --mode miss, hit or purge"),
    };
    let opts = Options {
        url,
        prefill: args.prefill,
        mix: idem_examples::prefill::Mix {
            expired_pct: args.expired_pct,
            running_pct: args.running_pct,
        },
        kind,
        calls: args.calls as u64,
        concurrency: args.concurrency,
        rounds: args.rounds as u64,
        cache: args.cache == Switch::On,
        purge_batch: args.purge_batch,
    };
    let mut json = if kind == Kind::Purge {
        let r = prefill_bench::purge(&opts)
            .await
            .unwrap_or_else(|e| fail("--mode purge", e));
        eprintln!(
            "purge of {} records ({} added by the fill in {:.0} s): {} purged in {:.1} s = {:.0} rows/s; claims p99 {:.0} us before, {:.0} us during ({:.2}x)",
            r.prefill, r.fill.added, r.fill.seconds, r.purged, r.purge_seconds,
            r.purge_rows_per_s, r.claims_before.p99_us, r.claims_during.p99_us, r.ratio_p99
        );
        serde_json::to_value(&r).unwrap_or_default()
    } else {
        let r = prefill_bench::compare(&opts)
            .await
            .unwrap_or_else(|e| fail("--prefill", e));
        eprintln!(
            "{} records ({}): p50 {:.0} us vs {:.0} us empty ({:.2}x), p99 {:.0} vs {:.0} us ({:.2}x); stats {:.0}..{:.0} ms, list --op {:.0}..{:.0} ms",
            r.prefill,
            if r.fill.added == 0 { "already filled".to_owned() } else { format!("filled {} in {:.0} s", r.fill.added, r.fill.seconds) },
            r.prefilled.p50_us, r.empty.p50_us, r.ratio_p50,
            r.prefilled.p99_us, r.empty.p99_us, r.ratio_p99,
            r.stats_ms[0], r.stats_ms[1], r.list_op_ms[0], r.list_op_ms[1],
        );
        serde_json::to_value(&r).unwrap_or_default()
    };
    json["store"] = args.store.split(':').next().unwrap_or_default().into();
    json["mode"] = format!("{:?}", args.mode).to_lowercase().into();
    json["calls"] = args.calls.into();
    json["concurrency"] = args.concurrency.into();
    json["cache"] = (args.cache == Switch::On).into();
    println!("{json}");
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("bench: {what}: {e}");
    std::process::exit(1)
}

/// One side of the comparison: idem, or the hand-written baseline.
trait Side: Clone + Send + Sync + 'static {
    /// Makes key `i` completed (for hit runs).
    fn prepare(&self, i: u64) -> impl std::future::Future<Output = ()> + Send;
    /// One measured call on key `i`.
    fn call(&self, i: u64) -> impl std::future::Future<Output = ()> + Send;
}

#[derive(Clone)]
struct IdemSide {
    idem: Idem,
    /// The store's transactional steps, for `--mode step`.
    steps: Option<Steps>,
    op: &'static str,
    run: Arc<str>,
    executions: Arc<AtomicU64>,
}

/// A SQL store, for its transactional steps.
#[derive(Clone)]
enum Steps {
    Sqlite(Arc<idem_runtime::store::sqlite::SqliteStore>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<idem_runtime::store::postgres::PostgresStore>),
}

impl Steps {
    /// Creates the application table the steps write to (as the baseline does).
    async fn prepare(&self) -> Result<(), Error> {
        match self {
            Steps::Sqlite(store) => {
                sqlx::query(idem_examples::baseline::sqlite::APP_TABLE)
                    .execute(store.pool())
                    .await?;
            }
            #[cfg(feature = "postgres")]
            Steps::Postgres(store) => {
                sqlx::query(idem_examples::baseline::postgres::APP_TABLE)
                    .execute(store.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// One step on a fresh key, in the application's own transaction on the store's pool (as
    /// the baseline does: BEGIN, claim, one application insert, completion, COMMIT).
    async fn run(&self, idem: &Idem, call: Call, i: u64) -> Result<(), Error> {
        let key = call.key_value();
        match self {
            Steps::Sqlite(store) => {
                // A write transaction takes SQLite's write lock up front: no upgrade to fail.
                let mut tx = store.pool().begin_with("BEGIN IMMEDIATE").await?;
                let _: Draft = idem
                    .step(call, &mut tx, |tx| {
                        Box::pin(async move {
                            sqlx::query(idem_examples::baseline::sqlite::APP_INSERT)
                                .bind(&key.0[..])
                                .execute(&mut **tx)
                                .await?;
                            Ok::<_, Error>(Draft::for_call(i))
                        })
                    })
                    .await?;
                tx.commit().await?;
            }
            #[cfg(feature = "postgres")]
            Steps::Postgres(store) => {
                let mut tx = store.pool().begin().await?;
                let _: Draft = idem
                    .step(call, &mut tx, |tx| {
                        Box::pin(async move {
                            sqlx::query(idem_examples::baseline::postgres::APP_INSERT)
                                .bind(&key.0[..])
                                .execute(&mut **tx)
                                .await?;
                            Ok::<_, Error>(Draft::for_call(i))
                        })
                    })
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }
}

impl Side for IdemSide {
    async fn prepare(&self, i: u64) {
        self.call(i).await;
    }

    async fn call(&self, i: u64) {
        let executions = &self.executions;
        if let Some(steps) = &self.steps {
            executions.fetch_add(1, Ordering::Relaxed);
            let call = Call::new(self.op).key(&(&*self.run, i));
            if let Err(e) = steps.run(&self.idem, call, i).await {
                fail("idem step", e);
            }
            return;
        }
        let draft: Result<Draft, Error> = self
            .idem
            .call(Call::new(self.op).key(&(&*self.run, i)), || async {
                executions.fetch_add(1, Ordering::Relaxed);
                Ok(Draft::for_call(i))
            })
            .await;
        if let Err(e) = draft {
            fail("idem call", e);
        }
    }
}

#[derive(Clone)]
struct BaselineSide {
    baseline: Arc<AnyBaseline>,
    mode: Mode,
    run: Arc<str>,
}

impl Side for BaselineSide {
    async fn prepare(&self, i: u64) {
        let snapshot = serde_json::to_vec(&Draft::for_call(i)).unwrap_or_default();
        if let Err(e) = self
            .baseline
            .miss(&baseline_key(&self.run, i), &snapshot)
            .await
        {
            fail("baseline setup", e);
        }
    }

    async fn call(&self, i: u64) {
        let key = baseline_key(&self.run, i);
        let r = match self.mode {
            Mode::Miss => {
                let snapshot = serde_json::to_vec(&Draft::for_call(i)).unwrap_or_default();
                self.baseline.miss(&key, &snapshot).await
            }
            Mode::Step => {
                let snapshot = serde_json::to_vec(&Draft::for_call(i)).unwrap_or_default();
                self.baseline.step(&key, &snapshot).await
            }
            Mode::Stream | Mode::Nested | Mode::Http | Mode::Purge => unreachable_mode(),
            Mode::Hit => match self.baseline.hit(&key).await {
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
}

/// Measures `side` on keys `range`.
async fn measure<S: Side>(side: &S, range: std::ops::Range<u64>, concurrency: usize) -> Sample {
    let side = side.clone();
    drive(range, concurrency, move |i| {
        let side = side.clone();
        async move { side.call(i).await }
    })
    .await
}

/// Opens the store, and its transactional steps where it has them; with `fresh`, a PostgreSQL
/// store's tables are emptied first.
async fn open_store(url: &str, fresh: bool) -> (Arc<dyn idem_runtime::Store>, Option<Steps>) {
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres") {
        let store = idem_runtime::store::postgres::PostgresStore::open(url)
            .await
            .unwrap_or_else(|e| fail("open store", e));
        if fresh {
            sqlx::query(&format!(
                "TRUNCATE {}, {}",
                store.records_table(),
                store.attempts_table()
            ))
            .execute(store.pool())
            .await
            .unwrap_or_else(|e| fail("empty the store", e));
        }
        let store = Arc::new(store);
        return (store.clone(), Some(Steps::Postgres(store)));
    }
    let _ = fresh;
    if url.starts_with("sqlite:") {
        let store = idem_runtime::store::sqlite::SqliteStore::open(url)
            .await
            .unwrap_or_else(|e| fail("open store", e));
        let store = Arc::new(store);
        return (store.clone(), Some(Steps::Sqlite(store)));
    }
    let store = idem_runtime::store::open(url)
        .await
        .unwrap_or_else(|e| fail("open store", e));
    (store, None)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut url = args.store.clone();
    if url.starts_with("postgres") && !url.contains("idem_max_connections") {
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}idem_max_connections={}", args.pool);
    }
    if args.mode == Mode::Http {
        // The server process opens the store itself.
        let report =
            idem_examples::http_bench::run(&url, args.rounds, args.seconds, args.connections)
                .await
                .unwrap_or_else(|e| fail("--mode http", e));
        for kind in &report.kinds {
            eprintln!(
                "{:>6}: {:>8.0}..{:>8.0} req/s, p50 {:.0} us, p99 {:.0} us",
                kind.kind,
                kind.rps.iter().copied().fold(f64::INFINITY, f64::min),
                kind.rps.iter().copied().fold(0.0, f64::max),
                kind.p50_us.iter().sum::<f64>() / kind.p50_us.len().max(1) as f64,
                kind.p99_us.iter().sum::<f64>() / kind.p99_us.len().max(1) as f64,
            );
        }
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
        return;
    }
    if args.prefill > 0 || args.mode == Mode::Purge {
        return prefill_mode(&args, url).await;
    }
    let (store, steps) = open_store(&url, args.fresh == Switch::On).await;
    if let Some(key) = &args.follow {
        let idem = Idem::builder(store).cache_capacity(0).build();
        let lags = stream_bench::follow(&idem, stream_bench::attach_call(key))
            .await
            .unwrap_or_else(|e| fail("follow", e));
        println!("{}", serde_json::to_string(&lags).unwrap_or_default());
        return;
    }
    if args.mode == Mode::Stream {
        return stream_mode(&args, store).await;
    }
    if args.mode == Mode::Nested {
        let report = idem_examples::nested_bench::run(store, args.calls, args.rounds)
            .await
            .unwrap_or_else(|e| fail("nested", e));
        println!(
            "nested x{} ({} rounds): top-level {:.0} us, step {:.0} us ({:.3}x), by position {:.0} us ({:.3}x), with a cost {:.0} us ({:.3}x)",
            report.calls,
            report.rounds,
            report.top_p50_us,
            report.step_p50_us,
            report.step_ratio,
            report.position_step_p50_us,
            report.position_step_ratio,
            report.costed_p50_us,
            report.costed_ratio,
        );
        let mut json = serde_json::to_value(&report).unwrap_or_default();
        json["store"] = args.store.split(':').next().unwrap_or_default().into();
        json["mode"] = "nested".into();
        println!("{json}");
        return;
    }
    if args.mode == Mode::Step && steps.is_none() {
        fail(
            "--mode step",
            "the store has no transactional steps (SQL stores only)",
        );
    }
    let idem = Idem::builder(store)
        .cache_capacity(if args.cache == Switch::On {
            1_000_000
        } else {
            0
        })
        .build();
    let baseline = if args.baseline == Switch::On {
        AnyBaseline::open(&args.store, args.pool)
            .await
            .unwrap_or_else(|e| fail("open baseline", e))
            .map(Arc::new)
    } else {
        None
    };
    #[cfg(feature = "postgres")]
    if let (Switch::On, Some(AnyBaseline::Postgres(b))) = (args.fresh, baseline.as_deref()) {
        b.empty()
            .await
            .unwrap_or_else(|e| fail("empty the baseline", e));
    }
    #[cfg(feature = "postgres")]
    let pgbench = (args.pgbench == Switch::On && args.store.starts_with("postgres"))
        .then(|| {
            let script = match args.mode {
                Mode::Miss => idem_examples::pgbench::Script::Miss,
                Mode::Step => idem_examples::pgbench::Script::Step,
                Mode::Hit => idem_examples::pgbench::Script::Hit,
                Mode::Stream | Mode::Nested | Mode::Http | Mode::Purge => unreachable_mode(),
            };
            idem_examples::pgbench::Pgbench::new(&args.store, script)
        })
        .transpose()
        .unwrap_or_else(|e| fail("prepare pgbench", e));
    #[cfg(feature = "postgres")]
    let mut pgbench_stats = idem_examples::pgbench::PgbenchStats::default();
    #[cfg(feature = "redis")]
    let redis_benchmark = if args.redis_benchmark == Switch::On && args.store.starts_with("redis") {
        use idem_examples::redis_benchmark::{RedisBenchmark, Script};
        let script = match args.mode {
            Mode::Miss => Script::Miss,
            Mode::Hit => Script::Hit,
            Mode::Step => fail("--redis-benchmark", "no steps on Redis"),
            Mode::Stream | Mode::Nested | Mode::Http | Mode::Purge => unreachable_mode(),
        };
        Some(
            RedisBenchmark::new(&args.store, script)
                .await
                .unwrap_or_else(|e| fail("prepare redis-benchmark", e)),
        )
    } else {
        None
    };
    #[cfg(feature = "redis")]
    let mut redis_benchmark_stats = idem_examples::redis_benchmark::RedisBenchmarkStats::default();
    #[cfg(feature = "redis")]
    let mut redis_set_stats = idem_examples::redis_benchmark::RedisBenchmarkStats::default();
    let run: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
    let executions = Arc::new(AtomicU64::new(0));
    if let (Mode::Step, Some(steps)) = (args.mode, &steps) {
        steps
            .prepare()
            .await
            .unwrap_or_else(|e| fail("create the application table", e));
    }
    let idem_side = IdemSide {
        idem,
        steps: (args.mode == Mode::Step).then_some(steps).flatten(),
        op: match args.mode {
            Mode::Miss => "bench.miss",
            Mode::Hit => "bench.hit",
            Mode::Step => "bench.step",
            Mode::Stream | Mode::Nested | Mode::Http | Mode::Purge => unreachable_mode(),
        },
        run: run.clone(),
        executions: executions.clone(),
    };
    let base_side = baseline.map(|baseline| BaselineSide {
        baseline,
        mode: args.mode,
        run,
    });

    // Keys: [0, warm) warm both sides up (connections, statement caches); the measured keys
    // follow. Hit runs complete every key first.
    let calls = args.calls as u64;
    let warm = (calls / 10).clamp(10, 500);
    if args.mode == Mode::Hit {
        for i in 0..warm + calls {
            idem_side.prepare(i).await;
            if let Some(b) = &base_side {
                b.prepare(i).await;
            }
        }
    }
    measure(&idem_side, 0..warm, args.concurrency).await;
    if let Some(b) = &base_side {
        measure(b, 0..warm, args.concurrency).await;
    }
    // The two sides alternate in rounds, so drift in the machine's speed hits both alike.
    let before = executions.load(Ordering::Relaxed);
    let rounds = args.rounds.max(1) as u64;
    let (mut ours, mut theirs) = (Sample::default(), Sample::default());
    for r in 0..rounds {
        let range = warm + calls * r / rounds..warm + calls * (r + 1) / rounds;
        ours.absorb(measure(&idem_side, range.clone(), args.concurrency).await);
        if let Some(b) = &base_side {
            theirs.absorb(measure(b, range.clone(), args.concurrency).await);
        }
        #[cfg(feature = "postgres")]
        if let Some(p) = &pgbench {
            let calls = range.end - range.start;
            let (p, concurrency) = (p, args.concurrency);
            let stats = tokio::task::block_in_place(|| p.run(calls, concurrency))
                .unwrap_or_else(|e| fail("pgbench", e));
            pgbench_stats.absorb(stats);
        }
        #[cfg(feature = "redis")]
        if let Some(rb) = &redis_benchmark {
            let calls = range.end - range.start;
            let stats = tokio::task::block_in_place(|| rb.run(calls, args.concurrency))
                .unwrap_or_else(|e| fail("redis-benchmark", e));
            redis_benchmark_stats.absorb(stats);
            let set = tokio::task::block_in_place(|| rb.run_set(calls, args.concurrency))
                .unwrap_or_else(|e| fail("redis-benchmark SET", e));
            redis_set_stats.absorb(set);
        }
    }
    #[cfg(feature = "redis")]
    if let Some(rb) = &redis_benchmark {
        rb.clean().await;
    }
    let executions = executions.load(Ordering::Relaxed) - before;
    let stats: Stats = ours.stats();
    let base = base_side.is_some().then(|| theirs.stats());

    let mode = match args.mode {
        Mode::Miss => "miss",
        Mode::Hit => "hit",
        Mode::Step => "step",
        Mode::Stream | Mode::Nested | Mode::Http | Mode::Purge => unreachable_mode(),
    };
    let cpu = |s: &Stats| match (s.client_cpu_us, s.machine_cpu_us) {
        (Some(c), Some(m)) => format!("  cpu/call {c:>6.1} us client, {m:>6.1} us machine"),
        _ => String::new(),
    };
    println!(
        "idem     {mode} x{} c{}: {:>10.0} calls/s  mean {:>8.1} us  p50 {:>8.1} us  p99 {:>8.1} us{}",
        args.calls,
        args.concurrency,
        stats.calls_per_s,
        stats.mean_us,
        stats.p50_us,
        stats.p99_us,
        cpu(&stats)
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
        "client_cpu_us": stats.client_cpu_us,
        "machine_cpu_us": stats.machine_cpu_us,
    });
    if let Some(b) = base {
        println!(
            "baseline {mode} x{} c{}: {:>10.0} calls/s  mean {:>8.1} us  p50 {:>8.1} us  p99 {:>8.1} us{}",
            args.calls,
            args.concurrency,
            b.calls_per_s,
            b.mean_us,
            b.p50_us,
            b.p99_us,
            cpu(&b)
        );
        json["baseline"] = serde_json::to_value(b).unwrap_or_default();
        json["ratio_mean"] = (stats.mean_us / b.mean_us).into();
        json["ratio_p50"] = (stats.p50_us / b.p50_us).into();
        json["throughput_ratio"] = (stats.calls_per_s / b.calls_per_s).into();
    }
    #[cfg(feature = "postgres")]
    if pgbench.is_some() {
        let p = pgbench_stats;
        println!(
            "pgbench  {mode} x{} c{}: {:>10.0} calls/s  mean {:>8.1} us",
            p.calls, args.concurrency, p.calls_per_s, p.mean_us
        );
        json["pgbench"] = serde_json::to_value(p).unwrap_or_default();
        json["pgbench_throughput_ratio"] = (stats.calls_per_s / p.calls_per_s).into();
        json["pgbench_ratio_mean"] = (stats.mean_us / p.mean_us).into();
    }
    #[cfg(feature = "redis")]
    if redis_benchmark.is_some() {
        let r = redis_benchmark_stats;
        println!(
            "redis-benchmark {mode} x{} c{}: {:>10.0} calls/s  mean {:>8.1} us  p50 {:>8.1} us",
            r.calls, args.concurrency, r.calls_per_s, r.mean_us, r.p50_us
        );
        let set = redis_set_stats;
        println!(
            "redis-benchmark SET x{} c{}: {:>10.0} calls/s  mean {:>8.1} us  p50 {:>8.1} us",
            set.calls, args.concurrency, set.calls_per_s, set.mean_us, set.p50_us
        );
        json["redis_benchmark"] = serde_json::to_value(r).unwrap_or_default();
        json["redis_benchmark_set"] = serde_json::to_value(set).unwrap_or_default();
        json["redis_benchmark_throughput_ratio"] = (stats.calls_per_s / r.calls_per_s).into();
        json["redis_benchmark_ratio_p50"] = (stats.p50_us / r.p50_us).into();
    }
    println!("{json}");
}
