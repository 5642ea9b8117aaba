//! The parent process: sets a run up (the application table, on PostgreSQL in fresh schemas),
//! spawns the workers, kills a random one with SIGKILL at random intervals and restarts it
//! until `--kills` kills were delivered, lets the workers finish every key, checks the final
//! state and prints the JSON line. A clean run's table (and schemas) is dropped; a failed
//! run's is kept for inspection (except under `--outside-tx`, which fails by design).

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use idem_runtime::Error;
use tokio::process::{Child, Command};

use super::check::check;
use super::{fail, App, Args, Rng, Run, EXIT_FAILED, EXIT_UNREACHABLE};

/// Creates the run's application table (and on PostgreSQL its schema). No unique constraint
/// on purpose: a duplicate execution must show up as rows, not as a failed insert.
async fn create_table(app: &App, run: &Run) -> Result<(), sqlx::Error> {
    match app {
        App::Sqlite(pool) => {
            let sql = format!(
                "CREATE TABLE {} (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, \
                 exec TEXT NOT NULL, seq INTEGER NOT NULL, worker TEXT NOT NULL)",
                run.table
            );
            sqlx::query(&sql).execute(pool).await?;
        }
        #[cfg(feature = "postgres")]
        App::Postgres(pool) => {
            let schema = run.schema.as_deref().unwrap_or("public");
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                .execute(pool)
                .await?;
            let sql = format!(
                "CREATE TABLE {} (id BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, \
                 exec TEXT NOT NULL, seq INTEGER NOT NULL, worker TEXT NOT NULL)",
                run.table
            );
            sqlx::query(&sql).execute(pool).await?;
        }
    }
    Ok(())
}

/// Drops what a clean run created in the application's database: the table, and on
/// PostgreSQL both schemas (the idem store's too). On SQLite the run's records stay in the
/// store file under their own operation name.
async fn drop_run(app: &App, run: &Run) -> Result<(), sqlx::Error> {
    match app {
        App::Sqlite(pool) => {
            sqlx::query(&format!("DROP TABLE {}", run.table))
                .execute(pool)
                .await?;
        }
        #[cfg(feature = "postgres")]
        App::Postgres(pool) => {
            if let Some(schema) = &run.schema {
                for s in [schema.clone(), format!("{schema}_idem")] {
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE"))
                        .execute(pool)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// Starts worker `id` of the run: this binary in worker mode.
fn spawn(args: &Args, run: &Run, id: usize) -> Child {
    let exe = std::env::current_exe().unwrap_or_else(|e| fail("this binary's path", e));
    Command::new(exe)
        .args(["--worker", &id.to_string(), "--run", &run.name])
        .args(["--store", &args.store, "--keys", &args.keys.to_string()])
        .args(["--max-sleep-ms", &args.max_sleep_ms.to_string()])
        .args(["--timeout-secs", &args.timeout_secs.to_string()])
        .args(args.outside_tx.then_some("--outside-tx"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| fail("spawn a worker", e))
}

/// Whether `status` is a death by our SIGKILL (rather than an exit of the worker's own).
fn killed(status: ExitStatus) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.signal() == Some(9)
    }
    #[cfg(not(unix))]
    {
        !status.success()
    }
}

/// The backend's name for the JSON line (never the URL: it may hold a password).
fn backend(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "postgres"
    } else if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "other"
    }
}

/// The parent's life: returns the exit status.
pub(crate) async fn run(args: &Args) -> i32 {
    let started = Instant::now();
    if args.workers == 0 {
        fail("--workers", "must be at least 1");
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run = Run::new(&args.store, &format!("{}_{secs}", std::process::id()));
    let store = match idem_runtime::store::open(&run.store_url).await {
        Ok(store) => store,
        Err(e @ Error::Open { .. }) if e.to_string().contains("cannot connect") => {
            eprintln!("torture: the store's server is unreachable: {e}");
            return EXIT_UNREACHABLE;
        }
        Err(e) => fail("open the store", e),
    };
    let app = App::connect(&run)
        .await
        .unwrap_or_else(|e| fail("connect the application pool", e));
    if let Err(e) = create_table(&app, &run).await {
        fail("create the application table", e);
    }
    let mut rng = args.seed.map_or_else(Rng::from_entropy, Rng::new);
    let mut workers: Vec<Child> = (0..args.workers).map(|id| spawn(args, &run, id)).collect();
    let (mut kills, mut restarts) = (0u64, 0u64);
    while kills < args.kills {
        let pause = rng.between(args.min_interval_ms, args.max_interval_ms);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // A worker that finished every key before the kills were done starts over (replaying
        // every key), so the kills keep a target; a worker that failed ends the run.
        for (id, child) in workers.iter_mut().enumerate() {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) if status.success() => {
                    *child = spawn(args, &run, id);
                    restarts += 1;
                }
                Ok(Some(status)) => fail(&format!("worker {id}"), status),
                Err(e) => fail(&format!("worker {id}"), e),
            }
        }
        let victim = rng.between(0, args.workers as u64 - 1) as usize;
        let child = &mut workers[victim];
        let _ = child.start_kill();
        match child.wait().await {
            Ok(status) if killed(status) => kills += 1,
            // It exited by itself just before the signal: not a kill.
            Ok(status) if status.success() => {}
            Ok(status) => fail(&format!("worker {victim}"), status),
            Err(e) => fail(&format!("worker {victim}"), e),
        }
        workers[victim] = spawn(args, &run, victim);
        restarts += 1;
    }
    let completed_at_last_kill = match store.counts(Some(&run.op)).await {
        Ok(counts) => counts.first().map_or(0, |c| c.completed),
        Err(e) => fail("count the records", e),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut worker_failures = 0u64;
    for (id, child) in workers.iter_mut().enumerate() {
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => {
                eprintln!("torture: worker {id} ended with {status}");
                worker_failures += 1;
            }
            Ok(Err(e)) => fail(&format!("worker {id}"), e),
            Err(_) => {
                eprintln!("torture: worker {id} did not finish in --timeout-secs");
                let _ = child.start_kill();
                worker_failures += 1;
            }
        }
    }
    let found = check(store.as_ref(), &app, &run, args.keys)
        .await
        .unwrap_or_else(|e| fail("check the final state", e));
    // Executions that started and never committed: cut short by a kill (or rolled back on an
    // error, which the workers print). Each key commits exactly one execution.
    let starts = run.starts_path();
    let executions = std::fs::metadata(&starts).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&starts);
    let aborted = executions.saturating_sub(found.completed);
    let clean = found.clean(args.keys) && worker_failures == 0;
    let line = serde_json::json!({
        "store": backend(&args.store),
        "kills": kills,
        "keys": args.keys,
        "duplicates": found.duplicates,
        "lost": found.lost,
        "orphans": found.orphans,
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "workers": args.workers,
        "restarts": restarts,
        "completed_at_last_kill": completed_at_last_kill,
        "executions": executions,
        "aborted_executions": aborted,
        "unfinished": found.unfinished,
        "records": found.records,
        "completed": found.completed,
        "rows": found.rows,
        "worker_failures": worker_failures,
        "outside_tx": args.outside_tx,
    });
    println!("{line}");
    // The negative control fails by design: nothing to inspect.
    if clean || args.outside_tx {
        if let Err(e) = drop_run(&app, &run).await {
            eprintln!("torture: drop the run's table: {e}");
        }
    }
    if clean {
        0
    } else {
        if !args.outside_tx {
            eprintln!(
                "torture: FAILED; the run's table {} is kept (operation {})",
                run.table, run.op
            );
        }
        EXIT_FAILED
    }
}
