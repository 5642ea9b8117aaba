//! A Redis outage mid-run: a throwaway `redis-server` (its own port and directory, AOF with
//! `appendfsync always`) is killed with SIGKILL while calls run, and restarted. Calls during
//! the outage fail closed with `Error::Store` (the body never runs without a claim); afterwards
//! the store has reconnected by itself, and work resumes with zero duplicate executions and zero
//! lost completions. The machine's shared server is never touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_runtime::store::redis::RedisStore;
use idem_runtime::{Call, Error, Idem};
use idem_tests::redis_server::RedisServer;

/// Executions per key, as the bodies saw them.
type Effects = Arc<Mutex<HashMap<u32, Vec<String>>>>;

fn handle(store: RedisStore, worker: &str) -> Idem {
    Idem::builder(Arc::new(store))
        .cache_capacity(0)
        .worker(worker)
        .build()
}

/// One call of key `key`: the body records its execution and returns a value unique to it.
async fn effect(
    idem: &Idem,
    op: &str,
    key: u32,
    effects: &Effects,
    body_ms: u64,
) -> Result<String, Error> {
    let call = Call::new(op.to_owned())
        .key(&key)
        .lease(Duration::from_secs(1))
        .wait(Duration::from_secs(30));
    idem.call(call, || execute(effects, key, body_ms)).await
}

/// The body of every call: records its execution, and returns a value unique to it.
async fn execute(effects: &Effects, key: u32, body_ms: u64) -> Result<String, Error> {
    let value = format!("{key}:{}", uuid::Uuid::new_v4().simple());
    effects
        .lock()
        .unwrap()
        .entry(key)
        .or_default()
        .push(value.clone());
    tokio::time::sleep(Duration::from_millis(body_ms)).await;
    Ok(value)
}

/// After the outage: every key is called until it succeeds; each executed exactly once, and
/// every value any caller received is that execution's.
async fn assert_exactly_once(
    idem: &Idem,
    op: &str,
    keys: u32,
    effects: &Effects,
    received: &[(u32, String)],
) {
    let mut finals = HashMap::new();
    for key in 0..keys {
        let begun = Instant::now();
        let value = loop {
            match effect(idem, op, key, effects, 0).await {
                Ok(v) => break v,
                Err(e) if begun.elapsed() < Duration::from_secs(20) => {
                    assert!(matches!(e, Error::Store { .. }), "key {key}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("key {key} never recovered: {e}"),
            }
        };
        finals.insert(key, value);
    }
    let effects = effects.lock().unwrap();
    for key in 0..keys {
        let runs = effects.get(&key).map_or(0, Vec::len);
        assert_eq!(
            runs, 1,
            "key {key} executed {runs} times (duplicate or lost completion)"
        );
        assert_eq!(
            finals[&key], effects[&key][0],
            "key {key}: replay differs from its execution"
        );
    }
    for (key, value) in received {
        assert_eq!(
            value, &effects[key][0],
            "key {key}: a caller received another value"
        );
    }
}

/// The whole server is killed mid-run (with bodies in flight, some of them finishing while it
/// is down) and comes back from its AOF.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_killed_fails_closed_then_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = RedisServer::start(
        dir.path(),
        &["--appendonly", "yes", "--appendfsync", "always"],
    ) else {
        return;
    };
    let store = RedisStore::builder(&server.url())
        .response_timeout(Duration::from_secs(1))
        .open()
        .await
        .unwrap();
    let idem = handle(store.clone(), "outage");
    let op = idem_tests::unique_op("redis_down");
    let effects: Effects = Arc::default();
    let mut received = Vec::new();

    // Before: keys 0..50 run.
    for key in 0..50 {
        received.push((key, effect(&idem, &op, key, &effects, 0).await.unwrap()));
    }
    // In flight across the outage: keys 50..53 finish after the restart, keys 53..56 finish
    // while the server is down (their completes are retried until it is back).
    let mut in_flight = Vec::new();
    for (key, body_ms) in [
        (50, 2500),
        (51, 2500),
        (52, 2500),
        (53, 300),
        (54, 300),
        (55, 300),
    ] {
        let (idem, op, effects) = (idem.clone(), op.clone(), effects.clone());
        in_flight.push(tokio::spawn(async move {
            let call = Call::new(op).key(&key).lease(Duration::from_secs(10));
            let v = idem.call(call, || execute(&effects, key, body_ms)).await;
            (key, v)
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.kill();
    let down_at = Instant::now();
    // During: new keys fail closed, quickly, and their bodies never run.
    for key in 56..61 {
        let begun = Instant::now();
        let r = effect(&idem, &op, key, &effects, 0).await;
        match r {
            Err(
                e @ Error::Store {
                    action: "claim", ..
                },
            ) => {
                assert!(e.to_string().contains(&op), "{e}");
            }
            other => panic!("a call while the server is down must fail closed: {other:?}"),
        }
        assert!(
            begun.elapsed() < Duration::from_secs(3),
            "fails fast: {:?}",
            begun.elapsed()
        );
        assert!(
            !effects.lock().unwrap().contains_key(&key),
            "the body never ran without a claim"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    eprintln!("server down for {:?}", down_at.elapsed());

    for t in in_flight {
        let (key, v) = t.await.unwrap();
        received.push((
            key,
            v.unwrap_or_else(|e| panic!("in-flight key {key}: {e}")),
        ));
    }
    // After: everything resumes on the same store (it reconnected); nothing ran twice, nothing
    // recorded was lost.
    assert_exactly_once(&idem, &op, 61, &effects, &received).await;
    // The change subscription is back too.
    let begun = Instant::now();
    while !store.listening() && begun.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.listening(), "the pub/sub subscriber reconnected");
}
