//! Criterion: the cost of `#[idempotent]` over the same call written with the programmatic API
//! (`Idem::call(Call::new(op).part(..), body)`), on the memory store, for a miss (fresh key: the
//! body runs, the outcome is recorded) and a hit (replay from the snapshot cache).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use idem_runtime::{idempotent, Call, Error, Idem};
use serde::{Deserialize, Serialize};

const HIT_KEYS: u64 = 1000;

#[derive(Debug, Serialize, Deserialize)]
struct Draft {
    id: u64,
    text: String,
}

impl Draft {
    fn new(id: u64) -> Self {
        Self {
            id,
            text: format!("draft number {id}"),
        }
    }
}

#[idempotent(name = "bench.m", key = (run, i), store = idem)]
async fn with_macro(idem: &Idem, run: &str, i: u64) -> Result<Draft, Error> {
    Ok(Draft::new(i))
}

async fn with_api(idem: &Idem, run: &str, i: u64) -> Result<Draft, Error> {
    idem.call(Call::new("bench.p").part(run).part(&i), || async move {
        Ok(Draft::new(i))
    })
    .await
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let idem = Idem::memory();
    let run = "macro-overhead";
    let n = AtomicU64::new(0);
    rt.block_on(async {
        for i in 0..HIT_KEYS {
            with_macro(&idem, run, i).await.unwrap();
            with_api(&idem, run, i).await.unwrap();
        }
    });

    let (idem, n) = (&idem, &n);
    let mut g = c.benchmark_group("macro_overhead/memory");
    g.bench_function("macro_hit", |b| {
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) % HIT_KEYS;
            async move { with_macro(idem, run, i).await.unwrap() }
        })
    });
    g.bench_function("api_hit", |b| {
        b.to_async(&rt).iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed) % HIT_KEYS;
            async move { with_api(idem, run, i).await.unwrap() }
        })
    });
    g.bench_function("macro_miss", |b| {
        b.to_async(&rt).iter(|| {
            let i = HIT_KEYS + n.fetch_add(1, Ordering::Relaxed);
            async move { with_macro(idem, run, i).await.unwrap() }
        })
    });
    g.bench_function("api_miss", |b| {
        b.to_async(&rt).iter(|| {
            let i = HIT_KEYS + n.fetch_add(1, Ordering::Relaxed);
            async move { with_api(idem, run, i).await.unwrap() }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
