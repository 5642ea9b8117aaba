//! Timings of a call's life at its edges, on one store, in one process: how soon a waiting
//! duplicate runs after the owner's call is dropped mid-body (a timeout around it), how soon a
//! duplicate returns after the owner's body ends, and how soon a fenced caller returns after
//! the new owner's body ends.
//!
//! `cargo run --release -p idem-examples --bin lifecycle -- --store sqlite://target/l.db --trials 20`
//!
//! The last stdout line is one JSON object: `store, trials`, and for each of `drop_to_duplicate_ms`,
//! `owner_to_duplicate_ms`, `new_owner_to_fenced_ms` its `p50` and `max` over the trials.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use idem_runtime::{Call, Error, Idem};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Measure the lifecycle timings of one store.
#[derive(Debug, Parser)]
struct Args {
    /// Store URL: `memory:`, `sqlite://path`, `postgres://...`.
    #[arg(long, default_value = "sqlite://target/idem-lifecycle.db")]
    store: String,
    /// Trials of each measurement.
    #[arg(long, default_value_t = 10)]
    trials: usize,
}

fn op(what: &str) -> String {
    format!("lifecycle::{what}::{}", uuid::Uuid::new_v4().simple())
}

/// Milliseconds from `from` to `to`.
fn between(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1e3
}

/// Two handles on one store, without snapshot caches: two workers of one process.
fn workers(store: &Arc<dyn idem_runtime::Store>) -> (Idem, Idem) {
    let worker = |name: &str| {
        Idem::builder(store.clone())
            .cache_capacity(0)
            .worker(name)
            .build()
    };
    (worker("owner"), worker("duplicate"))
}

/// The owner's call is dropped mid-body while a duplicate waits: until the duplicate's body runs.
async fn drop_to_duplicate(store: &Arc<dyn idem_runtime::Store>) -> f64 {
    let (owner, duplicate) = workers(store);
    let call = {
        let op = op("drop");
        move || {
            Call::new(op.clone())
                .key(&"k")
                .lease(Duration::from_secs(600))
        }
    };
    let started = Arc::new(Notify::new());
    let owner = {
        let (call, started) = (call(), started.clone());
        tokio::spawn(async move {
            owner
                .call(call, || async move {
                    started.notify_one();
                    std::future::pending::<()>().await;
                    Ok::<_, Error>(())
                })
                .await
        })
    };
    started.notified().await;
    let ran = Arc::new(Mutex::new(None));
    let waiter = {
        let (call, ran) = (call(), ran.clone());
        tokio::spawn(async move {
            duplicate
                .call(call, || async move {
                    *ran.lock() = Some(Instant::now());
                    Ok::<_, Error>(())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let dropped = Instant::now();
    owner.abort();
    let _ = waiter.await;
    let ran = *ran.lock();
    ran.map_or(f64::NAN, |ran| between(dropped, ran))
}

/// The owner's body runs 300 ms while a duplicate waits: from the owner's body's end until the
/// duplicate returns.
async fn owner_to_duplicate(store: &Arc<dyn idem_runtime::Store>) -> f64 {
    let (owner, duplicate) = workers(store);
    let op = op("wait");
    let ended = Arc::new(Mutex::new(None));
    let first = {
        let (call, ended) = (Call::new(op.clone()).key(&"k"), ended.clone());
        tokio::spawn(async move {
            owner
                .call(call, || async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    *ended.lock() = Some(Instant::now());
                    Ok::<_, Error>(())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = duplicate
        .call(Call::new(op).key(&"k"), || async { Ok::<_, Error>(()) })
        .await;
    let returned = Instant::now();
    let _ = first.await;
    let ended = *ended.lock();
    ended.map_or(f64::NAN, |ended| between(ended, returned))
}

/// An attempt stalls past its 300 ms lease and is taken over; its body ends while the new owner
/// still runs: from the new owner's body's end until the fenced caller returns.
async fn new_owner_to_fenced(store: &Arc<dyn idem_runtime::Store>) -> f64 {
    let (zombie, winner) = workers(store);
    let op = op("fenced");
    let call = {
        let op = op.clone();
        move || {
            Call::new(op.clone())
                .key(&"k")
                .lease(Duration::from_millis(300))
        }
    };
    let (started, proceed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let stalled = {
        let (call, started, proceed) = (call().heartbeat(false), started.clone(), proceed.clone());
        tokio::spawn(async move {
            zombie
                .call(call, || async move {
                    started.notify_one();
                    proceed.notified().await;
                    Ok::<_, Error>(())
                })
                .await
        })
    };
    started.notified().await;
    tokio::time::sleep(Duration::from_millis(450)).await;
    let ended = Arc::new(Mutex::new(None));
    let new_owner = {
        let (call, ended) = (call(), ended.clone());
        tokio::spawn(async move {
            winner
                .call(call, || async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    *ended.lock() = Some(Instant::now());
                    Ok::<_, Error>(())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    proceed.notify_one();
    let _ = stalled.await;
    let returned = Instant::now();
    let _ = new_owner.await;
    let ended = *ended.lock();
    ended.map_or(f64::NAN, |ended| between(ended, returned))
}

fn summary(mut samples: Vec<f64>) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let p50 = samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN);
    let max = samples.last().copied().unwrap_or(f64::NAN);
    serde_json::json!({ "p50": (p50 * 100.0).round() / 100.0, "max": (max * 100.0).round() / 100.0 })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = idem_runtime::store::open(&args.store).await?;
    let (mut drops, mut waits, mut fenced) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.trials {
        drops.push(drop_to_duplicate(&store).await);
        waits.push(owner_to_duplicate(&store).await);
        fenced.push(new_owner_to_fenced(&store).await);
    }
    let line = serde_json::json!({
        "store": store.backend(),
        "trials": args.trials,
        "drop_to_duplicate_ms": summary(drops),
        "owner_to_duplicate_ms": summary(waits),
        "new_owner_to_fenced_ms": summary(fenced),
    });
    println!("{line}");
    Ok(())
}
