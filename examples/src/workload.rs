//! The benchmark workload: N calls spread over C concurrent tasks, with per-call latencies.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The value every benchmarked body returns: a small draft, like an LLM step's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    /// The title.
    pub title: String,
    /// The tokens it cost.
    pub tokens: u32,
}

impl Draft {
    /// The draft for call `i`.
    pub fn for_call(i: u64) -> Self {
        Self {
            title: format!("draft {i}"),
            tokens: 512,
        }
    }
}

/// Timing of one run.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    /// Wall time of the whole run.
    pub seconds: f64,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

/// Runs `call(i)` for `i in 0..calls` on `concurrency` tasks and measures each call.
pub async fn drive<F, Fut>(calls: usize, concurrency: usize, call: F) -> Stats
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(calls / concurrency.max(1) + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        return latencies;
                    }
                    let t = Instant::now();
                    call(i as u64).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::with_capacity(calls);
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let mean = all.iter().map(Duration::as_secs_f64).sum::<f64>() / all.len().max(1) as f64;
    Stats {
        seconds,
        calls_per_s: calls as f64 / seconds,
        mean_us: mean * 1e6,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// A 32-byte key for the baseline, derived like an application would: a hash of its inputs.
pub fn baseline_key(run: &str, i: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(run.as_bytes());
    h.update(&i.to_le_bytes());
    *h.finalize().as_bytes()
}
