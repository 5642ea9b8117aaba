//! `bench --mode http`: what the `Idempotency-Key` layer costs over a bare axum handler, for a
//! replayed request (from the process cache) and for a new one. The server is the `api`
//! example (`--serve`, one Tokio thread, pinned to core 0 with `taskset` when available); the
//! load generator is `wrk` in another process (pinned to core 1), so the figures are what one
//! server core sustains. The three kinds run in alternating order, round after round.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Serialize;

/// What one kind of request sustained over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Kind {
    /// `bare`, `replay` or `new`.
    pub kind: &'static str,
    /// Requests per second, per round.
    pub rps: Vec<f64>,
    /// Median latency per round (us).
    pub p50_us: Vec<f64>,
    /// 99th percentile latency per round (us).
    pub p99_us: Vec<f64>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct HttpReport {
    /// The store the server used.
    pub store: String,
    /// Rounds measured.
    pub rounds: usize,
    /// Seconds per kind and round.
    pub seconds: u64,
    /// wrk connections.
    pub connections: u32,
    /// Whether server and load generator were pinned to cores of their own.
    pub pinned: bool,
    /// Each kind's figures.
    pub kinds: Vec<Kind>,
    /// Server time per request added by the layer for a replay (us, median round):
    /// 1/rps(replay) - 1/rps(bare).
    pub replay_overhead_us: f64,
    /// The same for a new request.
    pub new_overhead_us: f64,
}

/// A child process killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn has(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `program args` on `core` when `taskset` exists.
fn pinned(program: &Path, core: u32, pin: bool) -> Command {
    if pin {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(core.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

const BODY: &str = r#"{"title":"Idempotency keys for LLM calls","lang":"en"}"#;

fn scripts(dir: &Path) -> std::io::Result<[(&'static str, &'static str, PathBuf); 3]> {
    let common = format!(
        "wrk.method = \"POST\"\nwrk.body = '{BODY}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
    );
    let bare = dir.join("bare.lua");
    std::fs::write(&bare, &common)?;
    let replay = dir.join("replay.lua");
    std::fs::write(
        &replay,
        format!("{common}wrk.headers[\"Idempotency-Key\"] = \"bench-replay\"\n"),
    )?;
    // A fresh key per request: the round's prefix, the thread's address, a counter.
    let new = dir.join("new.lua");
    std::fs::write(
        &new,
        format!(
            "{common}local prefix = \"\"\nlocal n = 0\n\
             function init(args) prefix = (args[1] or \"r\") .. \"-\" .. tostring({{}}) end\n\
             function request()\n  n = n + 1\n  wrk.headers[\"Idempotency-Key\"] = prefix .. \"-\" .. n\n  return wrk.format()\nend\n"
        ),
    )?;
    Ok([
        ("bare", "/bench/bare", bare),
        ("replay", "/bench/layered", replay),
        ("new", "/bench/layered", new),
    ])
}

/// `Requests/sec`, and the 50% and 99% latencies (us) of `wrk --latency`'s output.
fn parse(out: &str) -> Option<(f64, f64, f64)> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = micros(v),
            ["99%", v] => p99 = micros(v),
            _ => {}
        }
    }
    Some((rps?, p50?, p99?))
}

fn micros(v: &str) -> Option<f64> {
    let (number, factor) = if let Some(n) = v.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark against the `api` binary next to this one.
pub async fn run(
    store: &str,
    rounds: usize,
    seconds: u64,
    connections: u32,
) -> Result<HttpReport, String> {
    if !has("wrk") {
        return Err("wrk is not installed (Debian: apt-get install -y wrk)".into());
    }
    let pin = has("taskset") && std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let api = exe.with_file_name("api");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server(
        pinned(&api, 0, pin)
            .args(["--serve", &format!("127.0.0.1:{port}"), "--threads", "1"])
            .args(["--store", store])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start {}: {e}", api.display()))?,
    );
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        return Err(format!("the api server at {base} did not start"));
    }
    // Record the replay key's response first: 16 connections sending it at once would
    // otherwise meet its first run (`409`s).
    let recorded = http
        .post(format!("{base}/bench/layered"))
        .header("content-type", "application/json")
        .header("idempotency-key", "bench-replay")
        .body(BODY)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !recorded.status().is_success() {
        return Err(format!("recording the replay key: {}", recorded.status()));
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let kinds = scripts(dir.path()).map_err(|e| e.to_string())?;
    let mut figures: Vec<Kind> = kinds
        .iter()
        .map(|(kind, _, _)| Kind {
            kind,
            rps: Vec::new(),
            p50_us: Vec::new(),
            p99_us: Vec::new(),
        })
        .collect();
    // Round 0 is a short warm-up of each kind, not counted.
    for round in 0..=rounds {
        for i in 0..kinds.len() {
            // Alternate which kind goes first, so drift hits every kind alike.
            let k = (i + round) % kinds.len();
            let (kind, path, script) = &kinds[k];
            let secs = if round == 0 { 1 } else { seconds };
            let out = pinned(Path::new("wrk"), 1, pin)
                .args([
                    "-t1",
                    &format!("-c{connections}"),
                    &format!("-d{secs}s"),
                    "--latency",
                ])
                .arg("-s")
                .arg(script)
                .arg(format!("{base}{path}"))
                .args(["--", &format!("r{round}")])
                .output()
                .map_err(|e| format!("wrk: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Non-2xx") {
                return Err(format!("{kind}: wrk saw non-2xx responses:\n{text}"));
            }
            let (rps, p50, p99) =
                parse(&text).ok_or_else(|| format!("{kind}: cannot read wrk's output:\n{text}"))?;
            if round > 0 {
                let f = &mut figures[k];
                f.rps.push(rps);
                f.p50_us.push(p50);
                f.p99_us.push(p99);
            }
        }
    }
    let per_request = |k: usize| 1e6 / median(&figures[k].rps);
    let replay_overhead_us = per_request(1) - per_request(0);
    let new_overhead_us = per_request(2) - per_request(0);
    Ok(HttpReport {
        store: idem_runtime::store::redact_url(store),
        rounds,
        seconds,
        connections,
        pinned: pin,
        kinds: figures,
        replay_overhead_us,
        new_overhead_us,
    })
}
