//! The parent: publishes the run's messages and their re-published duplicates, runs a consumer
//! process, SIGKILLs it a third of the way through and runs another until every message has its
//! effect, then counts the effects and prints the JSON line.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::broker::{Broker, DUP_WINDOW};
use super::db::Db;
use super::{fail, Args, Job, EXIT_UNREACHABLE};

/// The last progress line of a worker.
type Progress = Arc<Mutex<Value>>;

fn spawn(args: &Args, run: &str) -> (Child, Progress) {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail("this binary's path", e));
    let mut cmd = Command::new(exe);
    cmd.args(["--broker", &args.broker, "--store", &args.store])
        .args(["--messages", &args.messages.to_string()])
        .args(["--in-flight", &args.in_flight.to_string()])
        .args(["--group", &args.group.to_string()])
        .args(["--worker", run])
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if args.no_idem {
        cmd.arg("--no-idem");
    }
    if args.call {
        cmd.arg("--call");
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| fail("spawn a consumer", e));
    let progress: Progress = Arc::new(Mutex::new(
        json!({"received": 0, "dead_lettered": 0, "busy_ms": 0}),
    ));
    if let Some(out) = child.stdout.take() {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    *progress.lock() = v;
                }
            }
        });
    }
    (child, progress)
}

fn count(p: &Progress, field: &str) -> u64 {
    p.lock()[field].as_u64().unwrap_or(0)
}

pub(crate) async fn main(args: &Args) -> i32 {
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let broker = match Broker::connect(&args.broker, &run).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("consumer: {e}");
            return EXIT_UNREACHABLE;
        }
    };
    let db = match Db::connect(&args.store, 4).await {
        Ok(db) => db,
        Err(e) => {
            eprintln!("consumer: the store's database: {e}");
            return EXIT_UNREACHABLE;
        }
    };
    if let Err(e) = db.create().await {
        fail("create the effects table", e);
    }
    // Migrates the store once, before the consumers race to open it.
    if let Err(e) = idem_runtime::Idem::open(&args.store).await {
        fail("open the store", e);
    }
    if let Err(e) = broker.setup().await {
        fail("set up the broker", e);
    }

    let n = args.messages;
    let every = |share: f64| {
        if share > 0.0 {
            ((1.0 / share).round() as u64).max(1)
        } else {
            u64::MAX
        }
    };
    let messages: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| {
            let id = format!("{run}-{i}");
            let job = Job {
                id: id.clone(),
                slow: args.slow_share > 0.0 && i % every(args.slow_share) == 1,
            };
            let payload = serde_json::to_vec(&job).unwrap_or_else(|e| fail("encode", e));
            (id, payload)
        })
        .collect();
    let dups: Vec<(String, Vec<u8>)> = messages
        .iter()
        .filter(|(id, _)| {
            id.rsplit('-')
                .next()
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| args.dup_share > 0.0 && i % every(args.dup_share) == 0)
        })
        .cloned()
        .collect();
    if let Err(e) = broker.publish_all(&messages).await {
        fail("publish", e);
    }
    // Past NATS's de-duplication window, as a publisher retrying late would be.
    tokio::time::sleep(DUP_WINDOW + Duration::from_millis(200)).await;
    if let Err(e) = broker.publish_all(&dups).await {
        fail("publish the duplicates", e);
    }
    let published = n + dups.len() as u64;

    let mut finished: Vec<Progress> = Vec::new();
    let (mut child, mut progress) = spawn(args, &run);
    let mut killed = 0;
    if !args.no_kill {
        // SIGKILL the first consumer a third of the way through; start another.
        loop {
            if count(&progress, "received") >= n / 3 {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                fail("the consumer ended before it could be killed", status);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = child.start_kill();
        let _ = child.wait().await;
        killed = 1;
        finished.push(progress);
        (child, progress) = spawn(args, &run);
    }
    let status = tokio::time::timeout(Duration::from_secs(600), child.wait()).await;
    match status {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => fail("a consumer failed", s),
        Ok(Err(e)) => fail("wait for a consumer", e),
        Err(_) => fail("a consumer", "did not finish in 10 minutes"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await; // its last progress line
    finished.push(progress);

    let (effects, distinct) = db
        .effects(&run)
        .await
        .unwrap_or_else(|e| fail("count the effects", e));
    let deliveries: u64 = finished.iter().map(|p| count(p, "received")).sum();
    let dead: u64 = finished.iter().map(|p| count(p, "dead_lettered")).sum();
    let busy_ms: u64 = finished.iter().map(|p| count(p, "busy_ms")).sum();
    let per_s = if busy_ms > 0 {
        deliveries as f64 * 1000.0 / busy_ms as f64
    } else {
        0.0
    };
    let _ = db.delete_run(&run).await;
    broker.delete().await;
    println!(
        "{}",
        json!({
            "broker": broker.name(),
            "store": if args.store.starts_with("postgres") { "postgres" } else { "sqlite" },
            "idem": !args.no_idem,
            "handler": if args.no_idem { "plain" } else if args.call { "call" } else { "step" },
            "group": args.group,
            "published": published,
            "unique": n,
            "deliveries": deliveries,
            "side_effects": effects,
            "duplicate_side_effects": effects - distinct,
            "missing": i64::try_from(n).unwrap_or(i64::MAX) - distinct,
            "dead_lettered": dead,
            "killed": killed,
            "messages_per_s": per_s.round(),
        })
    );
    0
}
