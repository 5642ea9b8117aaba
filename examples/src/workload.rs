//! The benchmark workload: N calls spread over C concurrent tasks, with per-call latencies.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// This process's CPU time (user + system, all threads) per call, microseconds: the
    /// client's share of the work. `None` where `/proc/self/stat` cannot be read.
    pub client_cpu_us: Option<f64>,
    /// The whole machine's busy CPU time per call, microseconds (client, server and anything
    /// else running): on a machine running only the benchmark and its database, the client's
    /// and the server's work together. `None` where `/proc/stat` cannot be read.
    pub machine_cpu_us: Option<f64>,
}

/// The measurements of one or more runs.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Every call's latency.
    pub latencies: Vec<Duration>,
    /// Wall time of the runs, added up.
    pub seconds: f64,
    /// This process's CPU time during the runs, added up (`None`: not measurable here).
    pub cpu_seconds: Option<f64>,
    /// The machine's busy CPU time during the runs, added up (`None`: not measurable here).
    pub machine_cpu_seconds: Option<f64>,
}

impl Sample {
    /// Adds another run's measurements.
    pub fn absorb(&mut self, other: Sample) {
        let first = self.latencies.is_empty() && self.seconds == 0.0;
        self.latencies.extend(other.latencies);
        self.seconds += other.seconds;
        let add = |ours: Option<f64>, theirs: Option<f64>| match (first, ours, theirs) {
            (true, _, theirs) => theirs,
            (false, Some(ours), Some(theirs)) => Some(ours + theirs),
            _ => None,
        };
        self.cpu_seconds = add(self.cpu_seconds, other.cpu_seconds);
        self.machine_cpu_seconds = add(self.machine_cpu_seconds, other.machine_cpu_seconds);
    }

    /// Summarizes.
    pub fn stats(&self) -> Stats {
        let mut all = self.latencies.clone();
        all.sort_unstable();
        let pct = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        let mean = all.iter().map(Duration::as_secs_f64).sum::<f64>() / all.len().max(1) as f64;
        Stats {
            seconds: self.seconds,
            calls_per_s: all.len() as f64 / self.seconds,
            mean_us: mean * 1e6,
            p50_us: pct(0.50),
            p99_us: pct(0.99),
            client_cpu_us: self
                .cpu_seconds
                .map(|cpu| cpu * 1e6 / all.len().max(1) as f64),
            machine_cpu_us: self
                .machine_cpu_seconds
                .map(|cpu| cpu * 1e6 / all.len().max(1) as f64),
        }
    }
}

/// Runs `call(i)` for each `i` in `range` on `concurrency` tasks and measures each call.
pub async fn drive<F, Fut>(range: std::ops::Range<u64>, concurrency: usize, call: F) -> Sample
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(range.start));
    let end = range.end;
    let (cpu_before, machine_before) = (process_cpu_seconds(), machine_cpu_seconds());
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end {
                        return latencies;
                    }
                    let t = Instant::now();
                    call(i).await;
                    latencies.push(t.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap_or_default());
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_before
        .zip(process_cpu_seconds())
        .map(|(before, after)| after - before);
    let machine_cpu_seconds = machine_before
        .zip(machine_cpu_seconds())
        .map(|(before, after)| after - before);
    Sample {
        latencies,
        seconds,
        cpu_seconds,
        machine_cpu_seconds,
    }
}

/// The machine's busy CPU time so far (user, nice, system, irq, softirq of all CPUs), from
/// `/proc/stat` (Linux), in clock ticks of 1/100 s.
fn machine_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq ...
    let busy = cpu.first()? + cpu.get(1)? + cpu.get(2)? + cpu.get(5)? + cpu.get(6)?;
    Some(busy / 100.0)
}

/// This process's CPU time so far (user + system, all threads), from `/proc/self/stat`
/// (Linux), in clock ticks of 1/100 s: coarse, so runs should last seconds.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// A 32-byte key for the baseline, derived like an application would: a hash of its inputs.
pub fn baseline_key(run: &str, i: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(run.as_bytes());
    h.update(&i.to_le_bytes());
    *h.finalize().as_bytes()
}
