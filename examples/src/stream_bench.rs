//! `bench --mode stream`: what journaling a streamed result costs its producer, how fast a
//! recorded stream replays (from the store and from the process cache), and how late a duplicate
//! following a live stream from another process sees each chunk.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{stream, StreamExt};
use idem_runtime::{Call, Error, Idem, Store, StreamOptions, Streamed};

const OP: &str = "bench.stream";

/// How the attach-lag producer paces its chunks (as a model's tokens are paced).
const PACE: Duration = Duration::from_millis(2);
/// How many chunks the attach-lag producer yields.
const ATTACH_CHUNKS: u64 = 1000;

/// What one `bench --mode stream` run measured.
#[derive(Debug, serde::Serialize)]
pub struct StreamReport {
    /// Chunks per stream.
    pub chunks: u64,
    /// Rounds measured.
    pub rounds: usize,
    /// The producer's time per chunk through idem minus the same stream read directly, p50 (us).
    pub append_p50_us: f64,
    /// The same difference at p99 (us).
    pub append_p99_us: f64,
    /// The producer's plain time per chunk, p50 (us), for scale.
    pub plain_p50_us: f64,
    /// From the stream's last chunk to its record written (ms, median over rounds): the last
    /// batch's append and the completion.
    pub end_ms: f64,
    /// Chunks per second replayed from the store (no cache), median over rounds.
    pub replay_chunks_per_s: f64,
    /// Chunks per second replayed from the process cache, median over rounds (`None`: the
    /// stream is over the cache's size for streams).
    pub cache_replay_chunks_per_s: Option<f64>,
    /// A chunk's delay from its producer to a duplicate following the stream (ms): from another
    /// process for SQL stores, from another task for `memory:`.
    pub attach_lag_p50_ms: f64,
    /// The same at p99 (ms).
    pub attach_lag_p99_ms: f64,
    /// Whether the follower was another process.
    pub attach_cross_process: bool,
}

fn token(i: u64) -> String {
    format!("tok{i} ")
}

fn tokens(n: u64) -> impl futures_util::Stream<Item = Result<String, Error>> + Send + 'static {
    stream::iter((0..n).map(|i| Ok(token(i))))
}

fn call(run: &str, what: &str, round: usize) -> Call {
    Call::new(OP).key(&(run, what, round as u64))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    pct(&v, 0.5)
}

/// Reads `s` to its end, timing each `next()` (us).
async fn timed<S>(mut s: S, per_chunk: &mut Vec<f64>) -> Result<u64, Error>
where
    S: futures_util::Stream<Item = Result<String, Error>> + Unpin,
{
    let mut n = 0;
    loop {
        let started = Instant::now();
        let Some(item) = s.next().await else {
            return Ok(n);
        };
        per_chunk.push(started.elapsed().as_secs_f64() * 1e6);
        item?;
        n += 1;
    }
}

/// Runs the measurements on `store`; `follower` starts a duplicate in another process (SQL
/// stores), given the operation and the key's text part.
pub async fn run(
    store: Arc<dyn Store>,
    chunks: u64,
    rounds: usize,
    cross_process: Option<&(dyn Fn(&str) -> std::process::Child + Sync)>,
) -> Result<StreamReport, Error> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let uncached = Idem::builder(store.clone()).cache_capacity(0).build();
    let cached = Idem::builder(store.clone()).build();
    let (mut plain, mut ours) = (Vec::new(), Vec::new());
    let (mut ends, mut replays, mut cache_replays) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternating: the plain stream, then the same through idem on a fresh key.
        timed(tokens(chunks), &mut plain).await?;
        let s = uncached
            .stream(call(&run, "append", round), || async {
                Ok::<_, Error>(Streamed::new(tokens(chunks)))
            })
            .await?;
        let mut per_chunk = Vec::new();
        let mut s = s;
        let mut n = 0;
        while n < chunks {
            let started = Instant::now();
            match s.next().await {
                Some(item) => {
                    per_chunk.push(started.elapsed().as_secs_f64() * 1e6);
                    item?;
                    n += 1;
                }
                None => break,
            }
        }
        // The end of the stream: the last batch and the record.
        let started = Instant::now();
        assert_end(s.next().await)?;
        ends.push(started.elapsed().as_secs_f64() * 1e3);
        ours.extend(per_chunk);

        let started = Instant::now();
        let replayed = timed(
            uncached
                .stream(call(&run, "append", round), not_run)
                .await?,
            &mut Vec::new(),
        )
        .await?;
        replays.push(replayed as f64 / started.elapsed().as_secs_f64());

        // The cached handle reads it once from the store (and keeps it if small), then replays.
        timed(
            cached.stream(call(&run, "append", round), not_run).await?,
            &mut Vec::new(),
        )
        .await?;
        let started = Instant::now();
        let s = cached.stream(call(&run, "append", round), not_run).await?;
        let replayed = timed(s, &mut Vec::new()).await?;
        let bytes: u64 = (0..chunks).map(|i| token(i).len() as u64 + 2).sum();
        if bytes <= StreamOptions::default().cache_bytes as u64 {
            cache_replays.push(replayed as f64 / started.elapsed().as_secs_f64());
        }
    }
    plain.sort_by(f64::total_cmp);
    ours.sort_by(f64::total_cmp);
    let (lags, attach_cross_process) = attach_lags(&uncached, &run, cross_process).await?;
    Ok(StreamReport {
        chunks,
        rounds,
        append_p50_us: pct(&ours, 0.5) - pct(&plain, 0.5),
        append_p99_us: pct(&ours, 0.99) - pct(&plain, 0.99),
        plain_p50_us: pct(&plain, 0.5),
        end_ms: median(ends),
        replay_chunks_per_s: median(replays),
        cache_replay_chunks_per_s: (!cache_replays.is_empty()).then(|| median(cache_replays)),
        attach_lag_p50_ms: pct(&lags, 0.5),
        attach_lag_p99_ms: pct(&lags, 0.99),
        attach_cross_process,
    })
}

fn assert_end(end: Option<Result<String, Error>>) -> Result<(), Error> {
    match end {
        None => Ok(()),
        Some(Err(e)) => Err(e),
        Some(Ok(extra)) => Err(Error::Config(format!("an extra chunk {extra:?}"))),
    }
}

/// The body of a call that must replay: it never runs.
async fn not_run() -> Result<Streamed<String, Error>, Error> {
    Err(Error::Config("bench: a replay ran the body".into()))
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Generates a paced stream whose chunks are their production times, and measures how late a
/// follower sees them (sorted, ms).
async fn attach_lags(
    idem: &Idem,
    run: &str,
    cross_process: Option<&(dyn Fn(&str) -> std::process::Child + Sync)>,
) -> Result<(Vec<f64>, bool), Error> {
    let key = format!("{run}-attach");
    let attach = || attach_call(&key);
    let produced = stream::iter(0..ATTACH_CHUNKS).then(|_| async {
        tokio::time::sleep(PACE).await;
        Ok::<_, Error>(unix_micros())
    });
    let mut owner = idem
        .stream(attach(), || async {
            Ok::<_, Error>(Streamed::new(produced))
        })
        .await?;
    // The first chunk is out: the record is running, and the follower attaches to it.
    owner.next().await.transpose()?;
    let (follower, cross) = match cross_process {
        Some(spawn) => (Follower::Process(spawn(&key)), true),
        None => {
            let idem = idem.clone();
            let call = attach();
            (
                Follower::Task(tokio::spawn(async move { follow(&idem, call).await })),
                false,
            )
        }
    };
    while let Some(chunk) = owner.next().await {
        chunk?;
    }
    let mut lags = match follower {
        Follower::Task(task) => task
            .await
            .map_err(|e| Error::Config(format!("follower task: {e}")))??,
        Follower::Process(child) => {
            let out = child
                .wait_with_output()
                .map_err(|e| Error::Config(format!("follower process: {e}")))?;
            serde_json::from_slice::<Vec<f64>>(&out.stdout)
                .map_err(|e| Error::Config(format!("follower output: {e}")))?
        }
    };
    lags.sort_by(f64::total_cmp);
    Ok((lags, cross))
}

enum Follower {
    Task(tokio::task::JoinHandle<Result<Vec<f64>, Error>>),
    Process(std::process::Child),
}

/// Follows the stream of `call` and returns each chunk's delay (ms), counting only chunks
/// produced after this follower received its first one (earlier ones arrive as a backlog).
pub async fn follow(idem: &Idem, call: Call) -> Result<Vec<f64>, Error> {
    let mut s = idem
        .stream(call, || async {
            Err::<Streamed<u64, Error>, _>(Error::Config(
                "bench: the follower found no stream to follow".into(),
            ))
        })
        .await?;
    let mut first_seen = None;
    let mut lags = Vec::new();
    while let Some(produced_at) = s.next().await {
        let produced_at = produced_at?;
        let now = unix_micros();
        let since = *first_seen.get_or_insert(now);
        if produced_at > since {
            lags.push(now.saturating_sub(produced_at) as f64 / 1e3);
        }
    }
    Ok(lags)
}

/// The call of the attach-lag stream whose key is `key`: what a follower in another process
/// (`bench --follow KEY`) calls.
pub fn attach_call(key: &str) -> Call {
    Call::new(OP).key(&key)
}
