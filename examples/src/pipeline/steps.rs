//! The four steps of the pipeline, each written twice: the plain body, and the same body made
//! idempotent. This is the part to copy: the rest of the example is the harness around it.

use std::fmt;

use idem_runtime::{idempotent, Idem};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::SqlitePool;
use sqlx::SqliteExecutor;

use super::model_client::ModelClient;
use super::{outbox, Input};

/// Everything a step needs. Not part of any key (only `batch` is).
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The application database.
    pub(crate) db: SqlitePool,
    /// An idem handle on the same database, for the transactional steps (idem mode only).
    pub(crate) tx_idem: Option<Idem>,
    /// The model.
    pub(crate) llm: ModelClient,
    /// The batch id: part of every key, so each run of the example is a fresh key space.
    pub(crate) batch: String,
    /// This worker's name, recorded with each attempt and each saved row.
    pub(crate) worker: String,
}

/// A step's error. idem's own errors (store down, ...) convert into it, and since it is
/// serializable, idem can record it.
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

// ---- the plain bodies: what the pipeline does, with no idea of retries ----

/// Step 1: turn an input into a prompt.
pub(crate) async fn preprocess_body(input: &Input) -> Result<Prepared, StepError> {
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

/// Step 2: ask the model for a draft. Every call is billed, answered or not.
pub(crate) async fn generate_body(ctx: &Ctx, prepared: &Prepared) -> Result<Draft, StepError> {
    // Inside an idempotent step, pass its key on, for a provider that honours one.
    let key = idem_runtime::current().map(|c| c.idempotency_key());
    let generation = ctx
        .llm
        .generate(&prepared.prompt, key.as_deref())
        .await
        .map_err(StepError)?;
    if let Some(call) = idem_runtime::current() {
        // The ledger: every replay of this draft counts these tokens as avoided.
        call.add_cost("tokens", generation.tokens as f64);
    }
    Ok(Draft {
        id: prepared.id.clone(),
        lang: prepared.lang.clone(),
        text: generation.text,
        tokens: generation.tokens,
    })
}

/// Step 3: save the draft. A plain INSERT: run twice, it saves twice.
pub(crate) async fn save_body<'e>(
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

/// Step 4: tell the rest of the system the draft is ready, through the outbox.
pub(crate) async fn notify_body<'e>(
    db: impl SqliteExecutor<'e>,
    input_id: &str,
    draft_id: i64,
) -> Result<i64, StepError> {
    let payload =
        serde_json::json!({ "event": "draft_ready", "input": input_id, "draft": draft_id });
    outbox::push(db, input_id, draft_id, &payload)
        .await
        .map_err(|e| StepError(format!("notify: {e}")))
}

// ---- the same steps, idempotent ----

// Preprocessing and generating touch nothing of ours but memory and the model: one attribute
// each. The key says which calls are "the same": this input in this batch. A retry or a second
// delivery replays the recorded result instead of running (and billing) again, and a short
// lease lets another attempt take over soon after a worker dies mid-step.

/// Step 1, once per input.
#[idempotent(key = (batch, input.id), name = "ai_pipeline::preprocess", lease = "1s")]
pub(crate) async fn preprocess(batch: &str, input: &Input) -> Result<Prepared, StepError> {
    preprocess_body(input).await
}

/// Step 2, once per input: one bill, however often the task is retried or redelivered.
#[idempotent(key = (ctx.batch, prepared.id), name = "ai_pipeline::generate_draft", lease = "1s")]
pub(crate) async fn generate_draft(ctx: &Ctx, prepared: &Prepared) -> Result<Draft, StepError> {
    generate_body(ctx, prepared).await
}

// Saving and notifying write to the application database, which is also the idem store's: so
// each runs in a transaction of ours, and `tx = tx` puts idem's claim and the recorded result in
// that same transaction. The claim, the row and the snapshot commit together, and a crash at
// any instant leaves either nothing or everything (exactly-once, not at-least-once). SQLite:
// `BEGIN IMMEDIATE` takes the write lock up front, so the claim never has to upgrade to it.

/// An idem handle on the application database, for transactional steps.
fn tx_idem(ctx: &Ctx) -> Result<&Idem, StepError> {
    ctx.tx_idem
        .as_ref()
        .ok_or_else(|| StepError("no transactional store in plain mode".into()))
}

fn db_error(e: sqlx::Error) -> StepError {
    StepError(format!("database: {e}"))
}

/// Step 3, once per input: a retry gets back the row id saved the first time.
pub(crate) async fn save_draft(ctx: &Ctx, draft: &Draft) -> Result<i64, StepError> {
    let mut tx = ctx
        .db
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db_error)?;
    let row = save_draft_step(tx_idem(ctx)?, &ctx.batch, draft, ctx, &mut tx).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(row)
}

#[idempotent(key = (batch, draft.id), name = "ai_pipeline::save_draft", tx = tx, store = idem)]
async fn save_draft_step(
    idem: &Idem,
    batch: &str,
    draft: &Draft,
    ctx: &Ctx,
    tx: &mut sqlx::SqliteTransaction<'_>,
) -> Result<i64, StepError> {
    save_body(&mut **tx, ctx, draft).await
}

/// Step 4, once per input: a retry gets back the event id queued the first time.
pub(crate) async fn notify(ctx: &Ctx, input_id: &str, draft_id: i64) -> Result<i64, StepError> {
    let mut tx = ctx
        .db
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(db_error)?;
    let id = notify_step(tx_idem(ctx)?, &ctx.batch, input_id, draft_id, &mut tx).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(id)
}

#[idempotent(key = (batch, input_id), name = "ai_pipeline::notify", tx = tx, store = idem)]
async fn notify_step(
    idem: &Idem,
    batch: &str,
    input_id: &str,
    draft_id: i64,
    tx: &mut sqlx::SqliteTransaction<'_>,
) -> Result<i64, StepError> {
    notify_body(&mut **tx, input_id, draft_id).await
}
