//! Criterion: idem's per-call cost on memory and SQLite, side by side with the hand-written SQL
//! baseline on the same database file, for a miss (fresh key) and a hit (replay).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use idem_examples::baseline::sqlite::SqliteBaseline;
use idem_examples::baseline::Baseline;
use idem_examples::workload::{baseline_key, Draft};
use idem_runtime::{Call, Error, Idem};

const HIT_KEYS: u64 = 1000;

async fn idem_call(idem: &Idem, op: &'static str, run: &str, i: u64) -> Draft {
    let r: Result<Draft, Error> = idem
        .call(Call::new(op).key(&(run, i)), || async {
            Ok(Draft::for_call(i))
        })
        .await;
    r.unwrap()
}

fn bench_idem(c: &mut Criterion, rt: &tokio::runtime::Runtime, group: &str, idem: &Idem) {
    let mut g = c.benchmark_group(group);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let n = Arc::new(AtomicU64::new(0));
    g.bench_function("idem_miss", |b| {
        b.to_async(rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            idem_call(idem, "bench.miss", &run, i)
        })
    });
    rt.block_on(async {
        for i in 0..HIT_KEYS {
            idem_call(idem, "bench.hit", &run, i).await;
        }
    });
    g.bench_function("idem_hit", |b| {
        b.to_async(rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) % HIT_KEYS;
            idem_call(idem, "bench.hit", &run, i)
        })
    });
    g.finish();
}

fn bench_baseline(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    base: &SqliteBaseline,
) {
    let mut g = c.benchmark_group(group);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let n = Arc::new(AtomicU64::new(0));
    let snapshot = |i| serde_json::to_vec(&Draft::for_call(i)).unwrap();
    g.bench_function("baseline_miss", |b| {
        b.to_async(rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let (key, snap) = (baseline_key(&run, i), snapshot(i));
            async move { base.miss(&key, &snap).await.unwrap() }
        })
    });
    rt.block_on(async {
        for i in 0..HIT_KEYS {
            base.miss(&baseline_key(&run, i + (1 << 40)), &snapshot(i))
                .await
                .unwrap();
        }
    });
    g.bench_function("baseline_hit", |b| {
        b.to_async(rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) % HIT_KEYS;
            let key = baseline_key(&run, i + (1 << 40));
            async move {
                let bytes = base.hit(&key).await.unwrap().unwrap();
                serde_json::from_slice::<Draft>(&bytes).unwrap()
            }
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    bench_idem(c, &rt, "memory_cached", &Idem::memory());
    let memory = Idem::builder(Arc::new(idem_runtime::store::memory::MemoryStore::new()))
        .cache_capacity(0)
        .build();
    bench_idem(c, &rt, "memory_uncached", &memory);

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = rt.block_on(idem_runtime::store::open(&url)).unwrap();
    let sqlite = Idem::builder(store.clone()).cache_capacity(0).build();
    bench_idem(c, &rt, "sqlite_uncached", &sqlite);
    let base = rt.block_on(SqliteBaseline::open(&url)).unwrap();
    bench_baseline(c, &rt, "sqlite_uncached", &base);
    bench_idem(c, &rt, "sqlite_cached", &Idem::builder(store).build());
}

criterion_group!(store_overhead, benches);
criterion_main!(store_overhead);
