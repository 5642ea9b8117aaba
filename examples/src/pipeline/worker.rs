//! A worker process: opens the databases and idem (idem mode), runs the batch through the
//! queue, and prints its summary as its last stdout line for the parent.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use idem_runtime::store::sqlite::SqliteStore;
use idem_runtime::Idem;

use super::args::{Args, Mode};
use super::crash::CrashPoint;
use super::model_client::ModelClient;
use super::queue::{self, Queue};
use super::steps::Ctx;

/// How long a step waits for the model before giving up (and retrying).
const MODEL_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs this process as a worker of `mode`.
pub(crate) async fn run(args: &Args, mode: Mode) -> Result<()> {
    let app_db = args.app_db.as_deref().context("--app-db")?;
    let db = super::app_db::open(app_db).await?;
    let worker = format!("w{}/pid{}", args.worker_index, std::process::id());
    if let Some(addr) = &args.metrics {
        serve_metrics(addr)?;
    }
    let mut calls_idem = None;
    let tx_store = if mode == Mode::Idem {
        let url = args.store.as_deref().context("--store")?;
        let store = idem_runtime::store::open(url).await?;
        let idem = Idem::builder(store).worker(worker.clone()).build();
        idem.set_default();
        calls_idem = Some(idem);
        // The transactional steps' store: idem's tables in the application's database, so a
        // step's claim, rows and snapshot commit in one of the application's transactions.
        let tx_store = SqliteStore::from_pool(db.clone()).await?;
        Some(
            Idem::builder(Arc::new(tx_store))
                .worker(worker.clone())
                .build(),
        )
    } else {
        None
    };
    let crash = Arc::new(CrashPoint::new(args.crash_after, &worker));
    let llm = ModelClient::new(args.model.as_deref().context("--model")?, MODEL_TIMEOUT)?
        .with_crash_point(crash.clone());
    let ctx = Arc::new(Ctx {
        db,
        tx_idem: tx_store,
        llm,
        batch: args.batch.clone().context("--batch")?,
        worker,
    });
    let queue = Arc::new(Queue {
        seed: args.seed,
        notify_fail_pct: args.notify_fail_pct,
        redeliver_pct: args.redeliver_pct,
        crash,
        retries: AtomicU64::new(0),
        redeliveries: AtomicU64::new(0),
    });
    let offset = args.worker_index * args.inputs / args.workers.max(1);
    let inputs = super::batch(args.inputs);
    let summary = queue::run(
        ctx,
        queue,
        inputs,
        mode == Mode::Idem,
        offset,
        args.concurrency,
    )
    .await;
    if let Some(idem) = &calls_idem {
        // What this worker's replays avoided, into the store's cost ledger before it exits.
        idem.flush_costs().await?;
    }
    println!("{}", serde_json::to_string(&summary)?);
    if args.metrics.is_some() && args.linger > 0 {
        eprintln!("serving metrics for {} more seconds", args.linger);
        tokio::time::sleep(Duration::from_secs(args.linger)).await;
    }
    Ok(())
}

/// Serves the runtime's metrics for Prometheus on `addr`.
fn serve_metrics(addr: &str) -> Result<()> {
    let addr: std::net::SocketAddr = addr.parse().with_context(|| format!("--metrics {addr}"))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("serving metrics on {addr}"))?;
    idem_runtime::metrics::describe();
    Ok(())
}
