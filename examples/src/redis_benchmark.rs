//! `redis-benchmark` running idem's own claim script (`EVALSHA`, the exact script the Redis store
//! loads) in the same run as idem, so both sides meet the same server in the same state: the
//! reference for what one round trip of that script costs without idem's client around it.
//!
//! - `miss`: the claim of a fresh key (`-r 1000000000`: random 12-digit keys), which acquires
//!   it. An idem miss is *two* such scripts (claim, then the fenced completion), so a
//!   throughput ratio near 0.5 means idem adds nothing to the two round trips.
//! - `hit`: the claim of one of 10,000 completed keys, which returns the snapshot: exactly the
//!   round trip of an idem replay with the cache off.
//!
//! Its keys live under a prefix of their own (`idem-rb:<run>:`), deleted when the runner drops.

use std::process::Command;

use redis::AsyncCommands;
use serde::Serialize;

/// Which script call redis-benchmark repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// The claim of a fresh key.
    Miss,
    /// The claim of a completed key (a replay).
    Hit,
}

/// How many completed keys a `hit` run reads.
const HIT_KEYS: u64 = 10_000;

/// What redis-benchmark reports for one or more runs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RedisBenchmarkStats {
    /// Script calls run.
    pub calls: u64,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Median latency, microseconds (of the last run: redis-benchmark reports no histogram).
    pub p50_us: f64,
}

impl RedisBenchmarkStats {
    /// Adds another run (weighted by its calls).
    pub fn absorb(&mut self, other: RedisBenchmarkStats) {
        let calls = self.calls + other.calls;
        if calls == 0 {
            return;
        }
        let seconds = self.seconds() + other.seconds();
        self.mean_us =
            (self.mean_us * self.calls as f64 + other.mean_us * other.calls as f64) / calls as f64;
        self.p50_us =
            (self.p50_us * self.calls as f64 + other.p50_us * other.calls as f64) / calls as f64;
        self.calls = calls;
        self.calls_per_s = if seconds > 0.0 {
            calls as f64 / seconds
        } else {
            0.0
        };
    }

    fn seconds(&self) -> f64 {
        if self.calls_per_s > 0.0 {
            self.calls as f64 / self.calls_per_s
        } else {
            0.0
        }
    }
}

/// A redis-benchmark runner on one server.
#[derive(Debug)]
pub struct RedisBenchmark {
    host: String,
    port: u16,
    db: i64,
    sha: String,
    prefix: String,
    script: Script,
    client: redis::Client,
}

impl RedisBenchmark {
    /// Loads the claim script on the server of `url` (and, for `hit`, writes the completed
    /// keys). URLs with a password are refused: redis-benchmark takes it on its command line,
    /// which any user of the machine can read.
    pub async fn new(url: &str, script: Script) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        if parsed.password().is_some() {
            return Err("redis-benchmark rounds refuse URLs with a password".into());
        }
        let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
        let port = parsed.port().unwrap_or(6379);
        let db = parsed
            .path()
            .trim_start_matches('/')
            .parse::<i64>()
            .unwrap_or(0);
        let client = redis::Client::open(format!("redis://{host}:{port}/{db}"))
            .map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(idem_runtime::store::redis::RedisStore::claim_script_source())
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let prefix = format!(
            "idem-rb:{}:",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        if script == Script::Hit {
            let snapshot = serde_json::to_vec(&crate::workload::Draft::for_call(0))
                .map_err(|e| e.to_string())?;
            for start in (0..HIT_KEYS).step_by(500) {
                let mut pipe = redis::pipe();
                for i in start..(start + 500).min(HIT_KEYS) {
                    pipe.hset_multiple(
                        format!("{prefix}r:{i:012}"),
                        &[
                            ("status", b"completed".to_vec()),
                            ("attempt", b"1".to_vec()),
                            ("kind", b"ok".to_vec()),
                            ("snap", snapshot.clone()),
                            ("expires", b"9999999999999".to_vec()),
                        ],
                    )
                    .ignore();
                }
                pipe.query_async::<()>(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(Self {
            host,
            port,
            db,
            sha,
            prefix,
            script,
            client,
        })
    }

    /// Runs about `calls` script calls on `clients` connections.
    pub fn run(&self, calls: u64, clients: usize) -> Result<RedisBenchmarkStats, String> {
        let clients = clients.max(1);
        let keyspace = match self.script {
            Script::Miss => 1_000_000_000,
            Script::Hit => HIT_KEYS,
        };
        let record = format!("{}r:__rand_int__", self.prefix);
        let log = format!("{}l:__rand_int__", self.prefix);
        let floor = format!("{}floor", self.prefix);
        let out = Command::new("redis-benchmark")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(["--dbnum", &self.db.to_string()])
            .args(["-c", &clients.to_string()])
            .args(["-n", &calls.max(1).to_string()])
            .args(["-r", &keyspace.to_string()])
            .arg("--csv")
            .args(["EVALSHA", &self.sha, "3", &record, &log, &floor])
            .args(["bench.rb", "", "30000", "redis-benchmark", "99", "", "0"])
            .output()
            .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            return Err(format!(
                "redis-benchmark failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        parse_row(&text, "\"EVALSHA", calls.max(1))
    }

    /// Runs about `calls` plain `SET`s of random keys on `clients` connections: what the
    /// server does at the same moment without any script, the machine's reference.
    pub fn run_set(&self, calls: u64, clients: usize) -> Result<RedisBenchmarkStats, String> {
        let out = Command::new("redis-benchmark")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(["--dbnum", &self.db.to_string()])
            .args(["-c", &clients.max(1).to_string()])
            .args(["-n", &calls.max(1).to_string()])
            .args(["-r", "1000000000", "--csv"])
            .args(["SET", &format!("{}s:__rand_int__", self.prefix), "x"])
            .output()
            .map_err(|e| format!("cannot run redis-benchmark: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_row(&text, "\"SET", calls.max(1))
    }

    /// Deletes the runner's keys.
    pub async fn clean(&self) {
        let Ok(mut conn) = self.client.get_multiplexed_async_connection().await else {
            return;
        };
        let names: Vec<String> = match conn.scan_match(format!("{}*", self.prefix)).await {
            Ok(iter) => {
                use futures_util::StreamExt;
                iter.filter_map(|r| async move { r.ok() }).collect().await
            }
            Err(_) => return,
        };
        for batch in names.chunks(1000) {
            let _: Result<(), _> = redis::cmd("UNLINK").arg(batch).query_async(&mut conn).await;
        }
    }
}

/// Reads the CSV row (starting with `start`) of redis-benchmark's report: rps, average and p50
/// latency (ms).
fn parse_row(report: &str, start: &str, calls: u64) -> Result<RedisBenchmarkStats, String> {
    let row = report
        .lines()
        .find(|l| l.starts_with(start))
        .ok_or_else(|| format!("no {start} row in redis-benchmark's report:\n{report}"))?;
    let fields: Vec<f64> = row
        .split("\",\"")
        .skip(1)
        .filter_map(|f| f.trim_matches('"').parse().ok())
        .collect();
    let (Some(rps), Some(avg), Some(p50)) = (fields.first(), fields.get(1), fields.get(3)) else {
        return Err(format!("cannot read redis-benchmark's row: {row}"));
    };
    Ok(RedisBenchmarkStats {
        calls,
        calls_per_s: *rps,
        mean_us: avg * 1000.0,
        p50_us: p50 * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_row;

    #[test]
    fn reads_redis_benchmark_csv() {
        let report = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                      \"EVALSHA abc 3 k l f bench.rb  30000 redis-benchmark 100\",\"8000.00\",\"0.121\",\"0.032\",\"0.047\",\"0.079\",\"3.935\",\"9.359\"\n";
        let s = parse_row(report, "\"EVALSHA", 2000).unwrap_or_default();
        assert_eq!(s.calls, 2000);
        assert!((s.calls_per_s - 8000.0).abs() < 1e-9);
        assert!((s.mean_us - 121.0).abs() < 1e-6);
        assert!((s.p50_us - 47.0).abs() < 1e-6);
        assert!(parse_row("nothing", "\"EVALSHA", 1).is_err());
    }
}
