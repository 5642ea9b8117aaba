#![deny(warnings)]
//! `key = parent`: steps keyed by their pipeline and position, for arguments that cannot be
//! keyed (a model's tool-call JSON with floats); `verify` still checks a payload.

use idem_runtime::{idempotent, Idem};

#[path = "../common.rs"]
mod common;
use common::AppError;

/// Tool-call arguments as a model returns them: floats and maps, not keyable.
pub struct ToolCall {
    pub name: String,
    pub arguments: std::collections::HashMap<String, f64>,
}

#[idempotent(key = parent)]
async fn run_tool(call: &ToolCall) -> Result<f64, AppError> {
    Ok(call.arguments.values().sum())
}

#[idempotent(key = parent, verify = (name))]
async fn model_turn(name: &str, temperature: f32) -> Result<String, AppError> {
    Ok(format!("{name} at {temperature}"))
}

#[idempotent(key = (run_id))]
async fn agent(run_id: u64) -> Result<String, AppError> {
    let mut arguments = std::collections::HashMap::new();
    arguments.insert("x".to_owned(), 1.5);
    let tool = ToolCall { name: "search".into(), arguments };
    let sum = run_tool(&tool).await?;
    let turn = model_turn(&tool.name, 0.2).await?;
    Ok(format!("{run_id}: {turn} = {sum}"))
}

fn main() {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    let out = rt.block_on(Idem::memory().scope(agent(7)));
    assert_eq!(out.ok().as_deref(), Some("7: search at 0.2 = 1.5"));
    // Outside any idempotent body there is no position to key by.
    let orphan = rt.block_on(Idem::memory().scope(run_tool(&ToolCall {
        name: "search".into(),
        arguments: Default::default(),
    })));
    assert!(orphan.is_err_and(|e| e.0.contains("keyed by its parent")));
}
