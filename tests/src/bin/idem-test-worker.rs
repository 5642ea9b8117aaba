//! A worker process for multi-process tests: runs idempotent calls against a store URL and
//! writes what it executed and what it received, one line each, to a file.
//!
//! `idem-test-worker many URL OP KEYS CONCURRENCY OUT` calls keys `0..KEYS` (in an order of its
//! own) with CONCURRENCY tasks; each execution appends `exec KEY VALUE`, each return `got KEY VALUE`.
//! `idem-test-worker hang URL OP KEY LEASE_MS` claims KEY, prints `started` and never finishes.
//! `idem-test-worker stream-hang URL OP KEY LEASE_MS` starts a streamed call of KEY, reads its
//! first 5 chunks (journaled at once), prints `started`, and never reads the rest.
//! `idem-test-worker step-hang URL OP KEY` opens a transactional step on KEY (SQLite or
//! PostgreSQL), inserts a row into table `saved` (PostgreSQL: in the store's schema), prints
//! `started` and never commits.
//! `idem-test-worker pipeline URL OP RUN OUT CRASH_AT` runs a 5-step pipeline (the parent keyed
//! by RUN, its steps `OP::step0..4` keyed by position, 500 ms leases): each step appends
//! `effect I PID` to OUT (synced) and returns `outI`. At step CRASH_AT (`none`: never) it prints
//! `started` before the step's effect and waits to be killed. At the end it prints
//! `done OUT0,...,OUT4`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_runtime::{Call, Error, Idem};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let idem = Idem::builder(
        idem_runtime::store::open(&args[1])
            .await
            .expect("open store"),
    )
    .cache_capacity(0)
    .worker(format!("test-worker/{}", std::process::id()))
    .build();
    match args[0].as_str() {
        "many" => {
            many(
                idem,
                &args[2],
                args[3].parse().unwrap(),
                args[4].parse().unwrap(),
                &args[5],
            )
            .await
        }
        "hang" => hang(idem, &args[2], &args[3], args[4].parse().unwrap()).await,
        "step-hang" => step_hang(&args[1], &args[2], &args[3]).await,
        "stream-hang" => stream_hang(idem, &args[2], &args[3], args[4].parse().unwrap()).await,
        "pipeline" => pipeline(idem, &args[2], &args[3], &args[4], args[5].parse().ok()).await,
        other => panic!("unknown mode {other}"),
    }
}

async fn many(idem: Idem, op: &str, keys: u32, concurrency: u32, out: &str) {
    let out = Arc::new(Mutex::new(std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap(),
    )));
    let pid = std::process::id();
    // Each process walks the keys from a different starting point, so they collide mid-way.
    let start = pid % keys.max(1);
    let order: Arc<Vec<u32>> = Arc::new((0..keys).map(|i| (i + start) % keys).collect());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (idem, op, out, order, next) = (
            idem.clone(),
            op.to_owned(),
            out.clone(),
            order.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&key) = order.get(i) else { break };
                let call = Call::new(op.clone())
                    .key(&key)
                    .lease(Duration::from_secs(5));
                let value: String = idem
                    .call(call, || async {
                        let value = format!("{pid}:{key}");
                        writeln!(out.lock().unwrap(), "exec {key} {value}").unwrap();
                        Ok::<_, Error>(value)
                    })
                    .await
                    .unwrap_or_else(|e| panic!("key {key}: {e}"));
                writeln!(out.lock().unwrap(), "got {key} {value}").unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    out.lock().unwrap().flush().unwrap();
}

async fn pipeline(idem: Idem, op: &str, run: &str, out: &str, crash_at: Option<usize>) {
    let lease = Duration::from_millis(500);
    let pid = std::process::id();
    let outputs: Vec<String> = idem
        .call(Call::new(op.to_owned()).key(&run).lease(lease), || async {
            let mut outputs = Vec::new();
            for i in 0..5 {
                let step = Call::new(format!("{op}::step{i}"))
                    .by_position()
                    .lease(lease);
                let output: String = idem
                    .call(step, || async {
                        if crash_at == Some(i) {
                            // Mid-step, before its effect: where a model call would be.
                            println!("started");
                            std::io::stdout().flush().unwrap();
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                        let mut file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(out)
                            .unwrap();
                        writeln!(file, "effect {i} {pid}").unwrap();
                        file.sync_all().unwrap();
                        Ok::<_, Error>(format!("out{i}"))
                    })
                    .await?;
                outputs.push(output);
            }
            Ok::<_, Error>(outputs)
        })
        .await
        .unwrap();
    println!("done {}", outputs.join(","));
}

async fn hang(idem: Idem, op: &str, key: &str, lease_ms: u64) {
    let call = Call::new(op.to_owned())
        .key(&key)
        .lease(Duration::from_millis(lease_ms));
    let _: Result<String, Error> = idem
        .call(call, || async {
            println!("started");
            std::io::stdout().flush().unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok("never".to_string())
        })
        .await;
}

async fn stream_hang(idem: Idem, op: &str, key: &str, lease_ms: u64) {
    use futures_util::StreamExt;
    let call = Call::new(op.to_owned())
        .key(&key)
        .lease(Duration::from_millis(lease_ms))
        .stream_options(idem_runtime::StreamOptions::default().batch(1, Duration::from_millis(1)));
    let mut tokens = idem
        .stream(call, || async {
            let first = futures_util::stream::iter((0..5).map(|i| Ok(format!("t{i}"))));
            let s = first.chain(futures_util::stream::pending());
            Ok::<_, Error>(idem_runtime::Streamed::new(s))
        })
        .await
        .unwrap();
    for _ in 0..5 {
        tokens.next().await.unwrap().unwrap();
    }
    // Every chunk is journaled (batches of one) before the parent is told to look.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("started");
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(tokens);
}

async fn step_hang(url: &str, op: &str, key: &str) {
    if url.starts_with("postgres") {
        postgres_step_hang(url, op, key).await
    } else {
        sqlite_step_hang(url, op, key).await
    }
}

async fn sqlite_step_hang(url: &str, op: &str, key: &str) {
    use idem_runtime::store::sqlite::{SqliteStore, Step};
    let store = SqliteStore::open(url).await.unwrap();
    let Step::Claimed(mut tx) = store
        .begin_step::<i64>(Call::new(op.to_owned()).key(&key), "step-worker")
        .await
        .unwrap()
    else {
        panic!("expected a new key")
    };
    sqlx::query("INSERT INTO saved (k) VALUES (?1)")
        .bind(key)
        .execute(tx.conn())
        .await
        .unwrap();
    hang_holding(tx).await;
}

async fn postgres_step_hang(url: &str, op: &str, key: &str) {
    use idem_runtime::store::postgres::{PostgresStore, Step};
    let store = PostgresStore::open(url).await.unwrap();
    let Step::Claimed(mut tx) = store
        .begin_step::<i64>(Call::new(op.to_owned()).key(&key), "step-worker")
        .await
        .unwrap()
    else {
        panic!("expected a new key")
    };
    sqlx::query(&format!(
        "INSERT INTO \"{}\".saved (k) VALUES ($1)",
        store.schema()
    ))
    .bind(key)
    .execute(tx.conn())
    .await
    .unwrap();
    hang_holding(tx).await;
}

/// Prints `started` and waits, holding `tx` open, until killed.
async fn hang_holding<T>(tx: T) {
    println!("started");
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(tx);
}
