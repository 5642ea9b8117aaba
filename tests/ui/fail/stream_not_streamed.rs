use idem_runtime::idempotent;

#[path = "../common.rs"]
mod common;
use common::AppError;

#[idempotent(key = (prompt), stream)]
async fn draft(prompt: &str) -> Result<String, AppError> {
    Ok(prompt.to_owned())
}

fn main() {}
