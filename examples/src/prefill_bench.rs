//! `bench --prefill N`: idem on a store holding `N` records against the same store empty, in
//! alternating rounds of one run, and (`--mode purge`) a purge of a big table's expired records
//! with claims running beside it.
//!
//! The prefilled store is a second schema (PostgreSQL: `bench_prefilled`, `bench_purge`) or a
//! second file (SQLite: the path with `.prefilled`, `.purge` appended) next to an empty one
//! (`bench_empty`, `.empty`), so a fill of ten million records is paid once: a later run fills
//! only what is missing (see [`crate::prefill`]), and says so (`fill.added`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_runtime::store::ListFilter;
use idem_runtime::{Call, Error, Idem, Store};
use serde::Serialize;

use crate::prefill::{self, Filled, Mix};
use crate::workload::{drive, Draft, Sample, Stats};

/// What the prefill benchmark measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Claims of fresh keys (claim, trivial body, complete).
    Miss,
    /// Replays of completed keys (`--cache off` makes every one read the store).
    Hit,
    /// A purge of the expired records, with misses beside it.
    Purge,
}

/// One store of the comparison, opened with what the fill needs.
#[derive(Clone)]
enum Target {
    Sqlite(Arc<idem_runtime::store::sqlite::SqliteStore>),
    #[cfg(feature = "postgres")]
    Postgres(Arc<idem_runtime::store::postgres::PostgresStore>),
}

impl Target {
    /// Opens the variant `name` of the store `url` names: its own schema or file.
    async fn open(url: &str, name: &str) -> Result<Self, Error> {
        #[cfg(feature = "postgres")]
        if url.starts_with("postgres") {
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{sep}idem_schema=bench_{name}");
            let store = idem_runtime::store::postgres::PostgresStore::open(&url).await?;
            return Ok(Target::Postgres(Arc::new(store)));
        }
        if url.starts_with("sqlite:") {
            let store =
                idem_runtime::store::sqlite::SqliteStore::open(&format!("{url}.{name}")).await?;
            return Ok(Target::Sqlite(Arc::new(store)));
        }
        Err(Error::Config(format!(
            "--prefill needs a SQLite or PostgreSQL store, not {url:?}"
        )))
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Target::Sqlite(s) => s.clone(),
            #[cfg(feature = "postgres")]
            Target::Postgres(s) => s.clone(),
        }
    }

    async fn fill(&self, n: u64, mix: Mix) -> Result<Filled, sqlx::Error> {
        match self {
            Target::Sqlite(s) => prefill::sqlite(s.pool(), n, mix).await,
            #[cfg(feature = "postgres")]
            Target::Postgres(s) => prefill::postgres(s.pool(), s.records_table(), n, mix).await,
        }
    }

    /// Deletes every record, so the empty side starts empty in every run.
    async fn empty(&self) -> Result<(), sqlx::Error> {
        match self {
            Target::Sqlite(s) => {
                sqlx::query("DELETE FROM idem_records")
                    .execute(s.pool())
                    .await?;
            }
            #[cfg(feature = "postgres")]
            Target::Postgres(s) => {
                sqlx::query(&format!(
                    "TRUNCATE {}, {}",
                    s.records_table(),
                    s.attempts_table()
                ))
                .execute(s.pool())
                .await?;
            }
        }
        Ok(())
    }
}

/// The JSON line of `bench --prefill N --mode miss|hit`.
#[derive(Debug, Serialize)]
pub struct PrefillReport {
    /// Records the prefilled store holds (at least).
    pub prefill: u64,
    /// What this run's fill did (`added` 0: the store was already filled).
    pub fill: Filled,
    /// Calls on the empty store.
    pub empty: Stats,
    /// Calls on the prefilled store, in the same rounds.
    pub prefilled: Stats,
    /// `prefilled.p50_us / empty.p50_us`.
    pub ratio_p50: f64,
    /// `prefilled.p99_us / empty.p99_us`.
    pub ratio_p99: f64,
    /// `Store::counts` then `Store::costs` (what `idem stats` reads) on the prefilled store,
    /// milliseconds, best and worst of three.
    pub stats_ms: [f64; 2],
    /// `Store::list` of the newest 100 records of operation `prefill.a` (what `idem list --op`
    /// reads), milliseconds, best and worst of three.
    pub list_op_ms: [f64; 2],
}

/// The JSON line of `bench --prefill N --mode purge`.
#[derive(Debug, Serialize)]
pub struct PurgeReport {
    /// Records the store held before the purge (at least).
    pub prefill: u64,
    /// What this run's fill did.
    pub fill: Filled,
    /// Records the purge deleted (expired and abandoned).
    pub purged: u64,
    /// Rows per purge batch.
    pub batch: u32,
    /// Wall time of the purge.
    pub purge_seconds: f64,
    /// `purged / purge_seconds`.
    pub purge_rows_per_s: f64,
    /// Misses on the same store before the purge.
    pub claims_before: Stats,
    /// Misses while the purge ran.
    pub claims_during: Stats,
    /// `claims_during.p99_us / claims_before.p99_us`.
    pub ratio_p99: f64,
}

/// One side: an `Idem` on a store, calling keys of one run.
#[derive(Clone)]
struct Side {
    idem: Idem,
    op: &'static str,
    run: Arc<str>,
}

impl Side {
    fn new(store: Arc<dyn Store>, op: &'static str, cache: bool) -> Self {
        let idem = Idem::builder(store)
            .cache_capacity(if cache { 1_000_000 } else { 0 })
            .build();
        let run = uuid::Uuid::new_v4().simple().to_string().into();
        Self { idem, op, run }
    }

    async fn call(&self, i: u64) {
        let draft: Result<Draft, Error> = self
            .idem
            .call(Call::new(self.op).key(&(&*self.run, i)), || async {
                Ok(Draft::for_call(i))
            })
            .await;
        if let Err(e) = draft {
            eprintln!("bench: idem call: {e}");
            std::process::exit(1);
        }
    }

    async fn measure(&self, range: std::ops::Range<u64>, concurrency: usize) -> Sample {
        let side = self.clone();
        drive(range, concurrency, move |i| {
            let side = side.clone();
            async move { side.call(i).await }
        })
        .await
    }
}

/// The options of a prefill run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The store URL (SQLite or PostgreSQL).
    pub url: String,
    /// Records to fill the store to.
    pub prefill: u64,
    /// The fill's mix.
    pub mix: Mix,
    /// What to measure.
    pub kind: Kind,
    /// Measured calls (all rounds together).
    pub calls: u64,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Alternating rounds.
    pub rounds: u64,
    /// The snapshot cache.
    pub cache: bool,
    /// Rows per purge batch (`Kind::Purge`).
    pub purge_batch: u32,
}

/// Runs `Kind::Miss` or `Kind::Hit`: both stores, alternating rounds.
pub async fn compare(opts: &Options) -> Result<PrefillReport, Error> {
    let empty = Target::open(&opts.url, "empty").await?;
    let filled = Target::open(&opts.url, "prefilled").await?;
    empty.empty().await?;
    let fill = filled.fill(opts.prefill, opts.mix).await?;
    let op = if opts.kind == Kind::Hit {
        "bench.hit"
    } else {
        "bench.miss"
    };
    let sides = [
        Side::new(empty.store(), op, opts.cache),
        Side::new(filled.store(), op, opts.cache),
    ];
    let warm = (opts.calls / 10).clamp(10, 500);
    let end = warm + opts.calls;
    if opts.kind == Kind::Hit {
        for side in &sides {
            side.measure(0..end, opts.concurrency).await;
        }
    }
    for side in &sides {
        side.measure(0..warm, opts.concurrency).await;
    }
    let mut samples = [Sample::default(), Sample::default()];
    let rounds = opts.rounds.max(1);
    for r in 0..rounds {
        let range = warm + opts.calls * r / rounds..warm + opts.calls * (r + 1) / rounds;
        for (side, sample) in sides.iter().zip(samples.iter_mut()) {
            sample.absorb(side.measure(range.clone(), opts.concurrency).await);
        }
    }
    let [empty_stats, filled_stats] = [samples[0].stats(), samples[1].stats()];
    let store = filled.store();
    let stats_ms = timed(|| async {
        store.counts(None).await?;
        store.costs(None).await.map(drop)
    })
    .await?;
    let list_op_ms = timed(|| async {
        store
            .list(&ListFilter {
                op: Some("prefill.a".to_owned()),
                limit: Some(100),
                ..ListFilter::default()
            })
            .await
            .map(drop)
    })
    .await?;
    Ok(PrefillReport {
        prefill: opts.prefill,
        fill,
        ratio_p50: filled_stats.p50_us / empty_stats.p50_us,
        ratio_p99: filled_stats.p99_us / empty_stats.p99_us,
        empty: empty_stats,
        prefilled: filled_stats,
        stats_ms,
        list_op_ms,
    })
}

/// Best and worst of three runs of `read`, milliseconds.
async fn timed<F, Fut>(read: F) -> Result<[f64; 2], Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        read().await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let worst = times.iter().copied().fold(0.0, f64::max);
    Ok([best, worst])
}

/// Runs `Kind::Purge`: misses alone, then a purge of the prefilled store with misses beside it.
pub async fn purge(opts: &Options) -> Result<PurgeReport, Error> {
    let target = Target::open(&opts.url, "purge").await?;
    let fill = target.fill(opts.prefill, opts.mix).await?;
    let side = Side::new(target.store(), "bench.purge", opts.cache);
    let warm = (opts.calls / 10).clamp(10, 500);
    side.measure(0..warm, opts.concurrency).await;
    let before = side
        .measure(warm..warm + opts.calls, opts.concurrency)
        .await;
    let idem = Idem::builder(target.store()).cache_capacity(0).build();
    let batch = opts.purge_batch;
    let started = Instant::now();
    let purging = tokio::spawn(async move {
        idem.purge_expired(batch, Duration::from_secs(3600))
            .await
            .map(|n| (n, started.elapsed().as_secs_f64()))
    });
    // Misses in slices of 100 calls per caller, for as long as the purge runs.
    let mut during = Sample::default();
    let mut next = warm + opts.calls;
    while !purging.is_finished() {
        let slice = 100 * opts.concurrency.max(1) as u64;
        during.absorb(side.measure(next..next + slice, opts.concurrency).await);
        next += slice;
    }
    let (purged, seconds) = purging
        .await
        .map_err(|e| Error::Config(format!("the purge task failed: {e}")))??;
    let (before, during) = (before.stats(), during.stats());
    Ok(PurgeReport {
        prefill: opts.prefill,
        fill,
        purged,
        batch,
        purge_seconds: seconds,
        purge_rows_per_s: purged as f64 / seconds,
        ratio_p99: during.p99_us / before.p99_us,
        claims_before: before,
        claims_during: during,
    })
}
