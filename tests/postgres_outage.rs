//! PostgreSQL outages mid-run: calls during them fail closed with `Error::Store` (the body never
//! runs without a claim); afterwards work resumes with zero duplicate executions and zero lost
//! completions.
//!
//! Neither test disturbs other tests sharing the machine's server: the first terminates only
//! its own pool's connections (found by the store's unique `application_name`); the second
//! stops and restarts a throwaway cluster it creates itself (`initdb` + `pg_ctl` on a free port).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use idem_runtime::store::postgres::PostgresStore;
use idem_runtime::{Call, Error, Idem};
use idem_tests::backends::{fresh_postgres_schema, postgres_store};

/// Executions per key, as the bodies saw them.
type Effects = Arc<Mutex<HashMap<u32, Vec<String>>>>;

fn handle(store: PostgresStore, worker: &str) -> Idem {
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

/// The pool's connections are terminated again and again mid-run (`pg_terminate_backend` on
/// the backends with this store's `application_name`, the LISTEN connection included).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_connections_fail_closed_then_resume() {
    let app = format!(
        "idem-outage-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let schema = fresh_postgres_schema();
    let Some(store) = postgres_store(&schema, |b| {
        b.application_name(&app)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
    })
    .await
    else {
        return;
    };
    let Some(admin) = postgres_store(&schema, |b| b.max_connections(1)).await else {
        return;
    };
    let idem = handle(store, "outage");
    let op = idem_tests::unique_op("pg_terminate");
    let keys = 300_u32;
    let effects: Effects = Arc::default();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store_errors = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let killer = {
        let (pool, app, stop) = (admin.pool().clone(), app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut killed = 0_i64;
            let begun = Instant::now();
            while begun.elapsed() < Duration::from_millis(1500) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&app)
                .fetch_one(&pool)
                .await
                .unwrap();
                killed += n;
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            stop.store(true, Ordering::SeqCst);
            killed
        })
    };
    let mut tasks = Vec::new();
    for t in 0..16_u32 {
        let (idem, op, effects, received, errors, stop) = (
            idem.clone(),
            op.clone(),
            effects.clone(),
            received.clone(),
            store_errors.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = t * 7;
            while !stop.load(Ordering::SeqCst) {
                let key = i % keys;
                i += 1;
                match effect(&idem, &op, key, &effects, 2).await {
                    Ok(v) => received.lock().unwrap().push((key, v)),
                    Err(e @ Error::Store { .. }) => {
                        assert!(
                            e.to_string().contains(&op),
                            "the error names the operation: {e}"
                        );
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("only typed store errors may happen: {e}"),
                }
            }
        }));
    }
    let killed = killer.await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let errors = store_errors.load(Ordering::SeqCst);
    eprintln!(
        "terminated {killed} backends; {errors} calls failed closed; {} calls succeeded",
        received.lock().unwrap().len()
    );
    assert!(killed > 0, "the outage happened");
    assert!(errors > 0, "calls during the outage failed closed");
    let received = received.lock().unwrap().clone();
    assert_exactly_once(&idem, &op, keys, &effects, &received).await;
}

/// A throwaway PostgreSQL cluster in a temporary directory, on a free port; stopped on drop.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    /// `None` when no PostgreSQL server binaries are installed (skipped loudly, or a failure in CI).
    fn create() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql").ok().and_then(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|b| b.join("initdb").exists() && b.join("pg_ctl").exists())
                .max()
        });
        let Some(bin) = bin else {
            if idem_tests::servers_required() {
                panic!("PostgreSQL server binaries (initdb, pg_ctl) are required in CI");
            }
            eprintln!("\n*** SKIPPED: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin ***\n");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(
                "chown",
                &["-R".as_ref(), "postgres:".as_ref(), dir.path().as_os_str()],
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self { bin, dir, port };
        let data = cluster.data();
        cluster.pg(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "--auth=trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        cluster.start();
        Some(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs a server binary, as the `postgres` user when this process is root.
    fn pg(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let program = self.bin.join(program);
        if is_root() {
            let mut all: Vec<&std::ffi::OsStr> = vec![
                "-u".as_ref(),
                "postgres".as_ref(),
                "--".as_ref(),
                program.as_os_str(),
            ];
            all.extend_from_slice(args);
            run("runuser", &all);
        } else {
            run(program.to_str().unwrap(), args);
        }
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let data = self.data();
        self.pg(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        );
    }

    fn stop(&self, mode: &str) {
        let data = self.data();
        self.pg(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-m".as_ref(),
                mode.as_ref(),
                "-D".as_ref(),
                data.as_os_str(),
            ],
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let args: [&std::ffi::OsStr; 6] = [
            "stop".as_ref(),
            "-w".as_ref(),
            "-m".as_ref(),
            "immediate".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
        ];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&program).args(args).output()
        };
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(program: &str, args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The whole server goes down mid-run (with bodies in flight, some of them finishing while it
/// is down) and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_down_fails_closed_then_resumes() {
    let Some(cluster) = Cluster::create() else {
        return;
    };
    let store = PostgresStore::builder(&cluster.url())
        .schema("idem_outage")
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(1))
        .open()
        .await
        .unwrap();
    let idem = handle(store, "outage");
    let op = idem_tests::unique_op("pg_down");
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

    cluster.stop("fast");
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
            "fails within the acquire timeout"
        );
        assert!(
            !effects.lock().unwrap().contains_key(&key),
            "the body never ran without a claim"
        );
    }
    cluster.start();
    eprintln!("server down for {:?}", down_at.elapsed());

    for t in in_flight {
        let (key, v) = t.await.unwrap();
        received.push((
            key,
            v.unwrap_or_else(|e| panic!("in-flight key {key}: {e}")),
        ));
    }
    // After: everything resumes; nothing ran twice, nothing recorded was lost.
    assert_exactly_once(&idem, &op, 61, &effects, &received).await;
}
