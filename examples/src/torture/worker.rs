//! One worker process: walks the key space in its own random order, running one transactional
//! step per key (claim, 1-3 inserts, snapshot, commit in one transaction), with random sleeps
//! in between so the parent's SIGKILLs land at every point of a step. A key is done for this
//! worker once a step of it replays; the worker exits 0 when every key is done.

use std::fs::File;
use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem_runtime::{Error, Idem};

use super::{fail, App, Args, Rng, Run, Snap, EXIT_FAILED};

/// Where one execution of a step pauses.
#[derive(Debug)]
struct Plan {
    /// Before each insert (their number is the number of rows, 1 to 3).
    inserts: Vec<Duration>,
    /// After the last insert, before the body returns (and idem writes the snapshot).
    before_snapshot: Duration,
    /// After the step, before the commit: the claim, rows and snapshot are all written and
    /// uncommitted.
    before_commit: Duration,
    /// `--outside-tx`: the rows go in before the step, on the pool (autocommit).
    outside: bool,
    /// Where the body notes that it started (see [`Run::starts_path`]).
    starts: Arc<File>,
}

impl Plan {
    fn new(rng: &mut Rng, max_sleep_ms: u64, outside: bool, starts: &Arc<File>) -> Self {
        let rows = rng.between(1, 3);
        let mut nap = || Duration::from_millis(rng.between(0, max_sleep_ms));
        Self {
            inserts: (0..rows).map(|_| nap()).collect(),
            before_snapshot: nap(),
            before_commit: nap(),
            outside,
            starts: starts.clone(),
        }
    }
}

/// What one step of a key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    /// The body ran and the transaction committed.
    Executed,
    /// The key had a snapshot: the body did not run.
    Replayed,
}

async fn nap(pause: Duration) {
    if !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
}

/// One step of `key` in a transaction of `$pool`. A macro rather than a generic fn: the two
/// pools' transaction types share no trait that sqlx's query execution accepts for both.
macro_rules! step_on {
    ($pool:expr, $begin:expr, $idem:expr, $run:expr, $key:expr, $worker:expr, $plan:expr) => {{
        let plan = $plan;
        let exec = uuid::Uuid::new_v4().simple().to_string();
        let insert = format!(
            "INSERT INTO {} (key, exec, seq, worker) VALUES ($1, $2, $3, $4)",
            $run.table
        );
        // The negative control: check, then write outside the step's transaction.
        let outside = plan.outside && !completed($idem, $run, $key).await?;
        if outside {
            for (seq, pause) in plan.inserts.iter().enumerate() {
                nap(*pause).await;
                sqlx::query(&insert)
                    .bind($key)
                    .bind(&exec)
                    .bind(seq as i32)
                    .bind($worker)
                    .execute($pool)
                    .await?;
            }
        }
        let mut tx = $begin.await?;
        // The body owns what it uses: `Idem::step` takes a boxed future that borrows only the
        // transaction (as sqlx's `Connection::transaction` does).
        let (body_insert, body_key, body_exec, body_worker) = (
            insert.clone(),
            $key.to_owned(),
            exec.clone(),
            $worker.to_owned(),
        );
        let (pauses, before_snapshot) = (plan.inserts.clone(), plan.before_snapshot);
        let starts = plan.starts.clone();
        let snap: Snap = $idem
            .step($run.call($key), &mut tx, move |tx| {
                Box::pin(async move {
                    // Best effort: a lost byte only undercounts the aborted executions.
                    let _ = (&*starts).write_all(b"s");
                    for (seq, pause) in pauses.iter().enumerate() {
                        if outside {
                            break;
                        }
                        nap(*pause).await;
                        sqlx::query(&body_insert)
                            .bind(&body_key)
                            .bind(&body_exec)
                            .bind(seq as i32)
                            .bind(&body_worker)
                            .execute(&mut **tx)
                            .await?;
                    }
                    nap(before_snapshot).await;
                    Ok::<_, Error>(Snap {
                        exec: body_exec,
                        rows: pauses.len() as u32,
                    })
                })
            })
            .await?;
        // The execution ids are fresh per step: a value carrying ours is this body's.
        let ran = snap.exec == exec;
        if ran {
            nap(plan.before_commit).await;
        }
        tx.commit().await?;
        // A replayed value must be a whole one: an execution's id and its 1-3 rows.
        if !ran && !(1..=3).contains(&snap.rows) {
            return Err(Error::Config(format!("key {}: replayed {snap:?}", $key)));
        }
        Ok(if ran { Done::Executed } else { Done::Replayed })
    }};
}

/// Whether `key` has a completed record (read outside any transaction).
async fn completed(idem: &Idem, run: &Run, key: &str) -> Result<bool, Error> {
    let record = idem.store().get(&run.call(key).key_value()).await?;
    Ok(record.is_some_and(|r| r.status == idem_runtime::record::Status::Completed))
}

/// One step of `key`: executes it, or replays it.
async fn step(
    app: &App,
    idem: &Idem,
    run: &Run,
    key: &str,
    worker: &str,
    plan: Plan,
) -> Result<Done, Error> {
    match app {
        // `BEGIN IMMEDIATE`: the claim reads the key's record before it writes, and a deferred
        // transaction that turns from reader into writer while another process writes fails
        // at once with SQLITE_BUSY (the busy timeout does not apply to that upgrade). With
        // plain `begin()` 4 workers see "database is locked" on every few steps.
        App::Sqlite(pool) => step_on!(
            pool,
            pool.begin_with("BEGIN IMMEDIATE"),
            idem,
            run,
            key,
            worker,
            plan
        ),
        #[cfg(feature = "postgres")]
        App::Postgres(pool) => step_on!(pool, pool.begin(), idem, run, key, worker, plan),
    }
}

/// The worker's life: returns its exit status.
pub(crate) async fn run(args: &Args, id: usize) -> i32 {
    let Some(name) = &args.run else {
        fail("--worker", "needs --run")
    };
    let run = Run::new(&args.store, name);
    let store = match idem_runtime::store::open(&run.store_url).await {
        Ok(store) => store,
        Err(e) => fail("worker: open the store", e),
    };
    let worker = format!("w{id}-{}", std::process::id());
    // No snapshot cache: every replay reads the database, in a transaction like the steps'.
    let idem = Idem::builder(store)
        .cache_capacity(0)
        .worker(worker.clone())
        .build();
    let app = match App::connect(&run).await {
        Ok(app) => app,
        Err(e) => fail("worker: connect the application pool", e),
    };
    let starts = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run.starts_path())
        .map(Arc::new)
        .unwrap_or_else(|e| fail("worker: open the starts file", e));
    let mut rng = Rng::from_entropy();
    let mut keys: Vec<u64> = (0..args.keys).collect();
    rng.shuffle(&mut keys);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut errors = 0u32;
    while !keys.is_empty() {
        let mut left = Vec::with_capacity(keys.len());
        for &i in &keys {
            let key = Run::key(i);
            let plan = Plan::new(&mut rng, args.max_sleep_ms, args.outside_tx, &starts);
            match step(&app, &idem, &run, &key, &worker, plan).await {
                Ok(Done::Replayed) => {}
                // The next pass replays it: the proof that the commit holds.
                Ok(Done::Executed) => left.push(i),
                Err(e) => {
                    // A transient error (a lock timeout, a connection the server dropped)
                    // rolls the step back; the key is retried on the next pass.
                    errors += 1;
                    eprintln!("torture: worker {worker}: key {key}: {e}");
                    if errors > 100 {
                        eprintln!("torture: worker {worker}: too many errors");
                        return EXIT_FAILED;
                    }
                    left.push(i);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        keys = left;
        if Instant::now() > deadline {
            eprintln!(
                "torture: worker {worker}: {} keys left at the deadline",
                keys.len()
            );
            return EXIT_FAILED;
        }
    }
    0
}
