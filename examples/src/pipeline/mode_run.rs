//! One mode's run: a fresh model server and application database, the worker processes under
//! supervision with a progress bar, then the bill, the rows, and (idem) the attempts log.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{Args, Mode};
use super::attempts;
use super::model_server::ModelServer;
use super::queue::WorkerSummary;
use super::report::Figures;
use super::supervise::Supervised;

/// Runs the batch in `mode` and returns its figures.
pub(crate) async fn run(
    args: &Args,
    mode: Mode,
    dir: &Path,
    idem_store: &str,
    batch: &str,
) -> Result<Figures> {
    let server = ModelServer::start(
        args.seed,
        args.provider_dedup,
        args.drop_pct,
        args.slow_pct,
        args.stream_drop_pct,
    )
    .await?;
    let app_db = dir.join(format!("app-{}.db", mode.as_str()));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", app_db.display()));
    }
    let db = super::app_db::open(&app_db).await?;
    let mut ledger_before = 0.0;
    if mode == Mode::Idem {
        // Create the store's tables once, before several workers race to.
        let store = idem_runtime::store::open(idem_store)
            .await
            .with_context(|| format!("opening {idem_store}"))?;
        ledger_before = tokens_avoided(&*store).await?;
    }
    let bar = progress_bar(args.inputs, mode);

    let started = Instant::now();
    let since = idem_runtime::record::now_millis();
    let mut pending = Vec::new();
    for index in 0..args.workers {
        let worker = Supervised {
            index,
            flags: args.worker_flags(mode, index, &server.url(), batch, &app_db, idem_store),
            crash_after: args.crash_after.filter(|_| index == 0),
        };
        pending.push(tokio::spawn(worker.run_to_completion(bar.clone())));
    }
    let mut summary = WorkerSummary::default();
    let mut crashes = 0;
    while !pending.is_empty() {
        if let Ok(t) = super::app_db::tally(&db).await {
            bar.set_position(u64::try_from(t.finished).unwrap_or(0));
            bar.set_message(format!(
                "{} model calls, {} rows",
                server.meter.calls.load(Ordering::SeqCst),
                t.rows
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut still = Vec::new();
        for h in pending {
            if h.is_finished() {
                let (s, c) = h.await??;
                summary.retries += s.retries;
                summary.redeliveries += s.redeliveries;
                summary.failed += s.failed;
                crashes += c;
            } else {
                still.push(h);
            }
        }
        pending = still;
    }
    let wall = started.elapsed();
    server.settle().await;
    let tally = super::app_db::tally(&db).await?;
    bar.set_position(u64::try_from(tally.finished).unwrap_or(0));
    bar.finish_and_clear();

    let meter = &server.meter;
    let (attempts, avoided) = if mode == Mode::Idem {
        let store = idem_runtime::store::open(idem_store).await?;
        let avoided = tokens_avoided(&*store).await? - ledger_before;
        (attempts::read(idem_store, since).await?, Some(avoided))
    } else {
        (attempts::AttemptsLog::default(), None)
    };
    db.close().await;
    Ok(Figures {
        model_calls: meter.calls.load(Ordering::SeqCst),
        tokens_billed: meter.tokens.load(Ordering::SeqCst),
        dropped: meter.dropped.load(Ordering::SeqCst),
        slow: meter.slow.load(Ordering::SeqCst),
        rows: tally.rows,
        duplicate_rows: tally.duplicate_rows,
        notifications: tally.notifications,
        duplicate_notifications: tally.duplicate_notifications,
        finished: tally.finished,
        retries: summary.retries,
        redeliveries: summary.redeliveries,
        crashes,
        failed: summary.failed,
        wall,
        attempts,
        tokens_avoided: avoided.map(|t| t.round() as u64),
        stream: None,
    })
}

/// The draft tokens that replays avoided so far, by the store's cost ledger (the workers write
/// theirs before they exit; a crashed worker's last few seconds are not counted).
async fn tokens_avoided(store: &dyn idem_runtime::Store) -> Result<f64> {
    let ledger = store.costs(Some("ai_pipeline::generate_draft")).await?;
    Ok(ledger
        .iter()
        .filter(|l| l.unit == "tokens")
        .map(|l| l.avoided)
        .sum())
}

fn progress_bar(inputs: usize, mode: Mode) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(inputs as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:32}] {pos}/{len} inputs  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(if mode == Mode::Idem {
        "with idem"
    } else {
        "no idem"
    });
    bar
}
