//! How a worker runs the batch, as a real queue consumer would: each task is retried with
//! exponential backoff and jitter (`backon`), and some tasks are delivered a second time (a lost
//! ack). The faults it injects (the outbox refusing a write, the crash) are seeded, so both
//! modes meet the same ones.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use backon::Retryable;
use serde::{Deserialize, Serialize};

use super::crash::CrashPoint;
use super::steps::{self, Ctx, StepError};
use super::{chance, outbox, Input};

/// The queue's seeded faults and its counters.
#[derive(Debug)]
pub(crate) struct Queue {
    /// The fault schedule's seed.
    pub(crate) seed: u64,
    /// Percent of notify attempts that fail (before writing), failing the whole task.
    pub(crate) notify_fail_pct: u64,
    /// Percent of tasks delivered a second time.
    pub(crate) redeliver_pct: u64,
    /// Counts finished steps, and kills the process when `--crash-after` says so.
    pub(crate) crash: Arc<CrashPoint>,
    /// Task retries (backon).
    pub(crate) retries: AtomicU64,
    /// Second deliveries.
    pub(crate) redeliveries: AtomicU64,
}

/// What a worker did.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct WorkerSummary {
    /// Task retries.
    pub(crate) retries: u64,
    /// Second deliveries.
    pub(crate) redeliveries: u64,
    /// Inputs that failed even after all retries.
    pub(crate) failed: u64,
}

/// Runs the whole batch (starting at `offset`, so workers start on different inputs), at most
/// `concurrency` inputs at a time.
pub(crate) async fn run(
    ctx: Arc<Ctx>,
    queue: Arc<Queue>,
    inputs: Vec<Input>,
    idem: bool,
    offset: usize,
    concurrency: usize,
) -> WorkerSummary {
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let n = inputs.len();
    for i in 0..n {
        let input = inputs[(i + offset) % n].clone();
        let (ctx, queue, permits) = (ctx.clone(), queue.clone(), permits.clone());
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return false;
            };
            let mut result = deliver(&ctx, &queue, &input, idem, 0).await;
            if result.is_ok()
                && chance(queue.seed, &["redeliver", &input.id]) % 100 < queue.redeliver_pct
            {
                queue.redeliveries.fetch_add(1, Ordering::SeqCst);
                result = deliver(&ctx, &queue, &input, idem, 1).await;
            }
            if let Err(e) = &result {
                eprintln!(
                    "[{}] input {} failed after all retries: {e}",
                    ctx.worker, input.id
                );
            }
            result.is_ok()
        });
    }
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        if !matches!(done, Ok(true)) {
            failed += 1;
        }
    }
    WorkerSummary {
        retries: queue.retries.load(Ordering::SeqCst),
        redeliveries: queue.redeliveries.load(Ordering::SeqCst),
        failed,
    }
}

/// One delivery of a task, retried with exponential backoff and jitter.
async fn deliver(
    ctx: &Ctx,
    queue: &Queue,
    input: &Input,
    idem: bool,
    delivery: u32,
) -> Result<(), StepError> {
    let attempt = AtomicU32::new(0);
    (|| {
        let attempt = attempt.fetch_add(1, Ordering::SeqCst);
        let roll = chance(
            queue.seed,
            &[
                "notify",
                &input.id,
                &delivery.to_string(),
                &attempt.to_string(),
            ],
        );
        let outbox_busy = roll % 100 < queue.notify_fail_pct;
        outbox::busy_while(outbox_busy, process(ctx, &queue.crash, input, idem))
    })
    .retry(super::caller_retries())
    .notify(|_, _| {
        queue.retries.fetch_add(1, Ordering::SeqCst);
    })
    .await
}

/// The pipeline for one input: the four steps, idempotent or plain.
async fn process(
    ctx: &Ctx,
    crash: &CrashPoint,
    input: &Input,
    idem: bool,
) -> Result<(), StepError> {
    if idem {
        let prepared = steps::preprocess(&ctx.batch, input).await?;
        crash.step_done();
        let draft = steps::generate_draft(ctx, &prepared).await?;
        crash.step_done();
        let row = steps::save_draft(ctx, &draft).await?;
        crash.step_done();
        steps::notify(ctx, &input.id, row).await?;
    } else {
        let prepared = steps::preprocess_body(input).await?;
        crash.step_done();
        let draft = steps::generate_body(ctx, &prepared).await?;
        crash.step_done();
        let row = steps::save_body(&ctx.db, ctx, &draft).await?;
        crash.step_done();
        steps::notify_body(&ctx.db, &input.id, row).await?;
    }
    crash.step_done();
    Ok(())
}
