use idem_runtime::{idempotent, Streamed};

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (prompt), stream = true)]
async fn draft(prompt: &str) -> Result<Streamed<String, AppError>, AppError> {
    let _ = prompt;
    unimplemented!()
}

fn main() {}
