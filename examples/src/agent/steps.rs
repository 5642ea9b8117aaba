//! The agent's steps, each written as a plain body and as the idempotent step around it. A
//! model turn and each tool call are steps of the agent run (`run.rs`), keyed by the run and
//! their position in it (`key = parent`): their inputs are a conversation and a model's
//! tool-call JSON (floats, maps), which no key should be made of, and a re-run of the agent
//! makes the same steps in the same order (each turn follows from the recorded ones).

use std::fmt;

use idem_runtime::{current, idempotent, Idem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::sqlite::{SqliteConnection, SqlitePool};

use super::client::Client;
use super::crash::CrashPoint;
use super::ledger;
use super::messages::{Message, ToolCall, Turn};

/// Everything a step needs; no part of any key.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The run id (each row names its run).
    pub(crate) run_id: String,
    /// The services.
    pub(crate) client: Client,
    /// The application database.
    pub(crate) db: SqlitePool,
    /// The agent's idem handle (`None` with `--no-idem`).
    pub(crate) idem: Option<Idem>,
    /// An idem handle on the application database, for the transactional `write_row` step.
    pub(crate) tx_idem: Option<Idem>,
    /// Where the supervisor kills this process.
    pub(crate) crash: CrashPoint,
}

/// A step's error: serializable, so idem can record it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AgentError(pub String);

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AgentError {}

impl From<idem_runtime::Error> for AgentError {
    fn from(e: idem_runtime::Error) -> Self {
        AgentError(e.to_string())
    }
}

impl From<sqlx::Error> for AgentError {
    fn from(e: sqlx::Error) -> Self {
        AgentError(format!("database: {e}"))
    }
}

// ---- the plain bodies ----

/// Asks the model for the next turn, and reports the tokens it billed to idem's cost ledger
/// (inside a step; a replay then counts them as avoided).
pub(crate) async fn model_turn_body(ctx: &Ctx, messages: &[Message]) -> Result<Turn, AgentError> {
    let turn = ctx.client.chat(messages).await.map_err(AgentError)?;
    ledger::spent_tokens(turn.tokens);
    ctx.crash.reached().await;
    Ok(turn)
}

/// Runs a search. Inside a step it passes the step's `sub_key("search")` as the
/// `Idempotency-Key`, so a search repeated after a crash is not run (nor billed) twice.
pub(crate) async fn search_body(ctx: &Ctx, call: &ToolCall) -> Result<Value, AgentError> {
    let key = current().map(|c| c.sub_key("search"));
    let hits = ctx
        .client
        .search(call, key.as_deref())
        .await
        .map_err(AgentError)?;
    ctx.crash.reached().await;
    Ok(hits)
}

/// Sends a notification, with the step's `sub_key("notify")` as the `Idempotency-Key`: a
/// response lost on the way back (or a crash after sending) and the retry sends nothing new.
pub(crate) async fn notify_body(ctx: &Ctx, call: &ToolCall) -> Result<Value, AgentError> {
    let key = current().map(|c| c.sub_key("notify"));
    let sent = ctx
        .client
        .notify(call, key.as_deref())
        .await
        .map_err(AgentError)?;
    ctx.crash.reached().await;
    Ok(sent)
}

/// Inserts the row a `write_row` call asks for, and answers which of the run's rows it is.
/// A plain INSERT: run twice, it writes twice.
pub(crate) async fn write_row_body(
    conn: &mut SqliteConnection,
    ctx: &Ctx,
    call: &ToolCall,
) -> Result<Value, AgentError> {
    let args = &call.arguments;
    sqlx::query("INSERT INTO rows (run_id, call_id, title, score, tags) VALUES (?, ?, ?, ?, ?)")
        .bind(&ctx.run_id)
        .bind(&call.id)
        .bind(args["title"].as_str().unwrap_or_default())
        .bind(args["score"].as_f64().unwrap_or_default())
        .bind(args["tags"].to_string())
        .execute(&mut *conn)
        .await?;
    let row: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rows WHERE run_id = ?")
        .bind(&ctx.run_id)
        .fetch_one(&mut *conn)
        .await?;
    ctx.crash.reached().await;
    Ok(json!({ "row": row }))
}

// ---- the same steps, idempotent ----

/// A model turn, once per position in the run: a restarted agent replays it (and the ledger
/// counts its tokens as avoided) instead of paying for it again.
#[idempotent(key = parent, name = "agent::model_turn", lease = "1s")]
pub(crate) async fn model_turn(ctx: &Ctx, messages: &[Message]) -> Result<Turn, AgentError> {
    model_turn_body(ctx, messages).await
}

/// A search, once per position in the run.
#[idempotent(key = parent, name = "agent::search", lease = "1s")]
async fn search(ctx: &Ctx, call: &ToolCall) -> Result<Value, AgentError> {
    search_body(ctx, call).await
}

/// A notification, once per position in the run.
#[idempotent(key = parent, name = "agent::notify", lease = "1s")]
async fn notify(ctx: &Ctx, call: &ToolCall) -> Result<Value, AgentError> {
    notify_body(ctx, call).await
}

/// A row write in our own transaction: idem's claim, the row and the recorded result commit
/// together, so a kill at any instant leaves nothing or everything (exactly once).
async fn write_row(ctx: &Ctx, call: &ToolCall) -> Result<Value, AgentError> {
    let idem = ctx
        .tx_idem
        .as_ref()
        .ok_or_else(|| AgentError("write_row: no transactional store".into()))?;
    // SQLite: take the write lock up front, so the claim never has to upgrade to it.
    let mut tx = ctx.db.begin_with("BEGIN IMMEDIATE").await?;
    let row = write_row_step(idem, ctx, call, &mut tx).await?;
    tx.commit().await?;
    Ok(row)
}

#[idempotent(key = parent, name = "agent::write_row", tx = tx, store = idem)]
async fn write_row_step(
    idem: &Idem,
    ctx: &Ctx,
    call: &ToolCall,
    tx: &mut sqlx::SqliteTransaction<'_>,
) -> Result<Value, AgentError> {
    write_row_body(tx, ctx, call).await
}

/// Runs a tool call: as a step of the run, or (`--no-idem`) as a plain function call.
pub(crate) async fn run_tool(ctx: &Ctx, call: &ToolCall) -> Result<Value, AgentError> {
    let idem = ctx.idem.is_some();
    match call.name.as_str() {
        "search" if idem => search(ctx, call).await,
        "search" => search_body(ctx, call).await,
        "notify" if idem => notify(ctx, call).await,
        "notify" => notify_body(ctx, call).await,
        "write_row" if idem => write_row(ctx, call).await,
        "write_row" => write_row_body(&mut *ctx.db.acquire().await?, ctx, call).await,
        other => Err(AgentError(format!(
            "the model asked for an unknown tool {other:?}"
        ))),
    }
}
