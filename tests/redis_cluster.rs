//! The Redis store on a real Redis Cluster of three primaries that the test starts on local
//! ports (`redis-server --cluster-enabled yes` three times, `redis-cli --cluster create`): the
//! conformance subset, with keys spread over all three; then calls running while slots are
//! resharded from one primary to another (`MOVED`/`ASK` redirections), with every key executed
//! exactly once. And a cluster with a replica per primary, one primary killed (SIGKILL) and
//! failed over to its replica mid-run: with `wait_replicas`, nothing recorded is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use idem_runtime::store::redis::RedisStore;
use idem_runtime::{Call, Error, Idem};
use idem_tests::backends::{fresh_redis_prefix, Backend};
use idem_tests::redis_server::RedisCluster;
use idem_tests::{conformance, operator, stream_journal};

async fn backend(url: &str) -> Backend {
    let store = RedisStore::builder(url)
        .cluster(true)
        .prefix(&fresh_redis_prefix())
        .open()
        .await
        .unwrap();
    Backend::new(Arc::new(store))
}

/// One cluster for the whole subset (starting one per scenario would cost seconds each).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_subset_and_resharding_on_a_three_primary_cluster() {
    let Some(cluster) = tokio::task::block_in_place(|| RedisCluster::start(3)) else {
        return;
    };
    let url = cluster.url();

    macro_rules! scenarios {
        ($($module:ident::$scenario:ident),+ $(,)?) => {$(
            eprintln!("cluster: {}", stringify!($scenario));
            $module::$scenario(&backend(&url).await).await;
        )+};
    }
    scenarios!(
        conformance::one_key_64_tasks_runs_once,
        conformance::replay_returns_recorded_value,
        conformance::stalled_attempt_is_taken_over_and_fenced,
        conformance::crashed_attempt_is_taken_over_and_logged_abandoned,
        conformance::body_error_is_retried,
        conformance::fingerprint_mismatch_is_key_reuse,
        conformance::ttl_expiry_runs_again,
        conformance::purge_deletes_in_batches_and_attempts_never_go_back,
        conformance::forget_runs_again_with_a_higher_attempt,
        conformance::waiter_replays_the_owners_outcome,
        conformance::release_lets_the_next_call_run,
        conformance::list_filters_by_op_and_status,
        operator::forget_refuses_a_running_key_unless_forced,
        operator::counts_by_operation_and_status,
        stream_journal::chunks_append_and_read_in_order_and_pages,
        stream_journal::chunks_forget_deletes_the_stream,
    );

    // Many keys: each primary holds some (the hash tags spread them over every slot).
    let b = backend(&url).await;
    let idem = Idem::builder(b.store.clone()).cache_capacity(0).build();
    let op = idem_tests::unique_op("cluster_spread");
    for i in 0..300u32 {
        let v: u32 = idem
            .call(Call::new(op.clone()).key(&i), || async move {
                Ok::<_, Error>(i)
            })
            .await
            .unwrap();
        assert_eq!(v, i);
    }
    let listed = b
        .store
        .list(&idem_runtime::store::ListFilter {
            op: Some(op.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 300, "SCAN visits every primary");
    for i in 0..3 {
        assert!(cluster.keys_on(i) > 0, "node {i} holds no keys");
    }

    resharding_keeps_exactly_once(&cluster, &idem).await;
}

/// Calls run while 2,000 slots move from the first primary to the second: every key is
/// executed exactly once, and every caller gets that execution's value (calls that fail during
/// a migration fail closed and are retried).
async fn resharding_keeps_exactly_once(cluster: &RedisCluster, idem: &Idem) {
    let op = idem_tests::unique_op("cluster_reshard");
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let keys = 400u32;
    let resharded = Arc::new(AtomicBool::new(false));
    let worker = {
        let (idem, op, runs, resharded) =
            (idem.clone(), op.clone(), runs.clone(), resharded.clone());
        tokio::spawn(async move {
            let mut got = Vec::new();
            let mut failures = 0u32;
            let mut rounds_during = 0u32;
            // Rounds over every key until one full round starts after the reshard ended (the
            // client's slot map is stale then: the moved keys answer `MOVED`).
            for round in 0.. {
                let after = resharded.load(Ordering::SeqCst);
                for i in 0..keys {
                    loop {
                        let runs = runs.clone();
                        let call = Call::new(op.clone()).key(&i).lease(Duration::from_secs(5));
                        let r: Result<u32, Error> = idem
                            .call(call, || async move {
                                *runs.lock().unwrap().entry(i).or_default() += 1;
                                Ok(i * 7)
                            })
                            .await;
                        match r {
                            Ok(v) => {
                                got.push((i, v));
                                break;
                            }
                            Err(e) => {
                                assert!(e.is_store_failure(), "round {round} key {i}: {e}");
                                failures += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                }
                if after {
                    break;
                }
                rounds_during += 1;
            }
            (got, failures, rounds_during)
        })
    };
    let (from, to) = (cluster.node_id(0), cluster.node_id(1));
    let port = cluster.nodes[0].port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{port}")])
            .args(["--cluster-from", &from, "--cluster-to", &to])
            .args(["--cluster-slots", "2000", "--cluster-yes"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    resharded.store(true, Ordering::SeqCst);
    assert!(
        out.status.success(),
        "reshard failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, failures, rounds_during) = worker.await.unwrap();
    eprintln!(
        "resharding: {} calls ({rounds_during} rounds while slots moved), {failures} failed \
         closed and were retried",
        got.len()
    );
    assert!(rounds_during >= 1, "calls ran while the slots moved");
    let to = cluster.node_id(1);
    let nodes = cluster.cli(cluster.nodes[0].port(), &["cluster", "nodes"]);
    let line = nodes
        .lines()
        .find(|l| l.starts_with(&to))
        .unwrap_or_default();
    assert!(line.contains("0-1999"), "slots 0-1999 moved: {line}");
    let runs = runs.lock().unwrap();
    for i in 0..keys {
        assert_eq!(
            runs.get(&i),
            Some(&1),
            "key {i} ran {:?} times",
            runs.get(&i)
        );
    }
    assert!(got.iter().all(|(i, v)| *v == i * 7));
}

/// Three primaries with one replica each; the store waits for one replica per decision
/// (`WAIT 1`). A primary is killed with SIGKILL and its replica takes over: calls meanwhile fail
/// closed (or succeed), and afterwards every key recorded before the kill replays without
/// running again. (Without `WAIT`, a completion the primary acknowledged but had not yet sent
/// to its replica is lost in the failover, and its key runs again: see the README.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_over_primary_loses_nothing_with_wait_replicas() {
    let Some(mut cluster) = tokio::task::block_in_place(|| RedisCluster::start_with_replicas(3, 1))
    else {
        return;
    };
    let victim = (0..cluster.nodes.len())
        .find(|i| cluster.is_primary(*i))
        .unwrap();
    // The store's seed is another node, so the test is about the failover, not discovery.
    let seed = (0..cluster.nodes.len()).find(|i| *i != victim).unwrap();
    let store = RedisStore::builder(&cluster.nodes[seed].url())
        .cluster(true)
        .prefix(&fresh_redis_prefix())
        .wait_replicas(1, Duration::from_millis(500))
        .response_timeout(Duration::from_secs(1))
        .open()
        .await
        .unwrap();
    let idem = Idem::builder(Arc::new(store)).cache_capacity(0).build();
    let op = idem_tests::unique_op("cluster_failover");
    let runs: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let call = |i: u32| {
        let runs = runs.clone();
        let idem = idem.clone();
        let op = op.clone();
        async move {
            idem.call(
                Call::new(op).key(&i).lease(Duration::from_secs(3)),
                || async move {
                    *runs.lock().unwrap().entry(i).or_default() += 1;
                    Ok::<_, Error>(i)
                },
            )
            .await
        }
    };
    for i in 0..200 {
        assert_eq!(call(i).await.unwrap(), i);
    }
    assert!(cluster.keys_on(victim) > 0, "the victim holds keys");

    cluster.nodes[victim].kill();
    // During the failover: calls fail closed, or succeed on the other primaries.
    let mut failed = 0;
    for i in 200..215 {
        match tokio::time::timeout(Duration::from_secs(10), call(i))
            .await
            .unwrap()
        {
            Ok(v) => assert_eq!(v, i),
            Err(e) => {
                assert!(e.is_store_failure(), "{e}");
                failed += 1;
            }
        }
    }
    tokio::task::block_in_place(|| {
        cluster.wait_ok();
        // The promoted replica has no replica of its own, so `WAIT 1` fails its keys closed
        // until the killed node comes back (it rejoins as the new primary's replica).
        cluster.nodes[victim].restart();
        cluster.wait_ok();
        cluster.wait_replicas_online(1);
    });
    // After: every key replays or runs, each at most once (200..215 may not have run).
    let begun = std::time::Instant::now();
    for i in 0..215 {
        loop {
            match call(i).await {
                Ok(v) => {
                    assert_eq!(v, i);
                    break;
                }
                Err(e) if begun.elapsed() < Duration::from_secs(30) => {
                    assert!(e.is_store_failure(), "{e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("key {i} never recovered: {e}"),
            }
        }
    }
    let runs = runs.lock().unwrap();
    for i in 0..215 {
        assert_eq!(
            runs.get(&i),
            Some(&1),
            "key {i} ran {:?} times",
            runs.get(&i)
        );
    }
    eprintln!("failover: {failed} calls failed closed while the primary was down");
}
