//! The four steps, plain and `#[idempotent]`, and a worker that runs the batch with retries
//! (exponential backoff with jitter, from `backon`) and at-least-once redeliveries.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use idem_runtime::store::sqlite::{SqliteStore, Step};
use idem_runtime::{idempotent, Call};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqlitePool;
use sqlx::SqliteExecutor;

use super::model_client::ModelClient;
use super::{chance, Input};

/// Everything a step needs. Not part of any key (only `batch` is).
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The application database.
    pub(crate) db: SqlitePool,
    /// The same database as an idem store, for the transactional steps (idem mode only).
    pub(crate) tx_store: Option<SqliteStore>,
    /// The model.
    pub(crate) llm: ModelClient,
    /// The batch id: part of every key, so each run of the example is a fresh key space.
    pub(crate) batch: String,
    /// The fault schedule's seed.
    pub(crate) seed: u64,
    /// This worker's name.
    pub(crate) worker: String,
    /// Exit the process in the middle of a step once this many steps have finished.
    pub(crate) crash_after: Option<u64>,
    /// Percent of notify attempts that fail (before writing), failing the whole task.
    pub(crate) notify_fail_pct: u64,
    /// Percent of tasks the queue delivers a second time (the ack was lost).
    pub(crate) redeliver_pct: u64,
    /// Steps finished by this process.
    pub(crate) steps_done: AtomicU64,
    /// Task retries (backon).
    pub(crate) retries: AtomicU64,
    /// Second deliveries.
    pub(crate) redeliveries: AtomicU64,
}

impl Ctx {
    fn step_done(&self) {
        self.steps_done.fetch_add(1, Ordering::SeqCst);
    }

    /// The crash of `--crash-after`: the process dies mid-step, after the model billed.
    fn maybe_crash(&self) {
        if let Some(n) = self.crash_after {
            if self.steps_done.load(Ordering::SeqCst) >= n {
                eprintln!(
                    "\n[{}] CRASH: exiting mid-step after {n} finished steps (the model already billed)",
                    self.worker
                );
                std::process::exit(137);
            }
        }
    }
}

/// A step's error. idem's own errors (store down, ...) convert into it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepError(pub String);

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<idem_runtime::Error> for StepError {
    fn from(e: idem_runtime::Error) -> Self {
        StepError(e.to_string())
    }
}

/// A preprocessed input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Prepared {
    /// The input id.
    pub(crate) id: String,
    /// The language.
    pub(crate) lang: String,
    /// The prompt sent to the model.
    pub(crate) prompt: String,
}

/// A generated draft.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Draft {
    /// The input id.
    pub(crate) id: String,
    /// The language.
    pub(crate) lang: String,
    /// The text.
    pub(crate) text: String,
    /// Tokens billed for it.
    pub(crate) tokens: u64,
}

// ---- the plain bodies ----

async fn preprocess_body(input: &Input) -> Result<Prepared, StepError> {
    let title = input.title.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok(Prepared {
        id: input.id.clone(),
        lang: input.lang.clone(),
        prompt: format!(
            "[{}] Write a short article titled \"{title}\" ({})",
            input.lang, input.id
        ),
    })
}

async fn generate_body(ctx: &Ctx, prepared: &Prepared) -> Result<Draft, StepError> {
    // Inside an idempotent step, pass its key on, as a provider that honours one would want.
    let key = idem_runtime::current().map(|c| c.idempotency_key());
    let generation = ctx
        .llm
        .generate(&prepared.prompt, key.as_deref())
        .await
        .map_err(StepError)?;
    ctx.maybe_crash();
    Ok(Draft {
        id: prepared.id.clone(),
        lang: prepared.lang.clone(),
        text: generation.text,
        tokens: generation.tokens,
    })
}

async fn save_body<'e>(
    db: impl SqliteExecutor<'e>,
    ctx: &Ctx,
    draft: &Draft,
) -> Result<i64, StepError> {
    let result = sqlx::query(
        "INSERT INTO drafts (input_id, lang, body, tokens, worker) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(&draft.id)
    .bind(&draft.lang)
    .bind(&draft.text)
    .bind(i64::try_from(draft.tokens).unwrap_or(i64::MAX))
    .bind(&ctx.worker)
    .execute(db)
    .await
    .map_err(|e| StepError(format!("save: {e}")))?;
    Ok(result.last_insert_rowid())
}

async fn notify_body<'e>(
    db: impl SqliteExecutor<'e>,
    input_id: &str,
    draft_id: i64,
    fail: bool,
) -> Result<i64, StepError> {
    if fail {
        return Err(StepError(
            "notify: outbox busy (transient), the task will be retried".into(),
        ));
    }
    let payload =
        serde_json::json!({ "event": "draft_ready", "input": input_id, "draft": draft_id })
            .to_string();
    let result = sqlx::query("INSERT INTO outbox (input_id, draft_id, payload) VALUES (?, ?, ?)")
        .bind(input_id)
        .bind(draft_id)
        .bind(payload)
        .execute(db)
        .await
        .map_err(|e| StepError(format!("notify: {e}")))?;
    Ok(result.last_insert_rowid())
}

// ---- the same steps, idempotent: one attribute each ----

#[idempotent(key = (batch, input.id), name = "ai_pipeline::preprocess", lease = "1s")]
async fn preprocess(batch: &str, input: &Input) -> Result<Prepared, StepError> {
    preprocess_body(input).await
}

#[idempotent(key = (ctx.batch, prepared.id), name = "ai_pipeline::generate_draft", lease = "1s")]
async fn generate_draft(ctx: &Ctx, prepared: &Prepared) -> Result<Draft, StepError> {
    generate_body(ctx, prepared).await
}

// Saving and notifying write to the application database, which is also the idem store's: so
// they are transactional steps. The claim, the row and the snapshot commit together, and a
// crash at any instant leaves either nothing or everything (exactly-once, not at-least-once).

/// The application database as an idem store, for transactional steps.
fn tx_store(ctx: &Ctx) -> Result<&SqliteStore, StepError> {
    ctx.tx_store
        .as_ref()
        .ok_or_else(|| StepError("no transactional store in plain mode".into()))
}

async fn save_draft(ctx: &Ctx, draft: &Draft) -> Result<i64, StepError> {
    let call = Call::new("ai_pipeline::save_draft").key(&(ctx.batch.as_str(), draft.id.as_str()));
    match tx_store(ctx)?.begin_step(call, &ctx.worker).await? {
        Step::Replayed(row) => Ok(row),
        Step::Claimed(mut tx) => {
            let row = save_body(tx.conn(), ctx, draft).await?;
            tx.commit(&row).await?;
            Ok(row)
        }
    }
}

async fn notify(ctx: &Ctx, input_id: &str, draft_id: i64, fail: bool) -> Result<i64, StepError> {
    let call = Call::new("ai_pipeline::notify").key(&(ctx.batch.as_str(), input_id));
    match tx_store(ctx)?.begin_step(call, &ctx.worker).await? {
        Step::Replayed(id) => Ok(id),
        Step::Claimed(mut tx) => {
            let id = notify_body(tx.conn(), input_id, draft_id, fail).await?;
            tx.commit(&id).await?;
            Ok(id)
        }
    }
}

/// One run of the pipeline for one input.
async fn process(
    ctx: &Ctx,
    input: &Input,
    idem: bool,
    attempt: u32,
    delivery: u32,
) -> Result<(), StepError> {
    let roll = chance(
        ctx.seed,
        &[
            "notify",
            &input.id,
            &delivery.to_string(),
            &attempt.to_string(),
        ],
    );
    let fail_notify = roll % 100 < ctx.notify_fail_pct;
    if idem {
        let prepared = preprocess(&ctx.batch, input).await?;
        ctx.step_done();
        let draft = generate_draft(ctx, &prepared).await?;
        ctx.step_done();
        let row = save_draft(ctx, &draft).await?;
        ctx.step_done();
        notify(ctx, &input.id, row, fail_notify).await?;
    } else {
        let prepared = preprocess_body(input).await?;
        ctx.step_done();
        let draft = generate_body(ctx, &prepared).await?;
        ctx.step_done();
        let row = save_body(&ctx.db, ctx, &draft).await?;
        ctx.step_done();
        notify_body(&ctx.db, &input.id, row, fail_notify).await?;
    }
    ctx.step_done();
    Ok(())
}

/// One delivery of a task, retried with exponential backoff and jitter.
async fn deliver(ctx: &Ctx, input: &Input, idem: bool, delivery: u32) -> Result<(), StepError> {
    let attempt = AtomicU32::new(0);
    (|| {
        process(
            ctx,
            input,
            idem,
            attempt.fetch_add(1, Ordering::SeqCst),
            delivery,
        )
    })
    .retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(10))
            .with_max_delay(Duration::from_millis(200))
            .with_max_times(12)
            .with_jitter(),
    )
    .notify(|_, _| {
        ctx.retries.fetch_add(1, Ordering::SeqCst);
    })
    .await
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
/// `concurrency` inputs at a time. Each task may be delivered twice (a lost ack).
pub(crate) async fn run_worker(
    ctx: Arc<Ctx>,
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
        let (ctx, permits) = (ctx.clone(), permits.clone());
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return false;
            };
            let mut result = deliver(&ctx, &input, idem, 0).await;
            if result.is_ok()
                && chance(ctx.seed, &["redeliver", &input.id]) % 100 < ctx.redeliver_pct
            {
                ctx.redeliveries.fetch_add(1, Ordering::SeqCst);
                result = deliver(&ctx, &input, idem, 1).await;
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
        retries: ctx.retries.load(Ordering::SeqCst),
        redeliveries: ctx.redeliveries.load(Ordering::SeqCst),
        failed,
    }
}
